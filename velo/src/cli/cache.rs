//! `velo cache …`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::output;

/// Content-keyed snapshots of Cargo's target directory.
///
/// A snapshot is filed under the project's content key: the lockfile, every Cargo.toml, the
/// toolchain, target, profile, features, compiler flags and the canonical root; never the
/// project's path. Two checkouts of the same commit share a key wherever they live.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    Key(KeyArgs),
}

/// Print the content key of the project and each input it is made of.
#[derive(Debug, clap::Args)]
pub struct KeyArgs {
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
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Key(args) => key(args),
    }
}

fn key(args: KeyArgs) -> Result<ExitCode> {
    let cwd = velo::inception::unproject(&velo::inception::current_dir()?);
    let root = velo::inception::find_root(args.root.as_deref(), &cwd)?;
    let canonical = std::env::var(velo_intercept::env::CANONICAL_ROOT)
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| velo_intercept::env::DEFAULT_CANONICAL_ROOT.into());
    let key = velo::cache::key::compute(&velo::cache::key::Request {
        root,
        profile: args.profile,
        target: args.target,
        features: args.features,
        all_features: args.all_features,
        no_default_features: args.no_default_features,
        canonical_root: canonical,
    })?;
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
