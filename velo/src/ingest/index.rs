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
//!
//! # Directory listings
//! Reading a directory (`getdents` and, on ext4, the hashed-tree walk behind it) cost a third
//! of an unchanged tree's re-ingest, more than the `statx` of every file. So the index also
//! records, per directory, its stat data and the names it held, with their types: the raw
//! listing, before `--exclude` rules, which are applied again on every walk. A directory's
//! mtime and ctime change whenever a name is added to it, removed from it or renamed in it, so
//! if its stat data is unchanged (and settled, as for files), the recorded listing is what
//! reading it would return, and the walk uses it instead (git's "untracked cache" rests on the
//! same rule). The files in it are still stat'ed one by one: a file's content changes its own
//! times, not its directory's. The stat data comes from `fstat` of the descriptor the walk
//! opened, so a filesystem mounted on the directory since shows as another device.
//!
//! # Layout
//! ```text
//! header     magic "velo-ix\n" · version u32 = 4 · root device u64 · ingest start (ns) i64
//!            · GC generation u64 · file count u64 · directory count u64
//! tables     u32 offset of each file record, then of each directory record (canonical order)
//! file       path length u32 · path · dev, ino, size u64 · mtime, ctime i64 · exec u8
//!            · BLAKE3 [32]
//! directory  path length u32 · path · dev, ino u64 · mtime, ctime i64 · name count u32
//!            · names length u32 · targets length u32 · a type byte per name
//!            · the names, each with its NUL · per symlink: target length u32 (u32::MAX: not
//!            recorded) and target · per name: slot u32 (see [`Names::slot`])
//! ```
//! Integers are little-endian. Nothing is trusted: offsets and lengths are checked when read,
//! and anything out of place makes a lookup miss.

use std::cmp::Ordering;
use std::ffi::CStr;
use std::fs::Metadata;
use std::io;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::FileType;

use crate::manifest::canonical_order;
use crate::store::{self, BlobKey, Store};

const MAGIC: &[u8; 8] = b"velo-ix\n";
const VERSION: u32 = 4;

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

/// What the index compares of a directory: `fstat` of its open descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirStat {
    pub dev: u64,
    pub ino: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

impl From<&rustix::fs::Stat> for DirStat {
    fn from(st: &rustix::fs::Stat) -> DirStat {
        DirStat {
            dev: st.st_dev,
            ino: st.st_ino,
            mtime_ns: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec as i64,
            ctime_ns: st.st_ctime * 1_000_000_000 + st.st_ctime_nsec as i64,
        }
    }
}

/// The names in one directory, without `.` and `..`, sorted bytewise, with the type the
/// directory gave for each (`Unknown` on filesystems that do not say): NUL-terminated, back to
/// back in one buffer, which is read from the directory or is part of a loaded index.
///
/// A recorded listing also holds its symlinks' targets. A symlink's target cannot be changed
/// in place: a new one is a new symlink, made in the directory, which changes the directory's
/// times. So while the listing holds, so do the targets, and the walk does not read them.
#[derive(Debug, Default)]
pub struct Names {
    bytes: Bytes,
    /// Where each name starts in `bytes`, its length (without the NUL), and its type.
    list: Vec<(u32, u32, FileType)>,
    /// For a recorded listing that has symlinks, by name: where its target is in `bytes`.
    targets: Vec<Option<(u32, u32)>>,
    /// For a recorded listing: where in `bytes` its slots start (see [`Names::slot`]).
    slots_at: Option<u32>,
}

/// Bytes of one's own, or a range of a mapped index (shared, so that what holds them can
/// outlive the [`StatIndex`] they came from).
#[derive(Debug)]
enum Bytes {
    Owned(Vec<u8>),
    Mapped(Arc<memmap2::Mmap>, Range<usize>),
}

impl Default for Bytes {
    fn default() -> Bytes {
        Bytes::Owned(Vec::new())
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(bytes) => bytes,
            Bytes::Mapped(map, range) => &map[range.clone()],
        }
    }
}

