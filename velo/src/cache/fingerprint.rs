//! What Cargo compares when it decides whether a unit is fresh, read from its `.fingerprint`
//! directories.
//!
//! Cargo keeps one JSON fingerprint per unit (`<target>/<profile>/.fingerprint/<pkg>-<hash>/
//! <kind>-<name>.json`). Besides hashes of flags and dependencies, its `local` list names the
//! file checks that use modification times:
//!
//! - `CheckDepInfo { dep_info }`: every file listed in the *encoded* dep-info file `dep_info`
//!   (relative to the target directory) must be no newer than `dep_info` itself. The encoded
//!   format is Cargo's own: a header, then per file a path type (0: relative to the package
//!   root, 1: relative to the target directory; absolute paths are stored as they are), the
//!   path, and an optional checksum; then the environment variables the unit read.
//! - `RerunIfChanged { output, paths }`: a build script's `rerun-if-changed` paths (relative to
//!   the package root) must be no newer than its `output` file.
//!
//! `Precalculated` and `RerunIfEnvChanged` entries are hashed into the fingerprint itself. A
//! registry crate's `Precalculated` is its version; a *path* package's is the newest mtime
//! among its files and that file's name (`"1796624798.539999265s (build.rs)"`), used for a
//! build script that prints no `rerun-if-*` and for `cargo doc`. A clone gives every file a new
//! mtime, so that unit differs everywhere; [`read`] returns these as [`PackageMtime`]s, and
//! [`super::package_mtime`] puts the times back when the files are byte-identical.
//!
//! Each check becomes a [`Check`]: the *reference* file whose mtime Cargo compares against,
//! and the source files compared. Paths relative to a package root are made absolute with the
//! package roots from `cargo metadata`; files under the target directory are skipped (they are
//! restored with the snapshot). A check that cannot be read completely is marked `complete:
//! false`, and restore treats it as stale: an unknown input is never presented as fresh.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One mtime comparison Cargo makes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// The file whose mtime the sources are compared with, relative to the target directory.
    pub reference: String,
    /// Absolute paths (canonical, as Cargo saw them under `velo inception`).
    pub sources: Vec<String>,
    /// Whether every source could be named; an incomplete check is always restored stale.
    pub complete: bool,
}

/// Package roots by package name, as absolute (canonical) directories. A name may have several
/// roots (two versions of one crate); checks of such a package use relative paths only when
/// they are absolute already.
pub type PackageRoots = HashMap<String, Vec<PathBuf>>;

/// Every check of every unit under `target_dir`, sorted by reference.
pub fn checks(target_dir: &Path, roots: &PackageRoots) -> Vec<Check> {
    read(target_dir, roots).checks
}

/// A unit whose fingerprint holds its package's newest mtime (Cargo's `Precalculated` for a
/// path package: a build script that prints no `rerun-if-*`, or `cargo doc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageMtime {
    /// The unit's fingerprint JSON, relative to the target directory.
    pub unit: String,
    /// The package root (canonical), when `cargo metadata` named exactly one.
    pub root: Option<PathBuf>,
    /// The newest mtime Cargo saw among the package's files, and the file (as Cargo wrote it:
    /// relative to the package root, or absolute).
    pub seconds: i64,
    pub nanos: u32,
    pub newest: PathBuf,
}

/// What the fingerprints of a target directory say.
#[derive(Debug, Default)]
pub struct Fingerprints {
    pub checks: Vec<Check>,
    pub package_mtimes: Vec<PackageMtime>,
}

