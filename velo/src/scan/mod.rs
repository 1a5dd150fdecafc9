//! `velo scan`: which physical paths leaked into a target directory, where, and what they cost.
//!
//! # Why
//!
//! A `target/` is only reusable in another checkout if Cargo, there, computes the same
//! fingerprint inputs as here. A path in `target/` costs a rebuild only where Cargo *compares*
//! it; everywhere else it costs a debugger's detour or nothing. So every hit is classed by the
//! Cargo input it lies in, and only the inputs Cargo compares make a crate miss the cache:
//!
//! - **freshness**: a `cargo:rerun-if-changed` line of a build script's `output` (Cargo turns
//!   it into the unit's `RerunIfChanged` paths, relative to the package when they lie in it,
//!   so another checkout computes different paths: "the rerun-if-changed instructions
//!   changed"); an absolute entry of Cargo's encoded dep-info (a file outside the package,
//!   whose mtime Cargo checks, and which another checkout does not have); an environment
//!   variable's value in that dep-info (Cargo compares it); the fingerprint JSON's
//!   `rerun-if-changed` paths, `rerun-if-env-changed` values and `rustflags` (hashed in).
//! - **recorded**: Cargo keeps the path but never compares it: `root-output` (the old
//!   `OUT_DIR`, which Cargo uses to rewrite paths when the target directory moves), the other
//!   lines of `output` (`rustc-env`, `rustc-link-search`: replayed as recorded, not
//!   recomputed), any other field of the fingerprint JSON. These cost nothing.
//! - **debug-info**: DWARF (`.debug_*` sections of objects, rlib members and binaries): the
//!   debugger and backtraces point at the old checkout, but nothing rebuilds;
//! - **embedded**: the path is in code or data (`file!()` in a panic message, a baked
//!   `env!("OUT_DIR")`): the program itself carries it.
//!
//! One miss names no path at all: a unit Cargo fingerprints by its package's newest mtime
//! (a build script that prints no `rerun-if-changed`). It is fresh where mtimes travel with
//! the files (a move) and misses in every clone, unless `velo cache restore` sets the mtimes
//! back ([`crate::cache::package_mtime`]). Its verdict is [`Verdict::MissesInClone`].
//!
//! Each rule is checked against Cargo itself by the tests: build, move or clone, rebuild with
//! `cargo build -v`, and compare the crates Cargo calls `Dirty` with the verdicts.
//!
//! # How
//!
//! Files are walked in parallel and memory-mapped; every root is searched with a precompiled
//! `memchr::memmem::Finder`. A hit is attributed to a crate (from the unit directory or file
//! name: `deps/libfoo-<hash>.rlib`, `.fingerprint/foo-<hash>/`, `build/foo-<hash>/`), an artifact
//! class, and, in ELF files, the section containing it (goblin; `.rlib` archives are searched
//! member by member). Files whose name tells nothing are searched as "other".
//!
//! A *home-like* root (`$HOME`) is the parent of many unrelated paths, and documentation text
//! names it too (`Utf8Path::new("/root/secret_file.txt")` in a crate's `.rmeta`). A hit of such
//! a root counts only when it ends there (the value itself) or when the first component after
//! it exists (`$HOME/.cargo`, `$HOME/src`), that is, when it could be a path of this build.

mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

pub use text::text;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: not a directory (give a Cargo target directory, such as ./target)", .0.display())]
    NotADirectory(PathBuf),
    #[error("no root to look for: pass --root PATH")]
    NoRoots,
}

/// Where a finding lies and what Cargo does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    Freshness,
    DebugInfo,
    Embedded,
    /// Kept by Cargo, never compared: costs nothing.
    Recorded,
}

/// Whether a crate's artifacts can be reused in another checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nothing Cargo compares differs in another checkout.
    Reusable,
    /// Fresh where mtimes travel with the files (a move, `cp -a`); dirty in a clone, unless
    /// `velo cargo` / `velo cache restore` sets the package's mtimes back.
    MissesInClone,
    /// A fingerprint input Cargo compares names this checkout: dirty anywhere else.
    WillMiss,
}

/// What kind of artifact the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Artifact {
    BuildScriptOutput,
    RootOutput,
    FingerprintDepInfo,
    FingerprintJson,
    DepInfo,
    Elf,
    /// A Mach-O object, dylib or executable (macOS builds; `.o` members of rlibs).
    MachO,
    Rlib,
    Rmeta,
    Incremental,
    Other,
}

