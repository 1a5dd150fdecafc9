//! `cargo xtask bench store`: what ingest costs next to a plain copy.
//!
//! Data sets, in one run:
//! - **generated**: `--files` small files (0–8 KiB, a fifth of them duplicates), 10 to a
//!   directory and 100 to a top-level directory, plus ten 32 MiB files of which two are duplicates;
//! - **real**: `/usr/share` (whatever this machine has installed).
//!
//! For each: `cp -a` vs a cold `velo ingest` into an empty store (target: at most 1.3×), the
//! same with `sync` / `--fsync none` to show what durability costs, and a re-ingest of the
//! unchanged tree (target: at least 30× faster than cold), beside stat walks that do nothing
//! else (`find`, and a walk on every core that reads each directory and does one `fstatat` per
//! entry; the re-ingest reads only directories that changed). Then
//! `--fsync batch` vs `per-blob` on a 10,000-file subset, and BLAKE3 hashing vs plain reading of
//! the large files.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::{Expect, Options, Row, Times, measure_interleaved, write_rows};
use crate::util::{build_velo, exec, output, time};

struct Velo {
    bin: PathBuf,
}

impl Velo {
    /// `velo --store STORE ingest TREE -o MANIFEST --json EXTRA…`.
    fn ingest_command(
        &self,
        store: &Path,
        tree: &Path,
        manifest: &Path,
        extra: &[&str],
    ) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--store")
            .arg(store)
            .arg("ingest")
            .arg(tree)
            .arg("-o")
            .arg(manifest)
            .arg("--json")
            .args(extra);
        cmd
    }

    /// Runs an ingest and returns its `--json` summary.
    fn ingest(
        &self,
        store: &Path,
        tree: &Path,
        manifest: &Path,
        extra: &[&str],
    ) -> Result<serde_json::Value> {
        let out = output(&mut self.ingest_command(store, tree, manifest, extra))?;
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
    writeln!(
        report,
        "The cold commands are timed in turn, round by round, so each sees the same drift of \
         the machine's speed. Each writes to a new path and nothing is deleted until the end: on \
         ext4 without a journal every inode allocation passes over the inodes freed in the last \
         minutes, which made a 100,000-file ingest run 5–10× slower within minutes of an \
         `rm -rf` of as many files (see `Outputs` in xtask/src/bench/store.rs).\n"
    )?;

    let mut sets = vec![("generated", generated.clone())];
    if Path::new("/usr/share").is_dir() {
        sets.push(("real: /usr/share", PathBuf::from("/usr/share")));
    }
    let outputs = Outputs::new(work.join("out"))?;
    for (name, tree) in &sets {
        eprintln!("measuring {name} …");
        // Two copies and two stores per round; the stores hold at most the tree's bytes.
        outputs.ensure_room(4 * opts.runs as u64 * super::du_bytes(tree)?)?;
        let (rows, summary) = measure_tree(&velo, &outputs, tree, opts.runs)?;
        let (files, bytes) = (
            summary["files"].as_u64().unwrap_or(0),
            summary["bytes"].as_u64().unwrap_or(0),
        );
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
    let modes = ["none", "batch", "per-blob"];
    let mut makes = modes.map(|mode| {
        let (outputs, subset, velo) = (&outputs, &subset, &velo);
        move || {
            let store = outputs.fresh("store");
            velo.ingest_command(
                &store,
                subset,
                &store.with_extension("velo"),
                &["--fsync", mode],
            )
        }
    });
    let [m0, m1, m2] = &mut makes;
    let times = measure_interleaved(
        opts.runs,
        || settle(&subset),
        &mut [m0, m1, m2],
        Expect::Success,
    )?;
    let count = outputs.fresh("store");
    let files = velo.ingest(
        &count,
        &subset,
        &count.with_extension("velo"),
        &["--fsync", "none"],
    )?["files"]
        .as_u64()
        .unwrap_or(0);
    rm(&outputs.dir)?;
    let batch = times[1].min();
    let rows: Vec<Row> = modes
        .iter()
        .zip(&times)
        .map(|(mode, times)| {
            let note = if *mode == "per-blob" {
                format!("{:.1}× batch; {files} files", times.min() / batch)
            } else {
                format!("{files} files")
            };
            times.row(&format!("velo ingest --fsync {mode}"), note)
        })
        .collect();
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

/// Where timed commands write: a new path for every run, all deleted together at the end.
///
/// Why nothing is deleted during the benchmark: on ext4 without a journal (this machine's root)
/// the inode allocator passes over every free inode that was deleted in the last minute, or in
/// the last six while its inode table block is dirty (`recently_deleted` in fs/ext4/ialloc.c),
/// looking up the inode table block for each one. Creating a tree in a group of inodes freed
/// minutes ago dirties those blocks again, so the window keeps stretching. Measured here: a
/// 100,000-file `velo ingest` took 25–44 s within minutes of an `rm -rf` of as many files and
/// 4–5 s otherwise; `cp -a` of the same tree 25 s, then 5–6 s. Deleting between runs made
/// every timed command after the first pay some of that, unevenly.
struct Outputs {
    dir: PathBuf,
    made: std::cell::Cell<usize>,
}

impl Outputs {
    fn new(dir: PathBuf) -> Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            made: std::cell::Cell::new(0),
        })
    }

    /// A path that does not exist yet: `DIR/NAME-N`.
    fn fresh(&self, name: &str) -> PathBuf {
        self.made.set(self.made.get() + 1);
        self.dir.join(format!("{name}-{}", self.made.get()))
    }

    /// Fails, before anything is written, unless `bytes` more fit on the outputs' filesystem.
    fn ensure_room(&self, bytes: u64) -> Result<()> {
        let avail = output(
            Command::new("df")
                .args(["--output=avail", "-B1"])
                .arg(&self.dir),
        )?;
        let free: u64 = avail
            .lines()
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .context("df printed no free space")?;
        anyhow::ensure!(
            free > bytes + (1 << 30),
            "the benchmark keeps every copy and store until it ends: it needs about {} GiB in {} \
             and {} GiB are free; pass a smaller --runs or a --work-dir on a larger filesystem",
            (bytes >> 30) + 1,
            self.dir.display(),
            free >> 30
        );
        Ok(())
    }
}

