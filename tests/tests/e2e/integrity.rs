//! What a hostile user or a damaged disk can do to the store, and what velo does about it: the
//! store's permission model, corrupt and missing blobs (never served, healed), read-only and
//! other users' stores, and control bytes in names (docs/store.md, docs/run.md).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use velo_e2e::{Cmd, Env, files_under, is_root, skip};

/// `velo run --mode farm --manifest t.velo -- cat a`.
const FARM_CAT_A: [&str; 8] = [
    "run",
    "--mode",
    "farm",
    "--manifest",
    "t.velo",
    "--",
    "cat",
    "a",
];

/// `velo run --mode MODE --manifest t.velo -- cat FILES…`.
fn cat_in(env: &Env, mode: &str, files: &[&str]) -> Cmd {
    let mut args = vec!["run", "--mode", mode, "--manifest", "t.velo", "--", "cat"];
    args.extend_from_slice(files);
    env.velo(args)
}

/// The blob of `content` (not executable) in `store`.
fn blob_of(store: &Path, content: &[u8]) -> PathBuf {
    let hex = blake3::hash(content).to_hex().to_string();
    store.join("blobs").join(&hex[..2]).join(&hex)
}

/// Writes `content` through a blob's inode, as a root process ignoring its 0444 would.
fn overwrite(blob: &Path, content: &[u8]) {
    fs::set_permissions(blob, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(blob, content).unwrap();
    fs::set_permissions(blob, fs::Permissions::from_mode(0o444)).unwrap();
}

/// Whether uid 65534 can read `path` (by running `cat` as that user).
fn nobody_reads(path: &Path) -> bool {
    use std::os::unix::process::CommandExt;
    Command::new("cat")
        .arg(path)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_private_file_cannot_be_read_through_the_store_by_another_user() {
    if !is_root() {
        skip(
            "a_private_file_cannot_be_read_through_the_store_by_another_user",
            "needs root to act as a second user",
        );
        return;
    }
    let env = Env::new();
    // The test's directory is open to all, so only the store's own modes stand in the way.
    fs::set_permissions(env.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let secret = env.write("src/private/key", "the secret\n");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(
        env.path().join("src/private"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    env.write("src/public", "anyone may read this\n");
    assert!(
        !nobody_reads(&secret),
        "the probe: nobody cannot read the source"
    );
    assert!(nobody_reads(&env.path().join("src/public")));

    env.velo(["ingest", "src", "-o", "src.velo"]).ok();
    let mode = fs::metadata(env.store()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "a new store is private");
    let blob = blob_of(&env.store(), b"the secret\n");
    assert!(blob.is_file());
    for file in files_under(&env.store()) {
        assert!(
            !nobody_reads(&file),
            "{} is readable by another user",
            file.display()
        );
    }
    let status = env.velo(["status", "--json"]).ok().json();
    assert_eq!(status["access"], "private");

    // A shared store is an explicit choice, and then what it holds is everyone's: this is what
    // the private default prevents (and shows the probe can succeed).
    let shared = env.path().join("shared-store");
    env.velo([
        "--store",
        shared.to_str().unwrap(),
        "ingest",
        "src",
        "-o",
        "shared.velo",
        "--shared-store",
    ])
    .ok();
    assert!(nobody_reads(&blob_of(&shared, b"the secret\n")));
    // Asking an existing private store to be shared is refused, with the way to do it.
    env.velo(["ingest", "src", "-o", "again.velo", "--shared-store"])
        .fails()
        .stderr_has(&["is private (mode 0700)", "chmod 0755"]);
}

#[test]
fn a_corrupt_or_missing_blob_is_never_served_and_heals() {
    let env = Env::new();
    env.write("t/a", "hello world\n");
    env.write("t/b", "second file\n");
    env.write("t/c", "third\n");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    // A cached farm first, so its hard links to the damaged inode are put to the test too.
    let first = env.velo(FARM_CAT_A).ok();
    assert_eq!(first.stdout(), "hello world\n");

    // Same size, other content: written through the inode. And one blob deleted.
    overwrite(&blob_of(&env.store(), b"hello world\n"), b"HELLO WORLD\n");
    fs::remove_file(blob_of(&env.store(), b"second file\n")).unwrap();
    for mode in ["farm", "shim"] {
        let run = cat_in(&env, mode, &["a"]).run().expect_code(2);
        assert!(
            !run.stdout().contains("HELLO"),
            "{mode}: corrupt content served: {}",
            run.explain()
        );
        assert!(
            run.stderr().contains("cannot be served") && run.stderr().contains("corrupt"),
            "{mode}: {}",
            run.explain()
        );
    }
    let verify = env.velo(["status", "--verify"]).run().expect_code(1);
    assert!(
        verify.stdout().contains("broken manifest ")
            && verify
                .stdout()
                .contains("t.velo: 1 missing, 1 corrupt blobs"),
        "{}",
        verify.explain()
    );

    let repair = env
        .velo(["status", "--verify", "--repair", "--json"])
        .run()
        .expect_code(1)
        .json();
    assert_eq!(repair["repair"]["quarantined"].as_array().unwrap().len(), 1);
    assert_eq!(files_under(&env.store().join("quarantine")).len(), 1);
    // The next ingest reads every file again and writes the two blobs back.
    let healed = env.ingest_json(&["t", "-o", "t.velo"]);
    assert_eq!(healed["new_blobs"], 2, "{healed}");
    env.velo(["status", "--verify"]).ok();
    for mode in ["farm", "shim"] {
        let run = cat_in(&env, mode, &["a", "b"]).ok();
        assert_eq!(run.stdout(), "hello world\nsecond file\n", "{mode}");
    }
    env.velo(["gc", "--run"]).ok();
    assert!(files_under(&env.store().join("quarantine")).is_empty());
}

/// Damage that keeps the blob's sealed mtime (bit rot, or a deliberate reset) gets past the
/// cheap check; `verify --repair` finds it, and the farm cached before it must not serve it.
#[test]
fn damage_that_keeps_the_seal_is_found_by_verify_and_repaired() {
    let env = Env::new();
    env.write("t/a", "hello world\n");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    env.velo([
        "run",
        "--mode",
        "farm",
        "--manifest",
        "t.velo",
        "--",
        "true",
    ])
    .ok();
    let blob = blob_of(&env.store(), b"hello world\n");
    overwrite(&blob, b"HELLO WORLD\n");
    let sealed = filetime_of_seal();
    Command::new("touch")
        .args(["-m", "-d", &sealed])
        .arg(&blob)
        .status()
        .unwrap();
    env.velo(["status", "--verify", "--repair"])
        .run()
        .expect_code(1);
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let run = env.velo(FARM_CAT_A).ok();
    assert_eq!(run.stdout(), "hello world\n", "{}", run.explain());
}

/// The sealed mtime as touch(1) takes it.
fn filetime_of_seal() -> String {
    "@1".to_owned()
}

#[test]
fn reingest_replaces_a_blob_it_finds_damaged() {
    let env = Env::new();
    env.write("t/a", "hello world\n");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let blob = blob_of(&env.store(), b"hello world\n");
    overwrite(&blob, b"truncated");
    // --no-index: every file is read, so each blob of its content is checked.
    let report = env.ingest_json(&["t", "-o", "t.velo", "--no-index"]);
    assert_eq!(report["replaced_blobs"], 1, "{report}");
    assert_eq!(fs::read(&blob).unwrap(), b"hello world\n");
    env.velo(["status", "--verify"]).ok();
}

#[test]
fn verify_fails_on_an_unreadable_manifest_and_a_lying_size() {
    let env = Env::new();
    env.write("t/a", "alpha");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    fs::write(env.path().join("t.velo"), "garbage").unwrap();
    let run = env.velo(["status", "--verify"]).run().expect_code(1);
    assert!(
        run.stdout().contains("unreadable manifest") && run.stdout().contains("t.velo"),
        "{}",
        run.explain()
    );
    // The registered path now holds a crafted manifest: its one file declares 2^64-1 bytes.
    let crafted =
        velo_e2e::raw_manifest_sized(&[(2, b"a", Some(blake3::hash(b"alpha")), b"")], u64::MAX);
    fs::write(env.path().join("t.velo"), crafted).unwrap();
    let run = env.velo(["status", "--verify"]).run().expect_code(1);
    assert!(
        run.stdout()
            .contains("a declares 18446744073709551615 bytes, its blob holds 5"),
        "{}",
        run.explain()
    );
}

/// Runs `script` in a private mount namespace where `ro` is a read-only bind mount of the
/// store; `None` (and a loud skip) where that cannot be had.
fn with_read_only_store(env: &Env, test: &str, script: &str) -> Option<std::process::Output> {
    if !is_root() {
        skip(test, "needs root for a read-only bind mount");
        return None;
    }
    let full = format!(
        "set -u; mkdir -p ro home; mount --bind {store} ro && mount -o remount,bind,ro ro || exit 99; {script}",
        store = env.store().display()
    );
    let (ro, home) = (env.path().join("ro"), env.path().join("home"));
    velo_e2e::in_mount_namespace_with(
        env,
        test,
        &full,
        &[
            ("VELO_STORE", Some(&ro)),
            ("HOME", Some(&home)),
            ("XDG_CACHE_HOME", None),
            ("VELO_LOG", None),
        ],
    )
}

#[test]
fn a_read_only_store_serves_status_verify_and_runs() {
    let env = Env::new();
    env.write("t/a", "hello world\n");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let velo = velo_e2e::velo_bin();
    let velo = velo.display();
    let script = format!(
        "{velo} status >/dev/null; echo status=$?; \
         {velo} status --verify >/dev/null; echo verify=$?; \
         {velo} run --mode farm --manifest t.velo -- cat a; echo farm=$?; \
         {velo} run --mode shim --manifest t.velo -- cat a; echo shim=$?; \
         {velo} run --mode farm --manifest t.velo -- cat a; echo farm-again=$?; \
         {velo} ingest t -o u.velo; echo ingest=$?; \
         {velo} gc --run; echo gc=$?"
    );
    let Some(out) = with_read_only_store(
        &env,
        "a_read_only_store_serves_status_verify_and_runs",
        &script,
    ) else {
        return;
    };
    let (stdout, stderr, explain) = velo_e2e::output_texts(&out);
    for line in [
        "status=0",
        "verify=0",
        "hello world\nfarm=0",
        "hello world\nshim=0",
        "hello world\nfarm-again=0",
        "ingest=2",
        "gc=2",
    ] {
        assert!(stdout.contains(line), "{line}: {explain}");
    }
    assert!(
        stderr.contains(
            "is read-only (a read-only filesystem), and velo ingest writes into the store"
        ) && stderr.contains("and velo gc --run writes"),
        "{explain}"
    );
    // What runs wrote went to the user's cache, not into the store.
    assert!(
        env.path().join("home/.cache/velo/stores").is_dir(),
        "{explain}"
    );
}

#[test]
fn another_users_shared_store_serves_status_verify_and_runs() {
    if !is_root() {
        skip(
            "another_users_shared_store_serves_status_verify_and_runs",
            "needs root to act as a second user",
        );
        return;
    }
    let env = Env::new();
    env.open_to_everyone();
    env.write("t/a", "hello world\n");
    env.velo(["ingest", "t", "-o", "t.velo", "--shared-store"])
        .ok();
    let home = env.path().join("nobody-home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    let as_nobody = |args: &[&str]| -> Cmd {
        env.velo(args)
            .unprivileged()
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
    };
    as_nobody(&["status"]).ok();
    as_nobody(&["status", "--verify"]).ok();
    for mode in ["farm", "shim"] {
        let run = as_nobody(&[
            "run",
            "--mode",
            mode,
            "--manifest",
            "t.velo",
            "--",
            "cat",
            "a",
        ])
        .ok();
        assert_eq!(run.stdout(), "hello world\n", "{mode}");
    }
    as_nobody(&["ingest", "t", "-o", "nobody-home/u.velo"])
        .fails()
        .stderr_has(&["owned by uid 0", "velo ingest writes into the store"]);
}

#[test]
fn control_bytes_in_names_never_reach_the_terminal() {
    let env = Env::new();
    env.write("t/\x1b[31mred\nsplit", "x");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let show = env.velo(["manifest", "show", "t.velo"]).ok();
    let out = show.stdout();
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.contains("\\x1b[31mred\\x0asplit"), "{out:?}");
    env.write("u/plain", "x");
    env.velo(["ingest", "u", "-o", "u.velo"]).ok();
    let diff = env
        .velo(["manifest", "diff", "t.velo", "u.velo"])
        .run()
        .expect_code(1);
    assert!(!diff.stdout().contains('\x1b'), "{}", diff.explain());
    assert_eq!(
        diff.stdout().lines().count(),
        2,
        "one line per change: {}",
        diff.explain()
    );
}

#[test]
fn errors_say_their_cause_once() {
    let env = Env::new();
    fs::write(env.path().join("bad.velo"), "garbage").unwrap();
    for args in [
        vec!["manifest", "show", "missing.velo"],
        vec!["manifest", "show", "bad.velo"],
        vec!["ingest", "nope", "-o", "n.velo"],
        vec!["run", "--manifest", "missing.velo", "--", "true"],
    ] {
        let run = env.velo(&args).fails();
        let stderr = run.stderr();
        let parts: Vec<&str> = stderr.trim().split(": ").collect();
        for (i, part) in parts.iter().enumerate() {
            assert!(
                !parts[i + 1..].contains(part),
                "{args:?}: {part:?} is said twice: {stderr}"
            );
        }
        for cause in ["(os error 2)", "at byte"] {
            assert!(
                stderr.matches(cause).count() <= 1,
                "{args:?}: {cause} twice: {stderr}"
            );
        }
    }
}
