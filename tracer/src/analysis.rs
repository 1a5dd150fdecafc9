//! Findings: what the events say about the projection.
//!
//! - **uncaught**: a path argument under a *canonical* root reached the kernel: the shim did not
//!   translate it (a raw `syscall()`, a static binary, a libc-internal call). Reported with the
//!   interception table's entry points that end in that syscall, or "raw syscall, no libc entry
//!   point" when there are none.
//! - **leak**: a syscall returned a path under a *physical* root (`getcwd`, `readlink`) and no
//!   shim hook was on the caller's stack to translate it: the program saw the physical path.
//!   Or a physical root is in a file a traced process wrote under a root ([`written_leaks`]:
//!   the files opened for writing, followed through renames, are searched after the run).
//! - **unshimmed**: a process that touched files under a root without the shim mapped (a static
//!   binary, or an environment cleared by a program the shim could not reach). The advice is
//!   link-farm mode (`velo run --mode farm`), which needs no shim.
//!
//! Findings are grouped (per executable and syscall) with counts and one example each, so a
//! build that makes the same mistake a million times yields one line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;

use serde::Serialize;
use velo_intercept::table::{self, Platform};

use crate::event::{Event, RawPath, Syscall};

/// The roots the analysis looks for.
#[derive(Debug, Clone, Default)]
pub struct Roots {
    /// Where projects appear (`/vrift_workspace`, `/cargo-home`).
    pub canonical: Vec<RawPath>,
    /// The real directories (the project, `CARGO_HOME`), in every spelling.
    pub physical: Vec<RawPath>,
}

/// `root` without trailing slashes.
fn trimmed(root: &[u8]) -> &[u8] {
    let end = root.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    root.get(..end).unwrap_or_default()
}

