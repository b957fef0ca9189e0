//! The running log: appends into the active segment, rotation, group commit and poisoning.
//!
//! Locks, always taken in this order and never held across an fdatasync of the active
//! segment: `compaction` -> `state` (the append lock) -> `spare` -> `sealed` -> `sync`.
//! The one exception is rotation, which fdatasyncs the segment it seals under the append lock
//! (once per `segment_size` bytes), so that a sealed log segment is always whole on disk before
//! its successor exists: torn tails can then only be in the newest log segment.
//!
//! Write-behind (group commit only): the appender hands each [`FLUSH_AT`] bytes of the active
//! segment to the group-commit thread, which writes them outside the append lock
//! ([`Shared::write_behind`]), so that the `write()` (~7 % of a writer's time in `compare`,
//! docs/performance.md) runs on another core. The file stays a prefix of the segment: the
//! bytes after a handed-over block are written only once it is ([`Shared::settle`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::io::{Io, IoFile, write_all_at};
use super::record::{self, HEADER_LEN, KIND_LOG, SegmentHeader};
use super::segment::{Sealed, SealedRef, seg_name};
use super::{Appended, Location, RecoveryReport};
use crate::error::{Error, Result};
use crate::options::Durability;

/// Unflushed bytes of the active segment that trigger a `write()` (or, with group commit, a
/// hand-over to the group-commit thread's write-behind).
pub(crate) const FLUSH_AT: usize = 64 << 10;

/// Unflushed bytes that make the appender write them itself even with write-behind on (the
/// group-commit thread is behind): the memory the tail may take.
const MAX_BEHIND: usize = 16 * FLUSH_AT;

/// Bytes of the active segment handed to the group-commit thread to write outside the append
/// lock ([`Shared::write_behind`]).
#[derive(Default)]
pub(crate) struct Behind {
    /// The bytes: they follow the file's first `flushed` bytes, and `buf` follows them.
    bytes: Option<Arc<Vec<u8>>>,
    /// The group-commit thread is writing them outside the lock: until it ends (and wakes
    /// [`Shared::written`]) they, `flushed` and the file stay as they are.
    claimed: bool,
    /// The buffer last written, emptied: the next `buf`.
    spare: Vec<u8>,
}

/// The active segment (guarded by the append lock).
pub(crate) struct State {
    pub id: u32,
    pub path: PathBuf,
    pub file: Arc<dyn IoFile>,
    /// The active segment's bytes not yet written to the file (they follow its first
    /// `flushed` bytes). Only this tail is kept in memory: reads of the written part go to the
    /// file (`pread`, served by the page cache), so the process does not hold a second copy
    /// of the whole segment (up to `segment_size`, 64 MiB by default) in anonymous memory.
    pub buf: Vec<u8>,
    /// Bytes of the file already written (the header included).
    pub flushed: usize,
    /// Bytes handed over for write-behind (between `flushed` and `buf`).
    pub behind: Behind,
    /// Next sequence number to assign.
    pub next_seq: u64,
    /// Bytes of zeros kept written ahead of the data ([`State::preallocate`]): an `fdatasync`
    /// of data written over them has no file size or block allocation to commit, only the
    /// data (docs/format.md, "Preallocated tail"). 0: off.
    pub preallocate: usize,
    /// Where the zeros written ahead end (the file's length while it is longer than
    /// `flushed`).
    pub zeroed_to: usize,
    /// No zeros past this offset (the segment size: rotation cuts what lies beyond).
    pub zero_limit: usize,
}

impl State {
    /// Length of the active segment: written bytes plus the unwritten tail.
    pub fn len(&self) -> usize {
        self.buffered_from() + self.buf.len()
    }

    /// Where `buf` starts: after the written bytes and those handed over for write-behind.
    fn buffered_from(&self) -> usize {
        self.flushed + self.behind.bytes.as_ref().map_or(0, |b| b.len())
    }

    /// Call `f` with the `loc.len` bytes at `loc.offset` of the active segment: from the
    /// unwritten tail, or read back from the file.
    fn read<R>(&self, loc: Location, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let start = loc.offset as usize;
        let end = start.saturating_add(loc.len as usize);
        if end > self.len() {
            return Err(outside(loc, self.len(), &self.path));
        }
        let tail = self.buffered_from();
        if start >= tail {
            return Ok(f(&self.buf[start - tail..end - tail]));
        }
        if let Some(b) = &self.behind.bytes
            && start >= self.flushed
            && end <= tail
        {
            return Ok(f(&b[start - self.flushed..end - self.flushed]));
        }
        with_read_buf(|buf| {
            buf.clear();
            self.read_appending(loc, buf)?;
            Ok(f(buf))
        })
    }

