//! `cargo xtask busybox`: a static base image, `busybox.velo` (the seed's `setup_busybox.sh`).
//!
//! Debian's `busybox-static` is one statically linked binary with a few hundred applets. The
//! image is that binary at `bin/busybox`, a symlink for every applet where `busybox --list-full`
//! puts it (`bin/sh`, `sbin/ifconfig`, `usr/bin/env`, …, relative, so they resolve inside any
//! root), a minimal `etc/passwd` and `etc/group` so `id` and `whoami` name root, and the empty
//! mountpoints a runtime expects (`proc dev tmp sys root`). It is then ingested into the store. `velo run --isolate --base busybox.velo …` uses it as a root
//! filesystem, and it is what static binaries in farm mode look like.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{build_velo, exec, output, root};

#[derive(clap::Args)]
pub struct Options {
    /// Where to write the manifest.
    #[arg(long, default_value = "target/busybox.velo")]
    output: PathBuf,
    /// The store to ingest into [default: velo's usual: $VELO_STORE, else ~/.local/share/velo].
    #[arg(long)]
    store: Option<PathBuf>,
}

/// The busybox-static binary, installing Debian's package when it is missing and we are root.
pub fn find_or_install() -> Result<PathBuf> {
    let candidates = ["/bin/busybox", "/usr/bin/busybox"];
    let is_static = |p: &Path| {
        output(Command::new("file").arg("-L").arg(p)).map_or_else(
            // No `file(1)`: trust a busybox that runs without a dynamic loader line in ldd.
            |_| output(Command::new("ldd").arg(p)).is_err(),
            |o| o.contains("statically linked"),
        )
    };
    if let Some(found) = candidates
        .iter()
        .map(Path::new)
        .find(|p| p.exists() && is_static(p))
    {
        return Ok(found.to_owned());
    }
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "busybox-static is not installed; install it (`sudo apt-get install busybox-static`) and run again"
        );
    }
    eprintln!("installing busybox-static …");
    let apt = |args: &[&str]| {
        exec(
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if apt(&["install", "-y", "-qq", "busybox-static"]).is_err() {
        apt(&["update", "-qq"])?;
        apt(&["install", "-y", "-qq", "busybox-static"])?;
    }
    candidates
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .map(Path::to_owned)
        .context("busybox-static installed, but no /bin/busybox")
}

/// Lays out the image in `dir` (created; must not exist).
pub fn build_tree(busybox: &Path, dir: &Path) -> Result<usize> {
    fs::create_dir_all(dir.join("bin"))?;
    fs::copy(busybox, dir.join("bin/busybox")).context("copying busybox")?;
    let list = output(Command::new(busybox).arg("--list-full"))?;
    let mut applets = 0;
    for rel in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "bin/busybox")
    {
        let link = dir.join(rel);
        fs::create_dir_all(link.parent().context("applet path")?)?;
        let depth = rel.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        if !link.exists() {
            std::os::unix::fs::symlink(target, &link)?;
            applets += 1;
        }
    }
    fs::create_dir_all(dir.join("etc"))?;
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    // Mountpoints a runtime expects to find (bubblewrap cannot create them in a read-only root).
    for mountpoint in ["root", "proc", "dev", "tmp", "sys"] {
        fs::create_dir_all(dir.join(mountpoint))?;
    }
    Ok(applets)
}

pub fn run(opts: Options) -> Result<()> {
    let velo = build_velo(false)?;
    let busybox = find_or_install()?;
    let dir = root().join("target/busybox-image");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let applets = build_tree(&busybox, &dir)?;
    let output_path = if opts.output.is_absolute() {
        opts.output.clone()
    } else {
        root().join(&opts.output)
    };
    let mut cmd = Command::new(velo);
    if let Some(store) = &opts.store {
        cmd.arg("--store").arg(store);
    }
    exec(
        cmd.arg("ingest")
            .arg(&dir)
            .arg("--output")
            .arg(&output_path),
    )?;
    println!(
        "busybox image: {} applets from {} -> {}",
        applets,
        busybox.display(),
        output_path.display()
    );
    Ok(())
}
