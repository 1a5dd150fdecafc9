//! `velo run`: link farms, static binaries, the store's immutability even for root, the
//! `--isolate` sandbox (as root and as an unprivileged user), and malicious manifests.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use velo_e2e::{
    Cmd, Env, Run, busybox, files_under, is_root, raw_manifest, raw_manifest_sized, skip,
};

/// A base image in `env`/`rel`: busybox and the applets these tests use, as relative links.
fn base_image(env: &Env, busybox: &Path) -> PathBuf {
    let dir = env.path().join("base");
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "id", "cat", "echo", "ls", "mount", "truncate", "chmod", "rm", "kill", "hostname",
        "test", "touch", "wc", "ip", "mkdir", "readlink", "stat", "sleep", "grep", "head",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    dir
}

/// The app layer: a data file, an executable script, a non-executable file, a symlink, an
/// empty directory.
fn app_tree(env: &Env) -> PathBuf {
    let dir = env.path().join("app");
    env.write("app/data.txt", "original data\n");
    env.write("app/run.sh", "#!/bin/sh\necho running\n");
    fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    env.write("app/notes/readme", "not executable\n");
    std::os::unix::fs::symlink("data.txt", dir.join("link")).unwrap();
    fs::create_dir_all(dir.join("empty")).unwrap();
    dir
}

/// Ingests the base and the app; returns the manifest paths.
fn manifests(env: &Env, busybox: &Path, unprivileged: bool) -> (PathBuf, PathBuf) {
    base_image(env, busybox);
    app_tree(env);
    for (src, out) in [("base", "base.velo"), ("app", "app.velo")] {
        let mut cmd = env.velo(["ingest", src, "-o", out]);
        if unprivileged {
            cmd = cmd.unprivileged();
        }
        cmd.ok();
    }
    (env.path().join("base.velo"), env.path().join("app.velo"))
}

fn velo_run(env: &Env, args: &[&str], unprivileged: bool) -> Run {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    let mut cmd = env.velo(all);
    if unprivileged {
        cmd = cmd.unprivileged();
    }
    cmd.run()
}

/// Every blob in the store, with its bytes, to compare before and after.
fn store_snapshot(env: &Env) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let blobs = env.store().join("blobs");
    files_under(&blobs)
        .into_iter()
        .map(|rel| {
            let path = blobs.join(&rel);
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            (rel, fs::read(&path).unwrap(), mode)
        })
        .collect()
}

fn assert_no_run_dirs_left(env: &Env) {
    // The farm cache (`farms/cache/`) stays by design; per-run directories must not.
    let farms = env.store().join("farms");
    let left: Vec<_> = fs::read_dir(&farms)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| !p.ends_with("cache"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "run directories left behind: {left:?}");
}

#[test]
fn farm_mode_serves_static_binaries_and_keeps_blobs_immutable_as_root() {
    let Some(busybox) =
        busybox("farm_mode_serves_static_binaries_and_keeps_blobs_immutable_as_root")
    else {
        return;
    };
    if !is_root() {
        skip(
            "farm_mode_serves_static_binaries_and_keeps_blobs_immutable_as_root",
            "needs root (the point is that root cannot write blobs)",
        );
        return;
    }
    let env = Env::new();
    let (base, app) = manifests(&env, &busybox, false);
    let before = store_snapshot(&env);
    let script = "echo x >> data.txt && truncate -s 0 run.sh && chmod 777 notes/readme && rm link && \
                  echo y > new.txt && cat data.txt && wc -c < run.sh && ls";
    let run = velo_run(
        &env,
        &[
            "-v",
            "--base",
            base.to_str().unwrap(),
            "--manifest",
            app.to_str().unwrap(),
            "--",
            "./bin/sh",
            "-c",
            script,
        ],
        false,
    )
    .expect_code(0);
    assert_eq!(
        run.stdout(),
        "original data\nx\n0\nbin\ndata.txt\nempty\nnew.txt\nnotes\nrun.sh\n",
        "{}",
        run.explain()
    );
    assert!(
        run.stderr()
            .contains("static ELF (no interpreter): the shim cannot reach it"),
        "{}",
        run.explain()
    );
    assert_eq!(
        store_snapshot(&env),
        before,
        "a write through the farm reached the store"
    );
    env.velo(["status", "--verify"]).ok();
    assert_no_run_dirs_left(&env);
}

