//! Where each profile's history steps are (entry kind 20, `entries::history`): per segment, a
//! table of its steps (profile key, place), and the journal clock. Part of the index so that
//! it rides on the same lock, replay, compaction relocation and hint snapshot.
//!
//! A step costs 16 bytes here (stop 18; it cost ~44 as a per-profile list of `(arrival,
//! location)`): its arrival time is not kept, it is the first field of the step's entry and
//! is read from there when a profile's steps are walked (`journal::read::steps_of`). A segment's
//! table is sorted by key and place, so the steps of one profile in it are one run, but for
//! the rows appended since its last merge (a bounded tail, [`TAIL`]).
//!
//! Only the tables of the segment appended to, and of segments sealed since, are held in
//! memory: a sealed segment's table is written to a file beside it (`file.rs`), by the
//! compaction that wrote the segment ([`write_outputs`]) or, for a segment the log sealed, by
//! the background thread ([`Journal::freeze_sealed`], [`write_table`]); the process keeps 8
//! bytes per 256 of its steps. The index snapshot lists the in-memory tables' rows and names
//! the files.
//!
//! A step is live for compaction while it is listed here, is younger than the retention
//! window and its key still resolves to a live profile (itself or, merged away, its survivor):
//! a deleted profile's steps, and those of every profile merged into it, are dropped by the
//! next compaction that takes their segment (the background takes the segments of steps only
//! now and then, `db::Steps`; `delete --erase` compacts every segment at once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::guard::Guard;
use crate::error::{Error, Result};
use crate::storage::{Location, Places};

mod file;

use file::{Cursor, Writer};
pub(crate) use file::{SharedIo, TableFile};

/// One step: its profile key and where its entry is in the table's segment. Ordered by key,
/// then place (within a segment, the log's order, which is the steps' arrival order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Row {
    key: u64,
    offset: u32,
    len: u32,
}

/// Bytes of a row in the snapshot, in a table file (and in memory).
const ROW_BYTES: usize = 16;

impl Row {
    /// `key u64, offset u32, len u32`, little-endian: a row of the snapshot's history section
    /// and of a table file.
    fn to_bytes(self) -> [u8; ROW_BYTES] {
        let mut b = [0u8; ROW_BYTES];
        b[..8].copy_from_slice(&self.key.to_le_bytes());
        b[8..12].copy_from_slice(&self.offset.to_le_bytes());
        b[12..].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// The row in `b` (at least [`ROW_BYTES`] long: `chunks_exact` hands it).
    fn from_bytes(b: &[u8]) -> Row {
        let (mut key, mut offset, mut len) = ([0u8; 8], [0u8; 4], [0u8; 4]);
        key.copy_from_slice(&b[..8]);
        offset.copy_from_slice(&b[8..12]);
        len.copy_from_slice(&b[12..16]);
        Row {
            key: u64::from_le_bytes(key),
            offset: u32::from_le_bytes(offset),
            len: u32::from_le_bytes(len),
        }
    }
}

/// One segment's steps: sorted up to `sorted`, then the steps appended since, in log order:
/// at most [`TAIL`] or a quarter of the sorted part, whichever is more.
#[derive(Debug, Clone, Default)]
struct Table {
    rows: Vec<Row>,
    sorted: usize,
}

/// Rows a table may hold unsorted, at least: a look-up scans them (65,536 rows: ~50 us), so
/// past that (and past a quarter of the sorted part) they are merged into it: the rows since
/// the last merge sorted, then the two runs joined. A merge moves every row, so it waits for
/// a number of appends in proportion: at most 5 row moves an append, whatever the table's
/// size (a W1 segment of ~270,000 steps merges 4 times; ~105 instructions a call in all, the
/// tail sorted by [`sort_appended`]).
const TAIL: usize = 1 << 16;

impl Table {
    fn push(&mut self, row: Row) {
        let in_order = self.sorted == self.rows.len() && self.rows.last().is_none_or(|l| *l < row);
        self.rows.push(row);
        if in_order {
            self.sorted = self.rows.len();
        } else if self.rows.len() - self.sorted > TAIL.max(self.sorted / 4) {
            self.sort();
        }
    }

    /// Sort the unsorted tail into the rest: the tail sorted apart, then the two runs merged
    /// from the back, in place. (A frame is replayed once, so no step is listed twice; were
    /// one, the snapshot's check of strictly increasing rows would refuse the hint, and the
    /// next open would scan the log.)
    fn sort(&mut self) {
        if self.sorted == self.rows.len() {
            return;
        }
        let mut tail = self.rows.split_off(self.sorted);
        sort_appended(&mut tail);
        let head = self.rows.len();
        // Room for the tail (overwritten below).
        self.rows.extend_from_slice(&tail);
        let (mut i, mut j) = (head, tail.len());
        while j > 0 {
            let k = i + j - 1;
            if i > 0 && self.rows[i - 1] > tail[j - 1] {
                self.rows[k] = self.rows[i - 1];
                i -= 1;
            } else {
                self.rows[k] = tail[j - 1];
                j -= 1;
            }
        }
        self.sorted = self.rows.len();
    }

    /// Sort, and give back the room the table will not use (a compaction's input: the log
    /// appends elsewhere).
    fn settle(&mut self) {
        self.sort();
        self.rows.shrink_to_fit();
    }

    /// The rows, sorted: the sorted part and the tail (sorted apart) merged.
    fn sorted_rows(&self) -> impl Iterator<Item = Row> + '_ {
        let mut tail = self.rows[self.sorted..].to_vec();
        tail.sort_unstable();
        let mut head = self.rows[..self.sorted].iter().copied().peekable();
        let mut tail = tail.into_iter().peekable();
        std::iter::from_fn(move || match (head.peek(), tail.peek()) {
            (Some(h), Some(t)) if t < h => tail.next(),
            (Some(_), _) => head.next(),
            (None, _) => tail.next(),
        })
    }

