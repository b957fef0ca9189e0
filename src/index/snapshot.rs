//! The index snapshot the hint file carries: a flat, versioned payload of bulk arrays
//! (docs/format.md, "Index snapshot"). Loading sizes every array and map once from the counts
//! it announces, after checking that the bytes for them are there, so a damaged or hostile
//! payload costs at most its own size. Any problem, an unknown magic or version included, is
//! an error: the caller then replays the whole log (a hint is never trusted half-way and
//! never refused).

use super::idmap::IdMap;
use super::profiles::Profiles;
use super::window::Window;
use super::{CompanySlot, HashMap, HashSet, Index};
use crate::entries::chain::Forwards;
use crate::error::{Error, Result};
use crate::storage::Location;
use crate::types::SourceOffset;

/// First bytes of the payload.
pub(crate) const MAGIC: [u8; 8] = *b"PDBINDEX";
/// Version of the payload layout. Version 1 was a bincode-serde image of the whole index
/// (without this magic); it is not read, only replaced. Version 3 adds the history section
/// (issue 16) and then the external log positions (`SOURCE_OFFSET` entries, issue 17) at the
/// end; a version-2 payload is not read either (the log is replayed once, then a version-3 hint
/// is written on close). Version 4 adds the forwards (`entries::chain::Forwards`) at the end;
/// a version-3 payload is not read (the log, which holds them as `FORWARD` entries, is
/// replayed once). Version 5 (stop 18) lists the history steps per segment, without their
/// arrival times (`journal.rs`); a version-4 payload is not read (the log is replayed once).
/// Version 6 (stop 19) names the history table files of sealed segments (with their row
/// counts and CRCs) instead of listing their rows; a version-5 payload is not read. Version 7
/// (stop 23) adds each segment's bound on its steps' arrival times to the history section
/// (the segments of steps are deleted whole by it); a version-6 payload is not read. Version 8
/// (stop 70) leaves out the messageId window's table (placed again from the ring on loading,
/// `Window::from_ring`): encoding it held the writers out for most of a hint's time; a
/// version-7 payload is not read (the log is replayed once).
pub(crate) const VERSION: u16 = 8;

/// Bytes the encoder holds before it hands them to its sink.
const CHUNK: usize = 1 << 20;

/// Encodes the payload, handing it to a sink a chunk at a time (the payload of a million
/// profiles is tens of MB: built whole, it was the peak of a W1 load's memory), with the CRC
/// of everything handed so far.
struct Out<'s> {
    buf: Vec<u8>,
    sink: &'s mut dyn FnMut(&[u8]) -> Result<()>,
    crc: crc32fast::Hasher,
    /// Bytes handed to the sink.
    done: u64,
    /// The sink's first error (nothing more is handed after it).
    failed: Option<Error>,
}

impl Out<'_> {
    /// Hand `b` to the sink (once the buffer's bytes are handed).
    fn hand(&mut self, b: &[u8]) {
        if b.is_empty() || self.failed.is_some() {
            return;
        }
        self.crc.update(b);
        self.done += b.len() as u64;
        if let Err(e) = (self.sink)(b) {
            self.failed = Some(e);
        }
    }
    fn flush(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.hand(&buf);
        self.buf = buf;
        self.buf.clear();
    }
    /// Bytes encoded so far.
    fn len(&self) -> u64 {
        self.done + self.buf.len() as u64
    }
    fn raw(&mut self, b: &[u8]) {
        if self.buf.len() + b.len() > CHUNK {
            self.flush();
            if b.len() >= CHUNK {
                return self.hand(b);
            }
        }
        self.buf.extend_from_slice(b);
    }
    fn u32(&mut self, v: u32) {
        self.raw(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }
    /// Items of `N` bytes each, encoded a block at a time (not a `raw` call an item).
    fn blocks<T, const N: usize>(&mut self, items: &[T], bytes: impl Fn(&T) -> [u8; N]) {
        let mut block = [0u8; 4096];
        for chunk in items.chunks(block.len() / N) {
            for (to, item) in block.chunks_exact_mut(N).zip(chunk) {
                to.copy_from_slice(&bytes(item));
            }
            self.raw(&block[..chunk.len() * N]);
        }
    }
    fn loc(&mut self, l: Location) {
        self.raw(&loc_bytes(&l));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.raw(b);
    }
}

