//! The file syscalls a tracer watches, and where their path arguments are.
//!
//! Names are the kernel's (`newfstatat`, not `fstatat64`): the interception table lists, per
//! libc entry point, the syscalls it ends in, under these names.

/// Where one path argument is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathArg {
    /// The argument holding the path pointer.
    pub arg: usize,
    /// The argument holding the directory descriptor it is relative to (`*at` calls).
    pub dirfd: Option<usize>,
}

/// A path the syscall writes back to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    Nothing,
    /// A NUL-terminated path in the buffer at this argument (`getcwd`).
    CString(usize),
    /// `ret` bytes in the buffer at this argument (`readlink`).
    Counted(usize),
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub paths: &'static [PathArg],
    pub returns: Returns,
}

const fn at(arg: usize) -> PathArg {
    PathArg { arg, dirfd: None }
}

const fn rel(dirfd: usize, arg: usize) -> PathArg {
    PathArg {
        arg,
        dirfd: Some(dirfd),
    }
}

const fn spec(name: &'static str, paths: &'static [PathArg]) -> Spec {
    Spec {
        name,
        paths,
        returns: Returns::Nothing,
    }
}

/// `(number, spec)` for x86_64.
#[cfg(target_arch = "x86_64")]
pub fn table() -> &'static [(i64, Spec)] {
    use libc::*;
    const P0: &[PathArg] = &[at(0)];
    const P01: &[PathArg] = &[at(0), at(1)];
    const D01: &[PathArg] = &[rel(0, 1)];
    const RENAMEAT: &[PathArg] = &[rel(0, 1), rel(2, 3)];
    const SYMLINK: &[PathArg] = &[at(1)];
    const SYMLINKAT: &[PathArg] = &[rel(1, 2)];
    const NONE: &[PathArg] = &[];
    static TABLE: &[(i64, Spec)] = &[
        (SYS_open, spec("open", P0)),
        (SYS_openat, spec("openat", D01)),
        (SYS_openat2, spec("openat2", D01)),
        (SYS_creat, spec("creat", P0)),
        (SYS_stat, spec("stat", P0)),
        (SYS_lstat, spec("lstat", P0)),
        (SYS_newfstatat, spec("newfstatat", D01)),
        (SYS_statx, spec("statx", D01)),
        (SYS_access, spec("access", P0)),
        (SYS_faccessat, spec("faccessat", D01)),
        (SYS_faccessat2, spec("faccessat2", D01)),
        (SYS_mkdir, spec("mkdir", P0)),
        (SYS_mkdirat, spec("mkdirat", D01)),
        (SYS_rmdir, spec("rmdir", P0)),
        (SYS_unlink, spec("unlink", P0)),
        (SYS_unlinkat, spec("unlinkat", D01)),
        (SYS_rename, spec("rename", P01)),
        (SYS_renameat, spec("renameat", RENAMEAT)),
        (SYS_renameat2, spec("renameat2", RENAMEAT)),
        (SYS_link, spec("link", P01)),
        (SYS_linkat, spec("linkat", RENAMEAT)),
        (SYS_symlink, spec("symlink", SYMLINK)),
        (SYS_symlinkat, spec("symlinkat", SYMLINKAT)),
        (
            SYS_readlink,
            Spec {
                name: "readlink",
                paths: P0,
                returns: Returns::Counted(1),
            },
        ),
        (
            SYS_readlinkat,
            Spec {
                name: "readlinkat",
                paths: D01,
                returns: Returns::Counted(2),
            },
        ),
        (SYS_chdir, spec("chdir", P0)),
        // No path, but it moves the working directory relative paths are resolved against.
        (SYS_fchdir, spec("fchdir", NONE)),
        (SYS_chmod, spec("chmod", P0)),
        (SYS_fchmodat, spec("fchmodat", D01)),
        (SYS_chown, spec("chown", P0)),
        (SYS_lchown, spec("lchown", P0)),
        (SYS_fchownat, spec("fchownat", D01)),
        (SYS_truncate, spec("truncate", P0)),
        (SYS_utimensat, spec("utimensat", D01)),
        (SYS_utimes, spec("utimes", P0)),
        (SYS_utime, spec("utime", P0)),
        (SYS_statfs, spec("statfs", P0)),
        (SYS_getxattr, spec("getxattr", P0)),
        (SYS_lgetxattr, spec("lgetxattr", P0)),
        (SYS_setxattr, spec("setxattr", P0)),
        (SYS_lsetxattr, spec("lsetxattr", P0)),
        (SYS_listxattr, spec("listxattr", P0)),
        (SYS_llistxattr, spec("llistxattr", P0)),
        (SYS_removexattr, spec("removexattr", P0)),
        (SYS_lremovexattr, spec("lremovexattr", P0)),
        (SYS_mknod, spec("mknod", P0)),
        (SYS_mknodat, spec("mknodat", D01)),
        (SYS_execve, spec("execve", P0)),
        (SYS_execveat, spec("execveat", D01)),
        // Path calls the shim does not hook yet (the table's candidates): seen, they become
        // suggestions of `velo audit`.
        (SYS_inotify_add_watch, spec("inotify_add_watch", &[at(1)])),
        (SYS_name_to_handle_at, spec("name_to_handle_at", D01)),
        (SYS_chroot, spec("chroot", P0)),
        (SYS_mount, spec("mount", P01)),
        (SYS_umount2, spec("umount2", P0)),
        (SYS_acct, spec("acct", P0)),
        (SYS_swapon, spec("swapon", P0)),
        (
            SYS_getcwd,
            Spec {
                name: "getcwd",
                paths: NONE,
                returns: Returns::CString(0),
            },
        ),
    ];
    TABLE
}

