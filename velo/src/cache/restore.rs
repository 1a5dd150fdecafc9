//! Restoring a snapshot so that Cargo's view agrees with content.
//!
//! 1. **Plan** ([`plan`]): hash the current checkout's files that the key's snapshots name, and
//!    pick the snapshot with the most checks whose sources all match (the newest on a tie).
//! 2. **Copy** ([`apply`]): materialize the snapshot's manifest into a temporary directory
//!    beside the target directory, as private copies (reflinks where the filesystem has them):
//!    Cargo writes into `target/`, so nothing restored may share an inode with a store blob.
//! 3. **Adjust mtimes**, inside the temporary directory only:
//!    - every restored file gets one time `T`: 1 ns before the kernel's file clock
//!      (`CLOCK_REALTIME_COARSE`) as read *before* the checkout's sources were hashed, and after
//!      it passed their mtimes. Cargo's checks are strict comparisons (a source newer than its
//!      reference; a dependency's output newer than the unit's): with one time nothing in
//!      `target/` is newer than anything else, every hashed source is no newer than `T`, and
//!      any write after the reading (so any content the hash did not see) is newer;
//!    - the reference file of every check whose sources differ from the snapshot's (or could
//!      not all be named) gets `1970-01-01T00:00:01Z`, so the current sources are newer and
//!      Cargo rebuilds that unit; its dependents follow through Cargo's own tracking.
//! 4. **Publish**: rename the directory into place. A failure before that (a full disk, a
//!    missing blob) removes the temporary directory, so no half-restored target is ever seen,
//!    let alone marked fresh.
//! 5. **Package mtimes** ([`package_mtime`]): a unit Cargo fingerprints by its package's newest
//!    mtime (a build script without `rerun-if-changed`) is fresh only if the package's files
//!    carry the mtimes it was built with; when every one of them is byte-identical to the
//!    snapshot's record, their mtimes are set back to the recorded ones.
//!
//! Source contents are never touched; source mtimes only in step 5, only where content is
//! proven identical.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use super::package_mtime;
use super::snapshot::{self, Snapshot, Stored};
use super::{Error, Project, hash_sources, io_err};
use crate::manifest::{Kind, Manifest};
use crate::run::farm;
use crate::store::{self, BlobKey, LockMode, Store};

/// Why a check is restored stale.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stale {
    /// The reference file, relative to the target directory.
    pub reference: String,
    /// The first source that differs (canonical path), or why the check is unknown.
    pub reason: String,
}

/// How a snapshot fits the current checkout.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Evaluation {
    pub fresh: usize,
    pub stale: Vec<Stale>,
    /// Units fingerprinted by their package's newest mtime that restore makes fresh by dating
    /// the package's byte-identical files back ([`package_mtime`]).
    pub pinned: usize,
}

/// Compares a snapshot's recorded sources with `current` hashes.
pub fn evaluate(snapshot: &Snapshot, current: &BTreeMap<String, Option<String>>) -> Evaluation {
    let mut eval = Evaluation::default();
    for check in &snapshot.checks {
        let changed = check.sources.iter().find(|s| {
            let then = snapshot.sources.get(*s).cloned().flatten();
            let now = current.get(*s).cloned().flatten();
            then.is_none() || now.is_none() || then != now
        });
        match (check.complete, changed) {
            (true, None) => eval.fresh += 1,
            (false, _) => eval.stale.push(Stale {
                reference: check.reference.clone(),
                reason: "not every input could be named when it was saved".into(),
            }),
            (true, Some(path)) => eval.stale.push(Stale {
                reference: check.reference.clone(),
                reason: match current.get(path).cloned().flatten() {
                    None => format!("{path} is missing"),
                    Some(_) => format!("{path} changed"),
                },
            }),
        }
    }
    eval
}

/// The snapshot to restore for `project`, and how it fits.
#[derive(Debug, Clone)]
pub struct Plan {
    pub stored: Stored,
    pub evaluation: Evaluation,
    /// How many snapshots the key has.
    pub candidates: usize,
    /// The file clock before the checkout was hashed; restored files are dated 1 ns earlier.
    pub clock: std::time::Duration,
    /// The packages whose files' mtimes restore sets back.
    pub packages: package_mtime::Plan,
}

