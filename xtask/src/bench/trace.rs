//! `cargo xtask bench trace`: what watching costs.
//!
//! Three workloads, each native, under `velo trace --backend ebpf` and `--backend ptrace`, and under
//! `strace -f -e trace=%file -o /dev/null` (installed with apt when missing and root), in the same
//! run: a clean `cargo build` of the fixture workspace, a no-op `cargo build` (bound by
//! syscalls, so it shows a tracer's real cost) and `find /usr -name '*.h'`. Targets: eBPF at
//! most 1.05× native on the clean build and 1.2× on the syscall-bound ones; ptrace at most half
//! of strace's time. Needs root (the eBPF rows) and strace.

use std::fmt::Write as _;
use std::process::{Command, Stdio};

use anyhow::Result;

use super::store::rm;
use super::{
    Expect, Options, Times, copy_fixture, measure_interleaved, measure_interleaved_cpu,
    paired_ratio, strace, write_rows,
};
use crate::util::{build_velo, exec, user_cargo, user_command};

pub fn run(opts: &Options) -> Result<()> {
    let velo = build_velo(true)?;
    let strace = strace()?;
    let work = super::work_dir(opts)?;
    let ws = copy_fixture(&work)?;
    let target = ws.join("target");

    let native = |args: &[&str]| {
        let mut c = user_cargo(&ws);
        c.args(args);
        c
    };
    let traced = |backend: &str, args: &[&str]| {
        let mut c = user_command(&velo, &ws);
        c.args(["trace", "--backend", backend, "--", "cargo"])
            .args(args);
        c
    };
    let straced = |args: &[&str]| {
        let mut c = user_command(&strace, &ws);
        c.args(["-f", "-e", "trace=%file", "-o", "/dev/null", "cargo"])
            .args(args);
        c
    };
    let clean = || rm(&target);
    let none = || Ok(());

    let mut rows = Vec::new();
    let mut paired = Vec::new();
    let mut section = |name: &str, n: Times, e: Times, p: Times, s: Times, target: f64| {
        paired.push(Paired::of(name, &n, &e, &p, &s, target));
        rows.push(n.row(&format!("{name}: native"), "baseline".into()));
        rows.push(e.row(
            &format!("{name}: velo trace --backend ebpf"),
            format!("{:.3}× native (target ≤ {target}×)", e.min() / n.min()),
        ));
        rows.push(p.row(
            &format!("{name}: velo trace --backend ptrace"),
            format!(
                "{:.2}× native, {:.2}× strace (target ≤ 0.5× strace)",
                p.min() / n.min(),
                p.min() / s.min()
            ),
        ));
        rows.push(s.row(
            &format!("{name}: strace -f -e trace=%file"),
            format!("{:.2}× native", s.min() / n.min()),
        ));
    };

    // Each workload's four commands are timed in turn (see `measure_interleaved`); their CPU
    // times are kept for the paired table.
    let cpu_times = std::cell::RefCell::new(Vec::<Vec<Times>>::new());
    let four = |runs: usize, prepare: &dyn Fn() -> Result<()>, args: &[&str]| {
        let (mut n, mut e, mut p, mut s) = (
            || native(args),
            || traced("ebpf", args),
            || traced("ptrace", args),
            || straced(args),
        );
        let (times, cpu) = measure_interleaved_cpu(
            runs,
            prepare,
            &mut [&mut n, &mut e, &mut p, &mut s],
            Expect::Success,
        )?;
        let [n, e, p, s]: [Times; 4] = times.try_into().expect("four commands");
        cpu_times.borrow_mut().push(cpu);
        anyhow::Ok((n, e, p, s))
    };
    eprintln!("clean builds …");
    // More rounds than the other areas: a round of this VM varies more than the targets' 5 %.
    let runs = opts.runs.max(8);
    let (n, e, p, s) = four(runs, &clean, &["build"])?;
    section("clean cargo build (fixture)", n, e, p, s, 1.05);

    eprintln!("no-op builds …");
    exec(native(&["build"]).stderr(Stdio::null()))?;
    // Fast commands: more runs, so that one disturbed run does not decide.
    let runs_fast = runs.max(20);
    let (n, e, p, s) = four(runs_fast, &none, &["build"])?;
    section("no-op cargo build (fixture)", n, e, p, s, 1.2);

    eprintln!("find /usr -name '*.h' …");
    let find_args = ["/usr", "-name", "*.h"];
    let velo_find = |backend: &str| {
        let mut c = Command::new(&velo);
        c.args(["trace", "--backend", backend, "--", "find"])
            .args(find_args);
        c
    };
    let (times, cpu) = measure_interleaved_cpu(
        runs_fast,
        none,
        &mut [
            &mut || {
                let mut c = Command::new("find");
                c.args(find_args);
                c
            },
            &mut || velo_find("ebpf"),
            &mut || velo_find("ptrace"),
            &mut || {
                let mut c = Command::new(&strace);
                c.args(["-f", "-e", "trace=%file", "-o", "/dev/null", "find"])
                    .args(find_args);
                c
            },
        ],
        Expect::Success,
    )?;
    let [n, e, p, s]: [Times; 4] = times.try_into().expect("four commands");
    cpu_times.borrow_mut().push(cpu);
    section("find /usr -name '*.h'", n, e, p, s, 1.3);

    // The fixed cost of each backend: tracing `true`.
    let startup = |backend: &str| {
        let mut c = Command::new(&velo);
        c.args(["trace", "--backend", backend, "--", "true"]);
        c
    };
    let times = measure_interleaved(
        runs_fast,
        none,
        &mut [
            &mut || Command::new("true"),
            &mut || startup("ebpf"),
            &mut || startup("ptrace"),
        ],
        Expect::Success,
    )?;
    let [n, e, p]: [Times; 3] = times.try_into().expect("three commands");
    rows.push(n.row("start-up: true, native", "baseline".into()));
    rows.push(e.row(
        "start-up: velo trace --backend ebpf -- true",
        "4 offsets and 4 type ids from the kernel's BTF (scanned once a boot, then cached), 4 programs verified in parallel and attached, an 8 MiB ring mapped".into(),
    ));
    rows.push(p.row(
        "start-up: velo trace --backend ptrace -- true",
        String::new(),
    ));

    // Where the eBPF backend's time goes: the kernel's own count of each program's runs and
    // run time, one untimed run per workload.
    eprintln!("program costs …");
    let mut costs = Vec::new();
    let with_costs = |mut c: Command, command: &[&str]| {
        c.args([
            "trace",
            "--backend",
            "ebpf",
            "--program-costs",
            "--json",
            "--",
        ])
        .args(command);
        program_costs(c)
    };
    let cargo_costs = || with_costs(user_command(&velo, &ws), &["cargo", "build"]);
    clean()?;
    costs.push(("clean cargo build (fixture)", cargo_costs()?));
    costs.push(("no-op cargo build (fixture)", cargo_costs()?));
    let find = [&["find"][..], &find_args].concat();
    costs.push((
        "find /usr -name '*.h'",
        with_costs(Command::new(&velo), &find)?,
    ));

    let mut report = String::new();
    writeln!(report, "# Benchmark: velo trace\n")?;
    writeln!(
        report,
        "{} runs per row ({} for the no-op build, `find` and start-up); the commands of a \
         workload are timed in turn, round by round. {}\n",
        runs,
        runs_fast,
        super::store::machine()?
    )?;
    write_rows(&mut report, &rows)?;
    writeln!(
        report,
        "## Paired per-round ratios\n\nEach round times the four commands of a workload back \
         to back, so a ratio taken within a round cancels the drift the round shares. Median \
         of the rounds' ratios, with a 95% confidence interval for it (order statistics). The \
         ptrace column is its overhead over strace's (traced minus native time), round by \
         round.\n"
    )?;
    writeln!(
        report,
        "| workload | eBPF / native, wall | eBPF / native, CPU | eBPF target | ptrace overhead / strace overhead | target |"
    )?;
    writeln!(report, "|---|---|---|---|---|---|")?;
    for (p, cpu) in paired.iter().zip(cpu_times.borrow().iter()) {
        let cpu_ratio = paired_ratio(&cpu[0], &cpu[1]);
        writeln!(
            report,
            "| {} | {} | {} | ≤ {}× | {} | ≤ 0.5× |",
            p.name,
            interval(p.ebpf),
            interval(cpu_ratio),
            p.target,
            interval(p.ptrace_overhead)
        )?;
    }
    writeln!(report)?;
    write_costs(&mut report, &costs)?;
    super::finish(opts, "trace", &report, &work)
}