/// A location as the snapshot holds it: segment, offset, length (u32 each, little-endian).
fn loc_bytes(l: &Location) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&l.segment.to_le_bytes());
    b[4..8].copy_from_slice(&l.offset.to_le_bytes());
    b[8..12].copy_from_slice(&l.len.to_le_bytes());
    b
}

/// Decodes the payload; every read is bounds-checked.
struct In<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> In<'a> {
    fn fail(&self, reason: impl Into<String>) -> Error {
        Error::Decode {
            what: "index snapshot",
            file: Default::default(),
            offset: self.at as u64,
            reason: reason.into(),
        }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| self.fail(format!("truncated in {what}")))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn loc(&mut self, what: &str) -> Result<Location> {
        Ok(Location {
            segment: self.u32(what)?,
            offset: self.u32(what)?,
            len: self.u32(what)?,
        })
    }
    /// A count of items of at least `min_size` bytes each, checked against the bytes left.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.b.len() - self.at) as u64;
        if n.saturating_mul(min_size.max(1) as u64) > left {
            return Err(self.fail(format!("{what}: count {n} exceeds the bytes left ({left})")));
        }
        Ok(n as usize)
    }
    fn str(&mut self, what: &str) -> Result<&'a str> {
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        std::str::from_utf8(b).map_err(|_| self.fail(format!("{what} is not UTF-8")))
    }
}

