//! The walk of an ingest without `--gitignore`: directory by directory, each entry reached by
//! name from its directory's descriptor, on every core, and in canonical order as it goes.
//!
//! An unchanged tree's re-ingest is nothing but this walk (one `statx` per file), so the walk
//! is its whole cost. The general walker ([`ignore::WalkParallel`], still used for `--gitignore`
//! for its rules) cost about twice what the work needs (measured on 111k entries):
//! - it stats every file by its whole path, so the kernel looks up each component again;
//!   `statx(dirfd, name)` looks up one;
//! - its entries come in no order, and sorting them took a sixth of the re-ingest. Here each
//!   directory sorts its own names, and canonical order (a depth-first walk, names in byte
//!   order: see [`crate::manifest`]) comes from putting the directories together.
//!
//! # Jobs
//! A directory job opens its directory (by its path relative to the root's descriptor, with
//! `O_NOFOLLOW`), reads and sorts the names, and cuts them into pieces of [`PIECE`] names. Each
//! piece is a job (so the files of one large directory are hashed on every core) that makes the
//! entries of its names, by name in the directory, and starts a directory job for each
//! subdirectory. All jobs are spawned into one rayon scope, so a deep tree does not deepen any
//! stack, and a queued job holds a path, not a descriptor: the descriptors open at once are those
//! of running jobs, however wide the tree.
//!
//! Each piece's entries go into a table by piece number and each directory's pieces into a table
//! by directory number; when every job is done, a depth-first pass over the tables puts the
//! entries in order.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ignore::overrides::Override;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, StatxFlags};

use super::{At, Problem, Record, Shared, Type, Walked};
use crate::manifest::Entry;

/// Names per piece job: enough to make a job worth spawning, few enough that a directory of
/// large files is spread over the cores.
const PIECE: usize = 64;

/// Walks the tree under `shared.root`, leaving out what `excludes` matches and the manifest
/// being written (`output`); returns the entries in canonical order. Problems are recorded in
/// `shared` (see [`Shared::handle`]).
pub(super) fn tree(shared: &Shared, excludes: &Override, output: &Path) -> Vec<Walked> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = match rustix::fs::open(shared.root, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            shared.handle(Problem::Unreadable(shared.root.to_owned(), e.into()));
            return Vec::new();
        }
    };
    let walk = Walk {
        shared,
        root,
        excludes,
        output: output.as_os_str().as_bytes(),
        output_name: output.file_name().map_or(&[][..], OsStr::as_bytes),
        dirs: AtomicUsize::new(1),
        pieces: AtomicUsize::new(0),
        tables: Mutex::new(Tables::default()),
    };
    rayon::scope(|scope| walk.dir(scope, 0, Vec::new()));
    let mut tables = walk.tables.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::with_capacity(tables.found);
    tables.flatten(0, &mut out);
    out
}

struct Walk<'w, 's> {
    shared: &'w Shared<'s>,
    root: OwnedFd,
    excludes: &'w Override,
    output: &'w [u8],
    output_name: &'w [u8],
    /// The next directory and piece numbers.
    dirs: AtomicUsize,
    pieces: AtomicUsize,
    tables: Mutex<Tables>,
}

/// What a piece found for one name.
enum Found {
    Leaf(Entry, Option<Record>),
    /// A directory, whose contents are directory job `.1`'s.
    Dir(Entry, usize),
}

#[derive(Default)]
struct Tables {
    /// By directory number: the numbers of its pieces, in name order.
    dirs: Vec<Vec<usize>>,
    /// By piece number: what it found, in name order.
    pieces: Vec<Vec<Found>>,
    /// Entries in all pieces.
    found: usize,
}

impl Tables {
    fn put<T: Default>(table: &mut Vec<T>, at: usize, value: T) {
        if table.len() <= at {
            table.resize_with(at + 1, T::default);
        }
        table[at] = value;
    }

    /// Moves directory `dir`'s entries, and its subdirectories' after each of them, to `out`.
    /// (Recursion as deep as the tree: a few hundred bytes a level, and paths end at 4 KiB.)
    fn flatten(&mut self, dir: usize, out: &mut Vec<Walked>) {
        let pieces = self
            .dirs
            .get_mut(dir)
            .map(std::mem::take)
            .unwrap_or_default();
        for piece in pieces {
            // A piece that stopped at a fatal problem put nothing; the ingest fails anyway.
            let found = self.pieces.get_mut(piece).map(std::mem::take);
            for found in found.unwrap_or_default() {
                match found {
                    Found::Leaf(entry, record) => out.push((entry, record)),
                    Found::Dir(entry, id) => {
                        out.push((entry, None));
                        self.flatten(id, out);
                    }
                }
            }
        }
    }
}

/// One name read from a directory.
struct Name {
    name: std::ffi::CString,
    file_type: FileType,
}

