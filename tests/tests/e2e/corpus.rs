//! Real published crates, fetched by cargo with their own `Cargo.lock`: what velo promises,
//! checked against what Cargo itself decides (`cargo build -v` prints `Dirty`/`Fresh` per unit).
//!
//! - `hyperfine` 1.20.0: a CLI whose build script prints no `rerun-if-changed` (Cargo then
//!   fingerprints the whole package by its newest mtime), with proc macros (serde, clap) and
//!   two versions of `rand_chacha` in its lockfile.
//! - `b3sum` 1.8.7: a CLI over `blake3`, whose build script compiles C and assembly with `cc`,
//!   and clap's derive macros.

use std::path::Path;

use velo_e2e::{Cmd, Env, dirty_by_own_input, published_crate};

use crate::cache::{compiled, summary, velo_cargo};

pub(crate) const HYPERFINE: &str = "hyperfine-1.20.0";
pub(crate) const B3SUM: &str = "b3sum-1.8.7";

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// "cargo found N of M units fresh": (N, M).
fn units(line: &str) -> (usize, usize) {
    let fresh = line
        .split("cargo found ")
        .nth(1)
        .and_then(|r| r.split(" units fresh").next())
        .unwrap_or_else(|| panic!("no unit count in {line}"));
    let (n, m) = fresh.split_once(" of ").unwrap();
    (n.parse().unwrap(), m.parse().unwrap())
}

#[test]
fn a_build_script_without_rerun_if_changed_restores_fresh_in_a_clone() {
    let env = Env::new();
    let a = env.path().join("alice/hyperfine");
    published_crate(HYPERFINE, &a);
    let first = velo_cargo(&env, &a, None, &["build", "--locked"]);
    assert!(!compiled(&first).is_empty(), "{}", first.explain());

    // A clone elsewhere: every file has a new mtime, so Cargo's package fingerprint of
    // hyperfine (newest mtime of its files) differs unless restore puts the times back.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = env.path().join("ci/builds/7f3a/hyperfine");
    published_crate(HYPERFINE, &b);
    let build = velo_cargo(&env, &b, None, &["build", "--locked", "-v"]);
    assert_eq!(
        dirty_by_own_input(&build.stderr()),
        Vec::<String>::new(),
        "{}",
        build.explain()
    );
    assert_eq!(
        compiled(&build),
        Vec::<String>::new(),
        "{}",
        build.explain()
    );
    let (fresh, total) = units(&summary(&build));
    assert_eq!(fresh, total, "{}", summary(&build));
    assert!(total > 100, "every unit of the build: {}", summary(&build));
    // The package's files carry the mtimes they were built with, and their content is as
    // published (restore never writes a source).
    for file in ["build.rs", "src/main.rs", "Cargo.toml", "README.md"] {
        assert_eq!(mtime(&b.join(file)), mtime(&a.join(file)), "{file}");
        assert_eq!(
            std::fs::read(b.join(file)).unwrap(),
            std::fs::read(a.join(file)).unwrap()
        );
    }

    // One byte more in a file no dep-info names: Cargo's package fingerprint must change, so
    // velo leaves every mtime of the package as the clone made it.
    let c = env.path().join("ci/builds/9e1b/hyperfine");
    published_crate(HYPERFINE, &c);
    let readme = c.join("README.md");
    let mut text = std::fs::read(&readme).unwrap();
    text.push(b'\n');
    std::fs::write(&readme, text).unwrap();
    let before = mtime(&c.join("build.rs"));
    let edited = velo_cargo(&env, &c, None, &["build", "--locked", "-v"]);
    assert_eq!(
        dirty_by_own_input(&edited.stderr()),
        ["hyperfine"],
        "{}",
        edited.explain()
    );
    assert_eq!(
        mtime(&c.join("build.rs")),
        before,
        "untouched when content differs"
    );
}

fn plain_cargo_v(dir: &Path) -> String {
    Cmd::new("cargo")
        .args(["build", "--locked", "-v"])
        .clean_cargo_env()
        .dir(dir)
        .ok()
        .stderr()
}

