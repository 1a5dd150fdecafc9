//! The stat and access families: answered from the image for paths in the tree, with the
//! blob's own stat for files.

use core::ffi::{c_char, c_int, c_void};

use crate::mirage::{self, Mirage, Place};
use crate::path::{Buf, PATH_MAX, in1};
use crate::real::{Real, fail};
use velo_intercept::mirage::FILE as REGULAR;

/// What a stat-like call fills in.
#[derive(Clone, Copy)]
enum StatBuf {
    Stat(*mut c_void),
    Statx(*mut c_void),
}

impl StatBuf {
    fn fill(self, m: &Mirage, index: u32) -> c_int {
        // SAFETY: the program's buffer of the type its call promises.
        unsafe {
            match self {
                StatBuf::Stat(p) => p.cast::<libc::stat>().write(m.stat(index)),
                StatBuf::Statx(p) => p.cast::<libc::statx>().write(m.statx(index)),
            }
        }
        0
    }
}

/// Every stat-like hook: files report their blob, directories and symlinks are synthesized.
#[inline(always)]
fn stat_at(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    buf: StatBuf,
    call: impl FnOnce(c_int, *const c_char) -> c_int,
) -> c_int {
    match mirage::get() {
        Some(m) => stat_mirage(m, dirfd, path, flags, buf, call),
        None => in1(path, |p| call(dirfd, p)),
    }
}

#[inline(never)]
fn stat_mirage(
    m: &Mirage,
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    buf: StatBuf,
    call: impl FnOnce(c_int, *const c_char) -> c_int,
) -> c_int {
    // SAFETY: checked for NULL first; the program's C string.
    let empty = !path.is_null() && unsafe { *path } == 0;
    if empty && flags & libc::AT_EMPTY_PATH != 0 {
        return match mirage::fd_entry(dirfd) {
            Some(i) => buf.fill(m, i),
            None => call(dirfd, path),
        };
    }
    let mut out: Buf = [0; PATH_MAX];
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    match m.resolve(dirfd, path, follow, &mut out) {
        Place::Pass => in1(path, |p| call(dirfd, p)),
        Place::Real | Place::Upper { .. } => call(libc::AT_FDCWD, out.as_ptr().cast()),
        Place::Node(i) if m.entry(i).kind == REGULAR => {
            call(libc::AT_FDCWD, m.backing(i, &mut out))
        }
        Place::Node(i) => buf.fill(m, i),
        Place::Missing => fail(libc::ENOENT),
        Place::Fail(e) => fail(e),
    }
}

type StatF = unsafe extern "C" fn(*const c_char, *mut c_void) -> c_int;
type StatAtF = unsafe extern "C" fn(c_int, *const c_char, *mut c_void, c_int) -> c_int;
type XStatF = unsafe extern "C" fn(c_int, *const c_char, *mut c_void) -> c_int;
type XStatAtF = unsafe extern "C" fn(c_int, c_int, *const c_char, *mut c_void, c_int) -> c_int;

macro_rules! stat_path {
    ($($name:ident => $flags:expr),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(path: *const c_char, buf: *mut c_void) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            stat_at(libc::AT_FDCWD, path, $flags, StatBuf::Stat(buf), |_, p| real!(REAL: StatF, p, buf))
        }
    )*};
}

macro_rules! stat_at_hook {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            stat_at(dirfd, path, flags, StatBuf::Stat(buf), |d, p| real!(REAL: StatAtF, d, p, buf, flags))
        }
    )*};
}

macro_rules! xstat_path {
    ($($name:ident => $flags:expr),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(ver: c_int, path: *const c_char, buf: *mut c_void) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            stat_at(libc::AT_FDCWD, path, $flags, StatBuf::Stat(buf), |_, p| real!(REAL: XStatF, ver, p, buf))
        }
    )*};
}

macro_rules! xstat_at {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(ver: c_int, dirfd: c_int, path: *const c_char, buf: *mut c_void, flags: c_int) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            stat_at(dirfd, path, flags, StatBuf::Stat(buf), |d, p| real!(REAL: XStatAtF, ver, d, p, buf, flags))
        }
    )*};
}

