//! `velo audit`: one report, and a CI gate, from what the verifier found.
//!
//! The report is built from a [`scan`](crate::scan) of the target directory (and, in later
//! steps, the tracer's findings of a projected build). It is deterministic: findings are sorted,
//! and there are no timestamps, so two audits of the same tree give the same bytes, and a
//! baseline can name accepted findings by a stable id.
//!
//! Formats: a terminal table, JSON (this module's types; [`SCHEMA`] is bumped on incompatible
//! changes), SARIF 2.1.0 for code-scanning uploads, and Markdown for a pull-request comment.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::scan::{self, Class};

pub mod run;
pub mod traced;
pub mod units;

pub use traced::{Suggestion, Traced};

/// The version of the JSON report's shape.
pub const SCHEMA: u32 = 1;

/// One finding of the audit, reduced to what a reader acts on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    /// `freshness`, `debug-info`, `embedded` or `package-mtime` (from the scan); `uncaught`,
    /// `leak`, `unshimmed` or `undeclared-input` (from the traced build).
    pub kind: String,
    pub crate_name: String,
    /// Where: for scan findings the artifact, relative to the target directory, with Cargo's
    /// unit hashes kept; the syscall for uncaught and leak findings, the executable for
    /// unshimmed ones, the file (relative to the project) for undeclared inputs.
    pub file: String,
    /// What was found there.
    pub detail: String,
    /// A stable id for baselines: kind, crate and file with unit hashes replaced, so the same
    /// finding in another build or checkout has the same id.
    pub id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub crates_missing_cache: usize,
    pub freshness: usize,
    pub debug_info: usize,
    pub embedded: usize,
    /// Units fingerprinted by their package's newest mtime: fresh after a move, dirty in a
    /// clone unless `velo cache restore` sets the mtimes back. Not gating.
    pub package_mtime: usize,
    /// From the traced build (zero with `--no-build`).
    pub uncaught: usize,
    pub leaks: usize,
    pub unshimmed: usize,
    pub undeclared_inputs: usize,
    /// Findings that fail `--gate`: freshness, uncaught and undeclared-input ones not in the
    /// baseline.
    pub gating: usize,
    pub baselined: usize,
}

impl Summary {
    /// The finding counts by kind, in report order, for the human formats.
    pub fn by_kind(&self) -> [(&'static str, usize); 8] {
        [
            ("freshness", self.freshness),
            ("debug-info", self.debug_info),
            ("embedded", self.embedded),
            ("package mtime", self.package_mtime),
            ("uncaught", self.uncaught),
            ("leaks", self.leaks),
            ("unshimmed", self.unshimmed),
            ("undeclared inputs", self.undeclared_inputs),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub schema: u32,
    pub target_dir: String,
    /// The project whose build was traced (where undeclared inputs lie); the target
    /// directory's parent with `--no-build`.
    pub project_dir: String,
    pub roots: Vec<String>,
    pub summary: Summary,
    /// Crates that will miss the cache, with the reason.
    pub missing_cache: Vec<scan::CrateSummary>,
    /// One finding per (kind, crate, file): the scan's hits grouped.
    pub findings: Vec<Finding>,
    /// Interception-table rows that would have caught the uncaught calls.
    pub suggestions: Vec<Suggestion>,
}

/// `debug/build/app-0123456789abcdef/output` → `debug/build/app-*/output`.
fn unhashed(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, part) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let mut piece = part.to_owned();
        if let Some(dash) = part.rfind('-') {
            let tail = &part[dash + 1..];
            let hash: String = tail.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            if hash.len() == 16 {
                piece = format!("{}-*{}", &part[..dash], &tail[16..]);
            }
        }
        out.push_str(&piece);
    }
    out
}

fn class_name(c: Class) -> &'static str {
    match c {
        Class::Freshness => "freshness",
        Class::DebugInfo => "debug-info",
        Class::Embedded => "embedded",
        Class::Recorded => "recorded",
    }
}

