//! Cargo's mtime fingerprint of a whole path package, and how restore makes it match.
//!
//! # The problem
//!
//! A build script that prints no `cargo:rerun-if-changed` (common in published crates) is
//! rerun by Cargo whenever *any* file of its package changes, and Cargo decides that with one
//! string hashed into the unit's fingerprint: the newest mtime among the package's files and
//! that file's name (`LocalFingerprint::Precalculated`, from `PathSource::fingerprint`). `cargo
//! doc` fingerprints every path package the same way. A clone gives every file a new mtime, so
//! in every other checkout the string differs: the build script reruns, and its library and
//! binaries after it. No mtime inside `target/` can fix that, because the comparison is against
//! a value, not against another file.
//!
//! # The rule
//!
//! At save, for each package some unit was fingerprinted this way, velo records every file of
//! the package (relative name, BLAKE3, mtime) as it is after the build, provided the file Cargo
//! named as newest is among them with exactly the time Cargo recorded. At restore, when the
//! package's files are now *the same set with byte-identical content*, velo sets each file's
//! mtime back to the recorded one; Cargo then computes the same string, and the unit is fresh
//! because the files it was built from are, byte for byte, the files on disk. This is the one
//! place velo changes the metadata of files outside `target/`: only the mtime, only of files
//! whose content it has just proven identical. Any difference (an edited, added or removed
//! file, a symlink, an unreadable file) leaves every mtime of that package alone, and Cargo
//! reruns the build script, as it would have without velo.
//!
//! The listing is Cargo's, widened: every file under the package root except `target/` at its
//! top, `.git`, nested packages (directories with their own `Cargo.toml`) and what `.gitignore`
//! leaves out inside a git repository, dotfiles included (Cargo leaves them out outside git).
//! Listing more files than Cargo only makes the rule stricter. A file Cargo lists and velo does
//! not keeps its clone mtime, which is newer, so Cargo sees a change: a miss, never a lie.
//!
//! A file edited while its mtime is being set is caught: velo sets the mtime through a
//! descriptor, then hashes the file again through it, and if the content is no longer the
//! recorded one it stamps the file with the current time, which Cargo sees as a change.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::Project;
use super::fingerprint::PackageMtime;

/// A file's content and mtime at save.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    pub blake3: String,
    pub seconds: i64,
    pub nanos: u32,
}

/// One package whose files decide a `Precalculated` fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageFiles {
    /// The package root, canonical.
    pub root: String,
    /// The units (fingerprint JSON, relative to the target directory) whose recorded newest
    /// mtime these files reproduce.
    pub units: Vec<String>,
    /// Units of this package whose recorded time the files do not reproduce (edited after the
    /// build), with why: they restore stale.
    pub other_units: Vec<(String, String)>,
    /// Every file, relative to the root.
    pub files: BTreeMap<String, Stamp>,
    /// Why restore cannot set these mtimes, when it cannot (then `files` is empty).
    pub unusable: Option<String>,
}

/// Records the files of every package some unit in `found` was fingerprinted by.
pub fn record(project: &Project, found: &[PackageMtime]) -> Vec<PackageFiles> {
    let mut by_root: BTreeMap<String, Vec<&PackageMtime>> = BTreeMap::new();
    let mut rootless = Vec::new();
    for unit in found {
        match unit.root.as_ref().and_then(|r| r.to_str()) {
            Some(root) => by_root.entry(root.to_owned()).or_default().push(unit),
            None => rootless.push(unit),
        }
    }
    for unit in rootless {
        tracing::info!(
            "{}: its package root is not known (cargo metadata named none, or several); it will restore stale",
            unit.unit
        );
    }
    by_root
        .into_par_iter()
        .map(|(root, units)| {
            let physical = project.physical(&root);
            let mut record = PackageFiles {
                root,
                units: Vec::new(),
                other_units: Vec::new(),
                files: BTreeMap::new(),
                unusable: None,
            };
            match stamp_files(&physical) {
                Ok(files) => record.files = files,
                Err(why) => {
                    record.unusable = Some(why.clone());
                    record.other_units = units
                        .iter()
                        .map(|u| (u.unit.clone(), why.clone()))
                        .collect();
                    return record;
                }
            }
            for unit in units {
                let rel = newest_relative(&record.root, &unit.newest);
                let stamp = rel.as_deref().and_then(|r| record.files.get(r));
                match stamp {
                    Some(s) if s.seconds == unit.seconds && s.nanos == unit.nanos => {
                        record.units.push(unit.unit.clone());
                    }
                    Some(_) => record.other_units.push((
                        unit.unit.clone(),
                        format!("{} changed after the unit was built", unit.newest.display()),
                    )),
                    None => record.other_units.push((
                        unit.unit.clone(),
                        format!("{} is not among the package's files", unit.newest.display()),
                    )),
                }
            }
            if record.units.is_empty() {
                record.files.clear();
                record.unusable = Some("no unit's recorded time matches the files".into());
            }
            record
        })
        .collect()
}

