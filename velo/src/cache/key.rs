//! The content key of a Cargo project: what a `target/` snapshot is filed under.
//!
//! Two checkouts of the same commit, in any directory and on any machine, must get the same key;
//! anything that changes what Cargo would compile must change it. So the key is a BLAKE3 over
//! the *content* of the inputs below, each as a length-prefixed `(name, value)` pair in a fixed
//! order, never over a path. docs/cache.md gives the reason for each input and for each input
//! left out.
//!
//! | input                 | value hashed                                                       |
//! |-----------------------|--------------------------------------------------------------------|
//! | `Cargo.lock`          | its bytes (or "none")                                              |
//! | `Cargo.toml`          | every manifest under the root (relative path + bytes), sorted       |
//! | `rust-toolchain`      | `rust-toolchain.toml` / `rust-toolchain` bytes (or "none")          |
//! | `rustc -vV`           | the compiler's full version output (commit hash, LLVM version)     |
//! | `target`              | `--target`, else the host triple from `rustc -vV`                  |
//! | `profile`             | the profile name                                                   |
//! | `features`            | the feature selection, normalized                                  |
//! | `env`                 | `RUSTFLAGS`, `CARGO_ENCODED_RUSTFLAGS`, `CARGO_INCREMENTAL`, `CARGO_PROFILE_*`, `CARGO_BUILD_*` (but not the target dir or job count) |
//! | `cargo config`        | the bytes of every `.cargo/config(.toml)` from the root up, and `$CARGO_HOME/config(.toml)` |
//! | `canonical root`      | where the project appears under `velo inception`                   |

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run `{rustc} -vV` to identify the compiler: {source}")]
    Rustc {
        rustc: String,
        source: std::io::Error,
    },
    #[error("`{rustc} -vV` failed: {stderr}")]
    RustcFailed { rustc: String, stderr: String },
    #[error("reading {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("walking {}: {source}", .path.display())]
    Walk {
        path: PathBuf,
        source: ignore::Error,
    },
}

/// What the key is computed for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The workspace root.
    pub root: PathBuf,
    pub profile: String,
    pub target: Option<String>,
    /// `--features` values, `--all-features`, `--no-default-features`, as given to cargo.
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    pub canonical_root: String,
}

/// One input and the BLAKE3 of its value, so two keys can be compared input by input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Input {
    pub name: &'static str,
    pub hash: String,
    /// What was hashed, for people (a file list, a version line, a flag set).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Key {
    pub key: String,
    pub inputs: Vec<Input>,
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Every `Cargo.toml` under `root` (gitignore rules respected; `target/` and hidden directories
/// skipped), as sorted relative paths.
fn manifests(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut found = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .filter_entry(|e| e.file_name() != "target")
        .build();
    for entry in walker {
        let entry = entry.map_err(|source| Error::Walk {
            path: root.to_owned(),
            source,
        })?;
        if entry.file_name() == "Cargo.toml" && entry.file_type().is_some_and(|t| t.is_file()) {
            found.push(
                entry
                    .path()
                    .strip_prefix(root)
                    .expect("under root")
                    .to_owned(),
            );
        }
    }
    found.sort();
    Ok(found)
}

/// The compiler's host triple (`host:` of `rustc -vV`).
pub fn host_triple() -> Result<String, Error> {
    Ok(rustc_version()?
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or("unknown")
        .to_owned())
}

impl Key {
    /// The target triple the key was computed for.
    pub fn target(&self) -> Option<&str> {
        self.inputs
            .iter()
            .find(|i| i.name == "target")
            .map(|i| i.detail.as_str())
    }
}

/// `rustc -vV`, from `$RUSTC` or `rustc` on `PATH`.
fn rustc_version() -> Result<String, Error> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|source| Error::Rustc {
            rustc: rustc.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::RustcFailed {
            rustc,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The environment variables that change what Cargo compiles, sorted.
fn compile_env() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "RUSTFLAGS" | "CARGO_ENCODED_RUSTFLAGS" | "CARGO_INCREMENTAL"
            ) || k.starts_with("CARGO_PROFILE_")
                || (k.starts_with("CARGO_BUILD_")
                    && !matches!(k.as_str(), "CARGO_BUILD_TARGET_DIR" | "CARGO_BUILD_JOBS"))
        })
        .collect();
    vars.sort();
    vars
}

/// Cargo configuration files that apply to `root`: `.cargo/config(.toml)` in it and its
/// ancestors, then `$CARGO_HOME/config(.toml)`.
fn config_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in root.ancestors() {
        for name in ["config.toml", "config"] {
            let p = dir.join(".cargo").join(name);
            if p.is_file() {
                files.push(p);
            }
        }
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = home {
        for name in ["config.toml", "config"] {
            let p = home.join(name);
            if p.is_file() && !files.contains(&p) {
                files.push(p);
            }
        }
    }
    files
}

