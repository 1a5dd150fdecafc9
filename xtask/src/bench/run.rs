//! `cargo xtask bench run`: materializing a farm, and starting a sandbox.
//!
//! - **farm**: `velo run --keep --manifest M -- true` on a generated tree (100k files by
//!   default) against `cp -al` (hard links, the same work without a store) and `cp -a` (copies),
//!   each into a fresh directory on the same filesystem (target: at most 1.0× `cp -al`). velo's
//!   time includes reading the manifest, checking every blob is present, the overlay mount and
//!   running `true`; the farm cache is emptied untimed before each run. A last row shows a run
//!   whose farm is already cached.
//! - **sandbox**: start-to-exit of `/bin/true` in `velo run --isolate` on the busybox base image
//!   against bubblewrap doing the same set-up (user, mount, PID, UTS and IPC namespaces, uid 0
//!   inside, the same tree as root, /proc, /dev, /tmp; target: at most 1.5×). Debian 12's
//!   bubblewrap (0.8) has no overlay options (`--overlay-src` came in 0.9), so it binds the
//!   tree read-only where velo mounts a writable overlay. Both get the tree ready-made (velo's
//!   farm is in its cache after the first run).

use std::fmt::Write as _;

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::store::{generate, machine, rm, settle};
use super::{Options, Times, write_rows};
use crate::util::{build_velo, exec, time};

pub fn run(opts: &Options) -> Result<()> {
    let velo = build_velo(true)?;
    let work = super::work_dir(opts)?;
    let store = work.join("store");
    let velo_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&velo);
        cmd.current_dir(&work).env("VELO_STORE", &store).args(args);
        cmd
    };

    let tree = work.join("generated");
    if !tree.exists() {
        eprintln!("generating {} files in {} …", opts.files, tree.display());
        generate(&tree, opts.files)?;
    }
    exec(
        velo_cmd(&["ingest", "generated", "-o", "tree.velo", "--fsync", "none"])
            .stdout(std::process::Stdio::null()),
    )?;
    let farms = store.join("farms");
    let mut cp_al = Vec::new();
    let mut cp_a = Vec::new();
    let mut farm = Vec::new();
    for i in 0..opts.runs {
        let dst = work.join(format!("copy-{i}"));
        settle(&tree)?;
        cp_al.push(
            time(|| exec(Command::new("cp").arg("-al").arg(&tree).arg(&dst)))?
                .0
                .as_secs_f64(),
        );
        rm(&dst)?;
        settle(&tree)?;
        cp_a.push(
            time(|| exec(Command::new("cp").arg("-a").arg(&tree).arg(&dst)))?
                .0
                .as_secs_f64(),
        );
        rm(&dst)?;
        settle(&tree)?;
        farm.push(
            time(|| {
                exec(
                    velo_cmd(&[
                        "run",
                        "--mode",
                        "farm",
                        "--keep",
                        "--manifest",
                        "tree.velo",
                        "--",
                        "true",
                    ])
                    .stderr(std::process::Stdio::null()),
                )
            })?
            .0
            .as_secs_f64(),
        );
        rm(&farms)?;
    }
    // Warm: the farm of this manifest is in the cache; only the overlay and the run remain.
    let run_true = || {
        exec(
            velo_cmd(&[
                "run",
                "--mode",
                "farm",
                "--manifest",
                "tree.velo",
                "--",
                "true",
            ])
            .stderr(std::process::Stdio::null()),
        )
    };
    run_true()?;
    let mut warm = Vec::new();
    for _ in 0..opts.runs {
        warm.push(time(run_true)?.0.as_secs_f64());
    }
    rm(&farms)?;
    let (cp_al, cp_a, farm, warm) = (Times(cp_al), Times(cp_a), Times(farm), Times(warm));
    let farm_rows = vec![
        cp_al.row("cp -al (hard links)", "baseline".into()),
        cp_a.row(
            "cp -a (copies)",
            format!("{:.2}× cp -al", cp_a.min() / cp_al.min()),
        ),
        farm.row(
            "velo run --keep -- true (farm: links into the store, overlay, run)",
            format!(
                "{:.2}× cp -al (target ≤ 1.0×), {:.2}× cp -a",
                farm.min() / cp_al.min(),
                farm.min() / cp_a.min()
            ),
        ),
        warm.row(
            "velo run -- true, farm already cached",
            format!("{:.3}× cp -al", warm.min() / cp_al.min()),
        ),
    ];

    // The sandbox: busybox as the tree for both.
    let busybox = crate::busybox::find_or_install()?;
    let image = work.join("busybox-image");
    if !image.exists() {
        crate::busybox::build_tree(&busybox, &image)?;
    }
    exec(
        velo_cmd(&["ingest", "busybox-image", "-o", "busybox.velo"])
            .stdout(std::process::Stdio::null()),
    )?;
    let bwrap =
        which("bwrap").context("bubblewrap is not installed (apt-get install bubblewrap)")?;
    // Build the busybox farm once: the rows compare starting a sandbox, not building a farm.
    const ISOLATED_TRUE: &[&str] = &[
        "run",
        "--isolate",
        "--manifest",
        "busybox.velo",
        "--",
        "/bin/true",
    ];
    exec(&mut velo_cmd(ISOLATED_TRUE))?;
    let mut velo_times = Vec::new();
    let mut bwrap_times = Vec::new();
    let runs = opts.runs.max(10);
    for _ in 0..runs {
        velo_times.push(time(|| exec(&mut velo_cmd(ISOLATED_TRUE)))?.0.as_secs_f64());
        let mut b = Command::new(&bwrap);
        b.args([
            "--unshare-user",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-ipc",
            "--uid",
            "0",
            "--gid",
            "0",
        ])
        .arg("--ro-bind")
        .arg(&image)
        .args([
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--hostname",
            "velo",
            "--",
            "/bin/true",
        ]);
        bwrap_times.push(time(|| exec(&mut b))?.0.as_secs_f64());
    }
    let (velo_t, bwrap_t) = (Times(velo_times), Times(bwrap_times));
    let sandbox_rows = vec![
        bwrap_t.row(
            "bwrap, read-only bind of the ready tree, /bin/true",
            "baseline".into(),
        ),
        velo_t.row(
            "velo run --isolate, /bin/true (farm cached)",
            format!("{:.2}× bwrap (target ≤ 1.5×)", velo_t.min() / bwrap_t.min()),
        ),
    ];

    let mut report = String::new();
    writeln!(report, "# Benchmark: velo run\n")?;
    writeln!(
        report,
        "Generated by `cargo xtask bench run --runs {} --files {}`.\n",
        opts.runs, opts.files
    )?;
    writeln!(report, "{}\n", machine()?)?;
    writeln!(report, "## Materializing a farm of {} files\n", opts.files)?;
    write_rows(&mut report, &farm_rows)?;
    writeln!(
        report,
        "## Starting a sandbox ({runs} runs each, busybox base image)\n"
    )?;
    write_rows(&mut report, &sandbox_rows)?;
    super::finish(opts, "run", &report, &work)
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var("PATH")
        .ok()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}
