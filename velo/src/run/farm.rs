//! Link farms: a manifest materialized as a real directory whose files are hard links to store
//! blobs, so every program, static binaries included, runs on it at native speed.
//!
//! Hard links share the blob's inode, and with it its mode: the store keeps a separate `.x` blob
//! for executables, so a linked file is executable exactly when the manifest says so. Where a
//! link is refused (the farm on another filesystem: `EXDEV`; `fs.protected_hardlinks` when the
//! store belongs to another user: `EPERM`; too many links: `EMLINK`), the file is reflinked or
//! copied instead and [`Stats`] says so, for the one-line notice the command prints.
//!
//! A farm shares inodes with the store, so a farm must never be handed to a program as a
//! writable tree: `velo run` covers it with a private OverlayFS (or, failing namespaces, uses
//! copies); see [`super::sandbox`].
//!
//! A farm is built in a directory nobody else sees and published by a rename only when complete,
//! so a blob missing from the store fails the build without leaving anything visible behind. The
//! manifest itself was validated when it was decoded (relative normalized paths, parents are
//! directories), so joining its paths under the farm cannot leave the farm, and no entry lies
//! beneath a symlink the farm creates.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::manifest::{Kind, Manifest, display_path};
use crate::store::{BlobKey, Fitness, Store, bytes_to_path};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{count} blob(s) named by the manifest are not in the store {}, for example {first} (for {path}): ingest the tree again or use the store it was ingested into",
        .store.display()
    )]
    MissingBlobs {
        store: PathBuf,
        count: usize,
        first: String,
        path: String,
    },
    #[error(
        "{count} blob(s) named by the manifest cannot be served from the store {}, for example {first} (for {path}): {problem}. Nothing was run. {fix}",
        .store.display()
    )]
    Unfit {
        store: PathBuf,
        count: usize,
        first: String,
        path: String,
        problem: String,
        fix: &'static str,
    },
    #[error(transparent)]
    Store(Box<crate::store::Error>),
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> Error + 'p {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// How the files of a farm were made.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub linked: u64,
    pub reflinked: u64,
    pub copied: u64,
    /// Why files were copied rather than linked (the first refusal seen), if any were.
    pub copy_reason: Option<String>,
}

/// The error naming every blob of `manifest` missing from `store` (after a link found one).
fn missing(store: &Store, manifest: &Manifest) -> Error {
    check_blobs(store, manifest)
        .err()
        .unwrap_or_else(|| Error::Io {
            op: "linking",
            path: store.blobs_dir(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "a blob disappeared while the farm was being built",
            ),
        })
}

/// Checks that every blob `manifest` names may be served (see [`crate::store::health`]):
/// present, sound (sealed, or re-hashed) and of the size the manifest declares. One `lstat`
/// per file for sealed blobs, on every core.
pub fn check_blobs(store: &Store, manifest: &Manifest) -> Result<(), Error> {
    check_needs(
        store,
        manifest.entries().iter().filter_map(|e| match e.kind {
            Kind::File { size, .. } => Some((e.blob()?, size, e.path.as_slice())),
            _ => None,
        }),
    )
}

/// [`check_blobs`] of `(blob, declared size, path in the tree)` triples.
pub fn check_needs<'a>(
    store: &Store,
    needs: impl Iterator<Item = (BlobKey, u64, &'a [u8])>,
) -> Result<(), Error> {
    let needs: Vec<_> = needs.collect();
    let mut unfit: Vec<(&[u8], BlobKey, Fitness)> = needs
        .par_iter()
        .with_min_len(256)
        .map(|&(key, size, path)| match store.ensure(&key, size) {
            Ok(Fitness::Sound) => Ok(None),
            Ok(other) => Ok(Some((path, key, other))),
            Err(e) => Err(e),
        })
        .filter_map(Result::transpose)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Store(Box::new(e)))?;
    unfit.sort_by(|a, b| a.0.cmp(b.0));
    let Some((path, key, first)) = unfit.first() else {
        return Ok(());
    };
    let count = unfit.len();
    if unfit.iter().all(|u| u.2 == Fitness::Missing) {
        return Err(Error::MissingBlobs {
            store: store.root().to_owned(),
            count,
            first: key.file_name(),
            path: display_path(path),
        });
    }
    Err(Error::Unfit {
        store: store.root().to_owned(),
        count,
        first: key.file_name(),
        path: display_path(path),
        problem: first.to_string(),
        fix: match first {
            Fitness::WrongSize { .. } => {
                "The manifest is damaged or crafted: ingest its tree again for a true one"
            }
            _ => {
                "`velo status --verify --repair` quarantines corrupt blobs; then ingest the tree again"
            }
        },
    })
}