impl Names {
    /// The names of a listing read from a directory (by [`super::walk`]): `bytes` holds each
    /// name with its NUL; `list` says where each starts, its length and type, in any order.
    pub fn from_read(bytes: Vec<u8>, mut list: Vec<(u32, u32, FileType)>) -> Names {
        let name = |&(at, len, _): &(u32, u32, FileType)| &bytes[at as usize..][..len as usize];
        list.sort_unstable_by(|a, b| name(a).cmp(name(b)));
        Names {
            bytes: Bytes::Owned(bytes),
            list,
            targets: Vec::new(),
            slots_at: None,
        }
    }

    /// The names of a recorded listing: `types` has one byte per name, `bytes` the names in
    /// order, each with its NUL, and from `names_len` on, each symlink's target (a `u32`
    /// length, `u32::MAX` for none recorded, and the bytes), then the slots. `None` unless it
    /// is a listing a directory could return: names non-empty, without `/`, not `.` or `..`,
    /// strictly ascending, as many as types; targets non-empty and without NUL.
    fn recorded(types: &[u8], bytes: Bytes, names_len: usize) -> Option<Names> {
        let list = Names::check(types, bytes.get(..names_len)?)?;
        let mut targets = Vec::new();
        let mut at = names_len;
        for (i, &(.., ty)) in list.iter().enumerate() {
            if ty != FileType::Symlink {
                continue;
            }
            targets.resize(list.len(), None);
            let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().expect("4 bytes"));
            at += 4;
            if len != u32::MAX {
                let target = bytes.get(at..at + len as usize)?;
                if target.is_empty() || memchr::memchr(0, target).is_some() {
                    return None;
                }
                targets[i] = Some((at as u32, len));
                at += len as usize;
            }
        }
        (bytes.len().checked_sub(at) == Some(4 * list.len())).then_some(Names {
            bytes,
            list,
            targets,
            slots_at: Some(at as u32),
        })
    }

    /// Where the record of name `i` may be, in a recorded listing: its position among the file
    /// records (a file) or the directory records (a directory). A walk looks there first and
    /// finds the record without a search; whatever is there, a hit still compares the whole
    /// path.
    pub fn slot(&self, i: usize) -> Option<usize> {
        let at = self.slots_at? as usize + 4 * i;
        let slot = u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"));
        (slot != u32::MAX).then_some(slot as usize)
    }

    /// A recorded listing of `names` (sorted), without targets or slots.
    #[cfg(test)]
    pub fn of(names: &[(&str, FileType)]) -> Names {
        let mut bytes = Vec::new();
        for (name, _) in names {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
        }
        let types: Vec<u8> = names
            .iter()
            .map(|(_, ty)| (ty.as_raw_mode() >> 12) as u8)
            .collect();
        let len = bytes.len();
        let symlinks = names.iter().filter(|(_, ty)| *ty == FileType::Symlink);
        bytes.extend(symlinks.flat_map(|_| u32::MAX.to_le_bytes()));
        bytes.extend(names.iter().flat_map(|_| u32::MAX.to_le_bytes()));
        Names::recorded(&types, Bytes::Owned(bytes), len).expect("a sound listing")
    }

    /// The recorded target of name `i`, a symlink.
    pub fn target(&self, i: usize) -> Option<&[u8]> {
        let (at, len) = self.targets.get(i).copied().flatten()?;
        Some(&self.bytes[at as usize..][..len as usize])
    }

    /// The list of a recorded listing (see [`recorded`](Self::recorded)).
    fn check(types: &[u8], bytes: &[u8]) -> Option<Vec<(u32, u32, FileType)>> {
        let mut list = Vec::with_capacity(types.len());
        let (mut at, mut previous) = (0usize, None::<&[u8]>);
        for &ty in types {
            let len = memchr::memchr(0, &bytes[at..])?;
            let name = &bytes[at..at + len];
            let valid = !matches!(name, b"" | b"." | b"..") && !name.contains(&b'/');
            if !valid || previous.is_some_and(|p| p >= name) {
                return None;
            }
            list.push((
                at as u32,
                len as u32,
                FileType::from_raw_mode(u32::from(ty) << 12),
            ));
            previous = Some(name);
            at += len + 1;
        }
        (at == bytes.len()).then_some(list)
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Name `i` and its type.
    pub fn get(&self, i: usize) -> (&CStr, FileType) {
        let (at, len, file_type) = self.list[i];
        let with_nul = &self.bytes[at as usize..][..len as usize + 1];
        // SAFETY: `read` copied each name with its NUL from a `CStr`, and `recorded` found the
        // NUL that ends each name, so `with_nul` is one C string. (Checking again costs a scan
        // per name.)
        let name = unsafe { CStr::from_bytes_with_nul_unchecked(with_nul) };
        (name, file_type)
    }
}

