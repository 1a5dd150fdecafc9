//! `velo run --mode shim` (Mode B): the same commands see the same tree in farm mode and in shim
//! mode, writes fail with EROFS, and the shim's fixed tables fail cleanly when full.

use std::fs;
use std::path::Path;
use std::process::Command;

use velo_e2e::{Env, Run, skip};

/// A tree with what the acceptance commands need: nested and empty directories, symlinks to a
/// file and to a directory, an executable script, a compiled Rust program, and a virtualenv
/// holding a package with a compiled extension.
fn tree(env: &Env) -> Option<std::path::PathBuf> {
    let root = env.path().join("app");
    env.write("app/a.txt", "hello\n");
    env.write("app/sub/b.txt", "b\n");
    env.write("app/sub/deep/c.txt", "deep\n");
    env.write("app/sub/deep/deeper/d.bin", [0u8, 1, 2, 255]);
    fs::create_dir_all(root.join("empty")).unwrap();
    let script = env.write(
        "app/sub/script.sh",
        "#!/bin/sh\necho \"script in $(pwd)\"\ncat ../a.txt\nls\n",
    );
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../a.txt", root.join("sub/to-a")).unwrap();
    std::os::unix::fs::symlink("sub", root.join("sub-link")).unwrap();
    env.write(
        "app/walk.py",
        r#"import hashlib, os
for top, dirs, files in os.walk("."):
    dirs.sort()
    for name in sorted(files):
        p = os.path.join(top, name)
        st = os.stat(p)
        with open(p, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        print(p, oct(st.st_mode), st.st_size, digest)
    for name in dirs:
        print(os.path.join(top, name) + "/", oct(os.stat(os.path.join(top, name)).st_mode))
print(os.getcwd(), os.path.realpath("sub/to-a"), os.readlink("sub-link"))
"#,
    );

    // A Rust program, compiled now, walking the tree with std::fs.
    let src = env.write(
        "walk.rs",
        r#"use std::fs;
fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            out.push(format!("{}/ dir", p.display()));
            walk(&p, out);
        } else if meta.is_file() {
            let data = fs::read(&p).unwrap();
            let sum: u64 = data.iter().map(|&b| b as u64).sum();
            out.push(format!("{} {} {} {:o}", p.display(), data.len(), sum, std::os::unix::fs::PermissionsExt::mode(&meta.permissions())));
        } else {
            out.push(format!("{} -> {}", p.display(), fs::read_link(&p).unwrap().display()));
        }
    }
}
fn main() {
    let mut out = Vec::new();
    walk(std::path::Path::new("."), &mut out);
    println!("{}", out.join("\n"));
    println!("{}", std::env::current_dir().unwrap().display());
}
"#,
    );
    fs::create_dir_all(root.join("bin")).unwrap();
    let rustc = Command::new("rustc")
        .args(["-O", "-o"])
        .arg(root.join("bin/walk"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(rustc.success(), "rustc failed");

    // A virtualenv, as `python3 -m venv` lays it out, with a compiled extension module.
    let includes = Command::new("python3-config").arg("--includes").output();
    let suffix = Command::new("python3-config")
        .arg("--extension-suffix")
        .output();
    let (Ok(includes), Ok(suffix)) = (includes, suffix) else {
        skip(
            "shim_mode",
            "python3-config is missing (install python3-dev)",
        );
        return None;
    };
    let version = String::from_utf8(
        Command::new("python3")
            .args([
                "-c",
                "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let site = format!("app/venv/lib/python{}/site-packages", version.trim());
    env.write(
        "app/venv/pyvenv.cfg",
        "home = /usr/bin\ninclude-system-site-packages = false\n",
    );
    fs::create_dir_all(root.join("venv/bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", root.join("venv/bin/python")).unwrap();
    env.write(
        &format!("{site}/fastpkg/__init__.py"),
        "from ._fast import answer\n",
    );
    let c = env.write(
        "fast.c",
        r#"#include <Python.h>
static PyObject *answer(PyObject *self, PyObject *args) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "42"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fast", NULL, -1, methods};
PyMODINIT_FUNC PyInit__fast(void) { return PyModule_Create(&module); }
"#,
    );
    let ext = env.path().join(format!(
        "{site}/fastpkg/_fast{}",
        String::from_utf8_lossy(&suffix.stdout).trim()
    ));
    let cc = Command::new("cc")
        .args(["-shared", "-fPIC"])
        .args(String::from_utf8_lossy(&includes.stdout).split_whitespace())
        .arg(&c)
        .arg("-o")
        .arg(&ext)
        .status()
        .unwrap();
    if !cc.success() {
        skip(
            "shim_mode",
            "cannot compile a Python extension (install python3-dev)",
        );
        return None;
    }
    env.velo(["ingest", "app", "-o", "app.velo"]).ok();
    Some(env.path().join("app.velo"))
}

/// `velo run --mode shim [EXTRA…] --manifest t.velo -- sh -c SCRIPT`.
fn shim_sh(env: &Env, extra: &[&str], script: &str) -> velo_e2e::Cmd {
    let mut args = vec!["run", "--mode", "shim"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--manifest", "t.velo", "--", "sh", "-c", script]);
    env.velo(args)
}

fn run(env: &Env, mode: &str, manifest: &Path, command: &[&str]) -> Run {
    let mut args = vec![
        "run",
        "-v",
        "--mode",
        mode,
        "--manifest",
        manifest.to_str().unwrap(),
        "--",
    ];
    args.extend_from_slice(command);
    env.velo(args).run()
}

/// `ls -l` columns that differ between a farm and shim mode for reasons of their own: the link
/// count of a blob (a farm adds a link) and directory times (a farm's are its build time).
fn normalize_ls(out: &str) -> String {
    out.lines()
        .filter(|l| !l.starts_with("total "))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() >= 9 && (l.starts_with('-') || l.starts_with('d') || l.starts_with('l')) {
                // mode, owner, group, size, name (and link target)
                [&cols[..1], &cols[2..5], &cols[8..]].concat().join(" ")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_same_commands_see_the_same_tree_in_farm_and_shim_mode() {
    let env = Env::new();
    let Some(manifest) = tree(&env) else { return };
    let commands: &[(&str, &[&str])] = &[
        ("ls -laR", &["ls", "-laR"]),
        (
            "find | sha256sum",
            &["sh", "-c", "find . -type f | sort | xargs sha256sum"],
        ),
        ("os.walk", &["python3", "walk.py"]),
        ("std::fs", &["./bin/walk"]),
        (
            "import",
            &[
                "venv/bin/python",
                "-c",
                "import fastpkg, sys; print(fastpkg.answer(), fastpkg._fast.__file__, sys.prefix)",
            ],
        ),
        (
            "cd, pwd, script",
            &[
                "bash",
                "-c",
                "cd sub && pwd && ./script.sh && cd deep/deeper && pwd && ls .. && cat ../../to-a",
            ],
        ),
    ];
    for (what, command) in commands {
        let farm = run(&env, "farm", &manifest, command).expect_code(0);
        let shim = run(&env, "shim", &manifest, command).expect_code(0);
        assert!(
            shim.stderr().contains("mode shim"),
            "{what}: {}",
            shim.explain()
        );
        let (mut f, mut s) = (farm.stdout(), shim.stdout());
        if *what == "ls -laR" {
            (f, s) = (normalize_ls(&f), normalize_ls(&s));
        }
        assert_eq!(
            f,
            s,
            "{what}: farm and shim mode differ\n{}",
            shim.explain()
        );
        assert!(!s.trim().is_empty(), "{what} printed nothing");
    }
    // Spot checks that the outputs are the tree's, not empty agreement.
    let walk = run(&env, "shim", &manifest, &["./bin/walk"]).expect_code(0);
    assert!(
        walk.stdout()
            .contains("./sub/deep/deeper/d.bin 4 258 100444"),
        "{}",
        walk.explain()
    );
    assert!(
        walk.stdout().contains("./sub-link -> sub"),
        "{}",
        walk.explain()
    );
    let import = run(
        &env,
        "shim",
        &manifest,
        &[
            "venv/bin/python",
            "-c",
            "import fastpkg; print(fastpkg.answer())",
        ],
    );
    assert_eq!(import.expect_code(0).stdout(), "42\n");
}

#[test]
fn auto_mode_serves_dynamic_programs_through_the_shim_at_any_path() {
    let env = Env::new();
    env.write("t/dir/f.txt", "f\n");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let auto = env
        .velo([
            "run",
            "-v",
            "--manifest",
            "t.velo",
            "--at",
            "/velo-app",
            "--workdir",
            "dir",
            "--",
            "sh",
            "-c",
            "pwd; cat f.txt; cat /velo-app/dir/f.txt",
        ])
        .ok();
    assert!(
        auto.stderr()
            .contains("mode shim: sh is dynamically linked"),
        "{}",
        auto.explain()
    );
    assert_eq!(auto.stdout(), "/velo-app/dir\nf\nf\n");
    assert!(!Path::new("/velo-app").exists(), "nothing is made on disk");
    env.velo([
        "run",
        "--mode",
        "farm",
        "--manifest",
        "t.velo",
        "--at",
        "/velo-app",
        "--",
        "true",
    ])
    .fails()
    .stderr_has(&["--at /velo-app", "--mode shim"]);
    env.velo([
        "run",
        "--manifest",
        "t.velo",
        "--at",
        "relative",
        "--",
        "true",
    ])
    .fails()
    .stderr_has(&["--at relative", "absolute"]);
    env.velo([
        "run",
        "--mode",
        "shim",
        "--manifest",
        "t.velo",
        "--workdir",
        "nope",
        "--",
        "true",
    ])
    .fails()
    .stderr_has(&["--workdir nope", "no such directory"]);
}

#[test]
fn writes_under_the_virtual_root_fail_with_erofs_and_the_store_is_untouched() {
    let env = Env::new();
    env.write("t/a.txt", "original\n");
    env.write("t/d/b.txt", "b\n");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    for attempt in [
        "echo x >> a.txt",
        "echo x > new.txt",
        "truncate -s 0 a.txt",
        "chmod 777 a.txt",
        "rm a.txt",
        "mkdir newdir",
        "mv a.txt moved.txt",
        "ln -s a.txt link",
        "touch d/b.txt",
        "rmdir d",
    ] {
        let r = shim_sh(&env, &[], attempt).run();
        assert_ne!(r.code(), Some(0), "{attempt} succeeded: {}", r.explain());
        assert!(
            r.stderr().contains("Read-only file system"),
            "{attempt}: {}",
            r.explain()
        );
    }
    let after = shim_sh(&env, &[], "cat a.txt; ls").ok();
    assert_eq!(after.stdout(), "original\na.txt\nd\n");
    env.velo(["status", "--verify"]).ok();
    assert_eq!(
        fs::read_to_string(env.path().join("t/a.txt")).unwrap(),
        "original\n"
    );
}

#[test]
fn the_fixed_tables_fail_with_emfile_when_full() {
    let env = Env::new();
    env.write("t/a.txt", "a\n");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let script = "import os\nopen_ = []\ntry:\n    for i in range(1000):\n        open_.append(os.scandir('.'))\nexcept OSError as e:\n    print(len(open_), e.errno == 24)\nfor s in open_: s.close()\nprint(sorted(os.listdir('.')))\n";
    let r = env
        .velo([
            "run",
            "--mode",
            "shim",
            "--manifest",
            "t.velo",
            "--",
            "python3",
            "-c",
            script,
        ])
        .ok();
    assert_eq!(r.stdout(), "256 True\n['a.txt']\n", "{}", r.explain());
}

#[test]
fn with_upper_writes_land_in_the_layer_and_are_never_lost() {
    let env = Env::new();
    env.write("t/a.txt", "original\n");
    env.write("t/d/b.txt", "b\n");
    env.write("t/d/sub/c.txt", "c\n");
    env.velo(["ingest", "t", "-o", "t.velo"]).ok();
    let script = "echo more >> a.txt && echo new > d/new.txt && mkdir -p n/m && echo deep > n/m/f \
                  && rm d/b.txt && mv a.txt moved.txt && rm -r d/sub && ls && ls d && cat moved.txt n/m/f";
    let r = shim_sh(&env, &["--upper", "up"], script).ok();
    assert_eq!(
        r.stdout(),
        "d\nmoved.txt\nn\nnew.txt\noriginal\nmore\ndeep\n",
        "{}",
        r.explain()
    );
    let up = env.path().join("up");
    assert_eq!(
        fs::read_to_string(up.join("moved.txt")).unwrap(),
        "original\nmore\n"
    );
    assert_eq!(fs::read_to_string(up.join("d/new.txt")).unwrap(), "new\n");
    assert_eq!(fs::read_to_string(up.join("n/m/f")).unwrap(), "deep\n");
    for deleted in ["a.txt", "d/b.txt", "d/sub", "d/sub/c.txt"] {
        assert!(
            up.join(format!(".velo-deleted/{deleted}.deleted")).exists(),
            "{deleted} not recorded as deleted"
        );
    }
    // A second run with the same layer sees the same tree; the store and the source are as
    // they were, and a run without the layer sees the original tree.
    let again = shim_sh(&env, &["--upper", "up"], "ls -R").ok();
    assert!(
        again.stdout().contains("moved.txt") && !again.stdout().contains("b.txt"),
        "{}",
        again.explain()
    );
    let plain = shim_sh(&env, &[], "cat a.txt; ls d").ok();
    assert_eq!(plain.stdout(), "original\nb.txt\nsub\n");
    env.velo(["status", "--verify"]).ok();
    assert_eq!(
        fs::read_to_string(env.path().join("t/a.txt")).unwrap(),
        "original\n"
    );
    env.velo([
        "run",
        "--mode",
        "farm",
        "--upper",
        "up",
        "--manifest",
        "t.velo",
        "--",
        "true",
    ])
    .fails()
    .stderr_has(&["--upper is for shim mode"]);
}
