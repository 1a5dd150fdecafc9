//! Moving trees and snapshots between a local store and a remote: push uploads what the remote
//! lacks (small blobs in packs, large ones alone), then the index, then the manifest; pull
//! brings the manifest and then only the blobs the local store lacks, each checked against its
//! key before it is stored.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use rayon::prelude::*;

use super::known::{self, Known};
use super::pack::{self, Index};
use super::{
    Backend, Error, LEVEL, MARKER, blob_key, index_key, io, is_id, manifest_key, pack_key,
};
use crate::manifest::{Kind, Manifest};
use crate::store::{self, BlobKey, Store};

/// Objects queued before they are sent together (in parallel), and their most bytes.
const BATCH_OBJECTS: usize = 8;
const BATCH_BYTES: usize = 192 << 20;

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
    /// Packs that travelled.
    pub packs: u64,
    /// Requests sent to the storage.
    pub requests: u64,
}

/// Uploads what `remote` lacks of `manifest` (its blobs from `store`), then its index and the
/// manifest itself.
pub fn push(store: &Store, remote: &dyn Backend, manifest: &Path) -> Result<Moved, Error> {
    if remote.read_only() {
        return Err(Error::ReadOnly(remote.url().to_owned()));
    }
    let bytes = std::fs::read(manifest).map_err(|source| Error::Local {
        op: "reading",
        path: manifest.to_owned(),
        source,
    })?;
    let tree = Manifest::read(manifest)?;
    let known = Known::load(store, remote.url());
    push_tree(store, remote, &tree, &bytes, known)
}

/// Uploads queued objects together.
struct Uploads<'a> {
    remote: &'a dyn Backend,
    queue: Vec<(String, Vec<u8>)>,
    bytes: usize,
}

impl Uploads<'_> {
    fn add(&mut self, key: String, bytes: Vec<u8>) -> Result<(), Error> {
        self.bytes += bytes.len();
        self.queue.push((key, bytes));
        if self.queue.len() >= BATCH_OBJECTS || self.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        let queue = std::mem::take(&mut self.queue);
        self.bytes = 0;
        let keys: Vec<String> = queue.iter().map(|(k, _)| k.clone()).collect();
        for (key, result) in keys.iter().zip(self.remote.put_many(queue)) {
            result.map_err(io(self.remote, "uploading", key))?;
        }
        Ok(())
    }
}

/// A blob of the store, read only if the store vouches for it.
fn read_sound(store: &Store, key: &BlobKey, size: u64) -> Result<Vec<u8>, Error> {
    if store.ensure(key, size)? != store::Fitness::Sound {
        return Err(Error::Unsound {
            blob: key.file_name(),
        });
    }
    let path = store.blob_path(key);
    std::fs::read(&path).map_err(|e| Error::Store(store::Error::io("reading", &path, e)))
}

fn compress(remote: &dyn Backend, key: &BlobKey, data: &[u8]) -> Result<Vec<u8>, Error> {
    zstd::bulk::compress(data, LEVEL).map_err(io(remote, "compressing", &key.file_name()))
}

