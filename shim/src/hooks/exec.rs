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
use velo_intercept::{env, translate};

use super::inbound;
use crate::config::{self, Config};
use crate::environ::preload_has_shim;
use crate::mirage::{self, Mirage};
use crate::path::Op;
use crate::path::{Buf, PATH_MAX};
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

/// What the new program must inherit: the inception projection, Mode B's mirage, or both.
#[derive(Clone, Copy)]
struct Carry {
    cfg: Option<&'static Config>,
    mirage: Option<&'static Mirage>,
}

impl Carry {
    fn get() -> Option<Carry> {
        let (cfg, mirage) = (config::get(), mirage::get());
        (cfg.is_some() || mirage.is_some()).then_some(Carry { cfg, mirage })
    }

    /// This library's `LD_PRELOAD` entry, and `LD_PRELOAD=<it>\0`.
    fn shim(&self) -> (&'static [u8], &'static [u8]) {
        match (self.cfg, self.mirage) {
            (Some(c), _) => (c.shim, c.env_preload),
            (None, Some(m)) => (m.shim, m.env_preload),
            (None, None) => (&[], &[]),
        }
    }
}

/// The environment `envp` with the projection carried over (see the module docs). A mirage also
/// hands over the virtual working directory as `VELO_MIRAGE_CWD` (replacing any the program
/// passed, and removed when the working directory is a real one).
fn child_env(carry: Carry, envp: Argv) -> Result<ChildEnv, c_int> {
    let (shim, env_preload) = carry.shim();
    let maps = carry.cfg.map_or(&[][..], |c| c.maps());
    let mut n = 0;
    let (mut has_canonical, mut has_physical) = (carry.cfg.is_none(), carry.cfg.is_none());
    let mut has_extra = carry.cfg.is_none_or(|c| c.env_extra.is_empty());
    let mut has_mirage = [carry.mirage.is_none(); 4];
    // Without a writable layer there is no VELO_MIRAGE_UPPER to carry.
    has_mirage[3] |= carry.mirage.is_some_and(|m| m.upper.is_empty());
    let mut old_cwd: Option<usize> = None;
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
            if value(entry, env::CANONICAL_ROOT.bytes()).is_some() {
                has_canonical = true;
            } else if value(entry, env::PHYSICAL_ROOT.bytes()).is_some() {
                has_physical = true;
            } else if value(entry, env::EXTRA_ROOTS.bytes()).is_some() {
                has_extra = true;
            } else if value(entry, env::MIRAGE.bytes()).is_some() {
                has_mirage[0] = true;
            } else if value(entry, env::MIRAGE_AT.bytes()).is_some() {
                has_mirage[1] = true;
            } else if value(entry, env::MIRAGE_EMPTY.bytes()).is_some() {
                has_mirage[2] = true;
            } else if value(entry, env::MIRAGE_UPPER.bytes()).is_some() {
                has_mirage[3] = true;
            } else if value(entry, env::MIRAGE_CWD.bytes()).is_some() {
                old_cwd = Some(n);
            } else if let Some(v) = value(entry, env::LD_PRELOAD.bytes()) {
                preload = Some((n, v));
            } else if let Some(v) = value(entry, b"LD_LIBRARY_PATH") {
                library_path = Some((n, v));
            }
            n += 1;
        }
    }
    let mut cwd: Buf = [0; PATH_MAX];
    let cwd_len = carry.mirage.and_then(|_| mirage::cwd(&mut cwd[16..]));
    let fix_cwd = old_cwd.is_some() || cwd_len.is_some();
    let fix_preload = !shim.is_empty() && preload.is_none_or(|(_, v)| !preload_has_shim(v, shim));
    let fix_library_path = library_path.filter(|(_, v)| translate::list_has_canonical(maps, v));
    if !fix_preload
        && has_canonical
        && has_physical
        && has_extra
        && has_mirage == [true; 4]
        && !fix_cwd
        && fix_library_path.is_none()
    {
        return Ok(ChildEnv {
            envp,
            map: core::ptr::null_mut(),
            len: 0,
        });
    }

    let pointers = (n + 9) * size_of::<*const c_char>();
    let longest_root = maps.iter().map(|m| m.physical().len()).max().unwrap_or(0);
    let library_path_len = fix_library_path.map_or(0, |(_, v)| {
        let entries = v.iter().filter(|&&b| b == b':').count() + 1;
        "LD_LIBRARY_PATH=".len() + v.len() + entries * longest_root + 1
    });
    let preload_len = preload.map_or(0, |(_, v)| {
        env::LD_PRELOAD.bytes().len() + 1 + shim.len() + 1 + v.len() + 1
    });
    let cwd_entry_len = cwd_len.map_or(0, |n| env::MIRAGE_CWD.bytes().len() + 1 + n + 1);
    let len = pointers + library_path_len + preload_len + cwd_entry_len;
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
        // SAFETY: at most n + 8 pointers and a NULL were reserved.
        unsafe { *out.add(k) = p };
        k += 1;
    };
    for i in 0..n {
        if old_cwd == Some(i) {
            continue;
        }
        // SAFETY: `i < n`, within the program's array.
        let mut entry = unsafe { *envp.add(i) };
        if let Some((at, list)) = fix_library_path
            && at == i
        {
            // SAFETY: reserved: the translated list is at most `library_path_len` long.
            let buf = unsafe { core::slice::from_raw_parts_mut(strings, library_path_len) };
            let key = crate::bytes::put(buf, 0, b"LD_LIBRARY_PATH=");
            let written = match (key, buf.get_mut(16..)) {
                (Some(_), Some(rest)) => {
                    translate::list_to_physical(maps, list, rest).map_err(|_| libc::E2BIG)
                }
                _ => Err(libc::E2BIG),
            };
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
            entry = unsafe {
                push(
                    &mut strings,
                    &[env::LD_PRELOAD.bytes(), b"=", shim, b" ", list],
                )
            };
        }
        put(entry);
    }
    if let Some(cfg) = carry.cfg {
        if !has_canonical {
            put(cfg.env_canonical.as_ptr().cast());
        }
        if !has_physical {
            put(cfg.env_physical.as_ptr().cast());
        }
        if !has_extra {
            put(cfg.env_extra.as_ptr().cast());
        }
    }
    if let Some(m) = carry.mirage {
        for (has, entry) in has_mirage.iter().zip(m.env) {
            if !has && !entry.is_empty() {
                put(entry.as_ptr().cast());
            }
        }
    }
    if fix_preload && preload.is_none() {
        put(env_preload.as_ptr().cast());
    }
    if let Some(n) = cwd_len {
        // SAFETY: reserved by `cwd_entry_len`.
        put(unsafe {
            push(
                &mut strings,
                &[
                    env::MIRAGE_CWD.bytes(),
                    b"=",
                    crate::bytes::head(crate::bytes::tail(&cwd, 16), n),
                ],
            )
        });
    }
    put(core::ptr::null());
    Ok(ChildEnv {
        envp: out.cast_const(),
        map,
        len,
    })
}

