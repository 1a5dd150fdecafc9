//! The `file://` remote: a directory (a shared mount, an NFS export) holding the objects as
//! files under their keys.
//!
//! A write goes to a temporary file in the same directory and is linked into place with
//! `link(2)`, which fails if the name exists: readers see a whole object or none, and two
//! writers of one key both succeed (the second finds the first's object), as a conditional PUT
//! (`If-None-Match: *`) behaves on S3.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::Backend;

pub struct FsBackend {
    url: String,
    root: PathBuf,
}

impl FsBackend {
    pub fn new(url: &str, dir: &str) -> FsBackend {
        FsBackend {
            url: url.to_owned(),
            root: PathBuf::from(dir),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

impl Backend for FsBackend {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn exists(&self, key: &str) -> io::Result<bool> {
        match std::fs::symlink_metadata(self.path(key)) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".velo-upload-")
            .tempfile_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        match std::fs::hard_link(tmp.path(), &path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let dir = self.path(prefix);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            // Uploads in flight are not objects yet.
            if !name.starts_with(".velo-upload-") {
                names.push(name);
            }
        }
        Ok(names)
    }
}