fn push_tree(
    store: &Store,
    remote: &dyn Backend,
    tree: &Manifest,
    manifest_bytes: &[u8],
    mut known: Known,
) -> Result<Moved, Error> {
    let started = remote.requests();
    let id = tree.id().to_string();
    let blobs = blobs_of(tree);
    let mut moved = Moved {
        manifest_id: id.clone(),
        blobs: blobs.len() as u64,
        ..Moved::default()
    };
    remote
        .put_if_absent("velo-remote", MARKER)
        .map_err(io(remote, "writing", "velo-remote"))?;
    // The manifest is written last: if it is there, so is everything it names.
    let manifest = manifest_key(&id);
    if remote
        .exists(&manifest)
        .map_err(io(remote, "checking", &manifest))?
    {
        moved.requests = remote.requests() - started;
        return Ok(moved);
    }

    // Packs an index of this machine's places blobs in: still there? One request each.
    let used: BTreeSet<String> = blobs
        .iter()
        .filter_map(|(key, _)| known.blobs.get(&key.file_name()).cloned().flatten())
        .collect();
    for name in used {
        let object = pack_key(&name);
        if !remote
            .exists(&object)
            .map_err(io(remote, "checking", &object))?
        {
            known.forget_pack(&name);
        }
    }

    let mut index = Index::default();
    let mut uploads = Uploads {
        remote,
        queue: Vec::new(),
        bytes: 0,
    };
    let mut small = Vec::new();
    for (key, size) in blobs {
        let name = key.file_name();
        if let Some(Some(pack)) = known.blobs.get(&name)
            && let Some(frames) = known.packs.get(pack)
        {
            index
                .packs
                .entry(pack.clone())
                .or_insert_with(|| frames.clone());
            continue;
        }
        if size < pack::ALONE {
            small.push((key, size));
            continue;
        }
        // Large: alone, unless the remote has it.
        index.alone.push(name);
        let object = blob_key(&key);
        if remote
            .exists(&object)
            .map_err(io(remote, "checking", &object))?
        {
            continue;
        }
        let data = read_sound(store, &key, size)?;
        let packed = compress(remote, &key, &data)?;
        moved.transferred += 1;
        moved.bytes += size;
        moved.compressed_bytes += packed.len() as u64;
        uploads.add(object, packed)?;
    }

    // Small: in packs, in the manifest's order (files of one crate sit together), each pack's
    // blobs read and compressed on every core.
    for group in groups(&small, pack::TARGET) {
        let frames = group
            .par_iter()
            .map(|(key, size)| {
                let data = read_sound(store, key, *size)?;
                compress(remote, key, &data)
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let mut builder = pack::Builder::default();
        for ((key, size), frame) in group.iter().zip(&frames) {
            builder.add(key, *size, frame);
        }
        moved.transferred += group.len() as u64;
        moved.bytes += builder.size();
        let (name, frames, bytes) = builder.finish();
        moved.compressed_bytes += bytes.len() as u64;
        moved.packs += 1;
        index.packs.insert(name.clone(), frames);
        uploads.add(pack_key(&name), bytes)?;
    }
    uploads.flush()?;

    // Then the index, then the manifest: a reader that finds the manifest finds the rest. A
    // racing pusher's index, if it won, names its own complete set.
    let encoded = index.encode();
    let key = index_key(&id);
    remote
        .put_if_absent(&key, &encoded)
        .map_err(io(remote, "uploading", &key))?;
    remote
        .put_if_absent(&manifest, manifest_bytes)
        .map_err(io(remote, "uploading", &manifest))?;
    known::remember(store, remote.url(), &id, &encoded);
    moved.requests = remote.requests() - started;
    Ok(moved)
}

/// `blobs` cut into runs of about `target` bytes.
fn groups(blobs: &[(BlobKey, u64)], target: u64) -> Vec<&[(BlobKey, u64)]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, (_, s)) in blobs.iter().enumerate() {
        size += s;
        if size >= target {
            out.push(&blobs[start..=i]);
            (start, size) = (i + 1, 0);
        }
    }
    if start < blobs.len() {
        out.push(&blobs[start..]);
    }
    out
}

/// Brings manifest `id` from `remote` into `output` and the blobs the local store lacks into
/// `store`; every object is checked against its name first.
pub fn pull(store: &Store, remote: &dyn Backend, id: &str, output: &Path) -> Result<Moved, Error> {
    let started = remote.requests();
    let (bytes, tree) = get_manifest(remote, id)?;
    // fetch_blobs made the blobs durable: the manifest may name them now.
    let mut moved = fetch_blobs(store, remote, &tree, id)?;
    store::write_atomic(output, &bytes, true)?;
    store.register_root(output)?;
    moved.requests = remote.requests() - started;
    Ok(moved)
}