    /// Append the `loc.len` bytes at `loc.offset` of the active segment to `out` (as
    /// [`State::read`] reads them).
    fn read_appending(&self, loc: Location, out: &mut Vec<u8>) -> Result<()> {
        let start = loc.offset as usize;
        let end = start.saturating_add(loc.len as usize);
        if end > self.len() {
            return Err(outside(loc, self.len(), &self.path));
        }
        let tail = self.buffered_from();
        if start >= tail {
            out.extend_from_slice(&self.buf[start - tail..end - tail]);
            return Ok(());
        }
        if start < self.flushed {
            let at = out.len();
            let on_file = end.min(self.flushed) - start;
            out.resize(at + on_file, 0);
            if let Err(e) =
                super::io::read_exact_at(self.file.as_ref(), start as u64, &mut out[at..])
            {
                out.truncate(at);
                return Err(Error::io("read", &self.path, e));
            }
        }
        if let Some(b) = &self.behind.bytes {
            let (from, to) = (start.max(self.flushed), end.min(tail));
            if from < to {
                out.extend_from_slice(&b[from - self.flushed..to - self.flushed]);
            }
        }
        if end > tail {
            out.extend_from_slice(&self.buf[start.max(tail) - tail..end - tail]);
        }
        Ok(())
    }

    /// The whole active segment (for verification).
    pub fn whole(&self) -> Result<Vec<u8>> {
        let mut all = vec![0u8; self.flushed];
        super::io::read_exact_at(self.file.as_ref(), 0, &mut all)
            .map_err(|e| Error::io("read", &self.path, e))?;
        if let Some(b) = &self.behind.bytes {
            all.extend_from_slice(b);
        }
        all.extend_from_slice(&self.buf);
        Ok(all)
    }
}

