//! GC roots: the manifests whose blobs `gc` must keep.
//!
//! Every manifest velo writes is registered by its absolute path in `roots/`, one small file per
//! manifest named by the BLAKE3 of that path (so re-registering is idempotent) and holding the
//! path's raw bytes. The root follows the *file*: a manifest rewritten in place keeps protecting
//! whatever it names now, and a deleted manifest stops protecting anything, which is how a user
//! releases space (`rm old.velo && velo gc --run`).

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{Error, Result, Store, bytes_to_path, write_atomic};

/// A registered manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    /// Absolute path of the manifest file.
    pub manifest: PathBuf,
    /// The registration file under `roots/`.
    pub registration: PathBuf,
}

impl Store {
    /// Registers `manifest` (made absolute, not resolved through symlinks) as a GC root.
    pub fn register_root(&self, manifest: &Path) -> Result<Root> {
        let manifest =
            std::path::absolute(manifest).map_err(|e| Error::io("resolving", manifest, e))?;
        let bytes = manifest.as_os_str().as_bytes();
        let dir = self.dir("roots");
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let registration = dir.join(blake3::hash(bytes).to_hex().as_str());
        // Registered already (every re-ingest of a tree registers its manifest again): a read
        // instead of a file created and renamed.
        if fs::read(&registration).ok().as_deref() != Some(bytes) {
            write_atomic(&registration, bytes, false)?;
        }
        Ok(Root {
            manifest,
            registration,
        })
    }

    /// All registered roots, sorted by manifest path.
    pub fn roots(&self) -> Result<Vec<Root>> {
        let dir = self.dir("roots");
        let entries = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing", &dir, e)),
        };
        let mut roots = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing", &dir, e))?;
            let registration = entry.path();
            if entry
                .file_name()
                .as_bytes()
                .starts_with(super::TEMP_PREFIX.as_bytes())
            {
                continue;
            }
            let bytes =
                fs::read(&registration).map_err(|e| Error::io("reading", &registration, e))?;
            roots.push(Root {
                manifest: bytes_to_path(&bytes),
                registration,
            });
        }
        roots.sort_by(|a, b| a.manifest.cmp(&b.manifest));
        Ok(roots)
    }

    /// Forgets a root (its manifest is gone).
    pub fn unregister_root(&self, root: &Root) -> Result<()> {
        match fs::remove_file(&root.registration) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &root.registration, e)),
        }
    }
}
