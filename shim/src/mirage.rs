//! Mode B ("the mirage"): a manifest's tree served straight from the store, with no directory on
//! disk (`velo run --mode shim`, docs/modes.md).
//!
//! velo writes the merged manifest as an *image* (`velo_intercept::mirage`) and starts the
//! command with `VELO_MIRAGE=<image>` and `VELO_MIRAGE_AT=<virtual root>`. The shim maps the image
//! read-only when it loads and from then on answers every path under the virtual root itself:
//!
//! - a **file** is its store blob: `open` returns a descriptor on the blob (read-only), `stat`
//!   and `fstat` report the blob, which is exactly what a link farm shows (its files are hard
//!   links to the same blobs), `exec` and `dlopen` load the blob;
//! - a **directory** exists only in the image: `stat` is synthesized (a private device number,
//!   one inode number per directory, so `find` and `ls -R` see a tree without loops), `opendir`
//!   and `readdir` walk the image ([`crate::hooks::dirs`]), and `open(O_DIRECTORY)` returns a
//!   descriptor on an empty stand-in directory that the fd table below remembers, so `fstat`,
//!   `fdopendir` and `openat(fd, …)` on it are answered from the image too;
//! - a **symlink** is followed inside the tree (an absolute target means the host's path, as in
//!   a farm); `lstat` and `readlink` report the link;
//! - the **working directory** can be virtual: `chdir` into the tree records the path here (the
//!   process's real working directory becomes the stand-in), relative paths resolve against it,
//!   and `getcwd` returns it; exec hands it to the next program in `VELO_MIRAGE_CWD`;
//! - **writes** (creating, changing or removing anything under the root) fail with `EROFS`: the
//!   store is never written.
//!
//! Everything lives in fixed static tables, so no hook allocates: [`FD_SLOTS`] descriptors of
//! virtual directories and [`crate::hooks::dirs::DIR_SLOTS`] open directory streams per
//! process. Opening more fails with `EMFILE`, never with wrong data.

use core::cell::UnsafeCell;
use core::ffi::{CStr, c_char, c_int};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use velo_intercept::env;
use velo_intercept::mirage::{self, Entry, Image};

use crate::bytes;
use crate::environ::{entry, getenv};
use crate::once::Once;
use crate::path::{Buf, PATH_MAX};
use crate::real::keep_errno;

/// Descriptors below this number can name a virtual directory.
pub const FD_SLOTS: usize = 1024;

/// The device number of virtual directories and symlinks: `makedev(0, 0x7e1)`, an anonymous
/// device no real filesystem here uses, so their inode numbers never meet a real file's.
pub const DEV: u64 = 0x7e1;
/// Inode numbers of virtual entries: this plus the entry's index.
const INO_BASE: u64 = 0x7e10_0000_0000;

pub struct Mirage {
    pub image: Image<'static>,
    /// The virtual root, absolute, without a trailing `/`.
    pub root: &'static [u8],
    /// An empty real directory (NUL-terminated): what a virtual directory's descriptor and the
    /// real working directory point at.
    pub empty: &'static [u8],
    /// The writable layer (`--upper`), absolute, or empty when writes fail with `EROFS`.
    pub upper: &'static [u8],
    /// `VELO_MIRAGE=…`, `VELO_MIRAGE_AT=…`, `VELO_MIRAGE_EMPTY=…` and `VELO_MIRAGE_UPPER=…` (empty
    /// without one), NUL-terminated: re-added to a child's environment by the exec hooks.
    pub env: [&'static [u8]; 4],
    /// This library's `LD_PRELOAD` entry and `LD_PRELOAD=<it>\0`, for the exec hooks.
    pub shim: &'static [u8],
    pub env_preload: &'static [u8],
    /// Timestamps of virtual directories and symlinks: the image's modification time.
    pub time: (i64, i64),
    pub uid: u32,
    pub gid: u32,
}

const ENV_MAX: usize = PATH_MAX + 32;

struct Storage {
    root: [u8; PATH_MAX],
    empty: [u8; PATH_MAX],
    upper: [u8; PATH_MAX],
    env: [[u8; ENV_MAX]; 4],
    env_preload: [u8; ENV_MAX],
    mirage: Option<Mirage>,
}

static STORAGE: Once<Storage> = Once::new(Storage {
    root: [0; PATH_MAX],
    empty: [0; PATH_MAX],
    upper: [0; PATH_MAX],
    env: [[0; ENV_MAX]; 4],
    env_preload: [0; ENV_MAX],
    mirage: None,
});

/// The mirage this process serves, or `None` (every mirage check is then one load).
#[inline]
pub fn get() -> Option<&'static Mirage> {
    STORAGE.get(load, |s| s.mirage.as_ref())
}

