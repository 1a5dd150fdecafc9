//! The eBPF backend: kernel programs watch, the traced processes never stop.
//!
//! The programs (`velo-ebpf`, C compiled by clang) are loaded with aya: a hook on `sys_exit`
//! filtered by a `watched` map of syscall numbers (filled here from
//! [`crate::syscalls`]) and a `traced` set of process ids, and `tp_btf` hooks on fork, exec and
//! exit that grow and shrink that set. The command is forked by hand and waits on a pipe until
//! its pid is in `traced`, so its first syscall after exec is seen. Events arrive through a ring
//! buffer; a counter of events dropped when it was full is read at the end and reported.
//!
//! Processes may be gone by the time their events are read, so nothing is looked up in
//! `/proc/PID` that the events can tell: the executable comes from the exec event, the parent
//! from the fork event, the shim's presence and code range from its beacon (see
//! [`crate::event::shim_beacon`]), the working directory from `chdir`, and the path behind a
//! directory descriptor from the `open` that returned it, followed through `dup*`, `fcntl`,
//! `close`, fork and exec (the kernel reports those calls as short descriptor records). Only a
//! descriptor the events never showed (inherited by the command) is read from `/proc`.
//!
//! Start-up is kept short (~10 ms) by loading without parsing all of the kernel's BTF: [`load`]
//! says how; [`btf`] finds the four struct offsets and four type ids the programs need, once a
//! boot ([`KERNEL_CACHE`]); the programs are verified in parallel.
//!
//! Needs root (`kernel.unprivileged_bpf_disabled`) and a kernel with BTF.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Array, HashMap as BpfHashMap, Map, RingBuf};

use crate::command::{Command, Outcome};
use crate::event::{Event, RawPath, Syscall};
use crate::syscalls::{self, Returns};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the eBPF backend was not built: {0}")]
    NotBuilt(&'static str),
    #[error("the eBPF backend needs root (loading BPF programs is privileged here)")]
    NotRoot,
    #[error("loading the eBPF programs: {0}")]
    Load(String),
    #[error("{0}: {1}")]
    Sys(&'static str, std::io::Error),
    #[error("the command's program name contains a NUL byte")]
    Nul,
}

/// Why the backend cannot run here, or `None` when it can.
pub fn unavailable() -> Option<String> {
    if let Some(reason) = velo_ebpf::unavailable() {
        return Some(reason.to_owned());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(Error::NotRoot.to_string());
    }
    if let Err(e) = std::fs::metadata(btf::VMLINUX) {
        return Some(btf::Error::Read(e).to_string());
    }
    None
}

/// What a traced run gave besides the events.
#[derive(Debug, Clone)]
pub struct Traced {
    pub outcome: Outcome,
    /// Events the kernel could not queue (the ring buffer was full).
    pub dropped: u64,
    /// Each program's runs and run time, when asked for.
    pub programs: Vec<crate::backend::ProgramCost>,
}

fn load_err(e: impl std::fmt::Display) -> Error {
    Error::Load(e.to_string())
}

fn map_mut<'a>(
    maps: &'a mut std::collections::HashMap<String, Map>,
    name: &str,
) -> Result<&'a mut Map, Error> {
    maps.get_mut(name)
        .ok_or_else(|| load_err(format!("no {name} map")))
}

/// The `watched` map entry of a syscall spec.
fn spec_bits(spec: &syscalls::Spec) -> u32 {
    let path = |i: usize| spec.paths.get(i).map(|p| p.arg as u32);
    let returned = match spec.returns {
        Returns::Nothing => None,
        Returns::CString(a) => Some((a as u32, false)),
        Returns::Counted(a) => Some((a as u32, true)),
    };
    velo_ebpf::spec(path(0), path(1), returned)
}

mod btf;
mod load;

/// The kernel struct fields the programs read (`struct layout` in velo.bpf.c).
const LAYOUT_FIELDS: [&str; 4] = [
    "task_struct.pid",
    "task_struct.tgid",
    "task_struct.exit_code",
    "linux_binprm.filename",
];