/// Manifest `id`'s bytes from `remote`, checked against the id, and decoded.
pub fn get_manifest(remote: &dyn Backend, id: &str) -> Result<(Vec<u8>, Manifest), Error> {
    if !is_id(id) {
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
    Ok((bytes, tree))
}

pub(super) fn warn_unused(what: &str, remote: &dyn Backend) {
    tracing::warn!(
        object = what,
        remote = remote.url(),
        "a remote object does not match its name: not used"
    );
    eprintln!(
        "velo: warning: {what} on {} does not match its name; not used",
        remote.url()
    );
}

/// Brings every blob of `tree` (manifest `id`) that `store` lacks, or holds unsound, from
/// `remote`: from the packs its index names, then alone; each checked against its key first.
/// [`Error::MissingBlobs`] if any could not be had. Blobs already sound cost one `lstat` each,
/// and a tree the store holds whole costs no request.
pub fn fetch_blobs(
    store: &Store,
    remote: &dyn Backend,
    tree: &Manifest,
    id: &str,
) -> Result<Moved, Error> {
    let _lock = store.lock(store::LockMode::Shared)?;
    let all = blobs_of(tree);
    let mut needed = Vec::new();
    for &(key, size) in &all {
        if store.ensure(&key, size)? != store::Fitness::Sound {
            needed.push((key, size));
        }
    }
    let take = |k: &BlobKey, data: &[u8]| store.insert_bytes(k.hash, k.exec, data).map(drop);
    let mut fetched = fetch(store, remote, id, needed, &take)?.map_err(Error::Store)?;
    fetched.moved.blobs = all.len() as u64;
    if let Some(first) = fetched.missing.first() {
        return Err(Error::MissingBlobs {
            url: remote.url().to_owned(),
            id: id.to_owned(),
            count: fetched.missing.len(),
            first: first.clone(),
        });
    }
    store.sync()?;
    Ok(fetched.moved)
}

/// What [`fetch`] brought, and the objects it could not have (absent, or failing their check).
#[derive(Debug, Default)]
pub struct Fetched {
    pub moved: Moved,
    pub missing: Vec<String>,
}

/// Hands each of `needed` (blobs of manifest `id`, with their sizes) to `take`, once, after
/// checking it against its key: from the packs the remote's index of `id` names, then alone.
/// The outer error is the remote's; the inner one is the first that `take` returned, which
/// stops the fetch. The index is remembered for later pushes ([`known`]) once all came.
pub fn fetch<E: Send>(
    store: &Store,
    remote: &dyn Backend,
    id: &str,
    needed: Vec<(BlobKey, u64)>,
    take: &pack::Take<'_, E>,
) -> Result<Result<Fetched, E>, Error> {
    let started = remote.requests();
    let mut moved = Moved {
        manifest_id: id.to_owned(),
        blobs: needed.len() as u64,
        ..Moved::default()
    };
    let needed: HashMap<String, (BlobKey, u64)> = needed
        .into_iter()
        .map(|(key, size)| (key.file_name(), (key, size)))
        .collect();
    if needed.is_empty() {
        return Ok(Ok(Fetched {
            moved,
            missing: Vec::new(),
        }));
    }
    let key = index_key(id);
    let index_bytes = remote.get(&key).map_err(io(remote, "downloading", &key))?;
    let index = match index_bytes.as_deref().map(Index::decode) {
        Some(Some(index)) => index,
        Some(None) => {
            warn_unused(&key, remote);
            Index::default()
        }
        None => Index::default(),
    };
    let packs: Vec<&String> = index
        .packs
        .iter()
        .filter(|(_, frames)| frames.iter().any(|f| needed.contains_key(&f.blob)))
        .map(|(name, _)| name)
        .collect();
    // Downloads here, checks and hand-overs on another thread: the next packs travel while the
    // last ones are decompressed, hashed and taken.
    let index = &index;
    let (downloaded, worked) = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<(&String, String, Vec<u8>)>(BATCH_OBJECTS);
        let worker = scope.spawn(move || -> Result<_, E> {
            let mut needed = needed;
            let mut moved = Moved::default();
            for (name, object, bytes) in rx {
                moved.compressed_bytes += bytes.len() as u64;
                let frames = &index.packs[name];
                let wanted = |k: &BlobKey| needed.contains_key(&k.file_name());
                match pack::unpack(name, frames, &bytes, &wanted, take) {
                    Ok(taken) => {
                        moved.packs += 1;
                        for key in taken {
                            if let Some((_, size)) = needed.remove(&key.file_name()) {
                                moved.transferred += 1;
                                moved.bytes += size;
                            }
                        }
                        // A wanted frame the pack did not give failed its check.
                        for f in frames {
                            if needed.contains_key(&f.blob) {
                                warn_unused(&format!("blob {} in {object}", f.blob), remote);
                            }
                        }
                    }
                    Err(pack::Bad::Take(e)) => return Err(e),
                    Err(pack::Bad::Name) => warn_unused(&object, remote),
                }
            }
            Ok((needed, moved))
        });
        let mut downloaded = Ok(());
        'batches: for batch in packs.chunks(BATCH_OBJECTS) {
            let keys: Vec<String> = batch.iter().map(|n| pack_key(n)).collect();
            let got = remote.get_many(&keys);
            for ((name, object), got) in batch.iter().zip(keys).zip(got) {
                match got {
                    // Gone (a prune): its blobs are looked for alone, then missing.
                    Ok(None) => {}
                    Ok(Some(bytes)) => {
                        if tx.send((name, object, bytes)).is_err() {
                            break 'batches; // the worker stopped: its error says why
                        }
                    }
                    Err(e) => {
                        downloaded = Err(io(remote, "downloading", &object)(e));
                        break 'batches;
                    }
                }
            }
        }
        drop(tx);
        (downloaded, worker.join())
    });
    let (needed, unpacked) = match worked {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Ok(Err(e)),
        Err(_) => return Err(Error::Panicked("checking the downloaded packs")),
    };
    downloaded?;
    moved.packs += unpacked.packs;
    moved.transferred += unpacked.transferred;
    moved.bytes += unpacked.bytes;
    moved.compressed_bytes += unpacked.compressed_bytes;
    // What no pack gave: alone (large blobs, and a pack's blob that failed its check).
    let rest: Vec<(BlobKey, u64)> = needed.values().copied().collect();
    let mut missing = Vec::new();
    for batch in rest.chunks(BATCH_OBJECTS) {
        let keys: Vec<String> = batch.iter().map(|(k, _)| blob_key(k)).collect();
        for (((key, size), object), got) in batch.iter().zip(&keys).zip(remote.get_many(&keys)) {
            let Some(packed) = got.map_err(io(remote, "downloading", object))? else {
                missing.push(object.clone());
                continue;
            };
            match pack::unpack_exactly(&packed, *size) {
                Some(data) if blake3::hash(&data) == key.hash => {
                    if let Err(e) = take(key, &data) {
                        return Ok(Err(e));
                    }
                    moved.transferred += 1;
                    moved.bytes += data.len() as u64;
                    moved.compressed_bytes += packed.len() as u64;
                }
                _ => {
                    warn_unused(object, remote);
                    missing.push(object.clone());
                }
            }
        }
    }
    if missing.is_empty()
        && let Some(bytes) = index_bytes
    {
        known::remember(store, remote.url(), id, &bytes);
    }
    moved.requests = remote.requests() - started;
    Ok(Ok(Fetched { moved, missing }))
}

