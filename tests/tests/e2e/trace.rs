//! `velo trace` with the ptrace backend: a raw-syscall C program, a static busybox, fork/exec
//! trees, a syscall-bound workload, and a real cargo build under `--inception`.

use std::path::{Path, PathBuf};

use velo_e2e::{Cmd, Env, copy_tree, fixture};

/// `tests/fixtures/trace/raw.c` built with the system compiler into the env.
fn raw(env: &Env) -> PathBuf {
    let out = env.path().join("bin/raw");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    Cmd::new("cc")
        .args(["-O1", "-o"])
        .arg(&out)
        .arg(fixture("trace/raw.c"))
        .ok();
    out
}

fn workspace(env: &Env) -> PathBuf {
    let ws = env.path().join("ws");
    copy_tree(&fixture("inception-ws"), &ws);
    ws
}

/// `velo trace ARGS…` in `dir` (no `PWD`, a clean cargo environment).
fn trace(backend: &str, env: &Env, dir: &Path, args: &[&str]) -> Cmd {
    let mut all = vec!["trace", "--backend", backend];
    all.extend_from_slice(args);
    env.velo(all).clean_cargo_env().dir(dir)
}

/// The findings JSON velo printed after the command's own output.
fn findings(run: &velo_e2e::Run) -> serde_json::Value {
    let out = run.stdout();
    let start = out
        .find("\n{\n")
        .map(|i| i + 1)
        .or_else(|| out.starts_with("{\n").then_some(0))
        .unwrap_or_else(|| panic!("no findings JSON: {}", run.explain()));
    serde_json::from_str(&out[start..]).unwrap()
}

/// Traces `command` in `dir` with an event log at `log` (in the env), and returns its events.
fn logged(
    backend: &str,
    env: &Env,
    dir: &Path,
    log: &str,
    command: &[&str],
) -> Vec<serde_json::Value> {
    let log = env.path().join(log);
    let args = [&["--events", log.to_str().unwrap(), "--"][..], command].concat();
    trace(backend, env, dir, &args).ok();
    events(&log)
}

fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_raw_openat_is_uncaught_and_a_raw_getcwd_leaks() {
    velo_e2e::each_tracer_backend(
        "a_raw_openat_is_uncaught_and_a_raw_getcwd_leaks",
        a_raw_openat_is_uncaught_and_a_raw_getcwd_leaks_with,
    );
}

