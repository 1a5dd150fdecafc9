//! The working directory and descriptors of virtual directories: `chdir`, `fchdir`, `close`,
//! `dup`, `dup2`, `dup3`, `fcntl`.

use core::ffi::{c_char, c_int};

use crate::mirage::{self, Mirage, Place};
use crate::path::{Buf, PATH_MAX, in1};
use crate::real::{Real, fail};
use velo_intercept::mirage::DIR;

use super::open::close_quietly;

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
                    mirage::set_cwd(Some(crate::bytes::head(&name, n)), None);
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
        mirage::set_cwd(Some(crate::bytes::head(&buf, len)), Some(index));
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
