//! Hooks that hand paths back: the physical root in a result becomes the canonical root.
//!
//! Each asks the real function (or the kernel) for the answer in a stack buffer, rewrites it, and
//! copies it out with the function's own size rules (`ERANGE` for getcwd, truncation for
//! readlink, `PATH_MAX` for realpath). Where the API promises a `malloc`ed result
//! (`getcwd(NULL, 0)`, `realpath(p, NULL)`, `get_current_dir_name`), the result is allocated with
//! the program's `malloc`, as libc would have.

use core::ffi::{CStr, c_char, c_int};

use libc::{size_t, ssize_t};

use crate::config::{self, Config};
use crate::kernel;
use crate::mirage::{self, Place};
use crate::path::{Buf, PATH_MAX, in1, to_canonical};
use crate::real::{Real, fail};

/// `src` rewritten outbound into `buf` when it lies under a physical root; else `src` itself.
fn outbound<'a>(cfg: &Config, src: &'a [u8], buf: &'a mut Buf) -> Result<&'a [u8], c_int> {
    match to_canonical(cfg, src, buf) {
        Ok(Some(len)) => Ok(crate::bytes::head(buf, len)),
        Ok(None) => Ok(src),
        Err(_) => Err(libc::ENAMETOOLONG),
    }
}

/// A `malloc`ed copy of `bytes` plus a NUL, as APIs that return allocated paths promise.
fn malloc_copy(bytes: &[u8], size: usize) -> *mut c_char {
    // SAFETY: plain malloc; the copy fits (size > bytes.len()).
    unsafe {
        let p = libc::malloc(size.max(bytes.len() + 1)).cast::<u8>();
        if !p.is_null() {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
            *p.add(bytes.len()) = 0;
        }
        p.cast()
    }
}

// --- getcwd ------------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn getcwd(buf: *mut c_char, size: size_t) -> *mut c_char {
    static REAL: Real = Real::new("getcwd\0");
    type F = unsafe extern "C" fn(*mut c_char, size_t) -> *mut c_char;
    // SAFETY: `F` is getcwd's signature.
    let Some(real) = (unsafe { REAL.get::<F>() }) else {
        return fail(libc::ENOSYS);
    };
    let mut virt: Buf = [0; PATH_MAX];
    if mirage::get().is_some()
        && let Some(n) = mirage::cwd(&mut virt)
    {
        return copy_cwd(crate::bytes::head(&virt, n), buf, size);
    }
    let Some(cfg) = config::get() else {
        // SAFETY: the program's arguments, untouched.
        return unsafe { real(buf, size) };
    };
    let mut raw: Buf = [0; PATH_MAX];
    // SAFETY: `raw` is PATH_MAX bytes. From the shim's own code: see `crate::kernel`.
    let n = unsafe { kernel::getcwd(raw.as_mut_ptr(), PATH_MAX) };
    if n < 0 {
        return fail(-n as c_int);
    }
    // SAFETY: getcwd succeeded, so `raw` holds a NUL-terminated path.
    let cwd = unsafe { CStr::from_ptr(raw.as_ptr().cast()) }.to_bytes();
    let mut out: Buf = [0; PATH_MAX];
    match outbound(cfg, cwd, &mut out) {
        Ok(cwd) => copy_cwd(cwd, buf, size),
        Err(e) => fail(e),
    }
}

/// Hands `cwd` to the program with getcwd's size rules.
fn copy_cwd(cwd: &[u8], buf: *mut c_char, size: size_t) -> *mut c_char {
    if buf.is_null() {
        if size != 0 && size <= cwd.len() {
            return fail(libc::ERANGE);
        }
        return malloc_copy(cwd, size);
    }
    if size <= cwd.len() {
        return fail(if size == 0 {
            libc::EINVAL
        } else {
            libc::ERANGE
        });
    }
    // SAFETY: the program's buffer holds `size` > len bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(cwd.as_ptr(), buf.cast(), cwd.len());
        *buf.add(cwd.len()) = 0;
    }
    buf
}