/// One root found in one place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub crate_name: String,
    pub class: Class,
    pub artifact: Artifact,
    /// Relative to the target directory; `archive(member)` inside an rlib.
    pub file: String,
    /// The ELF section, when the file is ELF.
    pub section: Option<String>,
    pub offset: u64,
    pub root: String,
}

/// A unit Cargo fingerprints by its package's newest mtime.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct MtimeFingerprint {
    pub crate_name: String,
    /// The unit's fingerprint JSON, relative to the target directory.
    pub unit: String,
    /// The file Cargo found newest, as Cargo wrote it.
    pub newest: String,
}

/// Per crate: the verdict, the Cargo input behind it, the fix, and how many findings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrateSummary {
    pub crate_name: String,
    pub verdict: Verdict,
    /// `verdict == WillMiss`.
    pub will_miss_cache: bool,
    pub freshness: usize,
    pub debug_info: usize,
    pub embedded: usize,
    pub recorded: usize,
    /// The Cargo fingerprint input that changes in another checkout, with where it is.
    pub reason: Option<String>,
    /// What removes the miss.
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub target_dir: PathBuf,
    pub roots: Vec<String>,
    pub files: usize,
    pub bytes: u64,
    pub crates: Vec<CrateSummary>,
    pub findings: Vec<Finding>,
    pub mtime_fingerprints: Vec<MtimeFingerprint>,
}

/// The crate a file belongs to, from Cargo's layout.
fn crate_of(rel: &Path) -> String {
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    let strip_hash = |name: &str| -> String {
        match name.rsplit_once('-') {
            Some((n, h)) if h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()) => n.into(),
            _ => name.into(),
        }
    };
    for (i, part) in parts.iter().enumerate() {
        match *part {
            ".fingerprint" | "build" if i + 1 < parts.len() => {
                return strip_hash(parts[i + 1]);
            }
            // `incremental/<crate>-<base-32 hash>/`
            "incremental" if i + 1 < parts.len() => {
                let dir = parts[i + 1];
                return dir.rsplit_once('-').map_or(dir, |(n, _)| n).into();
            }
            "deps" if i + 1 < parts.len() => {
                let file = parts[i + 1];
                let stem = file.split('.').next().unwrap_or(file);
                let stem = stem.strip_prefix("lib").unwrap_or(stem);
                return strip_hash(stem);
            }
            _ => {}
        }
    }
    // An uplifted artifact: `debug/app`, `debug/libcore_lib.rlib`, `debug/libmacros.so`.
    let file = parts.last().copied().unwrap_or("");
    let (stem, ext) = file.split_once('.').unwrap_or((file, ""));
    let stem = match ext {
        "rlib" | "rmeta" | "so" | "a" | "dylib" | "d" => stem.strip_prefix("lib").unwrap_or(stem),
        _ => stem,
    };
    strip_hash(stem)
}

/// Cargo's own bookkeeping at the top of the target directory, not an artifact of any crate
/// (`.rustc_info.json` caches `rustc -vV`, sysroot included).
fn is_bookkeeping(rel: &Path) -> bool {
    rel.parent().is_some_and(|p| p.as_os_str().is_empty())
        && matches!(
            rel.to_str(),
            Some(".rustc_info.json" | "CACHEDIR.TAG" | ".package-cache")
        )
}

fn artifact_of(rel: &Path, bytes: &[u8]) -> Artifact {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let in_dir = |d: &str| rel.iter().any(|c| c == d);
    if in_dir("incremental") {
        Artifact::Incremental
    } else if in_dir(".fingerprint") {
        if name.ends_with(".json") {
            Artifact::FingerprintJson
        } else {
            Artifact::FingerprintDepInfo
        }
    } else if in_dir("build") && name == "output" {
        Artifact::BuildScriptOutput
    } else if in_dir("build") && name == "root-output" {
        Artifact::RootOutput
    } else if name.ends_with(".d") {
        Artifact::DepInfo
    } else if name.ends_with(".rlib") {
        Artifact::Rlib
    } else if name.ends_with(".rmeta") {
        Artifact::Rmeta
    } else if bytes.starts_with(b"\x7fELF") {
        Artifact::Elf
    } else if is_macho(bytes) {
        Artifact::MachO
    } else {
        Artifact::Other
    }
}

