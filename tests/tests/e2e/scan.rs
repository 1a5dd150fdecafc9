//! `velo scan` on real target directories: the fixture built plainly (its build script prints an
//! absolute `rerun-if-changed`) and built under `velo inception`.

use std::path::Path;

use velo_e2e::{Cmd, Env, copy_tree, fixture};

fn build(env: &Env, dir: &Path, projected: bool) {
    if projected {
        let mut cmd = env
            .velo(["inception", "--", "cargo", "build"])
            .clean_cargo_env()
            .dir(dir);
        cmd.cmd.env_remove("PWD");
        cmd.ok();
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
        reason.contains("build/app-")
            && reason.ends_with(&format!("/output names {}", ws.display())),
        "the absolute rerun-if-changed in the build script's output: {app:#}"
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
