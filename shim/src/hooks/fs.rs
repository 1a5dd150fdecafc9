//! Hooks that take paths in: each translates canonical → physical and calls the real function.
//!
//! Buffers the program passes (stat results, xattr values, …) are forwarded untouched, so they
//! are typed `*mut c_void` here: the ABI is the same and nothing reads them.

use core::ffi::{c_char, c_int, c_long, c_void};

use libc::{dev_t, gid_t, mode_t, off_t, off64_t, size_t, ssize_t, uid_t};

use super::inbound;

type Opaque = *mut c_void;

inbound! {
    // open, openat and fopen, the stat and access families, opendir/scandir, chdir and dlopen
    // answer for Mode B's virtual tree themselves: they are in `mirage`.
    fn creat(path: *const c_char, mode: mode_t) -> c_int; in(path);
    fn creat64(path: *const c_char, mode: mode_t) -> c_int; in(path);

    fn mkdir(path: *const c_char, mode: mode_t) -> c_int; in(path);
    fn mkdirat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int; in(path) at(dirfd);
    fn rmdir(path: *const c_char) -> c_int; in(path);
    fn unlink(path: *const c_char) -> c_int; in(path);
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int; in(path) at(dirfd);
    /// glibc's `remove` calls its internal `unlink`/`rmdir`: without this hook the linker's
    /// temporary files are left behind.
    fn remove(path: *const c_char) -> c_int; in(path);
    fn rename(from: *const c_char, to: *const c_char) -> c_int; in(from, to);
    fn renameat(fromfd: c_int, from: *const c_char, tofd: c_int, to: *const c_char) -> c_int; in(from, to) at(fromfd, tofd);
    fn renameat2(fromfd: c_int, from: *const c_char, tofd: c_int, to: *const c_char, flags: u32) -> c_int; in(from, to) at(fromfd, tofd);
    fn link(from: *const c_char, to: *const c_char) -> c_int; in(from, to);
    fn linkat(fromfd: c_int, from: *const c_char, tofd: c_int, to: *const c_char, flags: c_int) -> c_int; in(from, to) at(fromfd, tofd);
    /// The target is translated too: a link stored with a canonical target would dangle for the
    /// kernel, which resolves it without the shim. `readlink` turns it back.
    fn symlink(target: *const c_char, path: *const c_char) -> c_int; in(target, path);
    fn symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> c_int; in(target, path) at(dirfd);
    fn mkfifo(path: *const c_char, mode: mode_t) -> c_int; in(path);
    fn mkfifoat(dirfd: c_int, path: *const c_char, mode: mode_t) -> c_int; in(path) at(dirfd);
    fn mknod(path: *const c_char, mode: mode_t, dev: dev_t) -> c_int; in(path);
    fn mknodat(dirfd: c_int, path: *const c_char, mode: mode_t, dev: dev_t) -> c_int; in(path) at(dirfd);

    fn chmod(path: *const c_char, mode: mode_t) -> c_int; in(path);
    fn lchmod(path: *const c_char, mode: mode_t) -> c_int; in(path);
    fn fchmodat(dirfd: c_int, path: *const c_char, mode: mode_t, flags: c_int) -> c_int; in(path) at(dirfd);
    fn chown(path: *const c_char, uid: uid_t, gid: gid_t) -> c_int; in(path);
    fn lchown(path: *const c_char, uid: uid_t, gid: gid_t) -> c_int; in(path);
    fn fchownat(dirfd: c_int, path: *const c_char, uid: uid_t, gid: gid_t, flags: c_int) -> c_int; in(path) at(dirfd);
    fn utimensat(dirfd: c_int, path: *const c_char, times: Opaque, flags: c_int) -> c_int; in(path) at(dirfd);
    fn utimes(path: *const c_char, times: Opaque) -> c_int; in(path);
    fn lutimes(path: *const c_char, times: Opaque) -> c_int; in(path);
    fn utime(path: *const c_char, times: Opaque) -> c_int; in(path);
    fn futimesat(dirfd: c_int, path: *const c_char, times: Opaque) -> c_int; in(path) at(dirfd);
    fn truncate(path: *const c_char, len: off_t) -> c_int; in(path);
    fn truncate64(path: *const c_char, len: off64_t) -> c_int; in(path);

    fn statfs(path: *const c_char, buf: Opaque) -> c_int; in(path);
    fn statfs64(path: *const c_char, buf: Opaque) -> c_int; in(path);
    fn statvfs(path: *const c_char, buf: Opaque) -> c_int; in(path);
    fn statvfs64(path: *const c_char, buf: Opaque) -> c_int; in(path);
    fn pathconf(path: *const c_char, name: c_int) -> c_long; in(path);

    fn getxattr(path: *const c_char, name: *const c_char, value: Opaque, size: size_t) -> ssize_t; in(path);
    fn lgetxattr(path: *const c_char, name: *const c_char, value: Opaque, size: size_t) -> ssize_t; in(path);
    fn setxattr(path: *const c_char, name: *const c_char, value: *const c_void, size: size_t, flags: c_int) -> c_int; in(path);
    fn lsetxattr(path: *const c_char, name: *const c_char, value: *const c_void, size: size_t, flags: c_int) -> c_int; in(path);
    fn listxattr(path: *const c_char, list: *mut c_char, size: size_t) -> ssize_t; in(path);
    fn llistxattr(path: *const c_char, list: *mut c_char, size: size_t) -> ssize_t; in(path);
    fn removexattr(path: *const c_char, name: *const c_char) -> c_int; in(path);
    fn lremovexattr(path: *const c_char, name: *const c_char) -> c_int; in(path);
}

