//! `cargo xtask bench store`: what ingest costs next to a plain copy.
//!
//! Data sets, in one run:
//! - **generated**: `--files` small files (0–8 KiB, a fifth of them duplicates), 10 to a
//!   directory and 100 to a top-level directory, plus ten 32 MiB files of which two are duplicates;
//! - **real**: `/usr/share` (whatever this machine has installed).
//!
//! For each: `cp -a` vs a cold `velo ingest` into an empty store (target: at most 1.3×), the
//! same with `sync` / `--fsync none` to show what durability costs, and a re-ingest of the
//! unchanged tree (target: at least 30× faster than cold). Then `--fsync batch` vs `per-blob` on
//! a 10,000-file subset, and BLAKE3 hashing vs plain reading of the large files.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::{Options, Row, Times, write_rows};
use crate::util::{build_velo, exec, output, time};

struct Velo {
    bin: PathBuf,
}

impl Velo {
    fn ingest(
        &self,
        store: &Path,
        tree: &Path,
        manifest: &Path,
        extra: &[&str],
    ) -> Result<serde_json::Value> {
        let out = output(
            Command::new(&self.bin)
                .arg("--store")
                .arg(store)
                .arg("ingest")
                .arg(tree)
                .arg("-o")
                .arg(manifest)
                .arg("--json")
                .args(extra),
        )?;
        Ok(serde_json::from_str(&out)?)
    }
}

fn sync() -> Result<()> {
    exec(&mut Command::new("sync"))
}

/// Flushes dirty data and reads `tree` back into the page cache, so the next timed command
/// starts from the same state whichever it is. Needed here because the machine's DAMON pages out
/// anything untouched for a minute, so a tree read at the start of a run is cold minutes later.
pub(super) fn settle(tree: &Path) -> Result<()> {
    sync()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file()
                && let Ok(mut f) = fs::File::open(entry.path())
            {
                while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
            }
        }
    }
    Ok(())
}

pub(super) fn rm(path: &Path) -> Result<()> {
    if path.exists() {
        exec(Command::new("rm").arg("-rf").arg(path))?;
    }
    Ok(())
}

pub fn run(opts: &Options) -> Result<()> {
    let velo = Velo {
        bin: build_velo(true)?,
    };
    let work = super::work_dir(opts)?;
    let generated = work.join("generated");
    if !generated.exists() {
        eprintln!(
            "generating {} files in {} …",
            opts.files,
            generated.display()
        );
        generate(&generated, opts.files)?;
    }
    // Files younger than the stat index's racy window are re-read on purpose; let them age.
    std::thread::sleep(std::time::Duration::from_millis(2100));

    let mut report = String::new();
    writeln!(report, "# cargo xtask bench store\n")?;
    writeln!(report, "{}\n", machine()?)?;

    let mut sets = vec![("generated", generated.clone())];
    if Path::new("/usr/share").is_dir() {
        sets.push(("real: /usr/share", PathBuf::from("/usr/share")));
    }
    for (name, tree) in &sets {
        eprintln!("measuring {name} …");
        let rows = measure_tree(&velo, &work, tree, opts.runs)?;
        let (files, bytes) = tree_size(&velo, &work, tree)?;
        writeln!(
            report,
            "## {name}: {files} files, {:.0} MiB\n",
            bytes as f64 / (1 << 20) as f64
        )?;
        write_rows(&mut report, &rows)?;
    }

    eprintln!("measuring durability modes …");
    let subset = work.join("subset");
    if !subset.exists() {
        fs::create_dir_all(&subset)?;
        for i in 0..100 {
            let d = format!("d{i:03}");
            if generated.join(&d).exists() {
                exec(
                    Command::new("cp")
                        .arg("-a")
                        .arg(generated.join(&d))
                        .arg(subset.join(&d)),
                )?;
            }
        }
    }
    let mut rows = Vec::new();
    let mut batch = 0.0;
    for mode in ["none", "batch", "per-blob"] {
        let mut times = Vec::new();
        let mut files = 0;
        for _ in 0..opts.runs {
            let store = work.join("store-durability");
            rm(&store)?;
            settle(&subset)?;
            let (t, json) = time(|| {
                velo.ingest(
                    &store,
                    &subset,
                    &work.join("subset.velo"),
                    &["--fsync", mode],
                )
            })?;
            times.push(t.as_secs_f64());
            files = json["files"].as_u64().unwrap_or(0);
        }
        let times = Times(times);
        if mode == "batch" {
            batch = times.min();
        }
        let note = if mode == "per-blob" {
            format!("{:.1}× batch; {files} files", times.min() / batch)
        } else {
            format!("{files} files")
        };
        rows.push(times.row(&format!("velo ingest --fsync {mode}"), note));
    }
    writeln!(
        report,
        "## durability: 10,000-file subset of the generated tree\n"
    )?;
    write_rows(&mut report, &rows)?;

    eprintln!("measuring hashing vs reading …");
    writeln!(
        report,
        "## hashing vs reading (large files of the generated tree, warm cache)\n"
    )?;
    writeln!(report, "{}", hash_vs_read(&generated.join("large"))?)?;

    super::finish(opts, "store", &report, &work)
}

