//! Helpers shared by the tasks: the workspace root, running commands, timing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Runs `cmd`, failing with its command line and exit status.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, failing with stderr on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the velo binary and the shim beside it (`release` or dev profile) and returns the
/// binary's path.
pub fn build_velo(release: bool) -> Result<PathBuf> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root())
        .args(["build", "--quiet", "-p", "velo", "-p", "velo-shim"]);
    if release {
        cmd.arg("--release");
    }
    exec(&mut cmd)?;
    let dir = if release { "release" } else { "debug" };
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    Ok(target.join(dir).join("velo"))
}

/// Times one run of `f`.
/// Builds `shim-bench` (tests/src/bin: `stat` and `open`+`close` in a loop, timed) in release
/// mode; returns its path.
pub fn build_shim_bench() -> Result<PathBuf> {
    exec(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "--quiet",
        "--release",
        "-p",
        "velo-e2e",
        "--bin",
        "shim-bench",
    ]))?;
    Ok(root().join("target/release/shim-bench"))
}

/// The nanoseconds `shim-bench` printed for `key` (`stat_ns`, `open_ns`, …) in its JSON line.
pub fn bench_ns(printed: &serde_json::Value, key: &str) -> Result<f64> {
    printed[key]
        .as_f64()
        .with_context(|| format!("shim-bench printed no {key}"))
}

pub fn time<T>(f: impl FnOnce() -> Result<T>) -> Result<(Duration, T)> {
    let start = Instant::now();
    let value = f()?;
    Ok((start.elapsed(), value))
}

/// A `cargo` command for building a user's project: without the variables that running under
/// `cargo xtask` put in the environment (target dir, flags, this package's `CARGO_*`).
pub fn user_cargo(dir: &Path) -> Command {
    user_command("cargo", dir)
}

/// `program` in `dir` with the environment of [`user_cargo`]: for `velo cargo` or
/// `velo inception -- cargo`, which run the user's cargo.
pub fn user_command(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTFLAGS")
        {
            cmd.env_remove(&*key);
        }
    }
    cmd.current_dir(dir).env("CARGO_TERM_COLOR", "never");
    cmd
}

/// A fresh copy of `tests/fixtures/NAME` at `dest` (replacing what is there).
pub fn fresh_fixture(name: &str, dest: &Path) -> Result<()> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    exec(
        Command::new("cp")
            .arg("-a")
            .arg(root().join("tests/fixtures").join(name))
            .arg(dest),
    )
}

/// busybox-static, where Debian puts it (the leaky fixture's static helper).
pub fn busybox() -> Option<&'static str> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}
