//! Framing: segment headers and CRC-checked frames. Encoding appends to a buffer that mirrors a
//! segment file from byte 0, so buffer positions are file offsets. Decoding never panics and
//! never allocates from an untrusted length: every length is checked against the bytes that
//! are actually there (and against [`MAX_BODY`]) before it is used.
//!
//! See docs/format.md for the byte layout.

use super::FrameEntry;

/// First bytes of every segment file.
pub(crate) const SEG_MAGIC: [u8; 8] = *b"PDBSEG\r\n";
/// Version of the segment and frame format.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Bytes of a segment header.
pub(crate) const HEADER_LEN: usize = 32;
/// Segment written by appends.
pub(crate) const KIND_LOG: u8 = 1;
/// Segment written whole by compaction.
pub(crate) const KIND_COMPACTED: u8 = 2;
/// Segment written whole by compaction, holding only frames whose every entry is kept by
/// place ([`super::CopyAs::KeepByPlace`]: a profile's history steps). A compaction leaves
/// these out of its inputs unless asked (`compaction::begin`).
pub(crate) const KIND_STEPS: u8 = 3;
/// `len u32 | crc u32` before each frame body.
pub(crate) const FRAME_HEADER: usize = 8;
/// `seq u64 | count u32` at the start of each body.
pub(crate) const BODY_HEADER: usize = 12;
/// `kind u8 | id u64 | data_len u32` before each entry's data.
pub(crate) const ENTRY_HEADER: usize = 13;
/// Largest frame body accepted by the encoder and the decoder.
pub(crate) const MAX_BODY: usize = 1 << 30;

/// The decoded header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Segment id (the number in the file name).
    pub id: u32,
    /// [`KIND_LOG`], [`KIND_COMPACTED`] or [`KIND_STEPS`].
    pub kind: u8,
    /// Every sequence number assigned before this file was created is below this.
    pub seq_floor: u64,
}

impl SegmentHeader {
    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&SEG_MAGIC);
        h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[10] = self.kind;
        h[11] = 0;
        h[12..16].copy_from_slice(&self.id.to_le_bytes());
        h[16..24].copy_from_slice(&self.seq_floor.to_le_bytes());
        // 24..28 reserved (zero)
        let crc = crc32fast::hash(&h[0..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decode and check a header; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(format!(
                "file is {} bytes, shorter than the {HEADER_LEN}-byte segment header",
                bytes.len()
            ));
        };
        if h.get(0..8) != Some(&SEG_MAGIC[..]) {
            return Err("not a profiledb segment (bad magic)".into());
        }
        let stored = u32_at(h, 28).unwrap_or(0);
        let actual = crc32fast::hash(h.get(0..28).unwrap_or(&[]));
        if stored != actual {
            return Err(format!(
                "segment header checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
            ));
        }
        let version = u16_at(h, 8).unwrap_or(0);
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported segment format version {version} (this build reads {FORMAT_VERSION})"
            ));
        }
        let kind = h.get(10).copied().unwrap_or(0);
        if kind != KIND_LOG && kind != KIND_COMPACTED && kind != KIND_STEPS {
            return Err(format!("unknown segment kind {kind}"));
        }
        Ok(SegmentHeader {
            id: u32_at(h, 12).unwrap_or(0),
            kind,
            seq_floor: u64_at(h, 16).unwrap_or(0),
        })
    }
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// Total bytes (frame header included) of a frame holding `entries`, or `None` if it would
/// exceed [`MAX_BODY`].
pub(crate) fn frame_len<E: FrameEntry>(entries: &[E]) -> Option<usize> {
    let mut body = BODY_HEADER;
    for e in entries {
        u32::try_from(e.data().len()).ok()?;
        body = body
            .checked_add(ENTRY_HEADER)?
            .checked_add(e.data().len())?;
    }
    if body > MAX_BODY {
        return None;
    }
    body.checked_add(FRAME_HEADER)
}

/// A frame body's CRC (`crc32fast::hash(bytes)`), from a hasher made once: `Hasher::new` asks
/// which CPU features it may use each time (~40 instructions; a frame is appended each call,
/// and read on each miss, compaction and recovery).
fn crc_of(bytes: &[u8]) -> u32 {
    static FRESH: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let mut h = FRESH.get_or_init(crc32fast::Hasher::new).clone();
    h.update(bytes);
    h.finalize()
}

