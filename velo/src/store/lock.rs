//! The store lock: `flock(2)` on `<store>/lock`.
//!
//! Ingests hold it shared, so any number run side by side; `gc --run` holds it exclusive, so it
//! never sees a blob whose manifest is not written and registered yet, and no ingest ever sees
//! a blob vanish between "it exists" and "the manifest names it". The kernel drops the lock when
//! the process dies, so a killed velo never leaves the store locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use super::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// Held until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _file: Option<File>,
}

impl StoreLock {
    /// Takes the lock. On a store this process cannot write (`writable` false), a shared lock
    /// is taken on a read-only descriptor (`flock` needs no write access), and if the lock file
    /// does not exist either, none is needed: nobody has ever collected garbage there.
    pub(super) fn acquire(path: &Path, mode: LockMode, writable: bool) -> Result<StoreLock> {
        let file = if writable {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
        } else {
            match File::open(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(StoreLock { _file: None });
                }
                other => other,
            }
        }
        .map_err(|e| Error::io("opening lock file", path, e))?;
        let attempt = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match attempt {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                tracing::info!(path = %path.display(), ?mode, "store is locked by another velo process; waiting");
                let blocking = match mode {
                    LockMode::Shared => file.lock_shared(),
                    LockMode::Exclusive => file.lock(),
                };
                blocking.map_err(|e| Error::io("locking", path, e))?;
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", path, e)),
        }
        Ok(StoreLock { _file: Some(file) })
    }
}
