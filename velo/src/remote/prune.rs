//! `velo cache list --remote` and `velo cache prune --remote`.
//!
//! Prune is mark and sweep over the remote's own objects, with two clocks:
//!
//! - **Mark**: snapshot records newer than the cut-off (`--older-than`) are kept, and so is
//!   the newest record of every key, whatever its age (a key that builds rarely keeps its
//!   cache). Manifests pushed with `velo push` are kept while newer than the cut-off. Everything
//!   a kept manifest names is live: the packs and blobs of its index (or of the manifest itself
//!   when it has no index).
//! - **Sweep**: an object that nothing live names is deleted only once it is older than the
//!   grace period (`--grace`). A push in flight has uploaded packs its index does not name yet;
//!   the grace period is what keeps them, so it must be longer than the longest push.
//!
//! A reader racing a prune can find an index or manifest whose objects just went: that is a
//! miss (the restore tries an older snapshot, then builds), never a wrong file.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use super::pack::Index;
use super::{Backend, Error, Listed, blob_key, index_key, io, manifest_key, pack_key};
use crate::cache::snapshot::Snapshot;
use crate::manifest::{Kind, Manifest};

/// A snapshot record on the remote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoteSnapshot {
    pub key: String,
    pub id: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub profile: String,
    pub files: u64,
    pub bytes: u64,
    pub manifest: String,
}

/// The records under `snapshots/`: (key, id, object, time).
fn record_objects(remote: &dyn Backend) -> Result<Vec<(String, String, Listed)>, Error> {
    let listed = remote
        .list_all("snapshots/")
        .map_err(io(remote, "listing", "snapshots/"))?;
    Ok(listed
        .into_iter()
        .filter_map(|l| {
            let rest = l.key.strip_prefix("snapshots/")?;
            let (key, name) = rest.split_once('/')?;
            let (id, _) = name.rsplit_once('.')?;
            Some((key.to_owned(), id.to_owned(), l.clone()))
        })
        .collect())
}

fn read_record(remote: &dyn Backend, object: &str) -> Result<Option<Snapshot>, Error> {
    let Some(bytes) = remote
        .get(object)
        .map_err(io(remote, "downloading", object))?
    else {
        return Ok(None);
    };
    let hash = object.rsplit_once('.').map_or("", |(_, h)| h);
    Ok(serde_json::from_slice::<Snapshot>(&bytes)
        .ok()
        .filter(|_| blake3::hash(&bytes).to_hex().as_str() == hash))
}

/// Every snapshot record on the remote whose bytes match its name, newest first.
pub fn list_snapshots(remote: &dyn Backend) -> Result<Vec<RemoteSnapshot>, Error> {
    let mut out = Vec::new();
    for (_, _, listed) in record_objects(remote)? {
        if let Some(s) = read_record(remote, &listed.key)? {
            out.push(RemoteSnapshot {
                key: s.key,
                id: s.id,
                created: s.created,
                profile: s.profile,
                files: s.files,
                bytes: s.bytes,
                manifest: s.manifest,
            });
        }
    }
    out.sort_unstable_by(|a, b| b.id.cmp(&a.id));
    Ok(out)
}

/// What a prune deleted (or, with `dry_run`, would delete).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Pruned {
    pub snapshots_kept: u64,
    pub snapshots: u64,
    pub manifests: u64,
    pub indexes: u64,
    pub packs: u64,
    pub blobs: u64,
    pub bytes: u64,
    /// Unreferenced objects left because they are younger than the grace period.
    pub young: u64,
    pub dry_run: bool,
}

/// Prunes `remote`: see the module docs for `older_than` and `grace`.
pub fn prune(
    remote: &dyn Backend,
    older_than: Duration,
    grace: Duration,
    dry_run: bool,
) -> Result<Pruned, Error> {
    if remote.read_only() {
        return Err(Error::ReadOnly(remote.url().to_owned()));
    }
    let now = SystemTime::now();
    let cut = now
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let settled = now.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut pruned = Pruned {
        dry_run,
        ..Pruned::default()
    };
    let delete = |listed: &Listed, count: &mut u64, bytes: &mut u64| -> Result<(), Error> {
        *count += 1;
        *bytes += listed.size;
        if !dry_run {
            remote
                .delete(&listed.key)
                .map_err(io(remote, "deleting", &listed.key))?;
        }
        Ok(())
    };

    // Mark: records newer than the cut-off, and each key's newest.
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    let records = record_objects(remote)?;
    for (key, id, _) in &records {
        let entry = newest.entry(key.clone()).or_default();
        if *id > *entry {
            *entry = id.clone();
        }
    }
    let mut live_manifests = HashSet::new();
    for (key, id, listed) in &records {
        if listed.modified >= cut || newest.get(key) == Some(id) {
            pruned.snapshots_kept += 1;
            if let Some(s) = read_record(remote, &listed.key)? {
                live_manifests.insert(s.manifest);
            }
        } else {
            delete(listed, &mut pruned.snapshots, &mut pruned.bytes)?;
        }
    }
    let manifests = remote
        .list_all("manifests/")
        .map_err(io(remote, "listing", "manifests/"))?;
    for m in &manifests {
        let id = m.key.trim_start_matches("manifests/");
        if m.modified >= cut {
            live_manifests.insert(id.to_owned());
        }
    }
    let mut live = HashSet::new();
    for id in &live_manifests {
        live.insert(manifest_key(id));
        let key = index_key(id);
        let index = remote
            .get(&key)
            .map_err(io(remote, "downloading", &key))?
            .and_then(|b| Index::decode(&b));
        match index {
            Some(index) => {
                live.insert(key);
                live.extend(index.packs.keys().map(|p| pack_key(p)));
                live.extend(index.alone.iter().map(|b| format!("blobs/{}/{b}", &b[..2])));
            }
            None => {
                // No index: every blob alone, as the manifest names them.
                let object = manifest_key(id);
                if let Some(bytes) =
                    remote
                        .get(&object)
                        .map_err(io(remote, "downloading", &object))?
                    && let Ok(tree) = Manifest::decode(&bytes)
                {
                    for e in tree.entries() {
                        if let (Kind::File { .. }, Some(b)) = (&e.kind, e.blob()) {
                            live.insert(blob_key(&b));
                        }
                    }
                }
            }
        }
    }

    // Sweep what nothing live names, once it is older than the grace period.
    for (prefix, count) in [
        ("manifests/", &mut pruned.manifests),
        ("indexes/", &mut pruned.indexes),
        ("packs/", &mut pruned.packs),
        ("blobs/", &mut pruned.blobs),
    ] {
        let listed = if prefix == "manifests/" {
            manifests.clone()
        } else {
            remote
                .list_all(prefix)
                .map_err(io(remote, "listing", prefix))?
        };
        for l in listed.iter().filter(|l| !live.contains(&l.key)) {
            if l.modified < settled {
                delete(l, count, &mut pruned.bytes)?;
            } else {
                pruned.young += 1;
            }
        }
    }
    Ok(pruned)
}
