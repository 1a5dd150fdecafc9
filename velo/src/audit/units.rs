//! Which Cargo unit each traced process worked for, and what each unit read without declaring.
//!
//! # Why
//!
//! A cache keyed on declared inputs (Cargo's own freshness, sccache, kache) is only as right as
//! the declarations: a file that rustc or a build script reads but that the unit's dep-info
//! does not list can change without anything rebuilding, and a restored cache then serves a
//! stale artifact (kache#760). The tracer sees every open, so comparing what each unit opened
//! with what it declared finds these **undeclared inputs**.
//!
//! # How processes become units
//!
//! The tracer's events carry pids, forks and execs, but not argv, so units are recognised from
//! what they do:
//!
//! - a `rustc` process is the compile unit whose dep-info it writes: rustc opens
//!   `<out-dir>/<crate>-<hash>.d` for `--emit=dep-info`, and that file, read after the build,
//!   is also the unit's declaration (every source file, `include_str!` target and module);
//! - a process running `…/build/<pkg>-<hash>/build-script-*` is the run of `<pkg>`'s build
//!   script; its declarations are the `cargo:rerun-if-changed` lines in the `output` files of
//!   `<pkg>`'s run directories, or the whole package when it prints none (Cargo's default);
//! - any other process belongs to the unit of its parent: the linker under rustc, a helper
//!   program a build script runs, proc macros (they run inside rustc).
//!
//! Processes of no unit (cargo itself, a wrapper shell) keep their executable's name.
//!
//! # What counts as an input
//!
//! A successful `open`/`openat`/`openat2` of a path below the project, outside the target
//! directory, that is a regular file after the build. Paths are compared relative to the
//! project, so physical paths in events and canonical ones in dep-info meet.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use velo_tracer::event::Event;

/// One Cargo unit seen in the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// rustc compiling a crate; `dep_info` is the `.d` file it wrote.
    Compile {
        crate_name: String,
        dep_info: PathBuf,
    },
    /// A build script run of the package `package`, compiled in `script_dir`
    /// (`…/build/<pkg>-<hash>/`).
    BuildScript {
        package: String,
        script_dir: PathBuf,
    },
}

impl Unit {
    /// The name findings are attributed to, as `velo scan` names the unit's artifacts.
    pub fn crate_name(&self) -> &str {
        match self {
            Unit::Compile { crate_name, .. } => crate_name,
            Unit::BuildScript { package, .. } => package,
        }
    }
}

/// A process instance: a pid from its fork (or first sighting) to its exit.
#[derive(Debug, Default)]
struct Process {
    parent: Option<usize>,
    exe: String,
    /// Set when the process itself is a unit (rustc, a build script).
    unit: Option<usize>,
    rustc: bool,
}

/// The trace, cut into units.
#[derive(Debug, Default)]
pub struct Units {
    pub units: Vec<Unit>,
    processes: Vec<Process>,
    /// For each event index: the process instance it belongs to.
    owner: Vec<Option<usize>>,
}

/// `<name>-<16 hex digits>` → `name`.
fn strip_unit_hash(name: &str) -> Option<&str> {
    let (n, h) = name.rsplit_once('-')?;
    (h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit())).then_some(n)
}

/// `…/build/<pkg>-<hash>/build-script-<name>` → (`pkg`, the directory).
fn build_script(exe: &str) -> Option<(String, PathBuf)> {
    let path = Path::new(exe);
    let file = path.file_name()?.to_str()?;
    if !file.starts_with("build-script-") {
        return None;
    }
    let dir = path.parent()?;
    let package = strip_unit_hash(dir.file_name()?.to_str()?)?;
    (dir.parent()?.file_name()? == "build").then(|| (package.to_owned(), dir.to_owned()))
}

/// Where rustc writes dep-info under Cargo: `…/deps/<crate>-<hash>.d` or, for build
/// scripts, `…/build/<pkg>-<hash>/<name>-<hash>.d`.
fn is_dep_info(path: &Path) -> bool {
    let parent = path.parent();
    path.extension().is_some_and(|e| e == "d")
        && (parent
            .and_then(Path::file_name)
            .is_some_and(|n| n == "deps")
            || parent
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .is_some_and(|n| n == "build"))
}

fn is_open(syscall: &str) -> bool {
    matches!(syscall, "open" | "openat" | "openat2")
}

