//! `cargo xtask demo`: velo's main job on the bundled sample project.
//!
//! Two checkouts of `examples/sample` at different paths (as two developers, or a developer and
//! a CI runner, would have them) are ingested into one store. The demo shows that both give the
//! same manifest id, that the store holds each distinct content once, and what `velo status`
//! reports. Then both checkouts are built under `velo inception`, which projects each at
//! `/vrift_workspace`: no physical path lands in either `target/`, and a third checkout that
//! receives a copy of the first one's `target/` finds every unit fresh, while the same experiment
//! without velo rebuilds. `velo cargo build` then saves a snapshot of `target/`, and a fresh
//! clone elsewhere (new mtimes, no `target/`) restores it with every unit fresh. Finally `velo
//! run` projects alice's manifest as a link farm, and runs
//! it in an `--isolate` sandbox on a static busybox base image, as root inside and nobody
//! outside. Everything happens under `target/demo/`, which is wiped first.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::util::{
    build_velo, busybox, exec, fresh_fixture, output, root, user_cargo, user_command,
};

#[derive(clap::Args)]
pub struct Options {
    /// Use a release build of velo.
    #[arg(long)]
    release: bool,
}

fn step(title: &str) {
    println!("\n==> {title}");
}

pub fn run(opts: Options) -> Result<()> {
    step("building velo");
    ensure_ebpf_toolchain()?;
    let velo = build_velo(opts.release)?;
    let work = root().join("target/demo");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let store = work.join("store");
    let velo_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&velo);
        cmd.current_dir(&work).env("VELO_STORE", &store).args(args);
        cmd
    };

    step("two checkouts of examples/sample at different paths");
    let checkouts = ["alice/src/sample", "ci-runner/builds/7f3a/sample"];
    for checkout in checkouts {
        let dest = work.join(checkout);
        copy_sample(&dest, true)?;
        println!("    {}", dest.display());
    }

    step("velo ingest, once from each path");
    let mut ids = Vec::new();
    for (checkout, manifest) in checkouts.iter().zip(["alice.velo", "ci.velo"]) {
        println!("$ velo ingest {checkout} --output {manifest}");
        exec(&mut velo_cmd(&[
            "ingest",
            checkout,
            "--output",
            manifest,
            "--exclude",
            "target",
        ]))?;
        ids.push(
            output(&mut velo_cmd(&["manifest", "id", manifest]))?
                .trim()
                .to_owned(),
        );
    }
    ensure!(ids[0] == ids[1], "manifest ids differ: {ids:?}");
    println!("\n    same manifest id from both paths: {}", ids[0]);

    step("the store holds one copy of each content");
    let files = count_files(&work.join(checkouts[0]))?;
    let blobs = count_files(&store.join("blobs"))?;
    let shown = output(&mut velo_cmd(&["manifest", "show", "alice.velo", "--json"]))?;
    let json: serde_json::Value = serde_json::from_str(&shown)?;
    let distinct: std::collections::BTreeSet<_> = json["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .filter_map(|e| Some((e["hash"].as_str()?.to_owned(), e["exec"].as_bool()?)))
        .collect();
    println!(
        "    {files} files per checkout, {} checkouts, {blobs} blobs in the store",
        checkouts.len()
    );
    ensure!(
        blobs == distinct.len(),
        "expected {} blobs, found {blobs}",
        distinct.len()
    );
    println!("    (assets/greeting.txt and assets/greeting-copy.txt share one blob)");

    step("velo status");
    exec(&mut velo_cmd(&["status"]))?;

    inception(&velo, &work, &checkouts)?;
    cache(&velo, &work, &store)?;
    trace(&velo, &work)?;
    scan(&velo, &work)?;
    audit(&velo, &work)?;
    velo_run(&velo, &work, &store)?;
    println!("\ndemo finished; its files are in {}", work.display());
    Ok(())
}

fn count_files(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            n += count_files(&entry.path())?;
        } else if ft.is_file() {
            n += 1;
        }
    }
    Ok(n)
}

