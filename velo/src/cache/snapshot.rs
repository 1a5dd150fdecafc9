//! Saving snapshots and reading them back.
//!
//! A snapshot is two files in the store, under `cache/<key>/`:
//!
//! - `<id>.velo`: the manifest of the target directory, written by the same ingest as
//!   `velo ingest` (so blobs are shared with every other snapshot and tree in the store, and
//!   the manifest is a GC root for as long as the file exists);
//! - `<id>.json`: the [`Snapshot`] record: the key, the Cargo mtime checks of the target
//!   directory ([`Check`]) and the BLAKE3 of every source file they name, as Cargo named it,
//!   and the files of every package Cargo fingerprinted by mtime ([`PackageFiles`]).
//!
//! The id is the creation time in milliseconds and the saving process's id, so ids sort by age.
//! Deleting both files (and `velo gc --run`) releases a snapshot's space.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::fingerprint::{self, Check};
use super::package_mtime::{self, PackageFiles};
use super::{Error, Project, hash_sources, io_err};
use crate::ingest;
use crate::store::{self, Store};

/// Bumped when the record changes incompatibly; other versions are skipped when listing.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub format: u32,
    pub id: String,
    pub key: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub profile: String,
    /// The id of the target directory's manifest.
    pub manifest: String,
    /// The target directory, relative to the project root when inside it.
    pub target_dir: String,
    /// Whether `incremental/` directories were kept.
    pub incremental: bool,
    pub files: u64,
    pub bytes: u64,
    /// Every source file a check names (canonical path) and its BLAKE3, `None` if unreadable.
    pub sources: BTreeMap<String, Option<String>>,
    pub checks: Vec<Check>,
    /// Packages whose files decide a unit's fingerprint by their newest mtime, with every
    /// file's content and mtime (see [`package_mtime`]). Absent in older records.
    #[serde(default)]
    pub packages: Vec<PackageFiles>,
}

/// Where a snapshot's files are.
#[derive(Debug, Clone)]
pub struct Stored {
    pub snapshot: Snapshot,
    pub record: PathBuf,
    pub manifest: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Keep `incremental/` directories (rustc's incremental caches).
    pub incremental: bool,
    pub durability: store::Durability,
}

/// What a save did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Saved {
    pub id: String,
    pub key: String,
    pub files: u64,
    pub bytes: u64,
    /// Bytes of new blobs this snapshot added to the store.
    pub new_bytes: u64,
    /// The newest snapshot of this key already held the same tree and sources: nothing new
    /// was kept.
    pub unchanged: bool,
    pub checks: usize,
    pub seconds: f64,
}

fn key_dir(store: &Store, key: &str) -> PathBuf {
    store.snapshots_dir().join(key)
}

