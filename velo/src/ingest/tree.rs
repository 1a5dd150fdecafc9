//! What a walk found, assembled: the entries in canonical order (which become the manifest
//! without a copy), the files' stat records, the directories listed, and what the index keeps
//! of each listing ([`named`]).

use super::index::Record;
use super::walk;
use crate::manifest::{Entry, Kind};

/// A manifest entry found by a walk, with a file's stat record.
pub(super) type Walked = (Entry, Option<Record>);

/// What a walk found: the entries in canonical order (apart from everything else, so that they
/// become the manifest without a copy); the stat records of the files among them; and, from
/// [`walk`], each directory it listed, in canonical order.
///
/// The records stay in the vectors the walk made them in (`records`, one per piece of a
/// directory), since they are needed only when the index is saved: `runs` says which entries
/// each vector's records belong to, in order, a vector's records spread over several runs
/// when its files are interleaved with subdirectories' contents.
#[derive(Default)]
pub(super) struct Tree {
    pub(super) entries: Vec<Entry>,
    pub(super) records: Vec<Vec<Record>>,
    /// A range of `entries` and the vector of `records` that holds its files' records.
    pub(super) runs: Vec<(std::ops::Range<usize>, usize)>,
    /// Whether the walk checked each entry of a run after the first against the one before it
    /// ([`Manifest::from_checked`]).
    pub(super) checked: bool,
    pub(super) dirs: Vec<std::sync::Arc<walk::Listing>>,
}

impl Tree {
    /// Appends `entries`, whose files' records are (next) in `records[run]`.
    pub(super) fn take(&mut self, run: usize, entries: impl Iterator<Item = Entry>) {
        let start = self.entries.len();
        self.entries.extend(entries);
        if self.entries.len() > start {
            self.runs.push((start..self.entries.len(), run));
        }
    }

    /// A tree of entries already in canonical order, with their records.
    pub(super) fn from_walked(walked: Vec<Walked>) -> Self {
        let mut records = Vec::with_capacity(walked.len());
        let entries: Vec<Entry> = walked
            .into_iter()
            .map(|(entry, record)| {
                records.extend(record);
                entry
            })
            .collect();
        let mut tree = Tree {
            records: vec![records],
            ..Tree::default()
        };
        tree.take(0, entries.into_iter());
        tree
    }

    /// How many files (and records) there are.
    pub(super) fn file_count(&self) -> usize {
        self.records.iter().map(Vec::len).sum()
    }

    /// Each file's path and record, in canonical order.
    pub(super) fn files(&self) -> impl Iterator<Item = (&[u8], Record)> {
        let mut next = vec![0; self.records.len()];
        self.runs.iter().flat_map(move |(range, run)| {
            let files = self.entries[range.clone()]
                .iter()
                .filter(|e| matches!(e.kind, Kind::File { .. }));
            let first = next[*run];
            next[*run] += files.clone().count();
            let records = self.records[*run][first..next[*run]].iter().copied();
            files.map(|e| e.path.as_slice()).zip(records)
        })
    }
}

/// A listing's slots and symlink targets, by name.
pub(super) type Named<'t> = (Vec<u32>, Vec<Option<&'t [u8]>>);

