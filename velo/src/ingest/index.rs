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

use std::cmp::Ordering;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::manifest::canonical_order;
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
    pub fn new(stat: &Stat, key: BlobKey) -> Record {
        Record {
            dev: stat.dev,
            ino: stat.ino,
            size: stat.size,
            mtime_ns: stat.mtime_ns,
            ctime_ns: stat.ctime_ns,
            key,
        }
    }
}

/// What the index compares of a file's metadata, from `fstat` of an open file
/// ([`Metadata`]) or `statx` of a name in a directory ([`rustix::fs::Statx`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub mode: u32,
}

impl From<&Metadata> for Stat {
    fn from(meta: &Metadata) -> Stat {
        Stat {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            mode: meta.mode(),
        }
    }
}

impl From<&rustix::fs::Statx> for Stat {
    fn from(st: &rustix::fs::Statx) -> Stat {
        let ns = |t: &rustix::fs::StatxTimestamp| t.tv_sec * 1_000_000_000 + i64::from(t.tv_nsec);
        Stat {
            // As std builds `st_dev` from statx, so both kinds of record compare equal.
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            size: st.stx_size,
            mtime_ns: ns(&st.stx_mtime),
            ctime_ns: ns(&st.stx_ctime),
            mode: u32::from(st.stx_mode),
        }
    }
}

/// A loaded index: the file, mapped, and where each record starts in it, in the order the
/// records were saved (the canonical order of their paths, which is the order a walk visits
/// them in). A record is decoded only when its path is looked up, so loading 100k records costs
/// one pass over the mapping and no allocation per entry.
///
/// A lookup first tries the record after the one the same walker found last ([`Cursor`]): the
/// files of a directory are consecutive records, so most lookups are one comparison with memory
/// the walker has just read. Otherwise it searches by canonical order. (A hash table by path
/// cost a fifth of an unchanged tree's re-ingest, to build and to probe: each probe is two cache
/// misses at random places in 10 MB.) An index whose records are out of order or repeated is
/// damaged; its lookups can then miss, never find the wrong record, since every hit compares the
/// whole path, so a miss just means reading the file.
#[derive(Debug, Default)]
pub struct StatIndex {
    started_ns: i64,
    gc_generation: u64,
    map: Option<memmap2::Mmap>,
    /// Offsets of records (their path length), in file order.
    records: Vec<u32>,
}

/// Where one walker thread last found a record: the position of the record after it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cursor(usize);

