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
//! | `VRIFT_EXTRA_ROOTS`    | more roots, `CANONICAL=PHYSICAL:…`: `CARGO_HOME` at `/cargo-home` |
//! | `CARGO_HOME`           | `/cargo-home`, when `CARGO_HOME` is projected                  |
//!
//! `CARGO_HOME` is projected by default: registry sources land in build-script dep-info, in
//! Cargo's fingerprints (a registry crate's source path is hashed into them, cargo#10915) and in
//! debug info, so a different home directory or a moved `CARGO_HOME` would otherwise change
//! `target/` and rebuild every dependency.
//!
//! Nothing is mounted and nothing global changes, so two terminals can project two checkouts to
//! the same canonical root at once. The command keeps the real working directory; the shim
//! reports its canonical name.
//!
//! [`rewrite`] turns canonical paths in a command's output back into physical ones
//! (`--physical-paths`), so an editor can follow a compiler error to the file.

pub mod command;
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

/// A projection of one physical directory at one canonical root, and of extra roots beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    pub canonical: PathBuf,
    pub physical: PathBuf,
    /// `(canonical, physical)` pairs carried in `VRIFT_EXTRA_ROOTS`.
    pub extra: Vec<(PathBuf, PathBuf)>,
}

/// The most extra roots the shim holds (its tables have fixed sizes).
pub const MAX_EXTRA_ROOTS: usize = 3;

/// How a command picks the directory it projects: [`Projection::for_cwd`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Setup<'a> {
    /// `--root DIR`; else the enclosing Cargo workspace or git work tree of the working
    /// directory ([`find_root`]).
    pub root: Option<&'a Path>,
    /// Leave `CARGO_HOME` where it is instead of presenting it at `/cargo-home`.
    pub no_cargo_home: bool,
    /// Without `root`, and without a workspace or work tree around the working directory,
    /// project the working directory itself (instead of failing).
    pub fall_back_to_cwd: bool,
}

impl Projection {
    /// The projection every velo command that projects uses, set up one way: the working
    /// directory and the root taken out of any projection velo already runs under
    /// ([`unproject`]), the root found from `setup`, the canonical root from
    /// `$VRIFT_CANONICAL_ROOT` (normalized, so a trailing slash changes nothing), and
    /// `CARGO_HOME` added unless asked not to. Returns the physical working directory too.
    pub fn for_cwd(setup: Setup<'_>) -> Result<(Projection, PathBuf), Error> {
        let cwd = unproject(&current_dir()?);
        let root = match find_root(setup.root, &cwd) {
            Ok(root) => unproject(&root),
            Err(_) if setup.root.is_none() && setup.fall_back_to_cwd => cwd.clone(),
            Err(e) => return Err(e),
        };
        let mut projection = Projection::new(root)?;
        if !setup.no_cargo_home
            && let Err(why) = projection.add_cargo_home()
        {
            tracing::info!("CARGO_HOME is not projected: {why}");
        }
        Ok((projection, cwd))
    }

