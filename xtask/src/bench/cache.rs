//! `cargo xtask bench cache`: what a snapshot buys on a real project.
//!
//! The project is velo's own workspace at `HEAD` (`git archive`, so no `target/`): ~100 crates
//! from crates.io plus seven of its own, a build script and a proc macro among them. In one run:
//!
//! - **clean build vs restore + no-op build**: `cargo build` in checkout A under `velo
//!   inception` (the clean build) and `velo cache save`; then a fresh checkout B elsewhere (new
//!   mtimes, no `target/`): `velo cache restore` + `velo inception -- cargo build`, which must
//!   compile nothing (target: at least 30× faster, 100 % of units fresh). Native `cargo build`
//!   of another clean checkout is shown for reference.
//! - **restore vs `cp -a`** of the same target directory, same filesystem, caches settled.
//! - **incremental edit**: the same one-line edit of velo's main.rs in A and in B (restored,
//!   incremental caches included), each rebuilt (the seed's test 7: as fast in B as in A).
//! - **store bytes** for 3 successive snapshots (two edits of velo's library in between) vs
//!   3 × the target directory's size.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};

use super::store::{rm, settle};
use super::{Options, Times, du_bytes, write_rows};
use crate::util::{build_velo, exec, root, time, user_cargo, user_command};

/// `git archive HEAD` of velo's workspace into `dest`: a checkout with fresh mtimes.
pub(super) fn checkout(dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    let archive = Command::new("git")
        .current_dir(root())
        .args(["archive", "--format=tar", "HEAD"])
        .stdout(Stdio::piped())
        .spawn()
        .context("git archive (the bench needs velo's git repository)")?;
    let status = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .stdin(archive.stdout.context("git archive stdout")?)
        .status()?;
    ensure!(
        status.success(),
        "unpacking git archive into {}",
        dest.display()
    );
    Ok(())
}

/// Stderr of a build, and how many crates it compiled.
fn build(cmd: &mut Command) -> Result<(f64, usize)> {
    let (elapsed, out) = time(|| Ok(cmd.output()?))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{cmd:?} failed:\n{stderr}");
    let compiled = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("Compiling "))
        .count();
    Ok((elapsed.as_secs_f64(), compiled))
}

