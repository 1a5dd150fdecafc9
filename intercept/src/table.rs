//! The interception table: every libc entry point the shim exports.
//!
//! One row per symbol: the platform it is exported on, which of its arguments (or its return
//! value) are paths and which way each is translated, and the raw syscalls the call ends in on
//! that platform. Three readers depend on it:
//!
//! - a test reads the dynamic symbols of the built `libvelo_shim.so` and fails if an export is
//!   missing here or a Linux row is not exported, so the table cannot drift from the code;
//! - the tracer (`velo trace`) maps a syscall that reached the kernel with a canonical path back
//!   to the entry points that should have translated it ([`entry_points_for`]);
//! - `velo audit` proposes new rows from what the tracer saw.
//!
//! How to add a row (docs/interception.md has the long version): write the hook in
//! `shim/src/hooks/`, add its row here with the same argument positions, rebuild, run the tests.

/// Where a symbol is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    Linux,
    MacOs,
}

/// Which way a path crosses the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Canonical → physical before the call (a path the program passes in).
    In,
    /// Physical → canonical after the call (a path the call hands back).
    Out,
    /// Both: a buffer passed in and rewritten (a `mkstemp` template).
    Both,
}

/// Where the path is: an argument (0-based) or the return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    Arg(u8),
    Return,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PathArg {
    pub slot: Slot,
    pub direction: Direction,
}

/// One intercepted entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub symbol: &'static str,
    pub platform: Platform,
    pub paths: &'static [PathArg],
    /// Raw syscalls (by their kernel names) the call can end in.
    pub syscalls: &'static [&'static str],
    /// Whether the hook also carries the projection into a new program (`LD_PRELOAD`, the
    /// `VRIFT_*` variables, a translated `LD_LIBRARY_PATH`).
    pub propagates: bool,
    /// Mode B (`velo run --mode shim`): the hook answers for descriptors or directory streams
    /// of the virtual tree (`fstat`, `readdir`, `dup`, …); no path crosses it.
    pub descriptor: bool,
    /// What the call does to the paths it is given; in Mode B only a [`Class::Read`] call is
    /// ever handed a blob's backing path (see [`class_of`]).
    pub class: Class,
}

/// What a call does to the paths it is given. Every row says it: there is no default, so a new
/// write hook cannot be taken for a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Leaves the file system as it is (`stat`, `open`: an open's flags are checked by its hook).
    Read,
    /// Changes a file or a name (`mkdir`, `chmod`, `rename`, `truncate`, `mkstemp`).
    Write,
    /// Removes a name (`unlink`, `rmdir`): with `--upper`, a tree entry recorded as deleted.
    Delete,
}

impl Entry {
    /// The row as it is written in this file (displayed), for `velo audit --suggest-table`.
    pub fn source_row(&self) -> SourceRow<'_> {
        SourceRow(self)
    }

    /// The overall direction: `Both` when paths cross in both directions.
    pub fn direction(&self) -> Option<Direction> {
        let has = |d| {
            self.paths
                .iter()
                .any(|p| p.direction == d || p.direction == Direction::Both)
        };
        match (has(Direction::In), has(Direction::Out)) {
            (true, true) => Some(Direction::Both),
            (true, false) => Some(Direction::In),
            (false, true) => Some(Direction::Out),
            (false, false) => None,
        }
    }
}

/// An [`Entry`] written as a row of [`TABLE`].
pub struct SourceRow<'a>(&'a Entry);

impl core::fmt::Display for SourceRow<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let e = self.0;
        let constructor = match (e.platform, e.propagates, e.descriptor) {
            (Platform::Linux, _, true) => "linux_fd",
            (Platform::Linux, false, false) => "linux",
            (Platform::Linux, true, false) => "linux_exec",
            (Platform::MacOs, _, _) => "macos",
        };
        write!(f, "{constructor}({:?}, &[", e.symbol)?;
        for (i, p) in e.paths.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            match p.slot {
                Slot::Arg(n) => write!(f, "{sep}p(Arg({n}), {:?})", p.direction)?,
                Slot::Return => write!(f, "{sep}p(Return, {:?})", p.direction)?,
            }
        }
        f.write_str("], &[")?;
        for (i, s) in e.syscalls.iter().enumerate() {
            let sep = if i > 0 { ", " } else { "" };
            write!(f, "{sep}{s:?}")?;
        }
        if e.descriptor {
            f.write_str("]),")
        } else {
            write!(f, "], {:?}),", e.class)
        }
    }
}

