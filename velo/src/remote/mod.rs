//! The remote tier: blobs, manifests and `velo cache` snapshots shared between machines through
//! object storage the user already runs (S3 and everything that speaks its API, or a shared
//! directory).
//!
//! # Object layout
//!
//! ```text
//! <prefix>/velo-remote          marker and format version ("velo remote 2")
//! <prefix>/packs/<name>         small blobs, one zstd frame each, back to back
//! <prefix>/blobs/ab/ab12…ef     a large blob alone, zstd-compressed; `.x` for the executable
//! <prefix>/indexes/<id>         where each blob of manifest <id> is: its pack and frame, or
//!                               alone (zstd-compressed JSON)
//! <prefix>/manifests/<id>       a manifest's bytes (its id is their BLAKE3)
//! <prefix>/snapshots/<key>/<id>.<hash>
//!                               a `velo cache` snapshot record of content key <key> (JSON;
//!                               <hash> is its BLAKE3), written after its manifest
//! ```
//!
//! # Why packs
//!
//! A `target/` holds thousands of files, most of them small (fingerprints, dep-info, `.o` and
//! `.rmeta` files). One object each would make a restore thousands of requests, and request
//! latency, not bandwidth, would set its time. So a push groups the blobs the remote lacks into
//! packs of about [`pack::TARGET`] bytes ([`pack`]); a blob of [`pack::ALONE`] bytes or more
//! travels alone. A restore of velo's own `target/` is then tens of requests. Each blob is its
//! own zstd frame inside the pack, so a reader can check (and keep) blob by blob.
//!
//! # Trust
//!
//! Everything is checked against its name before it enters a local store. A blob is
//! decompressed with a cap of the size the manifest declares, hashed and compared with its key;
//! a pack is named by the BLAKE3 of the list of blobs it holds (each named by the BLAKE3 of its
//! content), and a reader checks both; a manifest must hash to the id asked for; an index is
//! only a hint (a lying index yields blobs that fail their check). A mismatch is a miss and a
//! warning, never a wrong file.
//!
//! # Publish order
//!
//! Packs and alone blobs first, then the index, then the manifest, then (for a snapshot) its
//! record, each with a create-if-absent write (`If-None-Match: *` on S3). A reader that finds a
//! manifest finds everything it names, unless a prune took it since; that is a miss. Two runners
//! pushing the same snapshot at once both succeed: the first index and manifest stay, and the
//! second's packs are garbage for the next prune.
//!
//! # Few requests
//!
//! A push learns where the remote keeps blobs from indexes it has seen: the local copies of
//! indexes this machine pushed or pulled ([`known`]), and for a snapshot the indexes of the
//! remote's newest snapshots of the same key. Those blobs do not travel again, so a snapshot
//! after a one-line edit uploads a pack or two. Transfers run in parallel, a bounded number at a
//! time; the S3 backend retries what the server calls temporary (429, 5xx, dropped connections)
//! with jittered backoff, and gives up on a transfer whose bytes stop flowing ([`s3`]).
//!
//! The storage is behind [`Backend`]: S3-compatible stores through OpenDAL ([`s3::S3Backend`]),
//! and a shared directory with the same semantics ([`fs::FsBackend`]); GCS, Azure or the GitHub
//! Actions cache can follow.

pub mod config;
pub mod fs;
pub mod known;
pub mod pack;
pub mod prune;
pub mod restore;
pub mod s3;
pub mod sync;
pub mod text;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

pub use config::{Mode, Settings};
pub use prune::{Pruned, RemoteSnapshot, list_snapshots, prune};
pub use restore::restore;
pub use sync::{Moved, fetch_blobs, pull, push, push_snapshot};

use crate::store::{self, BlobKey};

/// First line of the `velo-remote` marker.
const MARKER: &[u8] = b"velo remote 2\n";

