//! The remote tier: blobs and manifests shared between machines through object storage.
//!
//! # Object layout
//!
//! ```text
//! <prefix>/velo-remote        marker and format version ("velo remote 1")
//! <prefix>/blobs/ab/ab12…ef   a blob, zstd-compressed; `.x` for the executable variant
//! <prefix>/manifests/<id>     a manifest's bytes (its id is their BLAKE3)
//! <prefix>/snapshots/<key>/<id>.<hash>
//!                             a `velo cache` snapshot record of content key <key> (JSON;
//!                             <hash> is its BLAKE3), written after its manifest and blobs
//! ```
//!
//! Every object is named by the BLAKE3 of its *uncompressed* content, so what a machine pulls is
//! checked against its name before anything enters the local store: a blob is decompressed with
//! a size cap (the size the manifest declares), hashed and compared with its key; a manifest is
//! hashed and compared with the id asked for. A mismatch is a miss and a warning, never a wrong
//! file. Publishing is ordered: every blob first, the manifest last, with a create-if-absent
//! write, so a reader never finds a manifest whose blobs are not all there (unless a prune took
//! them, which a pull reports as missing blobs).
//!
//! The storage is behind [`Backend`]: S3-compatible stores through OpenDAL ([`s3::S3Backend`]),
//! and a shared directory with the same semantics ([`fs::FsBackend`]); GCS, Azure or the GitHub
//! Actions cache can follow.
//!
//! Not yet: packs of small files, parallel transfers and retries, prune, a read-only mode.
//! docs/remote.md says what works.

pub mod fs;
pub mod s3;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::manifest::{Kind, Manifest};
use crate::store::{self, BlobKey, Store};

/// First line of the `velo-remote` marker.
const MARKER: &[u8] = b"velo remote 1\n";

/// zstd level for uploads: fast, and most of a target/ compresses well anyway.
const LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no remote: pass --remote URL or set VELO_REMOTE (s3://BUCKET/PREFIX, or file:///shared/dir)"
    )]
    NoRemote,
    #[error("remote {0:?}: unsupported URL (use s3://BUCKET/PREFIX or file:///ABSOLUTE/DIR)")]
    BadUrl(String),
    #[error("remote {url}: {op} {key}: {source}")]
    Io {
        url: String,
        op: &'static str,
        key: String,
        source: std::io::Error,
    },
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
    #[error("{0}")]
    Cache(String),
    #[error("{0:?} is not a manifest id (64 hex digits)")]
    BadId(String),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ReadError),
    #[error("writing {}: {source}", .path.display())]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Object storage, as the remote tier needs it: whole-object reads and writes by key.
pub trait Backend: Send + Sync {
    /// The URL, for messages.
    fn url(&self) -> &str;
    /// The object at `key`, or `None` if there is none.
    fn get(&self, key: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Whether an object exists at `key`.
    fn exists(&self, key: &str) -> std::io::Result<bool>;
    /// Writes `bytes` at `key` unless an object is already there; `false` if one was. Readers
    /// see the whole object or none.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> std::io::Result<bool>;
    /// The names of the objects directly under `prefix` (a "directory" ending in `/`).
    fn list(&self, prefix: &str) -> std::io::Result<Vec<String>>;
    /// Whether this remote refuses writes (`VELO_REMOTE_MODE=read-only`).
    fn read_only(&self) -> bool {
        false
    }
}

/// A remote opened with `VELO_REMOTE_MODE=read-only`: reads pass through, and no write ever
/// reaches the storage (for pull requests, which must not be able to change what main restores).
struct ReadOnly(Box<dyn Backend>);

impl Backend for ReadOnly {
    fn url(&self) -> &str {
        self.0.url()
    }
    fn get(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn exists(&self, key: &str) -> std::io::Result<bool> {
        self.0.exists(key)
    }
    fn put_if_absent(&self, _: &str, _: &[u8]) -> std::io::Result<bool> {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the remote is read-only here (VELO_REMOTE_MODE=read-only)",
        ))
    }
    fn list(&self, prefix: &str) -> std::io::Result<Vec<String>> {
        self.0.list(prefix)
    }
    fn read_only(&self) -> bool {
        true
    }
}

