//! `dlopen` and `dlmopen`: a library in the tree is loaded from its blob.

use core::ffi::{CStr, c_char, c_int, c_long, c_void};

use crate::real::{Real, fail};

/// A path with a `/` is a file (a virtual one loads its blob); a bare name is searched by the
/// loader and passes through.
fn library<R: crate::real::Fail>(path: *const c_char, call: impl FnOnce(*const c_char) -> R) -> R {
    // SAFETY: checked for NULL first; the program's C string.
    if path.is_null() || !unsafe { CStr::from_ptr(path) }.to_bytes().contains(&b'/') {
        return call(path);
    }
    crate::path::in1_at(crate::path::Op::Read, libc::AT_FDCWD, path, call)
}

/// The dynamic loader opens libraries with raw syscalls: rustc's proc macros are loaded by
/// canonical path, and a Python extension in a virtual tree by its virtual path.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlopen(path: *const c_char, flags: c_int) -> *mut c_void {
    static REAL: Real = Real::new("dlopen\0");
    library(
        path,
        |p| real!(REAL: unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void, p, flags),
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dlmopen(
    namespace: c_long,
    path: *const c_char,
    flags: c_int,
) -> *mut c_void {
    static REAL: Real = Real::new("dlmopen\0");
    library(
        path,
        |p| real!(REAL: unsafe extern "C" fn(c_long, *const c_char, c_int) -> *mut c_void, namespace, p, flags),
    )
}
