//! The human reports of `velo push` and `velo pull` (`--json` prints the same [`Moved`]).

use std::path::{Path, PathBuf};

use super::Moved;
use crate::human::bytes;

/// One line per manifest pushed: what of it travelled.
pub fn pushed(manifests: &[PathBuf], moved: &[Moved]) -> String {
    manifests
        .iter()
        .zip(moved)
        .map(|(manifest, m)| {
            format!(
                "pushed {} ({}): {} of {} blobs uploaded, {} ({} compressed)\n",
                manifest.display(),
                m.manifest_id.get(..16).unwrap_or(&m.manifest_id),
                m.transferred,
                m.blobs,
                bytes(m.bytes),
                bytes(m.compressed_bytes)
            )
        })
        .collect()
}

pub fn pulled(output: &Path, m: &Moved) -> String {
    format!(
        "pulled {} -> {}: {} of {} blobs downloaded, {} ({} compressed)\n",
        m.manifest_id.get(..16).unwrap_or(&m.manifest_id),
        output.display(),
        m.transferred,
        m.blobs,
        bytes(m.bytes),
        bytes(m.compressed_bytes)
    )
}
