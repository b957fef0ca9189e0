//! Compaction: copy the live entries of the sealed segments (all, or all but the segments of
//! history steps: [`begin`]) into new segments, in seq order, the frames of steps apart
//! ([`Outputs`]); then switch them in crash-safely.
//!
//! Steps, each one safe to crash after (see docs/recovery.md):
//! 1. prepare: seal the active segment; write `NNNN.seg.tmp` files (frames keep their seq),
//!    fdatasync each, fsync the directory. A crash leaves only temp files: removed on open.
//! 2. commit: write `COMPACT.tmp` (new and old ids, CRC), fdatasync, rename to `COMPACT`,
//!    fsync the directory. From here the compaction is decided: recovery completes it.
//! 3. rename each temp to its final name, fsync the directory ([`decide`] ends here, with no
//!    lock of the layer above held); switch the in-memory table ([`switch_in`], no I/O: the
//!    only part the layer above blocks its readers and writers for); unlink the old segments,
//!    fsync the directory; unlink `COMPACT`, fsync the directory ([`unlink_inputs`]).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::io::{Io, IoFile, remove_if_present, write_all_at};
use super::log::FLUSH_AT;
use super::log::Shared;
use super::record::{self, HEADER_LEN, KIND_COMPACTED, KIND_STEPS, SegmentHeader, u32_at};
use super::segment::{Sealed, SealedRef, seg_name, tmp_name};
use super::{CopyAs, Entry, Location, Moves, PACK_BYTES, Places, Relocations, StoredEntry};
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
    /// Where the copies went (`reclaimed_bytes` is set at the commit).
    moved: Relocations,
    reclaimed: u64,
    /// Bytes of the new segments.
    written: u64,
    io: Arc<dyn Io>,
    dir: PathBuf,
    done: bool,
}

impl Prepared {
    pub(crate) fn moved(&self) -> &Moves {
        &self.moved.moved
    }

    pub(crate) fn by_place(&self) -> &Places {
        &self.moved.by_place
    }
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
    /// The kind of segment it writes (`KIND_COMPACTED` or `KIND_STEPS`).
    kind: u8,
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
                kind: self.kind,
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

    fn add(&mut self, seq: u64, entries: &[Entry<'_>]) -> Result<super::Locations> {
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
        let base = self.base;
        let mut locs = super::Locations::new();
        record::encode_frame(&mut self.buf, seq, entries, |o, l| {
            locs.push(Location {
                segment: id,
                offset: (base + o) as u32,
                len: l as u32,
            })
        });
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(locs)
    }
}

/// A compaction's two outputs: `main` takes the entries listed or packed; `steps` the
/// entries kept by place (history steps), in segments of their own (`KIND_STEPS`), which
/// later compactions leave alone unless asked ([`begin`]). A frame holding both is written
/// as two frames with its one seq, one in each: a seq appears at most once among the
/// segments of steps and once among the others (recovery replays both; docs/format.md).
struct Outputs<'a> {
    main: Writer<'a>,
    steps: Writer<'a>,
}

impl<'a> Outputs<'a> {
    fn new(shared: &'a Shared, seq_floor: u64) -> Outputs<'a> {
        let writer = |kind| Writer {
            shared,
            kind,
            seq_floor,
            buf: Vec::new(),
            base: 0,
            file: None,
            id: None,
            outputs: Vec::new(),
            written: 0,
        };
        Outputs {
            main: writer(KIND_COMPACTED),
            steps: writer(KIND_STEPS),
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.main.finish_file()?;
        self.steps.finish_file()
    }

    /// Every output segment started (temp files may exist for each).
    fn ids(&self) -> Vec<u32> {
        let mut ids = self.main.outputs.clone();
        ids.extend_from_slice(&self.steps.outputs);
        ids.sort_unstable();
        ids
    }

    fn written(&self) -> u64 {
        self.main.written + self.steps.written
    }
}

/// Where an output entry was, and how its move is listed.
enum Was {
    /// A packed entry: no relocation lists it.
    Packed,
    /// Listed with its kind and id.
    Listed(Location),
    /// Listed by place only.
    ByPlace(Location),
}

/// A frame of a compaction's output: its seq and its entries (kind, id, data, and where the
/// entry was). Inline up to a call's few entries: a compaction copies a frame per call the
/// store kept (a million for W1), and a heap list each, with the lists `write_frame` built
/// from it, took ~8 % of a full compaction's instructions in the allocator (stop 57).
struct Frame<'a> {
    seq: u64,
    entries: smallvec::SmallVec<[OutEntry<'a>; 4]>,
}

/// An entry of an output frame: kind, id, data, and where it was in the input.
type OutEntry<'a> = (u8, u64, Cow<'a, [u8]>, Was);

/// A packed entry being gathered ([`CopyAs::Pack`]).
struct Pack {
    kind: u8,
    data: Vec<u8>,
    /// Index in [`Held::frames`] of the frame of the last entry gathered: the frame that
    /// carries the packed entry.
    host: usize,
}

/// Bytes of held frames past which an open pack is closed early, so that a pack whose
/// entries lie far apart cannot make the compaction hold much of its input in memory.
const HOLD_BYTES: usize = 4 << 20;

/// The frames held back while a pack is open: they are written, in order, when it closes
/// (the packed entry goes into the frame of its last entry, which is among them).
#[derive(Default)]
struct Held<'a> {
    pack: Option<Pack>,
    frames: Vec<Frame<'a>>,
    bytes: usize,
}

