//! `velo gc`: delete blobs that no registered, still-existing manifest references.
//!
//! Without `--run` it is a dry run that lists what would go. With `--run` it takes the store
//! lock *exclusively*, so no ingest is between writing a blob and registering the manifest that
//! names it; it recomputes the live set under that lock, then deletes unreferenced blobs,
//! temporary files left by killed writers (no writer can be running), and the registrations of
//! manifests that no longer exist. If a registered manifest exists but cannot be read, gc
//! refuses to delete anything and names it ([`crate::live`]). Then it empties what depends on
//! blobs that may be gone: shim images, the farm cache (cached farms pin the inodes of deleted
//! blobs) and the run directories of velo processes that died without cleaning up.

use std::path::PathBuf;

use serde::Serialize;

use crate::live::LiveSet;
use crate::store::{self, LockMode, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "refusing to collect garbage: registered manifest {path} exists but cannot be read ({reason}); \
         repair or delete it, then run gc again",
        path = .path.display()
    )]
    UnreadableRoot { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] store::Error),
}

#[derive(Clone, Debug, Serialize)]
pub struct GcBlob {
    pub blob: String,
    pub size: u64,
}

/// What gc would delete (dry run) or deleted (`--run`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub ran: bool,
    pub blobs: Vec<GcBlob>,
    pub bytes: u64,
    pub stray_temp_files: Vec<PathBuf>,
    /// Registrations dropped because their manifest file is gone.
    pub forgotten_manifests: Vec<PathBuf>,
    /// Corrupt blobs moved to `quarantine/` by a repair or an ingest that healed them.
    pub quarantined: Vec<PathBuf>,
    /// Run directories of dead velo processes removed (`--run`).
    #[serde(skip)]
    pub stale_runs: usize,
    /// Cached link farms removed (`--run`).
    #[serde(skip)]
    pub cached_farms: usize,
}

pub fn gc(root: &std::path::Path, run: bool) -> Result<Plan, Error> {
    let store = match Store::open_existing(root) {
        Ok(store) => store,
        Err(store::Error::Missing { .. }) => {
            return Ok(Plan {
                ran: run,
                ..Plan::default()
            });
        }
        Err(e) => return Err(e.into()),
    };
    let _lock = store.lock(if run {
        LockMode::Exclusive
    } else {
        LockMode::Shared
    })?;
    let live = LiveSet::compute(&store)?;
    if let Some(bad) = live.blocking().next() {
        let reason = match &bad.state {
            crate::live::RootState::Unreadable { error } => error.clone(),
            _ => String::new(),
        };
        return Err(Error::UnreadableRoot {
            path: bad.manifest.clone(),
            reason,
        });
    }
    let doomed: Vec<_> = store
        .blobs()?
        .into_iter()
        .filter(|b| !live.referenced.contains_key(&b.key))
        .collect();
    let stale: Vec<_> = live
        .roots
        .iter()
        .filter(|r| matches!(r.state, crate::live::RootState::Missing))
        .collect();
    let mut plan = Plan {
        ran: run,
        blobs: doomed
            .iter()
            .map(|b| GcBlob {
                blob: b.key.to_string(),
                size: b.size,
            })
            .collect(),
        bytes: doomed.iter().map(|b| b.size).sum(),
        // Under a shared lock an ingest may be writing these right now: only report them
        // when we are about to delete them under the exclusive lock.
        stray_temp_files: if run {
            store.stray_temp_files()?
        } else {
            Vec::new()
        },
        forgotten_manifests: stale.iter().map(|r| r.manifest.clone()).collect(),
        quarantined: store.quarantined()?,
        stale_runs: 0,
        cached_farms: 0,
    };
    if !run {
        return Ok(plan);
    }
    for blob in &doomed {
        remove(&blob.path)?;
    }
    for tmp in plan.stray_temp_files.iter().chain(&plan.quarantined) {
        remove(tmp)?;
    }
    for root in &stale {
        store.unregister_root(&root.root)?;
    }
    if !doomed.is_empty() {
        store.bump_gc_generation()?;
    }
    plan.stray_temp_files.sort();
    let io = |e| store::Error::io("clearing the run caches of", store.root(), e);
    crate::run::mirage::clear_cache(&store).map_err(io)?;
    plan.stale_runs = crate::run::remove_stale(&store).map_err(io)?;
    plan.cached_farms = crate::run::clear_farm_cache(&store).map_err(io)?;
    Ok(plan)
}

fn remove(path: &std::path::Path) -> Result<(), store::Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(store::Error::io("removing", path, e)),
    }
}