/// The segment a read is served from ([`Shared::read_in`]).
enum Source<'a> {
    Sealed(&'a Sealed),
    Active(&'a State),
}

/// Run `f` with this thread's reusable read buffer (a fresh one if it is in use further up
/// the stack). Keeps reads of records through `pread` free of a per-read allocation.
pub(crate) fn with_read_buf<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    thread_local! {
        static BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut buf = BUF.with(|b| b.take());
    let r = f(&mut buf);
    // A huge record's buffer is not kept.
    if buf.capacity() <= 1 << 20 {
        buf.clear();
        BUF.with(|b| b.set(buf));
    }
    r
}

/// Who syncs the log and who waits for which sync ([`Shared::wait`]).
///
/// Waiters sleep on one of two condition variables: those the sync in flight covers on
/// `synced[round % 2]`, the others on `synced[(round + 1) % 2]`, so that a finished sync wakes
/// only the callers it made durable, and one caller to lead the next sync (which covers every
/// caller asleep then). With one condition variable every sync woke every waiter, and those
/// it did not cover went back to sleep: about one switch more for most durable calls with
/// many callers (docs/performance.md, round 42).
#[derive(Default)]
pub(crate) struct SyncState {
    /// Every frame with seq <= this is on stable storage.
    pub durable: u64,
    /// A leader is syncing.
    pub syncing: bool,
    /// Number of the sync in flight, or of the last one.
    round: u64,
    /// The last seq the sync in flight makes durable, once its leader has read it.
    covers: Option<u64>,
    /// The highest seq of the waiters asleep for a later sync than the one in flight (0:
    /// none since it started).
    later: u64,
    /// A waiter was woken to lead the next sync: the next caller to find no sync in flight
    /// leads it (or, covered already, wakes another waiter for it).
    lead_wanted: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub compactions: AtomicU64,
    pub compacted_bytes: AtomicU64,
}

/// Everything the store's threads share.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub io: Arc<dyn Io>,
    pub segment_size: u64,
    pub durability: Durability,
    pub state: Mutex<State>,
    pub sealed: RwLock<BTreeMap<u32, SealedRef>>,
    pub sync: Mutex<SyncState>,
    /// The two condition variables of [`SyncState`]'s waiters.
    synced: [Condvar; 2],
    /// Mirror of `SyncState::durable` readable without the lock.
    durable_hint: AtomicU64,
    /// The group-commit thread was asked to sync early.
    kicked: AtomicBool,
    /// Write-behind is on: the group-commit thread runs ([`Log::start`]) and writes the blocks
    /// the appender hands over.
    behind: AtomicBool,
    /// The group-commit thread was handed a block to write.
    write_wanted: AtomicBool,
    /// Woken when the group-commit thread ends a write-behind ([`Shared::settle`] waits).
    written: Condvar,
    pub next_segment: AtomicU32,
    /// The next log segment, created ahead of a compaction's seal ([`Shared::create_spare`]).
    spare: Mutex<Option<Spare>>,
    pub counters: Counters,
    pub recovery: RecoveryReport,
    pub compaction: Mutex<()>,
    poisoned: AtomicBool,
    poison_cause: Mutex<Option<String>>,
    shutdown: Mutex<bool>,
    shutdown_cv: Condvar,
    /// The directory lock; released when the last handle goes.
    pub _lock: std::fs::File,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        io: Arc<dyn Io>,
        segment_size: u64,
        durability: Durability,
        state: State,
        sealed: BTreeMap<u32, SealedRef>,
        next_segment: u32,
        recovery: RecoveryReport,
        lock: std::fs::File,
    ) -> Shared {
        let durable = state.next_seq.saturating_sub(1);
        Shared {
            dir,
            io,
            segment_size,
            durability,
            state: Mutex::new(state),
            sealed: RwLock::new(sealed),
            sync: Mutex::new(SyncState {
                durable,
                ..SyncState::default()
            }),
            synced: [Condvar::new(), Condvar::new()],
            durable_hint: AtomicU64::new(durable),
            kicked: AtomicBool::new(false),
            behind: AtomicBool::new(false),
            write_wanted: AtomicBool::new(false),
            written: Condvar::new(),
            next_segment: AtomicU32::new(next_segment),
            spare: Mutex::new(None),
            counters: Counters::default(),
            recovery,
            compaction: Mutex::new(()),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(None),
            shutdown: Mutex::new(false),
            shutdown_cv: Condvar::new(),
            _lock: lock,
        }
    }

    /// `Err(Poisoned)` once any write or fsync failed. Inlined (an append asks twice): the
    /// error is built out of line.
    #[inline]
    pub fn check_poison(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poisoned_error());
        }
        Ok(())
    }

    /// The `Poisoned` error, with the cause noted.
    #[cold]
    #[inline(never)]
    fn poisoned_error(&self) -> Error {
        let cause = self
            .poison_cause
            .lock()
            .clone()
            .unwrap_or_else(|| "unknown".into());
        Error::Poisoned { cause }
    }

    /// Poison the store with `err` as the cause; returns the `Poisoned` error for this call.
    pub fn poison(&self, err: Error) -> Error {
        let mut cause = self.poison_cause.lock();
        if cause.is_none() {
            *cause = Some(err.to_string());
        }
        self.poisoned.store(true, Ordering::Release);
        let c = cause.clone().unwrap_or_default();
        drop(cause);
        // Wake every waiter so it sees the poison.
        let _s = self.sync.lock();
        for cv in &self.synced {
            cv.notify_all();
        }
        Error::Poisoned { cause: c }
    }

    /// Run an I/O step; on failure poison the store.
    pub fn guard<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| self.poison(e))
    }

    pub fn append<E: super::FrameEntry>(&self, entries: &[E]) -> Result<Appended> {
        self.check_poison()?;
        let Some(flen) = record::frame_len(entries) else {
            return Err(Error::Options {
                name: "entries",
                reason: format!(
                    "a frame may hold at most {} bytes (entries too large)",
                    record::MAX_BODY
                ),
            });
        };
        let mut st = self.state.lock();
        self.check_poison()?;
        if st.len() > HEADER_LEN && st.len() + flen > u32::MAX as usize {
            self.guard(self.rotate(&mut st))?;
        }
        // u64::MAX is never given out: it marks the sequence space as used up, which only a
        // damaged log can do (open saturates at it; the fuzz target `open_dir` found that a
        // frame or header with seq 2^64-1 made the `+ 1` here and in recovery overflow, and in
        // release wrap to 0, so later frames would go backwards).
        if st.next_seq == u64::MAX {
            return Err(Error::Corruption {
                file: st.path.clone(),
                offset: 0,
                reason: "sequence numbers are used up (the log holds sequence number \
                         2^64-1 or a header with that floor): no frame can follow"
                    .into(),
            });
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let seg = st.id;
        let base = st.buffered_from();
        let mut locations = super::Locations::new();
        record::encode_frame(&mut st.buf, seq, entries, |offset, len| {
            locations.push(Location {
                segment: seg,
                offset: (base + offset) as u32,
                len: len as u32,
            })
        });
        self.counters.frames.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(flen as u64, Ordering::Relaxed);
        let mut wake_writer = false;
        if st.buf.len() >= FLUSH_AT {
            if self.behind.load(Ordering::Acquire) && st.behind.bytes.is_none() {
                // Hand the block to the group-commit thread.
                hand_over(&mut st);
                wake_writer = !self.write_wanted.swap(true, Ordering::AcqRel);
            } else if st.buf.len() >= MAX_BEHIND || !self.behind.load(Ordering::Acquire) {
                let r = self.settle(&mut st).and_then(|()| flush(&mut st));
                self.guard(r)?;
            }
        }
        if st.len() as u64 >= self.segment_size {
            self.guard(self.rotate(&mut st))?;
        }
        drop(st);
        if wake_writer {
            let _g = self.shutdown.lock();
            self.shutdown_cv.notify_all();
        }
        if let Durability::GroupCommit { max_batch, .. } = self.durability
            && seq.saturating_sub(self.durable_hint.load(Ordering::Acquire)) >= max_batch as u64
            && !self.kicked.swap(true, Ordering::AcqRel)
        {
            let _g = self.shutdown.lock();
            self.shutdown_cv.notify_all();
        }
        Ok(Appended { seq, locations })
    }

    /// Seal the active segment and start a new one (under the append lock).
    pub fn rotate(&self, st: &mut parking_lot::MutexGuard<'_, State>) -> Result<()> {
        self.settle(st)?;
        flush_data(st)?;
        trim(st)?;
        st.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &st.path, e))?;
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        let sealed = Sealed::open(self.io.as_ref(), &self.dir, st.id)?;
        let header = |id| SegmentHeader {
            id,
            kind: KIND_LOG,
            seq_floor: st.next_seq,
        };
        let (id, path, file) = match self.spare.lock().take() {
            Some(spare) => {
                let id = spare.id;
                spare.start(header(id))?
            }
            None => {
                let id = self.next_segment.fetch_add(1, Ordering::SeqCst);
                let (path, file, _) = create_segment(self.io.as_ref(), &self.dir, header(id))?;
                (id, path, file)
            }
        };
        self.sealed.write().insert(st.id, Arc::new(sealed));
        st.id = id;
        st.path = path;
        st.file = file;
        // The header is on the file already.
        st.buf = Vec::with_capacity(FLUSH_AT + 4096);
        st.flushed = HEADER_LEN;
        st.zeroed_to = 0;
        Ok(())
    }

    /// Create the log's next segment ahead of the seal a compaction begins with, while the
    /// layer above's writers go on (the seal runs under their lock): the file, its header's
    /// place zeroed and synced, and the directory synced. The seal then only writes the
    /// header and syncs that block (`Spare::start`). Nothing but a seal uses it, and the
    /// caller seals before any other segment id is taken (the next compaction's outputs),
    /// so that the spare, whose header is not valid yet, is the newest segment file, which
    /// an open removes as a creation that was interrupted (docs/recovery.md). Only while the
    /// active segment holds frames (a seal follows); an error poisons the store.
    ///
    /// The spare's slot stays locked from the id's choice until the file is made: a
    /// rotation meanwhile (which takes the slot under the append lock, the order of the two
    /// locks) waits for it and starts it, instead of taking the next id for a segment of its
    /// own, which would leave the spare, header-less, older than a segment (damage, to an
    /// open) and the log's next active segment older than a sealed one.
    pub fn create_spare(&self) -> Result<()> {
        self.check_poison()?;
        if self.state.lock().len() <= HEADER_LEN {
            return Ok(());
        }
        let mut slot = self.spare.lock();
        if slot.is_some() {
            return Ok(());
        }
        let id = self.next_segment.fetch_add(1, Ordering::SeqCst);
        *slot = Some(self.guard(Spare::create(self.io.as_ref(), &self.dir, id))?);
        Ok(())
    }

    /// Remove the spare segment a seal did not use (none should be left, see
    /// [`Shared::create_spare`]): before a compaction takes segment ids for its outputs, so
    /// that no header-less segment file is ever older than another. An error poisons the
    /// store.
    pub fn drop_spare(&self) -> Result<()> {
        let Some(spare) = self.spare.lock().take() else {
            return Ok(());
        };
        drop(spare.file);
        let r = super::io::remove_if_present(self.io.as_ref(), &spare.path)
            .map_err(|e| Error::io("unlink", &spare.path, e))
            .and_then(|()| {
                self.io
                    .sync_dir(&self.dir)
                    .map_err(|e| Error::io("fsync", &self.dir, e))
            });
        self.guard(r)
    }

    /// Keep `bytes` of zeros written ahead of the active segment's data (0: none, and the
    /// zeros written so far cut off); see [`State::preallocate`].
    pub fn set_preallocate(&self, bytes: usize) -> Result<()> {
        let mut st = self.state.lock();
        st.preallocate = bytes;
        st.zero_limit = usize::try_from(self.segment_size).unwrap_or(usize::MAX);
        if bytes == 0 {
            let r = self.settle(&mut st).and_then(|()| trim(&mut st));
            self.guard(r)?;
        }
        Ok(())
    }

    /// Cut the zeros written ahead off the active segment (a clean close: the next open
    /// finds the file ending with its last frame). Zeros are written ahead again by the next
    /// append's write-out.
    pub fn trim_active(&self) -> Result<()> {
        let mut st = self.state.lock();
        self.check_poison()?;
        let r = self
            .settle(&mut st)
            .and_then(|()| flush_data(&mut st))
            .and_then(|()| trim(&mut st));
        self.guard(r)
    }

    /// Seal the active segment if it holds any frame.
    pub fn rotate_if_nonempty(&self) -> Result<()> {
        self.check_poison()?;
        let mut st = self.state.lock();
        // Again under the lock: a failure may have come in between.
        self.check_poison()?;
        if st.len() > HEADER_LEN {
            self.guard(self.rotate(&mut st))?;
        }
        Ok(())
    }

    /// Flush and fdatasync (outside the append lock); returns the seq now durable.
    fn do_sync(&self) -> Result<u64> {
        if self.behind.load(Ordering::Acquire) {
            // With write-behind, the tail too is written outside the append lock.
            {
                let mut st = self.state.lock();
                self.check_poison()?;
                if st.behind.bytes.is_none() && !st.buf.is_empty() {
                    hand_over(&mut st);
                }
            }
            self.write_behind()?;
        }
        let (file, path, target) = {
            let mut st = self.state.lock();
            // An append may have failed (and poisoned the store) while this leader waited
            // for the lock: write or sync nothing after a failure.
            self.check_poison()?;
            // Poisoned under the lock: no appender may write (or seal) after a failed write.
            if let Err(e) = self.settle(&mut st).and_then(|()| flush(&mut st)) {
                return Err(self.poison(e));
            }
            (st.file.clone(), st.path.clone(), st.next_seq - 1)
        };
        // Callers that wait from here on and appended up to `target` sleep until this sync
        // ends; the others until the next.
        self.sync.lock().covers = Some(target);
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", path, e))?;
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(target)
    }

    /// Leader/follower: return once `seq` is durable. A caller finding no sync in flight
    /// leads one (for everything appended so far); callers arriving meanwhile wait for it if
    /// it covers them, else for the next, which one of them leads once this one ends,
    /// covering all of them at once ([`SyncState`]).
    fn wait(&self, seq: u64) -> Result<()> {
        let mut s = self.sync.lock();
        loop {
            self.check_poison()?;
            if s.durable >= seq {
                // Woken to lead the next sync but covered already (it waited before the last
                // sync's end was known): the lead goes to another waiter, if one is left.
                if s.lead_wanted && !s.syncing {
                    s.lead_wanted = self.synced[((s.round + 1) % 2) as usize].notify_one();
                }
                return Ok(());
            }
            if s.syncing {
                // Not known to be covered (its leader has not read its end yet): the next.
                let this = s.covers.is_some_and(|c| c >= seq);
                if !this {
                    s.later = s.later.max(seq);
                }
                let round = s.round + u64::from(!this);
                self.synced[(round % 2) as usize].wait(&mut s);
                continue;
            }
            s.syncing = true;
            s.lead_wanted = false;
            s.round += 1;
            s.covers = None;
            s.later = 0;
            let r = parking_lot::MutexGuard::unlocked(&mut s, || self.do_sync());
            let d = match r {
                Ok(d) => d,
                Err(e) => {
                    // Poison with `syncing` still set. Clearing it first let a follower woken in
                    // between (before the poison was visible) lead another fdatasync of the same
                    // file: a retry of a failed fsync, which may "succeed" after the kernel dropped
                    // the dirty pages, and acknowledge calls that are not on disk (found by
                    // tests/fsync_eio.rs `concurrent_waiters_never_retry_a_failed_fdatasync`).
                    // `poison` wakes every waiter once the flag is set; they all fail.
                    drop(s);
                    return Err(self.poison(e));
                }
            };
            s.syncing = false;
            s.durable = s.durable.max(d);
            self.durable_hint.store(s.durable, Ordering::Release);
            self.synced[(s.round % 2) as usize].notify_all();
            // Those asleep for the next sync: every one if this sync covered them all (they
            // waited before its end was known), else one to lead it (it covers them all).
            let next = &self.synced[((s.round + 1) % 2) as usize];
            if s.later > s.durable {
                s.lead_wanted = next.notify_one();
            } else if s.later > 0 {
                next.notify_all();
            }
            if s.durable >= seq {
                return Ok(());
            }
        }
    }

    /// Return once `seq` is durable by `durability`. Group commit and sync-each callers that
    /// wait share syncs the same way; group commit additionally has the background thread
    /// sync at least every `max_delay` (and early once `max_batch` frames are unsynced) for
    /// callers that do not wait.
    pub fn wait_durable(&self, seq: u64, durability: Durability) -> Result<()> {
        self.check_poison()?;
        match durability {
            Durability::Buffered => Ok(()),
            Durability::SyncEach | Durability::GroupCommit { .. } => self.wait(seq),
        }
    }

    /// Make everything appended so far durable.
    pub fn sync_all(&self) -> Result<()> {
        self.check_poison()?;
        let last = self.state.lock().next_seq - 1;
        self.wait(last)
    }

    /// Seq of the last appended frame.
    pub fn last_seq(&self) -> u64 {
        self.state.lock().next_seq - 1
    }

    /// Call `f` with the bytes at `loc`.
    pub fn read<R>(&self, loc: Location, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.read_in(loc, |at| match at {
            Source::Sealed(s) => s.read(loc, f),
            Source::Active(st) => st.read(loc, f),
        })
    }

    /// Append the bytes at `loc` to `out` (left as it was on an error).
    pub fn read_appending(&self, loc: Location, out: &mut Vec<u8>) -> Result<()> {
        self.read_in(loc, |at| match at {
            Source::Sealed(s) => s.read_appending(loc, out),
            Source::Active(st) => st.read_appending(loc, out),
        })
    }

    /// Call `f` with the segment `loc` is in: sealed, or the active one (under the append
    /// lock).
    fn read_in<R>(&self, loc: Location, f: impl FnOnce(Source<'_>) -> Result<R>) -> Result<R> {
        self.check_poison()?;
        let sealed = self.sealed.read().get(&loc.segment).cloned();
        if let Some(s) = sealed {
            return f(Source::Sealed(&s));
        }
        {
            let st = self.state.lock();
            if st.id == loc.segment {
                return f(Source::Active(&st));
            }
        }
        // Rotated between the two looks.
        let sealed = self.sealed.read().get(&loc.segment).cloned();
        match sealed {
            Some(s) => f(Source::Sealed(&s)),
            None => Err(Error::Corruption {
                file: self.dir.join(seg_name(loc.segment)),
                offset: loc.offset as u64,
                reason: "no such segment (location from before a compaction?)".into(),
            }),
        }
    }

    /// Background group commit: sync at least every `period` while appends are unsynced
    /// (and early when kicked), and write the blocks handed over for write-behind.
    fn flusher(self: Arc<Self>, period: Duration) {
        // `None`: no deadline (a `max_delay` too long to add to now).
        let mut due = Instant::now().checked_add(period);
        loop {
            {
                let mut stop = self.shutdown.lock();
                if *stop {
                    return;
                }
                let now = Instant::now();
                if !self.kicked.load(Ordering::Acquire)
                    && !self.write_wanted.load(Ordering::Acquire)
                {
                    match due {
                        Some(due) if now < due => {
                            self.shutdown_cv.wait_for(&mut stop, due - now);
                        }
                        Some(_) => {}
                        None => self.shutdown_cv.wait(&mut stop),
                    }
                }
                if *stop {
                    return;
                }
            }
            if self.write_wanted.swap(false, Ordering::AcqRel) {
                // A failure poisons the store; the sync below then does nothing.
                let _ = self.write_behind();
            }
            if !self.kicked.load(Ordering::Acquire) && due.is_none_or(|d| Instant::now() < d) {
                continue;
            }
            due = Instant::now().checked_add(period);
            self.kicked.store(false, Ordering::Release);
            if self.check_poison().is_err() {
                continue;
            }
            let last = self.last_seq();
            if self.durable_hint.load(Ordering::Acquire) < last {
                let _ = self.wait(last);
            }
        }
    }

    /// Write the block handed over for write-behind, if any and not being written, outside the
    /// append lock (the group-commit thread). While it writes (`claimed`), nothing else
    /// touches the block, `flushed` or the file ([`Shared::settle`] waits).
    fn write_behind(&self) -> Result<()> {
        let (block, file, path, at) = {
            let mut st = self.state.lock();
            self.check_poison()?;
            let Some(block) = st.behind.bytes.clone() else {
                return Ok(());
            };
            if st.behind.claimed {
                return Ok(());
            }
            st.behind.claimed = true;
            (block, st.file.clone(), st.path.clone(), st.flushed)
        };
        let r = write_all_at(file.as_ref(), at as u64, &block)
            .map_err(|e| Error::io("write", &path, e));
        drop(block);
        let mut st = self.state.lock();
        st.behind.claimed = false;
        let r = match r {
            Ok(()) => {
                if let Some(block) = st.behind.bytes.take() {
                    st.flushed += block.len();
                    keep_spare(&mut st, block);
                }
                Ok(())
            }
            Err(e) => Err(self.poison(e)),
        };
        drop(st);
        self.written.notify_all();
        r
    }

    /// Under the append lock: make the file hold every byte before `buf` (no block handed
    /// over for write-behind left). A block the group-commit thread has not taken yet is
    /// written here; one it is writing is waited for.
    fn settle(&self, st: &mut parking_lot::MutexGuard<'_, State>) -> Result<()> {
        loop {
            self.check_poison()?;
            if st.behind.bytes.is_none() {
                return Ok(());
            }
            if st.behind.claimed {
                self.written.wait(st);
                continue;
            }
            let Some(block) = st.behind.bytes.take() else {
                return Ok(());
            };
            if let Err(e) = write_all_at(st.file.as_ref(), st.flushed as u64, &block) {
                // Left as it was, and the store poisoned here, under the lock: nothing is
                // written (or sealed) after it.
                st.behind.bytes = Some(block);
                return Err(self.poison(Error::io("write", &st.path, e)));
            }
            st.flushed += block.len();
            keep_spare(st, block);
            return Ok(());
        }
    }
}