/// The 64- and 32-bit Mach-O magics, little-endian as Apple's platforms write them.
fn is_macho(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xcf, 0xfa, 0xed, 0xfe]) || bytes.starts_with(&[0xce, 0xfa, 0xed, 0xfe])
}

/// Whether a hit in `section` is debug info: ELF `.debug_*`, Mach-O `__DWARF` sections, and
/// the Mach-O debug map (`N_OSO`/`N_SO` stabs name the objects and sources dsymutil and lldb
/// read).
fn is_debug_section(section: &str) -> bool {
    section.starts_with(".debug")
        || section.starts_with(".zdebug")
        || section.starts_with("__DWARF,")
        || section.contains(",__debug_")
        || section.starts_with("stab ")
}

/// What a hit in `artifact` (and `section`, for ELF) costs.
fn class_of(artifact: Artifact, section: Option<&str>) -> Class {
    match artifact {
        Artifact::FingerprintDepInfo => Class::Freshness,
        Artifact::BuildScriptOutput | Artifact::RootOutput | Artifact::FingerprintJson => {
            Class::Recorded
        }
        Artifact::Elf | Artifact::MachO | Artifact::Rlib | Artifact::Incremental
            if section.is_some_and(is_debug_section) =>
        {
            Class::DebugInfo
        }
        _ => Class::Embedded,
    }
}

/// The ELF section of `elf` holding file offset `offset`, if `elf` parses.
fn section_at(elf: &goblin::elf::Elf, offset: u64) -> Option<String> {
    elf.section_headers
        .iter()
        .find(|s| {
            s.sh_type != goblin::elf::section_header::SHT_NOBITS
                && offset >= s.sh_offset
                && offset < s.sh_offset + s.sh_size
        })
        .and_then(|s| elf.shdr_strtab.get_at(s.sh_name))
        .map(str::to_owned)
}

/// The stab types (`<mach-o/stab.h>`) that carry paths.
fn stab_name(n_type: u8) -> String {
    match n_type {
        0x64 => "N_SO".into(),
        0x66 => "N_OSO".into(),
        0x84 => "N_SOL".into(),
        0x82 => "N_BINCL".into(),
        0x3c => "N_OPT".into(),
        other => format!("0x{other:02x}"),
    }
}

/// The named regions of a Mach-O file, most specific first: stabs of the debug map
/// (`stab N_OSO`, in the string table), sections (`__TEXT,__cstring`), load commands
/// (`LC_RPATH`), the rest of the string table. Empty when the file does not parse.
fn macho_regions(bytes: &[u8]) -> Vec<(u64, u64, String)> {
    use goblin::mach::{MachO, load_command};
    let Ok(macho) = MachO::parse(bytes, 0) else {
        return Vec::new();
    };
    let mut stabs = Vec::new();
    let mut sections = Vec::new();
    let mut commands = Vec::new();
    let mut strings = Vec::new();
    for segment in &macho.segments {
        for (section, _) in segment.sections().unwrap_or_default() {
            let start = u64::from(section.offset);
            if section.size > 0 && start > 0 {
                sections.push((
                    start,
                    start + section.size,
                    format!(
                        "{},{}",
                        section.segname().unwrap_or("?"),
                        section.name().unwrap_or("?")
                    ),
                ));
            }
        }
    }
    for lc in &macho.load_commands {
        let start = lc.offset as u64;
        commands.push((
            start,
            start + u64::from(lc.command.cmdsize() as u32),
            load_command::cmd_to_str(lc.command.cmd()).to_owned(),
        ));
        if let load_command::CommandVariant::Symtab(symtab) = &lc.command {
            let base = u64::from(symtab.stroff);
            strings.push((
                base,
                base + u64::from(symtab.strsize),
                "string table".to_owned(),
            ));
            for (name, nlist) in macho.symbols.iter().flat_map(|s| s.iter().flatten()) {
                if nlist.is_stab() {
                    let at = base + u64::from(nlist.n_strx as u32);
                    stabs.push((
                        at,
                        at + name.len() as u64,
                        format!("stab {}", stab_name(nlist.n_type)),
                    ));
                }
            }
        }
    }
    stabs.extend(sections);
    stabs.extend(commands);
    stabs.extend(strings);
    stabs
}

