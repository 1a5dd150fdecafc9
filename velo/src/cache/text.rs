//! The human reports of `velo cache key | save | restore | list | status` (`--json` prints the
//! same values as JSON).

use std::fmt::Write;
use std::path::Path;

use super::key::Key;
use super::restore::Restored;
use super::snapshot::Saved;
use super::{Listing, Status};
use crate::human::{self, bytes, short};

/// Each input of the key with its hash, then the key.
pub fn key(key: &Key) -> String {
    let mut table = human::table(["input", "hash", "what"]);
    for input in &key.inputs {
        table.add_row([input.name, &input.hash, &input.detail]);
    }
    format!("{table}\nkey {}\n", key.key)
}

pub fn saved(saved: &Saved) -> String {
    if saved.unchanged {
        return format!(
            "unchanged: snapshot {} of key {} already holds this target directory\n",
            saved.id,
            short(&saved.key)
        );
    }
    format!(
        "saved snapshot {} of key {}: {} files ({}), {} new in the store, {} freshness checks, {:.2} s\n",
        saved.id,
        short(&saved.key),
        saved.files,
        bytes(saved.bytes),
        bytes(saved.new_bytes),
        saved.checks,
        saved.seconds
    )
}

/// What a restore into `target_dir` did, or that the key (`key`) had nothing to restore.
pub fn restored(restored: Option<&Restored>, key: &str, target_dir: &Path) -> String {
    let Some(r) = restored else {
        return format!(
            "nothing to restore: no snapshot for key {} (build with `velo cargo build`, or `velo cache save` after a build)\n",
            short(key)
        );
    };
    let mut out = format!(
        "restored snapshot {} into {}: {} files ({}), {} reflinked, {} copied, {:.2} s\n",
        r.id,
        target_dir.display(),
        r.files,
        bytes(r.bytes),
        r.reflinked,
        r.copied,
        r.seconds
    );
    let _ = writeln!(
        out,
        "  {} freshness checks fresh, {} left stale for cargo to rebuild",
        r.fresh,
        r.stale.len()
    );
    if r.pinned > 0 {
        let _ = writeln!(
            out,
            "  {} unit(s) fingerprinted by package mtime made fresh: their packages' files are byte-identical, so their recorded mtimes were set back",
            r.pinned
        );
    }
    for s in r.stale.iter().take(10) {
        let _ = writeln!(out, "  stale {}: {}", s.reference, s.reason);
    }
    out
}

/// A row per snapshot, then what they hold and share.
pub fn listing(listing: &Listing) -> String {
    if listing.snapshots.is_empty() {
        return "no snapshots (save one with `velo cache save` or `velo cargo build`)\n".to_owned();
    }
    let mut table = human::table([
        "snapshot",
        "key",
        "profile",
        "created",
        "files",
        "size",
        "only here",
    ]);
    for s in &listing.snapshots {
        let mut row = snapshot_row(&s.id, &s.key, &s.profile, s.created, s.files, s.bytes);
        row.push(bytes(s.unique_bytes));
        table.add_row(row);
    }
    format!(
        "{table}\n{} snapshots, {} in all, {} in the store ({:.1}x shared)\n",
        listing.snapshots.len(),
        bytes(listing.logical_bytes),
        bytes(listing.stored_bytes),
        listing.logical_bytes as f64 / listing.stored_bytes.max(1) as f64
    )
}

/// A snapshot's row: id, short key, profile, age, files, size.
fn snapshot_row(
    id: &str,
    key: &str,
    profile: &str,
    created: u64,
    files: u64,
    size: u64,
) -> Vec<String> {
    vec![
        id.to_owned(),
        short(key).to_owned(),
        profile.to_owned(),
        human::age(created),
        files.to_string(),
        bytes(size),
    ]
}

/// The remote's snapshots, newest first.
pub fn remote_listing(url: &str, snapshots: &[crate::remote::RemoteSnapshot]) -> String {
    if snapshots.is_empty() {
        return format!(
            "no snapshots on {url} (velo cargo build pushes one when VELO_REMOTE is set)\n"
        );
    }
    let mut table = human::table(["snapshot", "key", "profile", "created", "files", "size"]);
    for s in snapshots {
        table.add_row(snapshot_row(
            &s.id, &s.key, &s.profile, s.created, s.files, s.bytes,
        ));
    }
    let keys: std::collections::BTreeSet<&str> = snapshots.iter().map(|s| s.key.as_str()).collect();
    format!(
        "{table}\n{} snapshots of {} keys on {url}\n",
        snapshots.len(),
        keys.len()
    )
}

/// What a prune deleted, or would.
pub fn pruned(url: &str, p: &crate::remote::Pruned) -> String {
    format!(
        "{} {url}: {} snapshot records, {} manifests, {} indexes, {} packs, {} blobs ({}); kept {} snapshots; {} unreferenced objects younger than the grace period left\n",
        if p.dry_run { "would prune" } else { "pruned" },
        p.snapshots,
        p.manifests,
        p.indexes,
        p.packs,
        p.blobs,
        bytes(p.bytes),
        p.snapshots_kept,
        p.young
    )
}

/// The project, its key and target directory, and what a restore would do.
pub fn status(status: &Status) -> String {
    let mut out = format!(
        "project     {}\nkey         {}\ntarget dir  {} ({})\n",
        status.root.display(),
        status.key,
        status.target_dir.display(),
        if status.cold {
            "cold: restore would fill it"
        } else {
            "warm: restore leaves it alone"
        }
    );
    match (&status.best, status.best_size, &status.evaluation) {
        (Some(best), Some((files, size)), Some(e)) => {
            let _ = writeln!(
                out,
                "snapshots   {} for this key; restore would pick {best} ({files} files, {})",
                status.snapshots,
                bytes(size)
            );
            let _ = writeln!(
                out,
                "freshness   {} checks would be fresh, {} stale, {} unit(s) fresh by package mtime",
                e.fresh,
                e.stale.len(),
                e.pinned
            );
            for s in e.stale.iter().take(10) {
                let _ = writeln!(out, "  stale {}: {}", s.reference, s.reason);
            }
        }
        _ => out.push_str("snapshots   none for this key\n"),
    }
    out
}
