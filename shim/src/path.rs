//! Translating the paths a hook receives, in stack buffers.
//!
//! The fast path, taken by every call when nothing is projected or the path is not canonical,
//! is a load of the state word and a comparison that usually stops at the second byte; only a
//! canonical path reaches the `#[cold]` functions that own a `PATH_MAX` buffer, so ordinary calls
//! do not pay for reserving it.

use core::ffi::{CStr, c_char, c_int};

use velo_intercept::table::const_eq;
use velo_intercept::translate::{self, Mapping};

use crate::config::{self, Config};
#[cfg(target_os = "linux")]
use crate::mirage::{self, Mirage, Place};
#[cfg(target_os = "linux")]
use crate::real::fail;
use crate::real::{Fail, set_errno};

pub const PATH_MAX: usize = libc::PATH_MAX as usize;

/// A path buffer on the stack.
pub type Buf = [u8; PATH_MAX];

#[inline]
fn canonical(cfg: &Config, path: *const c_char) -> Option<(&Mapping<'static>, *const u8)> {
    if path.is_null() {
        return None;
    }
    // SAFETY: `path` is a non-null C string from the program.
    unsafe { translate::find_canonical_cstr(cfg.maps(), path.cast()) }
}

/// Writes the physical form of a canonical path into `buf`.
fn physical(map: &Mapping, rest: *const u8, buf: &mut Buf) -> Option<*const c_char> {
    // SAFETY: `rest` points into the program's NUL-terminated path.
    let rest = unsafe { CStr::from_ptr(rest.cast()) }.to_bytes();
    match translate::join(map.physical(), rest, buf) {
        Ok(_) => Some(buf.as_ptr().cast()),
        Err(translate::TooLong) => {
            set_errno(libc::ENAMETOOLONG);
            None
        }
    }
}

/// Calls `call` with `path` translated inbound.
#[inline(always)]
pub fn in1<R: Fail>(path: *const c_char, call: impl FnOnce(*const c_char) -> R) -> R {
    if let Some(cfg) = config::get()
        && let Some((map, rest)) = canonical(cfg, path)
    {
        return in1_slow(map, rest, call);
    }
    call(path)
}

#[cold]
#[inline(never)]
fn in1_slow<R: Fail>(map: &Mapping, rest: *const u8, call: impl FnOnce(*const c_char) -> R) -> R {
    let mut buf: Buf = [0; PATH_MAX];
    match physical(map, rest, &mut buf) {
        Some(p) => call(p),
        None => R::FAIL,
    }
}

/// Calls `call` with both paths translated inbound (rename, link, symlink, …).
#[inline(always)]
pub fn in2<R: Fail>(
    a: *const c_char,
    b: *const c_char,
    call: impl FnOnce(*const c_char, *const c_char) -> R,
) -> R {
    if let Some(cfg) = config::get() {
        let (ta, tb) = (canonical(cfg, a), canonical(cfg, b));
        if ta.is_some() || tb.is_some() {
            return in2_slow(a, ta, b, tb, call);
        }
    }
    call(a, b)
}

type Hit<'a> = Option<(&'a Mapping<'static>, *const u8)>;

#[cold]
#[inline(never)]
fn in2_slow<R: Fail>(
    a: *const c_char,
    ta: Hit,
    b: *const c_char,
    tb: Hit,
    call: impl FnOnce(*const c_char, *const c_char) -> R,
) -> R {
    let (mut buf_a, mut buf_b): (Buf, Buf) = ([0; PATH_MAX], [0; PATH_MAX]);
    let a = match ta {
        Some((map, rest)) => match physical(map, rest, &mut buf_a) {
            Some(p) => p,
            None => return R::FAIL,
        },
        None => a,
    };
    let b = match tb {
        Some((map, rest)) => match physical(map, rest, &mut buf_b) {
            Some(p) => p,
            None => return R::FAIL,
        },
        None => b,
    };
    call(a, b)
}

/// For the `mkstemp` family: `template` is both read and written (its `XXXXXX` are replaced).
/// A canonical template is translated into a buffer, `call` fills in the buffer's `XXXXXX`, and
/// the generated tail is copied back into the program's template, whose canonical prefix stays.
#[inline(always)]
pub fn template<R: Fail>(template: *mut c_char, call: impl FnOnce(*mut c_char) -> R) -> R {
    if let Some(cfg) = config::get()
        && let Some((map, rest)) = canonical(cfg, template)
    {
        return template_slow(map, rest, call);
    }
    call(template)
}

