//! velo's verifier on the syscall side: watch a build from outside the shim.
//!
//! Interception by an `LD_PRELOAD` shim is never complete: static binaries, Go programs, raw
//! `syscall()` users and glibc-internal calls slip past it. This crate records what really
//! reached the kernel and compares it with what the shim promises:
//!
//! - [`event`]: the event model: one record per file syscall (pid, tid, parent, executable,
//!   syscall, path arguments as passed and resolved against the dirfd or cwd, return value,
//!   returned path), plus process fork, exec and exit;
//! - [`syscalls`]: which syscalls touch paths and where their path arguments are;
//! - [`ptrace`]: the backend any user can run: a seccomp filter stops the tracee only on the
//!   syscalls of [`syscalls`], so everything else runs at full speed;
//! - `ebpf` (Linux, root): kernel programs in C from `velo-ebpf` watch from outside; the traced
//!   processes never stop, and events arrive through a ring buffer;
//! - [`analysis`]: the findings (*uncaught*, *leak*, *unshimmed*) against the shim's
//!   interception table (`velo_intercept::table`), made while the command runs;
//! - [`dtrace`]: the macOS backend's D script and the parser of its output, platform-
//!   independent and tested here with recorded output.
//!
//! [`backend`] puts them behind one [`backend::Backend`] and one [`backend::trace`].
//! docs/trace.md describes each backend and the events.

pub mod analysis;
pub mod backend;
pub mod command;
pub mod dtrace;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod ebpf;
pub mod event;
#[cfg(target_os = "linux")]
pub mod proc;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod ptrace;
pub mod syscalls;
