//! The ptrace backend's two ways of seeing file syscalls (a seccomp listener for findings,
//! ptrace stops for an event log) must see the same calls: same processes, programs, paths and
//! returned paths. Real processes: sh, pwd, readlink, ls.

use std::collections::BTreeMap;
use std::ffi::OsString;

use velo_tracer::event::{Event, RawPath};
use velo_tracer::ptrace::{Command, Options, Outcome, trace};

/// What one run saw, in a form both modes share: per syscall event (program, call, resolved
/// paths, returned path), how many; and the programs exec'd.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    calls: BTreeMap<(String, String, Vec<RawPath>, Option<RawPath>), usize>,
    execs: Vec<String>,
    forks: usize,
}

fn run(returns: bool, dir: &std::path::Path) -> (Outcome, Seen) {
    let script = format!(
        "exec >/dev/null; cd {dir} && /bin/pwd -P && readlink /proc/self/cwd && ls {dir} && exit 3",
        dir = dir.display()
    );
    let cmd = Command {
        program: "/bin/sh".into(),
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![(OsString::from("PATH"), OsString::from("/usr/bin:/bin"))],
        cwd: std::env::temp_dir(),
    };
    let opts = Options {
        shim_file_name: "libvelo_shim.so".into(),
        returns,
    };
    let mut seen = Seen {
        calls: BTreeMap::new(),
        execs: Vec::new(),
        forks: 0,
    };
    let outcome = trace(&cmd, &opts, &mut |e| match e {
        Event::Syscall(s) => {
            assert_eq!(
                s.ret.is_some(),
                returns,
                "return values only when asked: {s:?}"
            );
            *seen
                .calls
                .entry((s.exe, s.syscall, s.resolved, s.returned))
                .or_default() += 1;
        }
        Event::Exec { exe, .. } => seen.execs.push(exe),
        Event::Fork { thread: false, .. } => seen.forks += 1,
        _ => {}
    })
    .expect("tracing works for any user");
    seen.execs.sort();
    (outcome, seen)
}

#[test]
fn the_listener_and_ptrace_stops_see_the_same_calls() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("marker"), "").unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    let (out_stops, stops) = run(true, &dir);
    let (out_listener, listener) = run(false, &dir);
    assert_eq!(out_stops, Outcome::Exited(3));
    assert_eq!(out_listener, Outcome::Exited(3));
    assert_eq!(listener, stops);

    // The returned paths the listener predicts are the kernel's.
    let dir = dir.display().to_string();
    let returned = |call: &str| {
        listener
            .calls
            .keys()
            .filter(|(_, c, _, r)| c == call && r.as_deref() == Some(dir.as_bytes()))
            .count()
    };
    assert!(returned("getcwd") >= 1, "pwd -P: {listener:#?}");
    assert!(
        returned("readlink") + returned("readlinkat") >= 1,
        "readlink /proc/self/cwd: {listener:#?}"
    );
    assert_eq!(listener.forks, 3, "three commands forked by sh");
    assert!(listener.execs.len() >= 4, "sh, pwd, readlink, ls");
}