/// Hand the active segment's tail over for write-behind (none handed over yet); the next
/// tail fills the last block's buffer.
fn hand_over(st: &mut State) {
    debug_assert!(st.behind.bytes.is_none());
    let mut next = std::mem::take(&mut st.behind.spare);
    if next.capacity() == 0 {
        next.reserve(FLUSH_AT + 4096);
    }
    let block = std::mem::replace(&mut st.buf, next);
    st.behind.bytes = Some(Arc::new(block));
}

/// Keep a block's buffer, once written, for the next `buf` (when nobody else holds it and it
/// is not a huge frame's).
fn keep_spare(st: &mut State, block: Arc<Vec<u8>>) {
    if let Ok(mut v) = Arc::try_unwrap(block)
        && v.capacity() <= 4 * FLUSH_AT
        && st.behind.spare.capacity() == 0
    {
        v.clear();
        st.behind.spare = v;
    }
}

/// Write the unflushed part of the active buffer to the file, and, when the store
/// preallocates, zeros ahead of it once less than half of what it keeps ahead is left.
pub(crate) fn flush(st: &mut State) -> Result<()> {
    flush_data(st)?;
    if st.preallocate > 0 && st.flushed + st.preallocate / 2 > st.zeroed_to {
        /// A block of zeros, written as often as the span asks.
        static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
        let from = st.zeroed_to.max(st.flushed);
        let to = (st.flushed + st.preallocate).min(st.zero_limit.max(st.flushed));
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len());
            if write_all_at(st.file.as_ref(), at as u64, &ZEROS[..n]).is_err() {
                // The zeros are an optimization: a disk too full for them (or failing) does
                // not fail the frames, already written; a failing disk fails the next write
                // of data. No more zeros for this store; those written are cut as usual.
                st.preallocate = 0;
                break;
            }
            at += n;
        }
        // Even after a failed write (part of it may have landed): the cut covers it.
        st.zeroed_to = to;
    }
    Ok(())
}

