//! Bad input: a clear error naming the input, exit status 2, and nothing changed.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use velo_e2e::{Env, files_under, fingerprint_tree, in_mount_namespace};

fn assert_store_untouched(env: &Env) {
    assert!(
        files_under(&env.store().join("blobs")).is_empty(),
        "no blob may be written: {:?}",
        files_under(&env.store())
    );
}

#[test]
fn nonexistent_directory() {
    let env = Env::new();
    env.velo(["ingest", "nope", "-o", "n.velo"])
        .fails()
        .stderr_has(&["cannot ingest nope", "No such file or directory"]);
    assert!(!env.store().exists(), "the store is not even created");
    assert!(!env.path().join("n.velo").exists());
}

#[test]
fn not_a_directory() {
    let env = Env::new();
    env.write("file", "x");
    env.velo(["ingest", "file", "-o", "n.velo"])
        .fails()
        .stderr_has(&["cannot ingest file: not a directory"]);
    assert!(!env.store().exists());
}

#[test]
fn output_directory_missing() {
    let env = Env::new();
    env.write("t/a", "x");
    env.velo(["ingest", "t", "-o", "no/such/dir/t.velo"])
        .fails()
        .stderr_has(&["cannot write manifest no/such/dir/t.velo"]);
    assert_store_untouched(&env);
}

#[test]
fn symlink_loop_as_the_directory() {
    let env = Env::new();
    symlink("loop-b", env.path().join("loop-a")).unwrap();
    symlink("loop-a", env.path().join("loop-b")).unwrap();
    env.velo(["ingest", "loop-a", "-o", "l.velo"])
        .fails()
        .stderr_has(&["cannot ingest loop-a", "symbolic links"]);
}

#[test]
fn symlink_loops_inside_the_tree_are_recorded_not_followed() {
    let env = Env::new();
    env.write("t/a", "x");
    symlink("b", env.path().join("t/a-loop")).unwrap();
    symlink("a-loop", env.path().join("t/b")).unwrap();
    symlink(".", env.path().join("t/self")).unwrap();
    let m = {
        env.velo(["ingest", "t", "-o", "t.velo"]).ok();
        env.velo(["manifest", "show", "t.velo", "--json"])
            .ok()
            .json()
    };
    let kinds: Vec<_> = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["file", "symlink", "symlink", "symlink"]);
}

/// Runs `f` with an unreadable entry in place; root reads everything, so there velo runs as
/// `nobody` (see `Cmd::unprivileged`).
fn with_unreadable(env: &Env, rel: &str, dir: bool) {
    env.open_to_everyone();
    fs::create_dir_all(env.path().join("t/sub")).unwrap();
    env.write("t/ok", "fine");
    let path = env.path().join(rel);
    if dir {
        fs::create_dir_all(path.join("inner")).unwrap();
        fs::write(path.join("inner/f"), "hidden").unwrap();
    } else {
        fs::write(&path, "secret").unwrap();
    }
    for d in [env.path().join("t"), env.path().join("t/sub")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o000)).unwrap();
}

/// An unreadable entry fails the ingest by default, naming it and the way out, and is left out
/// and listed with `--on-unreadable skip`; the tree is unchanged either way.
fn unreadable_entry_is_fatal_by_default_and_skippable(rel_in_env: &str, dir: bool) {
    let env = Env::new();
    with_unreadable(&env, rel_in_env, dir);
    let before = fingerprint_tree(&env.path().join("t"));
    env.velo(["ingest", "t", "-o", "t.velo"])
        .unprivileged()
        .fails()
        .stderr_has(&[
            "cannot read",
            rel_in_env,
            "Permission denied",
            "--on-unreadable skip",
        ]);
    assert!(!env.path().join("t.velo").exists());

    let skip = [
        "ingest",
        "t",
        "-o",
        "t.velo",
        "--on-unreadable",
        "skip",
        "--json",
    ];
    let run = env.velo(skip).unprivileged().ok();
    let rel = rel_in_env.strip_prefix("t/").unwrap();
    let warning = format!("skipped {rel}: Permission denied");
    assert!(run.stderr().contains(&warning), "{}", run.explain());
    assert_eq!(run.json()["skipped"][0]["path"], rel);
    assert_eq!(before, fingerprint_tree(&env.path().join("t")));
}

