//! `velo scan [TARGET_DIR] [--root PATH]… [--json]`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use velo::inception;

use super::output;

/// Find physical paths in a Cargo target directory: which crates will miss the cache, and why.
///
/// Every file is searched for the roots (default: the project, CARGO_HOME, the toolchain's
/// sysroot and $HOME) and each hit is classed: *freshness* (Cargo compares it when deciding
/// freshness: the crate will miss the cache in another checkout), *debug-info* (DWARF), or
/// *embedded* (code or data). Exit 1 when a crate will miss the cache.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
velo scan                         # ./target of the enclosing project\n  \
velo scan target --json           # every finding, with file, section and offset\n  \
velo scan --root /home/ci/build   # look for another path")]
pub struct Args {
    /// The target directory [default: the project's target/]
    #[arg(value_name = "TARGET_DIR")]
    target_dir: Option<PathBuf>,
    /// A physical root to look for (repeatable) [default: the project, CARGO_HOME, the
    /// sysroot, $HOME]
    #[arg(long = "root", value_name = "PATH")]
    roots: Vec<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub(super) fn default_roots(project: &std::path::Path) -> Vec<String> {
    let mut roots = vec![project.display().to_string()];
    if let Ok(real) = std::fs::canonicalize(project)
        && real != project
    {
        roots.push(real.display().to_string());
    }
    if let Some(home) = inception::cargo_home() {
        roots.push(home.display().to_string());
    }
    if let Ok(out) = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        && out.status.success()
    {
        roots.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| h.len() > 1) {
        roots.push(PathBuf::from(home).display().to_string());
    }
    roots.sort();
    roots.dedup();
    roots
}

pub fn run(args: Args) -> Result<ExitCode> {
    let cwd = inception::unproject(&inception::current_dir()?);
    let project = inception::find_root(None, &cwd).unwrap_or_else(|_| cwd.clone());
    let target = match args.target_dir {
        Some(t) => cwd.join(t),
        None => project.join("target"),
    };
    let roots = if args.roots.is_empty() {
        default_roots(&project)
    } else {
        args.roots
            .iter()
            .map(|r| std::path::absolute(r).unwrap_or_else(|_| r.clone()))
            .map(|r| r.display().to_string())
            .collect()
    };
    let bar = output::progress(None, "scanning");
    let report = velo::scan::scan(&target, &roots, &|n| bar.inc(n));
    bar.finish_and_clear();
    let report = report.with_context(|| format!("velo scan {}", target.display()))?;
    let missing = report.crates.iter().filter(|c| c.will_miss_cache).count();
    if args.json {
        output::json(&report)?;
    } else {
        if report.crates.is_empty() {
            println!(
                "no physical path in {} ({} files, {}): every crate can be reused anywhere",
                report.target_dir.display(),
                report.files,
                output::bytes(report.bytes)
            );
        } else {
            let mut table = output::table([
                "crate",
                "will miss cache",
                "freshness",
                "debug-info",
                "embedded",
                "why",
            ]);
            for c in &report.crates {
                table.add_row([
                    c.crate_name.clone(),
                    if c.will_miss_cache { "yes" } else { "no" }.to_owned(),
                    c.freshness.to_string(),
                    c.debug_info.to_string(),
                    c.embedded.to_string(),
                    c.reason.clone().unwrap_or_default(),
                ]);
            }
            println!("{table}");
            println!(
                "{} of {} crates with findings will miss the cache; {} findings in {} files ({} scanned); roots: {}",
                missing,
                report.crates.len(),
                report.findings.len(),
                report
                    .findings
                    .iter()
                    .map(|f| &f.file)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                output::bytes(report.bytes),
                report.roots.join(", ")
            );
        }
    }
    Ok(if missing > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