/// The cold ingests, `cp -a` and `cp -a && sync`, timed in turn round by round (each after
/// [`settle`]); then re-ingests of the unchanged tree and a `find` stat walk.
fn measure_tree(
    velo: &Velo,
    outputs: &Outputs,
    tree: &Path,
    runs: usize,
) -> Result<(Vec<Row>, serde_json::Value)> {
    let fresh = |name: &str| outputs.fresh(name);
    let manifest = |store: &Path| store.with_extension("velo");
    let mut last_store = None;
    let mut cp = || {
        let mut cmd = Command::new("cp");
        cmd.arg("-a").arg(tree).arg(fresh("copy"));
        cmd
    };
    let mut cp_sync = || {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cp -a \"$0\" \"$1\" && sync"])
            .arg(tree)
            .arg(fresh("copy"));
        cmd
    };
    let mut cold_nosync = || {
        let store = fresh("store");
        velo.ingest_command(&store, tree, &manifest(&store), &["--fsync", "none"])
    };
    let mut cold = || {
        let store = fresh("store");
        let cmd = velo.ingest_command(&store, tree, &manifest(&store), &[]);
        last_store = Some(store);
        cmd
    };
    let [cp, cp_sync, cold_nosync, cold]: [Times; 4] = measure_interleaved(
        runs,
        || settle(tree),
        &mut [&mut cp, &mut cp_sync, &mut cold_nosync, &mut cold],
        Expect::Success,
    )?
    .try_into()
    .expect("four commands");

    // A fraction of a second each: several per round, as a benchmark tool would run a fast
    // command, so one disturbed run does not stand for the round.
    let store = last_store.context("no cold ingest ran")?;
    let mut warm = Vec::new();
    let mut summary = serde_json::Value::Null;
    let mut find = Vec::new();
    let mut floor = Vec::new();
    for _ in 0..runs {
        settle(tree)?;
        for _ in 0..WARM_PER_ROUND {
            let (t, json) = time(|| velo.ingest(&store, tree, &manifest(&store), &[]))?;
            warm.push(t.as_secs_f64());
            summary = json;
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
        settle(tree)?;
        floor.push(time(|| parallel_stat_walk(tree))?.0.as_secs_f64());
    }
    let unchanged = summary["unchanged_files"].as_u64().unwrap_or(0);
    let unlisted = summary["unchanged_dirs"].as_u64().unwrap_or(0);
    let (warm, find, floor) = (Times(warm), Times(find), Times(floor));
    let base = cp.min();
    let rows = vec![
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
                "{:.0}× faster than cold (target ≥ 30×), {:.0}× faster than cold --fsync none; {unchanged} files not read, {unlisted} directories not listed",
                cold.min() / warm.min(),
                cold_nosync.min() / warm.min()
            ),
        ),
        find.row(
            "find -printf size, mtime, ctime, inode (one thread)",
            format!("the stat walk alone; unchanged-tree ingest is {:.2}× this", warm.min() / find.min()),
        ),
        floor.row(
            "stat walk on every core (readdir and one fstatat per entry, nothing else)",
            format!(
                "the floor of a re-ingest that reads every directory: cold is {:.0}× this; unchanged-tree ingest (which reads none) is {:.2}× this",
                cold.min() / floor.min(),
                warm.min() / floor.min()
            ),
        ),
    ];
    Ok((rows, summary))
}

/// Reads every directory under `root` and stats every entry, on every core (one `fstatat` per
/// entry relative to its directory's descriptor, as `DirEntry::metadata` does; no hashing,
/// index or manifest): what a re-ingest that reads every directory cannot go below. (velo's
/// re-ingest takes the names of an unchanged directory from its index instead of reading it.)
fn parallel_stat_walk(root: &Path) -> Result<()> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let queue = Mutex::new(vec![root.to_path_buf()]);
    // Directories queued or being read: the walk is over when none are.
    let open = AtomicUsize::new(1);
    let failed = AtomicBool::new(false);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let read = |dir: &Path| -> Result<()> {
                        for entry in fs::read_dir(dir)? {
                            let entry = entry?;
                            let meta = entry.metadata()?;
                            std::hint::black_box(meta.len());
                            if meta.is_dir() {
                                open.fetch_add(1, Ordering::AcqRel);
                                queue.lock().expect("queue lock").push(entry.path());
                            }
                        }
                        Ok(())
                    };
                    while open.load(Ordering::Acquire) > 0 && !failed.load(Ordering::Relaxed) {
                        let Some(dir) = queue.lock().expect("queue lock").pop() else {
                            std::thread::yield_now();
                            continue;
                        };
                        if let Err(e) = read(&dir) {
                            failed.store(true, Ordering::Relaxed); // the others stop too
                            return Err(e.context(format!("stat walk of {}", dir.display())));
                        }
                        open.fetch_sub(1, Ordering::AcqRel);
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("stat walk thread"))
    })
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
         first command of a round read from disk. Files are created much more slowly for minutes \
         after many were deleted on ext4 without a journal (see `Outputs` in \
         xtask/src/bench/store.rs), and the VM's speed drifts, so ratios use the minimum of the \
         runs, the least disturbed one; medians are shown too."
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
