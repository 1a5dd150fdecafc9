//! The walk of an ingest without `--gitignore`: directory by directory, each entry reached by
//! name from its directory's descriptor, on every core, and in canonical order as it goes.
//!
//! An unchanged tree's re-ingest is nothing but this walk (one `statx` per file, and no
//! directory read: the [stat index](super::index) records each directory's names), so the walk
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
//! `O_NOFOLLOW`), takes its names from the index if the directory's stat data is as recorded,
//! else reads and sorts them, and cuts them into pieces of [`PIECE`] names. Each
//! piece is a job (so the files of one large directory are hashed on every core) that makes the
//! entries of its names, by name in the directory, and starts a directory job for each
//! subdirectory. All jobs are spawned into one rayon scope, so a deep tree does not deepen any
//! stack, and a queued job holds a path, not a descriptor: the descriptors open at once are those
//! of running jobs, however wide the tree.
//!
//! Each piece's entries go into a table by piece number and each directory's pieces into a table
//! by directory number; when every job is done, a depth-first pass over the tables puts the
//! entries, and the directories' listings for the next index, in order.
//!
//! A recorded listing that turns out wrong (a name in it is missing or of another type: only a
//! filesystem that does not keep directory times does that) stops the walk, and the ingest
//! walks again reading every directory ([`Stale`]).

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ignore::overrides::Override;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, StatxFlags};

use super::entry::{At, Problem, Scratch, Shared, Type};
use super::index::Record;
use super::index::{Cursor, DirStat, Names};
use super::tree::Tree;
use crate::manifest::{self, Entry, Kind};

/// Names per piece job: enough to make a job worth spawning, few enough that a directory of
/// large files is spread over the cores.
const PIECE: usize = 64;

/// Walks the tree under `shared.root`, leaving out what `excludes` matches and the manifest
/// being written (`output`); returns the entries in canonical order. Problems are recorded in
/// `shared` (see [`Shared::handle`]).
pub(super) fn tree(
    shared: &Shared<'_>,
    excludes: &Override,
    output: &Path,
    listings: Listings,
) -> Result<Tree, Stale> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root = match rustix::fs::open(shared.root, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            shared.handle(Problem::Unreadable(shared.root.to_owned(), e.into()));
            return Ok(Tree::default());
        }
    };
    let walk = Walk {
        shared,
        root,
        excludes,
        output: output.as_os_str().as_bytes(),
        output_name: output.file_name().map_or(&[][..], OsStr::as_bytes),
        listings,
        stale: AtomicBool::new(false),
        dirs: AtomicUsize::new(1),
        pieces: AtomicUsize::new(0),
        tables: Mutex::new(Tables::default()),
    };
    rayon::scope(|scope| walk.dir(scope, 0, Vec::new(), false, Cursor::default()));
    if walk.stale.into_inner() {
        return Err(Stale);
    }
    let mut tables = walk.tables.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Tree {
        entries: Vec::with_capacity(tables.found),
        records: Vec::with_capacity(tables.pieces.len()),
        runs: Vec::with_capacity(tables.pieces.len() + tables.dirs.len()),
        checked: true,
        dirs: Vec::with_capacity(tables.dirs.len()),
    };
    tables.flatten(0, &mut out);
    Ok(out)
}

/// Whether a walk may take a directory's names from the index instead of reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Listings {
    Recorded,
    /// Read every directory: after a walk found a recorded listing [`Stale`].
    Read,
}

/// A recorded listing named an entry that is not there (or not of that type): the directory
/// changed without its stat data changing, which a filesystem that keeps POSIX times does not
/// do. The walk is repeated with [`Listings::Read`].
#[derive(Debug)]
pub(super) struct Stale;

struct Walk<'w, 's> {
    shared: &'w Shared<'s>,
    root: OwnedFd,
    excludes: &'w Override,
    output: &'w [u8],
    output_name: &'w [u8],
    listings: Listings,
    /// Set with `shared.failed`, which stops the walk, when a recorded listing proved stale.
    stale: AtomicBool,
    /// The next directory and piece numbers.
    dirs: AtomicUsize,
    pieces: AtomicUsize,
    tables: Mutex<Tables>,
}

/// What a piece found: its entries in name order, the stat records of the files among them in
/// the same order, and where the subdirectories are among the entries, with the number of the
/// directory job that walks each.
#[derive(Default)]
struct Piece {
    entries: Vec<Entry>,
    records: Vec<Record>,
    subdirs: Vec<(usize, usize)>,
}