/// The best snapshot of the project's key, or `None` when the key has none.
pub fn plan(store: &Store, project: &Project) -> Result<Option<Plan>, Error> {
    Ok(plan_among(
        project,
        snapshot::list_key(store, &project.key.key)?,
    ))
}

/// The best of `candidates` (snapshots of the project's key, newest first) for `project`.
pub fn plan_among(project: &Project, candidates: Vec<Stored>) -> Option<Plan> {
    let sources: BTreeSet<&String> = candidates
        .iter()
        .flat_map(|c| c.snapshot.sources.keys())
        .collect();
    // The clock reading restored files are dated just before. Taken *before* hashing, so a
    // source written after the hash was read carries a later mtime and Cargo sees it; and only
    // once the filesystem clock has passed every source's mtime, so sources written just
    // before the restore (a clone a millisecond ago) are older than it.
    let newest = sources
        .par_iter()
        .filter_map(|s| super::newest_mtime(&project.physical(s)))
        .max();
    let clock = file_clock_after(newest);
    let current = hash_sources(project, sources);
    let count = candidates.len();
    let best = candidates
        .into_iter()
        .map(|stored| {
            let evaluation = evaluate(&stored.snapshot, &current);
            (stored, evaluation)
        })
        // Newest first, so on a tie `max_by_key` (which keeps the last maximum) must not win:
        // reverse to keep the newest.
        .rev()
        .max_by_key(|(_, e)| e.fresh);
    best.map(|(stored, mut evaluation)| {
        let packages = package_mtime::plan(project, &stored.snapshot.packages);
        evaluation.pinned = packages.pins.iter().map(|p| p.units.len()).sum();
        evaluation
            .stale
            .extend(packages.stale.iter().map(|(unit, why)| Stale {
                reference: unit.clone(),
                reason: format!("the package's files differ from the snapshot's: {why}"),
            }));
        Plan {
            stored,
            evaluation,
            candidates: count,
            clock,
            packages,
        }
    })
}

