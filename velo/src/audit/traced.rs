//! The traced build's half of the audit: the tracer's findings attributed to the Cargo unit
//! that caused them ([`units`](super::units)), undeclared inputs, and the interception-table
//! rows that would have caught what the shim missed.
//!
//! # The feedback loop
//!
//! An uncaught syscall means a program reached the kernel with a canonical path. When the
//! program imports a libc function that ends in that syscall and the shim in use does not
//! export it, the fix is a hook: the audit proposes that function's row, in the interception
//! table's own notation (`velo audit --suggest-table`). Rows come from the table itself (a
//! shim built without one of them) and from its list of known, not yet hooked functions
//! ([`table::CANDIDATES`]). A program that imports none of them made a raw syscall, or libc
//! made the call internally: no hook helps, and the advice is link-farm mode.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;
use velo_intercept::table::{self, Platform};
use velo_tracer::analysis::{self, Roots};
use velo_tracer::event::Event;

use super::units::{self, Units};
use super::{Finding, unhashed};

/// What a traced build left for the report.
pub struct Traced<'a> {
    pub events: &'a [Event],
    /// The roots the tracer looked for.
    pub roots: &'a Roots,
    pub project: &'a units::Project,
    /// The symbols the shim in use exports; `None` when it could not be read (every Linux
    /// row of the table is then taken as hooked).
    pub exported: Option<&'a BTreeSet<String>>,
}

/// An interception-table row to add.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Suggestion {
    pub symbol: String,
    /// The syscall it ends in, as the tracer saw it.
    pub syscall: String,
    /// The program that imports the symbol and made the call.
    pub process: String,
    pub crate_name: String,
    /// The row, as written in `intercept/src/table.rs`.
    pub row: String,
}

pub struct TracedFindings {
    pub findings: Vec<Finding>,
    pub suggestions: Vec<Suggestion>,
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The undefined dynamic symbols of the ELF file at `path` (what it imports).
fn imports(path: &str) -> BTreeSet<String> {
    let Ok(bytes) = std::fs::read(path) else {
        return BTreeSet::new();
    };
    let Ok(elf) = goblin::elf::Elf::parse(&bytes) else {
        return BTreeSet::new();
    };
    elf.dynsyms
        .iter()
        .filter(|s| s.st_shndx == 0 && s.st_name != 0)
        .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect()
}

/// The rows that end in `syscall`, take a path in, and that the shim in use lacks.
fn missing_rows(syscall: &str, exported: Option<&BTreeSet<String>>) -> Vec<&'static table::Entry> {
    let table_rows = table::entry_points_for(Platform::Linux, syscall)
        .filter(|e| exported.is_some_and(|x| !x.contains(e.symbol)));
    let candidates = table::CANDIDATES.iter().filter(|e| {
        e.platform == Platform::Linux
            && e.syscalls.contains(&syscall)
            && exported.is_none_or(|x| !x.contains(e.symbol))
    });
    table_rows.chain(candidates).collect()
}

/// The tracer's findings, per unit, with undeclared inputs and table suggestions.
pub fn traced_findings(t: &Traced) -> TracedFindings {
    let units = Units::assign(t.events);

    // Cut the events by the unit (or, outside units, the program) they belong to, and analyze
    // each part: a finding then names the crate whose build did it.
    let mut parts: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for (i, event) in t.events.iter().enumerate() {
        if !matches!(event, Event::Syscall(_) | Event::Exec { .. }) {
            continue;
        }
        let label = match units.unit_of_event(i) {
            Some(u) => units.units[u].crate_name().to_owned(),
            None => base_name(units.exe_of_event(i).unwrap_or("?")).to_owned(),
        };
        parts.entry(label).or_default().push(event.clone());
    }

    let mut findings = Vec::new();
    let mut suggestions = BTreeSet::new();
    let mut imports_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut push = |kind: &str, crate_name: &str, file: String, detail: String| {
        let id = format!("{kind}:{crate_name}:{}", unhashed(&file));
        findings.push(Finding {
            kind: kind.to_owned(),
            crate_name: crate_name.to_owned(),
            file,
            detail,
            id,
        });
    };
    for (label, events) in &parts {
        let f = analysis::analyze_run(events, t.roots, Platform::Linux);
        for u in &f.uncaught {
            let imported = imports_of
                .entry(u.exe.clone())
                .or_insert_with(|| imports(&u.exe));
            let missing: Vec<&table::Entry> = missing_rows(&u.syscall, t.exported)
                .into_iter()
                .filter(|e| imported.contains(e.symbol))
                .collect();
            let fix = if missing.is_empty() {
                "a raw syscall or a libc-internal call, no hook helps: run it on a link farm"
                    .to_owned()
            } else {
                let names: Vec<&str> = missing.iter().map(|e| e.symbol).collect();
                format!("the shim lacks {}: see --suggest-table", names.join(", "))
            };
            for e in missing {
                suggestions.insert(Suggestion {
                    symbol: e.symbol.to_owned(),
                    syscall: u.syscall.clone(),
                    process: base_name(&u.exe).to_owned(),
                    crate_name: label.clone(),
                    row: e.source_row().to_string(),
                });
            }
            push(
                "uncaught",
                label,
                u.syscall.clone(),
                format!(
                    "{}× {} of {} by {} ({fix})",
                    u.count,
                    u.syscall,
                    u.example_path,
                    base_name(&u.exe)
                ),
            );
        }
        for l in &f.leaks {
            let detail = if l.syscall == "write" {
                format!(
                    "{} file(s) written by {} hold a physical path, e.g. {}",
                    l.count,
                    base_name(&l.exe),
                    l.example_path
                )
            } else {
                format!(
                    "{}× {} returned {} to {}",
                    l.count,
                    l.syscall,
                    l.example_path,
                    base_name(&l.exe)
                )
            };
            push("leak", label, l.syscall.clone(), detail);
        }
        for u in &f.unshimmed {
            push(
                "unshimmed",
                label,
                base_name(&u.exe).to_owned(),
                format!(
                    "{} process(es) of {} touched {} without the shim: {}",
                    u.processes, u.exe, u.example_path, u.advice
                ),
            );
        }
    }
    for u in units::undeclared(t.events, &units, t.project) {
        let fix = if u.build_script {
            "print cargo:rerun-if-changed for it"
        } else {
            "Cargo will not rebuild when it changes: read it with include_bytes!/include_str!, or from a build script that declares it"
        };
        push(
            "undeclared-input",
            &u.crate_name,
            u.path.clone(),
            format!("read by {} but not in the unit's dep-info: {fix}", u.reader),
        );
    }
    TracedFindings {
        findings,
        suggestions: suggestions.into_iter().collect(),
    }
}

/// The symbols `path` (the shim) exports, to learn which rows it has.
pub fn exports(path: &Path) -> Option<BTreeSet<String>> {
    let bytes = std::fs::read(path).ok()?;
    let elf = goblin::elf::Elf::parse(&bytes).ok()?;
    Some(
        elf.dynsyms
            .iter()
            .filter(|s| s.st_shndx != 0 && s.st_name != 0)
            .filter_map(|s| elf.dynstrtab.get_at(s.st_name))
            .map(str::to_owned)
            .collect(),
    )
}