const fn p(slot: Slot, direction: Direction) -> PathArg {
    PathArg { slot, direction }
}

use Class::{Delete, Read, Write};
use Direction::{Both, In, Out};
use Slot::{Arg, Return};

// The path shapes the rows share.
const IN0: &[PathArg] = &[p(Arg(0), In)];
const IN1: &[PathArg] = &[p(Arg(1), In)];
const IN2: &[PathArg] = &[p(Arg(2), In)];
const IN0_IN1: &[PathArg] = &[p(Arg(0), In), p(Arg(1), In)];
const IN0_IN2: &[PathArg] = &[p(Arg(0), In), p(Arg(2), In)];
const IN1_IN3: &[PathArg] = &[p(Arg(1), In), p(Arg(3), In)];
const TEMPLATE: &[PathArg] = &[p(Arg(0), Both)];
const TEMPLATE_RET: &[PathArg] = &[p(Arg(0), Both), p(Return, Out)];
const READLINK: &[PathArg] = &[p(Arg(0), In), p(Arg(1), Out)];
const READLINKAT: &[PathArg] = &[p(Arg(1), In), p(Arg(2), Out)];
const REALPATH: &[PathArg] = &[p(Arg(0), In), p(Arg(1), Out), p(Return, Out)];
const CANONICALIZE: &[PathArg] = &[p(Arg(0), In), p(Return, Out)];
const GETCWD: &[PathArg] = &[p(Arg(0), Out), p(Return, Out)];
const RET: &[PathArg] = &[p(Return, Out)];
const NONE: &[PathArg] = &[];

const fn linux(
    symbol: &'static str,
    paths: &'static [PathArg],
    syscalls: &'static [&'static str],
    class: Class,
) -> Entry {
    Entry {
        symbol,
        platform: Platform::Linux,
        paths,
        syscalls,
        propagates: false,
        descriptor: false,
        class,
    }
}

/// A Mode B descriptor hook (see [`Entry::descriptor`]): no path crosses it, so it reads.
const fn linux_fd(symbol: &'static str, syscalls: &'static [&'static str]) -> Entry {
    Entry {
        descriptor: true,
        ..linux(symbol, NONE, syscalls, Read)
    }
}

const fn linux_exec(
    symbol: &'static str,
    paths: &'static [PathArg],
    syscalls: &'static [&'static str],
    class: Class,
) -> Entry {
    Entry {
        propagates: true,
        ..linux(symbol, paths, syscalls, class)
    }
}

const fn macos(
    symbol: &'static str,
    paths: &'static [PathArg],
    syscalls: &'static [&'static str],
    class: Class,
) -> Entry {
    Entry {
        platform: Platform::MacOs,
        ..linux(symbol, paths, syscalls, class)
    }
}

const OPEN: &[&str] = &["openat", "open"];
const STAT: &[&str] = &["newfstatat", "statx", "stat", "lstat"];
const ACCESS: &[&str] = &["faccessat2", "faccessat", "access"];
const UTIMES: &[&str] = &["utimensat"];
const EXEC: &[&str] = &["execve"];
const SPAWN: &[&str] = &["clone3", "clone", "vfork", "execve"];

