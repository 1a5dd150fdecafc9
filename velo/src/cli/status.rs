//! `velo status [--verify]`

use std::process::ExitCode;

use anyhow::Result;
use velo::live::RootState;

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
    if let Some(access) = status.access {
        table.add_row([
            "access",
            match access {
                velo::store::Access::Private => "private: only you (and root) can read it",
                velo::store::Access::Shared => {
                    "shared: every local user can read every blob (chmod 0700 the store to make it private)"
                }
            },
        ]);
    }
    if let Some(why) = &status.read_only {
        table.add_row([
            "writable",
            &format!("no ({why}): runs keep their files elsewhere"),
        ]);
    }
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
            "missing blob {}: named by {} but not in the store",
            missing.blob,
            missing.manifest.display()
        );
    }
    for m in &status.manifests {
        if let RootState::Unreadable { error } = &m.state {
            println!(
                "unreadable manifest {}: {error} (gc refuses to run until it is repaired or deleted)",
                m.manifest.display()
            );
        }
    }
    if let Some(verify) = &status.verify {
        for w in &verify.wrong_sizes {
            println!(
                "wrong size in {}: {} declares {} bytes, its blob holds {} (the manifest is damaged or crafted: ingest its tree again)",
                w.manifest.display(),
                w.path,
                w.declared,
                w.actual
            );
        }
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
    for b in &status.broken_manifests {
        println!(
            "broken manifest {}: {} missing, {} corrupt blobs",
            b.manifest.display(),
            b.missing,
            b.corrupt
        );
    }
    match &status.repair {
        Some(repair) => {
            if !repair.quarantined.is_empty() {
                println!(
                    "quarantined {} corrupt blobs in {}",
                    repair.quarantined.len(),
                    status.store.join("quarantine").display()
                );
            }
            if !status.broken_manifests.is_empty() {
                println!(
                    "to heal: ingest the tree of each broken manifest again (the next ingest reads every file)"
                );
            }
        }
        None if !status.broken_manifests.is_empty() => {
            println!(
                "to heal: velo status --verify --repair, then ingest each broken manifest's tree again"
            );
        }
        None => {}
    }
    Ok(code)
}
