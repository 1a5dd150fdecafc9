//! The ptrace backend: works for any user, no kernel privileges needed.
//!
//! # How
//!
//! The command is forked by hand (not with `std::process::Command`: its child must stop and
//! wait for the tracer before `exec`, and blocking in `pre_exec` while the parent waits in
//! `spawn` deadlocks). The child asks to be traced, sets `no_new_privs`, stops itself, and, once
//! the tracer has set its options, installs a seccomp filter that singles out the syscalls of
//! [`crate::syscalls`] and allows everything else, then execs. Only file syscalls cost anything
//! (a `find /usr` costs ~5× native instead of ~25× with every syscall stopped). The filter is
//! inherited by every descendant.
//!
//! What the filter does with a file syscall depends on what the caller asked for:
//!
//! - **Findings** (no event log, [`Options::returns`] unset): `SECCOMP_RET_USER_NOTIF`. The
//!   child hands the filter's listener to velo, and a second thread serves it ([`notify`]): it
//!   reads the path arguments while the caller waits, then lets the call run. About a third of
//!   the cost of a ptrace stop; no return values. Kernels without listeners (before 5.0) or
//!   without `pidfd_getfd` (before 5.6) fall back to the next mode, and say so in the log.
//! - **Event log**: `SECCOMP_RET_TRACE`. At the seccomp stop (entry) the tracer reads the
//!   registers and the path arguments (`process_vm_readv`), resolves relative ones against the
//!   dirfd or cwd (`/proc/PID/fd/N`, `/proc/TID/cwd`), and restarts with `PTRACE_SYSCALL`, which
//!   stops again at the syscall's exit for the return value and any returned path.
//!
//! Either way, children are followed with `PTRACE_O_TRACEFORK|VFORK|CLONE` and `TRACEEXEC`;
//! `PTRACE_O_EXITKILL` kills every tracee if velo dies, so nothing is ever left stopped or
//! orphaned.
//!
//! # Which returned paths the shim saw
//!
//! A `getcwd` or `readlink` made by a shim hook returns the physical path to the hook, which
//! translates it before the program sees it. The shim issues exactly these syscalls from its own
//! code (an inline `syscall` instruction, see the shim's `kernel` module), so the tracer tells
//! them from a program's raw ones by the instruction pointer: inside the shim's executable
//! mapping means [`Syscall::via_shim`].
//!
//! [`Syscall::via_shim`]: crate::event::Syscall::via_shim

mod notify;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use crate::command::{Command, Outcome};
use crate::event::{Event, RawPath, Syscall};
use crate::syscalls::{self, Returns, Spec};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Sys(&'static str, std::io::Error),
    #[error("the command's program name contains a NUL byte")]
    Nul,
    #[error(
        "cannot start tracing: {0} (ptrace may be forbidden here: kernel.yama.ptrace_scope, or a seccomp policy of the container)"
    )]
    Start(std::io::Error),
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The shim's file name, to find it in `/proc/PID/maps`.
    pub shim_file_name: String,
    /// Stop at every syscall's exit for its return value (for an event log). Without it, file
    /// syscalls go through a seccomp listener (see the module doc): no return values, a third
    /// of the cost.
    pub returns: bool,
}

const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// The seccomp program: `action` for the file syscalls, allow the rest.
fn filter(action: u32) -> Vec<libc::sock_filter> {
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let (ld_abs, jeq, ret) = (0x20u16, 0x15u16, 0x06u16); // BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_RET|K
    let numbers: Vec<u32> = syscalls::table().iter().map(|(n, _)| *n as u32).collect();
    let mut prog = vec![
        stmt(ld_abs, 4), // seccomp_data.arch
        libc::sock_filter {
            code: jeq,
            jt: 1,
            jf: 0,
            k: AUDIT_ARCH_X86_64,
        },
        stmt(ret, SECCOMP_RET_ALLOW),
        stmt(ld_abs, 0), // seccomp_data.nr
    ];
    let n = numbers.len();
    for (i, nr) in numbers.iter().enumerate() {
        prog.push(libc::sock_filter {
            code: jeq,
            jt: (n - i) as u8,
            jf: 0,
            k: *nr,
        });
    }
    prog.push(stmt(ret, SECCOMP_RET_ALLOW));
    prog.push(stmt(ret, action));
    prog
}