/// A published crate built plainly, scanned, then moved (mtimes kept) and rebuilt: scan must
/// call no crate "will miss" that Cargo finds fresh, and Cargo must find every crate fresh
/// that scan does not call "will miss". Returns the crates scan says miss in a clone.
fn scan_matches_cargo_after_a_move(name_version: &str) -> Vec<String> {
    let env = Env::new();
    let a = env.path().join("alice").join(name_version);
    published_crate(name_version, &a);
    plain_cargo_v(&a);
    let run = env.velo(["scan", "--json"]).clean_cargo_env().dir(&a).run();
    let report = run.json();
    let with = |v: &str| velo_e2e::crates_with_verdict(&report, v);
    assert_eq!(with("will-miss"), Vec::<String>::new(), "{report:#}");
    assert_eq!(run.code(), Some(0), "{}", run.explain());
    let b = env.path().join("bob").join(name_version);
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::rename(&a, &b).unwrap();
    let moved = plain_cargo_v(&b);
    assert_eq!(dirty_by_own_input(&moved), Vec::<String>::new(), "{moved}");
    with("misses-in-clone")
}

#[test]
fn scan_of_a_plain_hyperfine_build_agrees_with_cargo() {
    assert_eq!(scan_matches_cargo_after_a_move(HYPERFINE), ["hyperfine"]);
}

#[test]
fn scan_of_a_plain_b3sum_build_agrees_with_cargo() {
    assert_eq!(scan_matches_cargo_after_a_move(B3SUM), Vec::<String>::new());
}

/// Machine B through the S3 server: `b3sum` (a build script compiling C and assembly) built on
/// machine A and pushed; B has its own store, HOME, checkout path and `CARGO_HOME` (downloads,
/// no extracted sources) and shares nothing with A but the server. Cargo itself finds every
/// unit fresh on B (`-v`: no `Dirty` line), and nothing is compiled.
#[test]
fn b3sum_built_on_one_machine_is_fresh_on_another_through_s3() {
    let env = Env::new();
    let Some(s3) = velo_e2e::s3_server(
        "b3sum_built_on_one_machine_is_fresh_on_another_through_s3",
        env.path(),
    ) else {
        return;
    };
    let on = |machine: &str, dir: &Path, home: &Path| {
        env.velo_on(machine, ["cargo", "build", "--locked", "-v"])
            .clean_cargo_env()
            .dir(dir)
            .env("CARGO_HOME", home)
            .env("VELO_REMOTE", "s3://velo/corpus")
            .envs(s3.env())
            .ok()
    };
    let a = env.path().join("alice").join(B3SUM);
    published_crate(B3SUM, &a);
    let home_a = velo_e2e::user_cargo_home();
    let first = on("a", &a, &home_a);
    assert!(!compiled(&first).is_empty(), "{}", first.explain());
    assert!(
        summary(&first).contains("pushed to s3://velo/corpus"),
        "{}",
        summary(&first)
    );

    let home_b = env.path().join("b/cargo-home");
    for part in ["index", "cache"] {
        velo_e2e::copy_fresh(
            &home_a.join("registry").join(part),
            &home_b.join("registry").join(part),
        );
    }
    let b = env.path().join("ci/builds/51c0").join(B3SUM);
    published_crate(B3SUM, &b);
    let build = on("b", &b, &home_b);
    assert_eq!(
        dirty_by_own_input(&build.stderr()),
        Vec::<String>::new(),
        "{}",
        build.explain()
    );
    assert_eq!(
        compiled(&build),
        Vec::<String>::new(),
        "{}",
        build.explain()
    );
    let line = summary(&build);
    assert!(line.contains("fetched snapshot"), "{line}");
    let (fresh, total) = units(&line);
    assert_eq!(fresh, total, "{line}");
    let out = Cmd::new(b.join("target/debug/b3sum"))
        .arg("--version")
        .ok()
        .stdout();
    assert!(out.contains("1.8.7"), "{out}");
}
