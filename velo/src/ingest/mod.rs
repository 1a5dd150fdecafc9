//! `velo ingest`: turn a directory into store blobs and a manifest.
//!
//! # Data flow
//!
//! 1. Check the source directory and the output path up front, so bad input fails before any
//!    work is done and before the store is touched.
//! 2. Take the store lock shared (any number of ingests at once; `gc --run` waits).
//! 3. Walk the tree in parallel, never following symlinks, leaving out `--exclude` globs: by
//!    directory descriptors, in canonical order ([`walk`]), or with `--gitignore` by
//!    [`ignore::WalkParallel`], which knows the rules of `.gitignore` files in and above the
//!    tree. Per file, on the walker's thread:
//!    - if the [stat index](index) says the file is unchanged and its blob exists, reuse it;
//!    - else open it read-only (`O_NOFOLLOW`, `O_NOATIME`), hash it and store it: small files
//!      are read into memory and written only when the blob is new, large ones are reflinked
//!      where the filesystem can, else hashed while being copied. If the file changed while it
//!      was read (its `fstat` differs before and after), it is read again.
//! 4. Put the entries into a [`Manifest`], make the new blobs durable ([`Store::sync`]), write
//!    the manifest atomically, register it as a GC root, and save the new stat index.
//!
//! The user's files are only ever opened for reading: no chmod, rename or hard link
//! (invariant 1). Special files (fifos, sockets, devices) are skipped and reported.

pub mod index;
mod walk;

use std::ffi::{CStr, CString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ignore::overrides::Override;
use ignore::{ParallelVisitor, ParallelVisitorBuilder, WalkState};
use rayon::slice::ParallelSliceMut;
use rustix::fs::{AtFlags, StatxFlags};
use serde::Serialize;

use crate::manifest::{Entry, Kind, Manifest, display_path};
use crate::store::{self, BlobKey, Inserted, LockMode, SMALL_FILE_LIMIT, Store};

use index::{Record, Stat, StatIndex};

/// The kernel's limit on a path passed to a system call.
const PATH_MAX: usize = libc::PATH_MAX as usize;

/// What to do with a file or directory that cannot be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnreadable {
    /// Stop with an error: the manifest would not describe the whole tree.
    #[default]
    Fail,
    /// Leave it out of the manifest, and list it in the report.
    Skip,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub source: PathBuf,
    pub output: PathBuf,
    /// Gitignore-style globs, relative to the source directory.
    pub excludes: Vec<String>,
    /// Honour `.gitignore` files (and `.git/info/exclude`) inside the tree.
    pub gitignore: bool,
    pub on_unreadable: OnUnreadable,
    /// Use the stat index to skip unchanged files.
    pub use_index: bool,
    pub durability: store::Durability,
    /// Who may read the store, if this ingest creates it.
    pub access: store::Access,
}

