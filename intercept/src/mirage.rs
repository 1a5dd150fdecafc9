//! The mirage image: a manifest's tree laid out for lookups by the shim (Mode B, `velo run
//! --mode shim`).
//!
//! A `.velo` manifest is a stream of variable-length entries, made to be hashed and read once. The
//! shim instead answers `stat`, `open` and `readdir` for one path at a time, inside hooks that may
//! not allocate, so velo writes the merged tree once more, as an *image* the shim maps read-only
//! and searches in place: `<store>/mirage/<manifest id>.img`, built once per manifest id (like the
//! farm cache) and written under a temporary name then renamed.
//!
//! ```text
//! header   (64 bytes)
//!   magic      8 bytes "velo-mi\n"
//!   version    u32     1
//!   count      u32     entries, the root directory first
//!   strings    u64     offset of the string area
//!   strings_len u64
//!   blobs      u32,u32 offset/length (in the string area) of the store's `blobs/` directory
//!   reserved   24 bytes
//! entry    (64 bytes each, `count` of them, in the manifest's canonical order)
//!   path       u32,u32 offset/length of the path relative to the root ("" for the root)
//!   end        u32     index just past this entry's subtree (files and symlinks: index + 1)
//!   parent     u32     index of the parent directory (the root: itself)
//!   kind       u8      1 directory, 2 file, 3 symlink
//!   exec       u8      1 when the file is executable (its blob is `<hash>.x`)
//!   pad        u16
//!   nlink      u32     directories: 2 + subdirectories, as ext4 reports it
//!   size       u64     files: content size; symlinks: target length
//!   hash       32 bytes files: BLAKE3 of the content; symlinks: target offset/length (u32,u32)
//! strings  paths, symlink targets and the blobs directory, unterminated
//! ```
//!
//! Canonical order (`/` below every other byte) is a depth-first walk, so a directory's subtree
//! is the contiguous range `index + 1 .. end`, its children are found by hopping from one child's
//! `end` to the next, and a path is found by binary search over that range. Integers are
//! little-endian; the image is only ever read on the machine that wrote it.

use core::cmp::Ordering;

pub const MAGIC: &[u8; 8] = b"velo-mi\n";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 64;
pub const ENTRY_LEN: usize = 64;

pub const DIR: u8 = 1;
pub const FILE: u8 = 2;
pub const SYMLINK: u8 = 3;

/// Compares two relative paths in canonical order: bytewise, with `/` below every other byte,
/// so a directory's contents sort right after it. (The manifest's order; a lookup compares a
/// path's last part with a name this way in every hook, and an ingest sorts by it.)
pub fn cmp_canonical(a: &[u8], b: &[u8]) -> Ordering {
    let rank = |c: u8| if c == b'/' { 0u16 } else { u16::from(c) + 1 };
    // Only the first differing byte matters; up to it the paths are equal.
    match mismatch(a, b) {
        Some(i) => rank(a[i]).cmp(&rank(b[i])),
        None => a.len().cmp(&b.len()),
    }
}