/// `struct layout` of velo.bpf.c: byte offsets of the kernel struct fields the programs read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct Layout {
    task_pid: u32,
    task_tgid: u32,
    task_exit_code: u32,
    bprm_filename: u32,
}

// SAFETY: plain u32s, no padding.
unsafe impl aya::Pod for Layout {}

/// Each program and the tracepoint it is attached to, as `tp_btf` (typed by the kernel's BTF).
const PROGRAMS: [(&str, &str); 4] = [
    ("velo_sys_exit", "sys_exit"),
    ("velo_fork", "sched_process_fork"),
    ("velo_exec", "sched_process_exec"),
    ("velo_exit", "sched_process_exit"),
];

/// What the programs need from the kernel's BTF.
#[derive(Debug, PartialEq)]
struct Kernel {
    layout: Layout,
    /// The id of each `tp_btf` hook's `btf_trace_<tracepoint>` typedef, by tracepoint.
    trace_ids: HashMap<&'static str, u32>,
}

/// Where [`Kernel::scan_into`] keeps what it found for the rest of this boot: root's, on a tmpfs.
pub const KERNEL_CACHE: &str = "/run/velo/kernel-btf";

impl Kernel {
    /// Scans the kernel's BTF and writes what it found to `cache` for the rest of this boot
    /// (the running kernel's types cannot change before the next): scanning 5 MB of BTF was
    /// most of the tracer's start-up; reading the cache ([`Kernel::cached`]) is one small file.
    /// A cache that cannot be written is passed over.
    fn scan_into(cache: &std::path::Path) -> Result<Kernel, Error> {
        let k = Kernel::scan()?;
        if let Some(boot) = boot_id()
            && let Err(e) = k.write(cache, &boot)
        {
            tracing::debug!(cache = %cache.display(), "not caching the kernel's BTF: {e}");
        }
        Ok(k)
    }

    /// What `cache` says, when it was written during this boot and has every number.
    fn cached(cache: &std::path::Path) -> Option<Kernel> {
        let boot = boot_id()?;
        Kernel::parse(&std::fs::read_to_string(cache).ok()?, &boot)
    }

    fn scan() -> Result<Kernel, Error> {
        let data = btf::vmlinux().map_err(load_err)?;
        let btf = btf::Btf::parse(&data).map_err(load_err)?;
        let fields = btf.offsets(&LAYOUT_FIELDS).map_err(load_err)?;
        let mut trace_ids = HashMap::new();
        for tp in tracepoints() {
            let id = btf
                .typedef_id(&format!("btf_trace_{tp}"))
                .map_err(load_err)?;
            trace_ids.insert(tp, id);
        }
        Ok(Kernel {
            layout: Layout {
                task_pid: fields["task_struct.pid"],
                task_tgid: fields["task_struct.tgid"],
                task_exit_code: fields["task_struct.exit_code"],
                bprm_filename: fields["linux_binprm.filename"],
            },
            trace_ids,
        })
    }

    /// The cache's text: the boot it belongs to, then one `name value` line per number.
    fn text(&self, boot: &str) -> String {
        let l = &self.layout;
        let mut text = format!("boot {boot}\n");
        for (name, v) in
            LAYOUT_FIELDS
                .iter()
                .zip([l.task_pid, l.task_tgid, l.task_exit_code, l.bprm_filename])
        {
            text += &format!("{name} {v}\n");
        }
        for tp in tracepoints() {
            text += &format!("btf_trace_{tp} {}\n", self.trace_ids[tp]);
        }
        text
    }

