//! The storage engine: knows bytes, never profiles.
//!
//! A store is a directory of segment files holding CRC-framed *frames*. A frame is the unit of
//! atomicity: recovery keeps it whole or drops it whole. A frame carries a sequence number and
//! one or more *entries* `(kind, id, data)`; the layer above gives `kind` and `id` their meaning
//! (profile put, tombstone, company, dedupe note, ...). Storage keeps no index of its own beyond
//! the segment list: the layer above maps its keys to [`Location`]s, decides which entries are
//! live during compaction, and snapshots its index in the hint file through [`Store::write_hint`].
//!
//! Layers inside: `record` (framing) -> `segment`/`mmap` (files) -> `log` (append, group commit,
//! poisoning) -> `recovery`/`hint`/`compaction` (whole-directory procedures) -> `Store`.
//!
//! Durability, recovery and format: docs/recovery.md and docs/format.md.
//!
//! THIS FILE IS THE CONTRACT between the storage engine and `db.rs`. The signatures below are
//! what the rest of the crate calls.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::options::Durability;

/// Where an entry's data lives: segment id, byte offset of the entry's *data* inside the segment
/// file, and its length. Stable until a compaction relocates the entry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, Default,
)]
pub struct Location {
    /// Segment id (the number in the file name).
    pub segment: u32,
    /// Offset of the entry data within the segment file.
    pub offset: u32,
    /// Length of the entry data.
    pub len: u32,
}

/// One entry to append (borrowed).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Meaning given by the layer above (non-zero).
    pub kind: u8,
    /// Key within the kind, given by the layer above.
    pub id: u64,
    /// Opaque payload.
    pub data: &'a [u8],
}

/// An entry as a frame reads it: [`Entry`]'s parts, from whatever form the caller holds them
/// in (the writer's batch keeps `(kind, id, data)` triples: a list of [`Entry`]s made of them
/// for each append cost ~100 instructions a call).
pub trait FrameEntry {
    /// Meaning given by the layer above (non-zero).
    fn kind(&self) -> u8;
    /// Key within the kind, given by the layer above.
    fn id(&self) -> u64;
    /// Opaque payload.
    fn data(&self) -> &[u8];
}

impl FrameEntry for Entry<'_> {
    #[inline]
    fn kind(&self) -> u8 {
        self.kind
    }
    #[inline]
    fn id(&self) -> u64 {
        self.id
    }
    #[inline]
    fn data(&self) -> &[u8] {
        self.data
    }
}

/// One entry handed back during replay or compaction.
#[derive(Debug, Clone, Copy)]
pub struct StoredEntry<'a> {
    /// As appended.
    pub kind: u8,
    /// As appended.
    pub id: u64,
    /// As appended.
    pub data: &'a [u8],
    /// Where it lives now.
    pub location: Location,
}

/// Storage options (the storage-relevant subset of [`crate::Options`]).
#[derive(Clone)]
pub struct StoreOptions {
    /// Seal the active segment once it passes this many bytes.
    pub segment_size: u64,
    /// Default durability for appends.
    pub durability: Durability,
    /// Quarantine damaged segments instead of failing with `Corruption`.
    pub repair: bool,
    /// Create the directory if missing.
    pub create: bool,
    /// The I/O seam (real files by default; a fault-injecting double in tests).
    pub io: Arc<dyn io::Io>,
}

/// What recovery did on open.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RecoveryReport {
    /// Whether a hint file was used.
    pub used_hint: bool,
    /// The length of the hint file read (0: none, or one that did not decode or did not match
    /// the segments), used or not: the zeros the first hint written after the open prefills
    /// its temp file with (`Store::hint_writer`).
    pub hint_bytes: u64,
    /// Frames replayed from the log (after the hint, or all of them).
    pub frames_replayed: u64,
    /// Torn-tail bytes truncated from the active segment, with its file name.
    pub truncated: Option<(String, u64)>,
    /// A tail of zeros cut from the active segment instead (no frame begins with zeros), with
    /// its file name: what a store that preallocates (`Options::preallocate_bytes`) leaves
    /// after a crash, or a write lost before its bytes landed.
    pub zeros_cut: Option<(String, u64)>,
    /// Segments quarantined by repair (new file names), with the bytes lost in each.
    pub quarantined: Vec<(String, u64)>,
    /// Wall time of the recovery, in microseconds.
    pub micros: u64,
}