/// The remote's snapshot records of content key `key`, newest first: (object, id, hash).
pub(super) fn records(
    remote: &dyn Backend,
    key: &str,
) -> Result<Vec<(String, String, String)>, Error> {
    let prefix = format!("snapshots/{key}/");
    let mut names = remote
        .list(&prefix)
        .map_err(io(remote, "listing", &prefix))?;
    // Ids sort by time; the newest first.
    names.sort_unstable_by(|a, b| b.cmp(a));
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let (id, hash) = name.rsplit_once('.')?;
            Some((format!("{prefix}{name}"), id.to_owned(), hash.to_owned()))
        })
        .collect())
}

/// A snapshot record from the remote, if its bytes match its name.
pub(super) fn record(
    remote: &dyn Backend,
    object: &str,
    id: &str,
    hash: &str,
    key: &str,
) -> Result<Option<(crate::cache::snapshot::Snapshot, Vec<u8>)>, Error> {
    let Some(bytes) = remote
        .get(object)
        .map_err(io(remote, "downloading", object))?
    else {
        return Ok(None);
    };
    match serde_json::from_slice::<crate::cache::snapshot::Snapshot>(&bytes) {
        Ok(s) if blake3::hash(&bytes).to_hex().as_str() == hash && s.id == id && s.key == key => {
            Ok(Some((s, bytes)))
        }
        _ => {
            warn_unused(&format!("snapshot record {object}"), remote);
            Ok(None)
        }
    }
}