/// The first index where `a` and `b` differ, within the shorter one; eight bytes at a time,
/// since sorted paths share long prefixes.
fn mismatch(a: &[u8], b: &[u8]) -> Option<usize> {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    while i + 8 <= n {
        let word = |s: &[u8]| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
        let diff = word(a) ^ word(b);
        if diff != 0 {
            return Some(i + (diff.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    (i..n).find(|&j| a[j] != b[j])
}

/// A validated image in memory (a mapping of the file, in the shim).
#[derive(Clone, Copy)]
pub struct Image<'a> {
    bytes: &'a [u8],
    count: u32,
    strings: &'a [u8],
}

/// One entry of an [`Image`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub index: u32,
    pub path: &'a [u8],
    pub end: u32,
    pub parent: u32,
    pub kind: u8,
    pub exec: bool,
    pub nlink: u32,
    pub size: u64,
    /// Files: the BLAKE3 of the content.
    pub hash: &'a [u8; 32],
    /// Symlinks: the target.
    pub target: &'a [u8],
}

impl<'a> Entry<'a> {
    /// The last component of the path ("" for the root).
    pub fn name(&self) -> &'a [u8] {
        match self.path.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.path[i + 1..],
            None => self.path,
        }
    }
    pub fn is_dir(&self) -> bool {
        self.kind == DIR
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

impl<'a> Image<'a> {
    /// Checks the header and that every table lies inside `bytes`; `None` if it does not.
    /// Entries themselves are trusted: velo wrote them from a validated manifest.
    pub fn parse(bytes: &'a [u8]) -> Option<Image<'a>> {
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC || u32_at(bytes, 8) != VERSION {
            return None;
        }
        let count = u32_at(bytes, 12);
        let strings_at = usize::try_from(u64_at(bytes, 16)).ok()?;
        let strings_len = usize::try_from(u64_at(bytes, 24)).ok()?;
        let entries_end = HEADER_LEN.checked_add((count as usize).checked_mul(ENTRY_LEN)?)?;
        if count == 0
            || entries_end > strings_at
            || strings_at.checked_add(strings_len)? > bytes.len()
        {
            return None;
        }
        Some(Image {
            bytes,
            count,
            strings: &bytes[strings_at..strings_at + strings_len],
        })
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    #[inline]
    fn string(&self, at: usize) -> &'a [u8] {
        let Some(&[a, b, c, d, e, f, g, h]) = self.bytes.get(at..at + 8) else {
            return &[];
        };
        let (off, len) = (
            u32::from_le_bytes([a, b, c, d]) as usize,
            u32::from_le_bytes([e, f, g, h]) as usize,
        );
        self.strings.get(off..off + len).unwrap_or(&[])
    }

    /// The store's `blobs/` directory (absolute).
    pub fn blobs_dir(&self) -> &'a [u8] {
        self.string(32)
    }

    /// The path of entry `index` alone (what a lookup compares).
    #[inline]
    pub fn path(&self, index: u32) -> &'a [u8] {
        self.string(HEADER_LEN + index as usize * ENTRY_LEN)
    }

    /// Entry `index`; `index` must be below [`Image::len`].
    pub fn entry(&self, index: u32) -> Entry<'a> {
        let at = HEADER_LEN + index as usize * ENTRY_LEN;
        let b = self.bytes;
        let kind = b[at + 16];
        let hash: &'a [u8; 32] = b[at + 32..at + 64].try_into().expect("32 bytes");
        Entry {
            index,
            path: self.string(at),
            end: u32_at(b, at + 8),
            parent: u32_at(b, at + 12),
            kind,
            exec: b[at + 17] != 0,
            nlink: u32_at(b, at + 20),
            size: u64_at(b, at + 24),
            hash,
            target: if kind == SYMLINK {
                self.string(at + 32)
            } else {
                &[]
            },
        }
    }

    /// The entry of `parent`'s child called `name`: a binary search over `parent`'s subtree.
    pub fn child(&self, parent: u32, name: &[u8]) -> Option<u32> {
        let at = HEADER_LEN + parent as usize * ENTRY_LEN;
        if self.bytes.get(at + 16) != Some(&DIR) || name.is_empty() {
            return None;
        }
        // Every path in the subtree starts with `parent/` (canonical order keeps a subtree
        // contiguous), so only what follows that prefix is compared: the lookup of a path
        // component costs its own length, not its depth.
        let dir_len = u32_at(self.bytes, at + 4) as usize;
        let skip = if dir_len == 0 { 0 } else { dir_len + 1 };
        let (mut lo, mut hi) = (parent + 1, u32_at(self.bytes, at + 8).min(self.count));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let tail = self.path(mid).get(skip..).unwrap_or(&[]);
            match cmp_canonical(tail, name) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The first child of directory `dir` at or after position `from` (an entry index inside
    /// `dir`'s subtree that is a child, or `dir + 1`), or `None` past the last.
    pub fn next_child(&self, dir: u32, from: u32) -> Option<u32> {
        let end = self.entry(dir).end.min(self.count);
        (from > dir && from < end).then_some(from)
    }

    /// The child after `child`.
    pub fn after(&self, dir: u32, child: u32) -> Option<u32> {
        self.next_child(dir, self.entry(child).end)
    }
}

/// Writes an image (velo's side). Entries must come in canonical order, the root first.
pub mod write {
    extern crate alloc;
    use alloc::vec::Vec;

    use super::*;

    /// One entry to write; `end`, `parent` and `nlink` are computed.
    pub struct Input<'a> {
        pub path: &'a [u8],
        pub kind: u8,
        pub exec: bool,
        pub size: u64,
        pub hash: [u8; 32],
        pub target: &'a [u8],
    }

    /// The image of `entries` (the root excluded: it is added) for a store whose blobs live in
    /// `blobs_dir`.
    pub fn image(entries: &[Input], blobs_dir: &[u8]) -> Vec<u8> {
        let n = entries.len() + 1;
        let mut end = alloc::vec![0u32; n];
        let mut parent = alloc::vec![0u32; n];
        let mut nlink = alloc::vec![0u32; n];
        // Open directories on the way down, as (index, path).
        let mut stack: Vec<(u32, &[u8])> = alloc::vec![(0, &b""[..])];
        nlink[0] = 2;
        for (i, e) in entries.iter().enumerate() {
            let i = i as u32 + 1;
            while stack.len() > 1 {
                let (d, p) = *stack.last().expect("non-empty");
                if e.path.len() > p.len() && e.path.starts_with(p) && e.path[p.len()] == b'/' {
                    break;
                }
                end[d as usize] = i;
                stack.pop();
            }
            let (p, _) = *stack.last().expect("the root stays");
            parent[i as usize] = p;
            end[i as usize] = i + 1;
            if e.kind == DIR {
                nlink[p as usize] += 1;
                nlink[i as usize] = 2;
                stack.push((i, e.path));
            } else {
                nlink[i as usize] = 1;
            }
        }
        for (d, _) in stack {
            end[d as usize] = n as u32;
        }

        let mut strings = Vec::new();
        let mut put = |s: &[u8]| {
            let at = strings.len() as u32;
            strings.extend_from_slice(s);
            (at, s.len() as u32)
        };
        let blobs = put(blobs_dir);
        let mut table = Vec::with_capacity(n * ENTRY_LEN);
        let root = Input {
            path: b"",
            kind: DIR,
            exec: false,
            size: 0,
            hash: [0; 32],
            target: b"",
        };
        for (i, e) in core::iter::once(&root).chain(entries).enumerate() {
            let (off, len) = put(e.path);
            table.extend_from_slice(&off.to_le_bytes());
            table.extend_from_slice(&len.to_le_bytes());
            table.extend_from_slice(&end[i].to_le_bytes());
            table.extend_from_slice(&parent[i].to_le_bytes());
            table.push(e.kind);
            table.push(u8::from(e.exec));
            table.extend_from_slice(&[0, 0]);
            table.extend_from_slice(&nlink[i].to_le_bytes());
            if e.kind == SYMLINK {
                let (t_off, t_len) = put(e.target);
                table.extend_from_slice(&u64::from(t_len).to_le_bytes());
                let mut slot = [0u8; 32];
                slot[..4].copy_from_slice(&t_off.to_le_bytes());
                slot[4..8].copy_from_slice(&t_len.to_le_bytes());
                table.extend_from_slice(&slot);
            } else {
                table.extend_from_slice(&e.size.to_le_bytes());
                table.extend_from_slice(&e.hash);
            }
        }
        let strings_at = HEADER_LEN + table.len();
        let mut out = Vec::with_capacity(strings_at + strings.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(n as u32).to_le_bytes());
        out.extend_from_slice(&(strings_at as u64).to_le_bytes());
        out.extend_from_slice(&(strings.len() as u64).to_le_bytes());
        out.extend_from_slice(&blobs.0.to_le_bytes());
        out.extend_from_slice(&blobs.1.to_le_bytes());
        out.resize(HEADER_LEN, 0);
        out.extend_from_slice(&table);
        out.extend_from_slice(&strings);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::write::{Input, image};
    use super::*;
    use std::vec::Vec;

    fn input(path: &'static str, kind: u8) -> Input<'static> {
        Input {
            path: path.as_bytes(),
            kind,
            exec: path.ends_with(".sh"),
            size: path.len() as u64,
            hash: [path.len() as u8; 32],
            target: if kind == SYMLINK { b"../x" } else { b"" },
        }
    }

    #[test]
    fn an_image_finds_every_path_and_lists_every_directory() {
        let entries = [
            input("a", DIR),
            input("a/b", DIR),
            input("a/b/c.txt", FILE),
            input("a/run.sh", FILE),
            input("a-b", FILE),
            input("link", SYMLINK),
            input("z", DIR),
        ];
        let bytes = image(&entries, b"/store/blobs");
        let img = Image::parse(&bytes).expect("valid");
        assert_eq!(img.len(), 8);
        assert_eq!(img.blobs_dir(), b"/store/blobs");
        let find = |path: &str| {
            let mut at = 0;
            for part in path.split('/') {
                at = img.child(at, part.as_bytes())?;
            }
            Some(img.entry(at))
        };
        assert_eq!(find("a/b/c.txt").unwrap().path, b"a/b/c.txt");
        assert!(find("a/run.sh").unwrap().exec);
        assert_eq!(find("link").unwrap().target, b"../x");
        assert_eq!(find("a/missing"), None);
        assert_eq!(img.child(3, b"x"), None, "a file has no children");
        let children = |d: u32| {
            let mut out = Vec::new();
            let mut c = img.next_child(d, d + 1);
            while let Some(i) = c {
                out.push(std::string::String::from_utf8_lossy(img.entry(i).name()).into_owned());
                c = img.after(d, i);
            }
            out
        };
        assert_eq!(children(0), ["a", "a-b", "link", "z"]);
        assert_eq!(children(1), ["b", "run.sh"]);
        assert_eq!(children(7), Vec::<std::string::String>::new());
        assert_eq!(img.entry(0).nlink, 4, "root: 2 + a + z");
        assert_eq!(img.entry(1).nlink, 3, "a: 2 + b");
        assert_eq!(img.entry(3).parent, 2);
        assert!(Image::parse(&bytes[..40]).is_none());
    }

    #[test]
    fn canonical_order_puts_slash_first() {
        assert_eq!(cmp_canonical(b"a/b", b"a-b"), Ordering::Less);
        assert_eq!(cmp_canonical(b"a", b"a/b"), Ordering::Less);
        assert_eq!(cmp_canonical(b"a.txt", b"a/b"), Ordering::Greater);
    }
}
