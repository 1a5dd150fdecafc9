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

mod entry;
mod gitignore;
pub mod index;
pub mod text;
mod tree;
mod walk;

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ignore::overrides::Override;
use serde::Serialize;

use crate::manifest::{Kind, Manifest, display_path};
use crate::store::{self, LockMode, Store};

use entry::Shared;
use gitignore::walk_with_gitignore;
use index::StatIndex;
use tree::named;

/// The kernel's limit on a path passed to a system call.
pub(super) const PATH_MAX: usize = libc::PATH_MAX as usize;

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

pub(super) fn path_too_long(path: &Path) -> Error {
    let bytes = path.as_os_str().as_bytes();
    let shown = display_path(&bytes[..bytes.len().min(120)]);
    Error::PathTooLong {
        shown,
        len: bytes.len(),
    }
}