/// One directory as the walk saw it: what the index records of it for the next walk.
pub(super) struct Listing {
    /// Its path relative to the root ("" for the root).
    pub rel: Vec<u8>,
    pub stat: DirStat,
    pub names: Names,
    /// Whether `names` came from the index rather than from reading the directory.
    pub recorded: bool,
}

#[derive(Default)]
struct Tables {
    /// By directory number: its listing and the numbers of its pieces, in name order.
    dirs: Vec<(Option<Arc<Listing>>, Vec<usize>)>,
    /// By piece number: what it found.
    pieces: Vec<Piece>,
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

    /// Moves directory `dir`'s listing to `out.dirs` and its entries, and its subdirectories'
    /// after each of them, to `out`: so both come out in canonical order. The stat records
    /// stay in their pieces' vectors (see [`Tree`]); only the entries, which become the
    /// manifest, are moved. (Recursion as deep as the tree: a few hundred bytes a level, and
    /// paths end at 4 KiB.)
    fn flatten(&mut self, dir: usize, out: &mut Tree) {
        let (listing, pieces) = self
            .dirs
            .get_mut(dir)
            .map(std::mem::take)
            .unwrap_or_default();
        out.dirs.extend(listing);
        for piece in pieces {
            // A piece that stopped at a fatal problem put nothing; the ingest fails anyway.
            let Piece {
                entries,
                records,
                subdirs,
            } = self
                .pieces
                .get_mut(piece)
                .map(std::mem::take)
                .unwrap_or_default();
            let run = out.records.len();
            out.records.push(records);
            let mut entries = entries.into_iter();
            let mut taken = 0;
            for (at, sub) in subdirs {
                out.take(run, entries.by_ref().take(at + 1 - taken));
                taken = at + 1;
                self.flatten(sub, out);
            }
            out.take(run, entries);
        }
    }
}

/// A directory being walked, shared by its pieces.
struct Open {
    dir: Dir,
    listing: Arc<Listing>,
    /// Where in the index its pieces start looking.
    cursor: Cursor,
}