/// Reads every unit's fingerprint under `target_dir`: its mtime checks, and the package mtimes
/// it was fingerprinted by.
pub fn read(target_dir: &Path, roots: &PackageRoots) -> Fingerprints {
    let mut found = BTreeMap::new();
    let mut package_mtimes = Vec::new();
    for dir in fingerprint_dirs(target_dir) {
        let units = Units::index(&dir);
        for unit_dir in &units.dirs {
            // Without a root, package-relative checks come out incomplete, never guessed.
            let root = units.root(unit_dir, roots, 1);
            let (checks, mtimes) = read_unit(target_dir, unit_dir, root);
            for check in checks {
                found.insert(check.reference.clone(), check);
            }
            package_mtimes.extend(mtimes);
        }
    }
    package_mtimes.sort_by(|a, b| a.unit.cmp(&b.unit));
    Fingerprints {
        checks: found.into_values().collect(),
        package_mtimes,
    }
}

/// The checks and package mtimes of every fingerprint JSON in `unit_dir`.
fn read_unit(
    target_dir: &Path,
    unit_dir: &Path,
    root: Option<&Path>,
) -> (Vec<Check>, Vec<PackageMtime>) {
    let (mut checks, mut mtimes) = (Vec::new(), Vec::new());
    let Ok(files) = std::fs::read_dir(unit_dir) else {
        return (checks, mtimes);
    };
    for path in files.flatten().map(|f| f.path()) {
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(local) = local_entries(&path) else {
            continue;
        };
        checks.extend(unit_checks(target_dir, &local, root));
        let rel = path.strip_prefix(target_dir).unwrap_or(&path);
        mtimes.extend(
            local
                .iter()
                .filter_map(|entry| entry.get("Precalculated")?.as_str())
                .filter_map(parse_package_mtime)
                .map(|(seconds, nanos, newest)| PackageMtime {
                    unit: rel.display().to_string(),
                    root: root.map(Path::to_owned),
                    seconds,
                    nanos,
                    newest,
                }),
        );
    }
    (checks, mtimes)
}

/// The units of one `.fingerprint` directory, indexed so a unit's package root can be told
/// apart when the lockfile holds two versions of its package (`rand_chacha` 0.1 and 0.3).
struct Units {
    dirs: Vec<PathBuf>,
    /// A unit's fingerprint hash (the hex in its hash files) → its directory.
    by_hash: HashMap<String, PathBuf>,
    /// `<hash>` → the makefile dep-info `deps/<crate>-<hash>.d`, which names absolute sources.
    dep_files: HashMap<String, PathBuf>,
}

impl Units {
    fn index(fingerprint_dir: &Path) -> Units {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(fingerprint_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        dirs.sort();
        let mut by_hash = HashMap::new();
        for dir in &dirs {
            for file in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = file.file_name();
                let name = name.to_string_lossy();
                if name.contains('.') || name.starts_with("dep-") {
                    continue;
                }
                if let Ok(hex) = std::fs::read_to_string(file.path())
                    && hex.len() == 16
                {
                    by_hash.insert(hex, dir.clone());
                }
            }
        }
        let mut dep_files = HashMap::new();
        let deps = fingerprint_dir.with_file_name("deps");
        for file in std::fs::read_dir(deps).into_iter().flatten().flatten() {
            let name = file.file_name();
            let name = name.to_string_lossy();
            if let Some((_, hash)) = name.strip_suffix(".d").and_then(|n| n.rsplit_once('-')) {
                dep_files.insert(hash.to_owned(), file.path());
            }
        }
        Units {
            dirs,
            by_hash,
            dep_files,
        }
    }