/// A record's bytes after its path: dev, ino, size, mtime, ctime, exec, hash.
const RECORD_TAIL: usize = 5 * 8 + 1 + 32;

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
        let Ok(file) = std::fs::File::open(path) else {
            return StatIndex::default();
        };
        // SAFETY: index files are only ever replaced by rename (`write_atomic`), never changed
        // in place, so the mapping's contents stay as they were when mapped.
        let map = unsafe { memmap2::Mmap::map(&file) };
        match map.ok().and_then(|map| decode(map, root_dev)) {
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

    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }

    /// The path of the record at `at` (checked by [`decode`]).
    fn path_at(&self, at: u32) -> &[u8] {
        let bytes = &self.bytes()[at as usize..];
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        &bytes[4..4 + len]
    }

    /// The record at `at`.
    fn record_at(&self, at: u32) -> Record {
        let start = at as usize + 4 + self.path_at(at).len();
        let tail = &self.bytes()[start..start + RECORD_TAIL];
        let u64_at = |i: usize| u64::from_le_bytes(tail[i * 8..i * 8 + 8].try_into().expect("8"));
        Record {
            dev: u64_at(0),
            ino: u64_at(1),
            size: u64_at(2),
            mtime_ns: u64_at(3) as i64,
            ctime_ns: u64_at(4) as i64,
            key: BlobKey {
                exec: tail[40] != 0,
                hash: blake3::Hash::from_bytes(tail[41..73].try_into().expect("32 bytes")),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The position of the record for `rel`: the one at `cursor` if it is, else by search.
    fn find(&self, rel: &[u8], cursor: Cursor) -> Option<usize> {
        if self
            .records
            .get(cursor.0)
            .is_some_and(|&at| self.path_at(at) == rel)
        {
            return Some(cursor.0);
        }
        let i = self
            .records
            .partition_point(|&at| canonical_order(self.path_at(at), rel) == Ordering::Less);
        (self
            .records
            .get(i)
            .is_some_and(|&at| self.path_at(at) == rel))
        .then_some(i)
    }

    /// The blob recorded for `rel` if `stat` shows the file unchanged and the entry can be
    /// trusted (see the module doc). The caller still checks that the blob exists. `cursor` is
    /// the calling walker thread's; lookups in walk order are then mostly sequential.
    pub fn lookup(&self, rel: &[u8], stat: &Stat, cursor: &mut Cursor) -> Option<BlobKey> {
        let i = self.find(rel, *cursor)?;
        *cursor = Cursor(i + 1);
        let record = self.record_at(self.records[i]);
        let now = Record::new(stat, record.key);
        let exec = stat.mode & 0o111 != 0;
        let unchanged = now == record && exec == record.key.exec;
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

/// Checks the header and every record's bounds, and lists where the records start.
fn decode(map: memmap2::Mmap, root_dev: u64) -> Option<StatIndex> {
    let bytes = &map[..];
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
    let max = bytes.len() / (4 + RECORD_TAIL);
    let mut records = Vec::with_capacity((count as usize).min(max));
    for _ in 0..count {
        let (at, len) = take(4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        take(len)?;
        take(RECORD_TAIL)?;
        records.push(at as u32);
    }
    if pos != bytes.len() {
        return None;
    }
    Some(StatIndex {
        started_ns,
        gc_generation,
        map: Some(map),
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(i: u64) -> Stat {
        Stat {
            dev: 7,
            ino: 1000 + i,
            size: i,
            mtime_ns: 5,
            ctime_ns: 5,
            mode: 0o644,
        }
    }

    fn key(path: &[u8]) -> BlobKey {
        BlobKey {
            hash: blake3::hash(path),
            exec: false,
        }
    }

    /// Saves records for `paths` (in the given order) and loads them back.
    fn saved(paths: &[&[u8]]) -> (tempfile::TempDir, StatIndex) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ix");
        let records = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, Record::new(&stat(i as u64), key(p))));
        StatIndex::save(&file, 7, i64::MAX, 0, records).unwrap();
        let index = StatIndex::load(&file, 7);
        assert_eq!(index.len(), paths.len());
        (dir, index)
    }

    #[test]
    fn finds_records_in_walk_order_and_out_of_it() {
        let paths: &[&[u8]] = &[b"a", b"a/b/c", b"a/b/d", b"a/x", b"a.txt", b"z"];
        let (_dir, index) = saved(paths);
        let mut cursor = Cursor::default();
        for (i, p) in paths.iter().enumerate() {
            assert_eq!(index.lookup(p, &stat(i as u64), &mut cursor), Some(key(p)));
            assert_eq!(cursor.0, i + 1, "{:?}", display(p));
        }
        // Backwards: every lookup misses the cursor and searches.
        for (i, p) in paths.iter().enumerate().rev() {
            let mut cursor = Cursor(3);
            assert_eq!(index.lookup(p, &stat(i as u64), &mut cursor), Some(key(p)));
        }
        let mut cursor = Cursor::default();
        assert_eq!(index.lookup(b"a/b", &stat(0), &mut cursor), None);
        assert_eq!(
            index.lookup(b"a/b/c", &stat(9), &mut cursor),
            None,
            "stat changed"
        );
    }

    #[test]
    fn records_out_of_order_can_miss_but_never_answer_for_another_path() {
        let paths: &[&[u8]] = &[b"m", b"b", b"y", b"a", b"q"];
        let (_dir, index) = saved(paths);
        for (i, p) in paths.iter().enumerate() {
            let found = index.lookup(p, &stat(i as u64), &mut Cursor::default());
            assert!(found.is_none() || found == Some(key(p)), "{:?}", display(p));
        }
    }

    fn display(p: &[u8]) -> String {
        String::from_utf8_lossy(p).into_owned()
    }
}