/// What the index records of each listing's names besides the names ([`index::DirRecord`]):
/// each name's slot, the position of its record among the files' records (in canonical order,
/// as the index saves them) or among `dirs`; and each symlink's target. One pass over the
/// entries, which are in canonical order: each entry is a name in the listing on top of a stack
/// of the directories it is in. (A name without an entry, as an excluded one, gets neither.)
pub(super) fn named<'t>(
    entries: &'t [Entry],
    dirs: &[std::sync::Arc<walk::Listing>],
) -> Vec<Named<'t>> {
    let mut named: Vec<Named> = dirs
        .iter()
        .map(|d| (vec![u32::MAX; d.names.len()], vec![None; d.names.len()]))
        .collect();
    // Listings the walk is in: (position in `dirs`, the next of its names to compare).
    let mut stack: Vec<(usize, usize)> = Vec::new();
    if dirs.first().is_some_and(|d| d.rel.is_empty()) {
        stack.push((0, 0));
    }
    let (mut next_dir, mut next_file) = (stack.len(), 0u32);
    for entry in entries {
        let (parent, name) = match memchr::memrchr(b'/', &entry.path) {
            Some(slash) => (&entry.path[..slash], &entry.path[slash + 1..]),
            None => (&[][..], &entry.path[..]),
        };
        while stack.last().is_some_and(|&(d, _)| dirs[d].rel != parent) {
            stack.pop();
        }
        let slot = match entry.kind {
            Kind::File { .. } => {
                next_file += 1;
                next_file - 1
            }
            Kind::Dir if dirs.get(next_dir).is_some_and(|d| d.rel == entry.path) => {
                next_dir += 1;
                (next_dir - 1) as u32
            }
            _ => u32::MAX,
        };
        if let Some((d, next)) = stack.last_mut() {
            let names = &dirs[*d].names;
            while *next < names.len() && names.get(*next).0.to_bytes() < name {
                *next += 1;
            }
            if *next < names.len() && names.get(*next).0.to_bytes() == name {
                let (slots, targets) = &mut named[*d];
                slots[*next] = slot;
                if let Kind::Symlink { target } = &entry.kind {
                    targets[*next] = Some(target.as_slice());
                }
            }
        }
        if entry.kind == Kind::Dir && slot != u32::MAX {
            stack.push((slot as usize, 0));
        }
    }
    named
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustix::fs::FileType::{Directory, RegularFile, Symlink};

    use super::*;
    use crate::ingest::index::{DirStat, Names};

    fn listing(rel: &str, names: &[(&str, rustix::fs::FileType)]) -> Arc<walk::Listing> {
        let stat = DirStat {
            dev: 0,
            ino: 0,
            mtime_ns: 0,
            ctime_ns: 0,
        };
        Arc::new(walk::Listing {
            rel: rel.as_bytes().to_vec(),
            stat,
            names: Names::of(names),
            recorded: false,
        })
    }

    fn entry(path: &str, kind: Kind) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind,
        }
    }

    #[test]
    fn each_name_gets_its_record_among_files_or_directories_and_its_target() {
        let file = || Kind::File {
            hash: blake3::hash(b""),
            size: 0,
            exec: false,
        };
        let link = || Kind::Symlink {
            target: b"t".to_vec(),
        };
        // `x` is excluded (a name without an entry); `u` was unreadable (an entry without a
        // listing); the files' records are numbered in canonical order: a/f, a/g, b, c/h.
        let dirs = [
            listing(
                "",
                &[
                    ("a", Directory),
                    ("b", RegularFile),
                    ("c", Directory),
                    ("l", Symlink),
                    ("x", RegularFile),
                ],
            ),
            listing(
                "a",
                &[("f", RegularFile), ("g", RegularFile), ("u", Directory)],
            ),
            listing("c", &[("h", RegularFile)]),
        ];
        let entries = [
            entry("a", Kind::Dir),
            entry("a/f", file()),
            entry("a/g", file()),
            entry("a/u", Kind::Dir),
            entry("b", file()),
            entry("c", Kind::Dir),
            entry("c/h", file()),
            entry("l", link()),
        ];
        let none = u32::MAX;
        let named = named(&entries, &dirs);
        let slots: Vec<_> = named.iter().map(|(slots, _)| slots.clone()).collect();
        assert_eq!(
            slots,
            [vec![1, 2, 2, none, none], vec![0, 1, none], vec![3]]
        );
        let t = Some(&b"t"[..]);
        assert_eq!(named[0].1, [None, None, None, t, None]);
        assert!(
            named[1..]
                .iter()
                .all(|(_, targets)| targets.iter().all(Option::is_none))
        );
    }
}