    /// The package root of the unit in `unit_dir`: the package's one root, or of several the
    /// one its dep-info names; a build-script run takes its build script's.
    fn root<'r>(&self, unit_dir: &Path, roots: &'r PackageRoots, depth: u8) -> Option<&'r Path> {
        let name = unit_dir.file_name()?.to_str()?;
        // `<package name>-<16 hex digits>`
        let (package, hash) = name.rsplit_once('-')?;
        let candidates = roots.get(package)?;
        if let [one] = candidates.as_slice() {
            return Some(one);
        }
        // The makefile dep-info of this unit: `deps/<crate>-<hash>.d`, or for a build script's
        // compilation `build/<unit>/build_script_build-<hash>.d`.
        let build_d = unit_dir
            .parent()?
            .with_file_name("build")
            .join(name)
            .join(format!("build_script_build-{hash}.d"));
        for d in [self.dep_files.get(hash).cloned(), Some(build_d)]
            .into_iter()
            .flatten()
        {
            let Ok(text) = std::fs::read(&d) else {
                continue;
            };
            let named: Vec<&PathBuf> = candidates
                .iter()
                .filter(|r| {
                    let mut prefix = r.as_os_str().as_encoded_bytes().to_vec();
                    prefix.push(b'/');
                    memchr::memmem::find(&text, &prefix).is_some()
                })
                .collect();
            if let [one] = named.as_slice() {
                return Some(one);
            }
        }
        // A build-script run has no dep-info of its own: its dependency `build_script_build`
        // (by fingerprint hash) is the compiled script, of the same package.
        if depth == 0 {
            return None;
        }
        for file in std::fs::read_dir(unit_dir).ok()?.flatten() {
            if file.path().extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(value) = std::fs::read(file.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            else {
                continue;
            };
            for dep in value
                .get("deps")
                .and_then(|d| d.as_array())
                .into_iter()
                .flatten()
            {
                let (Some(name), Some(hash)) = (
                    dep.get(1).and_then(|n| n.as_str()),
                    dep.get(3).and_then(|h| h.as_u64()),
                ) else {
                    continue;
                };
                if name != "build_script_build" {
                    continue;
                }
                let hex: String = hash
                    .to_le_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if let Some(dir) = self.by_hash.get(&hex)
                    && let Some(root) = self.root(dir, roots, depth - 1)
                {
                    return Some(root);
                }
            }
        }
        None
    }
}

/// Cargo's package fingerprint of a path source, `"<seconds>.<nanos>s (<newest file>)"`
/// (`PathSource::fingerprint`, with `FileTime`'s `Display`). A registry package's version or a
/// git commit is not a time: `None`.
pub fn parse_package_mtime(value: &str) -> Option<(i64, u32, PathBuf)> {
    let (time, rest) = value.split_once("s (")?;
    let path = rest.strip_suffix(')')?;
    let (seconds, nanos) = time.split_once('.')?;
    if nanos.len() != 9 || !nanos.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        seconds.parse().ok()?,
        nanos.parse().ok()?,
        PathBuf::from(path),
    ))
}

