//! The real libc functions behind the hooks, found with `dlsym(RTLD_NEXT, name)` on first use and
//! cached in an atomic: later calls cost one relaxed load. The first lookup takes the dynamic
//! loader's lock once per symbol and process; nothing else in a hook does.

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};

pub struct Real {
    name: &'static str,
    ptr: AtomicPtr<c_void>,
}

impl Real {
    /// `name` must end in a NUL (`concat!(stringify!(f), "\0")`).
    pub const fn new(name: &'static str) -> Real {
        Real {
            name,
            ptr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The real function as `F` (a function pointer type), or `None` when libc lacks it.
    ///
    /// # Safety
    /// `F` must be the function pointer type of the symbol.
    #[inline]
    pub unsafe fn get<F: Copy>(&self) -> Option<F> {
        const { assert!(size_of::<F>() == size_of::<*mut c_void>()) };
        let mut p = self.ptr.load(Ordering::Relaxed);
        if p.is_null() {
            p = self.resolve();
        }
        // SAFETY: `p` is a function of type `F` (caller's promise) and non-null.
        (!p.is_null()).then(|| unsafe { core::mem::transmute_copy::<*mut c_void, F>(&p) })
    }

    #[cold]
    fn resolve(&self) -> *mut c_void {
        // SAFETY: `name` is NUL-terminated (constructor contract).
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr().cast()) };
        self.ptr.store(p, Ordering::Relaxed);
        p
    }
}

/// The value a libc function returns on failure, for hooks that fail before calling it.
pub trait Fail: PartialEq {
    const FAIL: Self;
    /// Success for calls that return 0 (or a null pointer, which none of those do).
    const ZERO: Self;
}

impl Fail for i32 {
    const FAIL: i32 = -1;
    const ZERO: i32 = 0;
}

impl Fail for i64 {
    const FAIL: i64 = -1;
    const ZERO: i64 = 0;
}

impl Fail for isize {
    const FAIL: isize = -1;
    const ZERO: isize = 0;
}

impl<T> Fail for *mut T {
    const FAIL: *mut T = core::ptr::null_mut();
    const ZERO: *mut T = core::ptr::null_mut();
}

/// Sets errno and returns the failure value: used when libc lacks a function we export.
pub fn fail<R: Fail>(errno: i32) -> R {
    set_errno(errno);
    R::FAIL
}

#[cfg(target_os = "linux")]
fn errno_location() -> *mut i32 {
    // SAFETY: no preconditions.
    unsafe { libc::__errno_location() }
}

#[cfg(target_os = "macos")]
fn errno_location() -> *mut i32 {
    // SAFETY: no preconditions.
    unsafe { libc::__error() }
}

#[inline]
pub fn errno() -> i32 {
    // SAFETY: errno is thread-local and always addressable.
    unsafe { *errno_location() }
}

#[inline]
pub fn set_errno(value: i32) {
    // SAFETY: as above.
    unsafe { *errno_location() = value };
}

/// Runs `f` and restores errno afterwards: for bookkeeping after a successful call.
#[inline]
pub fn keep_errno<T>(f: impl FnOnce() -> T) -> T {
    let saved = errno();
    let out = f();
    set_errno(saved);
    out
}