struct Roots {
    names: Vec<String>,
    finders: Vec<memchr::memmem::Finder<'static>>,
    /// Home-like roots: a hit counts only as the whole value or before an existing component.
    home_like: Vec<bool>,
}

/// Bytes that continue a path component: a root must not be followed (or preceded) by one.
fn continues_name(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

impl Roots {
    #[cfg(test)]
    fn new(roots: &[String]) -> Roots {
        Roots::with_home_like(roots, &[])
    }

    fn with_home_like(roots: &[String], home_like: &[String]) -> Roots {
        Roots {
            names: roots.to_vec(),
            finders: roots
                .iter()
                .map(|r| memchr::memmem::Finder::new(r.as_bytes()).into_owned())
                .collect(),
            home_like: roots.iter().map(|r| home_like.contains(r)).collect(),
        }
    }

    /// Every (offset, root) in `bytes`, on path-component boundaries around the root.
    fn hits(&self, bytes: &[u8]) -> Vec<(u64, usize)> {
        let mut out = Vec::new();
        for (i, f) in self.finders.iter().enumerate() {
            let len = self.names[i].len();
            for at in f.find_iter(bytes) {
                let next = bytes.get(at + len).copied();
                // `/home/a/proj` must not match `/home/a/project`, nor `/x/home/a/proj`.
                let before = at.checked_sub(1).and_then(|b| bytes.get(b)).copied();
                if next.is_some_and(continues_name)
                    || before.is_some_and(|b| continues_name(b) || b == b'/')
                {
                    continue;
                }
                if self.home_like[i]
                    && next == Some(b'/')
                    && !self.component_exists(i, &bytes[at + len + 1..])
                {
                    continue;
                }
                out.push((at as u64, i));
            }
        }
        // A project under $HOME matches both: keep the longest root at each offset.
        out.sort_unstable_by_key(|&(at, i)| (at, std::cmp::Reverse(self.names[i].len())));
        out.dedup_by_key(|&mut (at, _)| at);
        out
    }

    /// Whether the first path component of `rest` exists under root `i`.
    fn component_exists(&self, i: usize, rest: &[u8]) -> bool {
        let end = rest
            .iter()
            .position(|&b| !(continues_name(b) || b >= 0x80))
            .unwrap_or(rest.len());
        let component = &rest[..end];
        if component.is_empty() || component == b"." || component == b".." {
            return false;
        }
        let mut path = self.names[i].as_bytes().to_vec();
        path.push(b'/');
        path.extend_from_slice(component);
        std::fs::symlink_metadata(crate::store::bytes_to_path(&path)).is_ok()
    }
}

/// The byte ranges of the strings in a fingerprint JSON that Cargo compares: the unit's
/// `rerun-if-changed` paths, `rerun-if-env-changed` values and `rustflags` (hashed into the
/// fingerprint). Found by value: each such string's first occurrence as a JSON string.
fn compared_json_strings(bytes: &[u8]) -> Option<Vec<(&'static str, std::ops::Range<usize>)>> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let mut wanted: Vec<(&'static str, String)> = Vec::new();
    for entry in value
        .get("local")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(paths) = entry
            .pointer("/RerunIfChanged/paths")
            .and_then(|p| p.as_array())
        {
            for p in paths.iter().filter_map(|p| p.as_str()) {
                wanted.push(("fingerprint rerun-if-changed path", p.to_owned()));
            }
        }
        if let Some(v) = entry
            .pointer("/RerunIfEnvChanged/val")
            .and_then(|v| v.as_str())
        {
            wanted.push(("fingerprint rerun-if-env-changed value", v.to_owned()));
        }
    }
    for flag in value
        .get("rustflags")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        if let Some(f) = flag.as_str() {
            wanted.push(("fingerprint rustflags", f.to_owned()));
        }
    }
    let mut out = Vec::new();
    for (field, text) in wanted {
        let encoded = serde_json::to_string(&text).ok()?;
        let mut from = 0;
        while let Some(i) = memchr::memmem::find(&bytes[from..], encoded.as_bytes()) {
            let start = from + i;
            out.push((field, start..start + encoded.len()));
            from = start + encoded.len();
        }
    }
    Some(out)
}

