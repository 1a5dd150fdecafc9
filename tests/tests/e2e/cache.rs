//! `velo cache key`: the same project in two places has one key; content changes change it;
//! moving `CARGO_HOME` does not.

use velo_e2e::{Env, copy_tree, fixture};

fn key(env: &Env, dir: &std::path::Path, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = env
        .velo(["cache", "key", "--json"])
        .clean_cargo_env()
        .dir(dir);
    for (k, v) in extra {
        cmd = cmd.env(k, v);
    }
    cmd.ok().json()
}

#[test]
fn the_key_is_the_same_in_two_checkouts_and_follows_content() {
    let env = Env::new();
    let a = env.path().join("alice/ws");
    let b = env.path().join("ci/builds/7f3a/ws");
    copy_tree(&fixture("inception-ws"), &a);
    copy_tree(&fixture("inception-ws"), &b);
    let ka = key(&env, &a, &[]);
    assert_eq!(
        ka["key"],
        key(&env, &b.join("app/src"), &[])["key"],
        "same content, other path"
    );

    let home = env.path().join("moved-cargo-home");
    std::fs::create_dir_all(&home).unwrap();
    assert_eq!(
        ka["key"],
        key(&env, &b, &[("CARGO_HOME", home.to_str().unwrap())])["key"],
        "CARGO_HOME moved"
    );

    assert_eq!(
        ka["key"],
        key(&env, &b, &[("VRIFT_CANONICAL_ROOT", "/vrift_workspace/")])["key"],
        "a trailing slash on the canonical root names the same root"
    );
    assert_ne!(
        ka["key"],
        key(&env, &b, &[("VRIFT_CANONICAL_ROOT", "/elsewhere")])["key"],
        "another canonical root is another key (its paths are in every artifact)"
    );
    assert_ne!(
        ka["key"],
        key(&env, &b, &[("RUSTFLAGS", "-C debuginfo=0")])["key"],
        "RUSTFLAGS change it"
    );
    std::fs::write(b.join("libs/core/Cargo.toml"), "[package]\nname = \"core-lib\"\nversion.workspace = true\nedition.workspace = true\n# edited\n").unwrap();
    let kb = key(&env, &b, &[]);
    assert_ne!(ka["key"], kb["key"], "a Cargo.toml changed");
    let changed: Vec<&str> = ka["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(kb["inputs"].as_array().unwrap())
        .filter(|(x, y)| x["hash"] != y["hash"])
        .map(|(x, _)| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["Cargo.toml"], "only the changed input differs");
}

// ---------------------------------------------------------------------------------------------
// Snapshots: save in one checkout, restore fresh in another.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use velo_e2e::{Cmd, Run, copy_fresh, files_containing, private_cargo_home};

/// The registry fixture's dependencies, pinned to velo's own lockfile versions.
pub(crate) const REGISTRY_CRATES: &[&str] = &[
    "anyhow-1.0.104",
    "itoa-1.0.18",
    "libc-0.2.191",
    "memchr-2.8.3",
];

/// `velo cargo ARGS…` in `dir`, with `CARGO_HOME` set when given.
pub(crate) fn velo_cargo(env: &Env, dir: &Path, home: Option<&Path>, args: &[&str]) -> Run {
    let mut all = vec!["cargo"];
    all.extend_from_slice(args);
    let mut cmd = env.velo(all).clean_cargo_env().dir(dir);
    if let Some(home) = home {
        cmd = cmd.env("CARGO_HOME", home);
    }
    cmd.ok()
}

/// The lines cargo printed saying it compiled a crate.
pub(crate) fn compiled(run: &Run) -> Vec<String> {
    run.stderr()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Compiling "))
        .map(str::to_owned)
        .collect()
}

/// velo's one summary line.
pub(crate) fn summary(run: &Run) -> String {
    run.stderr()
        .lines()
        .rfind(|l| l.starts_with("velo: "))
        .unwrap_or_default()
        .to_owned()
}

/// Every file under `dir` (outside `target/`) and its mtime.
fn source_mtimes(dir: &Path) -> Vec<(PathBuf, SystemTime)> {
    let mut out: Vec<_> = velo_e2e::files_under(dir)
        .into_iter()
        .filter(|f| !f.starts_with("target"))
        .map(|f| {
            let m = std::fs::metadata(dir.join(&f)).unwrap().modified().unwrap();
            (f, m)
        })
        .collect();
    out.sort();
    out
}

fn run_app(dir: &Path) -> String {
    Cmd::new(dir.join("target/debug/app"))
        .dir(dir)
        .ok()
        .stdout()
}

#[test]
fn a_fresh_checkout_restores_with_every_unit_fresh_and_sources_untouched() {
    let env = Env::new();
    let a = env.path().join("alice/ws");
    copy_fresh(&fixture("inception-ws"), &a);
    let first = velo_cargo(&env, &a, None, &["build"]);
    assert!(!compiled(&first).is_empty(), "{}", first.explain());
    assert!(
        summary(&first).contains("nothing to restore"),
        "{}",
        summary(&first)
    );
    assert!(summary(&first).contains("saved"), "{}", summary(&first));
    // Tests too: the next snapshot holds the test units as well.
    velo_cargo(&env, &a, None, &["test"]);

    // A clone elsewhere, later: every source has a new mtime.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = env.path().join("ci/builds/7f3a/ws");
    copy_fresh(&fixture("inception-ws"), &b);
    let before = source_mtimes(&b);
    let build = velo_cargo(&env, &b, None, &["build"]);
    assert_eq!(
        compiled(&build),
        Vec::<String>::new(),
        "{}",
        build.explain()
    );
    let line = summary(&build);
    assert!(line.contains("restored"), "{line}");
    let fresh = line
        .split("cargo found ")
        .nth(1)
        .and_then(|r| r.split(" units fresh").next())
        .unwrap_or_default();
    let (n, total) = fresh.split_once(" of ").unwrap();
    assert_eq!(n, total, "all units fresh: {line}");
    let test = velo_cargo(&env, &b, None, &["test"]);
    assert_eq!(compiled(&test), Vec::<String>::new(), "{}", test.explain());
    assert!(run_app(&b).contains("run sum=5"));
    assert_eq!(
        source_mtimes(&b),
        before,
        "no source file's mtime was touched"
    );
    // Restored files are private copies, never store blobs: Cargo may write them.
    use std::os::unix::fs::MetadataExt;
    let inodes = |dir: &Path| -> std::collections::HashSet<u64> {
        velo_e2e::files_under(dir)
            .into_iter()
            .map(|f| std::fs::symlink_metadata(dir.join(f)).unwrap().ino())
            .collect()
    };
    let blobs = inodes(&env.store().join("blobs"));
    assert!(!blobs.is_empty());
    assert!(
        inodes(&b.join("target")).is_disjoint(&blobs),
        "no inode shared with the store"
    );
    let app = std::fs::metadata(b.join("target/debug/app")).unwrap();
    assert!(app.mode() & 0o200 != 0, "writable");
    // The uplifted binary is one file with its deps/ original, as Cargo left it on A.
    let links = |ws: &Path| {
        let app = std::fs::metadata(ws.join("target/debug/app")).unwrap();
        let deps = velo_e2e::files_under(&ws.join("target/debug/deps"))
            .into_iter()
            .filter(|f| {
                std::fs::metadata(ws.join("target/debug/deps").join(f))
                    .unwrap()
                    .ino()
                    == app.ino()
            })
            .count();
        (app.nlink(), deps)
    };
    assert_eq!(links(&a), (2, 1), "Cargo links the uplifted binary");
    assert_eq!(links(&b), links(&a), "restored as Cargo left it");
}

#[test]
fn an_edited_source_rebuilds_exactly_its_crate_and_dependents() {
    let env = Env::new();
    let a = env.path().join("a");
    copy_fresh(&fixture("inception-ws"), &a);
    velo_cargo(&env, &a, None, &["build"]);

    let b = env.path().join("b");
    copy_fresh(&fixture("inception-ws"), &b);
    let lib = b.join("libs/core/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, text.replace("a + b", "a * b")).unwrap();
    let status = env
        .velo(["cache", "status"])
        .clean_cargo_env()
        .dir(&b)
        .ok()
        .stdout();
    assert!(status.contains("libs/core/src/lib.rs changed"), "{status}");
    let build = velo_cargo(&env, &b, None, &["build"]);
    let mut crates: Vec<String> = compiled(&build)
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap().to_owned())
        .collect();
    crates.sort();
    assert_eq!(crates, ["app", "core-lib"], "{}", build.explain());
    assert!(
        run_app(&b).contains("run sum=6"),
        "the binary follows the edit"
    );
    // An edit after the restore is seen by Cargo's own mtime check.
    std::fs::write(&lib, text.replace("a + b", "a + b + 1")).unwrap();
    let again = velo_cargo(&env, &b, None, &["build"]);
    assert_eq!(compiled(&again).len(), 2, "{}", again.explain());
    assert!(run_app(&b).contains("run sum=6"));
}

#[test]
fn registry_crates_stay_fresh_when_cargo_home_moves() {
    let env = Env::new();
    let a = env.path().join("a/app");
    copy_fresh(&fixture("registry-app"), &a);
    let home_a = env.path().join("home-alice/.cargo");
    private_cargo_home(&home_a, REGISTRY_CRATES, &a);
    let first = velo_cargo(&env, &a, Some(&home_a), &["build", "--offline"]);
    assert!(compiled(&first).len() >= 5, "{}", first.explain());
    assert_eq!(
        files_containing(&a.join("target"), home_a.to_str().unwrap().as_bytes()),
        Vec::<PathBuf>::new(),
        "no physical CARGO_HOME path in target/"
    );

    // Another machine: the same sources, and CARGO_HOME somewhere else (moved, so newer mtimes
    // on its extracted sources).
    let home_b = env.path().join("ci/cargo-home");
    std::fs::create_dir_all(home_b.parent().unwrap()).unwrap();
    copy_fresh(&home_a, &home_b);
    std::fs::remove_dir_all(&home_a).unwrap();
    // As on a CI machine that caches downloads but not extracted sources: velo cargo runs
    // `cargo fetch` before it restores, so build scripts watching those sources stay fresh.
    std::fs::remove_dir_all(home_b.join("registry/src")).unwrap();
    let b = env.path().join("b/app");
    copy_fresh(&fixture("registry-app"), &b);
    let build = velo_cargo(&env, &b, Some(&home_b), &["build", "--offline"]);
    assert_eq!(
        compiled(&build),
        Vec::<String>::new(),
        "{}",
        build.explain()
    );
    assert!(summary(&build).contains("restored"), "{}", summary(&build));
    let out = Cmd::new(b.join("target/debug/registry-app")).ok().stdout();
    assert!(out.contains("spaces=4"), "{out}");
    assert_eq!(
        files_containing(&b.join("target"), home_b.to_str().unwrap().as_bytes()),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn incremental_caches_travel_unless_left_out() {
    let env = Env::new();
    let a = env.path().join("a");
    copy_fresh(&fixture("inception-ws"), &a);
    velo_cargo(&env, &a, None, &["build"]);
    let b = env.path().join("b");
    copy_fresh(&fixture("inception-ws"), &b);
    env.velo(["cache", "restore"])
        .clean_cargo_env()
        .dir(&b)
        .ok();
    let incremental = b.join("target/debug/incremental");
    assert!(
        std::fs::read_dir(&incremental).is_ok_and(|mut d| d.next().is_some()),
        "the snapshot holds rustc's incremental caches"
    );
    // An edit in B recompiles just that crate, incrementally (timings: cargo xtask bench cache).
    // It comes right after the restore, within the same tick of the kernel's file clock: Cargo
    // must still see it.
    let main = b.join("app/src/main.rs");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, text.replace("run sum=", "run total=")).unwrap();
    let edit = velo_cargo(&env, &b, None, &["build"]);
    assert_eq!(compiled(&edit).len(), 1, "{}", edit.explain());
    assert!(run_app(&b).contains("run total=5"));

    // --no-incremental leaves them out.
    let c = env.path().join("c");
    copy_fresh(&fixture("inception-ws"), &c);
    let lean = env.path().join("lean-store");
    let velo_lean = |args: &[&str], dir: &Path| {
        env.velo(args)
            .clean_cargo_env()
            .dir(dir)
            .env("VELO_STORE", &lean)
            .ok()
    };
    velo_lean(&["inception", "--", "cargo", "build"], &c);
    velo_lean(&["cache", "save", "--no-incremental"], &c);
    let d = env.path().join("d");
    copy_fresh(&fixture("inception-ws"), &d);
    velo_lean(&["cache", "restore"], &d);
    assert!(d.join("target/debug/.fingerprint").is_dir());
    assert!(!d.join("target/debug/incremental").exists());
}

#[test]
fn successive_commits_share_most_blobs() {
    let env = Env::new();
    let a = env.path().join("a");
    copy_fresh(&fixture("inception-ws"), &a);
    velo_cargo(&env, &a, None, &["build"]);
    let main = a.join("app/src/main.rs");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, text.replace("run sum=", "run total=")).unwrap();
    velo_cargo(&env, &a, None, &["build"]);
    let list = env.velo(["cache", "list", "--json"]).ok().json();
    let snapshots = list["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 2, "{list:#}");
    let logical = list["logical_bytes"].as_u64().unwrap();
    let stored = list["stored_bytes"].as_u64().unwrap();
    let newest_unique = snapshots[0]["unique_bytes"].as_u64().unwrap();
    let newest = snapshots[0]["bytes"].as_u64().unwrap();
    eprintln!(
        "two snapshots: {logical} bytes in all, {stored} stored ({:.2}x); the second adds {newest_unique} of its {newest} bytes",
        logical as f64 / stored as f64
    );
    assert!(
        newest_unique * 2 < newest,
        "most of the second snapshot is shared with the first"
    );
    // The human listing says the same.
    let human = env.velo(["cache", "list"]).ok().stdout();
    assert!(human.contains("2 snapshots"), "{human}");
}

#[test]
fn bad_input_is_refused_or_served_safely() {
    let env = Env::new();
    let a = env.path().join("a");
    copy_fresh(&fixture("inception-ws"), &a);

    // No snapshot for the key: restore says so and succeeds; velo cargo builds normally.
    let nothing = env
        .velo(["cache", "restore"])
        .clean_cargo_env()
        .dir(&a)
        .ok()
        .stdout();
    assert!(nothing.contains("nothing to restore"), "{nothing}");
    assert!(!a.join("target").exists());
    velo_cargo(&env, &a, None, &["build"]);

    // A dirty target directory is never overwritten.
    let before = std::fs::read(a.join("target/debug/app")).unwrap();
    env.velo(["cache", "restore"])
        .clean_cargo_env()
        .dir(&a)
        .fails()
        .stderr_has(&["not empty", "nothing of yours is overwritten"]);
    assert_eq!(std::fs::read(a.join("target/debug/app")).unwrap(), before);

    // A snapshot whose blobs were garbage-collected: restore refuses, velo cargo builds.
    let blobs = env.store().join("blobs");
    let mut removed = 0;
    for f in velo_e2e::files_under(&blobs).into_iter().step_by(3) {
        std::fs::remove_file(blobs.join(f)).unwrap();
        removed += 1;
    }
    assert!(removed > 0);
    let b = env.path().join("b");
    copy_fresh(&fixture("inception-ws"), &b);
    env.velo(["cache", "restore"])
        .clean_cargo_env()
        .dir(&b)
        .fails()
        .stderr_has(&["missing", "blob"]);
    assert!(!b.join("target").exists(), "nothing half-restored");
    let build = velo_cargo(&env, &b, None, &["build"]);
    assert!(
        build.stderr().contains("not restored"),
        "{}",
        build.explain()
    );
    assert!(!compiled(&build).is_empty());

    // Flags that cargo would reject are cargo's to report, with cargo's exit status.
    let bad = env
        .velo(["cargo", "build", "--no-such-flag"])
        .clean_cargo_env()
        .dir(&b)
        .run();
    assert_ne!(bad.code(), Some(0));
}

#[test]
fn a_full_disk_during_restore_leaves_no_target_behind() {
    if Cmd::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .run()
        .code()
        != Some(0)
    {
        velo_e2e::skip(
            "a_full_disk_during_restore_leaves_no_target_behind",
            "cannot create a user and mount namespace (unshare -rm)",
        );
        return;
    }
    let env = Env::new();
    let a = env.path().join("a");
    copy_fresh(&fixture("inception-ws"), &a);
    velo_cargo(&env, &a, None, &["build"]);
    // A 2 MiB tmpfs (in a private mount namespace) holds the sources but not the snapshot.
    let small = env.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let script = format!(
        "set -e; mount -t tmpfs -o size=2m tmpfs {small}; cp -r {src} {small}/ws; cd {small}/ws; \
         set +e; {velo} cache restore; echo rc=$?; echo listing:; ls -a {small}/ws",
        small = small.display(),
        src = fixture("inception-ws").display(),
        velo = velo_e2e::velo_bin().display(),
    );
    let out = Cmd::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .clean_cargo_env()
        .env("VELO_STORE", env.store())
        .ok();
    let text = format!("{}{}", out.stdout(), out.stderr());
    assert!(text.contains("rc=2") || text.contains("rc=1"), "{text}");
    assert!(text.contains("disk is full"), "{text}");
    let listing = out.stdout();
    let listing = listing.split("listing:").nth(1).unwrap_or_default();
    assert!(listing.contains("Cargo.toml"), "{text}");
    assert!(
        !listing.contains("target") && !listing.contains(".velo-restore"),
        "no target/ and no staging directory: {text}"
    );
}
