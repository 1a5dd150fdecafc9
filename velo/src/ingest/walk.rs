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

use super::{At, Problem, Record, Scratch, Shared, Tree, Type};
use crate::manifest::Entry;

/// Names per piece job: enough to make a job worth spawning, few enough that a directory of
/// large files is spread over the cores.
const PIECE: usize = 64;

/// Walks the tree under `shared.root`, leaving out what `excludes` matches and the manifest
/// being written (`output`); returns the entries in canonical order. Problems are recorded in
/// `shared` (see [`Shared::handle`]).
pub(super) fn tree(shared: &Shared, excludes: &Override, output: &Path) -> Tree {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = match rustix::fs::open(shared.root, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            shared.handle(Problem::Unreadable(shared.root.to_owned(), e.into()));
            return Tree::default();
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
    let mut out = Tree {
        entries: Vec::with_capacity(tables.found),
        records: Vec::with_capacity(tables.found),
    };
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
    fn flatten(&mut self, dir: usize, out: &mut Tree) {
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

/// The names read from one directory, sorted, without `.` and `..`: NUL-terminated, back to
/// back in one buffer (one allocation per directory rather than one per name).
#[derive(Default)]
struct Names {
    bytes: Vec<u8>,
    /// Where each name starts in `bytes`, its length (without the NUL), and what the directory
    /// says it is.
    list: Vec<(u32, u32, FileType)>,
}

impl Names {
    fn name(bytes: &[u8], at: u32, len: u32) -> &[u8] {
        &bytes[at as usize..][..len as usize]
    }

    fn get(&self, i: usize) -> (&CStr, FileType) {
        let (at, len, file_type) = self.list[i];
        let with_nul = &self.bytes[at as usize..][..len as usize + 1];
        // SAFETY: `read` copied each name with its NUL from a `CStr`, so `with_nul` is one C
        // string. (Checking again costs a scan per name.)
        let name = unsafe { CStr::from_bytes_with_nul_unchecked(with_nul) };
        (name, file_type)
    }
}

/// A directory being walked, shared by its pieces.
struct Open {
    dir: Dir,
    /// Its path relative to the root ("" for the root).
    rel: Vec<u8>,
    names: Names,
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
        let count = names.list.len().div_ceil(PIECE);
        let first = self.pieces.fetch_add(count, Ordering::Relaxed);
        Tables::put(
            &mut self.tables.lock().unwrap_or_else(|p| p.into_inner()).dirs,
            id,
            (first..first + count).collect(),
        );
        let len = names.list.len();
        let open = Arc::new(Open { dir, rel, names });
        for i in 1..count {
            let open = Arc::clone(&open);
            let names = i * PIECE..len.min((i + 1) * PIECE);
            scope.spawn(move |scope| self.piece(scope, first + i, &open, names));
        }
        if count > 0 {
            self.piece(scope, first, &open, 0..len.min(PIECE));
        }
    }

    /// Opens directory `rel` and reads its names.
    fn read(&self, rel: &[u8]) -> io::Result<(Dir, Names)> {
        let fd = if rel.is_empty() {
            rustix::io::dup(&self.root)?
        } else {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(&self.root, OsStr::from_bytes(rel), flags, Mode::empty())?
        };
        let mut dir = Dir::new(fd)?;
        let mut names = Names::default();
        for entry in dir.by_ref() {
            let entry = entry?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                let too_large = |_| io::Error::other("directory too large to read");
                let at = u32::try_from(names.bytes.len()).map_err(too_large)?;
                let len = u32::try_from(name.count_bytes()).map_err(too_large)?;
                names.bytes.extend_from_slice(name.to_bytes_with_nul());
                names.list.push((at, len, entry.file_type()));
            }
        }
        let bytes = &names.bytes;
        names.list.sort_unstable_by(|a, b| {
            Names::name(bytes, a.0, a.1).cmp(Names::name(bytes, b.0, b.1))
        });
        Ok((dir, names))
    }

    /// Piece job `id`: the entries of `names` in directory `rel`.
    fn piece<'scope>(
        &'scope self,
        scope: &rayon::Scope<'scope>,
        id: usize,
        open: &Open,
        names: std::ops::Range<usize>,
    ) where
        'w: 'scope,
    {
        let (shared, rel) = (self.shared, &open.rel[..]);
        let fd = match open.dir.fd() {
            Ok(fd) => fd,
            Err(e) => {
                shared.handle(Problem::Unreadable(shared.abs(rel), e.into()));
                return;
            }
        };
        let mut found = Vec::with_capacity(names.len());
        let mut scratch = Scratch::default();
        for i in names {
            let (name, file_type) = open.names.get(i);
            if shared.failed.load(Ordering::Relaxed) {
                return;
            }
            let mut child = Vec::with_capacity(rel.len() + 1 + name.to_bytes().len());
            if !rel.is_empty() {
                child.extend_from_slice(rel);
                child.push(b'/');
            }
            child.extend_from_slice(name.to_bytes());
            let at = At::In(fd, name);
            let ty = match type_of(file_type, fd.as_fd(), name) {
                Ok(ty) => ty,
                Err(e) => {
                    if shared.handle(Problem::Unreadable(shared.abs(&child), e)) {
                        continue;
                    }
                    return;
                }
            };
            if self.left_out(&child, name.to_bytes(), ty) {
                continue;
            }
            match shared.entry(at, child, ty, &mut scratch) {
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