    /// The cache's numbers, when it is this boot's and has every one.
    fn parse(text: &str, boot: &str) -> Option<Kernel> {
        let values: HashMap<&str, u32> = text
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
            .collect();
        if text.lines().next()? != format!("boot {boot}") {
            return None;
        }
        let field = |name: &str| values.get(name).copied();
        let mut trace_ids = HashMap::new();
        for tp in tracepoints() {
            trace_ids.insert(tp, field(&format!("btf_trace_{tp}"))?);
        }
        Some(Kernel {
            layout: Layout {
                task_pid: field("task_struct.pid")?,
                task_tgid: field("task_struct.tgid")?,
                task_exit_code: field("task_struct.exit_code")?,
                bprm_filename: field("linux_binprm.filename")?,
            },
            trace_ids,
        })
    }

    /// Writes the cache whole or not at all: a temporary file renamed over it.
    fn write(&self, cache: &std::path::Path, boot: &str) -> std::io::Result<()> {
        let dir = cache.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".kernel-btf.{}", std::process::id()));
        std::fs::write(&tmp, self.text(boot))?;
        std::fs::rename(&tmp, cache).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

/// This boot's id: the kernel's types cannot change before it does.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_owned())
        .ok()
        .filter(|b| !b.is_empty())
}

/// The tracepoints the `tp_btf` programs are loaded for.
fn tracepoints() -> impl Iterator<Item = &'static str> {
    PROGRAMS.iter().map(|(_, tp)| *tp)
}

/// The ring buffer's size when the user does not choose one (`velo trace --buffer`).
pub const DEFAULT_RING_MIB: u32 = 8;