/// The newest file Cargo named, relative to the package root (Cargo writes it relative to its
/// source's root, which for a member is the package root, or absolute).
fn newest_relative(root: &str, newest: &Path) -> Option<String> {
    let rel = if newest.is_absolute() {
        newest.strip_prefix(root).ok()?
    } else {
        newest
    };
    rel.to_str().map(str::to_owned)
}

/// A package whose files restore will date back, or why it will not.
#[derive(Debug, Clone)]
pub struct Pin {
    pub root: PathBuf,
    pub units: Vec<String>,
    pub files: BTreeMap<String, Stamp>,
}

/// What restore will do with the snapshot's packages, given the checkout as it is now.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub pins: Vec<Pin>,
    /// Units that will restore stale, and why.
    pub stale: Vec<(String, String)>,
}

/// Compares each recorded package with the checkout: same files, same content.
pub fn plan(project: &Project, packages: &[PackageFiles]) -> Plan {
    let results: Vec<Result<Pin, Vec<(String, String)>>> = packages
        .par_iter()
        .map(|p| {
            let mut stale = p.other_units.clone();

            if p.unusable.is_some() || p.units.is_empty() {
                return Err(stale);
            }
            let physical = project.physical(&p.root);
            let why = match stamp_files(&physical) {
                Err(why) => Some(why),
                Ok(now) => difference(&p.files, &now),
            };
            match why {
                Some(why) => {
                    stale.extend(p.units.iter().map(|u| (u.clone(), why.clone())));
                    Err(stale)
                }
                // Units of the package whose time the files do not reproduce stay stale
                // beside the pinned ones: both are right.
                None => Ok(Pin {
                    root: physical,
                    units: p.units.clone(),
                    files: p.files.clone(),
                }),
            }
        })
        .collect();
    let mut plan = Plan::default();
    for (r, p) in results.into_iter().zip(packages) {
        match r {
            Ok(pin) => {
                plan.stale.extend(p.other_units.iter().cloned());
                plan.pins.push(pin);
            }
            Err(stale) => plan.stale.extend(stale),
        }
    }
    plan
}

/// The first difference between the recorded files and the files now, by content.
fn difference(then: &BTreeMap<String, Stamp>, now: &BTreeMap<String, Stamp>) -> Option<String> {
    for (name, stamp) in then {
        match now.get(name) {
            None => return Some(format!("{name} is missing")),
            Some(n) if n.blake3 != stamp.blake3 => return Some(format!("{name} changed")),
            Some(_) => {}
        }
    }
    now.keys()
        .find(|n| !then.contains_key(*n))
        .map(|n| format!("{n} is new"))
}

/// Sets every pinned file's mtime back to the recorded one. Returns the units left stale by a
/// file that changed meanwhile (it is stamped with the current time instead).
pub fn apply(pins: &[Pin]) -> Vec<(String, String)> {
    pins.par_iter()
        .filter_map(|pin| {
            let failed = pin.files.par_iter().find_map_any(|(name, stamp)| {
                set_verified(&pin.root.join(name), stamp)
                    .err()
                    .map(|e| format!("{name}: {e}"))
            })?;
            Some(
                pin.units
                    .iter()
                    .map(|u| (u.clone(), failed.clone()))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

/// Sets `path`'s mtime to `stamp`'s, then hashes it again through the same descriptor; a
/// different content gets the current time (Cargo sees a change) and an error.
fn set_verified(path: &Path, stamp: &Stamp) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| e.to_string())?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: stamp.seconds as libc::time_t,
            tv_nsec: stamp.nanos as _,
        },
    ];
    futimens(&file, &times)?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&mut file).map_err(|e| e.to_string())?;
    if hasher.finalize().to_hex().as_str() != stamp.blake3 {
        let now = libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        };
        futimens(&file, &[times[0], now])?;
        return Err("changed while its mtime was set; left with the current time".into());
    }
    Ok(())
}

