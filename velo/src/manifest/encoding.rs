//! The canonical byte encoding of a manifest (`docs/manifest.md` is the full specification).
//!
//! ```text
//! header   magic "velo-mf\n" (8 bytes) · version u32 = 1 · entry count u64
//! entry    kind u8 (1 dir, 2 file, 3 symlink) · flags u8 (bit 0: executable, files only)
//!          · path length u32 · path bytes
//!          · file:    size u64 · BLAKE3 [32]
//!          · symlink: target length u32 · target bytes
//! ```
//!
//! Integers are little-endian. Entries are in canonical order (see [`super::canonical_order`]).
//! There is exactly one encoding of a tree: no optional fields, no padding, nothing after the
//! last entry, so the BLAKE3 of the bytes identifies the tree.

use std::fmt;

use blake3::Hash;

use super::{Entry, InvalidEntry, Kind, Manifest, check_next};

pub const MAGIC: &[u8; 8] = b"velo-mf\n";
pub const VERSION: u32 = 1;

const KIND_DIR: u8 = 1;
const KIND_FILE: u8 = 2;
const KIND_SYMLINK: u8 = 3;
const FLAG_EXEC: u8 = 1;

pub fn encode(manifest: &Manifest) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + encoded_len(&manifest.entries));
    out.extend_from_slice(&header(manifest));
    encode_entries(&manifest.entries, &mut out);
    out
}

const HEADER_LEN: usize = 8 + 4 + 8;

/// Entries per piece of [`encodes_to`]: enough to be worth a job.
const PIECE: usize = 1024;

/// Where an encoding goes: appended to a buffer, or compared with bytes already written.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Compares what is put with `old` from `at` on, without keeping it.
struct Compare<'a> {
    old: &'a [u8],
    at: usize,
    same: bool,
}

impl Sink for Compare<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.same = self.same && self.old.get(self.at..self.at + bytes.len()) == Some(bytes);
        self.at += bytes.len();
    }
}

/// The encoding of `entries`, put into `out`.
fn encode_entries(entries: &[Entry], out: &mut impl Sink) {
    for entry in entries {
        let (kind, flags) = match entry.kind {
            Kind::Dir => (KIND_DIR, 0),
            Kind::File { exec, .. } => (KIND_FILE, if exec { FLAG_EXEC } else { 0 }),
            Kind::Symlink { .. } => (KIND_SYMLINK, 0),
        };
        out.put(&[kind, flags]);
        put_bytes(out, &entry.path);
        match &entry.kind {
            Kind::Dir => {}
            Kind::File { hash, size, .. } => {
                out.put(&size.to_le_bytes());
                out.put(hash.as_bytes());
            }
            Kind::Symlink { target } => put_bytes(out, target),
        }
    }
}

/// The length of the encoding of `entries`.
fn encoded_len(entries: &[Entry]) -> usize {
    let len = |entry: &Entry| {
        2 + 4
            + entry.path.len()
            + match &entry.kind {
                Kind::Dir => 0,
                Kind::File { .. } => 8 + 32,
                Kind::Symlink { target } => 4 + target.len(),
            }
    };
    entries.iter().map(len).sum()
}

fn header(manifest: &Manifest) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..].copy_from_slice(&(manifest.entries.len() as u64).to_le_bytes());
    header
}

/// Whether `bytes` is the encoding of `manifest`: pieces of entries are encoded and compared
/// on every core, each where the lengths of the pieces before it put it.
pub fn encodes_to(manifest: &Manifest, bytes: &[u8]) -> bool {
    use rayon::prelude::*;
    let pieces: Vec<&[Entry]> = manifest.entries.chunks(PIECE).collect();
    let lens: Vec<usize> = pieces.par_iter().map(|p| encoded_len(p)).collect();
    if HEADER_LEN + lens.iter().sum::<usize>() != bytes.len()
        || bytes[..HEADER_LEN] != header(manifest)
    {
        return false;
    }
    let starts = lens.iter().scan(HEADER_LEN, |at, len| {
        *at += len;
        Some(*at - len)
    });
    let starts: Vec<usize> = starts.collect();
    pieces.par_iter().zip(&starts).all(|(piece, &at)| {
        let mut compare = Compare {
            old: bytes,
            at,
            same: true,
        };
        encode_entries(piece, &mut compare);
        compare.same
    })
}

