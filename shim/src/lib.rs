//! `libvelo_shim.so`: velo's `LD_PRELOAD` interception layer.
//!
//! Loaded into every process of a projected tree, the shim presents a project under one
//! canonical path (`/vrift_workspace`) while all I/O happens on the physical directory
//! ("inception", see `docs/inception.md`). It does so by exporting libc's filesystem entry points
//! under their own names: the dynamic linker binds the program's calls to them first, and each
//! hook translates its path arguments canonical → physical before calling the real function
//! (found with `dlsym(RTLD_NEXT)`), or rewrites the physical paths a call returns back to
//! canonical ones. Every export is a row of the interception table in `velo-intercept`; a test
//! checks the built library against it both ways.
//!
//! Hooks run inside arbitrary programs, in signal handlers, between `vfork` and `exec`, and while
//! allocators are starting up (jemalloc calls `readlink` from inside `malloc`), so they obey
//! rules stricter than the rest of velo:
//!
//! - **no allocation, locks, output or signal changes**: paths are built in stack buffers,
//!   configuration lives in static buffers filled once, real functions are cached in atomics.
//!   The only heap memory touched is what an API itself promises to return (`getcwd(NULL, 0)`,
//!   `realpath(p, NULL)`), allocated with the program's own `malloc`; `exec` and `posix_spawn`
//!   build a patched environment in an anonymous `mmap`, which takes no lock.
//! - **errno is preserved**: a pass-through leaves it as the real call set it; translation
//!   failures report `ENAMETOOLONG` as the kernel would.
//! - **pass-through when not projecting**: without `VRIFT_PHYSICAL_ROOT` every hook calls the real
//!   function with its arguments untouched.
//!
//! The variadic exec entry points (`execl`, `execle`, `execlp`) are written in C (`c/variadic.c`)
//! and exported through naked trampolines; `open`/`openat` take their optional mode as a fixed
//! third (fourth) argument, which is ABI-compatible on Linux x86_64 and aarch64 (see
//! [`hooks::open`]).

// A panic in a hook aborts the user's program: no hook may have a way to panic that a lint can
// see. Buffers are indexed only through `bytes`, whose writes say when they do not fit.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(
    not(target_os = "linux"),
    allow(dead_code, reason = "hooks are Linux-only for now")
)]

mod bytes;
mod config;
mod environ;
#[cfg(target_os = "linux")]
mod kernel;
#[cfg(target_os = "linux")]
mod mirage;
mod once;
mod path;
mod real;

#[cfg(target_os = "linux")]
mod hooks;

#[cfg(target_os = "macos")]
mod macos;

/// The library's constructor: reads the projection and the mirage as the library loads, so the
/// first hook does not pay for them.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = {
    extern "C" fn init_on_load() {
        let _ = crate::config::get();
        let _ = crate::mirage::get();
    }
    init_on_load
};