#[cold]
#[inline(never)]
fn template_slow<R: Fail>(
    map: &Mapping,
    rest: *const u8,
    call: impl FnOnce(*mut c_char) -> R,
) -> R {
    let mut buf: Buf = [0; PATH_MAX];
    let Some(p) = physical(map, rest, &mut buf) else {
        return R::FAIL;
    };
    let out = call(p.cast_mut());
    // SAFETY: `rest` is the tail of the program's writable template, and the buffer holds the
    // same tail, of the same length, after the physical root.
    unsafe {
        let len = CStr::from_ptr(rest.cast()).to_bytes().len();
        core::ptr::copy_nonoverlapping(
            buf.as_ptr().add(map.physical().len()),
            rest.cast_mut(),
            len,
        );
    }
    out
}

/// Outbound: rewrites `path` (physical → canonical) into `out`. Returns the length written
/// (without the NUL), or `None` when `path` is not under a physical root.
pub fn to_canonical(
    cfg: &Config,
    path: &[u8],
    out: &mut Buf,
) -> Result<Option<usize>, translate::TooLong> {
    translate::to_canonical(cfg.maps(), path, out)
}

// --- Mode B ------------------------------------------------------------------------------------

/// What a hook does to the path it is given, for Mode B: reading leaves the tree as it is,
/// writing would change it and fails with `EROFS` under the virtual root.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    /// Removes a name: with `--upper`, a tree entry is recorded as deleted.
    Delete,
}

impl Op {
    /// The class of the libc function `name`, from its row in the interception table, at
    /// compile time: a hook with no row does not build, and no class is ever guessed.
    pub const fn of(name: &str) -> Op {
        match velo_intercept::table::class_of(name) {
            velo_intercept::table::Class::Read => Op::Read,
            velo_intercept::table::Class::Write => Op::Write,
            velo_intercept::table::Class::Delete => Op::Delete,
        }
    }
}

impl Op {
    /// Whether the call renames (the source's name goes away).
    pub const fn renames(name: &str) -> bool {
        const_eq(name, "rename") || const_eq(name, "renameat") || const_eq(name, "renameat2")
    }

    /// Whether the first of two paths is a symlink's target (data, not a path).
    pub const fn target_first(name: &str) -> bool {
        const_eq(name, "symlink") || const_eq(name, "symlinkat")
    }
}

/// [`in1`] for a call relative to `dirfd`, which also serves Mode B: a path in the virtual tree
/// reaches `call` as its backing real path (a file's blob), or fails (`EROFS` for a write).
#[cfg(target_os = "linux")]
#[inline(always)]
pub fn in1_at<R: Fail + PartialEq>(
    op: Op,
    dirfd: c_int,
    path: *const c_char,
    call: impl FnOnce(*const c_char) -> R,
) -> R {
    if let Some(m) = mirage::get() {
        return in1_mirage(m, op, dirfd, path, call);
    }
    in1(path, call)
}

#[cfg(target_os = "linux")]
#[inline(never)]
fn in1_mirage<R: Fail + PartialEq>(
    m: &Mirage,
    op: Op,
    dirfd: c_int,
    path: *const c_char,
    call: impl FnOnce(*const c_char) -> R,
) -> R {
    let mut out: Buf = [0; PATH_MAX];
    let layered = !m.upper.is_empty();
    match m.resolve(dirfd, path, true, &mut out) {
        Place::Pass => in1(path, call),
        Place::Real => call(out.as_ptr().cast()),
        Place::Upper { .. } if op == Op::Read => call(out.as_ptr().cast()),
        Place::Upper { shadows } => {
            if let Err(e) = m.prepare_upper(&mut out) {
                return fail(e);
            }
            let r = call(out.as_ptr().cast());
            if op == Op::Delete && shadows && r != R::FAIL {
                let e = m.mark_deleted_at(&out);
                if e < 0 {
                    return fail(-e);
                }
            }
            r
        }
        Place::Node(i) if op == Op::Read => call(m.backing(i, &mut out)),
        Place::Node(_) | Place::Missing if !layered => fail(libc::EROFS),
        Place::Node(i) if op == Op::Delete => match m.delete(i) {
            0 => R::ZERO,
            e => fail(-e),
        },
        Place::Node(i) => match m.copy_up(i, &mut out) {
            0 => call(out.as_ptr().cast()),
            e => fail(-e),
        },
        Place::Missing if op == Op::Read => fail(libc::ENOENT),
        Place::Missing => fail(libc::EROFS),
        Place::Fail(e) => fail(e),
    }
}

