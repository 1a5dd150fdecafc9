//! `velo manifest show|diff|id`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use serde::Serialize;
use velo::manifest::{self, Kind, Manifest, display_path};

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

#[derive(Serialize)]
struct ShownEntry {
    path: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

#[derive(Serialize)]
struct Shown {
    id: String,
    entries: Vec<ShownEntry>,
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Show { file, json } => {
            let m = Manifest::read(&file)?;
            let entries: Vec<ShownEntry> = m
                .entries()
                .iter()
                .map(|e| {
                    let mut shown = ShownEntry {
                        path: display_path(&e.path),
                        kind: e.kind.name(),
                        size: None,
                        hash: None,
                        exec: None,
                        target: None,
                    };
                    match &e.kind {
                        Kind::Dir => {}
                        Kind::File { hash, size, exec } => {
                            shown.size = Some(*size);
                            shown.hash = Some(hash.to_hex().to_string());
                            shown.exec = Some(*exec);
                        }
                        Kind::Symlink { target } => shown.target = Some(display_path(target)),
                    }
                    shown
                })
                .collect();
            if json {
                output::json(&Shown {
                    id: m.id().to_string(),
                    entries,
                })?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = output::table(["kind", "mode", "size", "content", "path"]);
            for e in &entries {
                let mode = match e.exec {
                    Some(true) => "x",
                    _ => "-",
                };
                let path = match &e.target {
                    Some(t) => format!("{} -> {t}", e.path),
                    None => e.path.clone(),
                };
                let hash = e.hash.as_deref().map_or("", |h| &h[..16]);
                let size = e.size.map(|s| s.to_string()).unwrap_or_default();
                table.add_row([e.kind, mode, &size, hash, &path]);
            }
            println!("manifest {}  ({})", m.id(), file.display());
            println!("{table}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { a, b, json } => {
            let diff = manifest::diff::diff(&Manifest::read(&a)?, &Manifest::read(&b)?);
            if json {
                output::json(&diff)?;
            } else {
                for change in &diff.changes {
                    match change {
                        manifest::Change::Added { path, kind } => println!("+ {path} ({kind})"),
                        manifest::Change::Removed { path, kind } => println!("- {path} ({kind})"),
                        manifest::Change::Changed { path, old, new } => {
                            println!("~ {path}: {old} => {new}")
                        }
                    }
                }
            }
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
