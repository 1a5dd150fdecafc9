//! `velo trace [--backend …] [--inception] [--root DIR] [--events FILE] [--json] -- CMD ARGS…`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{Backend, output};

/// Watch a command's file syscalls from outside the shim, and report what the shim missed.
///
/// Findings: *uncaught* (a canonical path reached the kernel untranslated: a raw syscall, a
/// static binary, a libc-internal call), *leak* (a physical path was returned to the program:
/// getcwd or readlink results no shim hook translated), *unshimmed* (a process touched project
/// files without the shim: use link-farm mode for it). Exit status: the command's.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
velo trace --inception -- cargo build\n  \
velo trace --inception --events build.jsonl --json -- make\n  \
velo trace -- ./tool           # without the projection: leaks of the physical path only\n  \
velo trace --program-costs -- find /usr   # what the eBPF programs cost, per run and per event")]
pub struct Args {
    #[arg(long, value_enum, default_value = "auto")]
    backend: Backend,
    /// Run the command under `velo inception` (the project at /vrift_workspace).
    #[arg(long)]
    inception: bool,
    /// The project root [default: the enclosing Cargo workspace, else git work tree, else the
    /// current directory]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Write every event as a JSON line to FILE.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// Print the findings as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// The eBPF backend's ring buffer, in MiB (a power of two). A record is ~150 bytes; a
    /// bigger buffer rides out longer stalls of the reader, and costs ~0.6 ms of start-up per MiB.
    #[arg(long, value_name = "MIB", default_value_t = velo_tracer::ebpf::DEFAULT_RING_MIB, value_parser = ring_mib)]
    buffer: u32,
    /// eBPF: print what each kernel program cost (runs, time, ns per run, from the kernel's
    /// own BPF statistics) on stderr, and in the --json output as `programs`.
    #[arg(long)]
    program_costs: bool,
    #[command(flatten)]
    program: super::Program,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let run = velo::trace::traced(&args.request(), &|line| eprintln!("velo trace: {line}"))?;
    if args.json {
        output::json(&run.findings)?;
    } else {
        eprintln!("velo trace {}", velo::trace::summary(&run.findings));
        print!("{}", velo::trace::text(&run.findings));
    }
    if args.program_costs && run.findings.programs.is_empty() {
        eprintln!(
            "velo trace: --program-costs: the {} backend runs no kernel programs; only --backend ebpf has costs to show",
            run.findings.backend
        );
    } else if args.program_costs && !args.json {
        eprint!("{}", velo::trace::program_costs(&run.findings));
    }
    Ok(velo::trace::exit_code(run.outcome))
}

/// `--buffer`: a power of two from 1 to 1024 MiB (the kernel wants a power-of-two ring).
fn ring_mib(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && n <= 1024 => Ok(n),
        _ => Err(format!("{s:?} is not a power of two from 1 to 1024 (MiB)")),
    }
}

impl Args {
    fn request(&self) -> velo::trace::Request {
        velo::trace::Request {
            backend: self.backend.choice(),
            inception: self.inception,
            root: self.root.clone(),
            events: self.events.clone(),
            buffer_mib: self.buffer,
            command: self.program.command.clone(),
            keep_all: false,
            program_costs: self.program_costs,
        }
    }
}