#[test]
fn unreadable_file_is_fatal_by_default_and_skippable() {
    unreadable_entry_is_fatal_by_default_and_skippable("t/sub/secret", false);
}

#[test]
fn unreadable_directory_is_fatal_by_default_and_skippable() {
    unreadable_entry_is_fatal_by_default_and_skippable("t/sub/locked", true);
}

#[test]
fn unreadable_root_directory() {
    let env = Env::new();
    env.open_to_everyone();
    env.write("locked/a", "x");
    fs::set_permissions(env.path().join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    env.velo(["ingest", "locked", "-o", "l.velo"])
        .unprivileged()
        .fails()
        .stderr_has(&["cannot ingest locked", "Permission denied"]);
    assert!(!env.store().exists(), "the store is not even created");
    fs::set_permissions(env.path().join("locked"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn paths_longer_than_path_max() {
    let env = Env::new();
    // Build a chain of directories whose full path exceeds PATH_MAX, each level created
    // relative to a descriptor of the previous one (the whole path cannot be passed to mkdir).
    fs::create_dir(env.path().join("t")).unwrap();
    let name = std::ffi::CString::new("d".repeat(200)).unwrap();
    let mut dir = fs::File::open(env.path().join("t")).unwrap();
    for _ in 0..25 {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: valid descriptor and NUL-terminated name; the new fd is owned by a File.
        unsafe {
            assert_eq!(libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755), 0);
            let fd = libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            );
            assert!(fd >= 0);
            dir = fs::File::from_raw_fd(fd);
        }
    }
    env.velo(["ingest", "t", "-o", "t.velo"])
        .fails()
        .stderr_has(&["path too long", "the limit is 4096"]);
    assert!(!env.path().join("t.velo").exists());
    let run = env
        .velo([
            "ingest",
            "t",
            "-o",
            "t.velo",
            "--on-unreadable",
            "skip",
            "--json",
        ])
        .ok();
    assert!(
        !run.json()["skipped"].as_array().unwrap().is_empty(),
        "{}",
        run.explain()
    );
}

#[test]
fn corrupt_or_truncated_manifest_says_where() {
    let env = Env::new();
    env.write("t/a", "alpha");
    env.write("t/b/c", "gamma");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let bytes = fs::read(env.path().join("t.velo")).unwrap();

    fs::write(env.path().join("trunc.velo"), &bytes[..bytes.len() - 10]).unwrap();
    env.velo(["manifest", "show", "trunc.velo"])
        .fails()
        .stderr_has(&[
            "manifest trunc.velo is corrupt",
            "at byte",
            "(entry 2)",
            "truncated",
        ]);

    fs::write(env.path().join("junk.velo"), b"#!/bin/sh\n").unwrap();
    env.velo(["manifest", "id", "junk.velo"])
        .fails()
        .stderr_has(&["at byte 0", "not a velo manifest"]);

    let mut evil = bytes.clone();
    let at = evil.windows(3).position(|w| w == b"b/c").unwrap();
    evil[at..at + 3].copy_from_slice(b"../");
    fs::write(env.path().join("evil.velo"), &evil).unwrap();
    env.velo(["manifest", "show", "evil.velo"])
        .fails()
        .stderr_has(&["not normalized", "\"../\""]);

    env.velo(["manifest", "show", "absent.velo"])
        .fails()
        .stderr_has(&["cannot read manifest absent.velo", "No such file"]);
}

#[test]
fn manifest_naming_a_missing_blob_is_reported() {
    let env = Env::new();
    env.write("t/a", "alpha");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let hash = blake3::hash(b"alpha").to_hex().to_string();
    fs::remove_file(env.store().join("blobs").join(&hash[..2]).join(&hash)).unwrap();
    let run = env.velo(["status"]).run().expect_code(1);
    assert!(
        run.stdout().contains(&format!("missing blob {hash}")),
        "{}",
        run.explain()
    );
    assert!(
        run.stdout().contains("t.velo"),
        "names the manifest: {}",
        run.explain()
    );
}

#[test]
fn bad_exclude_glob() {
    let env = Env::new();
    env.write("t/a", "alpha");
    env.velo(["ingest", "t", "-o", "t.velo", "--exclude", "a[b"])
        .fails()
        .stderr_has(&["invalid --exclude glob \"a[b\""]);
    assert_store_untouched(&env);
}

/// The store on a full filesystem: a 2 MiB tmpfs in a private mount namespace.
#[test]
fn full_disk_leaves_no_partial_blob() {
    let env = Env::new();
    env.write("t/small", "small file\n");
    // 5 MiB of incompressible data: larger than the filesystem, and than the store's in-memory
    // limit, so it takes the streaming path.
    let big: Vec<u8> = (0..5u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    env.write("t/big.bin", &big);
    let before = fingerprint_tree(&env.path().join("t"));
    let store = env.store();
    let script = format!(
        "set -u; mkdir -p {store}; mount -t tmpfs -o size=2m tmpfs {store} || exit 99; \
         {velo} --store {store} ingest t -o t.velo; echo \"ingest-exit=$?\"; \
         echo files:; find {store} -type f | sort; \
         {velo} --store {store} status --verify; echo \"verify-exit=$?\"",
        store = store.display(),
        velo = velo_e2e::velo_bin().display()
    );
    let Some(out) = in_mount_namespace(&env, "full_disk_leaves_no_partial_blob", &script) else {
        return;
    };
    let (stdout, stderr, explain) = velo_e2e::output_texts(&out);
    assert!(stdout.contains("ingest-exit=2"), "{explain}");
    assert!(
        stderr.contains(&format!(
            "no space left on the filesystem holding {}",
            store.display()
        )) && stderr.matches("No space left on device").count() == 1,
        "{explain}"
    );
    assert!(stdout.contains("verify-exit=0"), "{explain}");
    assert!(
        !stdout.contains("/tmp/blob-"),
        "no temporary file left: {explain}"
    );
    let big_hash = blake3::hash(&big).to_hex().to_string();
    assert!(
        !stdout.contains(&big_hash),
        "no blob of the big file: {explain}"
    );
    assert!(
        !Path::new(&env.path().join("t.velo")).exists(),
        "no manifest written"
    );
    assert_eq!(before, fingerprint_tree(&env.path().join("t")));
}

/// Only the manifest's directory is full: the error names that directory, not the store, and
/// the store keeps its blobs for the next attempt.
#[test]
fn a_full_disk_holding_only_the_manifest_is_named() {
    let env = Env::new();
    for i in 0..200 {
        env.write(&format!("t/f{i:03}"), format!("file {i}\n"));
    }
    let script = format!(
        "set -u; mkdir -p out; mount -t tmpfs -o size=64k tmpfs out || exit 99; \
         head -c 60000 /dev/zero > out/filler 2>/dev/null; \
         {velo} --store {store} ingest t -o out/t.velo; echo \"ingest-exit=$?\"",
        store = env.store().display(),
        velo = velo_e2e::velo_bin().display()
    );
    let Some(out) = in_mount_namespace(
        &env,
        "a_full_disk_holding_only_the_manifest_is_named",
        &script,
    ) else {
        return;
    };
    let (stdout, stderr, explain) = velo_e2e::output_texts(&out);
    assert!(stdout.contains("ingest-exit=2"), "{explain}");
    assert!(
        stderr.contains("no space left on the filesystem holding")
            && stderr.contains("/out/t.velo")
            && !stderr.contains(&env.store().display().to_string()),
        "the manifest's filesystem is named, the store is not: {explain}"
    );
    assert_eq!(
        stderr.matches("No space left on device").count(),
        1,
        "the cause is said once: {explain}"
    );
}

#[test]
fn trace_buffer_not_a_power_of_two() {
    let env = Env::new();
    env.velo(["trace", "--buffer", "3", "--", "true"])
        .fails()
        .stderr_has(&["--buffer", "\"3\" is not a power of two"]);
}
