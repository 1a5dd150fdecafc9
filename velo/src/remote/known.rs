//! What this machine knows a remote holds: copies of the indexes it pushed or pulled, in the
//! store's `remote/<hash of the URL>/` ([`Store::remote_dir`]). A push does not upload again a
//! blob that one of them places; it first checks, one request per pack, that the pack is still
//! there (a prune may have taken it), so an index it writes never names a missing object.
//!
//! Only the newest [`KEEP`] copies are read and kept: a CI runner pulls the snapshot it restores
//! from and pushes the next, so the indexes that matter are the recent ones.

use std::collections::HashMap;
use std::path::PathBuf;

use super::pack::{Frame, Index};
use crate::store::Store;

/// How many index copies a push reads, and how many are kept.
const KEEP: usize = 16;

/// Where blobs are on a remote, as far as the indexes read say.
#[derive(Debug, Default)]
pub struct Known {
    /// Each pack and all it holds.
    pub packs: HashMap<String, Vec<Frame>>,
    /// Each blob's pack; `None`: alone under `blobs/`.
    pub blobs: HashMap<String, Option<String>>,
}

impl Known {
    pub fn add(&mut self, index: &Index) {
        for (name, frames) in &index.packs {
            for f in frames {
                self.blobs.insert(f.blob.clone(), Some(name.clone()));
            }
            self.packs.insert(name.clone(), frames.clone());
        }
        for blob in &index.alone {
            self.blobs.entry(blob.clone()).or_insert(None);
        }
    }

    /// Forgets a pack the remote no longer has.
    pub fn forget_pack(&mut self, name: &str) {
        self.packs.remove(name);
        self.blobs.retain(|_, p| p.as_deref() != Some(name));
    }

    /// The copies kept for the remote at `url`.
    pub fn load(store: &Store, url: &str) -> Known {
        let mut known = Known::default();
        for path in newest(store, url) {
            if let Some(index) = std::fs::read(&path).ok().and_then(|b| Index::decode(&b)) {
                known.add(&index);
            }
        }
        known
    }
}

/// The kept copies, newest first (at most [`KEEP`]).
fn newest(store: &Store, url: &str) -> Vec<PathBuf> {
    let Ok(dir) = store.remote_dir(url) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir.join("indexes")) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Keeps a copy of manifest `id`'s index (`bytes`, as the remote holds it), and drops the
/// oldest beyond [`KEEP`]. Best effort: a machine that cannot keep it only uploads more.
pub fn remember(store: &Store, url: &str, id: &str, bytes: &[u8]) {
    let Ok(dir) = store.remote_dir(url) else {
        return;
    };
    let dir = dir.join("indexes");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    if let Err(e) = crate::store::write_atomic(&dir.join(id), bytes, false) {
        tracing::debug!(error = %e, "not kept: the remote's index of {id}");
    }
    for stale in newest(store, url).into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(stale);
    }
}
