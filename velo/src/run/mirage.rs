//! The mirage image of a manifest: what the shim maps to serve the tree from the store with no
//! directory on disk (Mode B, `velo run --mode shim`). The format and its reader live in
//! `velo_intercept::mirage`, shared with the shim; this module writes images and keeps them.
//!
//! Images are cached like farms, per merged-manifest id: `<store>/mirage/<id>.img`, written to a
//! temporary file and renamed into place, so a present image is always complete and the second
//! run of a manifest reads nothing but the image's header before the command starts. An image
//! names the store's `blobs/` directory by absolute path, so it belongs to its store; `velo gc`
//! may delete it freely (it is rebuilt on the next run).

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use velo_intercept::mirage::{self, write::Input};

use super::farm;
use crate::manifest::{Kind, Manifest};
use crate::store::{BlobKey, Store};

/// The image of `tree` for `store`, in bytes.
pub fn image(store: &Store, tree: &Manifest) -> Vec<u8> {
    let inputs: Vec<Input> = tree
        .entries()
        .iter()
        .map(|e| match &e.kind {
            Kind::Dir => Input {
                path: &e.path,
                kind: mirage::DIR,
                exec: false,
                size: 0,
                hash: [0; 32],
                target: b"",
            },
            Kind::File { hash, size, exec } => Input {
                path: &e.path,
                kind: mirage::FILE,
                exec: *exec,
                size: *size,
                hash: *hash.as_bytes(),
                target: b"",
            },
            Kind::Symlink { target } => Input {
                path: &e.path,
                kind: mirage::SYMLINK,
                exec: false,
                size: target.len() as u64,
                hash: [0; 32],
                target,
            },
        })
        .collect();
    let blobs = store.blobs_dir();
    mirage::write::image(&inputs, blobs.as_os_str().as_bytes())
}

/// The cached image of `tree`, written now if it is not in the cache yet; returns its path and
/// whether this call built it. Its blobs are not checked here: every run checks them before the
/// shim serves anything ([`Mapped::check_blobs`]), cached image or not.
pub fn cached_image(store: &Store, tree: &Manifest) -> Result<(PathBuf, bool), farm::Error> {
    let path = image_path(store, &tree.id().to_string());
    let dir = path.parent().expect("in the image cache").to_owned();
    if path.is_file() {
        return Ok((path, false));
    }
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| farm::Error::Io {
            op: "writing the tree's image",
            path: p,
            source,
        }
    };
    write_image(store, tree, &dir, &path).map_err(io(&path))?;
    Ok((path, true))
}

fn write_image(store: &Store, tree: &Manifest, dir: &Path, path: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".building-")
        .tempfile_in(dir)?;
    tmp.write_all(&image(store, tree))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Empties the image cache; returns how many images were removed.
