//! `velo run [--manifest APP.velo] [--base BASE.velo]… [--isolate] -- CMD ARGS…`

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use velo::manifest::Manifest;
use velo::run::shim_mode as shim;
use velo::run::{self, RunDir, farm, launch, layers, mirage, plan, sandbox};
use velo::store::Store;

use velo::child;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Shim for dynamically linked programs and scripts, farm for static executables (the shim
    /// cannot reach them) and for --isolate.
    Auto,
    /// A link farm: hard links into the store, covered by a private overlay.
    Farm,
    /// Serve the tree from the store through the shim, with no directory on disk (Mode B).
    Shim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Net {
    /// The host's network.
    Host,
    /// A private network namespace with only a loopback device, down.
    None,
}

/// Run a command on a manifest's tree.
///
/// The layers (--base manifests in order, then --manifest) are merged path by path, later layers
/// winning: a directory over a directory merges, anything else replaces what was there (a file
/// over a directory hides everything beneath it). The tree is materialized as a link farm (hard
/// links into the store), covered by a private overlay so that writes never reach the store, and
/// the command runs in it. Its exit status, or death by a signal, is velo's.
///
/// With --isolate the command runs in a rootless sandbox: user, mount, PID, UTS and IPC
/// namespaces, the tree as its root filesystem, a private writable layer discarded at exit, a
/// fresh /proc, a minimal /dev and a tmpfs /tmp. You are root (uid 0) inside, nobody outside.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
velo run --manifest app.velo -- ./bin/server --port 8080\n  \
velo run --isolate --base busybox.velo --manifest app.velo -- /bin/sh -c 'id -u'\n  \
velo run --keep --manifest app.velo -- make test      # keep the farm and what the command wrote")]
pub struct Args {
    /// The manifest to run [default: the one *.velo file in the current directory]
    #[arg(long, value_name = "APP.velo")]
    manifest: Option<PathBuf>,

    /// A base layer under the manifest (repeatable, lowest first).
    #[arg(long = "base", value_name = "BASE.velo")]
    bases: Vec<PathBuf>,

    /// How to project the tree.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,

    /// Run in a rootless namespace sandbox with the tree as its root filesystem.
    #[arg(long)]
    isolate: bool,

    /// With --isolate: the network (none: a private namespace with no interfaces up).
    #[arg(long, value_enum, default_value_t = Net::Host, requires = "isolate")]
    net: Net,

    /// The working directory: inside the tree (relative to its root) [default: the tree's root]
    #[arg(long, value_name = "PATH")]
    workdir: Option<PathBuf>,

    /// Where the tree appears [default: <store>/farms/cache/<manifest id>, the farm's own path,
    /// so a command sees the same paths in every mode]. Shim mode serves any absolute path; farm
    /// mode needs --at to be the default.
    #[arg(long, value_name = "PATH")]
    at: Option<PathBuf>,

    /// Shim mode: writes under the tree go to DIR (created if missing) instead of failing with
    /// EROFS. A changed file is copied there first, new files are made there, and a deletion
    /// is recorded as DIR/.velo-deleted/PATH.deleted. DIR is kept; the store is never written.
    #[arg(long, value_name = "DIR")]
    upper: Option<PathBuf>,

    /// Keep the run's directory afterwards: what the command wrote, in upper/ (the path is
    /// printed). The farm itself always stays in the store's farm cache until `velo gc --run`.
    #[arg(long)]
    keep: bool,

    /// With --isolate: keep the writable layer in DIR (created if missing, must be empty).
    #[arg(long, value_name = "DIR", requires = "isolate")]
    keep_upper: Option<PathBuf>,

    /// Say which mode was chosen and why, and how the farm was made.
    #[arg(short, long)]
    verbose: bool,

    /// Fetch blobs the store lacks from this remote before running [default: $VELO_REMOTE, if
    /// set]. Every blob is checked against its name first (docs/remote.md).
    #[arg(long, value_name = "URL")]
    remote: Option<String>,

    /// The command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

pub fn run(store_dir: &Path, args: Args) -> Result<ExitCode> {
    let manifest_path = match &args.manifest {
        Some(m) => m.clone(),
        None => plan::default_manifest(Path::new(".")).map_err(anyhow::Error::msg)?,
    };
    let store = || {
        Store::open_existing(store_dir).with_context(|| {
            format!(
                "the manifests' blobs live in a store; {} is not one",
                store_dir.display()
            )
        })
    };
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let remote_url = args
        .remote
        .clone()
        .or_else(|| std::env::var("VELO_REMOTE").ok().filter(|u| !u.is_empty()));
    if let Some(url) = remote_url {
        // A machine that lacks blobs pulls them; a new store is created for them.
        let store =
            Store::open_or_create(store_dir, velo::store::Access::Private, "velo run --remote")?;
        let remote = velo::remote::open(Some(&url))?;
        for path in args.bases.iter().chain(std::iter::once(&manifest_path)) {
            let tree = Manifest::read(path)?;
            let id = tree.id().to_string();
            let moved = velo::remote::fetch_blobs(&store, remote.as_ref(), &tree, &id)?;
            if moved.transferred > 0 || args.verbose {
                eprintln!(
                    "velo: fetched {} of {} blobs of {} from {url} ({})",
                    moved.transferred,
                    moved.blobs,
                    path.display(),
                    super::output::bytes(moved.compressed_bytes)
                );
            }
        }
    }
    if args.mode == Mode::Shim && args.isolate {
        bail!(
            "--mode shim and --isolate do not combine: the sandbox's root is a farm (use --mode farm)"
        );
    }
    if let Some(at) = &args.at
        && (!at.is_absolute() || at == Path::new("/"))
    {
        bail!(
            "--at {}: the tree needs an absolute path other than / (for example /app)",
            at.display()
        );
    }
    if args.upper.is_some() && (args.mode == Mode::Farm || args.isolate) {
        bail!(
            "--upper is for shim mode; a farm's writes go to a private overlay layer (keep it with --isolate --keep-upper DIR)"
        );
    }
    if args.mode != Mode::Farm && !args.isolate {
        // Shim mode needs no farm: the image alone (found by the manifest's id when cached).
        let store = store()?;
        let (image, built) = shim::image(&store, &manifest_path, &args.bases)?;
        let id = image
            .file_stem()
            .expect("images are named by id")
            .to_owned();
        let farm_cache = run::farm_cache(&store)
            .with_context(|| format!("making a place for runs of {}", store.root().display()))?;
        let at = args.at.clone().unwrap_or_else(|| farm_cache.join(&id));
        let mapped = mirage::Mapped::open(&image)?;
        let in_tree = shim::program(&mapped, &at, args.workdir.as_deref(), program);
        let asked = match args.mode {
            Mode::Shim => plan::Asked::Shim,
            _ => plan::Asked::Auto,
        };
        let plan = plan::plan(asked, false, in_tree.as_deref(), program);
        if plan.mode == plan::Mode::Farm && args.upper.is_some() {
            bail!(
                "--upper needs shim mode, but {} cannot load the shim (a static executable): drop --upper, or run a dynamically linked program",
                program.to_string_lossy()
            );
        }
        if plan.mode == plan::Mode::Shim {
            if args.verbose {
                eprintln!("velo: mode shim: {plan}");
            }
            let run_dir = RunDir::create(&store, args.keep).with_context(|| {
                format!("creating a run directory in {}", store.root().display())
            })?;
            // The default root's parent exists, so `..` of the root is a real directory, as
            // it is for a farm.
            std::fs::create_dir_all(&farm_cache)?;
            // The shim serves blobs as they are: none may be missing, corrupt or of another
            // size than the manifest declares.
            mapped.check_blobs(&store)?;
            let spec = shim::Spec {
                at: &at,
                workdir: args.workdir.as_deref(),
                program: in_tree.unwrap_or_else(|| program.into()),
                word: program,
                rest,
                empty: &run_dir.tree()?,
                upper: args.upper.as_deref(),
                verbose: args.verbose,
            };
            let status = shim::run(&store, &image, &mapped, built, spec, &|line| {
                eprintln!("velo: {line}")
            })?;
            if args.keep {
                eprintln!("velo: kept {}", run_dir.path().display());
            }
            drop(run_dir);
            return Ok(child::exit_like(status));
        }
    }

    let mut layers_read = Vec::new();
    for path in args.bases.iter().chain(std::iter::once(&manifest_path)) {
        layers_read.push(Manifest::read(path)?);
    }
    let refs: Vec<&Manifest> = layers_read.iter().collect();
    let tree = layers::merge(&refs)?;
    let store = store()?;
    let run_dir = RunDir::create(&store, args.keep)
        .with_context(|| format!("creating a run directory in {}", store.root().display()))?;
    let default_at = run::farm_cache(&store)
        .with_context(|| format!("making a place for runs of {}", store.root().display()))?
        .join(tree.id().to_string());
    if let Some(at) = args.at.as_ref().filter(|a| **a != default_at) {
        bail!(
            "--at {}: farm mode shows the tree at its farm's path ({}); other paths need --mode shim",
            at.display(),
            default_at.display()
        );
    }
    let protected = args.isolate || launch::sandbox_available();
    // Shared with ingests, exclusive with gc: no blob disappears while a farm links to it.
    let lock = store.lock(velo::store::LockMode::Shared)?;
    let mut in_use = None;
    let (farm_dir, stats) = if protected {
        let farm = run::cached_farm(&store, &tree)?;
        let (path, built) = (farm.path.clone(), farm.built.clone());
        in_use = Some(farm);
        (path, built)
    } else {
        eprintln!(
            "velo: namespaces are not available here, so the farm is made of private copies (run `velo doctor`)"
        );
        let copies = run_dir.tree()?;
        let stats = farm::materialize(&store, &tree, &copies, farm::Method::Copy)?;
        (copies, Some(stats))
    };
    drop(lock);
    if let Some(reason) = stats.as_ref().and_then(|s| s.copy_reason.as_ref()) {
        let s = stats.as_ref().expect("stats");
        eprintln!(
            "velo: copied {} of {} files instead of hard-linking them: {reason}",
            s.copied + s.reflinked,
            s.files
        );
    }
    if args.verbose {
        match &stats {
            Some(s) => eprintln!(
                "velo: farm {}: {} files ({} linked, {} reflinked, {} copied), {} directories, {} symlinks",
                farm_dir.display(),
                s.files,
                s.linked,
                s.reflinked,
                s.copied,
                s.dirs,
                s.symlinks
            ),
            None => eprintln!("velo: farm {} (cached)", farm_dir.display()),
        }
    }

    let inside_workdir = args.workdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    let relative_workdir = inside_workdir
        .strip_prefix("/")
        .unwrap_or(&inside_workdir)
        .to_owned();
    let resolved = if args.isolate {
        run::resolve_program(
            program,
            Some(&farm_dir),
            &farm_dir.join(&relative_workdir),
            run::SANDBOX_PATH,
        )
    } else {
        let path = std::env::var("PATH").unwrap_or_default();
        run::resolve_program(program, None, &farm_dir.join(&relative_workdir), &path)
    };
    if args.verbose {
        let asked = match args.mode {
            Mode::Farm => plan::Asked::Farm,
            _ => plan::Asked::Auto,
        };
        let plan = plan::plan(asked, args.isolate, resolved.as_deref(), program);
        let chosen = if args.mode == Mode::Auto {
            "auto → farm"
        } else {
            "farm"
        };
        eprintln!("velo: mode {chosen}: {plan}");
    }

    let status = if args.isolate {
        launch::isolated(
            &launch::Isolated {
                run_dir: &run_dir,
                farm: &farm_dir,
                program,
                rest,
                workdir: &inside_workdir,
                keep_upper: args.keep_upper.as_deref(),
                net_none: args.net == Net::None,
            },
            &|line| eprintln!("velo: {line}"),
        )?
    } else {
        let workdir = farm_dir.join(&relative_workdir);
        let mut cmd = Command::new(program);
        cmd.args(rest).current_dir(&workdir);
        if protected {
            sandbox::cover_farm(
                &mut cmd,
                &farm_dir,
                &run_dir.upper()?,
                &run_dir.work()?,
                &workdir,
            )?;
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
        let forwarding = child::Forwarding::start(child.id() as i32);
        let status = child.wait().context("waiting for the command")?;
        drop(forwarding);
        status
    };
    if args.keep && args.isolate {
        // The sandbox's upper layer lived in its tmpfs; only --keep-upper keeps writes.
        eprintln!(
            "velo: kept {} (the farm is {}; keep what an isolated command writes with --keep-upper DIR)",
            run_dir.path().display(),
            farm_dir.display()
        );
    } else if args.keep {
        eprintln!(
            "velo: kept {} (what the command wrote is in upper/; the farm is {})",
            run_dir.path().display(),
            farm_dir.display()
        );
    }
    drop(run_dir);
    drop(in_use);
    Ok(child::exit_like(status))
}
