//! The running log: appends into the active segment, rotation, group commit and poisoning.
//!
//! Locks, always taken in this order and never held across an fdatasync of the active
//! segment: `compaction` -> `state` (the append lock) -> `spare` -> `sealed` -> `sync`.
//! The one exception is rotation, which fdatasyncs the segment it seals under the append lock
//! (once per `segment_size` bytes), so that a sealed log segment is always whole on disk before
//! its successor exists: torn tails can then only be in the newest log segment.
//!
//! Write-behind (group commit only): the group-commit thread (or a sync's leader) takes the
//! active segment's unwritten tail and writes it outside the append lock
//! ([`Shared::write_tail`]), so that the `write()` (~7 % of a writer's time in `compare`,
//! docs/performance.md) runs on another core. The appender only asks for it, and only once
//! [`WAKE_AT`] bytes wait (a sync, every `max_batch` frames, usually takes them first): in the
//! common case an append makes no system call and never meets the group-commit thread on a
//! lock. The file stays a prefix of the segment: one taken tail is written at a time, and the
//! bytes after it are taken or written only once it is ([`Shared::settle`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::io::{Io, IoFile, write_all_at, write_zeros_at};
use super::record::{self, HEADER_LEN, KIND_LOG, SegmentHeader};
use super::segment::{Sealed, SealedRef, seg_name};
use super::{Appended, Location, RecoveryReport};
use crate::error::{Error, Result};
use crate::options::Durability;

/// Unflushed bytes of the active segment that trigger a `write()` (without write-behind; with
/// it, the point from which an append checks [`WAKE_AT`] and [`MAX_BEHIND`]).
pub(crate) const FLUSH_AT: usize = 64 << 10;

/// Unflushed bytes that make the appender write them itself even with write-behind on (the
/// group-commit thread is behind): the memory the tail may take.
const MAX_BEHIND: usize = 16 * FLUSH_AT;

/// Unflushed bytes at which, with write-behind, the appender wakes the group-commit thread to
/// write them (once; [`Shared::write_tail`]). Large enough that the sync every `max_batch`
/// frames usually takes the tail first (1,000 W1 calls append ~480 KB), so that the appender
/// wakes that thread once a sync rather than once every [`FLUSH_AT`] bytes: each such wake
/// was a `FUTEX_WAKE` on the appender's thread (~6,900 in 1M W1 calls), and often the woken
/// thread preempting it. The tail then takes up to this much memory, twice (the buffer
/// being written and the next), where 64 KiB blocks took about a tenth of it.
const WAKE_AT: usize = MAX_BEHIND / 2;

/// Capacity above which a written buffer is not kept for reuse (a huge frame's).
const KEEP_AT_MOST: usize = 2 * MAX_BEHIND;

/// The active segment's tail taken to be written outside the append lock
/// ([`Shared::write_tail`]).
#[derive(Default)]
pub(crate) struct Behind {
    /// The bytes being written: they follow the file's first `flushed` bytes, and `buf`
    /// follows them. Until the writing thread ends (and wakes [`Shared::written`]) they,
    /// `flushed` and the file stay as they are. Left here after a failed write (the store is
    /// then poisoned).
    bytes: Option<Arc<Vec<u8>>>,
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
    /// Bytes being written outside the lock (between `flushed` and `buf`).
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

