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
//! - **`tar | zstd`** of A's `target/` through the same server (what rust-cache does), put and
//!   got with boto3 (a streaming GET piped into `zstd -d | tar -x`): vs velo's restore (its
//!   `velo cargo build` minus the no-op cargo run, which a tarball would need as well).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::store::rm;
use super::{Options, Times, du_bytes, write_rows};
use crate::util::{build_velo, exec, root, time, user_command};

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

/// `s3cp.py ENDPOINT put|get BUCKET KEY`: stdin to an object, or an object to stdout.
const S3CP: &str = r#"import shutil, sys, boto3, botocore.config
# moto's checksums of multipart objects are not what boto3 expects: no checksums either way.
config = botocore.config.Config(request_checksum_calculation="when_required",
                                response_checksum_validation="when_required")
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1", config=config)
op, bucket, key = sys.argv[2:5]
if op == "put":
    s3.upload_fileobj(sys.stdin.buffer, bucket, key)
else:
    shutil.copyfileobj(s3.get_object(Bucket=bucket, Key=key)["Body"], sys.stdout.buffer, 1 << 20)
"#;

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
            .env_remove("VELO_REMOTE_MODE")
            .envs(s3.env());
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
    eprintln!("tar | zstd of A's target/ through the same server …");
    // A real S3 client for the tarball (the server wants signed requests): boto3, which the
    // server's virtualenv has.
    let python = root().join("target/moto-venv/bin/python");
    ensure!(
        python.exists(),
        "no {} (the moto virtualenv)",
        python.display()
    );
    let script = work.join("s3cp.py");
    std::fs::write(&script, S3CP)?;
    let endpoint = format!("http://127.0.0.1:{}", s3.port);
    let s3cp = format!("{} {} {endpoint}", python.display(), script.display());
    let tarball = work.join("target.tar.zst");
    let (pack, ()) = time(|| {
        exec(Command::new("bash").arg("-o").arg("pipefail").arg("-c").arg(format!(
            "tar -C {} -cf - target | zstd -q -3 -T0 | tee {} | {s3cp} put velo bench-tarball/target.tar.zst",
            a.display(),
            tarball.display()
        )))
    })?;

    // Rounds of a cold runner B and of a tarball restore, in turn (which goes first alternates),
    // each into new paths: nothing is deleted until the end (ext4 creates files slowly for
    // minutes after a mass delete), and the page cache is settled before each.
    let mut restores = Vec::new();
    let mut cold = Vec::new();
    let mut tar_restores = Vec::new();
    let mut b_line = String::new();
    // Six rounds at least: the fewest for which the paired ratio has a confidence interval
    // (about 5 GiB of disk each: B's store and target/, the extracted tarball).
    let rounds = opts.runs.clamp(6, 8);
    for round in 0..rounds {
        eprintln!(
            "round {} of {rounds}: cold runner B and the tarball …",
            round + 1
        );
        let b = work.join(format!("b/builds/{round:02}/velo"));
        let name = format!("b{round}");
        checkout(&b)?;
        let dest = work.join(format!("tar-{round}"));
        std::fs::create_dir_all(&dest)?;
        for turn in 0..2 {
            exec(&mut Command::new("sync"))?;
            if (round + turn) % 2 == 0 {
                let said = velo_cargo(&mut machine(&name, &b, &home_b))?;
                ensure!(
                    said.fresh.0 == said.fresh.1,
                    "machine B compiled something: {}",
                    said.line
                );
                cold.push(said.seconds);
                restores.push(said.seconds - said.cargo_seconds);
                b_line = said.line;
            } else {
                let (took, ()) = time(|| {
                    exec(Command::new("bash").arg("-o").arg("pipefail").arg("-c").arg(format!(
                        "{s3cp} get velo bench-tarball/target.tar.zst | zstd -q -d -T0 | tar -C {} -xf -",
                        dest.display()
                    )))
                })?;
                tar_restores.push(took.as_secs_f64());
            }
        }
    }
    let requests = number_before(&b_line, "MiB, ", " requests").unwrap_or(f64::NAN);
    let per_round: Vec<String> = restores
        .iter()
        .zip(&tar_restores)
        .map(|(v, t)| format!("{:.2}", v / t))
        .collect();
    let paired = super::paired_ratio(&Times(tar_restores.clone()), &Times(restores.clone()))
        .map_or(String::new(), |(median, low, high)| {
            format!("; median of the rounds' ratios {median:.2}× [95% CI {low:.2}, {high:.2}]")
        });

    eprintln!("a one-line edit on A, built and pushed …");
    let main = a.join("velo/src/main.rs");
    let text = std::fs::read_to_string(&main)?;
    std::fs::write(&main, format!("{text}\n// bench remote: a one-line edit\n"))?;
    let edit = velo_cargo(&mut machine("a", &a, Path::new(&cargo_home)))?;
    let second_push = number_before(&edit.line, "pushed to", " MiB").context(edit.line.clone())?;
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
            "tar \\| zstd restore of the same target/ (boto3 GET, zstd -d, tar -x)",
            format!(
                "velo's restore takes {:.2}× this by minima (round by round: {}{paired})",
                restores.min() / tar_restores.min(),
                per_round.join(", ")
            ),
        ),
        Times(vec![pack.as_secs_f64()])
            .row("tar \\| zstd, then boto3 PUT (the save)", String::new()),
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