/// The audit of a scan (and of a traced build, when there was one), with the ids in
/// `baseline` accepted.
pub fn build(scan: &scan::Report, trace: Option<&Traced>, baseline: &BTreeSet<String>) -> Report {
    let mut grouped: BTreeMap<(String, String, String), (usize, BTreeSet<String>)> =
        BTreeMap::new();
    // Recorded hits cost nothing (Cargo never compares them): not findings of the audit.
    for f in scan.findings.iter().filter(|f| f.class != Class::Recorded) {
        let key = (
            class_name(f.class).to_owned(),
            f.crate_name.clone(),
            f.file.clone(),
        );
        let entry = grouped.entry(key).or_default();
        entry.0 += 1;
        entry.1.insert(f.root.clone());
    }
    let mut summary = Summary::default();
    let mut findings: Vec<Finding> = grouped
        .into_iter()
        .map(|((kind, crate_name, file), (count, roots))| {
            let id = format!("{kind}:{crate_name}:{}", unhashed(&file));
            match kind.as_str() {
                "freshness" => {
                    summary.freshness += 1;
                    if baseline.contains(&id) {
                        summary.baselined += 1;
                    } else {
                        summary.gating += 1;
                    }
                }
                "debug-info" => summary.debug_info += 1,
                _ => summary.embedded += 1,
            }
            let roots: Vec<String> = roots.into_iter().collect();
            Finding {
                detail: format!(
                    "{count} occurrence{} of {}",
                    if count == 1 { "" } else { "s" },
                    roots.join(", ")
                ),
                kind,
                crate_name,
                file,
                id,
            }
        })
        .collect();
    for c in scan
        .crates
        .iter()
        .filter(|c| c.verdict == scan::Verdict::MissesInClone)
    {
        summary.package_mtime += 1;
        let unit = scan
            .mtime_fingerprints
            .iter()
            .find(|m| m.crate_name == c.crate_name)
            .map_or(String::new(), |m| m.unit.clone());
        findings.push(Finding {
            kind: "package-mtime".into(),
            crate_name: c.crate_name.clone(),
            id: format!("package-mtime:{}:{}", c.crate_name, unhashed(&unit)),
            file: unit,
            detail: format!(
                "{}; fix: {}",
                c.reason.as_deref().unwrap_or_default(),
                c.fix.as_deref().unwrap_or_default()
            ),
        });
    }
    findings.sort();
    let mut suggestions = Vec::new();
    if let Some(t) = trace {
        let traced = traced::traced_findings(t);
        for f in traced.findings {
            let gates = matches!(f.kind.as_str(), "uncaught" | "undeclared-input");
            match f.kind.as_str() {
                "uncaught" => summary.uncaught += 1,
                "unshimmed" => summary.unshimmed += 1,
                "undeclared-input" => summary.undeclared_inputs += 1,
                _ => summary.leaks += 1,
            }
            if gates {
                if baseline.contains(&f.id) {
                    summary.baselined += 1;
                } else {
                    summary.gating += 1;
                }
            }
            findings.push(f);
        }
        suggestions = traced.suggestions;
        findings.sort();
    }
    let missing_cache: Vec<scan::CrateSummary> = scan
        .crates
        .iter()
        .filter(|c| c.will_miss_cache)
        .cloned()
        .collect();
    summary.crates_missing_cache = missing_cache.len();
    Report {
        schema: SCHEMA,
        target_dir: scan.target_dir.display().to_string(),
        project_dir: trace
            .map(|t| t.project.physical[0].clone())
            .or_else(|| scan.target_dir.parent().map(Into::into))
            .unwrap_or_default()
            .display()
            .to_string(),
        roots: scan.roots.clone(),
        summary,
        missing_cache,
        findings,
        suggestions,
    }
}

/// Reads a baseline: a JSON array of finding ids (what `--write-baseline` writes).
pub fn parse_baseline(text: &str) -> Result<BTreeSet<String>, serde_json::Error> {
    serde_json::from_str(text)
}

