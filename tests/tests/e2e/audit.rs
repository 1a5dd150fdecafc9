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
    env.velo(all).clean_cargo_env().dir(ws)
}

/// `ws` built with plain cargo, then `velo audit --no-build --format json`.
fn plain_build_audited(env: &Env, ws: &Path) -> serde_json::Value {
    Cmd::new("cargo")
        .arg("build")
        .clean_cargo_env()
        .dir(ws)
        .ok();
    audit(env, ws, &["--no-build", "--format", "json"])
        .ok()
        .json()
}

#[test]
fn a_plain_build_fails_the_gate_until_baselined() {
    let env = Env::new();
    let ws = workspace(&env);
    let report = plain_build_audited(&env, &ws);
    assert_eq!(report["schema"], 1);
    assert_eq!(report["summary"]["crates_missing_cache"], 1, "{report:#}");
    assert_eq!(report["missing_cache"][0]["crate_name"], "app");
    assert_eq!(
        report["summary"]["gating"], 1,
        "the rerun-if-changed line of app's build-script output (root-output is never compared)"
    );
    audit(&env, &ws, &["--no-build", "--gate"])
        .run()
        .expect_code(1)
        .stderr_has(&["gate failed", "1 finding(s)"]);

    let baseline = env.path().join("baseline.json");
    audit(
        &env,
        &ws,
        &["--no-build", "--write-baseline", baseline.to_str().unwrap()],
    )
    .ok();
    let ids: Vec<String> = serde_json::from_slice(&std::fs::read(&baseline).unwrap()).unwrap();
    assert_eq!(ids, ["freshness:app:debug/build/app-*/output"]);
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
    let _tracing = velo_e2e::tracer_lock();
    let env = Env::new();
    let ws = workspace(&env);
    let clean = audit(&env, &ws, &["--gate", "--format", "json"]).ok();
    let out = clean.stdout();
    let report: serde_json::Value = serde_json::from_str(&out[out.find("{\n").unwrap()..]).unwrap();
    assert_eq!(
        report["findings"],
        serde_json::json!([]),
        "a clean projected build: an empty report"
    );

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

/// The leaky fixture (one seeded leak of every class, see its Cargo.toml) copied into `env`.
fn leaky(env: &Env) -> PathBuf {
    let ws = env.path().join("leaky");
    copy_tree(&fixture("leaky-ws"), &ws);
    ws
}

/// The kinds, crates and places of a JSON report's findings, leaving out `skip` kinds.
fn findings(report: &serde_json::Value, skip: &[&str]) -> Vec<(String, String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !skip.contains(&f["kind"].as_str().unwrap()))
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_owned();
            (s("kind"), s("crate_name"), s("file"))
        })
        .collect()
}

/// Built with plain cargo, the scanner alone names every seeded leak of the target directory
/// and its crate.
#[test]
fn seeded_leaks_in_a_plain_build_are_named_with_their_crates() {
    let env = Env::new();
    let ws = leaky(&env);
    let report = plain_build_audited(&env, &ws);
    let found = findings(&report, &[]);
    let has = |kind: &str, krate: &str, file_part: &str| {
        found
            .iter()
            .any(|(k, c, f)| k == kind && c == krate && f.contains(file_part))
    };
    // The absolute rerun-if-changed: rerun misses the cache.
    assert!(has("freshness", "rerun", "/output"), "{found:#?}");
    let missing: Vec<&str> = report["missing_cache"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["crate_name"].as_str().unwrap())
        .collect();
    assert!(missing.contains(&"rerun"), "{missing:?}");
    // Baked CARGO_MANIFEST_DIR and OUT_DIR, file!() in a panic: in the code, per crate.
    for krate in ["manifest_dir", "outdir", "panicky"] {
        assert!(has("embedded", krate, ".rlib("), "{krate}: {found:#?}");
        assert!(has("debug-info", krate, ""), "{krate}: {found:#?}");
    }
    assert!(has("embedded", "app", "debug/app"), "{found:#?}");
    // What only a traced build shows is absent.
    assert_eq!(report["summary"]["uncaught"], 0);
    assert_eq!(report["summary"]["undeclared_inputs"], 0);
}

/// Built with `velo audit`, nothing physical is left in target/, and what remains is what the
/// projection cannot fix, each on the right crate: the proc macro's data file (undeclared
/// input of `tables`), the raw syscall (uncaught, `rawsys`'s build script), the static helper
/// (unshimmed, `helper`'s build script).
#[test]
fn seeded_leaks_in_an_audited_build_leave_only_what_the_shim_cannot_fix() {
    let test = "audit::seeded_leaks_in_an_audited_build_leave_only_what_the_shim_cannot_fix";
    let Some(busybox) = velo_e2e::busybox(test) else {
        return;
    };
    velo_e2e::each_tracer_backend(test, |backend| seeded_leaks_audited_with(backend, &busybox));
}

fn seeded_leaks_audited_with(backend: &str, busybox: &Path) {
    let env = Env::new();
    let ws = leaky(&env);
    let report_file = env.path().join("report.json");
    let run = audit(
        &env,
        &ws,
        &[
            "--backend",
            backend,
            "--gate",
            "--format",
            "json",
            "--out",
            report_file.to_str().unwrap(),
        ],
    )
    .env("VELO_FIXTURE_BUSYBOX", busybox)
    .run()
    .expect_code(1);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_file).unwrap()).unwrap();
    let s = &report["summary"];
    for clean in ["freshness", "debug_info", "embedded", "leaks"] {
        assert_eq!(s[clean], 0, "{clean}: {report:#}");
    }
    assert_eq!(
        findings(&report, &[]),
        [
            ("uncaught".into(), "rawsys".into(), "openat".into()),
            (
                "undeclared-input".into(),
                "tables".into(),
                "tables/words.txt".into()
            ),
            ("unshimmed".into(), "helper".into(), "busybox".into()),
        ],
        "{report:#}"
    );
    let gating = s["gating"].as_u64().unwrap();
    assert_eq!(gating, 2, "the uncaught call and the undeclared input");
    run.stderr_has(&["gate failed", "2 finding(s)"]);
}

