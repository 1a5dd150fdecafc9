//! `cargo xtask demo`: velo's main job on the bundled sample project.
//!
//! Two checkouts of `examples/sample` at different paths (as two developers, or a developer and
//! a CI runner, would have them) are ingested into one store. The demo shows that both give the
//! same manifest id, that the store holds each distinct content once, and what `velo status`
//! reports. Everything happens under `target/demo/`, which is wiped first.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::util::{build_velo, exec, output, root};

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
        std::fs::create_dir_all(dest.parent().expect("parent"))?;
        exec(
            Command::new("cp")
                .arg("-a")
                .arg(root().join("examples/sample"))
                .arg(&dest),
        )?;
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