    /// Where `buf` starts: after the written bytes and those being written.
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
    /// Write-behind is on: the group-commit thread runs ([`Log::start`]) and writes the tail
    /// when the appender asks ([`WAKE_AT`]) and at each sync.
    behind: AtomicBool,
    /// The appender asked the group-commit thread to write the tail ([`WAKE_AT`]).
    write_wanted: AtomicBool,
    /// Woken when a thread ends a write outside the lock ([`Shared::settle`] waits).
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
        let mut wake = false;
        if st.buf.len() >= FLUSH_AT {
            wake = self.tail_grown(&mut st)?;
        }
        if st.len() as u64 >= self.segment_size {
            self.guard(self.rotate(&mut st))?;
        }
        drop(st);
        if let Durability::GroupCommit { max_batch, .. } = self.durability
            && seq.saturating_sub(self.durable_hint.load(Ordering::Acquire)) >= max_batch as u64
            && !self.kicked.swap(true, Ordering::AcqRel)
        {
            wake = true;
        }
        if wake {
            self.wake_flusher();
        }
        Ok(Appended { seq, locations })
    }

    /// Under the append lock, once the unwritten tail holds [`FLUSH_AT`] bytes: write it out
    /// (without write-behind, or when [`MAX_BEHIND`] bytes wait: the group-commit thread is
    /// behind), or, from [`WAKE_AT`] bytes, ask the group-commit thread to write it. `true`:
    /// the thread is to be woken (the first ask since it last looked).
    fn tail_grown(&self, st: &mut parking_lot::MutexGuard<'_, State>) -> Result<bool> {
        if self.behind.load(Ordering::Acquire) && st.buf.len() < MAX_BEHIND {
            return Ok(st.buf.len() >= WAKE_AT
                && !self.write_wanted.load(Ordering::Relaxed)
                && !self.write_wanted.swap(true, Ordering::AcqRel));
        }
        let r = self.settle(st).and_then(|()| flush(st));
        self.guard(r)?;
        Ok(false)
    }

    /// Wake the group-commit thread (asked to write the tail, or to sync early). Under its
    /// lock, so that the wake cannot fall between its look at the flags and its sleep.
    fn wake_flusher(&self) {
        let _g = self.shutdown.lock();
        self.shutdown_cv.notify_all();
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
        let Written { file, path, last } = if self.behind.load(Ordering::Acquire) {
            // With write-behind, the tail is written outside the append lock.
            self.write_tail()?
        } else {
            self.write_out()?
        };
        let target = last;
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
    /// (and early when kicked), and write the tail when the appender asks ([`WAKE_AT`]).
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
                let _ = self.write_tail();
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

    /// Write the active segment's unwritten tail outside the append lock (the group-commit
    /// thread, asked by the appender or syncing, or a sync's leader). Under the lock: wait for
    /// a tail another thread is writing ([`Shared::settle`]), then take this one (`buf`) as
    /// the bytes being written and note the last seq it holds; write it with the lock released
    /// (nothing else touches it, `flushed` or the file meanwhile); count it written under the
    /// lock again. Returns the file and the last seq it then holds (what a sync of it covers).
    /// A failed write poisons the store under the lock: nothing is written or sealed after it.
    fn write_tail(&self) -> Result<Written> {
        let (block, at, done) = {
            let mut st = self.state.lock();
            self.check_poison()?;
            self.settle(&mut st)?;
            let done = Written {
                file: st.file.clone(),
                path: st.path.clone(),
                last: st.next_seq - 1,
            };
            if st.buf.is_empty() {
                return Ok(done);
            }
            (take_tail(&mut st), st.flushed, done)
        };
        let r = write_all_at(done.file.as_ref(), at as u64, &block)
            .map_err(|e| Error::io("write", &done.path, e));
        drop(block);
        let mut st = self.state.lock();
        let r = match r {
            Ok(()) => {
                if let Some(block) = st.behind.bytes.take() {
                    st.flushed += block.len();
                    keep_spare(&mut st, block);
                }
                // Zeros ahead are written under the lock, as by every write-out; a write-behind
                // tops them up too.
                zero_ahead(&mut st);
                Ok(done)
            }
            Err(e) => Err(self.poison(e)),
        };
        drop(st);
        self.written.notify_all();
        r
    }

    /// Under the append lock: write the tail out (without write-behind); returns the file and
    /// the last seq it then holds. A failure poisons the store under the lock: no appender
    /// may write (or seal) after a failed write.
    fn write_out(&self) -> Result<Written> {
        let mut st = self.state.lock();
        // An append may have failed (and poisoned the store) while this leader waited for
        // the lock: write or sync nothing after a failure.
        self.check_poison()?;
        if let Err(e) = self.settle(&mut st).and_then(|()| flush(&mut st)) {
            return Err(self.poison(e));
        }
        Ok(Written {
            file: st.file.clone(),
            path: st.path.clone(),
            last: st.next_seq - 1,
        })
    }

    /// Under the append lock: make the file hold every byte before `buf`, waiting for the
    /// tail another thread is writing outside the lock ([`Shared::write_tail`]), if any.
    fn settle(&self, st: &mut parking_lot::MutexGuard<'_, State>) -> Result<()> {
        loop {
            // A failed write-behind leaves its bytes and poisons the store.
            self.check_poison()?;
            if st.behind.bytes.is_none() {
                return Ok(());
            }
            self.written.wait(st);
        }
    }
}

