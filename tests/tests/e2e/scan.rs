//! `velo scan` on real target directories: the fixture built plainly (its build script prints an
//! absolute `rerun-if-changed`) and built under `velo inception`.

use std::path::Path;

use velo_e2e::{Cmd, Env, copy_tree, dirty_by_own_input, fixture};

fn build(env: &Env, dir: &Path, projected: bool) {
    if projected {
        env.velo(["inception", "--", "cargo", "build"])
            .clean_cargo_env()
            .dir(dir)
            .ok();
    } else {
        Cmd::new("cargo")
            .arg("build")
            .clean_cargo_env()
            .dir(dir)
            .ok();
    }
}

fn scan(env: &Env, dir: &Path, extra: &[&str]) -> velo_e2e::Run {
    let mut args = vec!["scan", "--root", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.velo(args).clean_cargo_env().dir(dir).run()
}

#[test]
fn a_plain_build_names_the_crate_that_will_miss_the_cache() {
    let env = Env::new();
    let ws = env.path().join("ws");
    copy_tree(&fixture("inception-ws"), &ws);
    build(&env, &ws, false);
    let run = scan(&env, &ws, &["--json"]).expect_code(1);
    let report = run.json();
    let crates = report["crates"].as_array().unwrap();
    let app = crates.iter().find(|c| c["crate_name"] == "app").unwrap();
    assert_eq!(app["will_miss_cache"], true, "{report:#}");
    let reason = app["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("rerun-if-changed path: debug/build/app-")
            && reason.contains(&format!("with a path under {};", ws.display())),
        "the absolute rerun-if-changed in the build script's output: {app:#}"
    );
    assert!(
        app["fix"]
            .as_str()
            .unwrap()
            .contains("relative to the package")
    );
    for krate in ["core_lib", "macros"] {
        let c = crates.iter().find(|c| c["crate_name"] == krate).unwrap();
        assert_eq!(
            c["will_miss_cache"], false,
            "{krate}: paths only in debug info and data"
        );
        assert!(
            c["debug_info"].as_u64().unwrap() > 0,
            "{krate}: DWARF names the checkout"
        );
    }
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["class"] == "debug-info"
            && f["section"]
                .as_str()
                .is_some_and(|s| s.starts_with(".debug"))),
        "debug-info findings name their ELF section"
    );
    assert!(
        findings
            .iter()
            .any(|f| f["file"].as_str().unwrap().contains(".rlib(")),
        "rlib members are searched"
    );
    // The human view says the same.
    let human = scan(&env, &ws, &[]).expect_code(1).stdout();
    assert!(
        human.contains("1 of 3 crates with findings will miss the cache"),
        "{human}"
    );
}

#[test]
fn a_build_under_inception_has_no_physical_path() {
    let env = Env::new();
    let ws = env.path().join("ws");
    copy_tree(&fixture("inception-ws"), &ws);
    build(&env, &ws, true);
    let out = scan(&env, &ws, &[]).expect_code(0).stdout();
    assert!(out.starts_with("no physical path in"), "{out}");
    // A missing target directory is an error that names it.
    env.velo(["scan", "/nonexistent/target"])
        .fails()
        .stderr_has(&["/nonexistent/target", "not a directory"]);
}

