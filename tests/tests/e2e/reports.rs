//! Snapshots of every report format, human and JSON, on a fixed tree. Paths of the test's
//! temporary directory and timings are redacted; everything else must be byte-stable.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use velo_e2e::{Env, Run};

fn fixed_tree(env: &Env, name: &str) {
    let root = env.path().join(name);
    fs::create_dir_all(root.join("src")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(
        root.join("src/main.rs"),
        "fn main() { println!(\"hi\"); }\n",
    )
    .unwrap();
    fs::write(root.join("Cargo.toml"), "[package]\nname = \"demo\"\n").unwrap();
    fs::write(root.join("build.sh"), "#!/bin/sh\ncargo build\n").unwrap();
    fs::set_permissions(root.join("build.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("src/main.rs", root.join("main")).unwrap();
}

/// Replaces the test directory with `[ENV]` and timings with `[redacted]`. Table columns that
/// hold a path are as wide as the (machine-dependent) temporary directory's path, so runs of
/// spaces are collapsed in tables that show one.
fn redact(env: &Env, run: &Run) -> String {
    let text = run.stdout().replace(env.path().to_str().unwrap(), "[ENV]");
    let tabular_paths = text
        .lines()
        .any(|l| l.contains("[ENV]") && l.contains("  "));
    text.lines()
        .map(|l| {
            if tabular_paths && !l.trim_start().starts_with('"') {
                return l
                    .split("  ")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("  ");
            }
            if l.trim_start().starts_with("time ") {
                "  time         [redacted]".to_owned()
            } else if l.trim_start().starts_with("\"seconds\"") {
                "  \"seconds\": \"[redacted]\"".to_owned()
            } else {
                l.trim_end().to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn report_formats() {
    let env = Env::new();
    fixed_tree(&env, "proj");
    fixed_tree(&env, "proj2");
    fs::write(env.path().join("proj2/src/main.rs"), "fn main() {}\n").unwrap();
    fs::write(env.path().join("proj2/README"), "new\n").unwrap();
    fs::remove_dir(env.path().join("proj2/empty")).unwrap();

    let snap = |name: &str, run: Run| insta::assert_snapshot!(name, redact(&env, &run));
    snap(
        "ingest_human",
        env.velo(["ingest", "proj", "-o", "proj.velo"]).ok(),
    );
    snap(
        "ingest_json",
        env.velo(["ingest", "proj", "-o", "again.velo", "--json", "--no-index"])
            .ok(),
    );
    env.velo(["ingest", "proj2", "-o", "proj2.velo"]).ok();
    snap(
        "manifest_show",
        env.velo(["manifest", "show", "proj.velo"]).ok(),
    );
    snap(
        "manifest_show_json",
        env.velo(["manifest", "show", "proj.velo", "--json"]).ok(),
    );
    snap(
        "manifest_diff",
        env.velo(["manifest", "diff", "proj.velo", "proj2.velo"])
            .run()
            .expect_code(1),
    );
    snap(
        "manifest_diff_json",
        env.velo(["manifest", "diff", "proj.velo", "proj2.velo", "--json"])
            .run()
            .expect_code(1),
    );
    fs::remove_file(env.path().join("again.velo")).unwrap();
    fs::remove_file(env.path().join("proj2.velo")).unwrap();
    snap("status_human", env.velo(["status"]).ok());
    snap(
        "status_verify_json",
        env.velo(["status", "--verify", "--json"]).ok(),
    );
    snap("gc_dry_run", env.velo(["gc"]).ok());
    snap("gc_run_json", env.velo(["gc", "--run", "--json"]).ok());
}

/// Redacts what differs between machines in `velo cache key`: hashes, and the details of the
/// compiler, the host triple and the cargo config files the ancestors of the temp dir hold.
fn redact_key_table(text: &str) -> String {
    let machine = ["rustc -vV", "target", "cargo config"];
    text.lines()
        .map(|line| {
            let cells: Vec<&str> = line
                .split("  ")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            match cells.as_slice() {
                [name, _hash, rest @ ..] if *name != "input" => {
                    let detail = if machine.contains(name) {
                        "[machine]".to_owned()
                    } else {
                        rest.join("  ")
                    };
                    format!("{name}  [hash]  {detail}").trim_end().to_owned()
                }
                [key] if key.starts_with("key ") => "key [hash]".to_owned(),
                _ => cells.join("  "),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn cache_key_and_doctor_formats() {
    let env = Env::new();
    fixed_tree(&env, "proj");
    fs::write(env.path().join("proj/Cargo.lock"), "version = 4\n").unwrap();
    let dir = env.path().join("proj");
    let human = env.velo(["cache", "key"]).clean_cargo_env().dir(&dir).ok();
    insta::assert_snapshot!("cache_key_human", redact_key_table(&human.stdout()));
    let json = env
        .velo(["cache", "key", "--json"])
        .clean_cargo_env()
        .dir(&dir)
        .ok()
        .json();
    let machine = ["rustc -vV", "target", "cargo config"];
    let mut lines = vec![format!(
        "key: {} hex digits",
        json["key"].as_str().unwrap().len()
    )];
    for input in json["inputs"].as_array().unwrap() {
        let name = input["name"].as_str().unwrap();
        let detail = if machine.contains(&name) {
            "[machine]"
        } else {
            input["detail"].as_str().unwrap()
        };
        lines.push(format!(
            "{name}: hash of {} hex digits, detail {detail:?}",
            input["hash"].as_str().unwrap().len()
        ));
    }
    insta::assert_snapshot!("cache_key_json", lines.join("\n"));
    let doctor = env.velo(["doctor", "--json"]).ok();
    let names: Vec<String> = doctor
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} ok={}", c["name"].as_str().unwrap(), c["ok"]))
        .collect();
    insta::assert_snapshot!("doctor_checks", names.join("\n"));
}

/// Every `velo cache` report, human and JSON, on the fixture workspace. Ids, keys, sizes, ages
/// and timings differ between runs and machines and are redacted; the shape must be stable.
#[test]
fn cache_report_formats() {
    let env = Env::new();
    let a = env.path().join("a");
    velo_e2e::copy_fresh(&velo_e2e::fixture("inception-ws"), &a);
    let b = env.path().join("b");
    velo_e2e::copy_fresh(&velo_e2e::fixture("inception-ws"), &b);
    let velo =
        |args: &[&str], dir: &std::path::Path| env.velo(args).clean_cargo_env().dir(dir).ok();
    velo(&["inception", "--", "cargo", "build"], &a);
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(env.path().to_str().unwrap()), "[ENV]");
    settings.add_filter(r"\b\d{13}-\d+\b", "[id]");
    settings.add_filter(r"\b[0-9a-f]{64}\b", "[key]");
    settings.add_filter(r"\b[0-9a-f]{12}\b", "[key]");
    settings.add_filter(r"\d+(\.\d+)? (B|KiB|MiB|GiB)\b", "[size]");
    settings.add_filter(r"\d+\.\d+ s\b", "[secs]");
    settings.add_filter(r"(\d+|\[n\]) (s|min|h|d) ago", "[age]");
    settings.add_filter(r#""(created|bytes|new_bytes|unique_bytes|logical_bytes|stored_bytes|seconds|files|reflinked|copied)": [0-9.]+"#, r#""$1": [n]"#);
    settings.add_filter(r"\b\d+ files\b", "[n] files");
    settings.add_filter(
        r"\b\d+ reflinked, \d+ copied\b",
        "[n] reflinked, [n] copied",
    );
    settings.add_filter(r"\(\d+\.\dx shared\)", "([ratio] shared)");
    // Table columns are as wide as their (redacted) contents: one space between cells.
    let collapse = |text: String| -> String {
        text.lines()
            .map(|l| {
                // A snapshot row starts with its id (`<ms>-<pid>`).
                let row = l.split_whitespace().next().is_some_and(|w| {
                    w.contains('-') && w.starts_with(|c: char| c.is_ascii_digit())
                });
                l.split_whitespace()
                    .map(|w| match w.parse::<u64>() {
                        Ok(_) if row => "[n]",
                        _ => w,
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    settings.bind(|| {
        insta::assert_snapshot!("cache_save_human", velo(&["cache", "save"], &a).stdout());
        insta::assert_snapshot!(
            "cache_status_human",
            velo(&["cache", "status"], &b).stdout()
        );
        insta::assert_snapshot!(
            "cache_status_json",
            velo(&["cache", "status", "--json"], &b).stdout()
        );
        insta::assert_snapshot!(
            "cache_list_human",
            collapse(velo(&["cache", "list"], &b).stdout())
        );
        insta::assert_snapshot!(
            "cache_list_json",
            velo(&["cache", "list", "--json"], &b).stdout()
        );
        insta::assert_snapshot!(
            "cache_restore_human",
            velo(&["cache", "restore"], &b).stdout()
        );
        insta::assert_snapshot!(
            "cache_save_json",
            velo(&["cache", "save", "--json"], &b).stdout()
        );
        let c = env.path().join("c");
        velo_e2e::copy_fresh(&velo_e2e::fixture("inception-ws"), &c);
        insta::assert_snapshot!(
            "cache_restore_json",
            velo(&["cache", "restore", "--json"], &c).stdout()
        );
    });
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

/// `velo scan`, human and JSON (the per-crate summary), on the fixture built without velo.
/// Counts of debug-info and embedded hits depend on the compiler and are redacted.
#[test]
fn scan_report_formats() {
    let env = Env::new();
    let ws = plain_build(&env);
    let scan = |json: bool| {
        let mut args = vec!["scan", "--root", ws.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        env.velo(args)
            .clean_cargo_env()
            .dir(&ws)
            .run()
            .expect_code(1)
    };
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(env.path().to_str().unwrap()), "[ENV]");
    settings.add_filter(r"app-[0-9a-f]{16}", "app-[hash]");
    settings.add_filter(
        r#""(debug_info|embedded|files|bytes)": \d+"#,
        r#""$1": [n]"#,
    );
    settings.add_filter(
        r"\d+ findings in \d+ files \([^)]*\)",
        "[n] findings in [n] files ([size])",
    );
    settings.bind(|| {
        let human: String = scan(false)
            .stdout()
            .lines()
            .map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                match cells.as_slice() {
                    [krate, miss, fresh, _, _, why @ ..] if *miss == "yes" || *miss == "no" => {
                        format!("{krate} {miss} {fresh} [n] [n] {}", why.join(" "))
                    }
                    _ => cells.join(" "),
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        insta::assert_snapshot!("scan_human", human);
        let mut json = scan(true).json();
        json["findings"] = serde_json::json!("[redacted: see the e2e scan tests]");
        insta::assert_snapshot!("scan_json", serde_json::to_string_pretty(&json).unwrap());
    });
}

/// `velo audit` in all four formats on the fixture built without velo. Debug-info and embedded
/// hits depend on the compiler: their counts are redacted and their findings left out.
#[test]
fn audit_report_formats() {
    let env = Env::new();
    let ws = plain_build(&env);
    let audit = |format: &str| {
        env.velo([
            "audit",
            "--no-build",
            "--root",
            ws.to_str().unwrap(),
            "--format",
            format,
        ])
        .clean_cargo_env()
        .dir(&ws)
        .ok()
        .stdout()
    };
    let keep = |f: &serde_json::Value| {
        !matches!(f["kind"].as_str(), Some("debug-info" | "embedded"))
            && !matches!(f["ruleId"].as_str(), Some("debug-info" | "embedded"))
    };
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(env.path().to_str().unwrap()), "[ENV]");
    settings.add_filter(r"app-[0-9a-f]{16}", "app-[hash]");
    settings.add_filter(r#""(debug_info|embedded)": \d+"#, r#""$1": [n]"#);
    settings.add_filter(
        r"\d+ debug-info, \d+ embedded",
        "[n] debug-info, [n] embedded",
    );
    settings.add_filter(
        r"(?m)^\| (\d+) \| (\d+) \| \d+ \| \d+ \|",
        "| $1 | $2 | [n] | [n] |",
    );
    settings.bind(|| {
        insta::assert_snapshot!(
            "audit_table",
            audit("table")
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let mut json: serde_json::Value = serde_json::from_str(&audit("json")).unwrap();
        let kept: Vec<serde_json::Value> = json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| keep(f))
            .cloned()
            .collect();
        json["findings"] = kept.into();
        insta::assert_snapshot!("audit_json", serde_json::to_string_pretty(&json).unwrap());
        let mut sarif: serde_json::Value = serde_json::from_str(&audit("sarif")).unwrap();
        let kept: Vec<serde_json::Value> = sarif["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| keep(f))
            .cloned()
            .collect();
        sarif["runs"][0]["results"] = kept.into();
        insta::assert_snapshot!("audit_sarif", serde_json::to_string_pretty(&sarif).unwrap());
        insta::assert_snapshot!("audit_markdown", audit("markdown"));
    });
}

/// `velo audit` in all four formats of a traced build of the leaky fixture: the undeclared
/// input, the uncaught raw syscall and the unshimmed static helper, each on its crate. Each
/// format audits a fresh copy (a second build in the same copy would compile nothing).
#[test]
fn audit_traced_report_formats() {
    let _tracing = velo_e2e::tracer_lock();
    let Some(busybox) = velo_e2e::busybox("reports::audit_traced_report_formats") else {
        return;
    };
    let env = Env::new();
    let audit = |format: &str| {
        let ws = env.path().join(format!("leaky-{format}"));
        velo_e2e::copy_tree(&velo_e2e::fixture("leaky-ws"), &ws);
        let out = env.path().join(format!("report.{format}"));
        env.velo([
            "audit",
            "--root",
            ws.to_str().unwrap(),
            "--format",
            format,
            "--out",
            out.to_str().unwrap(),
        ])
        .clean_cargo_env()
        .env("VELO_FIXTURE_BUSYBOX", &busybox)
        .dir(&ws)
        .ok();
        fs::read_to_string(&out).unwrap()
    };
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex_escape(env.path().to_str().unwrap()), "[ENV]");
    settings.add_filter(r"leaky-(table|json|sarif|markdown)", "leaky");
    settings.add_filter(r"(/usr)?/bin/busybox", "[busybox]");
    settings.bind(|| {
        insta::assert_snapshot!(
            "audit_traced_table",
            audit("table")
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("\n")
        );
        insta::assert_snapshot!("audit_traced_json", audit("json"));
        insta::assert_snapshot!("audit_traced_sarif", audit("sarif"));
        insta::assert_snapshot!("audit_traced_markdown", audit("markdown"));
    });
}

/// The fixture workspace built with plain cargo: its build script's absolute
/// `rerun-if-changed` leaves a freshness leak for scan and audit to report.
fn plain_build(env: &Env) -> std::path::PathBuf {
    let ws = env.path().join("ws");
    velo_e2e::copy_tree(&velo_e2e::fixture("inception-ws"), &ws);
    velo_e2e::Cmd::new("cargo")
        .arg("build")
        .clean_cargo_env()
        .dir(&ws)
        .ok();
    ws
}