/// A loaded index: the file, mapped. It starts with tables of where each record starts, in the
/// order the records were saved (the canonical order of their paths, which is the order a walk
/// visits them in), so loading it reads nothing per record: a record is read, and its bounds
/// checked, only when a lookup reaches it.
///
/// A lookup first tries where the walker's [`Cursor`] points: the record a recorded listing
/// names for the file ([`Names::slot`]), or else the record after the one found last (the
/// files of a directory are consecutive records). Most lookups are then one comparison.
/// Otherwise it gallops forward from there (1, 2, 4… records ahead), since the walk goes forward
/// in canonical order, and a directory's first lookup starts where the lookup before its entry
/// in its parent stopped. (A binary search of the whole index cost a twentieth of an unchanged
/// tree's re-ingest: each of its probes is a cache miss. A hash table by path cost a fifth, to
/// build and to probe.) An index whose records are out of order or repeated is damaged; its
/// lookups can then miss, never find the wrong record, since every hit compares the whole path,
/// so a miss just means reading the file.
#[derive(Debug, Default)]
pub struct StatIndex {
    started_ns: i64,
    gc_generation: u64,
    map: Option<Arc<memmap2::Mmap>>,
    /// Where the file records start, in canonical order of their paths.
    records: Table,
    /// Where the directory records start, in canonical order of their paths.
    dirs: Table,
}

/// What [`StatIndex::save`] records of one directory.
pub struct DirRecord<'a> {
    pub rel: &'a [u8],
    pub stat: DirStat,
    pub names: &'a Names,
    /// By name, a symlink's target (`None` if not known, and for other names).
    pub targets: Vec<Option<&'a [u8]>>,
    /// Each name's slot (see [`Names::slot`]); missing ones are `u32::MAX`.
    pub slots: Vec<u32>,
}

/// A table of where records start in the mapped file: `len` little-endian `u32`s from byte
/// `at` (checked to be in the file by [`decode`]).
#[derive(Debug, Default, Clone, Copy)]
struct Table {
    at: usize,
    len: usize,
}

/// Where a walker is in the index: the positions after the file record and the directory
/// record it found last.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cursor {
    /// Where the next file record is looked for first.
    pub file: usize,
    /// Where the next directory record is looked for first.
    pub dir: usize,
}

/// A record's bytes after its path: dev, ino, size, mtime, ctime, exec, hash.
const RECORD_TAIL: usize = 5 * 8 + 1 + 32;

