//! `velo cargo ARGS…`: cargo through the cache.
//!
//! 1. The arguments say what the cache key needs ([`parse_args`]: profile, target, features,
//!    `--target-dir`, `--manifest-path`); the project is found from them.
//! 2. A cold target directory (missing or empty) is restored from the newest snapshot of the
//!    key; registry sources the snapshot was checked against are fetched first, so they do not
//!    arrive during the build, newer than every restored file. A restore that cannot serve is a
//!    slow build, never a failed one.
//! 3. Cargo runs projected ([`crate::inception::command`]), its output rewritten back to
//!    physical paths.
//! 4. The save rule: after a successful build, save when anything was compiled, or when the
//!    key has no snapshot yet. A no-op build over a snapshot's own tree saves nothing (and
//!    spends no time walking `target/`).
//!
//! [`Outcome`] says what happened at each step; the CLI renders it as one line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Instant, SystemTime};

use crate::cache::{self, Progress, Project, ProjectRequest, restore, snapshot};
use crate::human;
use crate::inception::{self, command};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "--manifest-path {}: no such file (give the Cargo.toml of the package or workspace to build)",
        .0.display()
    )]
    NoManifest(PathBuf),
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error(transparent)]
    Inception(#[from] inception::Error),
    #[error(transparent)]
    Command(#[from] command::Error),
}

/// What happened to the target directory before the build.
#[derive(Debug)]
pub enum Restore {
    Restored(restore::Restored),
    /// Cold, but the key has no snapshot.
    Nothing,
    /// Cold, and the restore failed (why): the build starts from scratch.
    Failed(String),
    /// Not cold: nothing is restored over a target directory in use.
    Warm,
}

/// What happened after the build.
#[derive(Debug)]
pub enum Save {
    Saved(snapshot::Saved),
    /// The save rule said there was nothing new to save.
    NotNeeded,
    Failed(String),
}

/// What `velo cargo` did.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub restore: Restore,
    /// Units of the invocation's profile and target, and how many cargo wrote.
    pub units: usize,
    pub compiled: usize,
    pub build_seconds: f64,
    pub save: Save,
    /// What the remote tier did (fetched or pushed a snapshot, or why it could not), when a
    /// remote is configured (`VELO_REMOTE`).
    pub remote: Vec<String>,
}

impl Outcome {
    /// Why the cache did not serve, when it did not: a cache that cannot serve is a slow build,
    /// not a failed one, so these are warnings.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Restore::Failed(e) = &self.restore {
            out.push(format!("not restored: {e}"));
        }
        if let Save::Failed(e) = &self.save {
            out.push(format!("not saved: {e}"));
        }
        out
    }

    /// velo's last line: what was restored, how many units Cargo found fresh, what was saved,
    /// and what the remote did.
    pub fn summary(&self) -> String {
        let mut parts = vec![match &self.restore {
            Restore::Restored(r) => format!(
                "restored {} ({} files, {}, {:.2} s{})",
                r.id,
                r.files,
                human::bytes(r.bytes),
                r.seconds,
                if r.pinned > 0 {
                    format!(
                        "; {} unit(s) fresh by their package's mtimes, set back on byte-identical files",
                        r.pinned
                    )
                } else {
                    String::new()
                }
            ),
            Restore::Nothing => "nothing to restore".to_owned(),
            Restore::Failed(_) => "not restored".to_owned(),
            Restore::Warm => "target warm, not restored".to_owned(),
        }];
        parts.push(format!(
            "cargo found {} of {} units fresh ({:.2} s)",
            self.units - self.compiled,
            self.units,
            self.build_seconds
        ));
        match &self.save {
            Save::Saved(s) if s.unchanged => parts.push("snapshot unchanged".to_owned()),
            Save::Saved(s) => parts.push(format!(
                "saved {} ({} new)",
                s.id,
                human::bytes(s.new_bytes)
            )),
            Save::NotNeeded => {}
            Save::Failed(_) => parts.push("not saved".to_owned()),
        }
        parts.extend(self.remote.iter().cloned());
        parts.join("; ")
    }
}

