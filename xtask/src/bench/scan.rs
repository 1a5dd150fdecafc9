//! `cargo xtask bench scan`: `velo scan` against `grep -rF ROOT` on the same target directory,
//! warm page cache (each command runs once untimed first). Two targets: the fixture's (built
//! plainly, so it holds findings) and velo's own `target/debug` (several GB, real crates.io
//! artifacts). Targets: at least as fast as grep, at least 1 GiB/s.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Result;

use super::store::rm;
use super::{Options, Times, write_rows};
use crate::util::{build_velo, exec, root, time, user_cargo};

fn du_bytes(path: &Path) -> Result<u64> {
    let out = Command::new("du").arg("-sb").arg(path).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

fn measure(runs: usize, mut make: impl FnMut() -> Command) -> Result<Times> {
    // Warm the page cache once, untimed.
    let _ = make().stdout(Stdio::null()).stderr(Stdio::null()).status();
    let mut times = Vec::new();
    for _ in 0..runs {
        let mut cmd = make();
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        // grep exits 1 when it finds nothing and velo scan exits 1 when a crate will miss the
        // cache: both are results, not failures.
        times.push(time(|| Ok(cmd.status()?))?.0.as_secs_f64());
    }
    Ok(Times(times))
}

pub fn run(opts: &Options) -> Result<()> {
    let velo = build_velo(true)?;
    let work = super::work_dir(opts)?;
    let ws = work.join("ws");
    rm(&ws)?;
    exec(
        Command::new("cp")
            .arg("-a")
            .arg(root().join("tests/fixtures/inception-ws"))
            .arg(&ws),
    )?;
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
        let grep = measure(opts.runs, || {
            let mut c = Command::new("grep");
            c.args(["-rF", "-c", needle]).arg(&dir);
            c
        })?;
        let scan = measure(opts.runs, || {
            let mut c = Command::new(&velo);
            c.args(["scan", "--json", "--root", needle]).arg(&dir);
            c
        })?;
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