/// Counters of the storage engine.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StorageStats {
    /// Frames appended since open.
    pub frames_appended: u64,
    /// Bytes appended since open (framing included).
    pub bytes_appended: u64,
    /// fdatasync calls since open.
    pub syncs: u64,
    /// Number of segment files.
    pub segments: u64,
    /// Total bytes of all segment files.
    pub disk_bytes: u64,
    /// Compactions completed since open.
    pub compactions: u64,
    /// Bytes those compactions wrote to new segments.
    pub compacted_bytes: u64,
    /// What the last open's recovery did.
    pub recovery: RecoveryReport,
}

/// What the layer above does with recovered data. Storage calls `load_snapshot` at most once,
/// first (with the newest valid hint's payload), then `apply` for each frame after it in
/// increasing sequence order. If `load_snapshot` fails, storage calls `reset` and replays the
/// whole log instead (the hint is ignored, never trusted half-way).
pub trait Replay {
    /// Load the index snapshot stored by [`Store::write_hint`].
    fn load_snapshot(&mut self, payload: &[u8]) -> Result<()>;
    /// Forget everything loaded so far (before a full replay).
    fn reset(&mut self);
    /// One frame, in sequence order.
    fn apply(&mut self, seq: u64, entries: &[StoredEntry<'_>]) -> Result<()>;
    /// The replay applied the last frame it replays of `segment`, a sealed segment (not the
    /// newest log segment, which stays active): no entry of it follows.
    fn sealed(&mut self, segment: u32) -> Result<()> {
        let _ = segment;
        Ok(())
    }
}

/// What compaction does with one live-or-not entry (see [`Store::prepare_compaction_of`]).
#[derive(Debug)]
pub enum CopyAs {
    /// Superseded or deleted: not copied.
    Drop,
    /// Give the whole compaction up: nothing more is copied, the outputs written so far are
    /// removed, and [`Store::prepare_compaction_of`] returns `None` (the store is as before
    /// it began). For a store that is closing (`Db::close` does not wait for a compaction
    /// it does not need).
    Abandon,
    /// Copied as it is.
    Keep,
    /// Copied as it is, its move listed by place only ([`Relocations::by_place`]: old place
    /// -> new place, without kind and id, 12 bytes instead of 40): for entries there are many
    /// of, which the layer above finds by where they are (a profile's history steps). Written
    /// to segments of their own (segment kind 3), apart from the rest of their frame: an
    /// entry kept by place must be kept by place or dropped by every later compaction (one
    /// that answers otherwise for an entry of such a segment fails).
    KeepByPlace,
    /// Copied as another entry (same id, same frame seq): e.g. a chain of records folded into
    /// one by the layer above.
    Replace {
        /// The new entry's kind.
        kind: u8,
        /// The new entry's data.
        data: Vec<u8>,
    },
    /// Not copied as an entry of its own: `data` is appended to one packed entry of `kind`
    /// (id 0) that gathers the data of many small entries, e.g. a block of messageId notes
    /// instead of one 21-byte entry (and often a frame) each. The packed entry is written in
    /// the frame of the last entry it gathers (that frame's seq), so frames keep their seqs
    /// and their order; it is closed at the end of the frame that takes it to
    /// [`PACK_BYTES`] or more (so it may exceed that by one frame's data). Empty `data` is
    /// the same as `Drop`. One compaction packs one kind (a second kind is an error).
    /// Compaction's relocations do not list packed entries: the layer above must find them
    /// by content, not by location.
    Pack {
        /// The packed entry's kind.
        kind: u8,
        /// Bytes appended to the packed entry's data.
        data: PackData,
    },
}

/// The bytes one entry adds to a packed entry ([`CopyAs::Pack`]): inline up to one messageId
/// hash, so that the million `DEDUPE` entries a compaction may read allocate nothing each.
pub type PackData = smallvec::SmallVec<[u8; 16]>;

/// The data past which a packed entry ([`CopyAs::Pack`]) is closed (at the end of the frame
/// that takes it there) and compaction starts another.
pub const PACK_BYTES: usize = 64 << 10;

/// Result of an append: the frame's sequence number and each entry's location, in order.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Sequence number of the frame (strictly increasing).
    pub seq: u64,
    /// Location of each appended entry, in the order given.
    pub locations: Locations,
}

/// The locations of a frame's entries: inline for the few entries of a call's frame (no
/// allocation per append).
pub type Locations = smallvec::SmallVec<[Location; 4]>;

/// A compaction prepared (new files written and synced) but not yet switched in.
pub struct PreparedCompaction {
    inner: compaction::Prepared,
}

/// A compaction decided (durable: a crash completes it on open) but not yet switched in
/// memory ([`Store::decide_compaction`]).
pub struct DecidedCompaction {
    inner: compaction::Decided,
}

impl PreparedCompaction {
    /// Each copied entry's `(kind, id, old location, new location)`, sorted by kind and id
    /// (what [`Store::commit_compaction`] will return as [`Relocations::moved`]).
    pub fn moved(&self) -> &Moves {
        self.inner.moved()
    }