#[cfg(target_os = "linux")]
#[inline(never)]
fn in_tree(m: &Mirage, dirfd: c_int, path: *const c_char) -> bool {
    let mut out: Buf = [0; PATH_MAX];
    matches!(
        m.resolve(dirfd, path, false, &mut out),
        Place::Node(_) | Place::Missing
    )
}

/// [`in2`] relative to two descriptors, for Mode B. Every two-path call changes the tree
/// (rename, link, symlink): without `--upper` either path in it fails with `EROFS`; with it,
/// the source is copied up, the call is made in the layer, and a renamed tree entry is recorded
/// as deleted. A symlink's target (`a` when `target_first`) is data, not a path to check.
#[cfg(target_os = "linux")]
#[inline(always)]
pub fn in2_at<R: Fail + PartialEq>(
    target_first: bool,
    renames: bool,
    fa: c_int,
    a: *const c_char,
    fb: c_int,
    b: *const c_char,
    call: impl FnOnce(*const c_char, *const c_char) -> R,
) -> R {
    if let Some(m) = mirage::get() {
        if !m.upper.is_empty() {
            return in2_layered(m, target_first, renames, fa, a, fb, b, call);
        }
        if (!target_first && in_tree(m, fa, a)) || in_tree(m, fb, b) {
            return fail(libc::EROFS);
        }
    }
    in2(a, b, call)
}

#[cfg(target_os = "linux")]
#[inline(never)]
#[allow(
    clippy::too_many_arguments,
    reason = "the two paths and their descriptors"
)]
fn in2_layered<R: Fail + PartialEq>(
    m: &Mirage,
    target_first: bool,
    renames: bool,
    fa: c_int,
    a: *const c_char,
    fb: c_int,
    b: *const c_char,
    call: impl FnOnce(*const c_char, *const c_char) -> R,
) -> R {
    let (mut oa, mut ob): (Buf, Buf) = ([0; PATH_MAX], [0; PATH_MAX]);
    let to = match m.resolve(fb, b, false, &mut ob) {
        Place::Pass => b,
        Place::Real => ob.as_ptr().cast(),
        Place::Upper { .. } => {
            if let Err(e) = m.prepare_upper(&mut ob) {
                return fail(e);
            }
            ob.as_ptr().cast()
        }
        Place::Node(j) if m.entry(j).is_dir() => return fail(libc::EEXIST),
        // Replacing a file of the tree: the new one goes to its place in the layer.
        Place::Node(j) => {
            let e = m.copy_up(j, &mut ob);
            if e < 0 {
                return fail(-e);
            }
            // SAFETY: a NUL-terminated path of ours; a raw syscall.
            unsafe { libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, ob.as_ptr(), 0) };
            ob.as_ptr().cast()
        }
        Place::Missing => return fail(libc::EROFS),
        Place::Fail(e) => return fail(e),
    };
    if target_first {
        return call(a, to);
    }
    let mut deleted_after: Option<u32> = None;
    let mut shadowed = false;
    let from = match m.resolve(fa, a, false, &mut oa) {
        Place::Pass => a,
        Place::Real => oa.as_ptr().cast(),
        Place::Upper { shadows } => {
            shadowed = shadows;
            oa.as_ptr().cast()
        }
        // mv copies a directory when rename says EXDEV.
        Place::Node(i) if m.entry(i).is_dir() => {
            return fail(if renames { libc::EXDEV } else { libc::EPERM });
        }
        Place::Node(i) => {
            let e = m.copy_up(i, &mut oa);
            if e < 0 {
                return fail(-e);
            }
            deleted_after = Some(i);
            oa.as_ptr().cast()
        }
        Place::Missing => return fail(libc::ENOENT),
        Place::Fail(e) => return fail(e),
    };
    let r = call(from, to);
    if renames && r != R::FAIL {
        if let Some(i) = deleted_after {
            m.mark_deleted(m.entry(i).path);
        } else if shadowed {
            m.mark_deleted_at(&oa);
        }
    }
    r
}
