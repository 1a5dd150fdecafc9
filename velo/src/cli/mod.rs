//! Command-line definitions (clap) and dispatch. Each verb's rendering is in its own module;
//! the library never sees clap: options are converted to the library's plain structs here.

mod audit;
mod cache;
mod doctor;
mod gc;
mod inception;
mod ingest;
mod manifest;
mod output;
mod remote;
mod run;
mod scan;
mod status;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// velo: build and run environments that do not depend on where they live.
///
/// The store keeps every file's content once, named by its BLAKE3 hash. `velo ingest` turns a
/// directory into blobs in the store and a manifest (`.velo`) that names the whole tree by
/// content: the same tree gives the same manifest id wherever and whenever it is ingested.
/// `velo run` runs a command on a manifest's tree (a link farm into the store, or a rootless
/// sandbox with --isolate). `velo inception` runs a build with the project at /vrift_workspace,
/// so target/ holds the same paths in every checkout; `velo cache key` names a project by
/// content.
#[derive(Debug, Parser)]
#[command(name = "velo", version, about, long_about, propagate_version = true)]
#[command(
    after_help = "Logs: VELO_LOG=debug (or info, trace, velo::ingest=trace, …).\n\
Exit codes: 0 success, 1 a check found a problem, 2 error."
)]
struct Cli {
    /// The store directory [default: $VELO_STORE, else $XDG_DATA_HOME/velo, else ~/.local/share/velo]
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Ingest(ingest::Args),
    #[command(subcommand)]
    Manifest(manifest::Command),
    Status(status::Args),
    Gc(gc::Args),
    Inception(inception::Args),
    Run(run::Args),
    Doctor(doctor::Args),
    #[command(subcommand)]
    Cache(cache::Command),
    Cargo(cache::CargoArgs),
    Trace(trace::Args),
    Scan(scan::Args),
    Audit(audit::Args),
    Push(remote::PushArgs),
    Pull(remote::PullArgs),
}

pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    let store = || velo::store::Store::locate(cli.store.as_deref());
    match cli.command {
        Command::Ingest(args) => ingest::run(&store()?, args),
        Command::Manifest(cmd) => manifest::run(cmd),
        Command::Status(args) => status::run(&store()?, args),
        Command::Gc(args) => gc::run(&store()?, args),
        Command::Inception(args) => inception::run(args),
        Command::Run(args) => run::run(&store()?, args),
        Command::Doctor(args) => doctor::run(args),
        Command::Cache(cmd) => cache::run(&store()?, cmd),
        Command::Cargo(args) => cache::cargo(&store()?, args),
        Command::Trace(args) => trace::run(args),
        Command::Scan(args) => scan::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Push(args) => remote::push(&store()?, args),
        Command::Pull(args) => remote::pull(&store()?, args),
    }
}

/// `VELO_LOG` sets the filter (`warn` by default); logs go to stderr.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VELO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// `-- CMD ARGS…` of `velo run` and `velo trace`: the command to run.
#[derive(Debug, clap::Args)]
pub struct Program {
    /// The command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    pub command: Vec<std::ffi::OsString>,
}

/// `--backend` of `velo trace` and `velo audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The best available here, said on stderr with the reason.
    Auto,
    /// Kernel eBPF programs (Linux, root).
    Ebpf,
    /// ptrace with a seccomp filter (Linux, any user).
    Ptrace,
    /// dtrace (macOS).
    Dtrace,
}

impl Backend {
    fn choice(self) -> velo::trace::Choice {
        use velo_tracer::backend::Backend as B;
        match self {
            Backend::Auto => velo::trace::Choice::Auto,
            Backend::Ebpf => velo::trace::Choice::Only(B::Ebpf),
            Backend::Ptrace => velo::trace::Choice::Only(B::Ptrace),
            Backend::Dtrace => velo::trace::Choice::Only(B::Dtrace),
        }
    }
}