    /// `physical` (absolute) at the canonical root from `$VRIFT_CANONICAL_ROOT` or the default.
    pub fn new(physical: PathBuf) -> Result<Projection, Error> {
        let canonical = std::env::var_os(env::CANONICAL_ROOT.name())
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
            extra: Vec::new(),
        })
    }

    /// Also presents the physical `CARGO_HOME` (`$CARGO_HOME`, else `~/.cargo`) at
    /// `/cargo-home`. Returns why not when it cannot: no such directory, nested with the project
    /// root, or a name the shim's variable cannot carry. A missing `CARGO_HOME` is created, as
    /// Cargo would create it during the build: a fresh machine's first build must already see
    /// it at `/cargo-home`, or its registry paths land in `target/` physical.
    pub fn add_cargo_home(&mut self) -> Result<&Path, String> {
        let physical = cargo_home().ok_or("neither CARGO_HOME nor HOME is set")?;
        if !physical.exists() {
            std::fs::create_dir_all(&physical)
                .map_err(|e| format!("creating {}: {e}", physical.display()))?;
        }
        self.add_root(PathBuf::from(env::CARGO_HOME_ROOT), physical)
    }

    fn add_root(&mut self, canonical: PathBuf, physical: PathBuf) -> Result<&Path, String> {
        let physical = normalize(&physical);
        let shown = physical.display().to_string();
        if !physical.is_dir() {
            return Err(format!("{shown} is not a directory"));
        }
        if physical.starts_with(&self.physical) || self.physical.starts_with(&physical) {
            return Err(format!("{shown} and the project root contain one another"));
        }
        if [&canonical, &physical].iter().any(|p| {
            p.as_os_str()
                .as_bytes()
                .iter()
                .any(|&b| b == b':' || b == b'=')
        }) {
            return Err(format!(
                "{shown}: `:` and `=` cannot be carried in {}",
                env::EXTRA_ROOTS
            ));
        }
        if self.extra.len() == MAX_EXTRA_ROOTS {
            return Err(format!("at most {MAX_EXTRA_ROOTS} extra roots"));
        }
        self.extra.push((canonical, physical));
        Ok(&self.extra.last().expect("just pushed").1)
    }

    fn mapping(&self) -> Mapping<'_> {
        Mapping::new(
            self.canonical.as_os_str().as_bytes(),
            self.physical.as_os_str().as_bytes(),
            None,
        )
        .expect("validated in Projection::new")
    }

    /// The canonical name of `path` (physical), if it lies under a physical root.
    pub fn to_canonical(&self, path: &Path) -> Option<PathBuf> {
        let maps = self.mappings();
        let (m, rest) = translate::find_physical(&maps, path.as_os_str().as_bytes())?;
        let mut out = m.canonical().to_vec();
        out.extend_from_slice(rest);
        Some(PathBuf::from(OsString::from_vec(out)))
    }

    /// The environment entries that carry this projection (see the module docs), given the
    /// shim, the current `LD_PRELOAD` and the canonical starting directory. They include
    /// `VELO_INCEPTION`, which tells a nested velo it runs projected.
    pub fn environment(
        &self,
        shim: &Path,
        preload: Option<&OsStr>,
        pwd: &Path,
    ) -> Vec<(OsString, OsString)> {
        let mut vars: Vec<(OsString, OsString)> = vec![
            (env::LD_PRELOAD.name().into(), preload_with(shim, preload)),
            (
                env::CANONICAL_ROOT.name().into(),
                self.canonical.clone().into_os_string(),
            ),
            (
                env::PHYSICAL_ROOT.name().into(),
                self.physical.clone().into_os_string(),
            ),
            ("PWD".into(), pwd.as_os_str().to_owned()),
            (
                env::INCEPTION.name().into(),
                self.physical.clone().into_os_string(),
            ),
        ];
        if !self.extra.is_empty() {
            let mut value = OsString::new();
            for (i, (canonical, physical)) in self.extra.iter().enumerate() {
                if i > 0 {
                    value.push(":");
                }
                value.push(canonical);
                value.push("=");
                value.push(physical);
            }
            vars.push((env::EXTRA_ROOTS.name().into(), value));
        }
        if let Some((canonical, _)) = self
            .extra
            .iter()
            .find(|(c, _)| c.as_os_str() == env::CARGO_HOME_ROOT)
        {
            vars.push(("CARGO_HOME".into(), canonical.clone().into_os_string()));
        }
        vars
    }

    /// Every mapping, the project's first, as the shim sees them.
    pub fn mappings(&self) -> Vec<Mapping<'_>> {
        std::iter::once(self.mapping())
            .chain(self.extra.iter().filter_map(|(c, p)| {
                Mapping::new(c.as_os_str().as_bytes(), p.as_os_str().as_bytes(), None)
            }))
            .collect()
    }

    /// The physical name of `path` when it lies under any canonical root.
    pub fn to_physical(&self, path: &Path) -> Option<PathBuf> {
        let maps = self.mappings();
        let bytes = path.as_os_str().as_bytes();
        let (m, rest) = translate::find_canonical(&maps, bytes)?;
        let mut out = m.physical().to_vec();
        out.extend_from_slice(rest);
        Some(PathBuf::from(OsString::from_vec(out)))
    }
}

/// The physical `CARGO_HOME`: `$CARGO_HOME` (made physical when this process itself runs under
/// a projection), else `$HOME/.cargo`.
pub fn cargo_home() -> Option<PathBuf> {
    match std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        Some(home) => Some(unproject(Path::new(&home))),
        None => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(&h).join(".cargo")),
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
        std::env::var_os(env::PHYSICAL_ROOT.name()),
        std::env::var_os(env::CANONICAL_ROOT.name())
            .unwrap_or_else(|| env::DEFAULT_CANONICAL_ROOT.into()),
    ) else {
        return path.to_owned();
    };
    let Some(map) = Mapping::new(canonical.as_bytes(), physical.as_bytes(), None) else {
        return path.to_owned();
    };
    let extra = std::env::var_os(env::EXTRA_ROOTS.name()).unwrap_or_default();
    let mut maps = vec![map];
    maps.extend(extra.as_bytes().split(|&b| b == b':').filter_map(|e| {
        let eq = e.iter().position(|&b| b == b'=')?;
        Mapping::new(&e[..eq], &e[eq + 1..], None)
    }));
    let longest = maps.iter().map(|m| m.physical().len()).max().unwrap_or(0);
    let mut out = vec![0u8; path.as_os_str().len() + longest + 1];
    match translate::to_physical(&maps, path.as_os_str().as_bytes(), &mut out) {
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
    if let Some(path) = std::env::var_os(env::SHIM_PATH.name()).filter(|p| !p.is_empty()) {
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

/// `LD_PRELOAD` with the shim first, ahead of what `existing` (the current value) preloads, and
/// the shim only once. The one place the list is built: inception, trace and shim mode use it.
pub fn preload_with(shim: &Path, existing: Option<&OsStr>) -> OsString {
    let mut value = shim.as_os_str().to_owned();
    if let Some(existing) = existing.filter(|p| !p.is_empty()) {
        let already = existing
            .as_bytes()
            .split(|&b| b == b' ' || b == b':')
            .any(|e| e == shim.as_os_str().as_bytes());
        if already {
            return existing.to_owned();
        }
        value.push(" ");
        value.push(existing);
    }
    value
}

/// [`preload_with`] of this process's own `LD_PRELOAD`.
pub fn preload(shim: &Path) -> OsString {
    preload_with(shim, std::env::var_os(env::LD_PRELOAD.name()).as_deref())
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
            extra: vec![("/cargo-home".into(), "/home/a/.cargo".into())],
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
        let var = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(
            var("VRIFT_EXTRA_ROOTS").unwrap(),
            "/cargo-home=/home/a/.cargo"
        );
        assert_eq!(var("CARGO_HOME").unwrap(), "/cargo-home");
        assert_eq!(
            p.to_physical(Path::new("/cargo-home/registry")),
            Some("/home/a/.cargo/registry".into())
        );
    }
}