/// An entry left out of the manifest, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// What an ingest did.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub manifest_id: String,
    pub output: PathBuf,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Sum of file sizes.
    pub bytes: u64,
    /// Blobs this ingest added to the store, and their bytes.
    pub new_blobs: u64,
    pub new_bytes: u64,
    /// Bytes of files whose content the store already had.
    pub deduplicated_bytes: u64,
    /// Stored blobs of this tree's content that were corrupt: quarantined and written again.
    pub replaced_blobs: u64,
    /// Files taken from the stat index without being read.
    pub unchanged_files: u64,
    /// Directories whose names were taken from the stat index without reading the directory.
    pub unchanged_dirs: u64,
    pub skipped: Vec<Skipped>,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot ingest {path}: {source}", path = .path.display())]
    Source { path: PathBuf, source: io::Error },
    #[error("cannot ingest {path}: not a directory", path = .path.display())]
    NotADirectory { path: PathBuf },
    #[error("cannot read {path}: {source}\n  (it is fatal by default; pass --on-unreadable skip to leave such entries out)", path = .path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error(
        "path too long ({len} bytes, the limit is {PATH_MAX}): {shown}…\n  (ingest a deeper directory, or pass --on-unreadable skip)"
    )]
    PathTooLong { shown: String, len: usize },
    #[error("{path} kept changing while it was read; ingest it again when it is quiet", path = .path.display())]
    Unstable { path: PathBuf },
    #[error("invalid --exclude glob {glob:?}: {message}")]
    BadExclude { glob: String, message: String },
    #[error("cannot write manifest {path}: {reason}", path = .path.display())]
    Output { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Ingests `opts.source` into the store at `store_root` (created if needed, but only once the
/// input has been checked), writes the manifest to `opts.output` and registers it.
/// `progress` is called once per stored file with its size.
pub fn ingest(
    store_root: &Path,
    opts: &Options,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, Error> {
    let started = Instant::now();
    let started_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));

    let (root, root_meta) = check_source(&opts.source)?;
    let output = check_output(&opts.output)?;

    let store = &Store::open_or_create(store_root, opts.access, "velo ingest")?
        .with_durability(opts.durability);
    let _lock = store.lock(LockMode::Shared)?;
    let index_path = index::path_for(store, &root);
    let index = if opts.use_index {
        StatIndex::load(&index_path, root_meta.dev())
    } else {
        StatIndex::default()
    };
    // Read before walking: a gc that runs after this ingest ends cannot matter to it, and none
    // can run during it (we hold the lock shared).
    let gc_generation = store.gc_generation();
    tracing::debug!(records = index.len(), elapsed = ?started.elapsed(), "loaded stat index");

    let excludes = excludes(&root, opts)?;
    let shared = Shared {
        store,
        root: &root,
        index: &index,
        blobs_unchanged_since_index: !index.is_empty() && index.gc_generation() == gc_generation,
        on_unreadable: opts.on_unreadable,
        progress,
        failed: AtomicBool::new(false),
        errors: Mutex::new(Vec::new()),
        skipped: Mutex::new(Vec::new()),
        new_blobs: AtomicU64::new(0),
        new_bytes: AtomicU64::new(0),
        unchanged: AtomicU64::new(0),
    };
    // Both walks give the entries in canonical order.
    let tree = if opts.gitignore {
        walk_with_gitignore(&shared, excludes, &output)
    } else {
        match walk::tree(&shared, &excludes, &output, walk::Listings::Recorded) {
            Ok(tree) => tree,
            Err(walk::Stale) => {
                shared.reset();
                walk::tree(&shared, &excludes, &output, walk::Listings::Read)
                    .unwrap_or_else(|walk::Stale| unreachable!("no recorded listings were used"))
            }
        }
    };
    tracing::debug!(elapsed = ?started.elapsed(), "walked");

    let mut errors = shared
        .errors
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    if !errors.is_empty() {
        // Report the error of the first path in tree order, so runs are reproducible.
        errors.sort_by(|a, b| a.0.cmp(&b.0));
        return Err(errors.swap_remove(0).1);
    }
    let mut skipped = shared
        .skipped
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let files = tree.file_count();
    let unchanged = shared.unchanged.load(Ordering::Relaxed) as usize;
    // Every file matched a record and every record a file, in the same GC generation, and
    // every directory's listing was the recorded one: the index would be written back as it is.
    let index_is_current = unchanged == files
        && index.len() == files
        && shared.blobs_unchanged_since_index
        && index.dirs() == tree.dirs.len()
        && tree.dirs.iter().all(|d| d.recorded);
    if opts.use_index && !index_is_current {
        let named = named(&tree.entries, &tree.dirs);
        let dirs = tree
            .dirs
            .iter()
            .zip(named)
            .map(|(d, (slots, targets))| index::DirRecord {
                rel: &d.rel,
                stat: d.stat,
                names: &d.names,
                targets,
                slots,
            });
        let saved = StatIndex::save(
            &index_path,
            root_meta.dev(),
            started_ns,
            gc_generation,
            tree.files(),
            dirs,
        );
        if let Err(e) = saved {
            // Only a cache: the next ingest reads everything again.
            tracing::warn!("could not save the stat index: {e}");
        }
        tracing::debug!(elapsed = ?started.elapsed(), "saved stat index");
    }
    skipped.sort_by(|a: &Skipped, b| a.path.cmp(&b.path));
    let manifest = if tree.checked {
        let run_starts = tree.runs.iter().map(|(run, _)| run.start);
        Manifest::from_checked(tree.entries, run_starts)
    } else {
        Manifest::from_entries(tree.entries)
    };
    let manifest = manifest.map_err(|(path, reason)| Error::Output {
        path: output.clone(),
        reason: format!("entry {:?}: {reason}", display_path(&path)),
    })?;

    tracing::debug!(elapsed = ?started.elapsed(), "built manifest");
    // Blobs are made durable before a manifest that names them is written; an unchanged tree
    // writes neither, and skips the filesystem-wide sync.
    let new_blobs = shared.new_blobs.load(Ordering::Relaxed);
    let (id, written) = manifest.write_after(&output, || store.sync())?;
    if !written && new_blobs > 0 {
        store.sync()?;
    }
    tracing::debug!(elapsed = ?started.elapsed(), written, "synced blobs, wrote manifest");
    store.register_root(&output)?;
    tracing::debug!(elapsed = ?started.elapsed(), "registered the manifest");
    let mut report = Report {
        manifest_id: id.to_string(),
        output,
        files: 0,
        dirs: 0,
        symlinks: 0,
        bytes: 0,
        new_blobs: shared.new_blobs.into_inner(),
        new_bytes: shared.new_bytes.into_inner(),
        deduplicated_bytes: 0,
        replaced_blobs: store.replaced_blobs(),
        unchanged_files: shared.unchanged.into_inner(),
        unchanged_dirs: tree.dirs.iter().filter(|d| d.recorded).count() as u64,
        skipped,
        seconds: started.elapsed().as_secs_f64(),
    };
    for entry in manifest.entries() {
        match entry.kind {
            Kind::Dir => report.dirs += 1,
            Kind::File { size, .. } => {
                report.files += 1;
                report.bytes += size;
            }
            Kind::Symlink { .. } => report.symlinks += 1,
        }
    }
    report.deduplicated_bytes = report.bytes.saturating_sub(report.new_bytes);
    // Freeing what the walk made (~50k paths, most allocated on walker threads) took up to a
    // sixth of an unchanged tree's re-ingest (with glibc's allocator, which takes the other
    // thread's arena lock for each). A pool thread frees it instead, off the way to the report
    // (or the process's exit does, sooner).
    let leftovers = (manifest, tree.records, tree.runs, tree.dirs, index);
    rayon::spawn(move || drop(leftovers));
    Ok(report)
}

/// The source must be a readable directory; returns its canonical path and metadata.
fn check_source(source: &Path) -> Result<(PathBuf, Metadata), Error> {
    let err = |e| Error::Source {
        path: source.to_path_buf(),
        source: e,
    };
    let meta = fs::metadata(source).map_err(err)?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory {
            path: source.to_path_buf(),
        });
    }
    let root = fs::canonicalize(source).map_err(err)?;
    fs::read_dir(&root).map_err(err)?;
    Ok((root, meta))
}

