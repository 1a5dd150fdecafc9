//! Packs and indexes: how many small blobs travel as one object.
//!
//! A pack is the blobs' zstd frames back to back, one frame per blob, so that each blob can be
//! decompressed (with its declared size as the cap), hashed and kept on its own. Its name is the
//! BLAKE3 of the list of what it holds ([`pack_name`]): each entry is a blob's key and size,
//! and the key is the BLAKE3 of the blob's content, so the name addresses the pack's
//! uncompressed content as a Merkle list does.
//!
//! The [`Index`] of a manifest says where each of its blobs is: in which pack, at which offset
//! and length, or alone under `blobs/`. It lists each pack it names in full, so a reader can
//! check the pack's name before it uses any frame. An index is written after everything it
//! names and before the manifest; it is zstd-compressed JSON, read with a size cap.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::store::BlobKey;

/// A pack is closed when its uncompressed blobs reach this many bytes.
pub const TARGET: u64 = 32 << 20;
/// A blob this large travels alone, under `blobs/`.
pub const ALONE: u64 = 16 << 20;
/// The most an index may decompress to (about a million blobs).
const INDEX_CAP: u64 = 256 << 20;

/// One blob's frame in a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The blob's file name (its key: 64 hex digits, `.x` when executable).
    pub blob: String,
    /// Its uncompressed size.
    pub size: u64,
    /// Where its zstd frame starts in the pack, and how long it is.
    pub at: u64,
    pub len: u64,
}

/// Where the blobs of one manifest are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Each pack this manifest uses, with all it holds, in order.
    pub packs: BTreeMap<String, Vec<Frame>>,
    /// Blobs stored alone (`blobs/ab/<name>`).
    pub alone: Vec<String>,
}

impl Index {
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        zstd::bulk::compress(&json, super::LEVEL).unwrap_or_default()
    }

    /// `None` when the bytes are no index (a reader then treats every blob as alone).
    pub fn decode(bytes: &[u8]) -> Option<Index> {
        let json = unpack_at_most(bytes, INDEX_CAP)?;
        serde_json::from_slice(&json).ok()
    }
}