/// The feedback loop: with the `access` hook left out of a test build of the shim, the audit
/// reports the uncaught call and proposes the table row, in the table's notation; with the
/// normal shim, which has the row, the finding is gone.
#[test]
fn a_missing_hook_is_reported_with_its_table_row_until_the_row_is_there() {
    let _tracing = velo_e2e::tracer_lock();
    let env = Env::new();
    let ws = workspace(&env);
    // A shim without `access`, in a target directory of its own (kept between runs).
    let omit_target = velo_e2e::bin_dir()
        .parent()
        .unwrap()
        .join("test-shim-without-access");
    Cmd::new("cargo")
        .args(["build", "-q", "-p", "velo-shim"])
        .clean_cargo_env()
        .env("VELO_SHIM_OMIT", "access")
        .env("CARGO_TARGET_DIR", &omit_target)
        .dir(env!("CARGO_MANIFEST_DIR"))
        .ok();
    let omitted = omit_target.join("debug/libvelo_shim.so");
    let raw = env.path().join("raw");
    Cmd::new("cc")
        .args(["-O1", "-o"])
        .arg(&raw)
        .arg(fixture("trace/raw.c"))
        .ok();
    let program = raw.to_str().unwrap();
    let args = [
        "--format",
        "json",
        "--",
        program,
        "access",
        "/vrift_workspace/Cargo.toml",
    ];
    let out = env.path().join("report.json");
    let audited = |shim: &Path| -> serde_json::Value {
        let mut all = vec!["--out", out.to_str().unwrap()];
        all.extend_from_slice(&args);
        let run = audit(&env, &ws, &all).env("VELO_SHIM", shim).run();
        let text = std::fs::read(&out).unwrap_or_else(|e| panic!("{e}: {}", run.explain()));
        serde_json::from_slice(&text).unwrap()
    };

    let without = audited(&omitted);
    assert_eq!(without["summary"]["uncaught"], 1, "{without:#}");
    let suggestions = without["suggestions"].as_array().unwrap();
    assert_eq!(suggestions.len(), 1, "{without:#}");
    assert_eq!(suggestions[0]["symbol"], "access");
    assert_eq!(suggestions[0]["process"], "raw");
    assert_eq!(
        suggestions[0]["row"],
        r#"linux("access", &[p(Arg(0), In)], &["faccessat2", "faccessat", "access"], Read),"#
    );
    let mut all = vec!["--suggest-table"];
    all.extend_from_slice(&args[2..]);
    let printed = audit(&env, &ws, &all)
        .env("VELO_SHIM", &omitted)
        .run()
        .stdout();
    assert!(
        printed.contains(r#"    linux("access", &[p(Arg(0), In)]"#),
        "{printed}"
    );

    let with = audited(&velo_e2e::bin_dir().join("libvelo_shim.so"));
    assert_eq!(with["summary"]["uncaught"], 0, "{with:#}");
    assert!(with["suggestions"].as_array().unwrap().is_empty());
    assert!(findings(&with, &[]).is_empty(), "{with:#}");
}

/// A crate that includes files by every spelling rustc writes into dep-info: `src/../`, `./`,
/// a `..` after a symlinked directory (which only the resolved name gets right), and a file
/// reached through a symlinked directory. All are declared; the gate passes. The one file
/// read and not declared (by a proc macro would be the real case; here a build script that
/// prints a `rerun-if-changed` for something else) is still found.
#[test]
fn included_files_are_declared_under_every_spelling() {
    let _tracing = velo_e2e::tracer_lock();
    let env = Env::new();
    let ws = env.path().join("spellings");
    let file = |rel: &str, text: &str| velo_e2e::write_file(&ws, rel, text);
    file(
        "Cargo.toml",
        "[package]\nname = \"spellings\"\nversion = \"0.1.0\"\nedition = \"2024\"\n[workspace]\n",
    );
    file("CHANGELOG.md", "# changes\n");
    file("data/a.txt", "a\n");
    file("real/deep/b.txt", "b\n");
    file("real/x.txt", "x\n");
    file(
        "unread.txt",
        "read by the build script, declared by nothing\n",
    );
    std::os::unix::fs::symlink("real/deep", ws.join("linked")).unwrap();
    file(
        "src/lib.rs",
        r#"pub static CHANGELOG: &str = include_str!("../CHANGELOG.md");
pub static A: &str = include_str!("./../data/./a.txt");
pub static B: &str = include_str!("../linked/b.txt");
pub static X: &str = include_str!("../linked/../x.txt");
"#,
    );
    file(
        "build.rs",
        "fn main() { println!(\"cargo:rerun-if-changed=build.rs\"); let _ = std::fs::read(\"unread.txt\"); }",
    );
    let run = audit(&env, &ws, &["--format", "json"]).ok();
    let out = run.stdout();
    let report: serde_json::Value = serde_json::from_str(&out[out.find("{\n").unwrap()..]).unwrap();
    let undeclared: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "undeclared-input")
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(undeclared, ["unread.txt"], "{report:#}");
}