/// A directory record's bytes after its path and before its types (see the layout in the
/// module doc): dev, ino, mtime, ctime, name count, length of the names, length of the targets.
const DIR_HEAD: usize = 4 * 8 + 3 * 4;

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
        self.map.as_deref().map_or(&[], |map| &map[..])
    }

    /// Where record `i` of `table` starts.
    fn offset(&self, table: Table, i: usize) -> usize {
        let at = table.at + 4 * i;
        u32::from_le_bytes(self.bytes()[at..at + 4].try_into().expect("4 bytes")) as usize
    }

    /// The path of the record at `at`; `None` if the file is damaged there.
    fn path_at(&self, at: usize) -> Option<&[u8]> {
        let bytes = self.bytes().get(at..)?;
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().expect("4 bytes")) as usize;
        bytes.get(4..4 + len)
    }

    /// The record at `at`; `None` if the file is damaged there.
    fn record_at(&self, at: usize) -> Option<Record> {
        let start = at + 4 + self.path_at(at)?.len();
        let tail = self.bytes().get(start..start + RECORD_TAIL)?;
        let u64_at = |i: usize| u64::from_le_bytes(tail[i * 8..i * 8 + 8].try_into().expect("8"));
        Some(Record {
            dev: u64_at(0),
            ino: u64_at(1),
            size: u64_at(2),
            mtime_ns: u64_at(3) as i64,
            ctime_ns: u64_at(4) as i64,
            key: BlobKey {
                exec: tail[40] != 0,
                hash: blake3::Hash::from_bytes(tail[41..73].try_into().expect("32 bytes")),
            },
        })
    }

    pub fn len(&self) -> usize {
        self.records.len
    }

    pub fn is_empty(&self) -> bool {
        self.records.len == 0
    }

    /// The first position in `table` whose path is not before `rel` in canonical order,
    /// searched forward from `from` if the path before it is before `rel`, else behind it.
    fn seek(&self, table: Table, from: usize, rel: &[u8]) -> usize {
        let before = |i: usize| {
            let path = self.path_at(self.offset(table, i));
            path.is_none_or(|path| canonical_order(path, rel) == Ordering::Less)
        };
        // The first position in `lo..hi` that is not before `rel`.
        let search = |mut lo: usize, mut hi: usize| {
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if before(mid) { lo = mid + 1 } else { hi = mid }
            }
            lo
        };
        let from = from.min(table.len);
        if from > 0 && !before(from - 1) {
            return search(0, from);
        }
        let mut bound = 1;
        while from + bound <= table.len && before(from + bound - 1) {
            bound *= 2;
        }
        search(from + bound / 2, (from + bound).min(table.len))
    }

    /// The position in `table` of the record for `rel`: the one at `from` if it is, else by
    /// search from there.
    fn find(&self, table: Table, from: usize, rel: &[u8]) -> Option<usize> {
        let at = |i: usize| i < table.len && self.path_at(self.offset(table, i)) == Some(rel);
        if at(from) {
            return Some(from);
        }
        let i = self.seek(table, from, rel);
        at(i).then_some(i)
    }

    /// The blob recorded for `rel` if `stat` shows the file unchanged and the entry can be
    /// trusted (see the module doc). The caller still checks that the blob exists. `cursor` is
    /// the calling walker thread's; lookups in walk order are then mostly sequential.
    pub fn lookup(&self, rel: &[u8], stat: &Stat, cursor: &mut Cursor) -> Option<BlobKey> {
        let i = self.find(self.records, cursor.file, rel)?;
        cursor.file = i + 1;
        let record = self.record_at(self.offset(self.records, i))?;
        let now = Record::new(stat, record.key);
        let exec = stat.mode & 0o111 != 0;
        let unchanged = now == record && exec == record.key.exec;
        let settled = record.ctime_ns < self.started_ns.saturating_sub(RACY_WINDOW_NS);
        (unchanged && settled).then_some(record.key)
    }

    /// The directories recorded.
    pub fn dirs(&self) -> usize {
        self.dirs.len
    }

    /// The recorded listing of directory `rel` ("" for the root) if `stat` shows it unchanged
    /// and settled (see the module doc), and the record is sound. `cursor` is the walker's, as
    /// for [`lookup`](Self::lookup).
    pub fn listing(&self, rel: &[u8], stat: &DirStat, cursor: &mut Cursor) -> Option<Names> {
        let i = self.find(self.dirs, cursor.dir, rel)?;
        cursor.dir = i + 1;
        let at = self.offset(self.dirs, i);
        let start = at + 4 + rel.len();
        let head = self.bytes().get(start..start + DIR_HEAD)?;
        let u64_at = |i: usize| u64::from_le_bytes(head[i * 8..i * 8 + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4"));
        let recorded = DirStat {
            dev: u64_at(0),
            ino: u64_at(1),
            mtime_ns: u64_at(2) as i64,
            ctime_ns: u64_at(3) as i64,
        };
        let settled = recorded.ctime_ns < self.started_ns.saturating_sub(RACY_WINDOW_NS);
        if recorded != *stat || !settled {
            return None;
        }
        let (count, len) = (u32_at(32) as usize, u32_at(36) as usize);
        let targets_len = u32_at(40) as usize;
        let types = self
            .bytes()
            .get(start + DIR_HEAD..start + DIR_HEAD + count)?;
        let names_end = start + DIR_HEAD + count + len + targets_len + 4 * count;
        let names = start + DIR_HEAD + count..names_end;
        self.bytes().get(names.clone())?;
        let map = Arc::clone(self.map.as_ref()?);
        Names::recorded(types, Bytes::Mapped(map, names), len)
    }

    /// Writes an index for directory on `root_dev`, recorded by an ingest that started at
    /// `started_ns` (wall clock, nanoseconds since the epoch) in GC generation `gc_generation`.
    pub fn save<'a>(
        path: &Path,
        root_dev: u64,
        started_ns: i64,
        gc_generation: u64,
        records: impl Iterator<Item = (&'a [u8], Record)>,
        dirs: impl Iterator<Item = DirRecord<'a>>,
    ) -> Result<(), store::Error> {
        // The records, then the tables of where they start (which come first in the file).
        let (mut body, mut starts, mut dir_starts) = (Vec::with_capacity(1 << 20), vec![], vec![]);
        for (rel, r) in records {
            starts.push(body.len());
            body.extend_from_slice(&(rel.len() as u32).to_le_bytes());
            body.extend_from_slice(rel);
            for v in [r.dev, r.ino, r.size] {
                body.extend_from_slice(&v.to_le_bytes());
            }
            for v in [r.mtime_ns, r.ctime_ns] {
                body.extend_from_slice(&v.to_le_bytes());
            }
            body.push(u8::from(r.key.exec));
            body.extend_from_slice(r.key.hash.as_bytes());
        }
        for DirRecord {
            rel,
            stat,
            names,
            targets,
            slots,
        } in dirs
        {
            // One per symlink, in order.
            let symlinks = (0..names.len()).filter(|&i| names.get(i).1 == FileType::Symlink);
            let targets: Vec<_> = symlinks
                .map(|i| targets.get(i).copied().flatten())
                .collect();
            dir_starts.push(body.len());
            body.extend_from_slice(&(rel.len() as u32).to_le_bytes());
            body.extend_from_slice(rel);
            let times = [stat.mtime_ns as u64, stat.ctime_ns as u64];
            for v in [stat.dev, stat.ino].into_iter().chain(times) {
                body.extend_from_slice(&v.to_le_bytes());
            }
            let len: usize = names.list.iter().map(|&(_, len, _)| len as usize + 1).sum();
            let target_len = |t: &Option<&[u8]>| 4 + t.map_or(0, <[u8]>::len);
            let targets_len: usize = targets.iter().map(target_len).sum();
            body.extend_from_slice(&(names.len() as u32).to_le_bytes());
            body.extend_from_slice(&(len as u32).to_le_bytes());
            body.extend_from_slice(&(targets_len as u32).to_le_bytes());
            let types = names
                .list
                .iter()
                .map(|&(.., ty)| (ty.as_raw_mode() >> 12) as u8);
            body.extend(types);
            for i in 0..names.len() {
                body.extend_from_slice(names.get(i).0.to_bytes_with_nul());
            }
            for target in targets {
                let len = target.map_or(u32::MAX, |t| t.len() as u32);
                body.extend_from_slice(&len.to_le_bytes());
                body.extend_from_slice(target.unwrap_or_default());
            }
            for i in 0..names.len() {
                let slot = slots.get(i).copied().unwrap_or(u32::MAX);
                body.extend_from_slice(&slot.to_le_bytes());
            }
        }
        let base = HEADER_LEN + 4 * (starts.len() + dir_starts.len());
        if base + body.len() > u32::MAX as usize {
            let large = io::Error::other("a stat index beyond 4 GiB is not kept");
            return Err(store::Error::io("writing", path, large));
        }
        let mut out = Vec::with_capacity(base + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&root_dev.to_le_bytes());
        out.extend_from_slice(&started_ns.to_le_bytes());
        out.extend_from_slice(&gc_generation.to_le_bytes());
        out.extend_from_slice(&(starts.len() as u64).to_le_bytes());
        out.extend_from_slice(&(dir_starts.len() as u64).to_le_bytes());
        for start in starts.iter().chain(&dir_starts) {
            out.extend_from_slice(&((base + start) as u32).to_le_bytes());
        }
        out.extend_from_slice(&body);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| store::Error::io("creating", dir, e))?;
        }
        store::write_atomic(path, &out, false)
    }
}