/// Builds each checkout under `velo inception`, checks `target/` for physical paths, then moves
/// a built checkout and rebuilds it with and without velo.
fn inception(velo: &Path, work: &Path, checkouts: &[&str]) -> Result<()> {
    let under_velo = |dir: &Path, args: &[&str]| {
        let mut cmd = user_command(velo, dir);
        cmd.args(["inception", "--", "cargo"]).args(args);
        cmd
    };
    step("velo inception -- cargo build, in each checkout");
    for checkout in checkouts {
        let dir = work.join(checkout);
        println!("$ cd {checkout} && velo inception -- cargo build");
        exec(&mut under_velo(&dir, &["build", "--quiet"]))?;
        let target = dir.join("target");
        let leaked = files_containing(&target, dir.as_os_str().as_encoded_bytes())?;
        let canonical = files_containing(&target, b"/vrift_workspace")?;
        ensure!(
            leaked.is_empty(),
            "{} leaked into {leaked:?}",
            dir.display()
        );
        println!(
            "    {} files in target/ name /vrift_workspace, none names {}",
            canonical.len(),
            dir.display()
        );
    }

    step("move a built checkout (sources and target/, mtimes kept) and build again");
    let moved = work.join("bob/elsewhere/sample");
    std::fs::create_dir_all(moved.parent().expect("parent"))?;
    exec(
        Command::new("cp")
            .arg("-a")
            .arg(work.join(checkouts[0]))
            .arg(&moved),
    )?;
    let out = under_velo(&moved, &["build", "-v"]).output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (fresh, compiled) = count_units(&out.stderr);
    println!("    with velo:    {fresh} fresh, {compiled} compiled");
    ensure!(
        compiled == 0,
        "a moved checkout rebuilt under velo inception"
    );

    let native = work.join("native/sample");
    copy_sample(&native, true)?;
    exec(user_cargo(&native).args(["build", "--quiet"]))?;
    let native_moved = work.join("native-moved/elsewhere/sample");
    std::fs::create_dir_all(native_moved.parent().expect("parent"))?;
    exec(Command::new("cp").arg("-a").arg(&native).arg(&native_moved))?;
    let out = user_cargo(&native_moved).args(["build", "-v"]).output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (fresh, compiled) = count_units(&out.stderr);
    println!("    without velo: {fresh} fresh, {compiled} compiled (the absolute paths moved)");
    Ok(())
}

/// A copy of the bundled sample at `dest`: with its mtimes (`cp -a`, a moved checkout), or
/// with new ones (`cp -r`, a fresh clone).
fn copy_sample(dest: &Path, keep_mtimes: bool) -> Result<()> {
    std::fs::create_dir_all(dest.parent().expect("parent"))?;
    exec(
        Command::new("cp")
            .arg(if keep_mtimes { "-a" } else { "-r" })
            .arg(root().join("examples/sample"))
            .arg(dest),
    )
}

/// `velo cargo build` saves a snapshot; a fresh clone restores it and compiles nothing.
fn cache(velo: &Path, work: &Path, store: &Path) -> Result<()> {
    // Alice's builds push their snapshots to the demo's shared remote (the last step uses it).
    let remote = format!("file://{}", work.join("remote").display());
    let velo_cargo = |dir: &Path| {
        let mut cmd = user_command(velo, dir);
        cmd.env("VELO_STORE", store)
            .env("VELO_REMOTE", &remote)
            .args(["cargo", "build"]);
        cmd
    };
    step("velo cargo build: build projected and save target/ under the content key");
    let first = work.join("cache/alice/sample");
    let clone = work.join("cache/ci-runner/builds/8b1c/sample");
    copy_sample(&first, false)?;
    println!("$ cd cache/alice/sample && velo cargo build");
    let started = std::time::Instant::now();
    exec(&mut velo_cargo(&first))?;
    let cold = started.elapsed();

    step(
        "a fresh clone elsewhere (new mtimes, no target/): velo cargo build restores, and \
         sets the mtimes of stamp's byte-identical files back (its build script prints no \
         rerun-if-changed, so Cargo fingerprints it by mtime)",
    );
    copy_sample(&clone, false)?;
    println!("$ cd cache/ci-runner/builds/8b1c/sample && velo cargo build");
    let started = std::time::Instant::now();
    let out = velo_cargo(&clone).output()?;
    let warm = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stderr}");
    ensure!(out.status.success(), "velo cargo build failed");
    ensure!(
        !stderr
            .lines()
            .any(|l| l.trim_start().starts_with("Compiling")),
        "the restored clone compiled something"
    );
    println!(
        "    cold build {:.2} s, restore + no-op build {:.2} s",
        cold.as_secs_f64(),
        warm.as_secs_f64()
    );
    println!("$ velo cache list");
    let mut list = Command::new(velo);
    list.env("VELO_STORE", store).args(["cache", "list"]);
    exec(&mut list)?;
    Ok(())
}

