//! The content-addressed store: every file's content lives here once, named by its BLAKE3 hash.
//!
//! # Layout
//!
//! ```text
//! <store>/
//!   velo-store            marker and format version ("velo store 1"); a directory without it
//!                         that is not empty is never used as a store
//!   lock                  flock(2) target: ingest holds it shared, `gc --run` exclusive
//!   blobs/ab/ab12…ef      a blob: read-only (0444), named by the BLAKE3 of its content, sealed
//!                         (see [`health`])
//!   blobs/ab/ab12…ef.x    the same content as an executable blob (0555)
//!   tmp/                  named temporary blobs, only where O_TMPFILE is unavailable; anything
//!                         here is garbage once no ingest runs
//!   roots/<hash>          GC roots: one file per registered manifest, holding its path
//!   index/<hash>          re-ingest stat indexes, one per ingested directory (see `ingest::index`)
//!   gc-generation         bumped by every `gc --run` that deleted blobs and by `status --repair`
//!   quarantine/           corrupt blobs moved aside ([`Store::quarantine`]); `gc --run` empties it
//!   farms/, mirage/       `velo run`'s run directories, farm cache and shim images (`run`)
//!   cache/                `velo cache` snapshot records (`cache::snapshot`)
//!   remote/               what each remote holds, as far as this machine knows (`remote::known`)
//! ```
//!
//! The top directory's mode is the store's [`Access`]: 0700 unless created shared. A store this
//! process cannot write (read-only mount, another user's) is still read by status, verify and
//! run; what they write goes to [`Store::scratch`].
//!
//! Shard directories are created on first use, never ahead of time.
//!
//! # Why two blobs for one content
//!
//! A projection hard-links blobs into a farm, and a hard link shares its inode's mode. An
//! executable must stay executable through the link and a plain file must not become one, so the
//! executable bit is part of a blob's identity ([`BlobKey`]): the rare content that appears both
//! ways is stored twice. The user's file is never chmod-ed to get there (invariant 1); the store
//! sets the mode on its own private temporary copy before renaming it into place.
//!
//! # Crash safety
//!
//! A blob is written to an anonymous `O_TMPFILE` inode, given its final mode, and only then
//! named with `linkat` (see [`write`]): a killed process leaves no partial blob under a real name
//! and no temporary file, and an existing blob is never replaced. Durability is a
//! [`Durability`] choice: fsync every blob, or one `syncfs(2)` for the whole batch before the
//! manifest that references the batch is written (the default; see `cargo xtask bench store`).

mod health;
mod lock;
mod roots;
mod write;
mod writeback;

pub use health::{Fitness, SEAL_MTIME, Seen};
pub use lock::{LockMode, StoreLock};
pub use roots::Root;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use blake3::Hash;

/// First line of the `velo-store` marker file; the number is the on-disk format version.
const MARKER: &str = "velo store 1\n";

/// Prefix of the temporary files [`write_atomic`] renames into place.
const TEMP_PREFIX: &str = ".velo-tmp-";

/// Files up to this size are read into memory, hashed, and written only if the blob is new.
/// Larger ones are hashed while they are copied to a temporary file, so they are read once.
pub const SMALL_FILE_LIMIT: u64 = 4 << 20;

