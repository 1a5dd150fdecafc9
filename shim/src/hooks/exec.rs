//! exec and posix_spawn: translate the program path and carry the projection into the new
//! program.
//!
//! A program may start a child with an environment of its own making (`env -i`, Rust's
//! `Command::env_clear`, a build tool's curated environment). The projection must survive that,
//! so every exec and spawn passes an environment in which:
//!
//! - `VRIFT_CANONICAL_ROOT` and `VRIFT_PHYSICAL_ROOT` are present (added from this process's
//!   configuration when missing; an explicit value, such as a nested `velo inception`, is kept);
//! - `LD_PRELOAD` names this library (added, or prepended to the program's own list);
//! - `LD_LIBRARY_PATH` has its canonical entries made physical: the dynamic loader searches it
//!   with raw syscalls before any hook exists (cargo puts `target/debug/deps` there).
//!
//! When nothing needs changing the program's own array is passed through. Otherwise the new
//! array and strings are built in an anonymous `mmap` (no `malloc`, no lock: this runs between
//! `vfork` and `exec` too) and unmapped after a failed exec or a finished spawn.
//!
//! `execvp`/`execvpe`/`posix_spawnp` search `PATH`; glibc does so with its internal `execve`, which
//! would hand canonical `PATH` entries to the kernel. When `PATH` holds a canonical entry, the
//! hooks search it themselves (glibc's rules, without the `ENOEXEC` → `/bin/sh` fallback).

use core::ffi::{CStr, c_char, c_int, c_void};

use libc::pid_t;
use velo_intercept::translate;

use super::inbound;
use crate::config::{self, Config, preload_has_shim};
use crate::path::{Buf, PATH_MAX, in1};
use crate::real::{Real, errno, fail, keep_errno, set_errno};

type Argv = *const *const c_char;
type Opaque = *mut c_void;

unsafe extern "C" {
    static environ: *const *const c_char;
}

fn current_environ() -> Argv {
    // SAFETY: reading the pointer is always valid; its contents are the program's.
    unsafe { environ }
}

// --- the child's environment -------------------------------------------------------------------

/// An environment for a new program; unmaps what it built when dropped, keeping errno.
struct ChildEnv {
    envp: Argv,
    map: *mut c_void,
    len: usize,
}

impl Drop for ChildEnv {
    fn drop(&mut self) {
        if !self.map.is_null() {
            // SAFETY: `map`/`len` are the mapping `child_env` made.
            keep_errno(|| unsafe { libc::munmap(self.map, self.len) });
        }
    }
}

fn value<'a>(entry: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    entry.strip_prefix(key)?.strip_prefix(b"=")
}

/// Appends `parts` and a NUL at `*at`; returns the start.
///
/// # Safety
/// The space was reserved when the mapping was sized.
unsafe fn push(at: &mut *mut u8, parts: &[&[u8]]) -> *const c_char {
    let start = *at;
    for part in parts {
        // SAFETY: reserved by the caller.
        unsafe {
            core::ptr::copy_nonoverlapping(part.as_ptr(), *at, part.len());
            *at = at.add(part.len());
        }
    }
    // SAFETY: as above.
    unsafe {
        **at = 0;
        *at = at.add(1);
    }
    start.cast()
}

