//! `velo inception`: run a command with a project projected at the canonical root.
//!
//! The projection itself is the shim's work (`libvelo_shim.so`, loaded with `LD_PRELOAD`); this
//! module prepares it: it finds the project root, finds the shim, and builds the environment
//! that carries the mapping to the whole process tree:
//!
//! | variable               | value                                                          |
//! |------------------------|----------------------------------------------------------------|
//! | `LD_PRELOAD`           | the shim, ahead of anything already preloaded                  |
//! | `VRIFT_CANONICAL_ROOT` | where the project appears (`/vrift_workspace`)                 |
//! | `VRIFT_PHYSICAL_ROOT`  | the project's real directory                                   |
//! | `PWD`                  | the canonical form of the starting directory (shells trust it) |
//!
//! Nothing is mounted and nothing global changes, so two terminals can project two checkouts to
//! the same canonical root at once. The command keeps the real working directory; the shim
//! reports its canonical name.
//!
//! [`rewrite`] turns canonical paths in a command's output back into physical ones
//! (`--physical-paths`), so an editor can follow a compiler error to the file.

pub mod rewrite;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use velo_intercept::env;
use velo_intercept::translate::{self, Mapping};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Cargo workspace or git repository encloses {}: pass --root DIR to say which directory to project",
        .0.display()
    )]
    NoRoot(PathBuf),
    #[error("--root {}: {source}", .path.display())]
    BadRoot {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--root {}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("the projected root {} cannot be `/`", .0.display())]
    RootIsSlash(PathBuf),
    #[error(
        "the canonical root {0:?} is not an absolute path below `/` (set {canonical} to something like {default})",
        canonical = env::CANONICAL_ROOT,
        default = env::DEFAULT_CANONICAL_ROOT
    )]
    BadCanonical(String),
    #[error(
        "the shim library {name} was not found; looked in: {looked}. Build it (`cargo build -p velo-shim`) or point {var} at it",
        name = env::SHIM_FILE_NAME,
        looked = .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        var = env::SHIM_PATH
    )]
    ShimNotFound(Vec<PathBuf>),
    #[error("{var}={}: no such file", .0.display(), var = env::SHIM_PATH)]
    ShimVarMissing(PathBuf),
    #[error("cannot read the current directory: {0}")]
    Cwd(std::io::Error),
}

/// A projection of one physical directory at one canonical root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    pub canonical: PathBuf,
    pub physical: PathBuf,
}

impl Projection {
    /// `physical` (absolute) at the canonical root from `$VRIFT_CANONICAL_ROOT` or the default.
    pub fn new(physical: PathBuf) -> Result<Projection, Error> {
        let canonical = std::env::var_os(env::CANONICAL_ROOT)
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| env::DEFAULT_CANONICAL_ROOT.into());
        let canonical = PathBuf::from(OsString::from_vec(
            translate::trim_root(canonical.as_bytes()).to_vec(),
        ));
        if Mapping::new(canonical.as_os_str().as_bytes(), b"/x", None).is_none() {
            return Err(Error::BadCanonical(canonical.display().to_string()));
        }
        if physical == Path::new("/") {
            return Err(Error::RootIsSlash(physical));
        }
        Ok(Projection {
            canonical,
            physical,
        })
    }

    fn mapping(&self) -> Mapping<'_> {
        Mapping::new(
            self.canonical.as_os_str().as_bytes(),
            self.physical.as_os_str().as_bytes(),
            None,
        )
        .expect("validated in Projection::new")
    }

    /// The canonical name of `path` (physical), if it lies under the physical root.
    pub fn to_canonical(&self, path: &Path) -> Option<PathBuf> {
        let rest = self.mapping().strip_physical(path.as_os_str().as_bytes())?;
        let mut out = self.canonical.as_os_str().as_bytes().to_vec();
        out.extend_from_slice(rest);
        Some(PathBuf::from(OsString::from_vec(out)))
    }

    /// The environment entries that carry this projection (see the module docs), given the
    /// shim, the current `LD_PRELOAD` and the canonical starting directory.
    pub fn environment(
        &self,
        shim: &Path,
        preload: Option<&OsStr>,
        pwd: &Path,
    ) -> Vec<(OsString, OsString)> {
        let mut preload_value = shim.as_os_str().to_owned();
        if let Some(existing) = preload.filter(|p| !p.is_empty()) {
            let already = existing
                .as_bytes()
                .split(|&b| b == b' ' || b == b':')
                .any(|e| e == shim.as_os_str().as_bytes());
            if already {
                preload_value = existing.to_owned();
            } else {
                preload_value.push(" ");
                preload_value.push(existing);
            }
        }
        vec![
            ("LD_PRELOAD".into(), preload_value),
            (
                env::CANONICAL_ROOT.into(),
                self.canonical.clone().into_os_string(),
            ),
            (
                env::PHYSICAL_ROOT.into(),
                self.physical.clone().into_os_string(),
            ),
            ("PWD".into(), pwd.as_os_str().to_owned()),
        ]
    }
}

