//! Namespaces and mounts: keeping the store immutable under `velo run`, and the `--isolate`
//! sandbox.
//!
//! # Farm mode: a private overlay over the farm
//!
//! A farm's files are hard links to store blobs. Blobs are read-only (0444/0555), but root
//! ignores modes, and `echo x >> file` as root would change the blob in place. So the command
//! never sees the farm itself: it runs in a private mount namespace in which the farm directory
//! is covered by an OverlayFS whose only lower layer is the farm and whose upper layer is a
//! private directory. A write copies the file up first; `chmod`, `truncate` and `rm` act on the
//! upper layer; the blob's inode is never opened for writing. As a normal user the mount
//! namespace needs a user namespace, in which the caller keeps its own uid and gid (a
//! one-to-one map), so files look the same as outside.
//!
//! # `--isolate`: the sandbox, mount by mount
//!
//! velo forks a helper, which unshares a user namespace and maps the caller to uid/gid 0 in it
//! (`setgroups` denied first, as the kernel requires for an unprivileged map), then unshares
//! mount, PID, UTS, IPC (and with `--net none`, network) namespaces and forks the sandbox's
//! init (PID 1). Init builds the root filesystem:
//!
//! | mount                | why                                                               |
//! |----------------------|-------------------------------------------------------------------|
//! | `/` rprivate         | nothing below propagates back to the host                         |
//! | tmpfs scratch        | over the run's (empty) host directory: holds the new root's mountpoint and the upper and work dirs, so writes vanish with the namespace |
//! | overlay → new root   | lower: the merged farm (read-only); upper: private scratch or `--keep-upper DIR` |
//! | `/proc`              | a fresh proc for the new PID namespace (the host's is not visible) |
//! | tmpfs `/dev`         | with `null zero full random urandom tty` bound from the host, and `fd`, `stdin`, `stdout`, `stderr` links |
//! | tmpfs `/tmp`         | scratch space, mode 1777                                          |
//! | `pivot_root`         | the new root becomes `/`; the old root is detached and removed, so no host path resolves |
//!
//! Then `no_new_privs` is set, the hostname is `velo`, init closes every descriptor but stdio
//! and its report pipe and makes itself undumpable (so `/proc/1/fd`, `mem`, `environ`, `exe`,
//! `root` and `cwd` are out of the command's reach, as bubblewrap keeps its own PID 1 out of
//! reach), and forks the command, forwards
//! SIGINT/SIGTERM/SIGHUP/SIGQUIT to it, reaps every orphan, and reports the command's wait status
//! on a pipe to velo, which exits the same way (code, or death by the same signal).
//!
//! Everything after `fork` uses only system calls on buffers prepared before it.

use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the sandbox: {0}")]
    Setup(String),
    #[error("{0}: {1}")]
    Io(&'static str, io::Error),
    #[error("a path contains a NUL byte: {0:?}")]
    Nul(PathBuf),
}

fn cstring(path: &Path) -> Result<CString, Error> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::Nul(path.to_owned()))
}

fn cstr_of(s: String) -> CString {
    CString::new(s).expect("no NUL in generated strings")
}

fn uid_gid() -> (u32, u32) {
    // SAFETY: no preconditions.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// Writes `data` to `path` with raw calls (after fork).
fn write_file(path: &CStr, data: &[u8]) -> bool {
    // SAFETY: open/write/close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize;
        libc::close(fd);
        ok
    }
}

/// The uid/gid map lines for the current process: `inside outside 1`.
struct Maps {
    uid: CString,
    gid: CString,
}

impl Maps {
    fn new(inside_uid: u32, inside_gid: u32) -> Maps {
        let (uid, gid) = uid_gid();
        Maps {
            uid: cstr_of(format!("{inside_uid} {uid} 1\n")),
            gid: cstr_of(format!("{inside_gid} {gid} 1\n")),
        }
    }

