//! `velo audit` end to end: the build traced and projected ([`crate::trace`]), the target
//! directory scanned ([`crate::scan`]), and the two joined into one report ([`super::build`]).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use velo_tracer::command::Outcome;

use crate::inception;
use crate::trace::{self, Choice};

/// What to audit.
#[derive(Clone, Debug)]
pub struct Request {
    pub backend: Choice,
    /// Scan an existing target directory; run no build.
    pub no_build: bool,
    /// The build command [default: `cargo build`].
    pub command: Vec<OsString>,
    /// The target directory, relative to the working directory [default: `<project>/target`].
    pub target_dir: Option<PathBuf>,
    /// Physical roots to search for [default: [`crate::scan::default_roots`]].
    pub roots: Vec<PathBuf>,
    /// Accepted findings' fingerprints.
    pub baseline: BTreeSet<String>,
}

/// The report, and how the build ended when it did not succeed.
pub struct Audited {
    pub report: super::Report,
    pub build_failed: Option<Outcome>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--no-build and a build command contradict each other: drop one")]
    NoBuildWithCommand,
    #[error(transparent)]
    Inception(#[from] inception::Error),
    #[error(transparent)]
    Trace(#[from] trace::Error),
    #[error("scanning {}: {source}", .target.display())]
    Scan {
        target: PathBuf,
        source: crate::scan::Error,
    },
}

/// Runs the audit `req` asks for; `note` gets lines for the user as they happen.
pub fn run(req: &Request, note: &dyn Fn(&str)) -> Result<Audited, Error> {
    if req.no_build && !req.command.is_empty() {
        return Err(Error::NoBuildWithCommand);
    }
    let cwd = inception::unproject(&inception::current_dir()?);
    let project = inception::find_root(None, &cwd).unwrap_or_else(|_| cwd.clone());

    let mut build_failed = None;
    let run = if req.no_build {
        None
    } else {
        let command = if req.command.is_empty() {
            vec!["cargo".into(), "build".into()]
        } else {
            req.command.clone()
        };
        let run = trace::traced(
            &trace::Request::projected(req.backend, Some(project.clone()), command),
            &|line| note(&format!("trace: {line}")),
        )?;
        if run.outcome != Outcome::Exited(0) {
            build_failed = Some(run.outcome);
        }
        Some(run)
    };

    let target = match &req.target_dir {
        Some(t) => cwd.join(t),
        None => project.join("target"),
    };
    let roots = if req.roots.is_empty() {
        crate::scan::default_roots(&project)
    } else {
        req.roots.iter().map(|r| r.display().to_string()).collect()
    };
    let scanned = if run.is_some() && !target.exists() {
        // A build command that is not cargo's (a script, a test program) may leave no target
        // directory: the trace alone is the report.
        note(&format!(
            "the build left no {}: nothing to scan",
            target.display()
        ));
        crate::scan::Report {
            target_dir: target.clone(),
            roots: roots.clone(),
            ..Default::default()
        }
    } else {
        let home_like = crate::scan::home_like(!req.roots.is_empty());
        crate::scan::scan(&target, &roots, &home_like, &|_| {}).map_err(|source| Error::Scan {
            target: target.clone(),
            source,
        })?
    };
    let exported = run
        .as_ref()
        .and_then(|r| r.shim.as_deref())
        .and_then(super::traced::exports);
    let units_project = run.as_ref().map(|r| {
        let mut physical = vec![r.projection.physical.clone()];
        if let Ok(real) = std::fs::canonicalize(&r.projection.physical)
            && real != r.projection.physical
        {
            physical.push(real);
        }
        super::units::Project {
            physical,
            canonical: Some(r.projection.canonical.clone()),
            target: std::fs::canonicalize(&target).unwrap_or_else(|_| target.clone()),
        }
    });
    let traced = run
        .as_ref()
        .zip(units_project.as_ref())
        .map(|(r, project)| super::Traced {
            events: &r.events,
            roots: &r.roots,
            project,
            exported: exported.as_ref(),
        });
    let report = super::build(&scanned, traced.as_ref(), &req.baseline);
    Ok(Audited {
        report,
        build_failed,
    })
}