/// The active segment's file and the last seq written to it ([`Shared::write_tail`],
/// [`Shared::write_out`]): what an `fdatasync` of it makes durable.
struct Written {
    file: Arc<dyn IoFile>,
    path: PathBuf,
    last: u64,
}

/// Take the active segment's unwritten tail (none taken yet) to be written outside the lock;
/// the next tail fills the last written tail's buffer.
fn take_tail(st: &mut State) -> Arc<Vec<u8>> {
    debug_assert!(st.behind.bytes.is_none());
    let mut next = std::mem::take(&mut st.behind.spare);
    if next.capacity() == 0 {
        next.reserve(FLUSH_AT + 4096);
    }
    let block = Arc::new(std::mem::replace(&mut st.buf, next));
    st.behind.bytes = Some(block.clone());
    block
}

/// Keep a tail's buffer, once written, for the next `buf` (when nobody else holds it and it
/// is not a huge frame's).
fn keep_spare(st: &mut State, block: Arc<Vec<u8>>) {
    if let Ok(mut v) = Arc::try_unwrap(block)
        && v.capacity() <= KEEP_AT_MOST
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
    zero_ahead(st);
    Ok(())
}

/// When the store preallocates: write zeros ahead of the written data once less than half of
/// what it keeps ahead is left ([`State::preallocate`]).
fn zero_ahead(st: &mut State) {
    if st.preallocate > 0 && st.flushed + st.preallocate / 2 > st.zeroed_to {
        let from = st.zeroed_to.max(st.flushed);
        let to = (st.flushed + st.preallocate).min(st.zero_limit.max(st.flushed));
        if write_zeros_at(st.file.as_ref(), from as u64, to as u64).is_err() {
            // The zeros are an optimization: a disk too full for them (or failing) does not
            // fail the frames, already written; a failing disk fails the next write of data.
            // No more zeros for this store; those written are cut as usual.
            st.preallocate = 0;
        }
        // Even after a failed write (part of it may have landed): the cut covers it.
        st.zeroed_to = to;
    }
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
        if st.buf.capacity() > KEEP_AT_MOST {
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
        // The appender and a sync's leader write under the lock from now on (after waiting
        // for a tail being written: [`Shared::settle`]).
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

    /// Group commit has its thread write the active segment's tail (write-behind, at each
    /// sync and when `WAKE_AT` bytes wait): every entry reads back as appended whether it is
    /// on the file, being written or in the tail (the thread's timing decides which, as the
    /// appends go), and after a close every byte is on the file, in order, for the next open.
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
            // Read back, now and then, a stretch of what came before (on the file, being
            // written, in the tail).
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

    /// A group commit with neither deadline nor batch limit: its thread wakes only when the
    /// appender asks it to write (`WAKE_AT`).
    fn open_unhurried(dir: &std::path::Path) -> Store {
        use crate::options::Durability;
        let mut options = StoreOptions::new();
        options.segment_size = 64 << 20;
        options.durability = Durability::GroupCommit {
            max_delay: std::time::Duration::MAX,
            max_batch: usize::MAX,
        };
        Store::open(dir, options, &mut Nothing).unwrap()
    }

    /// Append entry `i` (a few hundred bytes); returns its place.
    fn append_nth(store: &Store, i: u64) -> Location {
        let data = nth(i);
        store
            .append(&[Entry {
                kind: 1,
                id: i,
                data: &data,
            }])
            .unwrap()
            .locations[0]
    }

    fn nth(i: u64) -> Vec<u8> {
        format!("entry {i} {}", "z".repeat((i % 500) as usize)).into_bytes()
    }

    /// Entry `j` at `places[j]` is `nth(j)`, in `store` and once it is closed and reopened.
    fn reads_back_and_after_reopening(store: Store, dir: &std::path::Path, places: &[Location]) {
        for (j, &at) in places.iter().enumerate() {
            assert_eq!(store.read(at, |b| b.to_vec()).unwrap(), nth(j as u64));
        }
        store.close().unwrap();
        let store = open_unhurried(dir);
        for (j, &at) in places.iter().enumerate() {
            let read = store.read(at, |b| b.to_vec()).unwrap();
            assert_eq!(read, nth(j as u64), "entry {j} after reopening");
        }
    }

    /// With write-behind, appends below `WAKE_AT` unwritten bytes stay in the tail: no block
    /// is handed over, nothing written, the group-commit thread not asked (it was once woken
    /// for every 64 KiB: a futex wake on the appender's thread each time). Past `WAKE_AT` the
    /// appender asks once and the thread writes the tail outside the lock; every entry reads
    /// back throughout and after a reopen.
    #[test]
    fn write_behind_asks_the_thread_only_from_wake_at() {
        use super::{FLUSH_AT, HEADER_LEN, MAX_BEHIND, Ordering, WAKE_AT};
        let dir = tempfile::tempdir().unwrap();
        let store = open_unhurried(dir.path());
        let shared = &store.inner.shared;
        let mut places = Vec::new();
        let mut i = 0u64;
        while shared.state.lock().len() < HEADER_LEN + WAKE_AT - 2 * 1024 {
            places.push(append_nth(&store, i));
            i += 1;
        }
        {
            let st = shared.state.lock();
            assert!(st.buf.len() > 4 * FLUSH_AT, "{}", st.buf.len());
            assert_eq!(st.flushed, HEADER_LEN, "nothing written");
            assert!(st.behind.bytes.is_none(), "nothing handed over");
            assert_eq!(st.len(), HEADER_LEN + st.buf.len());
            assert!(!shared.write_wanted.load(Ordering::Acquire), "not asked");
        }
        for (j, &at) in places.iter().enumerate() {
            assert_eq!(store.read(at, |b| b.to_vec()).unwrap(), nth(j as u64));
        }
        // Past WAKE_AT: asked once; the thread writes the tail (polled, no timing assertion).
        while shared.state.lock().len() < HEADER_LEN + WAKE_AT + 4 * 1024 {
            places.push(append_nth(&store, i));
            i += 1;
        }
        let mut polls = 0;
        while shared.state.lock().flushed == HEADER_LEN {
            std::thread::sleep(std::time::Duration::from_millis(1));
            polls += 1;
            assert!(
                polls < 30_000,
                "the group-commit thread never wrote the tail"
            );
        }
        {
            let st = shared.state.lock();
            assert!(
                st.buf.len() < MAX_BEHIND,
                "the appender did not write it itself"
            );
        }
        reads_back_and_after_reopening(store, dir.path(), &places);
    }

    /// Holds the group-commit thread's writes until opened (a slow disk under that thread).
    #[derive(Default)]
    struct Gate {
        open: parking_lot::Mutex<bool>,
        cv: parking_lot::Condvar,
        /// Writes that reached the gate.
        held: std::sync::atomic::AtomicU64,
    }

    impl Gate {
        fn pass(&self) {
            if std::thread::current().name() != Some("profiledb-group-commit") {
                return;
            }
            let mut open = self.open.lock();
            self.held.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            while !*open {
                self.cv.wait(&mut open);
            }
        }

        fn open(&self) {
            *self.open.lock() = true;
            self.cv.notify_all();
        }
    }

    /// Real files whose writes by the group-commit thread wait at a [`Gate`].
    struct GatedIo(std::sync::Arc<Gate>);

    struct GatedFile(std::sync::Arc<dyn IoFile>, std::sync::Arc<Gate>);

    use super::super::io::{Io, IoFile, RealIo};
    use std::path::Path;

    impl IoFile for GatedFile {
        fn write_at(&self, offset: u64, buf: &[u8]) -> std::io::Result<usize> {
            self.1.pass();
            self.0.write_at(offset, buf)
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read_at(offset, buf)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.0.sync_data()
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.0.set_len(len)
        }
        fn len(&self) -> std::io::Result<u64> {
            self.0.len()
        }
    }

    impl GatedIo {
        fn gated(&self, file: std::sync::Arc<dyn IoFile>) -> std::sync::Arc<dyn IoFile> {
            std::sync::Arc::new(GatedFile(file, self.0.clone()))
        }
    }

    impl Io for GatedIo {
        fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
            RealIo.create_dir_all(dir)
        }
        fn create(&self, path: &Path) -> std::io::Result<std::sync::Arc<dyn IoFile>> {
            RealIo.create(path).map(|f| self.gated(f))
        }
        fn open(&self, path: &Path) -> std::io::Result<std::sync::Arc<dyn IoFile>> {
            RealIo.open(path).map(|f| self.gated(f))
        }
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            RealIo.read(path)
        }
        fn map_source(&self, path: &Path) -> std::io::Result<Option<std::fs::File>> {
            RealIo.map_source(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            RealIo.rename(from, to)
        }
        fn remove(&self, path: &Path) -> std::io::Result<()> {
            RealIo.remove(path)
        }
        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            RealIo.sync_dir(dir)
        }
        fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
            RealIo.list(dir)
        }
        fn len(&self, path: &Path) -> std::io::Result<u64> {
            RealIo.len(path)
        }
    }

    /// While the group-commit thread's write of a tail is held (a slow disk): the entries in
    /// it and after it read back from memory; a sync from another thread waits for it and
    /// then writes the rest itself; an appender with `MAX_BEHIND` bytes waiting waits for it
    /// and then writes its tail itself; neither returns before the held write ends (the file
    /// stays a prefix of the segment). Once it ends, every entry reads back, and after a
    /// reopen too.
    #[test]
    fn a_held_write_behind_is_waited_for_and_nothing_is_written_past_it() {
        use super::{HEADER_LEN, MAX_BEHIND, WAKE_AT};
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let gate = std::sync::Arc::new(Gate::default());
        let mut options = StoreOptions::new();
        options.segment_size = 64 << 20;
        options.durability = crate::options::Durability::GroupCommit {
            max_delay: std::time::Duration::MAX,
            max_batch: usize::MAX,
        };
        options.io = std::sync::Arc::new(GatedIo(gate.clone()));
        let store = Store::open(dir.path(), options, &mut Nothing).unwrap();
        let shared = &store.inner.shared;
        let mut places = Vec::new();
        let mut i = 0u64;
        while shared.state.lock().len() < HEADER_LEN + WAKE_AT + 1024 {
            places.push(append_nth(&store, i));
            i += 1;
        }
        // The thread takes the tail and its write waits at the gate (polled).
        let mut polls = 0;
        while gate.held.load(Ordering::Acquire) == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
            polls += 1;
            assert!(polls < 30_000, "the group-commit thread never wrote");
        }
        let taken = {
            let st = shared.state.lock();
            assert_eq!(st.flushed, HEADER_LEN);
            st.behind.bytes.as_ref().map_or(0, |b| b.len())
        };
        assert!(taken > WAKE_AT, "{taken}");
        // More, short of MAX_BEHIND: in the tail.
        while shared.state.lock().buf.len() < MAX_BEHIND - 4 * 1024 {
            places.push(append_nth(&store, i));
            i += 1;
        }
        for (j, &at) in places.iter().enumerate() {
            assert_eq!(store.read(at, |b| b.to_vec()).unwrap(), nth(j as u64));
        }
        let syncs = store.stats().syncs;
        let shared_store = &store;
        std::thread::scope(|s| {
            let sync = s.spawn(|| shared_store.sync());
            let first = i;
            let append = s.spawn(move || {
                let mut more = Vec::new();
                for k in first..first + 200 {
                    more.push(append_nth(shared_store, k));
                }
                more
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            // Not a timing assertion: neither may return while the write is held.
            assert!(
                !sync.is_finished(),
                "a sync returned before the tail was written"
            );
            assert!(
                !append.is_finished(),
                "an appender past MAX_BEHIND went on before the tail was written"
            );
            assert_eq!(shared.state.lock().flushed, HEADER_LEN, "written past it");
            gate.open();
            sync.join().unwrap().unwrap();
            places.extend(append.join().unwrap());
        });
        assert!(store.stats().syncs > syncs);
        reads_back_and_after_reopening(store, dir.path(), &places);
    }
}
