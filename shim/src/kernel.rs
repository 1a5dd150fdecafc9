//! The system calls whose results the shim translates outbound, issued from the shim's own code.
//!
//! `getcwd`, `readlinkat` and the `openat(O_PATH)` behind `realpath` return physical paths to
//! the shim, which renames them before the program sees them. A tracer watching from outside
//! (`velo trace`) must tell these calls from a program's own raw ones, which would leak the
//! physical path: it does so by the instruction pointer, which for these calls lies in this
//! library's text. Hence an inline `syscall` instruction here, rather than libc's wrappers,
//! whose instruction lies in libc. Results are the kernel's: `-errno` on failure.

use crate::bytes;

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn syscall4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller passes valid arguments for `nr`; the syscall instruction clobbers
    // rcx and r11 only.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn syscall4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: as above; `svc 0` with the number in x8.
    unsafe {
        core::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a as isize => ret,
            in("x1") b,
            in("x2") c,
            in("x3") d,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn syscall4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    // SAFETY: forwarded.
    let r = unsafe { libc::syscall(nr, a, b, c, d) } as isize;
    if r < 0 {
        -(crate::real::errno() as isize)
    } else {
        r
    }
}

/// `getcwd(buf, size)`: the length including the NUL, or `-errno`.
///
/// # Safety
/// `buf` holds `size` bytes.
pub unsafe fn getcwd(buf: *mut u8, size: usize) -> isize {
    // SAFETY: forwarded.
    unsafe { syscall4(libc::SYS_getcwd, buf as usize, size, 0, 0) }
}

/// `readlinkat(dirfd, path, buf, size)`: the length, or `-errno`.
///
/// # Safety
/// `path` is NUL-terminated; `buf` holds `size` bytes.
pub unsafe fn readlinkat(dirfd: i32, path: *const u8, buf: *mut u8, size: usize) -> isize {
    // SAFETY: forwarded.
    unsafe {
        syscall4(
            libc::SYS_readlinkat,
            dirfd as isize as usize,
            path as usize,
            buf as usize,
            size,
        )
    }
}

/// `openat(dirfd, path, flags)`: a descriptor, or `-errno`.
///
/// # Safety
/// `path` is NUL-terminated.
pub unsafe fn openat(dirfd: i32, path: *const u8, flags: i32) -> isize {
    // SAFETY: forwarded.
    unsafe {
        syscall4(
            libc::SYS_openat,
            dirfd as isize as usize,
            path as usize,
            flags as usize,
            0,
        )
    }
}

/// The kernel's name of the open descriptor `fd` (`readlink /proc/self/fd/N`), into `buf`:
/// the length, or `-errno`. The one place the shim reads a descriptor's path.
pub fn fd_path(fd: i32, buf: &mut [u8]) -> isize {
    let mut link = [0u8; 32];
    let mut digits = [0u8; 20];
    let digits = bytes::digits(u64::from(fd.unsigned_abs()), 10, &mut digits);
    if bytes::c_join(&mut link, &[b"/proc/self/fd/", digits]).is_none() {
        return -(libc::ENAMETOOLONG as isize);
    }
    // SAFETY: `link` is NUL-terminated; `buf` holds `buf.len()` bytes.
    unsafe { readlinkat(libc::AT_FDCWD, link.as_ptr(), buf.as_mut_ptr(), buf.len()) }
}

/// The kernel's name of the file at `path` (`realpath` without libc's allocating
/// implementation): opened `O_PATH`, named by [`fd_path`] into `buf`. The length; `Err(Some(
/// errno))` when the open fails, `Err(None)` when `/proc` names no absolute path (not mounted).
///
/// # Safety
/// `path` is NUL-terminated.
pub unsafe fn real_name(path: *const u8, buf: &mut [u8]) -> Result<usize, Option<i32>> {
    // SAFETY: forwarded.
    let fd = unsafe { openat(libc::AT_FDCWD, path, libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Some(-fd as i32));
    }
    let len = fd_path(fd as i32, buf);
    close(fd as i32);
    if len < 0 || buf.first() != Some(&b'/') {
        return Err(None);
    }
    Ok(len as usize)
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor we opened.
    unsafe { syscall4(libc::SYS_close, fd as usize, 0, 0, 0) };
}

/// The path prefix of the shim's beacon (see [`beacon`]). Nothing exists under it.
pub const BEACON_PREFIX: &[u8] = b"/proc/velo-shim/";

/// Announces the shim to a tracer watching from outside: one `faccessat` of
/// `/proc/velo-shim/<lo>-<hi>` (hex), the range of this library's executable code, which fails
/// with `ENOENT`. `velo trace` learns from it that the process has the shim, and where the
/// instructions of the shim's own syscalls are, without reading `/proc/PID/maps` (which a
/// process that has exited no longer has). Costs one syscall per process.
pub fn beacon() {
    unsafe extern "C" {
        /// The ELF header of this library, placed by the linker at its load address.
        static __ehdr_start: libc::Elf64_Ehdr;
    }
    let base = (&raw const __ehdr_start) as usize;
    // SAFETY: the linker maps the ELF header and the program headers it points to.
    let (lo, hi) = unsafe {
        let ehdr = &*(base as *const libc::Elf64_Ehdr);
        let phdrs = (base + ehdr.e_phoff as usize) as *const libc::Elf64_Phdr;
        let (mut lo, mut hi) = (usize::MAX, 0);
        for i in 0..ehdr.e_phnum as usize {
            let p = &*phdrs.add(i);
            if p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0 {
                lo = lo.min(base + p.p_vaddr as usize);
                hi = hi.max(base + (p.p_vaddr + p.p_memsz) as usize);
            }
        }
        (lo, hi)
    };
    if lo >= hi {
        return;
    }
    let mut path = [0u8; 64];
    let (mut lo_hex, mut hi_hex) = ([0u8; 20], [0u8; 20]);
    let lo = bytes::digits(lo as u64, 16, &mut lo_hex);
    let hi = bytes::digits(hi as u64, 16, &mut hi_hex);
    if bytes::c_join(&mut path, &[BEACON_PREFIX, lo, b"-", hi]).is_none() {
        return;
    }
    // SAFETY: a NUL-terminated path in a local buffer.
    unsafe {
        syscall4(
            libc::SYS_faccessat,
            libc::AT_FDCWD as isize as usize,
            path.as_ptr() as usize,
            libc::F_OK as usize,
            0,
        )
    };
}