fn put_bytes(out: &mut impl Sink, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("paths are far shorter than 4 GiB");
    out.put(&len.to_le_bytes());
    out.put(bytes);
}

/// Where and why decoding failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// Byte offset of the field that failed.
    pub offset: usize,
    /// Index of the entry being decoded, if past the header.
    pub entry: Option<u64>,
    pub kind: DecodeErrorKind,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}", self.offset)?;
        if let Some(entry) = self.entry {
            write!(f, " (entry {entry})")?;
        }
        write!(f, ": {}", self.kind)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    NotAManifest,
    UnsupportedVersion(u32),
    Truncated { field: &'static str },
    UnknownKind(u8),
    BadFlags(u8),
    Invalid { path: Vec<u8>, reason: InvalidEntry },
    TrailingBytes(usize),
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAManifest => f.write_str("not a velo manifest (bad magic)"),
            Self::UnsupportedVersion(v) => {
                write!(f, "manifest format version {v}, this velo reads {VERSION}")
            }
            Self::Truncated { field } => {
                write!(f, "file ends in the middle of the {field}: truncated")
            }
            Self::UnknownKind(k) => write!(f, "unknown entry kind {k}"),
            Self::BadFlags(b) => write!(f, "invalid flags {b:#04x}"),
            Self::Invalid { path, reason } => {
                write!(f, "{reason}: {:?}", super::display_path(path))
            }
            Self::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the last entry"),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    entry: Option<u64>,
}

