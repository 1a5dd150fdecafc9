//! `velo scan [TARGET_DIR] [--root PATH]… [--json]`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use velo::inception;

use super::output;

/// Find physical paths in a Cargo target directory: which crates will miss the cache, and why.
///
/// Every file is searched for the roots (default: the project, CARGO_HOME, the toolchain's
/// sysroot and $HOME) and each hit is classed by what Cargo does with it: *freshness* (a
/// fingerprint input Cargo compares: the crate will miss the cache in another checkout),
/// *recorded* (kept, never compared: costs nothing), *debug-info* (DWARF) or *embedded* (code
/// or data). A unit fingerprinted by its package's newest mtime (a build script without
/// `rerun-if-changed`) misses "in a clone", unless velo's restore sets the mtimes back. Each
/// crate with a miss gets the Cargo input behind it and the fix. Exit 1 when a crate will miss
/// the cache.
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

/// The verdict as the table says it.
pub(super) fn verdict_word(v: velo::scan::Verdict) -> &'static str {
    match v {
        velo::scan::Verdict::WillMiss => "yes",
        velo::scan::Verdict::MissesInClone => "in a clone",
        velo::scan::Verdict::Reusable => "no",
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let cwd = inception::unproject(&inception::current_dir()?);
    let project = inception::find_root(None, &cwd).unwrap_or_else(|_| cwd.clone());
    let target = match args.target_dir {
        Some(t) => cwd.join(t),
        None => project.join("target"),
    };
    let roots = if args.roots.is_empty() {
        velo::scan::default_roots(&project)
    } else {
        args.roots
            .iter()
            .map(|r| std::path::absolute(r).unwrap_or_else(|_| r.clone()))
            .map(|r| r.display().to_string())
            .collect()
    };
    let bar = output::progress(None, "scanning");
    let home_like = velo::scan::home_like(!args.roots.is_empty());
    let report = velo::scan::scan(&target, &roots, &home_like, &|n| bar.inc(n));
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
                "recorded",
                "cargo input",
            ]);
            for c in &report.crates {
                let input = c
                    .reason
                    .as_deref()
                    .and_then(|r| r.split(':').next())
                    .unwrap_or_default();
                table.add_row([
                    c.crate_name.clone(),
                    verdict_word(c.verdict).to_owned(),
                    c.freshness.to_string(),
                    c.debug_info.to_string(),
                    c.embedded.to_string(),
                    c.recorded.to_string(),
                    input.to_owned(),
                ]);
            }
            println!("{table}");
            for c in report.crates.iter().filter(|c| c.reason.is_some()) {
                println!(
                    "{}: {}\n  fix: {}",
                    c.crate_name,
                    c.reason.as_deref().unwrap_or_default(),
                    c.fix.as_deref().unwrap_or_default()
                );
            }
            let in_clone = report
                .crates
                .iter()
                .filter(|c| c.verdict == velo::scan::Verdict::MissesInClone)
                .count();
            println!(
                "{} of {} crates with findings will miss the cache, {} in a clone unless velo restores it; {} findings in {} files ({} scanned); roots: {}",
                missing,
                report.crates.len(),
                in_clone,
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