#[test]
fn farm_mode_as_an_unprivileged_user_cannot_write_blobs_either() {
    let Some(busybox) = busybox("farm_mode_as_an_unprivileged_user_cannot_write_blobs_either")
    else {
        return;
    };
    let env = Env::new();
    env.open_to_everyone();
    let (base, app) = manifests(&env, &busybox, true);
    let before = store_snapshot(&env);
    let script = "echo x >> data.txt; truncate -s 0 run.sh; chmod 777 notes/readme; cat data.txt; echo y > new.txt && cat new.txt";
    let run = velo_run(
        &env,
        &[
            "--base",
            base.to_str().unwrap(),
            "--manifest",
            app.to_str().unwrap(),
            "--",
            "./bin/sh",
            "-c",
            script,
        ],
        true,
    )
    .expect_code(0);
    assert!(
        run.stdout().starts_with("original data\n"),
        "{}",
        run.explain()
    );
    assert!(
        run.stdout().ends_with("y\n"),
        "new files land in the private layer: {}",
        run.explain()
    );
    assert_eq!(store_snapshot(&env), before);
    env.velo(["status", "--verify"]).unprivileged().ok();
}

#[test]
fn executable_bits_symlinks_and_empty_dirs_survive_and_later_layers_win() {
    let Some(busybox) =
        busybox("executable_bits_symlinks_and_empty_dirs_survive_and_later_layers_win")
    else {
        return;
    };
    let env = Env::new();
    let (base, app) = manifests(&env, &busybox, false);
    // A third layer replaces data.txt and turns `notes` (a directory) into a file.
    env.write("over/data.txt", "replaced\n");
    env.write("over/notes", "now a file\n");
    env.velo(["ingest", "over", "-o", "over.velo"]).ok();
    let script = "test -x run.sh && ! test -x notes && test -L link && test -d empty && ./run.sh && cat link notes";
    let run = velo_run(
        &env,
        &[
            "--base",
            base.to_str().unwrap(),
            "--base",
            app.to_str().unwrap(),
            "--manifest",
            "over.velo",
            "--",
            "./bin/sh",
            "-c",
            script,
        ],
        false,
    )
    .expect_code(0);
    assert_eq!(
        run.stdout(),
        "running\nreplaced\nnow a file\n",
        "{}",
        run.explain()
    );
}

#[test]
fn exit_codes_and_signals_pass_through_in_both_modes() {
    let Some(busybox) = busybox("exit_codes_and_signals_pass_through_in_both_modes") else {
        return;
    };
    let env = Env::new();
    let (base, app) = manifests(&env, &busybox, false);
    let (base, app) = (base.to_str().unwrap(), app.to_str().unwrap());
    for isolate in [false, true] {
        let sh = if isolate { "/bin/sh" } else { "./bin/sh" };
        let with = |script: &str| {
            let mut args = vec![];
            if isolate {
                args.push("--isolate");
            }
            args.extend(["--base", base, "--manifest", app, "--", sh, "-c", script]);
            velo_run(&env, &args, false)
        };
        assert_eq!(with("exit 7").code(), Some(7), "isolate={isolate}");
        let killed = with("kill -TERM $$");
        assert_eq!(
            killed.output.status.signal(),
            Some(libc::SIGTERM),
            "isolate={isolate}: {}",
            killed.explain()
        );
    }
    let missing = velo_run(
        &env,
        &["--isolate", "--manifest", app, "--", "/no/such/program"],
        false,
    )
    .expect_code(127);
    assert!(
        missing
            .stderr()
            .contains("cannot run /no/such/program inside the sandbox"),
        "{}",
        missing.explain()
    );
    assert_no_run_dirs_left(&env);
}