/// clang and libbpf's headers build the tracer's kernel programs (velo-ebpf's build.rs).
/// Installed when missing and root; velo-ebpf is rebuilt so the programs are compiled in.
fn ensure_ebpf_toolchain() -> Result<()> {
    let have = Command::new("clang")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && Path::new("/usr/include/bpf/bpf_helpers.h").exists();
    // SAFETY: geteuid has no preconditions.
    if have || unsafe { libc::geteuid() } != 0 {
        if !have {
            println!("    (clang/libbpf-dev missing and not root: velo trace will use ptrace)");
        }
        return Ok(());
    }
    println!("$ apt-get install -y clang libbpf-dev");
    exec(Command::new("apt-get").args(["install", "-y", "-qq", "clang", "libbpf-dev"]))?;
    exec(
        Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["clean", "-q", "-p", "velo-ebpf"]),
    )
}

/// `velo trace`: a projected build with no findings, and a static binary the shim cannot reach.
fn trace(velo: &Path, work: &Path) -> Result<()> {
    step("velo trace --inception -- cargo build: what the shim missed, seen from outside");
    let dir = work.join("cache/alice/sample");
    std::fs::remove_dir_all(dir.join("target")).ok();
    println!("$ cd cache/alice/sample && velo trace --inception -- cargo build");
    let mut cmd = user_command(velo, &dir);
    cmd.args(["trace", "--inception", "--", "cargo", "build", "--quiet"]);
    exec(&mut cmd)?;
    if let Ok(busybox) = crate::busybox::find_or_install() {
        let shown = busybox.display().to_string();
        println!("$ velo trace --inception -- {shown} sh -c 'cat Cargo.toml >/dev/null'");
        let mut cmd = user_command(velo, &dir);
        cmd.args(["trace", "--inception", "--", &shown, "sh", "-c"])
            .arg("cat Cargo.toml >/dev/null");
        exec(&mut cmd)?;
    }
    Ok(())
}

/// `velo scan` of a target built without velo, then of one built under inception.
fn scan(velo: &Path, work: &Path) -> Result<()> {
    step("velo scan: which crates will miss the cache in another checkout, and why");
    for (dir, how) in [
        ("native/sample", "built with plain cargo"),
        ("alice/src/sample", "built under velo inception"),
    ] {
        println!("$ cd {dir} && velo scan        ({how})");
        // Exit 1 means "a crate will miss the cache": a finding, not a failure of the demo.
        let status = user_command(velo, &work.join(dir)).arg("scan").status()?;
        ensure!(
            status.code().is_some_and(|c| c <= 1),
            "velo scan failed: {status}"
        );
    }
    Ok(())
}

/// `velo audit --gate` of the leaky fixture: one seeded leak of every class. The projection
/// fixes the paths; what is left (an undeclared input, a raw syscall, a static helper) fails
/// the gate, each finding on its crate.
fn audit(velo: &Path, work: &Path) -> Result<()> {
    step("velo audit: build projected and traced, scan, report, gate");
    let ws = work.join("leaky");
    fresh_fixture("leaky-ws", &ws)?;
    println!("$ cd leaky && velo audit --gate        (tests/fixtures/leaky-ws: seeded leaks)");
    let mut cmd = user_command(velo, &ws);
    cmd.args(["audit", "--gate"]).env_remove("PWD");
    if let Some(busybox) = busybox() {
        cmd.env("VELO_FIXTURE_BUSYBOX", busybox);
    }
    let status = cmd.status()?;
    ensure!(
        status.code() == Some(1),
        "velo audit --gate should fail on the seeded findings: {status}"
    );
    println!("    (exit 1: the gate fails on the undeclared input and the raw syscall)");
    Ok(())
}

fn count_units(stderr: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(stderr);
    let count = |word: &str| {
        text.lines()
            .filter(|l| l.trim_start().starts_with(word))
            .count()
    };
    (count("Fresh"), count("Compiling"))
}

fn files_containing(dir: &Path, needle: &[u8]) -> Result<Vec<std::path::PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            found.extend(files_containing(&path, needle)?);
        } else if std::fs::read(&path)?
            .windows(needle.len())
            .any(|w| w == needle)
        {
            found.push(path);
        }
    }
    Ok(found)
}