/// The working directory as the user sees it: `$PWD` when it names the same directory as the
/// kernel's answer (so a symlinked checkout keeps its spelling), else the kernel's answer.
pub fn current_dir() -> Result<PathBuf, Error> {
    let real = std::env::current_dir().map_err(Error::Cwd)?;
    if let Some(pwd) = std::env::var_os("PWD").map(PathBuf::from)
        && pwd.is_absolute()
        && same_file(&pwd, &real)
    {
        return Ok(pwd);
    }
    Ok(real)
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// If this process already runs under a projection (a nested `velo inception`), the physical
/// form of `path`; else `path` unchanged. Under the shim, velo's own getcwd answers canonically,
/// and the new projection must name the real directory.
pub fn unproject(path: &Path) -> PathBuf {
    let (Some(physical), canonical) = (
        std::env::var_os(env::PHYSICAL_ROOT),
        std::env::var_os(env::CANONICAL_ROOT).unwrap_or_else(|| env::DEFAULT_CANONICAL_ROOT.into()),
    ) else {
        return path.to_owned();
    };
    let Some(map) = Mapping::new(canonical.as_bytes(), physical.as_bytes(), None) else {
        return path.to_owned();
    };
    let mut out = vec![0u8; path.as_os_str().len() + physical.len() + 1];
    match translate::to_physical(&[map], path.as_os_str().as_bytes(), &mut out) {
        Ok(Some(len)) => {
            out.truncate(len);
            PathBuf::from(OsString::from_vec(out))
        }
        _ => path.to_owned(),
    }
}

/// The directory to project: `root` if given (made absolute), else the enclosing Cargo workspace
/// of `cwd` (the nearest `Cargo.toml` with a `[workspace]` table, as Cargo finds it, else the
/// nearest `Cargo.toml`), else the enclosing git work tree.
pub fn find_root(root: Option<&Path>, cwd: &Path) -> Result<PathBuf, Error> {
    if let Some(root) = root {
        let abs = if root.is_absolute() {
            root.to_owned()
        } else {
            cwd.join(root)
        };
        let meta = std::fs::metadata(&abs).map_err(|source| Error::BadRoot {
            path: root.to_owned(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory(root.to_owned()));
        }
        return Ok(normalize(&abs));
    }
    let mut nearest_package = None;
    let mut workspace = None;
    let mut git = None;
    for dir in cwd.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if manifest.is_file() {
            nearest_package.get_or_insert_with(|| dir.to_owned());
            if workspace.is_none() && declares_workspace(&manifest) {
                workspace = Some(dir.to_owned());
            }
        }
        if git.is_none() && dir.join(".git").exists() {
            git = Some(dir.to_owned());
        }
    }
    workspace
        .or(nearest_package)
        .or(git)
        .map(|r| normalize(&r))
        .ok_or_else(|| Error::NoRoot(cwd.to_owned()))
}

fn declares_workspace(manifest: &Path) -> bool {
    std::fs::read_to_string(manifest)
        .map(|text| text.lines().any(|l| l.trim() == "[workspace]"))
        .unwrap_or(false)
}

/// Removes `.` components and trailing slashes without resolving symlinks.
fn normalize(path: &Path) -> PathBuf {
    path.components().collect()
}

/// Where the shim is: `$VELO_SHIM`, else next to the velo binary, else `../lib/` beside it
/// (an installed layout), else this workspace's `target/{debug,release}` (development).
pub fn locate_shim() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(env::SHIM_PATH).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::ShimVarMissing(path))
        };
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join(env::SHIM_FILE_NAME));
        candidates.push(dir.join("../lib").join(env::SHIM_FILE_NAME));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["debug", "release"] {
        candidates.push(
            workspace
                .join("target")
                .join(profile)
                .join(env::SHIM_FILE_NAME),
        );
    }
    match candidates.iter().find(|c| c.is_file()) {
        Some(found) => Ok(normalize(found)),
        None => Err(Error::ShimNotFound(candidates)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_nearest_workspace_then_the_package_then_git() {
        let t = tempfile::tempdir().unwrap();
        let ws = t.path().join("ws");
        std::fs::create_dir_all(ws.join("crates/a/src")).unwrap();
        std::fs::write(
            ws.join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/a\"]\n",
        )
        .unwrap();
        std::fs::write(ws.join("crates/a/Cargo.toml"), "[package]\nname = \"a\"\n").unwrap();
        assert_eq!(find_root(None, &ws.join("crates/a/src")).unwrap(), ws);
        // A workspace nested in another (a project inside a bigger repository) is its own root.
        let inner = ws.join("examples/inner");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(
            inner.join("Cargo.toml"),
            "[package]\nname = \"i\"\n[workspace]\n",
        )
        .unwrap();
        assert_eq!(find_root(None, &inner).unwrap(), inner);

        let pkg = t.path().join("repo/pkg");
        std::fs::create_dir_all(pkg.join("src")).unwrap();
        std::fs::create_dir_all(t.path().join("repo/.git")).unwrap();
        std::fs::write(pkg.join("Cargo.toml"), "[package]\nname = \"p\"\n").unwrap();
        assert_eq!(find_root(None, &pkg.join("src")).unwrap(), pkg);
        assert_eq!(
            find_root(None, &t.path().join("repo")).unwrap(),
            t.path().join("repo")
        );
    }

    #[test]
    fn explicit_roots_are_checked() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("f");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            find_root(Some(&file), t.path()),
            Err(Error::NotADirectory(_))
        ));
        assert!(matches!(
            find_root(Some(Path::new("missing")), t.path()),
            Err(Error::BadRoot { .. })
        ));
        assert_eq!(find_root(Some(Path::new(".")), t.path()).unwrap(), t.path());
    }

    #[test]
    fn environment_prepends_the_shim_once() {
        let p = Projection {
            canonical: "/vrift_workspace".into(),
            physical: "/home/a/proj".into(),
        };
        let env = p.environment(
            Path::new("/lib/libvelo_shim.so"),
            Some(OsStr::new("/x.so")),
            Path::new("/vrift_workspace/src"),
        );
        assert_eq!(env[0].1, "/lib/libvelo_shim.so /x.so");
        let env = p.environment(
            Path::new("/lib/libvelo_shim.so"),
            Some(OsStr::new("/lib/libvelo_shim.so")),
            Path::new("/"),
        );
        assert_eq!(env[0].1, "/lib/libvelo_shim.so");
        assert_eq!(
            p.to_canonical(Path::new("/home/a/proj/src")),
            Some("/vrift_workspace/src".into())
        );
        assert_eq!(p.to_canonical(Path::new("/home/a/project")), None);
    }
}