    /// The rows of `key`: a run of the sorted part, and any in the rest.
    fn of_key(&self, key: u64) -> impl Iterator<Item = &Row> {
        let sorted = &self.rows[..self.sorted];
        let from = sorted.partition_point(|r| r.key < key);
        let run = sorted[from..].iter().take_while(move |r| r.key == key);
        run.chain(
            self.rows[self.sorted..]
                .iter()
                .filter(move |r| r.key == key),
        )
    }
}

/// Bits of the key a pass of [`sort_appended`] sorts by (2,048 counts: two passes for keys
/// below 2^22).
const RADIX_BITS: u32 = 11;

/// Sort `rows` as `sort_unstable` does. Rows the log appended to one segment come in the
/// order of their places (offsets ascending), so a stable sort by key alone sorts them by
/// key and place: a radix sort of the key's low bits, [`RADIX_BITS`] a pass, from the lowest
/// (as many passes as the largest key needs), ~40 instructions a row where `sort_unstable`
/// took ~100 on a W1 tail (~70,000 rows with keys below 2^20). Rows in any other order (none
/// the log appends), and short runs, go to `sort_unstable`.
fn sort_appended(rows: &mut Vec<Row>) {
    const MASK: u64 = (1 << RADIX_BITS) - 1;
    if rows.len() < 1024 || !rows.windows(2).all(|w| w[0].offset < w[1].offset) {
        rows.sort_unstable();
        return;
    }
    let largest = rows.iter().map(|r| r.key).max().unwrap_or(0);
    let bits = u64::BITS - largest.leading_zeros();
    let mut from = std::mem::take(rows);
    // Overwritten whole by each pass (a copy: rows have no cheaper filler).
    let mut to = from.clone();
    for shift in (0..bits).step_by(RADIX_BITS as usize) {
        let mut at = [0usize; 1 << RADIX_BITS];
        for r in &from {
            at[((r.key >> shift) & MASK) as usize] += 1;
        }
        let mut sum = 0;
        for a in &mut at {
            let n = *a;
            *a = sum;
            sum += n;
        }
        for r in &from {
            let slot = &mut at[((r.key >> shift) & MASK) as usize];
            if let Some(d) = to.get_mut(*slot) {
                *d = *r;
            }
            *slot += 1;
        }
        std::mem::swap(&mut from, &mut to);
    }
    debug_assert!(from.is_sorted(), "a radix sort of rows in place order");
    *rows = from;
}

/// Steps of every profile that has any, and the journal clock.
#[derive(Debug, Clone, Default)]
pub(crate) struct Journal {
    /// Segment id -> its steps held in memory: the segment appended to, and those sealed
    /// since their tables were last written to files.
    tables: BTreeMap<u32, Table>,
    /// Tables taken out of `tables`, sorted, while they are written to files (a compaction's
    /// inputs, segments the log sealed): read like the others meanwhile.
    frozen: BTreeMap<u32, Arc<Vec<Row>>>,
    /// Segment id -> its table file (`file.rs`).
    files: BTreeMap<u32, Arc<TableFile>>,
    /// The table files a loaded snapshot names, `(segment, rows, crc)`, until [`Journal::attach`]
    /// opens them.
    named: Vec<(u32, u64, u32)>,
    /// Segment id -> a bound on the arrival times of its steps (none is later): the newest
    /// pushed, for a segment the log appended to; for a compaction's output, the newest bound
    /// among its inputs. A segment of steps whose bound has left the window holds no step
    /// still kept, and is deleted whole (`Db`'s expiry, docs/journal.md).
    newest: BTreeMap<u32, i64>,
    /// Steps listed.
    steps: usize,
    /// Bytes of the steps pushed since the store was opened that no compaction has moved to
    /// the segments of steps yet: what the log segments hold of the history, which the
    /// background's dead-byte estimate does not count as dead (`Db::wants_compaction`).
    /// Steps of the log replayed at the open are not counted (the estimate errs towards
    /// compacting).
    pub in_log_bytes: u64,
    /// Newest arrival time handed out or replayed (microseconds since the epoch).
    clock: i64,
    /// Retention window in microseconds; 0 = history off.
    retention_us: i64,
    /// The dynamic guard's state (`guard.rs`).
    pub guard: Guard,
}

/// A table a compaction or a spill reads while the index's lock is free: rows frozen in
/// memory, or a table file.
pub(crate) enum Source {
    Rows(Arc<Vec<Row>>),
    File(Arc<TableFile>),
}

impl Source {
    fn cursor(&self) -> Cursor {
        match self {
            Source::Rows(rows) => Cursor::of_rows(rows),
            Source::File(f) => f.cursor(),
        }
    }
}

/// The tables of a compaction's inputs, segment by segment.
pub(crate) type Sources = Vec<(u32, Source)>;

impl Journal {
    /// Set the retention window (from `Options::history_retention`, at open).
    pub fn set_retention(&mut self, window: std::time::Duration) {
        self.retention_us = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    }

    /// Whether calls write history steps.
    pub fn enabled(&self) -> bool {
        self.retention_us > 0
    }

    /// The oldest arrival time whose steps are still kept, as of `now`.
    pub fn horizon(&self, now: i64) -> i64 {
        now.saturating_sub(self.retention_us)
    }

    /// The arrival time for the next call: strictly after every earlier one.
    pub fn next_arrival(&self, now: i64) -> i64 {
        now.max(self.clock.saturating_add(1))
    }

    /// A step appended (or replayed) at `at`.
    pub fn push(&mut self, key: u64, arrival: i64, at: Location) {
        self.clock = self.clock.max(arrival);
        // The segment the log appends to is the last of each map (nearly always): its entry
        // is taken at the map's end, not searched for from its root.
        let newest = match self.newest.last_entry() {
            Some(last) if *last.key() == at.segment => last.into_mut(),
            _ => self.newest.entry(at.segment).or_insert(arrival),
        };
        *newest = (*newest).max(arrival);
        let table = match self.tables.last_entry() {
            Some(last) if *last.key() == at.segment => last.into_mut(),
            _ => self.tables.entry(at.segment).or_default(),
        };
        table.push(Row {
            key,
            offset: at.offset,
            len: at.len,
        });
        self.steps += 1;
        self.in_log_bytes += u64::from(at.len);
    }