/// The output's directory must exist; returns the absolute output path.
fn check_output(output: &Path) -> Result<PathBuf, Error> {
    let fail = |reason: String| Error::Output {
        path: output.to_path_buf(),
        reason,
    };
    let abs = std::path::absolute(output).map_err(|e| fail(e.to_string()))?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(fail("not a file path".into()));
    };
    let parent = fs::canonicalize(parent)
        .map_err(|e| fail(format!("its directory {}: {e}", parent.display())))?;
    let abs = parent.join(name);
    if abs.is_dir() {
        return Err(fail("it is a directory".into()));
    }
    Ok(abs)
}

/// The `--exclude` globs, as a matcher of paths relative to `root`.
fn excludes(root: &Path, opts: &Options) -> Result<Override, Error> {
    let mut overrides = ignore::overrides::OverrideBuilder::new(root);
    for glob in &opts.excludes {
        overrides
            .add(&format!("!{glob}"))
            .map_err(|e| Error::BadExclude {
                glob: glob.clone(),
                message: e.to_string(),
            })?;
    }
    overrides.build().map_err(|e| Error::BadExclude {
        glob: opts.excludes.join(" "),
        message: e.to_string(),
    })
}

/// With `--gitignore`: [`ignore::WalkParallel`], for its `.gitignore` rules in and above the
/// tree; entries come in no order and are sorted afterwards.
fn walk_with_gitignore(shared: &Shared, excludes: Override, output: &Path) -> Tree {
    let output = output.to_path_buf();
    let walker = ignore::WalkBuilder::new(shared.root)
        .standard_filters(false)
        .follow_links(false)
        .git_ignore(true)
        .git_exclude(true)
        .require_git(false)
        .parents(true)
        .overrides(excludes)
        // The manifest being written must not describe itself on the next run.
        // (The name first: comparing whole paths parses both into components.)
        .filter_entry(move |e| {
            e.file_name() != output.file_name().unwrap_or_default() || e.path() != output
        })
        .build_parallel();
    let batches = Mutex::new(Vec::new());
    walker.visit(&mut VisitorBuilder {
        shared,
        batches: &batches,
    });
    let mut entries: Vec<_> = batches
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect();
    entries.par_sort_unstable_by(|a: &Walked, b| {
        crate::manifest::canonical_order(&a.0.path, &b.0.path)
    });
    Tree::from_walked(entries)
}