/// Cut the zeros written ahead of the data off the active segment's file (before it is
/// sealed, and on close): a sealed segment's file ends with its last frame.
pub(crate) fn trim(st: &mut State) -> Result<()> {
    debug_assert!(
        st.behind.bytes.is_none(),
        "trimmed before the write-behind settled"
    );
    if st.zeroed_to > st.flushed {
        st.file
            .set_len(st.flushed as u64)
            .map_err(|e| Error::io("truncate", &st.path, e))?;
    }
    st.zeroed_to = 0;
    Ok(())
}

/// [`flush`] without the zeros ahead.
fn flush_data(st: &mut State) -> Result<()> {
    debug_assert!(
        st.behind.bytes.is_none(),
        "flushed before the write-behind settled"
    );
    if !st.buf.is_empty() {
        write_all_at(st.file.as_ref(), st.flushed as u64, &st.buf)
            .map_err(|e| Error::io("write", &st.path, e))?;
        st.flushed += st.buf.len();
        st.buf.clear();
        // A huge frame's buffer is not kept.
        if st.buf.capacity() > 4 * FLUSH_AT {
            st.buf = Vec::with_capacity(FLUSH_AT + 4096);
        }
    }
    Ok(())
}

pub(crate) fn slice<'a>(bytes: &'a [u8], loc: Location, path: &Path) -> Result<&'a [u8]> {
    let start = loc.offset as usize;
    bytes
        .get(start..start.saturating_add(loc.len as usize))
        .ok_or_else(|| outside(loc, bytes.len(), path))
}

