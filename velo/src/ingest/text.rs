//! The human report of `velo ingest` (`--json` prints the same [`Report`] as JSON).

use std::fmt::Write;
use std::path::Path;

use super::Report;
use crate::human::bytes;

/// What went where, then what the store gained and what the stat index spared.
pub fn report(dir: &Path, report: &Report) -> String {
    let mut out = format!(
        "ingested {} -> {}\n  manifest id  {}\n",
        dir.display(),
        report.output.display(),
        report.manifest_id
    );
    let _ = writeln!(
        out,
        "  tree         {} files ({}), {} dirs, {} symlinks",
        report.files,
        bytes(report.bytes),
        report.dirs,
        report.symlinks
    );
    let _ = writeln!(
        out,
        "  store        {} new blobs ({}), {} already stored",
        report.new_blobs,
        bytes(report.new_bytes),
        bytes(report.deduplicated_bytes)
    );
    if report.replaced_blobs > 0 {
        let _ = writeln!(
            out,
            "  healed       {} corrupt blobs quarantined and written again from this tree",
            report.replaced_blobs
        );
    }
    if report.unchanged_files + report.unchanged_dirs > 0 {
        let _ = writeln!(
            out,
            "  unchanged    {} files not read again, {} directories not listed again (stat index)",
            report.unchanged_files, report.unchanged_dirs
        );
    }
    if !report.skipped.is_empty() {
        let _ = writeln!(
            out,
            "  skipped      {} entries (see warnings above)",
            report.skipped.len()
        );
    }
    let _ = writeln!(out, "  time         {:.2} s", report.seconds);
    out
}
