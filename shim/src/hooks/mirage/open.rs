//! Opening: `open`/`openat` and their fortified and 64-bit forms, `fopen`/`freopen`: a file of
//! the tree is its blob opened read-only; a virtual directory is the run's empty directory.

use core::ffi::{CStr, c_char, c_int};

use libc::FILE;

use crate::mirage::{self, Mirage, Place};
use crate::path::{Buf, PATH_MAX, in1};
use crate::real::{Real, fail, keep_errno};
use velo_intercept::mirage::{DIR, FILE as REGULAR};

/// `openat(dirfd, path, flags)` for every open-like hook. `call(dirfd, path, flags)` is the
/// real function.
#[inline(always)]
pub fn open_at(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    call: impl FnOnce(c_int, *const c_char, c_int) -> c_int,
) -> c_int {
    match mirage::get() {
        Some(m) => open_mirage(m, dirfd, path, flags, call),
        None => in1(path, |p| call(dirfd, p, flags)),
    }
}

#[inline(never)]
fn open_mirage(
    m: &Mirage,
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    call: impl FnOnce(c_int, *const c_char, c_int) -> c_int,
) -> c_int {
    let mut out: Buf = [0; PATH_MAX];
    let follow = flags & libc::O_NOFOLLOW == 0;
    let creates = flags & libc::O_CREAT != 0;
    match m.resolve(dirfd, path, follow, &mut out) {
        Place::Pass => in1(path, |p| call(dirfd, p, flags)),
        Place::Real => call(libc::AT_FDCWD, out.as_ptr().cast(), flags),
        Place::Upper { .. } => {
            if (creates || flags & libc::O_ACCMODE != libc::O_RDONLY)
                && let Err(e) = m.prepare_upper(&mut out)
            {
                return fail(e);
            }
            call(libc::AT_FDCWD, out.as_ptr().cast(), flags)
        }
        Place::Missing if creates => fail(libc::EROFS),
        Place::Missing => fail(libc::ENOENT),
        Place::Fail(e) => fail(e),
        Place::Node(_) if creates && flags & libc::O_EXCL != 0 => fail(libc::EEXIST),
        Place::Node(i) => {
            let kind = m.entry(i).kind;
            let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
            let flags = flags & !(libc::O_CREAT | libc::O_EXCL);
            match kind {
                REGULAR if writes && !m.upper.is_empty() => match m.copy_up(i, &mut out) {
                    0 => call(libc::AT_FDCWD, out.as_ptr().cast(), flags),
                    e => fail(-e),
                },
                REGULAR if writes => fail(libc::EROFS),
                REGULAR if flags & libc::O_DIRECTORY != 0 => fail(libc::ENOTDIR),
                REGULAR => call(libc::AT_FDCWD, m.backing(i, &mut out), flags),
                DIR if writes => fail(libc::EISDIR),
                DIR => {
                    let fd = call(libc::AT_FDCWD, m.backing(i, &mut out), flags);
                    if fd >= 0 && !mirage::remember_fd(fd, i) {
                        close_quietly(fd);
                        return fail(libc::EMFILE);
                    }
                    fd
                }
                // A final symlink under O_NOFOLLOW, as the kernel answers.
                _ => fail(libc::ELOOP),
            }
        }
    }
}

pub(super) fn close_quietly(fd: c_int) {
    keep_errno(|| crate::kernel::close(fd));
}

macro_rules! fortified_open {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            // Every path `open_at` passes on is absolute or the program's own.
            open_at(libc::AT_FDCWD, path, flags, |_, p, flags| {
                real!(REAL: unsafe extern "C" fn(*const c_char, c_int) -> c_int, p, flags)
            })
        }
    )*};
}

macro_rules! fortified_openat {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            open_at(dirfd, path, flags, |dirfd, p, flags| {
                real!(REAL: unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int, dirfd, p, flags)
            })
        }
    )*};
}

// `_FORTIFY_SOURCE` builds call these for `open` without `O_CREAT`.
fortified_open!(__open_2, __open64_2);
fortified_openat!(__openat_2, __openat64_2);

/// Whether an `fopen` mode string only reads (`r`, `rb`, `re`, … without `+`).
fn mode_reads(mode: *const c_char) -> bool {
    if mode.is_null() {
        return true;
    }
    // SAFETY: the program's C string.
    let mode = unsafe { CStr::from_ptr(mode) }.to_bytes();
    mode.first() == Some(&b'r') && !mode.contains(&b'+')
}

/// `fopen` and `freopen`: a read-only open of a virtual file opens its blob.
fn fopen_like(
    path: *const c_char,
    mode: *const c_char,
    call: impl FnOnce(*const c_char) -> *mut FILE,
) -> *mut FILE {
    let Some(m) = mirage::get() else {
        return in1(path, call);
    };
    let mut out: Buf = [0; PATH_MAX];
    let reads = mode_reads(mode);
    match m.resolve(libc::AT_FDCWD, path, true, &mut out) {
        Place::Pass => in1(path, call),
        Place::Real => call(out.as_ptr().cast()),
        Place::Upper { .. } => {
            if !reads && let Err(e) = m.prepare_upper(&mut out) {
                return fail(e);
            }
            call(out.as_ptr().cast())
        }
        Place::Node(i) if !reads && !m.upper.is_empty() && m.entry(i).kind == REGULAR => {
            match m.copy_up(i, &mut out) {
                0 => call(out.as_ptr().cast()),
                e => fail(-e),
            }
        }
        Place::Node(_) | Place::Missing if !reads => fail(libc::EROFS),
        Place::Node(i) => call(m.backing(i, &mut out)),
        Place::Missing => fail(libc::ENOENT),
        Place::Fail(e) => fail(e),
    }
}

macro_rules! fopen {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: *const c_char) -> *mut FILE {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            fopen_like(path, mode, |p| {
                real!(REAL: unsafe extern "C" fn(*const c_char, *const c_char) -> *mut FILE, p, mode)
            })
        }
    )*};
}

macro_rules! freopen {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: *const c_char, stream: *mut FILE) -> *mut FILE {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            fopen_like(path, mode, |p| {
                real!(REAL: unsafe extern "C" fn(*const c_char, *const c_char, *mut FILE) -> *mut FILE, p, mode, stream)
            })
        }
    )*};
}

fopen!(fopen, fopen64);
freopen!(freopen, freopen64);