/// `_FORTIFY_SOURCE`'s getcwd: the real one aborts on an overflow, so it handles that case.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __getcwd_chk(
    buf: *mut c_char,
    size: size_t,
    buflen: size_t,
) -> *mut c_char {
    static REAL: Real = Real::new("__getcwd_chk\0");
    type F = unsafe extern "C" fn(*mut c_char, size_t, size_t) -> *mut c_char;
    if size > buflen {
        // SAFETY: `F` is the symbol's signature; the real function reports the overflow.
        return match unsafe { REAL.get::<F>() } {
            Some(real) => unsafe { real(buf, size, buflen) },
            None => fail(libc::ENOSYS),
        };
    }
    // SAFETY: forwarded.
    unsafe { getcwd(buf, size) }
}

/// glibc returns `$PWD` when it names the working directory, checked with its *internal* stat,
/// which cannot see a canonical `$PWD`: so the whole function is reimplemented over the hooks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn get_current_dir_name() -> *mut c_char {
    // SAFETY: getenv of a literal.
    let pwd = unsafe { libc::getenv(c"PWD".as_ptr()) };
    if !pwd.is_null() && unsafe { *pwd } == b'/' as c_char {
        // SAFETY: zeroed stat buffers are valid; the hooks translate `pwd`.
        let (mut a, mut b): (libc::stat64, libc::stat64) = unsafe { core::mem::zeroed() };
        let same = unsafe {
            super::mirage::stat64(pwd, (&raw mut a).cast()) == 0
                && super::mirage::stat64(c".".as_ptr(), (&raw mut b).cast()) == 0
                && a.st_dev == b.st_dev
                && a.st_ino == b.st_ino
        };
        if same {
            // SAFETY: getenv returned a NUL-terminated string.
            let pwd = unsafe { CStr::from_ptr(pwd) }.to_bytes();
            let mut out: Buf = [0; PATH_MAX];
            let pwd = match config::get().map(|cfg| outbound(cfg, pwd, &mut out)) {
                Some(Ok(p)) => p,
                Some(Err(e)) => return fail(e),
                None => pwd,
            };
            return malloc_copy(pwd, 0);
        }
    }
    // SAFETY: getcwd(NULL, 0) allocates.
    unsafe { getcwd(core::ptr::null_mut(), 0) }
}

// --- readlink ----------------------------------------------------------------------------------

/// readlink through the kernel, then outbound: `/proc/self/cwd`, `/proc/self/exe`,
/// `/proc/self/fd/N` and symlinks into the project come back canonical. Uses the raw syscall,
/// not libc's function: jemalloc calls readlink while `malloc` is starting, before a `dlsym`
/// lookup would be safe.
fn readlink_at(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t {
    if let Some(m) = mirage::get() {
        let mut out: Buf = [0; PATH_MAX];
        let give = |bytes: &[u8]| {
            let len = bytes.len().min(size);
            // SAFETY: the program's buffer holds `size` bytes.
            unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast(), len) };
            len as ssize_t
        };
        // SAFETY: checked for NULL first; the program's C string.
        if !path.is_null()
            && unsafe { CStr::from_ptr(path) }.to_bytes() == b"/proc/self/cwd"
            && let Some(n) = mirage::cwd(&mut out)
        {
            return give(crate::bytes::head(&out, n));
        }
        match m.resolve(dirfd, path, false, &mut out) {
            Place::Pass => {}
            Place::Real | Place::Upper { .. } => {
                return readlink_plain(libc::AT_FDCWD, out.as_ptr().cast(), buf, size);
            }
            Place::Node(i) if m.entry(i).kind == velo_intercept::mirage::SYMLINK => {
                return give(m.entry(i).target);
            }
            Place::Node(_) => return fail(libc::EINVAL),
            Place::Missing => return fail(libc::ENOENT),
            Place::Fail(e) => return fail(e),
        }
    }
    readlink_plain(dirfd, path, buf, size)
}

