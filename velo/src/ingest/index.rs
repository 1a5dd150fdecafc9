//! The re-ingest stat index: skip reading files that have not changed since the last ingest.
//!
//! After an ingest of a directory, velo records for every file the stat data that changes when
//! the file does (device, inode, size, mtime and ctime in nanoseconds, executable bit) next to
//! the blob it was stored as. The next ingest of the same directory stats each file and, when
//! everything matches, takes the recorded blob instead of reading the file: the walk costs one
//! `statx` per file instead of a read, a hash and a blob lookup.
//!
//! This data lives in the store (`<store>/index/<BLAKE3 of the directory's path>`), never in the
//! manifest, which stays free of timestamps. It is only a cache: any doubt means re-reading.
//!
//! - **Across filesystems**: the index records the device of the directory and of every file;
//!   a different device (another filesystem, a remount, a copy elsewhere) matches nothing.
//! - **Racily clean files**: a file written during the same clock tick as it was hashed could
//!   change again without changing its timestamps (git's "racy git" problem). Entries whose
//!   ctime is not [`RACY_WINDOW_NS`] older than the start of the ingest that recorded them are
//!   never trusted. `ctime` is used because no program can set it back.
//! - **Blobs collected since**: the index records the store's GC generation (bumped by every
//!   `gc --run` that deletes blobs). If it has moved, each entry is used only if its blob still
//!   exists; if not, no collection has happened since and the existence check is skipped.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::store::{self, BlobKey, Store};

const MAGIC: &[u8; 8] = b"velo-ix\n";
const VERSION: u32 = 3;

/// How much older than the recording ingest's start a file's ctime must be to be trusted.
/// Generous against coarse filesystem clocks (1–2 s on some network and FAT filesystems).
pub const RACY_WINDOW_NS: i64 = 2_000_000_000;

/// The stat data of one file and the blob its content is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub key: BlobKey,
}

impl Record {
    pub fn new(meta: &Metadata, key: BlobKey) -> Record {
        Record {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            key,
        }
    }
}

/// A loaded index: the file's bytes and, sorted by path bytes (as the file is written), where
/// each path lies in them with its record. Looked up by binary search with `memcmp`: no
/// allocation per entry, so loading 100k records costs a read and one pass (a map of owned
/// paths took three times as long to load).
#[derive(Debug, Default)]
pub struct StatIndex {
    started_ns: i64,
    gc_generation: u64,
    bytes: Vec<u8>,
    records: Vec<(u32, u32, Record)>,
}

/// Where the index for directory `root` (absolute, canonical) lives.
pub fn path_for(store: &Store, root: &Path) -> PathBuf {
    store
        .dir("index")
        .join(blake3::hash(root.as_os_str().as_bytes()).to_hex().as_str())
}

impl StatIndex {
    /// Loads the index at `path` if it exists, is readable and was recorded for a directory on
    /// device `root_dev`; otherwise an empty index (everything is read again).
    pub fn load(path: &Path, root_dev: u64) -> StatIndex {
        let Ok(bytes) = std::fs::read(path) else {
            return StatIndex::default();
        };
        match decode(bytes, root_dev) {
            Some(index) => index,
            None => {
                tracing::info!(path = %path.display(), "ignoring stale or unreadable stat index");
                StatIndex::default()
            }
        }
    }

    /// The store's GC generation when this index was recorded.
    pub fn gc_generation(&self) -> u64 {
        self.gc_generation
    }

