//! `velo ingest`: turn a directory into store blobs and a manifest.
//!
//! # Data flow
//!
//! 1. Check the source directory and the output path up front, so bad input fails before any
//!    work is done and before the store is touched.
//! 2. Take the store lock shared (any number of ingests at once; `gc --run` waits).
//! 3. Walk the tree in parallel ([`ignore::WalkParallel`]: `--exclude` globs and, on request,
//!    `.gitignore` files), never following symlinks. Per file, on the walker's thread:
//!    - if the [stat index](index) says the file is unchanged and its blob exists, reuse it;
//!    - else open it read-only (`O_NOFOLLOW`, `O_NOATIME`), hash it and store it: small files
//!      are read into memory and written only when the blob is new, large ones are reflinked
//!      where the filesystem can, else hashed while being copied. If the file changed while it
//!      was read (its `fstat` differs before and after), it is read again.
//! 4. Sort the entries into a [`Manifest`], make the new blobs durable ([`Store::sync`]), write
//!    the manifest atomically, register it as a GC root, and save the new stat index.
//!
//! The user's files are only ever opened for reading: no chmod, rename or hard link
//! (invariant 1). Special files (fifos, sockets, devices) are skipped and reported.

pub mod index;

use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ignore::{ParallelVisitor, ParallelVisitorBuilder, WalkState};
use rayon::slice::ParallelSliceMut;
use serde::Serialize;

use crate::manifest::{Entry, Kind, Manifest, display_path};
use crate::store::{self, BlobKey, Inserted, LockMode, SMALL_FILE_LIMIT, Store};