/// zstd level for uploads: fast, and most of a target/ compresses well anyway.
const LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no remote: pass --remote URL, set VELO_REMOTE, or write [remote] url = \"…\" in {} \
         (s3://BUCKET/PREFIX, or file:///shared/dir)",
        .0.display()
    )]
    NoRemote(PathBuf),
    #[error("remote {0:?}: unsupported URL (use s3://BUCKET/PREFIX or file:///ABSOLUTE/DIR)")]
    BadUrl(String),
    #[error("{what}={value:?}: use read-only or read-write")]
    BadMode { what: String, value: String },
    #[error("{}: {message}", .path.display())]
    Config { path: PathBuf, message: String },
    #[error("remote {url}: {op} {key}")]
    Io {
        url: String,
        op: &'static str,
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("remote {0} is read-only here (VELO_REMOTE_MODE=read-only): nothing was written")]
    ReadOnly(String),
    #[error("remote {url} holds no manifest {id}: push it first (velo push MANIFEST)")]
    NoManifest { url: String, id: String },
    #[error(
        "remote {url}: manifest {id} is corrupt there (its bytes hash to {actual}); nothing was pulled"
    )]
    CorruptManifest {
        url: String,
        id: String,
        actual: String,
    },
    #[error(
        "remote {url} lacks {count} blob(s) of manifest {id} (for example {first}), or holds them corrupt: \
         nothing was written; push the tree again from a machine that has it"
    )]
    MissingBlobs {
        url: String,
        id: String,
        count: usize,
        first: String,
    },
    #[error(
        "blob {blob} is missing or corrupt in the local store (velo status --verify): nothing unsound is uploaded"
    )]
    Unsound { blob: String },
    #[error("{0} panicked")]
    Panicked(&'static str),
    #[error("{0:?} is not a manifest id (64 hex digits)")]
    BadId(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ReadError),
    #[error(transparent)]
    Snapshot(#[from] Box<crate::cache::Error>),
    #[error("{op} {}", .path.display())]
    Local {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An object found by [`Backend::list_all`].
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its key, from the remote's root (`packs/ab…`).
    pub key: String,
    pub modified: SystemTime,
    pub size: u64,
}

/// Object storage, as the remote tier needs it: whole objects by key.
pub trait Backend: Send + Sync {
    /// The URL, for messages.
    fn url(&self) -> &str;
    /// The object at `key`, or `None` if there is none.
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// Whether an object exists at `key`.
    fn exists(&self, key: &str) -> io::Result<bool>;
    /// Writes `bytes` at `key`. For content-addressed objects (packs, blobs), whose every
    /// version under one name is the same.
    fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()>;
    /// Writes `bytes` at `key` unless an object is already there; `false` if one was. Readers
    /// see the whole object or none.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool>;
    /// The names of the objects directly under `prefix` (a "directory" ending in `/`).
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;
    /// Every object below `prefix`, at any depth, with its time.
    fn list_all(&self, prefix: &str) -> io::Result<Vec<Listed>>;
    fn delete(&self, key: &str) -> io::Result<()>;
    /// Several objects at once: in parallel, a bounded number at a time, where the storage is
    /// across a network. In the order of `keys`.
    fn get_many(&self, keys: &[String]) -> Vec<io::Result<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Several [`put`](Backend::put)s at once, as [`get_many`](Backend::get_many).
    fn put_many(&self, objects: Vec<(String, Vec<u8>)>) -> Vec<io::Result<()>> {
        objects.into_iter().map(|(k, b)| self.put(&k, b)).collect()
    }
    /// Whether this remote refuses writes (`VELO_REMOTE_MODE=read-only`).
    fn read_only(&self) -> bool {
        false
    }
    /// How many requests this process has sent so far.
    fn requests(&self) -> u64 {
        0
    }
}

/// A remote opened with `VELO_REMOTE_MODE=read-only`: reads pass through, and no write ever
/// reaches the storage (for pull requests, which must not be able to change what main restores).
struct ReadOnly(Box<dyn Backend>);

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the remote is read-only here (VELO_REMOTE_MODE=read-only)",
    )
}

