//! Writing blobs.
//!
//! A new blob is written to an *anonymous* file: `open(blobs/, O_TMPFILE)` makes an inode with
//! no name, so a process killed while writing leaves nothing behind, not even a temporary
//! file. Once complete (and given its final mode), the inode gets its name with
//! `linkat(/proc/self/fd/N → blobs/ab/ab12…)`, which fails with `EEXIST` rather than replace an
//! existing blob. Compared with a named temporary file and a rename this saves two directory
//! updates per blob and avoids the filesystem-wide rename lock that cross-directory renames
//! take, which matters when two threads store 100,000 small files.
//!
//! Where `O_TMPFILE` or `/proc` is unavailable, blobs go through a named temporary file in
//! `tmp/` and `renameat2(RENAME_NOREPLACE)`; `gc --run` removes any such file a killed process
//! left behind.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;

use blake3::Hash;

use super::{BlobKey, Durability, Error, Fitness, Inserted, Result, Store, blob_mode};

/// A blob being written.
enum Pending {
    /// An `O_TMPFILE` inode in `blobs/`, named by `linkat` when complete.
    Anonymous(File),
    /// The fallback: a named temporary file in `tmp/`.
    Named(tempfile::NamedTempFile),
}

impl Pending {
    fn file(&self) -> &File {
        match self {
            Pending::Anonymous(f) => f,
            Pending::Named(t) => t.as_file(),
        }
    }
}

impl Store {
    /// Stores `data`, whose BLAKE3 the caller has computed as `hash`.
    pub fn insert_bytes(&self, hash: Hash, exec: bool, data: &[u8]) -> Result<Inserted> {
        let key = BlobKey { hash, exec };
        if self.have_sound(&key, data.len() as u64)? {
            return Ok(Inserted::Existing);
        }
        let pending = self.pending(exec)?;
        let dest = self.blob_path(&key);
        pending
            .file()
            .write_all(data)
            .map_err(|e| Error::io("writing blob", &dest, e))?;
        self.publish(pending, key, data.len() as u64)
    }

