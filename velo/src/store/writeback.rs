//! Early writeback of new blobs under [`Durability::Batch`](super::Durability::Batch).
//!
//! A batch ingest makes its blobs durable with one `syncfs(2)` before the manifest. Left alone,
//! the kernel starts writing dirty pages back only when they pass `dirty_background_ratio` (10%
//! of memory, gigabytes here), so a tree of a few hundred megabytes is written to disk only by
//! that final `syncfs`, after all the hashing is done: on /usr/share (523 MiB) that wait was a
//! quarter of the ingest. Here, every [`THRESHOLD`] bytes of new blobs wake a background thread
//! that runs `syncfs` while the ingest threads go on hashing, so the disk works in parallel with
//! them and the final sync finds little left.
//!
//! The ingest threads never wait for it: they add to a counter, and one of them, when the
//! counter passes the threshold, sends a wake-up that is dropped if one is already pending. A
//! `syncfs` on a background thread is no promise of anything; the final [`Store::sync`] still
//! runs and is what the manifest waits for.
//!
//! Asking for the writeback of each blob from the ingest threads instead
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)` per blob, git's `core.fsyncMethod=batch`) was
//! measured and was slower: the block allocation then happens in the hashing threads, one small
//! file at a time.
//!
//! [`Store::sync`]: super::Store::sync

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Mutex, OnceLock};

/// New blob bytes between two background syncs.
pub const THRESHOLD: u64 = 64 << 20;

#[derive(Debug, Default)]
pub struct Writeback {
    /// New blob bytes since the last wake-up.
    unflushed: AtomicU64,
    /// Wakes the thread; created with it, on the first wake-up.
    wake: OnceLock<Mutex<SyncSender<()>>>,
}

impl Writeback {
    /// Counts `bytes` of a new blob under `root`; past the threshold, wakes the thread.
    pub fn wrote(&self, root: &Path, bytes: u64) {
        let before = self.unflushed.fetch_add(bytes, Ordering::Relaxed);
        if before + bytes < THRESHOLD {
            return;
        }
        // One thread wins the reset; the others' bytes count towards the next round.
        if self
            .unflushed
            .compare_exchange(before + bytes, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let wake = self
            .wake
            .get_or_init(|| Mutex::new(spawn(root.to_path_buf())));
        // Full: a wake-up is pending, and that sync will write these blobs too. Disconnected:
        // there is no thread (it could not start), and the final sync does the work.
        let _ = wake.lock().unwrap_or_else(|p| p.into_inner()).try_send(());
    }
}

/// Starts the thread that runs `syncfs` on `root`'s filesystem each time it is woken; it ends
/// when the store handle (the sender) is gone.
fn spawn(root: PathBuf) -> SyncSender<()> {
    let (wake, woken) = mpsc::sync_channel::<()>(1);
    let thread = std::thread::Builder::new()
        .name("velo-writeback".into())
        .spawn(move || {
            let Ok(dir) = File::open(&root) else { return };
            while woken.recv().is_ok() {
                // SAFETY: plain syscall on an open descriptor. Errors are the final sync's to
                // report.
                unsafe { libc::syncfs(dir.as_raw_fd()) };
            }
        });
    if let Err(e) = thread {
        // Only an optimisation: without it the final sync does all the work.
        tracing::debug!("no writeback thread: {e}");
    }
    wake
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_the_thread_once_per_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let wb = Writeback::default();
        wb.wrote(dir.path(), THRESHOLD / 2);
        assert!(
            wb.wake.get().is_none(),
            "below the threshold nothing starts"
        );
        wb.wrote(dir.path(), THRESHOLD / 2 + 1);
        assert!(wb.wake.get().is_some(), "past it the thread is started");
        assert_eq!(
            wb.unflushed.load(Ordering::Relaxed),
            0,
            "and the count starts again"
        );
        wb.wrote(dir.path(), 10);
        assert_eq!(wb.unflushed.load(Ordering::Relaxed), 10);
    }
}
