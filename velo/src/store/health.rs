//! Whether a blob can be served: sealed blobs, the cheap check, and quarantine.
//!
//! A blob is named by the hash of its content, but nothing in the kernel stops root (or a user
//! who chmods it) from writing through a blob's inode, and disks rot. Re-hashing every blob before
//! every run would cost as much as reading the tree, so velo *seals* blobs instead: every blob is
//! given the modification time [`SEAL_MTIME`] (1 s after the epoch, as Nix does in its store)
//! before it is named. Any write through the inode sets its mtime to the current time, so a blob
//! is trusted without being read exactly while it is a regular file with its key's mode, the
//! expected size and the sealed mtime: one `lstat`. Anything else is hashed before it is used:
//! a sound blob is sealed (where the store is writable), a corrupt one is never served.
//!
//! What sealing cannot see: a write that sets the mtime back on purpose (only the owner or root
//! can) and bit rot on the disk. `velo status --verify` re-hashes everything for those, and
//! `--repair` moves what it finds to `quarantine/`.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use super::{BlobKey, Corruption, Error, Result, Store};

/// The mtime of every sealed blob, in seconds since the epoch.
pub const SEAL_MTIME: i64 = 1;

/// What one `lstat` says about a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Sealed, regular, with its key's mode and the expected size: served without reading.
    Sealed,
    /// Present with the right type, mode and size but not sealed (written by an older velo, or
    /// written to since): hash it before use.
    Unsealed,
    Missing,
    /// Wrong type or mode, or a size other than expected. A size mismatch on a blob whose
    /// content is sound means the manifest's declared size is wrong, so callers hash first.
    Suspect(Corruption),
}

/// What [`Store::ensure`] concluded after hashing where needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fitness {
    Sound,
    Missing,
    Corrupt(Corruption),
    /// The blob is sound but holds `actual` bytes, not the `declared` ones.
    WrongSize {
        declared: u64,
        actual: u64,
    },
}

impl std::fmt::Display for Fitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fitness::Sound => f.write_str("sound"),
            Fitness::Missing => f.write_str("missing from the store"),
            Fitness::Corrupt(c) => write!(f, "corrupt ({c})"),
            Fitness::WrongSize { declared, actual } => write!(
                f,
                "declared as {declared} bytes, but its content (which matches its hash) is {actual} bytes"
            ),
        }
    }
}