/// Runs `cargo ARGS…` through the cache of the store at `store`. `note` gets lines for the
/// user as they happen (warnings, the fetch); `progress` the restore's and the save's.
pub fn run(
    store: &Path,
    args: &[OsString],
    note: &dyn Fn(&str),
    progress: &dyn Progress,
) -> Result<Outcome, Error> {
    let inv = parse_args(args);
    let cwd = inception::unproject(&inception::current_dir()?);
    if let Some(m) = &inv.manifest_path
        && !cwd.join(m).is_file()
    {
        return Err(Error::NoManifest(m.clone()));
    }
    let target_dir = inv.project.target_dir.clone().or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    });
    let project = Project::for_cwd(&ProjectRequest {
        // `--manifest-path` names the project; otherwise the enclosing workspace.
        root: inv
            .manifest_path
            .as_ref()
            .and_then(|m| cwd.join(m).parent().map(Path::to_owned)),
        target_dir,
        ..inv.project.clone()
    })?;
    if !project.target_dir.starts_with(&project.root) {
        note(&format!(
            "warning: the target directory {} is outside the project {}: its path is not projected, and artifacts will name it",
            project.target_dir.display(),
            project.root.display()
        ));
    }

    // A remote that is misconfigured costs a normal build, as one that is down does.
    let remote: Option<Remote> = match crate::remote::config::configured(None) {
        Ok(settings) => settings.map(|s| crate::remote::open(&s)),
        Err(e) => Some(Err(e)),
    };
    let mut remote_said = Vec::new();
    let cold = cache::is_cold(&project.target_dir);
    let mut from_remote = false;
    // The registry sources a snapshot's checks name, before they are hashed: Cargo would
    // extract them during the build, with new mtimes, and the units would be dirty.
    let fetch_sources = |snapshots: &[&snapshot::Snapshot]| {
        fetch_missing_registry_sources(snapshots, &project, args, note);
    };
    let restore = if cold {
        let mut restore = None;
        if let Some(remote) = &remote
            && !has_local_snapshot(store, &project.key.key)
        {
            // A cold target on a machine without a snapshot of the key: the remote's newest,
            // straight into target/. A remote that is down or wrong costs a normal build,
            // never a failed one.
            match restore_from_remote(store, remote, &project, progress, &fetch_sources) {
                Ok(Some((restored, line))) => {
                    remote_said.push(line);
                    from_remote = true;
                    restore = Some(Restore::Restored(restored));
                }
                Ok(None) => remote_said.push("remote: no snapshot of this key".to_owned()),
                // The local side failed (a full disk): said as a failed restore.
                Err(RemoteError::Remote(crate::remote::Error::Snapshot(e))) => {
                    restore = Some(Restore::Failed(e.to_string()));
                }
                Err(e) => {
                    remote_said.push(format!("remote unavailable ({e}): building without it"))
                }
            }
        }
        restore.unwrap_or_else(|| {
            if let Ok(local) = Store::open_existing(store)
                && let Ok(stored) = snapshot::list_key(&local, &project.key.key)
            {
                fetch_sources(&stored.iter().map(|s| &s.snapshot).collect::<Vec<_>>());
            }
            match cache::restore_cold(store, &project, progress) {
                Ok(Some(r)) => Restore::Restored(r),
                Ok(None) => Restore::Nothing,
                Err(e) => Restore::Failed(e.to_string()),
            }
        })
    } else {
        Restore::Warm
    };

    let shim = inception::locate_shim()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = SystemTime::now();
    let clock = Instant::now();
    let cmd = command::projected_command(&project.projection, &shim, &cargo, args, &cwd);
    let status = command::run_rewriting(cmd, &project.projection, &cargo)?;
    let build_seconds = clock.elapsed().as_secs_f64();
    let (units, compiled) = units(
        &project.target_dir,
        &inv.project.profile,
        inv.project.target.as_deref(),
        started,
    );

    // A build that compiled nothing after a restore from the remote has nothing to add: the
    // remote holds that snapshot.
    let save = if status.success()
        && !cache::is_cold(&project.target_dir)
        && (compiled > 0 || !(from_remote || has_local_snapshot(store, &project.key.key)))
    {
        match cache::save(store, &project, true, progress) {
            Ok(s) => Save::Saved(s),
            Err(e) => Save::Failed(e.to_string()),
        }
    } else {
        Save::NotNeeded
    };
    if let (Some(remote), Save::Saved(saved)) = (&remote, &save)
        && !saved.unchanged
    {
        remote_said.push(
            match push_to_remote(store, remote, &project.key.key, &saved.id) {
                Ok(line) => line,
                Err(e) => format!("remote unavailable ({e}): the snapshot stays local"),
            },
        );
    }
    Ok(Outcome {
        status,
        restore,
        units,
        compiled,
        build_seconds,
        save,
        remote: remote_said,
    })
}

type Remote = Result<Box<dyn crate::remote::Backend>, crate::remote::Error>;