fn a_raw_openat_is_uncaught_and_a_raw_getcwd_leaks_with(backend: &str) {
    let env = Env::new();
    let raw = raw(&env);
    let ws = workspace(&env);
    let raw_s = raw.to_str().unwrap();
    let run = trace(
        backend,
        &env,
        &ws,
        &[
            "--inception",
            "--json",
            "--",
            raw_s,
            "openat",
            "/vrift_workspace/Cargo.toml",
        ],
    )
    .run();
    // The raw openat fails (nothing is at /vrift_workspace): exit 3, passed through.
    assert_eq!(run.code(), Some(3), "{}", run.explain());
    let findings = findings(&run);
    let uncaught = findings["uncaught"].as_array().unwrap();
    assert_eq!(uncaught.len(), 1, "{findings:#}");
    assert_eq!(uncaught[0]["syscall"], "openat");
    assert_eq!(uncaught[0]["exe"], raw_s);
    assert_eq!(uncaught[0]["example_path"], "/vrift_workspace/Cargo.toml");
    assert!(
        uncaught[0]["entry_points"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "openat"),
        "names the hooked libc functions: {findings:#}"
    );

    let run = trace(
        backend,
        &env,
        &ws,
        &["--inception", "--json", "--", raw_s, "getcwd"],
    )
    .ok();
    assert_eq!(
        run.stdout().lines().next(),
        Some(ws.to_str().unwrap()),
        "raw: physical"
    );
    let findings = self::findings(&run);
    let leaks = findings["leaks"].as_array().unwrap();
    assert_eq!(leaks.len(), 1, "{findings:#}");
    assert_eq!(leaks[0]["syscall"], "getcwd");
    assert_eq!(leaks[0]["example_path"], ws.to_str().unwrap());
    // The shim's own getcwd, readlink and realpath calls are not leaks: pwd under the shim.
    let clean = trace(
        backend,
        &env,
        &ws,
        &[
            "--inception",
            "--json",
            "--",
            "sh",
            "-c",
            "pwd; realpath .; readlink /proc/self/cwd",
        ],
    )
    .ok();
    let text = clean.stdout();
    assert!(
        text.starts_with("/vrift_workspace\n/vrift_workspace\n/vrift_workspace\n"),
        "{text}"
    );
    let findings = self::findings(&clean);
    assert_eq!(findings["counts"]["leaks"], 0, "{findings:#}");
    assert_eq!(findings["counts"]["uncaught"], 0, "{findings:#}");

    // The physical path written into a file under the project, through a temporary that is
    // renamed into place (as rustc and linkers do): a leak of the writer, found at its final
    // name. The same text written with the canonical path is not.
    let script = format!("{raw_s} getcwd > out.tmp && mv out.tmp out.txt && pwd > clean.txt");
    let run = trace(
        backend,
        &env,
        &ws,
        &["--inception", "--json", "--", "sh", "-c", &script],
    )
    .ok();
    let findings = self::findings(&run);
    let written: Vec<&serde_json::Value> = findings["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["syscall"] == "write")
        .collect();
    assert_eq!(written.len(), 1, "{findings:#}");
    assert_eq!(written[0]["count"], 1, "out.txt only: {findings:#}");
    assert_eq!(
        written[0]["example_path"],
        ws.join("out.txt").to_str().unwrap(),
        "{findings:#}"
    );
}

#[test]
fn a_static_busybox_is_unshimmed() {
    velo_e2e::each_tracer_backend(
        "a_static_busybox_is_unshimmed",
        a_static_busybox_is_unshimmed_with,
    );
}

fn a_static_busybox_is_unshimmed_with(backend: &str) {
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        velo_e2e::skip(
            "a_static_busybox_is_unshimmed",
            "busybox-static is not installed (apt-get install busybox-static)",
        );
        return;
    };
    let env = Env::new();
    let ws = workspace(&env);
    let run = trace(
        backend,
        &env,
        &ws,
        &[
            "--inception",
            "--json",
            "--",
            busybox.to_str().unwrap(),
            "cat",
            "Cargo.toml",
        ],
    )
    .ok();
    let findings = findings(&run);
    let unshimmed = findings["unshimmed"].as_array().unwrap();
    assert_eq!(unshimmed.len(), 1, "{findings:#}");
    let real = std::fs::canonicalize(&busybox).unwrap();
    assert_eq!(
        unshimmed[0]["exe"],
        real.to_str().unwrap(),
        "as the kernel names it"
    );
    assert!(
        unshimmed[0]["advice"]
            .as_str()
            .unwrap()
            .contains("--mode farm")
    );
}

#[test]
fn fork_exec_trees_are_followed_and_no_event_is_lost() {
    velo_e2e::each_tracer_backend(
        "fork_exec_trees_are_followed_and_no_event_is_lost",
        fork_exec_trees_are_followed_and_no_event_is_lost_with,
    );
}

