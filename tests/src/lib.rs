//! Harness for velo's end-to-end tests (`tests/tests/e2e/`), which drive the real binaries.
//!
//! Every test gets a [`Env`]: a private temporary directory with its own store, and a
//! [`Env::velo`] command builder. [`Run::ok`] and [`Run::fails`] check the exit status and, when
//! it is not the expected one, panic with the command, its directory, status, stdout and stderr,
//! so a failure in CI explains itself.
//!
//! Tests that need something this machine may lack (root, user namespaces) call [`skip`], which
//! prints one loud line with the reason, or panics when `CI=true` or `VELO_MUST_WORK=1` is set:
//! on CI every test must really run.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built `velo` binary: `$VELO_BIN`, else next to this test executable's `deps/` directory.
pub fn velo_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("VELO_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = dir.join("velo");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo xtask test` does, or `cargo build -p velo`)",
        bin.display()
    );
    bin
}

/// The directory holding the built binaries (`velo`, `libvelo_shim.so`, the test helpers).
pub fn bin_dir() -> PathBuf {
    velo_bin()
        .parent()
        .expect("velo lives in a directory")
        .to_owned()
}

/// A helper binary built from `tests/src/bin/` (`shim-stress`, `shim-bench`).
pub fn helper_bin(name: &str) -> PathBuf {
    let bin = bin_dir().join(name);
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo xtask test` does, or `cargo build -p velo-e2e --bins`)",
        bin.display()
    );
    bin
}

/// A fixture under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// `cp -a SRC DST`: a copy that keeps modes and mtimes (DST must not exist).
pub fn copy_tree(src: &Path, dst: &Path) {
    cp("-a", src, dst);
}

/// `cp -r SRC DST`: a copy with new mtimes, as `git clone` gives (DST must not exist).
pub fn copy_fresh(src: &Path, dst: &Path) {
    cp("-r", src, dst);
}

fn cp(flag: &str, src: &Path, dst: &Path) {
    fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
    let status = Command::new("cp")
        .arg(flag)
        .arg(src)
        .arg(dst)
        .status()
        .expect("cp");
    assert!(
        status.success(),
        "cp {flag} {} {}",
        src.display(),
        dst.display()
    );
}

/// The user's `CARGO_HOME` (`$CARGO_HOME`, else `~/.cargo`).
pub fn user_cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"))
}

/// A private `CARGO_HOME` at `dest` holding the crates.io index entries and `.crate` files of
/// `crates` (`name-version`), copied from the user's `CARGO_HOME` (building velo fetched them),
/// so `cargo build --offline` works in it. Falls back to `cargo fetch` (network) in `project`
/// when the user's home lacks one of them.
pub fn private_cargo_home(dest: &Path, crates: &[&str], project: &Path) {
    let user = user_cargo_home().join("registry");
    let mut complete = true;
    for index in fs::read_dir(user.join("index"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = index.file_name();
        let to = dest.join("registry/index").join(&name);
        fs::create_dir_all(&to).expect("mkdir");
        if index.path().join("config.json").is_file() {
            fs::copy(index.path().join("config.json"), to.join("config.json")).expect("copy");
        }
        for krate in crates {
            let (name, _) = krate.rsplit_once('-').expect("name-version");
            let shard = match name.len() {
                1 => format!("1/{name}"),
                2 => format!("2/{name}"),
                3 => format!("3/{}/{name}", &name[..1]),
                _ => format!("{}/{}/{name}", &name[..2], &name[2..4]),
            };
            let from = index.path().join(".cache").join(&shard);
            if from.is_file() {
                fs::create_dir_all(to.join(".cache").join(&shard).parent().unwrap()).unwrap();
                fs::copy(&from, to.join(".cache").join(&shard)).expect("copy");
            } else {
                complete = false;
            }
        }
    }
    for cache in fs::read_dir(user.join("cache"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let to = dest.join("registry/cache").join(cache.file_name());
        fs::create_dir_all(&to).expect("mkdir");
        for krate in crates {
            let from = cache.path().join(format!("{krate}.crate"));
            if from.is_file() {
                fs::copy(&from, to.join(format!("{krate}.crate"))).expect("copy");
            } else {
                complete = false;
            }
        }
    }
    if !complete || !dest.join("registry/cache").is_dir() {
        eprintln!(
            "note: fetching {crates:?} from the network into {}",
            dest.display()
        );
        Cmd::new("cargo")
            .arg("fetch")
            .clean_cargo_env()
            .env("CARGO_HOME", dest)
            .dir(project)
            .ok();
    }
}

/// Every file under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .map(|f| dir.join(f))
        .filter(|f| fs::read(f).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether skipping is forbidden (CI, or `VELO_MUST_WORK=1`).
pub fn must_work() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("VELO_MUST_WORK").is_ok_and(|v| v == "1")
}

/// The busybox-static binary, or a loud skip (CI installs it).
pub fn busybox(test: &str) -> Option<PathBuf> {
    let found = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        skip(
            test,
            "busybox-static is not installed (apt-get install busybox-static)",
        );
    }
    found
}

/// Fails the test where skipping is forbidden; otherwise prints a loud skip line and records the
/// skip in `$VELO_SKIP_LOG` (one `test<TAB>reason` line), which `cargo xtask test` counts and
/// lists at the end: the harness hides a passing test's stderr, so a skip would go unseen.
pub fn skip(test: &str, reason: &str) {
    if must_work() {
        panic!("{test}: cannot run ({reason}) and CI=true / VELO_MUST_WORK=1 forbids skipping");
    }
    eprintln!("\n*** SKIPPED {test}: {reason} ***\n");
    if let Some(log) = std::env::var_os("VELO_SKIP_LOG") {
        use std::io::Write;
        // One write per line, in append mode: tests skipping side by side do not interleave.
        let line = format!("{test}\t{}\n", reason.replace(['\t', '\n'], " "));
        let _ = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

/// A test's private world: a temporary directory with a store in it.
pub struct Env {
    dir: tempfile::TempDir,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("velo-e2e-")
            .tempdir()
            .expect("tempdir");
        Env { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("store")
    }

    /// A `velo` command with this env's store and a clean logging environment.
    pub fn velo<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(velo_bin());
        cmd.args(args)
            .current_dir(self.path())
            .env("VELO_STORE", self.store())
            .env_remove("VELO_LOG");
        Cmd { cmd }
    }

    /// A `velo` command as another machine runs it: its own store and HOME, under
    /// `MACHINE/` in this env's directory (nothing shared with the default store).
    pub fn velo_on<I, S>(&self, machine: &str, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let root = self.path().join(machine);
        self.velo(args)
            .env("VELO_STORE", root.join("store"))
            .env("HOME", root.join("home"))
    }

    /// Runs `velo ingest ARGS… --json`, expects success and returns the JSON summary.
    pub fn ingest_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["ingest"];
        all.extend_from_slice(args);
        all.push("--json");
        self.velo(all).ok().json()
    }

    /// Writes `content` to `rel`, creating directories.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(rel);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, content).expect("write");
        path
    }

    /// Makes this env readable and writable by an unprivileged user (see [`Cmd::unprivileged`]).
    pub fn open_to_everyone(&self) {
        fs::set_permissions(self.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    }
}

pub struct Cmd {
    pub cmd: Command,
}

impl Cmd {
    /// Any program, with the same failure explanations as `velo` commands.
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            cmd: Command::new(program),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Runs in `dir`, without the caller's `PWD` (which would name the wrong directory: a
    /// shell or velo that trusts `PWD` would see the test's directory instead).
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cmd.current_dir(dir).env_remove("PWD");
        self
    }

    pub fn env_remove(mut self, key: &str) -> Cmd {
        self.cmd.env_remove(key);
        self
    }

    /// Removes what `cargo test` and the caller's shell put in the environment that would steer
    /// a nested cargo (target dir, flags, wrappers, the test's own `CARGO_*` and library path),
    /// so a fixture builds the way a user's shell would build it.
    pub fn clean_cargo_env(mut self) -> Cmd {
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let steers = (key.starts_with("CARGO") && key != "CARGO_HOME")
                || key.starts_with("RUST")
                || key == "LD_LIBRARY_PATH"
                || key == "LD_PRELOAD"
                || key.starts_with("VRIFT_");
            if steers && key != "RUSTUP_HOME" && key != "RUSTUP_TOOLCHAIN" {
                self.cmd.env_remove(&*key);
            }
        }
        self.cmd.env("CARGO_TERM_COLOR", "never");
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Cmd {
        self.cmd.env(key, value);
        self
    }

    /// Several variables at once, such as [`S3Server::env`].
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Cmd {
        self.cmd.envs(vars);
        self
    }

    /// When run as root, drop to `nobody` so permission checks apply (root reads everything).
    pub fn unprivileged(mut self) -> Cmd {
        use std::os::unix::process::CommandExt;
        if is_root() {
            self.cmd.uid(65534).gid(65534);
        }
        self
    }

    pub fn run(mut self) -> Run {
        let output = self
            .cmd
            .output()
            .unwrap_or_else(|e| panic!("spawning {:?}: {e}", self.cmd));
        Run {
            description: format!("{:?} (in {:?})", self.cmd, self.cmd.get_current_dir()),
            output,
        }
    }

    /// Runs and expects exit status 0.
    pub fn ok(self) -> Run {
        self.run().expect_code(0)
    }

    /// Runs and expects exit status 2 (an error).
    pub fn fails(self) -> Run {
        self.run().expect_code(2)
    }
}

pub struct Run {
    description: String,
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.explain()))
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code(),
            Some(code),
            "unexpected exit status:\n{}",
            self.explain()
        );
        self
    }

    /// Asserts stderr contains every one of `needles`.
    pub fn stderr_has(self, needles: &[&str]) -> Run {
        let stderr = self.stderr();
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "stderr lacks {needle:?}:\n{}",
                self.explain()
            );
        }
        self
    }

    pub fn explain(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.description,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }
}

/// Everything about a tree that ingest promises not to change: per path, the kind, bytes or
/// link target, permission bits, mtime (ns), inode and link count (a hard link into the store
/// would raise it).
pub fn fingerprint_tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let content = if meta.is_file() {
                blake3::hash(&fs::read(&path).unwrap_or_default())
                    .to_hex()
                    .to_string()
            } else if meta.file_type().is_symlink() {
                format!("-> {:?}", fs::read_link(&path).expect("readlink"))
            } else {
                String::new()
            };
            out.push(format!(
                "{:?} mode={:o} mtime={}.{} ino={} nlink={} {}",
                path.strip_prefix(root)
                    .expect("prefix")
                    .as_os_str()
                    .as_bytes(),
                meta.mode(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ino(),
                meta.nlink(),
                content
            ));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every regular file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("prefix").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// A small deterministic PRNG (xorshift64*), so tests need no extra crate and print their seed.
pub struct Rng(u64);

impl Rng {
    pub fn from_time() -> (Rng, u64) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        (Rng(seed), seed)
    }

    pub fn seeded(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Writes a tree of `files` files spread over nested directories, with some duplicate content,
/// some executables and a few files larger than the store's in-memory limit.
pub fn generate_tree(root: &Path, files: usize, seed: u64) {
    let mut rng = Rng::seeded(seed);
    for i in 0..files {
        let dir = root.join(format!("d{}/e{}", i % 17, i % 5));
        fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(format!("f{i}.dat"));
        let content: Vec<u8> = match i % 10 {
            0 => b"shared content\n".to_vec(),
            9 if i % 100 == 99 => (0..(5 << 20))
                .map(|j: usize| (j as u64 ^ seed) as u8)
                .collect(),
            _ => {
                let len = rng.below(8192) as usize;
                (0..len).map(|_| rng.next_u64() as u8).collect()
            }
        };
        fs::write(&path, content).expect("write");
        if i % 7 == 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }
}

/// Runs `check` once per tracer backend, holding [`tracer_lock`]: ptrace always, eBPF as root
/// (loading BPF is privileged here), else a loud skip (CI runs as root, where skipping fails
/// the test).
pub fn each_tracer_backend(test: &str, check: impl Fn(&str)) {
    let _tracing = tracer_lock();
    let backends: &[&str] = if is_root() {
        &["ptrace", "ebpf"]
    } else {
        skip(
            &format!("{test} (eBPF backend)"),
            "loading BPF programs needs root",
        );
        &["ptrace"]
    };
    for backend in backends {
        eprintln!("--- {test}: {backend}");
        check(backend);
    }
}

/// Held by the tests that trace (velo trace, velo audit), so that two tracers and the builds
/// they watch do not run at once on a two-core machine: the eBPF reader must keep up with a
/// 100k-syscall burst (issue: no event lost), which it cannot when starved of CPU.
pub fn tracer_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A published crate's source, as crates.io serves it (with its own `Cargo.lock`), copied to
/// `dest` with new mtimes, as a clone gives. `name_version` is `name-version`. Cargo fetches it
/// into the user's `CARGO_HOME` first when it is not there (a dependency of a throwaway
/// project), so this needs the registry once per machine.
pub fn published_crate(name_version: &str, dest: &Path) {
    let find = || -> Option<PathBuf> {
        fs::read_dir(user_cargo_home().join("registry/src"))
            .ok()?
            .flatten()
            .map(|index| index.path().join(name_version))
            .find(|p| p.join("Cargo.toml").is_file())
    };
    let source = find().unwrap_or_else(|| {
        let (name, version) = name_version.rsplit_once('-').expect("name-version");
        let fetcher = tempfile::tempdir().expect("tempdir");
        fs::write(
            fetcher.path().join("Cargo.toml"),
            format!(
                "[package]\nname = \"corpus-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
                 [lib]\npath = \"lib.rs\"\n[dependencies]\n{name} = \"={version}\"\n[workspace]\n"
            ),
        )
        .expect("write");
        fs::write(fetcher.path().join("lib.rs"), "").expect("write");
        Cmd::new("cargo")
            .arg("fetch")
            .clean_cargo_env()
            .dir(fetcher.path())
            .ok();
        find().unwrap_or_else(|| panic!("cargo fetch did not extract {name_version}"))
    });
    copy_fresh(&source, dest);
}

/// Cargo's verdict per unit from `cargo build -v` output: `(package, "Dirty: reason")` or
/// `(package, "Fresh")`, in order.
pub fn cargo_verdicts(stderr: &str) -> Vec<(String, String)> {
    stderr
        .lines()
        .map(str::trim_start)
        .filter_map(|l| {
            let (verdict, rest) = l.split_once(' ')?;
            if verdict != "Dirty" && verdict != "Fresh" {
                return None;
            }
            let package = rest.split(' ').next()?.trim_end_matches(':').to_owned();
            let reason = rest.split_once(": ").map_or("", |(_, r)| r);
            Some((
                package,
                format!(
                    "{verdict}{}{reason}",
                    if reason.is_empty() { "" } else { ": " }
                ),
            ))
        })
        .collect()
}

/// The packages Cargo called dirty for a reason of their own (not only because a dependency
/// was rebuilt), sorted and deduplicated.
pub fn dirty_by_own_input(stderr: &str) -> Vec<String> {
    let mut out: Vec<String> = cargo_verdicts(stderr)
        .into_iter()
        .filter(|(_, v)| v.starts_with("Dirty") && !v.contains("was rebuilt"))
        .map(|(p, _)| p)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The crates of a `velo scan --json` report with `verdict` (`will-miss`, `misses-in-clone`,
/// `reusable`), in report order.
pub fn crates_with_verdict(report: &serde_json::Value, verdict: &str) -> Vec<String> {
    report["crates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["verdict"] == verdict)
        .filter_map(|c| c["crate_name"].as_str().map(str::to_owned))
        .collect()
}

/// Writes `text` to `root/rel`, creating directories.
pub fn write_file(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

/// One raw entry: kind (1 dir, 2 file, 3 symlink), path, content hash (files), target (links).
pub type RawEntry<'a> = (u8, &'a [u8], Option<blake3::Hash>, &'a [u8]);

/// A manifest from raw entries, without any validation (docs/manifest.md's encoding); every
/// file declares 1 byte.
pub fn raw_manifest(entries: &[RawEntry]) -> Vec<u8> {
    raw_manifest_sized(entries, 1)
}

/// [`raw_manifest`] with every file declaring `size` bytes.
pub fn raw_manifest_sized(entries: &[RawEntry], size: u64) -> Vec<u8> {
    let mut out = b"velo-mf\n".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (kind, path, hash, target) in entries {
        out.push(*kind);
        out.push(0);
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path);
        match kind {
            2 => {
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(hash.expect("file hash").as_bytes());
            }
            3 => {
                out.extend_from_slice(&(target.len() as u32).to_le_bytes());
                out.extend_from_slice(target);
            }
            _ => {}
        }
    }
    out
}

/// Runs `script` with `sh -c` in a private mount namespace (as root, or in a user namespace),
/// in `env`'s directory. `None` (and a loud skip) when no namespace or tmpfs can be had there;
/// the script exits 99 when its `mount` fails.
pub fn in_mount_namespace(env: &Env, test: &str, script: &str) -> Option<std::process::Output> {
    in_mount_namespace_with(env, test, script, &[])
}

/// [`in_mount_namespace`] with `vars` set (`None` removes one).
pub fn in_mount_namespace_with(
    env: &Env,
    test: &str,
    script: &str,
    vars: &[(&str, Option<&std::path::Path>)],
) -> Option<std::process::Output> {
    let unshare = if is_root() {
        vec!["unshare", "--mount"]
    } else {
        vec!["unshare", "-Urm"]
    };
    let probe = Command::new(unshare[0])
        .args(&unshare[1..])
        .arg("true")
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        skip(test, "cannot create a mount namespace (unshare)");
        return None;
    }
    let mut cmd = Command::new(unshare[0]);
    cmd.args(&unshare[1..])
        .args(["sh", "-c", script])
        .current_dir(env.path());
    for (key, value) in vars {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd.output().unwrap();
    if out.status.code() == Some(99) {
        skip(test, "cannot mount tmpfs in a mount namespace");
        return None;
    }
    Some(out)
}

/// A finished command's stdout, stderr, and both together for an assertion's message.
pub fn output_texts(out: &Output) -> (String, String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let explain = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    (stdout, stderr, explain)
}

/// The moto release the S3 tests run against (pinned: one release answered a conditional PUT on
/// an existing key with 200 instead of 412; this one answers 412).
pub const MOTO_VERSION: &str = "5.1.4";

/// A real S3 API server (moto's), started on a free local port for one test, with a bucket
/// `velo`; stopped when dropped. Its request log is `log`.
pub struct S3Server {
    child: std::process::Child,
    pub port: u16,
    pub log: PathBuf,
}

impl S3Server {
    /// The environment that points the AWS credential chain at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// The server's log so far (one line per request).
    pub fn requests(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moto_server`: `$VELO_MOTO_SERVER`, else the virtualenv `.ci/run` makes
/// (`target/moto-venv`), else one made now with pip (the tests may use PyPI).
fn moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VELO_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = workspace_root().join("target/moto-venv");
    let bin = venv.join("bin/moto_server");
    if bin.exists() {
        return Some(bin);
    }
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if !bin.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", &format!("moto[server]=={MOTO_VERSION}")])
                .status()
                .is_ok_and(|s| s.success());
        if !made {
            return None;
        }
    }
    Some(bin)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

