//! `velo inception` and the shim: real cargo builds of a fixture workspace in two checkouts,
//! canonical working directories in every tool, and the seed's "same project, two directories"
//! cache test.

use std::path::{Path, PathBuf};

use velo_e2e::{Cmd, Env, Run, bin_dir, copy_tree, files_containing, fixture, helper_bin};

const CANONICAL: &str = "/vrift_workspace";

/// `velo inception [--root ROOT] -- ARGS…` started in `dir`, with a clean cargo environment.
fn inception(env: &Env, dir: &Path, args: &[&str]) -> Cmd {
    let mut all = vec!["inception", "--"];
    all.extend_from_slice(args);
    env.velo(all).clean_cargo_env().dir(dir)
}

/// The fixture workspace copied to `rel` under the env.
fn checkout(env: &Env, rel: &str) -> PathBuf {
    let dir = env.path().join(rel);
    copy_tree(&fixture("inception-ws"), &dir);
    dir
}

fn cargo(dir: &Path, args: &[&str]) -> Run {
    Cmd::new("cargo").args(args).clean_cargo_env().dir(dir).ok()
}

/// Lines cargo printed saying it compiled something.
fn compiled(run: &Run) -> Vec<String> {
    run.stderr()
        .lines()
        .filter(|l| l.trim_start().starts_with("Compiling"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn builds_in_two_checkouts_hold_only_the_canonical_path() {
    let env = Env::new();
    let a = checkout(&env, "alice/src/ws");
    let b = checkout(&env, "ci/builds/7f3a/deeper/ws");
    for dir in [&a, &b] {
        inception(&env, dir, &["cargo", "build"]).ok();
        let test = inception(&env, dir, &["cargo", "test"]).ok();
        assert!(
            test.stdout().contains("test result: ok. 2 passed"),
            "{}",
            test.explain()
        );
        assert!(
            test.stdout().contains("test integration ... ok"),
            "{}",
            test.explain()
        );
    }
    for dir in [&a, &b] {
        let target = dir.join("target");
        for physical in [&a, &b] {
            let leaks = files_containing(&target, physical.as_os_str().as_encoded_bytes());
            assert!(
                leaks.is_empty(),
                "{} leaked into {leaks:#?}",
                physical.display()
            );
        }
        let canonical = files_containing(&target, CANONICAL.as_bytes());
        let has = |pred: &dyn Fn(&Path) -> bool, what: &str| {
            assert!(
                canonical.iter().any(|p| pred(p)),
                "no {what} names {CANONICAL}: {canonical:#?}"
            );
        };
        has(
            &|p| p.extension().is_some_and(|e| e == "d"),
            "dep-info file",
        );
        has(
            &|p| p.ends_with("output") && p.to_string_lossy().contains("/build/app-"),
            "build-script output",
        );
        has(
            &|p| p.file_name().is_some_and(|n| n == "app"),
            "binary's debug info",
        );
        let output = std::fs::read_dir(target.join("debug/build"))
            .unwrap()
            .flatten()
            .map(|e| e.path().join("output"))
            .find(|p| {
                p.exists()
                    && std::fs::read_to_string(p)
                        .unwrap()
                        .contains("rerun-if-changed")
            })
            .expect("the app build script's output");
        let output = std::fs::read_to_string(output).unwrap();
        assert!(
            output.contains(&format!(
                "cargo:rerun-if-changed={CANONICAL}/app/config/settings.txt"
            )),
            "{output}"
        );
    }
}

#[test]
fn build_scripts_and_programs_see_canonical_paths() {
    let env = Env::new();
    let ws = checkout(&env, "checkout/ws");
    let run = inception(&env, &ws.join("app/src"), &["cargo", "run", "-q"]).ok();
    let out = run.stdout();
    for want in [
        format!("build CARGO_MANIFEST_DIR={CANONICAL}/app"),
        format!("build OUT_DIR={CANONICAL}/target/debug/build/app-"),
        format!("build current_dir={CANONICAL}/app"),
        "build settings=greeting=hello".into(),
        format!("run current_dir={CANONICAL}/app/src"),
        "run answer=42".into(),
        "run sum=5".into(),
    ] {
        assert!(out.contains(&want), "missing {want:?}:\n{}", run.explain());
    }
    assert!(!out.contains(ws.to_str().unwrap()), "{}", run.explain());
}

#[test]
fn shells_and_tools_report_canonical_working_directories() {
    let env = Env::new();
    let ws = checkout(&env, "tools/ws");
    let sub = ws.join("app/src");
    let script = "pwd; /bin/pwd; bash -c pwd; \
        python3 -c 'import os; print(os.getcwd()); print(os.path.realpath(\".\")); print(os.readlink(\"/proc/self/cwd\"))'; \
        realpath main.rs; readlink -f ../Cargo.toml";
    let run = inception(&env, &sub, &["bash", "-c", script]).ok();
    let want = format!(
        "{c}/app/src\n{c}/app/src\n{c}/app/src\n{c}/app/src\n{c}/app/src\n{c}/app/src\n{c}/app/src/main.rs\n{c}/app/Cargo.toml\n",
        c = CANONICAL
    );
    assert_eq!(run.stdout(), want, "{}", run.explain());
}

#[test]
fn everyday_programs_work_on_canonical_paths() {
    let env = Env::new();
    let ws = checkout(&env, "programs/ws");
    let c = CANONICAL;
    let script = format!(
        "set -e
        cd {c}
        mkdir -p {c}/scratch/a && cp {c}/Cargo.toml {c}/scratch/a/copy && mv {c}/scratch/a/copy {c}/scratch/a/moved
        ln -s {c}/scratch/a/moved {c}/scratch/link && cat {c}/scratch/link > /dev/null
        echo \"link -> $(readlink {c}/scratch/link)\"
        stat -c '%s' {c}/scratch/a/moved > /dev/null
        find {c}/scratch | sort
        printf 'all:\\n\\tcp {c}/Cargo.toml {c}/scratch/made\\n' > {c}/scratch/Makefile
        make -s -C {c}/scratch && test -f {c}/scratch/made && echo make ok
        git -C {c}/scratch init -q && git -C {c}/scratch add -A
        git -C {c}/scratch -c user.name=t -c user.email=t@e commit -qm one && echo git ok
        git -C {c}/scratch rev-parse --show-toplevel
        python3 -c \"import os,tempfile; d=tempfile.mkdtemp(dir='{c}/scratch'); open(d+'/x','w').write('y'); print(open(d+'/x').read(), os.path.dirname(d))\"
        rm -rf {c}/scratch/a && test ! -e {c}/scratch/a && echo rm ok"
    );
    let run = inception(&env, &ws, &["bash", "-c", &script]).ok();
    let want = format!(
        "link -> {c}/scratch/a/moved\n{c}/scratch\n{c}/scratch/a\n{c}/scratch/a/moved\n{c}/scratch/link\n\
         make ok\ngit ok\n{c}/scratch\ny {c}/scratch\nrm ok\n"
    );
    assert_eq!(run.stdout(), want, "{}", run.explain());
    // The symlink on disk points at the physical file, so it works without the shim too.
    let target = std::fs::read_link(ws.join("scratch/link")).unwrap();
    assert_eq!(target, ws.join("scratch/a/moved"));
    assert!(ws.join("scratch/made").exists() && !ws.join("scratch/a").exists());
}

#[test]
fn a_copied_target_dir_is_fresh_only_under_inception() {
    let env = Env::new();
    // Under velo: build in one checkout, copy sources and target (mtimes kept) elsewhere.
    let first = checkout(&env, "one/ws");
    inception(&env, &first, &["cargo", "build"]).ok();
    let second = env.path().join("two/elsewhere/ws");
    copy_tree(&first, &second);
    let again = inception(&env, &second, &["cargo", "build", "-v"]).ok();
    assert!(
        compiled(&again).is_empty(),
        "rebuilt under velo:\n{}",
        again.explain()
    );
    assert!(again.stderr().contains("Fresh app"), "{}", again.explain());

    // Without velo, the same experiment rebuilds: the absolute paths in target/ moved.
    let native = checkout(&env, "native-one/ws");
    cargo(&native, &["build"]);
    let moved = env.path().join("native-two/elsewhere/ws");
    copy_tree(&native, &moved);
    let rebuilt = cargo(&moved, &["build", "-v"]);
    assert!(
        !compiled(&rebuilt).is_empty(),
        "expected a rebuild without velo:\n{}",
        rebuilt.explain()
    );
}

#[test]
fn two_projections_at_once_do_not_interfere() {
    let env = Env::new();
    let (a, b) = (checkout(&env, "left/ws"), checkout(&env, "right/ws"));
    std::fs::write(a.join("marker"), "left").unwrap();
    std::fs::write(b.join("marker"), "right").unwrap();
    let script = "for i in $(seq 200); do cat /vrift_workspace/marker; echo; done | sort | uniq -c";
    let spawn = |dir: &Path| {
        let mut cmd = inception(&env, dir, &["bash", "-c", script]).cmd;
        cmd.stdout(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let (left, right) = (spawn(&a), spawn(&b));
    let out =
        |c: std::process::Child| String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(out(left).trim(), "200 left");
    assert_eq!(out(right).trim(), "200 right");
}

#[test]
fn exit_status_and_signals_pass_through() {
    let env = Env::new();
    let ws = checkout(&env, "exit/ws");
    for physical_paths in [false, true] {
        let with = |script: &str| {
            let mut args = vec!["inception"];
            if physical_paths {
                args.push("--physical-paths");
            }
            args.extend(["--", "sh", "-c", script]);
            env.velo(args).clean_cargo_env().dir(&ws).run()
        };
        assert_eq!(with("exit 7").code(), Some(7));
        let killed = with("kill -TERM $$");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            killed.output.status.signal(),
            Some(libc::SIGTERM),
            "{}",
            killed.explain()
        );
    }
}

#[test]
fn physical_paths_rewrites_output_but_not_artifacts() {
    let env = Env::new();
    let ws = checkout(&env, "rewrite/ws");
    std::fs::write(
        ws.join("app/src/main.rs"),
        "fn main() { let x: u32 = \"no\"; }\n",
    )
    .unwrap();
    let run = env
        .velo(["inception", "--physical-paths", "--", "cargo", "build"])
        .clean_cargo_env()
        .dir(&ws)
        .run()
        .expect_code(101);
    // cargo names packages by absolute path; rustc names workspace files relative to the root.
    let compiling = format!("Compiling app v0.1.0 ({})", ws.join("app").display());
    assert!(run.stderr().contains(&compiling), "{}", run.explain());
    assert!(
        run.stderr().contains("--> app/src/main.rs:1:"),
        "{}",
        run.explain()
    );
    assert!(!run.stderr().contains(CANONICAL), "{}", run.explain());
    let echo = env
        .velo([
            "inception",
            "--physical-paths",
            "--",
            "sh",
            "-c",
            "echo /vrift_workspace/a /vrift_workspace2; echo /vrift_workspace >&2",
        ])
        .clean_cargo_env()
        .dir(&ws)
        .ok();
    assert_eq!(
        echo.stdout(),
        format!("{}/a /vrift_workspace2\n", ws.display())
    );
    assert_eq!(echo.stderr(), format!("{}\n", ws.display()));
    // The build ran canonical all the same.
    let leaks = files_containing(&ws.join("target"), ws.as_os_str().as_encoded_bytes());
    assert!(leaks.is_empty(), "{leaks:#?}");
}

#[test]
fn the_projection_survives_a_cleared_environment() {
    let env = Env::new();
    let ws = checkout(&env, "envclear/ws");
    let run = inception(
        &env,
        &ws.join("app"),
        &[
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            "sh",
            "-c",
            "/bin/pwd; cat /vrift_workspace/app/config/settings.txt",
        ],
    )
    .ok();
    assert_eq!(
        run.stdout(),
        format!("{CANONICAL}/app\ngreeting=hello\n"),
        "{}",
        run.explain()
    );
}

#[test]
fn without_vrift_variables_the_shim_passes_everything_through() {
    let env = Env::new();
    let ws = checkout(&env, "passthrough/ws");
    let run = Cmd::new("sh")
        .args([
            "-c",
            "/bin/pwd; test -e /vrift_workspace && echo projected || echo plain",
        ])
        .clean_cargo_env()
        .dir(&ws)
        .env("LD_PRELOAD", bin_dir().join("libvelo_shim.so"))
        .ok();
    assert_eq!(
        run.stdout(),
        format!("{}\nplain\n", ws.display()),
        "{}",
        run.explain()
    );
}

#[test]
fn files_created_through_the_shim_get_the_requested_mode() {
    // open(2) takes its mode as a variadic argument; the hook takes it as a fixed one (see
    // shim/src/hooks/variadic.rs). Python calls open() as a C caller would.
    let env = Env::new();
    let ws = checkout(&env, "modes/ws");
    let script = "import os\n\
        for name, mode in [('a', 0o640), ('b', 0o600), ('c', 0o751)]:\n    \
            fd = os.open('/vrift_workspace/' + name, os.O_CREAT | os.O_WRONLY, mode); os.close(fd)\n\
        fd = os.open('/vrift_workspace/a', os.O_RDONLY); os.close(fd)\n\
        print(' '.join(oct(os.stat('/vrift_workspace/' + n).st_mode & 0o777) for n in 'abc'))";
    // umask 0, so the modes on disk are exactly the requested ones.
    let run = Cmd::new("sh")
        .args(["-c", "umask 0; exec \"$0\" inception -- python3 -c \"$1\""])
        .arg(velo_e2e::velo_bin())
        .arg(script)
        .clean_cargo_env()
        .dir(&ws)
        .ok();
    assert_eq!(run.stdout(), "0o640 0o600 0o751\n", "{}", run.explain());
}

#[test]
fn sixty_four_threads_agree_with_a_native_run() {
    let env = Env::new();
    let root = env.path().join("stress");
    for k in 0..8 {
        env.write(&format!("stress/d{k}/f"), format!("d{k}"));
    }
    let scratch = env.write("scratch.txt", "outside the root");
    let stress = helper_bin("shim-stress");
    let timeout = ["timeout", "--signal=KILL", "300"];
    let native = Cmd::new(timeout[0])
        .args(&timeout[1..])
        .arg(&stress)
        .arg(&root)
        .arg(&scratch)
        .args(["64", "2000"])
        .ok();
    let shimmed = env
        .velo(["inception", "--root"])
        .arg(&root)
        .arg("--")
        .args(timeout)
        .arg(&stress)
        .args([CANONICAL])
        .arg(&scratch)
        .args(["64", "2000"])
        .clean_cargo_env()
        .ok();
    assert_eq!(shimmed.stdout(), native.stdout(), "{}", shimmed.explain());
    assert!(native.stdout().contains("errors=0"), "{}", native.explain());
}

#[test]
fn missing_roots_and_shims_are_explained() {
    let env = Env::new();
    let empty = env.path().join("nothing-here");
    std::fs::create_dir_all(&empty).unwrap();
    env.velo(["inception", "--", "true"])
        .dir(&empty)
        .fails()
        .stderr_has(&[
            "no Cargo workspace or git repository encloses",
            "--root DIR",
        ]);
    env.velo(["inception", "--root", "does-not-exist", "--", "true"])
        .fails()
        .stderr_has(&["--root does-not-exist", "No such file"]);
    env.velo(["inception", "--root", ".", "--", "true"])
        .env("VELO_SHIM", "/nonexistent/libvelo_shim.so")
        .fails()
        .stderr_has(&["VELO_SHIM=/nonexistent/libvelo_shim.so"]);
}

#[test]
fn library_paths_are_made_physical_for_the_loader() {
    // The dynamic loader searches LD_LIBRARY_PATH with raw syscalls the shim never sees, so a
    // canonical entry must be physical by the time a program starts.
    let env = Env::new();
    let ws = checkout(&env, "ldpath/ws");
    let run = inception(
        &env,
        &ws,
        &[
            "env",
            "LD_LIBRARY_PATH=/vrift_workspace/target/debug/deps:/usr/lib",
            "sh",
            "-c",
            "echo \"$LD_LIBRARY_PATH\"",
        ],
    )
    .ok();
    assert_eq!(
        run.stdout(),
        format!("{}/target/debug/deps:/usr/lib\n", ws.display()),
        "{}",
        run.explain()
    );
}

#[test]
fn errors_keep_their_errno() {
    let env = Env::new();
    let ws = checkout(&env, "errno/ws");
    let script = "import errno, os\n\
        def code(f):\n    \
            try: f(); return 'ok'\n    \
            except OSError as e: return errno.errorcode[e.errno]\n\
        print(code(lambda: os.stat('/vrift_workspace/missing')))\n\
        print(code(lambda: os.stat('/vrift_workspace/' + 'x' * 5000)))\n\
        print(code(lambda: os.mkdir('/vrift_workspace/app')))\n\
        print(code(lambda: os.rmdir('/vrift_workspace/app')))\n\
        print(code(lambda: os.readlink('/vrift_workspace/Cargo.toml')))\n\
        print(code(lambda: os.stat('/vrift_workspace/Cargo.toml')))";
    let run = inception(&env, &ws, &["python3", "-c", script]).ok();
    assert_eq!(
        run.stdout(),
        "ENOENT\nENAMETOOLONG\nEEXIST\nENOTEMPTY\nEINVAL\nok\n",
        "{}",
        run.explain()
    );
}

#[test]
fn without_a_command_a_marked_shell_opens_projected() {
    let env = Env::new();
    let ws = checkout(&env, "shell/ws");
    for shell in ["/bin/bash", "/bin/sh"] {
        let mut cmd = env
            .velo(["inception"])
            .clean_cargo_env()
            .dir(ws.join("app"))
            .env("SHELL", shell)
            .cmd;
        cmd.env_remove("PS1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"pwd\necho \"marker:$PS1\"\nexit 3\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(3), "{shell}: {stdout}\n{stderr}");
        assert!(
            stdout.starts_with(&format!("{CANONICAL}/app\n")),
            "{shell}: {stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("(velo /vrift_workspace)"),
            "{shell}: {stdout}\n{stderr}"
        );
    }
}

#[test]
fn physical_paths_on_a_terminal_keep_it_a_terminal() {
    // `script` gives velo a terminal; the command must still see one (a pty) and its output
    // must come back rewritten.
    let env = Env::new();
    let ws = checkout(&env, "pty/ws");
    let inner = format!(
        "{} inception --physical-paths -- sh -c 'test -t 1 && test -t 2 && echo tty /vrift_workspace/x'",
        velo_e2e::velo_bin().display()
    );
    let run = Cmd::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .clean_cargo_env()
        .dir(&ws)
        .ok();
    assert!(
        run.stdout().contains(&format!("tty {}/x", ws.display())),
        "{}",
        run.explain()
    );
}

#[test]
fn cargo_home_is_projected_at_cargo_home_and_survives_a_cleared_environment() {
    let env = Env::new();
    let ws = checkout(&env, "ws");
    let home = env.path().join("somewhere/else/.cargo");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("marker"), "the real CARGO_HOME\n").unwrap();
    // `env -i` drops every variable; the shim's exec hook puts the projection back, extra
    // roots included.
    let script = "echo home=$CARGO_HOME; cat /cargo-home/marker; \
                  env -i /bin/sh -c 'cat /cargo-home/marker; readlink -f /cargo-home'";
    let out = inception(&env, &ws, &["sh", "-c", script])
        .env("CARGO_HOME", &home)
        .ok()
        .stdout();
    assert_eq!(
        out, "home=/cargo-home\nthe real CARGO_HOME\nthe real CARGO_HOME\n/cargo-home\n",
        "{out}"
    );
    let off = env
        .velo([
            "inception",
            "--no-cargo-home",
            "--",
            "sh",
            "-c",
            "echo $CARGO_HOME; ls /cargo-home",
        ])
        .clean_cargo_env()
        .dir(&ws)
        .env("CARGO_HOME", &home);
    let run = off.run();
    assert_ne!(run.code(), Some(0), "no /cargo-home without the mapping");
    assert!(
        run.stdout().starts_with(home.to_str().unwrap()),
        "{}",
        run.stdout()
    );
}
