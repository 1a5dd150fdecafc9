//! `velo ingest DIR --output FILE.velo`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::ValueEnum;
use velo::ingest::{self, OnUnreadable, Options};
use velo::store::Durability;

use super::output;

/// Store a directory's files and write a manifest that names the tree by content.
///
/// Files are copied into the store (never moved, chmod-ed or linked: your tree is left exactly
/// as it was). The manifest records each path with its content hash, size and executable bit,
/// each symlink's target and each directory; nothing else, so the same tree gives the same
/// manifest id from any directory, on any day. Special files (fifos, sockets, devices) are
/// skipped with a warning. Ingesting the same directory again reads only the files whose stat
/// data changed.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  velo ingest ./my_project --output my.velo\n  \
velo ingest . -o app.velo --exclude target --exclude '*.log' --gitignore"
)]
pub struct Args {
    /// The directory to ingest.
    dir: PathBuf,
    /// Where to write the manifest [default: ./<DIR name>.velo].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Leave out paths matching a gitignore-style glob, relative to DIR (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Also leave out what `.gitignore` files (and .git/info/exclude) in and above DIR exclude.
    #[arg(long)]
    gitignore: bool,
    /// What to do with a file or directory that cannot be read.
    #[arg(long, value_enum, default_value_t = UnreadableArg::Fail)]
    on_unreadable: UnreadableArg,
    /// Read every file again, ignoring the stat data recorded by the last ingest of DIR.
    #[arg(long)]
    no_index: bool,
    /// How new blobs are made durable before the manifest is written.
    #[arg(long, value_enum, default_value_t = FsyncArg::Batch)]
    fsync: FsyncArg,
    /// If this ingest creates the store, make it readable by every local user (mode 0755)
    /// instead of private to you (0700). Every blob is then readable by all, whatever the mode
    /// of the file it came from; see docs/store.md.
    #[arg(long)]
    shared_store: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum UnreadableArg {
    /// Stop with an error naming the entry.
    Fail,
    /// Leave it out of the manifest and list it.
    Skip,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FsyncArg {
    /// One syncfs(2) for the whole batch.
    Batch,
    /// fsync(2) each new blob.
    PerBlob,
    /// No syncing (throwaway stores; a power cut may lose blobs).
    None,
}

pub fn run(store_dir: &std::path::Path, args: Args) -> Result<ExitCode> {
    let output = match args.output {
        Some(path) => path,
        None => default_output(&args.dir)?,
    };
    let durability = match args.fsync {
        FsyncArg::Batch => Durability::Batch,
        FsyncArg::PerBlob => Durability::PerBlob,
        FsyncArg::None => Durability::None,
    };
    let opts = Options {
        source: args.dir.clone(),
        output,
        excludes: args.exclude,
        gitignore: args.gitignore,
        on_unreadable: match args.on_unreadable {
            UnreadableArg::Fail => OnUnreadable::Fail,
            UnreadableArg::Skip => OnUnreadable::Skip,
        },
        use_index: !args.no_index,
        durability,
        access: if args.shared_store {
            velo::store::Access::Shared
        } else {
            velo::store::Access::Private
        },
    };
    let bar = output::progress(None, "ingesting");
    // A hidden bar still reads the clock on every `inc`: give the ingest nothing to call.
    let report = if bar.is_hidden() {
        ingest::ingest(store_dir, &opts, &|_| {})
    } else {
        ingest::ingest(store_dir, &opts, &|n| bar.inc(n))
    };
    bar.finish_and_clear();
    let report = report?;

    for skipped in &report.skipped {
        eprintln!(
            "velo: warning: skipped {}: {}",
            skipped.path, skipped.reason
        );
    }
    output::show(args.json, &report, |r| ingest::text::report(&args.dir, r))?;
    Ok(ExitCode::SUCCESS)
}

/// `./<name of DIR>.velo`, with DIR's name taken after resolving `.` and `..`.
fn default_output(dir: &std::path::Path) -> Result<PathBuf> {
    let resolved =
        std::fs::canonicalize(dir).with_context(|| format!("cannot ingest {}", dir.display()))?;
    let name = resolved
        .file_name()
        .map_or_else(|| "root".into(), |n| n.to_os_string());
    let mut file = name;
    file.push(".velo");
    Ok(PathBuf::from(file))
}
