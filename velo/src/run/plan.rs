//! Which mode a run uses, and why: the decision `velo run --mode auto` makes, typed, so the CLI
//! only words it.
//!
//! A dynamically linked program (or a script whose interpreter is one) loads the shim, so it
//! runs in shim mode, served from the store with nothing on disk. Anything the shim cannot reach
//! (a static ELF, a script for a static interpreter, something not found before the run) runs
//! on a link farm; so does everything under `--isolate`, whose root is a farm.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::exe::{self, Executable};

/// How the tree is presented to the command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Served from the store by the shim (docs/modes.md).
    Shim,
    /// A link farm covered by an overlay, or the root of the `--isolate` sandbox.
    Farm,
}

/// Why a mode was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `--mode shim` or `--mode farm`.
    Asked,
    Isolate,
    Dynamic {
        interpreter: String,
    },
    ScriptForDynamic {
        interpreter: String,
    },
    Static,
    /// A script whose interpreter the shim cannot reach.
    ScriptForOther {
        interpreter: String,
    },
    NotAnElf,
    /// The program was not found before the run: the kernel decides, on a farm.
    NotFound,
}

/// A mode and its reason, for `program` (its word, for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub mode: Mode,
    pub reason: Reason,
    pub program: String,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = &self.program;
        match &self.reason {
            Reason::Asked => match self.mode {
                Mode::Shim => f.write_str("--mode shim"),
                Mode::Farm => f.write_str("--mode farm"),
            },
            Reason::Isolate => write!(f, "--isolate runs on a farm"),
            Reason::Dynamic { interpreter } => write!(
                f,
                "{name} is dynamically linked ({interpreter}): the shim serves the tree from the store"
            ),
            Reason::ScriptForDynamic { interpreter } => write!(
                f,
                "{name} is a script for {interpreter}, which is dynamically linked: the shim serves the tree"
            ),
            Reason::Static => write!(
                f,
                "{name} is a static ELF (no interpreter): the shim cannot reach it"
            ),
            Reason::ScriptForOther { interpreter } => write!(
                f,
                "{name} is a script for {interpreter}, whose interpreter the shim cannot reach"
            ),
            Reason::NotAnElf => write!(f, "{name} is not an ELF file or script"),
            Reason::NotFound => write!(
                f,
                "{name} was not found before the run; the kernel will decide"
            ),
        }
    }
}

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Asked {
    #[default]
    Auto,
    Shim,
    Farm,
}

/// The plan for running `program`: `in_tree` is the real file behind it when it names a file
/// of the tree; otherwise it is looked up along `$PATH`.
pub fn plan(asked: Asked, isolate: bool, in_tree: Option<&Path>, program: &OsStr) -> Plan {
    let plan = |mode, reason| Plan {
        mode,
        reason,
        program: program.to_string_lossy().into_owned(),
    };
    match (asked, isolate) {
        (_, true) => return plan(Mode::Farm, Reason::Isolate),
        (Asked::Shim, _) => return plan(Mode::Shim, Reason::Asked),
        (Asked::Farm, _) => return plan(Mode::Farm, Reason::Asked),
        (Asked::Auto, false) => {}
    }
    let path: Option<PathBuf> = match in_tree {
        Some(p) => Some(p.to_owned()),
        None => {
            let search = std::env::var("PATH").unwrap_or_default();
            super::resolve_program(program, None, Path::new("."), &search)
        }
    };
    let Some(path) = path else {
        return plan(Mode::Farm, Reason::NotFound);
    };
    match exe::inspect(&path) {
        Executable::Dynamic { interpreter } => plan(Mode::Shim, Reason::Dynamic { interpreter }),
        Executable::Script { interpreter } => {
            let interp = interpreter
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            if matches!(exe::inspect(Path::new(&interp)), Executable::Dynamic { .. }) {
                plan(
                    Mode::Shim,
                    Reason::ScriptForDynamic {
                        interpreter: interp,
                    },
                )
            } else {
                plan(Mode::Farm, Reason::ScriptForOther { interpreter })
            }
        }
        Executable::Static => plan(Mode::Farm, Reason::Static),
        Executable::Unknown => plan(Mode::Farm, Reason::NotAnElf),
    }
}

/// The one `*.velo` file in `dir`, for `velo run` without `--manifest`; `Err` says what to do.
pub fn default_manifest(dir: &Path) -> Result<PathBuf, String> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("listing {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "velo") && p.is_file())
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(
            "velo run needs a manifest: pass --manifest FILE.velo, or run it in a directory holding one \
             (make one with `velo ingest DIR --output FILE.velo`)"
                .to_owned(),
        ),
        _ => Err(format!(
            "several manifests here ({}); say which with --manifest",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolate_and_asked_modes_win_and_a_static_program_gets_a_farm() {
        let sh = OsStr::new("sh");
        assert_eq!(plan(Asked::Shim, true, None, sh).mode, Mode::Farm);
        assert_eq!(plan(Asked::Shim, false, None, sh).reason, Reason::Asked);
        assert_eq!(
            plan(Asked::Auto, false, None, OsStr::new("no-such-program-here")).reason,
            Reason::NotFound
        );
        if let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists())
            && exe::inspect(busybox) == Executable::Static
        {
            let p = plan(Asked::Auto, false, Some(busybox), OsStr::new("busybox"));
            assert_eq!((p.mode, p.reason), (Mode::Farm, Reason::Static));
        }
    }
}