impl Units {
    /// Follows the process tree of `events` and recognises the units in it.
    pub fn assign(events: &[Event]) -> Units {
        let mut units = Units::default();
        let mut current: HashMap<i32, usize> = HashMap::new();
        let mut compile_units: HashMap<PathBuf, usize> = HashMap::new();
        let instance = |units: &mut Units, current: &mut HashMap<i32, usize>, pid: i32| {
            *current.entry(pid).or_insert_with(|| {
                units.processes.push(Process::default());
                units.processes.len() - 1
            })
        };
        for event in events {
            let owner = match event {
                Event::Fork { thread: true, .. } => None,
                Event::Fork { parent, pid, .. } => {
                    let parent = instance(&mut units, &mut current, *parent);
                    match current.get(pid) {
                        // The child's own events came first: the ptrace backend reports two
                        // processes' stops in whichever order `wait` gives them, so a child
                        // may exec (say, into rustc) before its parent's fork is seen. Adopt
                        // that instance rather than start another, which would lose its exec.
                        Some(&child) if units.processes[child].parent.is_none() => {
                            let exe = units.processes[parent].exe.clone();
                            let child = &mut units.processes[child];
                            child.parent = Some(parent);
                            if child.exe.is_empty() {
                                child.exe = exe;
                            }
                        }
                        _ => {
                            units.processes.push(Process {
                                parent: Some(parent),
                                exe: units.processes[parent].exe.clone(),
                                ..Process::default()
                            });
                            current.insert(*pid, units.processes.len() - 1);
                        }
                    }
                    None
                }
                Event::Exec { pid, exe } => {
                    let p = instance(&mut units, &mut current, *pid);
                    let process = &mut units.processes[p];
                    process.exe = exe.clone();
                    process.rustc = Path::new(exe).file_name().is_some_and(|n| n == "rustc");
                    process.unit = None;
                    if let Some((package, script_dir)) = build_script(exe) {
                        units.units.push(Unit::BuildScript {
                            package,
                            script_dir,
                        });
                        units.processes[p].unit = Some(units.units.len() - 1);
                    }
                    Some(p)
                }
                Event::Exit { pid, .. } => {
                    current.remove(pid);
                    None
                }
                Event::Syscall(s) => {
                    let p = instance(&mut units, &mut current, s.pid);
                    if units.processes[p].exe.is_empty() {
                        units.processes[p].exe = s.exe.clone();
                    }
                    // rustc's first `.d` below the target directory is its dep-info.
                    if units.processes[p].rustc
                        && units.processes[p].unit.is_none()
                        && is_open(&s.syscall)
                        && s.ret.is_none_or(|r| r >= 0)
                        && let Some(path) = s.resolved.first()
                        && is_dep_info(path.as_path())
                    {
                        let path = path.as_path().to_owned();
                        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                        let crate_name = strip_unit_hash(stem).unwrap_or(stem).to_owned();
                        let u = *compile_units.entry(path.clone()).or_insert_with(|| {
                            units.units.push(Unit::Compile {
                                crate_name,
                                dep_info: path,
                            });
                            units.units.len() - 1
                        });
                        units.processes[p].unit = Some(u);
                    }
                    Some(p)
                }
            };
            units.owner.push(owner);
        }
        units
    }

    /// The unit process instance `p` works for: its own, or its nearest ancestor's.
    fn unit_of_process(&self, mut p: usize) -> Option<usize> {
        loop {
            let process = &self.processes[p];
            if process.unit.is_some() {
                return process.unit;
            }
            p = process.parent?;
        }
    }

    /// The unit event `i` belongs to.
    pub fn unit_of_event(&self, i: usize) -> Option<usize> {
        self.owner
            .get(i)
            .copied()
            .flatten()
            .and_then(|p| self.unit_of_process(p))
    }

    /// The executable of the process of event `i`.
    pub fn exe_of_event(&self, i: usize) -> Option<&str> {
        let p = self.owner.get(i).copied().flatten()?;
        Some(self.processes[p].exe.as_str())
    }
}

/// A file a unit read but did not declare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Undeclared {
    pub crate_name: String,
    /// Relative to the project.
    pub path: String,
    /// The executable that opened it.
    pub reader: String,
    /// Whether the unit is a build-script run (the fix is a `rerun-if-changed`) rather than
    /// a compilation (the fix is `include_bytes!` or a build script that declares it).
    pub build_script: bool,
}