/// `velo run`: the sample's manifest in shim mode, as a link farm, then as the root of a sandbox
/// over busybox.
fn velo_run(velo: &Path, work: &Path, store: &Path) -> Result<()> {
    let velo_cmd = |args: &[&str]| {
        let mut cmd = Command::new(velo);
        cmd.current_dir(work).env("VELO_STORE", store).args(args);
        cmd
    };
    step(
        "velo run: a dynamic program gets shim mode (the tree served from the store, nothing on disk)",
    );
    let script = "pwd; ls; cat assets/greeting.txt; echo x >> assets/greeting.txt || echo 'the store is read-only'";
    println!("$ velo run -v --manifest alice.velo --at /app -- sh -c '{script}'");
    exec(&mut velo_cmd(&[
        "run",
        "-v",
        "--manifest",
        "alice.velo",
        "--at",
        "/app",
        "--",
        "sh",
        "-c",
        script,
    ]))?;

    step("velo run --mode farm: the same tree as a link farm (hard links into the store)");
    println!(
        "$ velo run -v --mode farm --manifest alice.velo -- sh -c 'ls; cat assets/greeting.txt'"
    );
    exec(&mut velo_cmd(&[
        "run",
        "-v",
        "--mode",
        "farm",
        "--manifest",
        "alice.velo",
        "--",
        "sh",
        "-c",
        "ls; cat assets/greeting.txt",
    ]))?;

    step("velo run --isolate on a static busybox base image");
    let busybox = crate::busybox::find_or_install()?;
    let image = work.join("busybox-image");
    crate::busybox::build_tree(&busybox, &image)?;
    exec(&mut velo_cmd(&[
        "ingest",
        "busybox-image",
        "--output",
        "busybox.velo",
    ]))?;
    let script = "echo \"uid inside: $(id -u), uid outside: $(awk '{print $2}' /proc/self/uid_map)\"; ls /; echo hello > /written.txt";
    println!("$ velo run --isolate --base busybox.velo --manifest alice.velo -- /bin/sh -c '…'");
    exec(&mut velo_cmd(&[
        "run",
        "--isolate",
        "--base",
        "busybox.velo",
        "--manifest",
        "alice.velo",
        "--",
        "/bin/sh",
        "-c",
        script,
    ]))?;
    exec(velo_cmd(&["status", "--verify"]).stdout(std::process::Stdio::null()))?;
    println!("    the write went to a private layer; `velo status --verify`: every blob intact");

    step("velo push / velo pull: machine B gets the tree through a shared remote");
    let remote = format!("file://{}", work.join("remote").display());
    println!("$ velo push --remote {remote} alice.velo");
    exec(&mut velo_cmd(&["push", "--remote", &remote, "alice.velo"]))?;
    let id = output(&mut velo_cmd(&["manifest", "id", "alice.velo"]))?;
    let id = id.trim();
    println!("$ VELO_STORE=machine-b/store velo pull --remote {remote} {id} -o machine-b.velo");
    let b_store = work.join("machine-b/store");
    exec(
        velo_cmd(&["pull", "--remote", &remote, id, "-o", "machine-b.velo"])
            .env("VELO_STORE", &b_store),
    )?;
    let b_id = output(velo_cmd(&["manifest", "id", "machine-b.velo"]).env("VELO_STORE", &b_store))?;
    ensure!(b_id.trim() == id, "machine B's manifest differs: {b_id}");
    exec(
        velo_cmd(&["status", "--verify"])
            .env("VELO_STORE", &b_store)
            .stdout(std::process::Stdio::null()),
    )?;
    println!("    machine B's store holds the tree, every blob checked against its name");

    step(
        "a cold CI runner (its own store and HOME, another path): velo cargo build fetches \
         the sample's snapshot from the remote, restores it, and compiles nothing",
    );
    let runner = work.join("machine-c");
    let clone = runner.join("builds/41d9/sample");
    copy_sample(&clone, false)?;
    println!("$ cd machine-c/builds/41d9/sample && VELO_REMOTE={remote} velo cargo build");
    let out = user_command(velo, &clone)
        .env("VELO_STORE", runner.join("store"))
        .env("HOME", runner.join("home"))
        .env("VELO_REMOTE", &remote)
        .args(["cargo", "build"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stderr}");
    ensure!(out.status.success(), "velo cargo build on machine C failed");
    ensure!(
        stderr.contains("fetched snapshot")
            && !stderr
                .lines()
                .any(|l| l.trim_start().starts_with("Compiling")),
        "machine C did not restore from the remote"
    );
    println!("$ velo cache list --remote {remote}");
    exec(&mut velo_cmd(&["cache", "list", "--remote", &remote]))?;
    Ok(())
}