/// A manifest entry found by a walk, with a file's stat record.
type Walked = (Entry, Option<Record>);

/// What a walk found: the entries in canonical order (apart from everything else, so that they
/// become the manifest without a copy); the stat records of the files among them; and, from
/// [`walk`], each directory it listed, in canonical order.
///
/// The records stay in the vectors the walk made them in (`records`, one per piece of a
/// directory), since they are needed only when the index is saved: `runs` says which entries
/// each vector's records belong to, in order, a vector's records spread over several runs
/// when its files are interleaved with subdirectories' contents.
#[derive(Default)]
struct Tree {
    entries: Vec<Entry>,
    records: Vec<Vec<Record>>,
    /// A range of `entries` and the vector of `records` that holds its files' records.
    runs: Vec<(std::ops::Range<usize>, usize)>,
    /// Whether the walk checked each entry of a run after the first against the one before it
    /// ([`Manifest::from_checked`]).
    checked: bool,
    dirs: Vec<std::sync::Arc<walk::Listing>>,
}

impl Tree {
    /// Appends `entries`, whose files' records are (next) in `records[run]`.
    fn take(&mut self, run: usize, entries: impl Iterator<Item = Entry>) {
        let start = self.entries.len();
        self.entries.extend(entries);
        if self.entries.len() > start {
            self.runs.push((start..self.entries.len(), run));
        }
    }

    /// A tree of entries already in canonical order, with their records.
    fn from_walked(walked: Vec<Walked>) -> Self {
        let mut records = Vec::with_capacity(walked.len());
        let entries: Vec<Entry> = walked
            .into_iter()
            .map(|(entry, record)| {
                records.extend(record);
                entry
            })
            .collect();
        let mut tree = Tree {
            records: vec![records],
            ..Tree::default()
        };
        tree.take(0, entries.into_iter());
        tree
    }

