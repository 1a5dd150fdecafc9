//! `cargo xtask reports`: example `velo audit` reports in all four formats, from real runs, so
//! a reader of `reports/` sees what velo prints.
//!
//! The leaky fixture (tests/fixtures/leaky-ws: one seeded leak of every class) is built with
//! plain cargo and audited with `--no-build` (the scanner alone: `rerun` misses the cache, paths
//! are baked into several crates), then audited with a traced, projected build (what the
//! projection cannot fix: an undeclared input, a raw syscall, a static helper). Last, a shim
//! built without its `access` hook shows the feedback loop: `--suggest-table` proposes the row.
//! Paths of the temporary directory are replaced by `/home/alice/leaky`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{build_velo, busybox, exec, fresh_fixture, root, user_cargo, user_command};

const FORMATS: [(&str, &str); 4] = [
    ("txt", "table"),
    ("json", "json"),
    ("sarif", "sarif"),
    ("md", "markdown"),
];

pub fn run() -> Result<()> {
    let velo = build_velo(false)?;
    let work = tempfile_dir()?;
    let ws = work.join("leaky");
    let fresh_copy = || fresh_fixture("leaky-ws", &ws);
    let busybox = busybox();
    if busybox.is_none() {
        eprintln!(
            "warning: busybox-static is not installed: the reports lack the static helper (apt-get install busybox-static)"
        );
    }
    let shown = "/home/alice/leaky";
    let out_dir = root().join("reports");
    let write = |name: &str, args: &[&str], env: &[(&str, &Path)]| -> Result<()> {
        let out = out_dir.join(name);
        let mut cmd = user_command(&velo, &ws);
        cmd.args(["audit", "--root", ws.to_str().context("utf-8 path")?])
            .args(args)
            .env_remove("PWD");
        if let Some(b) = busybox {
            cmd.env("VELO_FIXTURE_BUSYBOX", b);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = cmd.output()?;
        let text =
            String::from_utf8_lossy(&output.stdout).replace(ws.to_str().unwrap_or(""), shown);
        std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
        Ok(())
    };

    fresh_copy()?;
    exec(user_cargo(&ws).args(["build", "--quiet"]))?;
    for (ext, format) in FORMATS {
        write(
            &format!("audit-plain-build.{ext}"),
            &["--no-build", "--format", format],
            &[],
        )?;
    }
    // Each traced audit starts from a fresh copy: a second build would compile nothing, and
    // the tracer would see no rustc.
    for (ext, format) in FORMATS {
        fresh_copy()?;
        write(
            &format!("audit-traced-build.{ext}"),
            &["--format", format],
            &[],
        )?;
    }

    // The feedback loop, with a shim that lacks `access`.
    let shim_target = target_dir().join("test-shim-without-access");
    exec(
        Command::new(env!("CARGO"))
            .current_dir(root())
            .args(["build", "--quiet", "-p", "velo-shim"])
            .env("VELO_SHIM_OMIT", "access")
            .env("CARGO_TARGET_DIR", &shim_target),
    )?;
    let raw = work.join("raw");
    exec(
        Command::new("cc")
            .args(["-O1", "-o"])
            .arg(&raw)
            .arg(root().join("tests/fixtures/trace/raw.c")),
    )?;
    let shim = shim_target.join("debug/libvelo_shim.so");
    let script = format!(
        "{} access /vrift_workspace/Cargo.toml >/dev/null; true",
        raw.display()
    );
    write(
        "audit-suggest-table.txt",
        &["--suggest-table", "--", "sh", "-c", &script],
        &[("VELO_SHIM", &shim)],
    )?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("velo-reports-{}", std::process::id()));
    if Path::new(&dir).exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
