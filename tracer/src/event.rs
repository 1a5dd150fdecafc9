//! What a backend records. Every backend produces the same [`Event`]s, written as JSON lines by
//! `velo trace --events FILE`, so the analysis and any later tool read one format.

use serde::{Deserialize, Serialize};

/// One observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A file syscall, seen at its exit.
    Syscall(Syscall),
    /// `parent` created `pid` (fork, vfork, or a thread with `clone`).
    Fork { parent: i32, pid: i32, thread: bool },
    /// `pid` replaced its program.
    Exec { pid: i32, exe: String },
    /// `pid` ended: its exit code, or the signal that killed it.
    Exit {
        pid: i32,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syscall {
    /// The thread group (process) id.
    pub pid: i32,
    pub tid: i32,
    /// The parent process, when known.
    pub ppid: i32,
    /// The process's executable, as the kernel names it (`/proc/PID/exe`).
    pub exe: String,
    /// The syscall's name (`openat`, `newfstatat`, …), as in the interception table.
    pub syscall: String,
    /// Path arguments exactly as passed (may be relative).
    pub paths: Vec<String>,
    /// The same, resolved against the dirfd or working directory (absolute; empty when the
    /// descriptor could not be read).
    pub resolved: Vec<String>,
    /// The return value (`-errno` on failure); `None` when the backend was asked not to stop
    /// at the syscall's exit (findings only, no event log: see `ptrace::Options::returns`).
    pub ret: Option<i64>,
    /// A path the syscall returned (`getcwd`, `readlink`, `readlinkat`).
    pub returned: Option<String>,
    /// The call opened its path for writing (`O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`;
    /// `creat`): the analysis later looks for physical roots in what was written there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writes: bool,
    /// Whether the process had the shim (`libvelo_shim.so`) mapped.
    pub shim: bool,
    /// Whether the shim itself made the call (its instruction pointer is in the shim's code):
    /// the shim translates what it returns before the program sees it.
    pub via_shim: bool,
}

/// The shim announces itself to tracers with a `faccessat` of `/proc/velo-shim/<lo>-<hi>`: the
/// hex range of its executable code (see the shim's `kernel::beacon`). The range, when `path`
/// is such a beacon.
pub fn shim_beacon(path: &str) -> Option<(u64, u64)> {
    let (lo, hi) = path.strip_prefix("/proc/velo-shim/")?.split_once('-')?;
    let (lo, hi) = (
        u64::from_str_radix(lo, 16).ok()?,
        u64::from_str_radix(hi, 16).ok()?,
    );
    (lo < hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    #[test]
    fn beacons_parse() {
        assert_eq!(
            super::shim_beacon("/proc/velo-shim/7f00-7f80"),
            Some((0x7f00, 0x7f80))
        );
        assert_eq!(super::shim_beacon("/proc/velo-shim/7f80-7f00"), None);
        assert_eq!(super::shim_beacon("/proc/self/fd/3"), None);
    }
}