/// Runs `cmd` watched by the kernel programs, passing every event to `sink`. Events travel
/// through a ring buffer of `ring_bytes` (a power of two, at least a page). `idle` runs when
/// the buffer is empty, for a bounded piece of other work; while it says it did some, the
/// reader looks at the buffer again rather than sleep. With `program_costs` the kernel counts
/// each program's runs and run time meanwhile.
pub fn trace(
    cmd: &Command,
    ring_bytes: u32,
    program_costs: bool,
    sink: &mut dyn FnMut(Event),
    idle: &mut dyn FnMut() -> bool,
) -> Result<Traced, Error> {
    if let Some(reason) = velo_ebpf::unavailable() {
        return Err(Error::NotBuilt(reason));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotRoot);
    }
    let started = std::time::Instant::now();
    // The command is forked first, while velo is small and has one thread (a fork copies the
    // page tables of the ring's mappings too), and waits; should loading fail, it reads the
    // end of its pipe and exits without running.
    let child = spawn_waiting(cmd)?;
    // What the kernel's BTF says, from this boot's cache; else scanned on another thread while
    // the maps are made (the programs wait for it).
    let cache = std::path::Path::new(KERNEL_CACHE);
    let kernel = std::sync::OnceLock::<Result<Kernel, String>>::new();
    let scan = std::sync::Mutex::new(match Kernel::cached(cache) {
        Some(k) => {
            let _ = kernel.set(Ok(k));
            None
        }
        None => Some(std::thread::spawn(|| Kernel::scan_into(cache))),
    });
    let kernel = || -> Result<&Kernel, Error> {
        kernel
            .get_or_init(|| {
                let handle = scan.lock().ok().and_then(|mut h| h.take());
                let k = handle
                    .ok_or("no kernel BTF")?
                    .join()
                    .map_err(|_| "reading the kernel's BTF panicked")?
                    .map_err(|e| e.to_string())?;
                tracing::debug!(elapsed = ?started.elapsed(), layout = ?k.layout, "read the kernel's BTF");
                Ok(k)
            })
            .as_ref()
            .map_err(|e| Error::Load(e.clone()))
    };
    let btf_id = |tp: &str| -> Result<u32, Error> {
        kernel()?
            .trace_ids
            .get(tp)
            .copied()
            .ok_or_else(|| load_err(format!("no BTF id for tracepoint {tp}")))
    };
    let fill = |maps: &mut std::collections::HashMap<String, Map>| {
        let mut watched: Array<_, u32> =
            Array::try_from(map_mut(maps, "watched")?).map_err(load_err)?;
        for (nr, spec) in syscalls::table() {
            watched
                .set(*nr as u32, spec_bits(spec), 0)
                .map_err(load_err)?;
        }
        for nr in syscalls::DESCRIPTOR_CALLS {
            watched
                .set(
                    nr as u32,
                    velo_ebpf::SPEC_WATCHED | velo_ebpf::SPEC_DESCRIPTOR,
                    0,
                )
                .map_err(load_err)?;
        }
        let layout = kernel()?.layout;
        let mut map_layout: Array<_, Layout> =
            Array::try_from(map_mut(maps, "layout")?).map_err(load_err)?;
        map_layout.set(0, layout, 0).map_err(load_err)
    };
    // Held while the command runs: the kernel keeps run-time statistics while it is open.
    let _stats = match program_costs {
        true => Some(load::enable_stats()?),
        false => None,
    };
    let mut loaded = load::load(velo_ebpf::OBJECT, ring_bytes, &PROGRAMS, btf_id, fill)
        .inspect_err(|_| child.abandon())?;
    tracing::debug!(elapsed = ?started.elapsed(), "attached the programs");
    {
        let mut traced: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
            loaded
                .maps
                .get_mut("traced")
                .ok_or_else(|| load_err("no traced map"))?,
        )
        .map_err(load_err)?;
        traced.insert(child.pid as u32, 1, 0).map_err(load_err)?;
    }
    let child_pid = child.pid;
    child.release()?;

    let mut ring = RingBuf::try_from(
        loaded
            .maps
            .remove("events")
            .ok_or_else(|| load_err("no events map"))?,
    )
    .map_err(load_err)?;
    let mut decoder = Decoder::default();
    decoder
        .exe
        .insert(child_pid, cmd.program.display().to_string());
    decoder.cwd.insert(
        child_pid,
        RawPath(cmd.cwd.as_os_str().as_encoded_bytes().to_vec()),
    );
    // The child's exit is noticed on a pidfd, so the reader sleeps in one poll on both.
    // SAFETY: pidfd_open of our own child.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child_pid, 0) } as i32;
    let mut drain = |ring: &mut RingBuf<_>, decoder: &mut Decoder| {
        while let Some(item) = ring.next() {
            if let Some(record) = velo_ebpf::Record::parse(&item) {
                decoder.decode(&record, sink);
            }
        }
    };
    let ring_fd = ring.as_fd().as_raw_fd();
    let outcome = loop {
        drain(&mut ring, &mut decoder);
        let mut status = 0;
        // SAFETY: polling our own child.
        let done = unsafe { libc::waitpid(child_pid, &mut status, libc::WNOHANG) };
        if done == child_pid {
            break if libc::WIFSIGNALED(status) {
                Outcome::Signaled(libc::WTERMSIG(status))
            } else {
                Outcome::Exited(libc::WEXITSTATUS(status))
            };
        }
        if idle() {
            continue;
        }
        let mut fds = [ring_fd, pidfd].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: two pollfds (a negative fd, when pidfd_open failed, is ignored). The
        // programs wake the reader only when the buffer fills up (see `wakeup_flags` in
        // velo.bpf.c): the timeout is the usual pace of reading.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, 5) };
    };
    tracing::debug!(elapsed = ?started.elapsed(), "the command exited");
    if pidfd >= 0 {
        // SAFETY: our descriptor.
        unsafe { libc::close(pidfd) };
    }
    // The command's exit record was sent before its parent (velo) could reap it, but a record
    // another CPU is still writing holds back those after it: read until the exit is in.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
    loop {
        drain(&mut ring, &mut decoder);
        if decoder.exited.contains(&child_pid) || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    tracing::debug!(elapsed = ?started.elapsed(), "read the last records");
    let dropped = Array::<_, u64>::try_from(
        loaded
            .maps
            .get("dropped")
            .ok_or_else(|| load_err("no dropped map"))?,
    )
    .and_then(|a| a.get(&0, 0))
    .unwrap_or(0);
    let programs = match program_costs {
        true => loaded.costs()?,
        false => Vec::new(),
    };
    Ok(Traced {
        outcome,
        dropped,
        programs,
    })
}