/// `.fingerprint` directories up to three levels below the target directory
/// (`debug/.fingerprint`, `<triple>/release/.fingerprint`).
fn fingerprint_dirs(target_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut level = vec![target_dir.to_owned()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for dir in level {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = e.file_name();
                if name == ".fingerprint" {
                    out.push(e.path());
                } else if name != "incremental" && name != "deps" && name != "build" {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    out.sort();
    out
}

/// The `local` list of a unit's fingerprint JSON.
fn local_entries(json: &Path) -> Option<Vec<serde_json::Value>> {
    let text = std::fs::read(json).ok()?;
    let mut value = serde_json::from_slice::<serde_json::Value>(&text).ok()?;
    match value.get_mut("local")?.take() {
        serde_json::Value::Array(local) => Some(local),
        _ => None,
    }
}

fn unit_checks(target_dir: &Path, local: &[serde_json::Value], root: Option<&Path>) -> Vec<Check> {
    let mut checks = Vec::new();
    for entry in local {
        if let Some(dep) = entry.get("CheckDepInfo") {
            let Some(reference) = dep.get("dep_info").and_then(|d| d.as_str()) else {
                continue;
            };
            let mut check = Check {
                reference: reference.to_owned(),
                sources: Vec::new(),
                complete: true,
            };
            match std::fs::read(target_dir.join(reference))
                .ok()
                .and_then(|b| parse_encoded_dep_info(&b))
            {
                Some(files) => {
                    for (kind, path) in files {
                        if kind == PathKind::TargetRootRelative {
                            continue;
                        }
                        match absolute(root, &path) {
                            Some(p) => check.sources.push(p),
                            None => check.complete = false,
                        }
                    }
                }
                None => check.complete = false,
            }
            checks.push(check);
        } else if let Some(rerun) = entry.get("RerunIfChanged") {
            let Some(reference) = rerun.get("output").and_then(|d| d.as_str()) else {
                continue;
            };
            let mut check = Check {
                reference: reference.to_owned(),
                sources: Vec::new(),
                complete: true,
            };
            for path in rerun
                .get("paths")
                .and_then(|p| p.as_array())
                .into_iter()
                .flatten()
            {
                match path.as_str().and_then(|p| absolute(root, Path::new(p))) {
                    Some(p) => check.sources.push(p),
                    None => check.complete = false,
                }
            }
            checks.push(check);
        }
    }
    for check in &mut checks {
        check.sources.sort();
        check.sources.dedup();
    }
    checks
}

fn absolute(root: Option<&Path>, path: &Path) -> Option<String> {
    let abs = if path.is_absolute() {
        path.to_owned()
    } else {
        root?.join(path)
    };
    abs.to_str().map(str::to_owned)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    PackageRootRelative,
    TargetRootRelative,
}

/// Parses Cargo's encoded dep-info (format version 1: `u32 1, u8 0xff, u8 version`, then
/// `u32 count` and per file `u8 kind, u32 len, bytes, u8 has_checksum[, u64 size, u32 len,
/// bytes]`). `None` for anything else, including a future format version.
pub fn parse_encoded_dep_info(bytes: &[u8]) -> Option<Vec<(PathKind, PathBuf)>> {
    Some(
        encoded_dep_info_spans(bytes)?
            .into_iter()
            .map(|(kind, span)| (kind, crate::store::bytes_to_path(&bytes[span])))
            .collect(),
    )
}

/// The entries of Cargo's encoded dep-info as byte ranges of `bytes` (for `velo scan`, which
/// says which entry a hit lies in).
pub fn encoded_dep_info_spans(bytes: &[u8]) -> Option<Vec<(PathKind, std::ops::Range<usize>)>> {
    Some(encoded_dep_info(bytes)?.files)
}

/// The byte ranges of an encoded dep-info: its files, and the environment variables rustc
/// tracked (name, range of the value when it was set). Cargo drops the variables it set for
/// rustc itself (`CARGO_*`, `OUT_DIR`, a build script's `rustc-env`), so what is left is the
/// user's environment, which Cargo compares on every build.
pub struct EncodedDepInfo {
    pub files: Vec<(PathKind, std::ops::Range<usize>)>,
    pub env: Vec<(String, Option<std::ops::Range<usize>>)>,
}

pub fn encoded_dep_info(bytes: &[u8]) -> Option<EncodedDepInfo> {
    let total = bytes.len();
    let mut rest = bytes;
    let b = &mut rest;
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = bytes.split_at_checked(n)?;
        *bytes = tail;
        Some(head)
    }
    fn u8_(bytes: &mut &[u8]) -> Option<u8> {
        take(bytes, 1).map(|b| b[0])
    }
    fn u32_(bytes: &mut &[u8]) -> Option<usize> {
        take(bytes, 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
    }
    if u32_(b)? != 1 || u8_(b)? != 0xff || u8_(b)? != 1 {
        return None;
    }
    let count = u32_(b)?;
    let mut files = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let kind = match u8_(b)? {
            0 => PathKind::PackageRootRelative,
            1 => PathKind::TargetRootRelative,
            _ => return None,
        };
        let len = u32_(b)?;
        let start = total - b.len();
        take(b, len)?;
        match u8_(b)? {
            0 => {}
            1 => {
                take(b, 8)?;
                let len = u32_(b)?;
                take(b, len)?;
            }
            _ => return None,
        }
        files.push((kind, start..start + len));
    }
    // Older encodings may end here; an unreadable environment list is just not reported.
    let mut env = Vec::new();
    if let Some(count) = u32_(b) {
        for _ in 0..count.min(4096) {
            let Some(len) = u32_(b) else { break };
            let Some(key) = take(b, len) else { break };
            let key = String::from_utf8_lossy(key).into_owned();
            match u8_(b) {
                Some(0) => env.push((key, None)),
                Some(1) => {
                    let Some(len) = u32_(b) else { break };
                    let start = total - b.len();
                    if take(b, len).is_none() {
                        break;
                    }
                    env.push((key, Some(start..start + len)));
                }
                _ => break,
            }
        }
    }
    Some(EncodedDepInfo { files, env })
}

/// Package roots of the project at `root`, each made canonical with `to_canonical`.
///
/// First from `cargo metadata --offline`, filtered to `platforms` (the host and the target):
/// everything a build for them used is on disk. That fails after a plain `cargo build` on a
/// fresh machine, because metadata also wants the dev-dependencies, which the build never
/// downloaded; then the roots come from what is certain without them: the workspace members
/// (`cargo metadata --no-deps`) and each registry package of `Cargo.lock` whose extracted
/// source is in `CARGO_HOME`. A package named by neither makes its relative checks incomplete
/// (stale on restore), never wrong.
pub fn package_roots(
    root: &Path,
    platforms: &[&str],
    to_canonical: impl Fn(&Path) -> PathBuf,
) -> PackageRoots {
    let mut roots = PackageRoots::new();
    let mut add = |name: &str, dir: &Path| {
        let list = roots.entry(name.to_owned()).or_default();
        let dir = to_canonical(dir);
        if !list.contains(&dir) {
            list.push(dir);
        }
    };
    let mut full = vec!["--offline"];
    for platform in platforms {
        full.extend(["--filter-platform", platform]);
    }
    match metadata_packages(root, &full) {
        Ok(packages) => {
            for (name, dir) in packages {
                add(&name, &dir);
            }
            return roots;
        }
        Err(why) => tracing::info!(
            "cargo metadata --offline failed in {} ({why}); package roots come from the workspace and Cargo.lock",
            root.display()
        ),
    }
    match metadata_packages(root, &["--offline", "--no-deps"]) {
        Ok(packages) => {
            for (name, dir) in packages {
                add(&name, &dir);
            }
        }
        Err(why) => tracing::warn!(
            "cargo metadata failed in {} ({why}); the snapshot's units with package-relative inputs will restore stale",
            root.display()
        ),
    }
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let sources = crate::inception::cargo_home()
        .map(|h| h.join("registry/src"))
        .and_then(|d| std::fs::read_dir(d).ok())
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    for (name, version) in registry_packages(&lock) {
        let found: Vec<PathBuf> = sources
            .iter()
            .map(|s| s.join(format!("{name}-{version}")))
            .filter(|d| d.join("Cargo.toml").is_file())
            .collect();
        if let [one] = found.as_slice() {
            add(&name, one);
        }
    }
    roots
}

/// `(name, manifest directory)` of every package `cargo metadata ARGS` lists.
fn metadata_packages(root: &Path, args: &[&str]) -> Result<Vec<(String, PathBuf)>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .args(args)
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(stderr.trim().lines().next().unwrap_or("").to_owned());
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(meta
        .get("packages")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|pkg| {
            let name = pkg.get("name")?.as_str()?;
            let manifest = pkg.get("manifest_path")?.as_str()?;
            Some((name.to_owned(), Path::new(manifest).parent()?.to_owned()))
        })
        .collect())
}