/// Unchanged-tree re-ingests timed per round.
const WARM_PER_ROUND: usize = 5;

fn measure_tree(velo: &Velo, work: &Path, tree: &Path, runs: usize) -> Result<Vec<Row>> {
    let copy = work.join("copy");
    let store = work.join("store");
    let manifest = work.join("bench.velo");
    let mut cp = Vec::new();
    let mut cp_sync = Vec::new();
    let mut cold = Vec::new();
    let mut cold_nosync = Vec::new();
    let mut warm = Vec::new();
    let mut find = Vec::new();
    let mut unchanged = 0;
    for _ in 0..runs {
        rm(&copy)?;
        settle(tree)?;
        cp.push(
            time(|| exec(Command::new("cp").arg("-a").arg(tree).arg(&copy)))?
                .0
                .as_secs_f64(),
        );
        rm(&copy)?;
        settle(tree)?;
        cp_sync.push(
            time(|| {
                exec(Command::new("cp").arg("-a").arg(tree).arg(&copy))?;
                sync()
            })?
            .0
            .as_secs_f64(),
        );
        rm(&copy)?;
        rm(&store)?;
        settle(tree)?;
        cold_nosync.push(
            time(|| velo.ingest(&store, tree, &manifest, &["--fsync", "none"]))?
                .0
                .as_secs_f64(),
        );
        rm(&store)?;
        settle(tree)?;
        cold.push(
            time(|| velo.ingest(&store, tree, &manifest, &[]))?
                .0
                .as_secs_f64(),
        );
        // A fraction of a second each: several per round, as a benchmark tool would run a
        // fast command, so one disturbed run does not stand for the round.
        settle(tree)?;
        for _ in 0..WARM_PER_ROUND {
            let (t, json) = time(|| velo.ingest(&store, tree, &manifest, &[]))?;
            warm.push(t.as_secs_f64());
            unchanged = json["unchanged_files"].as_u64().unwrap_or(0);
        }
        // The floor for telling that nothing changed: one stat per file, as find does it.
        settle(tree)?;
        let stat_walk = || {
            output(
                Command::new("find")
                    .arg(tree)
                    .args(["-printf", "%s %T@ %C@ %i\\n"]),
            )
            .map(drop)
        };
        find.push(time(stat_walk)?.0.as_secs_f64());
    }
    rm(&store)?;
    let (cp, cp_sync, cold, cold_nosync, warm, find) = (
        Times(cp),
        Times(cp_sync),
        Times(cold),
        Times(cold_nosync),
        Times(warm),
        Times(find),
    );
    let base = cp.min();
    Ok(vec![
        cp.row("cp -a", "baseline".into()),
        cold.row(
            "velo ingest, cold (empty store, --fsync batch)",
            format!("{:.2}× cp -a (target ≤ 1.3×); {:.2}× cp -a && sync", cold.min() / base, cold.min() / cp_sync.min()),
        ),
        cp_sync.row("cp -a && sync", format!("{:.2}× cp -a", cp_sync.min() / base)),
        cold_nosync.row("velo ingest, cold, --fsync none", format!("{:.2}× cp -a", cold_nosync.min() / base)),
        warm.row(
            &format!("velo ingest, unchanged tree (stat index; {WARM_PER_ROUND} per round)"),
            format!(
                "{:.0}× faster than cold (target ≥ 30×), {:.0}× faster than cold --fsync none; {unchanged} files not read",
                cold.min() / warm.min(),
                cold_nosync.min() / warm.min()
            ),
        ),
        find.row(
            "find -printf size, mtime, ctime, inode (one thread)",
            format!("the stat walk alone; unchanged-tree ingest is {:.2}× this", warm.min() / find.min()),
        ),
    ])
}