    /// Where the entries kept by place went (what [`Store::commit_compaction`] will return
    /// as [`Relocations::by_place`]).
    pub fn by_place(&self) -> &Places {
        self.inner.by_place()
    }
}

/// The switch of a prepared compaction: each live entry's old and new location.
#[derive(Debug, Default)]
pub struct Relocations {
    /// `(kind, id, old, new)` for every entry copied but those kept by place, sorted by
    /// kind and id (the order in which the layer above's tables are indexed).
    pub moved: Moves,
    /// Where each entry kept by place ([`CopyAs::KeepByPlace`]) went.
    pub by_place: Places,
    /// Bytes reclaimed.
    pub reclaimed_bytes: u64,
}

/// The position a hint covers: taken with [`Store::hint_position`] while the layer above blocks
/// appends, so that the snapshot it writes matches exactly the frames up to it.
#[derive(Debug, Clone)]
pub struct HintPosition {
    inner: hint::Position,
}

/// The storage engine. `Send + Sync`; appends are serialised internally.
pub struct Store {
    inner: log::Log,
    /// Serialises hint writes. They share the name `HINT.tmp`: two at once (`Db::checkpoint`
    /// beside the hint a compaction writes) removed or renamed each other's temp file, and the
    /// loser's rename failed with ENOENT and poisoned the store (found by
    /// tests/readers_vs_compaction.rs).
    hint_lock: parking_lot::Mutex<()>,
    /// The length of the last hint file this process wrote: the zeros the next one's temp
    /// file is prefilled with ([`Store::hint_writer`]).
    last_hint_len: std::sync::atomic::AtomicU64,
}

/// The next hint, its temp file made and prefilled ([`Store::hint_writer`]); hints are
/// written one at a time while it lives.
pub struct HintWriter<'a> {
    store: &'a Store,
    prepared: hint::Prepared,
    _one_at_a_time: parking_lot::MutexGuard<'a, ()>,
}

impl HintWriter<'_> {
    /// Write the hint for `position` (atomically: the temp file, the log synced up to the
    /// position, fdatasync, rename, directory fsync): `fill` as [`Store::write_hint_with`]'s.
    pub fn write(self, position: &HintPosition, fill: &mut hint::Fill<'_>) -> Result<()> {
        let HintWriter {
            store, prepared, ..
        } = self;
        let shared = &store.inner.shared;
        let len = shared.guard(prepared.write(
            shared.io.as_ref(),
            &shared.dir,
            &position.inner,
            fill,
            &mut || shared.wait_durable(position.inner.seq, Durability::SyncEach),
        ))?;
        store
            .last_hint_len
            .store(len, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions::new()
    }
}