/// Bytes before the tables: magic, version, device, start, GC generation and the two counts.
const HEADER_LEN: usize = 8 + 4 + 5 * 8;

/// Checks the header, and that the tables are in the file.
fn decode(map: memmap2::Mmap, root_dev: u64) -> Option<StatIndex> {
    let bytes = &map[..];
    if bytes.len() > u32::MAX as usize || bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if u32_at(8) != VERSION || u64_at(12) != root_dev {
        return None;
    }
    let (count, dir_count) = (
        usize::try_from(u64_at(36)).ok()?,
        usize::try_from(u64_at(44)).ok()?,
    );
    let tables = count.checked_add(dir_count)?.checked_mul(4)?;
    if HEADER_LEN.checked_add(tables)? > bytes.len() {
        return None;
    }
    Some(StatIndex {
        started_ns: u64_at(20) as i64,
        gc_generation: u64_at(28),
        records: Table {
            at: HEADER_LEN,
            len: count,
        },
        dirs: Table {
            at: HEADER_LEN + 4 * count,
            len: dir_count,
        },
        map: Some(Arc::new(map)),
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
        StatIndex::save(&file, 7, i64::MAX, 0, records, std::iter::empty()).unwrap();
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
            assert_eq!(cursor.file, i + 1, "{:?}", display(p));
        }
        // From anywhere: every lookup misses the cursor and searches, behind it or ahead.
        for from in 0..=paths.len() + 1 {
            for (i, p) in paths.iter().enumerate().rev() {
                let mut cursor = Cursor { file: from, dir: 0 };
                let found = index.lookup(p, &stat(i as u64), &mut cursor);
                assert_eq!(found, Some(key(p)), "{:?} from {from}", display(p));
            }
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

    fn dir_stat(ctime_ns: i64) -> DirStat {
        DirStat {
            dev: 7,
            ino: 99,
            mtime_ns: 5,
            ctime_ns,
        }
    }

    /// A listing as a directory read would give it: `names` sorted, each of type `ty`.
    fn names(names: &[&str], ty: FileType) -> Names {
        let typed: Vec<_> = names.iter().map(|&n| (n, ty)).collect();
        Names::of(&typed)
    }

    fn listed(names: &Names) -> Vec<(String, FileType)> {
        (0..names.len())
            .map(|i| names.get(i))
            .map(|(n, t)| (n.to_string_lossy().into_owned(), t))
            .collect()
    }

    #[test]
    fn directory_listings_are_used_only_while_the_directory_is_unchanged_and_settled() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ix");
        let root = names(&["a", "b.txt"], FileType::Directory);
        let sub = names(&["x", "y"], FileType::RegularFile);
        let started = 10 * RACY_WINDOW_NS;
        let links = names(&["l1", "l2", "l3"], FileType::Symlink);
        let record = |rel: &'static [u8], stat, names, targets| DirRecord {
            rel,
            stat,
            names,
            targets,
            slots: vec![],
        };
        let targets = vec![Some(&b"../t1"[..]), None, Some(b"t3")];
        let dirs = [
            record(b"", dir_stat(1), &root, vec![]),
            record(b"a", dir_stat(2), &sub, vec![]),
            record(
                b"b.txt",
                dir_stat(started - RACY_WINDOW_NS / 2),
                &sub,
                vec![],
            ),
            record(b"l", dir_stat(2), &links, targets),
        ];
        StatIndex::save(&file, 7, started, 0, std::iter::empty(), dirs.into_iter()).unwrap();
        let index = StatIndex::load(&file, 7);
        assert_eq!(index.dirs(), 4);

        let got = index.listing(b"l", &dir_stat(2), &mut Cursor::default());
        let got = got.expect("unchanged");
        assert_eq!(listed(&got), listed(&links));
        let targets: Vec<_> = (0..3).map(|i| got.target(i)).collect();
        assert_eq!(targets, [Some(&b"../t1"[..]), None, Some(b"t3")]);
        let got = index
            .listing(b"a", &dir_stat(2), &mut Cursor::default())
            .expect("unchanged");
        assert_eq!(listed(&got), listed(&sub));
        assert_eq!(
            listed(
                &index
                    .listing(b"", &dir_stat(1), &mut Cursor::default())
                    .unwrap()
            ),
            listed(&root)
        );
        assert!(
            index
                .listing(b"a", &dir_stat(3), &mut Cursor::default())
                .is_none(),
            "ctime moved"
        );
        let moved = DirStat {
            mtime_ns: 6,
            ..dir_stat(2)
        };
        assert!(
            index
                .listing(b"a", &moved, &mut Cursor::default())
                .is_none(),
            "mtime moved"
        );
        assert!(
            index
                .listing(b"c", &dir_stat(2), &mut Cursor::default())
                .is_none(),
            "not recorded"
        );
        let racy = dir_stat(started - RACY_WINDOW_NS / 2);
        assert!(
            index
                .listing(b"b.txt", &racy, &mut Cursor::default())
                .is_none(),
            "changed too recently to trust"
        );
    }

    #[test]
    fn a_recorded_listing_that_no_directory_could_give_is_not_used() {
        let types = [(FileType::RegularFile.as_raw_mode() >> 12) as u8; 2];
        assert!(Names::check(&types, b"a\0b\0").is_some());
        for bad in [
            &b"b\0a\0"[..],
            b"a\0a\0",
            b"a\0a/b\0",
            b"a\0..\0",
            b"\0a\0",
            b"a\0b",
        ] {
            assert!(Names::check(&types, bad).is_none(), "{:?}", display(bad));
        }
        assert!(
            Names::check(&types[..1], b"a\0b\0").is_none(),
            "more names than types"
        );
    }

    /// A damaged index can make lookups miss (which means reading the file), never panic nor
    /// answer for another path.
    #[test]
    fn a_damaged_index_misses_and_never_panics() {
        let paths: &[&[u8]] = &[b"a", b"a/b", b"c"];
        let (dir, index) = saved(paths);
        let file = dir.path().join("ix");
        let bytes = std::fs::read(&file).unwrap();
        drop(index);
        let table = HEADER_LEN..HEADER_LEN + 4 * paths.len();
        let mut damages: Vec<Vec<u8>> = (0..bytes.len()).map(|n| bytes[..n].to_vec()).collect();
        for at in table.clone().step_by(4) {
            for offset in [0u32, 1, 7, u32::MAX, bytes.len() as u32 - 1] {
                let mut damaged = bytes.clone();
                damaged[at..at + 4].copy_from_slice(&offset.to_le_bytes());
                damages.push(damaged);
            }
        }
        // A record's path length: its path and the rest run into the next record or past
        // the end. (A flipped bit in a recorded hash is not caught: the index is a cache
        // without a checksum, which would cost a read of all of it on every ingest.)
        for at in table.clone().step_by(4) {
            let start = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            for i in 0..4 {
                let mut damaged = bytes.clone();
                damaged[start + i] ^= 0xff;
                damages.push(damaged);
            }
        }
        for damaged in damages {
            std::fs::write(&file, &damaged).unwrap();
            let index = StatIndex::load(&file, 7);
            for (i, p) in paths.iter().enumerate() {
                for from in 0..4 {
                    let mut cursor = Cursor {
                        file: from,
                        dir: from,
                    };
                    let found = index.lookup(p, &stat(i as u64), &mut cursor);
                    assert!(found.is_none() || found == Some(key(p)), "{:?}", display(p));
                    assert!(index.listing(p, &dir_stat(1), &mut cursor).is_none());
                }
            }
        }
    }

    fn display(p: &[u8]) -> String {
        String::from_utf8_lossy(p).into_owned()
    }
}