fn scan_bytes(rel: &Path, bytes: &[u8], artifact: Artifact, roots: &Roots, out: &mut Vec<Finding>) {
    let hits = roots.hits(bytes);
    if hits.is_empty() {
        return;
    }
    let crate_name = crate_of(rel);
    let file = rel.display().to_string();
    if artifact == Artifact::Rlib
        && let Ok(ar) = goblin::archive::Archive::parse(bytes)
    {
        for member in ar.members() {
            let Ok(data) = ar.extract(member, bytes) else {
                continue;
            };
            let member_artifact = if member.ends_with(".rmeta") {
                Artifact::Rmeta
            } else if data.starts_with(b"\x7fELF") {
                Artifact::Elf
            } else if is_macho(data) {
                Artifact::MachO
            } else {
                Artifact::Other
            };
            let mut inner = Vec::new();
            scan_bytes(Path::new(member), data, member_artifact, roots, &mut inner);
            for mut f in inner {
                f.file = format!("{file}({member})");
                f.crate_name = crate_name.clone();
                f.class = class_of(Artifact::Rlib, f.section.as_deref());
                f.artifact = Artifact::Rlib;
                out.push(f);
            }
        }
        return;
    }
    // Where in the file a hit lies (ELF section, Mach-O section, load command or stab, entry
    // of Cargo's encoded dep-info), and what that makes its class.
    let elf = (matches!(artifact, Artifact::Elf | Artifact::Incremental)
        && bytes.starts_with(b"\x7fELF"))
    .then(|| goblin::elf::Elf::parse(bytes).ok())
    .flatten();
    let macho = (matches!(artifact, Artifact::MachO | Artifact::Incremental) && is_macho(bytes))
        .then(|| macho_regions(bytes));
    let dep_info = (artifact == Artifact::FingerprintDepInfo)
        .then(|| crate::cache::fingerprint::encoded_dep_info(bytes))
        .flatten();
    let json = (artifact == Artifact::FingerprintJson)
        .then(|| compared_json_strings(bytes))
        .flatten();
    let place = |offset: u64| -> (Option<String>, Class) {
        let at = offset as usize;
        if let Some(elf) = &elf {
            let section = section_at(elf, offset);
            let class = class_of(artifact, section.as_deref());
            (section, class)
        } else if let Some(regions) = &macho {
            let section = regions
                .iter()
                .find(|(start, end, _)| (*start..*end).contains(&offset))
                .map(|(_, _, name)| name.clone());
            let class = class_of(Artifact::MachO, section.as_deref());
            (section, class)
        } else if let Some(info) = &dep_info {
            if let Some((_, span)) = info.files.iter().find(|(_, span)| span.contains(&at)) {
                let section = if bytes.get(span.start) == Some(&b'/') {
                    "dep-info entry (absolute: outside the package)"
                } else {
                    "dep-info entry"
                };
                (Some(section.into()), Class::Freshness)
            } else if let Some((key, _)) = info
                .env
                .iter()
                .find(|(_, v)| v.as_ref().is_some_and(|v| v.contains(&at)))
            {
                (Some(format!("dep-info env {key}")), Class::Freshness)
            } else {
                (Some("dep-info".into()), Class::Recorded)
            }
        } else if artifact == Artifact::BuildScriptOutput {
            let start = bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            let line = &bytes[start..];
            let directive = line
                .iter()
                .position(|&b| b == b'=')
                .map_or(&line[..0], |eq| &line[..eq]);
            let directive = String::from_utf8_lossy(directive).into_owned();
            let class = if matches!(
                directive.as_str(),
                "cargo:rerun-if-changed" | "cargo::rerun-if-changed"
            ) {
                Class::Freshness
            } else {
                Class::Recorded
            };
            (Some(directive).filter(|d| !d.is_empty()), class)
        } else if let Some(fields) = &json {
            match fields.iter().find(|(_, span)| span.contains(&at)) {
                Some((field, _)) => (Some((*field).to_owned()), Class::Freshness),
                None => (None, Class::Recorded),
            }
        } else {
            (None, class_of(artifact, None))
        }
    };
    for (offset, root) in hits {
        let (section, class) = place(offset);
        out.push(Finding {
            crate_name: crate_name.clone(),
            class,
            artifact,
            file: file.clone(),
            section,
            offset,
            root: roots.names[root].clone(),
        });
    }
}