    /// How many files (and records) there are.
    fn file_count(&self) -> usize {
        self.records.iter().map(Vec::len).sum()
    }

    /// Each file's path and record, in canonical order.
    fn files(&self) -> impl Iterator<Item = (&[u8], Record)> {
        let mut next = vec![0; self.records.len()];
        self.runs.iter().flat_map(move |(range, run)| {
            let files = self.entries[range.clone()]
                .iter()
                .filter(|e| matches!(e.kind, Kind::File { .. }));
            let first = next[*run];
            next[*run] += files.clone().count();
            let records = self.records[*run][first..next[*run]].iter().copied();
            files.map(|e| e.path.as_slice()).zip(records)
        })
    }
}

/// A listing's slots and symlink targets, by name.
type Named<'t> = (Vec<u32>, Vec<Option<&'t [u8]>>);

/// What the index records of each listing's names besides the names ([`index::DirRecord`]):
/// each name's slot, the position of its record among the files' records (in canonical order,
/// as the index saves them) or among `dirs`; and each symlink's target. One pass over the
/// entries, which are in canonical order: each entry is a name in the listing on top of a stack
/// of the directories it is in. (A name without an entry, as an excluded one, gets neither.)
fn named<'t>(entries: &'t [Entry], dirs: &[std::sync::Arc<walk::Listing>]) -> Vec<Named<'t>> {
    let mut named: Vec<Named> = dirs
        .iter()
        .map(|d| (vec![u32::MAX; d.names.len()], vec![None; d.names.len()]))
        .collect();
    // Listings the walk is in: (position in `dirs`, the next of its names to compare).
    let mut stack: Vec<(usize, usize)> = Vec::new();
    if dirs.first().is_some_and(|d| d.rel.is_empty()) {
        stack.push((0, 0));
    }
    let (mut next_dir, mut next_file) = (stack.len(), 0u32);
    for entry in entries {
        let (parent, name) = match memchr::memrchr(b'/', &entry.path) {
            Some(slash) => (&entry.path[..slash], &entry.path[slash + 1..]),
            None => (&[][..], &entry.path[..]),
        };
        while stack.last().is_some_and(|&(d, _)| dirs[d].rel != parent) {
            stack.pop();
        }
        let slot = match entry.kind {
            Kind::File { .. } => {
                next_file += 1;
                next_file - 1
            }
            Kind::Dir if dirs.get(next_dir).is_some_and(|d| d.rel == entry.path) => {
                next_dir += 1;
                (next_dir - 1) as u32
            }
            _ => u32::MAX,
        };
        if let Some((d, next)) = stack.last_mut() {
            let names = &dirs[*d].names;
            while *next < names.len() && names.get(*next).0.to_bytes() < name {
                *next += 1;
            }
            if *next < names.len() && names.get(*next).0.to_bytes() == name {
                let (slots, targets) = &mut named[*d];
                slots[*next] = slot;
                if let Kind::Symlink { target } = &entry.kind {
                    targets[*next] = Some(target.as_slice());
                }
            }
        }
        if entry.kind == Kind::Dir && slot != u32::MAX {
            stack.push((slot as usize, 0));
        }
    }
    named
}

/// State shared by the walker threads.
struct Shared<'a> {
    store: &'a Store,
    root: &'a Path,
    index: &'a StatIndex,
    /// No `gc --run` has deleted blobs since the index was written: its blobs all exist.
    blobs_unchanged_since_index: bool,
    on_unreadable: OnUnreadable,
    progress: &'a (dyn Fn(u64) + Sync),
    failed: AtomicBool,
    errors: Mutex<Vec<(Vec<u8>, Error)>>,
    skipped: Mutex<Vec<Skipped>>,
    new_blobs: AtomicU64,
    new_bytes: AtomicU64,
    unchanged: AtomicU64,
}

