//! `cargo xtask bench scan`: `velo scan` against `grep -rF ROOT` on the same target directory,
//! warm page cache (each command runs once untimed first). Two targets: the fixture's (built
//! plainly, so it holds findings) and velo's own `target/debug` (several GB, real crates.io
//! artifacts). Targets: at least as fast as grep, at least 1 GiB/s.
//!
//! Then the whole audit: `velo audit` (a projected, traced build and the scan) against the
//! plain `cargo build` it replaces, both from a clean target directory of the fixture.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::Result;

use super::{Expect, Options, copy_fixture, du_bytes, measure, write_rows};
use crate::util::{build_velo, exec, root, user_cargo};

pub fn run(opts: &Options) -> Result<()> {
    let velo = build_velo(true)?;
    let work = super::work_dir(opts)?;
    let ws = copy_fixture(&work)?;
    exec(user_cargo(&ws).args(["build", "--quiet"]))?;

    let mut rows = Vec::new();
    let own = root().join("target/debug");
    let ws_root = ws.display().to_string();
    let own_root = root().display().to_string();
    for (name, dir, needle) in [
        ("fixture target/", ws.join("target"), ws_root.as_str()),
        ("velo's target/debug", own.clone(), own_root.as_str()),
    ] {
        if !dir.is_dir() {
            continue;
        }
        let bytes = du_bytes(&dir)?;
        let grep = || {
            let mut c = Command::new("grep");
            c.args(["-rF", "-c", needle]).arg(&dir);
            c
        };
        let scan = || {
            let mut c = Command::new(&velo);
            c.args(["scan", "--json", "--root", needle]).arg(&dir);
            c
        };
        // One untimed run each warms the page cache. grep exits 1 when it finds nothing and
        // velo scan when a crate will miss the cache: both are results, not failures.
        let warm = || Ok(());
        measure(1, warm, grep, Expect::ZeroOrOne)?;
        measure(1, warm, scan, Expect::ZeroOrOne)?;
        let grep = measure(opts.runs, warm, grep, Expect::ZeroOrOne)?;
        let scan = measure(opts.runs, warm, scan, Expect::ZeroOrOne)?;
        let gib = |t: f64| bytes as f64 / t / (1u64 << 30) as f64;
        rows.push(grep.row(
            &format!(
                "{name} ({:.2} GiB): grep -rF ROOT",
                bytes as f64 / (1u64 << 30) as f64
            ),
            format!("{:.2} GiB/s", gib(grep.min())),
        ));
        rows.push(scan.row(
            &format!("{name}: velo scan --root ROOT"),
            format!(
                "{:.2} GiB/s, {:.2}× grep's time (targets: ≤ 1×, ≥ 1 GiB/s)",
                gib(scan.min()),
                scan.min() / grep.min()
            ),
        ));
    }
    // The audit against the plain build, both from clean.
    let target = ws.join("target");
    let clean = || super::store::rm(&target);
    let plain = measure(
        opts.runs,
        clean,
        || {
            let mut c = user_cargo(&ws);
            c.args(["build", "--quiet"]);
            c
        },
        Expect::Success,
    )?;
    let audit = measure(
        opts.runs,
        clean,
        || {
            let mut c = crate::util::user_command(&velo, &ws);
            c.args(["audit", "--root"]).arg(&ws).env_remove("PWD");
            c
        },
        Expect::Success,
    )?;
    rows.push(plain.row("fixture clean build: cargo build", String::new()));
    rows.push(audit.row(
        "fixture clean build: velo audit (projected, traced, scanned)",
        format!("{:.2}× the plain build", audit.min() / plain.min()),
    ));

    let mut report = String::new();
    writeln!(report, "# Benchmark: velo scan\n")?;
    writeln!(
        report,
        "{} runs per row after one untimed warm-up run; velo scan classifies every hit (ELF \
         sections, rlib members, crate attribution), grep only counts matching files. {}\n",
        opts.runs,
        super::store::machine()?
    )?;
    write_rows(&mut report, &rows)?;
    super::finish(opts, "scan", &report, &work)
}