impl Store {
    /// One `lstat` of `key`'s blob, judged against the `size` the caller expects.
    pub fn look(&self, key: &BlobKey, size: u64) -> Seen {
        let meta = match fs::symlink_metadata(self.blob_path(key)) {
            Ok(meta) => meta,
            Err(_) => return Seen::Missing,
        };
        if !meta.file_type().is_file() {
            return Seen::Suspect(Corruption::NotAFile);
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode != key.mode() {
            return Seen::Suspect(Corruption::Mode { actual: mode });
        }
        if meta.len() != size {
            return Seen::Suspect(Corruption::Size {
                expected: size,
                actual: meta.len(),
            });
        }
        if meta.mtime() == SEAL_MTIME && meta.mtime_nsec() == 0 {
            Seen::Sealed
        } else {
            Seen::Unsealed
        }
    }

    /// Whether `key`'s blob may be served as `size` bytes: [`Store::look`], then a re-hash of
    /// anything not sealed. A sound blob found unsealed is sealed, when the store is writable.
    pub fn ensure(&self, key: &BlobKey, size: u64) -> Result<Fitness> {
        match self.look(key, size) {
            Seen::Sealed => Ok(Fitness::Sound),
            Seen::Missing => Ok(Fitness::Missing),
            Seen::Suspect(c @ (Corruption::NotAFile | Corruption::Mode { .. })) => {
                Ok(Fitness::Corrupt(c))
            }
            Seen::Suspect(Corruption::Size { actual, .. }) => {
                Ok(match self.rehash(key)? {
                    Some(c) => Fitness::Corrupt(c),
                    // The content is what its name says: the size asked for is wrong.
                    None => Fitness::WrongSize {
                        declared: size,
                        actual,
                    },
                })
            }
            Seen::Suspect(c) => Ok(Fitness::Corrupt(c)),
            Seen::Unsealed => match self.rehash(key)? {
                Some(c) => Ok(Fitness::Corrupt(c)),
                None => {
                    if self.writable() {
                        seal_path(&self.blob_path(key));
                    }
                    Ok(Fitness::Sound)
                }
            },
        }
    }

    /// Hashes `key`'s blob; `Some` says how it is corrupt (a vanished blob counts as not a file).
    fn rehash(&self, key: &BlobKey) -> Result<Option<Corruption>> {
        let path = self.blob_path(key);
        match fs::File::open(&path) {
            Ok(mut file) => {
                let mut hasher = blake3::Hasher::new();
                io::copy(&mut file, &mut hasher).map_err(|e| Error::io("reading", &path, e))?;
                let actual = hasher.finalize();
                Ok((actual != key.hash).then_some(Corruption::Content { actual }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(Corruption::NotAFile)),
            Err(e) => Err(Error::io("opening", &path, e)),
        }
    }

    /// Moves `key`'s blob to `quarantine/` (kept for inspection; `velo gc --run` empties it),
    /// so that the next ingest or pull of its content writes a sound one. Returns where it went.
    pub fn quarantine(&self, key: &BlobKey) -> Result<PathBuf> {
        let from = self.blob_path(key);
        let dir = self.dir("quarantine");
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let to = dir.join(format!("{}.{stamp}", key.file_name()));
        match fs::rename(&from, &to) {
            Ok(()) => {}
            // Another thread (or process) healing the same blob moved it first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(to),
            Err(e) => return Err(Error::io("moving to quarantine", &from, e)),
        }
        tracing::debug!(blob = %key, to = %to.display(), "quarantined a corrupt blob");
        Ok(to)
    }
}

/// Gives an open, complete blob its sealed mtime (the access time is left alone).
pub(super) fn seal(file: &fs::File) -> io::Result<()> {
    use std::os::fd::AsFd;
    rustix::fs::futimens(file.as_fd(), &sealed_times()).map_err(io::Error::from)
}

/// Seals a blob by path; best effort (a blob owned by another user cannot be sealed by us, and
/// is then hashed whenever it is used).
fn seal_path(path: &std::path::Path) {
    if let Err(e) = rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &sealed_times(),
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    ) {
        tracing::debug!(path = %path.display(), "cannot seal blob: {e}");
    }
}

fn sealed_times() -> rustix::fs::Timestamps {
    rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: SEAL_MTIME,
            tv_nsec: 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_written_to_is_no_longer_sealed_and_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open_or_create(&dir.path().join("s"), super::super::Access::Private, "test")
                .unwrap();
        let data = b"sealed content";
        let key = BlobKey {
            hash: blake3::hash(data),
            exec: false,
        };
        store.insert_bytes(key.hash, false, data).unwrap();
        assert_eq!(store.look(&key, data.len() as u64), Seen::Sealed);
        assert_eq!(
            store.ensure(&key, data.len() as u64).unwrap(),
            Fitness::Sound
        );
        assert!(matches!(
            store.ensure(&key, u64::MAX).unwrap(),
            Fitness::WrongSize {
                declared: u64::MAX,
                actual: 14
            }
        ));

        // Same size, other content: only the mtime gives it away.
        let path = store.blob_path(&key);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&path, b"SEALED CONTENT").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();
        assert_eq!(store.look(&key, 14), Seen::Unsealed);
        assert!(matches!(
            store.ensure(&key, 14).unwrap(),
            Fitness::Corrupt(Corruption::Content { .. })
        ));
        let moved = store.quarantine(&key).unwrap();
        assert!(moved.starts_with(dir.path().join("s/quarantine")));
        assert_eq!(store.ensure(&key, 14).unwrap(), Fitness::Missing);
        // The next insert of the content writes a sound, sealed blob.
        store.insert_bytes(key.hash, false, data).unwrap();
        assert_eq!(store.look(&key, 14), Seen::Sealed);
    }
}
