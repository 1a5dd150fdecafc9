//! Directory streams of Mode B's virtual directories: `opendir`, `fdopendir`, `readdir`,
//! `readdir64`, `closedir`, `dirfd`, `rewinddir`, `seekdir`, `telldir` and `scandir`.
//!
//! A virtual directory exists only in the mirage image, so its stream is one of [`DIR_SLOTS`]
//! static slots, and the `DIR *` the program holds is the slot's address: every hook tells its
//! own streams from glibc's by that address. A stream walks the image: `.` and `..` first, as
//! the kernel lists them, then the children in canonical order. Its position (`telldir`) is the
//! index of the next child plus two, so `seekdir` returns to any position exactly.
//!
//! The stream also holds a real descriptor on the empty stand-in directory, registered as the
//! virtual directory (so `dirfd` + `fstat`/`openat` work, as `fts` and Python's `os.fwalk` use
//! them).

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_long, c_void};
use core::sync::atomic::{AtomicBool, Ordering};

use libc::{DIR, dirent64};
use velo_intercept::mirage::{DIR as VDIR, FILE, SYMLINK};

use crate::mirage::{self, Mirage, Place};
use crate::path::{Buf, PATH_MAX, in1};
use crate::real::{Real, fail};

/// Open virtual directory streams per process. One more fails with `EMFILE`.
pub const DIR_SLOTS: usize = 256;

const END: u32 = u32::MAX;

struct Stream {
    fd: c_int,
    dir: u32,
    pos: u32,
    ent: dirent64,
    /// With `--upper`: the directory's counterpart in the writable layer (or -1), listed after
    /// the tree's entries, through `buf`.
    upper_fd: c_int,
    buf: [u8; 2048],
    buf_len: usize,
    buf_pos: usize,
}

struct Slot(UnsafeCell<Stream>);

// SAFETY: a slot is used by the thread that owns its stream (claimed through `USED`); a stream
// shared between threads needs the program's own locking, as with glibc's.
unsafe impl Sync for Slot {}

static USED: [AtomicBool; DIR_SLOTS] = [const { AtomicBool::new(false) }; DIR_SLOTS];
static SLOTS: [Slot; DIR_SLOTS] = [const {
    Slot(UnsafeCell::new(Stream {
        fd: -1,
        dir: 0,
        pos: 0,
        // SAFETY: all-zero is a valid dirent64.
        ent: unsafe { core::mem::zeroed() },
        upper_fd: -1,
        buf: [0; 2048],
        buf_len: 0,
        buf_pos: 0,
    }))
}; DIR_SLOTS];

/// The slot behind `d`, if it is one of ours.
fn ours(d: *mut DIR) -> Option<&'static mut Stream> {
    let base = SLOTS.as_ptr() as usize;
    let at = (d as usize).checked_sub(base)?;
    if at >= size_of_val(&SLOTS) || at % size_of::<Slot>() != 0 {
        return None;
    }
    // SAFETY: the address of a claimed slot, used by its owner only (see `Slot`).
    Some(unsafe { &mut *SLOTS.get(at / size_of::<Slot>())?.0.get() })
}

/// A stream over virtual directory `dir` through descriptor `fd`; `None` when all slots are
/// taken.
fn open_stream(fd: c_int, dir: u32) -> Option<*mut DIR> {
    let upper_fd = mirage::get().map_or(-1, |m| open_upper(m, dir));
    let i = USED.iter().position(|u| {
        u.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    })?;
    // SAFETY: we just claimed the slot.
    let slot = SLOTS.get(i)?;
    let s = unsafe { &mut *slot.0.get() };
    s.fd = fd;
    s.dir = dir;
    s.pos = 0;
    s.upper_fd = upper_fd;
    s.buf_len = 0;
    s.buf_pos = 0;
    Some(slot.0.get().cast())
}