/// `src` into `buf` with a NUL; the copy without it.
fn copy_c<'b>(src: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    bytes::c_join(buf, &[src])
}

fn statics(b: &[u8]) -> &'static [u8] {
    // SAFETY: every slice passed here lives in STORAGE, never written again once STATE is ON.
    unsafe { core::slice::from_raw_parts(b.as_ptr(), b.len()) }
}

/// Maps the image named by `VELO_MIRAGE`; `false` when there is none or it is unusable.
fn load(s: &mut Storage) -> bool {
    let (Some(image_path), Some(at)) = (getenv(env::MIRAGE.c()), getenv(env::MIRAGE_AT.c())) else {
        return false;
    };
    let empty = getenv(env::MIRAGE_EMPTY.c()).unwrap_or(b"/");
    let at = velo_intercept::translate::trim_root(at);
    if at.first() != Some(&b'/') || at.len() < 2 {
        return false;
    }
    let mut path: Buf = [0; PATH_MAX];
    let Some(_) = copy_c(image_path, &mut path) else {
        return false;
    };
    // SAFETY: raw syscalls on NUL-terminated buffers and a zeroed stat; our own mapping.
    let (map, len, time) = unsafe {
        let fd = crate::kernel::openat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        let fd = fd as c_int;
        let mut st: libc::stat = core::mem::zeroed();
        let ok = libc::syscall(libc::SYS_fstat, fd, &raw mut st) == 0;
        let len = st.st_size as usize;
        let map = if ok && len > 0 {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                fd,
                0,
            )
        } else {
            libc::MAP_FAILED
        };
        crate::kernel::close(fd);
        if map == libc::MAP_FAILED {
            return false;
        }
        (map, len, (st.st_mtime, st.st_mtime_nsec))
    };
    // SAFETY: a private read-only mapping that is never unmapped.
    let bytes: &'static [u8] = unsafe { core::slice::from_raw_parts(map.cast(), len) };
    let Some(image) = Image::parse(bytes) else {
        return false;
    };
    let (Some(root), Some(empty_c)) = (copy_c(at, &mut s.root), copy_c(empty, &mut s.empty)) else {
        return false;
    };
    let (root, empty_len) = (statics(root), empty_c.len());
    let upper = getenv(env::MIRAGE_UPPER.c())
        .map(velo_intercept::translate::trim_root)
        .filter(|u| u.first() == Some(&b'/'))
        .unwrap_or(b"");
    let Some(upper_c) = copy_c(upper, &mut s.upper) else {
        return false;
    };
    let upper_static = statics(upper_c);
    let [e0, e1, e2, e3] = &mut s.env;
    let (Some(env_image), Some(env_at), Some(env_empty)) = (
        entry(env::MIRAGE.bytes(), image_path, e0),
        entry(env::MIRAGE_AT.bytes(), root, e1),
        entry(env::MIRAGE_EMPTY.bytes(), empty, e2),
    ) else {
        return false;
    };
    let env_upper: &[u8] = if upper.is_empty() {
        &[]
    } else {
        match entry(env::MIRAGE_UPPER.bytes(), upper, e3) {
            Some(e) => e,
            None => return false,
        }
    };
    let env = [
        statics(env_image),
        statics(env_at),
        statics(env_empty),
        statics(env_upper),
    ];
    if let Some(cwd) = getenv(env::MIRAGE_CWD.c()) {
        let cwd = velo_intercept::translate::trim_root(cwd);
        if under(root, cwd) {
            // The node is found once the image is in place, below.
            set_cwd(Some(cwd), None);
        }
    }
    let (shim, env_preload) = crate::environ::shim_preload(&mut s.env_preload);
    let env_preload = env_preload.map_or(&[][..], statics);
    s.mirage = Some(Mirage {
        upper: upper_static,
        shim,
        env_preload,
        image,
        root,
        empty: statics(s.empty.get(..=empty_len).unwrap_or_default()),
        env,
        time,
        // SAFETY: no preconditions.
        uid: unsafe { libc::getuid() },
        // SAFETY: as above.
        gid: unsafe { libc::getgid() },
    });
    if let Some(m) = &s.mirage {
        let (mut path, mut out): (Buf, Buf) = ([0; PATH_MAX], [0; PATH_MAX]);
        if let Some(n) = cwd(&mut path)
            && let Place::Node(i) = m.walk(bytes::head(&path, n), true, &mut out)
            && m.entry(i).is_dir()
        {
            set_cwd(Some(bytes::head(&path, n)), Some(i));
        }
    }
    true
}

