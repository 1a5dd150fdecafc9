//! `velo manifest show|diff|id`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use velo::manifest::{self, Manifest};

use super::output;

/// Inspect manifests (.velo files).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List every entry: kind, executable bit, size, content hash and path.
    Show {
        file: PathBuf,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Paths added, removed or changed from A to B. Exits 1 when they differ, like diff(1).
    Diff {
        a: PathBuf,
        b: PathBuf,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Print the manifest id: the BLAKE3 of its canonical encoding.
    Id { file: PathBuf },
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Show { file, json } => {
            let shown = manifest::text::Shown::of(&Manifest::read(&file)?);
            output::show(json, &shown, |s| manifest::text::shown(&file, s))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { a, b, json } => {
            let diff = manifest::diff::diff(&Manifest::read(&a)?, &Manifest::read(&b)?);
            output::show(json, &diff, manifest::text::diff)?;
            Ok(if diff.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Id { file } => {
            // The id of the bytes as they are: a valid manifest has exactly one encoding.
            let m = Manifest::read(&file)?;
            println!("{}", m.id());
            Ok(ExitCode::SUCCESS)
        }
    }
}
