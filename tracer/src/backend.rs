//! One interface to every backend: [`Backend`] names one, [`trace`] runs a command under it.
//!
//! | backend  | where            | who      | how                                                |
//! |----------|------------------|----------|----------------------------------------------------|
//! | `ebpf`   | Linux x86_64     | root     | kernel programs; the command never stops ([`crate::ebpf`]) |
//! | `ptrace` | Linux x86_64     | any user | a seccomp filter stops only file syscalls ([`crate::ptrace`]) |
//! | `dtrace` | macOS            | root     | a D script, its output parsed ([`crate::dtrace`]); not run by CI |

use crate::command::{Command, Outcome};
use crate::event::Event;

/// A tracing backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Ebpf,
    Ptrace,
    Dtrace,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ebpf => "ebpf",
            Backend::Ptrace => "ptrace",
            Backend::Dtrace => "dtrace",
        }
    }

    /// Why this backend cannot run here and now, or `None` if it can.
    pub fn unavailable(self) -> Option<String> {
        match self {
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            Backend::Ebpf => crate::ebpf::unavailable(),
            #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
            Backend::Ptrace => None,
            #[cfg(target_os = "macos")]
            Backend::Dtrace => None,
            #[allow(
                unreachable_patterns,
                reason = "which arms remain depends on the platform"
            )]
            other => Some(format!(
                "the {} backend does not run on this platform",
                other.name()
            )),
        }
    }

    /// The best backend here: eBPF where it can load, else the platform's fallback; with the
    /// reason eBPF was passed over, if it was.
    pub fn best() -> (Backend, Option<String>) {
        if cfg!(target_os = "macos") {
            return (Backend::Dtrace, None);
        }
        match Backend::Ebpf.unavailable() {
            None => (Backend::Ebpf, None),
            Some(why) => (Backend::Ptrace, Some(why)),
        }
    }
}

/// What every backend is told.
#[derive(Clone, Debug)]
pub struct Options {
    /// eBPF: the ring buffer's size, a power of two.
    pub ring_bytes: u32,
    /// ptrace: the shim's file name, to find it in `/proc/PID/maps`.
    pub shim_file_name: String,
    /// ptrace: stop at every syscall's exit for its return value (for an event log).
    pub returns: bool,
    /// eBPF: have the kernel count each program's runs and run time (`BPF_ENABLE_STATS`,
    /// ~20 ns per run while it is on), for [`Traced::programs`].
    pub program_costs: bool,
}

/// What one kernel program cost during a traced run, by the kernel's own count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProgramCost {
    pub name: String,
    /// Times it ran, on every CPU: for the syscall hooks, every syscall of the machine.
    pub runs: u64,
    /// Nanoseconds it ran in all.
    pub ns: u64,
}

/// How a traced command ended, and what was lost.
#[derive(Debug)]
pub struct Traced {
    pub outcome: Outcome,
    /// Events the kernel could not queue (eBPF's ring buffer was full).
    pub dropped: u64,
    /// Each kernel program's cost, when [`Options::program_costs`] asked for it.
    pub programs: Vec<ProgramCost>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[error(transparent)]
    Ebpf(#[from] crate::ebpf::Error),
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    #[error(transparent)]
    Ptrace(#[from] crate::ptrace::Error),
    #[error("dtrace: {0}")]
    Dtrace(std::io::Error),
    #[error("{0}")]
    Unavailable(String),
}

/// Runs `cmd` under `backend`, handing each event to `sink`; `idle` is called when the eBPF
/// reader has nothing to read (return `true` if it did work).
pub fn trace(
    backend: Backend,
    cmd: &Command,
    opts: &Options,
    sink: &mut dyn FnMut(Event),
    idle: &mut dyn FnMut() -> bool,
) -> Result<Traced, Error> {
    let _ = (&opts, &idle);
    match backend {
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        Backend::Ebpf => {
            let traced = crate::ebpf::trace(cmd, opts.ring_bytes, opts.program_costs, sink, idle)?;
            Ok(Traced {
                outcome: traced.outcome,
                dropped: traced.dropped,
                programs: traced.programs,
            })
        }
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        Backend::Ptrace => {
            let outcome = crate::ptrace::trace(
                cmd,
                &crate::ptrace::Options {
                    shim_file_name: opts.shim_file_name.clone(),
                    returns: opts.returns,
                },
                sink,
            )?;
            Ok(Traced {
                outcome,
                dropped: 0,
                programs: Vec::new(),
            })
        }
        #[cfg(target_os = "macos")]
        Backend::Dtrace => Ok(Traced {
            outcome: crate::dtrace::trace(cmd, sink).map_err(Error::Dtrace)?,
            dropped: 0,
            programs: Vec::new(),
        }),
        #[allow(
            unreachable_patterns,
            reason = "which arms remain depends on the platform"
        )]
        other => {
            let _ = (cmd, sink);
            Err(Error::Unavailable(other.unavailable().unwrap_or_else(
                || format!("{} is not available", other.name()),
            )))
        }
    }
}