impl<'w> Walk<'w, '_> {
    /// Directory job `id`: opens directory `rel` ("" for the root), takes its names from the
    /// index or reads them, and starts its pieces. `in_recorded` says whether the name came
    /// from a recorded listing (so its absence shows that listing stale).
    fn dir<'scope>(
        &'scope self,
        scope: &rayon::Scope<'scope>,
        id: usize,
        rel: Vec<u8>,
        in_recorded: bool,
        mut cursor: Cursor,
    ) where
        'w: 'scope,
    {
        if self.shared.failed.load(Ordering::Relaxed) {
            return;
        }
        let (dir, listing) = match self.read(rel, &mut cursor) {
            Ok(read) => read,
            Err((rel, e)) => {
                let problem = Problem::Unreadable(self.shared.abs(&rel), e);
                self.trouble(in_recorded, problem);
                return;
            }
        };
        let count = listing.names.len().div_ceil(PIECE);
        let first = self.pieces.fetch_add(count, Ordering::Relaxed);
        let len = listing.names.len();
        let listing = Arc::new(listing);
        Tables::put(
            &mut self.tables.lock().unwrap_or_else(|p| p.into_inner()).dirs,
            id,
            (Some(Arc::clone(&listing)), (first..first + count).collect()),
        );
        let open = Arc::new(Open {
            dir,
            listing,
            cursor,
        });
        for i in 1..count {
            let open = Arc::clone(&open);
            let names = i * PIECE..len.min((i + 1) * PIECE);
            scope.spawn(move |scope| self.piece(scope, first + i, &open, names));
        }
        if count > 0 {
            self.piece(scope, first, &open, 0..len.min(PIECE));
        }
    }

    /// Opens directory `rel` and lists it: from the index if it records the directory as it
    /// is, else by reading it. (`fstat` before reading: a change after it then shows next time.)
    /// An error gives `rel` back, for its message.
    fn read(
        &self,
        rel: Vec<u8>,
        cursor: &mut Cursor,
    ) -> Result<(Dir, Listing), (Vec<u8>, io::Error)> {
        let opened = if rel.is_empty() {
            rustix::io::dup(&self.root)
        } else {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            rustix::fs::openat(&self.root, OsStr::from_bytes(&rel), flags, Mode::empty())
        };
        let listed = opened.and_then(|fd| {
            let stat = DirStat::from(&rustix::fs::fstat(&fd)?);
            Ok((Dir::new(fd)?, stat))
        });
        let (mut dir, stat) = match listed {
            Ok(listed) => listed,
            Err(e) => return Err((rel, e.into())),
        };
        let recorded = match self.listings {
            Listings::Recorded => self.shared.index.listing(&rel, &stat, cursor),
            Listings::Read => None,
        };
        let (names, recorded) = match recorded {
            Some(names) => (names, true),
            None => match read_names(&mut dir) {
                Ok(names) => (names, false),
                Err(e) => return Err((rel, e)),
            },
        };
        let listing = Listing {
            rel,
            stat,
            names,
            recorded,
        };
        Ok((dir, listing))
    }

    /// Records a problem (see [`Shared::handle`]), unless it shows a recorded listing stale:
    /// then stops the walk to repeat it. Returns whether to go on.
    fn trouble(&self, in_recorded: bool, problem: Problem) -> bool {
        let gone = |e: &io::Error| {
            let gone = [
                libc::ENOENT,
                libc::ENOTDIR,
                libc::ELOOP,
                libc::EISDIR,
                libc::EINVAL,
            ];
            e.raw_os_error().is_some_and(|errno| gone.contains(&errno))
        };
        if in_recorded && matches!(&problem, Problem::Unreadable(_, e) if gone(e)) {
            tracing::info!(
                "a recorded directory listing is stale; walking again, reading every directory"
            );
            self.stale.store(true, Ordering::Relaxed);
            self.shared.failed.store(true, Ordering::Relaxed);
            return false;
        }
        self.shared.handle(problem)
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
        let (shared, listing) = (self.shared, &*open.listing);
        let (rel, recorded) = (&listing.rel[..], listing.recorded);
        let fd = match open.dir.fd() {
            Ok(fd) => fd,
            Err(e) => {
                shared.handle(Problem::Unreadable(shared.abs(rel), e.into()));
                return;
            }
        };
        let mut found = Piece {
            entries: Vec::with_capacity(names.len()),
            ..Piece::default()
        };
        let mut scratch = Scratch {
            cursor: open.cursor,
            ..Scratch::default()
        };
        for i in names {
            let (name, file_type) = listing.names.get(i);
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
                    if self.trouble(recorded, Problem::Unreadable(shared.abs(&child), e)) {
                        continue;
                    }
                    return;
                }
            };
            if self.left_out(&child, name.to_bytes(), ty) {
                continue;
            }
            let target = listing.names.target(i);
            // Where a recorded listing says this name's record is: found without a search.
            let slot = listing.names.slot(i);
            if let (Some(slot), Type::File) = (slot, ty) {
                scratch.cursor.file = slot;
            }
            let made = shared.entry(at, child, ty, target, &mut scratch);
            let made = made.and_then(|made| {
                // Each entry after the first of a run, while it is in the cache (see
                // `Manifest::from_checked`); after a subdirectory, its contents come next.
                if let (Some(previous), Some((entry, _))) = (found.entries.last(), &made)
                    && previous.kind != Kind::Dir
                    && let Err(e) = manifest::check_next(Some(previous), entry)
                {
                    let invalid = io::Error::other(format!("not a valid entry name: {e}"));
                    return Err(Problem::Unreadable(shared.abs(&entry.path), invalid));
                }
                Ok(made)
            });
            match made {
                Ok(Some((entry, _))) if ty == Type::Dir => {
                    let sub = self.dirs.fetch_add(1, Ordering::Relaxed);
                    let path = entry.path.clone();
                    let mut cursor = scratch.cursor;
                    if let Some(slot) = slot {
                        cursor.dir = slot;
                    }
                    scope.spawn(move |scope| self.dir(scope, sub, path, recorded, cursor));
                    found.subdirs.push((found.entries.len(), sub));
                    found.entries.push(entry);
                }
                Ok(Some((entry, record))) => {
                    found.entries.push(entry);
                    found.records.extend(record);
                }
                Ok(None) => {}
                Err(problem) => {
                    if !self.trouble(recorded, problem) {
                        return;
                    }
                }
            }
        }
        shared
            .unchanged
            .fetch_add(scratch.unchanged, Ordering::Relaxed);
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.found += found.entries.len();
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

/// Reads the names of the open directory `dir` (all but `.` and `..`).
fn read_names(dir: &mut rustix::fs::Dir) -> io::Result<Names> {
    let too_large = |_| io::Error::other("directory too large to read");
    let (mut bytes, mut list) = (Vec::new(), Vec::new());
    for entry in dir {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            let at = u32::try_from(bytes.len()).map_err(too_large)?;
            let len = u32::try_from(name.count_bytes()).map_err(too_large)?;
            bytes.extend_from_slice(name.to_bytes_with_nul());
            list.push((at, len, entry.file_type()));
        }
    }
    Ok(Names::from_read(bytes, list))
}