/// The remote at `url` (`--remote`), else `$VELO_REMOTE`; read-only when
/// `VELO_REMOTE_MODE=read-only`.
pub fn open(url: Option<&str>) -> Result<Box<dyn Backend>, Error> {
    let backend = open_backend(url)?;
    match std::env::var("VELO_REMOTE_MODE").as_deref() {
        Ok("read-only") => Ok(Box::new(ReadOnly(backend))),
        Ok("read-write") | Ok("") | Err(_) => Ok(backend),
        Ok(other) => Err(Error::Cache(format!(
            "VELO_REMOTE_MODE={other:?}: use read-only or read-write"
        ))),
    }
}

fn open_backend(url: Option<&str>) -> Result<Box<dyn Backend>, Error> {
    let url = match url {
        Some(u) => u.to_owned(),
        None => std::env::var("VELO_REMOTE")
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or(Error::NoRemote)?,
    };
    if let Some(dir) = url.strip_prefix("file://")
        && dir.starts_with('/')
    {
        return Ok(Box::new(fs::FsBackend::new(&url, dir)));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        return s3::S3Backend::new(&url, rest)
            .map(|b| Box::new(b) as Box<dyn Backend>)
            .map_err(|source| Error::Io {
                url: url.clone(),
                op: "opening",
                key: String::new(),
                source,
            });
    }
    Err(Error::BadUrl(url))
}

fn blob_key(key: &BlobKey) -> String {
    let name = key.file_name();
    format!("blobs/{}/{name}", &name[..2])
}

fn manifest_key(id: &str) -> String {
    format!("manifests/{id}")
}

fn io(remote: &dyn Backend, op: &'static str, key: &str) -> impl FnOnce(std::io::Error) -> Error {
    let (url, key) = (remote.url().to_owned(), key.to_owned());
    move |source| Error::Io {
        url,
        op,
        key,
        source,
    }
}

/// What a push or a pull moved.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Moved {
    pub manifest_id: String,
    /// Blobs the manifest names (each once).
    pub blobs: u64,
    /// Blobs that travelled, and their bytes before and after compression.
    pub transferred: u64,
    pub bytes: u64,
    pub compressed_bytes: u64,
}

/// Uploads what `remote` lacks of `manifest` (its blobs from `store`), then the manifest.
pub fn push(store: &Store, remote: &dyn Backend, manifest: &Path) -> Result<Moved, Error> {
    if remote.read_only() {
        return Err(Error::Cache(format!(
            "remote {} is read-only here (VELO_REMOTE_MODE=read-only): nothing is pushed",
            remote.url()
        )));
    }
    let bytes = std::fs::read(manifest).map_err(|source| Error::Output {
        path: manifest.to_owned(),
        source,
    })?;
    let tree = Manifest::read(manifest)?;
    let id = tree.id().to_string();
    remote
        .put_if_absent("velo-remote", MARKER)
        .map_err(io(remote, "writing", "velo-remote"))?;
    let mut moved = Moved {
        manifest_id: id.clone(),
        ..Moved::default()
    };
    for (key, size) in blobs_of(&tree) {
        moved.blobs += 1;
        let name = blob_key(&key);
        if remote
            .exists(&name)
            .map_err(io(remote, "checking", &name))?
        {
            continue;
        }
        if store.ensure(&key, size)? != store::Fitness::Sound {
            // Never upload what the store cannot vouch for.
            return Err(Error::Store(store::Error::io(
                "reading",
                store.blob_path(&key),
                std::io::Error::other(
                    "the blob is missing or corrupt in the local store (velo status --verify)",
                ),
            )));
        }
        let path = store.blob_path(&key);
        let data = std::fs::read(&path).map_err(|e| store::Error::io("reading", &path, e))?;
        let packed =
            zstd::bulk::compress(&data, LEVEL).map_err(io(remote, "compressing", &name))?;
        if remote
            .put_if_absent(&name, &packed)
            .map_err(io(remote, "uploading", &name))?
        {
            moved.transferred += 1;
            moved.bytes += data.len() as u64;
            moved.compressed_bytes += packed.len() as u64;
        }
    }
    // Last: a reader that finds the manifest finds every blob.
    let key = manifest_key(&id);
    remote
        .put_if_absent(&key, &bytes)
        .map_err(io(remote, "uploading", &key))?;
    Ok(moved)
}

