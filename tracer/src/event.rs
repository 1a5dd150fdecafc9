//! What a backend records. Every backend produces the same [`Event`]s, written as JSON lines by
//! `velo trace --events FILE`, so the analysis and any later tool read one format.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A path as a process passed it to the kernel, or the kernel returned it: bytes, which need
/// not be UTF-8 (a project under a non-UTF-8 directory must still match its root). Shown
/// lossily; in the JSON event log a string when it is UTF-8, else `{"bytes": [..]}`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawPath(pub Vec<u8>);

impl RawPath {
    /// The path as the filesystem takes it.
    pub fn as_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }

    /// For people: invalid UTF-8 replaced.
    pub fn lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl std::ops::Deref for RawPath {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for RawPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.lossy(), f)
    }
}

impl fmt::Display for RawPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lossy())
    }
}

impl From<Vec<u8>> for RawPath {
    fn from(bytes: Vec<u8>) -> RawPath {
        RawPath(bytes)
    }
}

impl From<&[u8]> for RawPath {
    fn from(bytes: &[u8]) -> RawPath {
        RawPath(bytes.to_vec())
    }
}

impl From<&std::path::Path> for RawPath {
    fn from(path: &std::path::Path) -> RawPath {
        RawPath(path.as_os_str().as_encoded_bytes().to_vec())
    }
}

impl From<&str> for RawPath {
    fn from(text: &str) -> RawPath {
        RawPath(text.as_bytes().to_vec())
    }
}

impl From<String> for RawPath {
    fn from(text: String) -> RawPath {
        RawPath(text.into_bytes())
    }
}

impl PartialEq<&str> for RawPath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawPathJson<'a> {
    Text(Cow<'a, str>),
    Bytes { bytes: Cow<'a, [u8]> },
}

impl Serialize for RawPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => RawPathJson::Text(Cow::Borrowed(text)),
            Err(_) => RawPathJson::Bytes {
                bytes: Cow::Borrowed(&self.0),
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RawPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawPath, D::Error> {
        Ok(match RawPathJson::deserialize(d)? {
            RawPathJson::Text(text) => RawPath(text.into_owned().into_bytes()),
            RawPathJson::Bytes { bytes } => RawPath(bytes.into_owned()),
        })
    }
}

/// One observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A file syscall, seen at its exit.
    Syscall(Syscall),
    /// `parent` created `pid` (fork, vfork, or a thread with `clone`).
    Fork { parent: i32, pid: i32, thread: bool },
    /// `pid` replaced its program.
    Exec { pid: i32, exe: String },
    /// `pid` ended: its exit code, or the signal that killed it.
    Exit {
        pid: i32,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Syscall {
    /// The thread group (process) id.
    pub pid: i32,
    pub tid: i32,
    /// The parent process, when known.
    pub ppid: i32,
    /// The process's executable, as the kernel names it (`/proc/PID/exe`).
    pub exe: String,
    /// The syscall's name (`openat`, `newfstatat`, …), as in the interception table.
    pub syscall: String,
    /// Path arguments exactly as passed (may be relative).
    pub paths: Vec<RawPath>,
    /// The same, resolved against the dirfd or working directory (absolute; empty when the
    /// descriptor could not be read).
    pub resolved: Vec<RawPath>,
    /// The return value (`-errno` on failure); `None` when the backend was asked not to stop
    /// at the syscall's exit (findings only, no event log: see `ptrace::Options::returns`).
    pub ret: Option<i64>,
    /// A path the syscall returned (`getcwd`, `readlink`, `readlinkat`).
    pub returned: Option<RawPath>,
    /// The call opened its path for writing (`O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`;
    /// `creat`): the analysis later looks for physical roots in what was written there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub writes: bool,
    /// Whether the process had the shim (`libvelo_shim.so`) mapped.
    pub shim: bool,
    /// Whether the shim itself made the call (its instruction pointer is in the shim's code):
    /// the shim translates what it returns before the program sees it.
    pub via_shim: bool,
}

/// The shim announces itself to tracers with a `faccessat` of `/proc/velo-shim/<lo>-<hi>`: the
/// hex range of its executable code (see the shim's `kernel::beacon`). The range, when `path`
/// is such a beacon.
pub fn shim_beacon(path: &[u8]) -> Option<(u64, u64)> {
    let range = std::str::from_utf8(path.strip_prefix(b"/proc/velo-shim/")?).ok()?;
    let (lo, hi) = range.split_once('-')?;
    let (lo, hi) = (
        u64::from_str_radix(lo, 16).ok()?,
        u64::from_str_radix(hi, 16).ok()?,
    );
    (lo < hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    #[test]
    fn beacons_parse() {
        assert_eq!(
            super::shim_beacon(b"/proc/velo-shim/7f00-7f80"),
            Some((0x7f00, 0x7f80))
        );
        assert_eq!(super::shim_beacon(b"/proc/velo-shim/7f80-7f00"), None);
        assert_eq!(super::shim_beacon(b"/proc/self/fd/3"), None);
    }

    #[test]
    fn paths_keep_their_bytes_through_the_event_log() {
        use super::RawPath;
        for path in [&b"/w/src/a.rs"[..], b"/w/caf\xe9/b.rs"] {
            let raw = RawPath::from(path);
            let json = serde_json::to_string(&raw).unwrap();
            assert_eq!(serde_json::from_str::<RawPath>(&json).unwrap(), raw);
        }
        assert_eq!(
            serde_json::to_string(&RawPath::from("/w")).unwrap(),
            "\"/w\""
        );
        assert_eq!(
            serde_json::to_string(&RawPath::from(&b"/\xff"[..])).unwrap(),
            r#"{"bytes":[47,255]}"#
        );
    }
}