/// Why the remote tier could not serve `velo cargo`: said in velo's last line.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Remote(#[from] crate::remote::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Cache(#[from] cache::Error),
    #[error("snapshot {0} is not in the store")]
    NoSnapshot(String),
    #[error("{0}")]
    Unopened(String),
}

/// `n` bytes in MiB, for the summary line.
fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
}

/// Whether the store at `store_root` holds a snapshot of `key`.
fn has_local_snapshot(store_root: &Path, key: &str) -> bool {
    Store::open_existing(store_root)
        .ok()
        .and_then(|s| snapshot::list_key(&s, key).ok())
        .is_some_and(|l| !l.is_empty())
}

/// Restores the project's cold target straight from the remote's newest snapshot of its key;
/// with what the remote tier says about it for velo's last line.
fn restore_from_remote(
    store_root: &Path,
    remote: &Remote,
    project: &Project,
    progress: &dyn Progress,
    prepare: &dyn Fn(&[&snapshot::Snapshot]),
) -> Result<Option<(restore::Restored, String)>, RemoteError> {
    let remote = remote
        .as_ref()
        .map_err(|e| RemoteError::Unopened(e.to_string()))?;
    let store = Store::open_or_create(store_root, crate::store::Access::Private, "velo cargo")?;
    Ok(
        crate::remote::restore(&store, remote.as_ref(), project, progress, prepare)?.map(
            |(restored, moved)| {
                let line = format!(
                    "fetched snapshot {} from {} ({} of {} blobs, {}, {} requests)",
                    restored.id,
                    remote.url(),
                    moved.transferred,
                    moved.blobs,
                    mib(moved.compressed_bytes),
                    moved.requests
                );
                (restored, line)
            },
        ),
    )
}

/// Pushes snapshot `id` of `key` to the remote.
fn push_to_remote(
    store_root: &Path,
    remote: &Remote,
    key: &str,
    id: &str,
) -> Result<String, RemoteError> {
    let remote = remote
        .as_ref()
        .map_err(|e| RemoteError::Unopened(e.to_string()))?;
    if remote.read_only() {
        return Ok(format!("remote {} is read-only: not pushed", remote.url()));
    }
    let store = Store::open_existing(store_root)?;
    let stored = snapshot::list_key(&store, key)?
        .into_iter()
        .find(|s| s.snapshot.id == id)
        .ok_or_else(|| RemoteError::NoSnapshot(id.to_owned()))?;
    let moved = crate::remote::push_snapshot(&store, remote.as_ref(), &stored)?;
    Ok(format!(
        "pushed to {} ({} new blobs in {} packs, {}, {} requests)",
        remote.url(),
        moved.transferred,
        moved.packs,
        mib(moved.compressed_bytes),
        moved.requests
    ))
}

/// What the cargo arguments say about the key and the target directory.
#[derive(Debug, Default)]
pub struct Invocation {
    /// Profile, target, features and `--target-dir` (the root comes from `manifest_path`).
    pub project: ProjectRequest,
    pub manifest_path: Option<PathBuf>,
}

pub fn parse_args(args: &[OsString]) -> Invocation {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut inv = Invocation::default();
    let mut subcommand = None;
    let mut release = false;
    let mut profile = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "--" {
            break;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || {
            inline.clone().or_else(|| {
                i += 1;
                args.get(i).cloned()
            })
        };
        match flag {
            "--release" | "-r" => release = true,
            "--profile" => profile = value(),
            "--target" => inv.project.target = value(),
            "--features" | "-F" => inv.project.features.extend(value()),
            "--all-features" => inv.project.all_features = true,
            "--no-default-features" => inv.project.no_default_features = true,
            "--target-dir" => inv.project.target_dir = value().map(PathBuf::from),
            "--manifest-path" => inv.manifest_path = value().map(PathBuf::from),
            f if !f.starts_with('-') && subcommand.is_none() => subcommand = Some(f.to_owned()),
            _ => {}
        }
        i += 1;
    }
    inv.project.profile = profile.unwrap_or_else(|| {
        match (release, subcommand.as_deref()) {
            (true, _) => "release",
            (false, Some("bench")) => "bench",
            _ => "dev",
        }
        .to_owned()
    });
    inv
}