/// Whether a built farm still serves `manifest`'s content: each file is the sealed blob it was
/// linked to (one `lstat`), or, for a copy or a blob written to since, hashes to its key.
pub fn farm_is_sound(farm: &Path, manifest: &Manifest) -> bool {
    use std::os::unix::fs::MetadataExt;
    manifest.entries().par_iter().with_min_len(256).all(|e| {
        let (Some(key), Kind::File { size, .. }) = (e.blob(), &e.kind) else {
            return true;
        };
        let path = farm.join(bytes_to_path(&e.path));
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return false;
        };
        if !meta.file_type().is_file()
            || meta.len() != *size
            || meta.permissions().mode() & 0o7777 != key.mode()
        {
            return false;
        }
        if meta.mtime() == crate::store::SEAL_MTIME && meta.mtime_nsec() == 0 {
            return true;
        }
        let mut hasher = blake3::Hasher::new();
        fs::File::open(&path)
            .and_then(|mut f| io::copy(&mut f, &mut hasher))
            .is_ok_and(|_| hasher.finalize() == key.hash)
    })
}

/// Below this many entries, threads cost more than they save.
const PARALLEL_FROM: usize = 4096;

/// How to make a farm's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Hard links where possible (reflink or copy where refused).
    Link,
    /// Always private copies (reflinks where the filesystem has them).
    Copy,
}

/// Materializes `manifest` into `dest`, an existing empty directory.
pub fn materialize(
    store: &Store,
    manifest: &Manifest,
    dest: &Path,
    method: Method,
) -> Result<Stats, Error> {
    materialize_with_progress(store, manifest, dest, method, &|_| {})
}

