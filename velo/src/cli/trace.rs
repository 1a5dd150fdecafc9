//! `velo trace [--backend …] [--inception] [--root DIR] [--events FILE] [--json] -- CMD ARGS…`

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use velo::inception::{self, Projection};
use velo_tracer::analysis::{self, Findings, Roots};
use velo_tracer::event::Event;

use super::output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Backend {
    /// The best available here, said on stderr with the reason.
    Auto,
    /// Kernel eBPF programs (Linux, root).
    Ebpf,
    /// ptrace with a seccomp filter (Linux, any user).
    Ptrace,
    /// dtrace (macOS).
    Dtrace,
}

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
velo trace -- ./tool           # without the projection: leaks of the physical path only")]
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
    /// The command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let run = traced(&args)?;
    if args.json {
        output::json(&run.findings)?;
    } else {
        print_findings(&run.findings);
    }
    Ok(exit_code(run.outcome))
}

/// The exit status velo gives for the command's.
pub(super) fn exit_code(outcome: velo_tracer::command::Outcome) -> ExitCode {
    match outcome {
        velo_tracer::command::Outcome::Exited(code) => ExitCode::from(code as u8),
        velo_tracer::command::Outcome::Signaled(sig) => ExitCode::from(128 + sig as u8),
    }
}

/// `--buffer`: a power of two from 1 to 1024 MiB (the kernel wants a power-of-two ring).
fn ring_mib(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && n <= 1024 => Ok(n),
        _ => Err(format!("{s:?} is not a power of two from 1 to 1024 (MiB)")),
    }
}

impl Args {
    /// `velo trace --backend BACKEND --inception [--root ROOT] -- COMMAND`, for `velo audit`.
    pub(super) fn projected(
        backend: Backend,
        root: Option<PathBuf>,
        command: Vec<OsString>,
    ) -> Args {
        Args {
            backend,
            inception: true,
            root,
            events: None,
            json: false,
            buffer: velo_tracer::ebpf::DEFAULT_RING_MIB,
            command,
        }
    }
}

/// A traced run: what the command did and what the analysis found.
pub(super) struct Run {
    pub outcome: velo_tracer::command::Outcome,
    pub findings: Findings,
    pub events: Vec<Event>,
    pub roots: Roots,
    pub projection: Projection,
    /// The shim the command ran with, under `--inception`.
    pub shim: Option<PathBuf>,
}

/// Runs the command traced and analyzes what was recorded.
pub(super) fn traced(args: &Args) -> Result<Run> {
    let ebpf = matches!(args.backend, Backend::Auto | Backend::Ebpf)
        .then(velo_tracer::ebpf::unavailable)
        .map(|why| match why {
            None => Ok(()),
            Some(why) => Err(why),
        });
    let backend = match (args.backend, ebpf) {
        (Backend::Auto, Some(Ok(()))) => {
            eprintln!("velo trace: eBPF backend");
            "ebpf"
        }
        (Backend::Auto, Some(Err(why))) => {
            eprintln!("velo trace: ptrace backend ({why})");
            "ptrace"
        }
        (Backend::Ebpf, Some(Err(why))) => {
            bail!("--backend ebpf: {why}; --backend ptrace works for any user")
        }
        (Backend::Ebpf, _) => "ebpf",
        (Backend::Dtrace, _) => {
            bail!("the dtrace backend runs on macOS only; use --backend ptrace")
        }
        _ => "ptrace",
    };

    let cwd = inception::unproject(&inception::current_dir()?);
    let root = inception::find_root(args.root.as_deref(), &cwd)
        .map(|r| inception::unproject(&r))
        .or_else(|e| match &args.root {
            Some(_) => Err(e),
            None => Ok(cwd.clone()),
        })?;
    let mut projection = Projection::new(root)?;
    if let Err(why) = projection.add_cargo_home() {
        tracing::info!("CARGO_HOME is not projected: {why}");
    }
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let mut shim_used = None;
    if args.inception {
        let shim = inception::locate_shim()?;
        shim_used = Some(shim.clone());
        let pwd = projection.to_canonical(&cwd).unwrap_or_else(|| cwd.clone());
        let preload = std::env::var_os(velo_intercept::env::LD_PRELOAD.name());
        let set = projection.environment(&shim, preload.as_deref(), &pwd);
        for (k, v) in set {
            env.retain(|(key, _)| *key != k);
            env.push((k, v));
        }
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let program = velo_tracer::command::find_program(&args.command[0], path.as_deref())
        .with_context(|| {
            format!(
                "cannot run {}: not found in PATH",
                args.command[0].to_string_lossy()
            )
        })?;
    // Under --inception a canonical path exists only through the shim, so only then may a
    // path the host lacks be right.
    if !args.inception && !cwd.join(&program).exists() {
        bail!(
            "cannot run {}: no such file",
            args.command[0].to_string_lossy()
        );
    }

    let mut sink_file = match &args.events {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--events {}", p.display()))?,
        )),
        None => None,
    };
    let command = velo_tracer::command::Command {
        program,
        args: args.command.clone(),
        env,
        cwd: cwd.clone(),
    };
    // Events are kept, analyzed when the reader is idle, and written afterwards: a reader
    // that formats JSON while the kernel fills the ring buffer falls behind on syscall-bound
    // workloads and drops events.
    let roots = roots(&projection);
    let recorder = std::cell::RefCell::new(analysis::Recorder::new(
        &roots,
        velo_intercept::table::Platform::Linux,
    ));
    let mut sink = |e: Event| recorder.borrow_mut().push(e);
    let (outcome, dropped) = if backend == "ebpf" {
        let mut idle = || recorder.borrow_mut().catch_up(4096);
        let traced = velo_tracer::ebpf::trace(&command, args.buffer << 20, &mut sink, &mut idle)?;
        (traced.outcome, traced.dropped)
    } else {
        let outcome = velo_tracer::ptrace::trace(
            &command,
            &velo_tracer::ptrace::Options {
                shim_file_name: velo_intercept::env::SHIM_FILE_NAME.into(),
                returns: args.events.is_some(),
            },
            &mut sink,
        )?;
        (outcome, 0)
    };
    let (events, findings) = recorder.into_inner().finish();
    if let Some(f) = sink_file.as_mut() {
        for e in &events {
            serde_json::to_writer(&mut *f, e)
                .map_err(std::io::Error::other)
                .and_then(|_| f.write_all(b"\n"))
                .context("writing the events file")?;
        }
        f.flush().context("writing the events file")?;
    }
    let mut findings = findings;
    tracing::debug!(events = events.len(), "analyzed the events");
    findings.backend = backend.to_owned();
    if !args.inception && std::env::var_os(velo_intercept::env::PHYSICAL_ROOT.name()).is_none() {
        // Without a projection no process is meant to have the shim.
        findings.counts.unshimmed = 0;
        findings.unshimmed.clear();
    }
    findings.counts.dropped = dropped;
    if dropped > 0 {
        eprintln!(
            "velo trace: warning: {dropped} events were dropped (the ring buffer was full): findings may be incomplete; a larger --buffer (now {} MiB) keeps them",
            args.buffer
        );
    }
    Ok(Run {
        outcome,
        findings,
        events,
        roots,
        projection,
        shim: shim_used,
    })
}