/// Runs `cargo fetch` when registry sources the key's snapshots were checked against are not
/// in this `CARGO_HOME` (a fresh CI machine): extracted first, they are hashed and found
/// unchanged, instead of arriving during the build, newer than every restored file, and
/// rerunning the build scripts that watch them.
fn fetch_missing_registry_sources(
    snapshots: &[&snapshot::Snapshot],
    project: &Project,
    cargo_args: &[OsString],
    note: &dyn Fn(&str),
) {
    let prefix = format!("{}/", velo_intercept::env::CARGO_HOME_ROOT);
    let missing = snapshots
        .iter()
        .flat_map(|s| s.sources.keys())
        .filter(|s| s.starts_with(&prefix))
        .filter(|s| !project.physical(s).exists())
        .count();
    if missing == 0 {
        return;
    }
    note(&format!(
        "{missing} registry source(s) are not in CARGO_HOME yet: cargo fetch"
    ));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut fetch = std::process::Command::new(cargo);
    fetch.arg("fetch").current_dir(&project.root);
    for flag in ["--offline", "--locked", "--frozen"] {
        if cargo_args.iter().any(|a| a == flag) {
            fetch.arg(flag);
        }
    }
    if let Ok(status) = fetch.status()
        && !status.success()
    {
        note("warning: cargo fetch failed; the build will fetch what it needs");
    }
}

/// The directory Cargo puts a profile's artifacts in: `dev` and `test` build into `debug`,
/// `release` and `bench` into `release`, a custom profile into its own name.
pub fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    }
}

/// The units of this invocation under `target_dir` (one fingerprint JSON per unit, in the
/// profile's directory: `<target>/<triple>/<profile>/` with `--target`, plus the host's
/// `<profile>/` where its build scripts and proc macros go), and how many were written since
/// `since`. Units of other profiles or targets left in the directory are not counted.
pub fn units(
    target_dir: &Path,
    profile: &str,
    target: Option<&str>,
    since: SystemTime,
) -> (usize, usize) {
    let (mut total, mut written) = (0, 0);
    let dir = profile_dir(profile);
    let mut roots = vec![target_dir.join(dir).join(".fingerprint")];
    if let Some(triple) = target {
        roots.push(target_dir.join(triple).join(dir).join(".fingerprint"));
    }
    for root in roots {
        for unit in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(unit.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if file.path().extension().is_none_or(|e| e != "json") {
                    continue;
                }
                total += 1;
                if file
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .is_some_and(|m| m >= since)
                {
                    written += 1;
                }
            }
        }
    }
    (total, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_arguments_select_the_profile_features_and_target_dir() {
        let args = |s: &str| s.split(' ').map(OsString::from).collect::<Vec<_>>();
        let inv = parse_args(&args("build --release -F a,b --target-dir=out --target x"));
        assert_eq!(inv.project.profile, "release");
        assert_eq!(inv.project.features, ["a,b"]);
        assert_eq!(inv.project.target_dir, Some(PathBuf::from("out")));
        assert_eq!(inv.project.target.as_deref(), Some("x"));
        assert_eq!(parse_args(&args("test")).project.profile, "dev");
        assert_eq!(parse_args(&args("bench")).project.profile, "bench");
        assert_eq!(
            parse_args(&args("build --profile=ci --all-features"))
                .project
                .profile,
            "ci"
        );
        // Arguments after `--` belong to the program, not to cargo.
        assert_eq!(parse_args(&args("run -- --release")).project.profile, "dev");
    }

    #[test]
    fn units_are_counted_in_the_invocations_profile_and_target_only() {
        let t = tempfile::tempdir().unwrap();
        let unit = |dir: &str, name: &str| {
            let d = t.path().join(dir).join(".fingerprint").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("lib-x.json"), "{}").unwrap();
            std::fs::write(d.join("lib-x"), "0011223344556677").unwrap();
        };
        unit("debug", "a-0000000000000001");
        unit("debug", "b-0000000000000002");
        unit("release", "a-0000000000000003");
        unit("x86_64-unknown-linux-musl/release", "a-0000000000000004");
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(units(t.path(), "dev", None, epoch), (2, 2));
        assert_eq!(units(t.path(), "test", None, epoch), (2, 2));
        assert_eq!(units(t.path(), "release", None, epoch), (1, 1));
        assert_eq!(
            units(
                t.path(),
                "release",
                Some("x86_64-unknown-linux-musl"),
                epoch
            ),
            (2, 2)
        );
        assert_eq!(units(t.path(), "ci", None, epoch), (0, 0));
        // Nothing written since now: all fresh.
        assert_eq!(
            units(
                t.path(),
                "dev",
                None,
                SystemTime::now() + std::time::Duration::from_secs(5)
            ),
            (2, 0)
        );
    }
}
