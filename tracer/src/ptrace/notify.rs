//! File syscalls through a seccomp listener instead of ptrace stops (findings mode).
//!
//! # Why
//!
//! A ptrace stop is expensive for what it carries: the caller stops, the tracer wakes on the
//! other CPU, freezes the tracee (`wait_task_inactive`), reads its registers with a second
//! `ptrace` call, and wakes it again, on the other CPU. On this VM that is ~14 µs per stop (a
//! `faccessat2` loop: 0.7 µs native), and most of it is the two cross-CPU wake-ups of a halted
//! vCPU, not work. A seccomp *user notification* carries the syscall number, all six arguments
//! and the instruction pointer in one `ioctl`, and with `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`
//! (Linux 6.6) the caller and velo hand one CPU to each other like a synchronous call: ~5 µs.
//! `SECCOMP_USER_NOTIF_FLAG_CONTINUE` then lets the syscall run untouched.
//!
//! ptrace stays for what only it does: following fork, vfork, clone and exec, seeing exits,
//! killing the tree when velo dies (`PTRACE_O_EXITKILL`), and, with an event log, the exits of
//! syscalls (their return values), which a listener never sees.
//!
//! # What changes for the events
//!
//! - No return values (`ret: None`), as with ptrace without `Options::returns`.
//! - A returned path (`getcwd`, `readlink`, `readlinkat`) is read by velo from the same place
//!   while the caller is held at the call: `/proc/TID/cwd`, or the link the call names, with
//!   `/proc/self` and `/proc/thread-self` made the caller's. That is what the kernel is about to
//!   return, short of a race with a concurrent `rename` or `chdir` in another thread.
//! - Each notification is stamped from one counter shared with the ptrace thread, so that the
//!   two streams merge back into the order in which the processes did things.
//!
//! # Signals
//!
//! A caller held at a notification sleeps interruptibly until velo has *received* it (then
//! killably: `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`). A signal in that window of a few
//! microseconds restarts the call, transparently unless the program's handler lacks
//! `SA_RESTART`, where the call fails with `EINTR`, as a slow read would.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{read_link, read_paths, status_ids};
use crate::event::{Event, RawPath, Syscall};
use crate::syscalls::{self, Returns, Spec};

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` and its one flag (Linux 6.6; not in every libc crate).
const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::Ioctl = 0x4008_2104;
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: libc::c_ulong = 1;

/// The listening end of the command's seccomp filter, taken from the child.
pub(super) struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Takes descriptor `fd` of process `pid` (`pidfd_getfd`) and asks for synchronous
    /// wake-ups (when the kernel has them: without, each call is two ordinary wake-ups).
    pub(super) fn take(pid: i32, fd: i32) -> std::io::Result<Listener> {
        // SAFETY: plain syscalls on integers; a returned descriptor is owned from here on.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if pidfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        // SAFETY: as above.
        let taken = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if taken < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        let fd = unsafe { OwnedFd::from_raw_fd(taken as i32) };
        // SAFETY: an ioctl taking its flags by value.
        let sync = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                SECCOMP_IOCTL_NOTIF_SET_FLAGS,
                SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            )
        };
        if sync != 0 {
            tracing::debug!(
                "no synchronous seccomp wake-ups ({}): each file syscall costs two wake-ups",
                std::io::Error::last_os_error()
            );
        }
        Ok(Listener { fd })
    }

    /// Serves notifications until no process is left under the filter (the listener reports
    /// `POLLHUP`), or `done` is set and nothing came for a while (kernels before 5.8 never
    /// report `POLLHUP`). Every call is let through; what was seen comes back stamped from
    /// `seq`.
    pub(super) fn serve(&self, seq: &AtomicU64, done: &AtomicBool) -> Vec<(u64, Event)> {
        let fd = self.fd.as_raw_fd();
        let mut seen = Seen::default();
        let mut out = Vec::new();
        let mut held = std::time::Duration::ZERO;
        let mut count = 0u64;
        loop {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
            if ready < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            if ready == 0 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                continue;
            }
            if pfd.revents & libc::POLLIN == 0 {
                break; // POLLHUP: every process under the filter is gone.
            }
            // SAFETY: the kernel wants the struct zeroed; it is plain data.
            let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: RECV fills `n`.
            if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) } != 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    // The caller was killed between the wake-up and the receive.
                    Some(libc::ENOENT | libc::EINTR) => continue,
                    _ => break,
                }
            }
            let t0 = std::time::Instant::now();
            let event = seen.observe(&n);
            held += t0.elapsed();
            count += 1;
            let stamp = seq.fetch_add(1, Ordering::SeqCst);
            let resp = libc::seccomp_notif_resp {
                id: n.id,
                val: 0,
                error: 0,
                flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            };
            // SAFETY: SEND reads `resp`. ENOENT: the caller was killed meanwhile.
            unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
            if let Some(event) = event {
                out.push((stamp, Event::Syscall(event)));
            }
        }
        tracing::debug!(
            calls = count,
            ?held,
            "served the seccomp listener (held: callers waiting on velo)"
        );
        out
    }
}

/// What the listener knows of the callers; it hears of forks and execs only through them.
#[derive(Default)]
struct Seen {
    /// Thread id → (process id, parent process id), from `/proc/TID/status`.
    threads: HashMap<i32, (i32, i32)>,
    processes: HashMap<i32, Process>,
}

/// A process as the listener knows it. Unlike the ptrace thread it never reads
/// `/proc/PID/maps` (~100 µs for a rustc): the shim's beacon says where the shim is, as for
/// the eBPF backend, and a fork inherits it.
struct Process {
    exe: String,
    /// The shim's executable code, once its beacon was seen.
    shim_text: Option<Vec<(u64, u64)>>,
    /// It called `execve`: its program (and so its exe and shim) may be another now.
    execed: bool,
}

impl Seen {
    /// The event for notification `n`, read while its caller is held; `None` for the shim's
    /// beacon and for numbers the table does not know.
    fn observe(&mut self, n: &libc::seccomp_notif) -> Option<Syscall> {
        let spec = syscalls::lookup(i64::from(n.data.nr))?;
        let tid = n.pid as i32;
        let args = n.data.args;
        let (pid, ppid) = *self.threads.entry(tid).or_insert_with(|| status_ids(tid));
        let (paths, resolved) = read_paths(spec, &args, pid, tid);
        if !self.processes.contains_key(&pid) {
            // First sight: a fork's copy of its parent (an exec is a notified call, so it
            // would be this one), with the parent's shim; its exe from /proc all the same.
            let shim_text = self.processes.get(&ppid).and_then(|p| p.shim_text.clone());
            let exe = crate::proc::exe(pid).unwrap_or_default();
            self.processes.insert(
                pid,
                Process {
                    exe,
                    shim_text,
                    execed: false,
                },
            );
        }
        let process = self.processes.get_mut(&pid).expect("inserted above");
        if std::mem::take(&mut process.execed) {
            // The shim, if the new program has it, announces itself with its beacon.
            process.exe = crate::proc::exe(pid).unwrap_or_default();
            process.shim_text = None;
        }
        if let Some(range) = paths.first().and_then(|p| crate::event::shim_beacon(p)) {
            process.shim_text = Some(vec![range]);
            return None;
        }
        let returned = predict(spec, &args, pid, tid, resolved.first().map(|p| &p[..]));
        let text = process.shim_text.as_deref().unwrap_or_default();
        let rip = n.data.instruction_pointer;
        let event = Syscall {
            pid,
            tid,
            ppid,
            exe: process.exe.clone(),
            syscall: spec.name.to_owned(),
            paths,
            resolved,
            ret: None,
            returned,
            writes: syscalls::opens_for_writing(spec.name, &args),
            shim: !text.is_empty(),
            via_shim: text.iter().any(|(lo, hi)| rip >= *lo && rip < *hi),
        };
        process.execed = matches!(spec.name, "execve" | "execveat");
        Some(event)
    }
}

/// The path a `getcwd` or `readlink(at)` is about to return (see the module doc), cut to the
/// caller's buffer size; `None` when the call will fail.
fn predict(
    spec: &Spec,
    args: &[u64; 6],
    pid: i32,
    tid: i32,
    path: Option<&[u8]>,
) -> Option<RawPath> {
    // The buffer size follows the buffer in all three calls.
    let (mut target, size) = match spec.returns {
        Returns::Nothing => return None,
        Returns::CString(buf) => {
            let cwd = read_link(format!("/proc/{tid}/cwd"));
            // getcwd fails with ERANGE rather than cut the path.
            if cwd.is_empty() || cwd.len() >= args[buf + 1] as usize {
                return None;
            }
            return Some(cwd);
        }
        Returns::Counted(buf) => {
            let target = read_link(own_proc(path?, pid, tid));
            if target.is_empty() {
                return None; // not a link (EINVAL) or gone: the call fails
            }
            (target, args[buf + 1] as usize)
        }
    };
    if size == 0 {
        return None;
    }
    // readlink cuts bytes, not characters.
    target.0.truncate(size);
    Some(target)
}

/// `path` with `/proc/self` and `/proc/thread-self` made the caller's (for velo they name
/// velo).
fn own_proc(path: &[u8], pid: i32, tid: i32) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let under = |prefix: &[u8]| {
        path.strip_prefix(prefix)
            .filter(|rest| rest.is_empty() || rest.starts_with(b"/"))
    };
    let mut out = Vec::new();
    if let Some(rest) = under(b"/proc/self") {
        out.extend_from_slice(format!("/proc/{pid}").as_bytes());
        out.extend_from_slice(rest);
    } else if let Some(rest) = under(b"/proc/thread-self") {
        out.extend_from_slice(format!("/proc/{pid}/task/{tid}").as_bytes());
        out.extend_from_slice(rest);
    } else {
        out.extend_from_slice(path);
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_and_thread_self_become_the_callers() {
        assert_eq!(own_proc(b"/proc/self/exe", 7, 9), "/proc/7/exe");
        assert_eq!(own_proc(b"/proc/self", 7, 9), "/proc/7");
        assert_eq!(
            own_proc(b"/proc/thread-self/cwd", 7, 9),
            "/proc/7/task/9/cwd"
        );
        assert_eq!(own_proc(b"/proc/selfish", 7, 9), "/proc/selfish");
        assert_eq!(own_proc(b"/tmp/x", 7, 9), "/tmp/x");
    }
}