/// Runs `call` with the child environment for `envp`; `-1`/errno if it cannot be built.
fn with_env(carry: Carry, envp: Argv, call: impl FnOnce(Argv) -> c_int) -> c_int {
    match child_env(carry, envp) {
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

/// The program path as exec sees it: canonical paths translated, a virtual file as its blob.
fn exec_path<R: crate::real::Fail>(
    path: *const c_char,
    call: impl FnOnce(*const c_char) -> R,
) -> R {
    crate::path::in1_at(Op::Read, libc::AT_FDCWD, path, call)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn execve(path: *const c_char, argv: Argv, envp: Argv) -> c_int {
    let Some(carry) = Carry::get() else {
        return real_execve(path, argv, envp);
    };
    exec_path(path, |path| {
        with_env(carry, envp, |envp| real_execve(path, argv, envp))
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

/// Whether the hooks must search `PATH` themselves: glibc's search ends in its internal
/// `execve`, which would hand a canonical or virtual directory to the kernel.
fn search_ourselves(carry: Carry, search: &[u8]) -> bool {
    let canonical = carry
        .cfg
        .is_some_and(|c| translate::list_has_canonical(c.maps(), search));
    let virtual_dir = carry.mirage.is_some_and(|m| {
        search.split(|&b| b == b':').any(|d| {
            mirage::under(m.root, d) || (!d.starts_with(b"/") && mirage::cwd(&mut [0; 1]).is_some())
        })
    });
    canonical || virtual_dir
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
    let Some(carry) = Carry::get() else {
        return real(file, envp);
    };
    // SAFETY: `file` is the program's C string (checked for NULL first).
    if file.is_null() || unsafe { CStr::from_ptr(file) }.to_bytes().contains(&b'/') {
        // SAFETY: forwarded: a path, not a name to search.
        return unsafe { execve(file, argv, envp) };
    }
    let search = search_path();
    if !search_ourselves(carry, search) {
        return with_env(carry, envp, |envp| real(file, envp));
    }
    let mut denied = false;
    // SAFETY: checked non-null above.
    let name = unsafe { CStr::from_ptr(file) }.to_bytes();
    for dir in search.split(|&b| b == b':') {
        let mut buf: Buf = [0; PATH_MAX];
        if candidate(dir, name, &mut buf).is_none() {
            continue;
        }
        // SAFETY: a NUL-terminated candidate; our own hook translates it.
        unsafe { execve(buf.as_ptr().cast(), argv, envp) };
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
    let real = |dirfd, path, envp| match unsafe { REAL.get::<F>() } {
        // SAFETY: execveat's signature; the program's arguments.
        Some(real) => unsafe { real(dirfd, path, argv, envp, flags) },
        None => fail(libc::ENOSYS),
    };
    let Some(carry) = Carry::get() else {
        return real(dirfd, path, envp);
    };
    crate::path::in1_at(Op::Read, dirfd, path, |p| {
        // A translated path is absolute: the descriptor no longer matters.
        with_env(carry, envp, |envp| real(dirfd, p, envp))
    })
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
    match Carry::get() {
        Some(carry) => with_env(carry, envp, real),
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

/// `dir/name`, NUL-terminated in `buf`, as the program would have named it (the hooks it is
/// handed to translate it). An empty entry is the working directory.
fn candidate(dir: &[u8], name: &[u8], buf: &mut Buf) -> Option<usize> {
    let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
    crate::bytes::put_c(buf, 0, &[dir, b"/", name])
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
fn spawn_with_env(carry: Carry, envp: Argv, call: impl FnOnce(Argv) -> c_int) -> c_int {
    match child_env(carry, envp) {
        Ok(env) => call(env.envp),
        Err(e) => e,
    }
}

/// Translates `path` for a spawn, which reports errors as its return value, not in errno.
fn spawn_in1(path: *const c_char, call: impl FnOnce(*const c_char) -> c_int) -> c_int {
    let saved = errno();
    let r = exec_path(path, call);
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
    let Some(carry) = Carry::get() else {
        return real_spawn(&REAL_SPAWN, pid, path, actions, attr, argv, envp);
    };
    spawn_in1(path, |path| {
        spawn_with_env(carry, envp, |envp| {
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
    let Some(carry) = Carry::get() else {
        return real_spawn(&REAL_SPAWNP, pid, file, actions, attr, argv, envp);
    };
    // SAFETY: `file` is the program's C string (checked for NULL first).
    if file.is_null() || unsafe { CStr::from_ptr(file) }.to_bytes().contains(&b'/') {
        // SAFETY: forwarded: a path, not a name to search.
        return unsafe { posix_spawn(pid, file, actions, attr, argv, envp) };
    }
    let search = search_path();
    if search_ourselves(carry, search) {
        // SAFETY: checked non-null above.
        let name = unsafe { CStr::from_ptr(file) }.to_bytes();
        for dir in search.split(|&b| b == b':') {
            let mut buf: Buf = [0; PATH_MAX];
            if candidate(dir, name, &mut buf).is_some() && executable_file(&buf) {
                // SAFETY: a NUL-terminated candidate; our own hook translates it.
                return unsafe { posix_spawn(pid, buf.as_ptr().cast(), actions, attr, argv, envp) };
            }
        }
    }
    spawn_with_env(carry, envp, |envp| {
        real_spawn(&REAL_SPAWNP, pid, file, actions, attr, argv, envp)
    })
}

/// Whether `path` (NUL-terminated, as the program names it) is a regular file we may execute,
/// asked through the hooks, so canonical and virtual paths count; errno is left alone.
fn executable_file(path: &Buf) -> bool {
    keep_errno(|| {
        // SAFETY: a NUL-terminated buffer and a zeroed stat; our own hooks.
        unsafe {
            let mut st: libc::stat = core::mem::zeroed();
            super::mirage::stat(path.as_ptr().cast(), (&raw mut st).cast()) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFREG
                && super::mirage::faccessat(libc::AT_FDCWD, path.as_ptr().cast(), libc::X_OK, 0)
                    == 0
        }
    })
}

inbound! {
    /// glibc copies the path and runs `chdir` in the child with its internal call: without this
    /// hook `cargo test` cannot start test binaries from a canonical working directory.
    fn posix_spawn_file_actions_addchdir_np(actions: Opaque, path: *const c_char) -> c_int; in(path);
    fn posix_spawn_file_actions_addopen(actions: Opaque, fd: c_int, path: *const c_char, flags: c_int, mode: libc::mode_t) -> c_int; in(path);
}