/// Every entry point, sorted by platform and symbol.
pub const TABLE: &[Entry] = &[
    linux_fd("__fxstat", &["fstat"]),
    linux_fd("__fxstat64", &["fstat"]),
    linux("__fxstatat", IN2, STAT, Read),
    linux("__fxstatat64", IN2, STAT, Read),
    linux("__getcwd_chk", GETCWD, &["getcwd"], Read),
    linux("__lxstat", IN1, STAT, Read),
    linux("__lxstat64", IN1, STAT, Read),
    linux("__open64_2", IN0, OPEN, Read),
    linux("__open_2", IN0, OPEN, Read),
    linux("__openat64_2", IN1, OPEN, Read),
    linux("__openat_2", IN1, OPEN, Read),
    linux(
        "__readlink_chk",
        READLINK,
        &["readlink", "readlinkat"],
        Read,
    ),
    linux("__readlinkat_chk", READLINKAT, &["readlinkat"], Read),
    linux(
        "__realpath_chk",
        REALPATH,
        &["readlink", "newfstatat", "getcwd"],
        Read,
    ),
    linux("__xstat", IN1, STAT, Read),
    linux("__xstat64", IN1, STAT, Read),
    linux("access", IN0, ACCESS, Read),
    linux(
        "canonicalize_file_name",
        CANONICALIZE,
        &["readlink", "newfstatat", "getcwd"],
        Read,
    ),
    linux("chdir", IN0, &["chdir"], Read),
    linux("chmod", IN0, &["fchmodat", "chmod"], Write),
    linux("chown", IN0, &["fchownat", "chown"], Write),
    linux_fd("close", &["close"]),
    linux_fd("closedir", &["close"]),
    linux("creat", IN0, OPEN, Write),
    linux("creat64", IN0, OPEN, Write),
    linux_fd("dirfd", &[]),
    linux("dlmopen", IN1, OPEN, Read),
    linux("dlopen", IN0, OPEN, Read),
    linux_fd("dup", &["dup"]),
    linux_fd("dup2", &["dup2", "dup3"]),
    linux_fd("dup3", &["dup3"]),
    linux("eaccess", IN0, ACCESS, Read),
    linux("euidaccess", IN0, ACCESS, Read),
    linux_exec("execl", IN0, EXEC, Read),
    linux_exec("execle", IN0, EXEC, Read),
    linux_exec("execlp", IN0, EXEC, Read),
    linux_exec("execv", IN0, EXEC, Read),
    linux_exec("execve", IN0, EXEC, Read),
    linux_exec("execveat", IN1, &["execveat"], Read),
    linux_exec("execvp", IN0, EXEC, Read),
    linux_exec("execvpe", IN0, EXEC, Read),
    linux("faccessat", IN1, ACCESS, Read),
    linux_fd("fchdir", &["fchdir"]),
    linux("fchmodat", IN1, &["fchmodat", "fchmodat2"], Write),
    linux("fchownat", IN1, &["fchownat"], Write),
    linux_fd("fcntl", &["fcntl"]),
    linux_fd("fcntl64", &["fcntl"]),
    linux_fd("fdopendir", &["fcntl", "newfstatat"]),
    linux_exec("fexecve", NONE, &["execveat", "execve"], Read),
    linux("fopen", IN0, OPEN, Read),
    linux("fopen64", IN0, OPEN, Read),
    linux("freopen", IN0, OPEN, Read),
    linux("freopen64", IN0, OPEN, Read),
    linux_fd("fstat", &["fstat", "newfstatat"]),
    linux_fd("fstat64", &["fstat", "newfstatat"]),
    linux("fstatat", IN1, STAT, Read),
    linux("fstatat64", IN1, STAT, Read),
    linux("futimesat", IN1, &["futimesat"], Write),
    linux("get_current_dir_name", RET, &["getcwd", "newfstatat"], Read),
    linux("getcwd", GETCWD, &["getcwd"], Read),
    linux("getxattr", IN0, &["getxattr"], Read),
    linux("lchmod", IN0, &["fchmodat", "fchmodat2"], Write),
    linux("lchown", IN0, &["fchownat", "lchown"], Write),
    linux("lgetxattr", IN0, &["lgetxattr"], Read),
    linux("link", IN0_IN1, &["linkat", "link"], Write),
    linux("linkat", IN1_IN3, &["linkat"], Write),
    linux("listxattr", IN0, &["listxattr"], Read),
    linux("llistxattr", IN0, &["llistxattr"], Read),
    linux("lremovexattr", IN0, &["lremovexattr"], Write),
    linux("lsetxattr", IN0, &["lsetxattr"], Write),
    linux("lstat", IN0, STAT, Read),
    linux("lstat64", IN0, STAT, Read),
    linux("lutimes", IN0, UTIMES, Write),
    linux("mkdir", IN0, &["mkdirat", "mkdir"], Write),
    linux("mkdirat", IN1, &["mkdirat"], Write),
    linux("mkdtemp", TEMPLATE_RET, &["mkdirat", "mkdir"], Write),
    linux("mkfifo", IN0, &["mknodat", "mknod"], Write),
    linux("mkfifoat", IN1, &["mknodat"], Write),
    linux("mknod", IN0, &["mknodat", "mknod"], Write),
    linux("mknodat", IN1, &["mknodat"], Write),
    linux("mkostemp", TEMPLATE, OPEN, Write),
    linux("mkostemp64", TEMPLATE, OPEN, Write),
    linux("mkostemps", TEMPLATE, OPEN, Write),
    linux("mkostemps64", TEMPLATE, OPEN, Write),
    linux("mkstemp", TEMPLATE, OPEN, Write),
    linux("mkstemp64", TEMPLATE, OPEN, Write),
    linux("mkstemps", TEMPLATE, OPEN, Write),
    linux("mkstemps64", TEMPLATE, OPEN, Write),
    linux("open", IN0, OPEN, Read),
    linux("open64", IN0, OPEN, Read),
    linux("openat", IN1, OPEN, Read),
    linux("openat64", IN1, OPEN, Read),
    linux("opendir", IN0, OPEN, Read),
    linux("pathconf", IN0, &["statfs"], Read),
    linux_exec("posix_spawn", IN1, SPAWN, Read),
    linux(
        "posix_spawn_file_actions_addchdir_np",
        IN1,
        &["chdir"],
        Read,
    ),
    linux("posix_spawn_file_actions_addopen", IN2, OPEN, Write),
    linux_exec("posix_spawnp", IN1, SPAWN, Read),
    linux_fd("readdir", &["getdents64"]),
    linux_fd("readdir64", &["getdents64"]),
    linux("readlink", READLINK, &["readlink", "readlinkat"], Read),
    linux("readlinkat", READLINKAT, &["readlinkat"], Read),
    linux(
        "realpath",
        REALPATH,
        &["readlink", "newfstatat", "getcwd"],
        Read,
    ),
    linux("remove", IN0, &["unlink", "rmdir", "unlinkat"], Delete),
    linux("removexattr", IN0, &["removexattr"], Write),
    linux(
        "rename",
        IN0_IN1,
        &["rename", "renameat", "renameat2"],
        Write,
    ),
    linux("renameat", IN1_IN3, &["renameat", "renameat2"], Write),
    linux("renameat2", IN1_IN3, &["renameat2"], Write),
    linux_fd("rewinddir", &["lseek"]),
    linux("rmdir", IN0, &["rmdir", "unlinkat"], Delete),
    linux("scandir", IN0, OPEN, Read),
    linux("scandir64", IN0, OPEN, Read),
    linux_fd("seekdir", &["lseek"]),
    linux("setxattr", IN0, &["setxattr"], Write),
    linux("stat", IN0, STAT, Read),
    linux("stat64", IN0, STAT, Read),
    linux("statfs", IN0, &["statfs"], Read),
    linux("statfs64", IN0, &["statfs"], Read),
    linux("statvfs", IN0, &["statfs"], Read),
    linux("statvfs64", IN0, &["statfs"], Read),
    linux("statx", IN1, &["statx"], Read),
    linux("symlink", IN0_IN1, &["symlinkat", "symlink"], Write),
    linux("symlinkat", IN0_IN2, &["symlinkat"], Write),
    linux_fd("telldir", &[]),
    linux("truncate", IN0, &["truncate"], Write),
    linux("truncate64", IN0, &["truncate"], Write),
    linux("unlink", IN0, &["unlink", "unlinkat"], Delete),
    linux("unlinkat", IN1, &["unlinkat"], Delete),
    // Older glibc (and static binaries) make the historical syscalls.
    linux("utime", IN0, &["utimensat", "utime"], Write),
    linux("utimensat", IN1, UTIMES, Write),
    linux("utimes", IN0, &["utimensat", "utimes"], Write),
    // macOS (`DYLD_INSERT_LIBRARIES` + `__interpose`): the calls the seed names as critical.
    macos("chdir", IN0, &["chdir"], Read),
    macos("clonefileat", IN1_IN3, &["clonefileat"], Read),
    macos("fcntl", &[p(Arg(2), Out)], &["fcntl"], Read),
    macos("getattrlist", IN0, &["getattrlist"], Read),
    macos("getcwd", GETCWD, &["__getcwd", "fcntl"], Read),
    macos("lstat", IN0, &["lstat64"], Read),
    macos("open", IN0, &["open"], Read),
    macos("openat", IN1, &["openat"], Read),
    macos("readlink", READLINK, &["readlink"], Read),
    macos(
        "realpath",
        REALPATH,
        &["lstat64", "readlink", "getattrlist"],
        Read,
    ),
    macos("stat", IN0, &["stat64"], Read),
];

