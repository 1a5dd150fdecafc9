//! The dtrace backend's platform-independent half: the D script velo runs on macOS, and the
//! parser of its output into [`Event`]s. Both are plain text, so they are built and tested on
//! Linux against recorded output (`tests/fixtures/trace/dtrace-*.txt`); only starting `dtrace`
//! itself is macOS code.
//!
//! The script prints one tab-separated line per observation, all starting with `velo`:
//!
//! ```text
//! velo  syscall  PID  PPID  TID  EXECNAME  FUNC  RET  ERRNO  PATH  [RETURNED]
//! velo  fork     PARENT  CHILD
//! velo  exec     PID  EXECNAME
//! velo  exit     PID  CODE
//! ```
//!
//! Anything else dtrace prints (its own warnings, a program's output on the same terminal) is
//! skipped. On macOS `getcwd` is not a syscall: libc asks `fcntl(fd, F_GETPATH)`, whose result
//! the script prints as the `RETURNED` column of an `fcntl` line.

use crate::event::{Event, RawPath, Syscall};

/// The syscalls the script watches, with the argument that holds the path.
pub const PROBES: &[(&str, usize)] = &[
    ("open", 0),
    ("open_nocancel", 0),
    ("openat", 1),
    ("openat_nocancel", 1),
    ("stat64", 0),
    ("lstat64", 0),
    ("fstatat64", 1),
    ("access", 0),
    ("faccessat", 1),
    ("getattrlist", 0),
    ("readlink", 0),
    ("readlinkat", 1),
    ("mkdir", 0),
    ("mkdirat", 1),
    ("rmdir", 0),
    ("unlink", 0),
    ("unlinkat", 1),
    ("rename", 0),
    ("renameat", 1),
    ("chdir", 0),
    ("chmod", 0),
    ("truncate", 0),
    ("execve", 0),
    ("posix_spawn", 1),
];

/// `fcntl` command that returns a descriptor's path (macOS `<sys/fcntl.h>`).
const F_GETPATH: u32 = 50;

/// The D script for `dtrace -s SCRIPT -c CMD` (`$target` is the command's pid).
pub fn script() -> String {
    let mut d = String::from(
        "#pragma D option quiet\n#pragma D option switchrate=10hz\n#pragma D option strsize=1024\n\n",
    );
    for (func, arg) in PROBES {
        d.push_str(&format!(
            "syscall::{func}:entry /progenyof($target)/ {{ self->path = copyinstr(arg{arg}); }}\n"
        ));
        d.push_str(&format!(
            "syscall::{func}:return /self->path != 0/ {{\n  printf(\"velo\\tsyscall\\t%d\\t%d\\t%d\\t%s\\t%s\\t%d\\t%d\\t%s\\n\", pid, ppid, tid, execname, probefunc, (int)arg0, errno, self->path);\n  self->path = 0;\n}}\n"
        ));
    }
    d.push_str(&format!(
        "syscall::fcntl:entry /progenyof($target) && arg1 == {F_GETPATH}/ {{ self->getpath = arg2; }}\n\
         syscall::fcntl:return /self->getpath != 0/ {{\n  printf(\"velo\\tsyscall\\t%d\\t%d\\t%d\\t%s\\tfcntl\\t%d\\t%d\\t\\t%s\\n\", pid, ppid, tid, execname, (int)arg0, errno, (int)arg0 == 0 ? copyinstr(self->getpath) : \"\");\n  self->getpath = 0;\n}}\n"
    ));
    d.push_str(
        "proc:::create /progenyof($target)/ { printf(\"velo\\tfork\\t%d\\t%d\\n\", pid, args[0]->pr_pid); }\n\
         proc:::exec-success /progenyof($target)/ { printf(\"velo\\texec\\t%d\\t%s\\n\", pid, execname); }\n\
         proc:::exit /progenyof($target)/ { printf(\"velo\\texit\\t%d\\t%d\\n\", pid, args[0]); }\n",
    );
    d
}

/// A line the parser could not read, with its number (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dtrace output line {line}: {reason}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

