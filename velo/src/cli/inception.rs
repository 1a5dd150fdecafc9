//! `velo inception [--root DIR] [--physical-paths] [-- CMD ARGS…]`

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use velo::inception::{self, Projection, rewrite::Rewriter};

use super::child;

/// Run a command with the project projected at /vrift_workspace.
///
/// Every process the command starts sees the project at the canonical root
/// (`$VRIFT_CANONICAL_ROOT`, default /vrift_workspace) while all I/O happens in the real
/// directory, so Cargo's dep-info, build-script output and debug info name the same paths in
/// every checkout and on every machine. Nothing is mounted: the mapping travels in the
/// environment (LD_PRELOAD=libvelo_shim.so, VRIFT_PHYSICAL_ROOT), so two terminals can project two
/// checkouts at once.
///
/// Without a command, opens $SHELL projected, with `(velo)` in the prompt.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
velo inception -- cargo build\n  \
velo inception --physical-paths -- cargo test\n  \
velo inception --root ../other-checkout")]
pub struct Args {
    /// The directory to project [default: the enclosing Cargo workspace, else git work tree]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,

    /// Rewrite canonical paths in the command's output to physical ones, so an editor can
    /// jump from a compiler error to the file. Artifacts keep canonical paths (nothing is added
    /// to RUSTFLAGS, which Cargo hashes into fingerprints). Runs the command on a pty when
    /// output is a terminal.
    #[arg(long)]
    physical_paths: bool,

    /// Leave CARGO_HOME where it is. By default it is presented at /cargo-home (and
    /// CARGO_HOME is set to that for the command), so registry sources have one path on every
    /// machine and a moved CARGO_HOME rebuilds nothing.
    #[arg(long)]
    no_cargo_home: bool,

    /// Say what is projected where.
    #[arg(short, long)]
    verbose: bool,

    /// The command and its arguments [default: $SHELL]
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let cwd = inception::unproject(&inception::current_dir()?);
    let root = inception::unproject(&inception::find_root(args.root.as_deref(), &cwd)?);
    let mut projection = Projection::new(root)?;
    if !args.no_cargo_home
        && let Err(why) = projection.add_cargo_home()
    {
        tracing::info!("CARGO_HOME is not projected: {why}");
    }
    let shim = inception::locate_shim()?;
    // Outside the root there is no canonical equivalent: stay where we are.
    let pwd = projection.to_canonical(&cwd).unwrap_or_else(|| cwd.clone());
    let start = cwd;
    if args.verbose {
        eprintln!(
            "velo: projecting {} at {} (shim {}), starting in {}",
            projection.physical.display(),
            projection.canonical.display(),
            shim.display(),
            pwd.display()
        );
        for (canonical, physical) in &projection.extra {
            eprintln!(
                "velo: projecting {} at {}",
                physical.display(),
                canonical.display()
            );
        }
    }

    let mut cmd = match args.command.split_first() {
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest);
            cmd
        }
        None => shell(&projection)?,
    };
    let preload = std::env::var_os(velo_intercept::env::LD_PRELOAD.name());
    cmd.current_dir(&start)
        .envs(projection.environment(&shim, preload.as_deref(), &pwd));
    let program = cmd.get_program().to_owned();

    if !args.physical_paths {
        // Become the command: its exit status and signals are ours with no forwarding at all.
        let err = cmd.exec();
        return Err(err).with_context(|| format!("cannot run {}", program.to_string_lossy()));
    }
    let status = run_rewriting(cmd, &projection, &program)?;
    Ok(child::exit_like(status))
}

/// `program args…` under `projection`, starting in the physical directory `start`.
pub(super) fn projected_command(
    projection: &Projection,
    shim: &std::path::Path,
    program: &OsStr,
    args: &[OsString],
    start: &std::path::Path,
) -> Command {
    let pwd = projection
        .to_canonical(start)
        .unwrap_or_else(|| start.to_owned());
    let mut cmd = Command::new(program);
    cmd.args(args);
    let preload = std::env::var_os(velo_intercept::env::LD_PRELOAD.name());
    cmd.current_dir(start)
        .envs(projection.environment(shim, preload.as_deref(), &pwd));
    cmd
}

/// `$SHELL` (else /bin/sh) with a prompt marker: bash gets an rc file (on a memfd, so nothing
/// is left on disk) that sources ~/.bashrc and prefixes PS1; other shells get `PS1` from the
/// environment.
fn shell(projection: &Projection) -> Result<Command> {
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
            return Err(std::io::Error::last_os_error())
                .context("memfd_create for the shell's rc file");
        }
        // SAFETY: a fresh descriptor we own; it stays open (not close-on-exec) for the shell.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.write_all(rc.as_bytes())?;
        cmd.arg("--rcfile").arg(format!("/dev/fd/{fd}")).arg("-i");
        std::mem::forget(file);
    } else {
        let ps1 = std::env::var("PS1").unwrap_or_else(|_| "$ ".into());
        cmd.env("PS1", format!("{marker}{ps1}"));
    }
    Ok(cmd)
}

/// Runs `cmd` with its stdout and stderr rewritten canonical → physical.
pub(super) fn run_rewriting(
    mut cmd: Command,
    projection: &Projection,
    program: &OsStr,
) -> Result<std::process::ExitStatus> {
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
    let to_stdio = |is_tty: bool| -> Result<Stdio> {
        Ok(match (&pty, is_tty) {
            (Some((_, slave)), true) => Stdio::from(slave.try_clone()?),
            _ => Stdio::piped(),
        })
    };
    cmd.stdout(to_stdio(out_tty)?).stderr(to_stdio(err_tty)?);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
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
    let status = child.wait().context("waiting for the command")?;
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
fn open_pty() -> Result<(OwnedFd, OwnedFd)> {
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
        bail!("cannot open a pty: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors from openpty.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: setting close-on-exec on our descriptor.
    unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok((master, slave))
}