/// Libc entry points that take paths but have no hook yet. `velo audit` proposes one of these
/// rows when the tracer sees its syscall reach the kernel with a canonical path from a program
/// that imports it; a test checks the shim exports none of them (a hooked one belongs in
/// [`TABLE`]).
pub const CANDIDATES: &[Entry] = &[
    linux("__xmknod", IN1, &["mknodat", "mknod"], Write),
    linux("__xmknodat", IN2, &["mknodat"], Write),
    linux("acct", IN0, &["acct"], Write),
    linux("chroot", IN0, &["chroot"], Write),
    linux("inotify_add_watch", IN1, &["inotify_add_watch"], Read),
    linux("mount", IN0_IN1, &["mount"], Write),
    linux("name_to_handle_at", IN1, &["name_to_handle_at"], Read),
    linux("swapon", IN0, &["swapon"], Write),
    linux("umount", IN0, &["umount2"], Write),
    linux("umount2", IN0, &["umount2"], Write),
];

/// The class of the Linux hook `symbol`, evaluated at compile time by the shim's hook macros.
/// A hook without a row does not compile (the panic is a const-evaluation error): the class
/// is looked up, never guessed.
pub const fn class_of(symbol: &str) -> Class {
    let mut i = 0;
    while i < TABLE.len() {
        let e = &TABLE[i];
        if matches!(e.platform, Platform::Linux) && const_eq(e.symbol, symbol) {
            return e.class;
        }
        i += 1;
    }
    panic!("a hook has no row in the interception table (intercept/src/table.rs)")
}

