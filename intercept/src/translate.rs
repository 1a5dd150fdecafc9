//! Canonical ⇄ physical path translation.
//!
//! A [`Mapping`] pairs a canonical root (`/vrift_workspace`) with the physical directory it
//! stands for. Translation is purely textual and happens at the libc boundary:
//!
//! - **inbound** ([`to_physical`]): a path argument that *is* the canonical root or lies under it,
//!   on a path-component boundary, has that prefix replaced by the physical root. Everything else
//!   (relative paths, `/usr/lib/…`, `/vrift_workspace2`) passes unchanged, so the kernel resolves
//!   relative paths against the real working directory as usual.
//! - **outbound** ([`to_canonical`]): a path the kernel hands back (getcwd, readlink of
//!   `/proc/self/cwd`, realpath) that lies under the physical root is renamed to the canonical
//!   one. The physical root matches both as configured and as `realpath` resolves it, because the
//!   kernel always answers with the resolved form while users configure symlinked checkouts.
//!
//! With several mappings the longest matching root wins, so nested roots (a `CARGO_HOME` inside a
//! project, say) resolve to the most specific mapping.
//!
//! Known limit, by design: `..` is not resolved textually. `/vrift_workspace/../etc` becomes
//! `<physical>/../etc`, which the kernel resolves against the physical tree; a path that climbs
//! above the canonical root therefore lands next to the physical root, not at `/`.
//!
//! Nothing here allocates: results are written into caller-provided buffers with a terminating
//! NUL, ready for a syscall.

/// The translated path (plus its NUL) does not fit the caller's buffer: the hook reports
/// `ENAMETOOLONG`, as the kernel would for a path longer than `PATH_MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

/// `root` without trailing slashes (`/a/b/` → `/a/b`); `/` stays `/`.
pub fn trim_root(root: &[u8]) -> &[u8] {
    let mut end = root.len();
    while end > 1 && root[end - 1] == b'/' {
        end -= 1;
    }
    &root[..end]
}

/// When `path` is `root` or lies below it on a component boundary, the rest of `path`: empty, or
/// starting with `/`. `root` must be trimmed ([`trim_root`]) and must not be `/`.
pub fn strip_root<'p>(path: &'p [u8], root: &[u8]) -> Option<&'p [u8]> {
    let rest = path.strip_prefix(root)?;
    (rest.is_empty() || rest[0] == b'/').then_some(rest)
}

/// [`strip_root`] for a NUL-terminated string, reading no more of it than the comparison needs:
/// most paths differ from the root in their first two bytes, which keeps hooks cheap.
///
/// # Safety
/// `path` must point to a NUL-terminated string.
#[inline]
pub unsafe fn strip_root_cstr(path: *const u8, root: &[u8]) -> Option<*const u8> {
    for (i, &want) in root.iter().enumerate() {
        // SAFETY: every byte before the first NUL is readable, and we stop at a mismatch, which
        // includes the NUL (roots contain none).
        if unsafe { *path.add(i) } != want {
            return None;
        }
    }
    // SAFETY: `path` matched all of `root`, so the byte after it is at most the NUL.
    let rest = unsafe { path.add(root.len()) };
    // SAFETY: as above.
    let next = unsafe { *rest };
    (next == 0 || next == b'/').then_some(rest)
}

/// Writes `root` + `rest` + NUL into `out`, returning the length without the NUL.
pub fn join(root: &[u8], rest: &[u8], out: &mut [u8]) -> Result<usize, TooLong> {
    let len = root.len() + rest.len();
    if len >= out.len() {
        return Err(TooLong);
    }
    out[..root.len()].copy_from_slice(root);
    out[root.len()..len].copy_from_slice(rest);
    out[len] = 0;
    Ok(len)
}

/// One canonical root and the physical directory it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping<'a> {
    canonical: &'a [u8],
    physical: &'a [u8],
    /// `realpath(physical)` when it differs from `physical`, else empty.
    resolved: &'a [u8],
}

impl<'a> Mapping<'a> {
    /// A mapping, or `None` when a root is not absolute or is `/` itself (mapping `/` would
    /// capture every path on the system). Trailing slashes are ignored.
    pub fn new(
        canonical: &'a [u8],
        physical: &'a [u8],
        resolved: Option<&'a [u8]>,
    ) -> Option<Self> {
        let valid = |root: &[u8]| root.len() > 1 && root[0] == b'/' && !root.contains(&0);
        let canonical = trim_root(canonical);
        let physical = trim_root(physical);
        if !valid(canonical) || !valid(physical) {
            return None;
        }
        let resolved = match resolved.map(trim_root) {
            Some(r) if valid(r) && r != physical => r,
            _ => &[],
        };
        Some(Mapping {
            canonical,
            physical,
            resolved,
        })
    }

