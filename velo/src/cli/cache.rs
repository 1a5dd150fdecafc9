//! `velo cache …` and `velo cargo …`

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use velo::cache::{self, Project};

use super::output;
use velo::child;

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
velo cache list                  # every snapshot, its size and what it shares\n  \
velo cache list --remote         # the snapshots on the remote ($VELO_REMOTE)\n  \
velo cache prune --remote --older-than 30d --dry-run")]
pub enum Command {
    Key(KeyArgs),
    Save(SaveArgs),
    Restore(RestoreArgs),
    List(ListArgs),
    Status(StatusArgs),
    Prune(PruneArgs),
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

/// The project and its target directory.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    #[command(flatten)]
    project: ProjectArgs,
    /// The target directory [default: ROOT/target]
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
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
    target: TargetArgs,
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
    target: TargetArgs,
    #[arg(long)]
    json: bool,
}

/// List every snapshot in the store: key, age, size, and the bytes only it holds; with
/// --remote, the snapshots on the remote.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// List the remote's snapshots instead [URL default: $VELO_REMOTE, else [remote] url in
    /// ~/.config/velo/config.toml]
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    remote: Option<String>,
    #[arg(long)]
    json: bool,
}

/// Delete old snapshots from a remote, and the objects only they used.
///
/// Mark: snapshot records newer than --older-than are kept, and so is the newest record of every
/// key, however old; manifests pushed with `velo push` are kept while newer than --older-than.
/// Sweep: packs, blobs, indexes and manifests nothing kept names are deleted once they are older
/// than --grace, which must be longer than the longest push (a push uploads its packs before
/// the index that names them). A restore racing a prune can miss, never restore a wrong file.
/// The local store is pruned by `velo gc`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The remote [URL default: $VELO_REMOTE, else [remote] url in ~/.config/velo/config.toml]
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", required = true)]
    remote: Option<String>,
    /// Keep snapshots newer than this (s, m, h or d: `30d`, `12h`).
    #[arg(long, value_name = "AGE", default_value = "30d", value_parser = velo::human::parse_age)]
    older_than: std::time::Duration,
    /// Leave unreferenced objects younger than this (a push may be about to name them).
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = velo::human::parse_age)]
    grace: std::time::Duration,
    /// Say what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

/// The project's key, its target directory, and the snapshot restore would pick.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    target: TargetArgs,
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
        Command::Prune(args) => prune_cmd(args),
    }
}

impl ProjectArgs {
    fn request(&self, target_dir: Option<&Path>) -> cache::ProjectRequest {
        cache::ProjectRequest {
            root: self.root.clone(),
            profile: self.profile.clone(),
            target: self.target.clone(),
            features: self.features.clone(),
            all_features: self.all_features,
            no_default_features: self.no_default_features,
            target_dir: target_dir.map(Path::to_owned),
        }
    }
}

/// The project the arguments name, projected the way `velo inception` projects it.
fn project(args: &ProjectArgs, target_dir: Option<&Path>) -> Result<Project> {
    Ok(Project::for_cwd(&args.request(target_dir))?)
}

fn key_cmd(args: KeyArgs) -> Result<ExitCode> {
    let key = project(&args.project, None)?.key;
    output::show(args.json, &key, cache::text::key)?;
    Ok(ExitCode::SUCCESS)
}

fn save_cmd(store: &Path, args: SaveArgs) -> Result<ExitCode> {
    let project = project(&args.target.project, args.target.target_dir.as_deref())?;
    let saved = cache::save(
        store,
        &project,
        !args.no_incremental,
        &output::Bar::default(),
    )
    .with_context(|| format!("cannot save {}", project.target_dir.display()))?;
    output::show(args.json, &saved, cache::text::saved)?;
    Ok(ExitCode::SUCCESS)
}

fn restore_cmd(store: &Path, args: RestoreArgs) -> Result<ExitCode> {
    let project = project(&args.target.project, args.target.target_dir.as_deref())?;
    let restored = cache::restore_cold(store, &project, &output::Bar::default())?;
    output::show(args.json, &restored, |r| {
        cache::text::restored(r.as_ref(), &project.key.key, &project.target_dir)
    })?;
    Ok(ExitCode::SUCCESS)
}

fn list_cmd(store: &Path, args: ListArgs) -> Result<ExitCode> {
    if let Some(flag) = &args.remote {
        let remote = velo::remote::open_required(Some(flag))?;
        let listed = velo::remote::list_snapshots(remote.as_ref())?;
        output::show(args.json, &listed, |l| {
            cache::text::remote_listing(remote.url(), l)
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let listing = cache::Listing::of_store(store)?;
    output::show(args.json, &listing, cache::text::listing)?;
    Ok(ExitCode::SUCCESS)
}

fn prune_cmd(args: PruneArgs) -> Result<ExitCode> {
    let remote = velo::remote::open_required(args.remote.as_deref())?;
    let pruned = velo::remote::prune(remote.as_ref(), args.older_than, args.grace, args.dry_run)?;
    output::show(args.json, &pruned, |p| cache::text::pruned(remote.url(), p))?;
    Ok(ExitCode::SUCCESS)
}

fn status_cmd(store: &Path, args: StatusArgs) -> Result<ExitCode> {
    let project = project(&args.target.project, args.target.target_dir.as_deref())?;
    let status = cache::Status::of(store, &project)?;
    output::show(args.json, &status, cache::text::status)?;
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

pub fn cargo(store: &Path, args: CargoArgs) -> Result<ExitCode> {
    let progress = output::Bar::default();
    let note = |line: &str| eprintln!("velo: {line}");
    let outcome = velo::cargo::run(store, &args.args, &note, &progress)?;
    for warning in outcome.warnings() {
        eprintln!("velo: warning: {warning}");
    }
    eprintln!("velo: {}", outcome.summary());
    Ok(child::exit_like(outcome.status))
}