/// A gating kind: `--gate` fails on it, `--write-baseline` accepts it.
fn gates(kind: &str) -> bool {
    matches!(kind, "freshness" | "uncaught" | "undeclared-input")
}

/// The ids of `report`'s gating kinds, as a baseline file accepting all of them.
pub fn baseline_of(report: &Report) -> String {
    let ids: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| gates(&f.kind))
        .map(|f| f.id.as_str())
        .collect();
    serde_json::to_string_pretty(&ids).expect("strings serialize") + "\n"
}

/// The table report: a summary line, the findings (debug-info and embedded paths left to the
/// other formats: they are many and never gating alone), and the hint for table rows.
pub fn text(report: &Report) -> String {
    let s = &report.summary;
    let counts: Vec<String> = s
        .by_kind()
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    let mut out = format!(
        "{} crate(s) will miss the cache; findings: {} ({} baselined, {} gating)\n",
        s.crates_missing_cache,
        counts.join(", "),
        s.baselined,
        s.gating
    );
    let shown: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.kind != "debug-info" && f.kind != "embedded")
        .collect();
    if !shown.is_empty() {
        let mut table = crate::human::table(["kind", "crate / process", "where", "what"]);
        for f in shown {
            table.add_row([
                f.kind.clone(),
                f.crate_name.clone(),
                f.file.clone(),
                f.detail.clone(),
            ]);
        }
        out.push_str(&format!("{table}\n"));
    }
    if !report.suggestions.is_empty() {
        out.push_str(&format!(
            "{} interception-table row(s) would catch uncaught calls: velo audit --suggest-table\n",
            report.suggestions.len()
        ));
    }
    out
}

/// The suggested rows, each under a comment saying what needs it, ready to paste into
/// `intercept/src/table.rs` (next to a hook in `shim/src/hooks/`).
pub fn table_rows(report: &Report) -> String {
    let mut out = String::new();
    for s in &report.suggestions {
        let who = if s.crate_name == s.process {
            s.process.clone()
        } else {
            format!("{} (building {})", s.process, s.crate_name)
        };
        let _ = writeln!(
            out,
            "    // {who} reached the kernel with a canonical path through {}",
            s.syscall
        );
        let _ = writeln!(out, "    {}", s.row);
    }
    out
}

