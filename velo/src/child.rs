//! Running a child command the way `env`, `timeout` and `bwrap` do: its exit status becomes
//! ours, its death by a signal becomes ours (the same signal is re-raised), and while it runs,
//! terminal signals reach it directly (we ignore SIGINT/SIGQUIT, which the terminal sends to the
//! whole foreground group) while SIGTERM and SIGHUP sent to velo are forwarded to it.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

fn set_handler(signal: libc::c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: installing a handler that only calls async-signal-safe functions, or SIG_IGN/DFL.
    unsafe { libc::signal(signal, handler) }
}

/// Signal dispositions while a child runs; restored on drop.
pub struct Forwarding {
    saved: Vec<(libc::c_int, libc::sighandler_t)>,
}

impl Forwarding {
    pub fn start(pid: i32) -> Forwarding {
        CHILD.store(pid, Ordering::Relaxed);
        let handler = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
        let saved = [
            (libc::SIGINT, libc::SIG_IGN),
            (libc::SIGQUIT, libc::SIG_IGN),
            (libc::SIGTERM, handler),
            (libc::SIGHUP, handler),
        ]
        .into_iter()
        .map(|(sig, h)| (sig, set_handler(sig, h)))
        .collect();
        Forwarding { saved }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for &(sig, h) in &self.saved {
            set_handler(sig, h);
        }
        CHILD.store(0, Ordering::Relaxed);
    }
}

/// Our exit to match the child's: the same code, or death by the same signal.
pub fn exit_like(status: ExitStatus) -> ExitCode {
    if let Some(signal) = status.signal() {
        set_handler(signal, libc::SIG_DFL);
        // SAFETY: unblocking and raising a signal whose default action ends the process.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signal);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(signal);
        }
        // Signals whose default is not to terminate: report them as a shell would.
        return ExitCode::from(128u8.wrapping_add(signal as u8));
    }
    ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8)
}
