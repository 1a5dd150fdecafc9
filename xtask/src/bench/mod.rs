//! `cargo xtask bench <area>`: velo against its peer tools, same data, same run.
//!
//! Each area prints a table of medians and ratios and writes it to `reports/bench-<area>.md`.
//! Nothing here asserts on timings: the targets are printed next to the measurements.

mod cache;
mod modes;
mod remote;
mod run;
mod scan;
mod shim;
mod store;
mod trace;

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Options {
    #[arg(value_enum)]
    area: Area,
    /// Repetitions of each timed command (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Files in the generated tree.
    #[arg(long, default_value_t = 100_000)]
    files: usize,
    /// Where to put the data and stores [default: a temporary directory, removed afterwards].
    #[arg(long)]
    work_dir: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Area {
    /// Ingest (cold and unchanged) vs `cp -a`; durability modes; hashing vs reading.
    Store,
    /// ns per stat/open with and without the shim; cargo builds natively vs under inception.
    Shim,
    /// Farm materialization vs `cp -al`/`cp -a`; `--isolate` start-up vs bubblewrap.
    Run,
    /// Farm mode vs shim mode: start-up on 1k, 10k and 100k files; a Python import.
    Modes,
    /// Clean build vs restore + no-op build of velo's workspace; restore vs `cp -a`; store
    /// bytes of successive snapshots.
    Cache,
    /// Native vs `velo trace` (eBPF, ptrace) vs strace on a clean and a no-op cargo build and on
    /// `find /usr`.
    Trace,
    /// velo scan vs grep -rF on the fixture's target and velo's own target/debug.
    Scan,
    /// A cold runner restoring velo's workspace from an S3 server vs a clean build; requests
    /// per restore; a second snapshot's upload; restore vs `tar | zstd` through the same server.
    Remote,
}

pub fn run(opts: Options) -> Result<()> {
    match opts.area {
        Area::Store => store::run(&opts),
        Area::Shim => shim::run(&opts),
        Area::Run => run::run(&opts),
        Area::Modes => modes::run(&opts),
        Area::Cache => cache::run(&opts),
        Area::Trace => trace::run(&opts),
        Area::Scan => scan::run(&opts),
        Area::Remote => remote::run(&opts),
    }
}

/// strace's path, installed with apt when missing and root (bench trace and shim use it).
pub fn strace() -> Result<std::path::PathBuf> {
    let find = || {
        ["/usr/bin/strace", "/bin/strace"]
            .into_iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("strace is not installed (apt-get install strace)");
    }
    crate::util::exec(
        std::process::Command::new("apt-get").args(["install", "-y", "-qq", "strace"]),
    )?;
    find().context("strace still missing after apt-get install")
}

/// Median of durations in seconds.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The per-round ratios `b[r] / a[r]` of two commands timed in the same rounds (see
/// [`measure_interleaved`]): their median and a 95% confidence interval for it (order
/// statistics, distribution-free). Pairing by round cancels the drift a round shares, so this
/// says what the minima's and medians' ratios cannot: whether a difference is more than noise.
/// `None` with fewer than 6 rounds, where no such interval exists.
pub fn paired_ratio(a: &Times, b: &Times) -> Option<(f64, f64, f64)> {
    let mut ratios: Vec<f64> = a.0.iter().zip(&b.0).map(|(a, b)| b / a).collect();
    let n = ratios.len();
    if n < 6 {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    // Ranks k and n + 1 - k (1-based) bound the median with 95% confidence for the largest k
    // with P(Bin(n, 1/2) < k) ≤ 2.5%.
    let (mut k, mut below, mut term) = (0, 0.0, 0.5f64.powi(n as i32));
    while below + term <= 0.025 {
        below += term;
        term *= (n - k) as f64 / (k + 1) as f64;
        k += 1;
    }
    let k = k.max(1);
    Some((ratios[n / 2], ratios[k - 1], ratios[n - k]))
}

/// One timed command: the minimum and median over the runs. Ratios use the minimum, the run
/// least disturbed by the machine (see the note at the top of the report).
pub struct Row {
    pub what: String,
    pub min: f64,
    pub median: f64,
    pub note: String,
}

#[derive(Debug)]
pub struct Times(pub Vec<f64>);

impl Times {
    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }
    pub fn median(&self) -> f64 {
        median(self.0.clone())
    }
    pub fn row(&self, what: &str, note: String) -> Row {
        Row {
            what: what.to_owned(),
            min: self.min(),
            median: self.median(),
            note,
        }
    }
}

pub fn write_rows(report: &mut String, rows: &[Row]) -> Result<()> {
    writeln!(report, "| command | min s | median s | ratio (of minima) |")?;
    writeln!(report, "|---|---:|---:|---|")?;
    for row in rows {
        let Row {
            what,
            min,
            median,
            note,
        } = row;
        writeln!(report, "| {what} | {min:.3} | {median:.3} | {note} |")?;
    }
    writeln!(report)?;
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("velo-bench-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The directory to work in: `--work-dir` (kept afterwards), else a fresh temporary one.
pub fn work_dir(opts: &Options) -> Result<PathBuf> {
    match &opts.work_dir {
        Some(dir) => {
            fs::create_dir_all(dir)?;
            Ok(dir.clone())
        }
        None => tempdir(),
    }
}

/// Prints `report`, writes it to `reports/bench-<area>.md`, and removes a temporary work dir.
pub fn finish(opts: &Options, area: &str, report: &str, work: &std::path::Path) -> Result<()> {
    use anyhow::Context as _;
    print!("{report}");
    let out = crate::util::root().join(format!("reports/bench-{area}.md"));
    fs::write(&out, report).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("written to {}", out.display());
    if opts.work_dir.is_none() {
        let _ = fs::remove_dir_all(work);
    }
    Ok(())
}

/// Which exit statuses a timed command may end with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Success,
    /// 0 or 1: tools that report what they found with exit 1 (grep, `velo scan`).
    ZeroOrOne,
}

/// Runs `cmd` (output discarded) and returns its wall time and the CPU time (user + system) of
/// it and every descendant it waited for, both in seconds.
fn timed(mut cmd: std::process::Command, expect: Expect) -> Result<(f64, f64)> {
    use std::process::Stdio;
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let cpu_before = children_cpu();
    let (elapsed, status) = crate::util::time(|| Ok(cmd.status()?))?;
    let ok = match expect {
        Expect::Success => status.success(),
        Expect::ZeroOrOne => matches!(status.code(), Some(0 | 1)),
    };
    anyhow::ensure!(ok, "{cmd:?} failed: {status}");
    Ok((elapsed.as_secs_f64(), children_cpu() - cpu_before))
}

/// User + system time of all waited-for children so far (`RUSAGE_CHILDREN`), in seconds.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given; all-zero is a valid rusage.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Times `make()` `runs` times (output discarded), running `prepare` untimed before each.
pub fn measure(
    runs: usize,
    mut prepare: impl FnMut() -> Result<()>,
    mut make: impl FnMut() -> std::process::Command,
    expect: Expect,
) -> Result<Times> {
    let mut times = Vec::new();
    for _ in 0..runs {
        prepare()?;
        times.push(timed(make(), expect)?.0);
    }
    Ok(Times(times))
}

/// Times each of `makes` `runs` times, in rounds that run each once (untimed `prepare` before
/// each), starting each round with the next command. On this VM the speed of the machine drifts
/// over minutes; taking the commands in turn makes each see the same drift, where timing one
/// command's runs and then the next's would compare different minutes.
pub fn measure_interleaved(
    runs: usize,
    prepare: impl FnMut() -> Result<()>,
    makes: &mut [&mut dyn FnMut() -> std::process::Command],
    expect: Expect,
) -> Result<Vec<Times>> {
    Ok(measure_interleaved_cpu(runs, prepare, makes, expect)?.0)
}

/// [`measure_interleaved`], also returning the CPU time each run took (user + system, the
/// command and its descendants): on a 2-core VM the wall time of a parallel build moves with
/// scheduling, while the CPU time shows what a command costs the machine.
pub fn measure_interleaved_cpu(
    runs: usize,
    mut prepare: impl FnMut() -> Result<()>,
    makes: &mut [&mut dyn FnMut() -> std::process::Command],
    expect: Expect,
) -> Result<(Vec<Times>, Vec<Times>)> {
    let mut wall = vec![Vec::new(); makes.len()];
    let mut cpu = vec![Vec::new(); makes.len()];
    for round in 0..runs {
        for k in 0..makes.len() {
            let i = (round + k) % makes.len();
            prepare()?;
            let (w, c) = timed(makes[i](), expect)?;
            wall[i].push(w);
            cpu[i].push(c);
        }
    }
    let times = |v: Vec<Vec<f64>>| v.into_iter().map(Times).collect();
    Ok((times(wall), times(cpu)))
}

/// `du -sb PATH`: the bytes under a directory.
pub fn du_bytes(path: &std::path::Path) -> Result<u64> {
    use anyhow::Context as _;
    let out = std::process::Command::new("du")
        .arg("-sb")
        .arg(path)
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du -sb")
}

/// A fresh copy of the fixture workspace at `WORK/ws` (mtimes kept).
pub fn copy_fixture(work: &std::path::Path) -> Result<PathBuf> {
    let ws = work.join("ws");
    store::rm(&ws)?;
    crate::util::exec(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(crate::util::root().join("tests/fixtures/inception-ws"))
            .arg(&ws),
    )?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratio_pairs_by_round() {
        // b is a's rounds, each 10% slower, with the rounds far apart: the pairing sees 1.1
        // exactly, where the medians alone would too but the spread would hide it.
        let a = Times((1..=30).map(f64::from).collect());
        let b = Times(a.0.iter().map(|x| x * 1.1).collect());
        let (median, low, high) = paired_ratio(&a, &b).unwrap();
        assert!(
            (median - 1.1).abs() < 1e-9 && (low - 1.1).abs() < 1e-9 && (high - 1.1).abs() < 1e-9
        );
        // n = 30: ranks 10 and 21 of the sorted ratios.
        let c = Times((1..=30).map(|i| f64::from(i) / 100.0 + 1.0).collect());
        let one = Times(vec![1.0; 30]);
        let (median, low, high) = paired_ratio(&one, &c).unwrap();
        assert_eq!((median, low, high), (1.16, 1.10, 1.21));
        assert!(paired_ratio(&Times(vec![1.0; 5]), &Times(vec![1.0; 5])).is_none());
    }
}