/// Errors from store operations. Each names the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no store location: pass --store DIR or set VELO_STORE (neither XDG_DATA_HOME nor HOME is set)"
    )]
    NoLocation,
    #[error(
        "{path} is not a velo store (no velo-store marker, and the directory is not empty); \
         choose an empty or new directory with --store",
        path = .path.display()
    )]
    NotAStore { path: PathBuf },
    #[error("{path} is a velo store of an unsupported format ({found:?}); this velo reads {MARKER:?}", path = .path.display())]
    UnsupportedFormat { path: PathBuf, found: String },
    #[error("store {path} does not exist yet (nothing has been ingested into it)", path = .path.display())]
    Missing { path: PathBuf },
    #[error(
        "store {path} is read-only ({why}), and {what} writes into the store: pass --store DIR \
         (or set VELO_STORE) for a store of your own; reading commands (status, status --verify, \
         run) work on this one as it is",
        path = .path.display()
    )]
    ReadOnly {
        path: PathBuf,
        why: String,
        what: &'static str,
    },
    #[error(
        "store {path} is private (mode {mode:04o}); a store is shared only when it is created \
         with --shared-store. To share this one, chmod 0755 {path} (every local user can then \
         read every blob)",
        path = .path.display()
    )]
    NotShared { path: PathBuf, mode: u32 },
    #[error(
        "no space left on the filesystem holding {path} ({source}): free space there, or write elsewhere",
        path = .path.display()
    )]
    Full { path: PathBuf, source: io::Error },
    #[error("{op} {path}: {source}", path = .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with the operation and path, recognising a full disk.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
        {
            Error::Full { path, source }
        } else {
            Error::Io { op, path, source }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How blobs are made durable before a manifest that references them is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// One `syncfs(2)` on the store's filesystem after the batch, before the manifest; a
    /// background thread starts the writeback early (see [`writeback`]).
    #[default]
    Batch,
    /// `fsync(2)` every new blob before it is renamed into place.
    PerBlob,
    /// No syncing at all: for throwaway stores and benchmarks. A power cut may lose blobs.
    None,
}

/// Who may read a store: decided when it is created, kept in its top directory's mode.
///
/// Blobs are 0444 (0555 for executables) because a blob's mode is part of its identity (a hard
/// link shares it), so the store cannot copy a source file's permissions onto its blob. What
/// keeps a 0600 file private is the store's top directory: 0700 for a private store (the
/// default), so no other user can reach any blob, index or registered manifest path in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Top directory 0700: only its owner (and root) can read anything in it.
    #[default]
    Private,
    /// Top directory 0755: every local user can read every blob, and the paths of registered
    /// manifests and ingested directories. An explicit choice (`--shared-store`).
    Shared,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Private => 0o700,
            Access::Shared => 0o755,
        }
    }
}

/// The identity of a blob: its content hash and whether it is the executable variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobKey {
    pub hash: Hash,
    pub exec: bool,
}

impl Ord for BlobKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.hash.as_bytes(), self.exec).cmp(&(other.hash.as_bytes(), other.exec))
    }
}

impl PartialOrd for BlobKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl BlobKey {
    /// The blob's file name inside its shard: 64 hex digits, `.x` for the executable variant.
    pub fn file_name(&self) -> String {
        let mut name = self.hash.to_hex().to_string();
        if self.exec {
            name.push_str(".x");
        }
        name
    }

    /// Parses a blob file name written by [`BlobKey::file_name`].
    pub fn parse_file_name(name: &str) -> Option<BlobKey> {
        let (hex, exec) = match name.strip_suffix(".x") {
            Some(hex) => (hex, true),
            None => (name, false),
        };
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        Some(BlobKey {
            hash: Hash::from_hex(hex).ok()?,
            exec,
        })
    }

    /// The mode a blob of this key has on disk.
    pub fn mode(&self) -> u32 {
        blob_mode(self.exec)
    }
}

impl std::fmt::Display for BlobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// The mode of a blob on disk: read-only, executable or not.
pub fn blob_mode(exec: bool) -> u32 {
    if exec { 0o555 } else { 0o444 }
}

/// Whether an insert wrote a new blob or found it already present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    New,
    Existing,
}

/// One blob found on disk by [`Store::blobs`].
#[derive(Clone, Debug)]
pub struct BlobFile {
    pub key: BlobKey,
    pub path: PathBuf,
    pub size: u64,
}

/// A handle on a store directory. Cheap to clone; holds no open files.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    durability: Durability,
    /// Set once the store's filesystem has refused a reflink, so later large files go straight
    /// to copying instead of creating a temporary file for nothing.
    no_reflink: Arc<AtomicBool>,
    /// Set once `O_TMPFILE` + `linkat` has proved unusable here; blobs then go through named
    /// temporary files in `tmp/`.
    no_tmpfile: Arc<AtomicBool>,
    /// Why this process cannot write the store (a read-only filesystem, another user's store),
    /// or `None` if it can.
    read_only: Option<String>,
    /// Corrupt blobs found by inserts of their content, quarantined and written again.
    replaced: Arc<std::sync::atomic::AtomicU64>,
    /// Bits the process umask clears; blobs whose mode it would change get an `fchmod`.
    umask: u32,
    /// Starts writing new blobs to disk while an ingest goes on (batch durability only).
    writeback: Arc<writeback::Writeback>,
}

