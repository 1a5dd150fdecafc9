//! The kernel side of velo's eBPF tracer, and the record it shares with user space.
//!
//! The programs are C (`bpf/velo.bpf.c`), compiled by clang from `build.rs` into [`OBJECT`]:
//! a `tp_btf` hook on `sys_exit` for the watched file syscalls, `tp_btf` hooks on
//! process fork, exec and exit that keep the set of traced processes, a ring buffer and a
//! counter of dropped events. The kernel struct fields they read are at offsets user space
//! puts in their `layout` map (`velo_tracer`'s `ebpf::Layout`). A record is a [`Header`]
//! (`struct velo_event` of `bpf/event.h`; a test checks its size and offsets against the
//! header's `_Static_assert`s) followed by its strings, read by [`Record::parse`]. When clang
//! was missing at build time, [`OBJECT`] is empty and [`unavailable`] says why.
#![no_std]

/// The compiled BPF object (empty when it could not be built).
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/velo.bpf.o"));

/// Why the object was not built, or `None` when it was.
pub fn unavailable() -> Option<&'static str> {
    let reason = env!("VELO_EBPF_UNAVAILABLE");
    (!reason.is_empty()).then_some(reason)
}

/// Paths longer than `PATH_LEN - 2` bytes are truncated.
pub const PATH_LEN: usize = 256;

pub const KIND_SYSCALL: u32 = 1;
pub const KIND_FORK: u32 = 2;
pub const KIND_EXEC: u32 = 3;
pub const KIND_EXIT: u32 = 4;
/// A descriptor call (`close`, `dup*`, `fcntl(F_DUPFD*)`, `close_range`) succeeded.
pub const KIND_DESCRIPTOR: u32 = 5;

/// `watched` map values: see `bpf/event.h`.
pub const SPEC_WATCHED: u32 = 1 << 10;
pub const SPEC_COUNTED: u32 = 1 << 9;
/// A descriptor call: reported, without strings, only when it succeeds.
pub const SPEC_DESCRIPTOR: u32 = 1 << 11;

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

/// `struct velo_event`: the fixed part of a record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
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
    /// Bytes of each string after the header, NUL included (0: absent).
    pub len: [u16; 3],
    pub pad: u16,
}

/// A record from the ring buffer: its header and its strings (without their NULs; empty when
/// absent).
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub header: Header,
    pub path0: &'a [u8],
    pub path1: &'a [u8],
    pub returned: &'a [u8],
}

impl<'a> Record<'a> {
    /// Reads a record; `None` when `bytes` is shorter than its header says.
    pub fn parse(bytes: &'a [u8]) -> Option<Record<'a>> {
        let size = core::mem::size_of::<Header>();
        if bytes.len() < size {
            return None;
        }
        // SAFETY: Header is plain old data, and the length was checked.
        let header = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Header>()) };
        let mut rest = &bytes[size..];
        let mut next = |len: u16| {
            let len = len as usize;
            if rest.len() < len {
                return None;
            }
            let (s, tail) = rest.split_at(len);
            rest = tail;
            Some(c_str(s))
        };
        Some(Record {
            header,
            path0: next(header.len[0])?,
            path1: next(header.len[1])?,
            returned: next(header.len[2])?,
        })
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
        assert!(found.len() >= 5, "the header's asserts were read");
        for (expr, n) in found {
            let actual = match expr.as_str() {
                "sizeof(struct velo_event)" => core::mem::size_of::<Header>(),
                e => {
                    let field = e
                        .strip_prefix("__builtin_offsetof(struct velo_event, ")
                        .and_then(|f| f.strip_suffix(')'))
                        .expect("an offsetof assert");
                    match field {
                        "nr" => core::mem::offset_of!(Header, nr),
                        "args" => core::mem::offset_of!(Header, args),
                        "ip" => core::mem::offset_of!(Header, ip),
                        "len" => core::mem::offset_of!(Header, len),
                        other => panic!("no Rust field for {other}"),
                    }
                }
            };
            assert_eq!(actual, n, "{expr}");
        }
    }

    #[test]
    fn records_carry_their_strings_after_the_header() {
        // SAFETY: Header is plain old data; all zeroes is a valid value.
        let mut header: Header = unsafe { core::mem::zeroed() };
        header.kind = KIND_SYSCALL;
        header.len = [4, 0, 3];
        let mut bytes = std::vec::Vec::new();
        // SAFETY: viewing plain old data as bytes.
        bytes.extend_from_slice(unsafe {
            core::slice::from_raw_parts(
                (&raw const header).cast::<u8>(),
                core::mem::size_of::<Header>(),
            )
        });
        bytes.extend_from_slice(b"abc\0/x\0");
        let r = Record::parse(&bytes).expect("a whole record");
        assert_eq!(
            (r.path0, r.path1, r.returned),
            (&b"abc"[..], &b""[..], &b"/x"[..])
        );
        // A record cut short is refused, not read past its end.
        assert!(Record::parse(&bytes[..bytes.len() - 1]).is_none());
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