/// Brings manifest `id` from `remote` into `output` and the blobs the local store lacks into
/// `store`; every object is checked against its name first.
pub fn pull(store: &Store, remote: &dyn Backend, id: &str, output: &Path) -> Result<Moved, Error> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadId(id.to_owned()));
    }
    let key = manifest_key(id);
    let bytes = remote
        .get(&key)
        .map_err(io(remote, "downloading", &key))?
        .ok_or_else(|| Error::NoManifest {
            url: remote.url().to_owned(),
            id: id.to_owned(),
        })?;
    let actual = blake3::hash(&bytes).to_hex().to_string();
    if actual != id.to_ascii_lowercase() {
        return Err(Error::CorruptManifest {
            url: remote.url().to_owned(),
            id: id.to_owned(),
            actual,
        });
    }
    let tree = Manifest::decode(&bytes).map_err(|e| Error::CorruptManifest {
        url: remote.url().to_owned(),
        id: id.to_owned(),
        actual: format!("{actual}, and it does not decode: {e}"),
    })?;
    // fetch_blobs made the blobs durable: the manifest may name them now.
    let moved = fetch_blobs(store, remote, &tree, id)?;
    store::write_atomic(output, &bytes, true)?;
    store.register_root(output)?;
    Ok(moved)
}

/// Brings every blob of `tree` (manifest `id`, for messages) that `store` lacks, or holds
/// unsound, from `remote`, each checked against its key first; [`Error::MissingBlobs`] if any
/// could not be had. Blobs already sound cost one `lstat` each.
pub fn fetch_blobs(
    store: &Store,
    remote: &dyn Backend,
    tree: &Manifest,
    id: &str,
) -> Result<Moved, Error> {
    let _lock = store.lock(store::LockMode::Shared)?;
    let mut moved = Moved {
        manifest_id: id.to_owned(),
        ..Moved::default()
    };
    let mut missing = Vec::new();
    for (key, size) in blobs_of(tree) {
        moved.blobs += 1;
        if store.ensure(&key, size)? == store::Fitness::Sound {
            continue;
        }
        let name = blob_key(&key);
        let Some(packed) = remote
            .get(&name)
            .map_err(io(remote, "downloading", &name))?
        else {
            missing.push(name);
            continue;
        };
        match unpack(&packed, size) {
            Some(data) if blake3::hash(&data) == key.hash => {
                store.insert_bytes(key.hash, key.exec, &data)?;
                moved.transferred += 1;
                moved.bytes += data.len() as u64;
                moved.compressed_bytes += packed.len() as u64;
            }
            _ => {
                tracing::warn!(object = %name, remote = remote.url(), "a remote blob does not match its name: not used");
                eprintln!(
                    "velo: warning: {} on {} does not match its name; not used",
                    name,
                    remote.url()
                );
                missing.push(name);
            }
        }
    }
    if let Some(first) = missing.first() {
        return Err(Error::MissingBlobs {
            url: remote.url().to_owned(),
            id: id.to_owned(),
            count: missing.len(),
            first: first.clone(),
        });
    }
    store.sync()?;
    Ok(moved)
}

