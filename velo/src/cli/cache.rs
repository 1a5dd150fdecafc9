//! `velo cache …` and `velo cargo …`

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use velo::cache::{self, Project, key, restore, snapshot};
use velo::inception::{self, Projection};
use velo::store::Store;

use super::{child, inception as inception_cli, output};

/// Content-keyed snapshots of Cargo's target directory.
///
/// A snapshot is filed under the project's content key: the lockfile, every Cargo.toml, the
/// toolchain, target, profile, features, compiler flags and the canonical root; never the
/// project's path. Build under `velo inception` (or with `velo cargo`, which does all of this),
/// save, and any other checkout of the same commit restores it with every unit fresh. Restore
/// makes Cargo's mtime checks agree with file content: a unit whose sources differ from the
/// snapshot's is left for Cargo to rebuild. See docs/cache.md.
#[derive(Debug, clap::Subcommand)]
#[command(after_help = "Examples:\n  \
velo cargo build                 # restore if target/ is cold, build projected, save\n  \
velo cache save                  # snapshot target/ after a build under velo inception\n  \
velo cache restore               # in another checkout: target/ comes back fresh\n  \
velo cache status                # the key, the snapshot restore would pick, what is stale\n  \
velo cache list                  # every snapshot, its size and what it shares")]
pub enum Command {
    Key(KeyArgs),
    Save(SaveArgs),
    Restore(RestoreArgs),
    List(ListArgs),
    Status(StatusArgs),
}

/// What identifies the project and its build.
#[derive(Debug, Clone, clap::Args)]
pub struct ProjectArgs {
    /// The workspace root [default: the enclosing Cargo workspace]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The Cargo profile.
    #[arg(long, default_value = "dev")]
    profile: String,
    /// The target triple [default: the host]
    #[arg(long)]
    target: Option<String>,
    /// Features, as given to cargo (repeatable, comma- or space-separated).
    #[arg(long = "features", short = 'F')]
    features: Vec<String>,
    #[arg(long)]
    all_features: bool,
    #[arg(long)]
    no_default_features: bool,
}

/// Print the content key of the project and each input it is made of.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Snapshot the target directory into the store under the project's key.
///
/// Build under `velo inception` first, so the artifacts hold canonical paths. Blobs are shared
/// with every other snapshot; a save after a build that changed nothing keeps nothing new.
#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// The target directory [default: ROOT/target]
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    /// Leave out rustc's incremental caches (`incremental/`): smaller snapshots, but an edit
    /// after restore recompiles its crate from scratch.
    #[arg(long)]
    no_incremental: bool,
    #[arg(long)]
    json: bool,
}

/// Restore the best snapshot of the project's key into a missing or empty target directory.
///
/// Files are copied (reflinked where the filesystem can), never linked: Cargo writes into
/// target/. Units whose sources match the snapshot come back fresh; the others are left for
/// Cargo to rebuild. A key with no snapshot is not an error: there is nothing to restore.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// The target directory [default: ROOT/target]
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

/// List every snapshot in the store: key, age, size, and the bytes only it holds.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
}

/// The project's key, its target directory, and the snapshot restore would pick.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// The target directory [default: ROOT/target]
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(store: &Path, cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Key(args) => key_cmd(args),
        Command::Save(args) => save_cmd(store, args),
        Command::Restore(args) => restore_cmd(store, args),
        Command::List(args) => list_cmd(store, args),
        Command::Status(args) => status_cmd(store, args),
    }
}

fn canonical_root() -> String {
    std::env::var(velo_intercept::env::CANONICAL_ROOT.name())
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| velo_intercept::env::DEFAULT_CANONICAL_ROOT.into())
}

