//! Hooks that answer for Mode B's virtual tree themselves (see [`crate::mirage`]): opening, the
//! stat and access families, the working directory, `dlopen`, and the descriptors of virtual
//! directories (`fstat`, `close`). Outside the tree, or with no mirage, each behaves exactly as
//! the plain inbound hook did: canonical paths translated, everything else passed through.

use core::ffi::{CStr, c_char, c_int, c_long, c_void};

use libc::FILE;

use crate::mirage::{self, Mirage, Place};
use crate::path::{Buf, PATH_MAX, in1};
use crate::real::{Real, fail, keep_errno};
use velo_intercept::mirage::{DIR, FILE as REGULAR};

/// Calls the real function named by `$real` (a `static Real`) as type `$ty` with `$args`.
macro_rules! real {
    ($real:ident: $ty:ty, $($arg:expr),*) => {
        // SAFETY: `$ty` is the symbol's C signature; the arguments are the program's or ours of
        // the same kind.
        match unsafe { $real.get::<$ty>() } {
            Some(f) => unsafe { f($($arg),*) },
            None => fail(libc::ENOSYS),
        }
    };
}

// --- open --------------------------------------------------------------------------------------

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

fn close_quietly(fd: c_int) {
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

// --- stat --------------------------------------------------------------------------------------

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

// --- access ------------------------------------------------------------------------------------

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
        super::unless_omitted!($name,
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

// --- the working directory ---------------------------------------------------------------------

/// `chdir` into the tree makes the working directory virtual: the process really sits in the
/// empty stand-in, and relative paths and `getcwd` use the virtual path.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
    static REAL: Real = Real::new("chdir\0");
    type F = unsafe extern "C" fn(*const c_char) -> c_int;
    let Some(m) = mirage::get() else {
        return in1(path, |p| real!(REAL: F, p));
    };
    let mut out: Buf = [0; PATH_MAX];
    match m.resolve(libc::AT_FDCWD, path, true, &mut out) {
        Place::Pass => {
            let r = in1(path, |p| real!(REAL: F, p));
            if r == 0 {
                mirage::set_cwd(None, None);
            }
            r
        }
        Place::Upper { .. } => {
            // A directory made in the writable layer: virtual like the tree's.
            let mut name: Buf = [0; PATH_MAX];
            let Some(n) = m.virtual_name(&out, &mut name) else {
                return fail(libc::ENAMETOOLONG);
            };
            let r = real!(REAL: F, out.as_ptr().cast());
            if r == 0 {
                let r = real!(REAL: F, m.empty.as_ptr().cast());
                if r == 0 {
                    mirage::set_cwd(Some(&name[..n]), None);
                }
                return r;
            }
            r
        }
        Place::Real => {
            let r = real!(REAL: F, out.as_ptr().cast());
            if r == 0 {
                mirage::set_cwd(None, None);
            }
            r
        }
        Place::Node(i) => enter(m, i, || real!(REAL: F, m.empty.as_ptr().cast())),
        Place::Missing => fail(libc::ENOENT),
        Place::Fail(e) => fail(e),
    }
}

/// Makes directory `index` the virtual working directory once `go_to_empty` succeeds.
fn enter(m: &Mirage, index: u32, go_to_empty: impl FnOnce() -> c_int) -> c_int {
    if m.entry(index).kind != DIR {
        return fail(libc::ENOTDIR);
    }
    let mut buf: Buf = [0; PATH_MAX];
    let Some(len) = m.abs_path(index, &mut buf) else {
        return fail(libc::ENAMETOOLONG);
    };
    let r = go_to_empty();
    if r == 0 {
        mirage::set_cwd(Some(&buf[..len]), Some(index));
    }
    r
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fchdir(fd: c_int) -> c_int {
    static REAL: Real = Real::new("fchdir\0");
    type F = unsafe extern "C" fn(c_int) -> c_int;
    let r = real!(REAL: F, fd);
    if r == 0
        && let Some(m) = mirage::get()
    {
        match mirage::fd_entry(fd) {
            Some(i) => return enter(m, i, || 0),
            None => mirage::set_cwd(None, None),
        }
    }
    r
}

/// A descriptor that closes stops naming a virtual directory.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    static REAL: Real = Real::new("close\0");
    type F = unsafe extern "C" fn(c_int) -> c_int;
    if mirage::fd_entry(fd).is_some() {
        mirage::forget_fd(fd);
    }
    real!(REAL: F, fd)
}

// --- dlopen ------------------------------------------------------------------------------------

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

// --- duplicated descriptors --------------------------------------------------------------------

/// After a successful duplication, `new` names what `old` named (gnulib's `fts`, used by `find`,
/// duplicates every directory descriptor it opens).
fn duplicated(old: c_int, new: c_int) -> c_int {
    if new >= 0 && mirage::get().is_some() {
        match mirage::fd_entry(old) {
            Some(i) if !mirage::remember_fd(new, i) => {
                close_quietly(new);
                return fail(libc::EMFILE);
            }
            Some(_) => {}
            None => mirage::forget_fd(new),
        }
    }
    new
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    static REAL: Real = Real::new("dup\0");
    duplicated(fd, real!(REAL: unsafe extern "C" fn(c_int) -> c_int, fd))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    static REAL: Real = Real::new("dup2\0");
    duplicated(
        old,
        real!(REAL: unsafe extern "C" fn(c_int, c_int) -> c_int, old, new),
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    static REAL: Real = Real::new("dup3\0");
    duplicated(
        old,
        real!(REAL: unsafe extern "C" fn(c_int, c_int, c_int) -> c_int, old, new, flags),
    )
}

type Fcntl = unsafe extern "C" fn(c_int, c_int, ...) -> c_int;

/// `fcntl(fd, cmd, ...)`: its one optional argument is taken as a fixed third one, which is
/// ABI-compatible on x86_64 and aarch64 Linux (see `variadic`), and passed on as it came.
macro_rules! fcntl {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(fd: c_int, cmd: c_int, arg: usize) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            let r = real!(REAL: Fcntl, fd, cmd, arg);
            if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
                return duplicated(fd, r);
            }
            r
        }
    )*};
}

fcntl!(fcntl, fcntl64);