impl Index {
    /// Hand the snapshot payload to `sink`, in order, a chunk of up to about 1 MiB at a time
    /// (a bulk array as one chunk); the first error `sink` returns ends it and is returned.
    /// Returns the CRC of the whole payload (its own CRC included), computed as it was handed,
    /// for the hint file's CRC (`storage::hint::Fill`).
    pub fn write_snapshot(
        &self,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<crc32fast::Hasher> {
        let mut o = Out {
            buf: Vec::with_capacity(CHUNK + 4096),
            sink,
            crc: crc32fast::Hasher::new(),
            done: 0,
            failed: None,
        };
        o.raw(&MAGIC);
        o.raw(&VERSION.to_le_bytes());
        o.raw(&0u16.to_le_bytes());
        o.u64(self.last_seq);
        o.u64(self.next_key);
        o.u64(self.next_company_key);
        o.raw(&[self.next_key_location.is_some() as u8]);
        o.loc(self.next_key_location.unwrap_or_default());
        let dense = self.profiles.dense();
        o.u64(dense.len() as u64);
        o.blocks(dense, loc_bytes);
        let sparse: Vec<_> = self.profiles.sparse().collect();
        o.u64(sparse.len() as u64);
        for (k, l) in sparse {
            o.u64(k);
            o.loc(l);
        }
        // One arena at a time (a copy of the map's identifier bytes).
        for map in [&self.user, &self.email, &self.anon] {
            let arena = map.live_arena();
            o.u64(map.len() as u64);
            o.u64(arena.len() as u64);
            for run in arena.slices() {
                o.raw(run);
            }
        }
        o.u64(self.redirects.len() as u64);
        for (&from, &to) in &self.redirects {
            o.u64(from);
            o.u64(to);
        }
        o.u64(self.companies.len() as u64);
        for (id, slot) in &self.companies {
            o.u64(slot.key);
            o.loc(slot.location);
            o.bytes(id.as_bytes());
            o.u64(slot.members.len() as u64);
            for &m in &slot.members {
                o.u64(m);
            }
        }
        o.u64(self.names.len() as u64);
        for (name, l) in &self.names {
            o.loc(*l);
            o.bytes(name.as_bytes());
        }
        let (ring, head) = self.dedupe.parts();
        o.u64(ring.len() as u64);
        o.u64(head as u64);
        o.raw(ring.as_flattened());
        o.u64(self.suppressed.len() as u64);
        for (&lo, &(hi, l)) in &self.suppressed {
            o.u64(lo);
            o.u64(hi);
            o.loc(l);
        }
        // The history section streams too: its length first (exact, from the counts), then
        // its steps in chunks.
        let mut guard = Vec::new();
        self.journal.guard.encode(&mut guard);
        let len = (self.journal.encoded_steps_len() + guard.len()) as u64;
        o.u64(len);
        let start = o.len();
        let mut buf = std::mem::take(&mut o.buf);
        self.journal.encode_with(&mut buf, &mut |b| {
            o.hand(b);
            b.clear();
        });
        o.buf = buf;
        debug_assert_eq!(o.len() - start, len, "announced history section length");
        o.u64(self.sources.len() as u64);
        for (&id, (s, l)) in &self.sources {
            o.u64(id);
            o.loc(*l);
            o.bytes(s.topic.as_bytes());
            o.u32(s.partition as u32);
            o.u64(s.next_offset as u64);
            o.u32(s.next_call);
        }
        o.u64(self.forwards.len() as u64);
        for (old, new) in self.forwards.iter() {
            o.loc(old);
            o.loc(new);
        }
        o.flush();
        let crc = o.crc.clone().finalize();
        o.u32(crc);
        o.flush();
        match o.failed {
            Some(e) => Err(e),
            None => Ok(o.crc),
        }
    }

    /// An index from a snapshot payload.
    pub fn from_snapshot(payload: &[u8], dedupe_window: usize) -> Result<Index> {
        let mut r = In { b: payload, at: 0 };
        if payload.get(..8) != Some(&MAGIC[..]) {
            return Err(r.fail("not an index snapshot of this format (magic)"));
        }
        let version = match payload.get(8..10) {
            Some(&[a, b]) => u16::from_le_bytes([a, b]),
            _ => return Err(r.fail("truncated before the version")),
        };
        if version != VERSION {
            return Err(r.fail(format!("snapshot version {version}, expected {VERSION}")));
        }
        let body_len = payload.len().saturating_sub(4);
        let stored = match payload.get(body_len..) {
            Some(&[a, b, c, d]) => Some(u32::from_le_bytes([a, b, c, d])),
            _ => None,
        };
        if payload.len() < 16 || stored != Some(crc32fast::hash(&payload[..body_len])) {
            return Err(r.fail("snapshot checksum mismatch"));
        }
        r.b = &payload[..body_len];
        r.at = 12;
        let mut index = Index::new(dedupe_window);
        index.last_seq = r.u64("last seq")?;
        index.next_key = r.u64("next key")?;
        index.next_company_key = r.u64("next company key")?;
        let has_next = r.take(1, "next key location")?[0] != 0;
        let next_loc = r.loc("next key location")?;
        index.next_key_location = has_next.then_some(next_loc);

        let n = r.count(12, "profiles")?;
        let mut dense = Vec::with_capacity(n);
        let bytes = r.take(n * 12, "profiles")?;
        for c in bytes.chunks_exact(12) {
            let w = |i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
            dense.push(Location {
                segment: w(0),
                offset: w(4),
                len: w(8),
            });
        }
        let n = r.count(20, "sparse profiles")?;
        let mut sparse = HashMap::with_capacity_and_hasher(n, Default::default());
        for _ in 0..n {
            let k = r.u64("sparse profiles")?;
            sparse.insert(k, r.loc("sparse profiles")?);
        }
        index.profiles = Profiles::from_parts(dense, sparse);

        for (map, what) in [
            (&mut index.user, "user ids"),
            (&mut index.email, "emails"),
            (&mut index.anon, "anonymous ids"),
        ] {
            let count = r.u64(what)?;
            let len = r.count(1, what)?;
            let arena = r.take(len, what)?;
            let count = usize::try_from(count).map_err(|_| r.fail(format!("{what}: count")))?;
            *map = IdMap::from_arena(arena, count).map_err(|e| r.fail(format!("{what}: {e}")))?;
        }

        let n = r.count(16, "redirects")?;
        index.redirects = HashMap::with_capacity_and_hasher(n, Default::default());
        for _ in 0..n {
            let from = r.u64("redirects")?;
            index.redirects.insert(from, r.u64("redirects")?);
        }

        let n = r.count(40, "companies")?;
        index.companies = HashMap::with_capacity_and_hasher(n, Default::default());
        index.company_ids = HashMap::with_capacity_and_hasher(n, Default::default());
        for _ in 0..n {
            let key = r.u64("companies")?;
            let location = r.loc("companies")?;
            let id = r.str("company id")?;
            let m = r.count(8, "company members")?;
            let mut members: HashSet<u64> =
                HashSet::with_capacity_and_hasher(m, Default::default());
            for _ in 0..m {
                members.insert(r.u64("company members")?);
            }
            index.company_ids.insert(key, id.into());
            index.companies.insert(
                id.into(),
                CompanySlot {
                    key,
                    location,
                    members,
                },
            );
        }

        let n = r.count(16, "property names")?;
        index.names = Vec::with_capacity(n);
        index.name_ids = super::NameIds::with_capacity(n);
        for i in 0..n {
            let l = r.loc("property names")?;
            let name = r.str("property name")?;
            index.names.push((name.into(), l));
            if !name.is_empty() {
                index.name_ids.insert(name, i as u32);
            }
        }

        let n = r.count(16, "messageIds")?;
        let head = r.u64("messageId head")?;
        let bytes = r.take(n * 16, "messageIds")?;
        let ring = bytes.as_chunks::<16>().0.to_vec();
        let head = usize::try_from(head).unwrap_or(usize::MAX);
        // The stored ring is kept as it is laid out when it fits the window size asked for
        // (the option may have changed since); else the newest of its hashes are kept.
        index.dedupe = match Window::from_ring(dedupe_window, ring, head) {
            Some(w) => w,
            None => {
                let bytes = &bytes[..n * 16];
                let oldest_first: Vec<u128> = bytes
                    .chunks_exact(16)
                    .skip(head.min(n))
                    .chain(bytes.chunks_exact(16).take(head.min(n)))
                    .map(|c| {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(c);
                        u128::from_le_bytes(a)
                    })
                    .collect();
                Window::from_oldest_first(dedupe_window, &oldest_first)
            }
        };

        let n = r.count(28, "suppressions")?;
        index.suppressed = HashMap::with_capacity_and_hasher(n, Default::default());
        for _ in 0..n {
            let lo = r.u64("suppressions")?;
            let hi = r.u64("suppressions")?;
            index.suppressed.insert(lo, (hi, r.loc("suppressions")?));
        }
        let n = r.count(1, "history section")?;
        index.journal = super::Journal::decode(r.take(n, "history section")?)?;
        let n = r.count(40, "source offsets")?;
        index.sources = HashMap::with_capacity_and_hasher(n, Default::default());
        for _ in 0..n {
            let id = r.u64("source offsets")?;
            let l = r.loc("source offsets")?;
            let topic = r.str("source topic")?.to_string();
            let partition = r.u32("source partition")? as i32;
            let next_offset = r.u64("source offset")? as i64;
            let next_call = r.u32("source call")?;
            let at = SourceOffset {
                topic,
                partition,
                next_offset,
                next_call,
            };
            index.sources.insert(id, (at, l));
        }
        let n = r.count(24, "forwards")?;
        let mut pairs = Vec::with_capacity(n);
        for _ in 0..n {
            let old = r.loc("forwards")?;
            pairs.push((old, r.loc("forwards")?));
        }
        let mut forwards = Forwards::default();
        forwards.extend(pairs);
        index.forwards = std::sync::Arc::new(forwards);
        if r.at != r.b.len() {
            return Err(r.fail("trailing bytes"));
        }
        index.flatten_redirects();
        Ok(index)
    }
}
