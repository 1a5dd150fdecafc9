//! Which remote, and how: `--remote URL`, else `$VELO_REMOTE`, else `[remote] url` in
//! `$XDG_CONFIG_HOME/velo/config.toml` (`~/.config/velo/config.toml`); the mode from
//! `$VELO_REMOTE_MODE`, else `[remote] mode`, else read-write.
//!
//! ```toml
//! [remote]
//! url = "s3://my-bucket/velo"
//! mode = "read-only"        # or "read-write" (the default)
//! ```
//!
//! The credentials are never in this file: S3 takes the standard AWS chain ([`super::s3`]).

use std::path::PathBuf;

use super::Error;

/// Whether this process may write to the remote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    ReadWrite,
    /// Reads only; every write is refused before it reaches the storage (pull requests).
    ReadOnly,
}

impl Mode {
    fn parse(what: &str, value: &str) -> Result<Mode, Error> {
        match value {
            "read-only" => Ok(Mode::ReadOnly),
            "read-write" | "" => Ok(Mode::ReadWrite),
            other => Err(Error::BadMode {
                what: what.to_owned(),
                value: other.to_owned(),
            }),
        }
    }
}

/// A remote to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub url: String,
    pub mode: Mode,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    remote: Option<RemoteTable>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteTable {
    url: Option<String>,
    mode: Option<String>,
}

/// `$XDG_CONFIG_HOME/velo/config.toml`, else `~/.config/velo/config.toml`.
pub fn config_path() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("/nonexistent"))
        .join("velo/config.toml")
}

fn read_file() -> Result<(PathBuf, RemoteTable), Error> {
    let path = config_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((path, RemoteTable::default()));
        }
        // Another user's HOME (a program run with sudo -u, say): not this user's configuration.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::debug!(path = %path.display(), "the config file is not readable: not used");
            return Ok((path, RemoteTable::default()));
        }
        Err(e) => {
            return Err(Error::Config {
                path,
                message: e.to_string(),
            });
        }
    };
    let file: File = basic_toml::from_str(&text).map_err(|e| Error::Config {
        path: path.clone(),
        message: format!("{e} (expected [remote] with url = \"s3://…\" and mode = \"read-only\" | \"read-write\")"),
    })?;
    Ok((path, file.remote.unwrap_or_default()))
}

/// The remote to use: `flag` (`--remote`), else `$VELO_REMOTE`, else the config file; `None`
/// when none is configured.
pub fn configured(flag: Option<&str>) -> Result<Option<Settings>, Error> {
    let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let (path, file) = read_file()?;
    let Some(url) = non_empty(flag.map(str::to_owned))
        .or_else(|| non_empty(std::env::var("VELO_REMOTE").ok()))
        .or_else(|| non_empty(file.url.clone()))
    else {
        return Ok(None);
    };
    let mode = match std::env::var("VELO_REMOTE_MODE") {
        Ok(v) => Mode::parse("VELO_REMOTE_MODE", &v)?,
        Err(_) => match &file.mode {
            Some(v) => Mode::parse(&format!("{}: [remote] mode", path.display()), v)?,
            None => Mode::ReadWrite,
        },
    };
    Ok(Some(Settings { url, mode }))
}

/// As [`configured`], for a command that needs a remote: [`Error::NoRemote`] without one.
pub fn required(flag: Option<&str>) -> Result<Settings, Error> {
    configured(flag)?.ok_or_else(|| Error::NoRemote(config_path()))
}