fn outside(loc: Location, segment_len: usize, path: &Path) -> Error {
    Error::Corruption {
        file: path.to_path_buf(),
        offset: loc.offset as u64,
        reason: format!(
            "location of {} bytes lies outside the {segment_len}-byte segment",
            loc.len,
        ),
    }
}

/// Create a segment file with its header written and synced, and the directory synced.
pub(crate) fn create_segment(
    io: &dyn Io,
    dir: &Path,
    header: SegmentHeader,
) -> Result<(PathBuf, Arc<dyn IoFile>, [u8; HEADER_LEN])> {
    let path = dir.join(seg_name(header.id));
    let file = io
        .create(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    let bytes = header.encode();
    write_all_at(file.as_ref(), 0, &bytes).map_err(|e| Error::io("write", &path, e))?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync", &path, e))?;
    io.sync_dir(dir).map_err(|e| Error::io("fsync", dir, e))?;
    Ok((path, file, bytes))
}

/// A log segment created ahead of the seal that starts it ([`Shared::create_spare`]): its
/// name durable in the directory and its header's bytes zeros, synced. Until the header is
/// written it is no segment: an open removes such a file when it is the newest (a creation
/// that was interrupted).
struct Spare {
    id: u32,
    path: PathBuf,
    file: Arc<dyn IoFile>,
}

impl Spare {
    /// The file, with `HEADER_LEN` zeros synced (an overwrite of them then changes no
    /// size and no allocation: its `fdatasync` writes that block alone), and the directory
    /// synced. A failure leaves at most a newest file without a valid header.
    fn create(io: &dyn Io, dir: &Path, id: u32) -> Result<Spare> {
        let path = dir.join(seg_name(id));
        let file = io
            .create(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        write_all_at(file.as_ref(), 0, &[0; HEADER_LEN])
            .map_err(|e| Error::io("write", &path, e))?;
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", &path, e))?;
        io.sync_dir(dir).map_err(|e| Error::io("fsync", dir, e))?;
        Ok(Spare { id, path, file })
    }

    /// Make it the segment `header` describes (its id the spare's): the header written and
    /// synced, as [`create_segment`] leaves a new segment.
    fn start(self, header: SegmentHeader) -> Result<(u32, PathBuf, Arc<dyn IoFile>)> {
        debug_assert_eq!(header.id, self.id);
        write_all_at(self.file.as_ref(), 0, &header.encode())
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        Ok((self.id, self.path, self.file))
    }
}

/// The running log: shared state plus the background group-commit thread.
pub(crate) struct Log {
    pub shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    closed: bool,
}

impl Log {
    pub fn start(shared: Shared) -> Log {
        let shared = Arc::new(shared);
        let flusher = match shared.durability {
            Durability::GroupCommit { max_delay, .. } => {
                let s = shared.clone();
                let period = max_delay.max(Duration::from_micros(100));
                std::thread::Builder::new()
                    .name("profiledb-group-commit".into())
                    .spawn(move || s.flusher(period))
                    .ok()
            }
            _ => None,
        };
        // Write-behind only with the thread that writes.
        shared.behind.store(flusher.is_some(), Ordering::Release);
        Log {
            shared,
            flusher,
            closed: false,
        }
    }

    fn stop_flusher(&mut self) {
        // The appender writes from now on; a block handed over and not taken is written by
        // the next sync or seal ([`Shared::settle`]).
        self.shared.behind.store(false, Ordering::Release);
        *self.shared.shutdown.lock() = true;
        self.shared.shutdown_cv.notify_all();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
    }

    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
    /// Stop the background thread, flush and sync.
    pub fn close(&mut self) -> Result<()> {
        self.closed = true;
        self.stop_flusher();
        self.shared.sync_all()?;
        // After the sync: what was acknowledged is durable whether or not the cut is.
        self.shared.trim_active()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if !self.closed {
            self.stop_flusher();
            if self.shared.check_poison().is_ok() && self.shared.sync_all().is_ok() {
                let _ = self.shared.trim_active();
            }
        }
    }
}

#[cfg(test)]
mod read_tests {
    use super::super::{Entry, Location, Replay, Store, StoreOptions, StoredEntry};
    use crate::error::Result;

    struct Nothing;

    impl Replay for Nothing {
        fn load_snapshot(&mut self, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn reset(&mut self) {}
        fn apply(&mut self, _: u64, _: &[StoredEntry<'_>]) -> Result<()> {
            Ok(())
        }
    }

    /// `read_appending` appends what `read` hands, from a sealed segment, the active one's
    /// written part and its unwritten tail; a place outside its segment (or in none) is an
    /// error that leaves the buffer as it was.
    #[test]
    fn read_appending_appends_what_read_reads_and_fails_cleanly_outside() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new();
        options.segment_size = 16 << 10;
        let store = Store::open(dir.path(), options, &mut Nothing).unwrap();
        let mut places = Vec::new();
        for i in 0..600u64 {
            let data = format!("entry {i} {}", "x".repeat((i % 70) as usize));
            let at = store
                .append(&[Entry {
                    kind: 1,
                    id: i,
                    data: data.as_bytes(),
                }])
                .unwrap()
                .locations[0];
            places.push(at);
            if i == 590 {
                // Some of the active segment written, the rest in its tail.
                store.sync().unwrap();
            }
        }
        let segments: std::collections::BTreeSet<u32> = places.iter().map(|l| l.segment).collect();
        assert!(segments.len() > 2, "sealed segments and the active one");
        for &at in &places {
            let mut out = b"head".to_vec();
            store.read_appending(at, &mut out).unwrap();
            let read = store.read(at, |b| b.to_vec()).unwrap();
            assert_eq!(&out[..4], b"head");
            assert_eq!(out[4..], read[..]);
        }
        let last = *places.last().unwrap();
        let first = places[0];
        for bad in [
            Location {
                len: u32::MAX,
                ..first
            },
            Location {
                offset: u32::MAX - 2,
                ..first
            },
            Location {
                len: 1 << 20,
                ..last
            },
            Location {
                segment: 9_999,
                ..first
            },
        ] {
            let mut out = b"head".to_vec();
            assert!(store.read_appending(bad, &mut out).is_err(), "{bad:?}");
            assert_eq!(out, b"head");
        }
    }

    /// Group commit hands each 64 KiB of the active segment to its thread to write
    /// (write-behind): every entry reads back as appended whether it is on the file, handed
    /// over or in the tail (the thread's timing decides which, as the appends go), and
    /// after a close every byte is on the file, in order, for the next open.
    #[test]
    fn write_behind_keeps_every_entry_readable_and_the_file_whole() {
        use crate::options::Durability;
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let mut options = StoreOptions::new();
            options.segment_size = 64 << 20;
            options.durability = Durability::GroupCommit {
                max_delay: std::time::Duration::from_millis(1),
                max_batch: 1 << 20,
            };
            Store::open(dir.path(), options, &mut Nothing).unwrap()
        };
        let data = |i: u64| format!("entry {i} {}", "y".repeat((i % 300) as usize));
        let store = open();
        let mut places = Vec::new();
        for i in 0..6_000u64 {
            let d = data(i);
            let at = store
                .append(&[Entry {
                    kind: 1,
                    id: i,
                    data: d.as_bytes(),
                }])
                .unwrap()
                .locations[0];
            places.push(at);
            // Read back, now and then, a stretch of what came before (on the file, handed
            // over, in the tail).
            if i % 97 == 0 {
                for (j, &at) in places.iter().enumerate().rev().take(400) {
                    let mut out = Vec::new();
                    store.read_appending(at, &mut out).unwrap();
                    assert_eq!(out, data(j as u64).as_bytes(), "entry {j} after {i}");
                    let read = store.read(at, |b| b.to_vec()).unwrap();
                    assert_eq!(read, out, "entry {j} after {i}");
                }
            }
        }
        let segments: std::collections::BTreeSet<u32> = places.iter().map(|l| l.segment).collect();
        assert_eq!(
            segments.len(),
            1,
            "one active segment, more than 64 KiB of it"
        );
        store.close().unwrap();
        let store = open();
        for (j, &at) in places.iter().enumerate() {
            let read = store.read(at, |b| b.to_vec()).unwrap();
            assert_eq!(read, data(j as u64).as_bytes(), "entry {j} after reopening");
        }
    }

    /// A `max_delay` too long to add to the clock (a "batch only" group commit) leaves the
    /// group-commit thread running: it still writes behind and syncs when `max_batch` frames
    /// wait (it panicked on the deadline's overflow once, silently).
    #[test]
    fn group_commit_without_a_deadline_still_syncs_when_kicked() {
        use crate::options::Durability;
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new();
        options.durability = Durability::GroupCommit {
            max_delay: std::time::Duration::MAX,
            max_batch: 4,
        };
        let store = Store::open(dir.path(), options, &mut Nothing).unwrap();
        let syncs = store.stats().syncs;
        let data = vec![7u8; 1000];
        for i in 0..200u64 {
            store
                .append(&[Entry {
                    kind: 1,
                    id: i,
                    data: &data,
                }])
                .unwrap();
        }
        // Poll, no timing assertion: the thread syncs on its own once kicked.
        let mut polls = 0;
        while store.stats().syncs == syncs {
            std::thread::sleep(std::time::Duration::from_millis(1));
            polls += 1;
            assert!(polls < 30_000, "the group-commit thread never synced");
        }
        store.close().unwrap();
    }
}