/// The name of a pack holding `frames`: the BLAKE3 of each blob's key and size, in order.
pub fn pack_name(frames: &[Frame]) -> String {
    let mut hasher = blake3::Hasher::new();
    for f in frames {
        hasher.update(f.blob.as_bytes());
        hasher.update(b"\0");
        hasher.update(f.size.to_string().as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize().to_hex().to_string()
}

/// A pack being filled.
#[derive(Default)]
pub struct Builder {
    bytes: Vec<u8>,
    frames: Vec<Frame>,
    size: u64,
}

impl Builder {
    /// Appends `blob`'s compressed frame (of a blob of `size` bytes).
    pub fn add(&mut self, blob: &BlobKey, size: u64, frame: &[u8]) {
        self.frames.push(Frame {
            blob: blob.file_name(),
            size,
            at: self.bytes.len() as u64,
            len: frame.len() as u64,
        });
        self.bytes.extend_from_slice(frame);
        self.size += size;
    }

    /// The uncompressed bytes so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The pack's name, frames and bytes.
    pub fn finish(self) -> (String, Vec<Frame>, Vec<u8>) {
        (pack_name(&self.frames), self.frames, self.bytes)
    }
}

/// Why a pack's blobs were not all taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Bad<E> {
    /// Its name is not that of the frames the index lists: nothing of it was used.
    Name,
    /// The caller's `take` failed.
    Take(E),
}

/// What [`unpack`] hands each checked blob to.
pub type Take<'a, E> = dyn Fn(&BlobKey, &[u8]) -> Result<(), E> + Sync + 'a;

/// The frames of `pack` (named `name`, holding `frames`) whose blobs are in `wanted`, each
/// decompressed with its size as the cap, checked against its key and lent to `take`, on
/// rayon's threads; the keys taken. A frame that fails its check is left out (the caller reports
/// it missing); a pack whose name does not match its listed frames is not used at all.
///
/// Each thread decompresses into one buffer it keeps: fresh buffers per blob made the kernel
/// zero a pack's worth of new pages each time (an eighth of a restore's time on this VM).
pub fn unpack<E: Send>(
    name: &str,
    frames: &[Frame],
    pack: &[u8],
    wanted: &(dyn Fn(&BlobKey) -> bool + Sync),
    take: &Take<'_, E>,
) -> Result<Vec<BlobKey>, Bad<E>> {
    if pack_name(frames) != name {
        return Err(Bad::Name);
    }
    use rayon::prelude::*;
    let taken: Result<Vec<Option<BlobKey>>, E> = frames
        .par_iter()
        .map(|f| {
            let Some(key) = BlobKey::parse_file_name(&f.blob).filter(|k| wanted(k)) else {
                return Ok(None);
            };
            let packed = usize::try_from(f.at).ok().and_then(|at| {
                let end = at.checked_add(usize::try_from(f.len).ok()?)?;
                pack.get(at..end)
            });
            let Some(packed) = packed else {
                return Ok(None);
            };
            with_unpacked(packed, f.size, |data| {
                if blake3::hash(data) != key.hash {
                    return Ok(None);
                }
                take(&key, data).map(|()| Some(key))
            })
            .unwrap_or(Ok(None))
        })
        .collect();
    Ok(taken.map_err(Bad::Take)?.into_iter().flatten().collect())
}

/// `packed` decompressed, if it holds exactly `size` bytes (decompression stops at a bound:
/// the thread's buffer up to [`ALONE`], `size` + 1 above it).
pub fn unpack_exactly(packed: &[u8], size: u64) -> Option<Vec<u8>> {
    if size > ALONE {
        let out = unpack_at_most(packed, size)?;
        return (out.len() as u64 == size).then_some(out);
    }
    with_unpacked(packed, size, <[u8]>::to_vec)
}

/// `f` of `packed` decompressed, if it holds exactly `size` (≤ [`ALONE`]) bytes.
///
/// One call into this thread's buffer, grown to at least `size` (its capacity stays below
/// twice [`ALONE`]), which zstd does not write beyond, with this thread's reused context: the streaming decoder's extra copy
/// and a fresh context per frame were a fifth of a pull's time. Larger blobs stream (see
/// [`unpack_at_most`]), so a lying size cannot make velo allocate it up front.
fn with_unpacked<T>(packed: &[u8], size: u64, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
    struct Scratch {
        context: Option<zstd::bulk::Decompressor<'static>>,
        buffer: Vec<u8>,
    }
    thread_local! {
        static SCRATCH: std::cell::RefCell<Scratch> = const {
            std::cell::RefCell::new(Scratch { context: None, buffer: Vec::new() })
        };
    }
    if size > ALONE {
        return None;
    }
    let size = usize::try_from(size).ok()?;
    SCRATCH.with(|cell| {
        let mut scratch = cell.try_borrow_mut().ok()?;
        let Scratch { context, buffer } = &mut *scratch;
        if context.is_none() {
            *context = Some(zstd::bulk::Decompressor::new().ok()?);
        }
        buffer.clear();
        buffer.reserve(size);
        // Decompresses into the spare capacity, which may exceed `size`: the length tells. A
        // `take` that reentered here (it does not) would find the buffer borrowed: a miss.
        context
            .as_mut()?
            .decompress_to_buffer(packed, buffer)
            .ok()?;
        (buffer.len() == size).then(|| f(buffer))
    })
}

/// `packed` decompressed, if it holds at most `cap` bytes.
fn unpack_at_most(packed: &[u8], cap: u64) -> Option<Vec<u8>> {
    let mut decoder = zstd::stream::read::Decoder::new(packed).ok()?;
    let mut out = Vec::with_capacity(usize::try_from(cap).ok()?.min(64 << 20));
    // One byte more than the cap tells "too long" from "exactly".
    (&mut decoder).take(cap + 1).read_to_end(&mut out).ok()?;
    (out.len() as u64 <= cap).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(data: &[u8]) -> BlobKey {
        BlobKey {
            hash: blake3::hash(data),
            exec: false,
        }
    }

    #[test]
    fn unpacking_stops_at_the_declared_size() {
        let data = vec![7u8; 10_000];
        let packed = zstd::bulk::compress(&data, 3).unwrap();
        assert_eq!(unpack_exactly(&packed, 10_000).as_deref(), Some(&data[..]));
        assert_eq!(unpack_exactly(&packed, 100), None, "longer than declared");
        assert_eq!(unpack_exactly(&packed, 20_000), None, "shorter");
        assert_eq!(unpack_exactly(b"not zstd", 8), None);
    }

    #[test]
    fn a_pack_gives_back_what_was_put_in_and_nothing_forged() {
        let blobs: Vec<Vec<u8>> = vec![b"alpha".to_vec(), vec![1; 5000], b"gamma".to_vec()];
        let mut builder = Builder::default();
        for b in &blobs {
            builder.add(
                &key(b),
                b.len() as u64,
                &zstd::bulk::compress(b, 3).unwrap(),
            );
        }
        let (name, frames, bytes) = builder.finish();
        let unpacked =
            |frames: &[Frame], bytes: &[u8], wanted: &(dyn Fn(&BlobKey) -> bool + Sync)| {
                let got = std::sync::Mutex::new(Vec::new());
                let take = |k: &BlobKey, data: &[u8]| -> Result<(), ()> {
                    got.lock().unwrap().push((*k, data.to_vec()));
                    Ok(())
                };
                let keys = unpack(&name, frames, bytes, wanted, &take)?;
                let got = got.into_inner().unwrap();
                assert_eq!(keys.len(), got.len());
                Ok::<_, Bad<()>>(got)
            };
        let all = unpacked(&frames, &bytes, &|_| true).unwrap();
        assert_eq!(all.len(), 3);
        let some = unpacked(&frames, &bytes, &|k| *k == key(b"gamma")).unwrap();
        assert_eq!(some, vec![(key(b"gamma"), b"gamma".to_vec())]);

        // A frame replaced by valid zstd of other bytes is left out; the others stay.
        let mut forged_frames = frames.clone();
        let other = zstd::bulk::compress(b"omega", 3).unwrap();
        let mut forged = bytes.clone();
        forged_frames[0].at = forged.len() as u64;
        forged_frames[0].len = other.len() as u64;
        forged.extend_from_slice(&other);
        let got = unpacked(&forged_frames, &forged, &|_| true).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(_, data)| data != b"omega"));

        // An index that lists other blobs under this pack's name is not used.
        let mut renamed = frames.clone();
        renamed.pop();
        assert_eq!(unpacked(&renamed, &bytes, &|_| true).err(), Some(Bad::Name));

        // A failing `take` is the caller's error.
        let refuse = |_: &BlobKey, _: &[u8]| Err("full");
        assert_eq!(
            unpack(&name, &frames, &bytes, &|_| true, &refuse).err(),
            Some(Bad::Take("full"))
        );
    }

    #[test]
    fn an_index_round_trips_and_garbage_is_no_index() {
        let mut index = Index::default();
        index.alone.push("ab".repeat(32));
        index.packs.insert("p".into(), Vec::new());
        assert_eq!(Index::decode(&index.encode()), Some(index));
        assert_eq!(Index::decode(b"garbage"), None);
    }
}
