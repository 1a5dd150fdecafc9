//! `cargo xtask bench remote`: a CI runner that restores velo's own workspace from an S3 server.
//!
//! The server is moto's S3 API on a local port (the test suite's, `velo_e2e::s3_server`). In one
//! run:
//!
//! - **machine A**: a clean `velo cargo build` of velo's workspace at `HEAD` (`git archive`),
//!   which saves a snapshot and pushes it to `s3://velo/bench`.
//! - **cold runner B**, `runs` times (at most 3): another checkout path, an empty store, another
//!   HOME and `CARGO_HOME` (the registry's downloads, not its sources), nothing shared with A but
//!   the server: `velo cargo build` fetches the snapshot, restores, and must compile nothing.
//!   Against the clean build (goal ≥ 15×); the requests the restore made (goal: tens).
//! - **a one-line edit** on A and its `velo cargo build`: the bytes the second push uploads vs
//!   the first's (goal ≤ 10 %).
//! - **`tar | zstd`** of A's `target/` through the same server (what rust-cache does), put with
//!   an unsigned PUT and restored with a GET into a fresh directory: vs velo's restore (its
//!   `velo cargo build` minus the no-op cargo run, which a tarball would need as well).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::store::rm;
use super::{Options, Times, du_bytes, write_rows};
use crate::util::{build_velo, exec, time, user_command};

/// What one `velo cargo build` said in its last line.
struct Said {
    seconds: f64,
    line: String,
    /// Units cargo found fresh, of all.
    fresh: (u64, u64),
    /// Cargo's own time, as the line says.
    cargo_seconds: f64,
}

/// The number before `unit` at its first occurrence after `after` in `line`.
fn number_before(line: &str, after: &str, unit: &str) -> Option<f64> {
    let rest = &line[line.find(after)?..];
    let end = rest.find(unit)?;
    rest[..end].rsplit([' ', '(']).next()?.parse().ok()
}

fn velo_cargo(cmd: &mut Command) -> Result<Said> {
    let (elapsed, out) = time(|| Ok(cmd.output()?))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{cmd:?} failed:\n{stderr}");
    let line = stderr
        .lines()
        .rfind(|l| l.starts_with("velo: "))
        .unwrap_or_default()
        .to_owned();
    let found = line
        .split("cargo found ")
        .nth(1)
        .context("velo's last line says what cargo found")?;
    let mut words = found.split_whitespace();
    let fresh: u64 = words.next().unwrap_or_default().parse()?;
    let all: u64 = words.nth(1).unwrap_or_default().parse()?;
    let cargo_seconds = number_before(&line, "units fresh", " s)").unwrap_or(0.0);
    Ok(Said {
        seconds: elapsed.as_secs_f64(),
        line,
        fresh: (fresh, all),
        cargo_seconds,
    })
}

fn checkout(dest: &Path) -> Result<()> {
    super::cache::checkout(dest)
}

