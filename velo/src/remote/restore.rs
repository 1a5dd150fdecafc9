//! Restoring a cold `target/` straight from a remote: the CI runner's case, with an empty
//! local store.
//!
//! Bringing the blobs into the local store and then copying them into `target/` would write
//! every byte twice (1.6 GiB into the store and 2.1 GiB into `target/` for velo's own
//! workspace, whose hard-linked outputs a manifest names twice), and on a fresh runner writing
//! to new page-cache pages is what a restore costs. So the newest usable snapshot's record and
//! manifest are fetched into a private temporary directory, planned against the checkout like
//! any local snapshot ([`cache::restore::plan_among`]), and restored with the remote as the
//! [`Supply`] of what the store lacks: each blob is decompressed with a cap of its declared
//! size, hashed, compared with its key, and only then written to every place the tree has it.
//!
//! The local store gains nothing, so it never names a blob it lacks: a build that compiles
//! nothing needs no save (the remote holds that snapshot already), and one that compiles
//! saves and stores what it left, as any save does.

use std::sync::Mutex;

use super::sync::{self, Moved};
use super::{Backend, Error};
use crate::cache::restore::{self, Put, Restored, Supply};
use crate::cache::snapshot::{Snapshot, Stored};
use crate::cache::{self, Progress, Project};
use crate::store::{self, BlobKey, Store};

/// The remote as a restore's supply of blobs of manifest `id`.
struct FromRemote<'a> {
    store: &'a Store,
    remote: &'a dyn Backend,
    id: &'a str,
    moved: Mutex<Moved>,
}

impl Supply for FromRemote<'_> {
    fn supply(&self, blobs: Vec<(BlobKey, u64)>, put: &Put<'_>) -> Result<usize, cache::Error> {
        match sync::fetch(self.store, self.remote, self.id, blobs, put) {
            Ok(Ok(fetched)) => {
                *self.moved.lock().expect("not poisoned") = fetched.moved;
                Ok(fetched.missing.len())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(cache::Error::Supply(Box::new(e))),
        }
    }
}

/// Restores `project`'s cold target directory from the newest snapshot of its key that the
/// remote holds whole, writing what `store` lacks straight from the remote. `None` when the
/// remote has no usable snapshot of the key. A record or manifest that does not match its name,
/// or a snapshot whose objects went missing (a prune), is skipped with a warning. A failure of
/// the local side (a full disk) is [`Error::Snapshot`]. `prepare` sees the snapshot before the
/// checkout is hashed against it (`velo cargo` extracts the registry sources it names).
pub fn restore(
    store: &Store,
    remote: &dyn Backend,
    project: &Project,
    progress: &dyn Progress,
    prepare: &dyn Fn(&[&Snapshot]),
) -> Result<Option<(Restored, Moved)>, Error> {
    let started = remote.requests();
    let key = &project.key.key;
    for (object, id, hash) in sync::records(remote, key)? {
        let Some((snapshot, record)) = sync::record(remote, &object, &id, &hash, key)? else {
            continue;
        };
        let manifest_id = snapshot.manifest.clone();
        let manifest = match sync::get_manifest(remote, &manifest_id) {
            Ok((bytes, _)) => bytes,
            Err(e @ (Error::NoManifest { .. } | Error::CorruptManifest { .. })) => {
                eprintln!("velo: warning: snapshot {id}: {e}; trying an older one");
                continue;
            }
            Err(e) => return Err(e),
        };
        // Not in the store: it never names a blob it lacks.
        let dir = tempfile::tempdir().map_err(|source| Error::Local {
            op: "creating a temporary directory in",
            path: std::env::temp_dir(),
            source,
        })?;
        prepare(&[&snapshot]);
        let stored = Stored {
            snapshot,
            record: dir.path().join(format!("{id}.json")),
            manifest: dir.path().join(format!("{id}.velo")),
        };
        store::write_atomic(&stored.record, &record, false)?;
        store::write_atomic(&stored.manifest, &manifest, false)?;
        let Some(plan) = restore::plan_among(project, vec![stored]) else {
            continue;
        };
        let supply = FromRemote {
            store,
            remote,
            id: &manifest_id,
            moved: Mutex::new(Moved::default()),
        };
        progress.start("restoring", Some(plan.stored.snapshot.bytes));
        let applied = restore::apply(
            store,
            project,
            &plan,
            &|n| progress.advance(n),
            Some(&supply),
        );
        progress.finish();
        match applied {
            Ok(restored) => {
                let mut moved = supply.moved.into_inner().expect("not poisoned");
                moved.manifest_id = manifest_id;
                moved.requests = remote.requests() - started;
                return Ok(Some((restored, moved)));
            }
            Err(cache::Error::MissingBlobs { count, .. }) => {
                eprintln!(
                    "velo: warning: snapshot {id}: remote {} lacks {count} of its blobs, or holds them corrupt; trying an older one",
                    remote.url()
                );
            }
            Err(cache::Error::Supply(e)) => {
                return Err(match e.downcast::<Error>() {
                    Ok(e) => *e,
                    Err(e) => Error::Snapshot(Box::new(cache::Error::Supply(e))),
                });
            }
            Err(e) => return Err(Error::Snapshot(Box::new(e))),
        }
    }
    Ok(None)
}