/// The entries of a Makefile-style dep-info file (`target: dep dep …`), unescaped. Bytes in,
/// paths out: a name that is not UTF-8 is kept as it is.
pub fn parse_dep_info(text: &[u8]) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let mut deps = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"#") || line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // The target ends at the first unescaped ": ".
        let mut rest: &[u8] = line;
        let mut at = 0;
        while let Some(i) = memchr::memmem::find(&line[at..], b": ") {
            let colon = at + i;
            if colon > 0 && line[colon - 1] == b'\\' {
                at = colon + 2;
                continue;
            }
            rest = &line[colon + 2..];
            break;
        }
        if rest.len() == line.len() && line.trim_ascii_end().ends_with(b":") {
            continue;
        }
        let mut word = Vec::new();
        let mut bytes = rest.iter().copied().peekable();
        while let Some(b) = bytes.next() {
            match b {
                b'\\' if bytes.peek() == Some(&b' ') => {
                    word.push(b' ');
                    bytes.next();
                }
                b' ' | b'\t' => {
                    if !word.is_empty() {
                        deps.push(PathBuf::from(std::ffi::OsString::from_vec(std::mem::take(
                            &mut word,
                        ))));
                    }
                }
                _ => word.push(b),
            }
        }
        if !word.is_empty() {
            deps.push(PathBuf::from(std::ffi::OsString::from_vec(word)));
        }
    }
    deps
}

/// Maps paths from events and declarations to project-relative ones.
#[derive(Debug, Clone)]
pub struct Project {
    /// The physical project root, in every spelling (as given, resolved).
    pub physical: Vec<PathBuf>,
    /// Where the project appeared in the build (`/vrift_workspace`), when projected.
    pub canonical: Option<PathBuf>,
    /// The physical target directory, whose files are outputs, not inputs.
    pub target: PathBuf,
}

impl Project {
    /// `path` relative to the project, when it lies below it and outside the target dir.
    pub fn relative(&self, path: &Path) -> Option<PathBuf> {
        let roots = self.physical.iter().chain(self.canonical.as_ref());
        for root in roots {
            if let Ok(rel) = path.strip_prefix(root) {
                let physical = self.physical[0].join(rel);
                if physical.starts_with(&self.target) {
                    return None;
                }
                return Some(rel.to_owned());
            }
        }
        None
    }

    /// The names by which project-relative `rel` can be compared: `.` and `..` removed
    /// lexically (rustc writes `src/../CHANGELOG.md` for `include_str!("../CHANGELOG.md")`),
    /// unless a `..` follows a symlinked directory, where the lexical answer is wrong; and the
    /// name with every symlink resolved, when the file exists. Two spellings of one file share
    /// at least one name.
    pub fn spellings(&self, rel: &Path) -> Vec<PathBuf> {
        let root = &self.physical[0];
        let mut out = Vec::new();
        let mut lexical = PathBuf::new();
        let mut sound = true;
        for c in rel.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    if root.join(&lexical).is_symlink() {
                        sound = false;
                        break;
                    }
                    if !lexical.pop() {
                        sound = false;
                        break;
                    }
                }
                c => lexical.push(c),
            }
        }
        if sound && !lexical.as_os_str().is_empty() {
            out.push(lexical);
        }
        if let (Ok(real), Ok(real_root)) = (
            std::fs::canonicalize(root.join(rel)),
            std::fs::canonicalize(root),
        ) && let Ok(inside) = real.strip_prefix(&real_root)
            && !out.iter().any(|p| p == inside)
        {
            out.push(inside.to_owned());
        }
        out
    }
}

/// The declared inputs of the build-script runs of `package`: the `rerun-if-changed` paths of
/// every `build/<package>-*/output` (relative to the package), or `None` when none prints
/// any, which makes Cargo watch the whole package.
fn rerun_if_changed(build_dir: &Path, package: &str) -> Option<Vec<String>> {
    let mut declared = Vec::new();
    let mut any = false;
    let Ok(dirs) = std::fs::read_dir(build_dir) else {
        return None;
    };
    for dir in dirs.flatten() {
        let name = dir.file_name();
        if strip_unit_hash(&name.to_string_lossy()) != Some(package) {
            continue;
        }
        let Ok(output) = std::fs::read_to_string(dir.path().join("output")) else {
            continue;
        };
        for line in output.lines() {
            let line = line.trim();
            let directive = line
                .strip_prefix("cargo::")
                .or_else(|| line.strip_prefix("cargo:"));
            let Some((key, value)) = directive.and_then(|d| d.split_once('=')) else {
                continue;
            };
            match key {
                "rerun-if-changed" => {
                    any = true;
                    declared.push(value.to_owned());
                }
                "rerun-if-env-changed" => any = true,
                _ => {}
            }
        }
    }
    any.then_some(declared)
}

