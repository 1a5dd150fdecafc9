//! `velo push MANIFEST…` and `velo pull ID -o FILE`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use velo::store::{Access, Store};

use super::output;

/// Upload manifests and the blobs the remote lacks.
///
/// Blobs go first, each zstd-compressed and named by the BLAKE3 of its content, and only those
/// the remote does not have; the manifest goes last, so a machine that finds it finds every
/// blob. The remote is --remote URL, else $VELO_REMOTE: `s3://BUCKET/PREFIX` (any S3-compatible
/// store, with the standard AWS variables) or `file:///shared/dir` (docs/remote.md).
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  velo push --remote s3://my-bucket/velo app.velo\n  velo push --remote file:///mnt/velo-cache app.velo"
)]
pub struct PushArgs {
    /// The remote [default: $VELO_REMOTE]
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    #[arg(required = true, value_name = "MANIFEST")]
    manifests: Vec<PathBuf>,
}

/// Download a manifest and the blobs the local store lacks.
///
/// Every object is checked against its name before it enters the store: the manifest's bytes
/// must hash to the id asked for, and each blob must decompress to exactly its declared size and
/// hash to its key. Anything else is a miss with a warning: nothing wrong is ever stored, and no
/// manifest is written unless every blob it names is in the store.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  velo pull --remote file:///mnt/velo-cache 3f2a…c9 -o app.velo")]
pub struct PullArgs {
    /// The remote [default: $VELO_REMOTE]
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// Where to write the manifest.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
    /// The manifest id (`velo manifest id FILE`).
    id: String,
}

pub fn push(store: &std::path::Path, args: PushArgs) -> Result<ExitCode> {
    let remote = velo::remote::open_required(args.remote.as_deref())?;
    let store = Store::open_existing(store)?;
    let mut all = Vec::new();
    for manifest in &args.manifests {
        all.push(velo::remote::push(&store, remote.as_ref(), manifest)?);
    }
    output::show(args.json, &all, |m| {
        velo::remote::text::pushed(&args.manifests, m)
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn pull(store: &std::path::Path, args: PullArgs) -> Result<ExitCode> {
    let remote = velo::remote::open_required(args.remote.as_deref())?;
    let store = Store::open_or_create(store, Access::Private, "velo pull")?;
    let moved = velo::remote::pull(&store, remote.as_ref(), &args.id, &args.output)?;
    output::show(args.json, &moved, |m| {
        velo::remote::text::pulled(&args.output, m)
    })?;
    Ok(ExitCode::SUCCESS)
}
