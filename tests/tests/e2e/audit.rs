//! `velo audit`: the report of a plain build and of a projected, traced one; the gate and
//! baselines; every format (the snapshots are in reports.rs).

use std::path::{Path, PathBuf};

use velo_e2e::{Cmd, Env, copy_tree, fixture};

fn workspace(env: &Env) -> PathBuf {
    let ws = env.path().join("ws");
    copy_tree(&fixture("inception-ws"), &ws);
    ws
}

fn audit(env: &Env, ws: &Path, args: &[&str]) -> Cmd {
    let mut all = vec!["audit", "--root", ws.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut cmd = env.velo(all).clean_cargo_env().dir(ws);
    cmd.cmd.env_remove("PWD");
    cmd
}

#[test]
fn a_plain_build_fails_the_gate_until_baselined() {
    let env = Env::new();
    let ws = workspace(&env);
    Cmd::new("cargo")
        .arg("build")
        .clean_cargo_env()
        .dir(&ws)
        .ok();
    let report = audit(&env, &ws, &["--no-build", "--format", "json"])
        .ok()
        .json();
    assert_eq!(report["schema"], 1);
    assert_eq!(report["summary"]["crates_missing_cache"], 1, "{report:#}");
    assert_eq!(report["missing_cache"][0]["crate_name"], "app");
    assert_eq!(
        report["summary"]["gating"], 2,
        "output and root-output of app's build script"
    );
    audit(&env, &ws, &["--no-build", "--gate"])
        .run()
        .expect_code(1)
        .stderr_has(&["gate failed", "2 finding(s)"]);

    let baseline = env.path().join("baseline.json");
    audit(
        &env,
        &ws,
        &["--no-build", "--write-baseline", baseline.to_str().unwrap()],
    )
    .ok();
    let ids: Vec<String> = serde_json::from_slice(&std::fs::read(&baseline).unwrap()).unwrap();
    assert_eq!(
        ids,
        [
            "freshness:app:debug/build/app-*/output",
            "freshness:app:debug/build/app-*/root-output"
        ]
    );
    audit(
        &env,
        &ws,
        &[
            "--no-build",
            "--gate",
            "--baseline",
            baseline.to_str().unwrap(),
        ],
    )
    .ok();

    std::fs::write(&baseline, "not json").unwrap();
    audit(
        &env,
        &ws,
        &["--no-build", "--baseline", baseline.to_str().unwrap()],
    )
    .fails()
    .stderr_has(&["--baseline", "not a JSON list"]);
}

#[test]
fn a_traced_build_reports_the_raw_syscall_and_a_clean_one_passes() {
    let env = Env::new();
    let ws = workspace(&env);
    audit(&env, &ws, &["--gate"]).ok();

    let raw = env.path().join("raw");
    Cmd::new("cc")
        .args(["-O1", "-o"])
        .arg(&raw)
        .arg(fixture("trace/raw.c"))
        .ok();
    let script = format!(
        "cargo build -q && {} openat /vrift_workspace/Cargo.toml; true",
        raw.display()
    );
    let run = audit(
        &env,
        &ws,
        &["--gate", "--format", "json", "--", "sh", "-c", &script],
    )
    .run()
    .expect_code(1);
    let out = run.stdout();
    let report: serde_json::Value = serde_json::from_str(&out[out.find("{\n").unwrap()..]).unwrap();
    assert_eq!(report["summary"]["uncaught"], 1, "{report:#}");
    assert_eq!(
        report["summary"]["freshness"], 0,
        "built under inception: {report:#}"
    );
    let uncaught = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "uncaught")
        .unwrap();
    assert_eq!(uncaught["crate_name"], "raw");
    assert_eq!(uncaught["file"], "openat");
}
