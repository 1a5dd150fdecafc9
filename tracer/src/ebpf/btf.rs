//! Finds the offsets of the few kernel struct fields the programs read, in the kernel's BTF.
//!
//! The usual way is CO-RE: the compiler records each field access, and the loader resolves it
//! against the kernel's types. aya's loader does so by parsing all of `/sys/kernel/btf/vmlinux`
//! (5 MB, ~150,000 types) into owned values, on every start: 21 ms of CPU and 40 MB of page
//! faults, most of `velo trace`'s start-up for four numbers. This module walks the same file
//! in place instead, looking only at the names of structs, and hands the programs the offsets
//! through their `layout` map, and the ids of the three `btf_trace_*` typedefs `tp_btf` programs
//! are loaded against. The format is the kernel's `Documentation/bpf/btf.rst`: a
//! header, then type records whose sizes follow from their kind, then a string table.

use std::collections::HashMap;

/// Where the kernel publishes its own types.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {VMLINUX} (a kernel built with CONFIG_DEBUG_INFO_BTF is needed): {0}")]
    Read(std::io::Error),
    #[error("{VMLINUX} is not BTF this reader understands: {0}")]
    Format(&'static str),
    #[error("the kernel's BTF has no {0}")]
    Missing(String),
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// BTF in memory: the type records and the string table.
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset of each type's record in `types`; type id `i` is at `offsets[i - 1]`.
    offsets: Vec<u32>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, Error> {
        let field = |at| u32_at(data, at).ok_or(Error::Format("truncated header"));
        if data.get(..2) != Some(&0xeb9f_u16.to_le_bytes()[..]) {
            return Err(Error::Format("no little-endian BTF magic"));
        }
        let hdr_len = field(4)? as usize;
        let section = |off: u32, len: u32| {
            let start = hdr_len + off as usize;
            data.get(start..start + len as usize)
                .ok_or(Error::Format("a section runs past the end"))
        };
        let types = section(field(8)?, field(12)?)?;
        let strings = section(field(16)?, field(20)?)?;
        let mut offsets = Vec::with_capacity(types.len() / 24);
        let mut at = 0;
        while at < types.len() {
            let info = u32_at(types, at + 4).ok_or(Error::Format("truncated type"))?;
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                2 | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | 16
                | KIND_TYPE_TAG => 0,
                _ => return Err(Error::Format("a type of unknown kind")),
            };
            offsets.push(at as u32);
            at += 12 + extra;
        }
        if at != types.len() {
            return Err(Error::Format("the last type runs past its section"));
        }
        Ok(Self {
            types,
            strings,
            offsets,
        })
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..memchr::memchr(0, rest).unwrap_or(rest.len())]
    }

    /// (name offset, kind, vlen, kind_flag, record offset) of a type id.
    fn header(&self, id: u32) -> Option<(u32, u32, usize, bool, usize)> {
        let at = *self.offsets.get((id as usize).checked_sub(1)?)? as usize;
        let info = u32_at(self.types, at + 4)?;
        Some((
            u32_at(self.types, at)?,
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
            at,
        ))
    }

    /// The id of the first type of `kind` called `name` that has members when `kind` is a
    /// struct (a forward declaration has none).
    fn find(&self, kind: u32, name: &str) -> Option<u32> {
        (1..=self.offsets.len() as u32).find(|&id| {
            self.header(id).is_some_and(|(n, k, vlen, ..)| {
                k == kind && (k != KIND_STRUCT || vlen > 0) && self.name(n) == name.as_bytes()
            })
        })
    }

    /// The id of the typedef called `name` (a `tp_btf` program names its tracepoint by the
    /// id of `btf_trace_<tracepoint>`).
    pub fn typedef_id(&self, name: &str) -> Result<u32, Error> {
        self.find(KIND_TYPEDEF, name)
            .ok_or_else(|| Error::Missing(format!("typedef {name}")))
    }

    /// The byte offset of `member` in the struct or union `id`, looking into anonymous
    /// members (the kernel nests fields in unnamed structs and unions).
    fn member_offset(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let (_, kind, vlen, kind_flag, at) = self.header(id)?;
        if kind != KIND_STRUCT && kind != KIND_UNION || depth > 8 {
            return None;
        }
        for i in 0..vlen {
            let m = at + 12 + 12 * i;
            let (name, ty, off) = (
                u32_at(self.types, m)?,
                u32_at(self.types, m + 4)?,
                u32_at(self.types, m + 8)?,
            );
            let bits = if kind_flag { off & 0xff_ffff } else { off };
            if name == 0 {
                if let Some(inner) = self.member_offset(self.strip(ty)?, member, depth + 1) {
                    return Some(bits / 8 + inner);
                }
            } else if self.name(name) == member.as_bytes() {
                return (bits % 8 == 0).then_some(bits / 8);
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn strip(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let (_, kind, _, _, at) = self.header(id)?;
            match kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = u32_at(self.types, at + 8)?
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// The byte offsets of `fields`, each `struct.member`.
    pub fn offsets(&self, fields: &[&str]) -> Result<HashMap<String, u32>, Error> {
        let mut structs = HashMap::new();
        let mut found = HashMap::new();
        for field in fields {
            let missing = || Error::Missing(format!("field {field}"));
            let (st, member) = field.split_once('.').ok_or_else(missing)?;
            let id = *structs
                .entry(st)
                .or_insert_with(|| self.find(KIND_STRUCT, st))
                .as_ref()
                .ok_or_else(missing)?;
            let off = self.member_offset(id, member, 0).ok_or_else(missing)?;
            found.insert((*field).to_owned(), off);
        }
        Ok(found)
    }
}

/// The kernel's BTF, mapped (kernels since 6.16 allow it) or else read.
pub fn vmlinux() -> Result<Bytes, Error> {
    let file = std::fs::File::open(VMLINUX).map_err(Error::Read)?;
    // SAFETY: a read-only private mapping of a file the kernel never changes while running.
    match unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) } {
        Ok(map) => Ok(Bytes::Mapped(map)),
        Err(_) => std::fs::read(VMLINUX).map(Bytes::Read).map_err(Error::Read),
    }
}

pub enum Bytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Read(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_task_fields_in_this_kernel() {
        let data = match vmlinux() {
            Ok(d) => d,
            Err(e) => {
                let reason = format!("no kernel BTF here ({e})");
                if std::env::var("VELO_MUST_WORK").is_ok_and(|v| v == "1") {
                    panic!("finds_the_task_fields_in_this_kernel: {reason}, and VELO_MUST_WORK=1");
                }
                eprintln!("SKIPPED: {reason}");
                if let Some(log) = std::env::var_os("VELO_SKIP_LOG") {
                    use std::io::Write;
                    let _ = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(log)
                        .and_then(|mut f| {
                            writeln!(
                                f,
                                "tracer::ebpf::btf::finds_the_task_fields_in_this_kernel\t{reason}"
                            )
                        });
                }
                return;
            }
        };
        let btf = Btf::parse(&data).unwrap();
        assert!(btf.offsets.len() > 10_000, "{} types", btf.offsets.len());
        let o = btf
            .offsets(&[
                "task_struct.pid",
                "task_struct.tgid",
                "linux_binprm.filename",
            ])
            .unwrap();
        // pid_t pid; pid_t tgid; are adjacent in every kernel's task_struct.
        assert_eq!(o["task_struct.tgid"], o["task_struct.pid"] + 4, "{o:?}");
        assert!(o["task_struct.pid"] > 100, "{o:?}");
        assert!(matches!(
            btf.offsets(&["task_struct.no_such_field"]),
            Err(Error::Missing(f)) if f == "field task_struct.no_such_field"
        ));
        let fork = btf.typedef_id("btf_trace_sched_process_fork").unwrap();
        let exit = btf.typedef_id("btf_trace_sched_process_exit").unwrap();
        assert!(fork > 0 && exit > 0 && fork != exit);
        assert!(btf.typedef_id("btf_trace_no_such_tracepoint").is_err());
        assert!(matches!(
            btf.offsets(&["no_such_struct.pid"]),
            Err(Error::Missing(_))
        ));
    }

    #[test]
    fn rejects_what_is_not_btf() {
        assert!(matches!(Btf::parse(b"\x7fELF...."), Err(Error::Format(_))));
        let mut header = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        // Types at 0, 100 bytes long, past the end of a 24-byte blob.
        header.extend([0, 0, 0, 0, 100, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(Btf::parse(&header), Err(Error::Format(_))));
    }
}