impl StoreOptions {
    /// 64 MiB segments, group commit, no repair, create the directory, real files.
    pub fn new() -> StoreOptions {
        StoreOptions {
            segment_size: 64 << 20,
            durability: Durability::default(),
            repair: false,
            create: true,
            io: Arc::new(io::RealIo),
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("segment_size", &self.segment_size)
            .field("durability", &self.durability)
            .field("repair", &self.repair)
            .field("create", &self.create)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the store at `dir`: take the directory lock, recover, and feed the
    /// recovered state to `replay`.
    pub fn open(dir: &Path, options: StoreOptions, replay: &mut dyn Replay) -> Result<Store> {
        let shared = recovery::open(dir, &options, replay)?;
        let hint_bytes = shared.recovery.hint_bytes;
        Ok(Store {
            inner: log::Log::start(shared),
            hint_lock: parking_lot::Mutex::new(()),
            last_hint_len: std::sync::atomic::AtomicU64::new(hint_bytes),
        })
    }

    /// Append one frame holding `entries`, atomically. Durability is NOT awaited here: call
    /// [`Store::wait_durable`] with the returned `seq` (outside any lock of the caller).
    pub fn append<E: FrameEntry>(&self, entries: &[E]) -> Result<Appended> {
        self.inner.shared.append(entries)
    }

    /// Return once frame `seq` is durable by `durability` (`Buffered` returns at once).
    pub fn wait_durable(&self, seq: u64, durability: Durability) -> Result<()> {
        self.inner.shared.wait_durable(seq, durability)
    }

    /// Keep `bytes` of zeros written ahead of the active segment's data
    /// (`Options::preallocate_bytes`; 0: none).
    pub fn set_preallocate(&self, bytes: u64) -> Result<()> {
        let bytes = usize::try_from(bytes).map_err(|_| Error::Options {
            name: "preallocate_bytes",
            reason: "must fit in memory's address space".into(),
        })?;
        self.inner.shared.set_preallocate(bytes)
    }

    /// Cut the zeros written ahead of the active segment's data off its file
    /// (`Options::preallocate_bytes`): what a clean close does after its sync.
    pub fn trim_preallocated(&self) -> Result<()> {
        self.inner.shared.trim_active()
    }

    /// Make everything appended so far durable.
    pub fn sync(&self) -> Result<()> {
        self.inner.shared.sync_all()
    }

    /// Call `f` with the data at `location` (read with `pread` into a reused per-thread
    /// buffer, or borrowed from the active segment's unwritten tail). For the active segment
    /// `f` runs under the append lock: keep it short and do not call back into the store from
    /// it.
    pub fn read<R>(&self, location: Location, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.inner.shared.read(location, f)
    }

    /// Append the bytes at a location to `out` (left as it was on an error).
    pub fn read_appending(&self, location: Location, out: &mut Vec<u8>) -> Result<()> {
        self.inner.shared.read_appending(location, out)
    }

    /// The position up to which a snapshot taken now is complete.
    pub fn hint_position(&self) -> Result<HintPosition> {
        let shared = &self.inner.shared;
        shared.check_poison()?;
        let st = shared.state.lock();
        let mut segments: Vec<u32> = shared.sealed.read().keys().copied().collect();
        segments.push(st.id);
        Ok(HintPosition {
            inner: hint::Position {
                seq: st.next_seq - 1,
                active: st.id,
                offset: st.len() as u32,
                segments,
            },
        })
    }

    /// Write the hint file (atomically: temp file, fsync, rename, directory fsync). The log is
    /// first synced up to the position, so a hint never covers frames that are not on disk.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // the storage suites' entry point
    pub fn write_hint(&self, position: &HintPosition, payload: &[u8]) -> Result<()> {
        self.write_hint_with(position, &mut |sink| {
            sink(payload)?;
            let mut crc = crc32fast::Hasher::new();
            crc.update(payload);
            Ok(crc)
        })
    }

    /// [`Store::write_hint`] with the payload streamed: `fill` hands its bytes, in order, to
    /// the sink it is given, which writes them to the temp file, and returns their CRC
    /// ([`hint::Fill`]); the log is synced up to the position after `fill` returns, before the
    /// hint replaces the old one (so a caller that holds a lock for `fill` need not hold it
    /// through the sync).
    pub fn write_hint_with(
        &self,
        position: &HintPosition,
        fill: &mut hint::Fill<'_>,
    ) -> Result<()> {
        self.hint_writer()?.write(position, fill)
    }

    /// The next hint's writer: hints are written one at a time from here, and its temp file
    /// is made now, filled with as many zeros as the last hint this process wrote took, so that
    /// [`HintWriter::write`] writes over pages the page cache holds (docs/performance.md,
    /// "Engine round 54"). A caller that holds its writers while the payload is written
    /// (`Db`'s snapshot) takes this before them.
    pub fn hint_writer(&self) -> Result<HintWriter<'_>> {
        let shared = &self.inner.shared;
        let one_at_a_time = self.hint_lock.lock();
        shared.check_poison()?;
        let prefill = self
            .last_hint_len
            .load(std::sync::atomic::Ordering::Relaxed);
        let prepared = shared.guard(hint::prepare(shared.io.as_ref(), &shared.dir, prefill))?;
        Ok(HintWriter {
            store: self,
            prepared,
            _one_at_a_time: one_at_a_time,
        })
    }

    /// Seal the active segment and rewrite the live entries of all sealed segments into new
    /// files (synced, not yet visible). `is_live` is called for every entry; tombstones and
    /// superseded entries are dropped by returning false. Appends and reads continue meanwhile.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // the storage suites' entry point
    pub fn prepare_compaction(
        &self,
        is_live: &mut dyn FnMut(&StoredEntry<'_>) -> bool,
    ) -> Result<Option<PreparedCompaction>> {
        let inputs = self.begin_compaction(true)?;
        self.prepare_compaction_of(&inputs, 0, &mut |e| {
            Ok(if is_live(e) {
                CopyAs::Keep
            } else {
                CopyAs::Drop
            })
        })
    }

    /// First half of [`Store::prepare_compaction`] for a caller that must know the inputs
    /// before any entry is copied: seal the active segment and return the ids of every sealed
    /// segment (`steps`: the segments of history steps too, else not them; see
    /// [`Store::step_bytes`]). Appends after this call go to segments outside the list. The
    /// layer above calls it while it blocks its own writers, so that it knows exactly which
    /// records the compaction will rewrite (profiledb: no new delta record may point into
    /// them).
    pub fn begin_compaction(&self, steps: bool) -> Result<Vec<u32>> {
        compaction::begin(&self.inner.shared, steps)
    }

    /// Create the log's next segment now, so that the seal of the next
    /// [`Store::begin_compaction`] (which the layer above runs while it blocks its writers)
    /// only writes and syncs its header: the file's creation and the directory's sync
    /// (1-20 ms on W1's machine) happen here, while writers go on. Nothing is created when
    /// the active segment holds no frame (no seal follows). Call it only right before
    /// `begin_compaction`: the segment file it leaves until then has no valid header, which
    /// is safe only while it is the newest (docs/recovery.md).
    pub fn create_next_segment(&self) -> Result<()> {
        self.inner.shared.create_spare()
    }

    /// First half of a compaction of segments of history steps alone: those among
    /// `candidates` (the others, and the log, are left as they are). Then
    /// [`Store::prepare_compaction_of`] and [`Store::commit_compaction`] as for any.
    pub fn begin_compaction_of_steps(&self, candidates: &[u32]) -> Vec<u32> {
        compaction::begin_steps_only(&self.inner.shared, candidates)
    }

    /// Whether segment `id` is a segment of history steps (`KIND_STEPS`), if it is sealed.
    pub fn sealed_is_steps(&self, id: u32) -> Option<bool> {
        self.inner
            .shared
            .sealed
            .read()
            .get(&id)
            .map(|s| s.is_steps())
    }

    /// Bytes in the sealed segments of history steps: the frames a compaction found holding
    /// only entries kept by place ([`CopyAs::KeepByPlace`]), which it wrote to segments of
    /// their own so that the next compactions need not copy them again.
    pub fn step_bytes(&self) -> u64 {
        self.inner
            .shared
            .sealed
            .read()
            .values()
            .filter(|s| s.is_steps())
            .map(|s| s.len())
            .sum()
    }

    /// Second half: copy the entries of the sealed segments `inputs` (from
    /// [`Store::begin_compaction`]) that `copy_as` keeps or replaces into new files (synced,
    /// not yet visible). An error from `copy_as` ends the compaction with that error;
    /// [`CopyAs::Abandon`] ends it with `None`.
    /// `moves` is the layer above's guess of how many entries will be copied and listed
    /// (the length of [`Relocations::moved`]): the list is sized once instead of growing by
    /// doubling, which would hold two copies of it at the moment it grows. (The moves by
    /// place are a list per input segment: [`Places`].)
    pub fn prepare_compaction_of(
        &self,
        inputs: &[u32],
        moves: usize,
        copy_as: &mut dyn FnMut(&StoredEntry<'_>) -> Result<CopyAs>,
    ) -> Result<Option<PreparedCompaction>> {
        Ok(
            compaction::prepare(&self.inner.shared, inputs, moves, copy_as)?
                .map(|inner| PreparedCompaction { inner }),
        )
    }

    /// Whether segment `id` is part of the store (sealed or the active one).
    pub fn has_segment(&self, id: u32) -> bool {
        let shared = &self.inner.shared;
        // One lock at a time (`rotate` takes the state, then the sealed map).
        let sealed = shared.sealed.read().contains_key(&id);
        sealed || shared.state.lock().id == id
    }

    /// The path of segment `id` (for error messages of the layers above).
    pub fn segment_path(&self, id: u32) -> std::path::PathBuf {
        self.inner.shared.dir.join(segment::seg_name(id))
    }

    /// Switch a prepared compaction in (crash-safe) and unlink the old segments. The caller
    /// must block its own readers and writers while it applies the returned relocations.
    /// (The three steps of [`Store::decide_compaction`], [`Store::switch_compaction`] and
    /// [`Store::unlink_compacted`] in one, for a caller that blocks them throughout.)
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // the storage suites' entry point
    pub fn commit_compaction(&self, prepared: PreparedCompaction) -> Result<Relocations> {
        let decided = self.decide_compaction(prepared)?;
        let (relocations, inputs) = self.switch_compaction(decided);
        self.unlink_compacted(&inputs)?;
        Ok(relocations)
    }

    /// Decide a prepared compaction: its manifest made durable and its outputs renamed and
    /// opened (from here a crash completes it on open), while the store goes on serving the
    /// inputs. Readers and writers need not be blocked for it; the caller must make sure
    /// nothing it writes from here on refers to a place in the inputs.
    pub fn decide_compaction(&self, prepared: PreparedCompaction) -> Result<DecidedCompaction> {
        Ok(DecidedCompaction {
            inner: compaction::decide(&self.inner.shared, prepared.inner)?,
        })
    }

    /// Switch a decided compaction in, in memory (no I/O): reads of the inputs' places fail
    /// from here, so the caller blocks its readers and writers while it applies the returned
    /// relocations. Returns them and the inputs, for [`Store::unlink_compacted`].
    pub fn switch_compaction(&self, decided: DecidedCompaction) -> (Relocations, Vec<u32>) {
        compaction::switch_in(&self.inner.shared, decided.inner)
    }

    /// Unlink a switched compaction's inputs and its manifest (no lock of the caller needed).
    pub fn unlink_compacted(&self, inputs: &[u32]) -> Result<()> {
        compaction::unlink_inputs(&self.inner.shared, inputs)
    }

    /// Bytes in sealed segments (what compaction could reclaim at most).
    pub fn sealed_bytes(&self) -> u64 {
        self.inner
            .shared
            .sealed
            .read()
            .values()
            .map(|s| s.len())
            .sum()
    }

    /// Counters.
    pub fn stats(&self) -> StorageStats {
        let shared = &self.inner.shared;
        let active = shared.state.lock().len() as u64;
        let sealed = shared.sealed.read();
        let c = &shared.counters;
        StorageStats {
            frames_appended: c.frames.load(Ordering::Relaxed),
            bytes_appended: c.bytes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            segments: sealed.len() as u64 + 1,
            disk_bytes: active + sealed.values().map(|s| s.len()).sum::<u64>(),
            compactions: c.compactions.load(Ordering::Relaxed),
            compacted_bytes: c.compacted_bytes.load(Ordering::Relaxed),
            recovery: shared.recovery.clone(),
        }
    }

    /// Verify every frame's CRC in every segment; returns `(file, offset, reason)` problems.
    pub fn check(&self) -> Result<Vec<(String, u64, String)>> {
        let shared = &self.inner.shared;
        let mut problems = Vec::new();
        let sealed: Vec<_> = shared.sealed.read().values().cloned().collect();
        let mut check_one = |name: String, bytes: &[u8]| {
            if let Err(reason) = record::SegmentHeader::decode(bytes) {
                problems.push((name, 0, reason));
                return;
            }
            if let (_, Some(d)) = record::scan(bytes, record::HEADER_LEN) {
                problems.push((name, d.offset as u64, d.reason));
            }
        };
        for s in &sealed {
            check_one(segment::seg_name(s.id), &s.bytes);
        }
        {
            let st = shared.state.lock();
            check_one(segment::seg_name(st.id), &st.whole()?);
        }
        Ok(problems)
    }

    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
    /// Default durability of this store.
    pub fn durability(&self) -> Durability {
        self.inner.shared.durability
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Write or remove files the layer above keeps beside the segments (history table files)
    /// with `f`, given the store's I/O seam and directory, as the store writes its own: not
    /// on a poisoned store, and a failure poisons it (no write or fsync is retried, whatever
    /// the file).
    pub fn side_files<T>(&self, f: impl FnOnce(&Arc<dyn io::Io>, &Path) -> Result<T>) -> Result<T> {
        let shared = &self.inner.shared;
        shared.check_poison()?;
        shared.guard(f(&shared.io, &shared.dir))
    }

    /// The id of the segment appended to (every other segment of the store is sealed).
    pub fn active_segment(&self) -> u32 {
        self.inner.shared.state.lock().id
    }

    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
    /// Give up the store: flush buffered bytes, sync, release the lock.
    pub fn close(mut self) -> Result<()> {
        self.inner.close()
    }
}

#[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
/// Encode one frame (as it would sit in a segment) holding `entries` with sequence number
/// `seq`, appended to `out`. For tools, fuzzing and benchmarks; the store encodes its own.
pub fn encode_frame(out: &mut Vec<u8>, seq: u64, entries: &[Entry<'_>]) -> Result<()> {
    if record::frame_len(entries).is_none() {
        return Err(crate::error::Error::Options {
            name: "entries",
            reason: format!("a frame may hold at most {} bytes", record::MAX_BODY),
        });
    }
    record::encode_frame(out, seq, entries, |_, _| {});
    Ok(())
}

#[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
/// Decode and CRC-check the frame at the start of `bytes`, calling `f(kind, id, data)` for each
/// entry; returns `(seq, frame length)`. Never panics; the error says what is wrong. For tools,
/// fuzzing and benchmarks.
pub fn decode_frame(
    bytes: &[u8],
    mut f: impl FnMut(u8, u64, &[u8]),
) -> std::result::Result<(u64, usize), String> {
    let frame = record::decode_frame(bytes, 0)?;
    for (kind, id, _, data) in frame.entries() {
        f(kind, id, data);
    }
    Ok((frame.seq, frame.total))
}

mod anon;
mod compaction;
mod hint;
pub mod io;
mod lock;
mod log;
#[allow(unsafe_code)]
mod mmap;
mod places;
mod record;
mod recovery;
mod segment;

pub use places::{Moves, Places, Walk};
pub use recovery::check_store_dir;
pub(crate) use segment::{parse_steps_name, steps_name};