fn futimens(file: &std::fs::File, times: &[libc::timespec; 2]) -> Result<(), String> {
    // SAFETY: a valid descriptor and a two-element array, as futimens requires.
    if unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

/// Every file of the package at `root` with its content hash and mtime (see the module docs
/// for which files). An error names the first file that prevents a faithful record.
fn stamp_files(root: &Path) -> Result<BTreeMap<String, Stamp>, String> {
    let names = list_files(root)?;
    names
        .into_par_iter()
        .map(|name| {
            let path = root.join(&name);
            let meta = std::fs::metadata(&path).map_err(|e| format!("{name}: {e}"))?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .ok_or_else(|| format!("{name}: no usable mtime"))?;
            let blake3 = super::hash_file(&path).ok_or_else(|| format!("{name}: unreadable"))?;
            Ok((
                name,
                Stamp {
                    blake3,
                    seconds: mtime.as_secs() as i64,
                    nanos: mtime.subsec_nanos(),
                },
            ))
        })
        .collect()
}

/// The package's files, relative to `root`, sorted.
fn list_files(root: &Path) -> Result<Vec<String>, String> {
    if !root.join("Cargo.toml").is_file() {
        return Err(format!("{}: no Cargo.toml", root.display()));
    }
    let top = root.to_owned();
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .git_ignore(true)
        .git_exclude(true)
        .parents(true)
        .require_git(true)
        .follow_links(false)
        .filter_entry(move |e| {
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            if !is_dir || e.depth() == 0 {
                return true;
            }
            let name = e.file_name();
            !(name == ".git"
                || (e.depth() == 1 && name == "target")
                || e.path().join("Cargo.toml").exists()
                || e.path() == top.join("target"))
        })
        .build();
    let mut names = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| e.to_string())?;
        let Some(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let name = rel
            .to_str()
            .ok_or_else(|| format!("{}: a name that is not UTF-8", rel.display()))?;
        if kind.is_symlink() {
            return Err(format!("{name} is a symlink"));
        }
        if !kind.is_file() {
            return Err(format!("{name} is not a regular file"));
        }
        names.push(name.to_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_package_mtimes_parse_and_versions_do_not() {
        use super::super::fingerprint::parse_package_mtime;
        assert_eq!(
            parse_package_mtime("1796624798.539999265s (Cargo.lock)"),
            Some((1796624798, 539999265, PathBuf::from("Cargo.lock")))
        );
        assert_eq!(
            parse_package_mtime("12.000000001s (/ws/a (b)/build.rs)"),
            Some((12, 1, PathBuf::from("/ws/a (b)/build.rs")))
        );
        for other in [
            "1.0.104",
            "3f1c0de",
            "12.5s (x)",
            "overridden build state with hash: 1",
        ] {
            assert_eq!(parse_package_mtime(other), None, "{other}");
        }
    }

    #[test]
    fn listing_skips_target_git_nested_packages_and_ignored_files() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for f in [
            "Cargo.toml",
            "build.rs",
            "src/lib.rs",
            ".hidden",
            "target/debug/x",
            "nested/Cargo.toml",
            "nested/src/lib.rs",
            "ignored.log",
        ] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), f).unwrap();
        }
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::write(root.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\n").unwrap();
        assert_eq!(
            list_files(root).unwrap(),
            [
                ".gitignore",
                ".hidden",
                "Cargo.toml",
                "build.rs",
                "src/lib.rs"
            ]
        );
        std::os::unix::fs::symlink("build.rs", root.join("link.rs")).unwrap();
        assert!(
            list_files(root)
                .unwrap_err()
                .contains("link.rs is a symlink")
        );
    }

    #[test]
    fn a_difference_is_named_and_an_edit_while_setting_is_caught() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("build.rs");
        std::fs::write(&path, "fn main() {}").unwrap();
        let stamp = Stamp {
            blake3: blake3::hash(b"fn main() {}").to_hex().to_string(),
            seconds: 1_000_000,
            nanos: 123_456_789,
        };
        set_verified(&path, &stamp).unwrap();
        let m = std::fs::metadata(&path).unwrap().modified().unwrap();
        let d = m.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!((d.as_secs(), d.subsec_nanos()), (1_000_000, 123_456_789));
        // Other content: the mtime becomes the current time, never the recorded one.
        std::fs::write(&path, "fn main() { edited() }").unwrap();
        assert!(set_verified(&path, &stamp).is_err());
        let m = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(m.elapsed().unwrap() < std::time::Duration::from_secs(60));

        let files = |list: &[(&str, &str)]| -> BTreeMap<String, Stamp> {
            list.iter()
                .map(|(n, h)| {
                    (
                        n.to_string(),
                        Stamp {
                            blake3: h.to_string(),
                            seconds: 0,
                            nanos: 0,
                        },
                    )
                })
                .collect()
        };
        let then = files(&[("a", "1"), ("b", "2")]);
        assert_eq!(difference(&then, &files(&[("a", "1"), ("b", "2")])), None);
        assert_eq!(
            difference(&then, &files(&[("a", "1"), ("b", "3")])).as_deref(),
            Some("b changed")
        );
        assert_eq!(
            difference(&then, &files(&[("a", "1")])).as_deref(),
            Some("b is missing")
        );
        assert_eq!(
            difference(&then, &files(&[("a", "1"), ("b", "2"), ("c", "")])).as_deref(),
            Some("c is new")
        );
    }
}