/// Parses the script's output. `velo` lines that are malformed are errors (the script and the
/// parser disagree); other lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Event>, ParseError> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.first() != Some(&"velo") {
            continue;
        }
        let err = |reason| ParseError {
            line: i + 1,
            reason,
            text: line.to_owned(),
        };
        let num = |s: &str| s.trim().parse::<i64>().map_err(|_| err("not a number"));
        let event = match fields.get(1).copied() {
            Some("syscall") if fields.len() >= 10 => {
                let (ret, errno) = (num(fields[7])?, num(fields[8])?);
                let path = fields[9].to_owned();
                let returned = fields
                    .get(10)
                    .filter(|r| !r.is_empty())
                    .map(|r| (*r).to_owned());
                let (paths, returned) = if fields[6] == "fcntl" {
                    (Vec::new(), returned)
                } else {
                    (vec![path.clone()], returned)
                };
                let resolved = paths
                    .iter()
                    .filter(|p| p.starts_with('/'))
                    .map(|p| RawPath::from(p.as_str()))
                    .collect();
                Event::Syscall(Syscall {
                    pid: num(fields[2])? as i32,
                    ppid: num(fields[3])? as i32,
                    tid: num(fields[4])? as i32,
                    exe: fields[5].to_owned(),
                    syscall: fields[6].to_owned(),
                    paths: paths.into_iter().map(RawPath::from).collect(),
                    resolved,
                    ret: Some(if ret < 0 { -errno } else { ret }),
                    returned: returned.map(RawPath::from),
                    // The D script does not record open flags.
                    writes: false,
                    // dtrace cannot see mappings cheaply; whether a process is shimmed is
                    // judged by the analysis from what it did.
                    shim: true,
                    via_shim: false,
                })
            }
            Some("fork") if fields.len() >= 4 => Event::Fork {
                parent: num(fields[2])? as i32,
                pid: num(fields[3])? as i32,
                thread: false,
            },
            Some("exec") if fields.len() >= 4 => Event::Exec {
                pid: num(fields[2])? as i32,
                exe: fields[3].to_owned(),
            },
            Some("exit") if fields.len() >= 4 => Event::Exit {
                pid: num(fields[2])? as i32,
                code: Some(num(fields[3])? as i32),
                signal: None,
            },
            _ => return Err(err("unknown or short record")),
        };
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_has_a_probe_pair_per_syscall_and_the_process_probes() {
        let d = script();
        for (func, arg) in PROBES {
            assert!(d.contains(&format!(
                "syscall::{func}:entry /progenyof($target)/ {{ self->path = copyinstr(arg{arg}); }}"
            )));
            assert!(d.contains(&format!("syscall::{func}:return")));
        }
        for probe in [
            "proc:::create",
            "proc:::exec-success",
            "proc:::exit",
            "arg1 == 50",
        ] {
            assert!(d.contains(probe), "{probe}");
        }
    }

    #[test]
    fn parses_records_skips_noise_and_reports_malformed_lines() {
        let text = "dtrace: script 'velo.d' matched 54 probes\n\
                    velo\tsyscall\t501\t500\t7001\tcargo\topen_nocancel\t-1\t2\t/vrift_workspace/Cargo.toml\n\
                    velo\tsyscall\t501\t500\t7001\tcargo\tfcntl\t0\t0\t\t/Users/a/proj\n\
                    velo\tfork\t501\t502\n\
                    velo\texec\t502\trustc\n\
                    velo\texit\t502\t0\n";
        let events = parse(text).unwrap();
        assert_eq!(events.len(), 5);
        let Event::Syscall(s) = &events[0] else {
            panic!()
        };
        assert_eq!(s.ret, Some(-2));
        assert_eq!(s.paths, [RawPath::from("/vrift_workspace/Cargo.toml")]);
        let Event::Syscall(f) = &events[1] else {
            panic!()
        };
        assert_eq!(f.returned, Some("/Users/a/proj".into()));
        assert!(f.paths.is_empty());
        let bad = parse("velo\tsyscall\tx\n").unwrap_err();
        assert_eq!(bad.line, 1);
    }
}

/// Runs `cmd` under `dtrace -q -s SCRIPT -c CMD` and parses what it prints (macOS; needs root
/// and System Integrity Protection's dtrace restrictions lifted). The command's output goes to
/// stderr so dtrace's stdout carries only the script's records.
#[cfg(target_os = "macos")]
pub fn trace(
    cmd: &crate::command::Command,
    sink: &mut dyn FnMut(Event),
) -> Result<crate::command::Outcome, std::io::Error> {
    use std::io::Write as _;
    let (path, mut file) = tempfile_script()?;
    file.write_all(script().as_bytes())?;
    drop(file);
    let line = std::iter::once(cmd.program.as_os_str())
        .chain(cmd.args.iter().skip(1).map(|a| a.as_os_str()))
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let out = std::process::Command::new("dtrace")
        .args(["-q", "-s"])
        .arg(&path)
        .arg("-c")
        .arg(line)
        .current_dir(&cmd.cwd)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .output()?;
    let _ = std::fs::remove_file(&path);
    let events = parse(&String::from_utf8_lossy(&out.stdout)).map_err(std::io::Error::other)?;
    for e in events {
        sink(e);
    }
    Ok(match out.status.code() {
        Some(c) => crate::command::Outcome::Exited(c),
        None => crate::command::Outcome::Signaled(0),
    })
}

#[cfg(target_os = "macos")]
fn tempfile_script() -> Result<(std::path::PathBuf, std::fs::File), std::io::Error> {
    let path = std::env::temp_dir().join(format!("velo-trace-{}.d", std::process::id()));
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}