impl Store {
    /// Where the store lives: `explicit` (`--store`), else `$VELO_STORE`, else
    /// `$XDG_DATA_HOME/velo`, else `$HOME/.local/share/velo`.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
        if let Some(dir) = explicit {
            return Ok(dir.to_path_buf());
        }
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = non_empty("VELO_STORE") {
            return Ok(PathBuf::from(dir));
        }
        if let Some(dir) = non_empty("XDG_DATA_HOME") {
            return Ok(PathBuf::from(dir).join("velo"));
        }
        if let Some(home) = non_empty("HOME") {
            return Ok(PathBuf::from(home).join(".local/share/velo"));
        }
        Err(Error::NoLocation)
    }

    /// Opens the store at `root` for writing, creating it (and only its top directory, with
    /// `access`'s mode) if needed. [`Error::ReadOnly`], naming the command `what`, if this
    /// process cannot write it.
    pub fn open_or_create(root: &Path, access: Access, what: &'static str) -> Result<Store> {
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
        }
        match fs::DirBuilder::new().mode(access.mode()).create(root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("creating store directory", root, e)),
        }
        let marker = root.join("velo-store");
        match fs::read_to_string(&marker) {
            Ok(found) => {
                check_marker(root, found)?;
                let store = Store::handle(root);
                if let Some(why) = &store.read_only {
                    return Err(Error::ReadOnly {
                        path: store.root.clone(),
                        why: why.clone(),
                        what,
                    });
                }
                if access == Access::Shared && store.access() == Access::Private {
                    return Err(Error::NotShared {
                        path: store.root.clone(),
                        mode: store.mode(),
                    });
                }
                return Ok(store);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Empty, or holding only the temporary marker of a creation that was killed.
                let entries = fs::read_dir(root)
                    .map_err(|e| Error::io("reading store directory", root, e))?;
                for entry in entries {
                    let entry = entry.map_err(|e| Error::io("reading store directory", root, e))?;
                    if !entry
                        .file_name()
                        .as_encoded_bytes()
                        .starts_with(TEMP_PREFIX.as_bytes())
                    {
                        return Err(Error::NotAStore {
                            path: root.to_path_buf(),
                        });
                    }
                }
                // A new or empty directory becomes the store: it gets the store's mode (the
                // umask may have narrowed a fresh one, the user may have made it wider), then
                // the marker.
                fs::set_permissions(root, fs::Permissions::from_mode(access.mode()))
                    .map_err(|e| Error::io("setting the mode of", root, e))?;
                write_atomic(&marker, MARKER.as_bytes(), true)?;
            }
            Err(e) => return Err(Error::io("reading", marker, e)),
        }
        Ok(Store::handle(root))
    }

    /// Opens an existing store without creating anything; [`Error::Missing`] if there is none.
    pub fn open_existing(root: &Path) -> Result<Store> {
        let marker = root.join("velo-store");
        match fs::read_to_string(&marker) {
            Ok(found) => check_marker(root, found)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if root.exists() {
                    Error::NotAStore {
                        path: root.to_path_buf(),
                    }
                } else {
                    Error::Missing {
                        path: root.to_path_buf(),
                    }
                });
            }
            Err(e) => return Err(Error::io("reading", marker, e)),
        }
        Ok(Store::handle(root))
    }

    fn handle(root: &Path) -> Store {
        // Absolute once, so no later call resolves a relative path again (getcwd per blob).
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let read_only = read_only_reason(&root);
        Store {
            root,
            durability: Durability::default(),
            no_reflink: Arc::default(),
            no_tmpfile: Arc::new(AtomicBool::new(!Path::new("/proc/self/fd").is_dir())),
            read_only,
            replaced: Arc::default(),
            umask: write::process_umask(),
            writeback: Arc::default(),
        }
    }

    /// Whether this process can write the store.
    pub fn writable(&self) -> bool {
        self.read_only.is_none()
    }

    /// Why this process cannot write the store, if it cannot.
    pub fn read_only_reason(&self) -> Option<&str> {
        self.read_only.as_deref()
    }

    /// [`Error::ReadOnly`] for `what` when the store is not writable.
    pub fn require_writable(&self, what: &'static str) -> Result<()> {
        match &self.read_only {
            None => Ok(()),
            Some(why) => Err(Error::ReadOnly {
                path: self.root.clone(),
                why: why.clone(),
                what,
            }),
        }
    }

    /// The top directory's permission bits.
    pub fn mode(&self) -> u32 {
        fs::metadata(&self.root).map_or(0o700, |m| m.permissions().mode() & 0o7777)
    }

    /// [`Access::Shared`] when any user but the owner can enter the store.
    pub fn access(&self) -> Access {
        if self.mode() & 0o011 != 0 {
            Access::Shared
        } else {
            Access::Private
        }
    }

    /// Corrupt blobs that inserts found, quarantined and wrote again, so far.
    pub fn replaced_blobs(&self) -> u64 {
        self.replaced.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Where this process keeps what a run writes beside the store (run directories, farm and
    /// image caches): the store itself, or for a store it cannot write, a private directory
    /// of its own, `$XDG_CACHE_HOME/velo/stores/<hash of the store's path>/` (else under
    /// `~/.cache`, else the temporary directory), made 0700.
    pub fn scratch(&self) -> io::Result<PathBuf> {
        if self.writable() {
            return Ok(self.root.clone());
        }
        let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let base = non_empty("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| non_empty("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("velo/stores");
        let hash = blake3::hash(self.root.as_os_str().as_encoded_bytes()).to_hex();
        let dir = base.join(&hash[..16]);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(dir)
    }

    pub fn with_durability(mut self, durability: Durability) -> Store {
        self.durability = durability;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `blobs/`: every blob, in shards by the first two hex digits of its hash.
    pub fn blobs_dir(&self) -> PathBuf {
        self.dir("blobs")
    }

    /// `cache/`: `velo cache`'s snapshot records, one directory per content key.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.dir("cache")
    }

    /// `farms/` (in [`Store::scratch`]): `velo run`'s run directories and the farm cache.
    pub fn runs_dir(&self) -> io::Result<PathBuf> {
        Ok(self.scratch()?.join("farms"))
    }

    /// `farms/cache/` (in [`Store::scratch`]): one link farm per merged manifest id.
    pub fn farm_cache_dir(&self) -> io::Result<PathBuf> {
        Ok(self.runs_dir()?.join("cache"))
    }

    /// `mirage/` (in [`Store::scratch`]): shim mode's image of each tree.
    pub fn images_dir(&self) -> io::Result<PathBuf> {
        Ok(self.scratch()?.join("mirage"))
    }

    /// `remote/<hash of the URL>/` (in [`Store::scratch`]): what this machine knows a remote
    /// holds (copies of the indexes it pushed or pulled: `remote::known`).
    pub fn remote_dir(&self, url: &str) -> io::Result<PathBuf> {
        let hash = blake3::hash(url.as_bytes()).to_hex();
        Ok(self.scratch()?.join("remote").join(&hash[..16]))
    }

    /// Takes the store lock; blocks while another process holds it incompatibly. The exclusive
    /// lock is for `gc --run`, which deletes: [`Error::ReadOnly`] on a store we cannot write.
    pub fn lock(&self, mode: LockMode) -> Result<StoreLock> {
        if mode == LockMode::Exclusive {
            self.require_writable("velo gc --run")?;
        }
        StoreLock::acquire(&self.root.join("lock"), mode, self.writable())
    }

    pub fn blob_path(&self, key: &BlobKey) -> PathBuf {
        let hex = key.hash.to_hex();
        let mut path = self.root.join("blobs");
        path.push(&hex[..2]);
        path.push(key.file_name());
        path
    }

    /// Whether a blob is present (it is not checked for corruption: see [`Store::verify_blob`]).
    pub fn contains(&self, key: &BlobKey) -> bool {
        fs::symlink_metadata(self.blob_path(key)).is_ok()
    }

    /// Makes every blob written so far durable, as [`Durability`] asks. Call before writing a
    /// manifest that references them.
    pub fn sync(&self) -> Result<()> {
        match self.durability {
            Durability::None => Ok(()),
            Durability::Batch => {
                let dir =
                    File::open(&self.root).map_err(|e| Error::io("opening", &self.root, e))?;
                // SAFETY: plain syscall on an owned, open descriptor.
                if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                    return Err(Error::io(
                        "syncing filesystem of",
                        &self.root,
                        io::Error::last_os_error(),
                    ));
                }
                Ok(())
            }
            // Each blob's data was synced before it was named; the names live in the shards.
            Durability::PerBlob => {
                let blobs = self.dir("blobs");
                let Ok(shards) = fs::read_dir(&blobs) else {
                    return Ok(());
                };
                for shard in shards.flatten() {
                    let path = shard.path();
                    File::open(&path)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| Error::io("syncing", &path, e))?;
                }
                Ok(())
            }
        }
    }

    /// Every blob on disk. Files in `blobs/` whose names are not blob names are skipped.
    pub fn blobs(&self) -> Result<Vec<BlobFile>> {
        let blobs_dir = self.dir("blobs");
        let shards = match fs::read_dir(&blobs_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing", &blobs_dir, e)),
        };
        let mut out = Vec::new();
        for shard in shards {
            let shard = shard.map_err(|e| Error::io("listing", &blobs_dir, e))?;
            let shard_path = shard.path();
            let entries =
                fs::read_dir(&shard_path).map_err(|e| Error::io("listing", &shard_path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("listing", &shard_path, e))?;
                let Some(key) = entry
                    .file_name()
                    .to_str()
                    .and_then(BlobKey::parse_file_name)
                else {
                    continue;
                };
                let meta = entry
                    .metadata()
                    .map_err(|e| Error::io("reading", entry.path(), e))?;
                out.push(BlobFile {
                    key,
                    path: entry.path(),
                    size: meta.len(),
                });
            }
        }
        out.sort_by_key(|b| b.key);
        Ok(out)
    }

    /// Re-hashes one blob and checks its name and mode. `Ok(None)` means it is sound.
    pub fn verify_blob(&self, blob: &BlobFile) -> Result<Option<Corruption>> {
        let meta =
            fs::symlink_metadata(&blob.path).map_err(|e| Error::io("reading", &blob.path, e))?;
        if !meta.file_type().is_file() {
            return Ok(Some(Corruption::NotAFile));
        }
        let mode = meta.permissions().mode() & 0o7777;
        let mut file = File::open(&blob.path).map_err(|e| Error::io("opening", &blob.path, e))?;
        let mut hasher = blake3::Hasher::new();
        io::copy(&mut file, &mut hasher).map_err(|e| Error::io("reading", &blob.path, e))?;
        let actual = hasher.finalize();
        if actual != blob.key.hash {
            return Ok(Some(Corruption::Content { actual }));
        }
        if mode != blob.key.mode() {
            return Ok(Some(Corruption::Mode { actual: mode }));
        }
        Ok(None)
    }

    /// Temporary files left behind by killed writers.
    pub fn stray_temp_files(&self) -> Result<Vec<PathBuf>> {
        self.listing("tmp")
    }

    /// Corrupt blobs moved aside by [`Store::quarantine`].
    pub fn quarantined(&self) -> Result<Vec<PathBuf>> {
        let mut found = self.listing("quarantine")?;
        found.sort();
        Ok(found)
    }

    /// The paths in one of the store's directories; none if it does not exist.
    fn listing(&self, name: &str) -> Result<Vec<PathBuf>> {
        let dir = self.dir(name);
        match fs::read_dir(&dir) {
            Ok(rd) => rd
                .map(|e| {
                    e.map(|e| e.path())
                        .map_err(|e| Error::io("listing", &dir, e))
                })
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io("listing", &dir, e)),
        }
    }

    /// The number of `gc --run`s that deleted anything; the stat index records it to know
    /// whether blobs it names may have been collected since.
    pub fn gc_generation(&self) -> u64 {
        fs::read_to_string(self.dir("gc-generation"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn bump_gc_generation(&self) -> Result<()> {
        let next = self.gc_generation() + 1;
        write_atomic(
            &self.dir("gc-generation"),
            format!("{next}\n").as_bytes(),
            true,
        )
    }
}

/// Why a store cannot write its directory: `access(2)` asks the kernel, which knows about
/// read-only mounts (`EROFS`) and permissions alike.
fn read_only_reason(root: &Path) -> Option<String> {
    match rustix::fs::access(root, rustix::fs::Access::WRITE_OK) {
        Ok(()) => None,
        Err(rustix::io::Errno::ROFS) => Some("a read-only filesystem".to_owned()),
        Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => {
            use std::os::unix::fs::MetadataExt;
            let owner = fs::metadata(root).map(|m| m.uid()).ok();
            Some(match owner {
                Some(uid) => format!("owned by uid {uid}, not writable by uid {}", euid()),
                None => "not writable by this user".to_owned(),
            })
        }
        // Missing (a store about to be created) or something access(2) cannot tell: let the
        // write itself say what is wrong.
        Err(_) => None,
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Why [`Store::verify_blob`] or [`Store::look`] rejected a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Corruption {
    Content { actual: Hash },
    Mode { actual: u32 },
    Size { expected: u64, actual: u64 },
    NotAFile,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::Content { actual } => write!(f, "content hashes to {actual}"),
            Corruption::Mode { actual } => write!(f, "mode is {actual:04o}"),
            Corruption::Size { expected, actual } => {
                write!(f, "{actual} bytes where {expected} were expected")
            }
            Corruption::NotAFile => f.write_str("not a regular file"),
        }
    }
}

fn check_marker(root: &Path, found: String) -> Result<()> {
    if found == MARKER {
        Ok(())
    } else {
        Err(Error::UnsupportedFormat {
            path: root.to_path_buf(),
            found,
        })
    }
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename, so
/// readers see the old content or the new, never a part. With `durable`, fsyncs the file first.
pub fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating temporary file in", dir, e))?;
    // Errors name `path`: the temporary name is ours, not something the user can act on.
    tmp.as_file_mut()
        .write_all(data)
        .map_err(|e| Error::io("writing", path, e))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("setting mode of", tmp.path(), e))?;
    if durable {
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::io("syncing", path, e))?;
    }
    tmp.persist(path)
        .map_err(|e| Error::io("renaming into", path, e.error))?;
    Ok(())
}