    /// Take the in-memory tables of `segments` out of `tables`, sorted, into `frozen`
    /// (joined with one frozen before, were there one).
    fn freeze_tables(&mut self, segments: impl IntoIterator<Item = u32>) {
        for id in segments {
            let Some(mut t) = self.tables.remove(&id) else {
                continue;
            };
            t.settle();
            let rows = match self.frozen.remove(&id) {
                None => t.rows,
                Some(old) => {
                    let mut all = Vec::with_capacity(old.len() + t.rows.len());
                    all.extend_from_slice(&old);
                    all.extend_from_slice(&t.rows);
                    all.sort_unstable();
                    all
                }
            };
            self.frozen.insert(id, Arc::new(rows));
        }
    }

    /// As a compaction begins (under the index's write lock): its inputs' tables, frozen in
    /// memory or in files, for [`write_outputs`] to read without the lock.
    pub fn freeze(&mut self, inputs: &[u32]) -> Sources {
        self.freeze_tables(inputs.iter().copied());
        let mut sources = Vec::new();
        for id in inputs {
            if let Some(rows) = self.frozen.get(id) {
                sources.push((*id, Source::Rows(rows.clone())));
            }
            if let Some(f) = self.files.get(id) {
                sources.push((*id, Source::File(f.clone())));
            }
        }
        sources
    }

    /// The tables to write to files (under the index's write lock): those of segments for
    /// which `sealed` holds and that have no table file yet, frozen.
    pub fn freeze_sealed(&mut self, sealed: impl Fn(u32) -> bool) -> Vec<(u32, Arc<Vec<Row>>)> {
        let ids: Vec<u32> = self
            .tables
            .keys()
            .copied()
            .filter(|id| sealed(*id) && !self.files.contains_key(id))
            .collect();
        self.freeze_tables(ids);
        self.frozen
            .iter()
            .filter(|(id, _)| !self.files.contains_key(id))
            .map(|(id, rows)| (*id, rows.clone()))
            .collect()
    }

    /// Frozen tables written to files ([`write_table`]): read from the files from now on.
    /// Returns the files of segments no longer listed (compacted away meanwhile), to remove.
    pub fn install_spilled(&mut self, written: Vec<TableFile>) -> Vec<PathBuf> {
        let mut stale = Vec::new();
        for f in written {
            if !self.files.contains_key(&f.segment) && self.frozen.remove(&f.segment).is_some() {
                self.files.insert(f.segment, Arc::new(f));
            } else {
                stale.push(f.path().to_path_buf());
            }
        }
        stale
    }

    /// At open, the replay passed the last step of the sealed `segment`: write its table to
    /// its file and read it from there (unless the segment has a file already, from the
    /// snapshot, as `freeze_sealed` leaves such a segment too). Best effort: if the file
    /// cannot be written, the table stays in memory, as before the replay spilled, and the
    /// background thread, a checkpoint or close tries again (a partial file is one the
    /// index does not name: the same open removes it, `db::remove_unnamed_tables`).
    pub fn spill_replayed(&mut self, io: &SharedIo, dir: &Path, segment: u32) {
        // The steps of a spill at run time (`freeze_sealed`, `write_table`, `install_spilled`)
        // without a lock between them; a table whose write failed stays frozen, and is
        // tried again with the next.
        let written = self
            .freeze_sealed(|id| id == segment)
            .into_iter()
            .filter_map(|(id, rows)| write_table(io, dir, id, &rows).ok())
            .collect();
        self.install_spilled(written);
    }

    /// Where a profile's steps are, in no particular order (`journal::read::steps_of` orders
    /// them by their arrival times). Reads the blocks of the table files that may hold them.
    pub fn locations(&self, key: u64) -> Result<Vec<Location>> {
        let mut out = Vec::new();
        let at = |segment: u32| {
            move |r: &Row| Location {
                segment,
                offset: r.offset,
                len: r.len,
            }
        };
        for (&segment, table) in &self.tables {
            out.extend(table.of_key(key).map(at(segment)));
        }
        for (&segment, rows) in &self.frozen {
            let from = rows.partition_point(|r| r.key < key);
            out.extend(
                rows[from..]
                    .iter()
                    .take_while(|r| r.key == key)
                    .map(at(segment)),
            );
        }
        for (&segment, f) in &self.files {
            out.extend(f.of_key(key)?.iter().map(at(segment)));
        }
        Ok(out)
    }

    /// Whether a step applied at `arrival` is kept as of `now` (the caller checks that its
    /// key resolves to a live profile). Every step in the log is listed (replay lists each),
    /// so the tables are not asked: a compaction would otherwise read a table block per step.
    pub fn keeps(&self, arrival: i64, now: i64) -> bool {
        self.enabled() && arrival >= self.horizon(now)
    }