/// Whether `path` is `root` or below it (on a component boundary).
pub fn under(root: &[u8], path: &[u8]) -> bool {
    path.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

// --- the virtual working directory -------------------------------------------------------------

/// The virtual working directory, or none (length 0): a sequence lock, so `getcwd` never
/// blocks. Writers (chdir) take the odd sequence number with a compare-and-swap; readers retry
/// when a write overlapped their copy.
struct Cwd {
    seq: AtomicU64,
    len: AtomicUsize,
    /// The tree directory it is, plus one (0: none, or one made in the writable layer): relative
    /// paths are then walked from it, not from the root along the copied path.
    node: AtomicU32,
    buf: UnsafeCell<[u8; PATH_MAX]>,
}

// SAFETY: see the type's docs.
unsafe impl Sync for Cwd {}

static CWD: Cwd = Cwd {
    seq: AtomicU64::new(0),
    len: AtomicUsize::new(0),
    node: AtomicU32::new(0),
    buf: UnsafeCell::new([0; PATH_MAX]),
};

/// Copies the virtual working directory into `out` (no NUL); `None` when the working directory
/// is a real one.
pub fn cwd(out: &mut [u8]) -> Option<usize> {
    loop {
        let s1 = CWD.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            core::hint::spin_loop();
            continue;
        }
        let len = CWD.len.load(Ordering::Relaxed);
        if len <= out.len() {
            // SAFETY: `len` bytes of a static buffer; a torn copy is detected below.
            unsafe {
                core::ptr::copy_nonoverlapping(CWD.buf.get().cast::<u8>(), out.as_mut_ptr(), len)
            };
        }
        fence(Ordering::Acquire);
        if CWD.seq.load(Ordering::Relaxed) == s1 {
            return (len > 0 && len <= out.len()).then_some(len);
        }
    }
}

/// The tree directory that is the virtual working directory, when it is one.
#[inline]
fn cwd_node() -> Option<u32> {
    CWD.node.load(Ordering::Acquire).checked_sub(1)
}

/// Sets (or, with `None`, clears) the virtual working directory; `node` is the tree directory
/// at `path`, when it is one.
pub fn set_cwd(path: Option<&[u8]>, node: Option<u32>) {
    let s = loop {
        let s = CWD.seq.load(Ordering::Relaxed);
        if s & 1 == 0
            && CWD
                .seq
                .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            break s;
        }
        core::hint::spin_loop();
    };
    let len = match path {
        Some(p) if p.len() < PATH_MAX => {
            // SAFETY: we hold the odd sequence number: the only writer.
            unsafe {
                core::ptr::copy_nonoverlapping(p.as_ptr(), CWD.buf.get().cast::<u8>(), p.len())
            };
            p.len()
        }
        _ => 0,
    };
    CWD.len.store(len, Ordering::Relaxed);
    let node = match node {
        Some(i) if len > 0 => i + 1,
        _ => 0,
    };
    CWD.node.store(node, Ordering::Release);
    CWD.seq.store(s + 2, Ordering::Release);
}

// --- descriptors of virtual directories --------------------------------------------------------

static FDS: [AtomicU32; FD_SLOTS] = [const { AtomicU32::new(0) }; FD_SLOTS];

/// Remembers that `fd` is virtual directory `entry`; `false` when `fd` is beyond the table.
pub fn remember_fd(fd: c_int, entry: u32) -> bool {
    match usize::try_from(fd).ok().and_then(|i| FDS.get(i)) {
        Some(slot) => {
            slot.store(entry + 1, Ordering::Release);
            true
        }
        None => false,
    }
}