/// Per-thread state.
#[derive(Debug, Default)]
struct Thread {
    pid: i32,
    /// Whether its attach stop was seen (a new tracee's first stop is a SIGSTOP to swallow).
    started: bool,
    pending: Option<Pending>,
}

#[derive(Debug)]
struct Pending {
    spec: &'static Spec,
    args: [u64; 6],
    paths: Vec<RawPath>,
    resolved: Vec<RawPath>,
    exe: String,
    /// The instruction pointer at entry (after the `syscall` instruction).
    rip: u64,
}

/// Per-process state.
#[derive(Debug, Default)]
struct Process {
    ppid: i32,
    exe: String,
    /// The shim's executable mappings, once seen (it maps after exec, before `main`).
    shim_text: Option<Vec<(u64, u64)>>,
    /// Events since exec; `/proc/PID/maps` is read again at powers of two until the shim shows.
    events: u64,
    /// Whether the tracer saw this process exec: its state is then its own program's, not a
    /// copy of its parent's.
    execed: bool,
}

/// Runs `cmd` traced, passing every event to `sink`.
pub fn trace(cmd: &Command, opts: &Options, sink: &mut dyn FnMut(Event)) -> Result<Outcome, Error> {
    let exec = crate::command::Exec::new(cmd).map_err(|_| Error::Nul)?;
    if !opts.returns {
        match start(&exec, true)? {
            (child, Ok(Some(listener))) => return trace_notified(child, listener, opts, sink),
            (_, Err(why)) => tracing::info!(
                "no seccomp listener ({why}): every file syscall is a ptrace stop, ~3x slower"
            ),
            (_, Ok(None)) => unreachable!("a listener was asked for"),
        }
    }
    let (child, _) = start(&exec, false)?;
    let mut tracer = Tracer::new(child, opts, Output::Sink(sink));
    tracer.run(child)
}

/// Forks the traced child and lets it run up to `exec` with its filter in place: with a
/// listener (`notified`) when the kernel gives one, handed over; `Err(why)` when it does not
/// (the child is gone then, having run nothing of the command's).
fn start(exec: &crate::command::Exec, notified: bool) -> Result<(i32, Started), Error> {
    let action = if notified {
        libc::SECCOMP_RET_USER_NOTIF
    } else {
        SECCOMP_RET_TRACE
    };
    let prog = filter(action);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // With a listener: the child reports its descriptor number on one pipe and waits on the
    // other until velo holds the listener (or gives up: then it exits, having run nothing).
    let pipe = || crate::command::cloexec_pipe().map_err(|e| Error::Sys("pipe2", e));
    let (report, go) = if notified {
        (Some(pipe()?), Some(pipe()?))
    } else {
        (None, None)
    };

    // SAFETY: fork; the child only calls async-signal-safe functions on data prepared above.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(Error::Sys("fork", std::io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: in the child: raw calls, then exec or _exit.
        unsafe {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
                libc::_exit(126);
            }
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            libc::raise(libc::SIGSTOP);
            match (&report, &go) {
                (Some((_, report_w)), Some((go_r, _))) => {
                    let install = |flags: libc::c_ulong| {
                        libc::syscall(
                            libc::SYS_seccomp,
                            libc::SECCOMP_SET_MODE_FILTER,
                            flags,
                            &fprog as *const libc::sock_fprog,
                        )
                    };
                    let mut fd = install(
                        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
                            | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                    );
                    if fd < 0 {
                        // Before 5.19: no killable wait.
                        fd = install(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER);
                    }
                    let fd = fd as i32;
                    libc::write(report_w.as_raw_fd(), (&raw const fd).cast(), 4);
                    let mut ok = 0u8;
                    if fd < 0 || libc::read(go_r.as_raw_fd(), (&raw mut ok).cast(), 1) != 1 {
                        libc::_exit(125);
                    }
                }
                _ => {
                    if libc::prctl(
                        libc::PR_SET_SECCOMP,
                        libc::SECCOMP_MODE_FILTER,
                        &fprog as *const libc::sock_fprog,
                    ) != 0
                    {
                        libc::_exit(126);
                    }
                }
            }
            exec.exec();
        }
    }

    let mut status = 0;
    // SAFETY: waiting for our own child.
    if unsafe { libc::waitpid(child, &mut status, libc::__WALL) } != child
        || !libc::WIFSTOPPED(status)
    {
        return Err(Error::Start(std::io::Error::other(
            "the child did not stop for the tracer",
        )));
    }
    let options = libc::PTRACE_O_TRACESECCOMP
        | libc::PTRACE_O_TRACESYSGOOD
        | libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_EXITKILL;
    // SAFETY: the child is stopped and traced by us.
    if unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, child, 0, options) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: our child.
        unsafe { libc::kill(child, libc::SIGKILL) };
        return Err(Error::Start(e));
    }
    resume(child, libc::PTRACE_CONT, 0);
    let (Some((report_r, report_w)), Some((go_r, go_w))) = (report, go) else {
        return Ok((child, Ok(None)));
    };
    drop((report_w, go_r));
    let mut fd = -1i32;
    // SAFETY: reading four bytes into an i32; EOF (the child died) leaves it at -1.
    let n = unsafe { libc::read(report_r.as_raw_fd(), (&raw mut fd).cast(), 4) };
    let listener = if n != 4 || fd < 0 {
        Err("the kernel refused SECCOMP_FILTER_FLAG_NEW_LISTENER".to_owned())
    } else {
        notify::Listener::take(child, fd).map_err(|e| format!("pidfd_getfd: {e}"))
    };
    match listener {
        Ok(listener) => {
            // SAFETY: one byte to the waiting child.
            unsafe { libc::write(go_w.as_raw_fd(), b"1".as_ptr().cast(), 1) };
            Ok((child, Ok(Some(listener))))
        }
        Err(why) => {
            drop(go_w); // the child reads EOF and exits
            reap(child);
            Ok((child, Err(why)))
        }
    }
}

