//! One `velo run`, start to end: the blobs a remote must supply fetched, the options checked
//! against each other, the mode chosen ([`super::plan`]), the tree projected (a shim image, a
//! cached farm or a farm of copies), the command started and waited for.
//!
//! What a user should know along the way (the mode and why with `verbose`, files that were
//! copied instead of linked, a kept directory) goes to `note`, one line each.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use super::plan::{self, Asked};
use super::shim_mode as shim;
use super::{RunDir, farm, launch, layers, mirage, sandbox};
use crate::child;
use crate::manifest::{Manifest, ReadError};
use crate::store::{self, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NoManifest(String),
    #[error("no command to run: give it after --")]
    NoCommand,
    #[error(
        "--mode shim and --isolate do not combine: the sandbox's root is a farm (use --mode farm)"
    )]
    ShimIsolated,
    #[error("--at {}: the tree needs an absolute path other than / (for example /app)", .0.display())]
    AtNotAbsolute(PathBuf),
    #[error(
        "--upper is for shim mode; a farm's writes go to a private overlay layer (keep it with --isolate --keep-upper DIR)"
    )]
    UpperInFarm,
    #[error(
        "--upper needs shim mode, but {0} cannot load the shim (a static executable): drop --upper, or run a dynamically linked program"
    )]
    UpperStatic(String),
    #[error(
        "--at {}: farm mode shows the tree at its farm's path ({}); other paths need --mode shim",
        .at.display(), .farm.display()
    )]
    AtInFarm { at: PathBuf, farm: PathBuf },
    #[error("the manifests' blobs live in a store; {} is not one", .0.display())]
    NotAStore(PathBuf, #[source] store::Error),
    #[error("{op} {}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {0}")]
    Spawn(String, #[source] io::Error),
    #[error("waiting for the command")]
    Wait(#[source] io::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Manifest(#[from] ReadError),
    #[error(transparent)]
    Layers(#[from] layers::MergeError),
    #[error(transparent)]
    Remote(#[from] crate::remote::Error),
    #[error(transparent)]
    Shim(#[from] shim::Error),
    #[error(transparent)]
    Launch(#[from] launch::Error),
    #[error(transparent)]
    Farm(#[from] farm::Error),
    #[error(transparent)]
    Sandbox(#[from] sandbox::Error),
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { op, path, source }
}

/// What `velo run` was asked (see its `--help` for each option).
#[derive(Debug, Default)]
pub struct Request {
    /// `None`: the one `*.velo` file in the current directory.
    pub manifest: Option<PathBuf>,
    /// Base layers, lowest first.
    pub bases: Vec<PathBuf>,
    pub mode: Asked,
    pub isolate: bool,
    /// With `isolate`: a private network namespace with nothing up.
    pub net_none: bool,
    /// Inside the tree, relative to its root.
    pub workdir: Option<PathBuf>,
    pub at: Option<PathBuf>,
    pub upper: Option<PathBuf>,
    pub keep: bool,
    pub keep_upper: Option<PathBuf>,
    pub verbose: bool,
    /// Fetch the blobs the store lacks from this remote first.
    pub remote: Option<crate::remote::Settings>,
    /// The program and its arguments (at least the program).
    pub command: Vec<OsString>,
}

/// Runs the request's command on its tree; returns how the command ended.
pub fn execute(store_dir: &Path, req: &Request, note: &dyn Fn(&str)) -> Result<ExitStatus, Error> {
    let asked = req.mode;
    let manifest = match &req.manifest {
        Some(m) => m.clone(),
        None => plan::default_manifest(Path::new(".")).map_err(Error::NoManifest)?,
    };
    let layers: Vec<&PathBuf> = req.bases.iter().chain([&manifest]).collect();
    if req.command.is_empty() {
        return Err(Error::NoCommand);
    }
    if let Some(url) = &req.remote {
        fetch(store_dir, url, &layers, req.verbose, note)?;
    }
    if asked == Asked::Shim && req.isolate {
        return Err(Error::ShimIsolated);
    }
    if let Some(at) = &req.at
        && (!at.is_absolute() || at == Path::new("/"))
    {
        return Err(Error::AtNotAbsolute(at.clone()));
    }
    if req.upper.is_some() && (asked == Asked::Farm || req.isolate) {
        return Err(Error::UpperInFarm);
    }
    let store =
        Store::open_existing(store_dir).map_err(|e| Error::NotAStore(store_dir.to_owned(), e))?;
    if asked != Asked::Farm
        && !req.isolate
        && let Some(status) = shim_mode(&store, req, &manifest, asked, note)?
    {
        return Ok(status);
    }
    farm_mode(&store, req, &layers, asked, note)
}

/// A machine that lacks blobs pulls them (into a store created for them, if need be).
fn fetch(
    store_dir: &Path,
    settings: &crate::remote::Settings,
    layers: &[&PathBuf],
    verbose: bool,
    note: &dyn Fn(&str),
) -> Result<(), Error> {
    let store = Store::open_or_create(store_dir, store::Access::Private, "velo run --remote")?;
    let remote = crate::remote::open(settings)?;
    let url = &settings.url;
    for path in layers {
        let tree = Manifest::read(path)?;
        let id = tree.id().to_string();
        let moved = crate::remote::fetch_blobs(&store, remote.as_ref(), &tree, &id)?;
        if moved.transferred > 0 || verbose {
            note(&format!(
                "fetched {} of {} blobs of {} from {url} ({})",
                moved.transferred,
                moved.blobs,
                path.display(),
                crate::human::bytes(moved.compressed_bytes)
            ));
        }
    }
    Ok(())
}

/// Shim mode, which needs no farm: the image alone (found by the manifest's id when cached).
/// `None` when the program turns out to need a farm (a static executable, in auto mode).
fn shim_mode(
    store: &Store,
    req: &Request,
    manifest: &Path,
    asked: Asked,
    note: &dyn Fn(&str),
) -> Result<Option<ExitStatus>, Error> {
    let (program, rest) = (&req.command[0], &req.command[1..]);
    let (image, built) = shim::image(store, manifest, &req.bases)?;
    let id = image.file_stem().unwrap_or_default().to_owned();
    let farm_cache = store
        .farm_cache_dir()
        .map_err(io_error("making a place for runs of", store.root()))?;
    let at = req.at.clone().unwrap_or_else(|| farm_cache.join(&id));
    let mapped = mirage::Mapped::open(&image).map_err(io_error("opening the image", &image))?;
    let in_tree = shim::program(&mapped, &at, req.workdir.as_deref(), program);
    let plan = plan::plan(asked, false, in_tree.as_deref(), program);
    if plan.mode == plan::Mode::Farm {
        return match req.upper {
            Some(_) => Err(Error::UpperStatic(program.to_string_lossy().into_owned())),
            None => Ok(None),
        };
    }
    if req.verbose {
        note(&format!("mode shim: {plan}"));
    }
    let run_dir = RunDir::create(store, req.keep)
        .map_err(io_error("creating a run directory in", store.root()))?;
    // The default root's parent exists, so `..` of the root is a real directory, as it is for
    // a farm.
    std::fs::create_dir_all(&farm_cache).map_err(io_error("creating", &farm_cache))?;
    // The shim serves blobs as they are: none may be missing, corrupt or of another size than
    // the manifest declares.
    mapped.check_blobs(store)?;
    let spec = shim::Spec {
        at: &at,
        workdir: req.workdir.as_deref(),
        program: in_tree.unwrap_or_else(|| program.into()),
        word: program,
        rest,
        empty: &run_dir
            .tree()
            .map_err(io_error("creating a directory in", run_dir.path()))?,
        upper: req.upper.as_deref(),
        verbose: req.verbose,
    };
    let status = shim::run(store, &image, &mapped, built, spec, note)?;
    if req.keep {
        note(&format!("kept {}", run_dir.path().display()));
    }
    Ok(Some(status))
}

/// Farm mode: the merged layers as a cached farm of links covered by an overlay (or a sandbox),
/// or as private copies where namespaces are unavailable.
fn farm_mode(
    store: &Store,
    req: &Request,
    layers: &[&PathBuf],
    asked: Asked,
    note: &dyn Fn(&str),
) -> Result<ExitStatus, Error> {
    let (program, rest) = (&req.command[0], &req.command[1..]);
    let read = layers
        .iter()
        .map(|path| Manifest::read(path))
        .collect::<Result<Vec<_>, _>>()?;
    let tree = layers::merge(&read.iter().collect::<Vec<_>>())?;
    let run_dir = RunDir::create(store, req.keep)
        .map_err(io_error("creating a run directory in", store.root()))?;
    let default_at = store
        .farm_cache_dir()
        .map_err(io_error("making a place for runs of", store.root()))?
        .join(tree.id().to_string());
    if let Some(at) = req.at.as_ref().filter(|a| **a != default_at) {
        return Err(Error::AtInFarm {
            at: at.clone(),
            farm: default_at,
        });
    }
    let protected = req.isolate || launch::sandbox_available();
    // Shared with ingests, exclusive with gc: no blob disappears while a farm links to it.
    let lock = store.lock(store::LockMode::Shared)?;
    let (farm_dir, stats, in_use) = if protected {
        let farm = super::cached_farm(store, &tree)?;
        (farm.path.clone(), farm.built.clone(), Some(farm))
    } else {
        note(
            "namespaces are not available here, so the farm is made of private copies (run `velo doctor`)",
        );
        let copies = run_dir
            .tree()
            .map_err(io_error("creating a directory in", run_dir.path()))?;
        let stats = farm::materialize(store, &tree, &copies, farm::Method::Copy)?;
        (copies, Some(stats), None)
    };
    drop(lock);
    match &stats {
        Some(s) => {
            if let Some(reason) = &s.copy_reason {
                note(&format!(
                    "copied {} of {} files instead of hard-linking them: {reason}",
                    s.copied + s.reflinked,
                    s.files
                ));
            }
            if req.verbose {
                note(&format!(
                    "farm {}: {} files ({} linked, {} reflinked, {} copied), {} directories, {} symlinks",
                    farm_dir.display(),
                    s.files,
                    s.linked,
                    s.reflinked,
                    s.copied,
                    s.dirs,
                    s.symlinks
                ));
            }
        }
        None if req.verbose => note(&format!("farm {} (cached)", farm_dir.display())),
        None => {}
    }

    let inside_workdir = req.workdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    let workdir = farm_dir.join(inside_workdir.strip_prefix("/").unwrap_or(&inside_workdir));
    if req.verbose {
        let resolved = if req.isolate {
            super::resolve_program(program, Some(&farm_dir), &workdir, super::SANDBOX_PATH)
        } else {
            let path = std::env::var("PATH").unwrap_or_default();
            super::resolve_program(program, None, &workdir, &path)
        };
        let plan = plan::plan(
            if asked == Asked::Farm {
                Asked::Farm
            } else {
                Asked::Auto
            },
            req.isolate,
            resolved.as_deref(),
            program,
        );
        let chosen = if asked == Asked::Auto {
            "auto → farm"
        } else {
            "farm"
        };
        note(&format!("mode {chosen}: {plan}"));
    }

    let status = if req.isolate {
        launch::isolated(
            &launch::Isolated {
                run_dir: &run_dir,
                farm: &farm_dir,
                program,
                rest,
                workdir: &inside_workdir,
                keep_upper: req.keep_upper.as_deref(),
                net_none: req.net_none,
            },
            note,
        )?
    } else {
        let mut cmd = Command::new(program);
        cmd.args(rest).current_dir(&workdir);
        if protected {
            let upper = run_dir
                .upper()
                .map_err(io_error("creating a directory in", run_dir.path()))?;
            let work = run_dir
                .work()
                .map_err(io_error("creating a directory in", run_dir.path()))?;
            sandbox::cover_farm(&mut cmd, &farm_dir, &upper, &work, &workdir)?;
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Spawn(program.to_string_lossy().into_owned(), e))?;
        let forwarding = child::Forwarding::start(child.id() as i32);
        let status = child.wait().map_err(Error::Wait)?;
        drop(forwarding);
        status
    };
    if req.keep && req.isolate {
        // The sandbox's upper layer lived in its tmpfs; only --keep-upper keeps writes.
        note(&format!(
            "kept {} (the farm is {}; keep what an isolated command writes with --keep-upper DIR)",
            run_dir.path().display(),
            farm_dir.display()
        ));
    } else if req.keep {
        note(&format!(
            "kept {} (what the command wrote is in upper/; the farm is {})",
            run_dir.path().display(),
            farm_dir.display()
        ));
    }
    drop(run_dir);
    drop(in_use);
    Ok(status)
}
