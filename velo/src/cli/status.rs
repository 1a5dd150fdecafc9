//! `velo status [--verify]`

use std::process::ExitCode;

use anyhow::Result;

use super::output;

/// Store health and savings: blobs, bytes, dedup ratio, registered manifests, orphans.
///
/// With --verify every blob is re-hashed and its mode checked. The exit status is 1 if a blob
/// is corrupt, a registered manifest names a blob the store lacks, or a registered manifest
/// cannot be read; the manifests each problem breaks are named. Works on a store you cannot
/// write (a read-only mount, another user's shared store).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Healing a damaged store:\n  velo status --verify --repair   # quarantine corrupt blobs\n  \
velo ingest DIR -o M.velo        # for each broken manifest: writes the missing blobs again"
)]
pub struct Args {
    /// Re-hash every blob and check its mode.
    #[arg(long)]
    verify: bool,
    /// With --verify: move corrupt blobs to the store's quarantine/ (`velo gc --run` deletes
    /// them) and make the next ingest of each tree read every file, so it writes them again.
    #[arg(long, requires = "verify")]
    repair: bool,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(store: &std::path::Path, args: Args) -> Result<ExitCode> {
    let bar = if args.verify {
        output::progress(Some(0), "verifying")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let status = velo::status::status(store, args.verify, args.repair, &|n| {
        if bar.length() == Some(0) {
            bar.unset_length();
        }
        bar.inc(n);
    });
    bar.finish_and_clear();
    let status = status?;
    let code = if status.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    output::show(args.json, &status, |s| velo::status::Text(s).to_string())?;
    Ok(code)
}