fn isolate_contains_the_command(unprivileged: bool) {
    let test = if unprivileged {
        "isolate_as_an_unprivileged_user"
    } else {
        "isolate_as_root"
    };
    let Some(busybox) = busybox(test) else { return };
    let env = Env::new();
    env.open_to_everyone();
    let (base, app) = manifests(&env, &busybox, unprivileged);
    let before = store_snapshot(&env);
    let host_file = env.write("host-secret.txt", "host\n");
    let outside_pid = std::process::id();
    let script = format!(
        "id -u; cat /proc/self/uid_map; hostname; ls /; \
         cat {host} 2>/dev/null && echo HOST-VISIBLE; ls {store} 2>/dev/null && echo STORE-VISIBLE; \
         kill -0 {outside_pid} 2>/dev/null && echo HOST-PID-VISIBLE; \
         echo inside > /data.txt; echo new > /new.txt; rm /run.sh; mkdir /made; \
         mount -t tmpfs tmpfs /made && echo mounted-inside; \
         cat /data.txt; ls /proc | grep -c '^[0-9]'",
        host = host_file.display(),
        store = env.store().display()
    );
    let keep = env.path().join("upper");
    let run = velo_run(
        &env,
        &[
            "--isolate",
            "--keep-upper",
            keep.to_str().unwrap(),
            "--base",
            base.to_str().unwrap(),
            "--manifest",
            app.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            &script,
        ],
        unprivileged,
    )
    .expect_code(0);
    let out = run.stdout();
    let uid = if unprivileged { 65534 } else { 0 };
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("0"), "uid 0 inside: {}", run.explain());
    let map: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        map,
        ["0", &uid.to_string(), "1"],
        "root inside is uid {uid} outside: {}",
        run.explain()
    );
    assert_eq!(lines.next(), Some("velo"));
    let listing: Vec<&str> = lines
        .by_ref()
        .take_while(|l| *l != "mounted-inside")
        .collect();
    assert_eq!(
        listing,
        [
            "bin", "data.txt", "dev", "empty", "link", "notes", "proc", "run.sh", "tmp"
        ],
        "{}",
        run.explain()
    );
    assert!(
        !out.contains("HOST-VISIBLE")
            && !out.contains("STORE-VISIBLE")
            && !out.contains("HOST-PID-VISIBLE"),
        "{}",
        run.explain()
    );
    assert!(out.contains("inside\n"), "{}", run.explain());
    // Only the sandbox's own processes: init, sh, ls, grep.
    let pids: usize = out.lines().last().unwrap().parse().unwrap();
    assert!(pids <= 5, "{pids} processes visible: {}", run.explain());

    // The writes are in the kept upper layer, not on the host or in the store.
    assert_eq!(fs::read_to_string(host_file).unwrap(), "host\n");
    assert_eq!(
        fs::read_to_string(keep.join("data.txt")).unwrap(),
        "inside\n"
    );
    assert_eq!(fs::read_to_string(keep.join("new.txt")).unwrap(), "new\n");
    assert_eq!(store_snapshot(&env), before);
    assert_eq!(
        fs::read_to_string(env.path().join("app/data.txt")).unwrap(),
        "original data\n"
    );
    assert_no_run_dirs_left(&env);
}

#[test]
fn isolate_as_root() {
    if !is_root() {
        skip("isolate_as_root", "needs root");
        return;
    }
    isolate_contains_the_command(false);
}

#[test]
fn isolate_as_an_unprivileged_user() {
    isolate_contains_the_command(true);
}

#[test]
fn isolate_without_network() {
    let Some(busybox) = busybox("isolate_without_network") else {
        return;
    };
    let env = Env::new();
    let (base, app) = manifests(&env, &busybox, false);
    let run = velo_run(
        &env,
        &[
            "--isolate",
            "--net",
            "none",
            "--base",
            base.to_str().unwrap(),
            "--manifest",
            app.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            "ls /sys/class/net 2>/dev/null; ip -o link | wc -l",
        ],
        false,
    )
    .expect_code(0);
    assert_eq!(
        run.stdout().trim(),
        "1",
        "only the loopback device: {}",
        run.explain()
    );
}

