//! `velo manifest diff`: which paths two manifests add, remove or change.
//!
//! Both entry lists are in canonical order, so one merge pass finds every difference.

use std::cmp::Ordering;

use serde::Serialize;

use super::{Entry, Kind, Manifest, canonical_order, display_path};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "change")]
pub enum Change {
    Added {
        path: String,
        kind: &'static str,
    },
    Removed {
        path: String,
        kind: &'static str,
    },
    /// Same path, different kind, content, executable bit or symlink target.
    Changed {
        path: String,
        old: String,
        new: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub changes: Vec<Change>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// A short description of what an entry holds, for "changed" lines.
pub fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Dir => "dir".to_owned(),
        Kind::File { hash, size, exec } => {
            let hex = hash.to_hex();
            format!(
                "file {} {size} B{}",
                &hex[..12],
                if *exec { " exec" } else { "" }
            )
        }
        Kind::Symlink { target } => format!("symlink -> {}", display_path(target)),
    }
}

pub fn diff(old: &Manifest, new: &Manifest) -> Diff {
    let (a, b) = (old.entries(), new.entries());
    let (mut i, mut j) = (0, 0);
    let mut changes = Vec::new();
    let added = |e: &Entry| Change::Added {
        path: display_path(&e.path),
        kind: e.kind.name(),
    };
    let removed = |e: &Entry| Change::Removed {
        path: display_path(&e.path),
        kind: e.kind.name(),
    };
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => canonical_order(&x.path, &y.path),
            (Some(_), None) => Ordering::Less,
            (None, _) => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                changes.push(removed(&a[i]));
                i += 1;
            }
            Ordering::Greater => {
                changes.push(added(&b[j]));
                j += 1;
            }
            Ordering::Equal => {
                if a[i].kind != b[j].kind {
                    changes.push(Change::Changed {
                        path: display_path(&a[i].path),
                        old: describe(&a[i].kind),
                        new: describe(&b[j].kind),
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }
    Diff { changes }
}