// The stat family, new ABI (glibc ≥ 2.33; CPython, new binaries) …
stat_path!(stat => 0, stat64 => 0, lstat => libc::AT_SYMLINK_NOFOLLOW, lstat64 => libc::AT_SYMLINK_NOFOLLOW);
stat_at_hook!(fstatat, fstatat64);
// … and the old one (rustup's cargo, librustc_driver and libLLVM import these). On x86_64 and
// aarch64 the `ver` argument names the kernel's layout, which is `struct stat`.
xstat_path!(__xstat => 0, __xstat64 => 0, __lxstat => libc::AT_SYMLINK_NOFOLLOW, __lxstat64 => libc::AT_SYMLINK_NOFOLLOW);
xstat_at!(__fxstatat, __fxstatat64);

/// Rust's std stats through `statx`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: u32,
    buf: *mut c_void,
) -> c_int {
    static REAL: Real = Real::new("statx\0");
    type F = unsafe extern "C" fn(c_int, *const c_char, c_int, u32, *mut c_void) -> c_int;
    stat_at(
        dirfd,
        path,
        flags,
        StatBuf::Statx(buf),
        |d, p| real!(REAL: F, d, p, flags, mask, buf),
    )
}

type FStatF = unsafe extern "C" fn(c_int, *mut c_void) -> c_int;
type FXStatF = unsafe extern "C" fn(c_int, c_int, *mut c_void) -> c_int;

/// `fstat` of a virtual directory's descriptor is the directory's synthesized stat; of a file
/// opened through the tree it is the blob's, as `stat` of the path said.
macro_rules! fstat {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(fd: c_int, buf: *mut c_void) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            if let Some(m) = mirage::get() && let Some(i) = mirage::fd_entry(fd) {
                return StatBuf::Stat(buf).fill(m, i);
            }
            real!(REAL: FStatF, fd, buf)
        }
    )*};
}

macro_rules! fxstat {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(ver: c_int, fd: c_int, buf: *mut c_void) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            if let Some(m) = mirage::get() && let Some(i) = mirage::fd_entry(fd) {
                return StatBuf::Stat(buf).fill(m, i);
            }
            real!(REAL: FXStatF, ver, fd, buf)
        }
    )*};
}

fstat!(fstat, fstat64);
fxstat!(__fxstat, __fxstat64);

#[inline(always)]
fn access_at(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
    call: impl FnOnce(c_int, *const c_char) -> c_int,
) -> c_int {
    let Some(m) = mirage::get() else {
        return in1(path, |p| call(dirfd, p));
    };
    let mut out: Buf = [0; PATH_MAX];
    let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
    match m.resolve(dirfd, path, follow, &mut out) {
        Place::Pass => in1(path, |p| call(dirfd, p)),
        Place::Real | Place::Upper { .. } => call(libc::AT_FDCWD, out.as_ptr().cast()),
        Place::Node(_) if mode & libc::W_OK != 0 => fail(libc::EROFS),
        Place::Node(i) if m.entry(i).kind == REGULAR => {
            call(libc::AT_FDCWD, m.backing(i, &mut out))
        }
        // Directories are 0755 and symlinks 0777: everyone may read and search.
        Place::Node(_) => 0,
        Place::Missing => fail(libc::ENOENT),
        Place::Fail(e) => fail(e),
    }
}

macro_rules! access {
    ($($name:ident),*) => {$(
        crate::hooks::unless_omitted!($name,
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: c_int) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            access_at(libc::AT_FDCWD, path, mode, 0, |_, p| {
                real!(REAL: unsafe extern "C" fn(*const c_char, c_int) -> c_int, p, mode)
            })
        }
        );
    )*};
}

access!(access, eaccess, euidaccess);

#[unsafe(no_mangle)]
pub unsafe extern "C" fn faccessat(
    dirfd: c_int,
    path: *const c_char,
    mode: c_int,
    flags: c_int,
) -> c_int {
    static REAL: Real = Real::new("faccessat\0");
    type F = unsafe extern "C" fn(c_int, *const c_char, c_int, c_int) -> c_int;
    access_at(
        dirfd,
        path,
        mode,
        flags,
        |d, p| real!(REAL: F, d, p, mode, flags),
    )
}
