//! Manifests: a whole tree named by content.
//!
//! A [`Manifest`] lists every directory, file and symlink of a tree by its path relative to the
//! tree's root. A file is its content hash, size and executable bit; a symlink is its target;
//! a directory is only its path (so empty directories survive). Nothing else is recorded: no
//! timestamps, owners or permission bits beyond "executable", so the same tree ingested from
//! two directories, on two machines or on two days has the same encoding, and the BLAKE3 of
//! that encoding, the [`ManifestId`], names the tree.
//!
//! The byte format is in [`encoding`] and `docs/manifest.md`. Decoding is where untrusted input
//! enters velo, so [`Manifest::decode`] validates everything invariant 5 asks: relative,
//! normalized paths without `..` or NUL, canonical order without duplicates, and every entry's
//! parent present as a directory. A manifest value that exists is therefore always well formed.

pub mod diff;
pub mod encoding;
pub mod text;

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use blake3::Hash;

use crate::store::{self, BlobKey};

pub use diff::{Change, Diff};
pub use encoding::{DecodeError, DecodeErrorKind};

/// The BLAKE3 of a manifest's canonical encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ManifestId(pub Hash);

impl fmt::Display for ManifestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_hex())
    }
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { hash: Hash, size: u64, exec: bool },
    Symlink { target: Vec<u8> },
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File { .. } => "file",
            Kind::Symlink { .. } => "symlink",
        }
    }
}

/// One path of the tree. `path` is relative, `/`-separated raw bytes (Unix names need not be
/// UTF-8, and they round-trip exactly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: Kind,
}

impl Entry {
    /// The store blob this entry's content lives in, for files.
    pub fn blob(&self) -> Option<BlobKey> {
        match self.kind {
            Kind::File { hash, exec, .. } => Some(BlobKey { hash, exec }),
            _ => None,
        }
    }
}

/// Why a set of entries is not a valid tree.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEntry {
    #[error("empty path")]
    Empty,
    #[error("absolute path")]
    Absolute,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path is not normalized (empty, `.` or `..` component, or trailing `/`)")]
    NotNormalized,
    #[error("entries out of canonical order")]
    Unsorted,
    #[error("duplicate path")]
    Duplicate,
    #[error("parent directory is not in the manifest")]
    MissingParent,
    #[error("symlink with an empty target or a NUL byte in it")]
    BadSymlinkTarget,
}

/// A validated tree: entries in canonical order, each with its parent directory before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    entries: Vec<Entry>,
}

impl Manifest {
    /// Sorts `entries` into canonical order and validates them.
    pub fn from_entries(mut entries: Vec<Entry>) -> Result<Manifest, (Vec<u8>, InvalidEntry)> {
        // Walks give their entries in order already. Entries that pass as they are are sorted
        // (the check compares each with the one before), so sorting would change nothing; on
        // any failure, sort, and the check of the sorted entries decides.
        if validate(&entries).is_err() {
            entries.sort_by(|a, b| canonical_order(&a.path, &b.path));
            validate(&entries)?;
        }
        Ok(Manifest { entries })
    }

    /// Entries in canonical order of which the caller has checked each with [`check_next`]
    /// against the one before it, except those at positions `unchecked`, which are checked
    /// here. (The ingest walk checks entries as it makes them, on every core and while they are
    /// in the cache, all but the first of each run it puts together; a debug build checks every
    /// entry again.)
    pub fn from_checked(
        entries: Vec<Entry>,
        unchecked: impl Iterator<Item = usize>,
    ) -> Result<Manifest, (Vec<u8>, InvalidEntry)> {
        for i in unchecked {
            let entry = &entries[i];
            check_next(i.checked_sub(1).map(|p| &entries[p]), entry)
                .map_err(|e| (entry.path.clone(), e))?;
        }
        debug_assert_eq!(validate(&entries), Ok(()));
        Ok(Manifest { entries })
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn id(&self) -> ManifestId {
        ManifestId(blake3::hash(&self.encode()))
    }

    /// The canonical encoding (see [`encoding`]).
    pub fn encode(&self) -> Vec<u8> {
        encoding::encode(self)
    }

    /// Decodes and validates a manifest.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
        encoding::decode(bytes)
    }