/// The path an exec was given and the directory descriptor it is relative to, from the kernel's
/// name for it (`bprm->filename`): the path itself, or for `execveat` relative to a descriptor
/// N, `/dev/fd/N/PATH` (`/dev/fd/N` with `AT_EMPTY_PATH`).
fn exec_argument(filename: &[u8]) -> (&[u8], Option<i32>) {
    let Some(rest) = filename.strip_prefix(b"/dev/fd/") else {
        return (filename, None);
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let fd = std::str::from_utf8(&rest[..digits])
        .ok()
        .and_then(|d| d.parse().ok());
    match (fd, &rest[digits..]) {
        (Some(fd), []) => (b"", Some(fd)),
        (Some(fd), [b'/', path @ ..]) => (path, Some(fd)),
        _ => (filename, None),
    }
}

/// A forked child that waits on a pipe before it execs the command.
struct Waiting {
    pid: i32,
    go: i32,
}

impl Waiting {
    /// Lets the child go without running the command, and reaps it.
    fn abandon(&self) {
        // SAFETY: our descriptor and our child; the child exits when the pipe closes.
        unsafe {
            libc::close(self.go);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }

    fn release(self) -> Result<(), Error> {
        // SAFETY: writing one byte to our pipe, then closing it.
        let n = unsafe { libc::write(self.go, b"x".as_ptr().cast(), 1) };
        // SAFETY: our descriptor.
        unsafe { libc::close(self.go) };
        if n != 1 {
            return Err(Error::Sys(
                "starting the command",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

fn spawn_waiting(cmd: &Command) -> Result<Waiting, Error> {
    let exec = crate::command::Exec::new(cmd).map_err(|_| Error::Nul)?;
    use std::os::fd::IntoRawFd;
    let (read, write) = crate::command::cloexec_pipe().map_err(|e| Error::Sys("pipe", e))?;
    let fds = [read.into_raw_fd(), write.into_raw_fd()];
    // SAFETY: fork; the child only makes raw calls on data prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::Sys("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the child: raw calls, then exec or _exit.
        unsafe {
            // If velo dies before releasing it, the command never starts.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::close(fds[1]);
            let mut byte = 0u8;
            if libc::read(fds[0], (&raw mut byte).cast(), 1) != 1 {
                libc::_exit(126);
            }
            exec.exec();
        }
    }
    // SAFETY: the read end belongs to the child now.
    unsafe { libc::close(fds[0]) };
    Ok(Waiting { pid, go: fds[1] })
}

/// Turns raw records into events, keeping what later records need.
#[derive(Default)]
struct Decoder {
    exe: HashMap<i32, String>,
    ppid: HashMap<i32, i32>,
    shim: HashMap<i32, (u64, u64)>,
    /// Working directories: the command's, inherited at fork, followed through `chdir` and
    /// `fchdir`. Knowing them without `/proc` resolves the paths of processes that have exited,
    /// and keeps the reader ahead of the ring buffer.
    cwd: HashMap<i32, RawPath>,
    /// Each process's descriptors that `open` calls returned, by the same reasoning.
    fds: HashMap<i32, HashMap<i32, Descriptor>>,
    /// Processes whose exit record was read.
    exited: std::collections::HashSet<i32>,
    /// Each successful exec's path, from its exec record: the syscall's own record follows
    /// it, without arguments (the exec replaced them).
    execs: HashMap<i32, Exec>,
}

/// A successful exec, as its exec record tells it.
struct Exec {
    given: RawPath,
    resolved: RawPath,
    /// Relative to a descriptor: an `execveat`. (The record that follows says `execve` for
    /// both here, as the exec rewrote the registers.)
    at_descriptor: bool,
}

#[derive(Clone)]
struct Descriptor {
    path: RawPath,
    /// Closed by exec (`O_CLOEXEC`, `F_DUPFD_CLOEXEC`, `dup3(…, O_CLOEXEC)`).
    cloexec: bool,
}

impl Decoder {
    fn decode(&mut self, record: &velo_ebpf::Record, sink: &mut dyn FnMut(Event)) {
        let raw = &record.header;
        let pid = raw.pid as i32;
        match raw.kind {
            velo_ebpf::KIND_FORK => {
                let child = raw.aux as i32;
                let thread = raw.nr == 1;
                if !thread {
                    self.ppid.insert(child, pid);
                    if let Some(exe) = self.exe.get(&pid).cloned() {
                        self.exe.insert(child, exe);
                    }
                    if let Some(range) = self.shim.get(&pid).copied() {
                        self.shim.insert(child, range);
                    }
                    if let Some(cwd) = self.cwd.get(&pid).cloned() {
                        self.cwd.insert(child, cwd);
                    }
                    if let Some(fds) = self.fds.get(&pid).cloned() {
                        self.fds.insert(child, fds);
                    }
                }
                sink(Event::Fork {
                    parent: pid,
                    pid: if thread { raw.tid as i32 } else { child },
                    thread,
                });
            }
            velo_ebpf::KIND_EXEC => {
                // The path as given, resolved against the process's directory or execveat's
                // descriptor (the kernel names it /dev/fd/N/…), before close-on-exec
                // descriptors go: execveat's may be one.
                let (given, dirfd) = exec_argument(record.path0);
                let resolved = self.resolve(pid, raw.tid as i32, dirfd, given);
                // The kernel's name for the new program while the process lives; else the
                // resolved path, canonical, unless it is `/proc/…` (velo's own, here).
                let mut name = String::from_utf8_lossy(&resolved).into_owned();
                if name == "/proc/self/exe"
                    && let Some(previous) = self.exe.get(&pid)
                {
                    // A program re-executing itself (busybox applets, say).
                    name = previous.clone();
                }
                let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.display().to_string())
                    .or_else(
                        |_| match name.starts_with('/') && !name.starts_with("/proc/") {
                            true => std::fs::canonicalize(&name).map(|p| p.display().to_string()),
                            false => Err(std::io::ErrorKind::NotFound.into()),
                        },
                    )
                    .unwrap_or(name);
                self.exe.insert(pid, exe.clone());
                self.shim.remove(&pid);
                self.execs.insert(
                    pid,
                    Exec {
                        given: RawPath::from(given),
                        resolved,
                        at_descriptor: dirfd.is_some(),
                    },
                );
                if let Some(fds) = self.fds.get_mut(&pid) {
                    fds.retain(|_, d| !d.cloexec);
                }
                sink(Event::Exec { pid, exe });
            }
            velo_ebpf::KIND_EXIT => {
                let status = raw.aux as i32;
                let (code, signal) = if status & 0x7f == 0 {
                    (Some((status >> 8) & 0xff), None)
                } else {
                    (None, Some(status & 0x7f))
                };
                self.fds.remove(&pid);
                self.execs.remove(&pid);
                self.exited.insert(pid);
                sink(Event::Exit { pid, code, signal });
            }
            velo_ebpf::KIND_DESCRIPTOR => self.descriptor(pid, raw),
            velo_ebpf::KIND_SYSCALL => {
                let Some(spec) = syscalls::lookup(raw.nr) else {
                    return;
                };
                let mut paths = Vec::new();
                for (i, bytes) in [record.path0, record.path1].into_iter().enumerate() {
                    if i < spec.paths.len() {
                        paths.push(RawPath::from(bytes));
                    }
                }
                if let Some(range) = paths.first().and_then(|p| crate::event::shim_beacon(p)) {
                    self.shim.insert(pid, range);
                    return;
                }
                let exec = matches!(spec.name, "execve" | "execveat") && raw.ret == 0;
                let mut name = spec.name;
                let resolved: Vec<RawPath> = match exec.then(|| self.execs.remove(&pid)) {
                    Some(Some(exec)) => {
                        if exec.at_descriptor {
                            name = "execveat";
                        }
                        paths = vec![exec.given];
                        vec![exec.resolved]
                    }
                    _ => spec
                        .paths
                        .iter()
                        .zip(&paths)
                        .map(|(arg, path)| {
                            let dirfd = arg.dirfd.map(|d| raw.args[d] as i32);
                            self.resolve(pid, raw.tid as i32, dirfd, path)
                        })
                        .collect(),
                };
                // Follow the working directory and descriptors from the events themselves: the
                // process may be gone (and its /proc entry with it) by the time they are read.
                match spec.name {
                    "chdir" if raw.ret == 0 && !resolved[0].is_empty() => {
                        self.cwd.insert(pid, resolved[0].clone());
                    }
                    "fchdir" if raw.ret == 0 => {
                        match self.descriptor_path(pid, raw.args[0] as i32).cloned() {
                            Some(dir) => self.cwd.insert(pid, dir),
                            None => self.cwd.remove(&pid),
                        };
                    }
                    "open" | "openat" | "openat2" | "creat"
                        if raw.ret >= 0 && !resolved[0].is_empty() =>
                    {
                        let flags = match spec.name {
                            "open" => raw.args[1],
                            "openat" => raw.args[2],
                            _ => 0,
                        } as i32;
                        self.fds.entry(pid).or_default().insert(
                            raw.ret as i32,
                            Descriptor {
                                path: resolved[0].clone(),
                                cloexec: flags & libc::O_CLOEXEC != 0,
                            },
                        );
                    }
                    _ => {}
                }
                let returned = (spec.returns != Returns::Nothing && raw.ret > 0)
                    .then(|| RawPath::from(record.returned))
                    .filter(|r| !r.is_empty());
                let shim = self.shim.get(&pid).copied();
                sink(Event::Syscall(Syscall {
                    pid,
                    tid: raw.tid as i32,
                    ppid: self.ppid.get(&pid).copied().unwrap_or(0),
                    // Known from the command, its forks and execs.
                    exe: self.exe.get(&pid).cloned().unwrap_or_default(),
                    syscall: name.to_owned(),
                    paths,
                    resolved,
                    ret: Some(raw.ret),
                    returned,
                    writes: syscalls::opens_for_writing(spec.name, &raw.args),
                    shim: shim.is_some(),
                    via_shim: shim.is_some_and(|(lo, hi)| raw.ip >= lo && raw.ip < hi),
                }));
            }
            _ => {}
        }
    }

    /// Follows a successful `close`, `dup`, `dup2`, `dup3`, `fcntl(F_DUPFD*)` or `close_range`.
    fn descriptor(&mut self, pid: i32, raw: &velo_ebpf::Header) {
        let fds = self.fds.entry(pid).or_default();
        let a = |i: usize| raw.args[i] as i32;
        let mut copy = |from: i32, to: i32, cloexec: bool| match fds.get(&from).cloned() {
            Some(d) => {
                fds.insert(to, Descriptor { cloexec, ..d });
            }
            None => {
                fds.remove(&to);
            }
        };
        match raw.nr {
            libc::SYS_close => {
                fds.remove(&a(0));
            }
            libc::SYS_dup => copy(a(0), raw.ret as i32, false),
            libc::SYS_dup2 => copy(a(0), raw.ret as i32, false),
            libc::SYS_dup3 => copy(a(0), raw.ret as i32, a(2) & libc::O_CLOEXEC != 0),
            libc::SYS_fcntl => copy(a(0), raw.ret as i32, a(1) == libc::F_DUPFD_CLOEXEC),
            libc::SYS_close_range => {
                let (first, last) = (raw.args[0] as u32, raw.args[1] as u32);
                let in_range = |fd: &i32| (first..=last).contains(&(*fd as u32));
                if raw.args[2] as u32 & libc::CLOSE_RANGE_CLOEXEC != 0 {
                    fds.iter_mut()
                        .filter(|(fd, _)| in_range(fd))
                        .for_each(|(_, d)| d.cloexec = true);
                } else {
                    fds.retain(|fd, _| !in_range(fd));
                }
            }
            _ => {}
        }
    }

    /// The path behind `fd`: from the events, else from `/proc` while the process lives.
    fn descriptor_path(&mut self, pid: i32, fd: i32) -> Option<&RawPath> {
        let known = self.fds.get(&pid).is_some_and(|fds| fds.contains_key(&fd));
        if !known {
            let path = crate::proc::fd(pid, fd)?;
            // An inherited descriptor: remembered, since the calls that change it are all seen.
            self.fds.entry(pid).or_default().insert(
                fd,
                Descriptor {
                    path,
                    cloexec: false,
                },
            );
        }
        self.fds.get(&pid)?.get(&fd).map(|d| &d.path)
    }

    /// `path` made absolute; best effort, the process may be gone. The base is borrowed from
    /// what the decoder keeps: one allocation per path, the result's.
    fn resolve(&mut self, pid: i32, tid: i32, dirfd: Option<i32>, path: &[u8]) -> RawPath {
        if path.starts_with(b"/") {
            return RawPath::from(path);
        }
        let base = match dirfd {
            Some(fd) if fd != libc::AT_FDCWD => self.descriptor_path(pid, fd),
            _ => {
                if !self.cwd.contains_key(&pid)
                    && let Some(cwd) = crate::proc::cwd(tid)
                {
                    self.cwd.insert(pid, cwd);
                }
                self.cwd.get(&pid)
            }
        };
        crate::proc::join(base.map(|b| &b[..]), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_path_names_its_descriptor_as_the_kernel_spells_it() {
        assert_eq!(exec_argument(b"/usr/bin/cc"), (&b"/usr/bin/cc"[..], None));
        assert_eq!(exec_argument(b"bin/tool"), (&b"bin/tool"[..], None));
        assert_eq!(
            exec_argument(b"/dev/fd/7/bin/tool"),
            (&b"bin/tool"[..], Some(7))
        );
        assert_eq!(exec_argument(b"/dev/fd/12"), (&b""[..], Some(12)));
        assert_eq!(exec_argument(b"/dev/fd/x/y"), (&b"/dev/fd/x/y"[..], None));
    }

    #[test]
    fn the_kernel_cache_is_used_within_a_boot_and_passed_over_otherwise() {
        if let Err(e) = std::fs::metadata(btf::VMLINUX) {
            eprintln!("SKIPPED: no kernel BTF to scan ({e})");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("velo/kernel-btf");
        // What `trace` does: this boot's cache, else a scan that writes it.
        let read = |c: &std::path::Path| Kernel::cached(c).map_or_else(|| Kernel::scan_into(c), Ok);
        let scanned = read(&cache).unwrap();
        assert_eq!(scanned, Kernel::scan().unwrap());
        let text = std::fs::read_to_string(&cache).expect("the scan was cached");
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert_eq!(text.lines().next(), Some(&*format!("boot {}", boot.trim())));

        // Within this boot the file is believed, whatever it says: here, one changed number.
        let changed = text.replace(
            &format!("task_struct.pid {}", scanned.layout.task_pid),
            "task_struct.pid 7",
        );
        std::fs::write(&cache, &changed).unwrap();
        assert_eq!(read(&cache).unwrap().layout.task_pid, 7);

        // Another boot's numbers, a missing one or garbage: scanned again, and rewritten.
        let stale = [
            changed.replacen("boot ", "boot 0", 1),
            changed.replace("task_struct.exit_code", "task_struct.other"),
            "\u{0}garbage".to_owned(),
        ];
        for text in stale {
            std::fs::write(&cache, &text).unwrap();
            assert_eq!(read(&cache).unwrap(), scanned, "{text:?}");
            assert_eq!(
                Kernel::parse(&std::fs::read_to_string(&cache).unwrap(), boot.trim()),
                Some(Kernel::scan().unwrap())
            );
        }
    }
}
