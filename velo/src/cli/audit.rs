//! `velo audit [--no-build] [--gate] [--baseline FILE] [--format …] [--out FILE] [-- CMD…]`

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use velo::audit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// A table for the terminal.
    Table,
    /// The report as JSON (`schema` is its version).
    Json,
    /// SARIF 2.1.0, for code-scanning uploads.
    Sarif,
    /// Markdown, for a pull-request comment.
    Markdown,
}

/// Audit a build: which crates will miss the cache and why, as a report and a CI gate.
///
/// Runs the build (default `cargo build`) under `velo inception` and `velo trace`, then scans
/// the target directory; `--no-build` scans an existing target directory alone. The report
/// lists crates that will miss the cache with the offending path, syscalls the shim missed,
/// processes that ran without it, and physical paths by class. Output is deterministic
/// (sorted, no timestamps). With `--gate`, exit 1 when a freshness finding, an uncaught
/// syscall or an undeclared input (a file rustc or a build script read that its dep-info does
/// not list) is not in the baseline. `--suggest-table` prints the interception-table rows
/// that would catch the uncaught calls.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
velo audit                                   # build projected, trace, scan, report\n  \
velo audit --no-build --format markdown      # a PR comment about an existing target/\n  \
velo audit --gate --baseline velo-baseline.json --format sarif --out velo.sarif\n  \
velo audit --no-build --write-baseline velo-baseline.json   # accept today's findings")]
pub struct Args {
    /// Scan the existing target directory; do not build.
    #[arg(long)]
    no_build: bool,
    /// Exit 1 when a freshness finding, uncaught syscall or undeclared input is not in the
    /// baseline.
    #[arg(long)]
    gate: bool,
    /// Accepted findings (a JSON list of finding ids, as --write-baseline writes).
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Write the ids of today's gating findings to FILE, accepting them.
    #[arg(long, value_name = "FILE")]
    write_baseline: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// How to trace the build (see `velo trace --help`).
    #[arg(long, value_enum, default_value = "auto")]
    backend: super::Backend,
    /// Print the interception-table rows that would catch the uncaught calls, in the table's
    /// own notation (for intercept/src/table.rs), instead of the report; with --out the
    /// report still goes to FILE.
    #[arg(long)]
    suggest_table: bool,
    /// Write the report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The target directory [default: the project's target/]
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    /// A physical root to look for (repeatable) [default: the project, CARGO_HOME, the
    /// sysroot, $HOME]
    #[arg(long = "root", value_name = "PATH")]
    roots: Vec<PathBuf>,
    /// The build command [default: cargo build]
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let baseline: BTreeSet<String> = match &args.baseline {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--baseline {}", path.display()))?;
            audit::parse_baseline(&text).with_context(|| {
                format!(
                    "--baseline {}: not a JSON list of finding ids (write one with --write-baseline)",
                    path.display()
                )
            })?
        }
        None => BTreeSet::new(),
    };
    let audited = audit::run::run(
        &audit::run::Request {
            backend: args.backend.choice(),
            no_build: args.no_build,
            command: args.command.clone(),
            target_dir: args.target_dir.clone(),
            roots: args.roots.clone(),
            baseline,
        },
        &|line| eprintln!("velo audit: {line}"),
    )?;
    let (report, build_failed) = (audited.report, audited.build_failed);

    if let Some(path) = &args.write_baseline {
        std::fs::write(path, audit::baseline_of(&report))
            .with_context(|| format!("--write-baseline {}", path.display()))?;
        eprintln!(
            "velo audit: wrote {} accepted finding(s) to {}",
            report.summary.gating + report.summary.baselined,
            path.display()
        );
    }
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Sarif => serde_json::to_string_pretty(&audit::sarif(&report))? + "\n",
        Format::Markdown => audit::markdown(&report),
        Format::Table => audit::text(&report),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("--out {}", path.display()))?
        }
        None if args.suggest_table => {}
        None => print!("{text}"),
    }
    if args.suggest_table {
        if args.no_build {
            eprintln!("velo audit: --suggest-table needs a traced build; drop --no-build");
        } else if report.suggestions.is_empty() {
            eprintln!(
                "velo audit: no row to add: every uncaught call was a raw syscall or libc-internal"
            );
        }
        print!("{}", audit::table_rows(&report));
    }
    if let Some(outcome) = build_failed {
        eprintln!("velo audit: the build failed ({outcome:?}); the report covers what it left");
        return Ok(velo::trace::exit_code(outcome));
    }
    Ok(if args.gate && report.summary.gating > 0 {
        eprintln!(
            "velo audit: gate failed: {} finding(s) not in the baseline",
            report.summary.gating
        );
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