/// Saves `project.target_dir` as a snapshot under `project.key`.
pub fn save(
    store_root: &Path,
    project: &Project,
    opts: &SaveOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Saved, Error> {
    let started = std::time::Instant::now();
    if super::is_cold(&project.target_dir) {
        return Err(Error::NothingToSave(project.target_dir.clone()));
    }
    // Roots come from the build's own view of the packages, in canonical form.
    let host = super::key::host_triple()?;
    let mut platforms = vec![host.as_str()];
    if let Some(target) = project.key.target().filter(|t| *t != host) {
        platforms.push(target);
    }
    let roots = fingerprint::package_roots(&project.root, &platforms, |p| {
        project
            .projection
            .to_canonical(p)
            .unwrap_or_else(|| p.to_owned())
    });
    let fingerprints = fingerprint::read(&project.target_dir, &roots);
    let checks = fingerprints.checks;
    let sources = hash_sources(project, checks.iter().flat_map(|c| &c.sources));
    let packages = package_mtime::record(project, &fingerprints.package_mtimes);

    let store =
        Store::open_or_create(store_root, crate::store::Access::Private, "velo cache save")?;
    let dir = key_dir(&store, &project.key.key);
    std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let id = format!("{:013}-{}", now.as_millis(), std::process::id());
    let manifest_path = dir.join(format!("{id}.velo"));
    let mut excludes = vec![".cargo-lock".to_owned()];
    if !opts.incremental {
        excludes.push("incremental/".to_owned());
    }
    let report = ingest::ingest(
        store_root,
        &ingest::Options {
            source: project.target_dir.clone(),
            output: manifest_path.clone(),
            excludes,
            gitignore: false,
            on_unreadable: ingest::OnUnreadable::Fail,
            use_index: true,
            durability: opts.durability,
            access: crate::store::Access::Private,
        },
        progress,
    )?;
    let snapshot = Snapshot {
        format: FORMAT,
        id: id.clone(),
        key: project.key.key.clone(),
        created: now.as_secs(),
        profile: project.profile.clone(),
        manifest: report.manifest_id.clone(),
        target_dir: project
            .target_dir
            .strip_prefix(&project.root)
            .unwrap_or(&project.target_dir)
            .display()
            .to_string(),
        incremental: opts.incremental,
        files: report.files,
        bytes: report.bytes,
        sources,
        checks,
        packages,
    };
    let saved = |unchanged, new_bytes| Saved {
        id: snapshot.id.clone(),
        key: snapshot.key.clone(),
        files: snapshot.files,
        bytes: snapshot.bytes,
        new_bytes,
        unchanged,
        checks: snapshot.checks.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    // A save after a build that changed nothing keeps the older snapshot only.
    if let Some(newest) = list_key(&store, &project.key.key)?
        .into_iter()
        .find(|s| s.snapshot.id != id)
        && newest.snapshot.manifest == snapshot.manifest
        && newest.snapshot.sources == snapshot.sources
        && newest.snapshot.checks == snapshot.checks
        && newest.snapshot.packages == snapshot.packages
    {
        remove_files(&store, &manifest_path, None)?;
        let mut s = saved(true, 0);
        s.id = newest.snapshot.id;
        return Ok(s);
    }
    let record = dir.join(format!("{id}.json"));
    let json = serde_json::to_vec_pretty(&snapshot).expect("a snapshot serializes");
    store::write_atomic(&record, &json, true)?;
    Ok(saved(false, report.new_bytes))
}

/// Removes a snapshot's files and its GC root registration.
fn remove_files(store: &Store, manifest: &Path, record: Option<&Path>) -> Result<(), Error> {
    if let Some(root) = store.roots()?.into_iter().find(|r| r.manifest == manifest) {
        store.unregister_root(&root)?;
    }
    for path in [Some(manifest), record].into_iter().flatten() {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err("removing", path)(e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Deletes a snapshot (its blobs go at the next `velo gc --run` unless shared).
pub fn remove(store: &Store, stored: &Stored) -> Result<(), Error> {
    remove_files(store, &stored.manifest, Some(&stored.record))
}

/// Every snapshot of `key`, newest first.
pub fn list_key(store: &Store, key: &str) -> Result<Vec<Stored>, Error> {
    let dir = key_dir(store, key);
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(io_err("listing", &dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io_err("listing", &dir))?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match read_record(&path) {
            Ok(snapshot) if snapshot.format == FORMAT => found.push(Stored {
                manifest: path.with_extension("velo"),
                record: path,
                snapshot,
            }),
            Ok(_) => tracing::info!("skipping {}: another record format", path.display()),
            Err(e) => tracing::warn!("skipping {e}"),
        }
    }
    found.sort_by(|a, b| b.snapshot.id.cmp(&a.snapshot.id));
    Ok(found)
}

/// Every snapshot in the store, newest first.
pub fn list(store: &Store) -> Result<Vec<Stored>, Error> {
    let dir = store.snapshots_dir();
    let mut all = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(all),
        Err(e) => return Err(io_err("listing", &dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err("listing", &dir))?;
        if let Some(key) = entry.file_name().to_str() {
            all.extend(list_key(store, key)?);
        }
    }
    all.sort_by(|a, b| b.snapshot.id.cmp(&a.snapshot.id));
    Ok(all)
}

fn read_record(path: &Path) -> Result<Snapshot, Error> {
    let bad = |reason: String| Error::BadRecord {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))
}
