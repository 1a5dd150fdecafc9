//! Merging layers: `--base` manifests first, then `--manifest`, later layers winning path by path.
//!
//! The rule is the one OverlayFS applies to its lower directories, so a farm and an `--isolate`
//! root agree:
//!
//! - a path present in a later layer replaces the same path from earlier layers;
//! - a directory over a directory merges: entries beneath come from every layer;
//! - anything else over a directory (a file or a symlink over a directory) hides the whole
//!   directory: nothing beneath it survives from earlier layers;
//! - a directory over a file or symlink replaces it.
//!
//! The merged tree is validated again as a manifest, so it cannot contain what a single manifest
//! may not (a file beneath a symlink, a path with `..`).

use std::collections::BTreeMap;

use crate::manifest::{InvalidEntry, Kind, Manifest, canonical_order, display_path};

#[derive(Debug, thiserror::Error)]
#[error("the merged layers are not a valid tree at {}: {reason}", display_path(.path))]
pub struct MergeError {
    pub path: Vec<u8>,
    pub reason: InvalidEntry,
}

/// Wrapper giving paths the manifest's canonical order in a map.
#[derive(PartialEq, Eq)]
struct Key(Vec<u8>);

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        canonical_order(&self.0, &other.0)
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Merges `layers` (first = lowest) into one manifest.
pub fn merge(layers: &[&Manifest]) -> Result<Manifest, MergeError> {
    if let [only] = layers {
        return Ok((*only).clone());
    }
    let mut tree: BTreeMap<Key, Kind> = BTreeMap::new();
    for layer in layers {
        for entry in layer.entries() {
            let key = Key(entry.path.clone());
            let hides_dir = entry.kind != Kind::Dir && tree.get(&key) == Some(&Kind::Dir);
            if hides_dir {
                // Remove everything beneath the directory this entry replaces. In canonical
                // order (`/` ranks lowest) the descendants of `p` follow `p` contiguously.
                let mut prefix = entry.path.clone();
                prefix.push(b'/');
                let doomed: Vec<Vec<u8>> = tree
                    .range(Key(prefix.clone())..)
                    .take_while(|(k, _)| k.0.starts_with(&prefix))
                    .map(|(k, _)| k.0.clone())
                    .collect();
                for path in doomed {
                    tree.remove(&Key(path));
                }
            }
            tree.insert(key, entry.kind.clone());
        }
    }
    let entries = tree
        .into_iter()
        .map(|(k, kind)| crate::manifest::Entry { path: k.0, kind })
        .collect();
    Manifest::from_entries(entries).map_err(|(path, reason)| MergeError { path, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;

    fn file(path: &str, byte: u8) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File {
                hash: blake3::hash(&[byte]),
                size: 1,
                exec: false,
            },
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Dir,
        }
    }

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Symlink {
                target: target.into(),
            },
        }
    }

    fn paths(m: &Manifest) -> Vec<String> {
        m.entries()
            .iter()
            .map(|e| format!("{} {}", display_path(&e.path), e.kind.name()))
            .collect()
    }

    #[test]
    fn later_layers_win_path_by_path_and_directories_merge() {
        let base = Manifest::from_entries(vec![
            dir("bin"),
            file("bin/sh", 1),
            file("bin/ls", 2),
            dir("etc"),
            file("etc/conf", 3),
        ])
        .unwrap();
        let app = Manifest::from_entries(vec![
            dir("bin"),
            file("bin/sh", 9),
            dir("app"),
            file("app/main", 4),
        ])
        .unwrap();
        let merged = merge(&[&base, &app]).unwrap();
        assert_eq!(
            paths(&merged),
            [
                "app dir",
                "app/main file",
                "bin dir",
                "bin/ls file",
                "bin/sh file",
                "etc dir",
                "etc/conf file"
            ]
        );
        let sh = merged
            .entries()
            .iter()
            .find(|e| e.path == b"bin/sh")
            .unwrap();
        assert_eq!(sh.kind, file("bin/sh", 9).kind);
    }

    #[test]
    fn a_file_or_symlink_over_a_directory_hides_everything_beneath() {
        let base = Manifest::from_entries(vec![
            dir("lib"),
            dir("lib/x"),
            file("lib/x/a", 1),
            file("lib.txt", 2),
            dir("lib-2"),
        ])
        .unwrap();
        let app = Manifest::from_entries(vec![link("lib", "lib-2")]).unwrap();
        assert_eq!(
            paths(&merge(&[&base, &app]).unwrap()),
            ["lib symlink", "lib-2 dir", "lib.txt file"]
        );
        // And a directory over a symlink replaces it (the escape a symlink could open is gone).
        let later = Manifest::from_entries(vec![dir("lib"), file("lib/y", 5)]).unwrap();
        let merged = merge(&[&base, &app, &later]).unwrap();
        assert_eq!(
            paths(&merged),
            ["lib dir", "lib/y file", "lib-2 dir", "lib.txt file"]
        );
    }
}
