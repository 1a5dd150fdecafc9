//! Starting the command of a farm-mode or `--isolate` run, and waiting for it: the sandbox's
//! start-up, `--keep-upper`, and what to say when the sandbox cannot be set up.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::{RunDir, sandbox};
use crate::child;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--keep-upper {}: the directory must be empty", .0.display())]
    UpperNotEmpty(PathBuf),
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("an argument contains a NUL byte: {0:?}")]
    Nul(OsString),
    /// The sandbox could not be set up; `hint` names the machine's restrictions, if any.
    #[error("{source}{hint}")]
    Sandbox {
        source: sandbox::Error,
        hint: String,
    },
}

/// An `--isolate` run.
pub struct Isolated<'a> {
    pub run_dir: &'a RunDir,
    /// The merged farm, the sandbox's lower layer.
    pub farm: &'a Path,
    pub program: &'a OsString,
    pub rest: &'a [OsString],
    /// The working directory inside the sandbox.
    pub workdir: &'a Path,
    /// `--keep-upper DIR`: keep what the command writes (must be empty).
    pub keep_upper: Option<&'a Path>,
    pub net_none: bool,
}

/// Whether this machine allows the namespaces a covered farm needs (`velo doctor`).
pub fn sandbox_available() -> bool {
    crate::doctor::checks()
        .iter()
        .all(|c| c.ok || !c.needed_for_farm)
}

/// The sandbox error, with what the machine restricts (from `velo doctor`'s checks).
fn with_hint(source: sandbox::Error) -> Error {
    let failing: Vec<String> = crate::doctor::checks()
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let hint = if failing.is_empty() {
        String::new()
    } else {
        format!(
            " (this machine restricts namespaces: {})",
            failing.join("; ")
        )
    };
    Error::Sandbox { source, hint }
}

/// Runs `run`'s command in the sandbox and returns its wait status. A command that cannot be
/// started inside exits 127 (not found) or 126, as `env` and shells do, and `note` says why.
pub fn isolated(run: &Isolated<'_>, note: &dyn Fn(&str)) -> Result<ExitStatus, Error> {
    let io = |op, path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { op, path, source }
    };
    let keep_upper = match run.keep_upper {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(io("creating --keep-upper", dir))?;
            let mut entries = std::fs::read_dir(dir).map_err(io("reading --keep-upper", dir))?;
            if entries.next().is_some() {
                return Err(Error::UpperNotEmpty(dir.to_owned()));
            }
            let dir = std::fs::canonicalize(dir).map_err(io("resolving --keep-upper", dir))?;
            let work = dir.with_file_name(format!(
                ".{}.velo-work",
                dir.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            std::fs::create_dir_all(&work).map_err(io("creating", &work))?;
            Some((dir, work))
        }
        None => None,
    };
    let to_c =
        |s: &std::ffi::OsStr| CString::new(s.as_bytes()).map_err(|_| Error::Nul(s.to_owned()));
    let mut argv = vec![to_c(run.program)?];
    for a in run.rest {
        argv.push(to_c(a)?);
    }
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        if k != "PATH" {
            let mut entry = k.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            if let Ok(c) = CString::new(entry) {
                env.push(c);
            }
        }
    }
    env.push(
        CString::new(format!("PATH={}", super::SANDBOX_PATH))
            .map_err(|_| Error::Nul(super::SANDBOX_PATH.into()))?,
    );
    let spec = sandbox::Isolate {
        farm: run.farm.to_owned(),
        scratch: run.run_dir.path().to_owned(),
        keep_upper: keep_upper.clone(),
        workdir: run.workdir.to_owned(),
        argv,
        env,
        net_none: run.net_none,
    };
    let (helper, report) = sandbox::spawn_isolated(&spec).map_err(with_hint)?;
    let forwarding = child::Forwarding::start(helper);
    let outcome = sandbox::wait(helper, report);
    drop(forwarding);
    if let Some((upper, work)) = &keep_upper {
        let _ = super::remove_tree(work);
        note(&format!("what the command wrote is in {}", upper.display()));
    }
    match outcome.map_err(with_hint)? {
        sandbox::Outcome::Exited(raw) => Ok(ExitStatus::from_raw(raw)),
        sandbox::Outcome::ExecFailed(err) => {
            note(&format!(
                "cannot run {} inside the sandbox: {err}",
                run.program.to_string_lossy()
            ));
            let code = if err.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            Ok(ExitStatus::from_raw(code << 8))
        }
    }
}