/// The clock the kernel stamps file times with (`CLOCK_REALTIME_COARSE`: a file written after
/// this reading gets an mtime at least this large, multigrain timestamps included), read once it
/// is past `newest` (waiting at most a second; sources dated in the future are not waited for).
fn file_clock_after(newest: Option<std::time::SystemTime>) -> std::time::Duration {
    let read = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    let newest = newest
        .and_then(|n| n.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let deadline = Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let now = read();
        if now > newest || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Where a restore finds the blobs the local store lacks (a remote): each is written straight
/// into the restored tree, so a cold restore writes its bytes once, not into the store and then
/// again into `target/`. The local store does not gain them; the next save stores what the
/// build left.
pub trait Supply: Sync {
    /// Hands each of `blobs` (key and size, each once) to `put`, at most once, after checking
    /// its bytes against its key. Returns how many it could not bring (absent, or failing their
    /// check); the first error of `put` stops it and is returned.
    fn supply(&self, blobs: Vec<(BlobKey, u64)>, put: &Put<'_>) -> Result<usize, Error>;
}

/// What a [`Supply`] hands each blob's checked bytes to.
pub type Put<'a> = dyn Fn(&BlobKey, &[u8]) -> Result<(), Error> + Sync + 'a;

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    pub id: String,
    pub key: String,
    pub files: u64,
    pub bytes: u64,
    pub reflinked: u64,
    pub copied: u64,
    /// Files written straight from a [`Supply`] (a remote).
    pub fetched: u64,
    pub fresh: usize,
    pub stale: Vec<Stale>,
    /// Units made fresh by dating their package's byte-identical files back.
    pub pinned: usize,
    pub seconds: f64,
}

/// 1970-01-01T00:00:01Z: older than any source a checkout can have.
const STALE_TIME: libc::timespec = libc::timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

/// Restores `plan` into `project.target_dir`, which must be missing or empty: from the store,
/// and what it lacks from `elsewhere` when there is one.
pub fn apply(
    store: &Store,
    project: &Project,
    plan: &Plan,
    progress: &(dyn Fn(u64) + Sync),
    elsewhere: Option<&dyn Supply>,
) -> Result<Restored, Error> {
    let started = Instant::now();
    let target = &project.target_dir;
    if !super::is_cold(target) {
        return Err(Error::TargetNotEmpty(target.clone()));
    }
    let _lock = store.lock(LockMode::Shared)?;
    let manifest = Manifest::read(&plan.stored.manifest).map_err(|e| Error::BadRecord {
        path: plan.stored.manifest.clone(),
        reason: e.to_string(),
    })?;
    let parent = target.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    // Removed on every early return: nothing half-restored is left behind.
    let staging = tempfile::Builder::new()
        .prefix(".velo-restore-")
        .tempdir_in(parent)
        .map_err(io_err("creating a staging directory in", parent))?;
    let links = uplifted(&manifest);
    let absent = match elsewhere {
        Some(_) => absent_blobs(store, &manifest, staging.path(), &links)?,
        None => HashMap::new(),
    };
    let stats = farm::materialize_except(
        store,
        &manifest,
        staging.path(),
        farm::Method::Copy,
        progress,
        &|path, blob| links.contains_key(path) || absent.contains_key(blob),
    )
    .map_err(|e| match e {
        // A corrupt blob is as good as a missing one: nothing of it reaches target/.
        farm::Error::MissingBlobs { count, .. } | farm::Error::Unfit { count, .. } => {
            Error::MissingBlobs {
                id: plan.stored.snapshot.id.clone(),
                count,
            }
        }
        farm::Error::Store(e) => Error::Store(*e),
        farm::Error::Io { op, path, source } => Error::Io { op, path, source },
    })?;

    let mut fetched = 0;
    if let Some(supply) = elsewhere
        && !absent.is_empty()
    {
        let put = |blob: &BlobKey, data: &[u8]| -> Result<(), Error> {
            let Some(absent) = absent.get(blob) else {
                return Ok(());
            };
            // A lying index may offer a blob twice: the first copy, already checked, stays.
            if absent.made.swap(true, Ordering::Relaxed) {
                return Ok(());
            }
            for path in &absent.paths {
                write_new(path, data)?;
                progress(data.len() as u64);
            }
            Ok(())
        };
        let blobs = absent.iter().map(|(b, a)| (*b, a.size)).collect();
        let lacking = supply.supply(blobs, &put)?;
        if lacking > 0 {
            return Err(Error::MissingBlobs {
                id: plan.stored.snapshot.id.clone(),
                count: lacking,
            });
        }
        fetched = absent.values().map(|a| a.paths.len() as u64).sum();
    }
    for (uplift, (from, size)) in &links {
        let to = staging.path().join(store::bytes_to_path(uplift));
        std::fs::hard_link(staging.path().join(store::bytes_to_path(from)), &to)
            .map_err(io_err("linking", &to))?;
        progress(*size);
    }

    // 1 ns before the clock reading: every source hashed as unchanged is no newer, and any
    // write from that reading on (even within the same clock tick) is newer.
    let fresh = plan
        .clock
        .saturating_sub(std::time::Duration::from_nanos(1));
    let fresh_time = libc::timespec {
        tv_sec: fresh.as_secs() as libc::time_t,
        tv_nsec: fresh.subsec_nanos() as _,
    };
    // Store modes are read-only; Cargo and rustc rewrite files in place (and rustc hard-links
    // incremental objects into deps/), so restored files get ordinary writable modes.
    manifest.entries().par_iter().try_for_each(|e| {
        let Kind::File { exec, .. } = e.kind else {
            return Ok(());
        };
        let path = staging.path().join(store::bytes_to_path(&e.path));
        let mode = if exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err("setting the mode of", &path))?;
        set_mtime(&path, fresh_time)
    })?;
    let checked: BTreeSet<&str> = plan
        .stored
        .snapshot
        .checks
        .iter()
        .map(|c| c.reference.as_str())
        .collect();
    for stale in &plan.evaluation.stale {
        let reference = staging.path().join(&stale.reference);
        if checked.contains(stale.reference.as_str()) && reference.exists() {
            set_mtime(&reference, STALE_TIME)?;
        }
    }

    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, target) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(io_err("moving the restored tree to", target)(e));
    }
    // Only once the target is in place: the package files whose content is proven identical
    // get the mtimes Cargo fingerprinted them with.
    let mut stale = plan.evaluation.stale.clone();
    let mut pinned = plan.evaluation.pinned;
    for (unit, why) in package_mtime::apply(&plan.packages.pins) {
        pinned -= 1;
        stale.push(Stale {
            reference: unit,
            reason: why,
        });
    }
    Ok(Restored {
        id: plan.stored.snapshot.id.clone(),
        key: plan.stored.snapshot.key.clone(),
        files: stats.files,
        bytes: manifest.logical_bytes(),
        reflinked: stats.reflinked,
        copied: stats.copied,
        fetched,
        fresh: plan.evaluation.fresh,
        stale,
        pinned,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A blob the store lacks, and where the restored tree has it.
struct Absent {
    size: u64,
    paths: Vec<PathBuf>,
    made: AtomicBool,
}

/// The files Cargo hard-links ("uplifts") from `deps/` into the directory above it
/// (`debug/deps/velo-1f2e…` → `debug/velo`), by path: each with the path of the file in `deps/`
/// it is restored as a link to, and its size. A restore links them as Cargo left them, rather
/// than writing a second copy (a quarter of velo's own `target/`). Only a non-empty file directly
/// in a profile directory (`debug/`, `<triple>/release/`), whose blob a file of that directory's
/// `deps/` has: two files that merely hold the same bytes elsewhere (empty stamps, build-script
/// output) stay apart, as Cargo may rewrite one of them in place.
fn uplifted(manifest: &Manifest) -> HashMap<&[u8], (&[u8], u64)> {
    let files = || {
        manifest.entries().iter().filter_map(|e| match e.kind {
            Kind::File { size, .. } if size > 0 => Some((e.blob()?, size, e.path.as_slice())),
            _ => None,
        })
    };
    let profile_dir = |dir: &[u8]| {
        !dir.is_empty() && dir.split(|&b| b == b'/').count() <= 2 && !dir.starts_with(b"build")
    };
    let mut in_deps: HashMap<(&[u8], BlobKey), &[u8]> = HashMap::new();
    for (blob, _, path) in files() {
        let dir = parent_dir(path);
        if let Some(profile) = dir.strip_suffix(b"/deps")
            && profile_dir(profile)
        {
            in_deps.entry((profile, blob)).or_insert(path);
        }
    }
    files()
        .filter_map(|(blob, size, path)| {
            let dir = parent_dir(path);
            let from = in_deps.get(&(dir, blob))?;
            (profile_dir(dir) && *from != path).then_some((path, (*from, size)))
        })
        .collect()
}

/// `path`'s directory (empty at the top).
fn parent_dir(path: &[u8]) -> &[u8] {
    path.iter()
        .rposition(|&b| b == b'/')
        .map_or(&path[..0], |i| &path[..i])
}

/// The blobs of `manifest` the store lacks or holds unsound, with their paths under `staging`
/// (but for the `links`, which are made from another path).
fn absent_blobs(
    store: &Store,
    manifest: &Manifest,
    staging: &Path,
    links: &HashMap<&[u8], (&[u8], u64)>,
) -> Result<HashMap<BlobKey, Absent>, Error> {
    let files: Vec<(BlobKey, u64, &[u8])> = manifest
        .entries()
        .iter()
        .filter_map(|e| match e.kind {
            Kind::File { size, .. } => Some((e.blob()?, size, e.path.as_slice())),
            _ => None,
        })
        .filter(|(_, _, path)| !links.contains_key(path))
        .collect();
    let lacking: Vec<bool> = files
        .par_iter()
        .with_min_len(256)
        .map(|(blob, size, _)| Ok(store.ensure(blob, *size)? != store::Fitness::Sound))
        .collect::<Result<_, store::Error>>()?;
    let mut absent: HashMap<BlobKey, Absent> = HashMap::new();
    for ((blob, size, path), _) in files.into_iter().zip(lacking).filter(|(_, l)| *l) {
        absent
            .entry(blob)
            .or_insert_with(|| Absent {
                size,
                paths: Vec::new(),
                made: AtomicBool::new(false),
            })
            .paths
            .push(staging.join(store::bytes_to_path(path)));
    }
    Ok(absent)
}

/// Writes a new private file (its mode is set with the others').
fn write_new(path: &Path, data: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(io_err("writing", path))
}

fn set_mtime(path: &Path, mtime: libc::timespec) -> Result<(), Error> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("paths have no NUL");
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        mtime,
    ];
    // SAFETY: a NUL-terminated path and a two-element array, as utimensat requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io_err("setting the mtime of", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