/// `(name, version)` of each package of a `Cargo.lock` that comes from a registry. Only the
/// few keys Cargo writes one per line are read; anything else is skipped.
fn registry_packages(lock: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut name, mut version, mut registry) = (None, None, false);
    let value = |line: &str, key: &str| -> Option<String> {
        let rest = line
            .strip_prefix(key)?
            .trim_start()
            .strip_prefix('=')?
            .trim();
        Some(rest.strip_prefix('"')?.strip_suffix('"')?.to_owned())
    };
    for line in lock.lines().chain(std::iter::once("[[package]]")) {
        let line = line.trim();
        if line.starts_with('[') {
            if let (Some(n), Some(v), true) = (name.take(), version.take(), registry) {
                out.push((n, v));
            }
            registry = false;
        } else if let Some(n) = value(line, "name") {
            name = Some(n);
        } else if let Some(v) = value(line, "version") {
            version = Some(v);
        } else if let Some(s) = value(line, "source") {
            registry = s.starts_with("registry+") || s.starts_with("sparse+");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(files: &[(u8, &str)]) -> Vec<u8> {
        let mut b = vec![1, 0, 0, 0, 0xff, 1];
        b.extend((files.len() as u32).to_le_bytes());
        for (kind, path) in files {
            b.push(*kind);
            b.extend((path.len() as u32).to_le_bytes());
            b.extend(path.as_bytes());
            b.push(0);
        }
        b.extend(0u32.to_le_bytes());
        b
    }

    #[test]
    fn registry_packages_come_from_the_lockfile() {
        let lock = r#"version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["itoa"]

[[package]]
name = "itoa"
version = "1.0.18"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "00"

[[package]]
name = "gitdep"
version = "0.2.0"
source = "git+https://example.invalid/x#abc"
"#;
        assert_eq!(
            registry_packages(lock),
            [("itoa".to_owned(), "1.0.18".to_owned())]
        );
    }

    #[test]
    fn encoded_dep_info_round_trips_and_rejects_other_versions() {
        let bytes = encode(&[(1, "debug/build/x/out/a.rs"), (0, "src/main.rs")]);
        assert_eq!(
            parse_encoded_dep_info(&bytes).unwrap(),
            vec![
                (
                    PathKind::TargetRootRelative,
                    "debug/build/x/out/a.rs".into()
                ),
                (PathKind::PackageRootRelative, "src/main.rs".into()),
            ]
        );
        let mut v2 = bytes.clone();
        v2[5] = 2;
        assert_eq!(parse_encoded_dep_info(&v2), None);
        assert_eq!(parse_encoded_dep_info(&bytes[..12]), None);
    }

    #[test]
    fn checks_come_from_fingerprints_with_package_roots() {
        let t = tempfile::tempdir().unwrap();
        let unit = t.path().join("debug/.fingerprint/app-0123456789abcdef");
        std::fs::create_dir_all(&unit).unwrap();
        std::fs::write(
            unit.join("dep-bin-app"),
            encode(&[(0, "src/main.rs"), (0, "/abs/shared.rs")]),
        )
        .unwrap();
        std::fs::write(
            unit.join("bin-app.json"),
            r#"{"local":[{"CheckDepInfo":{"dep_info":"debug/.fingerprint/app-0123456789abcdef/dep-bin-app","checksum":false}}]}"#,
        )
        .unwrap();
        std::fs::write(
            unit.join("run-build-script-build-script-build.json"),
            r#"{"local":[{"RerunIfChanged":{"output":"debug/build/app-0123456789abcdef/output","paths":["build.rs"]}},{"RerunIfEnvChanged":{"var":"X","val":null}}]}"#,
        )
        .unwrap();
        let roots = PackageRoots::from([("app".into(), vec!["/ws/app".into()])]);
        let checks = checks(t.path(), &roots);
        assert_eq!(checks.len(), 2);
        assert_eq!(
            checks[0].reference,
            "debug/.fingerprint/app-0123456789abcdef/dep-bin-app"
        );
        assert_eq!(checks[0].sources, ["/abs/shared.rs", "/ws/app/src/main.rs"]);
        assert!(checks[0].complete);
        assert_eq!(checks[1].sources, ["/ws/app/build.rs"]);
        // Without a root, relative sources cannot be named: the check is incomplete.
        let unknown = super::checks(t.path(), &PackageRoots::new());
        assert!(unknown.iter().all(|c| !c.complete));
    }
}
