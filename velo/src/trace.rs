//! `velo trace`: run a command under a tracing backend, projected or not, and analyze what
//! reached the kernel against the shim's interception table.
//!
//! The backend is chosen here ([`Choice`]: the best available, or the one asked for, with a
//! clear error when it cannot run); the recording and the analysis are the tracer crate's
//! (`velo_tracer::backend::trace`, `velo_tracer::analysis::Recorder`). Events are kept and
//! analyzed while the reader is idle, and written to the events file afterwards: a reader that
//! formats JSON while the kernel fills the ring buffer falls behind and drops events.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use velo_tracer::analysis::{self, Findings, Roots};
use velo_tracer::backend::{self, Backend};
use velo_tracer::event::Event;

use crate::inception::{self, Projection};

/// Which backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The best available here ([`Backend::best`]).
    Auto,
    Only(Backend),
}

/// What to trace, and how.
#[derive(Clone, Debug)]
pub struct Request {
    pub backend: Choice,
    /// Run the command under `velo inception`.
    pub inception: bool,
    /// The project root; else the enclosing workspace or work tree, else the working directory.
    pub root: Option<PathBuf>,
    /// Write every event as a JSON line here.
    pub events: Option<PathBuf>,
    /// eBPF's ring buffer, in MiB.
    pub buffer_mib: u32,
    pub command: Vec<OsString>,
    /// Keep every event in [`Run::events`] (`velo audit` reads them all); otherwise only those
    /// a finding can come from, unless `events` asks for a log of all.
    pub keep_all: bool,
    /// eBPF: count each kernel program's runs and run time ([`Findings::programs`]).
    pub program_costs: bool,
}