use index::{Record, StatIndex};

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
    /// Walker threads; 0 picks one per core.
    pub threads: usize,
    pub durability: store::Durability,
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
    /// Files taken from the stat index without being read.
    pub unchanged_files: u64,
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

    let store = &Store::open_or_create(store_root)?.with_durability(opts.durability);
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

    let shared = Shared {
        store,
        root: &root,
        index: &index,
        blobs_unchanged_since_index: !index.is_empty() && index.gc_generation() == gc_generation,
        on_unreadable: opts.on_unreadable,
        progress,
        failed: AtomicBool::new(false),
        errors: Mutex::new(Vec::new()),
        results: Mutex::new(Vec::new()),
        new_blobs: AtomicU64::new(0),
        new_bytes: AtomicU64::new(0),
        unchanged: AtomicU64::new(0),
    };
    walker(&root, &output, opts)?.visit(&mut VisitorBuilder { shared: &shared });
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
    let results = shared
        .results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for batch in results {
        entries.extend(batch.entries);
        skipped.extend(batch.skipped);
    }
    // Sorted here, so the index is written in tree order and from_entries finds them sorted.
    // On every core: after the walk, this sort was a quarter of an unchanged tree's re-ingest.
    entries.par_sort_unstable_by(|a: &(Entry, Option<Record>), b| {
        crate::manifest::canonical_order(&a.0.path, &b.0.path)
    });
    tracing::debug!(elapsed = ?started.elapsed(), "sorted");
    let files = entries.iter().filter(|(_, r)| r.is_some()).count();
    let unchanged = shared.unchanged.load(Ordering::Relaxed) as usize;
    // Every file matched a record and every record a file, in the same GC generation: the
    // index would be written back as it is.
    let index_is_current =
        unchanged == files && index.len() == files && shared.blobs_unchanged_since_index;
    if opts.use_index && !index_is_current {
        let saved = StatIndex::save(
            &index_path,
            root_meta.dev(),
            started_ns,
            gc_generation,
            entries
                .iter()
                .filter_map(|(e, r)| Some((e.path.as_slice(), (*r)?))),
        );
        if let Err(e) = saved {
            // Only a cache: the next ingest reads everything again.
            tracing::warn!("could not save the stat index: {e}");
        }
        tracing::debug!(elapsed = ?started.elapsed(), "saved stat index");
    }
    let entries: Vec<Entry> = entries.into_iter().map(|(e, _)| e).collect();
    skipped.sort_by(|a: &Skipped, b| a.path.cmp(&b.path));
    let manifest = Manifest::from_entries(entries).map_err(|(path, reason)| Error::Output {
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
        unchanged_files: shared.unchanged.into_inner(),
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

fn walker(root: &Path, output: &Path, opts: &Options) -> Result<ignore::WalkParallel, Error> {
    let mut overrides = ignore::overrides::OverrideBuilder::new(root);
    for glob in &opts.excludes {
        overrides
            .add(&format!("!{glob}"))
            .map_err(|e| Error::BadExclude {
                glob: glob.clone(),
                message: e.to_string(),
            })?;
    }
    let overrides = overrides.build().map_err(|e| Error::BadExclude {
        glob: opts.excludes.join(" "),
        message: e.to_string(),
    })?;
    let output = output.to_path_buf();
    let mut builder = ignore::WalkBuilder::new(root);
    builder
        .standard_filters(false)
        .follow_links(false)
        .git_ignore(opts.gitignore)
        .git_exclude(opts.gitignore)
        .require_git(false)
        .parents(opts.gitignore)
        .overrides(overrides)
        .threads(opts.threads)
        // The manifest being written must not describe itself on the next run.
        // (The name first: comparing whole paths parses both into components.)
        .filter_entry(move |e| {
            e.file_name() != output.file_name().unwrap_or_default() || e.path() != output
        });
    Ok(builder.build_parallel())
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
    results: Mutex<Vec<Batch>>,
    new_blobs: AtomicU64,
    new_bytes: AtomicU64,
    unchanged: AtomicU64,
}

/// One walker thread's results, handed over when the thread finishes.
#[derive(Default)]
struct Batch {
    /// Entries, with the stat record of each file.
    entries: Vec<(Entry, Option<Record>)>,
    skipped: Vec<Skipped>,
}

struct VisitorBuilder<'s, 'a> {
    shared: &'s Shared<'a>,
}

impl<'s> ParallelVisitorBuilder<'s> for VisitorBuilder<'s, '_> {
    fn build(&mut self) -> Box<dyn ParallelVisitor + 's> {
        Box::new(Visitor {
            shared: self.shared,
            batch: Batch::default(),
            buf: Vec::new(),
        })
    }
}

struct Visitor<'s, 'a> {
    shared: &'s Shared<'a>,
    batch: Batch,
    /// Reused read buffer for small files.
    buf: Vec<u8>,
}

impl Drop for Visitor<'_, '_> {
    fn drop(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        self.shared
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(batch);
    }
}

/// Where a problem was found, for policy decisions.
enum Problem {
    /// Permission denied or similar: subject to `--on-unreadable`.
    Unreadable(PathBuf, io::Error),
    /// Always fatal.
    Fatal(Error),
}

impl ParallelVisitor for Visitor<'_, '_> {
    fn visit(&mut self, result: Result<ignore::DirEntry, ignore::Error>) -> WalkState {
        if self.shared.failed.load(Ordering::Relaxed) {
            return WalkState::Quit;
        }
        let outcome = match result {
            Ok(entry) => self.visit_entry(&entry),
            Err(err) => Err(walk_problem(err)),
        };
        match outcome {
            Ok(state) => state,
            Err(problem) => self.handle(problem),
        }
    }
}

impl Visitor<'_, '_> {
    fn rel<'p>(&self, path: &'p Path) -> &'p [u8] {
        // The walker's paths are the root joined with names: cut as bytes (`strip_prefix`
        // parses both paths into components, for every file).
        let (p, root) = (
            path.as_os_str().as_bytes(),
            self.shared.root.as_os_str().as_bytes(),
        );
        match p.strip_prefix(root) {
            Some([b'/', rel @ ..]) => rel,
            _ => path
                .strip_prefix(self.shared.root)
                .unwrap_or(path)
                .as_os_str()
                .as_bytes(),
        }
    }

    fn handle(&mut self, problem: Problem) -> WalkState {
        let (path, error) = match problem {
            Problem::Unreadable(path, source) => {
                if self.shared.on_unreadable == OnUnreadable::Skip {
                    self.batch.skipped.push(Skipped {
                        path: display_path(self.rel(&path)),
                        reason: source.to_string(),
                    });
                    return WalkState::Skip;
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
        self.shared.failed.store(true, Ordering::Relaxed);
        let key = self.rel(&path).to_vec();
        self.shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key, error));
        WalkState::Quit
    }

    fn visit_entry(&mut self, entry: &ignore::DirEntry) -> Result<WalkState, Problem> {
        if entry.depth() == 0 {
            return Ok(WalkState::Continue);
        }
        let path = entry.path();
        let rel = self.rel(path).to_vec();
        if path.as_os_str().len() >= PATH_MAX {
            return Err(Problem::Unreadable(
                path.to_path_buf(),
                io::Error::from_raw_os_error(libc::ENAMETOOLONG),
            ));
        }
        let Some(file_type) = entry.file_type() else {
            return Ok(WalkState::Continue);
        };
        if file_type.is_dir() {
            self.batch.entries.push((
                Entry {
                    path: rel,
                    kind: Kind::Dir,
                },
                None,
            ));
        } else if file_type.is_symlink() {
            let target =
                fs::read_link(path).map_err(|e| Problem::Unreadable(path.to_path_buf(), e))?;
            let kind = Kind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            };
            self.batch.entries.push((Entry { path: rel, kind }, None));
        } else if file_type.is_file() {
            let (kind, record) = self.ingest_file(path, &rel)?;
            self.batch
                .entries
                .push((Entry { path: rel, kind }, Some(record)));
        } else {
            let what = if file_type.is_fifo() {
                "fifo"
            } else if file_type.is_socket() {
                "socket"
            } else if file_type.is_block_device() {
                "block device"
            } else if file_type.is_char_device() {
                "character device"
            } else {
                "special file"
            };
            self.batch.skipped.push(Skipped {
                path: display_path(&rel),
                reason: format!("is a {what}; only files, directories and symlinks are stored"),
            });
        }
        Ok(WalkState::Continue)
    }

    fn ingest_file(&mut self, path: &Path, rel: &[u8]) -> Result<(Kind, Record), Problem> {
        let shared = self.shared;
        let unreadable = |e| Problem::Unreadable(path.to_path_buf(), e);
        if !shared.index.is_empty() {
            let meta = fs::symlink_metadata(path).map_err(unreadable)?;
            if let Some(key) = shared.index.lookup(rel, &meta)
                && (shared.blobs_unchanged_since_index || shared.store.contains(&key))
            {
                shared.unchanged.fetch_add(1, Ordering::Relaxed);
                (shared.progress)(meta.size());
                let kind = Kind::File {
                    hash: key.hash,
                    size: meta.size(),
                    exec: key.exec,
                };
                return Ok((kind, Record::new(&meta, key)));
            }
        }
        for _attempt in 0..3 {
            let file = store::open_source(path).map_err(unreadable)?;
            let before = file.metadata().map_err(unreadable)?;
            let exec = before.mode() & 0o111 != 0;
            let Some((key, size, inserted)) = self.store_file(&file, &before, exec, path)? else {
                continue; // shrank while being read
            };
            let after = file.metadata().map_err(unreadable)?;
            if Record::new(&before, key) != Record::new(&after, key) || size != after.size() {
                tracing::debug!(path = %path.display(), "changed while being read; reading again");
                continue;
            }
            if inserted == Inserted::New {
                shared.new_blobs.fetch_add(1, Ordering::Relaxed);
                shared.new_bytes.fetch_add(size, Ordering::Relaxed);
            }
            (shared.progress)(size);
            let kind = Kind::File {
                hash: key.hash,
                size,
                exec,
            };
            return Ok((kind, Record::new(&before, key)));
        }
        Err(Problem::Fatal(Error::Unstable {
            path: path.to_path_buf(),
        }))
    }

    /// Stores one open file; `None` if it turned out shorter than `fstat` said (it is being
    /// written: the caller reads it again). Growth is caught by the caller's second `fstat`.
    fn store_file(
        &mut self,
        file: &File,
        meta: &Metadata,
        exec: bool,
        path: &Path,
    ) -> Result<Option<(BlobKey, u64, Inserted)>, Problem> {
        let store = self.shared.store;
        let fatal = |e: store::Error| Problem::Fatal(e.into());
        if meta.size() <= SMALL_FILE_LIMIT {
            // Exactly one read(2) for the expected size.
            self.buf.resize(meta.size() as usize, 0);
            match Read::read_exact(&mut { file }, &mut self.buf) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(Problem::Unreadable(path.to_path_buf(), e)),
            }
            let hash = blake3::hash(&self.buf);
            let inserted = store.insert_bytes(hash, exec, &self.buf).map_err(fatal)?;
            return Ok(Some((
                BlobKey { hash, exec },
                self.buf.len() as u64,
                inserted,
            )));
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
