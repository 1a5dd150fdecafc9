//! `velo cache`: content-keyed snapshots of Cargo's `target/` directory that restore fresh in
//! any checkout.
//!
//! # The idea
//!
//! Under `velo inception` every path Cargo records is canonical (`/vrift_workspace/…` for the
//! project, `/cargo-home/…` for registry sources), so a `target/` built in one checkout is valid
//! in any other checkout of the same commit. Three things make that usable:
//!
//! 1. **The [`key`]** files a snapshot under the content of what decides compilation (lockfile,
//!    manifests, toolchain, profile, flags), never under a path.
//! 2. **Snapshots** ([`snapshot`]) are ordinary store manifests of the target directory, plus a
//!    record of the mtime checks Cargo makes ([`fingerprint`]) and the BLAKE3 of every source
//!    file those checks name.
//! 3. **Restore** ([`restore`]) copies the tree out of the store (reflinks where possible:
//!    Cargo writes into `target/`, so restored files must not share inodes with blobs) and then
//!    makes Cargo's mtime view agree with content: every restored file gets the restore time,
//!    which is newer than the checkout's sources, so Cargo sees each unit fresh; except that a
//!    check whose sources differ from the snapshot's gets a reference file from 1970, so Cargo
//!    rebuilds exactly those units and, through its own dependency tracking, their dependents.
//!    One exception, for units Cargo fingerprints by the newest mtime of their whole package
//!    (a build script without `rerun-if-changed`): the package's files get their recorded
//!    mtimes back, only when every one is byte-identical ([`package_mtime`]). No source's
//!    content is ever touched (invariant 1), and no changed input is presented as fresh
//!    (invariant 4).
//!
//! docs/cache.md tells the same story for users, with every adjustment and why it is safe.

pub mod fingerprint;
pub mod key;
pub mod package_mtime;
pub mod restore;
pub mod snapshot;
pub mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::inception::Projection;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Key(#[from] key::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::Error),
    #[error(transparent)]
    Inception(#[from] crate::inception::Error),
    #[error("{}: there is nothing to save (build the project first)", .0.display())]
    NothingToSave(PathBuf),
    #[error(
        "the target directory {} is not empty: velo cache restore only restores into a missing or empty target directory, so nothing of yours is overwritten (remove it, or pass --target-dir)",
        .0.display()
    )]
    TargetNotEmpty(PathBuf),
    #[error(
        "snapshot {id} is missing {count} blob(s) in the store (garbage-collected, corrupt, or of another size than recorded); nothing was restored. Build normally and save again (`velo cargo build`)"
    )]
    MissingBlobs { id: String, count: usize },
    /// What a [`restore::Supply`] (a remote) said when it could not serve.
    #[error(transparent)]
    Supply(Box<dyn std::error::Error + Send + Sync>),
    #[error("snapshot record {}: {reason}", .path.display())]
    BadRecord { path: PathBuf, reason: String },
    #[error("{op} {}: {source}{hint}", .path.display(), hint = disk_full_hint(.source))]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn disk_full_hint(e: &std::io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        " (the disk is full: the partial restore was removed and the target directory left as it was)"
    } else {
        ""
    }
}

/// Saves `project`'s target directory as a snapshot of its key in the store at `store_root`.
pub fn save(
    store_root: &Path,
    project: &Project,
    incremental: bool,
    progress: &dyn Progress,
) -> Result<snapshot::Saved, Error> {
    progress.start("saving", None);
    let saved = snapshot::save(
        store_root,
        project,
        &snapshot::SaveOptions {
            incremental,
            ..Default::default()
        },
        &|n| progress.advance(n),
    );
    progress.finish();
    saved
}