impl Request {
    /// `velo trace --backend BACKEND --inception [--root ROOT] -- COMMAND`, for `velo audit`.
    pub fn projected(backend: Choice, root: Option<PathBuf>, command: Vec<OsString>) -> Request {
        Request {
            backend,
            inception: true,
            root,
            events: None,
            buffer_mib: velo_tracer::ebpf::DEFAULT_RING_MIB,
            command,
            keep_all: true,
            program_costs: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--backend {backend}: {why}; --backend ptrace works for any user")]
    Unavailable { backend: &'static str, why: String },
    #[error("cannot run {0}: not found in PATH")]
    NotFound(String),
    #[error("cannot run {0}: no such file")]
    NoSuchFile(String),
    #[error("--events {}: {source}", .path.display())]
    Events {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Inception(#[from] inception::Error),
    #[error(transparent)]
    Trace(#[from] backend::Error),
}

/// A traced run: what the command did and what the analysis found.
pub struct Run {
    pub outcome: velo_tracer::command::Outcome,
    pub findings: Findings,
    pub events: Vec<Event>,
    pub roots: Roots,
    pub projection: Projection,
    /// The shim the command ran with, under `--inception`.
    pub shim: Option<PathBuf>,
}

/// Runs the command traced and analyzes what was recorded.
pub fn traced(args: &Request, note: &dyn Fn(&str)) -> Result<Run, Error> {
    let backend = match args.backend {
        Choice::Auto => {
            let (backend, passed_over) = Backend::best();
            match passed_over {
                None => note(&format!("{} backend", backend.name())),
                Some(why) => note(&format!("{} backend ({why})", backend.name())),
            }
            backend
        }
        Choice::Only(backend) => {
            if let Some(why) = backend.unavailable() {
                return Err(Error::Unavailable {
                    backend: backend.name(),
                    why,
                });
            }
            backend
        }
    };

    let (projection, cwd) = Projection::for_cwd(inception::Setup {
        root: args.root.as_deref(),
        no_cargo_home: false,
        // Tracing any command: without a project around it, the working directory is the root.
        fall_back_to_cwd: true,
    })?;
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
    let shown = args.command[0].to_string_lossy().into_owned();
    let program = velo_tracer::command::find_program(&args.command[0], path.as_deref())
        .ok_or_else(|| Error::NotFound(shown.clone()))?;
    // Under --inception a canonical path exists only through the shim, so only then may a
    // path the host lacks be right.
    if !args.inception && !cwd.join(&program).exists() {
        return Err(Error::NoSuchFile(shown));
    }

    let mut sink_file = match &args.events {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |source| Error::Events {
                path: p.clone(),
                source,
            },
        )?)),
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
        if args.keep_all || args.events.is_some() {
            analysis::Keep::All
        } else {
            analysis::Keep::Findings
        },
    ));
    let mut sink = |e: Event| recorder.borrow_mut().push(e);
    let mut idle = || recorder.borrow_mut().catch_up(4096);
    let traced = backend::trace(
        backend,
        &command,
        &backend::Options {
            ring_bytes: args.buffer_mib << 20,
            shim_file_name: velo_intercept::env::SHIM_FILE_NAME.into(),
            returns: args.events.is_some(),
            program_costs: args.program_costs,
        },
        &mut sink,
        &mut idle,
    )?;
    let (outcome, dropped, programs) = (traced.outcome, traced.dropped, traced.programs);
    let (events, findings) = recorder.into_inner().finish();
    if let Some(f) = sink_file.as_mut() {
        for e in &events {
            serde_json::to_writer(&mut *f, e)
                .map_err(std::io::Error::other)
                .and_then(|_| f.write_all(b"\n"))
                .map_err(|source| events_err(args, source))?;
        }
        f.flush().map_err(|source| events_err(args, source))?;
    }
    let mut findings = findings;
    tracing::debug!(events = events.len(), "analyzed the events");
    findings.backend = backend.name().to_owned();
    if !args.inception && std::env::var_os(velo_intercept::env::PHYSICAL_ROOT.name()).is_none() {
        // Without a projection no process is meant to have the shim.
        findings.counts.unshimmed = 0;
        findings.unshimmed.clear();
    }
    findings.counts.dropped = dropped;
    findings.programs = programs;
    if dropped > 0 {
        note(&format!(
            "warning: {dropped} events were dropped (the ring buffer was full): findings may be incomplete; a larger --buffer (now {} MiB) keeps them",
            args.buffer_mib
        ));
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
        roots.physical.push(p.into());
        if let Ok(real) = std::fs::canonicalize(p)
            && real != p
        {
            roots.physical.push(real.as_path().into());
        }
    };
    add_physical(&projection.physical);
    for (_, physical) in &projection.extra {
        add_physical(physical);
    }
    roots.canonical.push(projection.canonical.as_path().into());
    for (canonical, _) in &projection.extra {
        roots.canonical.push(canonical.as_path().into());
    }
    roots
}

fn events_err(args: &Request, source: std::io::Error) -> Error {
    Error::Events {
        path: args.events.clone().unwrap_or_default(),
        source,
    }
}

/// The exit status velo gives for the traced command's: its code, or 128 + its signal.
pub fn exit_code(outcome: velo_tracer::command::Outcome) -> std::process::ExitCode {
    match outcome {
        velo_tracer::command::Outcome::Exited(code) => std::process::ExitCode::from(code as u8),
        velo_tracer::command::Outcome::Signaled(sig) => {
            std::process::ExitCode::from(128 + sig as u8)
        }
    }
}

/// What each kernel program cost (`--program-costs`): runs, time, and time per run; and the
/// total per event delivered, what a traced file syscall cost the machine in BPF programs.
pub fn program_costs(f: &Findings) -> String {
    let mut table = crate::human::table(["program", "runs", "ms", "ns/run"]);
    let per = |ns: u64, n: u64| ns.checked_div(n).unwrap_or(0);
    for p in &f.programs {
        table.add_row([
            p.name.clone(),
            p.runs.to_string(),
            format!("{:.1}", p.ns as f64 / 1e6),
            per(p.ns, p.runs).to_string(),
        ]);
    }
    let total: u64 = f.programs.iter().map(|p| p.ns).sum();
    format!(
        "{table}\nall programs: {:.1} ms, {} ns per event delivered ({} events; the syscall hooks run for every syscall of the machine)\n",
        total as f64 / 1e6,
        per(total, f.counts.events as u64),
        f.counts.events
    )
}

/// The counts line of a traced run: `(backend): N events, …`.
pub fn summary(f: &Findings) -> String {
    let c = &f.counts;
    format!(
        "({}): {} events, {} file syscalls in {} processes, {} dropped: {} uncaught, {} leaked, {} unshimmed",
        f.backend, c.events, c.syscalls, c.processes, c.dropped, c.uncaught, c.leaks, c.unshimmed
    )
}

/// The findings as a table, a row each with its fix.
pub fn text(f: &Findings) -> String {
    if f.is_clean() {
        return "no findings: every path under the roots went through the shim\n".to_owned();
    }
    let mut table =
        crate::human::table(["finding", "count", "process", "syscall", "example", "fix"]);
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
    format!("{table}\n")
}