    /// After `unshare(CLONE_NEWUSER)`: deny setgroups, then write both maps.
    fn apply(&self) -> io::Result<()> {
        let fail = |what| io::Error::other(format!("{what}: {}", io::Error::last_os_error()));
        if !write_file(c"/proc/self/setgroups", b"deny") {
            return Err(fail("writing /proc/self/setgroups"));
        }
        if !write_file(c"/proc/self/uid_map", self.uid.as_bytes()) {
            return Err(fail("writing /proc/self/uid_map"));
        }
        if !write_file(c"/proc/self/gid_map", self.gid.as_bytes()) {
            return Err(fail("writing /proc/self/gid_map"));
        }
        Ok(())
    }
}

fn overlay_options(lower: &Path, upper: &Path, work: &Path) -> Result<CString, Error> {
    let mut opts = b"lowerdir=".to_vec();
    for (path, key) in [
        (lower, &b",upperdir="[..]),
        (upper, b",workdir="),
        (work, b""),
    ] {
        let bytes = path.as_os_str().as_bytes();
        // OverlayFS splits options on `,` and lower dirs on `:`; escape both.
        for &b in bytes {
            if matches!(b, b',' | b':' | b'\\') {
                opts.push(b'\\');
            }
            opts.push(b);
        }
        opts.extend_from_slice(key);
    }
    CString::new(opts).map_err(|_| Error::Nul(lower.to_owned()))
}

fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Farm mode: arranges for `cmd` to run in a private mount namespace where `farm` is covered by
/// an overlay (upper `upper`, work dir `work`, both empty, on one filesystem), starting in
/// `workdir` (resolved after the mount, so a directory inside the farm is the overlay's).
pub fn cover_farm(
    cmd: &mut Command,
    farm: &Path,
    upper: &Path,
    work: &Path,
    workdir: &Path,
) -> Result<(), Error> {
    let target = cstring(farm)?;
    let options = overlay_options(farm, upper, work)?;
    let workdir = cstring(workdir)?;
    let (uid, gid) = uid_gid();
    let maps = (uid != 0).then(|| Maps::new(uid, gid));
    // SAFETY: the closure runs between fork and exec and only makes system calls on buffers
    // captured by move.
    unsafe {
        cmd.pre_exec(move || {
            let flags = if maps.is_some() {
                libc::CLONE_NEWUSER | libc::CLONE_NEWNS
            } else {
                libc::CLONE_NEWNS
            };
            if libc::unshare(flags) != 0 {
                return Err(os_err("unshare(mount namespace)"));
            }
            if let Some(maps) = &maps {
                maps.apply()?;
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(os_err("making / private"));
            }
            if libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                options.as_ptr().cast(),
            ) != 0
            {
                return Err(os_err("mounting the overlay over the farm"));
            }
            if libc::chdir(workdir.as_ptr()) != 0 {
                return Err(os_err("entering the working directory"));
            }
            Ok(())
        });
    }
    Ok(())
}

/// What `--isolate` runs.
pub struct Isolate {
    /// The merged farm: the overlay's lower layer.
    pub farm: PathBuf,
    /// An empty host directory: a tmpfs covers it inside the namespace and holds the new
    /// root's mountpoint (`root/`) and, without `keep_upper`, the upper and work dirs.
    pub scratch: PathBuf,
    /// `--keep-upper DIR` and a work dir on the same filesystem; `None`: a private tmpfs.
    pub keep_upper: Option<(PathBuf, PathBuf)>,
    /// Working directory inside the sandbox.
    pub workdir: PathBuf,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub net_none: bool,
}

/// How the sandboxed command ended.
pub enum Outcome {
    /// The raw wait status of the command.
    Exited(libc::c_int),
    /// The command could not be started inside the sandbox.
    ExecFailed(io::Error),
}

struct Prepared {
    mountpoint: CString,
    scratch: CString,
    options: CString,
    upper_dirs: Option<(CString, CString)>,
    root_paths: [CString; 4],
    devices: Vec<(CString, CString)>,
    dev_links: Vec<(CString, CString)>,
    tmp: CString,
    workdir: CString,
    /// Owns what `argv_ptrs` points to.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// Owns what `env_ptrs` points to.
    _env: Vec<CString>,
    env_ptrs: Vec<*const libc::c_char>,
    maps: Maps,
    namespaces: libc::c_int,
}

