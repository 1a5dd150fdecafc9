//! `velo run [--manifest APP.velo] [--base BASE.velo]… [--isolate] -- CMD ARGS…`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use velo::run::execute;
use velo::run::plan::Asked;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Shim for dynamically linked programs and scripts, farm for static executables (the shim
    /// cannot reach them) and for --isolate.
    Auto,
    /// A link farm: hard links into the store, covered by a private overlay.
    Farm,
    /// Serve the tree from the store through the shim, with no directory on disk (Mode B).
    Shim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Net {
    /// The host's network.
    Host,
    /// A private network namespace with only a loopback device, down.
    None,
}

/// Run a command on a manifest's tree.
///
/// The layers (--base manifests in order, then --manifest) are merged path by path, later layers
/// winning: a directory over a directory merges, anything else replaces what was there (a file
/// over a directory hides everything beneath it). The tree is materialized as a link farm (hard
/// links into the store), covered by a private overlay so that writes never reach the store, and
/// the command runs in it. Its exit status, or death by a signal, is velo's.
///
/// With --isolate the command runs in a rootless sandbox: user, mount, PID, UTS and IPC
/// namespaces, the tree as its root filesystem, a private writable layer discarded at exit, a
/// fresh /proc, a minimal /dev and a tmpfs /tmp. You are root (uid 0) inside, nobody outside.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
velo run --manifest app.velo -- ./bin/server --port 8080\n  \
velo run --isolate --base busybox.velo --manifest app.velo -- /bin/sh -c 'id -u'\n  \
velo run --keep --manifest app.velo -- make test      # keep the farm and what the command wrote")]
pub struct Args {
    /// The manifest to run [default: the one *.velo file in the current directory]
    #[arg(long, value_name = "APP.velo")]
    manifest: Option<PathBuf>,

    /// A base layer under the manifest (repeatable, lowest first).
    #[arg(long = "base", value_name = "BASE.velo")]
    bases: Vec<PathBuf>,

    /// How to project the tree.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,

    /// Run in a rootless namespace sandbox with the tree as its root filesystem.
    #[arg(long)]
    isolate: bool,

    /// With --isolate: the network (none: a private namespace with no interfaces up).
    #[arg(long, value_enum, default_value_t = Net::Host, requires = "isolate")]
    net: Net,

    /// The working directory: inside the tree (relative to its root) [default: the tree's root]
    #[arg(long, value_name = "PATH")]
    workdir: Option<PathBuf>,

    /// Where the tree appears [default: <store>/farms/cache/<manifest id>, the farm's own path,
    /// so a command sees the same paths in every mode]. Shim mode serves any absolute path; farm
    /// mode needs --at to be the default.
    #[arg(long, value_name = "PATH")]
    at: Option<PathBuf>,

    /// Shim mode: writes under the tree go to DIR (created if missing) instead of failing with
    /// EROFS. A changed file is copied there first, new files are made there, and a deletion
    /// is recorded as DIR/.velo-deleted/PATH.deleted. DIR is kept; the store is never written.
    #[arg(long, value_name = "DIR")]
    upper: Option<PathBuf>,

    /// Keep the run's directory afterwards: what the command wrote, in upper/ (the path is
    /// printed). The farm itself always stays in the store's farm cache until `velo gc --run`.
    #[arg(long)]
    keep: bool,

    /// With --isolate: keep the writable layer in DIR (created if missing, must be empty).
    #[arg(long, value_name = "DIR", requires = "isolate")]
    keep_upper: Option<PathBuf>,

    /// Say which mode was chosen and why, and how the farm was made.
    #[arg(short, long)]
    verbose: bool,

    /// Fetch blobs the store lacks from this remote before running [default: $VELO_REMOTE, else
    /// [remote] url in ~/.config/velo/config.toml, if set]. Every blob is checked against its
    /// name first (docs/remote.md).
    #[arg(long, value_name = "URL")]
    remote: Option<String>,

    #[command(flatten)]
    program: super::Program,
}

pub fn run(store_dir: &Path, args: Args) -> Result<ExitCode> {
    let request = execute::Request {
        manifest: args.manifest,
        bases: args.bases,
        mode: match args.mode {
            Mode::Auto => Asked::Auto,
            Mode::Farm => Asked::Farm,
            Mode::Shim => Asked::Shim,
        },
        isolate: args.isolate,
        net_none: args.net == Net::None,
        workdir: args.workdir,
        at: args.at,
        upper: args.upper,
        keep: args.keep,
        keep_upper: args.keep_upper,
        verbose: args.verbose,
        remote: velo::remote::config::configured(args.remote.as_deref())?,
        command: args.program.command,
    };
    let status = execute::execute(store_dir, &request, &|line| eprintln!("velo: {line}"))?;
    Ok(velo::child::exit_like(status))
}