/// The project the arguments name, projected the way `velo inception` projects it.
pub(super) fn project(args: &ProjectArgs, target_dir: Option<&Path>) -> Result<Project> {
    let cwd = inception::unproject(&inception::current_dir()?);
    let root = inception::unproject(&inception::find_root(args.root.as_deref(), &cwd)?);
    let mut projection = Projection::new(root.clone())?;
    if let Err(why) = projection.add_cargo_home() {
        tracing::info!("CARGO_HOME is not projected: {why}");
    }
    let target_dir = match target_dir {
        Some(dir) => std::path::absolute(cwd.join(dir))?,
        None => root.join("target"),
    };
    let key = key::compute(&key::Request {
        root: root.clone(),
        profile: args.profile.clone(),
        target: args.target.clone(),
        features: args.features.clone(),
        all_features: args.all_features,
        no_default_features: args.no_default_features,
        canonical_root: canonical_root(),
    })?;
    Ok(Project {
        root,
        target_dir,
        projection,
        profile: args.profile.clone(),
        key,
    })
}

fn key_cmd(args: KeyArgs) -> Result<ExitCode> {
    let project = project(&args.project, None)?;
    let key = project.key;
    if args.json {
        output::json(&key)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = output::table(["input", "hash", "what"]);
    for input in &key.inputs {
        table.add_row([input.name, &input.hash, &input.detail]);
    }
    println!("{table}");
    println!("key {}", key.key);
    Ok(ExitCode::SUCCESS)
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

pub(super) fn save(store: &Path, project: &Project, incremental: bool) -> Result<snapshot::Saved> {
    let bar = output::progress(None, "saving");
    let saved = snapshot::save(
        store,
        project,
        &snapshot::SaveOptions {
            incremental,
            ..Default::default()
        },
        &|n| bar.inc(n),
    );
    bar.finish_and_clear();
    saved.with_context(|| format!("cannot save {}", project.target_dir.display()))
}

fn save_cmd(store: &Path, args: SaveArgs) -> Result<ExitCode> {
    let project = project(&args.project, args.target_dir.as_deref())?;
    let saved = save(store, &project, !args.no_incremental)?;
    if args.json {
        output::json(&saved)?;
    } else if saved.unchanged {
        println!(
            "unchanged: snapshot {} of key {} already holds this target directory",
            saved.id,
            short(&saved.key)
        );
    } else {
        println!(
            "saved snapshot {} of key {}: {} files ({}), {} new in the store, {} freshness checks, {:.2} s",
            saved.id,
            short(&saved.key),
            saved.files,
            output::bytes(saved.bytes),
            output::bytes(saved.new_bytes),
            saved.checks,
            saved.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Plans and applies a restore; `None` when the key has no snapshot.
pub(super) fn restore(store: &Path, project: &Project) -> Result<Option<restore::Restored>> {
    if !cache::is_cold(&project.target_dir) {
        return Err(cache::Error::TargetNotEmpty(project.target_dir.clone()).into());
    }
    let store = match Store::open_existing(store) {
        Ok(s) => s,
        Err(velo::store::Error::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some(plan) = restore::plan(&store, project)? else {
        return Ok(None);
    };
    let bar = output::progress(Some(plan.stored.snapshot.bytes), "restoring");
    let restored = restore::apply(&store, project, &plan, &|n| bar.inc(n));
    bar.finish_and_clear();
    Ok(Some(restored?))
}

fn restore_cmd(store: &Path, args: RestoreArgs) -> Result<ExitCode> {
    let project = project(&args.project, args.target_dir.as_deref())?;
    let restored = restore(store, &project)?;
    if args.json {
        output::json(&restored)?;
        return Ok(ExitCode::SUCCESS);
    }
    match restored {
        None => println!(
            "nothing to restore: no snapshot for key {} (build with `velo cargo build`, or `velo cache save` after a build)",
            short(&project.key.key)
        ),
        Some(r) => {
            println!(
                "restored snapshot {} into {}: {} files ({}), {} reflinked, {} copied, {:.2} s",
                r.id,
                project.target_dir.display(),
                r.files,
                output::bytes(r.bytes),
                r.reflinked,
                r.copied,
                r.seconds
            );
            println!(
                "  {} freshness checks fresh, {} left stale for cargo to rebuild",
                r.fresh,
                r.stale.len()
            );
            if r.pinned > 0 {
                println!(
                    "  {} unit(s) fingerprinted by package mtime made fresh: their packages' files are byte-identical, so their recorded mtimes were set back",
                    r.pinned
                );
            }
            for s in r.stale.iter().take(10) {
                println!("  stale {}: {}", s.reference, s.reason);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
struct Listed {
    id: String,
    key: String,
    profile: String,
    created: u64,
    incremental: bool,
    files: u64,
    bytes: u64,
    /// Bytes of blobs no other snapshot uses.
    unique_bytes: u64,
}

#[derive(serde::Serialize)]
struct Listing {
    snapshots: Vec<Listed>,
    /// The sum of every snapshot's size.
    logical_bytes: u64,
    /// What they take in the store, each blob counted once.
    stored_bytes: u64,
}

fn listing(all: &[snapshot::Stored]) -> Result<Listing> {
    use std::collections::HashMap;
    let mut uses: HashMap<velo::store::BlobKey, (u32, u64)> = HashMap::new();
    let mut per = Vec::new();
    for s in all {
        let manifest = velo::manifest::Manifest::read(&s.manifest)
            .with_context(|| format!("snapshot {}", s.snapshot.id))?;
        let mut blobs: Vec<(velo::store::BlobKey, u64)> = manifest
            .entries()
            .iter()
            .filter_map(|e| match e.kind {
                velo::manifest::Kind::File { size, .. } => e.blob().map(|b| (b, size)),
                _ => None,
            })
            .collect();
        blobs.sort_unstable_by_key(|(b, _)| (b.hash.as_bytes().to_owned(), b.exec));
        blobs.dedup_by_key(|(b, _)| *b);
        for (b, size) in &blobs {
            uses.entry(*b).or_insert((0, *size)).0 += 1;
        }
        per.push(blobs);
    }
    let snapshots = all
        .iter()
        .zip(&per)
        .map(|(s, blobs)| Listed {
            id: s.snapshot.id.clone(),
            key: s.snapshot.key.clone(),
            profile: s.snapshot.profile.clone(),
            created: s.snapshot.created,
            incremental: s.snapshot.incremental,
            files: s.snapshot.files,
            bytes: s.snapshot.bytes,
            unique_bytes: blobs
                .iter()
                .filter(|(b, _)| uses[b].0 == 1)
                .map(|(_, size)| size)
                .sum(),
        })
        .collect::<Vec<_>>();
    Ok(Listing {
        logical_bytes: snapshots.iter().map(|s| s.bytes).sum(),
        stored_bytes: uses.values().map(|(_, size)| size).sum(),
        snapshots,
    })
}

fn age(created: u64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let s = now.saturating_sub(created);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86400),
    }
}

fn list_cmd(store: &Path, args: ListArgs) -> Result<ExitCode> {
    let store = match Store::open_existing(store) {
        Ok(s) => Some(s),
        Err(velo::store::Error::Missing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    // A store that does not exist yet holds no snapshot.
    let all = match &store {
        Some(s) => snapshot::list(s)?,
        None => Vec::new(),
    };
    let listing = listing(&all)?;
    if args.json {
        output::json(&listing)?;
        return Ok(ExitCode::SUCCESS);
    }
    if listing.snapshots.is_empty() {
        println!("no snapshots (save one with `velo cache save` or `velo cargo build`)");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = output::table([
        "snapshot",
        "key",
        "profile",
        "created",
        "files",
        "size",
        "only here",
    ]);
    for s in &listing.snapshots {
        table.add_row([
            s.id.clone(),
            short(&s.key).to_owned(),
            s.profile.clone(),
            age(s.created),
            s.files.to_string(),
            output::bytes(s.bytes),
            output::bytes(s.unique_bytes),
        ]);
    }
    println!("{table}");
    println!(
        "{} snapshots, {} in all, {} in the store ({:.1}x shared)",
        listing.snapshots.len(),
        output::bytes(listing.logical_bytes),
        output::bytes(listing.stored_bytes),
        listing.logical_bytes as f64 / listing.stored_bytes.max(1) as f64
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Serialize)]
struct Status {
    key: String,
    root: PathBuf,
    target_dir: PathBuf,
    cold: bool,
    snapshots: usize,
    best: Option<String>,
    evaluation: Option<restore::Evaluation>,
}

fn status_cmd(store: &Path, args: StatusArgs) -> Result<ExitCode> {
    let project = project(&args.project, args.target_dir.as_deref())?;
    let plan = match Store::open_existing(store) {
        Ok(s) => restore::plan(&s, &project)?,
        Err(velo::store::Error::Missing { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let status = Status {
        key: project.key.key.clone(),
        root: project.root.clone(),
        target_dir: project.target_dir.clone(),
        cold: cache::is_cold(&project.target_dir),
        snapshots: plan.as_ref().map_or(0, |p| p.candidates),
        best: plan.as_ref().map(|p| p.stored.snapshot.id.clone()),
        evaluation: plan.as_ref().map(|p| p.evaluation.clone()),
    };
    if args.json {
        output::json(&status)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("project     {}", status.root.display());
    println!("key         {}", status.key);
    println!(
        "target dir  {} ({})",
        status.target_dir.display(),
        if status.cold {
            "cold: restore would fill it"
        } else {
            "warm: restore leaves it alone"
        }
    );
    match (&plan, &status.evaluation) {
        (Some(plan), Some(e)) => {
            println!(
                "snapshots   {} for this key; restore would pick {} ({} files, {})",
                status.snapshots,
                plan.stored.snapshot.id,
                plan.stored.snapshot.files,
                output::bytes(plan.stored.snapshot.bytes)
            );
            println!(
                "freshness   {} checks would be fresh, {} stale, {} unit(s) fresh by package mtime",
                e.fresh,
                e.stale.len(),
                e.pinned
            );
            for s in e.stale.iter().take(10) {
                println!("  stale {}: {}", s.reference, s.reason);
            }
        }
        _ => println!("snapshots   none for this key"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Build with Cargo, through the cache: restore into a cold target directory, build projected,
/// save.
///
/// Runs `cargo ARGS…` under `velo inception --physical-paths` (compiler errors name real
/// files; artifacts hold canonical paths), with CARGO_HOME presented at /cargo-home. When the
/// target directory is missing or empty, the best snapshot of the project's key is restored
/// first; after a successful build that compiled anything, the target directory is saved. One
/// line at the end says what was restored, how many units Cargo found fresh, and what was saved.
/// The exit status is cargo's.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
velo cargo build\n  \
velo cargo test --release\n  \
velo --store /ci/cache cargo build --locked")]
pub struct CargoArgs {
    /// Arguments for cargo (`build`, `test --release`, …)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

/// What the cargo arguments say about the key and the target directory.
#[derive(Debug, Default, PartialEq, Eq)]
struct CargoInvocation {
    profile: String,
    target: Option<String>,
    features: Vec<String>,
    all_features: bool,
    no_default_features: bool,
    target_dir: Option<PathBuf>,
    manifest_path: Option<PathBuf>,
}

fn parse_cargo_args(args: &[OsString]) -> CargoInvocation {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut inv = CargoInvocation::default();
    let mut subcommand = None;
    let mut release = false;
    let mut profile = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "--" {
            break;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || {
            inline.clone().or_else(|| {
                i += 1;
                args.get(i).cloned()
            })
        };
        match flag {
            "--release" | "-r" => release = true,
            "--profile" => profile = value(),
            "--target" => inv.target = value(),
            "--features" | "-F" => inv.features.extend(value()),
            "--all-features" => inv.all_features = true,
            "--no-default-features" => inv.no_default_features = true,
            "--target-dir" => inv.target_dir = value().map(PathBuf::from),
            "--manifest-path" => inv.manifest_path = value().map(PathBuf::from),
            f if !f.starts_with('-') && subcommand.is_none() => subcommand = Some(f.to_owned()),
            _ => {}
        }
        i += 1;
    }
    inv.profile = profile.unwrap_or_else(|| {
        match (release, subcommand.as_deref()) {
            (true, _) => "release",
            (false, Some("bench")) => "bench",
            _ => "dev",
        }
        .to_owned()
    });
    inv
}

/// Runs `cargo fetch` when registry sources the key's snapshots were checked against are not
/// in this `CARGO_HOME` (a fresh CI machine): extracted first, they are hashed and found
/// unchanged, instead of arriving during the build, newer than every restored file, and
/// rerunning the build scripts that watch them.
fn fetch_missing_registry_sources(store: &Path, project: &Project, cargo_args: &[OsString]) {
    let Ok(store) = Store::open_existing(store) else {
        return;
    };
    let Ok(snapshots) = snapshot::list_key(&store, &project.key.key) else {
        return;
    };
    let prefix = format!("{}/", velo_intercept::env::CARGO_HOME_ROOT);
    let missing = snapshots
        .iter()
        .flat_map(|s| s.snapshot.sources.keys())
        .filter(|s| s.starts_with(&prefix))
        .filter(|s| !project.physical(s).exists())
        .count();
    if missing == 0 {
        return;
    }
    eprintln!("velo: {missing} registry source(s) are not in CARGO_HOME yet: cargo fetch");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut fetch = std::process::Command::new(cargo);
    fetch.arg("fetch").current_dir(&project.root);
    for flag in ["--offline", "--locked", "--frozen"] {
        if cargo_args.iter().any(|a| a == flag) {
            fetch.arg(flag);
        }
    }
    if let Ok(status) = fetch.status()
        && !status.success()
    {
        eprintln!("velo: warning: cargo fetch failed; the build will fetch what it needs");
    }
}

/// The directory Cargo puts a profile's artifacts in: `dev` and `test` build into `debug`,
/// `release` and `bench` into `release`, a custom profile into its own name.
fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    }
}

/// The units of this invocation under `target_dir` (one fingerprint JSON per unit, in the
/// profile's directory: `<target>/<triple>/<profile>/` with `--target`, plus the host's
/// `<profile>/` where its build scripts and proc macros go), and how many were written since
/// `since`. Units of other profiles or targets left in the directory are not counted.
fn units(
    target_dir: &Path,
    profile: &str,
    target: Option<&str>,
    since: SystemTime,
) -> (usize, usize) {
    let (mut total, mut written) = (0, 0);
    let dir = profile_dir(profile);
    let mut roots = vec![target_dir.join(dir).join(".fingerprint")];
    if let Some(triple) = target {
        roots.push(target_dir.join(triple).join(dir).join(".fingerprint"));
    }
    for root in roots {
        for unit in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(unit.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if file.path().extension().is_none_or(|e| e != "json") {
                    continue;
                }
                total += 1;
                if file
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .is_some_and(|m| m >= since)
                {
                    written += 1;
                }
            }
        }
    }
    (total, written)
}

pub fn cargo(store: &Path, args: CargoArgs) -> Result<ExitCode> {
    let inv = parse_cargo_args(&args.args);
    let cwd = inception::unproject(&inception::current_dir()?);
    if let Some(m) = &inv.manifest_path
        && !cwd.join(m).is_file()
    {
        bail!(
            "--manifest-path {}: no such file (give the Cargo.toml of the package or workspace to build)",
            m.display()
        );
    }
    let manifest_dir = inv
        .manifest_path
        .as_ref()
        .and_then(|m| cwd.join(m).parent().map(Path::to_owned));
    let project_args = ProjectArgs {
        root: None,
        profile: inv.profile.clone(),
        target: inv.target.clone(),
        features: inv.features.clone(),
        all_features: inv.all_features,
        no_default_features: inv.no_default_features,
    };
    let target_dir = inv.target_dir.clone().or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    });
    let project = {
        // `--manifest-path` names the project; otherwise the enclosing workspace.
        let mut a = project_args;
        a.root = manifest_dir;
        project(&a, target_dir.as_deref())?
    };
    if !project.target_dir.starts_with(&project.root) {
        eprintln!(
            "velo: warning: the target directory {} is outside the project {}: its path is not projected, and artifacts will name it",
            project.target_dir.display(),
            project.root.display()
        );
    }

    let mut summary = Vec::new();
    let cold = cache::is_cold(&project.target_dir);
    if cold {
        fetch_missing_registry_sources(store, &project, &args.args);
    }
    let restored = if cold {
        match restore(store, &project) {
            Ok(Some(r)) => format!(
                "restored {} ({} files, {}, {:.2} s{})",
                r.id,
                r.files,
                output::bytes(r.bytes),
                r.seconds,
                if r.pinned > 0 {
                    format!(
                        "; {} unit(s) fresh by their package's mtimes, set back on byte-identical files",
                        r.pinned
                    )
                } else {
                    String::new()
                }
            ),
            Ok(None) => "nothing to restore".to_owned(),
            Err(e) => {
                // A cache that cannot serve is a slow build, not a failed one.
                eprintln!("velo: warning: not restored: {e:#}");
                "not restored".to_owned()
            }
        }
    } else {
        "target warm, not restored".to_owned()
    };
    summary.push(restored);

    let shim = inception::locate_shim()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = SystemTime::now();
    let clock = Instant::now();
    let cmd =
        inception_cli::projected_command(&project.projection, &shim, &cargo, &args.args, &cwd);
    let status = inception_cli::run_rewriting(cmd, &project.projection, &cargo)?;
    let build_seconds = clock.elapsed().as_secs_f64();
    let (total, compiled) = units(
        &project.target_dir,
        &inv.profile,
        inv.target.as_deref(),
        started,
    );
    summary.push(format!(
        "cargo found {} of {} units fresh ({:.2} s)",
        total - compiled,
        total,
        build_seconds
    ));

    // Save what is new: anything compiled, or a first snapshot for this key. A no-op build
    // over a snapshot's own tree saves nothing (and spends no time walking target/).
    let has_snapshot = || {
        Store::open_existing(store)
            .ok()
            .and_then(|s| snapshot::list_key(&s, &project.key.key).ok())
            .is_some_and(|l| !l.is_empty())
    };
    if status.success() && !cache::is_cold(&project.target_dir) && (compiled > 0 || !has_snapshot())
    {
        match save(store, &project, true) {
            Ok(s) if s.unchanged => summary.push("snapshot unchanged".to_owned()),
            Ok(s) => summary.push(format!(
                "saved {} ({} new)",
                s.id,
                output::bytes(s.new_bytes)
            )),
            Err(e) => {
                eprintln!("velo: warning: not saved: {e:#}");
                summary.push("not saved".to_owned());
            }
        }
    }
    eprintln!("velo: {}", summary.join("; "));
    Ok(child::exit_like(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_arguments_select_the_profile_features_and_target_dir() {
        let args = |s: &str| s.split(' ').map(OsString::from).collect::<Vec<_>>();
        let inv = parse_cargo_args(&args("build --release -F a,b --target-dir=out --target x"));
        assert_eq!(inv.profile, "release");
        assert_eq!(inv.features, ["a,b"]);
        assert_eq!(inv.target_dir, Some(PathBuf::from("out")));
        assert_eq!(inv.target.as_deref(), Some("x"));
        assert_eq!(parse_cargo_args(&args("test")).profile, "dev");
        assert_eq!(parse_cargo_args(&args("bench")).profile, "bench");
        assert_eq!(
            parse_cargo_args(&args("build --profile=ci --all-features")).profile,
            "ci"
        );
        // Arguments after `--` belong to the program, not to cargo.
        assert_eq!(parse_cargo_args(&args("run -- --release")).profile, "dev");
    }

    #[test]
    fn units_are_counted_in_the_invocations_profile_and_target_only() {
        let t = tempfile::tempdir().unwrap();
        let unit = |dir: &str, name: &str| {
            let d = t.path().join(dir).join(".fingerprint").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("lib-x.json"), "{}").unwrap();
            std::fs::write(d.join("lib-x"), "0011223344556677").unwrap();
        };
        unit("debug", "a-0000000000000001");
        unit("debug", "b-0000000000000002");
        unit("release", "a-0000000000000003");
        unit("x86_64-unknown-linux-musl/release", "a-0000000000000004");
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(units(t.path(), "dev", None, epoch), (2, 2));
        assert_eq!(units(t.path(), "test", None, epoch), (2, 2));
        assert_eq!(units(t.path(), "release", None, epoch), (1, 1));
        assert_eq!(
            units(
                t.path(),
                "release",
                Some("x86_64-unknown-linux-musl"),
                epoch
            ),
            (2, 2)
        );
        assert_eq!(units(t.path(), "ci", None, epoch), (0, 0));
        // Nothing written since now: all fresh.
        assert_eq!(
            units(
                t.path(),
                "dev",
                None,
                SystemTime::now() + std::time::Duration::from_secs(5)
            ),
            (2, 0)
        );
    }
}
