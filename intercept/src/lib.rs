//! What velo intercepts, and how a path crosses between the canonical and the physical world.
//!
//! This crate is the platform-independent heart of the shim, kept apart from it so that it can be
//! tested as ordinary Rust on any host and read by every other part of velo:
//!
//! - [`translate`]: the rules that map a canonical path (`/vrift_workspace/src/lib.rs`) to the
//!   physical file (`/home/alice/proj/src/lib.rs`) on the way *in* to the kernel, and a physical
//!   path back to its canonical name on the way *out* (getcwd, readlink, realpath). The shim
//!   runs these inside libc hooks, so they are `no_std`, never allocate, and write into
//!   caller-provided buffers.
//! - [`table`]: the interception table, the single source of truth for every libc entry point the
//!   shim exports: which arguments are paths, which way they are translated and which raw
//!   syscalls the call ends in. A test checks the built `libvelo_shim.so` against it both ways;
//!   the tracer and `velo audit` use it to name the entry points behind a syscall the shim missed.
//! - [`mirage`]: the image of a manifest's tree that the shim maps and searches in place to serve
//!   it from the store (Mode B, `velo run --mode shim`), and its writer.
//! - [`env`]: the names of the environment variables that carry a projection to a process tree.

#![no_std]

#[cfg(test)]
extern crate std;

pub mod env;
pub mod mirage;
pub mod table;
pub mod translate;

pub use translate::{Mapping, TooLong};