/// [`materialize`], calling `progress` with each file's size once it is made.
pub fn materialize_with_progress(
    store: &Store,
    manifest: &Manifest,
    dest: &Path,
    method: Method,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Stats, Error> {
    materialize_except(store, manifest, dest, method, progress, &|_, _| false)
}

/// [`materialize_with_progress`], but the files `left` names (by path and blob) are left for
/// the caller to make (a restore writes some straight from a remote, and links others); they
/// count in [`Stats::files`], and their directories are made.
pub fn materialize_except(
    store: &Store,
    manifest: &Manifest,
    dest: &Path,
    method: Method,
    progress: &(dyn Fn(u64) + Sync),
    left: &(dyn Fn(&[u8], &BlobKey) -> bool + Sync),
) -> Result<Stats, Error> {
    // Nothing corrupt, missing or of another size than declared is ever made into a file.
    check_needs(
        store,
        manifest.entries().iter().filter_map(|e| match e.kind {
            Kind::File { size, .. } => Some((e.blob()?, size, e.path.as_slice()))
                .filter(|(blob, _, path)| !left(path, blob)),
            _ => None,
        }),
    )?;
    let mut stats = Stats::default();
    let mut dirs = fs::DirBuilder::new();
    dirs.mode(0o755);
    // Directories and symlinks first, in canonical order (parents before children).
    for entry in manifest.entries() {
        let path = dest.join(bytes_to_path(&entry.path));
        match &entry.kind {
            Kind::Dir => {
                dirs.create(&path)
                    .map_err(io_err("creating directory", &path))?;
                stats.dirs += 1;
            }
            Kind::Symlink { target } => {
                std::os::unix::fs::symlink(bytes_to_path(target), &path)
                    .map_err(io_err("creating symlink", &path))?;
                stats.symlinks += 1;
            }
            Kind::File { .. } => stats.files += 1,
        }
    }
    let made = Made::default();
    let files: Vec<File> = manifest
        .entries()
        .iter()
        .filter_map(|e| {
            let blob = e.blob().filter(|b| !left(&e.path, b))?;
            let size = match e.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            };
            let (parent, name) = match e.path.iter().rposition(|&b| b == b'/') {
                Some(i) => (&e.path[..i], &e.path[i + 1..]),
                None => (&e.path[..0], &e.path[..]),
            };
            Some(File {
                path: &e.path,
                parent,
                name,
                blob,
                size,
            })
        })
        .collect();
    let copy = |f: &File| -> Result<(), Error> {
        let path = dest.join(bytes_to_path(f.path));
        let reflinked = match copy_file(&store.blob_path(&f.blob), &path, f.blob) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !store.contains(&f.blob) => {
                return Err(missing(store, manifest));
            }
            other => other.map_err(io_err("copying", &path))?,
        };
        let counter = if reflinked {
            &made.reflinked
        } else {
            &made.copied
        };
        counter.fetch_add(1, Ordering::Relaxed);
        progress(f.size);
        Ok(())
    };
    match method {
        Method::Copy if files.len() < PARALLEL_FROM / 16 => files.iter().try_for_each(copy)?,
        Method::Copy => files.par_iter().try_for_each(copy)?,
        Method::Link => {
            let links = Linker::new(store, dest).map_err(io_err("opening", dest))?;
            // One directory at a time, each by descriptor: `linkat` then walks one component on
            // each side instead of two whole paths (measured: a third less time for 100k files).
            let mut files = files;
            files.sort_by(|a, b| a.parent.cmp(b.parent));
            let groups: Vec<&[File]> = files.chunk_by(|a, b| a.parent == b.parent).collect();
            let link_group = |group: &&[File]| -> Result<(), Error> {
                let dir_path = dest.join(bytes_to_path(group[0].parent));
                let dir = links
                    .open_dir(group[0].parent)
                    .map_err(io_err("opening directory", &dir_path))?;
                for f in group.iter() {
                    match links.link(&dir, f) {
                        Ok(()) => {
                            made.linked.fetch_add(1, Ordering::Relaxed);
                            progress(f.size);
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            return Err(missing(store, manifest));
                        }
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::EXDEV | libc::EPERM | libc::EMLINK)
                            ) =>
                        {
                            made.refusal
                                .lock()
                                .expect("not poisoned")
                                .get_or_insert_with(|| link_refusal(&e));
                            copy(f)?;
                        }
                        Err(e) => {
                            return Err(io_err("linking", &dest.join(bytes_to_path(f.path)))(e));
                        }
                    }
                }
                Ok(())
            };
            if files.len() < PARALLEL_FROM {
                groups.iter().try_for_each(link_group)?;
            } else {
                groups.par_iter().try_for_each(link_group)?;
            }
        }
    }
    stats.linked = made.linked.into_inner();
    stats.reflinked = made.reflinked.into_inner();
    stats.copied = made.copied.into_inner();
    stats.copy_reason = made.refusal.into_inner().expect("not poisoned");
    Ok(stats)
}

/// A file entry of the manifest, split for linking by directory.
struct File<'m> {
    path: &'m [u8],
    /// The directory, relative to the farm (empty for its top).
    parent: &'m [u8],
    name: &'m [u8],
    blob: BlobKey,
    size: u64,
}

/// Counters shared by the threads making files.
#[derive(Default)]
struct Made {
    linked: AtomicU64,
    reflinked: AtomicU64,
    copied: AtomicU64,
    /// Why files were copied rather than linked: the first refusal.
    refusal: std::sync::Mutex<Option<String>>,
}

/// `linkat` by descriptors: the farm's directories opened one at a time, the store's shard
/// directories (`blobs/ab`) opened once each, lazily.
struct Linker {
    farm: OwnedFd,
    blobs: PathBuf,
    shards: Vec<std::sync::OnceLock<Result<OwnedFd, i32>>>,
}