/// Whether `path` is `root` or lies below it, on a component boundary.
fn under(path: &[u8], root: &[u8]) -> bool {
    let root = trimmed(root);
    !root.is_empty()
        && path
            .strip_prefix(root)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

impl Roots {
    fn canonical(&self, path: &[u8]) -> bool {
        self.canonical.iter().any(|r| under(path, r))
    }
    fn physical(&self, path: &[u8]) -> bool {
        self.physical.iter().any(|r| under(path, r))
    }
    fn any(&self, path: &[u8]) -> bool {
        self.canonical(path) || self.physical(path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uncaught {
    pub exe: String,
    pub syscall: String,
    pub count: usize,
    pub example_pid: i32,
    pub example_path: String,
    /// libc functions that end in this syscall and that the shim hooks; empty for a raw
    /// syscall with no libc entry point.
    pub entry_points: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leak {
    pub exe: String,
    pub syscall: String,
    pub count: usize,
    pub example_pid: i32,
    pub example_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unshimmed {
    pub exe: String,
    pub processes: usize,
    /// File syscalls under a root.
    pub syscalls: usize,
    pub example_pid: i32,
    pub example_path: String,
    pub advice: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Events the backend could not record (the eBPF ring buffer was full); always 0 for
    /// ptrace, which stops the tracee instead.
    pub dropped: u64,
    pub events: usize,
    pub syscalls: usize,
    pub processes: usize,
    pub uncaught: usize,
    pub leaks: usize,
    pub unshimmed: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// The backend that recorded the events (set by the caller).
    pub backend: String,
    pub counts: Counts,
    pub uncaught: Vec<Uncaught>,
    pub leaks: Vec<Leak>,
    pub unshimmed: Vec<Unshimmed>,
    /// The eBPF programs' costs, when asked for (`velo trace --program-costs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<crate::backend::ProgramCost>,
}

impl Findings {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.uncaught.is_empty() && self.leaks.is_empty() && self.unshimmed.is_empty()
    }
}

/// The libc entry points of `platform` whose calls end in `syscall`.
pub fn entry_points(platform: Platform, syscall: &str) -> Vec<String> {
    table::entry_points_for(platform, syscall)
        .map(|e| e.symbol.to_owned())
        .collect()
}

/// The findings in `events`, recorded on `platform` (whose interception table names the entry
/// points of uncaught syscalls).
pub fn analyze(events: &[Event], roots: &Roots, platform: Platform) -> Findings {
    let mut analyzer = Analyzer::new(roots, platform);
    events.iter().for_each(|e| analyzer.feed(e));
    analyzer.finish()
}

/// [`analyze`] one event at a time (see [`Recorder`]).
pub struct Analyzer<'r> {
    roots: &'r Roots,
    platform: Platform,
    counts: Counts,
    uncaught: BTreeMap<(String, String), Uncaught>,
    leaks: BTreeMap<(String, String), Leak>,
    /// Per process: exe, whether the shim was ever seen, syscalls under a root, an example.
    procs: HashMap<i32, (String, bool, usize, String)>,
    pids: HashSet<i32>,
}

impl<'r> Analyzer<'r> {
    pub fn new(roots: &'r Roots, platform: Platform) -> Self {
        Self {
            roots,
            platform,
            counts: Counts::default(),
            uncaught: BTreeMap::new(),
            leaks: BTreeMap::new(),
            procs: HashMap::new(),
            pids: HashSet::new(),
        }
    }

    pub fn feed(&mut self, event: &Event) {
        let roots = self.roots;
        self.counts.events += 1;
        let Event::Syscall(s) = event else {
            if let Event::Exec { pid, .. } = event {
                // A new program: its shim state starts over.
                self.procs.remove(pid);
            }
            return;
        };
        self.counts.syscalls += 1;
        self.pids.insert(s.pid);
        if let Some(path) = s.paths.iter().find(|p| roots.canonical(p)) {
            let platform = self.platform;
            let u = self
                .uncaught
                .entry((s.exe.clone(), s.syscall.clone()))
                .or_insert_with(|| Uncaught {
                    exe: s.exe.clone(),
                    syscall: s.syscall.clone(),
                    count: 0,
                    example_pid: s.pid,
                    example_path: path.to_string(),
                    entry_points: entry_points(platform, &s.syscall),
                });
            u.count += 1;
        }
        if let Some(path) = &s.returned
            && roots.physical(path)
            && !s.via_shim
        {
            let l = self
                .leaks
                .entry((s.exe.clone(), s.syscall.clone()))
                .or_insert_with(|| Leak {
                    exe: s.exe.clone(),
                    syscall: s.syscall.clone(),
                    count: 0,
                    example_pid: s.pid,
                    example_path: path.to_string(),
                });
            l.count += 1;
        }
        let p = self
            .procs
            .entry(s.pid)
            .or_insert_with(|| (s.exe.clone(), false, 0, String::new()));
        p.1 |= s.shim;
        if let Some(path) = s.resolved.iter().chain(&s.paths).find(|p| roots.any(p)) {
            p.2 += 1;
            if p.3.is_empty() {
                p.3 = path.to_string();
            }
        }
    }

    pub fn finish(self) -> Findings {
        let mut unshimmed: BTreeMap<String, Unshimmed> = BTreeMap::new();
        // In pid order, so each group's example is its first process.
        let procs: BTreeMap<_, _> = self.procs.into_iter().collect();
        for (pid, (exe, shim, touched, example)) in procs {
            if shim || touched == 0 {
                continue;
            }
            let u = unshimmed.entry(exe.clone()).or_insert_with(|| Unshimmed {
                exe: exe.clone(),
                processes: 0,
                syscalls: 0,
                example_pid: pid,
                example_path: example,
                advice: "the shim cannot reach it (static binary or cleared environment): run it on a link farm, `velo run --mode farm`".into(),
            });
            u.processes += 1;
            u.syscalls += touched;
        }
        let mut findings = Findings {
            counts: self.counts,
            uncaught: self.uncaught.into_values().collect(),
            leaks: self.leaks.into_values().collect(),
            unshimmed: unshimmed.into_values().collect(),
            ..Findings::default()
        };
        findings.counts.processes = self.pids.len();
        findings.counts.uncaught = findings.uncaught.iter().map(|u| u.count).sum();
        findings.counts.leaks = findings.leaks.iter().map(|l| l.count).sum();
        findings.counts.unshimmed = findings.unshimmed.iter().map(|u| u.processes).sum();
        findings
    }
}

/// The events of a run, kept in order and analyzed while the command runs, whenever the reader
/// has nothing more urgent to do ([`Recorder::catch_up`]): a `find /usr` gives 60,000 events,
/// whose analysis took 22 ms after the command had ended. Analyzing each event as it arrives
/// slowed the eBPF reader enough to let a 100,000-stat burst overflow the ring buffer.
pub struct Recorder<'r> {
    events: Vec<Event>,
    analyzed: usize,
    analyzer: Analyzer<'r>,
    keep: Keep,
    /// Events seen but not kept ([`Keep::Findings`]), counted into the findings at the end.
    passed: Counts,
    passed_pids: HashSet<i32>,
}

/// Which events a [`Recorder`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Every one (an event log, `velo audit`).
    All,
    /// Those a finding can come from: process events, and syscalls that name a path under a
    /// root, return one, write, or rename. A `find /usr` of 60,000 stats keeps almost none, and
    /// the reader's memory stays flat.
    Findings,
}

impl<'r> Recorder<'r> {
    pub fn new(roots: &'r Roots, platform: Platform, keep: Keep) -> Self {
        Self {
            events: Vec::new(),
            analyzed: 0,
            analyzer: Analyzer::new(roots, platform),
            keep,
            passed: Counts::default(),
            passed_pids: HashSet::new(),
        }
    }

    pub fn push(&mut self, event: Event) {
        if self.keep == Keep::Findings
            && let Event::Syscall(s) = &event
            && !self.matters(s)
        {
            // Counted, as the analysis would count it, and dropped.
            self.passed.events += 1;
            self.passed.syscalls += 1;
            self.passed_pids.insert(s.pid);
            return;
        }
        self.events.push(event);
    }

    /// Whether a finding can come from `s` (see [`Keep::Findings`]).
    fn matters(&self, s: &Syscall) -> bool {
        let roots = self.analyzer.roots;
        s.writes
            || s.syscall.starts_with("rename")
            || s.returned.is_some()
            || s.paths.iter().chain(&s.resolved).any(|p| roots.any(p))
            // A path the tracer could not resolve may be anywhere.
            || s.resolved.len() < s.paths.len()
            || s.resolved.iter().any(|p| p.is_empty())
    }

    /// Analyzes up to `max` events not yet analyzed; whether there were any.
    pub fn catch_up(&mut self, max: usize) -> bool {
        let end = self.events.len().min(self.analyzed.saturating_add(max));
        for event in &self.events[self.analyzed..end] {
            self.analyzer.feed(event);
        }
        let any = end > self.analyzed;
        self.analyzed = end;
        any
    }

    /// The events and their findings ([`analyze_run`]'s: the leaks into written files too).
    pub fn finish(mut self) -> (Vec<Event>, Findings) {
        self.catch_up(usize::MAX);
        let roots = self.analyzer.roots;
        let mut findings = self.analyzer.finish();
        findings.counts.events += self.passed.events;
        findings.counts.syscalls += self.passed.syscalls;
        let kept: HashSet<i32> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Syscall(s) => Some(s.pid),
                _ => None,
            })
            .collect();
        findings.counts.processes += self.passed_pids.difference(&kept).count();
        let findings = add_written_leaks(findings, &self.events, roots);
        (self.events, findings)
    }
}