fn readlink_plain(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t {
    in1(path, |path| {
        let Some(cfg) = config::get() else {
            // SAFETY: the program's arguments.
            return unsafe { libc::syscall(libc::SYS_readlinkat, dirfd, path, buf, size) }
                as ssize_t;
        };
        let mut raw: Buf = [0; PATH_MAX];
        // SAFETY: `raw` holds PATH_MAX bytes. From the shim's own code: see `crate::kernel`.
        let n = unsafe { kernel::readlinkat(dirfd, path.cast(), raw.as_mut_ptr(), PATH_MAX) };
        if n < 0 {
            return fail(-n as c_int);
        }
        let mut out: Buf = [0; PATH_MAX];
        let target = match outbound(cfg, crate::bytes::head(&raw, n as usize), &mut out) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        let len = target.len().min(size);
        // SAFETY: the program's buffer holds `size` bytes.
        unsafe { core::ptr::copy_nonoverlapping(target.as_ptr(), buf.cast(), len) };
        len as ssize_t
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, size: size_t) -> ssize_t {
    readlink_at(libc::AT_FDCWD, path, buf, size)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    size: size_t,
) -> ssize_t {
    readlink_at(dirfd, path, buf, size)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __readlink_chk(
    path: *const c_char,
    buf: *mut c_char,
    len: size_t,
    buflen: size_t,
) -> ssize_t {
    static REAL: Real = Real::new("__readlink_chk\0");
    type F = unsafe extern "C" fn(*const c_char, *mut c_char, size_t, size_t) -> ssize_t;
    if len > buflen {
        // SAFETY: the real function reports the overflow.
        return match unsafe { REAL.get::<F>() } {
            Some(real) => unsafe { real(path, buf, len, buflen) },
            None => fail(libc::ENOSYS),
        };
    }
    readlink_at(libc::AT_FDCWD, path, buf, len)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __readlinkat_chk(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    len: size_t,
    buflen: size_t,
) -> ssize_t {
    static REAL: Real = Real::new("__readlinkat_chk\0");
    type F = unsafe extern "C" fn(c_int, *const c_char, *mut c_char, size_t, size_t) -> ssize_t;
    if len > buflen {
        // SAFETY: the real function reports the overflow.
        return match unsafe { REAL.get::<F>() } {
            Some(real) => unsafe { real(dirfd, path, buf, len, buflen) },
            None => fail(libc::ENOSYS),
        };
    }
    readlink_at(dirfd, path, buf, len)
}

// --- realpath ----------------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn realpath(path: *const c_char, resolved: *mut c_char) -> *mut c_char {
    static REAL: Real = Real::new("realpath\0");
    type F = unsafe extern "C" fn(*const c_char, *mut c_char) -> *mut c_char;
    // SAFETY: `F` is realpath's signature.
    let Some(real) = (unsafe { REAL.get::<F>() }) else {
        return fail(libc::ENOSYS);
    };
    let mut virt: Buf = [0; PATH_MAX];
    let mut path = path;
    if let Some(m) = mirage::get() {
        match m.resolve(libc::AT_FDCWD, path, true, &mut virt) {
            Place::Pass => {}
            // Left the tree: the host's realpath of where it went.
            Place::Real => path = virt.as_ptr().cast(),
            // In the writable layer: its virtual name, once it is known to exist.
            Place::Upper { .. } => {
                let mut name: Buf = [0; PATH_MAX];
                let Some(n) = m.virtual_name(&virt, &mut name) else {
                    return fail(libc::ENAMETOOLONG);
                };
                // SAFETY: a NUL-terminated path and a zeroed stat; a raw syscall.
                let exists = unsafe {
                    let mut st: libc::stat = core::mem::zeroed();
                    libc::syscall(
                        libc::SYS_newfstatat,
                        libc::AT_FDCWD,
                        virt.as_ptr(),
                        &raw mut st,
                        0,
                    ) == 0
                };
                if !exists {
                    return fail(libc::ENOENT);
                }
                return give_path(crate::bytes::head(&name, n), resolved);
            }
            Place::Node(i) => {
                let Some(n) = m.abs_path(i, &mut virt) else {
                    return fail(libc::ENAMETOOLONG);
                };
                return give_path(crate::bytes::head(&virt, n), resolved);
            }
            Place::Missing => return fail(libc::ENOENT),
            Place::Fail(e) => return fail(e),
        }
    }
    let Some(cfg) = config::get() else {
        // SAFETY: the program's arguments.
        return unsafe { real(path, resolved) };
    };
    in1(path, |path| {
        let mut raw: Buf = [0; PATH_MAX];
        // The kernel's name for the file, from the shim's own code (see `crate::kernel`): open
        // it O_PATH and read /proc/self/fd/N. No allocation, and the same answer as realpath
        // (it must exist; every symlink is resolved). libc's realpath is the fallback when
        // /proc is not there.
        let found = match kernel_realpath(path, &mut raw) {
            Ok(len) => crate::bytes::head(&raw, len),
            Err(None) => {
                // SAFETY: realpath writes at most PATH_MAX bytes into `raw`.
                if unsafe { real(path, raw.as_mut_ptr().cast()) }.is_null() {
                    return core::ptr::null_mut();
                }
                // SAFETY: realpath succeeded: `raw` is NUL-terminated.
                unsafe { CStr::from_ptr(raw.as_ptr().cast()) }.to_bytes()
            }
            Err(Some(e)) => return fail(e),
        };
        let mut out: Buf = [0; PATH_MAX];
        let found = match outbound(cfg, found, &mut out) {
            Ok(p) if p.len() < PATH_MAX => p,
            Ok(_) => return fail(libc::ENAMETOOLONG),
            Err(e) => return fail(e),
        };
        give_path(found, resolved)
    })
}

/// realpath's result: into `resolved` (PATH_MAX bytes), or `malloc`ed when it is NULL.
fn give_path(found: &[u8], resolved: *mut c_char) -> *mut c_char {
    if resolved.is_null() {
        return malloc_copy(found, 0);
    }
    // SAFETY: `resolved` holds PATH_MAX bytes (realpath's contract), and `found` is shorter.
    unsafe {
        core::ptr::copy_nonoverlapping(found.as_ptr(), resolved.cast(), found.len());
        *resolved.add(found.len()) = 0;
    }
    resolved
}

/// `realpath(path)` into `out` as the kernel names the file: `Err(Some(errno))` on failure,
/// `Err(None)` when `/proc` cannot name it (not mounted).
fn kernel_realpath(path: *const c_char, out: &mut Buf) -> Result<usize, Option<c_int>> {
    if path.is_null() {
        return Err(Some(libc::EINVAL));
    }
    // SAFETY: `path` is the program's NUL-terminated string.
    match unsafe { kernel::real_name(path.cast(), &mut out[..]) }? {
        n if n >= PATH_MAX => Err(Some(libc::ENAMETOOLONG)),
        n => Ok(n),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn __realpath_chk(
    path: *const c_char,
    resolved: *mut c_char,
    resolvedlen: size_t,
) -> *mut c_char {
    static REAL: Real = Real::new("__realpath_chk\0");
    type F = unsafe extern "C" fn(*const c_char, *mut c_char, size_t) -> *mut c_char;
    if resolvedlen < PATH_MAX {
        // SAFETY: the real function reports the overflow.
        return match unsafe { REAL.get::<F>() } {
            Some(real) => unsafe { real(path, resolved, resolvedlen) },
            None => fail(libc::ENOSYS),
        };
    }
    // SAFETY: forwarded.
    unsafe { realpath(path, resolved) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn canonicalize_file_name(path: *const c_char) -> *mut c_char {
    // SAFETY: forwarded; realpath(p, NULL) allocates its result.
    unsafe { realpath(path, core::ptr::null_mut()) }
}