/// The listener handed over (`None`: none was asked for), or why there is none.
type Started = Result<Option<notify::Listener>, String>;

/// Waits for traced `child` to end, letting it past any stop.
fn reap(child: i32) {
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        if unsafe { libc::waitpid(child, &mut status, libc::__WALL) } != child
            || libc::WIFEXITED(status)
            || libc::WIFSIGNALED(status)
        {
            return;
        }
        resume(child, libc::PTRACE_CONT, 0);
    }
}

/// The findings mode: this thread follows the processes with ptrace while a second one serves
/// the listener; the two streams are merged by their stamps afterwards.
fn trace_notified(
    child: i32,
    listener: notify::Listener,
    opts: &Options,
    sink: &mut dyn FnMut(Event),
) -> Result<Outcome, Error> {
    let seq = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let (outcome, mut events, served) = std::thread::scope(|s| {
        let server = s.spawn(|| listener.serve(&seq, &done));
        let mut tracer = Tracer::new(child, opts, Output::Stamped(&seq, Vec::new()));
        let outcome = tracer.run(child);
        if outcome.is_err() {
            // SAFETY: our child; nothing may be left running unserved.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        done.store(true, Ordering::SeqCst);
        let served = server.join().unwrap_or_default();
        let Output::Stamped(_, events) = tracer.output else {
            unreachable!("stamped output")
        };
        (outcome, events, served)
    });
    events.extend(served);
    events.sort_unstable_by_key(|(stamp, _)| *stamp);
    // The listener took each caller's parent from /proc; a fork seen first is the better
    // source (a parent that already exited leaves its child to init there).
    let mut parents = HashMap::new();
    for (_, mut event) in events {
        match &mut event {
            Event::Fork {
                parent,
                pid,
                thread: false,
            } => {
                parents.insert(*pid, *parent);
            }
            Event::Syscall(s) => {
                if let Some(parent) = parents.get(&s.pid) {
                    s.ppid = *parent;
                }
            }
            _ => {}
        }
        sink(event);
    }
    outcome
}

/// Where the ptrace thread's events go: straight to the caller's sink, or stamped and kept for
/// the merge with the listener's.
enum Output<'a> {
    Sink(&'a mut dyn FnMut(Event)),
    Stamped(&'a AtomicU64, Vec<(u64, Event)>),
}

impl Output<'_> {
    fn emit(&mut self, event: Event) {
        match self {
            Output::Sink(sink) => sink(event),
            Output::Stamped(seq, kept) => kept.push((seq.fetch_add(1, Ordering::SeqCst), event)),
        }
    }
}

fn resume(tid: i32, request: libc::c_uint, signal: i32) {
    // SAFETY: `tid` is a stopped tracee; a vanished one makes this fail harmlessly (ESRCH).
    unsafe { libc::ptrace(request, tid, 0, signal) };
}

struct Tracer<'a> {
    opts: &'a Options,
    threads: HashMap<i32, Thread>,
    processes: HashMap<i32, Process>,
    output: Output<'a>,
}

