//! The hint file: the layer above's index snapshot, with the log position it covers.
//!
//! Written atomically (`HINT.tmp`, fdatasync, rename to `HINT`, directory fsync) after the log
//! is synced up to the position, so a hint never covers frames that are not on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::io::{Io, IoFile, write_all_at, write_zeros_at};
use super::record::{u16_at, u32_at, u64_at};
use crate::error::{Error, Result};

/// File name of the hint.
pub(crate) const HINT: &str = "HINT";
/// Temp name while it is written.
pub(crate) const HINT_TMP: &str = "HINT.tmp";
/// First bytes of the hint file.
pub(crate) const HINT_MAGIC: [u8; 8] = *b"PDBHINT\n";
/// Version of the hint format.
pub(crate) const HINT_VERSION: u16 = 1;

/// The log position a snapshot covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Position {
    /// Last sequence number covered.
    pub seq: u64,
    /// Active segment when the position was taken.
    pub active: u32,
    /// Bytes of the active segment covered (a frame boundary).
    pub offset: u32,
    /// Every segment (sealed and active) the position covers.
    pub segments: Vec<u32>,
}

/// The bytes of a hint file before its payload (magic through the payload's length).
fn head(pos: &Position, payload_len: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(40 + pos.segments.len() * 4);
    b.extend_from_slice(&HINT_MAGIC);
    b.extend_from_slice(&HINT_VERSION.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&pos.seq.to_le_bytes());
    b.extend_from_slice(&pos.active.to_le_bytes());
    b.extend_from_slice(&pos.offset.to_le_bytes());
    b.extend_from_slice(&(pos.segments.len() as u32).to_le_bytes());
    for id in &pos.segments {
        b.extend_from_slice(&id.to_le_bytes());
    }
    b.extend_from_slice(&(payload_len as u64).to_le_bytes());
    b
}

/// The CRC that ends a hint file: of every byte before it.
#[cfg(test)]
fn crc(head: &[u8], payload: &[u8]) -> [u8; 4] {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(payload);
    h.finalize().to_le_bytes()
}

/// Encode a whole hint file.
#[cfg(test)]
pub(crate) fn encode(pos: &Position, payload: &[u8]) -> Vec<u8> {
    let mut b = head(pos, payload.len());
    let crc = crc(&b, payload);
    b.extend_from_slice(payload);
    b.extend_from_slice(&crc);
    b
}

/// Decode a hint file; `Err` says why it is unusable.
pub(crate) fn decode(b: &[u8]) -> std::result::Result<(Position, &[u8]), String> {
    let Some(body_len) = b.len().checked_sub(4) else {
        return Err("hint file too short".into());
    };
    let body = b.get(..body_len).unwrap_or(&[]);
    let stored = u32_at(b, body_len).unwrap_or(0);
    let actual = crc32fast::hash(body);
    if stored != actual {
        return Err(format!(
            "hint checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
        ));
    }
    if body.get(..8) != Some(&HINT_MAGIC[..]) {
        return Err("bad hint magic".into());
    }
    if u16_at(body, 8) != Some(HINT_VERSION) {
        return Err("unsupported hint version".into());
    }
    let short = || "hint file truncated".to_string();
    let seq = u64_at(body, 12).ok_or_else(short)?;
    let active = u32_at(body, 20).ok_or_else(short)?;
    let offset = u32_at(body, 24).ok_or_else(short)?;
    let n = u32_at(body, 28).ok_or_else(short)? as usize;
    if n > body.len() / 4 {
        return Err("hint segment count out of range".into());
    }
    let mut at = 32;
    let mut segments = Vec::with_capacity(n);
    for _ in 0..n {
        segments.push(u32_at(body, at).ok_or_else(short)?);
        at += 4;
    }
    let plen = u64_at(body, at).ok_or_else(short)?;
    at += 8;
    let payload = usize::try_from(plen)
        .ok()
        .and_then(|p| body.get(at..at.checked_add(p)?))
        .ok_or_else(short)?;
    if at + payload.len() != body.len() {
        return Err("trailing bytes in hint file".into());
    }
    Ok((
        Position {
            seq,
            active,
            offset,
            segments,
        },
        payload,
    ))
}

/// Takes a hint payload's bytes, in order (a chunk at a time).
pub type Sink<'a> = dyn FnMut(&[u8]) -> Result<()> + 'a;

/// Hands a hint payload's bytes to the sink it is given and returns their CRC (of every byte
/// handed, in order): the index snapshot computes it as it encodes (its own CRC ends it), so
/// the payload is not read a second time while the writers wait (debug builds check it).
pub type Fill<'a> = dyn FnMut(&mut Sink<'_>) -> Result<crc32fast::Hasher> + 'a;

/// A hint's temp file made before the payload is known, zeros so far ([`prepare`]), to be
/// written by [`Prepared::write`].
pub(crate) struct Prepared {
    file: Arc<dyn IoFile>,
    tmp: PathBuf,
    fin: PathBuf,
}