/// Opens a file of the user's for reading without changing anything about it: no symlink
/// following, and no access-time update where the kernel allows `O_NOATIME` (owner or root).
pub fn open_source(path: &Path) -> io::Result<File> {
    let open = |flags| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | flags)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    }
}

/// [`open_source`] of `name` in the open directory `dir` (the kernel resolves one component).
pub fn open_source_at(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::CStr) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let open = |flags| {
        rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | flags,
            Mode::empty(),
        )
    };
    let fd = match open(OFlags::NOATIME) {
        Err(rustix::io::Errno::PERM) => open(OFlags::empty()),
        other => other,
    }?;
    Ok(File::from(fd))
}

/// Lossless conversion of raw bytes into a path (Unix paths are bytes).
pub fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_killed_before_its_marker_was_renamed_can_be_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        fs::create_dir(&root).unwrap();
        fs::write(root.join(format!("{TEMP_PREFIX}abc123")), "").unwrap();
        Store::open_or_create(&root, Access::Private, "test").unwrap();
        assert_eq!(fs::read_to_string(root.join("velo-store")).unwrap(), MARKER);
    }

    #[test]
    fn a_directory_with_other_files_is_never_taken_for_a_store() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        assert!(matches!(
            Store::open_or_create(dir.path(), Access::Private, "test"),
            Err(Error::NotAStore { .. })
        ));
        assert!(!dir.path().join("velo-store").exists());
    }
}