/// Append one frame to `buf` (which mirrors a segment file from offset 0). Calls
/// `at(data offset, data len)` for each entry, in order. The caller has checked [`frame_len`].
pub(crate) fn encode_frame<E: FrameEntry>(
    buf: &mut Vec<u8>,
    seq: u64,
    entries: &[E],
    mut at: impl FnMut(usize, usize),
) {
    let start = buf.len();
    // Each header put together on the stack and appended in one write (one capacity check
    // and one length stored instead of three each).
    let mut head = [0u8; FRAME_HEADER + BODY_HEADER];
    head[FRAME_HEADER..FRAME_HEADER + 8].copy_from_slice(&seq.to_le_bytes());
    head[FRAME_HEADER + 8..].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    buf.extend_from_slice(&head);
    for e in entries {
        let data = e.data();
        let mut head = [0u8; ENTRY_HEADER];
        head[0] = e.kind();
        head[1..9].copy_from_slice(&e.id().to_le_bytes());
        head[9..].copy_from_slice(&(data.len() as u32).to_le_bytes());
        buf.extend_from_slice(&head);
        at(buf.len(), data.len());
        buf.extend_from_slice(data);
    }
    let body_len = (buf.len() - start - FRAME_HEADER) as u32;
    let crc = crc_of(&buf[start + FRAME_HEADER..]);
    buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A frame decoded (and CRC-checked) in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Offset of the frame (its length field) in the segment.
    pub offset: usize,
    /// Total bytes, frame header included.
    pub total: usize,
    /// Number of entries.
    pub count: u32,
    /// The body (after the frame header).
    body: &'a [u8],
}

/// Decode the frame starting at `offset` of `data` (a whole segment). Checks the length bound,
/// the CRC and the structure of every entry.
pub(crate) fn decode_frame(data: &[u8], offset: usize) -> Result<Frame<'_>, String> {
    let left = data.len().saturating_sub(offset);
    let (Some(len), Some(stored)) = (u32_at(data, offset), u32_at(data, offset.saturating_add(4)))
    else {
        return Err(format!(
            "truncated frame header ({left} bytes left, {FRAME_HEADER} needed)"
        ));
    };
    let len = len as usize;
    if len < BODY_HEADER {
        return Err(format!(
            "frame length {len} is below the minimum {BODY_HEADER}"
        ));
    }
    if len > MAX_BODY {
        return Err(format!("frame length {len} exceeds the maximum {MAX_BODY}"));
    }
    let start = offset + FRAME_HEADER;
    let Some(body) = start.checked_add(len).and_then(|end| data.get(start..end)) else {
        return Err(format!(
            "frame length {len} runs past the end of the file ({} bytes left)",
            left.saturating_sub(FRAME_HEADER)
        ));
    };
    let actual = crc_of(body);
    if actual != stored {
        return Err(format!(
            "checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
        ));
    }
    let seq = u64_at(body, 0).unwrap_or(0);
    let count = u32_at(body, 8).unwrap_or(0);
    if (count as usize) > (len - BODY_HEADER) / ENTRY_HEADER {
        return Err(format!(
            "entry count {count} does not fit a {len}-byte frame"
        ));
    }
    let mut at = BODY_HEADER;
    for i in 0..count {
        let Some(dlen) = u32_at(body, at + 9) else {
            return Err(format!("entry {i} header runs past the frame end"));
        };
        let Some(next) = (at + ENTRY_HEADER)
            .checked_add(dlen as usize)
            .filter(|&n| n <= body.len())
        else {
            return Err(format!(
                "entry {i} data length {dlen} runs past the frame end"
            ));
        };
        at = next;
    }
    if at != body.len() {
        return Err(format!(
            "{} trailing bytes after the last entry",
            body.len() - at
        ));
    }
    Ok(Frame {
        seq,
        offset,
        total: FRAME_HEADER + len,
        count,
        body,
    })
}

impl<'a> Frame<'a> {
    /// `(kind, id, data offset in the segment, data)` of each entry. The frame was validated by
    /// [`decode_frame`]; iteration simply stops on anything unexpected.
    pub fn entries(&self) -> impl Iterator<Item = (u8, u64, usize, &'a [u8])> + 'a {
        let body = self.body;
        let base = self.offset + FRAME_HEADER;
        let mut at = BODY_HEADER;
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let kind = *body.get(at)?;
            let id = u64_at(body, at + 1)?;
            let dlen = u32_at(body, at + 9)? as usize;
            let dstart = at + ENTRY_HEADER;
            let data = body.get(dstart..dstart.checked_add(dlen)?)?;
            at = dstart + dlen;
            Some((kind, id, base + dstart, data))
        })
    }
}

/// Where a frame sits in a segment (kept by recovery between validation and replay).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameRef {
    pub seq: u64,
    pub offset: u32,
}

/// The first bad spot found by [`scan`].
#[derive(Debug, Clone)]
pub(crate) struct Damage {
    /// Offset of the first bad frame.
    pub offset: usize,
    /// What is wrong with it.
    pub reason: String,
    /// Whether a valid frame (with a higher seq) follows it: then it cannot be a torn tail.
    pub followed_by_valid: bool,
    /// Whether every byte from it to the end is zero (no frame begins with zeros): a
    /// preallocated tail (docs/format.md), or a write lost before its bytes landed.
    pub only_zeros: bool,
}