/// The package directory of a build script, from the dep-info of its compilation: the
/// directory above the script's source that holds a `Cargo.toml`.
fn package_dir(script_dir: &Path, project: &Project) -> Option<PathBuf> {
    let d = std::fs::read_dir(script_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "d"))?;
    let text = std::fs::read(d).ok()?;
    let source = parse_dep_info(&text)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "rs"))?;
    let source = project.physical[0].join(project.relative(&source).unwrap_or(source));
    source
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("Cargo.toml").is_file())
        .map(Path::to_path_buf)
}

/// The project-relative files a unit declares.
enum Declared {
    Files(BTreeSet<PathBuf>),
    /// Files, and directories whose whole contents are declared (a build script's
    /// `rerun-if-changed`, or its whole package when it prints none).
    Prefixes(Vec<PathBuf>),
}

impl Declared {
    fn covers(&self, rel: &Path) -> bool {
        match self {
            Declared::Files(files) => files.contains(rel),
            Declared::Prefixes(prefixes) => prefixes.iter().any(|p| rel.starts_with(p)),
        }
    }
}

fn declared(unit: &Unit, project: &Project) -> Declared {
    let relative = |path: &Path| -> Option<PathBuf> {
        if path.is_absolute() {
            project.relative(path)
        } else {
            // rustc runs in the workspace root: relative dep-info entries are below it.
            Some(path.to_owned())
        }
    };
    match unit {
        Unit::Compile { dep_info, .. } => {
            let text = std::fs::read(dep_info).unwrap_or_default();
            Declared::Files(
                parse_dep_info(&text)
                    .iter()
                    .filter_map(|p| relative(p))
                    .flat_map(|p| project.spellings(&p))
                    .collect(),
            )
        }
        Unit::BuildScript {
            package,
            script_dir,
        } => {
            let package_dir = package_dir(script_dir, project)
                .and_then(|d| project.relative(&d))
                .unwrap_or_default();
            let build_dir = script_dir.parent().unwrap_or(script_dir);
            match rerun_if_changed(build_dir, package) {
                None => Declared::Prefixes(
                    project
                        .spellings(&package_dir)
                        .into_iter()
                        .chain([package_dir])
                        .collect(),
                ),
                Some(paths) => Declared::Prefixes(
                    paths
                        .iter()
                        .filter_map(|p| {
                            let path = Path::new(p);
                            if path.is_absolute() {
                                project.relative(path)
                            } else {
                                Some(package_dir.join(path))
                            }
                        })
                        .flat_map(|p| project.spellings(&p))
                        .collect(),
                ),
            }
        }
    }
}

