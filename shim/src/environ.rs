//! Reading the environment and building `KEY=VALUE` entries, in static buffers: what the
//! config, the mirage and the exec hooks share (the variables themselves are named in
//! `velo_intercept::env`).

use core::ffi::CStr;

use velo_intercept::env;

/// `getenv(name)`, as bytes without the NUL.
pub fn getenv(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; the value lives as long as the environment entry, which
    // we copy out of before any hook returns to the program.
    let p = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: getenv returns a NUL-terminated string or NULL.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// `KEY=VALUE\0` in `buf`, returned with its NUL.
pub fn entry<'b>(key: &[u8], value: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let len = crate::bytes::c_join(buf, &[key, b"=", value])?.len();
    buf.get(..=len)
}

/// This library's entry in the environment's `LD_PRELOAD` (empty when it is not there), and
/// `LD_PRELOAD=<that entry>\0` in `buf` for a child's environment (`None` when there is no
/// entry or it does not fit).
pub fn shim_preload(buf: &mut [u8]) -> (&'static [u8], Option<&[u8]>) {
    let shim = getenv(env::LD_PRELOAD.c())
        .and_then(find_shim)
        .unwrap_or(&[]);
    if shim.is_empty() {
        return (shim, None);
    }
    (shim, entry(env::LD_PRELOAD.bytes(), shim, buf))
}

/// The entry of a `LD_PRELOAD` list (space- or colon-separated) that is this library.
pub fn find_shim(list: &'static [u8]) -> Option<&'static [u8]> {
    let name = env::SHIM_FILE_NAME.as_bytes();
    list.split(|&b| b == b' ' || b == b':').find(|e| {
        e.strip_suffix(name)
            .is_some_and(|dir| dir.is_empty() || dir.ends_with(b"/"))
    })
}

/// Whether the `LD_PRELOAD` value `list` names this library.
pub fn preload_has_shim(list: &[u8], shim: &[u8]) -> bool {
    list.split(|&b| b == b' ' || b == b':').any(|e| e == shim)
}
