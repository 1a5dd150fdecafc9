//! `velo run --mode shim`: the tree served straight from the store by the shim (Mode B), with no
//! directory on disk. velo writes (or finds) the tree's mirage image, and starts the command
//! with the shim preloaded, told where the image is and where the tree appears (`--at`). The
//! command's real working directory is an empty directory of the run; its virtual one is the
//! workdir inside the tree. docs/modes.md explains what is served and what is refused.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitStatus};

use velo_intercept::env;

use super::mirage::{self, Found, Mapped};
use crate::child;
use crate::manifest::Manifest;
use crate::store::{LockMode, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--workdir {}: it climbs out of the tree", .0.display())]
    WorkdirOutside(PathBuf),
    #[error("--workdir {}: no such directory in the manifest", .0.display())]
    WorkdirMissing(PathBuf),
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {}: {source}", .program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("waiting for the command: {0}")]
    Wait(std::io::Error),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ReadError),
    #[error(transparent)]
    Layers(#[from] super::layers::MergeError),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Farm(#[from] super::farm::Error),
    #[error(transparent)]
    Inception(#[from] crate::inception::Error),
}

pub struct Spec<'a> {
    pub at: &'a Path,
    pub workdir: Option<&'a Path>,
    /// The program: a real path when the command names a file of the tree (its blob), else the
    /// command's own word.
    pub program: PathBuf,
    /// The command's own word, its `argv[0]` (Python finds its virtualenv by it).
    pub word: &'a OsStr,
    pub rest: &'a [OsString],
    /// An empty directory: the command's real working directory, and what descriptors of
    /// virtual directories point at.
    pub empty: &'a Path,
    /// `--upper`: where writes go, or `None` for EROFS.
    pub upper: Option<&'a Path>,
    pub verbose: bool,
}

/// The tree's image for the layers: found by the manifest's id alone when there is one layer
/// and its image is cached (the manifest is then not even decoded), else built from the merged
/// layers. Returns the image's path and whether it was built now.
pub fn image(store: &Store, manifest: &Path, bases: &[PathBuf]) -> Result<(PathBuf, bool), Error> {
    if bases.is_empty() {
        let bytes = std::fs::read(manifest).map_err(|source| Error::Io {
            op: "reading",
            path: manifest.to_owned(),
            source,
        })?;
        let cached = mirage::image_path(store, &blake3::hash(&bytes).to_hex());
        if cached.is_file() {
            return Ok((cached, false));
        }
    }
    let mut layers = Vec::new();
    for path in bases.iter().map(PathBuf::as_path).chain([manifest]) {
        layers.push(Manifest::read(path)?);
    }
    let refs: Vec<&Manifest> = layers.iter().collect();
    let tree = super::layers::merge(&refs)?;
    let _lock = store.lock(LockMode::Shared)?;
    Ok(mirage::cached_image(store, &tree)?)
}

/// `path` relative to the tree, with `.` and `..` applied; `None` if it climbs out.
fn relative(path: &Path) -> Option<Vec<u8>> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => {}
        }
    }
    Some(parts.join(OsStr::new("/")).into_vec())
}

/// The real file behind `program` when it names a file of the tree (relative to the workdir
/// with a `/` in it, or absolute under `at`): its blob, or the host file an absolute symlink
/// in the tree points to.
pub fn program(
    image: &Mapped,
    at: &Path,
    workdir: Option<&Path>,
    program: &OsStr,
) -> Option<PathBuf> {
    let word = Path::new(program);
    if !program.as_bytes().contains(&b'/') {
        return None;
    }
    let rel = match word.strip_prefix(at) {
        Ok(inside) => relative(inside)?,
        Err(_) if word.is_absolute() => return None,
        Err(_) => {
            let wd = workdir
                .map(|w| w.strip_prefix("/").unwrap_or(w))
                .unwrap_or(Path::new(""));
            relative(&wd.join(word))?
        }
    };
    match image.find(&rel, at) {
        Found::Entry(i) => {
            let img = image.image();
            let e = img.entry(i);
            if e.kind != velo_intercept::mirage::FILE {
                return None;
            }
            let blobs = Path::new(OsStr::from_bytes(img.blobs_dir()));
            let hex = blake3::Hash::from_bytes(*e.hash).to_hex();
            let name = if e.exec {
                format!("{hex}.x")
            } else {
                hex.to_string()
            };
            Some(blobs.join(&hex[..2]).join(name))
        }
        Found::Host(path) => Some(path),
        Found::Missing => None,
    }
}

/// Runs `spec`'s command with the shim serving `image` (mapped as `mapped`; `built` says whether
/// this run built it) and returns its wait status. `note` gets `-v`'s line.
pub fn run(
    store: &Store,
    image: &Path,
    mapped: &Mapped,
    built: bool,
    spec: Spec,
    note: &dyn Fn(&str),
) -> Result<ExitStatus, Error> {
    let shim = crate::inception::locate_shim()?;
    let workdir = spec
        .workdir
        .map(|w| w.strip_prefix("/").unwrap_or(w))
        .unwrap_or(Path::new(""));
    let rel = relative(workdir).ok_or_else(|| Error::WorkdirOutside(workdir.to_owned()))?;
    let is_dir = |f| matches!(f, Found::Entry(i) if mapped.image().entry(i).is_dir());
    if !rel.is_empty() && !is_dir(mapped.find(&rel, spec.at)) {
        return Err(Error::WorkdirMissing(workdir.to_owned()));
    }
    // Shared with ingests, exclusive with gc: no blob disappears while the command reads it.
    let _lock = store.lock(LockMode::Shared)?;
    let cwd = if rel.is_empty() {
        spec.at.to_owned()
    } else {
        spec.at.join(OsStr::from_bytes(&rel))
    };
    if spec.verbose {
        note(&format!(
            "{} entries served at {} from image {} ({}); {}",
            mapped.image().len() - 1,
            spec.at.display(),
            image.display(),
            if built { "built now" } else { "cached" },
            match spec.upper {
                Some(dir) => format!("writes there go to {}", dir.display()),
                None => "writes there fail with EROFS (read-only; --upper DIR keeps them)".into(),
            }
        ));
    }
    let preload = crate::inception::preload(&shim);
    let upper = match spec.upper {
        Some(dir) => {
            let io = |op| {
                move |source| Error::Io {
                    op,
                    path: dir.to_owned(),
                    source,
                }
            };
            std::fs::create_dir_all(dir).map_err(io("creating --upper"))?;
            Some(std::fs::canonicalize(dir).map_err(io("resolving --upper"))?)
        }
        None => None,
    };
    let mut cmd = Command::new(&spec.program);
    if let Some(upper) = &upper {
        cmd.env(env::MIRAGE_UPPER.name(), upper);
    }
    cmd.arg0(spec.word)
        .args(spec.rest)
        .current_dir(spec.empty)
        .env(env::LD_PRELOAD.name(), preload)
        .env(env::MIRAGE.name(), image)
        .env(env::MIRAGE_AT.name(), spec.at)
        .env(env::MIRAGE_EMPTY.name(), spec.empty)
        .env(env::MIRAGE_CWD.name(), &cwd)
        .env("PWD", &cwd);
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        program: spec.program.clone(),
        source,
    })?;
    let forwarding = child::Forwarding::start(child.id() as i32);
    let status = child.wait().map_err(Error::Wait)?;
    drop(forwarding);
    Ok(status)
}