/// Defines the `mkstemp` family: the template is translated and its generated tail copied back.
macro_rules! template {
    ($(fn $name:ident(template: *mut c_char $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(template: *mut c_char $(, $arg: $ty)*) -> $ret {
            static REAL: crate::real::Real = crate::real::Real::new(concat!(stringify!($name), "\0"));
            type F = unsafe extern "C" fn(*mut c_char $(, $ty)*) -> $ret;
            crate::path::template(template, |template| {
                // SAFETY: `F` is the symbol's signature; `template` is writable.
                match unsafe { REAL.get::<F>() } {
                    Some(real) => unsafe { real(template $(, $arg)*) },
                    None => crate::real::fail(libc::ENOSYS),
                }
            })
        }
    )*};
}

template! {
    fn mkstemp(template: *mut c_char) -> c_int;
    fn mkstemp64(template: *mut c_char) -> c_int;
    fn mkostemp(template: *mut c_char, flags: c_int) -> c_int;
    fn mkostemp64(template: *mut c_char, flags: c_int) -> c_int;
    fn mkstemps(template: *mut c_char, suffix: c_int) -> c_int;
    fn mkstemps64(template: *mut c_char, suffix: c_int) -> c_int;
    fn mkostemps(template: *mut c_char, suffix: c_int, flags: c_int) -> c_int;
    fn mkostemps64(template: *mut c_char, suffix: c_int, flags: c_int) -> c_int;
}

/// `mkdtemp` returns its template: the program's, not our buffer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mkdtemp(template: *mut c_char) -> *mut c_char {
    static REAL: crate::real::Real = crate::real::Real::new("mkdtemp\0");
    type F = unsafe extern "C" fn(*mut c_char) -> *mut c_char;
    let original = template;
    crate::path::template(template, |template| {
        // SAFETY: `F` is the symbol's signature; `template` is writable.
        match unsafe { REAL.get::<F>() } {
            Some(real) if !unsafe { real(template) }.is_null() => original,
            Some(_) => core::ptr::null_mut(),
            None => crate::real::fail(libc::ENOSYS),
        }
    })
}