pub mod faults;

/// A fresh S3 server for `test`, or `None` (and a loud skip) when moto cannot be had.
pub fn s3_server(test: &str, dir: &Path) -> Option<S3Server> {
    use std::io::{Read, Write};
    let Some(bin) = moto_server() else {
        skip(
            test,
            "moto_server is not installed and could not be (python3 -m venv, pip)",
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let log = dir.join("s3-server.log");
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(&log).expect("log"))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let server = S3Server { child, port, log };
    let started = std::time::Instant::now();
    loop {
        // Create the bucket: moto accepts an unsigned PUT.
        if let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let request = format!(
                "PUT /velo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let mut answer = String::new();
            if conn.write_all(request.as_bytes()).is_ok()
                && conn.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                // The release must refuse a conditional PUT over an existing key (412): velo's
                // create-if-absent writes, and so its publish order, rest on it. (Signed as a
                // client would, though moto does not check it: unsigned, moto answers 403.)
                let put = |port: u16| {
                    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
                    let request = format!(
                        "PUT /velo/.probe HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nIf-None-Match: *\r\n\
                         Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\
                         x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-date: 20260101T000000Z\r\n\
                         Content-Length: 1\r\nConnection: close\r\n\r\nx"
                    );
                    conn.write_all(request.as_bytes()).ok()?;
                    let mut answer = String::new();
                    conn.read_to_string(&mut answer).ok()?;
                    answer.split_whitespace().nth(1).map(str::to_owned)
                };
                let (first, second) = (put(port), put(port));
                assert_eq!(
                    (first.as_deref(), second.as_deref()),
                    (Some("200"), Some("412")),
                    "moto {MOTO_VERSION} must answer a conditional PUT on an existing key with 412"
                );
                return Some(server);
            }
        }
        assert!(
            started.elapsed().as_secs() < 30,
            "the S3 server did not come up: {}",
            fs::read_to_string(dir.join("s3-server.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Another machine's `CARGO_HOME` at `dest`: a copy of `home` without its extracted registry
/// sources, as a CI machine that caches downloads but not `registry/src` has.
pub fn second_machine_cargo_home(home: &Path, dest: &Path) {
    copy_fresh(home, dest);
    fs::remove_dir_all(dest.join("registry/src")).expect("registry/src");
}