/// One run's events and its programs' (name, runs, ns), from `velo trace --program-costs --json`.
struct Costs {
    events: u64,
    programs: Vec<(String, u64, u64)>,
}

/// Runs `velo trace --program-costs --json … -- CMD` (`c`) and reads the costs it printed.
fn program_costs(mut c: Command) -> Result<Costs> {
    let out = c.stderr(Stdio::null()).output()?;
    anyhow::ensure!(out.status.success(), "{c:?} failed");
    // The findings follow whatever the command printed (find's paths).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let start = match stdout.rfind("\n{\n") {
        Some(i) => i + 1,
        None => 0,
    };
    let json: serde_json::Value = serde_json::from_str(&stdout[start..])
        .map_err(|e| anyhow::anyhow!("the findings JSON of {c:?}: {e}"))?;
    let programs = json["programs"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no programs in the output of {c:?}"))?
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("?").to_owned(),
                p["runs"].as_u64().unwrap_or(0),
                p["ns"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    Ok(Costs {
        events: json["counts"]["events"].as_u64().unwrap_or(0),
        programs,
    })
}

fn write_costs(report: &mut String, costs: &[(&str, Costs)]) -> Result<()> {
    writeln!(
        report,
        "## Where the eBPF backend's time goes\n\nThe kernel's own count of each program's runs \
         and run time (`velo trace --program-costs`, BPF_ENABLE_STATS), one untimed run per \
         workload. The syscall hooks run for every syscall of the machine, so runs exceed the \
         traced events; the statistics themselves add two clock reads to every run. Per event: \
         all programs' time over the events delivered.\n"
    )?;
    writeln!(
        report,
        "| workload | events | syscalls seen | sys_exit ns/run | all programs, ms | ns per event |"
    )?;
    writeln!(report, "|---|---:|---:|---:|---:|---:|")?;
    for (name, c) in costs {
        let find = |n: &str| c.programs.iter().find(|p| p.0 == n);
        let per = |p: Option<&(String, u64, u64)>| p.map_or(0, |p| p.2 / p.1.max(1));
        let total: u64 = c.programs.iter().map(|p| p.2).sum();
        writeln!(
            report,
            "| {name} | {} | {} | {} | {:.1} | {} |",
            c.events,
            find("velo_sys_exit").map_or(0, |p| p.1),
            per(find("velo_sys_exit")),
            total as f64 / 1e6,
            total / c.events.max(1)
        )?;
    }
    writeln!(report)?;
    Ok(())
}

/// A workload's paired ratios.
struct Paired {
    name: String,
    target: f64,
    ebpf: Option<(f64, f64, f64)>,
    ptrace_overhead: Option<(f64, f64, f64)>,
}

impl Paired {
    fn of(name: &str, n: &Times, e: &Times, p: &Times, s: &Times, target: f64) -> Paired {
        let over = |t: &Times| Times(t.0.iter().zip(&n.0).map(|(t, n)| t - n).collect());
        Paired {
            name: name.to_owned(),
            target,
            ebpf: paired_ratio(n, e),
            ptrace_overhead: paired_ratio(&over(s), &over(p)),
        }
    }
}

fn interval(r: Option<(f64, f64, f64)>) -> String {
    match r {
        Some((median, lo, hi)) => format!("{median:.3}× [{lo:.3}, {hi:.3}]"),
        None => "(too few rounds)".into(),
    }
}
