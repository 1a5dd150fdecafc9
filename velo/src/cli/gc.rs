//! `velo gc [--run]`

use std::process::ExitCode;

use anyhow::Result;

use super::output;

/// Delete blobs that no registered, still-existing manifest references.
///
/// Without --run, a dry run: lists what would be deleted and how many bytes. A manifest stops
/// protecting its blobs when its file is deleted. gc waits for running ingests to finish and
/// refuses to run while a registered manifest exists but cannot be read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Really delete (default: only list).
    #[arg(long)]
    run: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(store: &std::path::Path, args: Args) -> Result<ExitCode> {
    let plan = velo::gc::gc(store, args.run)?;
    let (stale_runs, cached_farms) = (plan.stale_runs, plan.cached_farms);
    if stale_runs > 0 && !args.json {
        println!(
            "removed {stale_runs} run directories left by velo processes that no longer exist"
        );
    }
    if cached_farms > 0 && !args.json {
        println!("removed {cached_farms} cached link farms (velo run rebuilds them on demand)");
    }
    if args.json {
        output::json(&plan)?;
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if plan.ran { "deleted" } else { "would delete" };
    for blob in &plan.blobs {
        println!("{verb} {} ({})", blob.blob, output::bytes(blob.size));
    }
    for path in &plan.forgotten_manifests {
        println!(
            "{} registration of {} (file is gone)",
            if plan.ran { "dropped" } else { "would drop" },
            path.display()
        );
    }
    if !plan.quarantined.is_empty() {
        println!(
            "{verb} {} quarantined corrupt blobs",
            plan.quarantined.len()
        );
    }
    println!(
        "{verb} {} blobs, {}{}",
        plan.blobs.len(),
        output::bytes(plan.bytes),
        if plan.stray_temp_files.is_empty() {
            String::new()
        } else {
            format!(
                ", and {} stray temporary files",
                plan.stray_temp_files.len()
            )
        }
    );
    if !plan.ran && !plan.blobs.is_empty() {
        println!("run `velo gc --run` to delete them");
    }
    Ok(ExitCode::SUCCESS)
}
