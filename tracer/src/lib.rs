//! velo's verifier on the syscall side: watch a build from outside the shim.
//!
//! This crate will hold the event model (pid, parent, executable, syscall, path arguments
//! resolved against the dirfd and cwd, return value, returned paths), three backends to record
//! events (eBPF through aya on Linux, ptrace with a seccomp filter as the unprivileged
//! fallback, and a parser for dtrace output on macOS that is platform-independent and tested on
//! Linux), and the analysis that compares events with the shim's interception table to find
//! canonical paths that reached the kernel untranslated, physical paths that leaked back to a
//! process, and processes that ran without the shim. It is empty until `velo trace` lands.