    /// After a compaction switched: its inputs' tables replaced by its outputs' table files
    /// ([`write_outputs`]). Returns the inputs' table files, to remove once the index
    /// snapshot no longer names them.
    pub fn install(&mut self, inputs: &[u32], outputs: Vec<TableFile>) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        // Each output's bound: the newest of the inputs its steps came from (a rewrite of old
        // segments of steps keeps their old bounds where they do not mix with newer steps);
        // none if one of those inputs has none.
        let bounds: Vec<Option<i64>> = outputs
            .iter()
            .map(|f| {
                f.from
                    .iter()
                    .map(|id| self.newest.get(id).copied())
                    .try_fold(None, |newest: Option<i64>, b| Some(newest.max(Some(b?))))
                    .flatten()
            })
            .collect();
        for id in inputs {
            self.newest.remove(id);
            if let Some(t) = self.tables.remove(id) {
                self.steps -= t.rows.len();
            }
            if let Some(rows) = self.frozen.remove(id) {
                self.steps -= rows.len();
            }
            if let Some(f) = self.files.remove(id) {
                self.steps -= f.rows as usize;
                gone.push(f.path().to_path_buf());
            }
        }
        for (f, bound) in outputs.into_iter().zip(bounds) {
            if f.rows == 0 {
                gone.push(f.path().to_path_buf());
                continue;
            }
            self.steps += f.rows as usize;
            // An input without a bound (none is lost: a snapshot carries them) leaves the
            // output without one: it is never deleted whole, only rewritten.
            match bound {
                Some(b) => self.newest.insert(f.segment, b),
                None => self.newest.remove(&f.segment),
            };
            if let Some(old) = self.files.insert(f.segment, Arc::new(f)) {
                self.steps -= old.rows as usize;
            }
        }
        gone
    }

    /// Open the table files a loaded snapshot names (at open, before the log after the
    /// snapshot is replayed); one missing or not matching is an error (the caller then
    /// replays the whole log).
    pub fn attach(&mut self, io: &SharedIo, dir: &Path) -> Result<()> {
        for (segment, rows, crc) in std::mem::take(&mut self.named) {
            let f = TableFile::open(io, dir, segment, rows, crc)?;
            self.steps += f.rows as usize;
            self.files.insert(segment, Arc::new(f));
        }
        Ok(())
    }

    /// The segments whose steps all arrived before `horizon`, as far as their bounds say
    /// (a segment without one is not listed).
    pub fn expired_before(&self, horizon: i64) -> Vec<u32> {
        self.newest
            .iter()
            .filter(|(_, newest)| **newest < horizon)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forget the bounds of `segments` (no longer in the store).
    pub fn forget_bounds(&mut self, segments: &[u32]) {
        for id in segments {
            self.newest.remove(id);
        }
    }

    /// Whether the table file of `segment` is one the journal reads.
    pub fn has_file(&self, segment: u32) -> bool {
        self.files.contains_key(&segment)
    }

    /// Steps listed.
    pub fn len(&self) -> usize {
        self.steps
    }

    /// Heap bytes (the in-memory tables' rows, the files' block keys, the maps' nodes,
    /// roughly).
    pub fn heap_bytes(&self) -> usize {
        let tables: usize = self
            .tables
            .values()
            .map(|t| t.rows.capacity() * ROW_BYTES + 64)
            .sum();
        let frozen: usize = self
            .frozen
            .values()
            .map(|r| r.capacity() * ROW_BYTES + 64)
            .sum();
        let files: usize = self.files.values().map(|f| f.heap_bytes()).sum();
        tables + frozen + files
    }

    /// Steps in table files.
    pub fn file_steps(&self) -> usize {
        self.files.values().map(|f| f.rows as usize).sum()
    }

    /// The in-memory tables, each segment once: the appended-to and the frozen (a segment in
    /// both, which the log's order rules out, has its rows joined).
    fn memory_tables(&self) -> impl Iterator<Item = (u32, usize, Option<&Table>, Option<&[Row]>)> {
        let ids: std::collections::BTreeSet<u32> = self
            .tables
            .keys()
            .chain(self.frozen.keys())
            .copied()
            .collect();
        ids.into_iter().map(|id| {
            let t = self.tables.get(&id);
            let f = self.frozen.get(&id).map(|r| r.as_slice());
            let n = t.map_or(0, |t| t.rows.len()) + f.map_or(0, |f| f.len());
            (id, n, t, f)
        })
    }

    /// Bytes [`Journal::encode`] writes for the steps (the guard's part not included): exact,
    /// the snapshot announces the section's length from it.
    pub fn encoded_steps_len(&self) -> usize {
        let memory = self.steps - self.file_steps();
        let tables = self.memory_tables().count();
        16 + tables * 12
            + memory * ROW_BYTES
            + 8
            + self.files.len() * 16
            + 8
            + self.newest.len() * 12
    }

    /// The section of the index snapshot (docs/format.md, "Index snapshot"): clock i64, table
    /// count u64, then per segment held in memory `segment u32, n u64, n x (key u64, offset
    /// u32, len u32)`, each table sorted; then file count u64 and per table file `segment
    /// u32, rows u64, crc u32`; then bound count u64 and per segment `segment u32, newest
    /// i64` (segments increasing).
    #[cfg(test)]
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_with(out, &mut |_| {})
    }

    /// [`Journal::encode`], handing `out` to `spill` whenever it holds `spill_at` bytes or
    /// more (between two rows), so that a caller streaming the snapshot to a file holds a
    /// chunk, not the section (a million steps are 16 MB).
    pub fn encode_with(&self, out: &mut Vec<u8>, spill: &mut dyn FnMut(&mut Vec<u8>)) {
        const SPILL_AT: usize = 1 << 20;
        out.extend_from_slice(&self.clock.to_le_bytes());
        out.extend_from_slice(&(self.memory_tables().count() as u64).to_le_bytes());
        for (segment, n, table, frozen) in self.memory_tables() {
            out.extend_from_slice(&segment.to_le_bytes());
            out.extend_from_slice(&(n as u64).to_le_bytes());
            let mut write = |r: Row| {
                if out.len() >= SPILL_AT {
                    spill(out);
                }
                out.extend_from_slice(&r.to_bytes());
            };
            match (table, frozen) {
                (Some(t), None) => t.sorted_rows().for_each(&mut write),
                (None, Some(f)) => f.iter().copied().for_each(&mut write),
                (Some(t), Some(f)) => {
                    let mut all: Vec<Row> = t.rows.iter().chain(f).copied().collect();
                    all.sort_unstable();
                    all.into_iter().for_each(&mut write);
                }
                (None, None) => {}
            }
        }
        out.extend_from_slice(&(self.files.len() as u64).to_le_bytes());
        for f in self.files.values() {
            out.extend_from_slice(&f.segment.to_le_bytes());
            out.extend_from_slice(&f.rows.to_le_bytes());
            out.extend_from_slice(&f.crc.to_le_bytes());
        }
        out.extend_from_slice(&(self.newest.len() as u64).to_le_bytes());
        for (segment, newest) in &self.newest {
            out.extend_from_slice(&segment.to_le_bytes());
            out.extend_from_slice(&newest.to_le_bytes());
        }
        self.guard.encode(out);
    }

    /// Read the section written by [`Journal::encode`]; every count is checked against the
    /// bytes left before anything is allocated. The retention is not part of it; the table
    /// files it names are opened by [`Journal::attach`].
    pub fn decode(b: &[u8]) -> Result<Journal> {
        let fail = |at: usize, reason: &str| Error::Decode {
            what: "index snapshot (history section)",
            file: Default::default(),
            offset: at as u64,
            reason: reason.into(),
        };
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = b
                .get(at..at.saturating_add(n))
                .ok_or_else(|| fail(at, "truncated"))?;
            at += n;
            Ok(s)
        };
        let u64_of = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or([0; 8]));
        let u32_of = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or([0; 4]));
        let clock = u64_of(take(8)?) as i64;
        let count = u64_of(take(8)?);
        if count.saturating_mul(12) > b.len() as u64 {
            return Err(fail(16, "table count exceeds the section"));
        }
        let mut tables = BTreeMap::new();
        let mut steps = 0;
        for _ in 0..count {
            let segment = u32_of(take(4)?);
            let n = usize::try_from(u64_of(take(8)?)).unwrap_or(usize::MAX);
            let body = take(n.saturating_mul(ROW_BYTES))?;
            let rows: Vec<Row> = body.chunks_exact(ROW_BYTES).map(Row::from_bytes).collect();
            // Strictly increasing by key, then offset (two rows of one place are refused
            // whatever their lengths).
            if rows.is_empty() || !rows.is_sorted_by(|a, b| (a.key, a.offset) < (b.key, b.offset)) {
                return Err(fail(0, "a table empty or out of order"));
            }
            steps += rows.len();
            let sorted = rows.len();
            if tables.insert(segment, Table { rows, sorted }).is_some() {
                return Err(fail(0, "a segment's table twice"));
            }
        }
        let files = u64_of(take(8)?);
        if files.saturating_mul(16) > b.len() as u64 {
            return Err(fail(at, "table file count exceeds the section"));
        }
        let mut named: Vec<(u32, u64, u32)> = Vec::with_capacity(files as usize);
        for _ in 0..files {
            let segment = u32_of(take(4)?);
            let rows = u64_of(take(8)?);
            let crc = u32_of(take(4)?);
            // A segment may also have a table in memory: steps appended to it after its file
            // was written (the log's order rules it out; both are read).
            if named.last().is_some_and(|l| l.0 >= segment) {
                return Err(fail(
                    0,
                    "table files out of order, or a segment named twice",
                ));
            }
            named.push((segment, rows, crc));
        }
        let bounds = u64_of(take(8)?);
        if bounds.saturating_mul(12) > b.len() as u64 {
            return Err(fail(at, "arrival bound count exceeds the section"));
        }
        let mut newest = BTreeMap::new();
        for _ in 0..bounds {
            let segment = u32_of(take(4)?);
            let bound = u64_of(take(8)?) as i64;
            if newest.last_key_value().is_some_and(|(l, _)| *l >= segment) {
                return Err(fail(at, "arrival bounds out of order"));
            }
            newest.insert(segment, bound);
        }
        let guard = Guard::decode(b, &mut at).ok_or_else(|| fail(at, "damaged guard section"))?;
        if at != b.len() {
            return Err(fail(at, "trailing bytes"));
        }
        Ok(Journal {
            tables,
            frozen: BTreeMap::new(),
            files: BTreeMap::new(),
            named,
            newest,
            steps,
            in_log_bytes: 0,
            clock,
            retention_us: 0,
            guard,
        })
    }
}

