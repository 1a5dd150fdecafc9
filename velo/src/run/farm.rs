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
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::manifest::{Kind, Manifest, display_path};
use crate::store::{BlobKey, Store, bytes_to_path};

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
            path: store.root().join("blobs"),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "a blob disappeared while the farm was being built",
            ),
        })
}

/// Checks that every blob `manifest` names is in `store`.
pub fn check_blobs(store: &Store, manifest: &Manifest) -> Result<(), Error> {
    let missing: Vec<(BlobKey, &[u8])> = manifest
        .entries()
        .par_iter()
        .filter_map(|e| {
            e.blob()
                .filter(|b| !store.contains(b))
                .map(|b| (b, e.path.as_slice()))
        })
        .collect();
    match missing.first() {
        None => Ok(()),
        Some((key, path)) => Err(Error::MissingBlobs {
            store: store.root().to_owned(),
            count: missing.len(),
            first: key.file_name(),
            path: display_path(path),
        }),
    }
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
    check_blobs(store, manifest)?;
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
    let (linked, reflinked, copied) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let reason = std::sync::Mutex::new(None::<String>);
    let make = |(blob, entry): (BlobKey, &crate::manifest::Entry)| {
        let path = dest.join(bytes_to_path(&entry.path));
        let source = store.blob_path(&blob);
        if method == Method::Link {
            match fs::hard_link(&source, &path) {
                Ok(()) => {
                    linked.fetch_add(1, Ordering::Relaxed);
                    if let Kind::File { size, .. } = entry.kind {
                        progress(size);
                    }
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EXDEV | libc::EPERM | libc::EMLINK)
                    ) =>
                {
                    let mut r = reason.lock().expect("not poisoned");
                    r.get_or_insert_with(|| link_refusal(&e));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(missing(store, manifest));
                }
                Err(e) => return Err(io_err("linking", &path)(e)),
            }
        }
        let copied_file = match copy_file(&source, &path, blob) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !store.contains(&blob) => {
                return Err(missing(store, manifest));
            }
            other => other.map_err(io_err("copying", &path))?,
        };
        if copied_file {
            reflinked.fetch_add(1, Ordering::Relaxed);
        } else {
            copied.fetch_add(1, Ordering::Relaxed);
        }
        if let Kind::File { size, .. } = entry.kind {
            progress(size);
        }
        Ok::<(), Error>(())
    };
    let with_blob = |e| crate::manifest::Entry::blob(e).map(|b| (b, e));
    // Copies cost more per file than links: worth threads sooner.
    let parallel_from = match method {
        Method::Link => PARALLEL_FROM,
        Method::Copy => PARALLEL_FROM / 16,
    };
    if manifest.entries().len() < parallel_from {
        manifest
            .entries()
            .iter()
            .filter_map(with_blob)
            .try_for_each(make)?;
    } else {
        manifest
            .entries()
            .par_iter()
            .filter_map(with_blob)
            .try_for_each(make)?;
    }
    stats.linked = linked.into_inner();
    stats.reflinked = reflinked.into_inner();
    stats.copied = copied.into_inner();
    stats.copy_reason = reason.into_inner().expect("not poisoned");
    Ok(stats)
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
        let store = Store::open_or_create(&t.path().join("store")).unwrap();
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
