//! The projection this process tree runs under, read once from the environment.
//!
//! Filled once ([`crate::once`]) into static buffers, with no allocation: `getenv` to read, raw
//! syscalls to resolve the physical root.

use crate::bytes;
use velo_intercept::env;
use velo_intercept::translate::{self, Mapping};

use crate::environ::{entry, getenv};
use crate::once::Once;

/// Longest root, and longest `KEY=VALUE` we keep for re-adding to a child's environment.
pub const ROOT_MAX: usize = libc::PATH_MAX as usize;
const ENTRY_MAX: usize = ROOT_MAX + 32;
/// The project root plus up to three extra roots (`VRIFT_EXTRA_ROOTS`), such as `CARGO_HOME`.
pub const MAX_MAPS: usize = 4;
/// Longest `VRIFT_EXTRA_ROOTS` value.
const EXTRA_MAX: usize = 2 * ROOT_MAX;

pub struct Config {
    /// The project mapping first, then the extra roots; only `..count` are valid.
    maps: [Mapping<'static>; MAX_MAPS],
    count: usize,
    /// `VRIFT_CANONICAL_ROOT=…`, `VRIFT_PHYSICAL_ROOT=…` and `LD_PRELOAD=<this library>`
    /// (empty when this library was not found in `LD_PRELOAD`), NUL-terminated: the entries the
    /// exec hooks add to a child's environment when it lacks them.
    pub env_canonical: &'static [u8],
    pub env_physical: &'static [u8],
    pub env_preload: &'static [u8],
    /// `VRIFT_EXTRA_ROOTS=…\0`, or empty when there are no extra roots.
    pub env_extra: &'static [u8],
    /// This library's entry in `LD_PRELOAD`, without the key.
    pub shim: &'static [u8],
}

impl Config {
    /// Every active mapping; the longest matching root wins (see `velo_intercept::translate`).
    #[inline]
    pub fn maps(&self) -> &[Mapping<'static>] {
        self.maps.get(..self.count).unwrap_or_default()
    }
}

struct Storage {
    canonical: [u8; ROOT_MAX],
    physical: [u8; ROOT_MAX],
    resolved: [u8; ROOT_MAX],
    /// The `VRIFT_EXTRA_ROOTS` value with its `=` and `:` separators replaced by NULs, so each
    /// root is a C string for [`resolve`].
    extra: [u8; EXTRA_MAX],
    extra_resolved: [[u8; ROOT_MAX]; MAX_MAPS - 1],
    env_canonical: [u8; ENTRY_MAX],
    env_physical: [u8; ENTRY_MAX],
    env_preload: [u8; ENTRY_MAX],
    env_extra: [u8; EXTRA_MAX + 32],
    config: Option<Config>,
}

static STORAGE: Once<Storage> = Once::new(Storage {
    canonical: [0; ROOT_MAX],
    physical: [0; ROOT_MAX],
    resolved: [0; ROOT_MAX],
    extra: [0; EXTRA_MAX],
    extra_resolved: [[0; ROOT_MAX]; MAX_MAPS - 1],
    env_canonical: [0; ENTRY_MAX],
    env_physical: [0; ENTRY_MAX],
    env_preload: [0; ENTRY_MAX],
    env_extra: [0; EXTRA_MAX + 32],
    config: None,
});

/// The active projection, or `None` when this process is not projecting (pass-through).
#[inline]
pub fn get() -> Option<&'static Config> {
    STORAGE.get(load, |s| s.config.as_ref())
}