pub fn clear_cache(store: &Store) -> std::io::Result<usize> {
    let Ok(rd) = fs::read_dir(store.images_dir()?) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in rd.flatten() {
        if fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Where the image of the tree with manifest id `id` is cached: `mirage/` in the store, or in
/// [`Store::scratch`] for a store this process cannot write.
pub fn image_path(store: &Store, id: &str) -> PathBuf {
    store
        .images_dir()
        .unwrap_or_else(|_| store.root().join("mirage"))
        .join(format!("{id}.img"))
}

/// A cached image, mapped for velo's own lookups (the program to run, the working directory),
/// so a run whose image is cached never decodes the manifest.
pub struct Mapped {
    map: memmap2::Mmap,
}

/// What a path in the tree is, after following the tree's symlinks.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// An entry of the image.
    Entry(u32),
    /// An absolute symlink target outside the tree: a host path.
    Host(PathBuf),
    Missing,
}

impl Mapped {
    pub fn open(path: &Path) -> std::io::Result<Mapped> {
        let file = fs::File::open(path)?;
        // SAFETY: images are written once under a temporary name and renamed into place; nothing
        // writes to a published image.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        if mirage::Image::parse(&map).is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is not a velo image (delete it; it is rebuilt)",
                    path.display()
                ),
            ));
        }
        Ok(Mapped { map })
    }

    pub fn image(&self) -> mirage::Image<'_> {
        mirage::Image::parse(&self.map).expect("checked in open")
    }

    /// [`farm::check_blobs`] for the files of the image: run before every shim-mode run, since
    /// the shim serves blobs as they are (a cached image outlives checks made when it was built).
    pub fn check_blobs(&self, store: &Store) -> Result<(), farm::Error> {
        let img = self.image();
        farm::check_needs(
            store,
            (0..img.len())
                .map(|i| img.entry(i))
                .filter(|e| e.kind == mirage::FILE)
                .map(|e| {
                    let key = BlobKey {
                        hash: blake3::Hash::from_bytes(*e.hash),
                        exec: e.exec,
                    };
                    (key, e.size, e.path)
                }),
        )
    }

    /// The entry at `rel` (a normalized path relative to the root, `/`-separated), following
    /// symlinks inside the tree (an absolute target under `at` stays inside).
    pub fn find(&self, rel: &[u8], at: &Path) -> Found {
        let img = self.image();
        let mut path = rel.to_vec();
        'hop: for _ in 0..40 {
            let mut cur = 0;
            let parts: Vec<&[u8]> = path
                .split(|&b| b == b'/')
                .filter(|p| !p.is_empty())
                .collect();
            for (i, part) in parts.iter().enumerate() {
                let Some(child) = img.child(cur, part) else {
                    return Found::Missing;
                };
                let e = img.entry(child);
                if e.kind == mirage::SYMLINK {
                    let rest = parts[i + 1..].join(&b'/');
                    let target = Path::new(std::ffi::OsStr::from_bytes(e.target));
                    let base = match target.strip_prefix(at) {
                        Ok(inside) => inside.as_os_str().as_bytes().to_vec(),
                        Err(_) if target.is_absolute() => {
                            return Found::Host(if rest.is_empty() {
                                target.to_owned()
                            } else {
                                target.join(std::ffi::OsStr::from_bytes(&rest))
                            });
                        }
                        Err(_) => {
                            let dir = img.entry(e.parent).path;
                            [dir, b"/", e.target].concat()
                        }
                    };
                    path = normalize(&[&base[..], b"/", &rest].concat());
                    continue 'hop;
                }
                cur = child;
            }
            return Found::Entry(cur);
        }
        Found::Missing
    }
}

/// `.` and `..` applied to a relative path (`..` above the root stays at the root).
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_follows_the_trees_symlinks_and_names_host_targets() {
        let entry = |path: &'static str, kind, target: &'static str| Input {
            path: path.as_bytes(),
            kind,
            exec: false,
            size: 0,
            hash: [0; 32],
            target: target.as_bytes(),
        };
        let bytes = mirage::write::image(
            &[
                entry("bin", mirage::DIR, ""),
                entry("bin/python", mirage::SYMLINK, "/usr/bin/python3"),
                entry("bin/tool", mirage::FILE, ""),
                entry("lib", mirage::SYMLINK, "bin"),
                entry("up", mirage::SYMLINK, "/app/bin/tool"),
            ],
            b"/store/blobs",
        );
        let t = tempfile::NamedTempFile::new().unwrap();
        fs::write(t.path(), bytes).unwrap();
        let mapped = Mapped::open(t.path()).unwrap();
        let at = Path::new("/app");
        assert_eq!(mapped.find(b"bin/tool", at), Found::Entry(3));
        assert_eq!(mapped.find(b"lib/tool", at), Found::Entry(3));
        assert_eq!(mapped.find(b"up", at), Found::Entry(3));
        assert_eq!(
            mapped.find(b"lib/python", at),
            Found::Host(PathBuf::from("/usr/bin/python3"))
        );
        assert_eq!(mapped.find(b"bin/nope", at), Found::Missing);
        assert_eq!(normalize(b"a/./b/../c//d"), b"a/c/d");
        fs::write(t.path(), b"not an image").unwrap();
        assert!(Mapped::open(t.path()).is_err());
    }
}
