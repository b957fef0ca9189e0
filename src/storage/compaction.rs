//! Compaction: copy the live entries of every sealed segment into new segments, then switch
//! them in crash-safely.
//!
//! Steps, each one safe to crash after (see docs/recovery.md):
//! 1. prepare: seal the active segment; write `NNNN.seg.tmp` files (frames keep their seq),
//!    fdatasync each, fsync the directory. A crash leaves only temp files: removed on open.
//! 2. commit: write `COMPACT.tmp` (new and old ids, CRC), fdatasync, rename to `COMPACT`,
//!    fsync the directory. From here the compaction is decided: recovery completes it.
//! 3. rename each temp to its final name, fsync the directory; switch the in-memory table;
//!    unlink the old segments, fsync the directory; unlink `COMPACT`, fsync the directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::io::{Io, IoFile, write_all_at};
use super::log::FLUSH_AT;
use super::log::Shared;
use super::record::{self, HEADER_LEN, KIND_COMPACTED, SegmentHeader, u32_at};
use super::segment::{Sealed, SealedRef, seg_name, tmp_name};
use super::{CopyAs, Entry, Location, Relocations, StoredEntry};
use crate::error::{Error, Result};

/// File name of the compaction manifest.
pub(crate) const MANIFEST: &str = "COMPACT";
/// Temp name while it is written.
pub(crate) const MANIFEST_TMP: &str = "COMPACT.tmp";
/// First bytes of the manifest.
pub(crate) const MANIFEST_MAGIC: [u8; 8] = *b"PDBCMPT\n";

/// A prepared compaction: new segments written and synced under temp names.
pub(crate) struct Prepared {
    /// New segment ids (temp files exist for each).
    outputs: Vec<u32>,
    /// Old segment ids to remove.
    inputs: Vec<u32>,
    moved: Vec<(u8, u64, Location, Location)>,
    reclaimed: u64,
    io: Arc<dyn Io>,
    dir: PathBuf,
    done: bool,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if !self.done {
            for id in &self.outputs {
                let _ = self.io.remove(&self.dir.join(tmp_name(*id)));
            }
        }
    }
}

/// Bytes of an input segment the compaction scans between two releases of its mapped pages.
const RELEASE_EVERY: usize = 4 << 20;

/// Writes output segments of a compaction: each file is created when it starts and written
/// every [`FLUSH_AT`] bytes, so that the compaction holds a small buffer, not a whole output
/// segment (up to `segment_size`) in memory.
struct Writer<'a> {
    shared: &'a Shared,
    seq_floor: u64,
    /// The current output's bytes not yet written (they follow its first `base` bytes).
    buf: Vec<u8>,
    base: usize,
    file: Option<(Arc<dyn IoFile>, PathBuf)>,
    id: Option<u32>,
    outputs: Vec<u32>,
    written: u64,
}