/// `a == b` for `&str` in a const context (the shim's hook macros use it at compile time).
pub const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The rows exported on `platform`.
pub fn for_platform(platform: Platform) -> impl Iterator<Item = &'static Entry> {
    TABLE.iter().filter(move |e| e.platform == platform)
}

/// The row for `symbol` on `platform`.
pub fn lookup(platform: Platform, symbol: &str) -> Option<&'static Entry> {
    for_platform(platform).find(|e| e.symbol == symbol)
}

/// The entry points on `platform` that can end in `syscall` and take a path inbound: what the
/// tracer names when a canonical path reaches the kernel through `syscall`.
pub fn entry_points_for(platform: Platform, syscall: &str) -> impl Iterator<Item = &'static Entry> {
    for_platform(platform).filter(move |e| {
        e.syscalls.contains(&syscall)
            && e.paths
                .iter()
                .any(|p| matches!(p.direction, Direction::In | Direction::Both))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_sorted_and_unique_per_platform() {
        for pair in TABLE.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                (a.platform, a.symbol) < (b.platform, b.symbol),
                "{:?}/{} must come before {:?}/{}",
                a.platform,
                a.symbol,
                b.platform,
                b.symbol
            );
        }
    }

    #[test]
    fn every_row_names_syscalls_and_its_paths_are_consistent() {
        for e in TABLE {
            assert!(
                !e.syscalls.is_empty() || e.descriptor,
                "{} names no syscall",
                e.symbol
            );
            assert!(
                e.direction().is_some() || e.propagates || e.descriptor,
                "{} has no path and propagates nothing",
                e.symbol
            );
        }
        assert_eq!(
            lookup(Platform::Linux, "realpath").unwrap().direction(),
            Some(Direction::Both)
        );
        assert_eq!(
            lookup(Platform::Linux, "getcwd").unwrap().direction(),
            Some(Direction::Out)
        );
        assert_eq!(
            lookup(Platform::Linux, "stat").unwrap().direction(),
            Some(Direction::In)
        );
    }

    #[test]
    fn every_hook_has_a_class_and_writes_are_not_reads() {
        assert_eq!(class_of("unlink"), Class::Delete);
        assert_eq!(class_of("mkdir"), Class::Write);
        assert_eq!(class_of("renameat2"), Class::Write);
        assert_eq!(class_of("stat"), Class::Read);
        assert_eq!(class_of("fstat"), Class::Read);
        for e in TABLE.iter().filter(|e| {
            e.syscalls.iter().any(|s| {
                s.starts_with("mkdir") || s.starts_with("unlink") || s.starts_with("rename")
            })
        }) {
            assert_ne!(
                e.class,
                Class::Read,
                "{} changes names but is a read",
                e.symbol
            );
        }
    }

    #[test]
    fn syscalls_map_back_to_entry_points() {
        let names: std::vec::Vec<_> = entry_points_for(Platform::Linux, "chdir")
            .map(|e| e.symbol)
            .collect();
        assert_eq!(names, ["chdir", "posix_spawn_file_actions_addchdir_np"]);
        assert!(
            !entry_points_for(Platform::Linux, "getcwd").any(|e| e.symbol == "getcwd"),
            "getcwd takes no path in"
        );
    }
}