impl<'a> Held<'a> {
    fn hold(&mut self, frame: Frame<'a>) {
        // The frame itself (its first entries inline), then each entry's data and slot.
        self.bytes += std::mem::size_of::<Frame<'_>>()
            + frame.entries.iter().map(|e| e.2.len() + 16).sum::<usize>();
        self.frames.push(frame);
    }

    /// Close the open pack (if any) into its host frame and write every held frame.
    fn release(&mut self, w: &mut Outputs<'_>, moved: &mut Relocations) -> Result<()> {
        if let Some(pack) = self.pack.take()
            && let Some(host) = self.frames.get_mut(pack.host)
        {
            host.entries
                .push((pack.kind, 0, Cow::Owned(pack.data), Was::Packed));
        }
        for frame in self.frames.drain(..) {
            write_frame(w, frame, moved)?;
        }
        self.bytes = 0;
        Ok(())
    }
}

/// Write one frame of the output (none if it has no entry; its steps apart, see [`Outputs`])
/// and list where its entries moved.
fn write_frame(outputs: &mut Outputs<'_>, frame: Frame<'_>, moved: &mut Relocations) -> Result<()> {
    let by_place = |e: &&OutEntry<'_>| matches!(e.3, Was::ByPlace(_));
    let entries = frame.entries.iter();
    write_part(
        &mut outputs.main,
        frame.seq,
        entries.clone().filter(|e| !by_place(e)),
        moved,
    )?;
    write_part(
        &mut outputs.steps,
        frame.seq,
        entries.filter(by_place),
        moved,
    )
}

