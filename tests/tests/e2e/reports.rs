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