/// Calls that change which file a descriptor names: the eBPF backend follows them to resolve
/// `*at` paths against directory descriptors without reading `/proc` (they are not path calls,
/// so they are not in [`table`]).
#[cfg(target_arch = "x86_64")]
pub const DESCRIPTOR_CALLS: [i64; 6] = [
    libc::SYS_close,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_close_range,
];

/// Whether the call `name` with raw arguments `args` opens its path for writing.
pub fn opens_for_writing(name: &str, args: &[u64; 6]) -> bool {
    let flags = match name {
        "creat" => return true,
        "open" => args[1],
        "openat" => args[2],
        // openat2's flags are in a struct in the tracee's memory; not read.
        _ => return false,
    } as i32;
    flags & (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) != 0
}

/// The spec of syscall `nr`.
#[cfg(target_arch = "x86_64")]
pub fn lookup(nr: i64) -> Option<&'static Spec> {
    // Indexed by number: the eBPF reader looks up every record it reads.
    static BY_NUMBER: std::sync::OnceLock<Vec<Option<&'static Spec>>> = std::sync::OnceLock::new();
    let by_number = BY_NUMBER.get_or_init(|| {
        let mut v = vec![None; 512];
        for (n, spec) in table() {
            v[*n as usize] = Some(spec);
        }
        v
    });
    by_number.get(usize::try_from(nr).ok()?).copied().flatten()
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Syscalls glibc has no wrapper for (only a raw `syscall()` reaches them), or whose
    /// wrapper glibc no longer uses (it opens with openat, not creat).
    const NO_LIBC_ENTRY_POINT: &[&str] = &["openat2", "creat"];

    #[test]
    fn every_name_is_unique_and_path_syscalls_are_in_the_interception_table() {
        let mut names: Vec<_> = table().iter().map(|(_, s)| s.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        // The syscalls glibc really uses for the hooked calls must have entry points, or the
        // analysis could not say which function to fix.
        for name in [
            "openat",
            "newfstatat",
            "statx",
            "faccessat",
            "readlinkat",
            "getcwd",
        ] {
            assert!(names.contains(&name), "{name}");
            assert!(
                velo_intercept::table::TABLE
                    .iter()
                    .any(|e| e.syscalls.contains(&name)),
                "{name} ends no table entry"
            );
        }
        // Every path syscall traced ends some row or candidate, so an uncaught one can be
        // explained.
        let unexplained: Vec<&str> = table()
            .iter()
            .map(|(_, spec)| spec)
            .filter(|spec| !spec.paths.is_empty() && !NO_LIBC_ENTRY_POINT.contains(&spec.name))
            .filter(|spec| {
                !velo_intercept::table::TABLE
                    .iter()
                    .chain(velo_intercept::table::CANDIDATES)
                    .any(|e| e.syscalls.contains(&spec.name))
            })
            .map(|spec| spec.name)
            .collect();
        assert!(
            unexplained.is_empty(),
            "these syscalls end no table row or candidate: {unexplained:?}"
        );
    }
}