/// One table file written from `rows` (sorted): a segment the log sealed.
pub(crate) fn write_table(
    io: &SharedIo,
    dir: &Path,
    segment: u32,
    rows: &[Row],
) -> Result<TableFile> {
    let mut w = Writer::create(io, dir, segment)?;
    for &r in rows {
        w.push(r)?;
    }
    w.finish()
}

/// Rows [`write_outputs`] maps through a compaction's moves at a time: looked up in the
/// order of their old places, which is the moves' order, so that the look-ups walk the moves
/// (12 bytes each, ~12 MB for W1's million steps) forward (`Places::get_walking`) instead of
/// jumping about all of them for each row in key order (a cache miss or more each); then
/// written in key order. Each batch walks all the moves once: 64 Ki rows (~3.5 MB of buffers)
/// make that ~16 walks for W1's million steps, whose look-ups are ~16 moves apart (~3 cache
/// lines) instead of ~64 with 16 Ki rows (stop 57: `Places::get` took 13 % of the
/// background compaction's samples, the walk with 64 Ki rows too few to list).
const MAP_BATCH: usize = 64 << 10;

/// A compaction's outputs' table files, written before its switch (without the index's
/// lock): every step of the inputs' tables that the compaction moved (`moved`: old place ->
/// new place) is listed in the table of the segment it moved to; one it dropped is not.
/// The inputs' tables are merged by key, so the outputs come out sorted, a key at a time
/// (a profile's steps ordered by their new places), a batch of keys at a time: the process
/// holds a chunk per table and a batch, not the tables.
pub(crate) fn write_outputs(
    io: &SharedIo,
    dir: &Path,
    sources: &Sources,
    moved: &Places,
) -> Result<Vec<TableFile>> {
    write_outputs_batched(io, dir, sources, moved, MAP_BATCH)
}

/// The inputs' cursors, each by the key of its next row (smallest first).
type Heads = std::collections::BinaryHeap<std::cmp::Reverse<(u64, usize)>>;

/// Append every row of the smallest key left (from every input's cursor) to `out`, as
/// `(key, old place)`; `false` when no row is left.
fn pull_key(
    heads: &mut Heads,
    cursors: &mut [(u32, Cursor)],
    out: &mut Vec<(u64, Location)>,
) -> Result<bool> {
    use std::cmp::Reverse;
    let Some(&Reverse((key, _))) = heads.peek() else {
        return Ok(false);
    };
    while let Some(&Reverse((k, i))) = heads.peek() {
        if k != key {
            break;
        }
        heads.pop();
        let (segment, c) = &mut cursors[i];
        while let Some(r) = c.peek()?.filter(|r| r.key == key) {
            let old = Location {
                segment: *segment,
                offset: r.offset,
                len: r.len,
            };
            out.push((key, old));
            c.advance();
        }
        if let Some(r) = c.peek()? {
            heads.push(Reverse((r.key, i)));
        }
    }
    Ok(true)
}

