//! What every Linux backend reads of a traced process from `/proc`, and how a path a call
//! passed is made absolute: the same for ptrace, its seccomp listener and eBPF.

use std::os::unix::ffi::OsStringExt;

use crate::event::RawPath;

/// The target of a `/proc` link (`/proc/PID/exe`, `/proc/PID/fd/N`, `/proc/TID/cwd`), as the
/// kernel's bytes; `None` when the process or the descriptor is gone.
pub fn link(path: impl AsRef<std::path::Path>) -> Option<RawPath> {
    std::fs::read_link(path)
        .ok()
        .map(|p| RawPath(p.into_os_string().into_vec()))
}

/// The path behind descriptor `fd` of process `pid`.
pub fn fd(pid: i32, fd: i32) -> Option<RawPath> {
    link(format!("/proc/{pid}/fd/{fd}"))
}

/// The working directory of thread `tid`.
pub fn cwd(tid: i32) -> Option<RawPath> {
    link(format!("/proc/{tid}/cwd"))
}

/// The executable of process `pid`, for people (it names a finding's process).
pub fn exe(pid: i32) -> Option<String> {
    link(format!("/proc/{pid}/exe")).map(|p| p.lossy().into_owned())
}

/// `path` made absolute against `base` (the dirfd's path or the working directory): as is when
/// absolute, `base` for an empty path (`AT_EMPTY_PATH`), empty when the base is unknown. Joined
/// as bytes: no re-validation (`Path::join(…).display()` showed as a sixth of the eBPF reader's
/// time on a stat-bound run), and a non-UTF-8 name stays what it was.
pub fn absolute(path: &[u8], base: impl FnOnce() -> Option<RawPath>) -> RawPath {
    if path.starts_with(b"/") {
        return RawPath::from(path);
    }
    join(base().as_deref(), path)
}

/// `path` (relative) joined to `base` in one allocation of the final size; `base` itself for
/// an empty path; empty when the base is unknown.
pub fn join(base: Option<&[u8]>, path: &[u8]) -> RawPath {
    let Some(base) = base else {
        return RawPath::default();
    };
    if path.is_empty() {
        return RawPath::from(base);
    }
    let mut joined = Vec::with_capacity(base.len() + 1 + path.len());
    joined.extend_from_slice(base);
    if !joined.ends_with(b"/") {
        joined.push(b'/');
    }
    joined.extend_from_slice(path);
    RawPath(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_their_base_and_absolute_ones_stay() {
        assert_eq!(absolute(b"/etc/x", || None), "/etc/x");
        assert_eq!(absolute(b"src/a.rs", || Some("/w".into())), "/w/src/a.rs");
        assert_eq!(absolute(b"a", || Some("/".into())), "/a");
        assert_eq!(absolute(b"", || Some("/w".into())), "/w");
        assert_eq!(absolute(b"a", || None), "");
        assert_eq!(
            absolute(b"\xff.rs", || Some(RawPath::from(&b"/caf\xe9"[..]))),
            RawPath::from(&b"/caf\xe9/\xff.rs"[..])
        );
        assert_eq!(
            cwd(std::process::id() as i32).map(|c| c.starts_with(b"/")),
            Some(true)
        );
    }
}
