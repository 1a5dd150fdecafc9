//! macOS: the same translation, installed with `DYLD_INSERT_LIBRARIES` and dyld's `__interpose`
//! section instead of symbol preemption.
//!
//! Thin by design: it cannot be compiled or tested on the Linux machines velo is developed on,
//! so it holds only the platform glue and calls the shared, Linux-tested logic in
//! `velo-intercept` and [`crate::path`]. Calls made from inside an interposing image are not
//! redirected by dyld, so these hooks call libc directly. The variadic `open`/`openat`/`fcntl`
//! (arguments on the stack on Apple arm64) are not here yet: they need the C side, as `execl`
//! has on Linux. `fcntl(F_GETPATH)` is what `std::env::current_dir()` uses on macOS, so until
//! it lands canonical working directories are reported by `getcwd` only.

use core::ffi::{CStr, c_char, c_int, c_void};

use crate::config;
use crate::path::{Buf, PATH_MAX, in1, in2, to_canonical};

#[repr(C)]
struct Interpose {
    replacement: *const c_void,
    original: *const c_void,
}

// SAFETY: two function addresses, read by dyld only.
unsafe impl Sync for Interpose {}

macro_rules! interpose {
    ($($name:ident: $hook:ident),* $(,)?) => {$(
        #[used]
        #[unsafe(link_section = "__DATA,__interpose")]
        static $name: Interpose = Interpose {
            replacement: $hook as *const c_void,
            original: libc::$hook as *const c_void,
        };
    )*};
}

/// Rewrites a NUL-terminated path in `buf` (of `size` bytes) to its canonical form in place.
fn outbound_in_place(buf: *mut c_char, size: usize) -> bool {
    let Some(cfg) = config::get() else {
        return true;
    };
    // SAFETY: `buf` holds a NUL-terminated path written by libc.
    let path = unsafe { CStr::from_ptr(buf) }.to_bytes();
    let mut out: Buf = [0; PATH_MAX];
    match to_canonical(cfg, path, &mut out) {
        Ok(Some(len)) if len < size => {
            // SAFETY: `len + 1 <= size`.
            unsafe { core::ptr::copy_nonoverlapping(out.as_ptr(), buf.cast(), len + 1) };
            true
        }
        Ok(Some(_)) | Err(_) => false,
        Ok(None) => true,
    }
}

unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
    // SAFETY: libc's chdir, not redirected inside this image.
    in1(path, |p| unsafe { libc::chdir(p) })
}

unsafe extern "C" fn stat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: as above.
    in1(path, |p| unsafe { libc::stat(p, buf) })
}

unsafe extern "C" fn lstat(path: *const c_char, buf: *mut libc::stat) -> c_int {
    // SAFETY: as above.
    in1(path, |p| unsafe { libc::lstat(p, buf) })
}

unsafe extern "C" fn getattrlist(
    path: *const c_char,
    list: *mut c_void,
    buf: *mut c_void,
    size: libc::size_t,
    options: libc::c_uint,
) -> c_int {
    // SAFETY: as above.
    in1(path, |p| unsafe {
        libc::getattrlist(p, list, buf, size, options)
    })
}

unsafe extern "C" fn clonefileat(
    srcfd: c_int,
    src: *const c_char,
    dstfd: c_int,
    dst: *const c_char,
    flags: u32,
) -> c_int {
    // SAFETY: as above.
    in2(src, dst, |s, d| unsafe {
        libc::clonefileat(srcfd, s, dstfd, d, flags)
    })
}

unsafe extern "C" fn getcwd(buf: *mut c_char, size: libc::size_t) -> *mut c_char {
    let mut raw: Buf = [0; PATH_MAX];
    // SAFETY: as above; `raw` holds PATH_MAX bytes.
    if unsafe { libc::getcwd(raw.as_mut_ptr().cast(), PATH_MAX) }.is_null() {
        return core::ptr::null_mut();
    }
    if !outbound_in_place(raw.as_mut_ptr().cast(), PATH_MAX) {
        return crate::real::fail(libc::ENAMETOOLONG);
    }
    // SAFETY: `raw` is NUL-terminated.
    let len = unsafe { CStr::from_ptr(raw.as_ptr().cast()) }
        .to_bytes()
        .len();
    if buf.is_null() {
        // SAFETY: malloc, as libc's getcwd(NULL, …) would.
        let p = unsafe { libc::malloc(size.max(len + 1)) }.cast::<c_char>();
        if !p.is_null() {
            // SAFETY: `p` holds at least len + 1 bytes.
            unsafe { core::ptr::copy_nonoverlapping(raw.as_ptr().cast(), p, len + 1) };
        }
        return p;
    }
    if size <= len {
        return crate::real::fail(libc::ERANGE);
    }
    // SAFETY: `buf` holds `size` > len bytes.
    unsafe { core::ptr::copy_nonoverlapping(raw.as_ptr().cast(), buf, len + 1) };
    buf
}

unsafe extern "C" fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    in1(path, |p| {
        let mut raw: Buf = [0; PATH_MAX];
        // SAFETY: as above.
        if unsafe { libc::realpath(p, raw.as_mut_ptr().cast()) }.is_null() {
            return core::ptr::null_mut();
        }
        if !outbound_in_place(raw.as_mut_ptr().cast(), PATH_MAX) {
            return crate::real::fail(libc::ENAMETOOLONG);
        }
        // SAFETY: `raw` is NUL-terminated; `resolved` holds PATH_MAX bytes when non-null.
        unsafe {
            let len = CStr::from_ptr(raw.as_ptr().cast()).to_bytes().len();
            let out = if resolved.is_null() {
                libc::malloc(len + 1).cast()
            } else {
                resolved
            };
            if !out.is_null() {
                core::ptr::copy_nonoverlapping(raw.as_ptr().cast(), out, len + 1);
            }
            out
        }
    })
}

interpose! {
    INTERPOSE_CHDIR: chdir,
    INTERPOSE_STAT: stat,
    INTERPOSE_LSTAT: lstat,
    INTERPOSE_GETATTRLIST: getattrlist,
    INTERPOSE_CLONEFILEAT: clonefileat,
    INTERPOSE_GETCWD: getcwd,
    INTERPOSE_REALPATH: realpath,
}