/// The writable layer's directory for tree directory `dir`, opened for listing, or -1.
fn open_upper(m: &Mirage, dir: u32) -> c_int {
    if m.upper.is_empty() {
        return -1;
    }
    let mut buf: Buf = [0; PATH_MAX];
    let path = m.entry(dir).path;
    if crate::bytes::put_c(&mut buf, 0, &[m.upper, b"/", path]).is_none() {
        return -1;
    }
    // SAFETY: a NUL-terminated path; a raw syscall.
    let fd = crate::real::keep_errno(|| unsafe {
        crate::kernel::openat(
            libc::AT_FDCWD,
            buf.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    });
    if fd < 0 { -1 } else { fd as c_int }
}

/// Opens the stand-in for virtual directory `dir` and a stream over it.
fn open_virtual(m: &Mirage, dir: u32) -> *mut DIR {
    if m.entry(dir).kind != VDIR {
        return fail(libc::ENOTDIR);
    }
    // SAFETY: a NUL-terminated path; a raw syscall, as glibc's opendir makes.
    let fd = unsafe {
        crate::kernel::openat(
            libc::AT_FDCWD,
            m.empty.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return fail(-fd as c_int);
    }
    let fd = fd as c_int;
    if mirage::remember_fd(fd, dir)
        && let Some(d) = open_stream(fd, dir)
    {
        return d;
    }
    mirage::forget_fd(fd);
    crate::kernel::close(fd);
    fail(libc::EMFILE)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn opendir(path: *const c_char) -> *mut DIR {
    static REAL: Real = Real::new("opendir\0");
    let real = |p| match unsafe { REAL.get::<unsafe extern "C" fn(*const c_char) -> *mut DIR>() } {
        // SAFETY: opendir's signature; a path of the program's or ours.
        Some(f) => unsafe { f(p) },
        None => fail(libc::ENOSYS),
    };
    by_path(path, real, open_virtual)
}

/// A hook that opens a directory by path (`opendir`, `scandir`): a directory of the tree is
/// listed from the image (`listed`), any other path by the real call, on its real path.
#[inline(always)]
fn by_path<R: crate::real::Fail>(
    path: *const c_char,
    real: impl Fn(*const c_char) -> R,
    listed: impl FnOnce(&Mirage, u32) -> R,
) -> R {
    let Some(m) = mirage::get() else {
        return in1(path, real);
    };
    let mut out: Buf = [0; PATH_MAX];
    match m.resolve(libc::AT_FDCWD, path, true, &mut out) {
        Place::Pass => in1(path, real),
        Place::Real | Place::Upper { .. } => real(out.as_ptr().cast()),
        Place::Node(i) => listed(m, i),
        Place::Missing => fail(libc::ENOENT),
        Place::Fail(e) => fail(e),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fdopendir(fd: c_int) -> *mut DIR {
    static REAL: Real = Real::new("fdopendir\0");
    if mirage::get().is_some()
        && let Some(dir) = mirage::fd_entry(fd)
    {
        return open_stream(fd, dir).unwrap_or_else(|| fail(libc::EMFILE));
    }
    // SAFETY: fdopendir's signature; the program's descriptor.
    match unsafe { REAL.get::<unsafe extern "C" fn(c_int) -> *mut DIR>() } {
        Some(f) => unsafe { f(fd) },
        None => fail(libc::ENOSYS),
    }
}

/// The next entry of a virtual stream, or NULL at the end (errno untouched, as glibc does):
/// `.`, `..`, the tree's children (less those deleted in the writable layer), then what only
/// the writable layer has.
fn next(m: &Mirage, s: &mut Stream) -> *mut dirent64 {
    let layered = !m.upper.is_empty();
    let mut scratch: Buf = [0; PATH_MAX];
    loop {
        let dir = m.entry(s.dir);
        let first_child = || m.image.next_child(s.dir, s.dir + 1).map_or(END, |c| c + 2);
        let (name, ino, kind, next): (&[u8], u64, u8, u32) = match s.pos {
            END => return next_upper(m, s),
            0 => (b".", m.ino(s.dir), libc::DT_DIR, 1),
            1 => (b"..", m.ino(dir.parent), libc::DT_DIR, first_child()),
            p => {
                let child = p - 2;
                if child >= m.image.len() {
                    s.pos = END;
                    continue;
                }
                let e = m.entry(child);
                let next = m.image.after(s.dir, child).map_or(END, |c| c + 2);
                if layered && m.deleted(e.path, &mut scratch) {
                    s.pos = next;
                    continue;
                }
                let kind = match e.kind {
                    VDIR => libc::DT_DIR,
                    FILE => libc::DT_REG,
                    SYMLINK => libc::DT_LNK,
                    _ => libc::DT_UNKNOWN,
                };
                (e.name(), m.ino(child), kind, next)
            }
        };
        s.pos = next;
        return fill(&mut s.ent, name, ino, kind, i64::from(next));
    }
}

/// The writable layer's entries that the tree does not list (new files, and files that took
/// the place of deleted ones).
fn next_upper(m: &Mirage, s: &mut Stream) -> *mut dirent64 {
    if s.upper_fd < 0 {
        return core::ptr::null_mut();
    }
    let mut scratch: Buf = [0; PATH_MAX];
    loop {
        if s.buf_pos >= s.buf_len {
            // SAFETY: our descriptor and buffer; a raw syscall.
            let n = crate::real::keep_errno(|| unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    s.upper_fd,
                    s.buf.as_mut_ptr(),
                    s.buf.len(),
                )
            });
            if n <= 0 {
                return core::ptr::null_mut();
            }
            (s.buf_len, s.buf_pos) = (n as usize, 0);
        }
        let Some((ino, reclen, kind, name, len)) = record(&s.buf, s.buf_pos) else {
            // A record the kernel would not write: the rest of this batch is skipped.
            s.buf_pos = s.buf_len;
            continue;
        };
        s.buf_pos += reclen.max(1);
        let name = crate::bytes::head(&name, len);
        if name == b"." || name == b".." || (s.dir == 0 && name == mirage::DELETED) {
            continue;
        }
        if let Some(c) = m.image.child(s.dir, name)
            && !m.deleted(m.entry(c).path, &mut scratch)
        {
            continue; // listed with the tree's entries
        }
        return fill(&mut s.ent, name, ino, kind, i64::from(END));
    }
}

/// The `getdents64` record at `at` of `b`: inode, record length, type, and the name (copied,
/// at most 255 bytes) with its length.
fn record(b: &[u8], at: usize) -> Option<(u64, usize, u8, [u8; 256], usize)> {
    let ino = u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?);
    let reclen = usize::from(u16::from_ne_bytes(
        b.get(at + 16..at + 18)?.try_into().ok()?,
    ));
    let kind = *b.get(at + 18)?;
    let area = b.get(at + 19..at + reclen.max(20))?;
    let len = area
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(area.len())
        .min(255);
    let mut name = [0u8; 256];
    crate::bytes::put(&mut name, 0, crate::bytes::head(area, len))?;
    Some((ino, reclen, kind, name, len))
}

fn fill(ent: &mut dirent64, name: &[u8], ino: u64, kind: u8, off: i64) -> *mut dirent64 {
    let len = name.len().min(ent.d_name.len() - 1);
    for (d, &c) in ent.d_name.iter_mut().zip(crate::bytes::head(name, len)) {
        *d = c as c_char;
    }
    if let Some(end) = ent.d_name.get_mut(len) {
        *end = 0;
    }
    ent.d_ino = ino;
    ent.d_off = off;
    ent.d_type = kind;
    let header = core::mem::offset_of!(dirent64, d_name);
    ent.d_reclen = ((header + len + 1).next_multiple_of(8)) as u16;
    ent
}

macro_rules! readdir {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(d: *mut DIR) -> *mut dirent64 {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            if let Some(s) = ours(d) && let Some(m) = mirage::get() {
                return next(m, s);
            }
            // SAFETY: readdir's signature (dirent and dirent64 share a layout on LP64 Linux).
            match unsafe { REAL.get::<unsafe extern "C" fn(*mut DIR) -> *mut dirent64>() } {
                Some(f) => unsafe { f(d) },
                None => fail(libc::ENOSYS),
            }
        }
    )*};
}

