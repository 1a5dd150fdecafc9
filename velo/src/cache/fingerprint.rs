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
//! `Precalculated` (a registry crate's version, or a path package's newest mtime) and
//! `RerunIfEnvChanged` entries are hashed into the fingerprint itself: no file to adjust.
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
    let mut found = BTreeMap::new();
    for dir in fingerprint_dirs(target_dir) {
        let Ok(units) = std::fs::read_dir(&dir) else {
            continue;
        };
        for unit in units.flatten() {
            let unit_dir = unit.path();
            let name = unit.file_name().to_string_lossy().into_owned();
            // `<package name>-<16 hex digits>`
            let package = name.rsplit_once('-').map_or(name.as_str(), |(p, _)| p);
            let root = match roots.get(package).map(Vec::as_slice) {
                Some([one]) => Some(one.as_path()),
                _ => None,
            };
            let Ok(files) = std::fs::read_dir(&unit_dir) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "json") {
                    for check in unit_checks(target_dir, &path, root) {
                        found.insert(check.reference.clone(), check);
                    }
                }
            }
        }
    }
    found.into_values().collect()
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

fn unit_checks(target_dir: &Path, json: &Path, root: Option<&Path>) -> Vec<Check> {
    let Ok(text) = std::fs::read(json) else {
        return Vec::new();
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let Some(local) = value.get("local").and_then(|l| l.as_array()) else {
        return Vec::new();
    };
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
    Some(files)
}

/// Package roots from `cargo metadata` run in `root`, each made canonical with `to_canonical`.
/// Offline and filtered to `platforms` (the host and the target): everything a build for them
/// used is on disk, while packages of other platforms (Windows-only crates, say) never were.
/// Empty when cargo cannot tell, which makes relative checks incomplete (stale on restore),
/// never wrong.
pub fn package_roots(
    root: &Path,
    platforms: &[&str],
    to_canonical: impl Fn(&Path) -> PathBuf,
) -> PackageRoots {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["metadata", "--format-version", "1", "--offline"]);
    for platform in platforms {
        cmd.args(["--filter-platform", platform]);
    }
    let out = cmd
        .current_dir(root)
        .stdin(std::process::Stdio::null())
        .output();
    let mut roots = PackageRoots::new();
    let out = match out {
        Ok(out) if out.status.success() => out,
        other => {
            let why = match other {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(
                "cargo metadata failed in {} ({why}); the snapshot's units with package-relative inputs will restore stale",
                root.display()
            );
            return roots;
        }
    };
    let Ok(meta) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return roots;
    };
    for pkg in meta
        .get("packages")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(manifest)) = (
            pkg.get("name").and_then(|n| n.as_str()),
            pkg.get("manifest_path").and_then(|m| m.as_str()),
        ) else {
            continue;
        };
        if let Some(dir) = Path::new(manifest).parent() {
            let list = roots.entry(name.to_owned()).or_default();
            let dir = to_canonical(dir);
            if !list.contains(&dir) {
                list.push(dir);
            }
        }
    }
    roots
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
