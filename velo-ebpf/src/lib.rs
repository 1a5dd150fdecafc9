//! The kernel side of velo's eBPF tracer.
//!
//! This crate will hold the eBPF programs, written in C and compiled with clang by `build.rs`
//! (raw tracepoints on `sys_enter`/`sys_exit` for file syscalls, `tp_btf` hooks on process
//! fork, exec and exit to keep the set of traced pids, a ring buffer and a dropped-events
//! counter), and the `#[repr(C)]` event types shared with `velo-tracer`, with size and offset
//! checks against the C header. When clang is missing the build still succeeds with a stub
//! object that fails loudly at load time and names the command that builds the real one. It is
//! empty until `velo trace` lands.
#![no_std]
