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
    output::show(args.json, &report, velo::scan::text)?;
    Ok(if report.crates.iter().any(|c| c.will_miss_cache) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