#[test]
fn malicious_manifests_are_rejected_before_anything_is_written() {
    let env = Env::new();
    env.write("t/x", "x");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let present = blake3::hash(b"x");
    let escape = env.path().join("escape-target");
    fs::create_dir_all(&escape).unwrap();
    let escape_bytes = escape.as_os_str().as_encoded_bytes().to_vec();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            raw_manifest(&[(2, b"../evil", Some(present), b"")]),
            "not normalized",
        ),
        (
            "absolute",
            raw_manifest(&[(
                2,
                &[b"/".as_slice(), &escape_bytes, b"/evil"].concat(),
                Some(present),
                b"",
            )]),
            "absolute",
        ),
        (
            "nul",
            raw_manifest(&[(2, b"a\0b", Some(present), b"")]),
            "NUL",
        ),
        (
            "duplicate",
            raw_manifest(&[(2, b"a", Some(present), b""), (2, b"a", Some(present), b"")]),
            "duplicate",
        ),
        (
            "beneath-symlink",
            raw_manifest(&[
                (3, b"lib", None, &escape_bytes),
                (2, b"lib/evil", Some(present), b""),
            ]),
            "parent directory",
        ),
        (
            "missing-blob",
            raw_manifest(&[(2, b"a", Some(blake3::hash(b"never stored")), b"")]),
            "not in the store",
        ),
        (
            // The blob holds 1 byte; a program must never be told it holds 2^64-1.
            "lying-size",
            raw_manifest_sized(&[(2, b"a", Some(present), b"")], u64::MAX),
            "declared as 18446744073709551615 bytes, but its content (which matches its hash) is 1 bytes",
        ),
    ];
    for (name, bytes, expect) in cases {
        let file = env.path().join(format!("{name}.velo"));
        fs::write(&file, bytes).unwrap();
        for mode in ["farm", "shim"] {
            env.velo([
                "run",
                "--mode",
                mode,
                "--manifest",
                file.to_str().unwrap(),
                "--",
                "true",
            ])
            .fails()
            .stderr_has(&[expect]);
        }
        assert!(
            files_under(&escape).is_empty(),
            "{name}: something was written outside the farm"
        );
        assert_no_run_dirs_left(&env);
    }
    // Across layers: a symlink in the base and a directory of the same name in the app. The
    // app's directory replaces the symlink, so its files land in the farm, not at the target.
    std::os::unix::fs::symlink(&escape, env.path().join("t-link")).unwrap();
    env.write("linkbase/keep", "k");
    std::os::unix::fs::symlink(&escape, env.path().join("linkbase/lib")).unwrap();
    env.write("linkapp/lib/evil", "evil");
    env.velo(["ingest", "linkbase", "-o", "linkbase.velo"]).ok();
    env.velo(["ingest", "linkapp", "-o", "linkapp.velo"]).ok();
    let run = env
        .velo([
            "run",
            "--base",
            "linkbase.velo",
            "--manifest",
            "linkapp.velo",
            "--",
            "sh",
            "-c",
            "test -d lib && ! test -L lib && cat lib/evil",
        ])
        .ok();
    assert_eq!(run.stdout(), "evil");
    assert!(
        files_under(&escape).is_empty(),
        "the layered symlink escape wrote outside the farm"
    );
}

#[test]
fn without_a_manifest_velo_run_explains_what_to_do() {
    let env = Env::new();
    let empty = env.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let mut cmd = env.velo(["run", "--", "true"]);
    cmd.cmd.current_dir(&empty);
    cmd.fails().stderr_has(&[
        "velo run needs a manifest",
        "--manifest FILE.velo",
        "velo ingest DIR --output FILE.velo",
    ]);
    let run = Cmd::new(velo_e2e::velo_bin())
        .args([
            "run",
            "--mode",
            "shim",
            "--manifest",
            "x.velo",
            "--",
            "true",
        ])
        .dir(&empty)
        .run();
    assert_eq!(run.code(), Some(2), "{}", run.explain());
}

#[test]
fn doctor_reports_namespaces_and_overlayfs() {
    let env = Env::new();
    let run = env.velo(["doctor", "--json"]).ok();
    let checks = run.json();
    let names: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"user.max_user_namespaces"), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.contains("OverlayFS in a new namespace")),
        "{names:?}"
    );
    assert!(
        checks.as_array().unwrap().iter().all(|c| c["ok"] == true),
        "{}",
        run.explain()
    );
}