/// Mach-O, as a macOS build leaves it (the fixture is cross-built by
/// tests/fixtures/macho/make.sh at /Users/alice/proj): the path in `__cstring` and the install
/// name is embedded; in `__DWARF` sections of an rlib's object and in the dylib's debug map
/// (N_SO/N_OSO stabs) it is debug info.
#[test]
fn mach_o_sections_load_commands_and_stabs_are_told_apart() {
    let env = Env::new();
    let target = fixture("macho/target");
    let report = env
        .velo([
            "scan",
            target.to_str().unwrap(),
            "--root",
            "/Users/alice/proj",
            "--json",
        ])
        .ok()
        .json();
    let mut found: Vec<(String, String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["class"].as_str().unwrap().to_owned(),
                f["file"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                f["section"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    found.sort();
    found.dedup();
    let dylib = "libleak-0123456789abcdef.dylib";
    let object = "libleak-0123456789abcdef.rlib(leak.o)";
    let expected: Vec<(String, String, String)> = [
        ("debug-info", dylib, "stab N_SO"),
        ("debug-info", dylib, "stab N_OSO"),
        ("debug-info", object, "__DWARF,__debug_str"),
        ("embedded", dylib, "LC_ID_DYLIB"),
        ("embedded", dylib, "__TEXT,__cstring"),
        ("embedded", object, "__TEXT,__cstring"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(found, expected, "{report:#}");
    assert!(
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["crate_name"] == "leak"),
        "{report:#}"
    );
}

/// One member per rule of `velo scan`, each seeded with one way a path or an mtime gets into
/// what Cargo fingerprints (or only into what it keeps).
const CLASSES: &[(&str, &str, &str)] = &[
    // An absolute rerun-if-changed: Cargo recomputes the watched paths from it.
    (
        "rerun_abs",
        "fn main() { let d = std::env::var(\"CARGO_MANIFEST_DIR\").unwrap(); println!(\"cargo:rerun-if-changed={d}/build.rs\"); }",
        "pub fn f() {}",
    ),
    // A file outside the package: an absolute dep-info entry whose mtime Cargo checks.
    (
        "outside_file",
        "",
        "pub static SHARED: &str = include_str!(\"../../shared/data.txt\");",
    ),
    // A user environment variable rustc tracked, whose value names the checkout.
    (
        "env_path",
        "",
        "pub static DATA: Option<&str> = option_env!(\"VELO_SCAN_TEST_DIR\");",
    ),
    // root-output, rustc-env and rustc-link-search name the checkout: kept, never compared.
    (
        "recorded",
        "fn main() { let o = std::env::var(\"OUT_DIR\").unwrap(); let d = std::env::var(\"CARGO_MANIFEST_DIR\").unwrap(); std::fs::write(format!(\"{o}/gen.rs\"), \"pub const N: u32 = 1;\").unwrap(); println!(\"cargo:rerun-if-changed=build.rs\"); println!(\"cargo:rustc-env=GEN_DIR={o}\"); println!(\"cargo:rustc-link-search=native={d}\"); }",
        "include!(concat!(env!(\"OUT_DIR\"), \"/gen.rs\")); pub static GEN: &str = env!(\"GEN_DIR\");",
    ),
    // A build script with no rerun-if-changed: the package's newest mtime is fingerprinted.
    (
        "mtime_pkg",
        "fn main() { println!(\"cargo:rustc-env=BUILT=yes\"); }",
        "pub static BUILT: &str = env!(\"BUILT\");",
    ),
    // Nothing at all.
    ("clean", "", "pub fn g() {}"),
];

fn write_classes(ws: &Path) {
    let members: Vec<String> = CLASSES.iter().map(|(n, _, _)| format!("\"{n}\"")).collect();
    let file = |rel: &str, text: &str| velo_e2e::write_file(ws, rel, text);
    file(
        "Cargo.toml",
        &format!(
            "[workspace]\nresolver = \"3\"\nmembers = [{}]\n",
            members.join(", ")
        ),
    );
    file("shared/data.txt", "shared\n");
    for (name, build, lib) in CLASSES {
        file(
            &format!("{name}/Cargo.toml"),
            &format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n"),
        );
        file(&format!("{name}/src/lib.rs"), lib);
        if !build.is_empty() {
            file(&format!("{name}/build.rs"), build);
        }
    }
}

fn cargo_v(dir: &Path) -> String {
    Cmd::new("cargo")
        .args(["build", "-v"])
        .clean_cargo_env()
        .env("VELO_SCAN_TEST_DIR", dir)
        .dir(dir)
        .ok()
        .stderr()
}

/// Every rule of `velo scan`, proven against Cargo: a plain build is scanned, then moved (mtimes
/// kept) and cloned (new source mtimes, `target/` restored newer than them, as a cache
/// restore that fixes mtimes leaves it), and rebuilt with `cargo build -v`. The crates Cargo
/// calls `Dirty` for an input of their own are exactly the verdicts: "will miss" after a move,
/// "will miss" plus "in a clone" after a clone.
#[test]
fn scan_verdicts_are_what_cargo_does_after_a_move_and_a_clone() {
    let env = Env::new();
    let a = env.path().join("alice/classes");
    write_classes(&a);
    let first = cargo_v(&a);
    assert!(first.contains("Compiling clean"), "{first}");
    let report = scan(&env, &a, &["--json"]).expect_code(1).json();
    let verdict = |v: &str| velo_e2e::crates_with_verdict(&report, v);
    let mut will_miss = verdict("will-miss");
    will_miss.sort();
    assert_eq!(
        will_miss,
        ["env_path", "outside_file", "rerun_abs"],
        "{report:#}"
    );
    assert_eq!(verdict("misses-in-clone"), ["mtime_pkg"], "{report:#}");
    let recorded = report["crates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["crate_name"] == "recorded")
        .expect("the recorded crate has findings");
    assert_eq!(recorded["verdict"], "reusable", "{recorded:#}");
    assert!(recorded["recorded"].as_u64().unwrap() >= 2, "{recorded:#}");
    for c in report["crates"].as_array().unwrap() {
        if c["verdict"] != "reusable" {
            assert!(c["reason"].is_string() && c["fix"].is_string(), "{c:#}");
        }
    }

    // The target directory as the build left it, for the clone below.
    let pristine = env.path().join("pristine-target");
    copy_tree(&a.join("target"), &pristine);

    // Moved: the old path is gone, mtimes travel.
    let b = env.path().join("bob/classes");
    std::fs::create_dir_all(b.parent().unwrap()).unwrap();
    std::fs::rename(&a, &b).unwrap();
    assert_eq!(dirty_by_own_input(&cargo_v(&b)), will_miss, "after a move");

    // Cloned: sources get new mtimes; the target directory comes back newer than them.
    let c = env.path().join("carol/classes");
    write_classes(&c);
    copy_tree(&pristine, &c.join("target"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let now = std::time::SystemTime::now();
    for f in velo_e2e::files_under(&c.join("target")) {
        let path = c.join("target").join(f);
        if let Ok(file) = std::fs::File::options().write(true).open(&path) {
            file.set_modified(now).unwrap();
        }
    }
    let mut expected = will_miss.clone();
    expected.push("mtime_pkg".into());
    expected.sort();
    let clone = cargo_v(&c);
    assert_eq!(
        dirty_by_own_input(&clone),
        expected,
        "after a clone: {clone}"
    );
}
