//! The C-variadic entry points.
//!
//! `open(path, flags, ...)` and `openat(dirfd, path, flags, ...)` read their optional `mode` only
//! when `flags` ask to create a file. Stable Rust cannot define a variadic function, so these
//! hooks take `mode` as a fixed argument: on Linux x86_64 (System V) and aarch64 (AAPCS64) the
//! first variadic integer arguments travel in the same registers as fixed ones, so the callee
//! sees the caller's mode when one was passed and an unused register otherwise. The real
//! function is then *called* as the variadic function it is, with that mode, and reads it only
//! under `O_CREAT`/`O_TMPFILE`, as it would have. The end-to-end tests create files through
//! these hooks with explicit modes and check them, from Rust and from C callers (python).
//!
//! `execl`, `execle` and `execlp` need their variable argument lists walked, which is done in C
//! (`c/variadic.c`); the exported names are naked trampolines that jump there, because a cdylib
//! only exports symbols defined in Rust.

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the fixed-`mode` open hooks are ABI-checked on x86_64 and aarch64 Linux only");

use core::ffi::{c_char, c_int, c_uint};

use libc::mode_t;

use super::mirage::open_at;
use crate::real::{Real, fail};

type Open = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
type OpenAt = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;

macro_rules! open {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            // Paths `open_at` passes on are absolute or the program's own, so plain `open` serves.
            open_at(libc::AT_FDCWD, path, flags, |_, path, flags| {
                // SAFETY: the real `open` with the program's arguments (see the module docs).
                match unsafe { REAL.get::<Open>() } {
                    Some(real) => unsafe { real(path, flags, mode as c_uint) },
                    None => fail(libc::ENOSYS),
                }
            })
        }
    )*};
}

macro_rules! openat {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            open_at(dirfd, path, flags, |dirfd, path, flags| {
                // SAFETY: as for `open`.
                match unsafe { REAL.get::<OpenAt>() } {
                    Some(real) => unsafe { real(dirfd, path, flags, mode as c_uint) },
                    None => fail(libc::ENOSYS),
                }
            })
        }
    )*};
}

open!(open, open64);
openat!(openat, openat64);

unsafe extern "C" {
    fn velo_shim_execl();
    fn velo_shim_execle();
    fn velo_shim_execlp();
}

macro_rules! trampoline {
    ($($name:ident => $target:ident),*) => {$(
        /// Jumps to the C implementation with every register and stack argument untouched.
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name() {
            #[cfg(target_arch = "x86_64")]
            core::arch::naked_asm!("jmp {}", sym $target);
            #[cfg(target_arch = "aarch64")]
            core::arch::naked_asm!("b {}", sym $target);
        }
    )*};
}

trampoline!(execl => velo_shim_execl, execle => velo_shim_execle, execlp => velo_shim_execlp);