/// Every spelling of every root: canonical ones, and the physical ones as given and resolved.
fn roots(projection: &Projection) -> Roots {
    let mut roots = Roots::default();
    let mut add_physical = |p: &std::path::Path| {
        roots.physical.push(p.display().to_string());
        if let Ok(real) = std::fs::canonicalize(p)
            && real != p
        {
            roots.physical.push(real.display().to_string());
        }
    };
    add_physical(&projection.physical);
    for (_, physical) in &projection.extra {
        add_physical(physical);
    }
    roots
        .canonical
        .push(projection.canonical.display().to_string());
    for (canonical, _) in &projection.extra {
        roots.canonical.push(canonical.display().to_string());
    }
    roots
}

fn print_findings(f: &Findings) {
    let c = &f.counts;
    eprintln!(
        "velo trace ({}): {} events, {} file syscalls in {} processes, {} dropped: {} uncaught, {} leaked, {} unshimmed",
        f.backend, c.events, c.syscalls, c.processes, c.dropped, c.uncaught, c.leaks, c.unshimmed
    );
    if f.is_clean() {
        println!("no findings: every path under the roots went through the shim");
        return;
    }
    let mut table = output::table(["finding", "count", "process", "syscall", "example", "fix"]);
    for u in &f.uncaught {
        let fix = if u.entry_points.is_empty() {
            "raw syscall, no libc entry point".to_owned()
        } else {
            let shown: Vec<&str> = u.entry_points.iter().take(5).map(String::as_str).collect();
            let more = u.entry_points.len().saturating_sub(shown.len());
            if more > 0 {
                format!("hooked: {}, +{more} more (--json)", shown.join(", "))
            } else {
                format!("hooked: {}", shown.join(", "))
            }
        };
        table.add_row([
            "uncaught".to_owned(),
            u.count.to_string(),
            u.exe.clone(),
            u.syscall.clone(),
            u.example_path.clone(),
            fix,
        ]);
    }
    for l in &f.leaks {
        let how = if l.syscall == "write" {
            "written into a file (count: files)"
        } else {
            "returned without a shim hook"
        };
        table.add_row([
            "leak".to_owned(),
            l.count.to_string(),
            l.exe.clone(),
            l.syscall.clone(),
            l.example_path.clone(),
            how.to_owned(),
        ]);
    }
    for u in &f.unshimmed {
        table.add_row([
            "unshimmed".to_owned(),
            u.processes.to_string(),
            u.exe.clone(),
            format!("{} syscalls", u.syscalls),
            u.example_path.clone(),
            "velo run --mode farm".to_owned(),
        ]);
    }
    println!("{table}");
}