pub fn markdown(report: &Report) -> String {
    let s = &report.summary;
    let mut md = String::new();
    let verdict = if s.crates_missing_cache > 0 {
        "❌ crates will miss the cache in another checkout"
    } else if s.gating > 0 {
        "❌ the shim missed calls or units read undeclared inputs"
    } else {
        "✅ every crate can be reused in another checkout"
    };
    let _ = writeln!(md, "## velo audit: {verdict}\n");
    let counts = s.by_kind();
    let _ = writeln!(
        md,
        "| crates missing the cache | {} | baselined |\n|---:|{}---:|\n| {} | {} | {} |\n",
        counts.map(|(kind, _)| kind).join(" | "),
        "---:|".repeat(counts.len()),
        s.crates_missing_cache,
        counts.map(|(_, n)| n.to_string()).join(" | "),
        s.baselined
    );
    if !report.missing_cache.is_empty() {
        let _ = writeln!(md, "### Crates that will miss the cache\n");
        let _ = writeln!(md, "| crate | why |\n|---|---|");
        for c in &report.missing_cache {
            let _ = writeln!(
                md,
                "| `{}` | {} |",
                c.crate_name,
                c.reason.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(md);
    }
    let freshness: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.kind == "freshness")
        .collect();
    if !freshness.is_empty() {
        let _ = writeln!(md, "### Freshness findings\n");
        let _ = writeln!(md, "| crate | file | found |\n|---|---|---|");
        for f in freshness {
            let _ = writeln!(md, "| `{}` | `{}` | {} |", f.crate_name, f.file, f.detail);
        }
        let _ = writeln!(md);
    }
    let traced: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| {
            matches!(
                f.kind.as_str(),
                "uncaught" | "leak" | "unshimmed" | "undeclared-input"
            )
        })
        .collect();
    if !traced.is_empty() {
        let _ = writeln!(md, "### Seen by the tracer\n");
        let _ = writeln!(
            md,
            "| kind | crate / process | where | what |\n|---|---|---|---|"
        );
        for f in traced {
            let _ = writeln!(
                md,
                "| {} | `{}` | `{}` | {} |",
                f.kind, f.crate_name, f.file, f.detail
            );
        }
        let _ = writeln!(md);
    }
    if !report.suggestions.is_empty() {
        let _ = writeln!(
            md,
            "### Interception-table rows to add\n\n```rust\n{}```\n",
            table_rows(report)
        );
    }
    let _ = writeln!(
        md,
        "Roots: {}. Build under `velo inception` (or with `velo cargo`) so no physical path lands in `target/`.",
        report
            .roots
            .iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    md
}

/// SARIF 2.1.0: one rule per kind; freshness findings are errors, the others notes.
pub fn sarif(report: &Report) -> serde_json::Value {
    let rules = [
        (
            "uncaught",
            "A canonical path reached the kernel untranslated: the shim missed this call.",
        ),
        (
            "leak",
            "A physical path was returned to a program without the shim translating it.",
        ),
        (
            "unshimmed",
            "A process touched project files without the shim: run it on a link farm.",
        ),
        (
            "undeclared-input",
            "A file the unit read but its dep-info does not list: an edit to it rebuilds nothing, and a cache serves a stale artifact.",
        ),
        (
            "freshness",
            "A physical path that Cargo compares for freshness: the crate will miss the cache in another checkout.",
        ),
        (
            "debug-info",
            "A physical path in debug info: debuggers and backtraces point at this checkout.",
        ),
        (
            "embedded",
            "A physical path embedded in code, data or metadata.",
        ),
    ];
    let results: Vec<serde_json::Value> = report
        .findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "ruleId": f.kind,
                "level": match f.kind.as_str() {
                    "freshness" | "uncaught" | "undeclared-input" => "error",
                    "leak" | "unshimmed" => "warning",
                    _ => "note",
                },
                "message": { "text": format!("{}: {} in {}", f.crate_name, f.detail, f.file) },
                "partialFingerprints": { "veloFindingId/v1": f.id },
                // Scan findings lie in the target directory, undeclared inputs in the project;
                // the tracer's other findings name a syscall or program, not a file.
                "locations": match f.kind.as_str() {
                    "uncaught" | "leak" | "unshimmed" => serde_json::json!([]),
                    kind => serde_json::json!([{
                        "physicalLocation": { "artifactLocation": {
                            "uri": f.file,
                            "uriBaseId": if kind == "undeclared-input" { "PROJECT" } else { "TARGET" }
                        } }
                    }]),
                }
            })
        })
        .collect();
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "velo",
                "informationUri": "https://github.com/velo",
                "rules": rules.iter().map(|(id, text)| serde_json::json!({
                    "id": id,
                    "shortDescription": { "text": text }
                })).collect::<Vec<_>>()
            }},
            "originalUriBaseIds": {
                "TARGET": { "uri": format!("file://{}/", report.target_dir) },
                "PROJECT": { "uri": format!("file://{}/", report.project_dir) }
            },
            "results": results
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_do_not_depend_on_unit_hashes() {
        assert_eq!(
            unhashed("debug/build/app-0123456789abcdef/output"),
            "debug/build/app-*/output"
        );
        assert_eq!(
            unhashed("debug/deps/libcore_lib-0123456789abcdef.rlib(x.o)"),
            "debug/deps/libcore_lib-*.rlib(x.o)"
        );
        assert_eq!(unhashed("debug/app"), "debug/app");
    }
}