impl Backend for ReadOnly {
    fn url(&self) -> &str {
        self.0.url()
    }
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn exists(&self, key: &str) -> io::Result<bool> {
        self.0.exists(key)
    }
    fn put(&self, _: &str, _: Vec<u8>) -> io::Result<()> {
        Err(refused())
    }
    fn put_if_absent(&self, _: &str, _: &[u8]) -> io::Result<bool> {
        Err(refused())
    }
    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.0.list(prefix)
    }
    fn list_all(&self, prefix: &str) -> io::Result<Vec<Listed>> {
        self.0.list_all(prefix)
    }
    fn delete(&self, _: &str) -> io::Result<()> {
        Err(refused())
    }
    fn get_many(&self, keys: &[String]) -> Vec<io::Result<Option<Vec<u8>>>> {
        self.0.get_many(keys)
    }
    fn read_only(&self) -> bool {
        true
    }
}

/// Counts the requests that reach the storage (`velo cargo`'s last line, `bench remote`).
struct Counted {
    inner: Box<dyn Backend>,
    requests: AtomicU64,
}

impl Counted {
    fn count(&self, n: usize) {
        self.requests.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Backend for Counted {
    fn url(&self) -> &str {
        self.inner.url()
    }
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.count(1);
        self.inner.get(key)
    }
    fn exists(&self, key: &str) -> io::Result<bool> {
        self.count(1);
        self.inner.exists(key)
    }
    fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        self.count(1);
        self.inner.put(key, bytes)
    }
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        self.count(1);
        self.inner.put_if_absent(key, bytes)
    }
    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.count(1);
        self.inner.list(prefix)
    }
    fn list_all(&self, prefix: &str) -> io::Result<Vec<Listed>> {
        self.count(1);
        self.inner.list_all(prefix)
    }
    fn delete(&self, key: &str) -> io::Result<()> {
        self.count(1);
        self.inner.delete(key)
    }
    fn get_many(&self, keys: &[String]) -> Vec<io::Result<Option<Vec<u8>>>> {
        self.count(keys.len());
        self.inner.get_many(keys)
    }
    fn put_many(&self, objects: Vec<(String, Vec<u8>)>) -> Vec<io::Result<()>> {
        self.count(objects.len());
        self.inner.put_many(objects)
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// The remote a command that needs one names: `flag` (`--remote`), else `$VELO_REMOTE`, else
/// the config file ([`config::required`]), opened.
pub fn open_required(flag: Option<&str>) -> Result<Box<dyn Backend>, Error> {
    open(&config::required(flag.filter(|f| !f.is_empty()))?)
}

/// The remote `settings` name: read-only when their mode says so; every request counted.
pub fn open(settings: &Settings) -> Result<Box<dyn Backend>, Error> {
    let url = &settings.url;
    let backend: Box<dyn Backend> = if let Some(dir) = url.strip_prefix("file://")
        && dir.starts_with('/')
    {
        Box::new(fs::FsBackend::new(url, dir))
    } else if let Some(rest) = url.strip_prefix("s3://") {
        Box::new(s3::S3Backend::new(url, rest).map_err(|source| Error::Io {
            url: url.clone(),
            op: "opening",
            key: String::new(),
            source,
        })?)
    } else {
        return Err(Error::BadUrl(url.clone()));
    };
    let backend = match settings.mode {
        Mode::ReadOnly => Box::new(ReadOnly(backend)),
        Mode::ReadWrite => backend,
    };
    Ok(Box::new(Counted {
        inner: backend,
        requests: AtomicU64::new(0),
    }))
}

fn blob_key(key: &BlobKey) -> String {
    let name = key.file_name();
    format!("blobs/{}/{name}", &name[..2])
}

fn manifest_key(id: &str) -> String {
    format!("manifests/{id}")
}

fn index_key(id: &str) -> String {
    format!("indexes/{id}")
}

fn pack_key(name: &str) -> String {
    format!("packs/{name}")
}

fn io(remote: &dyn Backend, op: &'static str, key: &str) -> impl FnOnce(io::Error) -> Error {
    let (url, key) = (remote.url().to_owned(), key.to_owned());
    move |source| Error::Io {
        url,
        op,
        key,
        source,
    }
}

/// Whether `id` is a manifest id: 64 hex digits.
fn is_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