impl<'a> Reader<'a> {
    fn err(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            offset: self.pos,
            entry: self.entry,
            kind,
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        match self.bytes.get(self.pos..self.pos.saturating_add(n)) {
            Some(s) if self.pos.checked_add(n).is_some() => {
                self.pos += n;
                Ok(s)
            }
            _ => Err(self.err(DecodeErrorKind::Truncated { field })),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, field)?;
        Ok(s.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }
}

pub fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
    let mut r = Reader {
        bytes,
        pos: 0,
        entry: None,
    };
    if r.bytes.len() < MAGIC.len() || &r.bytes[..MAGIC.len()] != MAGIC {
        return Err(r.err(DecodeErrorKind::NotAManifest));
    }
    r.pos = MAGIC.len();
    let version_at = r.pos;
    let version = r.u32("format version")?;
    if version != VERSION {
        r.pos = version_at;
        return Err(r.err(DecodeErrorKind::UnsupportedVersion(version)));
    }
    let count = r.u64("entry count")?;
    // Every entry takes at least 6 bytes; never pre-allocate more than the input can hold.
    let mut entries = Vec::with_capacity(count.min((bytes.len() / 6) as u64) as usize);
    for index in 0..count {
        r.entry = Some(index);
        let start = r.pos;
        let kind = r.u8("entry kind")?;
        let flags_at = r.pos;
        let flags = r.u8("entry flags")?;
        let path = r.bytes("entry path")?.to_vec();
        let kind = match kind {
            KIND_DIR => Kind::Dir,
            KIND_FILE => {
                let size = r.u64("file size")?;
                let hash = Hash::from_bytes(r.array("content hash")?);
                Kind::File {
                    hash,
                    size,
                    exec: flags & FLAG_EXEC != 0,
                }
            }
            KIND_SYMLINK => Kind::Symlink {
                target: r.bytes("symlink target")?.to_vec(),
            },
            other => {
                r.pos = start;
                return Err(r.err(DecodeErrorKind::UnknownKind(other)));
            }
        };
        let allowed = if matches!(kind, Kind::File { .. }) {
            FLAG_EXEC
        } else {
            0
        };
        if flags & !allowed != 0 {
            r.pos = flags_at;
            return Err(r.err(DecodeErrorKind::BadFlags(flags)));
        }
        let entry = Entry { path, kind };
        if let Err(reason) = check_next(entries.last(), &entry) {
            r.pos = start;
            return Err(r.err(DecodeErrorKind::Invalid {
                path: entry.path,
                reason,
            }));
        }
        entries.push(entry);
    }
    r.entry = None;
    if r.pos != bytes.len() {
        return Err(r.err(DecodeErrorKind::TrailingBytes(bytes.len() - r.pos)));
    }
    Ok(Manifest { entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest::from_entries(vec![
            Entry {
                path: b"bin".to_vec(),
                kind: Kind::Dir,
            },
            Entry {
                path: b"bin/run".to_vec(),
                kind: Kind::File {
                    hash: blake3::hash(b"#!/bin/sh\n"),
                    size: 10,
                    exec: true,
                },
            },
            Entry {
                path: b"caf\xe9".to_vec(),
                kind: Kind::File {
                    hash: blake3::hash(b""),
                    size: 0,
                    exec: false,
                },
            },
            Entry {
                path: b"link".to_vec(),
                kind: Kind::Symlink {
                    target: b"bin/run".to_vec(),
                },
            },
        ])
        .unwrap()
    }

    #[test]
    fn round_trips_including_non_utf8_names() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(decode(&bytes).unwrap(), m);
        assert_eq!(decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn encodes_to_tells_its_own_encoding_from_any_other() {
        let mut entries = vec![Entry {
            path: b"d".to_vec(),
            kind: Kind::Dir,
        }];
        for i in 0..3 * PIECE {
            let path = format!("d/f{i:05}").into_bytes();
            let kind = if i % 7 == 0 {
                Kind::Symlink {
                    target: b"elsewhere".to_vec(),
                }
            } else {
                Kind::File {
                    hash: blake3::hash(&path),
                    size: i as u64,
                    exec: i % 3 == 0,
                }
            };
            entries.push(Entry { path, kind });
        }
        for m in [sample(), Manifest::from_entries(entries).unwrap()] {
            let bytes = m.encode();
            assert!(encodes_to(&m, &bytes));
            assert!(!encodes_to(&m, &bytes[..bytes.len() - 1]));
            assert!(!encodes_to(&m, &[&bytes[..], b"x"].concat()));
            for at in (0..bytes.len()).step_by(bytes.len() / 500 + 1) {
                let mut changed = bytes.clone();
                changed[at] ^= 1;
                assert!(!encodes_to(&m, &changed), "byte {at} changed");
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error_naming_a_field() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).unwrap_err();
            assert!(
                matches!(
                    err.kind,
                    DecodeErrorKind::Truncated { .. } | DecodeErrorKind::NotAManifest
                ),
                "len {len}: {err}"
            );
        }
    }

    #[test]
    fn errors_say_where() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(
            decode(&bytes).unwrap_err().to_string(),
            format!(
                "at byte {}: 1 unexpected bytes after the last entry",
                bytes.len() - 1
            )
        );
        let bytes = sample().encode();
        let err = decode(&bytes[..bytes.len() - 3]).unwrap_err();
        assert_eq!(err.entry, Some(3));
        assert!(
            err.to_string().contains("symlink target: truncated"),
            "{err}"
        );
    }

    #[test]
    fn rejects_hostile_paths() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&[KIND_DIR, 0]);
        bytes.extend_from_slice(&5u32.to_le_bytes());
        bytes.extend_from_slice(b"../up");
        let err = decode(&bytes).unwrap_err();
        assert_eq!(err.offset, 20);
        assert!(matches!(
            err.kind,
            DecodeErrorKind::Invalid {
                reason: InvalidEntry::NotNormalized,
                ..
            }
        ));
    }

    #[test]
    fn a_huge_entry_count_does_not_allocate_up_front() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode(&bytes).unwrap_err().kind,
            DecodeErrorKind::Truncated { .. }
        ));
    }
}