fn append(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub fn run(opts: &Options) -> Result<()> {
    let velo = build_velo(true)?;
    let work = super::work_dir(opts)?;
    let store = work.join("store");
    let velo_in = |dir: &Path, args: &[&str]| {
        let mut cmd = user_command(&velo, dir);
        cmd.env("VELO_STORE", &store).args(args);
        cmd
    };
    let projected = |dir: &Path| {
        let mut cmd = velo_in(dir, &["inception", "--", "cargo", "build", "--offline"]);
        cmd.stdout(Stdio::null());
        cmd
    };

    eprintln!("checkouts of velo's workspace in {} …", work.display());
    let (native, a, b) = (
        work.join("native/velo"),
        work.join("alice/velo"),
        work.join("ci/builds/9c2e/velo"),
    );
    for dir in [&native, &a] {
        rm(dir)?;
        checkout(dir)?;
    }
    eprintln!("clean builds (native, then under velo inception) …");
    let (native_clean, _) = build(user_cargo(&native).args(["build", "--offline"]))?;
    let (clean, clean_units) = build(&mut projected(&a))?;
    let (save, _) = time(|| exec(velo_in(&a, &["cache", "save"]).stdout(Stdio::null())))?;
    let target_bytes = du_bytes(&a.join("target"))?;

    // Restore + no-op build in fresh checkouts, `runs` times; and cp -a of the same target.
    let mut restores = Vec::new();
    let mut noops = Vec::new();
    let mut totals = Vec::new();
    let mut copies = Vec::new();
    let mut fresh_line = String::new();
    for i in 0..opts.runs {
        rm(&b)?;
        checkout(&b)?;
        settle(&store)?;
        let (restore, ()) =
            time(|| exec(velo_in(&b, &["cache", "restore"]).stdout(Stdio::null())))?;
        let mut noop_cmd = velo_in(&b, &["cargo", "build", "--offline"]);
        let (noop, out) = time(|| Ok(noop_cmd.output()?))?;
        ensure!(out.status.success(), "no-op build failed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !stderr
                .lines()
                .any(|l| l.trim_start().starts_with("Compiling")),
            "the restored checkout compiled something:\n{stderr}"
        );
        fresh_line = stderr
            .lines()
            .rfind(|l| l.starts_with("velo: "))
            .unwrap_or_default()
            .to_owned();
        restores.push(restore.as_secs_f64());
        noops.push(noop.as_secs_f64());
        totals.push((restore + noop).as_secs_f64());
        let copy = work.join(format!("copy-{i}"));
        settle(&a.join("target"))?;
        copies.push(
            time(|| {
                exec(
                    Command::new("cp")
                        .arg("-a")
                        .arg(a.join("target"))
                        .arg(&copy),
                )
            })?
            .0
            .as_secs_f64(),
        );
        rm(&copy)?;
    }
    let (restores, noops, totals, copies) =
        (Times(restores), Times(noops), Times(totals), Times(copies));

    // The seed's test 7: the same edit in A and in restored B, rebuilt incrementally.
    eprintln!("incremental edits …");
    let edit = "\n// bench: an edit\n";
    append(&a.join("velo/src/main.rs"), edit)?;
    append(&b.join("velo/src/main.rs"), edit)?;
    let (edit_a, units_a) = build(&mut projected(&a))?;
    let (edit_b, units_b) = build(&mut projected(&b))?;

    // Three successive commits: store growth vs three copies of target/.
    eprintln!("successive snapshots …");
    let blobs = store.join("blobs");
    let mut snapshot_bytes = vec![du_bytes(&blobs)?];
    for n in 2..=3 {
        append(
            &a.join("velo/src/lib.rs"),
            &format!("\n/// Commit {n} of the bench.\npub const BENCH_COMMIT_{n}: u32 = {n};\n"),
        )?;
        build(&mut projected(&a))?;
        exec(velo_in(&a, &["cache", "save"]).stdout(Stdio::null()))?;
        snapshot_bytes.push(du_bytes(&blobs)?);
    }
    let three_copies = 3 * target_bytes;
    let stored = *snapshot_bytes.last().expect("three");

    let rows = vec![
        Times(vec![native_clean]).row("native cargo build (clean checkout)", "reference".into()),
        Times(vec![clean]).row(
            &format!("velo inception -- cargo build (clean, {clean_units} crates compiled)"),
            format!("{:.2}× native", clean / native_clean),
        ),
        Times(vec![save.as_secs_f64()]).row("velo cache save (first snapshot)", String::new()),
        restores.row("velo cache restore (fresh checkout)", String::new()),
        noops.row(
            "velo cargo build after restore (no-op)",
            "0 crates compiled".into(),
        ),
        totals.row(
            "restore + no-op build",
            format!(
                "{:.1}× faster than the clean build (target ≥ 30×)",
                clean / totals.min()
            ),
        ),
        copies.row(
            "cp -a of the same target/",
            format!("restore is {:.2}× cp -a", restores.min() / copies.min()),
        ),
        Times(vec![edit_a]).row(
            &format!("edit velo/src/main.rs in A, rebuild ({units_a} crate)"),
            "reference".into(),
        ),
        Times(vec![edit_b]).row(
            &format!("the same edit in restored B, rebuild ({units_b} crate)"),
            format!("{:.2}× A", edit_b / edit_a),
        ),
    ];

    let mut report = String::new();
    writeln!(report, "# Benchmark: velo cache\n")?;
    writeln!(
        report,
        "Project: velo's own workspace at HEAD (`git archive`), debug profile, `--offline`, \
         {} runs of the restore rows (one of each build). {}\n",
        opts.runs,
        super::store::machine()?
    )?;
    write_rows(&mut report, &rows)?;
    writeln!(
        report,
        "After restore, velo cargo said:\n\n```\n{fresh_line}\n```\n"
    )?;
    writeln!(report, "## Store bytes for three successive snapshots\n")?;
    writeln!(report, "| | bytes |\n|---|---:|")?;
    writeln!(report, "| target/ (du -sb) | {target_bytes} |")?;
    writeln!(report, "| 3 × target/ | {three_copies} |")?;
    for (i, b) in snapshot_bytes.iter().enumerate() {
        writeln!(report, "| store blobs after snapshot {} | {b} |", i + 1)?;
    }
    writeln!(
        report,
        "\nThree snapshots take {:.2}× one target directory, {:.1}% of three copies.",
        stored as f64 / target_bytes as f64,
        100.0 * stored as f64 / three_copies as f64
    )?;
    super::finish(opts, "cache", &report, &work)
}
