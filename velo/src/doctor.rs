//! `velo doctor`: what this machine lets velo do.
//!
//! `velo run` needs a mount namespace to cover a farm with a private overlay (and, as a normal
//! user, a user namespace to get one); `--isolate` needs user, mount and PID namespaces and
//! unprivileged OverlayFS (Linux ≥ 5.11). Distributions restrict these in different ways; each
//! check names the setting and how to change it. The last check tries the real thing.

#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// Whether farm mode (not only `--isolate`) depends on it.
    pub needed_for_farm: bool,
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The kernel release as (major, minor).
fn kernel() -> Option<(u32, u32)> {
    let release = read_sysctl("/proc/sys/kernel/osrelease")?;
    let mut parts = release.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

pub fn checks() -> Vec<Check> {
    let userns_for_farm = !is_root();
    let mut out = Vec::new();
    let max = read_sysctl("/proc/sys/user/max_user_namespaces");
    out.push(Check {
        name: "user.max_user_namespaces",
        ok: max.as_deref().is_none_or(|v| v != "0"),
        detail: match max.as_deref() {
            Some("0") => "0: user namespaces are disabled; `sysctl -w user.max_user_namespaces=15000` enables them".into(),
            Some(v) => v.to_string(),
            None => "not present (no limit)".into(),
        },
        needed_for_farm: userns_for_farm,
    });
    let apparmor = read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    out.push(Check {
        name: "kernel.apparmor_restrict_unprivileged_userns",
        ok: is_root() || apparmor.as_deref().is_none_or(|v| v == "0"),
        detail: match apparmor.as_deref() {
            Some("1") => "1: AppArmor denies unprivileged user namespaces; `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (or an AppArmor profile for velo) allows them".into(),
            Some(v) => v.into(),
            None => "not present (no AppArmor restriction)".into(),
        },
        needed_for_farm: userns_for_farm,
    });
    let debian = read_sysctl("/proc/sys/kernel/unprivileged_userns_clone");
    out.push(Check {
        name: "kernel.unprivileged_userns_clone",
        ok: is_root() || debian.as_deref().is_none_or(|v| v != "0"),
        detail: match debian.as_deref() {
            Some("0") => "0: unprivileged user namespaces are off; `sysctl -w kernel.unprivileged_userns_clone=1` turns them on".into(),
            Some(v) => v.into(),
            None => "not present".into(),
        },
        needed_for_farm: userns_for_farm,
    });
    let k = kernel();
    out.push(Check {
        name: "kernel ≥ 5.11 (OverlayFS in a user namespace)",
        ok: is_root() || k.is_some_and(|v| v >= (5, 11)),
        detail: match k {
            Some((a, b)) => format!("{a}.{b}"),
            None => "unknown".into(),
        },
        needed_for_farm: userns_for_farm,
    });
    let probe = probe_overlay();
    out.push(Check {
        name: "mount an OverlayFS in a new namespace (tried)",
        ok: probe.is_ok(),
        detail: match probe {
            Ok(()) => {
                if is_root() {
                    "works (mount namespace)".into()
                } else {
                    "works (user + mount namespace)".into()
                }
            }
            Err(e) => e,
        },
        needed_for_farm: true,
    });
    out
}

/// Runs velo itself (`--version`) exactly as `velo run` runs a command on a farm: in new
/// namespaces, with an overlay over a (here empty) farm. A failure names the step that failed.
fn probe_overlay() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let [farm, upper, work] = ["farm", "upper", "work"].map(|d| dir.path().join(d));
    for d in [&farm, &upper, &work] {
        std::fs::create_dir(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let exe = std::env::current_exe().map_err(|e| format!("finding velo's own binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    crate::run::sandbox::cover_farm(&mut cmd, &farm, &upper, &work, &farm)
        .map_err(|e| e.to_string())?;
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("the probe ran but failed ({status})")),
        Err(e) => Err(e.to_string()),
    }
}
