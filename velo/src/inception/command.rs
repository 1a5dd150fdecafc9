//! The projected command: a program started under a [`Projection`], optionally with its
//! output rewritten canonical → physical (`--physical-paths`), and the projected shell.
//!
//! `velo inception`, `velo cargo` and `velo trace --inception` all start their command here, so
//! the environment that carries a projection is built in one place ([`Projection::environment`]).

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use super::Projection;
use super::rewrite::Rewriter;
use crate::child;

/// Errors starting or watching a projected command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("waiting for the command: {0}")]
    Wait(io::Error),
    #[error("cannot open a pty: {0}")]
    Pty(io::Error),
    #[error("memfd_create for the shell's rc file: {0}")]
    Shell(io::Error),
}

/// `program args…` under `projection`, starting in the physical directory `start`.
pub fn projected_command(
    projection: &Projection,
    shim: &std::path::Path,
    program: &OsStr,
    args: &[OsString],
    start: &std::path::Path,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    projected(cmd, projection, shim, start)
}

/// `cmd` given the projection's environment, starting in the physical directory `start` (its
/// canonical name is the `PWD` the command sees, when it has one).
pub fn projected(
    mut cmd: Command,
    projection: &Projection,
    shim: &std::path::Path,
    start: &std::path::Path,
) -> Command {
    let pwd = projection
        .to_canonical(start)
        .unwrap_or_else(|| start.to_owned());
    let preload = std::env::var_os(velo_intercept::env::LD_PRELOAD.name());
    cmd.current_dir(start)
        .envs(projection.environment(shim, preload.as_deref(), &pwd));
    cmd
}

/// `$SHELL` (else /bin/sh) with a prompt marker: bash gets an rc file (on a memfd, so nothing
/// is left on disk) that sources ~/.bashrc and prefixes PS1; other shells get `PS1` from the
/// environment.
pub fn shell(projection: &Projection) -> Result<Command, Error> {
    let shell = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    let marker = format!("(velo {}) ", projection.canonical.display());
    let mut cmd = Command::new(&shell);
    let is_bash = std::path::Path::new(&shell).file_name() == Some(OsStr::new("bash"));
    if is_bash {
        let rc = format!(
            "[ -f ~/.bashrc ] && . ~/.bashrc\nPS1='{}'\"$PS1\"\n",
            marker.replace('\'', "'\\''")
        );
        // SAFETY: memfd_create with a literal name; the descriptor is owned below.
        let fd = unsafe { libc::memfd_create(c"velo-inception-rc".as_ptr(), 0) };
        if fd < 0 {
            return Err(Error::Shell(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own; it stays open (not close-on-exec) for the shell.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.write_all(rc.as_bytes()).map_err(Error::Shell)?;
        cmd.arg("--rcfile").arg(format!("/dev/fd/{fd}")).arg("-i");
        std::mem::forget(file);
    } else {
        let ps1 = std::env::var("PS1").unwrap_or_else(|_| "$ ".into());
        cmd.env("PS1", format!("{marker}{ps1}"));
    }
    Ok(cmd)
}

/// Runs `cmd` with its stdout and stderr rewritten canonical → physical.
pub fn run_rewriting(
    mut cmd: Command,
    projection: &Projection,
    program: &OsStr,
) -> Result<std::process::ExitStatus, Error> {
    let tty = |fd| {
        // SAFETY: isatty on our own standard descriptors.
        unsafe { libc::isatty(fd) == 1 }
    };
    let (out_tty, err_tty) = (tty(1), tty(2));
    let pty = if out_tty || err_tty {
        Some(open_pty()?)
    } else {
        None
    };
    let to_stdio = |is_tty: bool| -> Result<Stdio, Error> {
        Ok(match (&pty, is_tty) {
            (Some((_, slave)), true) => Stdio::from(slave.try_clone().map_err(Error::Pty)?),
            _ => Stdio::piped(),
        })
    };
    cmd.stdout(to_stdio(out_tty)?).stderr(to_stdio(err_tty)?);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let forwarding = child::Forwarding::start(child.id() as i32);

    let from = projection.canonical.as_os_str().as_encoded_bytes().to_vec();
    let to = projection.physical.as_os_str().as_encoded_bytes().to_vec();
    let mut pumps = Vec::new();
    let mut pump = |source: Box<dyn Read + Send>, to_stderr: bool| {
        let rewriter = Rewriter::new(&from, &to);
        pumps.push(std::thread::spawn(move || {
            copy_rewriting(source, rewriter, to_stderr)
        }));
    };
    if let Some((master, slave)) = pty {
        drop(slave);
        // Both terminal streams share the pty; it goes to stdout when that is the terminal.
        pump(Box::new(std::fs::File::from(master)), !out_tty);
    }
    if let Some(out) = child.stdout.take() {
        pump(Box::new(out), false);
    }
    if let Some(err) = child.stderr.take() {
        pump(Box::new(err), true);
    }
    drop(cmd);
    let status = child.wait().map_err(Error::Wait)?;
    for p in pumps {
        let _ = p.join();
    }
    drop(forwarding);
    Ok(status)
}

fn copy_rewriting(mut source: Box<dyn Read + Send>, mut rewriter: Rewriter, to_stderr: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(buf.len() + 1024);
    let emit = |bytes: &[u8]| {
        let result = if to_stderr {
            let mut e = std::io::stderr().lock();
            e.write_all(bytes).and_then(|_| e.flush())
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(bytes).and_then(|_| o.flush())
        };
        result.is_ok()
    };
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A pty master reports EIO once every slave is closed: the end of the stream.
            Err(_) => break,
        };
        out.clear();
        rewriter.feed(&buf[..n], &mut out);
        if !emit(&out) {
            return;
        }
    }
    out.clear();
    rewriter.finish(&mut out);
    emit(&out);
}

/// A pty pair sized like our terminal, so the command formats its output for it.
fn open_pty() -> Result<(OwnedFd, OwnedFd), Error> {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: a zeroed winsize is valid; TIOCGWINSZ fills it from our terminal.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    for fd in [1, 2] {
        // SAFETY: as above.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0 {
            break;
        }
    }
    // SAFETY: openpty writes two descriptors we then own.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if r != 0 {
        return Err(Error::Pty(io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors from openpty.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: setting close-on-exec on our descriptor.
    unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok((master, slave))
}