/// The environment `envp` with the projection carried over (see the module docs).
fn child_env(cfg: &Config, envp: Argv) -> Result<ChildEnv, c_int> {
    let mut n = 0;
    let (mut has_canonical, mut has_physical) = (false, false);
    let mut has_extra = cfg.env_extra.is_empty();
    let mut preload: Option<(usize, &[u8])> = None;
    let mut library_path: Option<(usize, &[u8])> = None;
    if !envp.is_null() {
        loop {
            // SAFETY: `envp` is a NULL-terminated array of C strings.
            let entry = unsafe { *envp.add(n) };
            if entry.is_null() {
                break;
            }
            // SAFETY: as above.
            let entry = unsafe { CStr::from_ptr(entry) }.to_bytes();
            if value(entry, b"VRIFT_CANONICAL_ROOT").is_some() {
                has_canonical = true;
            } else if value(entry, b"VRIFT_PHYSICAL_ROOT").is_some() {
                has_physical = true;
            } else if value(entry, b"VRIFT_EXTRA_ROOTS").is_some() {
                has_extra = true;
            } else if let Some(v) = value(entry, b"LD_PRELOAD") {
                preload = Some((n, v));
            } else if let Some(v) = value(entry, b"LD_LIBRARY_PATH") {
                library_path = Some((n, v));
            }
            n += 1;
        }
    }
    let fix_preload =
        !cfg.shim.is_empty() && preload.is_none_or(|(_, v)| !preload_has_shim(v, cfg.shim));
    let fix_library_path =
        library_path.filter(|(_, v)| translate::list_has_canonical(cfg.maps(), v));
    if !fix_preload && has_canonical && has_physical && has_extra && fix_library_path.is_none() {
        return Ok(ChildEnv {
            envp,
            map: core::ptr::null_mut(),
            len: 0,
        });
    }

    let pointers = (n + 5) * size_of::<*const c_char>();
    let longest_root = cfg
        .maps()
        .iter()
        .map(|m| m.physical().len())
        .max()
        .unwrap_or(0);
    let library_path_len = fix_library_path.map_or(0, |(_, v)| {
        let entries = v.iter().filter(|&&b| b == b':').count() + 1;
        "LD_LIBRARY_PATH=".len() + v.len() + entries * longest_root + 1
    });
    let preload_len = preload.map_or(0, |(_, v)| {
        "LD_PRELOAD=".len() + cfg.shim.len() + 1 + v.len() + 1
    });
    let len = pointers + library_path_len + preload_len;
    // SAFETY: an anonymous private mapping; checked below.
    let map = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(errno());
    }
    let out = map.cast::<*const c_char>();
    // SAFETY: the strings area follows the pointer array inside the mapping.
    let mut strings = unsafe { map.cast::<u8>().add(pointers) };
    let mut k = 0;
    let mut put = |p: *const c_char| {
        // SAFETY: at most n + 4 pointers and a NULL were reserved.
        unsafe { *out.add(k) = p };
        k += 1;
    };
    for i in 0..n {
        // SAFETY: `i < n`, within the program's array.
        let mut entry = unsafe { *envp.add(i) };
        if let Some((at, list)) = fix_library_path
            && at == i
        {
            // SAFETY: reserved: the translated list is at most `library_path_len` long.
            let buf = unsafe { core::slice::from_raw_parts_mut(strings, library_path_len) };
            buf[..16].copy_from_slice(b"LD_LIBRARY_PATH=");
            let written = translate::list_to_physical(cfg.maps(), list, &mut buf[16..])
                .map_err(|_| libc::E2BIG);
            match written {
                Ok(w) => {
                    entry = strings.cast();
                    // SAFETY: within the reservation (16 + w + NUL).
                    strings = unsafe { strings.add(16 + w + 1) };
                }
                Err(e) => {
                    // SAFETY: our mapping.
                    unsafe { libc::munmap(map, len) };
                    return Err(e);
                }
            }
        }
        if let Some((at, list)) = preload
            && fix_preload
            && at == i
        {
            // SAFETY: reserved by `preload_len`.
            entry = unsafe { push(&mut strings, &[b"LD_PRELOAD=", cfg.shim, b" ", list]) };
        }
        put(entry);
    }
    if !has_canonical {
        put(cfg.env_canonical.as_ptr().cast());
    }
    if !has_physical {
        put(cfg.env_physical.as_ptr().cast());
    }
    if fix_preload && preload.is_none() {
        put(cfg.env_preload.as_ptr().cast());
    }
    if !has_extra {
        put(cfg.env_extra.as_ptr().cast());
    }
    put(core::ptr::null());
    Ok(ChildEnv {
        envp: out.cast_const(),
        map,
        len,
    })
}

/// Runs `call` with the child environment for `envp`; `-1`/errno if it cannot be built.
fn with_env(cfg: &Config, envp: Argv, call: impl FnOnce(Argv) -> c_int) -> c_int {
    match child_env(cfg, envp) {
        Ok(env) => call(env.envp),
        Err(e) => fail(e),
    }
}

// --- exec --------------------------------------------------------------------------------------

type Execve = unsafe extern "C" fn(*const c_char, Argv, Argv) -> c_int;

