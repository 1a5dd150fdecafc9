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

use anyhow::{Context, Result, bail};
use velo::manifest::Manifest;
use velo::run::mirage::{self, Found, Mapped};

use velo::store::{LockMode, Store};
use velo_intercept::env;

use velo::child;

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
pub fn image(store: &Store, manifest: &Path, bases: &[PathBuf]) -> Result<(PathBuf, bool)> {
    if bases.is_empty() {
        let bytes =
            std::fs::read(manifest).with_context(|| format!("reading {}", manifest.display()))?;
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
    let tree = velo::run::layers::merge(&refs)?;
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

pub fn run(
    store: &Store,
    image: &Path,
    mapped: &Mapped,
    built: bool,
    spec: Spec,
) -> Result<ExitStatus> {
    let shim = velo::inception::locate_shim()?;
    let workdir = spec
        .workdir
        .map(|w| w.strip_prefix("/").unwrap_or(w))
        .unwrap_or(Path::new(""));
    let rel = relative(workdir)
        .with_context(|| format!("--workdir {}: it climbs out of the tree", workdir.display()))?;
    let is_dir = |f| matches!(f, Found::Entry(i) if mapped.image().entry(i).is_dir());
    if !rel.is_empty() && !is_dir(mapped.find(&rel, spec.at)) {
        bail!(
            "--workdir {}: no such directory in the manifest",
            workdir.display()
        );
    }
    // Shared with ingests, exclusive with gc: no blob disappears while the command reads it.
    let _lock = store.lock(LockMode::Shared)?;
    let cwd = if rel.is_empty() {
        spec.at.to_owned()
    } else {
        spec.at.join(OsStr::from_bytes(&rel))
    };
    if spec.verbose {
        eprintln!(
            "velo: {} entries served at {} from image {} ({}); {}",
            mapped.image().len() - 1,
            spec.at.display(),
            image.display(),
            if built { "built now" } else { "cached" },
            match spec.upper {
                Some(dir) => format!("writes there go to {}", dir.display()),
                None => "writes there fail with EROFS (read-only; --upper DIR keeps them)".into(),
            }
        );
    }
    let preload = velo::inception::preload(&shim);
    let upper = match spec.upper {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating --upper {}", dir.display()))?;
            Some(std::fs::canonicalize(dir).with_context(|| format!("--upper {}", dir.display()))?)
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
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", spec.program.display()))?;
    let forwarding = child::Forwarding::start(child.id() as i32);
    let status = child.wait().context("waiting for the command")?;
    drop(forwarding);
    Ok(status)
}