impl<'a> Tracer<'a> {
    /// The tracer of `child`, just started.
    fn new(child: i32, opts: &'a Options, output: Output<'a>) -> Self {
        let mut tracer = Tracer {
            opts,
            threads: HashMap::new(),
            processes: HashMap::new(),
            output,
        };
        tracer.threads.insert(
            child,
            Thread {
                pid: child,
                started: true,
                pending: None,
            },
        );
        tracer.processes.insert(
            child,
            Process {
                ppid: std::process::id() as i32,
                ..Process::default()
            },
        );
        tracer
    }

    fn run(&mut self, root: i32) -> Result<Outcome, Error> {
        let mut outcome = None;
        loop {
            let mut status = 0;
            // SAFETY: waiting for any tracee.
            let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
            if tid < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => break,
                    _ => return Err(Error::Sys("waitpid", e)),
                }
            }
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                let (code, signal) = if libc::WIFEXITED(status) {
                    (Some(libc::WEXITSTATUS(status)), None)
                } else {
                    (None, Some(libc::WTERMSIG(status)))
                };
                if tid == root {
                    outcome = Some(match signal {
                        Some(s) => Outcome::Signaled(s),
                        None => Outcome::Exited(code.unwrap_or(0)),
                    });
                }
                if let Some(t) = self.threads.remove(&tid)
                    && t.pid == tid
                {
                    self.processes.remove(&tid);
                    self.output.emit(Event::Exit {
                        pid: tid,
                        code,
                        signal,
                    });
                }
                continue;
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let sig = libc::WSTOPSIG(status);
            let event = status >> 16;
            // A new child may report its initial stop before its parent's fork event.
            self.threads.entry(tid).or_insert_with(|| Thread {
                pid: tgid(tid),
                started: false,
                pending: None,
            });
            match (sig, event) {
                (libc::SIGTRAP, libc::PTRACE_EVENT_SECCOMP) => {
                    if self.on_entry(tid) {
                        resume(tid, libc::PTRACE_SYSCALL, 0);
                    } else {
                        // Nothing to see at the exit: the event is complete already.
                        self.on_exit(tid, None);
                        resume(tid, libc::PTRACE_CONT, 0);
                    }
                }
                (s, 0) if s == libc::SIGTRAP | 0x80 => {
                    let ret = regs(tid).map(|r| r.rax as i64);
                    self.on_exit(tid, ret);
                    resume(tid, libc::PTRACE_CONT, 0);
                }
                (
                    libc::SIGTRAP,
                    libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE,
                ) => {
                    let mut msg: libc::c_ulong = 0;
                    // SAFETY: reading the new child's id at a fork event stop.
                    unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, tid, 0, &mut msg) };
                    let child = msg as i32;
                    let parent_pid = self.threads.get(&tid).map_or(tid, |t| t.pid);
                    // A thread of the same process shows under its task directory (a stat,
                    // where its status file would take several reads).
                    let thread = event == libc::PTRACE_EVENT_CLONE
                        && Path::new(&format!("/proc/{parent_pid}/task/{child}")).exists();
                    let pid = if thread { parent_pid } else { child };
                    self.threads.entry(child).or_default().pid = pid;
                    if !thread {
                        let inherited = self
                            .processes
                            .get(&parent_pid)
                            .map(|p| (p.exe.clone(), p.shim_text.clone()));
                        // The child may have run, even exec'd, before its parent's fork event
                        // comes in (a vfork child under load): never overwrite what it did.
                        let p = self.processes.entry(child).or_default();
                        p.ppid = parent_pid;
                        if !p.execed
                            && let Some((exe, shim_text)) = inherited
                        {
                            p.exe = exe;
                            p.shim_text = shim_text;
                        }
                    }
                    self.output.emit(Event::Fork {
                        parent: parent_pid,
                        pid: child,
                        thread,
                    });
                    resume(tid, libc::PTRACE_CONT, 0);
                }
                (libc::SIGTRAP, libc::PTRACE_EVENT_EXEC) => {
                    // After exec the thread group leader carries the process (a non-leader
                    // thread that execs takes over the leader's id).
                    // The execve that got here succeeded: its exit stop does not come (the
                    // tracee goes on with PTRACE_CONT), so it is complete now, made by the old
                    // program.
                    if self.opts.returns {
                        self.on_exit(tid, Some(0));
                    }
                    let pid = self.threads.get(&tid).map_or(tid, |t| t.pid);
                    let exe = crate::proc::exe(pid).unwrap_or_default();
                    let p = self.processes.entry(pid).or_default();
                    p.exe = exe.clone();
                    p.shim_text = None;
                    p.events = 0;
                    p.execed = true;
                    self.output.emit(Event::Exec { pid, exe });
                    resume(tid, libc::PTRACE_CONT, 0);
                }
                (libc::SIGTRAP, _) => resume(tid, libc::PTRACE_CONT, 0),
                (libc::SIGSTOP, 0) if self.is_new(tid) => {
                    // The automatic stop of a freshly attached child.
                    resume(tid, libc::PTRACE_CONT, 0);
                }
                (s, _) => resume(tid, libc::PTRACE_CONT, s),
            }
        }
        Ok(outcome.unwrap_or(Outcome::Exited(0)))
    }

    /// Whether this is `tid`'s attach stop (its first), which is swallowed, not delivered.
    fn is_new(&mut self, tid: i32) -> bool {
        let t = self.threads.entry(tid).or_default();
        if t.pid == 0 {
            t.pid = tgid(tid);
        }
        !std::mem::replace(&mut t.started, true)
    }

    /// Records the syscall's entry; `true` when its exit must be seen too.
    fn on_entry(&mut self, tid: i32) -> bool {
        let Some(regs) = regs(tid) else { return false };
        let Some(spec) = syscalls::lookup(regs.orig_rax as i64) else {
            return false;
        };
        let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        let pid = self.threads.get(&tid).map_or(tid, |t| t.pid);
        let (paths, resolved) = read_paths(spec, &args, pid, tid);
        if let Some(range) = paths.first().and_then(|p| crate::event::shim_beacon(p)) {
            // The shim announcing itself: not an event of the program's.
            self.process(pid).shim_text = Some(vec![range]);
            return false;
        }
        let exe = self.process(pid).exe.clone();
        if let Some(t) = self.threads.get_mut(&tid) {
            t.pending = Some(Pending {
                spec,
                args,
                paths,
                resolved,
                exe,
                rip: regs.rip,
            });
        }
        self.opts.returns || spec.returns != Returns::Nothing
    }

    fn process(&mut self, pid: i32) -> &mut Process {
        let p = self.processes.entry(pid).or_default();
        if p.exe.is_empty() {
            p.exe = crate::proc::exe(pid).unwrap_or_default();
        }
        p
    }

    /// Completes the pending syscall of `tid`, with its return value when stopped at its exit.
    fn on_exit(&mut self, tid: i32, ret: Option<i64>) {
        let Some(pending) = self.threads.get_mut(&tid).and_then(|t| t.pending.take()) else {
            return;
        };
        let returned = match (pending.spec.returns, ret) {
            (Returns::CString(arg), Some(ret)) if ret > 0 => read_string(tid, pending.args[arg]),
            (Returns::Counted(arg), Some(ret)) if ret > 0 => {
                read_bytes(tid, pending.args[arg], ret as usize).map(RawPath)
            }
            _ => None,
        };
        let pid = self.threads.get(&tid).map_or(tid, |t| t.pid);
        let shim_name = self.opts.shim_file_name.clone();
        let process = self.process(pid);
        process.events += 1;
        // A returned path needs the answer now: the shim's constructor resolves its roots with
        // readlinkat within the first few syscalls after the library is mapped.
        if process.shim_text.is_none() && (process.events.is_power_of_two() || returned.is_some()) {
            process.shim_text = shim_text(pid, &shim_name);
        }
        let text = process.shim_text.clone().unwrap_or_default();
        let ppid = process.ppid;
        let via_shim = text
            .iter()
            .any(|(lo, hi)| pending.rip >= *lo && pending.rip < *hi);
        let exe = if pending.exe.is_empty() {
            self.process(pid).exe.clone()
        } else {
            pending.exe
        };
        self.output.emit(Event::Syscall(Syscall {
            pid,
            tid,
            ppid,
            exe,
            syscall: pending.spec.name.to_owned(),
            paths: pending.paths,
            resolved: pending.resolved,
            ret,
            returned,
            writes: syscalls::opens_for_writing(pending.spec.name, &pending.args),
            shim: !text.is_empty(),
            via_shim,
        }));
    }
}