/// Validate the frames of `data` (a whole segment) from `from` to the end.
pub(crate) fn scan(data: &[u8], from: usize) -> (Vec<FrameRef>, Option<Damage>) {
    let mut frames = Vec::new();
    let mut at = from;
    let mut last_seq = 0u64;
    while at < data.len() {
        match decode_frame(data, at) {
            Ok(f) if f.seq > last_seq => {
                frames.push(FrameRef {
                    seq: f.seq,
                    offset: at as u32,
                });
                last_seq = f.seq;
                at += f.total;
            }
            Ok(f) => {
                let reason = format!(
                    "sequence number {} does not follow the previous frame's {last_seq}",
                    f.seq
                );
                return (
                    frames,
                    Some(Damage {
                        offset: at,
                        reason,
                        followed_by_valid: true,
                        only_zeros: false,
                    }),
                );
            }
            Err(reason) => {
                // A tail of zeros (a preallocated one) holds no frame: not searched byte by
                // byte.
                let only_zeros = all_zeros(&data[at..]);
                let followed_by_valid = !only_zeros && valid_frame_after(data, at + 1, last_seq);
                return (
                    frames,
                    Some(Damage {
                        offset: at,
                        reason,
                        followed_by_valid,
                        only_zeros,
                    }),
                );
            }
        }
    }
    (frames, None)
}

/// Whether every byte of `bytes` is zero.
fn all_zeros(bytes: &[u8]) -> bool {
    let (words, rest) = bytes.as_chunks::<8>();
    words.iter().all(|w| u64::from_ne_bytes(*w) == 0) && rest.iter().all(|b| *b == 0)
}

/// Whether any offset at or after `from` starts a valid frame with a seq above `after_seq`.
fn valid_frame_after(data: &[u8], from: usize, after_seq: u64) -> bool {
    let mut at = from;
    while at + FRAME_HEADER + BODY_HEADER <= data.len() {
        if let Some(len) = u32_at(data, at) {
            let len = len as usize;
            if len >= BODY_HEADER
                && len <= data.len() - at - FRAME_HEADER
                && let Ok(f) = decode_frame(data, at)
                && f.seq > after_seq
            {
                return true;
            }
        }
        at += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Entry;

    #[test]
    fn frame_roundtrip_and_every_truncation_is_rejected() {
        let mut buf = vec![0u8; HEADER_LEN];
        let mut locs = Vec::new();
        let entries = [
            Entry {
                kind: 1,
                id: 7,
                data: b"hello",
            },
            Entry {
                kind: 2,
                id: 9,
                data: b"",
            },
        ];
        encode_frame(&mut buf, 42, &entries, |o, l| locs.push((o, l)));
        assert_eq!(buf.len(), HEADER_LEN + frame_len(&entries).unwrap());
        let f = decode_frame(&buf, HEADER_LEN).unwrap();
        assert_eq!(f.seq, 42);
        let got: Vec<_> = f.entries().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].3, b"hello");
        assert_eq!(got[0].2, locs[0].0);
        for cut in HEADER_LEN..buf.len() {
            assert!(decode_frame(&buf[..cut], HEADER_LEN).is_err());
        }
        for byte in HEADER_LEN..buf.len() {
            let mut bad = buf.clone();
            bad[byte] ^= 0x10;
            assert!(decode_frame(&bad, HEADER_LEN).is_err(), "flip at {byte}");
        }
    }

    /// The frame's bytes, field by field as docs/format.md gives them.
    #[test]
    fn a_frame_is_its_fields_in_order() {
        let entries = [
            Entry {
                kind: 20,
                id: 0x0102_0304_0506_0708,
                data: b"step",
            },
            Entry {
                kind: 1,
                id: 300,
                data: b"",
            },
        ];
        let mut buf = vec![9u8; 3];
        encode_frame(&mut buf, 0x1122_3344_5566_7788, &entries, |_, _| {});
        let mut body = Vec::new();
        body.extend_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        for e in &entries {
            body.push(e.kind);
            body.extend_from_slice(&e.id.to_le_bytes());
            body.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            body.extend_from_slice(e.data);
        }
        let mut want = vec![9u8; 3];
        want.extend_from_slice(&(body.len() as u32).to_le_bytes());
        want.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        want.extend_from_slice(&body);
        assert_eq!(buf, want);
    }

    #[test]
    fn header_roundtrip() {
        let h = SegmentHeader {
            id: 3,
            kind: KIND_COMPACTED,
            seq_floor: 99,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()).unwrap(), h);
        assert!(SegmentHeader::decode(&[0u8; 10]).is_err());
        assert!(SegmentHeader::decode(&[0u8; 32]).is_err());
    }
}