    pub fn canonical(&self) -> &'a [u8] {
        self.canonical
    }

    pub fn physical(&self) -> &'a [u8] {
        self.physical
    }

    /// The resolved physical root, when it differs from the configured one.
    pub fn resolved(&self) -> Option<&'a [u8]> {
        (!self.resolved.is_empty()).then_some(self.resolved)
    }

    /// The rest of `path` after the physical root, in either spelling (the longer match wins).
    pub fn strip_physical<'p>(&self, path: &'p [u8]) -> Option<&'p [u8]> {
        let given = strip_root(path, self.physical);
        let resolved = self.resolved().and_then(|r| strip_root(path, r));
        match (given, resolved) {
            (Some(a), Some(b)) => Some(if a.len() <= b.len() { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// The mapping whose canonical root is the longest prefix of `path`, with the rest of `path`.
pub fn find_canonical<'m, 'a, 'p>(
    maps: &'m [Mapping<'a>],
    path: &'p [u8],
) -> Option<(&'m Mapping<'a>, &'p [u8])> {
    maps.iter()
        .filter_map(|m| strip_root(path, m.canonical).map(|rest| (m, rest)))
        .min_by_key(|(_, rest)| rest.len())
}

/// The mapping whose physical root (either spelling) is the longest prefix of `path`.
pub fn find_physical<'m, 'a, 'p>(
    maps: &'m [Mapping<'a>],
    path: &'p [u8],
) -> Option<(&'m Mapping<'a>, &'p [u8])> {
    maps.iter()
        .filter_map(|m| m.strip_physical(path).map(|rest| (m, rest)))
        .min_by_key(|(_, rest)| rest.len())
}

/// [`find_canonical`] for a NUL-terminated string: the mapping and a pointer to the rest.
///
/// # Safety
/// `path` must point to a NUL-terminated string.
#[inline]
pub unsafe fn find_canonical_cstr<'m, 'a>(
    maps: &'m [Mapping<'a>],
    path: *const u8,
) -> Option<(&'m Mapping<'a>, *const u8)> {
    let mut best: Option<(&'m Mapping<'a>, *const u8)> = None;
    for m in maps {
        // SAFETY: forwarded from the caller.
        if let Some(rest) = unsafe { strip_root_cstr(path, m.canonical) }
            && best.is_none_or(|(b, _)| b.canonical.len() < m.canonical.len())
        {
            best = Some((m, rest));
        }
    }
    best
}

/// Inbound: `Ok(Some(len))` with the physical path in `out` when `path` is canonical,
/// `Ok(None)` when it passes unchanged.
pub fn to_physical(
    maps: &[Mapping],
    path: &[u8],
    out: &mut [u8],
) -> Result<Option<usize>, TooLong> {
    match find_canonical(maps, path) {
        Some((m, rest)) => join(m.physical, rest, out).map(Some),
        None => Ok(None),
    }
}

/// Outbound: `Ok(Some(len))` with the canonical path in `out` when `path` lies under a physical
/// root, `Ok(None)` when it passes unchanged.
pub fn to_canonical(
    maps: &[Mapping],
    path: &[u8],
    out: &mut [u8],
) -> Result<Option<usize>, TooLong> {
    match find_physical(maps, path) {
        Some((m, rest)) => join(m.canonical, rest, out).map(Some),
        None => Ok(None),
    }
}

/// Translates every entry of a `:`-separated search list (`LD_LIBRARY_PATH`) inbound. The
/// dynamic loader walks such lists with raw syscalls no hook sees, so canonical entries must be
/// made physical before a program starts. Writes the list and a NUL into `out`; returns its
/// length.
pub fn list_to_physical(maps: &[Mapping], list: &[u8], out: &mut [u8]) -> Result<usize, TooLong> {
    let mut len = 0;
    for (i, entry) in list.split(|&b| b == b':').enumerate() {
        let (root, rest): (&[u8], &[u8]) = match find_canonical(maps, entry) {
            Some((m, rest)) => (m.physical, rest),
            None => (&[], entry),
        };
        let sep: &[u8] = if i == 0 { b"" } else { b":" };
        for part in [sep, root, rest] {
            let end = len + part.len();
            if end >= out.len() {
                return Err(TooLong);
            }
            out[len..end].copy_from_slice(part);
            len = end;
        }
    }
    out[len] = 0;
    Ok(len)
}