fn open_path(dir: Option<&OwnedFd>, path: &Path) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a NUL-terminated path; the descriptor, if any, is open for the call.
    let fd = unsafe {
        libc::openat(
            at,
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Linker {
    fn new(store: &Store, farm: &Path) -> io::Result<Linker> {
        Ok(Linker {
            farm: open_path(None, farm)?,
            blobs: store.blobs_dir(),
            shards: (0..256).map(|_| std::sync::OnceLock::new()).collect(),
        })
    }

    /// The farm directory `rel` (empty: the farm itself).
    fn open_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        if rel.is_empty() {
            return self.farm.try_clone();
        }
        open_path(Some(&self.farm), bytes_to_path(rel).as_ref())
    }

    /// Hard links `f`'s blob as `f.name` in `dir`.
    fn link(&self, dir: &OwnedFd, f: &File) -> io::Result<()> {
        let hex = f.blob.hash.to_hex();
        let shard = u8::from_str_radix(&hex[..2], 16).expect("hex") as usize;
        let shard = self.shards[shard]
            .get_or_init(|| {
                open_path(None, &self.blobs.join(&hex[..2]))
                    .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
            })
            .as_ref()
            .map_err(|&errno| io::Error::from_raw_os_error(errno))?;
        let mut from = [0u8; 64 + 3];
        from[..64].copy_from_slice(hex.as_bytes());
        if f.blob.exec {
            from[64..66].copy_from_slice(b".x");
        }
        let mut to = Vec::with_capacity(f.name.len() + 1);
        to.extend_from_slice(f.name);
        to.push(0);
        // SAFETY: both names are NUL-terminated (the manifest forbids NUL in names), both
        // descriptors are open directories.
        let r = unsafe {
            libc::linkat(
                shard.as_raw_fd(),
                from.as_ptr().cast(),
                dir.as_raw_fd(),
                to.as_ptr().cast(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

fn link_refusal(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EXDEV) => "the farm is on another filesystem than the store (EXDEV)".into(),
        Some(libc::EPERM) => {
            "hard links refused (EPERM: fs.protected_hardlinks, and the store belongs to another user)".into()
        }
        _ => format!("hard links refused ({e})"),
    }
}

/// A private copy of a blob with the blob's mode: a reflink where the filesystem can, else a
/// byte copy. Returns whether it was a reflink.
fn copy_file(source: &Path, dest: &Path, blob: BlobKey) -> io::Result<bool> {
    let from = fs::File::open(source)?;
    let to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    // SAFETY: FICLONE with two open descriptors.
    let reflinked = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0;
    if !reflinked {
        io::copy(&mut &from, &mut &to)?;
    }
    to.set_permissions(fs::Permissions::from_mode(blob.mode()))?;
    Ok(reflinked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_farm_links_blobs_with_their_modes_and_recreates_links_and_dirs() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(
            &t.path().join("store"),
            crate::store::Access::Private,
            "test",
        )
        .unwrap();
        let put = |bytes: &[u8], exec: bool| {
            let hash = blake3::hash(bytes);
            store.insert_bytes(hash, exec, bytes).unwrap();
            Kind::File {
                hash,
                size: bytes.len() as u64,
                exec,
            }
        };
        let manifest = Manifest::from_entries(vec![
            Entry {
                path: "bin".into(),
                kind: Kind::Dir,
            },
            Entry {
                path: "bin/tool".into(),
                kind: put(b"#!/bin/sh\necho tool\n", true),
            },
            Entry {
                path: "data.txt".into(),
                kind: put(b"data", false),
            },
            Entry {
                path: "empty".into(),
                kind: Kind::Dir,
            },
            Entry {
                path: "link".into(),
                kind: Kind::Symlink {
                    target: "data.txt".into(),
                },
            },
        ])
        .unwrap();
        let farm = t.path().join("farm");
        fs::create_dir(&farm).unwrap();
        let stats = materialize(&store, &manifest, &farm, Method::Link).unwrap();
        assert_eq!(
            (stats.files, stats.linked, stats.dirs, stats.symlinks),
            (2, 2, 2, 1)
        );
        assert_eq!(
            fs::metadata(farm.join("bin/tool")).unwrap().mode() & 0o777,
            0o555
        );
        assert_eq!(
            fs::metadata(farm.join("data.txt")).unwrap().mode() & 0o777,
            0o444
        );
        assert!(fs::metadata(farm.join("data.txt")).unwrap().nlink() >= 2);
        assert_eq!(
            fs::read_link(farm.join("link")).unwrap(),
            Path::new("data.txt")
        );
        assert!(farm.join("empty").is_dir());

        let copies = t.path().join("copies");
        fs::create_dir(&copies).unwrap();
        let stats = materialize(&store, &manifest, &copies, Method::Copy).unwrap();
        assert_eq!(stats.linked, 0);
        assert_eq!(fs::metadata(copies.join("data.txt")).unwrap().nlink(), 1);
        assert_eq!(fs::read(copies.join("data.txt")).unwrap(), b"data");
    }
}