/// Reads the environment into `s`; `false` when there is nothing to project.
fn load(s: &mut Storage) -> bool {
    #[cfg(target_os = "linux")]
    crate::real::keep_errno(crate::kernel::beacon);
    let Some(physical) = getenv(env::PHYSICAL_ROOT.c()) else {
        return false;
    };
    let canonical = getenv(env::CANONICAL_ROOT.c())
        .filter(|c| !c.is_empty())
        .unwrap_or(env::DEFAULT_CANONICAL_ROOT.as_bytes());
    let (Some(canonical), Some(physical)) = (
        copy(canonical, &mut s.canonical),
        copy(physical, &mut s.physical),
    ) else {
        return false;
    };
    let resolved = resolve(physical, &mut s.resolved);
    // SAFETY: the buffers live in a static and are not written again once STATE is ON.
    let (canonical, physical, resolved): (&'static [u8], &'static [u8], Option<&'static [u8]>) = unsafe {
        (
            core::slice::from_raw_parts(canonical.as_ptr(), canonical.len()),
            core::slice::from_raw_parts(physical.as_ptr(), physical.len()),
            resolved.map(|r| core::slice::from_raw_parts(r.as_ptr(), r.len())),
        )
    };
    let Some(map) = Mapping::new(canonical, physical, resolved) else {
        return false;
    };

    let env_canonical = entry(
        env::CANONICAL_ROOT.bytes(),
        map.canonical(),
        &mut s.env_canonical,
    );
    let env_physical = entry(
        env::PHYSICAL_ROOT.bytes(),
        map.physical(),
        &mut s.env_physical,
    );
    let (shim, env_preload) = crate::environ::shim_preload(&mut s.env_preload);
    let env_preload = env_preload.unwrap_or(&[]);
    let (Some(env_canonical), Some(env_physical)) = (env_canonical, env_physical) else {
        return false;
    };
    let stat = |b: &[u8]| -> &'static [u8] {
        // SAFETY: as above.
        unsafe { core::slice::from_raw_parts(b.as_ptr(), b.len()) }
    };
    let mut maps = [map; MAX_MAPS];
    let mut count = 1;
    let mut env_extra: &[u8] = &[];
    if let Some(value) = getenv(env::EXTRA_ROOTS.c()).filter(|v| !v.is_empty()) {
        // An extra root that cannot be read is left out rather than turning the whole
        // projection off: the project mapping still holds.
        count += extra_maps(value, &mut s.extra, &mut s.extra_resolved, &mut maps[1..]);
        if count > 1 {
            env_extra = entry(env::EXTRA_ROOTS.bytes(), value, &mut s.env_extra).unwrap_or(&[]);
        }
    }
    s.config = Some(Config {
        maps,
        count,
        env_canonical: stat(env_canonical),
        env_physical: stat(env_physical),
        env_preload: stat(env_preload),
        env_extra: stat(env_extra),
        shim,
    });
    true
}

/// Parses `CANONICAL=PHYSICAL[:CANONICAL=PHYSICAL]…` into `out`; returns how many it filled.
/// Entries that are malformed, not absolute or beyond `out.len()` are skipped.
fn extra_maps(
    value: &[u8],
    buf: &mut [u8; EXTRA_MAX],
    resolved: &mut [[u8; ROOT_MAX]; MAX_MAPS - 1],
    out: &mut [Mapping<'static>],
) -> usize {
    if bytes::c_join(&mut buf[..], &[value]).is_none() {
        return 0;
    }
    for b in buf.iter_mut().take(value.len()) {
        if *b == b':' || *b == b'=' {
            *b = 0;
        }
    }
    // SAFETY: the buffer lives in a static and is not written again once STATE is ON.
    let text: &'static [u8] = unsafe { core::slice::from_raw_parts(buf.as_ptr(), value.len()) };
    let mut filled = 0;
    let mut pos = 0;
    for sep in value.split(|&b| b == b':') {
        let start = pos;
        pos += sep.len() + 1;
        let Some(eq) = sep.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (Some(slot), Some(resolved)) = (out.get_mut(filled), resolved.get_mut(filled)) else {
            break;
        };
        let (Some(canonical), Some(physical)) = (
            text.get(start..start + eq),
            text.get(start + eq + 1..start + sep.len()),
        ) else {
            continue;
        };
        // `physical` is followed by a NUL in `buf`, as `resolve` needs.
        let real = resolve(physical, resolved).map(|r| {
            // SAFETY: as above, for the resolved buffers.
            unsafe { core::slice::from_raw_parts(r.as_ptr(), r.len()) }
        });
        if let Some(m) = Mapping::new(canonical, physical, real) {
            *slot = m;
            filled += 1;
        }
    }
    filled
}

fn copy<'b>(src: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    bytes::c_join(buf, &[translate::trim_root(src)])
}

/// `realpath(path)` without libc's allocating implementation: open it `O_PATH` and read the
/// kernel's name for the descriptor. `None` when that fails (no `/proc`) or names the same path.
fn resolve<'b>(path: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    // From the shim's own code (see `crate::kernel`): a tracer sees the physical root come back
    // to the shim, not to the program.
    let end = buf.len().saturating_sub(1);
    // SAFETY: `path` is followed by a NUL in its storage buffer (see `copy`).
    let len = unsafe { crate::kernel::real_name(path.as_ptr(), buf.get_mut(..end)?) }.ok()?;
    if len >= end {
        return None;
    }
    bytes::set(buf, len, 0)?;
    let resolved = bytes::head(buf, len);
    (resolved != path).then_some(resolved)
}
