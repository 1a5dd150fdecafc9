//! The `file://` remote: a directory (a shared mount, an NFS export) holding the objects as
//! files under their keys.
//!
//! A write goes to a temporary file in the same directory and is linked into place with
//! `link(2)`, which fails if the name exists: readers see a whole object or none, and two
//! writers of one key both succeed (the second finds the first's object), as a conditional PUT
//! (`If-None-Match: *`) behaves on S3.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Backend, Listed};

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

    /// `bytes` in a durable temporary file beside `path`.
    fn staged(&self, path: &Path, bytes: &[u8]) -> io::Result<tempfile::NamedTempFile> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".velo-upload-")
            .tempfile_in(dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        Ok(tmp)
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

    fn put(&self, key: &str, bytes: Vec<u8>) -> io::Result<()> {
        let path = self.path(key);
        let tmp = self.staged(&path, &bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        let path = self.path(key);
        let tmp = self.staged(&path, bytes)?;
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

    fn list_all(&self, prefix: &str) -> io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut dirs = vec![self.path(prefix)];
        while let Some(dir) = dirs.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let meta = entry.metadata()?;
                let path = entry.path();
                if meta.is_dir() {
                    dirs.push(path);
                } else if !entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".velo-upload-")
                {
                    let key = path.strip_prefix(&self.root).unwrap_or(&path);
                    out.push(Listed {
                        key: key.to_string_lossy().into_owned(),
                        modified: meta.modified()?,
                        size: meta.len(),
                    });
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn get_many(&self, keys: &[String]) -> Vec<io::Result<Option<Vec<u8>>>> {
        use rayon::prelude::*;
        keys.par_iter().map(|k| self.get(k)).collect()
    }

    fn put_many(&self, objects: Vec<(String, Vec<u8>)>) -> Vec<io::Result<()>> {
        use rayon::prelude::*;
        objects
            .into_par_iter()
            .map(|(k, b)| self.put(&k, b))
            .collect()
    }
}