/// Pushes a `velo cache` snapshot: what the remote lacks of its tree, the index and the
/// manifest ([`push`]), then its record, last. The remote's newest snapshots of the same key
/// tell the push where the blobs they share already are.
pub fn push_snapshot(
    store: &Store,
    remote: &dyn Backend,
    stored: &crate::cache::snapshot::Stored,
) -> Result<Moved, Error> {
    if remote.read_only() {
        return Err(Error::ReadOnly(remote.url().to_owned()));
    }
    let started = remote.requests();
    let key = &stored.snapshot.key;
    let mut known = Known::load(store, remote.url());
    let mut hints = 0;
    for (object, id, hash) in records(remote, key)? {
        if hints == 2 {
            break;
        }
        if id == stored.snapshot.id {
            continue;
        }
        let Some((snapshot, _)) = record(remote, &object, &id, &hash, key)? else {
            continue;
        };
        hints += 1;
        let index = index_key(&snapshot.manifest);
        if let Some(bytes) = remote
            .get(&index)
            .map_err(io(remote, "downloading", &index))?
            && let Some(decoded) = Index::decode(&bytes)
        {
            known.add(&decoded);
        }
    }
    let bytes = std::fs::read(&stored.manifest).map_err(|source| Error::Local {
        op: "reading",
        path: stored.manifest.clone(),
        source,
    })?;
    let tree = Manifest::read(&stored.manifest)?;
    let mut moved = push_tree(store, remote, &tree, &bytes, known)?;
    let record = std::fs::read(&stored.record).map_err(|source| Error::Local {
        op: "reading",
        path: stored.record.clone(),
        source,
    })?;
    let object = format!(
        "snapshots/{key}/{}.{}",
        stored.snapshot.id,
        blake3::hash(&record).to_hex()
    );
    remote
        .put_if_absent(&object, &record)
        .map_err(io(remote, "uploading", &object))?;
    moved.requests = remote.requests() - started;
    Ok(moved)
}

/// Each blob of `tree` once, with its size, in the manifest's order.
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
    use super::*;

    #[test]
    fn groups_close_at_the_target_and_keep_the_order() {
        let key = |i: u8| BlobKey {
            hash: blake3::hash(&[i]),
            exec: false,
        };
        let blobs: Vec<(BlobKey, u64)> = (0..7).map(|i| (key(i), 10)).collect();
        let sizes: Vec<usize> = groups(&blobs, 30).iter().map(|g| g.len()).collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert!(groups(&[], 30).is_empty());
        assert_eq!(groups(&blobs, 1000).len(), 1);
    }
}