/// Restores the newest snapshot of `project`'s key into its (missing or empty) target
/// directory; `None` when there is no store or no snapshot of the key.
pub fn restore_cold(
    store_root: &Path,
    project: &Project,
    progress: &dyn Progress,
) -> Result<Option<restore::Restored>, Error> {
    if !is_cold(&project.target_dir) {
        return Err(Error::TargetNotEmpty(project.target_dir.clone()));
    }
    let store = match crate::store::Store::open_existing(store_root) {
        Ok(s) => s,
        Err(crate::store::Error::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(plan) = restore::plan(&store, project)? else {
        return Ok(None);
    };
    progress.start("restoring", Some(plan.stored.snapshot.bytes));
    let restored = restore::apply(&store, project, &plan, &|n| progress.advance(n), None);
    progress.finish();
    Ok(Some(restored?))
}

/// What `velo cache list` shows: each snapshot, and what the snapshots share.
#[derive(Debug, serde::Serialize)]
pub struct Listed {
    pub id: String,
    pub key: String,
    pub profile: String,
    pub created: u64,
    pub incremental: bool,
    pub files: u64,
    pub bytes: u64,
    /// Bytes of blobs no other snapshot uses.
    pub unique_bytes: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct Listing {
    pub snapshots: Vec<Listed>,
    /// The sum of every snapshot's size.
    pub logical_bytes: u64,
    /// What they take in the store, each blob counted once.
    pub stored_bytes: u64,
}

impl Listing {
    /// Every snapshot in the store at `store_root` (none when it does not exist yet).
    pub fn of_store(store_root: &Path) -> Result<Listing, Error> {
        let all = match crate::store::Store::open_existing(store_root) {
            Ok(s) => snapshot::list(&s)?,
            Err(crate::store::Error::Missing { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Listing::of(&all)
    }

    /// The snapshots `all`, with what each holds that no other does.
    pub fn of(all: &[snapshot::Stored]) -> Result<Listing, Error> {
        use std::collections::HashMap;
        let mut uses: HashMap<crate::store::BlobKey, (u32, u64)> = HashMap::new();
        let mut per = Vec::new();
        for s in all {
            let manifest =
                crate::manifest::Manifest::read(&s.manifest).map_err(|e| Error::BadRecord {
                    path: s.manifest.clone(),
                    reason: format!("snapshot {}: {e}", s.snapshot.id),
                })?;
            let mut blobs: Vec<(crate::store::BlobKey, u64)> = manifest
                .entries()
                .iter()
                .filter_map(|e| match e.kind {
                    crate::manifest::Kind::File { size, .. } => e.blob().map(|b| (b, size)),
                    _ => None,
                })
                .collect();
            blobs.sort_unstable_by_key(|(b, _)| (b.hash.as_bytes().to_owned(), b.exec));
            blobs.dedup_by_key(|(b, _)| *b);
            for (b, size) in &blobs {
                uses.entry(*b).or_insert((0, *size)).0 += 1;
            }
            per.push(blobs);
        }
        let snapshots = all
            .iter()
            .zip(&per)
            .map(|(s, blobs)| Listed {
                id: s.snapshot.id.clone(),
                key: s.snapshot.key.clone(),
                profile: s.snapshot.profile.clone(),
                created: s.snapshot.created,
                incremental: s.snapshot.incremental,
                files: s.snapshot.files,
                bytes: s.snapshot.bytes,
                unique_bytes: blobs
                    .iter()
                    .filter(|(b, _)| uses[b].0 == 1)
                    .map(|(_, size)| size)
                    .sum(),
            })
            .collect::<Vec<_>>();
        Ok(Listing {
            logical_bytes: snapshots.iter().map(|s| s.bytes).sum(),
            stored_bytes: uses.values().map(|(_, size)| size).sum(),
            snapshots,
        })
    }
}

/// What `velo cache status` shows: the key, the target directory, the best snapshot.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub key: String,
    pub root: PathBuf,
    pub target_dir: PathBuf,
    pub cold: bool,
    pub snapshots: usize,
    pub best: Option<String>,
    pub evaluation: Option<restore::Evaluation>,
    /// The best snapshot's files and bytes (shown by the table; the JSON has the id).
    #[serde(skip)]
    pub best_size: Option<(u64, u64)>,
}

impl Status {
    /// What a restore of `project` would find in the store at `store_root`, and do.
    pub fn of(store_root: &Path, project: &Project) -> Result<Status, Error> {
        let plan = match crate::store::Store::open_existing(store_root) {
            Ok(s) => restore::plan(&s, project)?,
            Err(crate::store::Error::Missing { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Status {
            key: project.key.key.clone(),
            root: project.root.clone(),
            target_dir: project.target_dir.clone(),
            cold: is_cold(&project.target_dir),
            snapshots: plan.as_ref().map_or(0, |p| p.candidates),
            best: plan.as_ref().map(|p| p.stored.snapshot.id.clone()),
            evaluation: plan.as_ref().map(|p| p.evaluation.clone()),
            best_size: plan
                .as_ref()
                .map(|p| (p.stored.snapshot.files, p.stored.snapshot.bytes)),
        })
    }
}

pub(crate) fn io_err<'p>(
    op: &'static str,
    path: &'p Path,
) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A project as the cache sees it: where it lives, where its target directory is, how it is
/// projected, and its content key.
#[derive(Debug, Clone)]
pub struct Project {
    /// The physical project root.
    pub root: PathBuf,
    /// The physical target directory (inside the root, or artifacts hold its physical path).
    pub target_dir: PathBuf,
    /// The projection builds run under: the root at `/vrift_workspace`, `CARGO_HOME` at
    /// `/cargo-home`.
    pub projection: Projection,
    pub profile: String,
    pub key: key::Key,
}

/// What names a project and its build, apart from where it is: the cache key's inputs a user
/// chooses (`velo cache --profile …`, or what `velo cargo`'s arguments say).
#[derive(Debug, Clone, Default)]
pub struct ProjectRequest {
    /// `--root DIR`; else the enclosing Cargo workspace.
    pub root: Option<PathBuf>,
    pub profile: String,
    pub target: Option<String>,
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    /// `--target-dir`, relative to the working directory; else `<root>/target`.
    pub target_dir: Option<PathBuf>,
}

/// Where long work reports how far it is, in bytes (the CLI draws a bar on a terminal).
pub trait Progress: Sync {
    /// Work named `what` (`restoring`, `saving`) starts, toward `total` bytes if known.
    fn start(&self, what: &'static str, total: Option<u64>);
    fn advance(&self, bytes: u64);
    /// The work is over.
    fn finish(&self);
}

/// No progress shown.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &'static str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

impl Project {
    /// The project `req` names from the working directory, projected the way `velo inception`
    /// projects it ([`Projection::for_cwd`]), with its content key.
    pub fn for_cwd(req: &ProjectRequest) -> Result<Project, Error> {
        let (projection, cwd) = Projection::for_cwd(crate::inception::Setup {
            root: req.root.as_deref(),
            no_cargo_home: false,
            fall_back_to_cwd: false,
        })?;
        let root = projection.physical.clone();
        let target_dir = match &req.target_dir {
            Some(dir) => std::path::absolute(cwd.join(dir)).map_err(io_err("resolving", dir))?,
            None => root.join("target"),
        };
        let key = key::compute(&key::Request {
            root: root.clone(),
            profile: req.profile.clone(),
            target: req.target.clone(),
            features: req.features.clone(),
            all_features: req.all_features,
            no_default_features: req.no_default_features,
            // The projection's, normalized: `/vrift_workspace/` and `/vrift_workspace` are one.
            canonical_root: projection.canonical.to_string_lossy().into_owned(),
        })?;
        Ok(Project {
            root,
            target_dir,
            projection,
            profile: req.profile.clone(),
            key,
        })
    }

    /// The physical file a canonical source path names here: through the projection when it is
    /// under a canonical root, else the path itself (a system header, say).
    pub fn physical(&self, canonical: &str) -> PathBuf {
        let path = Path::new(canonical);
        self.projection
            .to_physical(path)
            .unwrap_or_else(|| path.to_owned())
    }
}

/// The BLAKE3 (hex) of each source, or `None` when it cannot be read: hashed in parallel.
pub fn hash_sources<'a>(
    project: &Project,
    sources: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<String, Option<String>> {
    let unique: BTreeSet<&String> = sources.into_iter().collect();
    unique
        .into_par_iter()
        .map(|s| (s.clone(), hash_file(&project.physical(s))))
        .collect()
}

/// The BLAKE3 of a file's content; of a directory, over every entry beneath it (sorted
/// relative names, kinds and file contents), because Cargo checks a directory named by
/// `rerun-if-changed` by the newest mtime of everything in it. Symlinks are followed, as Cargo
/// follows them when it reads mtimes.
pub(crate) fn hash_file(path: &Path) -> Option<String> {
    let mut hasher = blake3::Hasher::new();
    if std::fs::metadata(path).ok()?.is_dir() {
        for entry in walk(path)? {
            let rel = entry.path().strip_prefix(path).ok()?;
            hasher.update(rel.as_os_str().as_encoded_bytes());
            if entry.file_type().is_some_and(|t| t.is_dir()) {
                hasher.update(b"\0dir\0");
            } else {
                hasher.update(b"\0file\0");
                hasher
                    .update_reader(std::fs::File::open(entry.path()).ok()?)
                    .ok()?;
            }
        }
    } else {
        hasher.update_reader(std::fs::File::open(path).ok()?).ok()?;
    }
    Some(hasher.finalize().to_hex().to_string())
}

/// Every entry below `dir`, sorted, following symlinks; `None` if any cannot be read.
fn walk(dir: &Path) -> Option<Vec<ignore::DirEntry>> {
    ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .follow_links(true)
        .sort_by_file_path(|a, b| a.cmp(b))
        .build()
        .skip(1)
        .map(Result::ok)
        .collect()
}

/// The newest mtime of `path`, and of everything beneath it when it is a directory (Cargo's
/// `mtime_recursive`).
pub fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let own = std::fs::metadata(path).ok()?;
    let mut newest = own.modified().ok()?;
    if own.is_dir() {
        for entry in walk(path)? {
            if let Some(m) = entry.metadata().ok().and_then(|m| m.modified().ok()) {
                newest = newest.max(m);
            }
        }
    }
    Some(newest)
}

/// Whether `dir` is missing or an empty directory: a "cold" target directory.
pub fn is_cold(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_hashes_over_its_contents_and_its_newest_mtime_is_inside() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("cmake");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.cmake"), "one").unwrap();
        let before = hash_file(&dir).expect("a directory has a hash");
        assert_eq!(hash_file(&dir), Some(before.clone()), "stable");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        std::fs::File::open(&dir)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(newest_mtime(&dir).unwrap() > old, "a file inside is newer");
        std::fs::write(dir.join("sub/a.cmake"), "two").unwrap();
        assert_ne!(
            hash_file(&dir),
            Some(before.clone()),
            "content inside changed"
        );
        std::fs::write(dir.join("sub/a.cmake"), "one").unwrap();
        std::fs::write(dir.join("b"), "").unwrap();
        assert_ne!(hash_file(&dir), Some(before), "an entry was added");
        assert_eq!(hash_file(&t.path().join("missing")), None);
    }
}