/// Scans `target_dir` for `roots` (absolute paths; longest first is not required). Roots also
/// in `home_like` (`$HOME`) count only as a whole value or before a component that exists.
pub fn scan(
    target_dir: &Path,
    roots: &[String],
    home_like: &[String],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Report, Error> {
    if !target_dir.is_dir() {
        return Err(Error::NotADirectory(target_dir.to_owned()));
    }
    let roots_list: Vec<String> = roots
        .iter()
        .map(|r| r.trim_end_matches('/').to_owned())
        .filter(|r| r.len() > 1)
        .collect();
    if roots_list.is_empty() {
        return Err(Error::NoRoots);
    }
    let home_like: Vec<String> = home_like
        .iter()
        .map(|r| r.trim_end_matches('/').to_owned())
        .collect();
    let finders = Roots::with_home_like(&roots_list, &home_like);
    let files: Vec<PathBuf> = ignore::WalkBuilder::new(target_dir)
        .standard_filters(false)
        .build()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_some_and(|t| t.is_file()))
        .map(|e| e.into_path())
        .collect();
    let results: Vec<(u64, Vec<Finding>)> = files
        .par_iter()
        .map(|path| {
            let Ok(file) = std::fs::File::open(path) else {
                return (0, Vec::new());
            };
            let len = file.metadata().map_or(0, |m| m.len());
            if len == 0 {
                return (0, Vec::new());
            }
            // SAFETY: a read-only private map of a file Cargo is not writing (a concurrent
            // build may change it; the worst case is a stale or torn read, never UB in safe
            // code reading bytes).
            let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
                return (0, Vec::new());
            };
            let rel = path.strip_prefix(target_dir).unwrap_or(path);
            if is_bookkeeping(rel) {
                return (len, Vec::new());
            }
            let artifact = artifact_of(rel, &map);
            let mut found = Vec::new();
            scan_bytes(rel, &map, artifact, &finders, &mut found);
            progress(len);
            (len, found)
        })
        .collect();
    let mut report = Report {
        target_dir: target_dir.to_owned(),
        roots: roots_list,
        files: files.len(),
        ..Default::default()
    };
    for (len, found) in results {
        report.bytes += len;
        report.findings.extend(found);
    }
    report.findings.sort();
    report.mtime_fingerprints = mtime_fingerprints(target_dir);
    report.crates = summarize(&report.findings, &report.mtime_fingerprints);
    Ok(report)
}

/// Units fingerprinted by their package's newest mtime (see the module docs).
fn mtime_fingerprints(target_dir: &Path) -> Vec<MtimeFingerprint> {
    let read = crate::cache::fingerprint::read(target_dir, &Default::default());
    let mut out: Vec<MtimeFingerprint> = read
        .package_mtimes
        .into_iter()
        .map(|m| MtimeFingerprint {
            crate_name: crate_of(Path::new(&m.unit)),
            unit: m.unit,
            newest: m.newest.display().to_string(),
        })
        .collect();
    out.sort();
    out
}

/// The reason and fix of a freshness finding: the Cargo input it changes.
fn freshness_reason(f: &Finding) -> (String, String) {
    let section = f.section.as_deref().unwrap_or("");
    match (f.artifact, section) {
        (Artifact::BuildScriptOutput, _) => (
            format!(
                "rerun-if-changed path: {} prints `cargo:rerun-if-changed` with a path under {}; Cargo recomputes the unit's watched paths from it, and in another checkout they differ (\"the rerun-if-changed instructions changed\")",
                f.file, f.root
            ),
            "print the path relative to the package (`cargo:rerun-if-changed=build.rs`), or build under `velo inception` / `velo cargo`".into(),
        ),
        (_, s) if s.starts_with("dep-info env ") => (
            format!(
                "environment variable {}: rustc tracked it (env!/option_env!) with a value under {}, and Cargo compares the value on every build ({})",
                &s["dep-info env ".len()..],
                f.root,
                f.file
            ),
            "do not bake a checkout-specific variable into the crate, or give it the same value everywhere".into(),
        ),
        (Artifact::FingerprintDepInfo, _) => (
            format!(
                "dep-info path: {} lists a file under {} outside the package, by absolute path; Cargo checks its mtime, and another checkout does not have it",
                f.file, f.root
            ),
            "build under `velo inception` / `velo cargo` (the path becomes canonical), or keep the file inside the package".into(),
        ),
        (_, field) => (
            format!(
                "{field}: {} names {}, and Cargo hashes it into the fingerprint",
                f.file, f.root
            ),
            "keep checkout paths out of RUSTFLAGS and rerun-if-env-changed values, or build under `velo inception`".into(),
        ),
    }
}