/// The virtual directory `fd` refers to, if it is one.
#[inline]
pub fn fd_entry(fd: c_int) -> Option<u32> {
    let slot = FDS.get(usize::try_from(fd).ok()?)?;
    slot.load(Ordering::Acquire).checked_sub(1)
}

pub fn forget_fd(fd: c_int) {
    if let Some(slot) = usize::try_from(fd).ok().and_then(|i| FDS.get(i)) {
        slot.store(0, Ordering::Release);
    }
}

// --- the writable layer (`--upper`) -------------------------------------------------------------

/// Where deletions are recorded in the writable layer: `<upper>/.velo-deleted/<path>.deleted`.
pub const DELETED: &[u8] = b".velo-deleted";

enum UpperState {
    Absent,
    Deleted,
    Present { dir: bool },
}

/// The file type and mode at `path` (NUL-terminated), without following a final symlink.
fn lstat_mode(path: &Buf) -> Option<u32> {
    keep_errno(|| {
        // SAFETY: a NUL-terminated path and a zeroed stat; a raw syscall, not the hooks.
        unsafe {
            let mut st: libc::stat = core::mem::zeroed();
            (libc::syscall(
                libc::SYS_newfstatat,
                libc::AT_FDCWD,
                path.as_ptr(),
                &raw mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0)
                .then_some(st.st_mode)
        }
    })
}

/// Creates every directory of `buf[..len]` from byte `start` on, up to its last component.
fn make_parents(buf: &mut Buf, start: usize, len: usize) -> c_int {
    for i in start..len.min(PATH_MAX) {
        if buf.get(i) == Some(&b'/') && bytes::set(buf, i, 0).is_some() {
            // SAFETY: a NUL-terminated prefix; a raw syscall.
            let r =
                unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, buf.as_ptr(), 0o755) };
            let err = crate::real::errno();
            let _ = bytes::set(buf, i, b'/');
            if r < 0 && err != libc::EEXIST {
                return -err;
            }
        }
    }
    0
}

// --- resolution --------------------------------------------------------------------------------

/// Where a path lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Not under the virtual root: the real function gets the program's arguments.
    Pass,
    /// It left the tree (through `..` or a symlink to a host path): the absolute real path is in
    /// the caller's buffer, NUL-terminated.
    Real,
    /// With `--upper`: the path's place in the writable layer is in the caller's buffer
    /// (NUL-terminated); it may or may not exist yet. `shadows` when the tree has an entry
    /// there too (a deletion must then be recorded).
    Upper { shadows: bool },
    /// An entry of the tree.
    Node(u32),
    /// The last component does not exist in an existing virtual directory.
    Missing,
    /// Resolution failed with this errno (`ENOENT`, `ENOTDIR`, `ELOOP`, `ENAMETOOLONG`).
    Fail(c_int),
}

/// Appends `parts` to `buf` at `at`; `None` when they do not fit with a NUL.
fn put(buf: &mut Buf, at: usize, parts: &[&[u8]]) -> Option<usize> {
    bytes::put_c(buf, at, parts)
}