fn tgid(tid: i32) -> i32 {
    status_ids(tid).0
}

/// The process id and parent process id of thread `tid` (`tid` and 0 when it is gone). One
/// short read: both are near the top of `/proc/TID/status`, and `read_to_string` would take
/// eight reads of it.
fn status_ids(tid: i32) -> (i32, i32) {
    use std::io::Read;
    let mut buf = [0u8; 512];
    let n = std::fs::File::open(format!("/proc/{tid}/status"))
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    let status = String::from_utf8_lossy(&buf[..n]);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    (field("Tgid:").unwrap_or(tid), field("PPid:").unwrap_or(0))
}

fn regs(tid: i32) -> Option<libc::user_regs_struct> {
    // SAFETY: a zeroed register struct is valid; GETREGS fills it for a stopped tracee.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::ptrace(libc::PTRACE_GETREGS, tid, 0, &mut regs) };
    (rc == 0).then_some(regs)
}

/// Up to `len` bytes of the tracee's memory at `addr`.
fn read_bytes(tid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    if addr == 0 {
        return None;
    }
    let mut buf = vec![0u8; len];
    let n = read_into(tid, addr, &mut buf)?.len();
    buf.truncate(n);
    Some(buf)
}

/// A NUL-terminated string of the tracee. Read in steps that never cross a page (a string may
/// end just before an unmapped page), the first one short: most paths fit in it, and copying
/// up to a page end costs more than a second read when they do not.
fn read_string(tid: i32, addr: u64) -> Option<RawPath> {
    if addr == 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    let mut at = addr;
    let mut step = 256;
    while out.len() < libc::PATH_MAX as usize {
        let len = step.min(4096 - (at % 4096) as usize);
        let chunk = read_into(tid, at, &mut buf[..len])?;
        if let Some(nul) = memchr::memchr(0, chunk) {
            if out.is_empty() {
                return Some(RawPath::from(&chunk[..nul]));
            }
            out.extend_from_slice(&chunk[..nul]);
            return Some(RawPath(out));
        }
        out.extend_from_slice(chunk);
        at += chunk.len() as u64;
        step = 4096;
    }
    Some(RawPath(out))
}