    /// Reads a manifest file; the error names the file and where in it decoding failed.
    pub fn read(path: &Path) -> Result<Manifest, ReadError> {
        let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::decode(&bytes).map_err(|source| ReadError::Decode {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes the manifest to `path` atomically and durably, unless `path` already holds
    /// exactly these bytes (re-ingesting an unchanged tree then touches nothing).
    pub fn write(&self, path: &Path) -> Result<ManifestId, store::Error> {
        self.write_after(path, || Ok(())).map(|(id, _)| id)
    }

    /// [`write`](Self::write), running `before_write` first when the file is to be written
    /// (ingest makes the blobs durable there); returns the id and whether it wrote.
    pub fn write_after(
        &self,
        path: &Path,
        before_write: impl FnOnce() -> Result<(), store::Error>,
    ) -> Result<(ManifestId, bool), store::Error> {
        // SAFETY: only read; a concurrent writer replaces manifests by rename (`write_atomic`),
        // and a changed mapping can only make the answer "differs".
        let old = std::fs::File::open(path)
            .and_then(|file| unsafe { memmap2::MmapOptions::new().populate().map(&file) })
            .ok();
        let old = old.as_deref().unwrap_or_default();
        // Unchanged, the encoding is only compared with the file, a piece at a time on every
        // core, and the file's bytes are hashed: a 10 MB manifest then never exists in memory
        // (its fresh pages cost more than encoding it).
        if encoding::encodes_to(self, old) {
            return Ok((ManifestId(hash(old)), false));
        }
        let bytes = self.encode();
        let id = ManifestId(hash(&bytes));
        before_write()?;
        store::write_atomic(path, &bytes, true)?;
        Ok((id, true))
    }

    /// Sum of file sizes.
    pub fn logical_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }

    /// Every blob the manifest needs.
    pub fn blobs(&self) -> impl Iterator<Item = BlobKey> + '_ {
        self.entries.iter().filter_map(Entry::blob)
    }
}

/// The BLAKE3 of `bytes`, on every core for a large manifest.
fn hash(bytes: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    if bytes.len() >= 1 << 20 {
        hasher.update_rayon(bytes);
    } else {
        hasher.update(bytes);
    }
    hasher.finalize()
}

/// Errors reading a manifest file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read manifest {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {path} is corrupt: {source}", path = .path.display())]
    Decode { path: PathBuf, source: DecodeError },
}

/// The canonical order of paths: component by component, bytewise. Equivalent to comparing
/// bytes with `/` ranked below every other byte, which puts a directory right before its
/// contents (`a`, `a/b`, `a.txt`) and makes the order a depth-first walk of the tree.
pub use velo_intercept::mirage::cmp_canonical as canonical_order;

/// Checks one path on its own: relative, normalized, no NUL.
pub fn check_path(path: &[u8]) -> Result<(), InvalidEntry> {
    if path.is_empty() {
        return Err(InvalidEntry::Empty);
    }
    if path[0] == b'/' {
        return Err(InvalidEntry::Absolute);
    }
    if memchr::memchr(0, path).is_some() {
        return Err(InvalidEntry::Nul);
    }
    // Component by component, the slashes found by `memchr` (a byte loop was a tenth of an
    // unchanged tree's re-ingest).
    let mut start = 0;
    for end in memchr::memchr_iter(b'/', path).chain([path.len()]) {
        if matches!(&path[start..end], b"" | b"." | b"..") {
            return Err(InvalidEntry::NotNormalized);
        }
        start = end + 1;
    }
    Ok(())
}

/// Checks that `entry` may follow `previous` (`None` for the first entry): its path alone
/// ([`check_path`]), its symlink target, canonical order without duplicates, and its parent.
///
/// Each pair is checked on its own, so entries can be checked on every core. The parent rule
/// is: the entry before one whose parent is `p` is either `p` itself, a directory, or inside
/// `p`. In canonical order everything between `p` and `p/name` is inside `p`, so a valid tree
/// passes; and by induction over the entries, an entry inside `p` shows `p` present as a
/// directory, since the first entry inside `p` must follow `p` itself.
pub fn check_next(previous: Option<&Entry>, entry: &Entry) -> Result<(), InvalidEntry> {
    check_path(&entry.path)?;
    if let Kind::Symlink { target } = &entry.kind
        && (target.is_empty() || target.contains(&0))
    {
        return Err(InvalidEntry::BadSymlinkTarget);
    }
    if let Some(previous) = previous {
        match canonical_order(&previous.path, &entry.path) {
            Ordering::Less => {}
            Ordering::Equal => return Err(InvalidEntry::Duplicate),
            Ordering::Greater => return Err(InvalidEntry::Unsorted),
        }
    }
    let Some(slash) = memchr::memrchr(b'/', &entry.path) else {
        return Ok(());
    };
    let parent = &entry.path[..slash];
    let present = previous.is_some_and(|previous| {
        let p = &previous.path[..];
        (p == parent && previous.kind == Kind::Dir)
            || (p.len() > slash && p.starts_with(parent) && p[slash] == b'/')
    });
    if present {
        Ok(())
    } else {
        Err(InvalidEntry::MissingParent)
    }
}

/// [`check_next`] of every entry, on every core; the error is the first entry's that fails.
fn validate(entries: &[Entry]) -> Result<(), (Vec<u8>, InvalidEntry)> {
    use rayon::prelude::*;
    let check = |i: usize| check_next(i.checked_sub(1).map(|p| &entries[p]), &entries[i]);
    let failed = (0..entries.len())
        .into_par_iter()
        .with_min_len(4096)
        .find_first(|&i| check(i).is_err());
    match failed {
        None => Ok(()),
        Some(i) => Err((entries[i].path.clone(), check(i).expect_err("it failed"))),
    }
}

