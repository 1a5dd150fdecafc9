//! The command a backend runs, and how it ended: shared by every backend.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// What to run.
#[derive(Debug, Clone)]
pub struct Command {
    /// The program, resolved (absolute or relative to `cwd`).
    pub program: PathBuf,
    /// The whole argv, `argv[0]` included.
    pub args: Vec<OsString>,
    /// The whole environment.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
}

/// `program` found the way `execvp` finds it: as given when it has a slash, else in `PATH`.
pub fn find_program(program: &std::ffi::OsStr, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path = path
        .map(|p| p.to_owned())
        .unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
}

/// A [`Command`] as C strings, prepared before `fork`: the child may only make raw calls
/// (allocating after `fork` in a threaded parent can deadlock).
pub struct Exec {
    program: std::ffi::CString,
    cwd: std::ffi::CString,
    // The pointer arrays point into these strings' heap buffers, which never move.
    _strings: Vec<std::ffi::CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

/// A program name, argument, variable or directory contains a NUL byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the command contains a NUL byte")]
pub struct Nul;

impl Exec {
    pub fn new(cmd: &Command) -> Result<Exec, Nul> {
        let c = |b: &[u8]| std::ffi::CString::new(b).map_err(|_| Nul);
        let args: Vec<std::ffi::CString> = cmd
            .args
            .iter()
            .map(|a| c(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let vars: Vec<std::ffi::CString> = cmd
            .env
            .iter()
            .map(|(k, v)| {
                let mut e = k.clone();
                e.push("=");
                e.push(v);
                c(e.as_bytes())
            })
            .collect::<Result<_, _>>()?;
        let terminated = |list: &[std::ffi::CString]| {
            list.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect::<Vec<_>>()
        };
        let (argv, envp) = (terminated(&args), terminated(&vars));
        Ok(Exec {
            program: c(cmd.program.as_os_str().as_bytes())?,
            cwd: c(cmd.cwd.as_os_str().as_bytes())?,
            _strings: args.into_iter().chain(vars).collect(),
            argv,
            envp,
        })
    }

    /// In a forked child: change to the directory and exec, or `_exit(127)`.
    ///
    /// # Safety
    /// Call only in a child after `fork`; it never returns.
    pub unsafe fn exec(&self) -> ! {
        // SAFETY: raw calls on strings prepared before the fork.
        unsafe {
            if libc::chdir(self.cwd.as_ptr()) == 0 {
                libc::execve(
                    self.program.as_ptr(),
                    self.argv.as_ptr(),
                    self.envp.as_ptr(),
                );
            }
            libc::_exit(127)
        }
    }
}

/// A close-on-exec pipe: (read end, write end). Both tracers hold a forked child at a pipe
/// until it may exec.
pub(crate) fn cloexec_pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors, owned from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}