/// What one walker reuses from file to file.
#[derive(Default)]
struct Scratch {
    /// The read buffer for small files.
    buf: Vec<u8>,
    /// Where in the stat index its last file was.
    cursor: index::Cursor,
    /// Files taken from the index, to be added to [`Shared::unchanged`] when the walker is
    /// done: a shared counter written per file would move its cache line between the cores
    /// on every file, and with it what the walkers read of [`Shared`].
    unchanged: u64,
}

/// Where a walk found an entry: by path (the `ignore` walker, with `--gitignore`), or by name
/// in an open directory ([`walk`]).
#[derive(Clone, Copy)]
enum At<'a> {
    Path(&'a Path),
    In(BorrowedFd<'a>, &'a CStr),
}

impl At<'_> {
    fn lstat(self) -> io::Result<Stat> {
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

    fn open(self) -> io::Result<File> {
        match self {
            At::Path(path) => store::open_source(path),
            At::In(dir, name) => store::open_source_at(dir, name),
        }
    }

    fn read_link(self) -> io::Result<Vec<u8>> {
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
enum Type {
    Dir,
    File,
    Symlink,
    /// Fifos, sockets and devices, which are skipped: what it is, for the report.
    Special(&'static str),
}

impl Type {
    /// From the `ignore` walker's file type.
    fn of(t: fs::FileType) -> Type {
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
enum Problem {
    /// Permission denied or similar: subject to `--on-unreadable`.
    Unreadable(PathBuf, io::Error),
    /// Always fatal.
    Fatal(Error),
}

impl Shared<'_> {
    /// Forgets what a walk that is to be repeated found. (Not the blobs it stored: the
    /// repeat finds them in the store, and they count as this ingest's new blobs once.)
    fn reset(&self) {
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
    fn abs(&self, rel: &[u8]) -> PathBuf {
        self.root.join(std::ffi::OsStr::from_bytes(rel))
    }

    /// `path` relative to the root, as bytes.
    fn rel<'p>(&self, path: &'p Path) -> &'p [u8] {
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
    fn handle(&self, problem: Problem) -> bool {
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
    fn entry(
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

    fn ingest_file(
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

struct VisitorBuilder<'s, 'a> {
    shared: &'s Shared<'a>,
    batches: &'s Mutex<Vec<Vec<Walked>>>,
}

impl<'s> ParallelVisitorBuilder<'s> for VisitorBuilder<'s, '_> {
    fn build(&mut self) -> Box<dyn ParallelVisitor + 's> {
        Box::new(Visitor {
            shared: self.shared,
            batches: self.batches,
            entries: Vec::new(),
            scratch: Scratch::default(),
        })
    }
}

/// One thread of the `ignore` walker.
struct Visitor<'s, 'a> {
    shared: &'s Shared<'a>,
    batches: &'s Mutex<Vec<Vec<Walked>>>,
    entries: Vec<Walked>,
    scratch: Scratch,
}

impl Drop for Visitor<'_, '_> {
    fn drop(&mut self) {
        let unchanged = self.scratch.unchanged;
        self.shared
            .unchanged
            .fetch_add(unchanged, Ordering::Relaxed);
        let entries = std::mem::take(&mut self.entries);
        self.batches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entries);
    }
}

impl ParallelVisitor for Visitor<'_, '_> {
    fn visit(&mut self, result: Result<ignore::DirEntry, ignore::Error>) -> WalkState {
        let shared = self.shared;
        if shared.failed.load(Ordering::Relaxed) {
            return WalkState::Quit;
        }
        let found = match result {
            Ok(entry) if entry.depth() == 0 => return WalkState::Continue,
            Ok(entry) => match entry.file_type() {
                Some(t) => {
                    let rel = shared.rel(entry.path()).to_vec();
                    let at = At::Path(entry.path());
                    shared.entry(at, rel, Type::of(t), None, &mut self.scratch)
                }
                None => return WalkState::Continue,
            },
            Err(err) => Err(walk_problem(err)),
        };
        match found {
            Ok(found) => {
                self.entries.extend(found);
                WalkState::Continue
            }
            Err(problem) => {
                if shared.handle(problem) {
                    WalkState::Skip
                } else {
                    WalkState::Quit
                }
            }
        }
    }
}

fn walk_problem(err: ignore::Error) -> Problem {
    // Unwrap the walker's context wrappers to the path and the I/O error.
    fn parts(err: &ignore::Error) -> (Option<&Path>, Option<&io::Error>) {
        match err {
            ignore::Error::WithPath { path, err } => (Some(path.as_path()), parts(err).1),
            ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
                parts(err)
            }
            ignore::Error::Io(e) => (None, Some(e)),
            _ => (None, None),
        }
    }
    match parts(&err) {
        (Some(path), Some(io)) if io.raw_os_error() == Some(libc::ELOOP) => {
            Problem::Fatal(Error::Source {
                path: path.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::ELOOP),
            })
        }
        (Some(path), Some(io)) => Problem::Unreadable(
            path.to_path_buf(),
            io.raw_os_error().map_or_else(
                || io::Error::other(io.to_string()),
                io::Error::from_raw_os_error,
            ),
        ),
        _ => Problem::Fatal(Error::Source {
            path: PathBuf::new(),
            source: io::Error::other(err.to_string()),
        }),
    }
}

fn path_too_long(path: &Path) -> Error {
    let bytes = path.as_os_str().as_bytes();
    let shown = display_path(&bytes[..bytes.len().min(120)]);
    Error::PathTooLong {
        shown,
        len: bytes.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustix::fs::FileType::{Directory, RegularFile, Symlink};

    use super::*;
    use crate::ingest::index::{DirStat, Names};

    fn listing(rel: &str, names: &[(&str, rustix::fs::FileType)]) -> Arc<walk::Listing> {
        let stat = DirStat {
            dev: 0,
            ino: 0,
            mtime_ns: 0,
            ctime_ns: 0,
        };
        Arc::new(walk::Listing {
            rel: rel.as_bytes().to_vec(),
            stat,
            names: Names::of(names),
            recorded: false,
        })
    }

    fn entry(path: &str, kind: Kind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
        }
    }

    #[test]
    fn each_name_gets_its_record_among_files_or_directories_and_its_target() {
        let file = || Kind::File {
            hash: blake3::hash(b""),
            size: 0,
            exec: false,
        };
        let link = || Kind::Symlink {
            target: b"t".to_vec(),
        };
        // `x` is excluded (a name without an entry); `u` was unreadable (an entry without a
        // listing); the files' records are numbered in canonical order: a/f, a/g, b, c/h.
        let dirs = [
            listing(
                "",
                &[
                    ("a", Directory),
                    ("b", RegularFile),
                    ("c", Directory),
                    ("l", Symlink),
                    ("x", RegularFile),
                ],
            ),
            listing(
                "a",
                &[("f", RegularFile), ("g", RegularFile), ("u", Directory)],
            ),
            listing("c", &[("h", RegularFile)]),
        ];
        let entries = [
            entry("a", Kind::Dir),
            entry("a/f", file()),
            entry("a/g", file()),
            entry("a/u", Kind::Dir),
            entry("b", file()),
            entry("c", Kind::Dir),
            entry("c/h", file()),
            entry("l", link()),
        ];
        let none = u32::MAX;
        let named = named(&entries, &dirs);
        let slots: Vec<_> = named.iter().map(|(slots, _)| slots.clone()).collect();
        assert_eq!(
            slots,
            [vec![1, 2, 2, none, none], vec![0, 1, none], vec![3]]
        );
        let t = Some(&b"t"[..]);
        assert_eq!(named[0].1, [None, None, None, t, None]);
        assert!(
            named[1..]
                .iter()
                .all(|(_, targets)| targets.iter().all(Option::is_none))
        );
    }
}
