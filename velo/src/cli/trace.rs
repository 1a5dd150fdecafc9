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
enum Backend {
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
    let backend = match args.backend {
        Backend::Ptrace => "ptrace",
        Backend::Auto => {
            eprintln!(
                "velo trace: ptrace backend (the eBPF backend is not built into this velo yet)"
            );
            "ptrace"
        }
        Backend::Ebpf => bail!(
            "the eBPF backend is not built into this velo yet; use --backend ptrace (any user) or --backend auto"
        ),
        Backend::Dtrace => bail!("the dtrace backend runs on macOS only; use --backend ptrace"),
    };
    let _ = backend;

    let cwd = inception::unproject(&inception::current_dir()?);
    let root = inception::find_root(args.root.as_deref(), &cwd)
        .map(|r| inception::unproject(&r))
        .or_else(|e| match args.root {
            Some(_) => Err(e),
            None => Ok(cwd.clone()),
        })?;
    let mut projection = Projection::new(root)?;
    if let Err(why) = projection.add_cargo_home() {
        tracing::info!("CARGO_HOME is not projected: {why}");
    }
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    if args.inception {
        let shim = inception::locate_shim()?;
        let pwd = projection.to_canonical(&cwd).unwrap_or_else(|| cwd.clone());
        let preload = std::env::var_os("LD_PRELOAD");
        let mut set = projection.environment(&shim, preload.as_deref(), &pwd);
        set.push(("VELO_INCEPTION".into(), projection.physical.clone().into()));
        for (k, v) in set {
            env.retain(|(key, _)| *key != k);
            env.push((k, v));
        }
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone());
    let program = velo_tracer::ptrace::find_program(&args.command[0], path.as_deref())
        .with_context(|| {
            format!(
                "cannot run {}: not found in PATH",
                args.command[0].to_string_lossy()
            )
        })?;

    let mut sink_file = match &args.events {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--events {}", p.display()))?,
        )),
        None => None,
    };
    let mut events = Vec::new();
    let mut write_error = None;
    let outcome = velo_tracer::ptrace::trace(
        &velo_tracer::ptrace::Command {
            program,
            args: args.command.clone(),
            env,
            cwd: cwd.clone(),
        },
        &velo_tracer::ptrace::Options {
            shim_file_name: velo_intercept::env::SHIM_FILE_NAME.into(),
            returns: args.events.is_some(),
        },
        &mut |e: Event| {
            if let Some(f) = sink_file.as_mut()
                && write_error.is_none()
                && let Err(err) = serde_json::to_writer(&mut *f, &e)
                    .map_err(std::io::Error::other)
                    .and_then(|_| f.write_all(b"\n"))
            {
                write_error = Some(err);
            }
            events.push(e);
        },
    )?;
    if let Some(f) = sink_file.as_mut() {
        f.flush().context("writing the events file")?;
    }
    if let Some(e) = write_error {
        return Err(e).context("writing the events file");
    }

    let roots = roots(&projection);
    let findings = analysis::analyze(&events, &roots, velo_intercept::table::Platform::Linux);
    if args.json {
        output::json(&findings)?;
    } else {
        print_findings(&findings);
    }
    Ok(match outcome {
        velo_tracer::ptrace::Outcome::Exited(code) => ExitCode::from(code as u8),
        velo_tracer::ptrace::Outcome::Signaled(sig) => ExitCode::from(128 + sig as u8),
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
        "velo trace: {} events, {} file syscalls in {} processes: {} uncaught, {} leaked, {} unshimmed",
        c.events, c.syscalls, c.processes, c.uncaught, c.leaks, c.unshimmed
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
        table.add_row([
            "leak".to_owned(),
            l.count.to_string(),
            l.exe.clone(),
            l.syscall.clone(),
            l.example_path.clone(),
            "returned without a shim hook".to_owned(),
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
