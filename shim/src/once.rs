//! State read once per process: the projection ([`crate::config`]) and the mirage
//! ([`crate::mirage`]) are each a [`Once`] over static storage.
//!
//! Filled on first use (from the library constructor in `lib.rs`, or from whichever hook runs
//! first), with no allocation. A state word moves `UNINIT → BUSY → ON | OFF` exactly once; hooks
//! read the finished value after an acquire load, one load when it is settled. A second thread
//! that meets `BUSY` (possible only when another library's constructor starts threads before
//! ours runs) spins until the first is done: that short wait before `main` is the only one in
//! the shim.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::real::keep_errno;

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const OFF: u8 = 2;
const ON: u8 = 3;

/// Storage `S` filled once by a loader; hooks then read it.
pub struct Once<S> {
    state: AtomicU8,
    storage: UnsafeCell<S>,
}

// SAFETY: `storage` is written only by the thread that moved `state` to BUSY, and read only
// after `state` is ON (acquire/release), when it is never written again.
unsafe impl<S> Sync for Once<S> {}

impl<S> Once<S> {
    pub const fn new(storage: S) -> Once<S> {
        Once {
            state: AtomicU8::new(UNINIT),
            storage: UnsafeCell::new(storage),
        }
    }

    /// The value: `load` fills the storage the first time (returning whether there is a value;
    /// errno is kept), `value` reads it out.
    #[inline]
    pub fn get<T: 'static>(
        &'static self,
        load: fn(&mut S) -> bool,
        value: fn(&'static S) -> Option<&'static T>,
    ) -> Option<&'static T> {
        match self.state.load(Ordering::Acquire) {
            ON => value(self.finished()),
            OFF => None,
            _ => self.init(load, value),
        }
    }

    fn finished(&'static self) -> &'static S {
        // SAFETY: the state is ON: the storage was written and is never written again.
        unsafe { &*self.storage.get() }
    }

    #[cold]
    fn init<T: 'static>(
        &'static self,
        load: fn(&mut S) -> bool,
        value: fn(&'static S) -> Option<&'static T>,
    ) -> Option<&'static T> {
        loop {
            match self
                .state
                .compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: we own the storage while the state is BUSY.
                    let on = keep_errno(|| load(unsafe { &mut *self.storage.get() }));
                    self.state
                        .store(if on { ON } else { OFF }, Ordering::Release);
                    return if on { value(self.finished()) } else { None };
                }
                Err(ON) => return value(self.finished()),
                Err(OFF) => return None,
                Err(_) => core::hint::spin_loop(),
            }
        }
    }
}
