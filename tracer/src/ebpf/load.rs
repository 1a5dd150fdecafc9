//! Loads `velo-ebpf`'s object: its maps, its four tracepoint programs, their attachments.
//!
//! aya's `EbpfLoader` would do all of this, but it parses the whole of the kernel's BTF before
//! anything else, whether the object needs it or not (see [`super::btf`]). velo's programs
//! need almost none: no CO-RE relocations, and the four `tp_btf` attach points are four type
//! ids, found by [`super::btf`]'s quick scan. So this loader takes the parts
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
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_RAW_TP: u32 = 23;

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
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}

/// `union bpf_attr` for `BPF_RAW_TRACEPOINT_OPEN`.
#[repr(C)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct ObjGetInfo {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// A `bpf(2)` command that answers with a number (a descriptor, or 0).
fn bpf_call<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is the `bpf_attr` layout of `cmd`, its pointers valid for the call.
    let n = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}

/// A `bpf(2)` command that returns a new descriptor.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    let fd = bpf_call(cmd, attr)?;
    // SAFETY: a new descriptor the kernel just returned to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Turns on the kernel's count of each BPF program's runs and run time, until the returned
/// descriptor is closed.
pub fn enable_stats() -> Result<OwnedFd, Error> {
    let mut kind = BPF_STATS_RUN_TIME;
    bpf(BPF_ENABLE_STATS, &mut kind)
        .map_err(|e| load_err(format!("enabling BPF run-time statistics: {e}")))
}

/// The object's maps and its programs, attached; everything is detached and freed on drop.
pub struct Loaded {
    pub maps: HashMap<String, Map>,
    /// Attachments first: dropped before the programs they hold.
    _links: Vec<OwnedFd>,
    programs: Vec<(&'static str, OwnedFd)>,
}

impl Loaded {
    /// Each program's runs and run time so far, as the kernel counts them (see
    /// [`enable_stats`]; zero without it).
    pub fn costs(&self) -> Result<Vec<crate::backend::ProgramCost>, Error> {
        self.programs
            .iter()
            .map(|(name, fd)| {
                // SAFETY: plain old data; all zeroes is a valid value.
                let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
                let mut attr = ObjGetInfo {
                    bpf_fd: fd.as_raw_fd() as u32,
                    info_len: size_of_val(&info) as u32,
                    info: std::ptr::from_mut(&mut info) as u64,
                };
                bpf_call(BPF_OBJ_GET_INFO_BY_FD, &mut attr)
                    .map_err(|e| load_err(format!("reading program {name}'s statistics: {e}")))?;
                Ok(crate::backend::ProgramCost {
                    name: (*name).to_owned(),
                    runs: info.run_cnt,
                    ns: info.run_time_ns,
                })
            })
            .collect()
    }
}

/// Loads `object`, with the map `events` made `ring_bytes` long, and attaches each
/// `(program, tracepoint)` as `tp_btf`. `btf_id` gives the kernel BTF id a tracepoint is loaded
/// against; the programs are verified in parallel, so whatever it waits for overlaps their
/// verification. `fill` runs before any program is attached, so the programs never see their
/// maps empty.
pub fn load(
    object: &[u8],
    ring_bytes: u32,
    programs: &[(&'static str, &'static str)],
    btf_id: impl Fn(&str) -> Result<u32, Error> + Sync,
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
    tracing::debug!("made the maps");
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

    // Each program is verified on a thread of its own: verification is most of the start-up,
    // and the kernel does it on the calling thread. The slowest (sys_exit's) then overlaps the
    // others and the wait for `btf_id`.
    let (obj, btf_id) = (&obj, &btf_id);
    let fds: Vec<Result<OwnedFd, Error>> = std::thread::scope(|s| {
        let threads: Vec<_> = programs
            .iter()
            .map(|&(name, tp)| {
                s.spawn(move || {
                    let program = obj
                        .programs
                        .get(name)
                        .ok_or_else(|| load_err(format!("no program {name}")))?;
                    let function = &obj.functions[&program.function_key()];
                    let target = btf_id(tp)?;
                    load_program(name, &function.instructions, &program.license, target)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(load_err("loading a program panicked")))
            })
            .collect()
    });
    let fds: Vec<OwnedFd> = fds.into_iter().collect::<Result<_, _>>()?;
    tracing::debug!("verified the programs");
    fill(&mut maps)?;
    tracing::debug!("filled the maps");
    let mut links = Vec::new();
    for (&(name, tp), fd) in programs.iter().zip(&fds) {
        // A tp_btf program's tracepoint is the one it was loaded for: no name.
        let mut open = RawTracepointOpen {
            name: 0,
            prog_fd: fd.as_raw_fd() as u32,
            _pad: 0,
        };
        let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut open)
            .map_err(|e| load_err(format!("attaching {name} to tracepoint {tp}: {e}")))?;
        tracing::debug!(program = name, "attached");
        links.push(link);
    }
    Ok(Loaded {
        maps,
        _links: links,
        programs: programs.iter().map(|(name, _)| *name).zip(fds).collect(),
    })
}

/// Loads one `tp_btf` program for the kernel BTF id `btf_target` (its tracepoint's typedef).
/// When the verifier refuses it, loads it again with a log and returns the log's end, which
/// says why.
fn load_program(
    name: &str,
    insns: &[bpf_insn],
    license: &CString,
    btf_target: u32,
) -> Result<OwnedFd, Error> {
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_TRACING,
        expected_attach_type: BPF_TRACE_RAW_TP,
        attach_btf_id: btf_target,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoad::default()
    };
    for (dst, src) in attr.prog_name[..15].iter_mut().zip(name.bytes()) {
        *dst = src;
    }
    // At debug level the verifier reports what it did (BPF_LOG_STATS: instructions processed,
    // time): most of the tracer's start-up is spent there.
    let mut stats = [0u8; 512];
    if tracing::enabled!(tracing::Level::DEBUG) {
        attr.log_level = 4;
        attr.log_size = stats.len() as u32;
        attr.log_buf = stats.as_mut_ptr() as u64;
    }
    let refused = match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => {
            if attr.log_level != 0 {
                let end = memchr::memchr(0, &stats).unwrap_or(stats.len());
                let log = String::from_utf8_lossy(&stats[..end]);
                tracing::debug!(program = name, verifier = %log.trim().replace('\n', "; "));
            }
            return Ok(fd);
        }
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