    /// Streams `reader` into a new blob while hashing it. The content is read exactly once, and
    /// what is stored is exactly what was hashed.
    pub fn insert_reader(
        &self,
        exec: bool,
        reader: &mut dyn Read,
    ) -> Result<(BlobKey, u64, Inserted)> {
        let pending = self.pending(exec)?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        let blobs = self.dir("blobs");
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("reading source for a blob in", &blobs, e)),
            };
            let chunk = &buf[..n];
            hasher.update(chunk);
            pending
                .file()
                .write_all(chunk)
                .map_err(|e| Error::io("writing blob in", &blobs, e))?;
            size += n as u64;
        }
        let key = BlobKey {
            hash: hasher.finalize(),
            exec,
        };
        if self.have_sound(&key, size)? {
            return Ok((key, size, Inserted::Existing));
        }
        Ok((key, size, self.publish(pending, key, size)?))
    }

    /// Tries to reflink `source` into a temporary file (btrfs, XFS, …) and publishes it after
    /// hashing the private clone. Returns `None` when the filesystem cannot clone, so the
    /// caller falls back to copying.
    pub fn insert_reflink(
        &self,
        exec: bool,
        source: &File,
    ) -> Result<Option<(BlobKey, u64, Inserted)>> {
        if self.no_reflink.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let tmp = self.temp_file(exec)?;
        // SAFETY: FICLONE takes the source descriptor as its argument; both fds are open.
        let rc =
            unsafe { libc::ioctl(tmp.as_file().as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // Unsupported here (ext4, tmpfs) or across filesystems: remember it. Other errors
            // (a busy file, say) may be specific to this file.
            if matches!(
                err.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EXDEV | libc::EINVAL | libc::ENOSYS)
            ) {
                self.no_reflink.store(true, Ordering::Relaxed);
            }
            return Ok(None);
        }
        // The clone is private to us, so hashing it cannot race a writer of the source.
        let mut reader = tmp
            .reopen()
            .map_err(|e| Error::io("reopening", tmp.path(), e))?;
        let mut hasher = blake3::Hasher::new();
        let size =
            io::copy(&mut reader, &mut hasher).map_err(|e| Error::io("hashing", tmp.path(), e))?;
        let key = BlobKey {
            hash: hasher.finalize(),
            exec,
        };
        if self.have_sound(&key, size)? {
            return Ok(Some((key, size, Inserted::Existing)));
        }
        Ok(Some((
            key,
            size,
            self.publish(Pending::Named(tmp), key, size)?,
        )))
    }

    /// Whether a sound blob of `key` is already stored (see [`super::health`]). A corrupt one
    /// is quarantined, so the caller writes the content it holds in its place: re-ingesting a
    /// tree heals its blobs.
    fn have_sound(&self, key: &BlobKey, size: u64) -> Result<bool> {
        match self.ensure(key, size)? {
            Fitness::Sound => Ok(true),
            Fitness::Missing => Ok(false),
            Fitness::Corrupt(_) | Fitness::WrongSize { .. } => {
                self.quarantine(key)?;
                self.replaced.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
        }
    }

    /// Opens a new, empty pending blob with the mode an `exec` blob must have.
    fn pending(&self, exec: bool) -> Result<Pending> {
        if self.no_tmpfile.load(Ordering::Relaxed) {
            return self.temp_file(exec).map(Pending::Named);
        }
        let blobs = self.dir("blobs");
        let mode = blob_mode(exec);
        let open = || {
            OpenOptions::new()
                .write(true)
                .mode(mode)
                .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
                .open(&blobs)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&blobs).map_err(|e| Error::io("creating", &blobs, e))?;
                open()
            }
            other => other,
        };
        match file {
            Ok(file) => {
                if mode & self.umask != 0 {
                    file.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(|e| Error::io("setting mode of a blob in", &blobs, e))?;
                }
                Ok(Pending::Anonymous(file))
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                tracing::debug!(
                    "O_TMPFILE unsupported in {}: {e}; using named temporary files",
                    blobs.display()
                );
                self.no_tmpfile.store(true, Ordering::Relaxed);
                self.temp_file(exec).map(Pending::Named)
            }
            Err(e) => Err(Error::io("creating a blob in", &blobs, e)),
        }
    }

    /// A named temporary file in `tmp/`, with the blob mode set.
    fn temp_file(&self, exec: bool) -> Result<tempfile::NamedTempFile> {
        let dir = self.dir("tmp");
        let create = || tempfile::Builder::new().prefix("blob-").tempfile_in(&dir);
        let tmp = match create() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
                create()
            }
            other => other,
        }
        .map_err(|e| Error::io("creating temporary file in", &dir, e))?;
        let mode = blob_mode(exec);
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("setting mode of", tmp.path(), e))?;
        Ok(tmp)
    }

    /// Names a finished blob of `size` bytes without replacing an existing one.
    fn publish(&self, pending: Pending, key: BlobKey, size: u64) -> Result<Inserted> {
        let dest = self.blob_path(&key);
        super::health::seal(pending.file()).map_err(|e| Error::io("sealing blob", &dest, e))?;
        if self.durability == Durability::PerBlob {
            pending
                .file()
                .sync_all()
                .map_err(|e| Error::io("syncing blob", &dest, e))?;
        }
        let result = match pending {
            Pending::Anonymous(file) => self.in_shard(&dest, || link_anonymous(&file, &dest)),
            Pending::Named(tmp) => {
                let path = tmp.into_temp_path();
                let renamed = self.in_shard(&dest, || rename_noreplace(&path, &dest));
                if renamed.is_ok() {
                    // The name is the blob's now: the temporary path must not delete it.
                    let _ = path.keep();
                }
                renamed
            }
        };
        match result {
            Ok(()) => {
                if self.durability == Durability::Batch {
                    self.writeback.wrote(&self.root, size);
                }
                Ok(Inserted::New)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Inserted::Existing),
            Err(e) => Err(Error::io("naming blob", &dest, e)),
        }
    }

    /// Runs `name` (which creates `dest`), creating the shard directory if it does not exist.
    fn in_shard(&self, dest: &Path, name: impl Fn() -> io::Result<()>) -> io::Result<()> {
        match name() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dest.parent().unwrap_or(&self.root))?;
                name()
            }
            other => other,
        }
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Gives an `O_TMPFILE` inode its name (fails with `EEXIST` if the name is taken).
fn link_anonymous(file: &File, dest: &Path) -> io::Result<()> {
    let proc_path = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL");
    let dest = c_path(dest)?;
    // SAFETY: both paths are valid NUL-terminated strings; the fd is open.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            dest.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    check(rc)
}