fn real_execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int {
    static REAL: Real = Real::new("execve\0");
    // SAFETY: execve's signature; the arguments are the program's.
    match unsafe { REAL.get::<Execve>() } {
        Some(real) => unsafe { real(path, argv, envp) },
        None => fail(libc::ENOSYS),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int {
    let Some(cfg) = config::get() else {
        return real_execve(path, argv, envp);
    };
    in1(path, |path| {
        with_env(cfg, envp, |envp| real_execve(path, argv, envp))
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execv(path: *const c_char, argv: Argv) -> c_int {
    // SAFETY: forwarded.
    unsafe { execve(path, argv, current_environ()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: Argv) -> c_int {
    // SAFETY: forwarded.
    unsafe { execvpe(file, argv, current_environ()) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvpe(file: *const c_char, argv: Argv, envp: Argv) -> c_int {
    static REAL: Real = Real::new("execvpe\0");
    type F = unsafe extern "C" fn(*const c_char, Argv, Argv) -> c_int;
    let real = |file, envp| match unsafe { REAL.get::<F>() } {
        // SAFETY: execvpe's signature; the program's arguments.
        Some(real) => unsafe { real(file, argv, envp) },
        None => fail(libc::ENOSYS),
    };
    let Some(cfg) = config::get() else {
        return real(file, envp);
    };
    // SAFETY: `file` is the program's C string (checked for NULL first).
    if file.is_null() || unsafe { CStr::from_ptr(file) }.to_bytes().contains(&b'/') {
        // SAFETY: forwarded: a path, not a name to search.
        return unsafe { execve(file, argv, envp) };
    }
    let search = search_path();
    with_env(cfg, envp, |envp| {
        if !translate::list_has_canonical(cfg.maps(), search) {
            return real(file, envp);
        }
        let mut denied = false;
        // SAFETY: checked non-null above.
        let name = unsafe { CStr::from_ptr(file) }.to_bytes();
        for dir in search.split(|&b| b == b':') {
            let mut buf: Buf = [0; PATH_MAX];
            if candidate(cfg, dir, name, &mut buf).is_none() {
                continue;
            }
            real_execve(buf.as_ptr().cast(), argv, envp);
            match errno() {
                libc::EACCES => denied = true,
                libc::ENOENT
                | libc::ENOTDIR
                | libc::ESTALE
                | libc::ENODEV
                | libc::ETIMEDOUT
                | libc::ENAMETOOLONG => {}
                _ => return -1,
            }
        }
        set_errno(if denied { libc::EACCES } else { libc::ENOENT });
        -1
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execveat(
    dirfd: c_int,
    path: *const c_char,
    argv: Argv,
    envp: Argv,
    flags: c_int,
) -> c_int {
    static REAL: Real = Real::new("execveat\0");
    type F = unsafe extern "C" fn(c_int, *const c_char, Argv, Argv, c_int) -> c_int;
    let real = |path, envp| match unsafe { REAL.get::<F>() } {
        // SAFETY: execveat's signature; the program's arguments.
        Some(real) => unsafe { real(dirfd, path, argv, envp, flags) },
        None => fail(libc::ENOSYS),
    };
    let Some(cfg) = config::get() else {
        return real(path, envp);
    };
    in1(path, |path| with_env(cfg, envp, |envp| real(path, envp)))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fexecve(fd: c_int, argv: Argv, envp: Argv) -> c_int {
    static REAL: Real = Real::new("fexecve\0");
    type F = unsafe extern "C" fn(c_int, Argv, Argv) -> c_int;
    let real = |envp| match unsafe { REAL.get::<F>() } {
        // SAFETY: fexecve's signature; the program's arguments.
        Some(real) => unsafe { real(fd, argv, envp) },
        None => fail(libc::ENOSYS),
    };
    match config::get() {
        Some(cfg) => with_env(cfg, envp, real),
        None => real(envp),
    }
}

/// `$PATH`, or glibc's default when it is unset.
fn search_path() -> &'static [u8] {
    // SAFETY: getenv of a literal; the value outlives this call (we do not modify environ).
    let p = unsafe { libc::getenv(c"PATH".as_ptr()) };
    if p.is_null() {
        b"/bin:/usr/bin"
    } else {
        // SAFETY: getenv returns a NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_bytes()
    }
}

/// `dir/name`, physical, NUL-terminated in `buf`. An empty entry is the working directory.
fn candidate(cfg: &Config, dir: &[u8], name: &[u8], buf: &mut Buf) -> Option<usize> {
    let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
    let (root, rest) = match translate::find_canonical(cfg.maps(), dir) {
        Some((m, rest)) => (m.physical(), rest),
        None => (&[][..], dir),
    };
    let len = root.len() + rest.len() + 1 + name.len();
    if len >= PATH_MAX {
        return None;
    }
    let mut at = 0;
    for part in [root, rest, b"/", name] {
        buf[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    buf[at] = 0;
    Some(at)
}

// --- posix_spawn -------------------------------------------------------------------------------

type Spawn = unsafe extern "C" fn(*mut pid_t, *const c_char, Opaque, Opaque, Argv, Argv) -> c_int;

fn real_spawn(
    real: &Real,
    pid: *mut pid_t,
    path: *const c_char,
    actions: Opaque,
    attr: Opaque,
    argv: Argv,
    envp: Argv,
) -> c_int {
    // SAFETY: posix_spawn(p)'s signature; the program's arguments. posix_spawn returns an error
    // number instead of setting errno.
    match unsafe { real.get::<Spawn>() } {
        Some(real) => unsafe { real(pid, path, actions, attr, argv, envp) },
        None => libc::ENOSYS,
    }
}

static REAL_SPAWN: Real = Real::new("posix_spawn\0");
static REAL_SPAWNP: Real = Real::new("posix_spawnp\0");

/// Runs a spawn with the child environment; posix_spawn reports errors as its return value.
fn spawn_with_env(cfg: &Config, envp: Argv, call: impl FnOnce(Argv) -> c_int) -> c_int {
    match child_env(cfg, envp) {
        Ok(env) => call(env.envp),
        Err(e) => e,
    }
}

/// Translates `path` for a spawn, which reports errors as its return value, not in errno.
fn spawn_in1(path: *const c_char, call: impl FnOnce(*const c_char) -> c_int) -> c_int {
    let saved = errno();
    let r = in1(path, call);
    if r == -1 {
        // The translation failed before the spawn (in1's failure value).
        let e = errno();
        set_errno(saved);
        return e;
    }
    r
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    actions: Opaque,
    attr: Opaque,
    argv: Argv,
    envp: Argv,
) -> c_int {
    let Some(cfg) = config::get() else {
        return real_spawn(&REAL_SPAWN, pid, path, actions, attr, argv, envp);
    };
    spawn_in1(path, |path| {
        spawn_with_env(cfg, envp, |envp| {
            real_spawn(&REAL_SPAWN, pid, path, actions, attr, argv, envp)
        })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    actions: Opaque,
    attr: Opaque,
    argv: Argv,
    envp: Argv,
) -> c_int {
    let Some(cfg) = config::get() else {
        return real_spawn(&REAL_SPAWNP, pid, file, actions, attr, argv, envp);
    };
    // SAFETY: `file` is the program's C string (checked for NULL first).
    if file.is_null() || unsafe { CStr::from_ptr(file) }.to_bytes().contains(&b'/') {
        return spawn_in1(file, |file| {
            spawn_with_env(cfg, envp, |envp| {
                real_spawn(&REAL_SPAWNP, pid, file, actions, attr, argv, envp)
            })
        });
    }
    let search = search_path();
    spawn_with_env(cfg, envp, |envp| {
        if translate::list_has_canonical(cfg.maps(), search) {
            // SAFETY: checked non-null above.
            let name = unsafe { CStr::from_ptr(file) }.to_bytes();
            for dir in search.split(|&b| b == b':') {
                let mut buf: Buf = [0; PATH_MAX];
                if candidate(cfg, dir, name, &mut buf).is_some() && executable_file(&buf) {
                    return real_spawn(
                        &REAL_SPAWN,
                        pid,
                        buf.as_ptr().cast(),
                        actions,
                        attr,
                        argv,
                        envp,
                    );
                }
            }
        }
        real_spawn(&REAL_SPAWNP, pid, file, actions, attr, argv, envp)
    })
}

/// Whether `path` (NUL-terminated, physical) is a regular file we may execute, asked of the
/// kernel directly; errno is left alone.
fn executable_file(path: &Buf) -> bool {
    keep_errno(|| {
        // SAFETY: raw syscalls on a NUL-terminated buffer and a zeroed stat.
        unsafe {
            let mut st: libc::stat = core::mem::zeroed();
            libc::syscall(
                libc::SYS_newfstatat,
                libc::AT_FDCWD,
                path.as_ptr(),
                &raw mut st,
                0,
            ) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFREG
                && libc::syscall(
                    libc::SYS_faccessat,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::X_OK,
                ) == 0
        }
    })
}

inbound! {
    /// glibc copies the path and runs `chdir` in the child with its internal call: without this
    /// hook `cargo test` cannot start test binaries from a canonical working directory.
    fn posix_spawn_file_actions_addchdir_np(actions: Opaque, path: *const c_char) -> c_int; in(path);
    fn posix_spawn_file_actions_addopen(actions: Opaque, fd: c_int, path: *const c_char, flags: c_int, mode: libc::mode_t) -> c_int; in(path);
}
