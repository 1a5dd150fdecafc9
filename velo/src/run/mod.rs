//! `velo run`: a manifest's tree, projected for a command.
//!
//! Mode A of the usage guide: the layers (`--base`… then `--manifest`) are merged
//! ([`layers`]), materialized as a link farm of hard links into the store ([`farm`]), and the
//! command runs on it at native speed, static binaries included ([`exe`] tells them apart for
//! `--mode auto`). The farm is always covered by a private OverlayFS before the command sees it,
//! so writes land in a private upper layer and store blobs stay immutable even for root; with
//! `--isolate` the overlay becomes the root of a rootless namespace sandbox ([`sandbox`]).
//!
//! A farm of hard links is only ever seen through an overlay, so it never changes, and the farm
//! of a given (merged) manifest is built once and kept in the store's farm cache,
//! `farms/cache/<manifest id>/` (on the store's filesystem, so hard links work): the second run
//! of a manifest starts without materializing anything. A farm is built under a temporary name
//! and renamed into place, so a farm in the cache is always complete. `velo gc --run` empties
//! the cache (cached farms pin the inodes of blobs gc deletes).
//!
//! Each run also gets a private directory, `farms/<pid>-<random>/`, holding what the mode needs
//! (each made on first use: a sandbox's start-up is a few milliseconds, and every directory made
//! and removed on the host filesystem costs a journal update):
//!
//! | path     | what                                                              |
//! |----------|-------------------------------------------------------------------|
//! | `tree/`  | a private farm of copies, when namespaces are unavailable; shim mode's empty working directory |
//! | `upper/` | farm mode: the overlay's upper layer, everything the command wrote  |
//! | `work/`  | farm mode: OverlayFS's work directory                              |
//!
//! With `--isolate` the run directory itself is the sandbox's scratch mountpoint: inside the
//! namespace a tmpfs covers it and holds the new root, upper and work directories, so on the
//! host it stays empty.
//!
//! It is removed when the command ends unless `--keep` is given. `velo gc --run` removes the
//! directories of runs whose velo process died without cleaning up.

pub mod exe;
pub mod execute;
pub mod farm;
pub mod launch;
pub mod layers;
pub mod mirage;
pub mod plan;
pub mod sandbox;
pub mod shim_mode;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::store::Store;

/// A run's private directory in the store (see the module docs).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl RunDir {
    /// Creates `farms/<pid>-<n>/` in the store (in [`Store::scratch`] for a read-only one).
    pub fn create(store: &Store, keep: bool) -> io::Result<RunDir> {
        let farms = store.runs_dir()?;
        let mut builder = fs::DirBuilder::new();
        builder.mode(0o700).recursive(true);
        builder.create(&farms)?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempdir_in(&farms)?
            .keep();
        Ok(RunDir { path: dir, keep })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn tree(&self) -> io::Result<PathBuf> {
        self.sub("tree")
    }
    pub fn upper(&self) -> io::Result<PathBuf> {
        self.sub("upper")
    }
    pub fn work(&self) -> io::Result<PathBuf> {
        self.sub("work")
    }

    /// `<run>/<name>/`, made on first use.
    fn sub(&self, name: &str) -> io::Result<PathBuf> {
        let path = self.path.join(name);
        match fs::create_dir(&path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(path),
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove_tree(&self.path);
        }
    }
}

/// Removes a run directory, including what OverlayFS leaves behind (a `work/work` directory
/// with mode 000).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    if fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    for entry in walk_dirs(path) {
        let _ = fs::set_permissions(&entry, fs::Permissions::from_mode(0o700));
    }
    fs::remove_dir_all(path)
}