/// Pushes a `velo cache` snapshot: its manifest and blobs ([`push`]), then its record, last.
pub fn push_snapshot(
    store: &Store,
    remote: &dyn Backend,
    stored: &crate::cache::snapshot::Stored,
) -> Result<Moved, Error> {
    let moved = push(store, remote, &stored.manifest)?;
    let record = std::fs::read(&stored.record).map_err(|source| Error::Output {
        path: stored.record.clone(),
        source,
    })?;
    let key = format!(
        "snapshots/{}/{}.{}",
        stored.snapshot.key,
        stored.snapshot.id,
        blake3::hash(&record).to_hex()
    );
    remote
        .put_if_absent(&key, &record)
        .map_err(io(remote, "uploading", &key))?;
    Ok(moved)
}

/// Fetches the newest snapshot of content key `key` the remote holds (record, manifest and the
/// blobs the store lacks) into the local store, where `velo cache restore` finds it. `None` when
/// the remote has no snapshot of the key. A record whose bytes do not match its name is skipped
/// with a warning.
pub fn fetch_snapshot(
    store: &Store,
    remote: &dyn Backend,
    key: &str,
) -> Result<Option<(String, Moved)>, Error> {
    let prefix = format!("snapshots/{key}/");
    let mut names = remote
        .list(&prefix)
        .map_err(io(remote, "listing", &prefix))?;
    // Ids sort by time; the newest first.
    names.sort_unstable_by(|a, b| b.cmp(a));
    for name in names {
        let Some((id, hash)) = name.rsplit_once('.') else {
            continue;
        };
        let object = format!("{prefix}{name}");
        let Some(record) = remote
            .get(&object)
            .map_err(io(remote, "downloading", &object))?
        else {
            continue;
        };
        let snapshot = match serde_json::from_slice::<crate::cache::snapshot::Snapshot>(&record) {
            Ok(s)
                if blake3::hash(&record).to_hex().as_str() == hash
                    && s.id == id
                    && s.key == key =>
            {
                s
            }
            _ => {
                eprintln!(
                    "velo: warning: snapshot record {object} on {} does not match its name; not used",
                    remote.url()
                );
                continue;
            }
        };
        let dir = store.snapshots_dir().join(key);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Output {
            path: dir.clone(),
            source,
        })?;
        let manifest = dir.join(format!("{id}.velo"));
        let moved = pull(store, remote, &snapshot.manifest, &manifest)?;
        store::write_atomic(&dir.join(format!("{id}.json")), &record, true)?;
        return Ok(Some((id.to_owned(), moved)));
    }
    Ok(None)
}

/// `packed` decompressed, if it holds exactly `size` bytes (never more are decompressed).
fn unpack(packed: &[u8], size: u64) -> Option<Vec<u8>> {
    let mut decoder = zstd::stream::read::Decoder::new(packed).ok()?;
    let mut out = Vec::with_capacity(usize::try_from(size).ok()?.min(64 << 20));
    // One byte more than declared tells "too long" from "exactly".
    (&mut decoder).take(size + 1).read_to_end(&mut out).ok()?;
    (out.len() as u64 == size).then_some(out)
}

/// Each blob of `tree` once, with its size.
fn blobs_of(tree: &Manifest) -> Vec<(BlobKey, u64)> {
    let mut seen = BTreeSet::new();
    tree.entries()
        .iter()
        .filter_map(|e| match e.kind {
            Kind::File { size, .. } => e.blob().map(|b| (b, size)),
            _ => None,
        })
        .filter(|(b, _)| seen.insert(*b))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unpacking_stops_at_the_declared_size() {
        let data = vec![7u8; 10_000];
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        assert_eq!(super::unpack(&packed, 10_000).as_deref(), Some(&data[..]));
        assert_eq!(super::unpack(&packed, 100), None, "longer than declared");
        assert_eq!(
            super::unpack(&packed, 20_000),
            None,
            "shorter than declared"
        );
        assert_eq!(super::unpack(b"not zstd", 8), None);
    }
}
