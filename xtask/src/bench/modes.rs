//! `cargo xtask bench modes`: farm mode against shim mode (Mode B).
//!
//! - **start-up**: `velo run -- /bin/true` on generated trees of 1k, 10k and `--files` (100k)
//!   files, in farm mode with the farm cache emptied before each run (the farm is built) and in
//!   shim mode with its image cache emptied (the image is built) and kept (the common case).
//!   Target: shim mode flat in the number of files and at least 50× faster than farm mode at
//!   100k.
//! - **import**: `python3 -c "import benchpkg"` of a package of 300 modules with hash-checked
//!   bytecode (so no mode recompiles or writes), timed inside Python around the import itself,
//!   in a plain directory, a farm and shim mode. Target: shim mode at most 1.05× plain.
//! - **per call**: ns per `stat` and per `open`+`close` (`shim-bench`, from tests/src/bin) of a
//!   path outside the tree (what every other path pays in shim mode) and of a file of the tree,
//!   natively, in a farm and in shim mode.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result};

use super::store::{generate, machine, rm};
use super::{Options, Row, Times, write_rows};
use crate::util::{build_velo, exec, time};

const MODULES: usize = 300;

pub fn run(opts: &Options) -> Result<()> {
    let velo = build_velo(true)?;
    let work = super::work_dir(opts)?;
    let store = work.join("store");
    let velo_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&velo);
        cmd.current_dir(&work)
            .env("VELO_STORE", &store)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };

    let mut sizes = vec![1_000, 10_000, opts.files];
    sizes.dedup();
    let mut start_rows = Vec::new();
    let mut at_largest = (0.0, 0.0);
    for &n in &sizes {
        let tree = work.join(format!("tree-{n}"));
        if !tree.exists() {
            eprintln!("generating {n} files in {} …", tree.display());
            generate(&tree, n)?;
        }
        let manifest = format!("tree-{n}.velo");
        let dir = format!("tree-{n}");
        exec(&mut velo_cmd(&[
            "ingest", &dir, "-o", &manifest, "--fsync", "none",
        ]))?;
        let run = |mode: &str| {
            velo_cmd(&[
                "run",
                "--mode",
                mode,
                "--manifest",
                &manifest,
                "--",
                "/bin/true",
            ])
        };
        let (mut farm, mut shim_cold, mut shim) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.runs {
            rm(&store.join("farms"))?;
            farm.push(time(|| exec(&mut run("farm")))?.0.as_secs_f64());
            rm(&store.join("mirage"))?;
            shim_cold.push(time(|| exec(&mut run("shim")))?.0.as_secs_f64());
            shim.push(time(|| exec(&mut run("shim")))?.0.as_secs_f64());
        }
        rm(&store.join("farms"))?;
        let (farm, shim_cold, shim) = (Times(farm), Times(shim_cold), Times(shim));
        start_rows.push(farm.row(
            &format!("{n} files: farm mode, farm built"),
            "reference".into(),
        ));
        start_rows.push(shim_cold.row(
            &format!("{n} files: shim mode, image built"),
            format!("{:.1}× faster than farm", farm.min() / shim_cold.min()),
        ));
        start_rows.push(shim.row(
            &format!("{n} files: shim mode, image cached"),
            format!("{:.1}× faster than farm", farm.min() / shim.min()),
        ));
        at_largest = (farm.min(), shim.min());
    }

    // The import: a package of many small modules, compiled to hash-checked bytecode.
    let pkg_root = work.join("py");
    rm(&pkg_root)?;
    let pkg = pkg_root.join("benchpkg");
    std::fs::create_dir_all(&pkg)?;
    let mut init = String::new();
    for i in 0..MODULES {
        std::fs::write(
            pkg.join(format!("m{i}.py")),
            format!("VALUE = {i}\n\ndef f(x):\n    return x + VALUE\n"),
        )?;
        writeln!(init, "from . import m{i}")?;
    }
    std::fs::write(pkg.join("__init__.py"), init)?;
    exec(
        Command::new("python3")
            .args([
                "-m",
                "compileall",
                "-q",
                "--invalidation-mode",
                "unchecked-hash",
            ])
            .arg(&pkg)
            .stdout(std::process::Stdio::null()),
    )?;
    exec(&mut velo_cmd(&[
        "ingest", "py", "-o", "py.velo", "--fsync", "none",
    ]))?;
    let probe =
        "import time; t = time.perf_counter(); import benchpkg; print(time.perf_counter() - t)";
    let import_time = |cmd: &mut Command| -> Result<f64> {
        let out = cmd.stdout(std::process::Stdio::piped()).output()?;
        anyhow::ensure!(out.status.success(), "{cmd:?} failed");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .with_context(|| format!("{cmd:?} printed no time"))
    };
    let (mut plain, mut farm, mut shim) = (Vec::new(), Vec::new(), Vec::new());
    // `velo run --mode MODE --manifest py.velo -- COMMAND…`
    let run_in = |mode: &str, command: &[&str]| {
        let mut args = vec!["run", "--mode", mode, "--manifest", "py.velo", "--"];
        args.extend_from_slice(command);
        velo_cmd(&args)
    };
    let python = |mode: &str| run_in(mode, &["python3", "-c", probe]);
    // Warm both caches and the page cache first.
    import_time(&mut python("farm"))?;
    import_time(&mut python("shim"))?;
    for _ in 0..opts.runs.max(5) {
        plain.push(import_time(
            Command::new("python3")
                .args(["-c", probe])
                .current_dir(&pkg_root),
        )?);
        farm.push(import_time(&mut python("farm"))?);
        shim.push(import_time(&mut python("shim"))?);
    }
    rm(&store.join("farms"))?;
    let (plain, farm, shim) = (Times(plain), Times(farm), Times(shim));
    let import_rows: Vec<Row> = vec![
        plain.row("plain directory", "reference".into()),
        farm.row(
            "farm mode",
            format!("{:.3}× plain", farm.min() / plain.min()),
        ),
        shim.row(
            "shim mode",
            format!("{:.3}× plain (target ≤ 1.05×)", shim.min() / plain.min()),
        ),
    ];

    // Per call: outside the tree, and a file of the tree.
    let bench = crate::util::build_shim_bench()?;
    let bench_s = bench.to_str().context("a UTF-8 path")?.to_owned();
    let calls = |cmd: &mut Command| -> Result<(f64, f64)> {
        let mut best = (f64::INFINITY, f64::INFINITY);
        for _ in 0..opts.runs.max(3) {
            let out = cmd.stdout(std::process::Stdio::piped()).output()?;
            anyhow::ensure!(out.status.success(), "{cmd:?} failed");
            let t: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let ns = |k: &str| crate::util::bench_ns(&t, k);
            best = (best.0.min(ns("stat_ns")?), best.1.min(ns("open_ns")?));
        }
        Ok(best)
    };
    let bench_in = |mode: &str, path: &str| run_in(mode, &[&bench_s, path, "1000000"]);
    let outside = "/etc/hostname";
    let native_out = calls(Command::new(&bench).args([outside, "1000000"]))?;
    let shim_out = calls(&mut bench_in("shim", outside))?;
    let inside = "benchpkg/m1.py";
    let native_in = calls(
        Command::new(&bench)
            .args([inside, "1000000"])
            .current_dir(&pkg_root),
    )?;
    let farm_in = calls(&mut bench_in("farm", inside))?;
    let shim_in = calls(&mut bench_in("shim", inside))?;
    rm(&store.join("farms"))?;
    let call_rows = [
        ("outside the tree, natively", native_out, native_out),
        (
            "outside the tree, shim mode (pass-through)",
            shim_out,
            native_out,
        ),
        ("a file of the tree: plain directory", native_in, native_in),
        ("a file of the tree: farm mode", farm_in, native_in),
        (
            "a file of the tree: shim mode (served from the image)",
            shim_in,
            native_in,
        ),
    ];

    let mut report = String::new();
    writeln!(report, "# Benchmark: velo run, farm mode vs shim mode\n")?;
    writeln!(
        report,
        "Generated by `cargo xtask bench modes --runs {} --files {}`.\n",
        opts.runs, opts.files
    )?;
    writeln!(report, "{}\n", machine()?)?;
    writeln!(
        report,
        "## From `velo run` to the exit of `/bin/true`\n\nFarm mode with the farm cache emptied before each run; shim mode with the image cache emptied (built) and then kept (cached).\n"
    )?;
    write_rows(&mut report, &start_rows)?;
    writeln!(
        report,
        "At {} files, shim mode (image cached) starts **{:.1}×** faster than farm mode builds its farm (target ≥ 50×).\n",
        sizes.last().expect("a size"),
        at_largest.0 / at_largest.1
    )?;
    writeln!(
        report,
        "## `import benchpkg` ({MODULES} modules, hash-checked bytecode), timed inside Python\n"
    )?;
    write_rows(&mut report, &import_rows)?;
    writeln!(
        report,
        "## Per call: `stat` and `open`+`close` (`shim-bench`, best of {} runs of 10⁶ calls)\n",
        opts.runs.max(3)
    )?;
    writeln!(
        report,
        "| path | stat ns | open+close ns | vs its reference |"
    )?;
    writeln!(report, "|---|---:|---:|---|")?;
    for (what, (stat, open), (ref_stat, ref_open)) in call_rows {
        writeln!(
            report,
            "| {what} | {stat:.0} | {open:.0} | stat +{:.0} ns, open +{:.0} ns |",
            stat - ref_stat,
            open - ref_open
        )?;
    }
    writeln!(report)?;
    super::finish(opts, "modes", &report, &work)
}