/// Per crate: verdict, counts, the Cargo input behind the verdict and its fix.
fn summarize(findings: &[Finding], mtimes: &[MtimeFingerprint]) -> Vec<CrateSummary> {
    let mut crates: BTreeMap<String, CrateSummary> = BTreeMap::new();
    fn entry<'m>(
        crates: &'m mut BTreeMap<String, CrateSummary>,
        name: &str,
    ) -> &'m mut CrateSummary {
        crates
            .entry(name.to_owned())
            .or_insert_with(|| CrateSummary {
                crate_name: name.to_owned(),
                verdict: Verdict::Reusable,
                will_miss_cache: false,
                freshness: 0,
                debug_info: 0,
                embedded: 0,
                recorded: 0,
                reason: None,
                fix: None,
            })
    }
    for f in findings {
        let c = entry(&mut crates, &f.crate_name);
        match f.class {
            Class::Freshness => {
                c.freshness += 1;
                if c.verdict != Verdict::WillMiss {
                    let (reason, fix) = freshness_reason(f);
                    c.verdict = Verdict::WillMiss;
                    c.reason = Some(reason);
                    c.fix = Some(fix);
                }
            }
            Class::DebugInfo => c.debug_info += 1,
            Class::Embedded => c.embedded += 1,
            Class::Recorded => c.recorded += 1,
        }
    }
    for m in mtimes {
        let c = entry(&mut crates, &m.crate_name);
        if c.verdict == Verdict::Reusable {
            c.verdict = Verdict::MissesInClone;
            c.reason = Some(format!(
                "package mtime: the build script prints no `rerun-if-changed`, so Cargo fingerprints the whole package by its newest mtime ({}, {}); a clone gives every file a new one",
                m.newest, m.unit
            ));
            c.fix = Some(
                "print `cargo:rerun-if-changed=` for what the build script reads (at least `build.rs`), or restore with `velo cargo` / `velo cache restore`, which sets the package's mtimes back when its files are byte-identical".into(),
            );
        }
    }
    crates
        .into_values()
        .map(|mut c| {
            c.will_miss_cache = c.verdict == Verdict::WillMiss;
            c
        })
        .collect()
}

/// The physical roots a scan looks for by default: the project (as given and resolved),
/// `CARGO_HOME`, the toolchain's sysroot and `$HOME`.
pub fn default_roots(project: &std::path::Path) -> Vec<String> {
    let mut roots = vec![project.display().to_string()];
    if let Ok(real) = std::fs::canonicalize(project)
        && real != project
    {
        roots.push(real.display().to_string());
    }
    if let Some(home) = crate::inception::cargo_home() {
        roots.push(home.display().to_string());
    }
    if let Ok(out) = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        && out.status.success()
    {
        roots.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| h.len() > 1) {
        roots.push(std::path::PathBuf::from(home).display().to_string());
    }
    roots.sort();
    roots.dedup();
    roots
}

