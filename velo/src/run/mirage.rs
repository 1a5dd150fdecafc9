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

use rayon::prelude::*;

use super::farm;
use crate::manifest::{Kind, Manifest, display_path};
use crate::store::Store;

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
    let blobs = store.root().join("blobs");
    mirage::write::image(&inputs, blobs.as_os_str().as_bytes())
}

/// The cached image of `tree`, written now if it is not in the cache yet; returns its path and
/// whether this call built it. Building checks that every blob is in the store (in parallel),
/// so a cached image always names blobs that were there; `velo gc` empties the cache whenever
/// it deletes blobs.
pub fn cached_image(store: &Store, tree: &Manifest) -> Result<(PathBuf, bool), farm::Error> {
    let dir = store.root().join("mirage");
    let path = dir.join(format!("{}.img", tree.id()));
    if path.is_file() {
        return Ok((path, false));
    }
    let missing: Vec<&crate::manifest::Entry> = tree
        .entries()
        .par_iter()
        .filter(|e| e.blob().is_some_and(|key| !store.contains(&key)))
        .collect();
    if let Some(first) = missing.first() {
        let key = first.blob().expect("a file");
        return Err(farm::Error::MissingBlobs {
            store: store.root().to_owned(),
            count: missing.len(),
            first: key.hash.to_hex().to_string(),
            path: display_path(&first.path),
        });
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
pub fn clear_cache(store_root: &Path) -> std::io::Result<usize> {
    let Ok(rd) = fs::read_dir(store_root.join("mirage")) else {
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