pub fn compute(req: &Request) -> Result<Key, Error> {
    let mut inputs: Vec<(&'static str, Vec<u8>, String)> = Vec::new();

    let lock = read(&req.root.join("Cargo.lock"))?;
    let detail = if lock.is_some() { "Cargo.lock" } else { "none" };
    inputs.push((
        "Cargo.lock",
        lock.unwrap_or_else(|| b"none".to_vec()),
        detail.into(),
    ));

    let mut value = Vec::new();
    let list = manifests(&req.root)?;
    for rel in &list {
        let bytes = read(&req.root.join(rel))?.unwrap_or_default();
        let rel = rel.to_string_lossy();
        value.extend_from_slice(&(rel.len() as u64).to_le_bytes());
        value.extend_from_slice(rel.as_bytes());
        value.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        value.extend_from_slice(&bytes);
    }
    inputs.push((
        "Cargo.toml",
        value,
        list.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ));

    let mut toolchain = None;
    for name in ["rust-toolchain.toml", "rust-toolchain"] {
        if let Some(bytes) = read(&req.root.join(name))? {
            toolchain = Some((bytes, name));
            break;
        }
    }
    let (bytes, name) = toolchain.unwrap_or((b"none".to_vec(), "none"));
    inputs.push(("rust-toolchain", bytes, name.into()));

    let version = rustc_version()?;
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap_or("unknown")
        .to_owned();
    let release = version
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .unwrap_or("?")
        .to_owned();
    inputs.push((
        "rustc -vV",
        version.clone().into_bytes(),
        format!("rustc {release}"),
    ));

    let target = req.target.clone().unwrap_or(host);
    inputs.push(("target", target.clone().into_bytes(), target));
    inputs.push((
        "profile",
        req.profile.clone().into_bytes(),
        req.profile.clone(),
    ));

    let mut features: Vec<String> = req
        .features
        .iter()
        .flat_map(|f| f.split([',', ' ']))
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    features.sort();
    features.dedup();
    let mut feature_detail = features.join(",");
    if req.all_features {
        feature_detail.push_str(" +all-features");
    }
    if req.no_default_features {
        feature_detail.push_str(" +no-default-features");
    }
    inputs.push((
        "features",
        feature_detail.clone().into_bytes(),
        feature_detail,
    ));

    let env = compile_env();
    let mut value = String::new();
    for (k, v) in &env {
        let _ = writeln!(value, "{k}={v}");
    }
    inputs.push((
        "env",
        value.into_bytes(),
        env.iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    ));

    let mut value = Vec::new();
    let configs = config_files(&req.root);
    for p in &configs {
        let bytes = read(p)?.unwrap_or_default();
        value.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        value.extend_from_slice(&bytes);
    }
    inputs.push(("cargo config", value, format!("{} file(s)", configs.len())));
    inputs.push((
        "canonical root",
        req.canonical_root.clone().into_bytes(),
        req.canonical_root.clone(),
    ));

    let mut hasher = blake3::Hasher::new();
    hasher.update(b"velo cache key v1\n");
    let mut out = Vec::new();
    for (name, value, detail) in inputs {
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(&value);
        out.push(Input {
            name,
            hash: blake3::hash(&value).to_hex()[..16].to_owned(),
            detail,
        });
    }
    Ok(Key {
        key: hasher.finalize().to_hex().to_string(),
        inputs: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(dir: &Path) {
        std::fs::create_dir_all(dir.join("crates/a/src")).unwrap();
        std::fs::create_dir_all(dir.join("target/debug")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/a\"]\n",
        )
        .unwrap();
        std::fs::write(dir.join("crates/a/Cargo.toml"), "[package]\nname = \"a\"\n").unwrap();
        std::fs::write(dir.join("Cargo.lock"), "version = 4\n").unwrap();
        // A Cargo.toml inside target/ (a packaged crate) is not part of the workspace.
        std::fs::write(dir.join("target/debug/Cargo.toml"), "junk").unwrap();
    }

    fn request(root: &Path) -> Request {
        Request {
            root: root.to_owned(),
            profile: "dev".into(),
            target: None,
            features: vec![],
            all_features: false,
            no_default_features: false,
            canonical_root: "/vrift_workspace".into(),
        }
    }

    #[test]
    fn the_key_depends_on_content_not_on_the_path() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (
            t.path().join("alice/proj"),
            t.path().join("ci/builds/1/proj"),
        );
        project(&a);
        project(&b);
        let ka = compute(&request(&a)).unwrap();
        assert_eq!(ka, compute(&request(&b)).unwrap());
        assert_eq!(ka.inputs[1].detail, "Cargo.toml, crates/a/Cargo.toml");

        std::fs::write(b.join("target/debug/Cargo.toml"), "other junk").unwrap();
        assert_eq!(
            ka.key,
            compute(&request(&b)).unwrap().key,
            "target/ is not an input"
        );

        std::fs::write(b.join("Cargo.lock"), "version = 4\n# changed\n").unwrap();
        assert_ne!(
            ka.key,
            compute(&request(&b)).unwrap().key,
            "Cargo.lock is an input"
        );

        let mut release = request(&a);
        release.profile = "release".into();
        assert_ne!(
            ka.key,
            compute(&release).unwrap().key,
            "the profile is an input"
        );

        let mut features = request(&a);
        features.features = vec!["b,a".into()];
        let mut same = request(&a);
        same.features = vec!["a".into(), "b".into()];
        assert_eq!(
            compute(&features).unwrap().key,
            compute(&same).unwrap().key,
            "features are normalized"
        );
        assert_ne!(ka.key, compute(&features).unwrap().key);
    }
}