/// `renameat2(RENAME_NOREPLACE)`: fails with `EEXIST` instead of replacing `to`.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (from, to) = (c_path(from)?, c_path(to)?);
    // SAFETY: valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    check(rc)
}

/// A libc return code as an `io::Result`.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The process umask, read from `/proc/self/status` (reading it with umask(2) would change it
/// for a moment under other threads). If unknown, assume the worst, so modes are always set.
pub(super) fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::Ordering;

    use super::super::{Durability, Inserted, Store};

    fn stores() -> Vec<(tempfile::TempDir, Store)> {
        [false, true]
            .into_iter()
            .flat_map(|named| {
                [Durability::None, Durability::Batch, Durability::PerBlob].map(|d| {
                    let dir = tempfile::tempdir().unwrap();
                    let store = Store::open_or_create(
                        &dir.path().join("s"),
                        super::super::Access::Private,
                        "test",
                    )
                    .unwrap()
                    .with_durability(d);
                    store.no_tmpfile.store(named, Ordering::Relaxed);
                    (dir, store)
                })
            })
            .collect()
    }

    #[test]
    fn every_write_path_stores_exact_content_with_the_blob_mode() {
        for (_dir, store) in stores() {
            let data = b"hello blob";
            let hash = blake3::hash(data);
            assert_eq!(
                store.insert_bytes(hash, false, data).unwrap(),
                Inserted::New
            );
            assert_eq!(
                store.insert_bytes(hash, false, data).unwrap(),
                Inserted::Existing
            );
            assert_eq!(store.insert_bytes(hash, true, data).unwrap(), Inserted::New);
            let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
            let (key, size, inserted) = store.insert_reader(true, &mut &big[..]).unwrap();
            assert_eq!(
                (key.hash, size, inserted),
                (blake3::hash(&big), big.len() as u64, Inserted::New)
            );
            let (_, _, again) = store.insert_reader(true, &mut &big[..]).unwrap();
            assert_eq!(again, Inserted::Existing);
            store.sync().unwrap();

            let blobs = store.blobs().unwrap();
            assert_eq!(blobs.len(), 3);
            for blob in &blobs {
                assert_eq!(
                    store.verify_blob(blob).unwrap(),
                    None,
                    "{}",
                    blob.path.display()
                );
                let mode = std::fs::metadata(&blob.path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, blob.key.mode());
            }
            assert!(
                store.stray_temp_files().unwrap().is_empty(),
                "no temporary file left behind"
            );
        }
    }

    #[test]
    fn blob_file_names_round_trip() {
        let key = super::super::BlobKey {
            hash: blake3::hash(b"x"),
            exec: true,
        };
        assert_eq!(
            super::super::BlobKey::parse_file_name(&key.file_name()),
            Some(key)
        );
        assert_eq!(super::super::BlobKey::parse_file_name("blob-123"), None);
        assert_eq!(
            super::super::BlobKey::parse_file_name(&"G".repeat(64)),
            None
        );
    }
}