readdir!(readdir, readdir64);

#[unsafe(no_mangle)]
pub unsafe extern "C" fn closedir(d: *mut DIR) -> c_int {
    static REAL: Real = Real::new("closedir\0");
    if let Some(s) = ours(d) {
        mirage::forget_fd(s.fd);
        crate::kernel::close(s.fd);
        s.fd = -1;
        if s.upper_fd >= 0 {
            crate::kernel::close(s.upper_fd);
            s.upper_fd = -1;
        }
        let base = SLOTS.as_ptr() as usize;
        if let Some(used) = USED.get((d as usize - base) / size_of::<Slot>()) {
            used.store(false, Ordering::Release);
        }
        return 0;
    }
    // SAFETY: closedir's signature; the program's stream.
    match unsafe { REAL.get::<unsafe extern "C" fn(*mut DIR) -> c_int>() } {
        Some(f) => unsafe { f(d) },
        None => fail(libc::ENOSYS),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn dirfd(d: *mut DIR) -> c_int {
    static REAL: Real = Real::new("dirfd\0");
    if let Some(s) = ours(d) {
        return s.fd;
    }
    // SAFETY: dirfd's signature; the program's stream.
    match unsafe { REAL.get::<unsafe extern "C" fn(*mut DIR) -> c_int>() } {
        Some(f) => unsafe { f(d) },
        None => fail(libc::ENOSYS),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn rewinddir(d: *mut DIR) {
    static REAL: Real = Real::new("rewinddir\0");
    if let Some(s) = ours(d) {
        s.pos = 0;
        if s.upper_fd >= 0 {
            // SAFETY: our descriptor; a raw syscall.
            unsafe { libc::syscall(libc::SYS_lseek, s.upper_fd, 0, libc::SEEK_SET) };
            (s.buf_len, s.buf_pos) = (0, 0);
        }
        return;
    }
    // SAFETY: rewinddir's signature; the program's stream.
    if let Some(f) = unsafe { REAL.get::<unsafe extern "C" fn(*mut DIR)>() } {
        unsafe { f(d) }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn seekdir(d: *mut DIR, loc: c_long) {
    static REAL: Real = Real::new("seekdir\0");
    if let Some(s) = ours(d) {
        s.pos = u32::try_from(loc).unwrap_or(END);
        return;
    }
    // SAFETY: seekdir's signature; the program's stream.
    if let Some(f) = unsafe { REAL.get::<unsafe extern "C" fn(*mut DIR, c_long)>() } {
        unsafe { f(d, loc) }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn telldir(d: *mut DIR) -> c_long {
    static REAL: Real = Real::new("telldir\0");
    if let Some(s) = ours(d) {
        return c_long::from(s.pos);
    }
    // SAFETY: telldir's signature; the program's stream.
    match unsafe { REAL.get::<unsafe extern "C" fn(*mut DIR) -> c_long>() } {
        Some(f) => unsafe { f(d) },
        None => fail(libc::ENOSYS),
    }
}

type Filter = Option<unsafe extern "C" fn(*const dirent64) -> c_int>;
type Compare = Option<unsafe extern "C" fn(*const c_void, *const c_void) -> c_int>;

/// `scandir` of a virtual directory: the entries the filter keeps, each in its own `malloc`ed
/// copy, in a `malloc`ed array sorted by `compare`, as glibc's returns them.
fn scan_virtual(
    m: &Mirage,
    dir: u32,
    list: *mut *mut *mut dirent64,
    filter: Filter,
    compare: Compare,
) -> c_int {
    let d = open_virtual(m, dir);
    if d.is_null() {
        return -1;
    }
    let Some(s) = ours(d) else {
        // open_virtual returns only streams of ours; never seen, but never a panic in a hook.
        return crate::real::fail(libc::EBADF);
    };
    let (mut array, mut len, mut cap): (*mut *mut dirent64, usize, usize) =
        (core::ptr::null_mut(), 0, 0);
    let mut failed = false;
    loop {
        let ent = next(m, s);
        if ent.is_null() {
            break;
        }
        // SAFETY: the program's filter on our entry.
        if let Some(f) = filter
            && unsafe { f(ent) } == 0
        {
            continue;
        }
        // SAFETY: the program's malloc and realloc, as the API promises; sizes checked.
        unsafe {
            if len == cap {
                cap = (cap * 2).max(16);
                let grown = libc::realloc(array.cast(), cap * size_of::<*mut dirent64>());
                if grown.is_null() {
                    failed = true;
                    break;
                }
                array = grown.cast();
            }
            let size = usize::from((*ent).d_reclen);
            let copy = libc::malloc(size).cast::<dirent64>();
            if copy.is_null() {
                failed = true;
                break;
            }
            core::ptr::copy_nonoverlapping(ent.cast::<u8>(), copy.cast::<u8>(), size);
            *array.add(len) = copy;
        }
        len += 1;
    }
    // SAFETY: our stream.
    unsafe { closedir(d) };
    if failed {
        // SAFETY: freeing what we allocated.
        unsafe {
            for i in 0..len {
                libc::free((*array.add(i)).cast());
            }
            libc::free(array.cast());
        }
        return fail(libc::ENOMEM);
    }
    if let Some(c) = compare
        && len > 1
    {
        // SAFETY: the array holds `len` pointers; `c` compares two of them by address.
        unsafe { libc::qsort(array.cast(), len, size_of::<*mut dirent64>(), Some(c)) };
    }
    // SAFETY: the program's out-pointer.
    unsafe { *list = array };
    len as c_int
}

macro_rules! scandir {
    ($($name:ident),*) => {$(
        /// glibc's `scandir` opens the directory internally, out of the PLT's reach.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(path: *const c_char, list: *mut *mut *mut dirent64, filter: Filter, compare: Compare) -> c_int {
            static REAL: Real = Real::new(concat!(stringify!($name), "\0"));
            type F = unsafe extern "C" fn(*const c_char, *mut *mut *mut dirent64, Filter, Compare) -> c_int;
            let real = |p| match unsafe { REAL.get::<F>() } {
                // SAFETY: scandir's signature; the program's arguments.
                Some(f) => unsafe { f(p, list, filter, compare) },
                None => fail(libc::ENOSYS),
            };
            by_path(path, real, |m, i| scan_virtual(m, i, list, filter, compare))
        }
    )*};
}

scandir!(scandir, scandir64);