const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn prepare(spec: &Isolate) -> Result<Prepared, Error> {
    let scratch = &spec.scratch;
    let root = &scratch.join("root");
    let (upper, work) = match &spec.keep_upper {
        Some((upper, work)) => (upper.clone(), work.clone()),
        None => (scratch.join("upper"), scratch.join("work")),
    };
    let options = overlay_options(&spec.farm, &upper, &work)?;
    let at = |rel: &str| cstring(&root.join(rel));
    let devices = DEVICES
        .iter()
        .map(|d| Ok((cstr_of(format!("/dev/{d}")), at(&format!("dev/{d}"))?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let dev_links = [
        ("/proc/self/fd", "dev/fd"),
        ("/proc/self/fd/0", "dev/stdin"),
        ("/proc/self/fd/1", "dev/stdout"),
        ("/proc/self/fd/2", "dev/stderr"),
    ]
    .iter()
    .map(|(target, rel)| Ok((cstr_of((*target).into()), at(rel)?)))
    .collect::<Result<Vec<_>, Error>>()?;
    let argv = spec.argv.clone();
    let mut argv_ptrs: Vec<_> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let env = spec.env.clone();
    let mut env_ptrs: Vec<_> = env.iter().map(|a| a.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    let mut namespaces =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.net_none {
        namespaces |= libc::CLONE_NEWNET;
    }
    Ok(Prepared {
        mountpoint: cstring(root)?,
        scratch: cstring(scratch)?,
        options,
        upper_dirs: match &spec.keep_upper {
            Some(_) => None,
            None => Some((cstring(&upper)?, cstring(&work)?)),
        },
        root_paths: [at("proc")?, at("dev")?, at("tmp")?, at(".oldroot")?],
        devices,
        dev_links,
        tmp: at("tmp")?,
        workdir: cstring(&spec.workdir)?,
        _argv: argv,
        argv_ptrs,
        _env: env,
        env_ptrs,
        maps: Maps::new(0, 0),
        namespaces,
    })
}

/// Reports a failed step from inside the sandbox on `fd` and exits.
fn die(fd: libc::c_int, what: &str) -> ! {
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut msg = [0u8; 256];
    let mut len = 0;
    for part in [b"E".as_slice(), what.as_bytes(), b":"] {
        let n = part.len().min(msg.len() - len - 12);
        msg[len..len + n].copy_from_slice(&part[..n]);
        len += n;
    }
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut v = errno.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    msg[len..len + digits.len() - i].copy_from_slice(&digits[i..]);
    len += digits.len() - i;
    msg[len] = b'\n';
    len += 1;
    // SAFETY: write + _exit are async-signal-safe.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), len);
        libc::_exit(127)
    }
}

fn check(ok: bool, fd: libc::c_int, what: &str) {
    if !ok {
        die(fd, what);
    }
}

static mut COMMAND_PID: libc::pid_t = 0;

extern "C" fn forward_to_command(signal: libc::c_int) {
    // SAFETY: reading a pid written before the handler was installed; kill is async-signal-safe.
    unsafe {
        let pid = COMMAND_PID;
        if pid > 0 {
            libc::kill(pid, signal);
        }
    }
}

/// Runs `spec` in the sandbox and returns how the command ended. The caller forwards its own
/// signals to the returned helper pid while waiting (see [`wait`]).
pub fn spawn_isolated(spec: &Isolate) -> Result<(libc::pid_t, OwnedFd), Error> {
    let p = prepare(spec)?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::Io(
            "creating the report pipe",
            io::Error::last_os_error(),
        ));
    }
    let (read_end, report) = (fds[0], fds[1]);
    // SAFETY: fork; the child only makes system calls on the prepared buffers.
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        return Err(Error::Io("fork", io::Error::last_os_error()));
    }
    if helper == 0 {
        // SAFETY: we are the forked helper; see the module docs for the sequence.
        unsafe { helper_main(&p, report) }
    }
    // SAFETY: closing our copy of the write end; the read end is ours.
    unsafe { libc::close(report) };
    Ok((helper, unsafe { OwnedFd::from_raw_fd(read_end) }))
}