impl Mirage {
    pub fn entry(&self, index: u32) -> Entry<'static> {
        self.image.entry(index)
    }

    /// Resolves `path` as the kernel would for `*at(dirfd, path)`, following a final symlink
    /// when `follow` is set.
    pub fn resolve(&self, dirfd: c_int, path: *const c_char, follow: bool, out: &mut Buf) -> Place {
        if path.is_null() {
            return Place::Pass;
        }
        // SAFETY: a non-null C string from the program.
        let p = unsafe { CStr::from_ptr(path) }.to_bytes();
        self.resolve_bytes(dirfd, p, follow, out)
    }

    pub fn resolve_bytes(&self, dirfd: c_int, p: &[u8], follow: bool, out: &mut Buf) -> Place {
        if p.is_empty() {
            return Place::Pass;
        }
        if p.starts_with(b"/") {
            if !under(self.root, p) {
                return Place::Pass;
            }
            // Walked where it is: no copy, no buffer to clear (this runs in every hook).
            return self.walk(p, follow, out);
        }
        if self.upper.is_empty() {
            // Walked from the directory's node: no path to copy and walk again. (With a
            // writable layer, each step of the directory's own path is checked against it.)
            let node = if dirfd == libc::AT_FDCWD {
                cwd_node()
            } else {
                match fd_entry(dirfd) {
                    Some(e) => Some(e),
                    None => return Place::Pass,
                }
            };
            if let Some(node) = node {
                return self.walk_in(Some(node), p, follow, out);
            }
        }
        let mut work: Buf = [0; PATH_MAX];
        let len = if dirfd == libc::AT_FDCWD {
            match cwd(&mut work) {
                Some(n) => put(&mut work, n, &[b"/", p]),
                None => return Place::Pass,
            }
        } else {
            match fd_entry(dirfd) {
                Some(e) => self
                    .abs_path(e, &mut work)
                    .and_then(|n| put(&mut work, n, &[b"/", p])),
                None => return Place::Pass,
            }
        };
        match len {
            Some(len) => self.walk(bytes::head(&work, len), follow, out),
            None => Place::Fail(libc::ENAMETOOLONG),
        }
    }

    /// The absolute virtual path of entry `index` into `buf` (NUL-terminated); its length.
    pub fn abs_path(&self, index: u32, buf: &mut Buf) -> Option<usize> {
        let e = self.entry(index);
        if e.path.is_empty() {
            put(buf, 0, &[self.root])
        } else {
            put(buf, 0, &[self.root, b"/", e.path])
        }
    }

    /// Walks the absolute path `start` from the root, component by component.
    pub fn walk(&self, start: &[u8], follow: bool, out: &mut Buf) -> Place {
        self.walk_in(None, start, follow, out)
    }

    /// Walks `start`: relative to tree directory `from`, or, without one, an absolute path.
    fn walk_in(&self, mut from: Option<u32>, start: &[u8], follow: bool, out: &mut Buf) -> Place {
        // The path once a symlink or `..` has rewritten it; until then, `start` itself.
        let mut held: Option<Buf> = None;
        let mut len = start.len();
        let mut hops = 0;
        'restart: loop {
            let path: &[u8] = match &held {
                Some(b) => bytes::head(b, len),
                None => start,
            };
            let (mut cur, mut rest) = match from.take() {
                Some(node) => (node, path),
                None if !under(self.root, path) => {
                    return match put(out, 0, &[path]) {
                        Some(_) => Place::Real,
                        None => Place::Fail(libc::ENAMETOOLONG),
                    };
                }
                None => (0u32, bytes::tail(path, self.root.len())),
            };
            loop {
                while let [b'/', tail @ ..] = rest {
                    rest = tail;
                }
                if rest.is_empty() {
                    return Place::Node(cur);
                }
                let cut = rest.iter().position(|&c| c == b'/').unwrap_or(rest.len());
                let (name, tail) = rest.split_at(cut);
                let last = tail.iter().all(|&c| c == b'/');
                match name {
                    b"." => {
                        rest = tail;
                        continue;
                    }
                    b".." if cur == 0 => {
                        // Out of the tree: the root's real parent, then the rest.
                        let slash = self.root.iter().rposition(|&c| c == b'/').unwrap_or(0);
                        let parent = bytes::head(self.root, slash);
                        let mut b: Buf = [0; PATH_MAX];
                        let Some(n) = put(
                            &mut b,
                            0,
                            &[parent, if tail.is_empty() { b"/" } else { tail }],
                        ) else {
                            return Place::Fail(libc::ENAMETOOLONG);
                        };
                        held = Some(b);
                        len = n;
                        continue 'restart;
                    }
                    b".." => {
                        cur = self.entry(cur).parent;
                        rest = tail;
                        continue;
                    }
                    _ => {}
                }
                let Some(child) = self.image.child(cur, name) else {
                    if !self.upper.is_empty() {
                        // Not in the tree: wherever it leads is in the writable layer.
                        let dir = self.entry(cur).path;
                        let sep: &[u8] = if dir.is_empty() { b"" } else { b"/" };
                        return match put(out, 0, &[self.upper, b"/", dir, sep, name, tail]) {
                            Some(_) => Place::Upper { shadows: false },
                            None => Place::Fail(libc::ENAMETOOLONG),
                        };
                    }
                    return if last {
                        Place::Missing
                    } else {
                        Place::Fail(libc::ENOENT)
                    };
                };
                let e = self.entry(child);
                if !self.upper.is_empty() {
                    let follows =
                        e.kind == mirage::SYMLINK && (!last || follow || !tail.is_empty());
                    if !follows {
                        match self.upper_state(e.path, out) {
                            UpperState::Absent => {}
                            UpperState::Deleted if last => {
                                // Deleted from the tree: free for a new file in the layer.
                                if put(out, 0, &[self.upper, b"/", e.path, tail]).is_none() {
                                    return Place::Fail(libc::ENAMETOOLONG);
                                }
                                return Place::Upper { shadows: false };
                            }
                            UpperState::Deleted => return Place::Fail(libc::ENOENT),
                            // A directory of the layer over one of the tree: merged, so keep
                            // walking the tree (its stat and listing are the tree's).
                            UpperState::Present { dir: true } if e.kind == mirage::DIR => {}
                            UpperState::Present { .. } => {
                                if put(out, 0, &[self.upper, b"/", e.path, tail]).is_none() {
                                    return Place::Fail(libc::ENAMETOOLONG);
                                }
                                return Place::Upper { shadows: true };
                            }
                        }
                    }
                }
                match e.kind {
                    mirage::DIR => {
                        cur = child;
                        rest = tail;
                    }
                    mirage::SYMLINK if last && !follow && tail.is_empty() => {
                        return Place::Node(child);
                    }
                    mirage::SYMLINK => {
                        hops += 1;
                        if hops > 40 {
                            return Place::Fail(libc::ELOOP);
                        }
                        let target = e.target;
                        let mut b: Buf = [0; PATH_MAX];
                        let n = if target.first() == Some(&b'/') {
                            put(&mut b, 0, &[target, tail])
                        } else {
                            let dir = self.entry(e.parent).path;
                            let sep: &[u8] = if dir.is_empty() { b"" } else { b"/" };
                            put(&mut b, 0, &[self.root, b"/", dir, sep, target, tail])
                        };
                        let Some(n) = n else {
                            return Place::Fail(libc::ENAMETOOLONG);
                        };
                        held = Some(b);
                        len = n;
                        continue 'restart;
                    }
                    _ if !tail.is_empty() => return Place::Fail(libc::ENOTDIR),
                    _ => return Place::Node(child),
                }
            }
        }
    }

    /// What the writable layer holds at tree path `rel` (uses `scratch`).
    fn upper_state(&self, rel: &[u8], scratch: &mut Buf) -> UpperState {
        if put(scratch, 0, &[self.upper, b"/", rel]).is_none() {
            return UpperState::Absent;
        }
        if let Some(mode) = lstat_mode(scratch) {
            return UpperState::Present {
                dir: mode & libc::S_IFMT == libc::S_IFDIR,
            };
        }
        if self.deleted(rel, scratch) {
            UpperState::Deleted
        } else {
            UpperState::Absent
        }
    }

    /// Whether tree path `rel` was deleted: `<upper>/.velo-deleted/<rel>.deleted` exists.
    pub fn deleted(&self, rel: &[u8], scratch: &mut Buf) -> bool {
        put(
            scratch,
            0,
            &[self.upper, b"/", DELETED, b"/", rel, b".deleted"],
        )
        .is_some()
            && lstat_mode(scratch).is_some()
    }

    /// Records that tree path `rel` is deleted; `-errno` on failure.
    pub fn mark_deleted(&self, rel: &[u8]) -> c_int {
        let mut buf: Buf = [0; PATH_MAX];
        let Some(n) = put(
            &mut buf,
            0,
            &[self.upper, b"/", DELETED, b"/", rel, b".deleted"],
        ) else {
            return -libc::ENAMETOOLONG;
        };
        let r = make_parents(&mut buf, self.upper.len() + 1, n);
        if r < 0 {
            return r;
        }
        // SAFETY: a NUL-terminated path; raw syscalls, not the hooks.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                buf.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd < 0 {
            return -crate::real::errno();
        }
        crate::kernel::close(fd as c_int);
        0
    }

    /// Forgets a deletion of `rel` (a new file takes its place).
    pub fn unmark_deleted(&self, rel: &[u8]) {
        let mut buf: Buf = [0; PATH_MAX];
        if put(
            &mut buf,
            0,
            &[self.upper, b"/", DELETED, b"/", rel, b".deleted"],
        )
        .is_some()
        {
            // SAFETY: a NUL-terminated path; a raw syscall.
            keep_errno(|| unsafe {
                libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, buf.as_ptr(), 0)
            });
        }
    }

    /// The tree path of the upper-layer path in `path` (NUL-terminated), if it is in the layer.
    pub fn upper_rel<'p>(&self, path: &'p [u8]) -> Option<&'p [u8]> {
        let len = path.iter().position(|&b| b == 0).unwrap_or(path.len());
        let p = bytes::head(path, len);
        (!self.upper.is_empty() && under(self.upper, p)).then(|| {
            let rest = bytes::tail(p, self.upper.len());
            rest.strip_prefix(b"/").unwrap_or(rest)
        })
    }

    /// The virtual name (`<root>/<rel>`) of the upper-layer path in `upper_path`, into `out`;
    /// its length.
    pub fn virtual_name(&self, upper_path: &Buf, out: &mut Buf) -> Option<usize> {
        match self.upper_rel(upper_path)? {
            [] => put(out, 0, &[self.root]),
            rel => put(out, 0, &[self.root, b"/", rel]),
        }
    }

    /// Records the tree path of the upper-layer path in `upper_path` as deleted.
    pub fn mark_deleted_at(&self, upper_path: &Buf) -> c_int {
        self.mark_deleted(self.upper_rel(upper_path).unwrap_or(&[]))
    }

    /// Creates the missing parent directories of the upper-layer path in `buf` (0755).
    pub fn upper_parents(&self, buf: &mut Buf) -> c_int {
        let len = buf.iter().position(|&b| b == 0).unwrap_or(PATH_MAX);
        make_parents(buf, self.upper.len() + 1, len)
    }

    /// Before a write into the writable layer at the path in `out`: its parent directories
    /// exist, and a deletion recorded there is forgotten (a new file takes its place).
    pub fn prepare_upper(&self, out: &mut Buf) -> Result<(), c_int> {
        let r = self.upper_parents(out);
        if r < 0 {
            return Err(-r);
        }
        let len = out.iter().position(|&b| b == 0).unwrap_or(PATH_MAX);
        let start = self.upper.len() + 1;
        if let Some(rel) = out.get(start..len) {
            self.unmark_deleted(rel);
        }
        Ok(())
    }

    /// Deletes tree entry `index` in the writable layer: a file or symlink at once, a directory
    /// when every entry under it is gone (else `ENOTEMPTY`). `-errno` on failure.
    pub fn delete(&self, index: u32) -> c_int {
        let e = self.entry(index);
        if e.is_dir() {
            let mut scratch: Buf = [0; PATH_MAX];
            let mut child = self.image.next_child(index, index + 1);
            while let Some(c) = child {
                if !self.deleted(self.entry(c).path, &mut scratch) {
                    return -libc::ENOTEMPTY;
                }
                child = self.image.after(index, c);
            }
            if put(&mut scratch, 0, &[self.upper, b"/", e.path]).is_some() {
                // SAFETY: a NUL-terminated path; a raw syscall.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_unlinkat,
                        libc::AT_FDCWD,
                        scratch.as_ptr(),
                        libc::AT_REMOVEDIR,
                    )
                };
                if r < 0 && crate::real::errno() == libc::ENOTEMPTY {
                    return -libc::ENOTEMPTY;
                }
            }
        }
        keep_errno(|| self.mark_deleted(e.path))
    }

    /// Copies entry `index` (a file or symlink of the tree) into the writable layer unless it is
    /// there already, leaving its path there in `out`; `-errno` on failure.
    pub fn copy_up(&self, index: u32, out: &mut Buf) -> c_int {
        let e = self.entry(index);
        let Some(n) = put(out, 0, &[self.upper, b"/", e.path]) else {
            return -libc::ENAMETOOLONG;
        };
        if lstat_mode(out).is_some() {
            return 0;
        }
        let r = make_parents(out, self.upper.len() + 1, n);
        if r < 0 {
            return r;
        }
        let mut target: Buf = [0; PATH_MAX];
        // SAFETY: raw syscalls on NUL-terminated paths; descriptors we open and close.
        unsafe {
            if e.kind == mirage::SYMLINK {
                let _ = bytes::put(&mut target, 0, bytes::head(e.target, PATH_MAX - 1));
                let r = libc::syscall(
                    libc::SYS_symlinkat,
                    target.as_ptr(),
                    libc::AT_FDCWD,
                    out.as_ptr(),
                );
                return if r < 0 { -crate::real::errno() } else { 0 };
            }
            self.backing(index, &mut target);
            let from = crate::kernel::openat(
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            );
            if from < 0 {
                return from as c_int;
            }
            let mode = if e.exec { 0o755 } else { 0o644 };
            let to = libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                out.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                mode,
            );
            if to < 0 {
                let err = crate::real::errno();
                crate::kernel::close(from as c_int);
                return -err;
            }
            let mut left = e.size;
            let mut failed = 0;
            while left > 0 {
                let n = libc::syscall(
                    libc::SYS_copy_file_range,
                    from,
                    core::ptr::null_mut::<i64>(),
                    to,
                    core::ptr::null_mut::<i64>(),
                    left.min(1 << 30) as usize,
                    0,
                );
                if n <= 0 {
                    failed = if n < 0 {
                        crate::real::errno()
                    } else {
                        libc::EIO
                    };
                    break;
                }
                left -= n as u64;
            }
            crate::kernel::close(from as c_int);
            crate::kernel::close(to as c_int);
            if failed != 0 {
                libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, out.as_ptr(), 0);
                return -failed;
            }
        }
        0
    }

    /// The real path that stands for entry `index` (NUL-terminated in `out`): a file's blob, or
    /// the empty stand-in directory for a directory or symlink.
    pub fn backing(&self, index: u32, out: &mut Buf) -> *const c_char {
        let e = self.entry(index);
        if e.kind != mirage::FILE {
            let _ = bytes::put(out, 0, self.empty);
            return out.as_ptr().cast();
        }
        let mut hex = [0u8; 64];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(e.hash.iter()) {
            pair.copy_from_slice(&[bytes::hex_digit(byte >> 4), bytes::hex_digit(byte & 15)]);
        }
        let x: &[u8] = if e.exec { b".x" } else { b"" };
        let blobs = self.image.blobs_dir();
        if put(out, 0, &[blobs, b"/", bytes::head(&hex, 2), b"/", &hex, x]).is_none() {
            out[0] = 0;
        }
        out.as_ptr().cast()
    }

    /// Synthesized `stat` of a directory or symlink entry.
    pub fn stat(&self, index: u32) -> libc::stat {
        let e = self.entry(index);
        // SAFETY: all-zero is a valid `stat`.
        let mut st: libc::stat = unsafe { core::mem::zeroed() };
        st.st_dev = DEV;
        st.st_ino = INO_BASE + u64::from(index);
        st.st_nlink = e.nlink.into();
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        st.st_blksize = 4096;
        if e.is_dir() {
            st.st_mode = libc::S_IFDIR | 0o755;
            st.st_size = 4096;
            st.st_blocks = 8;
        } else {
            st.st_mode = libc::S_IFLNK | 0o777;
            st.st_size = e.target.len() as i64;
        }
        (st.st_atime, st.st_atime_nsec) = self.time;
        (st.st_mtime, st.st_mtime_nsec) = self.time;
        (st.st_ctime, st.st_ctime_nsec) = self.time;
        st
    }

    /// The same as a `statx` result.
    pub fn statx(&self, index: u32) -> libc::statx {
        let st = self.stat(index);
        // SAFETY: all-zero is a valid `statx`.
        let mut sx: libc::statx = unsafe { core::mem::zeroed() };
        sx.stx_mask = libc::STATX_BASIC_STATS;
        sx.stx_blksize = st.st_blksize as u32;
        sx.stx_nlink = st.st_nlink as u32;
        sx.stx_uid = st.st_uid;
        sx.stx_gid = st.st_gid;
        sx.stx_mode = st.st_mode as u16;
        sx.stx_ino = st.st_ino;
        sx.stx_size = st.st_size as u64;
        sx.stx_blocks = st.st_blocks as u64;
        // SAFETY: all-zero is a valid timestamp.
        let mut t: libc::statx_timestamp = unsafe { core::mem::zeroed() };
        t.tv_sec = self.time.0;
        t.tv_nsec = self.time.1 as u32;
        (sx.stx_atime, sx.stx_mtime, sx.stx_ctime, sx.stx_btime) = (t, t, t, t);
        sx.stx_dev_major = 0;
        sx.stx_dev_minor = DEV as u32;
        sx
    }

    /// The inode number `readdir` reports for entry `index` (directories match their `stat`).
    pub fn ino(&self, index: u32) -> u64 {
        INO_BASE + u64::from(index)
    }
}