/// [`write_frame`] to one output: the frame `seq` of `entries` (none if there is no entry).
fn write_part<'e, 'a: 'e>(
    w: &mut Writer<'_>,
    seq: u64,
    entries: impl Iterator<Item = &'e OutEntry<'a>> + Clone,
    moved: &mut Relocations,
) -> Result<()> {
    let copy: smallvec::SmallVec<[Entry<'_>; 4]> = entries
        .clone()
        .map(|(kind, id, data, _)| Entry {
            kind: *kind,
            id: *id,
            data,
        })
        .collect();
    if copy.is_empty() {
        return Ok(());
    }
    let news = w.add(seq, &copy)?;
    for ((kind, id, _, was), new) in entries.zip(news) {
        match was {
            Was::Packed => {}
            Was::Listed(old) => moved
                .moved
                .push(*kind, *id, *old, new)
                .map_err(|e| Error::io("map memory (compaction moves) in", &w.shared.dir, e))?,
            Was::ByPlace(old) => moved
                .by_place
                .push(*old, new)
                .map_err(|e| Error::io("map memory (compaction places) in", &w.shared.dir, e))?,
        }
    }
    Ok(())
}

/// The seq of the frame at `at`, read without checking the frame (its decode checks it);
/// 0 if the bytes end first, so that the damage is met, and reported, at once.
fn next_seq(data: &[u8], at: usize) -> u64 {
    at.checked_add(record::FRAME_HEADER)
        .and_then(|from| data.get(from..from.checked_add(8)?))
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Seal the active segment (if it holds frames) and return the ids of the sealed segments:
/// the inputs of the next [`prepare`]. `steps`: with the segments of history steps
/// (`KIND_STEPS`), else without them.
pub(crate) fn begin(shared: &Shared, steps: bool) -> Result<Vec<u32>> {
    let _c = shared.compaction.lock();
    shared.rotate_if_nonempty()?;
    // Before [`prepare`] takes ids for the outputs.
    shared.drop_spare()?;
    let mut ids: Vec<u32> = shared
        .sealed
        .read()
        .values()
        .filter(|s| steps || !s.is_steps())
        .map(|s| s.id)
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The segments of history steps among `candidates` (sealed, `KIND_STEPS`), sorted: the
/// inputs of a [`prepare`] that takes those alone (the log is not sealed for it).
pub(crate) fn begin_steps_only(shared: &Shared, candidates: &[u32]) -> Vec<u32> {
    let _c = shared.compaction.lock();
    let sealed = shared.sealed.read();
    let mut ids: Vec<u32> = candidates
        .iter()
        .copied()
        .filter(|id| sealed.get(id).is_some_and(|s| s.is_steps()))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Copy the live entries of the sealed segments `ids` (from [`begin`]) into new segments;
/// `copy` decides for each entry whether it is dropped, kept or replaced.
pub(crate) fn prepare(
    shared: &Shared,
    ids: &[u32],
    moves: usize,
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
    let mut w = Outputs::new(shared, seq_floor);
    let mut moved = Relocations {
        moved: Moves::with_capacity(moves),
        by_place: Places::default(),
        reclaimed_bytes: 0,
    };
    let mut held = Held::default();
    let mut pack_kind: Option<u8> = None;
    // Ok(false): given up ([`CopyAs::Abandon`]).
    let result = (|| -> Result<bool> {
        // The inputs' frames in seq order, whatever segment holds them: each segment's
        // frames are in seq order, but a compaction's two outputs (its compacted segment and
        // its segment of steps) hold interleaved seqs, and every output must hold its frames
        // in seq order (recovery and `check` refuse a segment whose seqs go back).
        let mut scans: Vec<(usize, usize)> = vec![(HEADER_LEN, HEADER_LEN); inputs.len()];
        let mut next = std::collections::BinaryHeap::new();
        for (i, seg) in inputs.iter().enumerate() {
            if HEADER_LEN < seg.bytes.len() {
                next.push(std::cmp::Reverse((next_seq(&seg.bytes, HEADER_LEN), i)));
            }
        }
        while let Some(std::cmp::Reverse((_, i))) = next.pop() {
            let seg = &inputs[i];
            let data: &[u8] = &seg.bytes;
            let (at, released) = &mut scans[i];
            let at = *at;
            // Let the pages read so far go every few MiB, not only at the end of the
            // segment: the scan then keeps at most that much of the map resident.
            if at - *released >= RELEASE_EVERY {
                seg.bytes.release_pages();
                *released = at;
            }
            let frame = record::decode_frame(data, at).map_err(|reason| Error::Corruption {
                file: seg.path.clone(),
                offset: at as u64,
                reason,
            })?;
            let mut copy = Frame {
                seq: frame.seq,
                entries: Default::default(),
            };
            let mut packed_here = false;
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
                let listed = Was::Listed(e.location);
                let copy_as = copy_as(&e)?;
                if seg.is_steps()
                    && !matches!(
                        copy_as,
                        CopyAs::Drop | CopyAs::KeepByPlace | CopyAs::Abandon
                    )
                {
                    // Its frame's other part (same seq) may be in another input: kept
                    // otherwise, both parts could land in one output, which recovery
                    // refuses. The layer above keeps a kind by place or not at all.
                    return Err(Error::Options {
                        name: "compaction",
                        reason: format!(
                            "entry of kind {} at {} offset {off} in a segment of entries kept \
                             by place: it may only be kept by place or dropped",
                            e.kind,
                            seg.path.display()
                        ),
                    });
                }
                let (kind, data, was) = match copy_as {
                    CopyAs::Abandon => return Ok(false),
                    CopyAs::Drop => continue,
                    CopyAs::Keep => (e.kind, Cow::Borrowed(e.data), listed),
                    CopyAs::KeepByPlace => {
                        (e.kind, Cow::Borrowed(e.data), Was::ByPlace(e.location))
                    }
                    CopyAs::Replace { kind, data } => (kind, Cow::Owned(data), listed),
                    CopyAs::Pack { data, .. } if data.is_empty() => continue,
                    CopyAs::Pack { kind, data } => {
                        // One kind of pack per compaction (a block closes at the end of
                        // the frame of its last entry, which a second kind met in the
                        // middle of a frame would break).
                        let kind_of_packs = *pack_kind.get_or_insert(kind);
                        if kind != kind_of_packs {
                            return Err(Error::Options {
                                name: "compaction",
                                reason: format!(
                                    "entries packed as kind {kind} and {kind_of_packs} in \
                                     one compaction: one kind of pack at a time"
                                ),
                            });
                        }
                        let pack = held.pack.get_or_insert_with(|| Pack {
                            kind,
                            data: Vec::with_capacity(PACK_BYTES + 64),
                            host: 0,
                        });
                        pack.data.extend_from_slice(&data);
                        packed_here = true;
                        continue;
                    }
                };
                copy.entries.push((kind, e.id, data, was));
            }
            if packed_here {
                held.hold(copy);
                if let Some(pack) = &mut held.pack {
                    pack.host = held.frames.len() - 1;
                }
            } else if held.pack.is_some() {
                if !copy.entries.is_empty() {
                    held.hold(copy);
                }
            } else {
                write_frame(&mut w, copy, &mut moved)?;
            }
            if held
                .pack
                .as_ref()
                .is_some_and(|p| p.data.len() >= PACK_BYTES)
                || held.bytes >= HOLD_BYTES
            {
                held.release(&mut w, &mut moved)?;
            }
            let after = at + frame.total;
            scans[i].0 = after;
            if after < data.len() {
                next.push(std::cmp::Reverse((next_seq(data, after), i)));
            } else {
                seg.bytes.release_pages();
            }
        }
        held.release(&mut w, &mut moved)?;
        moved.by_place.seal();
        // Here, without the layer above's locks, rather than under them at the switch.
        moved.moved.sort_by_kind_and_id();
        w.finish()?;
        if !w.ids().is_empty() {
            shared
                .io
                .sync_dir(&shared.dir)
                .map_err(|e| Error::io("fsync", &shared.dir, e))?;
        }
        Ok(true)
    })();
    let prepared = Prepared {
        outputs: w.ids(),
        inputs: inputs.iter().map(|s| s.id).collect(),
        moved,
        reclaimed: inputs
            .iter()
            .map(|s| s.len())
            .sum::<u64>()
            .saturating_sub(w.written()),
        written: w.written(),
        io: shared.io.clone(),
        dir: shared.dir.clone(),
        done: false,
    };
    match result {
        Ok(true) => Ok(Some(prepared)),
        // Dropped unfinished: its outputs are removed.
        Ok(false) => Ok(None),
        // Corruption found while reading is reported, not poisoning; I/O failures poison.
        Err(e @ (Error::Corruption { .. } | Error::Decode { .. })) => Err(e),
        Err(e) => Err(shared.poison(e)),
    }
}

/// A compaction decided (step 2 and the renames of step 3 done: recovery completes it from
/// here) whose outputs are open but not yet in the in-memory table: the store still serves
/// the inputs until [`switch_in`], so the layer above need not block its readers and writers
/// for the syncs.
pub(crate) struct Decided {
    inputs: Vec<u32>,
    news: Vec<Arc<Sealed>>,
    moved: Relocations,
    written: u64,
}

/// Steps 2 and 3 up to the switch: the manifest, the renames, the directory's fsync, the
/// outputs opened. A failure poisons the store (the manifest may be durable).
pub(crate) fn decide(shared: &Shared, mut p: Prepared) -> Result<Decided> {
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
    let r = rename_in(shared, &p);
    p.done = true;
    let news = shared.guard(r)?;
    Ok(Decided {
        inputs: std::mem::take(&mut p.inputs),
        news,
        moved: Relocations {
            reclaimed_bytes: p.reclaimed,
            ..std::mem::take(&mut p.moved)
        },
        written: p.written,
    })
}

/// The in-memory switch of a decided compaction (no I/O): the outputs replace the inputs in
/// the table of sealed segments. Returns the relocations and the inputs, whose files
/// [`unlink_inputs`] removes once the layer above has applied them.
pub(crate) fn switch_in(shared: &Shared, d: Decided) -> (Relocations, Vec<u32>) {
    let _c = shared.compaction.lock();
    {
        let mut sealed = shared.sealed.write();
        for id in &d.inputs {
            sealed.remove(id);
        }
        for s in d.news {
            sealed.insert(s.id, s);
        }
    }
    shared.counters.compactions.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .compacted_bytes
        .fetch_add(d.written, Ordering::Relaxed);
    (d.moved, d.inputs)
}

/// The rest of step 3 after the switch: unlink the inputs and the manifest. A failure
/// poisons the store (the next open finishes the compaction from the manifest).
pub(crate) fn unlink_inputs(shared: &Shared, inputs: &[u32]) -> Result<()> {
    let _c = shared.compaction.lock();
    shared.guard(finish(shared.io.as_ref(), &shared.dir, inputs))
}

fn rename_in(shared: &Shared, p: &Prepared) -> Result<Vec<Arc<Sealed>>> {
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
    Ok(news)
}

/// Unlink the old segments and the manifest (the commit is decided).
fn finish(io: &dyn Io, dir: &Path, inputs: &[u32]) -> Result<()> {
    for id in inputs {
        let path = dir.join(seg_name(*id));
        remove_if_present(io, &path).map_err(|e| Error::io("unlink", &path, e))?;
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

#[cfg(test)]
mod tests {
    use super::super::{CopyAs, Entry, PACK_BYTES, Replay, Store, StoreOptions, StoredEntry};
    use super::{HEADER_LEN, KIND_COMPACTED, KIND_STEPS, SegmentHeader, seg_name};
    use crate::error::Result;

    /// An entry replayed: kind, id, data.
    type Replayed = (u8, u64, Vec<u8>);
    /// A frame appended: its seq, its kept entry's data if any, its note's data if any.
    type Written = (u64, Option<Vec<u8>>, Option<[u8; 8]>);

    /// Every frame replayed: seq and entries.
    #[derive(Default)]
    struct Frames(Vec<(u64, Vec<Replayed>)>);

    impl Replay for Frames {
        fn load_snapshot(&mut self, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn reset(&mut self) {
            self.0.clear();
        }
        fn apply(&mut self, seq: u64, entries: &[StoredEntry<'_>]) -> Result<()> {
            let e = entries.iter().map(|e| (e.kind, e.id, e.data.to_vec()));
            self.0.push((seq, e.collect()));
            Ok(())
        }
    }

    /// Entries kept by place ([`CopyAs::KeepByPlace`]) are found by their old place in
    /// `by_place`, and only there; their new places hold their bytes. Across several input
    /// and output segments, between dropped, listed and packed entries (whose open pack holds
    /// frames back).
    #[test]
    fn entries_kept_by_place_are_found_by_their_old_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new();
        options.segment_size = 16 << 10;
        let store = Store::open(dir.path(), options, &mut Frames::default()).unwrap();
        // Kind 1: kept and listed; 2: kept by place; 3: dropped; 6: packed.
        let mut places = Vec::new();
        for i in 0..3_000u64 {
            let data = format!("entry {i} {}", "x".repeat((i % 50) as usize));
            let kind = [1, 2, 3, 2, 6][(i % 5) as usize];
            let at = store
                .append(&[Entry {
                    kind,
                    // Copied in the order of decreasing ids, listed sorted (below).
                    id: 3_000 - i,
                    data: data.as_bytes(),
                }])
                .unwrap()
                .locations[0];
            if kind == 2 {
                places.push((at, data));
            }
        }
        store.sync().unwrap();
        let inputs = store.begin_compaction(true).unwrap();
        assert!(inputs.len() > 3, "several input segments");
        let prepared = store
            .prepare_compaction_of(&inputs, 0, &mut |e| {
                Ok(match e.kind {
                    1 => CopyAs::Keep,
                    2 => CopyAs::KeepByPlace,
                    6 => CopyAs::Pack {
                        kind: 10,
                        data: e.data[..8].into(),
                    },
                    _ => CopyAs::Drop,
                })
            })
            .unwrap()
            .unwrap();
        let r = store.commit_compaction(prepared).unwrap();
        assert!(
            r.moved.iter().all(|m| m.0 == 1),
            "listed: the kept entries only"
        );
        assert_eq!(r.moved.len(), 600);
        let ids: Vec<u64> = r.moved.iter().map(|m| m.1).collect();
        assert!(ids.is_sorted(), "the moves sorted by kind and id");
        let mut outputs = std::collections::HashSet::new();
        for (old, data) in &places {
            let new = r
                .by_place
                .get(*old)
                .expect("a kept entry is found by its old place");
            assert!(!inputs.contains(&new.segment));
            outputs.insert(new.segment);
            assert_eq!(store.read(new, <[u8]>::to_vec).unwrap(), data.as_bytes());
        }
        assert!(outputs.len() > 1, "several output segments");
        // What the compaction wrote: every segment but the active one (its header alone,
        // started when the inputs were sealed).
        let stats = store.stats();
        assert_eq!(
            stats.compacted_bytes + HEADER_LEN as u64,
            stats.disk_bytes,
            "compacted bytes"
        );
        assert_eq!(stats.compactions, 1);
        for (_, _, old, _) in r.moved.iter() {
            assert_eq!(r.by_place.get(old), None, "a listed entry is not by place");
        }
    }

    /// The entries kept by place (history steps) go to segments of steps (`KIND_STEPS`), a
    /// frame's with its seq, apart from its other kept entries (a compacted segment). A
    /// compaction without the steps' segments leaves them as they are; one with them rewrites
    /// them, dropping what is dead, its outputs in seq order; a reopen replays every part
    /// once, and refuses a seq twice among the segments of steps (or among the others).
    #[test]
    fn frames_of_steps_only_go_to_segments_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new();
        options.segment_size = 16 << 10;
        let open = |frames: &mut Frames| {
            let mut options = StoreOptions::new();
            options.segment_size = 16 << 10;
            Store::open(dir.path(), options, frames).unwrap()
        };
        let store = Store::open(dir.path(), options, &mut Frames::default()).unwrap();
        // Each frame: a record (kind 1, kept when its id is even) and a step (kind 2).
        let mut steps = Vec::new();
        for i in 0..2_000u64 {
            let record = format!("record {i} {}", "r".repeat((i % 40) as usize));
            let step = format!("step {i} {}", "s".repeat((i % 30) as usize));
            let appended = store
                .append(&[
                    Entry {
                        kind: 1,
                        id: i,
                        data: record.as_bytes(),
                    },
                    Entry {
                        kind: 2,
                        id: i,
                        data: step.as_bytes(),
                    },
                ])
                .unwrap();
            steps.push((i, appended.locations[1], step));
        }
        store.sync().unwrap();
        assert_eq!(store.step_bytes(), 0);
        // Records kept: those whose id is a multiple of `kept`; steps dead: id % 7 == `dead`.
        let copy = |kept: u64, dead: u64| {
            move |e: &StoredEntry<'_>| -> Result<CopyAs> {
                Ok(match e.kind {
                    1 if e.id.is_multiple_of(kept) => CopyAs::Keep,
                    2 if e.id % 7 != dead => CopyAs::KeepByPlace,
                    _ => CopyAs::Drop,
                })
            }
        };
        let inputs = store.begin_compaction(false).unwrap();
        let prepared = store
            .prepare_compaction_of(&inputs, 0, &mut copy(2, 7))
            .unwrap()
            .unwrap();
        let r = store.commit_compaction(prepared).unwrap();
        assert!(store.step_bytes() > 0);
        // Which segments hold steps only: those a compaction without them leaves out.
        let all = store.begin_compaction(true).unwrap();
        let without = store.begin_compaction(false).unwrap();
        let step_segments: Vec<u32> = all
            .iter()
            .filter(|s| !without.contains(s))
            .copied()
            .collect();
        assert!(step_segments.len() > 1, "{all:?} {without:?}");
        for (i, old, data) in &mut steps {
            let new = r.by_place.get(*old).expect("a kept step moved by place");
            assert_eq!(store.read(new, <[u8]>::to_vec).unwrap(), data.as_bytes());
            assert!(
                step_segments.contains(&new.segment),
                "step {i} (its record kept: {}) in a segment of steps",
                *i % 2 == 0
            );
            *old = new;
        }
        // Without them: the steps stay where they are.
        let bytes = store.step_bytes();
        let prepared = store
            .prepare_compaction_of(&without, 0, &mut copy(2, 7))
            .unwrap()
            .unwrap();
        let r = store.commit_compaction(prepared).unwrap();
        assert_eq!(store.step_bytes(), bytes);
        for (_, at, data) in &steps {
            assert_eq!(r.by_place.get(*at), None);
            assert_eq!(store.read(*at, <[u8]>::to_vec).unwrap(), data.as_bytes());
        }
        // With them: rewritten, the steps now dead (id % 7 == 3) dropped, and fewer records
        // kept (id % 4 == 0).
        let inputs = store.begin_compaction(true).unwrap();
        assert!(step_segments.iter().all(|s| inputs.contains(s)));
        let prepared = store
            .prepare_compaction_of(&inputs, 0, &mut copy(4, 3))
            .unwrap()
            .unwrap();
        let r = store.commit_compaction(prepared).unwrap();
        // Every output holds its frames in seq order, though its inputs' seqs interleave.
        assert_eq!(store.check().unwrap(), vec![]);
        let mut kept = std::collections::HashSet::new();
        for (i, at, data) in &steps {
            match r.by_place.get(*at) {
                Some(new) => {
                    assert!(i % 7 != 3, "step {i} is dead");
                    assert_eq!(store.read(new, <[u8]>::to_vec).unwrap(), data.as_bytes());
                    kept.insert(data.clone().into_bytes());
                }
                None => assert!(i % 7 == 3, "step {i} lost"),
            }
        }
        let step_bytes = store.step_bytes();
        drop(store);
        // A reopen replays each part once: a kept record's seq twice, once with its step.
        let mut frames = Frames::default();
        let store = open(&mut frames);
        assert_eq!(store.step_bytes(), step_bytes);
        let mut parts: Vec<(u64, bool)> = frames
            .0
            .iter()
            .map(|f| {
                let steps = f.1.iter().filter(|e| e.0 == 2).count();
                assert!(steps == 0 || steps == f.1.len(), "a part of both kinds");
                (f.0, steps > 0)
            })
            .collect();
        let n = parts.len();
        parts.sort_unstable();
        parts.dedup();
        assert_eq!(parts.len(), n, "a part replayed twice");
        let twice = frames.0.windows(2).filter(|w| w[0].0 == w[1].0).count();
        assert_eq!(
            twice,
            (0..2_000).filter(|i| i % 4 == 0 && i % 7 != 3).count()
        );
        let replayed: std::collections::HashSet<Vec<u8>> = frames
            .0
            .iter()
            .flat_map(|f| f.1.iter().filter(|e| e.0 == 2).map(|e| e.2.clone()))
            .collect();
        assert_eq!(replayed, kept);
        drop(store);
        // A segment of steps copied under another id: its seqs twice among the segments of
        // steps, which recovery refuses.
        let copy_of = |kind: u8| {
            let names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            let source = names
                .iter()
                .find(|p| {
                    let b = std::fs::read(p).unwrap();
                    b.starts_with(&super::super::record::SEG_MAGIC) && b[10] == kind
                })
                .expect("a segment of that kind");
            let mut bytes = std::fs::read(source).unwrap();
            let header = SegmentHeader::decode(&bytes).unwrap();
            let copy = SegmentHeader { id: 900, ..header };
            bytes[..HEADER_LEN].copy_from_slice(&copy.encode());
            let path = dir.path().join(seg_name(900));
            std::fs::write(&path, bytes).unwrap();
            path
        };
        for kind in [KIND_STEPS, KIND_COMPACTED] {
            let path = copy_of(kind);
            let mut options = StoreOptions::new();
            options.segment_size = 16 << 10;
            let err = Store::open(dir.path(), options, &mut Frames::default())
                .err()
                .expect("a seq twice among one kind of segments");
            assert!(
                err.to_string().contains("also appears in"),
                "kind {kind}: {err}"
            );
            std::fs::remove_file(path).unwrap();
        }
        let store = open(&mut Frames::default());
        assert!(store.step_bytes() > 0);
        // An entry of a segment of steps kept otherwise than by place: refused (its frame's
        // other part could land in the same output).
        let inputs = store.begin_compaction(true).unwrap();
        let err = store
            .prepare_compaction_of(&inputs, 0, &mut |_| Ok(CopyAs::Keep))
            .err()
            .expect("a step kept as listed");
        assert!(
            err.to_string().contains("kept by place or dropped"),
            "{err}"
        );
    }

    /// Packed entries ([`CopyAs::Pack`]) go, in order, into the frame of the last entry each
    /// pack gathers; a pack closes at `PACK_BYTES`, and early when the frames held behind it
    /// pass `HOLD_BYTES`; the frames keep their seqs and their order, and kept entries are
    /// untouched.
    #[test]
    fn packs_join_the_frame_of_their_last_entry_and_frames_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::new(), &mut Frames::default()).unwrap();
        let big = vec![7u8; 1 << 20];
        // (seq, kept entry's data if any, note's data if any), in append order.
        let mut written: Vec<Written> = Vec::new();
        let mut append = |i: u64, kept: Option<&[u8]>, note: bool| {
            let note_data = i.to_le_bytes();
            let mut entries = vec![Entry {
                kind: 1,
                id: i,
                data: kept.unwrap_or(b"dropped"),
            }];
            if note {
                entries.push(Entry {
                    kind: 6,
                    id: i,
                    data: &note_data,
                });
            }
            let seq = store.append(&entries).unwrap().seq;
            written.push((seq, kept.map(<[u8]>::to_vec), note.then_some(note_data)));
        };
        // 5,000 notes (16 bytes each once packed), a kept entry every third frame; then
        // frames of 1 MiB kept entries and no note while a pack is open (closed early), then
        // a last note alone.
        for i in 0..5_000u64 {
            let kept = (i % 3 == 0).then_some(&b"kept"[..]);
            append(i, kept, true);
        }
        append(5_000, None, true);
        for i in 5_001..5_006u64 {
            append(i, Some(&big), false);
        }
        append(5_006, None, true);
        store.sync().unwrap();

        let inputs = store.begin_compaction(true).unwrap();
        let prepared = store
            .prepare_compaction_of(&inputs, 0, &mut |e| {
                Ok(match e.kind {
                    6 => CopyAs::Pack {
                        kind: 10,
                        data: [e.data, e.data].concat().into(),
                    },
                    _ if e.data == b"dropped" => CopyAs::Drop,
                    _ => CopyAs::Keep,
                })
            })
            .unwrap()
            .unwrap();
        let moved = store.commit_compaction(prepared).unwrap().moved;
        assert!(moved.iter().all(|m| m.0 == 1), "packs are not relocations");
        drop(store);

        let mut frames = Frames::default();
        drop(Store::open(dir.path(), StoreOptions::new(), &mut frames).unwrap());
        let frames = frames.0;
        assert!(frames.windows(2).all(|w| w[0].0 < w[1].0), "seqs increase");
        // Kept entries: each in the frame of its original seq.
        let kept: Vec<(u64, Vec<u8>)> = frames
            .iter()
            .flat_map(|(seq, es)| es.iter().filter(|e| e.0 == 1).map(|e| (*seq, e.2.clone())))
            .collect();
        let expect: Vec<(u64, Vec<u8>)> = written
            .iter()
            .filter_map(|(seq, k, _)| k.clone().map(|k| (*seq, k)))
            .collect();
        assert_eq!(kept, expect);
        // Packs: the notes' data in order, each pack in the frame of its last note.
        let packs: Vec<(u64, &Vec<u8>)> = frames
            .iter()
            .flat_map(|(seq, es)| es.iter().filter(|e| e.0 == 10).map(move |e| (*seq, &e.2)))
            .collect();
        let all: Vec<u8> = packs.iter().flat_map(|p| p.1.iter().copied()).collect();
        let notes: Vec<u8> = written
            .iter()
            .filter_map(|w| w.2)
            .flat_map(|n| [n, n].concat())
            .collect();
        assert_eq!(all, notes);
        assert!(packs.iter().all(|p| p.1.len() <= PACK_BYTES + 16));
        let note_seqs: Vec<u64> = written
            .iter()
            .filter(|w| w.2.is_some())
            .map(|w| w.0)
            .collect();
        let mut gathered = 0;
        for (seq, data) in &packs {
            gathered += data.len() / 16;
            assert_eq!(
                *seq,
                note_seqs[gathered - 1],
                "a pack sits in its last note's frame"
            );
        }
        // 5,002 notes: a full pack of 4,096; the next (905 notes) is closed early by the
        // 1 MiB frames held behind it (over 4 MiB); the last note starts a pack of its own.
        let sizes: Vec<usize> = packs.iter().map(|p| p.1.len() / 16).collect();
        assert_eq!(sizes, [4_096, 905, 1]);
    }

    /// Four frames of a kind-6 and a kind-7 entry each.
    fn two_kinds(dir: &std::path::Path) -> Store {
        let store = Store::open(dir, StoreOptions::new(), &mut Frames::default()).unwrap();
        for i in 0..4u64 {
            let data = i.to_le_bytes();
            let entries = [
                Entry {
                    kind: 6,
                    id: i,
                    data: &data,
                },
                Entry {
                    kind: 7,
                    id: i,
                    data: &data,
                },
            ];
            store.append(&entries).unwrap();
        }
        store.sync().unwrap();
        store
    }

    /// An empty pack is a drop; a second kind of pack in one compaction is an error (a bug of
    /// the layer above: the store is poisoned, as by any failure of the copy).
    #[test]
    fn an_empty_pack_is_a_drop_and_a_second_kind_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = two_kinds(dir.path());
        let inputs = store.begin_compaction(true).unwrap();
        let err = store
            .prepare_compaction_of(&inputs, 0, &mut |e| {
                Ok(CopyAs::Pack {
                    kind: e.kind + 10,
                    data: e.data.into(),
                })
            })
            .err()
            .expect("two kinds of pack");
        assert!(err.to_string().contains("one kind of pack"), "{err}");
        drop(store);
        let dir = tempfile::tempdir().unwrap();
        let store = two_kinds(dir.path());
        let inputs = store.begin_compaction(true).unwrap();
        let prepared = store
            .prepare_compaction_of(&inputs, 0, &mut |e| {
                Ok(CopyAs::Pack {
                    kind: 16,
                    data: if e.kind == 6 {
                        e.data.into()
                    } else {
                        Default::default()
                    },
                })
            })
            .unwrap()
            .unwrap();
        store.commit_compaction(prepared).unwrap();
        drop(store);
        let mut frames = Frames::default();
        drop(Store::open(dir.path(), StoreOptions::new(), &mut frames).unwrap());
        let entries: Vec<&Replayed> = frames.0.iter().flat_map(|f| f.1.iter()).collect();
        assert_eq!(entries.len(), 1, "one pack, the empty ones dropped");
        assert_eq!(entries[0].0, 16);
        assert_eq!(entries[0].2.len(), 32);
    }

    /// The segment files in `dir`, by id: whether each has a valid header.
    fn segment_files(dir: &std::path::Path) -> Vec<(u32, bool)> {
        let mut out: Vec<(u32, bool)> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                let id = super::super::segment::parse_seg_name(&name)?;
                let bytes = std::fs::read(dir.join(&name)).unwrap();
                Some((id, SegmentHeader::decode(&bytes).is_ok()))
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn append_frames(store: &Store, from: u64, n: u64) {
        for i in from..from + n {
            let data = format!("frame {i} {}", "y".repeat(200));
            store
                .append(&[Entry {
                    kind: 1,
                    id: i,
                    data: data.as_bytes(),
                }])
                .unwrap();
        }
        store.sync().unwrap();
    }

    /// The next segment created ahead of a compaction's seal: until the seal it is the newest
    /// segment file, its header zeros, which an open removes (a crash there loses nothing);
    /// the seal starts it (its header valid, the active segment), and what is appended then
    /// is in it and read back after a reopen. Fails with the creation ahead taken out (the
    /// seal then starts a segment of another id).
    #[test]
    fn a_compaction_seals_into_the_segment_created_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(dir.path(), StoreOptions::new(), &mut Frames::default()).unwrap();
        let store = open();
        // Nothing to seal: nothing created.
        store.create_next_segment().unwrap();
        assert_eq!(segment_files(dir.path()).len(), 1);
        append_frames(&store, 0, 50);
        let active = store.active_segment();
        store.create_next_segment().unwrap();
        // Twice before a seal: the one made first stays.
        store.create_next_segment().unwrap();
        let files = segment_files(dir.path());
        let (spare, valid) = *files.last().unwrap();
        assert_eq!((files.len(), valid), (2, false), "{files:?}");
        assert!(spare > active);
        assert_eq!(store.active_segment(), active);
        // A crash here: the open removes the spare and replays every frame.
        drop(store);
        let mut frames = Frames::default();
        let store = Store::open(dir.path(), StoreOptions::new(), &mut frames).unwrap();
        assert_eq!(frames.0.len(), 50);
        assert!(store.stats().recovery.truncated.is_some());
        assert_eq!(segment_files(dir.path()), [(active, true)]);
        // Created ahead again, then sealed into.
        store.create_next_segment().unwrap();
        let spare = segment_files(dir.path()).last().unwrap().0;
        let inputs = store.begin_compaction(true).unwrap();
        assert_eq!(inputs, [active]);
        assert_eq!(store.active_segment(), spare);
        assert_eq!(segment_files(dir.path()), [(active, true), (spare, true)]);
        append_frames(&store, 50, 30);
        drop(store);
        let mut frames = Frames::default();
        let store = Store::open(dir.path(), StoreOptions::new(), &mut frames).unwrap();
        assert_eq!(frames.0.len(), 80);
        let seqs: Vec<u64> = frames.0.iter().map(|f| f.0).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(store.active_segment(), spare);
    }

    /// A rotation on the writer's path takes the segment created ahead; the compaction's seal
    /// then creates its own, and no segment file without a valid header is left.
    #[test]
    fn a_rotation_before_the_seal_takes_the_segment_created_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new();
        options.segment_size = 16 << 10;
        let store = Store::open(dir.path(), options.clone(), &mut Frames::default()).unwrap();
        append_frames(&store, 0, 10);
        store.create_next_segment().unwrap();
        let spare = segment_files(dir.path()).last().unwrap().0;
        // Past the segment size: rotated into the spare.
        append_frames(&store, 10, 100);
        let files = segment_files(dir.path());
        assert!(files.iter().all(|f| f.1), "{files:?}");
        assert!(files.iter().any(|f| f.0 == spare));
        store.begin_compaction(true).unwrap();
        let files = segment_files(dir.path());
        assert!(files.iter().all(|f| f.1), "{files:?}");
        assert!(store.active_segment() > spare);
        drop(store);
        let mut frames = Frames::default();
        Store::open(dir.path(), options, &mut frames).unwrap();
        assert_eq!(frames.0.len(), 110);
    }

    /// Segments created ahead while a writer rotates the log again and again: every segment
    /// a rotation starts is newer than every other (the active one the newest id), no
    /// segment file without a valid header is ever older than one with, and a reopen reads
    /// every frame. (With the spare's id taken apart from its creation, a rotation in
    /// between started a segment of its own, newer than the spare, which the next rotation
    /// then started: an active segment older than a sealed one.)
    #[test]
    fn segments_created_ahead_while_the_log_rotates_keep_the_ids_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new();
        // A rotation every append: one meets a creation ahead often.
        options.segment_size = 1 << 10;
        let store = Store::open(dir.path(), options.clone(), &mut Frames::default()).unwrap();
        let n = 1_000;
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut active = store.active_segment();
                for i in 0..n {
                    store
                        .append(&[Entry {
                            kind: 1,
                            id: i,
                            data: &[7; 300],
                        }])
                        .unwrap();
                    let now = store.active_segment();
                    assert!(now >= active, "segment {now} started after {active}");
                    active = now;
                }
            });
            s.spawn(|| {
                for _ in 0..1_000 {
                    store.create_next_segment().unwrap();
                    let files = segment_files(dir.path());
                    // The header-less one (the spare) only as the newest.
                    let bad = files.iter().position(|f| !f.1);
                    assert!(bad.is_none_or(|b| b + 1 == files.len()), "{files:?}");
                }
            });
        });
        let files = segment_files(dir.path());
        let newest_valid = files.iter().filter(|f| f.1).map(|f| f.0).max();
        assert_eq!(Some(store.active_segment()), newest_valid, "{files:?}");
        drop(store);
        let mut frames = Frames::default();
        Store::open(dir.path(), options, &mut frames).unwrap();
        assert_eq!(frames.0.len() as u64, n);
    }
}