/// The helper: user namespace, the other namespaces, then init.
unsafe fn helper_main(p: &Prepared, report: libc::c_int) -> ! {
    // SAFETY: system calls on prepared buffers (module docs).
    unsafe {
        check(
            libc::unshare(libc::CLONE_NEWUSER) == 0,
            report,
            "unshare(user namespace)",
        );
        check(
            p.maps.apply().is_ok(),
            report,
            "mapping uid/gid 0 (/proc/self/uid_map)",
        );
        check(
            libc::unshare(p.namespaces) == 0,
            report,
            "unshare(mount, pid, uts, ipc namespaces)",
        );
        let init = libc::fork();
        check(init >= 0, report, "fork(init)");
        if init == 0 {
            init_main(p, report);
        }
        // Relay signals to init, wait for it, and leave: the report comes from init.
        COMMAND_PID = init;
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(
                sig,
                forward_to_command as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
        let mut status = 0;
        while libc::waitpid(init, &mut status, 0) < 0 {}
        libc::_exit(0)
    }
}

/// PID 1: build the root, start the command, reap, report.
unsafe fn init_main(p: &Prepared, report: libc::c_int) -> ! {
    // SAFETY: system calls on prepared buffers (module docs).
    unsafe {
        let null = std::ptr::null::<libc::c_char>();
        check(
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                null.cast(),
            ) == 0,
            report,
            "making / private",
        );
        check(
            libc::mount(
                c"tmpfs".as_ptr(),
                p.scratch.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"mode=700".as_ptr().cast(),
            ) == 0,
            report,
            "mounting the scratch tmpfs",
        );
        check(
            libc::mkdir(p.mountpoint.as_ptr(), 0o755) == 0,
            report,
            "creating the root's mountpoint",
        );
        if let Some((upper, work)) = &p.upper_dirs {
            check(
                libc::mkdir(upper.as_ptr(), 0o755) == 0,
                report,
                "creating the upper dir",
            );
            check(
                libc::mkdir(work.as_ptr(), 0o700) == 0,
                report,
                "creating the work dir",
            );
        }
        check(
            libc::mount(
                c"overlay".as_ptr(),
                p.mountpoint.as_ptr(),
                c"overlay".as_ptr(),
                0,
                p.options.as_ptr().cast(),
            ) == 0,
            report,
            "mounting the overlay root",
        );
        for dir in &p.root_paths {
            let r = libc::mkdir(dir.as_ptr(), 0o755);
            check(
                r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EEXIST),
                report,
                "creating /proc, /dev, /tmp",
            );
        }
        check(
            libc::mount(
                c"proc".as_ptr(),
                p.root_paths[0].as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                null.cast(),
            ) == 0,
            report,
            "mounting /proc",
        );
        check(
            libc::mount(
                c"tmpfs".as_ptr(),
                p.root_paths[1].as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                c"mode=755".as_ptr().cast(),
            ) == 0,
            report,
            "mounting /dev",
        );
        for (host, inside) in &p.devices {
            let fd = libc::open(
                inside.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o666,
            );
            check(fd >= 0, report, "creating a /dev node");
            libc::close(fd);
            // A missing host device (no /dev/tty without a terminal) is left as an empty file.
            libc::mount(
                host.as_ptr(),
                inside.as_ptr(),
                null,
                libc::MS_BIND,
                null.cast(),
            );
        }
        for (target, link) in &p.dev_links {
            check(
                libc::symlink(target.as_ptr(), link.as_ptr()) == 0,
                report,
                "creating /dev links",
            );
        }
        check(
            libc::mount(
                c"tmpfs".as_ptr(),
                p.tmp.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                c"mode=1777".as_ptr().cast(),
            ) == 0,
            report,
            "mounting /tmp",
        );
        check(
            libc::sethostname(c"velo".as_ptr(), 4) == 0,
            report,
            "sethostname",
        );
        check(
            libc::chdir(p.mountpoint.as_ptr()) == 0,
            report,
            "entering the new root",
        );
        check(
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".oldroot".as_ptr()) == 0,
            report,
            "pivot_root",
        );
        check(libc::chdir(c"/".as_ptr()) == 0, report, "chdir /");
        check(
            libc::umount2(c"/.oldroot".as_ptr(), libc::MNT_DETACH) == 0,
            report,
            "detaching the old root",
        );
        check(
            libc::rmdir(c"/.oldroot".as_ptr()) == 0,
            report,
            "removing /.oldroot",
        );
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0,
            report,
            "no_new_privs",
        );

        // Init holds host resources the command must never reach through
        // `/proc/1/{fd,mem,environ,exe,root,cwd}`: close every descriptor but stdio and the
        // report pipe, and make init undumpable, which puts all of `/proc/1` out of reach of
        // anything without CAP_SYS_PTRACE in the host's user namespace (the command has
        // capabilities only in the sandbox's). The command's own exec makes it dumpable again.
        close_all_but_stdio_and(report);
        check(
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) == 0,
            report,
            "making init undumpable",
        );
        let command = libc::fork();
        check(command >= 0, report, "fork(command)");
        if command == 0 {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            check(
                libc::chdir(p.workdir.as_ptr()) == 0,
                report,
                "entering the working directory",
            );
            libc::execvpe(p.argv_ptrs[0], p.argv_ptrs.as_ptr(), p.env_ptrs.as_ptr());
            die(report, "exec");
        }
        COMMAND_PID = command;
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(
                sig,
                forward_to_command as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
        // Reap everything; report when the command itself ends.
        loop {
            let mut status = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == command {
                let mut msg = [0u8; 5];
                msg[0] = b'S';
                msg[1..].copy_from_slice(&status.to_le_bytes());
                libc::write(report, msg.as_ptr().cast(), msg.len());
                libc::_exit(0);
            }
            if pid < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                die(report, "waiting for the command");
            }
        }
    }
}