fn walk_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_owned()];
    let mut i = 0;
    while i < out.len() {
        let _ = fs::set_permissions(&out[i], fs::Permissions::from_mode(0o700));
        if let Ok(rd) = fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

/// A cached farm in use: holds a shared lock on `<id>.lock` beside it until dropped, so that
/// `velo gc --run` leaves the farm alone while a command runs on it (changing an overlay's lower
/// layer under a mounted overlay is undefined).
#[derive(Debug)]
pub struct FarmInUse {
    pub path: PathBuf,
    /// How the farm was built, when this run built it.
    pub built: Option<farm::Stats>,
    _lock: fs::File,
}

fn lock_file(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Where cached farms live: `farms/cache/` in the store, or in [`Store::scratch`] for a store
/// this process cannot write.
pub fn farm_cache(store: &Store) -> io::Result<PathBuf> {
    store.farm_cache_dir()
}

/// The cached link farm of `tree`, built now if it is not in the cache yet. A cached farm is
/// used only while every file in it is still sound ([`farm::farm_is_sound`]: a blob written to
/// through its inode, or replaced by a repair, makes the farm be built again from the store,
/// whose blobs are checked first).
pub fn cached_farm(
    store: &Store,
    tree: &crate::manifest::Manifest,
) -> Result<FarmInUse, farm::Error> {
    let cache = farm_cache(store).map_err(|source| farm::Error::Io {
        op: "creating the farm cache for",
        path: store.root().to_owned(),
        source,
    })?;
    let id = tree.id().to_string();
    let path = cache.join(&id);
    let io = |op, p: &Path| {
        let p = p.to_owned();
        move |source| farm::Error::Io {
            op,
            path: p,
            source,
        }
    };
    let mut builder = fs::DirBuilder::new();
    builder.mode(0o700).recursive(true);
    builder
        .create(&cache)
        .map_err(io("creating the farm cache", &cache))?;
    let lock_path = cache.join(format!("{id}.lock"));
    let lock = lock_file(&lock_path).map_err(io("opening the farm lock", &lock_path))?;
    lock.lock_shared()
        .map_err(io("locking the farm", &lock_path))?;
    if path.is_dir() {
        if farm::farm_is_sound(&path, tree) {
            return Ok(FarmInUse {
                path,
                built: None,
                _lock: lock,
            });
        }
        // Renamed first, so no new run finds it, then removed.
        tracing::warn!(farm = %path.display(), "a cached farm holds content that is no longer sound; building it again");
        let aside = cache.join(format!(".stale-{}-{id}", std::process::id()));
        fs::rename(&path, &aside).map_err(io("setting aside the stale farm", &path))?;
        let _ = remove_tree(&aside);
    }
    let building = tempfile::Builder::new()
        .prefix(&format!(".building-{}-", std::process::id()))
        .tempdir_in(&cache)
        .map_err(io("creating a farm", &cache))?;
    fs::set_permissions(building.path(), fs::Permissions::from_mode(0o755))
        .map_err(io("creating a farm", building.path()))?;
    let stats = farm::materialize(store, tree, building.path(), farm::Method::Link)?;
    let built = building.keep();
    match fs::rename(&built, &path) {
        Ok(()) => {}
        // Another run built the same farm first: use theirs.
        Err(_) if path.is_dir() => {
            let _ = remove_tree(&built);
        }
        Err(e) => return Err(io("caching the farm", &path)(e)),
    }
    Ok(FarmInUse {
        path,
        built: Some(stats),
        _lock: lock,
    })
}

/// Empties the farm cache of farms no command is running on; returns how many were removed.
pub fn clear_farm_cache(store: &Store) -> io::Result<usize> {
    let cache = store.farm_cache_dir()?;
    let Ok(rd) = fs::read_dir(&cache) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Farms still being built belong to a live run; lock files go with their farm.
        if name.starts_with(".building-") || name.ends_with(".lock") {
            continue;
        }
        let lock_path = cache.join(format!("{name}.lock"));
        let lock = lock_file(&lock_path)?;
        if lock.try_lock().is_err() {
            continue; // a command is running on it
        }
        remove_tree(&entry.path())?;
        let _ = fs::remove_file(&lock_path);
        removed += 1;
    }
    Ok(removed)
}

/// Removes the run directories of velo processes that no longer exist; returns how many.
pub fn remove_stale(store: &Store) -> io::Result<usize> {
    let Ok(rd) = fs::read_dir(store.runs_dir()?) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in rd.flatten() {
        let name = entry.file_name();
        if name == "cache" {
            continue;
        }
        let pid = name
            .to_string_lossy()
            .split('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok());
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = pid.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
        if !alive {
            remove_tree(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Resolves `program` as exec would, inside `root` (a farm) when `inside` is set: relative
/// names with a `/` against `cwd`, bare names along `path`; symlinks inside the tree are followed
/// within it (an absolute target means the tree's root, not the host's).
pub fn resolve_program(
    program: &OsStr,
    root: Option<&Path>,
    cwd: &Path,
    path: &str,
) -> Option<PathBuf> {
    let program = Path::new(program);
    let place = |p: &Path| -> PathBuf {
        match root {
            Some(root) if p.is_absolute() => root.join(p.strip_prefix("/").expect("absolute")),
            _ if p.is_absolute() => p.to_owned(),
            _ => cwd.join(p),
        }
    };
    let candidate = if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        place(program)
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| place(Path::new(d)).join(program))
            .find(|c| fs::symlink_metadata(c).is_ok())?
    };
    follow_within(candidate, root)
}

fn follow_within(mut path: PathBuf, root: Option<&Path>) -> Option<PathBuf> {
    for _ in 0..40 {
        let meta = fs::symlink_metadata(&path).ok()?;
        if !meta.file_type().is_symlink() {
            return Some(path);
        }
        let target = fs::read_link(&path).ok()?;
        path = match root {
            Some(root) if target.is_absolute() => {
                root.join(target.strip_prefix("/").expect("absolute"))
            }
            _ => path.parent()?.join(target),
        };
    }
    None
}

/// The `PATH` a sandboxed command gets: the host's entries mean nothing inside.
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_inside_the_tree_following_links_within_it() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::write(root.join("bin/busybox"), "x").unwrap();
        std::os::unix::fs::symlink("/bin/busybox", root.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/ls")).unwrap();
        let find =
            |p: &str| resolve_program(OsStr::new(p), Some(root), Path::new("/"), SANDBOX_PATH);
        assert_eq!(find("/bin/sh"), Some(root.join("bin/busybox")));
        assert_eq!(find("sh"), Some(root.join("bin/busybox")));
        assert_eq!(find("ls"), Some(root.join("bin/busybox")));
        assert_eq!(find("missing"), None);
    }
}