#[test]
fn farms_are_cached_per_manifest_and_gc_clears_the_cache() {
    let Some(busybox) = busybox("farms_are_cached_per_manifest_and_gc_clears_the_cache") else {
        return;
    };
    let env = Env::new();
    let (_base, app) = manifests(&env, &busybox, false);
    let app = app.to_str().unwrap();
    let first = velo_run(
        &env,
        &[
            "-v",
            "--mode",
            "farm",
            "--manifest",
            app,
            "--",
            "cat",
            "data.txt",
        ],
        false,
    )
    .expect_code(0);
    assert!(
        first.stderr().contains("3 files (3 linked"),
        "{}",
        first.explain()
    );
    let second = velo_run(
        &env,
        &[
            "-v",
            "--mode",
            "farm",
            "--manifest",
            app,
            "--",
            "cat",
            "data.txt",
        ],
        false,
    )
    .expect_code(0);
    assert!(second.stderr().contains("(cached)"), "{}", second.explain());
    assert_eq!(second.stdout(), "original data\n");
    let gc = env.velo(["gc", "--run"]).ok();
    assert!(
        gc.stdout().contains("removed 1 cached link farms"),
        "{}",
        gc.explain()
    );
    let third = velo_run(
        &env,
        &["-v", "--mode", "farm", "--manifest", app, "--", "true"],
        false,
    )
    .expect_code(0);
    assert!(
        third.stderr().contains("linked"),
        "rebuilt after gc: {}",
        third.explain()
    );
}

/// Everything a sandboxed command can name in procfs that leads out: every other process's
/// `fd/*`, `root`, `cwd`, `exe`, `environ` and `mem`. PID 1 is velo's init, which holds host
/// descriptors (the farm's lock file, the report pipe): none may be readable or writable.
fn procfs_reaches_nothing_outside(unprivileged: bool) {
    let test = if unprivileged {
        "procfs_reaches_nothing_outside_unprivileged"
    } else {
        "procfs_reaches_nothing_outside_as_root"
    };
    let Some(busybox) = busybox(test) else { return };
    let env = Env::new();
    env.open_to_everyone();
    let (base, app) = manifests(&env, &busybox, unprivileged);
    let script = r#"
        checked=0
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            [ "$pid" = "$$" ] && continue
            # (As root the fd numbers may be listed, since init's owner is the command's
            # uid; no descriptor behind them may be opened.)
            for f in "$p"/fd/*; do
                [ -e "$f" ] || continue
                (exec 9<"$f") 2>/dev/null && echo "LEAK opened $f for reading"
                (exec 9>>"$f") 2>/dev/null && echo "LEAK opened $f for writing"
            done
            for d in root cwd; do
                ls "$p/$d/" >/dev/null 2>&1 && echo "LEAK listed $p/$d"
            done
            for f in exe environ mem; do
                (exec 9<"$p/$f") 2>/dev/null && echo "LEAK opened $p/$f"
            done
            (exec 9>>"$p/mem") 2>/dev/null && echo "LEAK opened $p/mem for writing"
            checked=$((checked + 1))
        done
        echo "checked $checked"
    "#;
    let run = velo_run(
        &env,
        &[
            "--isolate",
            "--base",
            base.to_str().unwrap(),
            "--manifest",
            app.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            script,
        ],
        unprivileged,
    )
    .expect_code(0);
    let out = run.stdout();
    assert!(
        !out.contains("LEAK"),
        "the sandbox reached outside through procfs:\n{out}"
    );
    let checked: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("checked "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the probe did not finish: {}", run.explain()));
    assert!(checked >= 1, "init (PID 1) was probed: {out}");
    // And nothing of the host changed: the lock files hold what they held.
    for lock in files_under(&env.store().join("farms")) {
        let path = env.store().join("farms").join(lock);
        if path.extension().is_some_and(|e| e == "lock") {
            assert!(
                !fs::read(&path).unwrap().contains(&b'X'),
                "{} was written",
                path.display()
            );
        }
    }
}

#[test]
fn procfs_reaches_nothing_outside_as_root() {
    if !is_root() {
        skip("procfs_reaches_nothing_outside_as_root", "needs root");
        return;
    }
    procfs_reaches_nothing_outside(false);
}

#[test]
fn procfs_reaches_nothing_outside_unprivileged() {
    procfs_reaches_nothing_outside(true);
}
