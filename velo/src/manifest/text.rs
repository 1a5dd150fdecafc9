//! `velo manifest show | diff` for people, and the listing `show --json` prints.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use super::{Change, Diff, Kind, Manifest, display_path};
use crate::human;

/// A manifest as `velo manifest show --json` prints it: its id and each entry.
#[derive(Debug, Serialize)]
pub struct Shown {
    pub id: String,
    pub entries: Vec<ShownEntry>,
}

#[derive(Debug, Serialize)]
pub struct ShownEntry {
    pub path: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Shown {
    pub fn of(manifest: &Manifest) -> Shown {
        let entries = manifest.entries().iter().map(|e| {
            let mut shown = ShownEntry {
                path: display_path(&e.path),
                kind: e.kind.name(),
                size: None,
                hash: None,
                exec: None,
                target: None,
            };
            match &e.kind {
                Kind::Dir => {}
                Kind::File { hash, size, exec } => {
                    shown.size = Some(*size);
                    shown.hash = Some(hash.to_hex().to_string());
                    shown.exec = Some(*exec);
                }
                Kind::Symlink { target } => shown.target = Some(display_path(target)),
            }
            shown
        });
        Shown {
            id: manifest.id().to_string(),
            entries: entries.collect(),
        }
    }
}

/// The id and file, then a table: kind, executable bit, size, short hash, path.
pub fn shown(file: &Path, shown: &Shown) -> String {
    let mut table = human::table(["kind", "mode", "size", "content", "path"]);
    for e in &shown.entries {
        let mode = if e.exec == Some(true) { "x" } else { "-" };
        let path = match &e.target {
            Some(t) => format!("{} -> {t}", e.path),
            None => e.path.clone(),
        };
        let hash = e.hash.as_deref().map_or("", |h| h.get(..16).unwrap_or(h));
        let size = e.size.map(|s| s.to_string()).unwrap_or_default();
        table.add_row([e.kind, mode, &size, hash, &path]);
    }
    format!("manifest {}  ({})\n{table}\n", shown.id, file.display())
}

/// One line per change: `+ path (kind)`, `- path (kind)`, `~ path: old => new`.
pub fn diff(diff: &Diff) -> String {
    let mut out = String::new();
    for change in &diff.changes {
        let _ = match change {
            Change::Added { path, kind } => writeln!(out, "+ {path} ({kind})"),
            Change::Removed { path, kind } => writeln!(out, "- {path} ({kind})"),
            Change::Changed { path, old, new } => writeln!(out, "~ {path}: {old} => {new}"),
        };
    }
    out
}
