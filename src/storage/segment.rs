//! Segment files: names, and sealed (read-only, mapped) segments.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::io::Io;
use super::mmap::Bytes;
use super::record::{self, HEADER_LEN, SegmentHeader};
use crate::error::{Error, Result};

/// File name of segment `id`: `0000000042.seg`.
pub(crate) fn seg_name(id: u32) -> String {
    format!("{id:010}.seg")
}

/// Temp name of a compacted segment before the commit: `0000000042.seg.tmp`.
pub(crate) fn tmp_name(id: u32) -> String {
    format!("{id:010}.seg.tmp")
}

/// Name of a quarantined segment: `0000000042.seg.quarantined`.
pub(crate) fn quarantine_name(id: u32) -> String {
    format!("{id:010}.seg.quarantined")
}

/// The id in `name` if it is exactly ten digits and then `suffix`.
fn parse_id_then(name: &str, suffix: &str) -> Option<u32> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The id of a file named like [`seg_name`] (exactly ten digits + `.seg`).
pub(crate) fn parse_seg_name(name: &str) -> Option<u32> {
    parse_id_then(name, ".seg")
}

/// Name of a segment's history table, a file the layer above writes beside the segment
/// (`index::journal`'s table files): `0000000042.steps`.
pub(crate) fn steps_name(id: u32) -> String {
    format!("{id:010}.steps")
}

/// The id of a file named like [`steps_name`] (exactly ten digits + `.steps`).
pub(crate) fn parse_steps_name(name: &str) -> Option<u32> {
    parse_id_then(name, ".steps")
}

/// The id in any name that starts like a segment name (`.seg`, `.seg.tmp`, `.seg.quarantined`).
pub(crate) fn parse_any_id(name: &str) -> Option<u32> {
    let digits = name.get(..10)?;
    if !name.get(10..)?.starts_with(".seg") || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A sealed segment: never written again, read through a map.
pub(crate) struct Sealed {
    pub id: u32,
    /// Its header's kind (`record::KIND_*`).
    pub kind: u8,
    pub path: PathBuf,
    pub bytes: Bytes,
}

impl Sealed {
    /// Open (map) a sealed segment whose header was already checked, or check it now.
    pub fn open(io: &dyn Io, dir: &Path, id: u32) -> Result<Sealed> {
        let path = dir.join(seg_name(id));
        let bytes = map(io, &path)?;
        let header = SegmentHeader::decode(&bytes).map_err(|reason| Error::Corruption {
            file: path.clone(),
            offset: 0,
            reason,
        })?;
        Ok(Sealed {
            id,
            kind: header.kind,
            path,
            bytes,
        })
    }

    /// Call `f` with the bytes at `loc` (checked to lie inside the segment).
    pub fn read<R>(&self, loc: super::Location, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let inside = super::log::slice(&self.bytes, loc, &self.path)?;
        self.bytes
            .read_at(loc.offset as usize, inside.len(), f)
            .map_err(|e| Error::io("read", &self.path, e))
    }

    /// Append the bytes at `loc` (checked to lie inside the segment) to `out`.
    pub fn read_appending(&self, loc: super::Location, out: &mut Vec<u8>) -> Result<()> {
        let inside = super::log::slice(&self.bytes, loc, &self.path)?;
        self.bytes
            .read_appending(loc.offset as usize, inside.len(), out)
            .map_err(|e| Error::io("read", &self.path, e))
    }

    /// Whether it holds history steps only (`record::KIND_STEPS`).
    pub fn is_steps(&self) -> bool {
        self.kind == record::KIND_STEPS
    }

    /// Bytes of the file.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Seq of the first frame, if any.
    pub fn first_seq(&self) -> Option<u64> {
        record::decode_frame(&self.bytes, HEADER_LEN)
            .ok()
            .map(|f| f.seq)
    }
}

/// Map a file through the I/O seam (or read it whole when the seam has no file to map).
pub(crate) fn map(io: &dyn Io, path: &Path) -> Result<Bytes> {
    let src = io
        .map_source(path)
        .map_err(|e| Error::io("open", path, e))?;
    match src {
        Some(file) => Bytes::map(&file).map_err(|e| Error::io("mmap", path, e)),
        None => io
            .read(path)
            .map(Bytes::Owned)
            .map_err(|e| Error::io("read", path, e)),
    }
}

/// Shared handle to a sealed segment.
pub(crate) type SealedRef = Arc<Sealed>;
