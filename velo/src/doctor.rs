//! `velo doctor`: what this machine lets velo do.
//!
//! `velo run` needs a mount namespace to cover a farm with a private overlay (and, as a normal
//! user, a user namespace to get one); `--isolate` needs user, mount and PID namespaces and
//! unprivileged OverlayFS (Linux ≥ 5.11). Distributions restrict these in different ways; each
//! check names the setting and how to change it. The last check tries the real thing.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

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

/// Forks a child that enters new namespaces and mounts a tmpfs and an overlay on it.
fn probe_overlay() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let c = |rel: &str| CString::new(dir.path().join(rel).as_os_str().as_bytes()).expect("no NUL");
    let (base, lower, upper, work, merged) = (c(""), c("l"), c("u"), c("w"), c("m"));
    let root = is_root();
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let uid_map = CString::new(format!("{uid} {uid} 1")).expect("digits");
    let gid_map = CString::new(format!("{gid} {gid} 1")).expect("digits");
    let options = CString::new(format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.path().join("l").display(),
        dir.path().join("u").display(),
        dir.path().join("w").display()
    ))
    .expect("no NUL");
    // SAFETY: the child makes system calls on buffers prepared above, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            let write = |path: &std::ffi::CStr, data: &[u8]| {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                fd >= 0 && libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize
            };
            let step = |ok: bool, code: i32| {
                if !ok {
                    libc::_exit(code);
                }
            };
            let flags = if root {
                libc::CLONE_NEWNS
            } else {
                libc::CLONE_NEWNS | libc::CLONE_NEWUSER
            };
            step(libc::unshare(flags) == 0, 10);
            if !root {
                step(write(c"/proc/self/setgroups", b"deny"), 11);
                step(write(c"/proc/self/uid_map", uid_map.as_bytes()), 11);
                step(write(c"/proc/self/gid_map", gid_map.as_bytes()), 11);
            }
            let null = std::ptr::null::<libc::c_char>();
            step(
                libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    null.cast(),
                ) == 0,
                12,
            );
            step(
                libc::mount(
                    c"tmpfs".as_ptr(),
                    base.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    null.cast(),
                ) == 0,
                13,
            );
            for d in [&lower, &upper, &work, &merged] {
                step(libc::mkdir(d.as_ptr(), 0o700) == 0, 14);
            }
            step(
                libc::mount(
                    c"overlay".as_ptr(),
                    merged.as_ptr(),
                    c"overlay".as_ptr(),
                    0,
                    options.as_ptr().cast(),
                ) == 0,
                15,
            );
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WEXITSTATUS(status) {
        0 if libc::WIFEXITED(status) => Ok(()),
        10 => Err("unshare failed: namespaces are restricted here (see the checks above)".into()),
        11 => Err("writing the uid/gid map failed".into()),
        12..=14 => Err("mounting in the new namespace failed".into()),
        15 => Err("mounting OverlayFS failed (unprivileged OverlayFS needs Linux ≥ 5.11)".into()),
        code => Err(format!("the probe failed (status {code})")),
    }
}