impl Writer<'_> {
    fn start(&mut self) -> Result<u32> {
        let id = self.shared.next_segment.fetch_add(1, Ordering::SeqCst);
        self.buf.clear();
        self.base = 0;
        self.buf.extend_from_slice(
            &SegmentHeader {
                id,
                kind: KIND_COMPACTED,
                seq_floor: self.seq_floor,
            }
            .encode(),
        );
        self.id = Some(id);
        // Listed first, so that a failure from here on removes the temporary file.
        self.outputs.push(id);
        let path = self.shared.dir.join(tmp_name(id));
        let f = self
            .shared
            .io
            .create(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        self.file = Some((f, path));
        Ok(id)
    }

    /// Write the buffered bytes of the current output.
    fn flush(&mut self) -> Result<()> {
        let Some((f, path)) = &self.file else {
            return Ok(());
        };
        if !self.buf.is_empty() {
            write_all_at(f.as_ref(), self.base as u64, &self.buf)
                .map_err(|e| Error::io("write", path, e))?;
            self.base += self.buf.len();
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish_file(&mut self) -> Result<()> {
        if self.id.take().is_none() {
            return Ok(());
        }
        self.flush()?;
        if let Some((f, path)) = self.file.take() {
            f.sync_data()
                .map_err(|e| Error::io("fdatasync", &path, e))?;
        }
        Ok(())
    }

    fn add(&mut self, seq: u64, entries: &[Entry<'_>]) -> Result<Vec<Location>> {
        let flen = record::frame_len(entries).unwrap_or(usize::MAX);
        let len = self.base + self.buf.len();
        let full = self.id.is_some()
            && len > HEADER_LEN
            && (len.saturating_add(flen) as u64 > self.shared.segment_size
                || len.saturating_add(flen) > u32::MAX as usize);
        if full {
            self.finish_file()?;
        }
        let id = match self.id {
            Some(id) => id,
            None => self.start()?,
        };
        let mut locs = Vec::with_capacity(entries.len());
        record::encode_frame(&mut self.buf, seq, entries, &mut locs);
        let base = self.base;
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(locs
            .into_iter()
            .map(|(o, l)| Location {
                segment: id,
                offset: (base + o) as u32,
                len: l as u32,
            })
            .collect())
    }
}

/// Seal the active segment (if it holds frames) and return the ids of every sealed segment:
/// the inputs of the next [`prepare`].
pub(crate) fn begin(shared: &Shared) -> Result<Vec<u32>> {
    let _c = shared.compaction.lock();
    shared.rotate_if_nonempty()?;
    let mut ids: Vec<u32> = shared.sealed.read().keys().copied().collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Copy the live entries of the sealed segments `ids` (from [`begin`]) into new segments;
/// `copy` decides for each entry whether it is dropped, kept or replaced.
pub(crate) fn prepare(
    shared: &Shared,
    ids: &[u32],
    copy_as: &mut dyn FnMut(&StoredEntry<'_>) -> Result<CopyAs>,
) -> Result<Option<Prepared>> {
    let _c = shared.compaction.lock();
    let mut inputs: Vec<SealedRef> = {
        let sealed = shared.sealed.read();
        let mut inputs = Vec::with_capacity(ids.len());
        for id in ids {
            match sealed.get(id) {
                Some(s) => inputs.push(s.clone()),
                None => {
                    return Err(Error::Options {
                        name: "compaction",
                        reason: format!("segment {} is not sealed (any more)", seg_name(*id)),
                    });
                }
            }
        }
        inputs
    };
    if inputs.is_empty() {
        return Ok(None);
    }
    inputs.sort_by_key(|s| (s.first_seq().unwrap_or(u64::MAX), s.id));
    let seq_floor = shared.state.lock().next_seq;
    let mut w = Writer {
        shared,
        seq_floor,
        buf: Vec::new(),
        base: 0,
        file: None,
        id: None,
        outputs: Vec::new(),
        written: 0,
    };
    let mut moved = Vec::new();
    // Each live entry, with the (kind, data) it is replaced by, if any.
    type Replacement = Option<(u8, Vec<u8>)>;
    let mut live: Vec<(StoredEntry<'_>, Replacement)> = Vec::new();
    let result = (|| -> Result<()> {
        for seg in &inputs {
            let data: &[u8] = &seg.bytes;
            let mut at = HEADER_LEN;
            let mut released = at;
            while at < data.len() {
                // Let the pages read so far go every few MiB, not only at the end of the
                // segment: the scan then keeps at most that much of the map resident.
                if at - released >= RELEASE_EVERY {
                    seg.bytes.release_pages();
                    released = at;
                }
                let frame = record::decode_frame(data, at).map_err(|reason| Error::Corruption {
                    file: seg.path.clone(),
                    offset: at as u64,
                    reason,
                })?;
                live.clear();
                for (kind, id, off, bytes) in frame.entries() {
                    let e = StoredEntry {
                        kind,
                        id,
                        data: bytes,
                        location: Location {
                            segment: seg.id,
                            offset: off as u32,
                            len: bytes.len() as u32,
                        },
                    };
                    match copy_as(&e)? {
                        CopyAs::Drop => {}
                        CopyAs::Keep => live.push((e, None)),
                        CopyAs::Replace { kind, data } => live.push((e, Some((kind, data)))),
                    }
                }
                if !live.is_empty() {
                    let mut copy: Vec<Entry<'_>> = Vec::with_capacity(live.len());
                    copy.extend(live.iter().map(|(e, replaced)| match replaced {
                        Some((kind, data)) => Entry {
                            kind: *kind,
                            id: e.id,
                            data,
                        },
                        None => Entry {
                            kind: e.kind,
                            id: e.id,
                            data: e.data,
                        },
                    }));
                    let news = w.add(frame.seq, &copy)?;
                    for ((e, replaced), n) in live.iter().zip(news) {
                        let kind = replaced.as_ref().map_or(e.kind, |r| r.0);
                        moved.push((kind, e.id, e.location, n));
                    }
                }
                at += frame.total;
            }
            seg.bytes.release_pages();
        }
        w.finish_file()?;
        if !w.outputs.is_empty() {
            shared
                .io
                .sync_dir(&shared.dir)
                .map_err(|e| Error::io("fsync", &shared.dir, e))?;
        }
        Ok(())
    })();
    let prepared = Prepared {
        outputs: w.outputs.clone(),
        inputs: inputs.iter().map(|s| s.id).collect(),
        moved,
        reclaimed: inputs
            .iter()
            .map(|s| s.len())
            .sum::<u64>()
            .saturating_sub(w.written),
        io: shared.io.clone(),
        dir: shared.dir.clone(),
        done: false,
    };
    match result {
        Ok(()) => Ok(Some(prepared)),
        // Corruption found while reading is reported, not poisoning; I/O failures poison.
        Err(e @ (Error::Corruption { .. } | Error::Decode { .. })) => Err(e),
        Err(e) => Err(shared.poison(e)),
    }
}

pub(crate) fn commit(shared: &Shared, mut p: Prepared) -> Result<Relocations> {
    let _c = shared.compaction.lock();
    shared.check_poison()?;
    {
        let sealed = shared.sealed.read();
        if let Some(missing) = p.inputs.iter().find(|id| !sealed.contains_key(id)) {
            return Err(Error::Options {
                name: "compaction",
                reason: format!(
                    "stale prepared compaction: segment {} was already replaced",
                    seg_name(*missing)
                ),
            });
        }
    }
    let r = switch(shared, &p);
    p.done = true;
    shared.guard(r)?;
    shared.counters.compactions.fetch_add(1, Ordering::Relaxed);
    Ok(Relocations {
        moved: std::mem::take(&mut p.moved),
        reclaimed_bytes: p.reclaimed,
    })
}

fn switch(shared: &Shared, p: &Prepared) -> Result<()> {
    let io = shared.io.as_ref();
    let dir = &shared.dir;
    write_manifest(io, dir, &p.outputs, &p.inputs)?;
    for id in &p.outputs {
        let (from, to) = (dir.join(tmp_name(*id)), dir.join(seg_name(*id)));
        io.rename(&from, &to)
            .map_err(|e| Error::io("rename", &from, e))?;
    }
    sync_dir(io, dir)?;
    let mut news = Vec::with_capacity(p.outputs.len());
    for id in &p.outputs {
        news.push(Arc::new(Sealed::open(io, dir, *id)?));
    }
    {
        let mut sealed = shared.sealed.write();
        for id in &p.inputs {
            sealed.remove(id);
        }
        for s in news {
            sealed.insert(s.id, s);
        }
    }
    finish(io, dir, &p.inputs)
}

/// Unlink the old segments and the manifest (the commit is decided).
fn finish(io: &dyn Io, dir: &Path, inputs: &[u32]) -> Result<()> {
    for id in inputs {
        let path = dir.join(seg_name(*id));
        match io.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("unlink", &path, e)),
        }
    }
    sync_dir(io, dir)?;
    let m = dir.join(MANIFEST);
    io.remove(&m).map_err(|e| Error::io("unlink", &m, e))?;
    sync_dir(io, dir)
}

fn sync_dir(io: &dyn Io, dir: &Path) -> Result<()> {
    io.sync_dir(dir).map_err(|e| Error::io("fsync", dir, e))
}

fn encode_manifest(outputs: &[u32], inputs: &[u32]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&MANIFEST_MAGIC);
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    for list in [outputs, inputs] {
        b.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for id in list {
            b.extend_from_slice(&id.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

type Lists = (Vec<u32>, Vec<u32>);

fn decode_manifest(b: &[u8]) -> std::result::Result<Lists, String> {
    let body_len = b.len().checked_sub(4).ok_or("manifest too short")?;
    let body = b.get(..body_len).unwrap_or(&[]);
    if u32_at(b, body_len) != Some(crc32fast::hash(body)) {
        return Err("manifest checksum mismatch".into());
    }
    if body.get(..8) != Some(&MANIFEST_MAGIC[..]) || record::u16_at(body, 8) != Some(1) {
        return Err("bad manifest magic or version".into());
    }
    let mut at = 12;
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        let n = u32_at(body, at).ok_or("manifest truncated")? as usize;
        at += 4;
        if n > body.len() / 4 {
            return Err("manifest count out of range".into());
        }
        for _ in 0..n {
            list.push(u32_at(body, at).ok_or("manifest truncated")?);
            at += 4;
        }
    }
    if at != body.len() {
        return Err("trailing bytes in manifest".into());
    }
    let [o, i] = lists;
    Ok((o, i))
}

fn write_manifest(io: &dyn Io, dir: &Path, outputs: &[u32], inputs: &[u32]) -> Result<()> {
    let tmp = dir.join(MANIFEST_TMP);
    let _ = io.remove(&tmp);
    let f = io.create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    write_all_at(f.as_ref(), 0, &encode_manifest(outputs, inputs))
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_data().map_err(|e| Error::io("fdatasync", &tmp, e))?;
    drop(f);
    let fin = dir.join(MANIFEST);
    io.rename(&tmp, &fin)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    sync_dir(io, dir)
}

/// On open: finish a compaction whose manifest was committed. Returns whether one was found.
pub(crate) fn complete_interrupted(io: &dyn Io, dir: &Path, names: &[String]) -> Result<bool> {
    if !names.iter().any(|n| n == MANIFEST) {
        return Ok(false);
    }
    let path = dir.join(MANIFEST);
    let bytes = io.read(&path).map_err(|e| Error::io("read", &path, e))?;
    let (outputs, inputs) = decode_manifest(&bytes).map_err(|reason| Error::Corruption {
        file: path.clone(),
        offset: 0,
        reason,
    })?;
    for id in &outputs {
        let (tmp, fin) = (dir.join(tmp_name(*id)), dir.join(seg_name(*id)));
        if names.iter().any(|n| *n == tmp_name(*id)) {
            io.rename(&tmp, &fin)
                .map_err(|e| Error::io("rename", &tmp, e))?;
        } else if !names.iter().any(|n| *n == seg_name(*id)) {
            return Err(Error::Corruption {
                file: path,
                offset: 0,
                reason: format!(
                    "committed compaction names {} but neither it nor its temp file exists",
                    seg_name(*id)
                ),
            });
        }
    }
    sync_dir(io, dir)?;
    finish(io, dir, &inputs)?;
    Ok(true)
}