/// Renders raw path bytes for people: plain UTF-8 as is. A path holding bytes that are not
/// UTF-8, or control characters (C0, DEL, C1: an ESC sequence would reach the terminal, a
/// newline would split a table row), is escaped: such bytes as `\xNN`, control characters as
/// `\xNN` or `\u{NN}`, and `\` as `\\`, so the rendering stays unambiguous.
pub fn display_path(bytes: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.chars().any(char::is_control)
    {
        return s.to_owned();
    }
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() && (c as u32) < 0x80 => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &str) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            kind: Kind::Dir,
        }
    }
    fn file(p: &str) -> Entry {
        Entry {
            path: p.as_bytes().to_vec(),
            kind: Kind::File {
                hash: blake3::hash(p.as_bytes()),
                size: p.len() as u64,
                exec: false,
            },
        }
    }

    #[test]
    fn canonical_order_puts_directory_contents_right_after_the_directory() {
        let m = Manifest::from_entries(vec![file("a.txt"), file("a/b"), dir("a"), file("a-b")])
            .unwrap();
        let paths: Vec<_> = m.entries().iter().map(|e| display_path(&e.path)).collect();
        assert_eq!(paths, ["a", "a/b", "a-b", "a.txt"]);
    }

    #[test]
    fn canonical_order_is_componentwise() {
        // The fast comparison must agree with comparing component lists.
        let paths: [&[u8]; 9] = [
            b"a", b"a/b", b"a.txt", b"a-b", b"ab", b"a/b/c", b"a/\xff", b"b", b"\x01",
        ];
        for x in paths {
            for y in paths {
                let slow = x.split(|&c| c == b'/').cmp(y.split(|&c| c == b'/'));
                assert_eq!(canonical_order(x, y), slow, "{x:?} vs {y:?}");
            }
        }
    }

    #[test]
    fn rejects_bad_paths() {
        for (p, err) in [
            ("/etc/passwd", InvalidEntry::Absolute),
            ("a/../b", InvalidEntry::NotNormalized),
            ("./a", InvalidEntry::NotNormalized),
            ("a//b", InvalidEntry::NotNormalized),
            ("a/", InvalidEntry::NotNormalized),
            ("a\0b", InvalidEntry::Nul),
            ("", InvalidEntry::Empty),
        ] {
            assert_eq!(check_path(p.as_bytes()), Err(err), "{p:?}");
        }
    }

    #[test]
    fn rejects_missing_parents_and_duplicates() {
        assert_eq!(
            Manifest::from_entries(vec![file("a/b")]).unwrap_err().1,
            InvalidEntry::MissingParent
        );
        // A file cannot be a parent.
        assert_eq!(
            Manifest::from_entries(vec![file("a"), file("a/b")])
                .unwrap_err()
                .1,
            InvalidEntry::MissingParent
        );
        assert_eq!(
            Manifest::from_entries(vec![file("a"), file("a")])
                .unwrap_err()
                .1,
            InvalidEntry::Duplicate
        );
        // Deep nesting after a sibling subtree still finds its parent.
        Manifest::from_entries(vec![
            dir("a"),
            dir("a/b"),
            file("a/b/c"),
            dir("a/d"),
            file("a/d/e"),
            file("z"),
        ])
        .unwrap();
    }

    #[test]
    fn display_escapes_non_utf8_and_control_characters() {
        assert_eq!(display_path(b"caf\xc3\xa9"), "café");
        assert_eq!(display_path(b"a\\b"), "a\\b");
        assert_eq!(display_path(b"a\\\xffb"), "a\\\\\\xffb");
        assert_eq!(display_path(b"\x1b[31mred\nrow"), "\\x1b[31mred\\x0arow");
        assert_eq!(display_path("a\u{9b}b\\".as_bytes()), "a\\u{9b}b\\\\");
        assert_eq!(display_path(b"del\x7f"), "del\\x7f");
    }

    #[test]
    fn write_replaces_a_file_that_differs_anywhere() {
        let m = Manifest::from_entries(vec![dir("a"), file("a/b"), file("c")]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.velo");
        let encoded = m.encode();
        let cases: [(&str, Vec<u8>); 4] = [
            ("missing", Vec::new()),
            ("more bytes after", [&encoded[..], b"junk"].concat()),
            ("cut short", encoded[..encoded.len() - 1].to_vec()),
            ("a byte changed", {
                let mut e = encoded.clone();
                *e.last_mut().unwrap() ^= 1;
                e
            }),
        ];
        for (what, old) in cases {
            if old.is_empty() {
                let _ = std::fs::remove_file(&path);
            } else {
                std::fs::write(&path, &old).unwrap();
            }
            let (id, written) = m.write_after(&path, || Ok(())).unwrap();
            assert!(written, "{what}");
            assert_eq!(std::fs::read(&path).unwrap(), encoded, "{what}");
            assert_eq!(id, m.id(), "{what}");
            let (_, again) = m.write_after(&path, || Ok(())).unwrap();
            assert!(!again, "{what}: identical bytes are not rewritten");
        }
    }
}
