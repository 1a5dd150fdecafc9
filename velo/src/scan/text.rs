//! The human report of `velo scan`: a row per crate with findings, each miss's Cargo input and
//! fix, and a summary line.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::{Report, Verdict};
use crate::human::{self, bytes};

/// The verdict as the table says it.
fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::WillMiss => "yes",
        Verdict::MissesInClone => "in a clone",
        Verdict::Reusable => "no",
    }
}

pub fn text(report: &Report) -> String {
    if report.crates.is_empty() {
        return format!(
            "no physical path in {} ({} files, {}): every crate can be reused anywhere\n",
            report.target_dir.display(),
            report.files,
            bytes(report.bytes)
        );
    }
    let mut table = human::table([
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
    let mut out = format!("{table}\n");
    for c in report.crates.iter().filter(|c| c.reason.is_some()) {
        let _ = writeln!(
            out,
            "{}: {}\n  fix: {}",
            c.crate_name,
            c.reason.as_deref().unwrap_or_default(),
            c.fix.as_deref().unwrap_or_default()
        );
    }
    let count = |v| report.crates.iter().filter(|c| c.verdict == v).count();
    let files: BTreeSet<_> = report.findings.iter().map(|f| &f.file).collect();
    let _ = writeln!(
        out,
        "{} of {} crates with findings will miss the cache, {} in a clone unless velo restores it; {} findings in {} files ({} scanned); roots: {}",
        report.crates.iter().filter(|c| c.will_miss_cache).count(),
        report.crates.len(),
        count(Verdict::MissesInClone),
        report.findings.len(),
        files.len(),
        bytes(report.bytes),
        report.roots.join(", ")
    );
    out
}