fn fork_exec_trees_are_followed_and_no_event_is_lost_with(backend: &str) {
    let env = Env::new();
    let raw = raw(&env);
    let ws = workspace(&env);
    let all = logged(
        backend,
        &env,
        &ws,
        "events.jsonl",
        &[raw.to_str().unwrap(), "tree", "4"],
    );
    // Four processes, each a child of the previous one, each opening its own program.
    let forks: Vec<(i64, i64)> = all
        .iter()
        .filter(|e| e["kind"] == "fork" && e["thread"] == false)
        .map(|e| (e["parent"].as_i64().unwrap(), e["pid"].as_i64().unwrap()))
        .collect();
    assert_eq!(forks.len(), 3, "{forks:?}");
    // A chain, whatever order the tracer saw the three forks in (under ptrace a child's fork
    // can be reported before its parent's).
    let (first, _) = *forks
        .iter()
        .find(|(parent, _)| !forks.iter().any(|(_, child)| child == parent))
        .expect("the chain has a start");
    let mut at = first;
    for _ in 0..3 {
        at = forks
            .iter()
            .find(|(parent, _)| *parent == at)
            .map(|(_, child)| *child)
            .unwrap_or_else(|| panic!("not a chain: {forks:?}"));
    }
    let opens: Vec<i64> = all
        .iter()
        .filter(|e| e["syscall"] == "open" || e["syscall"] == "openat")
        .filter(|e| e["paths"][0] == raw.to_str().unwrap())
        .map(|e| e["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(opens.len(), 4, "every level's open is seen");
    assert!(opens.contains(&forks[2].1), "the deepest process too");
    let execs = all.iter().filter(|e| e["kind"] == "exec").count();
    assert_eq!(execs, 4);

    // 100,000 syscalls: every one is recorded (ptrace stops the tracee: nothing can drop).
    let n = 100_000;
    let stats = logged(
        backend,
        &env,
        &ws,
        "stat.jsonl",
        &[raw.to_str().unwrap(), "stat", &n.to_string(), "Cargo.toml"],
    )
    .iter()
    .filter(|e| e["syscall"] == "newfstatat" && e["paths"][0] == "Cargo.toml")
    .count();
    assert_eq!(stats, n);
}

/// Exec calls carry their paths as given and resolved, a failed one and a successful one alike:
/// the eBPF backend takes a successful exec's path from the kernel's exec record, as the
/// syscall's own arguments are gone at its exit, and execveat's from its directory descriptor,
/// close-on-exec though it is.
#[test]
fn exec_calls_carry_their_paths_given_and_resolved() {
    velo_e2e::each_tracer_backend(
        "exec_calls_carry_their_paths_given_and_resolved",
        exec_calls_carry_their_paths_given_and_resolved_with,
    );
}

fn exec_calls_carry_their_paths_given_and_resolved_with(backend: &str) {
    let env = Env::new();
    let raw = raw(&env);
    let all = logged(
        backend,
        &env,
        env.path(),
        "events.jsonl",
        &[raw.to_str().unwrap(), "exec", "bin", "raw"],
    );
    // The command's own exec, by velo, comes first: these are the program's.
    let call = |name: &str, path: &str| {
        all.iter()
            .find(|e| e["syscall"] == name && e["paths"][0] == path)
            .unwrap_or_else(|| panic!("no {name} of {path} in {all:#?}"))
    };
    let failed = call("execve", "no/such/program");
    assert_eq!(
        failed["resolved"][0],
        env.path().join("no/such/program").to_str().unwrap()
    );
    assert!(failed["ret"].as_i64().unwrap() < 0, "{failed}");
    let done = call("execveat", "raw");
    assert_eq!(done["resolved"][0], raw.to_str().unwrap(), "{done}");
    assert_eq!(done["ret"], 0, "{done}");
    assert!(
        all.iter()
            .any(|e| e["syscall"] == "access" && e["paths"][0] == "bin"),
        "the exec'd program ran"
    );
}

#[test]
fn paths_relative_to_descriptors_are_resolved_after_dup_close_and_reuse() {
    velo_e2e::each_tracer_backend(
        "paths_relative_to_descriptors_are_resolved_after_dup_close_and_reuse",
        paths_relative_to_descriptors_are_resolved_after_dup_close_and_reuse_with,
    );
}

fn paths_relative_to_descriptors_are_resolved_after_dup_close_and_reuse_with(backend: &str) {
    let env = Env::new();
    let raw = raw(&env);
    let (a, b) = (env.path().join("a"), env.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let resolved: Vec<(String, String)> = logged(
        backend,
        &env,
        env.path(),
        "events.jsonl",
        &[
            raw.to_str().unwrap(),
            "dirfd",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
    )
    .iter()
    .filter(|e| e["syscall"] == "faccessat" || e["syscall"] == "faccessat2")
    .map(|e| {
        (
            e["paths"][0].as_str().unwrap().to_owned(),
            e["resolved"][0].as_str().unwrap().to_owned(),
        )
    })
    .collect();
    let expected: Vec<(String, String)> = [
        ("in-a", &a),
        ("in-b", &b),
        ("via-dupfd", &a),
        ("in-child", &a),
    ]
    .iter()
    .map(|(name, dir)| (name.to_string(), dir.join(name).display().to_string()))
    .collect();
    assert_eq!(resolved, expected, "{backend}");
}

#[test]
fn a_cargo_build_under_inception_has_no_findings() {
    velo_e2e::each_tracer_backend(
        "a_cargo_build_under_inception_has_no_findings",
        a_cargo_build_under_inception_has_no_findings_with,
    );
}

fn a_cargo_build_under_inception_has_no_findings_with(backend: &str) {
    let env = Env::new();
    let ws = workspace(&env);
    let run = trace(
        backend,
        &env,
        &ws,
        &["--inception", "--json", "--", "cargo", "build"],
    )
    .ok();
    let findings = findings(&run);
    assert_eq!(findings["counts"]["uncaught"], 0, "{findings:#}");
    assert_eq!(findings["counts"]["leaks"], 0, "{findings:#}");
    assert_eq!(findings["counts"]["unshimmed"], 0, "{findings:#}");
    assert!(
        findings["counts"]["processes"].as_u64().unwrap() >= 5,
        "cargo, rustc, build script…"
    );
    assert!(findings["counts"]["syscalls"].as_u64().unwrap() > 1000);
}

#[test]
fn the_exit_status_passes_through_and_killing_velo_kills_the_tracees() {
    velo_e2e::each_tracer_backend(
        "the_exit_status_passes_through_and_killing_velo_kills_the_tracees",
        the_exit_status_passes_through_and_killing_velo_kills_the_tracees_with,
    );
}

fn the_exit_status_passes_through_and_killing_velo_kills_the_tracees_with(backend: &str) {
    let env = Env::new();
    let ws = workspace(&env);
    trace(backend, &env, &ws, &["--", "sh", "-c", "exit 7"])
        .run()
        .expect_code(7);
    let killed = trace(backend, &env, &ws, &["--", "sh", "-c", "kill -TERM $$"]).run();
    assert_eq!(killed.code(), Some(128 + 15), "{}", killed.explain());

    // velo killed with SIGKILL: PTRACE_O_EXITKILL takes the traced command with it.
    let marker = env.path().join("tracee.pid");
    let mut velo = std::process::Command::new(velo_e2e::velo_bin())
        .args(["trace", "--backend", backend, "--", "sh", "-c"])
        .arg(format!("echo $$ > {}; exec sleep 60", marker.display()))
        .current_dir(&ws)
        .env("VELO_STORE", env.store())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&marker)
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tracee did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    velo.kill().unwrap();
    velo.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // SAFETY: kill with signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break; // dead, waiting for its parent (now init) to reap it
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tracee outlived velo: {state}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The eBPF backend keeps up with a 100,000-stat burst while a cargo build runs beside it on
/// the same two cores, writing every event to the log as well: nothing is dropped, and every
/// stat is in the log.
#[test]
fn a_stat_burst_beside_a_running_build_drops_nothing() {
    let _tracing = velo_e2e::tracer_lock();
    if !velo_e2e::is_root() {
        velo_e2e::skip(
            "a_stat_burst_beside_a_running_build_drops_nothing",
            "loading BPF programs needs root",
        );
        return;
    }
    let env = Env::new();
    let raw = raw(&env);
    let ws = workspace(&env);
    let log = env.path().join("burst.jsonl");
    let n = 100_000;
    let script = format!(
        "cargo build --offline -q & {} stat {n} Cargo.toml; wait",
        raw.display()
    );
    let run = trace(
        "ebpf",
        &env,
        &ws,
        &[
            "--json",
            "--events",
            log.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .ok();
    let found = findings(&run);
    assert_eq!(found["counts"]["dropped"], 0, "{found:#}");
    let stats = events(&log)
        .iter()
        .filter(|e| e["syscall"] == "newfstatat" && e["paths"][0] == "Cargo.toml")
        .count();
    assert_eq!(stats, n, "every stat of the burst is in the log");
    assert!(
        ws.join("target/debug").is_dir(),
        "the build ran beside the burst: {}",
        run.explain()
    );
}

/// `--program-costs` reports the kernel's own count of each program's runs and run time: the
/// syscall hook ran at least once per traced stat, and every program is named.
#[test]
fn program_costs_are_the_kernels_count_of_each_program() {
    let _tracing = velo_e2e::tracer_lock();
    let env = Env::new();
    let raw = raw(&env);
    let n = 2000;
    let stat = [raw.to_str().unwrap(), "stat", "2000", "/"];
    let ptrace = trace(
        "ptrace",
        &env,
        env.path(),
        &[&["--program-costs", "--"][..], &stat].concat(),
    )
    .ok();
    assert!(
        ptrace
            .stderr()
            .contains("the ptrace backend runs no kernel programs"),
        "{}",
        ptrace.explain()
    );
    if !velo_e2e::is_root() {
        velo_e2e::skip(
            "program_costs_are_the_kernels_count_of_each_program",
            "loading BPF programs needs root",
        );
        return;
    }
    let run = trace(
        "ebpf",
        &env,
        env.path(),
        &[&["--program-costs", "--json", "--"][..], &stat].concat(),
    )
    .ok();
    let found = findings(&run);
    let programs = found["programs"].as_array().expect("programs in the JSON");
    let names: Vec<&str> = programs
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["velo_sys_exit", "velo_fork", "velo_exec", "velo_exit"]
    );
    let exit = &programs[0];
    assert!(exit["runs"].as_u64().unwrap() >= n, "{exit}");
    assert!(exit["ns"].as_u64().unwrap() > 0, "{exit}");
    let exec = &programs[2];
    assert!(
        exec["runs"].as_u64().unwrap() >= 1,
        "the command's exec: {exec}"
    );

    let text = trace(
        "ebpf",
        &env,
        env.path(),
        &[&["--program-costs", "--"][..], &stat].concat(),
    )
    .ok();
    assert!(
        text.stderr().contains("velo_sys_exit") && text.stderr().contains("ns per event delivered"),
        "{}",
        text.explain()
    );
}
