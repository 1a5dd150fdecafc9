//! `velo status`: the health of the store and how much it saves.
//!
//! Counts blobs and their bytes, the logical bytes the registered manifests reference, the
//! dedup ratio between the two, the registered manifests (and which are gone), orphaned blobs
//! (what `velo gc --run` would delete) and blobs a manifest needs but the store lacks. With
//! `--verify` every blob is re-hashed and its mode checked.

use std::collections::HashSet;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use crate::live::{LiveSet, RootStatus};
use crate::store::{self, BlobKey, Corruption, LockMode, Store};

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub store: PathBuf,
    pub exists: bool,
    pub blobs: u64,
    pub stored_bytes: u64,
    pub logical_bytes: u64,
    /// logical / stored; 0 when the store is empty.
    pub dedup_ratio: f64,
    pub manifests: Vec<RootStatus>,
    pub orphaned_blobs: u64,
    pub orphaned_bytes: u64,
    /// Blobs named by a present manifest but absent from the store.
    pub missing_blobs: Vec<MissingBlob>,
    pub stray_temp_files: u64,
    pub verify: Option<Verify>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MissingBlob {
    pub blob: String,
    /// The first registered manifest that names it.
    pub manifest: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct Verify {
    pub checked: u64,
    pub corrupt: Vec<CorruptBlob>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CorruptBlob {
    pub blob: String,
    pub path: PathBuf,
    pub problem: String,
}

impl Status {
    /// True when nothing is wrong: no corrupt and no missing blobs.
    pub fn healthy(&self) -> bool {
        self.missing_blobs.is_empty() && self.verify.as_ref().is_none_or(|v| v.corrupt.is_empty())
    }
}

/// Gathers the status of the store at `root`. `progress` is called per verified blob.
pub fn status(
    root: &std::path::Path,
    verify: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Status, store::Error> {
    let store = match Store::open_existing(root) {
        Ok(store) => store,
        Err(store::Error::Missing { .. }) => return Ok(empty(root)),
        Err(e) => return Err(e),
    };
    // Shared: ingests continue, but no gc deletes blobs under our feet.
    let _lock = store.lock(LockMode::Shared)?;
    let live = LiveSet::compute(&store)?;
    let blobs = store.blobs()?;
    let on_disk: HashSet<BlobKey> = blobs.iter().map(|b| b.key).collect();
    let stored_bytes: u64 = blobs.iter().map(|b| b.size).sum();
    let orphans: Vec<_> = blobs
        .iter()
        .filter(|b| !live.referenced.contains_key(&b.key))
        .collect();
    let mut missing: Vec<MissingBlob> = live
        .referenced
        .iter()
        .filter(|(k, _)| !on_disk.contains(k))
        .map(|(k, &root)| MissingBlob {
            blob: k.to_string(),
            manifest: live.roots[root].manifest.clone(),
        })
        .collect();
    missing.sort_by(|a, b| a.blob.cmp(&b.blob));

    let verify = if verify {
        let mut corrupt = blobs
            .par_iter()
            .map(|blob| {
                let result = store.verify_blob(blob);
                progress(1);
                result.map(|c| {
                    c.map(|c: Corruption| CorruptBlob {
                        blob: blob.key.to_string(),
                        path: blob.path.clone(),
                        problem: c.to_string(),
                    })
                })
            })
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>, _>>()?;
        corrupt.sort_by(|a, b| a.blob.cmp(&b.blob));
        Some(Verify {
            checked: blobs.len() as u64,
            corrupt,
        })
    } else {
        None
    };

    Ok(Status {
        store: root.to_path_buf(),
        exists: true,
        blobs: blobs.len() as u64,
        stored_bytes,
        logical_bytes: live.logical_bytes,
        dedup_ratio: if stored_bytes == 0 {
            0.0
        } else {
            live.logical_bytes as f64 / stored_bytes as f64
        },
        manifests: live.roots,
        orphaned_blobs: orphans.len() as u64,
        orphaned_bytes: orphans.iter().map(|b| b.size).sum(),
        missing_blobs: missing,
        stray_temp_files: store.stray_temp_files()?.len() as u64,
        verify,
    })
}

fn empty(root: &std::path::Path) -> Status {
    Status {
        store: root.to_path_buf(),
        exists: false,
        blobs: 0,
        stored_bytes: 0,
        logical_bytes: 0,
        dedup_ratio: 0.0,
        manifests: Vec::new(),
        orphaned_blobs: 0,
        orphaned_bytes: 0,
        missing_blobs: Vec::new(),
        stray_temp_files: 0,
        verify: None,
    }
}
