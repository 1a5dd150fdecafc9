//! `velo status`: the health of the store and how much it saves.
//!
//! Counts blobs and their bytes, the logical bytes the registered manifests reference, the
//! dedup ratio between the two, the registered manifests (and which are gone), orphaned blobs
//! (what `velo gc --run` would delete) and blobs a manifest needs but the store lacks. With
//! `--verify` every blob is re-hashed and its mode checked; `--repair` then moves corrupt blobs
//! to `quarantine/` and makes the next ingest of each tree read every file again, so it writes
//! what is missing. Every manifest a missing or corrupt blob breaks is named.
//!
//! Nothing here writes to the store except `--repair`, so status and verify work on a store
//! this process cannot write (a read-only mount, another user's shared store).

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::Serialize;

use crate::human;
use crate::live::{LiveSet, RootState, RootStatus};
use crate::manifest::Manifest;
use crate::store::{self, Access, BlobKey, Corruption, LockMode, Store};

#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub store: PathBuf,
    pub exists: bool,
    /// Who may read the store (its top directory's mode).
    pub access: Option<Access>,
    /// Why this process cannot write the store, if it cannot.
    pub read_only: Option<String>,
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
    /// Registered manifests that name a missing or corrupt blob, and how many such blobs.
    pub broken_manifests: Vec<BrokenManifest>,
    /// What `--repair` did, when asked.
    pub repair: Option<Repair>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BrokenManifest {
    pub manifest: PathBuf,
    pub missing: u64,
    pub corrupt: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Repair {
    /// Where each corrupt blob was moved.
    pub quarantined: Vec<PathBuf>,
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
    /// Files of registered manifests that declare another size than their blob's.
    pub wrong_sizes: Vec<WrongSize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WrongSize {
    pub manifest: PathBuf,
    pub path: String,
    pub declared: u64,
    pub actual: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct CorruptBlob {
    pub blob: String,
    pub path: PathBuf,
    pub problem: String,
}

impl Status {
    /// True when nothing is wrong: no corrupt and no missing blobs, and every registered
    /// manifest that exists can be read (one that cannot stops `gc`).
    pub fn healthy(&self) -> bool {
        self.missing_blobs.is_empty()
            && self
                .verify
                .as_ref()
                .is_none_or(|v| v.corrupt.is_empty() && v.wrong_sizes.is_empty())
            && !self
                .manifests
                .iter()
                .any(|m| matches!(m.state, RootState::Unreadable { .. }))
    }
}

/// Gathers the status of the store at `root`. `progress` is called per verified blob.
pub fn status(
    root: &std::path::Path,
    verify: bool,
    repair: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Status, store::Error> {
    let store = match Store::open_existing(root) {
        Ok(store) => store,
        Err(store::Error::Missing { .. }) => return Ok(empty(root)),
        Err(e) => return Err(e),
    };
    if repair {
        store.require_writable("velo status --repair")?;
    }
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
        let sizes: std::collections::HashMap<BlobKey, u64> =
            blobs.iter().map(|b| (b.key, b.size)).collect();
        Some(Verify {
            checked: blobs.len() as u64,
            corrupt,
            wrong_sizes: wrong_sizes(&live, &sizes),
        })
    } else {
        None
    };

    let corrupt: HashSet<BlobKey> = verify
        .iter()
        .flat_map(|v| &v.corrupt)
        .filter_map(|c| BlobKey::parse_file_name(&c.blob))
        .collect();
    let missing_keys: HashSet<BlobKey> = missing
        .iter()
        .filter_map(|m| BlobKey::parse_file_name(&m.blob))
        .collect();
    let broken_manifests = if corrupt.is_empty() && missing_keys.is_empty() {
        Vec::new()
    } else {
        broken(&live, &missing_keys, &corrupt)
    };
    let repair = if repair {
        let mut quarantined = Vec::new();
        for key in &corrupt {
            quarantined.push(store.quarantine(key)?);
        }
        quarantined.sort();
        if !corrupt.is_empty() {
            // Cached farms hold hard links to the corrupt inodes, which look sealed when the
            // damage came without a write (bit rot): build them again from healed blobs.
            crate::run::clear_farm_cache(&store)
                .map_err(|e| store::Error::io("emptying the farm cache of", store.root(), e))?;
        }
        if !corrupt.is_empty() || !missing_keys.is_empty() {
            // The stat index trusts that blobs it names exist until a gc says otherwise: this
            // is one, so the next ingest of each tree checks them and writes what is gone.
            store.bump_gc_generation()?;
        }
        Some(Repair { quarantined })
    } else {
        None
    };

    Ok(Status {
        store: root.to_path_buf(),
        exists: true,
        access: Some(store.access()),
        read_only: store.read_only_reason().map(str::to_owned),
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
        broken_manifests,
        repair,
    })
}

/// Files of the registered manifests whose declared size is not their blob's `sizes` entry.
fn wrong_sizes(live: &LiveSet, sizes: &std::collections::HashMap<BlobKey, u64>) -> Vec<WrongSize> {
    let mut out = Vec::new();
    for root in live
        .roots
        .iter()
        .filter(|r| matches!(r.state, RootState::Present { .. }))
    {
        let Ok(m) = Manifest::read(&root.manifest) else {
            continue;
        };
        for e in m.entries() {
            if let (Some(key), crate::manifest::Kind::File { size, .. }) = (e.blob(), &e.kind)
                && let Some(&actual) = sizes.get(&key)
                && actual != *size
            {
                out.push(WrongSize {
                    manifest: root.manifest.clone(),
                    path: crate::manifest::display_path(&e.path),
                    declared: *size,
                    actual,
                });
            }
        }
    }
    out
}

/// The registered manifests naming any of the `missing` or `corrupt` blobs.
fn broken(
    live: &LiveSet,
    missing: &HashSet<BlobKey>,
    corrupt: &HashSet<BlobKey>,
) -> Vec<BrokenManifest> {
    live.roots
        .iter()
        .filter(|r| matches!(r.state, RootState::Present { .. }))
        .filter_map(|r| {
            let m = Manifest::read(&r.manifest).ok()?;
            let blobs: HashSet<BlobKey> = m.blobs().collect();
            let missing = blobs.intersection(missing).count() as u64;
            let corrupt = blobs.intersection(corrupt).count() as u64;
            (missing + corrupt > 0).then(|| BrokenManifest {
                manifest: r.manifest.clone(),
                missing,
                corrupt,
            })
        })
        .collect()
}

fn empty(root: &std::path::Path) -> Status {
    Status {
        store: root.to_path_buf(),
        exists: false,
        access: None,
        read_only: None,
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
        broken_manifests: Vec::new(),
        repair: None,
    }
}

/// The human report of `velo status`: a table of the store, one of its manifests, then a line
/// per problem and what heals it.
pub struct Text<'a>(pub &'a Status);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if !s.exists {
            writeln!(
                f,
                "store {} is empty (nothing ingested yet)",
                s.store.display()
            )?;
            return Ok(());
        }
        let mut table = human::table(["store", &s.store.display().to_string()]);
        if let Some(access) = s.access {
            table.add_row([
            "access",
            match access {
                Access::Private => "private: only you (and root) can read it",
                Access::Shared => {
                    "shared: every local user can read every blob (chmod 0700 the store to make it private)"
                }
            },
        ]);
        }
        if let Some(why) = &s.read_only {
            table.add_row([
                "writable",
                &format!("no ({why}): runs keep their files elsewhere"),
            ]);
        }
        table.add_row(["blobs", &s.blobs.to_string()]);
        table.add_row(["stored", &human::bytes(s.stored_bytes)]);
        table.add_row(["referenced", &human::bytes(s.logical_bytes)]);
        table.add_row(["dedup ratio", &format!("{:.2}x", s.dedup_ratio)]);
        table.add_row([
            "orphaned",
            &format!(
                "{} blobs, {} (velo gc --run frees them)",
                s.orphaned_blobs,
                human::bytes(s.orphaned_bytes)
            ),
        ]);
        if s.stray_temp_files > 0 {
            table.add_row(["stray temp files", &s.stray_temp_files.to_string()]);
        }
        writeln!(f, "{table}")?;
        if !s.manifests.is_empty() {
            let mut manifests = human::table(["manifest", "state", "files", "size", "id"]);
            for m in &s.manifests {
                let path = m.manifest.display().to_string();
                match &m.state {
                    RootState::Present {
                        id,
                        files,
                        logical_bytes,
                    } => manifests.add_row([
                        &path,
                        "ok",
                        &files.to_string(),
                        &human::bytes(*logical_bytes),
                        &id[..16],
                    ]),
                    RootState::Missing => manifests.add_row([path.as_str(), "gone", "", "", ""]),
                    RootState::Unreadable { error } => {
                        manifests.add_row([path.as_str(), "unreadable", "", "", error])
                    }
                };
            }
            writeln!(f, "\n{manifests}")?;
        }
        for missing in &s.missing_blobs {
            writeln!(
                f,
                "missing blob {}: named by {} but not in the store",
                missing.blob,
                missing.manifest.display()
            )?;
        }
        for m in &s.manifests {
            if let RootState::Unreadable { error } = &m.state {
                writeln!(
                    f,
                    "unreadable manifest {}: {error} (gc refuses to run until it is repaired or deleted)",
                    m.manifest.display()
                )?;
            }
        }
        if let Some(verify) = &s.verify {
            for w in &verify.wrong_sizes {
                writeln!(
                    f,
                    "wrong size in {}: {} declares {} bytes, its blob holds {} (the manifest is damaged or crafted: ingest its tree again)",
                    w.manifest.display(),
                    w.path,
                    w.declared,
                    w.actual
                )?;
            }
            for c in &verify.corrupt {
                writeln!(
                    f,
                    "corrupt blob {} ({}): {}",
                    c.blob,
                    c.path.display(),
                    c.problem
                )?;
            }
            writeln!(
                f,
                "\nverified {} blobs: {}",
                verify.checked,
                if verify.corrupt.is_empty() {
                    "all sound".to_owned()
                } else {
                    format!("{} corrupt", verify.corrupt.len())
                }
            )?;
        }
        for b in &s.broken_manifests {
            writeln!(
                f,
                "broken manifest {}: {} missing, {} corrupt blobs",
                b.manifest.display(),
                b.missing,
                b.corrupt
            )?;
        }
        match &s.repair {
            Some(repair) => {
                if !repair.quarantined.is_empty() {
                    writeln!(
                        f,
                        "quarantined {} corrupt blobs in {}",
                        repair.quarantined.len(),
                        s.store.join("quarantine").display()
                    )?;
                }
                if !s.broken_manifests.is_empty() {
                    writeln!(
                        f,
                        "to heal: ingest the tree of each broken manifest again (the next ingest reads every file)"
                    )?;
                }
            }
            None if !s.broken_manifests.is_empty() => {
                writeln!(
                    f,
                    "to heal: velo status --verify --repair, then ingest each broken manifest's tree again"
                )?;
            }
            None => {}
        }
        Ok(())
    }
}
