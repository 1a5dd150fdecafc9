//! The kernel side of velo's eBPF tracer, and the record it shares with user space.
//!
//! The programs are C (`bpf/velo.bpf.c`), compiled by clang from `build.rs` into [`OBJECT`]:
//! raw tracepoints on `sys_enter`/`sys_exit` for the watched file syscalls, `tp_btf` hooks on
//! process fork, exec and exit that keep the set of traced processes, a ring buffer and a
//! counter of dropped events. [`RawEvent`] is `struct velo_event` of `bpf/event.h`; a test
//! checks its size and offsets against the header's `_Static_assert`s. When clang was missing
//! at build time, [`OBJECT`] is empty and [`unavailable`] says why.
#![no_std]

/// The compiled BPF object (empty when it could not be built).
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/velo.bpf.o"));

/// Why the object was not built, or `None` when it was.
pub fn unavailable() -> Option<&'static str> {
    let reason = env!("VELO_EBPF_UNAVAILABLE");
    (!reason.is_empty()).then_some(reason)
}

/// Length of each path buffer; longer paths are truncated.
pub const PATH_LEN: usize = 256;

pub const KIND_SYSCALL: u32 = 1;
pub const KIND_FORK: u32 = 2;
pub const KIND_EXEC: u32 = 3;
pub const KIND_EXIT: u32 = 4;

/// `watched` map values: see `bpf/event.h`.
pub const SPEC_WATCHED: u32 = 1 << 10;
pub const SPEC_COUNTED: u32 = 1 << 9;

/// The `watched` entry for a syscall: path arguments and a returned-path argument (0-based).
pub const fn spec(path0: Option<u32>, path1: Option<u32>, returned: Option<(u32, bool)>) -> u32 {
    const fn plus1(a: Option<u32>) -> u32 {
        match a {
            Some(a) => a + 1,
            None => 0,
        }
    }
    let (r, counted) = match returned {
        Some((a, counted)) => (a + 1, counted),
        None => (0, false),
    };
    SPEC_WATCHED
        | plus1(path0)
        | (plus1(path1) << 3)
        | (r << 6)
        | if counted { SPEC_COUNTED } else { 0 }
}

/// `struct velo_event`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawEvent {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    /// fork: the child's tgid; exit: the exit code.
    pub aux: u32,
    /// syscall number; fork: 1 for a thread.
    pub nr: i64,
    pub ret: i64,
    pub args: [u64; 6],
    pub ip: u64,
    pub comm: [u8; 16],
    pub path0: [u8; PATH_LEN],
    pub path1: [u8; PATH_LEN],
    pub returned: [u8; PATH_LEN],
}

impl RawEvent {
    /// Reads a record from the ring buffer's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<RawEvent> {
        if bytes.len() < core::mem::size_of::<RawEvent>() {
            return None;
        }
        // SAFETY: RawEvent is plain old data, and the length was checked.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<RawEvent>()) })
    }
}

/// A NUL-terminated buffer's text.
pub fn c_str(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;

    /// `_Static_assert(… == N, "name")` lines of the header, as (expression, N).
    fn asserts() -> std::vec::Vec<(String, usize)> {
        let header = include_str!("../bpf/event.h");
        header
            .lines()
            .filter_map(|l| l.strip_prefix("_Static_assert("))
            .map(|l| {
                let (expr, rest) = l.split_once(" == ").expect("== N");
                let n = rest.split(',').next().unwrap().trim().parse().unwrap();
                (String::from(expr), n)
            })
            .collect()
    }

    #[test]
    fn the_rust_layout_matches_the_c_header() {
        let found = asserts();
        assert!(found.len() >= 8, "the header's asserts were read");
        for (expr, n) in found {
            let actual = match expr.as_str() {
                "sizeof(struct velo_event)" => core::mem::size_of::<RawEvent>(),
                e => {
                    let field = e
                        .strip_prefix("__builtin_offsetof(struct velo_event, ")
                        .and_then(|f| f.strip_suffix(')'))
                        .expect("an offsetof assert");
                    match field {
                        "nr" => core::mem::offset_of!(RawEvent, nr),
                        "args" => core::mem::offset_of!(RawEvent, args),
                        "ip" => core::mem::offset_of!(RawEvent, ip),
                        "comm" => core::mem::offset_of!(RawEvent, comm),
                        "path0" => core::mem::offset_of!(RawEvent, path0),
                        "path1" => core::mem::offset_of!(RawEvent, path1),
                        "returned" => core::mem::offset_of!(RawEvent, returned),
                        other => panic!("no Rust field for {other}"),
                    }
                }
            };
            assert_eq!(actual, n, "{expr}");
        }
    }

    #[test]
    fn specs_encode_arguments_plus_one() {
        assert_eq!(spec(Some(1), None, None), SPEC_WATCHED | 2);
        assert_eq!(
            spec(Some(1), None, Some((2, true))),
            SPEC_WATCHED | 2 | (3 << 6) | SPEC_COUNTED
        );
    }
}