/// Make the next hint's temp file (removing one a crash or a failed hint left) and write
/// `prefill` bytes of zeros into it: the payload written over them later goes into pages the
/// page cache already holds. A hint's writers hold the store's writers for its payload
/// (`Db`'s snapshot), and a 16 MB write into new page-cache pages took up to ten times as long
/// as one over cached pages while the log was being written (docs/performance.md, "Engine
/// round 54"); the zeros are written before that hold, by the thread that writes the hint.
/// Nothing reads the temp file before [`Prepared::write`] renames it (open removes one left).
pub(crate) fn prepare(io: &dyn Io, dir: &Path, prefill: u64) -> Result<Prepared> {
    let tmp = dir.join(HINT_TMP);
    let fin = dir.join(HINT);
    let _ = io.remove(&tmp);
    let file = io.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    write_zeros_at(file.as_ref(), 0, prefill).map_err(|e| Error::io("write", &tmp, e))?;
    Ok(Prepared { file, tmp, fin })
}

impl Prepared {
    /// Write the hint atomically, its payload streamed: `fill` hands the payload's bytes, in
    /// order, to the sink it is given, which writes them into the temp file as they come. The
    /// head (which holds the payload's length) is written last, at the start, and the file's
    /// CRC combines the head's with the payload's (which `fill` returns): nothing holds the
    /// payload whole (tens of MB for a million profiles). The file is then cut to its length
    /// (the zeros [`prepare`] wrote past it go). `durable` returns once the log is synced up to
    /// `pos.seq`: it runs after `fill`, before the hint replaces the old one. Returns the
    /// file's length.
    pub(crate) fn write(
        self,
        io: &dyn Io,
        dir: &Path,
        pos: &Position,
        fill: &mut Fill<'_>,
        durable: &mut dyn FnMut() -> Result<()>,
    ) -> Result<u64> {
        let Prepared { file: f, tmp, fin } = self;
        let start = head(pos, 0).len() as u64;
        let mut at = start;
        let mut check = crc32fast::Hasher::new();
        let payload_crc = fill(&mut |chunk| {
            write_all_at(f.as_ref(), at, chunk).map_err(|e| Error::io("write", &tmp, e))?;
            if cfg!(debug_assertions) {
                check.update(chunk);
            }
            at += chunk.len() as u64;
            Ok(())
        })?;
        debug_assert_eq!(
            payload_crc.clone().finalize(),
            check.finalize(),
            "the CRC fill returned is of the bytes it handed"
        );
        let head = head(pos, (at - start) as usize);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.combine(&payload_crc);
        write_all_at(f.as_ref(), 0, &head).map_err(|e| Error::io("write", &tmp, e))?;
        write_all_at(f.as_ref(), at, &crc.finalize().to_le_bytes())
            .map_err(|e| Error::io("write", &tmp, e))?;
        let len = at + 4;
        f.set_len(len).map_err(|e| Error::io("truncate", &tmp, e))?;
        durable()?;
        f.sync_data().map_err(|e| Error::io("fdatasync", &tmp, e))?;
        drop(f);
        io.rename(&tmp, &fin)
            .map_err(|e| Error::io("rename", &tmp, e))?;
        io.sync_dir(dir).map_err(|e| Error::io("fsync", dir, e))?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hint written over a prefilled temp file is the hint alone: zeros past its end are cut
    /// off, and a payload longer than the prefill writes past it.
    #[test]
    fn a_hint_over_a_prefilled_file_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let io = super::super::io::RealIo;
        let pos = Position {
            seq: 9,
            active: 3,
            offset: 64,
            segments: vec![2, 3],
        };
        for (prefill, payload) in [
            (0u64, vec![7u8; 100]),
            (100_000, vec![1u8; 3]),
            (10, (0..5000u32).map(|i| i as u8).collect::<Vec<u8>>()),
            (1 << 17, Vec::new()),
        ] {
            let prepared = prepare(&io, dir.path(), prefill).unwrap();
            let mut synced = false;
            let len = prepared
                .write(
                    &io,
                    dir.path(),
                    &pos,
                    &mut |sink| {
                        sink(&payload)?;
                        let mut crc = crc32fast::Hasher::new();
                        crc.update(&payload);
                        Ok(crc)
                    },
                    &mut || {
                        synced = true;
                        Ok(())
                    },
                )
                .unwrap();
            assert!(synced);
            assert!(!dir.path().join(HINT_TMP).exists());
            let bytes = std::fs::read(dir.path().join(HINT)).unwrap();
            assert_eq!(bytes.len() as u64, len, "prefill {prefill}");
            assert_eq!(bytes, encode(&pos, &payload), "prefill {prefill}");
            let (p, read) = decode(&bytes).unwrap();
            assert_eq!((p, read), (pos.clone(), payload.as_slice()));
        }
    }

    #[test]
    fn roundtrip_and_damage() {
        let pos = Position {
            seq: 5,
            active: 2,
            offset: 100,
            segments: vec![1, 2],
        };
        let b = encode(&pos, b"snap");
        let (p, payload) = decode(&b).unwrap();
        assert_eq!(p, pos);
        assert_eq!(payload, b"snap");
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(decode(&bad).is_err());
            assert!(decode(&b[..i]).is_err());
        }
    }
}