/// The default roots that are home-like: `$HOME` holds much that is not this build, so a hit
/// counts only before a component that exists (see `velo::scan`).
pub fn home_like(explicit: bool) -> Vec<String> {
    if explicit {
        return Vec::new();
    }
    std::env::var_os("HOME")
        .filter(|h| h.len() > 1)
        .map(|h| std::path::PathBuf::from(h).display().to_string())
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `$HOME` is the parent of much that is not this build: a doc example's
    /// `/root/secret_file.txt` is not a leak; `$HOME/.cargo/…` (which exists) is.
    #[test]
    fn a_home_like_root_counts_only_before_a_component_that_exists() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().to_str().unwrap().to_owned();
        std::fs::create_dir(t.path().join(".cargo")).unwrap();
        let roots = Roots::with_home_like(std::slice::from_ref(&home), std::slice::from_ref(&home));
        let count = |text: String| roots.hits(text.as_bytes()).len();
        assert_eq!(
            count(format!("Utf8Path::new(\"{home}/secret_file.txt\")")),
            0
        );
        assert_eq!(count(format!("{home}/.cargo/registry/src/x.rs")), 1);
        assert_eq!(count(format!("HOME={home}\0")), 1, "the value itself");
        assert_eq!(
            count(format!("/mnt{home}/.cargo")),
            0,
            "inside a longer path"
        );
        assert_eq!(count(format!("{home}/../etc")), 0);
        // Other roots keep matching anything below them.
        let exact = Roots::new(std::slice::from_ref(&home));
        assert_eq!(
            exact
                .hits(format!("{home}/secret_file.txt").as_bytes())
                .len(),
            1
        );
    }

    #[test]
    fn crates_come_from_cargo_layout() {
        for (path, krate) in [
            ("debug/deps/libcore_lib-0123456789abcdef.rlib", "core_lib"),
            ("debug/deps/app-0123456789abcdef", "app"),
            (
                "debug/.fingerprint/core-lib-0123456789abcdef/dep-lib-core_lib",
                "core-lib",
            ),
            ("debug/build/app-0123456789abcdef/output", "app"),
            ("debug/incremental/app-1v30g56z38jn9/s-x/a.o", "app"),
            ("debug/app", "app"),
            ("debug/libcore_lib.rlib", "core_lib"),
            ("debug/libmacros.so", "macros"),
        ] {
            assert_eq!(crate_of(Path::new(path)), krate, "{path}");
        }
    }

    /// Cargo's encoded dep-info, parsed: a hit names the entry it lies in.
    #[test]
    fn hits_in_encoded_dep_info_name_their_entry() {
        let mut bytes = vec![1, 0, 0, 0, 0xff, 1, 2, 0, 0, 0];
        for path in ["src/lib.rs", "/home/a/proj/shared/data.txt"] {
            bytes.push(0);
            bytes.extend_from_slice(&(path.len() as u32).to_le_bytes());
            bytes.extend_from_slice(path.as_bytes());
            bytes.push(0);
        }
        let roots = Roots::new(&["/home/a/proj".into()]);
        let mut out = Vec::new();
        let rel = Path::new("debug/.fingerprint/app-0123456789abcdef/dep-lib-app");
        scan_bytes(rel, &bytes, artifact_of(rel, &bytes), &roots, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class, Class::Freshness);
        assert_eq!(out[0].crate_name, "app");
        assert_eq!(
            out[0].section.as_deref(),
            Some("dep-info entry (absolute: outside the package)")
        );
    }

    #[test]
    fn roots_match_on_boundaries_and_classes_follow_artifacts() {
        let roots = Roots::new(&["/home/a/proj".into(), "/home/a".into()]);
        let hits = roots.hits(b"x /home/a/proj/src y /home/a/project z /home/a/proj");
        // The project twice (not its longer sibling, which only $HOME matches), $HOME once.
        assert_eq!(hits.iter().filter(|(_, r)| *r == 0).count(), 2);
        assert_eq!(hits.iter().filter(|(_, r)| *r == 1).count(), 1);
        // Only a build script's rerun-if-changed lines are compared; the file as a whole is
        // kept, not compared (`place` tells the lines apart).
        assert_eq!(class_of(Artifact::BuildScriptOutput, None), Class::Recorded);
        assert_eq!(class_of(Artifact::RootOutput, None), Class::Recorded);
        let mut out = Vec::new();
        let output =
            b"cargo:rustc-env=D=/home/a/proj/x\ncargo:rerun-if-changed=/home/a/proj/build.rs\n";
        let rel = Path::new("debug/build/app-0123456789abcdef/output");
        scan_bytes(rel, output, artifact_of(rel, output), &roots, &mut out);
        let classes: Vec<_> = out.iter().map(|f| (f.class, f.section.clone())).collect();
        assert_eq!(
            classes,
            [
                (Class::Recorded, Some("cargo:rustc-env".into())),
                (Class::Freshness, Some("cargo:rerun-if-changed".into()))
            ]
        );
        assert_eq!(
            class_of(Artifact::Elf, Some(".debug_line")),
            Class::DebugInfo
        );
        assert_eq!(class_of(Artifact::Elf, Some(".rodata")), Class::Embedded);
    }
}