/// The files each unit opened below the project but did not declare.
pub fn undeclared(events: &[Event], units: &Units, project: &Project) -> Vec<Undeclared> {
    let mut read: BTreeMap<(usize, PathBuf), String> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        let Event::Syscall(s) = event else { continue };
        if !is_open(&s.syscall) || s.ret.is_some_and(|r| r < 0) {
            continue;
        }
        let Some(unit) = units.unit_of_event(i) else {
            continue;
        };
        let Some(path) = s.resolved.first().or(s.paths.first()) else {
            continue;
        };
        let Some(rel) = project.relative(path.as_path()) else {
            continue;
        };
        if !project.physical[0].join(&rel).is_file() {
            continue;
        }
        let names = project.spellings(&rel);
        let Some(rel) = names.first().cloned() else {
            continue;
        };
        if rel.starts_with(".git") {
            continue;
        }
        read.entry((unit, rel))
            .or_insert_with(|| units.exe_of_event(i).unwrap_or("").to_owned());
    }
    let mut cache: HashMap<usize, Declared> = HashMap::new();
    let mut out = Vec::new();
    for ((unit, rel), reader) in read {
        let declared = cache
            .entry(unit)
            .or_insert_with(|| declared(&units.units[unit], project));
        if project
            .spellings(&rel)
            .iter()
            .any(|name| declared.covers(name))
        {
            continue;
        }
        out.push(Undeclared {
            crate_name: units.units[unit].crate_name().to_owned(),
            path: rel.display().to_string(),
            reader: Path::new(&reader)
                .file_name()
                .map_or(reader.clone(), |n| n.to_string_lossy().into_owned()),
            build_script: matches!(units.units[unit], Unit::BuildScript { .. }),
        });
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_entries_are_unescaped() {
        let text = "/t/deps/a-0123456789abcdef.d: src/lib.rs src/my\\ file.rs /x/y.txt\n\nsrc/lib.rs:\n# env-dep:CARGO_MANIFEST_DIR=/p\n";
        assert_eq!(
            parse_dep_info(text.as_bytes()),
            [
                PathBuf::from("src/lib.rs"),
                "src/my file.rs".into(),
                "/x/y.txt".into()
            ]
        );
    }

    #[test]
    fn spellings_remove_dots_and_resolve_symlinks_before_dot_dot() {
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("real/deep")).unwrap();
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("real/x.txt"), "").unwrap();
        std::fs::write(root.join("CHANGELOG.md"), "").unwrap();
        std::os::unix::fs::symlink("real/deep", root.join("linked")).unwrap();
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        std::fs::write(root.join(odd), "").unwrap();
        let project = Project {
            physical: vec![root.to_owned()],
            canonical: Some("/vrift_workspace".into()),
            target: root.join("target"),
        };
        let names = |p: &str| project.spellings(Path::new(p));
        assert_eq!(
            names("src/../CHANGELOG.md"),
            [PathBuf::from("CHANGELOG.md")]
        );
        assert_eq!(
            names("./src/./../CHANGELOG.md"),
            [PathBuf::from("CHANGELOG.md")]
        );
        // `linked/..` is `real/`, not the root: only the resolved name is given.
        assert_eq!(names("linked/../x.txt"), [PathBuf::from("real/x.txt")]);
        // Through a symlinked directory: its own name and the resolved one.
        std::fs::write(root.join("real/deep/b.txt"), "").unwrap();
        assert_eq!(
            names("linked/b.txt"),
            [PathBuf::from("linked/b.txt"), "real/deep/b.txt".into()]
        );
        // Not UTF-8: kept byte for byte, on both sides.
        let mut dep = b"/t/a.d: ".to_vec();
        dep.extend_from_slice(b"caf\xe9.txt\n");
        let parsed = parse_dep_info(&dep);
        assert_eq!(parsed, [PathBuf::from(odd)]);
        assert_eq!(project.spellings(&parsed[0]), [PathBuf::from(odd)]);
        // Above the root: no name.
        assert_eq!(names("../elsewhere"), Vec::<PathBuf>::new());
    }

    #[test]
    fn build_scripts_are_recognised_by_their_path() {
        assert_eq!(
            build_script("/p/target/debug/build/my-pkg-0123456789abcdef/build-script-build"),
            Some((
                "my-pkg".into(),
                "/p/target/debug/build/my-pkg-0123456789abcdef".into()
            ))
        );
        assert_eq!(build_script("/usr/bin/build-script-build"), None);
        assert_eq!(
            build_script("/p/target/debug/deps/app-0123456789abcdef"),
            None
        );
    }

    #[test]
    fn a_child_seen_before_its_fork_keeps_its_exec() {
        let open = |pid: i32, path: &str| {
            Event::Syscall(velo_tracer::event::Syscall {
                pid,
                tid: pid,
                ppid: 0,
                exe: String::new(),
                syscall: "openat".into(),
                paths: vec![path.into()],
                resolved: vec![path.into()],
                ret: Some(3),
                returned: None,
                writes: false,
                shim: true,
                via_shim: false,
            })
        };
        let cargo = || Event::Exec {
            pid: 10,
            exe: "/usr/bin/cargo".into(),
        };
        let rustc = || Event::Exec {
            pid: 11,
            exe: "/usr/bin/rustc".into(),
        };
        let fork = || Event::Fork {
            parent: 10,
            pid: 11,
            thread: false,
        };
        let dep_info = "/p/target/debug/deps/tables-0123456789abcdef.d";
        for (order, events) in [
            (
                "fork first",
                vec![
                    cargo(),
                    fork(),
                    rustc(),
                    open(11, "/p/a.txt"),
                    open(11, dep_info),
                ],
            ),
            (
                "exec first",
                vec![
                    cargo(),
                    rustc(),
                    open(11, "/p/a.txt"),
                    fork(),
                    open(11, dep_info),
                ],
            ),
        ] {
            let units = Units::assign(&events);
            let read = events
                .iter()
                .position(|e| matches!(e, Event::Syscall(s) if s.paths[0] == "/p/a.txt"));
            let unit = read.and_then(|i| units.unit_of_event(i));
            assert!(unit.is_some(), "{order}: the read belongs to rustc's unit");
            assert_eq!(units.units[unit.unwrap()].crate_name(), "tables", "{order}");
            assert_eq!(
                units.exe_of_event(read.unwrap()),
                Some("/usr/bin/rustc"),
                "{order}"
            );
        }
    }
}