/// The tracee's memory at `addr` into `buf`; the part that could be read.
fn read_into(tid: i32, addr: u64, buf: &mut [u8]) -> Option<&[u8]> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one local buffer of `buf.len()` bytes; the remote range is the tracee's business.
    let n = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
    (n > 0).then(|| &buf[..n as usize])
}

fn read_link(path: impl AsRef<std::path::Path>) -> RawPath {
    crate::proc::link(path).unwrap_or_default()
}

/// The path arguments of a call `spec` with `args`, read from thread `tid` of `pid`: as
/// passed, and resolved.
fn read_paths(spec: &Spec, args: &[u64; 6], pid: i32, tid: i32) -> (Vec<RawPath>, Vec<RawPath>) {
    let mut paths = Vec::new();
    let mut resolved = Vec::new();
    for p in spec.paths {
        let Some(path) = read_string(tid, args[p.arg]) else {
            continue;
        };
        let dirfd = p.dirfd.map(|d| args[d] as i32);
        resolved.push(resolve(pid, tid, dirfd, &path));
        paths.push(path);
    }
    (paths, resolved)
}

/// `path` made absolute against the dirfd (`*at` calls) or the thread's working directory.
fn resolve(pid: i32, tid: i32, dirfd: Option<i32>, path: &[u8]) -> RawPath {
    crate::proc::absolute(path, || match dirfd {
        Some(fd) if fd != libc::AT_FDCWD => crate::proc::fd(pid, fd),
        _ => crate::proc::cwd(tid),
    })
}

/// The executable mappings of the shim in `pid`, or `None` when it is not mapped (yet).
fn shim_text(pid: i32, name: &str) -> Option<Vec<(u64, u64)>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let ranges: Vec<(u64, u64)> = maps
        .lines()
        .filter(|l| l.ends_with(&format!("/{name}")))
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.contains('x')))
        .filter_map(|l| {
            let (lo, hi) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
            ))
        })
        .collect();
    (!ranges.is_empty()).then_some(ranges)
}