fn tree_size(velo: &Velo, work: &Path, tree: &Path) -> Result<(u64, u64)> {
    let store = work.join("store-size");
    let json = velo.ingest(&store, tree, &work.join("size.velo"), &["--fsync", "none"])?;
    rm(&store)?;
    Ok((
        json["files"].as_u64().unwrap_or(0),
        json["bytes"].as_u64().unwrap_or(0),
    ))
}

fn hash_vs_read(dir: &Path) -> Result<String> {
    let files: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pass = |hash: bool| -> Result<(f64, u64)> {
        let mut total = 0u64;
        let (t, ()) = time(|| {
            for f in &files {
                let mut file = fs::File::open(f)?;
                let mut hasher = blake3::Hasher::new();
                loop {
                    let n = file.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    if hash {
                        hasher.update(&buf[..n]);
                    }
                    total += n as u64;
                }
                std::hint::black_box(hasher.finalize());
            }
            Ok(())
        })?;
        Ok((t.as_secs_f64(), total))
    };
    pass(false)?; // warm the page cache
    let (read_s, bytes) = pass(false)?;
    let (hash_s, _) = pass(true)?;
    let gib = bytes as f64 / (1u64 << 30) as f64;
    Ok(format!(
        "| operation | GiB/s |\n|---|---:|\n| read(2), 1 MiB buffer | {:.2} |\n| read(2) + BLAKE3 (one thread) | {:.2} |\n\n\
         Hashing runs at {:.0}% of read throughput on {:.0} MiB.\n",
        gib / read_s,
        gib / hash_s,
        100.0 * read_s / hash_s,
        bytes as f64 / (1 << 20) as f64
    ))
}

pub(super) fn machine() -> Result<String> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = output(Command::new("uname").arg("-r"))?.trim().to_owned();
    let fs_type = output(
        Command::new("findmnt")
            .args(["-no", "FSTYPE", "-T"])
            .arg(std::env::temp_dir()),
    )?
    .trim()
    .to_owned();
    Ok(format!(
        "Machine: {cores} cores, Linux {kernel}, {fs_type} filesystem. Each timed command starts \
         after `sync` and an untimed read of the source tree, so all run with a warm page cache: \
         this machine's DAMON pages out data untouched for a minute, which otherwise makes the \
         first command of a round read from disk. Even so, the kernel time of the same command \
         varies up to 4x between runs on this VM (seen: `cp -a /usr/share` 3.6 s, then 15.3 s), so \
         ratios use the minimum of the runs, the least disturbed one; medians are shown too."
    ))
}

/// xorshift64*: deterministic content without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

pub(super) fn generate(dir: &Path, files: usize) -> Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut buf = vec![0u8; 8192];
    for i in 0..files {
        // 100 files per top directory, 10 per leaf: the shape of a source tree or node_modules.
        let sub = dir.join(format!("d{:03}/e{}", (i / 100) % 1000, (i / 10) % 10));
        fs::create_dir_all(&sub)?;
        let len = (rng.next() % 8192) as usize;
        if i % 5 == 4 {
            // A duplicate of content written earlier: same seed, same bytes.
            let mut dup = Rng(0x1234 + (i as u64 % 97));
            dup.fill(&mut buf[..len]);
        } else {
            rng.fill(&mut buf[..len]);
        }
        fs::write(sub.join(format!("f{i}")), &buf[..len])?;
    }
    let large = dir.join("large");
    fs::create_dir_all(&large)?;
    let mut big = vec![0u8; 32 << 20];
    for i in 0..10u64 {
        let mut r = Rng(0xabc + i % 8); // files 8 and 9 repeat 0 and 1
        r.fill(&mut big);
        fs::write(large.join(format!("large-{i}.bin")), &big)?;
    }
    Ok(())
}