/// [`write_outputs`], mapping `batch` rows (whole keys) at a time.
fn write_outputs_batched(
    io: &SharedIo,
    dir: &Path,
    sources: &Sources,
    moved: &Places,
    batch: usize,
) -> Result<Vec<TableFile>> {
    use std::cmp::Reverse;
    let mut cursors: Vec<(u32, Cursor)> = sources.iter().map(|(id, s)| (*id, s.cursor())).collect();
    let mut heap = Heads::new();
    for (i, (_, c)) in cursors.iter_mut().enumerate() {
        if let Some(r) = c.peek()? {
            heap.push(Reverse((r.key, i)));
        }
    }
    let mut writers: BTreeMap<u32, Writer> = BTreeMap::new();
    // (new segment, row, old segment)
    let mut group: Vec<(u32, Row, u32)> = Vec::new();
    // A batch of rows, whole keys, in key order: (key, old place).
    let mut pending: Vec<(u64, Location)> = Vec::with_capacity(batch + 256);
    // Each row's old place packed as `segment << 32 | offset`, beside its index in `pending`:
    // sorted by value, without a look-up into `pending` per comparison.
    let mut order: Vec<(u64, u32)> = Vec::with_capacity(batch + 256);
    let mut mapped: Vec<Option<Location>> = Vec::with_capacity(batch + 256);
    loop {
        pending.clear();
        while pending.len() < batch && pull_key(&mut heap, &mut cursors, &mut pending)? {}
        if pending.is_empty() {
            break;
        }
        // Looked up in the order of their old places (see `MAP_BATCH`).
        order.clear();
        order.extend(pending.iter().enumerate().map(|(i, (_, old))| {
            (
                (u64::from(old.segment) << 32) | u64::from(old.offset),
                i as u32,
            )
        }));
        order.sort_unstable();
        mapped.clear();
        mapped.resize(pending.len(), None);
        let mut walk = crate::storage::Walk::default();
        for &(_, i) in &order {
            mapped[i as usize] = moved.get_walking(pending[i as usize].1, &mut walk);
        }
        // Written a key at a time, its rows ordered by their new places.
        let mut from = 0;
        while let Some(&(key, _)) = pending.get(from) {
            let to = from + pending[from..].iter().take_while(|p| p.0 == key).count();
            group.clear();
            group.extend(mapped[from..to].iter().zip(&pending[from..to]).filter_map(
                |(new, (_, old))| {
                    let new = (*new)?;
                    let row = Row {
                        key,
                        offset: new.offset,
                        len: new.len,
                    };
                    Some((new.segment, row, old.segment))
                },
            ));
            group.sort_unstable_by_key(|(s, r, _)| (*s, r.offset));
            for &(segment, row, source) in &group {
                let w = match writers.entry(segment) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(Writer::create(io, dir, segment)?)
                    }
                };
                w.push_from(row, source)?;
            }
            from = to;
        }
    }
    writers.into_values().map(Writer::finish).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u32, offset: u32) -> Location {
        Location {
            segment,
            offset,
            len: 9,
        }
    }

    fn sorted(mut v: Vec<Location>) -> Vec<Location> {
        v.sort_unstable_by_key(|l| (l.segment, l.offset));
        v
    }

    proptest::proptest! {
        /// The radix sort of appended rows sorts as `sort_unstable` does: rows in place order
        /// (keys of one to three passes, or of 64 bits), and rows in any order.
        #[test]
        fn appended_rows_sort_as_sort_unstable_does(
            n in 0usize..5000,
            key_bits in proptest::sample::select(vec![1u32, 8, 11, 12, 22, 23, 40, 64]),
            seed: u64,
            shuffled: bool,
        ) {
            let mut rng = crate::rng::SplitMix64(seed);
            let mut rows: Vec<Row> = (0..n as u32)
                .map(|i| Row {
                    key: rng.next_u64() >> (64 - key_bits),
                    offset: i * 16,
                    len: i % 7,
                })
                .collect();
            if shuffled && n > 1 {
                let k = rng.next_u64() as usize % n;
                rows.swap(0, k.max(1));
            }
            let mut want = rows.clone();
            want.sort_unstable();
            sort_appended(&mut rows);
            proptest::prop_assert_eq!(rows, want);
        }
    }

    #[test]
    fn the_section_round_trips_and_damage_is_an_error() {
        let mut j = Journal::default();
        j.push(5, 10, at(1, 32));
        j.push(5, 12, at(1, 64));
        j.push(7, 11, at(2, 96));
        // Segment 2's table still has its rows in log order, not sorted: written sorted.
        j.push(3, 13, at(2, 128));
        let mut b = Vec::new();
        j.encode(&mut b);
        assert_eq!(
            b.len(),
            j.encoded_steps_len() + 16,
            "the guard's part: 16 bytes"
        );
        let back = Journal::decode(&b).unwrap();
        for key in [3, 5, 7, 8] {
            assert_eq!(
                back.locations(key).unwrap(),
                j.locations(key).unwrap(),
                "key {key}"
            );
        }
        assert_eq!(back.len(), 4);
        assert_eq!(back.next_arrival(0), 14);
        // Each segment's bound: the newest arrival pushed to it, carried by the snapshot.
        assert_eq!(j.expired_before(12), Vec::<u32>::new());
        assert_eq!(j.expired_before(13), vec![1]);
        assert_eq!(back.expired_before(13), vec![1]);
        assert_eq!(back.expired_before(14), vec![1, 2]);
        for n in 0..b.len() {
            assert!(Journal::decode(&b[..n]).is_err());
        }
        let mut big = b.clone();
        big[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Journal::decode(&big).is_err());
        // Rows out of order (the first table's two rows swapped).
        let mut swapped = b.clone();
        let rows = 16 + 12;
        let (first, second) = swapped[rows..rows + 32].split_at_mut(16);
        first.swap_with_slice(second);
        assert!(Journal::decode(&swapped).is_err());
        // Bounds out of order (the two segments' swapped): the guard's 16 bytes follow them.
        let mut swapped = b.clone();
        let bounds = b.len() - 16 - 24;
        let (first, second) = swapped[bounds..bounds + 24].split_at_mut(12);
        first.swap_with_slice(second);
        assert!(Journal::decode(&swapped).is_err());
    }

    /// Steps of many keys in several segments, appended in log order: each key's locations
    /// are its own steps, whether its segment's table is sorted yet or not; a table merges
    /// its tail in once it passes `TAIL` rows (and a quarter of the rest); a snapshot writes
    /// every table sorted.
    #[test]
    fn each_key_finds_its_own_steps_in_every_table() {
        let mut j = Journal::default();
        let mut want: BTreeMap<u64, Vec<Location>> = BTreeMap::new();
        let mut arrival = 0;
        // Segments of 500 steps, and one of three tails and a half.
        for (segment, n) in [(1u32, 500u32), (2, 500), (3, 500), (4, 7 * TAIL as u32 / 2)] {
            for i in 0..n {
                // Keys out of order within a segment, as calls come.
                let key = u64::from((i * 7919) % 97);
                arrival += 1;
                j.push(key, arrival, at(segment, 32 + 16 * i));
                want.entry(key).or_default().push(at(segment, 32 + 16 * i));
            }
        }
        assert_eq!(j.len(), 1500 + 7 * TAIL / 2);
        assert!(j.tables[&1].sorted < 10, "a short table stays unsorted");
        let big = &j.tables[&4];
        assert!(big.sorted > 2 * TAIL, "merged in when the tail passed TAIL");
        assert!(big.rows.len() - big.sorted <= TAIL.max(big.sorted / 4));
        assert!(big.rows[..big.sorted].is_sorted());
        let check = |j: &Journal| {
            for key in 0..100u64 {
                let got = sorted(j.locations(key).unwrap());
                assert_eq!(
                    got,
                    want.get(&key).cloned().unwrap_or_default(),
                    "key {key}"
                );
            }
        };
        check(&j);
        let mut b = Vec::new();
        j.encode(&mut b);
        let back = Journal::decode(&b).expect("every table written sorted");
        check(&back);
        let sources = j.freeze(&[3, 4, 5]);
        assert_eq!(
            sources.len(),
            2,
            "a compaction's inputs are frozen as it begins"
        );
        assert_eq!(j.frozen[&3].len(), 500);
        assert!(j.frozen[&4].is_sorted(), "sorted whole");
        check(&j);
        let mut b = Vec::new();
        j.encode(&mut b);
        assert_eq!(b.len(), j.encoded_steps_len() + 16);
        check(&Journal::decode(&b).expect("frozen tables written sorted"));
        assert!(!j.keeps(1, 2), "history off keeps nothing");
        j.set_retention(std::time::Duration::from_secs(1));
        assert!(j.keeps(1, 2));
        assert!(!j.keeps(1, 2_000_002), "older than the window");
    }

    fn walk(j: &Journal, keys: std::ops::Range<u64>) -> Vec<Vec<Location>> {
        keys.map(|k| sorted(j.locations(k).unwrap())).collect()
    }

    /// Many moves, a step that did not move, and a move of a place no step is at: each step
    /// is listed in the table file of the segment its own move names; the inputs' tables (in
    /// memory and in files) are then forgotten, and their files handed back for removal.
    #[test]
    fn moves_apply_to_their_own_steps_only() {
        let dir = tempfile::tempdir().unwrap();
        let io: SharedIo = Arc::new(crate::storage::io::RealIo);
        let mut j = Journal::default();
        for i in 0..40u32 {
            j.push(u64::from(i % 3), i64::from(i), at(1 + i % 2, 32 * i));
        }
        // Segment 2's table goes to a file first (the log sealed it).
        let frozen = j.freeze_sealed(|id| id == 2);
        assert_eq!(frozen.len(), 1);
        let written = vec![write_table(&io, dir.path(), 2, &frozen[0].1).unwrap()];
        assert!(j.install_spilled(written).is_empty());
        assert!(j.has_file(2));
        let before = walk(&j, 0..3);
        let stays = before[0][0];
        // Every step but one moves: those of segment 1 to 9, those of 2 to 8, at 1000 + their
        // offset, in copy order (2 before 1, as a compaction orders inputs by first seq).
        let mut moved = crate::storage::Places::default();
        for seg in [2, 1] {
            for &l in before.iter().flatten().filter(|l| l.segment == seg) {
                if l != stays {
                    moved.push(l, at(10 - seg, 1000 + l.offset)).unwrap();
                }
            }
        }
        moved.push(at(1, 1), at(9, 1)).unwrap();
        moved.seal();
        let sources = j.freeze(&[1, 2, 5]);
        let outputs = write_outputs(&io, dir.path(), &sources, &moved).unwrap();
        drop(sources);
        assert_eq!(
            outputs.iter().map(|f| f.segment).collect::<Vec<_>>(),
            [8, 9]
        );
        // Each output's bound: the newest of the inputs its rows came from.
        let want: BTreeMap<u32, i64> = outputs
            .iter()
            .filter(|f| f.rows > 0)
            .map(|f| {
                let newest = f.from.iter().map(|id| j.newest[id]).max().unwrap();
                (f.segment, newest)
            })
            .collect();
        let gone = j.install(&[1, 2, 5], outputs);
        assert_eq!(gone, vec![dir.path().join(file::name(2))]);
        assert_eq!(
            want,
            BTreeMap::from([(8, 39), (9, 38)]),
            "2's odd steps moved to 8"
        );
        assert_eq!(j.newest, want, "the inputs' bounds are gone");
        assert_eq!(j.len(), 39);
        assert_eq!(j.file_steps(), 39);
        for (k, list) in before.iter().enumerate() {
            let want: Vec<Location> = list
                .iter()
                .filter(|l| **l != stays)
                .map(|l| at(10 - l.segment, 1000 + l.offset))
                .collect();
            assert_eq!(
                sorted(j.locations(k as u64).unwrap()),
                sorted(want),
                "key {k}"
            );
        }
        // A snapshot names the files; decoded and attached, it finds the same steps.
        let mut b = Vec::new();
        j.encode(&mut b);
        assert_eq!(b.len(), j.encoded_steps_len() + 16);
        let mut back = Journal::decode(&b).unwrap();
        assert_eq!(back.len(), 0, "nothing listed before the files are opened");
        back.attach(&io, dir.path()).unwrap();
        assert_eq!(back.len(), 39);
        assert_eq!(walk(&back, 0..3), walk(&j, 0..3));
        // A file the snapshot names, damaged: attaching is an error naming it.
        let path = dir.path().join(file::name(9));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = Journal::decode(&b)
            .unwrap()
            .attach(&io, dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&file::name(9)), "{e}");
        std::fs::remove_file(&path).unwrap();
        assert!(
            Journal::decode(&b)
                .unwrap()
                .attach(&io, dir.path())
                .is_err()
        );
    }

    /// A compaction with no table file of its own: a key's steps from several inputs, landing
    /// in one output out of their inputs' order, come out sorted by their new places.
    #[test]
    fn a_key_spread_over_inputs_is_written_in_its_new_order() {
        let dir = tempfile::tempdir().unwrap();
        let io: SharedIo = Arc::new(crate::storage::io::RealIo);
        let mut j = Journal::default();
        for seg in 1..=3u32 {
            for i in 0..5u32 {
                j.push(7, 0, at(seg, 32 + 64 * i));
                j.push(8, 0, at(seg, 64 + 64 * i));
            }
        }
        // Inputs copied 3, 1, 2 into segment 20; key 8's steps of segment 1 are dropped.
        let mut moved = crate::storage::Places::default();
        let mut next = 32;
        for seg in [3, 1, 2] {
            for l in sorted([j.locations(7).unwrap(), j.locations(8).unwrap()].concat()) {
                if l.segment == seg && !(seg == 1 && l.offset % 64 == 0) {
                    moved.push(l, at(20, next)).unwrap();
                    next += 16;
                }
            }
        }
        moved.seal();
        let sources = j.freeze(&[1, 2, 3]);
        let outputs = write_outputs(&io, dir.path(), &sources, &moved).unwrap();
        j.install(&[1, 2, 3], outputs);
        assert_eq!(j.len(), 25);
        assert_eq!(j.locations(7).unwrap().len(), 15);
        assert_eq!(j.locations(8).unwrap().len(), 10);
        assert!(j.locations(7).unwrap().is_sorted_by_key(|l| l.offset));
    }

    /// The outputs list each moved step in its new segment's table, sorted by key and new
    /// place, however many rows are mapped at a time (a batch ends only between keys).
    #[test]
    fn the_outputs_do_not_depend_on_the_batch() {
        let io: SharedIo = Arc::new(crate::storage::io::RealIo);
        let journal = || {
            let mut j = Journal::default();
            for i in 0..600u32 {
                j.push(
                    u64::from(i * 7 % 50),
                    i64::from(i),
                    at(1 + i % 3, 32 + 16 * i),
                );
            }
            j
        };
        // Copied 3, 1, 2 (as a compaction orders its inputs), 150 steps an output segment;
        // every 11th step dropped.
        let mut moved = crate::storage::Places::default();
        let mut want: BTreeMap<u64, Vec<Location>> = BTreeMap::new();
        let mut n = 0u32;
        for seg in [3, 1, 2] {
            for i in (0..600u32).filter(|i| 1 + i % 3 == seg && i % 11 != 0) {
                let new = at(20 + n / 150, 32 + 16 * n);
                moved.push(at(seg, 32 + 16 * i), new).unwrap();
                want.entry(u64::from(i * 7 % 50)).or_default().push(new);
                n += 1;
            }
        }
        moved.seal();
        for batch in [1, 2, 3, 64, MAP_BATCH] {
            let dir = tempfile::tempdir().unwrap();
            let mut j = journal();
            let sources = j.freeze(&[1, 2, 3]);
            let outputs = write_outputs_batched(&io, dir.path(), &sources, &moved, batch).unwrap();
            drop(sources);
            assert_eq!(outputs.len(), 4, "batch {batch}");
            j.install(&[1, 2, 3], outputs);
            assert_eq!(j.len(), n as usize, "batch {batch}");
            for (&key, places) in &want {
                assert_eq!(
                    sorted(j.locations(key).unwrap()),
                    sorted(places.clone()),
                    "batch {batch}, key {key}"
                );
            }
        }
    }

    /// A segment whose table went to a file and that then got more steps (what reading the
    /// appended-to segment outside the index's lock let happen, stop 19's review): both are
    /// read, and a snapshot of it decodes (it was refused before: every open scanned the log).
    #[test]
    fn a_segment_in_a_file_and_in_memory_is_read_and_snapshotted() {
        let dir = tempfile::tempdir().unwrap();
        let io: SharedIo = Arc::new(crate::storage::io::RealIo);
        let mut j = Journal::default();
        j.push(4, 1, at(6, 32));
        j.push(5, 2, at(6, 64));
        let frozen = j.freeze_sealed(|_| true);
        let written = vec![write_table(&io, dir.path(), 6, &frozen[0].1).unwrap()];
        drop(frozen);
        assert!(j.install_spilled(written).is_empty());
        j.push(4, 3, at(6, 96));
        assert!(
            j.freeze_sealed(|_| true).is_empty(),
            "a file's segment is not written twice"
        );
        let want = vec![at(6, 32), at(6, 96)];
        assert_eq!(sorted(j.locations(4).unwrap()), want);
        let mut b = Vec::new();
        j.encode(&mut b);
        assert_eq!(b.len(), j.encoded_steps_len() + 16);
        let mut back = Journal::decode(&b).unwrap();
        back.attach(&io, dir.path()).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(sorted(back.locations(4).unwrap()), want);
    }
}