/// [`analyze`], and the leaks into files the run wrote ([`written_leaks`]), which reads them:
/// call it once the traced command has finished.
pub fn analyze_run(events: &[Event], roots: &Roots, platform: Platform) -> Findings {
    add_written_leaks(analyze(events, roots, platform), events, roots)
}

/// Adds [`written_leaks`] to the findings of an [`Analyzer`] fed `events`.
pub fn add_written_leaks(mut findings: Findings, events: &[Event], roots: &Roots) -> Findings {
    let written = written_leaks(events, roots);
    findings.counts.leaks += written.iter().map(|l| l.count).sum::<usize>();
    findings.leaks.extend(written);
    findings
}

/// Whether `bytes` holds `root` followed by a path-component boundary.
fn holds_root(bytes: &[u8], root: &[u8]) -> bool {
    let root = trimmed(root);
    !root.is_empty()
        && memchr::memmem::find_iter(bytes, root).any(|at| {
            bytes.get(at + root.len()).is_none_or(|&b| {
                !(b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            })
        })
}

/// Leaks into files: every file a traced process opened for writing below a root (followed
/// through renames, as rustc and linkers write a temporary and rename it), read after the run
/// and searched for the physical roots. Grouped per writing executable, one example each.
///
/// The search maps the files as they are at the end, which is what the next build, cache or
/// machine sees: a root written and then overwritten within the run is not reported.
pub fn written_leaks(events: &[Event], roots: &Roots) -> Vec<Leak> {
    // Path → (writer's exe, pid), in the order of events.
    let mut written: BTreeMap<RawPath, (String, i32)> = BTreeMap::new();
    for event in events {
        let Event::Syscall(s) = event else { continue };
        if s.ret.is_some_and(|r| r < 0) {
            continue;
        }
        let path = |i: usize| {
            s.resolved
                .get(i)
                .or(s.paths.get(i))
                .filter(|p| p.starts_with(b"/"))
        };
        if s.writes {
            if let Some(p) = path(0)
                && roots.physical(p)
            {
                written.insert(p.clone(), (s.exe.clone(), s.pid));
            }
        } else if s.syscall.starts_with("rename")
            && let (Some(from), Some(to)) = (path(0), path(1))
            && let Some(writer) = written.remove(from)
        {
            written.insert(to.clone(), writer);
        }
    }
    if written.is_empty() {
        // Not even the thread pool is started.
        return Vec::new();
    }
    // Read in parallel and memory-mapped: a build writes all of target/. A few files (a no-op
    // build rewrites its dep-info) are read here: starting the pool costs more (~0.5 ms).
    use rayon::prelude::*;
    let leaks_root = |(path, _): &(RawPath, (String, i32))| {
        let Ok(file) = std::fs::File::open(std::ffi::OsStr::from_bytes(path)) else {
            return false;
        };
        if file.metadata().is_ok_and(|m| m.len() == 0 || !m.is_file()) {
            return false;
        }
        // SAFETY: a read-only private map of a file the finished run wrote; another writer
        // can at worst make the read stale or torn, which safe code reading bytes tolerates.
        let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
            return false;
        };
        roots.physical.iter().any(|r| holds_root(&map, r))
    };
    let written: Vec<(RawPath, (String, i32))> = written.into_iter().collect();
    let leaked: Vec<(RawPath, (String, i32))> = if written.len() < 16 {
        written.into_iter().filter(leaks_root).collect()
    } else {
        written.into_par_iter().filter(leaks_root).collect()
    };
    let mut leaks: BTreeMap<String, Leak> = BTreeMap::new();
    for (path, (exe, pid)) in leaked {
        let leak = leaks.entry(exe.clone()).or_insert_with(|| Leak {
            exe,
            syscall: "write".into(),
            count: 0,
            example_pid: pid,
            example_path: path.to_string(),
        });
        leak.count += 1;
    }
    leaks.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Syscall;

    /// The canonical root and one physical project root.
    fn roots(physical: impl Into<crate::event::RawPath>) -> Roots {
        Roots {
            canonical: vec!["/vrift_workspace".into()],
            physical: vec![physical.into()],
        }
    }

    fn call(pid: i32, exe: &str, name: &str, path: &str, returned: Option<&str>) -> Event {
        Event::Syscall(Syscall {
            pid,
            tid: pid,
            ppid: 1,
            exe: exe.into(),
            syscall: name.into(),
            paths: if path.is_empty() {
                vec![]
            } else {
                vec![path.into()]
            },
            resolved: if path.is_empty() {
                vec![]
            } else {
                vec![path.into()]
            },
            ret: Some(0),
            returned: returned.map(Into::into),
            writes: false,
            shim: exe != "/bin/busybox",
            via_shim: false,
        })
    }

    #[test]
    fn the_three_findings_are_told_apart_and_grouped() {
        let roots = roots("/home/a/proj");
        let events = vec![
            call(
                10,
                "/usr/bin/raw",
                "openat",
                "/vrift_workspace/src/lib.rs",
                None,
            ),
            call(
                10,
                "/usr/bin/raw",
                "openat",
                "/vrift_workspace/src/main.rs",
                None,
            ),
            call(10, "/usr/bin/raw", "openat", "/vrift_workspace2/x", None),
            call(10, "/usr/bin/raw", "getcwd", "", Some("/home/a/proj/src")),
            call(
                11,
                "/bin/busybox",
                "newfstatat",
                "/home/a/proj/Cargo.toml",
                None,
            ),
            call(
                12,
                "/usr/bin/cargo",
                "openat",
                "/home/a/proj/Cargo.toml",
                None,
            ),
        ];
        let f = analyze(&events, &roots, Platform::Linux);
        assert_eq!(f.uncaught.len(), 1);
        assert_eq!(
            f.uncaught[0].count, 2,
            "grouped; /vrift_workspace2 is not under the root"
        );
        assert!(f.uncaught[0].entry_points.contains(&"open".to_owned()));
        assert_eq!(f.leaks.len(), 1);
        assert_eq!(f.leaks[0].syscall, "getcwd");
        assert_eq!(f.unshimmed.len(), 1);
        assert_eq!(f.unshimmed[0].exe, "/bin/busybox");
        assert_eq!(f.counts.processes, 3);
        assert!(entry_points(Platform::Linux, "no_such_syscall").is_empty());
    }

    #[test]
    fn keeping_only_what_findings_need_gives_the_same_findings() {
        let roots = roots("/home/a/proj");
        let mut events = vec![
            call(
                10,
                "/usr/bin/raw",
                "openat",
                "/vrift_workspace/src/lib.rs",
                None,
            ),
            call(10, "/usr/bin/raw", "getcwd", "", Some("/home/a/proj/src")),
            call(
                11,
                "/bin/busybox",
                "newfstatat",
                "/home/a/proj/Cargo.toml",
                None,
            ),
        ];
        for i in 0..100 {
            events.push(call(
                12,
                "/usr/bin/find",
                "newfstatat",
                &format!("/usr/lib/{i}"),
                None,
            ));
        }
        let run = |keep| {
            let mut r = Recorder::new(&roots, Platform::Linux, keep);
            for e in &events {
                r.push(e.clone());
            }
            r.finish()
        };
        let (all_events, all) = run(Keep::All);
        let (kept, some) = run(Keep::Findings);
        assert_eq!(all_events.len(), 103);
        assert_eq!(kept.len(), 3, "the stats outside every root are not kept");
        assert_eq!(some, all, "the same findings and counts");
        assert_eq!(some.counts.processes, 3);
    }

    #[test]
    fn a_root_that_is_not_utf8_still_matches_its_paths() {
        let root = &b"/home/caf\xe9/proj"[..];
        let roots = roots(root);
        let mut leak = call(10, "/usr/bin/raw", "getcwd", "", None);
        let mut lossy = call(10, "/usr/bin/raw", "getcwd", "", None);
        if let (Event::Syscall(s), Event::Syscall(t)) = (&mut leak, &mut lossy) {
            s.returned = Some([root, b"/src"].concat().into());
            // The same name after a lossy decoding: another directory, no leak.
            t.returned = Some("/home/caf\u{fffd}/proj/src".into());
        }
        let f = analyze(&[leak], &roots, Platform::Linux);
        assert_eq!(f.leaks.len(), 1);
        assert_eq!(f.leaks[0].example_path, "/home/caf\u{fffd}/proj/src");
        assert!(analyze(&[lossy], &roots, Platform::Linux).leaks.is_empty());
    }

    #[test]
    fn recorded_dtrace_output_gives_the_same_findings() {
        let text = include_str!("../../tests/fixtures/trace/dtrace-build.txt");
        let events = crate::dtrace::parse(text).unwrap();
        let roots = roots("/Users/alice/proj");
        let f = analyze(&events, &roots, Platform::MacOs);
        assert_eq!(f.uncaught.len(), 1);
        assert_eq!(
            (
                f.uncaught[0].exe.as_str(),
                f.uncaught[0].syscall.as_str(),
                f.uncaught[0].count
            ),
            ("protoc-gen", "openat", 2)
        );
        assert_eq!(f.leaks.len(), 1);
        assert_eq!(f.leaks[0].syscall, "fcntl");
        assert_eq!(f.counts.processes, 2);
    }
}
