//! `cargo xtask reports`: example `velo audit` reports in all four formats, from real runs, so
//! a reader of `reports/` sees what velo prints.
//!
//! The fixture workspace is built twice in a temporary directory: with plain cargo (its build
//! script's absolute `rerun-if-changed` makes `app` miss the cache) and under `velo audit`
//! (projected and traced, with a raw `openat` of a canonical path at the end, which the tracer
//! reports as uncaught). Paths of the temporary directory are replaced by `/home/alice/ws`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::{build_velo, exec, root, user_cargo, user_command};

pub fn run() -> Result<()> {
    let velo = build_velo(false)?;
    let work = tempfile_dir()?;
    let ws = work.join("ws");
    exec(
        Command::new("cp")
            .arg("-a")
            .arg(root().join("tests/fixtures/inception-ws"))
            .arg(&ws),
    )?;
    exec(user_cargo(&ws).args(["build", "--quiet"]))?;
    let raw = work.join("raw");
    exec(
        Command::new("cc")
            .args(["-O1", "-o"])
            .arg(&raw)
            .arg(root().join("tests/fixtures/trace/raw.c")),
    )?;
    let shown = "/home/alice/ws";
    let out_dir = root().join("reports");
    let write = |name: &str, args: &[&str]| -> Result<()> {
        let mut cmd = user_command(&velo, &ws);
        cmd.args(["audit", "--root", ws.to_str().context("utf-8 path")?])
            .args(args);
        let out = cmd.output()?;
        let text = String::from_utf8_lossy(&out.stdout).replace(ws.to_str().unwrap_or(""), shown);
        let path = out_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
        Ok(())
    };
    for (ext, format) in [
        ("txt", "table"),
        ("json", "json"),
        ("sarif", "sarif"),
        ("md", "markdown"),
    ] {
        write(
            &format!("audit-plain-build.{ext}"),
            &["--no-build", "--format", format],
        )?;
    }
    std::fs::remove_dir_all(ws.join("target"))?;
    let script = format!(
        "cargo build -q && {} openat /vrift_workspace/Cargo.toml >/dev/null; true",
        raw.display()
    );
    for (ext, format) in [
        ("txt", "table"),
        ("json", "json"),
        ("sarif", "sarif"),
        ("md", "markdown"),
    ] {
        write(
            &format!("audit-traced-build.{ext}"),
            &["--format", format, "--", "sh", "-c", &script],
        )?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("velo-reports-{}", std::process::id()));
    if Path::new(&dir).exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