impl<'w> Walk<'w, '_> {
    /// Directory job `id`: reads directory `rel` ("" for the root) and starts its pieces.
    fn dir<'scope>(&'scope self, scope: &rayon::Scope<'scope>, id: usize, rel: Vec<u8>)
    where
        'w: 'scope,
    {
        if self.shared.failed.load(Ordering::Relaxed) {
            return;
        }
        let (dir, names) = match self.read(&rel) {
            Ok(read) => read,
            Err(e) => {
                self.shared
                    .handle(Problem::Unreadable(self.shared.abs(&rel), e));
                return;
            }
        };
        let mut pieces: Vec<Vec<Name>> = Vec::new();
        let mut names = names.into_iter();
        loop {
            let piece: Vec<Name> = names.by_ref().take(PIECE).collect();
            if piece.is_empty() {
                break;
            }
            pieces.push(piece);
        }
        let first = self.pieces.fetch_add(pieces.len(), Ordering::Relaxed);
        Tables::put(
            &mut self.tables.lock().unwrap_or_else(|p| p.into_inner()).dirs,
            id,
            (first..first + pieces.len()).collect(),
        );
        let (dir, rel) = (Arc::new(dir), Arc::new(rel));
        let mut pieces = pieces.into_iter().enumerate();
        let inline = pieces.next();
        for (i, names) in pieces {
            let (dir, rel) = (Arc::clone(&dir), Arc::clone(&rel));
            scope.spawn(move |scope| self.piece(scope, first + i, &dir, &rel, names));
        }
        if let Some((i, names)) = inline {
            self.piece(scope, first + i, &dir, &rel, names);
        }
    }

    /// Opens directory `rel` and reads its names, sorted, without `.` and `..`.
    fn read(&self, rel: &[u8]) -> io::Result<(Dir, Vec<Name>)> {
        let fd = if rel.is_empty() {
            rustix::io::dup(&self.root)?
        } else {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(&self.root, OsStr::from_bytes(rel), flags, Mode::empty())?
        };
        let mut dir = Dir::new(fd)?;
        let mut names = Vec::new();
        for entry in dir.by_ref() {
            let entry = entry?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                names.push(Name {
                    name: name.to_owned(),
                    file_type: entry.file_type(),
                });
            }
        }
        names.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok((dir, names))
    }

    /// Piece job `id`: the entries of `names` in directory `rel`.
    fn piece<'scope>(
        &'scope self,
        scope: &rayon::Scope<'scope>,
        id: usize,
        dir: &Dir,
        rel: &[u8],
        names: Vec<Name>,
    ) where
        'w: 'scope,
    {
        let shared = self.shared;
        let fd = match dir.fd() {
            Ok(fd) => fd,
            Err(e) => {
                shared.handle(Problem::Unreadable(shared.abs(rel), e.into()));
                return;
            }
        };
        let mut found = Vec::with_capacity(names.len());
        let mut buf = Vec::new();
        for Name { name, file_type } in names {
            if shared.failed.load(Ordering::Relaxed) {
                return;
            }
            let mut child = Vec::with_capacity(rel.len() + 1 + name.as_bytes().len());
            if !rel.is_empty() {
                child.extend_from_slice(rel);
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            let at = At::In(fd, &name);
            let ty = match type_of(file_type, fd.as_fd(), &name) {
                Ok(ty) => ty,
                Err(e) => {
                    if shared.handle(Problem::Unreadable(shared.abs(&child), e)) {
                        continue;
                    }
                    return;
                }
            };
            if self.left_out(&child, name.as_bytes(), ty) {
                continue;
            }
            match shared.entry(at, child, ty, &mut buf) {
                Ok(Some((entry, _))) if ty == Type::Dir => {
                    let sub = self.dirs.fetch_add(1, Ordering::Relaxed);
                    let path = entry.path.clone();
                    scope.spawn(move |scope| self.dir(scope, sub, path));
                    found.push(Found::Dir(entry, sub));
                }
                Ok(Some((entry, record))) => found.push(Found::Leaf(entry, record)),
                Ok(None) => {}
                Err(problem) => {
                    if !shared.handle(problem) {
                        return;
                    }
                }
            }
        }
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.found += found.len();
        Tables::put(&mut tables.pieces, id, found);
    }

    /// Whether `rel` is excluded, or is the manifest being written (which must not describe
    /// itself on the next run).
    fn left_out(&self, rel: &[u8], name: &[u8], ty: Type) -> bool {
        if name == self.output_name {
            let root = self.shared.root.as_os_str().as_bytes();
            if self
                .output
                .strip_prefix(root)
                .and_then(|o| o.strip_prefix(b"/"))
                == Some(rel)
            {
                return true;
            }
        }
        !self.excludes.is_empty()
            && self
                .excludes
                .matched(Path::new(OsStr::from_bytes(rel)), ty == Type::Dir)
                .is_ignore()
    }
}

/// What a directory entry is: from the directory itself, or (on filesystems that do not say)
/// from `statx`.
fn type_of(file_type: FileType, dir: std::os::fd::BorrowedFd<'_>, name: &CStr) -> io::Result<Type> {
    let file_type = match file_type {
        FileType::Unknown => {
            let st = rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE)?;
            FileType::from_raw_mode(u32::from(st.stx_mode))
        }
        known => known,
    };
    Ok(Type::from(file_type))
}
