//! One entry of a walk: stat it, and for a file, take its blob from the stat index or read,
//! hash and store it (read again if it changed while it was read); symlinks' targets and
//! special files. Shared by both walkers ([`super::walk`], [`super::gitignore`]).

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{AtFlags, StatxFlags};

use super::index::{self, Record, Stat, StatIndex};
use super::tree::Walked;
use super::{Error, OnUnreadable, PATH_MAX, Skipped, path_too_long};
use crate::manifest::{Entry, Kind, display_path};
use crate::store::{self, BlobKey, Inserted, SMALL_FILE_LIMIT, Store};

/// State shared by the walker threads.
pub(super) struct Shared<'a> {
    pub(super) store: &'a Store,
    pub(super) root: &'a Path,
    pub(super) index: &'a StatIndex,
    /// No `gc --run` has deleted blobs since the index was written: its blobs all exist.
    pub(super) blobs_unchanged_since_index: bool,
    pub(super) on_unreadable: OnUnreadable,
    pub(super) progress: &'a (dyn Fn(u64) + Sync),
    pub(super) failed: AtomicBool,
    pub(super) errors: Mutex<Vec<(Vec<u8>, Error)>>,
    pub(super) skipped: Mutex<Vec<Skipped>>,
    pub(super) new_blobs: AtomicU64,
    pub(super) new_bytes: AtomicU64,
    pub(super) unchanged: AtomicU64,
}

/// What one walker reuses from file to file.
#[derive(Default)]
pub(super) struct Scratch {
    /// The read buffer for small files.
    pub(super) buf: Vec<u8>,
    /// Where in the stat index its last file was.
    pub(super) cursor: index::Cursor,
    /// Files taken from the index, to be added to [`Shared::unchanged`] when the walker is
    /// done: a shared counter written per file would move its cache line between the cores
    /// on every file, and with it what the walkers read of [`Shared`].
    pub(super) unchanged: u64,
}

/// Where a walk found an entry: by path (the `ignore` walker, with `--gitignore`), or by name
/// in an open directory ([`walk`]).
#[derive(Clone, Copy)]
pub(super) enum At<'a> {
    Path(&'a Path),
    In(BorrowedFd<'a>, &'a CStr),
}