/// Whether any entry of a `:`-separated list is canonical.
pub fn list_has_canonical(maps: &[Mapping], list: &[u8]) -> bool {
    list.split(|&b| b == b':')
        .any(|entry| find_canonical(maps, entry).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> Mapping<'static> {
        Mapping::new(
            b"/vrift_workspace",
            b"/home/alice/proj",
            Some(b"/data/alice/proj"),
        )
        .unwrap()
    }

    fn inbound(maps: &[Mapping], path: &str) -> Option<std::string::String> {
        let mut out = [0u8; 256];
        let len = to_physical(maps, path.as_bytes(), &mut out).unwrap()?;
        assert_eq!(out[len], 0, "NUL-terminated");
        Some(std::string::String::from_utf8(out[..len].to_vec()).unwrap())
    }

    fn outbound(maps: &[Mapping], path: &str) -> Option<std::string::String> {
        let mut out = [0u8; 256];
        let len = to_canonical(maps, path.as_bytes(), &mut out).unwrap()?;
        Some(std::string::String::from_utf8(out[..len].to_vec()).unwrap())
    }

    #[test]
    fn inbound_translates_on_component_boundaries_only() {
        let maps = [ws()];
        assert_eq!(
            inbound(&maps, "/vrift_workspace").as_deref(),
            Some("/home/alice/proj")
        );
        assert_eq!(
            inbound(&maps, "/vrift_workspace/").as_deref(),
            Some("/home/alice/proj/")
        );
        assert_eq!(
            inbound(&maps, "/vrift_workspace/src/lib.rs").as_deref(),
            Some("/home/alice/proj/src/lib.rs")
        );
        for untouched in [
            "/vrift_workspace2",
            "/vrift_workspac",
            "vrift_workspace/x",
            "src/lib.rs",
            "",
            "/",
            "/usr/lib",
        ] {
            assert_eq!(inbound(&maps, untouched), None, "{untouched:?}");
        }
    }

    #[test]
    fn outbound_matches_the_given_and_the_resolved_root() {
        let maps = [ws()];
        assert_eq!(
            outbound(&maps, "/home/alice/proj").as_deref(),
            Some("/vrift_workspace")
        );
        assert_eq!(
            outbound(&maps, "/home/alice/proj/target").as_deref(),
            Some("/vrift_workspace/target")
        );
        assert_eq!(
            outbound(&maps, "/data/alice/proj/src").as_deref(),
            Some("/vrift_workspace/src")
        );
        assert_eq!(outbound(&maps, "/home/alice/project"), None);
        assert_eq!(outbound(&maps, "/data/alice"), None);
    }

    #[test]
    fn the_longest_root_wins() {
        let maps = [
            Mapping::new(b"/vrift_workspace", b"/home/a/proj", None).unwrap(),
            Mapping::new(b"/cargo-home", b"/home/a/proj/.cargo", None).unwrap(),
            Mapping::new(b"/vrift_workspace/vendor", b"/srv/vendor", None).unwrap(),
        ];
        assert_eq!(
            outbound(&maps, "/home/a/proj/.cargo/registry").as_deref(),
            Some("/cargo-home/registry")
        );
        assert_eq!(
            outbound(&maps, "/home/a/proj/src").as_deref(),
            Some("/vrift_workspace/src")
        );
        assert_eq!(
            inbound(&maps, "/vrift_workspace/vendor/x").as_deref(),
            Some("/srv/vendor/x")
        );
        assert_eq!(
            inbound(&maps, "/vrift_workspace/vendored").as_deref(),
            Some("/home/a/proj/vendored")
        );
    }

    #[test]
    fn invalid_roots_are_refused_and_trailing_slashes_ignored() {
        assert!(Mapping::new(b"/", b"/x", None).is_none());
        assert!(Mapping::new(b"/c", b"/", None).is_none());
        assert!(Mapping::new(b"relative", b"/x", None).is_none());
        assert!(Mapping::new(b"/c", b"", None).is_none());
        assert!(Mapping::new(b"/c", b"/x\0y", None).is_none());
        let m = Mapping::new(b"/c//", b"/x/", Some(b"/x")).unwrap();
        assert_eq!(
            (m.canonical(), m.physical(), m.resolved()),
            (&b"/c"[..], &b"/x"[..], None)
        );
    }

    #[test]
    fn too_long_is_reported_not_truncated() {
        let maps = [ws()];
        let mut out = [0u8; 20];
        assert_eq!(
            to_physical(&maps, b"/vrift_workspace/abcdef", &mut out),
            Err(TooLong)
        );
        // Exactly fitting, with the NUL.
        let mut out = [0u8; 17];
        assert_eq!(
            to_physical(&maps, b"/vrift_workspace", &mut out),
            Ok(Some(16))
        );
    }

    #[test]
    fn cstr_prefix_match_agrees_with_the_slice_version() {
        let root = b"/vrift_workspace";
        for path in [
            "/vrift_workspace",
            "/vrift_workspace/a",
            "/vrift_workspace2",
            "/vrift",
            "",
            "/x",
        ] {
            let c = std::ffi::CString::new(path).unwrap();
            // SAFETY: `c` is NUL-terminated.
            let got = unsafe { strip_root_cstr(c.as_ptr().cast(), root) }
                // SAFETY: the rest points into `c`.
                .map(|p| {
                    unsafe { core::ffi::CStr::from_ptr(p.cast()) }
                        .to_bytes()
                        .to_vec()
                });
            assert_eq!(
                got,
                strip_root(path.as_bytes(), root).map(<[u8]>::to_vec),
                "{path:?}"
            );
        }
    }

    #[test]
    fn search_lists_translate_entry_by_entry() {
        let maps = [ws()];
        let mut out = [0u8; 256];
        let list = b"/vrift_workspace/target/debug/deps:/usr/lib::/vrift_workspace2";
        assert!(list_has_canonical(&maps, list));
        let len = list_to_physical(&maps, list, &mut out).unwrap();
        assert_eq!(
            &out[..len],
            b"/home/alice/proj/target/debug/deps:/usr/lib::/vrift_workspace2"
        );
        assert!(!list_has_canonical(&maps, b"/usr/lib:/vrift_workspace2"));
        assert_eq!(list_to_physical(&maps, b"", &mut out), Ok(0));
    }
}
