//! `velo inception [--root DIR] [--physical-paths] [-- CMD ARGS…]`

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use velo::inception::{self, Projection, command};

use velo::child;

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
    let (projection, cwd) = Projection::for_cwd(inception::Setup {
        root: args.root.as_deref(),
        no_cargo_home: args.no_cargo_home,
        fall_back_to_cwd: false,
    })?;
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

    let base = match args.command.split_first() {
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest);
            cmd
        }
        None => command::shell(&projection)?,
    };
    let mut cmd = command::projected(base, &projection, &shim, &start);
    let program = cmd.get_program().to_owned();

    if !args.physical_paths {
        // Become the command: its exit status and signals are ours with no forwarding at all.
        let err = cmd.exec();
        return Err(err).with_context(|| format!("cannot run {}", program.to_string_lossy()));
    }
    let status = command::run_rewriting(cmd, &projection, &program)?;
    Ok(child::exit_like(status))
}