impl At<'_> {
    pub(super) fn lstat(self) -> io::Result<Stat> {
        match self {
            At::Path(path) => fs::symlink_metadata(path).map(|m| Stat::from(&m)),
            At::In(dir, name) => rustix::fs::statx(
                dir,
                name,
                AtFlags::SYMLINK_NOFOLLOW,
                StatxFlags::BASIC_STATS,
            )
            .map(|st| Stat::from(&st))
            .map_err(io::Error::from),
        }
    }

    pub(super) fn open(self) -> io::Result<File> {
        match self {
            At::Path(path) => store::open_source(path),
            At::In(dir, name) => store::open_source_at(dir, name),
        }
    }

    pub(super) fn read_link(self) -> io::Result<Vec<u8>> {
        match self {
            At::Path(path) => fs::read_link(path).map(|t| t.into_os_string().into_vec()),
            At::In(dir, name) => rustix::fs::readlinkat(dir, name, Vec::new())
                .map(CString::into_bytes)
                .map_err(io::Error::from),
        }
    }
}

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Type {
    Dir,
    File,
    Symlink,
    /// Fifos, sockets and devices, which are skipped: what it is, for the report.
    Special(&'static str),
}

impl Type {
    /// From the `ignore` walker's file type.
    pub(super) fn of(t: fs::FileType) -> Type {
        use rustix::fs::FileType as F;
        Type::from(if t.is_dir() {
            F::Directory
        } else if t.is_symlink() {
            F::Symlink
        } else if t.is_file() {
            F::RegularFile
        } else if t.is_fifo() {
            F::Fifo
        } else if t.is_socket() {
            F::Socket
        } else if t.is_block_device() {
            F::BlockDevice
        } else if t.is_char_device() {
            F::CharacterDevice
        } else {
            F::Unknown
        })
    }
}

impl From<rustix::fs::FileType> for Type {
    fn from(t: rustix::fs::FileType) -> Type {
        use rustix::fs::FileType as F;
        match t {
            F::Directory => Type::Dir,
            F::RegularFile => Type::File,
            F::Symlink => Type::Symlink,
            F::Fifo => Type::Special("fifo"),
            F::Socket => Type::Special("socket"),
            F::BlockDevice => Type::Special("block device"),
            F::CharacterDevice => Type::Special("character device"),
            F::Unknown => Type::Special("special file"),
        }
    }
}

/// Where a problem was found, for policy decisions.
pub(super) enum Problem {
    /// Permission denied or similar: subject to `--on-unreadable`.
    Unreadable(PathBuf, io::Error),
    /// Always fatal.
    Fatal(Error),
}

impl Shared<'_> {
    /// Forgets what a walk that is to be repeated found. (Not the blobs it stored: the
    /// repeat finds them in the store, and they count as this ingest's new blobs once.)
    pub(super) fn reset(&self) {
        self.failed.store(false, Ordering::Relaxed);
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.unchanged.store(0, Ordering::Relaxed);
    }

    /// `rel` as a path under the root, for messages.
    pub(super) fn abs(&self, rel: &[u8]) -> PathBuf {
        self.root.join(std::ffi::OsStr::from_bytes(rel))
    }

    /// `path` relative to the root, as bytes.
    pub(super) fn rel<'p>(&self, path: &'p Path) -> &'p [u8] {
        // Walker paths are the root joined with names: cut as bytes (`strip_prefix` parses
        // both paths into components, for every file).
        let (p, root) = (
            path.as_os_str().as_bytes(),
            self.root.as_os_str().as_bytes(),
        );
        match p.strip_prefix(root) {
            Some([b'/', rel @ ..]) => rel,
            _ => path
                .strip_prefix(self.root)
                .unwrap_or(path)
                .as_os_str()
                .as_bytes(),
        }
    }

    /// Records `problem`: a skipped entry under `--on-unreadable skip` (returns `true`: go on
    /// without it), else the ingest's error (returns `false`: stop).
    pub(super) fn handle(&self, problem: Problem) -> bool {
        let (path, error) = match problem {
            Problem::Unreadable(path, source) => {
                if self.on_unreadable == OnUnreadable::Skip {
                    let skipped = Skipped {
                        path: display_path(self.rel(&path)),
                        reason: source.to_string(),
                    };
                    self.skipped
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(skipped);
                    return true;
                }
                let error = if source.raw_os_error() == Some(libc::ENAMETOOLONG) {
                    path_too_long(&path)
                } else {
                    Error::Unreadable {
                        path: path.clone(),
                        source,
                    }
                };
                (path, error)
            }
            Problem::Fatal(error) => (PathBuf::new(), error),
        };
        self.failed.store(true, Ordering::Relaxed);
        let key = self.rel(&path).to_vec();
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key, error));
        false
    }

    /// The manifest entry for what a walk found at `rel` (with a file's stat record); `None`
    /// for a special file, which is listed as skipped. A symlink's `target`, if known (see
    /// [`index::Names`]), is not read again.
    pub(super) fn entry(
        &self,
        at: At<'_>,
        rel: Vec<u8>,
        ty: Type,
        target: Option<&[u8]>,
        scratch: &mut Scratch,
    ) -> Result<Option<Walked>, Problem> {
        if self.root.as_os_str().len() + 1 + rel.len() >= PATH_MAX {
            return Err(Problem::Unreadable(
                self.abs(&rel),
                io::Error::from_raw_os_error(libc::ENAMETOOLONG),
            ));
        }
        let found = match ty {
            Type::Dir => (
                Entry {
                    path: rel,
                    kind: Kind::Dir,
                },
                None,
            ),
            Type::Symlink => {
                let target = match target {
                    Some(target) => target.to_vec(),
                    None => at
                        .read_link()
                        .map_err(|e| Problem::Unreadable(self.abs(&rel), e))?,
                };
                let kind = Kind::Symlink { target };
                (Entry { path: rel, kind }, None)
            }
            Type::File => {
                let (kind, record) = self.ingest_file(at, &rel, scratch)?;
                (Entry { path: rel, kind }, Some(record))
            }
            Type::Special(what) => {
                self.skipped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Skipped {
                        path: display_path(&rel),
                        reason: format!(
                            "is a {what}; only files, directories and symlinks are stored"
                        ),
                    });
                return Ok(None);
            }
        };
        Ok(Some(found))
    }

    pub(super) fn ingest_file(
        &self,
        at: At<'_>,
        rel: &[u8],
        scratch: &mut Scratch,
    ) -> Result<(Kind, Record), Problem> {
        let unreadable = |e| Problem::Unreadable(self.abs(rel), e);
        if !self.index.is_empty() {
            let stat = at.lstat().map_err(unreadable)?;
            if let Some(key) = self.index.lookup(rel, &stat, &mut scratch.cursor)
                && (self.blobs_unchanged_since_index
                    || self.store.look(&key, stat.size) == store::Seen::Sealed)
            {
                scratch.unchanged += 1;
                (self.progress)(stat.size);
                let kind = Kind::File {
                    hash: key.hash,
                    size: stat.size,
                    exec: key.exec,
                };
                return Ok((kind, Record::new(&stat, key)));
            }
        }
        for _attempt in 0..3 {
            let file = at.open().map_err(unreadable)?;
            let before = Stat::from(&file.metadata().map_err(unreadable)?);
            let exec = before.mode & 0o111 != 0;
            let Some((key, size, inserted)) =
                self.store_file(&file, &before, exec, rel, &mut scratch.buf)?
            else {
                continue; // shrank while being read
            };
            let after = Stat::from(&file.metadata().map_err(unreadable)?);
            if Record::new(&before, key) != Record::new(&after, key) || size != after.size {
                tracing::debug!(path = %self.abs(rel).display(), "changed while being read; reading again");
                continue;
            }
            if inserted == Inserted::New {
                self.new_blobs.fetch_add(1, Ordering::Relaxed);
                self.new_bytes.fetch_add(size, Ordering::Relaxed);
            }
            (self.progress)(size);
            let kind = Kind::File {
                hash: key.hash,
                size,
                exec,
            };
            return Ok((kind, Record::new(&before, key)));
        }
        Err(Problem::Fatal(Error::Unstable {
            path: self.abs(rel),
        }))
    }

    /// Stores one open file; `None` if it turned out shorter than `fstat` said (it is being
    /// written: the caller reads it again). Growth is caught by the caller's second `fstat`.
    fn store_file(
        &self,
        file: &File,
        stat: &Stat,
        exec: bool,
        rel: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<Option<(BlobKey, u64, Inserted)>, Problem> {
        let store = self.store;
        let fatal = |e: store::Error| Problem::Fatal(e.into());
        if stat.size <= SMALL_FILE_LIMIT {
            // Exactly one read(2) for the expected size.
            buf.resize(stat.size as usize, 0);
            match Read::read_exact(&mut { file }, buf) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(Problem::Unreadable(self.abs(rel), e)),
            }
            let hash = blake3::hash(buf);
            let inserted = store.insert_bytes(hash, exec, buf).map_err(fatal)?;
            return Ok(Some((BlobKey { hash, exec }, buf.len() as u64, inserted)));
        }
        if let Some(done) = store.insert_reflink(exec, file).map_err(fatal)? {
            return Ok(Some(done));
        }
        store
            .insert_reader(exec, &mut { file })
            .map(Some)
            .map_err(fatal)
    }
}
