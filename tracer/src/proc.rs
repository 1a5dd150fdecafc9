//! What every Linux backend reads of a traced process from `/proc`, and how a path a call
//! passed is made absolute: the same for ptrace, its seccomp listener and eBPF.

/// The target of a `/proc` link (`/proc/PID/exe`, `/proc/PID/fd/N`, `/proc/TID/cwd`); `None`
/// when the process or the descriptor is gone.
pub fn link(path: &str) -> Option<String> {
    std::fs::read_link(path).ok().map(|p| {
        String::from_utf8_lossy(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).into_owned()
    })
}

/// The path behind descriptor `fd` of process `pid`.
pub fn fd(pid: i32, fd: i32) -> Option<String> {
    link(&format!("/proc/{pid}/fd/{fd}"))
}

/// The working directory of thread `tid`.
pub fn cwd(tid: i32) -> Option<String> {
    link(&format!("/proc/{tid}/cwd"))
}

/// The executable of process `pid`.
pub fn exe(pid: i32) -> Option<String> {
    link(&format!("/proc/{pid}/exe"))
}

/// `path` made absolute against `base` (the dirfd's path or the working directory): as is when
/// absolute, `base` for an empty path (`AT_EMPTY_PATH`), empty when the base is unknown. Joined
/// as text: `Path::join(…).display()` re-validates the bytes, which showed as a sixth of the eBPF
/// reader's time on a stat-bound run.
pub fn absolute(path: &str, base: impl FnOnce() -> Option<String>) -> String {
    if path.starts_with('/') {
        return path.to_owned();
    }
    match base() {
        Some(base) if path.is_empty() => base,
        Some(mut base) => {
            if !base.ends_with('/') {
                base.push('/');
            }
            base.push_str(path);
            base
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_their_base_and_absolute_ones_stay() {
        assert_eq!(absolute("/etc/x", || None), "/etc/x");
        assert_eq!(absolute("src/a.rs", || Some("/w".into())), "/w/src/a.rs");
        assert_eq!(absolute("a", || Some("/".into())), "/a");
        assert_eq!(absolute("", || Some("/w".into())), "/w");
        assert_eq!(absolute("a", || None), "");
        assert_eq!(
            cwd(std::process::id() as i32)
                .as_deref()
                .map(|c| c.starts_with('/')),
            Some(true)
        );
    }
}