    fn path(&self, (start, len, _): &(u32, u32, Record)) -> &[u8] {
        &self.bytes[*start as usize..(*start + *len) as usize]
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The blob recorded for `rel` if `meta` shows the file unchanged and the entry can be
    /// trusted (see the module doc). The caller still checks that the blob exists.
    pub fn lookup(&self, rel: &[u8], meta: &Metadata) -> Option<BlobKey> {
        let at = self
            .records
            .binary_search_by(|r| self.path(r).cmp(rel))
            .ok()?;
        let record = &self.records[at].2;
        let now = Record::new(meta, record.key);
        let exec = meta.mode() & 0o111 != 0;
        let unchanged = now == *record && exec == record.key.exec;
        let settled = record.ctime_ns < self.started_ns.saturating_sub(RACY_WINDOW_NS);
        (unchanged && settled).then_some(record.key)
    }

    /// Writes an index for directory on `root_dev`, recorded by an ingest that started at
    /// `started_ns` (wall clock, nanoseconds since the epoch) in GC generation `gc_generation`.
    pub fn save<'a>(
        path: &Path,
        root_dev: u64,
        started_ns: i64,
        gc_generation: u64,
        records: impl Iterator<Item = (&'a [u8], Record)>,
    ) -> Result<(), store::Error> {
        // Sorted by bytes, which is what a lookup searches by.
        let mut records: Vec<(&[u8], Record)> = records.collect();
        records.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(1 << 20);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&root_dev.to_le_bytes());
        out.extend_from_slice(&started_ns.to_le_bytes());
        out.extend_from_slice(&gc_generation.to_le_bytes());
        let count_at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes()); // patched below
        let mut count = 0u64;
        for (rel, r) in records {
            count += 1;
            out.extend_from_slice(&(rel.len() as u32).to_le_bytes());
            out.extend_from_slice(rel);
            for v in [r.dev, r.ino, r.size] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            for v in [r.mtime_ns, r.ctime_ns] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.push(u8::from(r.key.exec));
            out.extend_from_slice(r.key.hash.as_bytes());
        }
        out[count_at..count_at + 8].copy_from_slice(&count.to_le_bytes());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| store::Error::io("creating", dir, e))?;
        }
        store::write_atomic(path, &out, false)
    }
}

fn decode(bytes: Vec<u8>, root_dev: u64) -> Option<StatIndex> {
    if bytes.len() > u32::MAX as usize {
        return None;
    }
    let mut pos = 0usize;
    let mut take = |n: usize| -> Option<(usize, &[u8])> {
        let s = bytes.get(pos..pos.checked_add(n)?)?;
        pos += n;
        Some((pos - n, s))
    };
    if take(8)?.1 != MAGIC {
        return None;
    }
    let u64_at = |(_, s): (usize, &[u8])| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    if u32::from_le_bytes(take(4)?.1.try_into().ok()?) != VERSION {
        return None;
    }
    if u64_at(take(8)?) != root_dev {
        return None;
    }
    let started_ns = u64_at(take(8)?) as i64;
    let gc_generation = u64_at(take(8)?);
    let count = u64_at(take(8)?);
    let mut records = Vec::with_capacity(count.min(bytes.len() as u64 / 77) as usize);
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.1.try_into().ok()?) as usize;
        let (start, _) = take(len)?;
        let dev = u64_at(take(8)?);
        let ino = u64_at(take(8)?);
        let size = u64_at(take(8)?);
        let mtime_ns = u64_at(take(8)?) as i64;
        let ctime_ns = u64_at(take(8)?) as i64;
        let exec = take(1)?.1[0] != 0;
        let hash = blake3::Hash::from_bytes(take(32)?.1.try_into().ok()?);
        let key = BlobKey { hash, exec };
        records.push((
            start as u32,
            len as u32,
            Record {
                dev,
                ino,
                size,
                mtime_ns,
                ctime_ns,
                key,
            },
        ));
    }
    if pos != bytes.len() {
        return None;
    }
    let mut index = StatIndex {
        started_ns,
        gc_generation,
        bytes,
        records,
    };
    // A file that is not sorted (damaged) is sorted here; a duplicate path makes it
    // untrustworthy.
    if !index
        .records
        .is_sorted_by(|a, b| index.path(a) < index.path(b))
    {
        let mut records = std::mem::take(&mut index.records);
        records.sort_by(|a, b| index.path(a).cmp(index.path(b)));
        if records
            .windows(2)
            .any(|w| index.path(&w[0]) == index.path(&w[1]))
        {
            return None;
        }
        index.records = records;
    }
    Some(index)
}