/// Closes every descriptor above stderr except `keep` (raw `close_range`, after fork).
unsafe fn close_all_but_stdio_and(keep: libc::c_int) {
    let keep = keep as libc::c_uint;
    // SAFETY: close_range only closes descriptors; none below is used again but `keep`.
    unsafe {
        if keep > 3 {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                keep - 1,
                0 as libc::c_uint,
            );
        }
        libc::syscall(
            libc::SYS_close_range,
            keep + 1,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
    }
}

/// Waits for the helper and reads the report: the command's wait status, or the setup error.
pub fn wait(helper: libc::pid_t, report: OwnedFd) -> Result<Outcome, Error> {
    let mut bytes = Vec::new();
    let mut file = std::fs::File::from(report);
    let read = file.read_to_end(&mut bytes);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(helper, &mut status, 0) } < 0 {
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    read.map_err(|e| Error::Io("reading the sandbox report", e))?;
    match bytes.first() {
        Some(b'S') if bytes.len() == 5 => Ok(Outcome::Exited(i32::from_le_bytes(
            bytes[1..5].try_into().expect("4 bytes"),
        ))),
        Some(b'E') => {
            // `E<step>:<errno>\n`, possibly followed by the status of a command that failed.
            let line = bytes[1..].split(|&b| b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let (step, errno) = line.rsplit_once(':').unwrap_or((&line, "0"));
            let err = io::Error::from_raw_os_error(errno.parse().unwrap_or(0));
            if step == "exec" {
                return Ok(Outcome::ExecFailed(err));
            }
            Err(Error::Setup(format!("{step}: {err}")))
        }
        _ => Err(Error::Setup(format!(
            "the sandbox helper ended without a report (wait status {status})"
        ))),
    }
}
