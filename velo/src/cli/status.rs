//! `velo status [--verify]`

use std::process::ExitCode;

use anyhow::Result;
use velo::live::RootState;

use super::output;

/// Store health and savings: blobs, bytes, dedup ratio, registered manifests, orphans.
///
/// With --verify every blob is re-hashed and its mode checked; the exit status is 1 if any is
/// corrupt or a registered manifest names a blob the store lacks.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Re-hash every blob and check its mode.
    #[arg(long)]
    verify: bool,
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
    let status = velo::status::status(store, args.verify, &|n| {
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
    if args.json {
        output::json(&status)?;
        return Ok(code);
    }
    if !status.exists {
        println!(
            "store {} is empty (nothing ingested yet)",
            status.store.display()
        );
        return Ok(code);
    }
    let mut table = output::table(["store", &status.store.display().to_string()]);
    table.add_row(["blobs", &status.blobs.to_string()]);
    table.add_row(["stored", &output::bytes(status.stored_bytes)]);
    table.add_row(["referenced", &output::bytes(status.logical_bytes)]);
    table.add_row(["dedup ratio", &format!("{:.2}x", status.dedup_ratio)]);
    table.add_row([
        "orphaned",
        &format!(
            "{} blobs, {} (velo gc --run frees them)",
            status.orphaned_blobs,
            output::bytes(status.orphaned_bytes)
        ),
    ]);
    if status.stray_temp_files > 0 {
        table.add_row(["stray temp files", &status.stray_temp_files.to_string()]);
    }
    println!("{table}");
    if !status.manifests.is_empty() {
        let mut manifests = output::table(["manifest", "state", "files", "size", "id"]);
        for m in &status.manifests {
            let path = m.manifest.display().to_string();
            match &m.state {
                RootState::Present {
                    id,
                    files,
                    logical_bytes,
                } => manifests.add_row([
                    &path,
                    "ok",
                    &files.to_string(),
                    &output::bytes(*logical_bytes),
                    &id[..16],
                ]),
                RootState::Missing => manifests.add_row([path.as_str(), "gone", "", "", ""]),
                RootState::Unreadable { error } => {
                    manifests.add_row([path.as_str(), "unreadable", "", "", error])
                }
            };
        }
        println!("\n{manifests}");
    }
    for missing in &status.missing_blobs {
        println!(
            "missing blob {}: named by {} but not in the store (ingest its tree again)",
            missing.blob,
            missing.manifest.display()
        );
    }
    if let Some(verify) = &status.verify {
        for c in &verify.corrupt {
            println!(
                "corrupt blob {} ({}): {}",
                c.blob,
                c.path.display(),
                c.problem
            );
        }
        println!(
            "\nverified {} blobs: {}",
            verify.checked,
            if verify.corrupt.is_empty() {
                "all sound".to_owned()
            } else {
                format!("{} corrupt", verify.corrupt.len())
            }
        );
    }
    Ok(code)
}