pub fn run(opts: &Options) -> Result<()> {
    let velo = build_velo(true)?;
    let work = super::work_dir(opts)?;
    let Some(s3) = velo_e2e::s3_server("bench remote", &work) else {
        bail!("the S3 server (moto) could not be started: python3 -m venv and pip are needed");
    };
    let url = "s3://velo/bench";
    let user_home = std::env::var("HOME").context("HOME")?;
    let cargo_home = std::env::var("CARGO_HOME").unwrap_or(format!("{user_home}/.cargo"));
    let machine = |name: &str, dir: &Path, home: &Path| {
        let mut cmd = user_command(&velo, dir);
        cmd.args(["cargo", "build", "--offline"])
            .env("VELO_STORE", work.join(name).join("store"))
            .env("HOME", work.join(name).join("home"))
            .env("CARGO_HOME", home)
            .env("VELO_REMOTE", url)
            .env_remove("VELO_REMOTE_MODE");
        for (k, v) in s3.env() {
            cmd.env(k, v);
        }
        cmd
    };

    eprintln!("machine A: a clean build of velo's workspace, saved and pushed …");
    let a = work.join("a/src/velo");
    rm(&a)?;
    checkout(&a)?;
    let clean = velo_cargo(&mut machine("a", &a, Path::new(&cargo_home)))?;
    let first_push = number_before(&clean.line, "pushed to", " MiB").context(clean.line.clone())?;
    let target_bytes = du_bytes(&a.join("target"))?;

    // Machine B's CARGO_HOME: the registry's index and downloads, not their sources (velo
    // cargo extracts what the restored build needs).
    let home_b = work.join("b/cargo-home");
    rm(&home_b)?;
    std::fs::create_dir_all(home_b.join("registry"))?;
    for part in ["index", "cache"] {
        exec(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{cargo_home}/registry/{part}"))
                .arg(home_b.join("registry")),
        )?;
    }
    let mut restores = Vec::new();
    let mut cold = Vec::new();
    let mut b_line = String::new();
    for round in 0..opts.runs.clamp(1, 3) {
        eprintln!("cold runner B, round {} …", round + 1);
        let b = work.join(format!("b/builds/{round:02}/velo"));
        let name = format!("b{round}");
        rm(&b)?;
        rm(&work.join(&name))?;
        checkout(&b)?;
        let said = velo_cargo(&mut machine(&name, &b, &home_b))?;
        ensure!(
            said.fresh.0 == said.fresh.1,
            "machine B compiled something: {}",
            said.line
        );
        cold.push(said.seconds);
        restores.push(said.seconds - said.cargo_seconds);
        b_line = said.line;
    }
    let requests = number_before(&b_line, "MiB, ", " requests").unwrap_or(f64::NAN);

    eprintln!("a one-line edit on A, built and pushed …");
    let main = a.join("velo/src/main.rs");
    let text = std::fs::read_to_string(&main)?;
    std::fs::write(&main, format!("{text}\n// bench remote: a one-line edit\n"))?;
    let edit = velo_cargo(&mut machine("a", &a, Path::new(&cargo_home)))?;
    let second_push = number_before(&edit.line, "pushed to", " MiB").context(edit.line.clone())?;

    eprintln!("tar | zstd of target/ through the same server …");
    let tarball = work.join("target.tar.zst");
    let object = format!(
        "http://127.0.0.1:{}/velo/bench-tarball/target.tar.zst",
        s3.port
    );
    let (pack, ()) = time(|| {
        exec(Command::new("sh").arg("-c").arg(format!(
            "tar -C {} -cf - target | zstd -q -3 -T0 -o {} -f",
            a.display(),
            tarball.display()
        )))?;
        exec(
            Command::new("curl")
                .args(["-sf", "-T"])
                .arg(&tarball)
                .arg(&object),
        )
    })?;
    let mut tar_restores = Vec::new();
    for round in 0..opts.runs.clamp(1, 3) {
        let dest = work.join(format!("tar-{round}"));
        rm(&dest)?;
        std::fs::create_dir_all(&dest)?;
        let (took, ()) = time(|| {
            exec(Command::new("sh").arg("-c").arg(format!(
                "curl -sf {object} | zstd -q -d -T0 | tar -C {} -xf -",
                dest.display()
            )))
        })?;
        tar_restores.push(took.as_secs_f64());
        rm(&dest)?;
    }
    let tar_bytes = std::fs::metadata(&tarball)?.len();

    let (cold, restores, tar_restores) = (Times(cold), Times(restores), Times(tar_restores));
    let rows = vec![
        Times(vec![clean.seconds]).row(
            &format!(
                "machine A: velo cargo build, clean ({} units), save and push",
                clean.fresh.1
            ),
            "reference".into(),
        ),
        cold.row(
            "cold runner B: velo cargo build (fetch, restore, no-op build)",
            format!(
                "{:.1}× faster than the clean build (goal ≥ 15×)",
                clean.seconds / cold.min()
            ),
        ),
        restores.row(
            "  of which fetch + restore (velo's time without cargo's)",
            format!("{requests} requests (goal: tens)"),
        ),
        tar_restores.row(
            "tar | zstd restore of the same target/ (curl GET, zstd -d, tar -x)",
            format!(
                "velo's restore is {:.2}× this",
                restores.min() / tar_restores.min()
            ),
        ),
        Times(vec![pack.as_secs_f64()]).row("tar | zstd, then curl PUT (the save)", String::new()),
    ];
    let mut report = String::new();
    writeln!(report, "# Benchmark: velo's remote tier\n")?;
    writeln!(
        report,
        "Project: velo's own workspace at HEAD (`git archive`), debug profile, `--offline`; an S3 \
         server (moto {}) on a local port. Machine B shares nothing with A but the server: not \
         the store, HOME, checkout path or CARGO_HOME. {}\n",
        velo_e2e::MOTO_VERSION,
        super::store::machine()?
    )?;
    write_rows(&mut report, &rows)?;
    writeln!(report, "Machine B's last line:\n\n```\n{b_line}\n```\n")?;
    writeln!(report, "## Bytes\n")?;
    writeln!(report, "| | MiB |\n|---|---:|")?;
    writeln!(
        report,
        "| target/ (du -sb) | {:.1} |",
        target_bytes as f64 / 1048576.0
    )?;
    writeln!(
        report,
        "| tar \\| zstd -3 of target/ | {:.1} |",
        tar_bytes as f64 / 1048576.0
    )?;
    writeln!(report, "| first push (A's clean build) | {first_push:.1} |")?;
    writeln!(
        report,
        "| second push, after a one-line edit of velo/src/main.rs | {second_push:.1} |"
    )?;
    writeln!(
        report,
        "\nThe second push uploads {:.1} % of the first (goal ≤ 10 %). After the edit velo said:\n\n```\n{}\n```",
        100.0 * second_push / first_push,
        edit.line
    )?;
    drop(s3);
    super::finish(opts, "remote", &report, &work)
}
