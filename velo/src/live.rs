//! Which blobs are alive: those named by a registered manifest that still exists.
//!
//! `velo status` reports from this and `velo gc` deletes what is not in it, so both agree by
//! construction. A registered manifest that exists but cannot be read is not "gone": its blobs
//! might be needed, so [`LiveSet::blocking`] lists such manifests and `gc --run` refuses to run
//! until the user repairs or deletes them (invariant 3: nothing is lost).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::manifest::Manifest;
use crate::store::{BlobKey, Root, Store};

/// What was found at a registered manifest's path.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum RootState {
    Present {
        id: String,
        files: u64,
        logical_bytes: u64,
    },
    /// The file is gone: its blobs are free to collect.
    Missing,
    /// The file exists but does not decode: nothing it might reference may be collected.
    Unreadable { error: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct RootStatus {
    pub manifest: PathBuf,
    #[serde(flatten)]
    pub state: RootState,
    #[serde(skip)]
    pub root: Root,
}

#[derive(Debug, Default)]
pub struct LiveSet {
    pub roots: Vec<RootStatus>,
    /// Every referenced blob, with the index in `roots` of the first manifest naming it.
    pub referenced: HashMap<BlobKey, usize>,
    /// Sum of file sizes over present manifests (a file in two manifests counts twice).
    pub logical_bytes: u64,
}

impl LiveSet {
    pub fn compute(store: &Store) -> Result<LiveSet, crate::store::Error> {
        let mut live = LiveSet::default();
        for root in store.roots()? {
            let state = match std::fs::symlink_metadata(&root.manifest) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => RootState::Missing,
                _ => match Manifest::read(&root.manifest) {
                    Ok(m) => {
                        let logical_bytes = m.logical_bytes();
                        live.logical_bytes += logical_bytes;
                        let index = live.roots.len();
                        for blob in m.blobs() {
                            live.referenced.entry(blob).or_insert(index);
                        }
                        RootState::Present {
                            id: m.id().to_string(),
                            files: m.blobs().count() as u64,
                            logical_bytes,
                        }
                    }
                    Err(e) => RootState::Unreadable {
                        error: e.to_string(),
                    },
                },
            };
            live.roots.push(RootStatus {
                manifest: root.manifest.clone(),
                state,
                root,
            });
        }
        Ok(live)
    }

    /// Registered manifests that exist but cannot be read.
    pub fn blocking(&self) -> impl Iterator<Item = &RootStatus> {
        self.roots
            .iter()
            .filter(|r| matches!(r.state, RootState::Unreadable { .. }))
    }
}
