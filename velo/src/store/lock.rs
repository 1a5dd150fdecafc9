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
    _file: File,
}

impl StoreLock {
    pub(super) fn acquire(path: &Path, mode: LockMode) -> Result<StoreLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
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
        Ok(StoreLock { _file: file })
    }
}
