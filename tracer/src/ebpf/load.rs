//! Loads `velo-ebpf`'s object: its maps, its five raw-tracepoint programs, their attachments.
//!
//! aya's `EbpfLoader` would do all of this, but it parses the whole of the kernel's BTF before
//! anything else, whether the object needs it or not (see [`super::btf`]). velo's programs
//! need none: no CO-RE relocations, no BTF-typed attach points. So this loader takes the parts
//! of aya that cost nothing: `aya-obj` reads the ELF object and links its map references and
//! calls, `aya::maps::MapData` creates the maps (and later reads and writes them, the ring
//! buffer included). What is left is two `bpf(2)` commands, written out here.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use aya::maps::{Map, MapData};
use aya_obj::generated::bpf_insn;

use super::{Error, load_err};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// The head of `union bpf_attr` for `BPF_PROG_LOAD` (include/uapi/linux/bpf.h); the kernel
/// treats the fields after it as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is the `bpf_attr` layout of `cmd`, its pointers valid for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The object's maps and its programs, attached; everything is detached and freed on drop.
pub struct Loaded {
    pub maps: HashMap<String, Map>,
    /// Attachments first: dropped before the programs they hold.
    _links: Vec<OwnedFd>,
    _programs: Vec<OwnedFd>,
}

/// Loads `object`, with the map `events` made `ring_bytes` long, and attaches each program
/// named in `attach` to its raw tracepoint. `fill` runs once the programs are verified and
/// before any is attached, so the programs never see their maps empty (and whatever `fill`
/// waits for has the verification time to get ready).
pub fn load(
    object: &[u8],
    ring_bytes: u32,
    attach: &[(&str, &str)],
    fill: impl FnOnce(&mut HashMap<String, Map>) -> Result<(), Error>,
) -> Result<Loaded, Error> {
    let mut obj = aya_obj::Object::parse(object).map_err(load_err)?;
    let mut maps = HashMap::new();
    let mut defs = HashMap::new();
    for (name, mut def) in obj.maps.drain() {
        if name == "events" {
            def.set_max_entries(ring_bytes);
        }
        // Made without the object's BTF, whose type ids only name keys and values for tools
        // like bpftool: the kernel refuses ids without the BTF loaded beside them.
        if let aya_obj::Map::Btf(map) = &mut def {
            map.def.btf_key_type_id = 0;
            map.def.btf_value_type_id = 0;
        }
        let data = MapData::create(def.clone(), &name, None)
            .map_err(|e| load_err(format!("creating map {name}: {e}")))?;
        // The kinds velo.bpf.c uses (linux/bpf.h's enum bpf_map_type).
        let map = match def.map_type() {
            1 => Map::HashMap(data),
            2 => Map::Array(data),
            6 => Map::PerCpuArray(data),
            27 => Map::RingBuf(data),
            other => {
                return Err(load_err(format!(
                    "map {name} has a type ({other}) this loader does not know"
                )));
            }
        };
        defs.insert(name.clone(), def);
        maps.insert(name, map);
    }
    let text_sections = obj.functions.keys().map(|&(section, _)| section).collect();
    obj.relocate_maps(
        maps.iter().map(|(name, map)| {
            let data = match map {
                Map::HashMap(d) | Map::Array(d) | Map::PerCpuArray(d) | Map::RingBuf(d) => d,
                _ => unreachable!("made above"),
            };
            (name.as_str(), data.fd().as_fd().as_raw_fd(), &defs[name])
        }),
        &text_sections,
    )
    .map_err(load_err)?;
    obj.relocate_calls(&text_sections).map_err(load_err)?;

    let mut programs = Vec::new();
    for &(name, _) in attach {
        let program = obj
            .programs
            .get(name)
            .ok_or_else(|| load_err(format!("no program {name}")))?;
        let function = &obj.functions[&program.function_key()];
        programs.push(load_program(
            name,
            &function.instructions,
            &program.license,
        )?);
    }
    fill(&mut maps)?;
    let mut links = Vec::new();
    for (&(name, tracepoint), fd) in attach.iter().zip(&programs) {
        let tp = CString::new(tracepoint).map_err(load_err)?;
        let mut open = RawTracepointOpen {
            name: tp.as_ptr() as u64,
            prog_fd: fd.as_raw_fd() as u32,
            _pad: 0,
        };
        let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut open).map_err(|e| {
            load_err(format!(
                "attaching {name} to raw tracepoint {tracepoint}: {e}"
            ))
        })?;
        links.push(link);
    }
    Ok(Loaded {
        maps,
        _links: links,
        _programs: programs,
    })
}

/// Loads one raw-tracepoint program; when the verifier refuses it, loads it again with a log
/// and returns the log's end, which says why.
fn load_program(name: &str, insns: &[bpf_insn], license: &CString) -> Result<OwnedFd, Error> {
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoad::default()
    };
    for (dst, src) in attr.prog_name[..15].iter_mut().zip(name.bytes()) {
        *dst = src;
    }
    let refused = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    let mut log = vec![0u8; 1 << 20];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    let _ = bpf(BPF_PROG_LOAD, &mut attr);
    let log = String::from_utf8_lossy(&log[..memchr::memchr(0, &log).unwrap_or(log.len())]);
    let tail: Vec<&str> = log.lines().rev().take(12).collect();
    Err(load_err(format!(
        "the kernel refused program {name} ({refused}); the verifier's last words:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )))
}
