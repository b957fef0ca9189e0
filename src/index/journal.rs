//! Where each profile's history steps are (entry kind 20, `entries::history`): per segment, a
//! table of its steps (profile key, place), and the journal clock. Part of the index so that
//! it rides on the same lock, replay, compaction relocation and hint snapshot.
//!
//! A step costs 16 bytes here (stop 18; it cost ~44 as a per-profile list of `(arrival,
//! location)`): its arrival time is not kept, it is the first field of the step's entry and
//! is read from there when a profile's steps are walked (`journal::read::steps_of`). A segment's
//! table is sorted by key and place, so the steps of one profile in it are one run, but for
//! the rows appended since its last merge (a bounded tail, [`TAIL`]); a compaction sorts its
//! inputs' tables whole as it begins.
//!
//! A step is live for compaction while it is listed here, is younger than the retention
//! window and its key still resolves to a live profile (itself or, merged away, its survivor):
//! a deleted profile's steps, and those of every profile merged into it, are dropped by the
//! next compaction (which `delete --erase` runs at once).

use std::collections::BTreeMap;

use super::guard::Guard;
use crate::error::{Error, Result};
use crate::storage::Location;

/// One step: its profile key and where its entry is in the table's segment. Ordered by key,
/// then place (within a segment, the log's order, which is the steps' arrival order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    key: u64,
    offset: u32,
    len: u32,
}

/// Bytes of a row in the snapshot (and in memory).
const ROW_BYTES: usize = 16;

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
/// size (a W1 segment of ~270,000 steps merges 4 times; ~180 instructions a call in all).
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
        tail.sort_unstable();
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

    fn contains(&self, row: Row) -> bool {
        self.rows[..self.sorted].binary_search(&row).is_ok()
            || self.rows[self.sorted..].contains(&row)
    }
}

/// Steps of every profile that has any, and the journal clock.
#[derive(Debug, Clone, Default)]
pub(crate) struct Journal {
    /// Segment id -> its steps.
    tables: BTreeMap<u32, Table>,
    /// Steps listed.
    steps: usize,
    /// Newest arrival time handed out or replayed (microseconds since the epoch).
    clock: i64,
    /// Retention window in microseconds; 0 = history off.
    retention_us: i64,
    /// The dynamic guard's state (`guard.rs`).
    pub guard: Guard,
}

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
        self.tables.entry(at.segment).or_default().push(Row {
            key,
            offset: at.offset,
            len: at.len,
        });
        self.steps += 1;
    }

    /// Sort the tables of `segments` (a compaction's inputs, as it begins): the compaction
    /// asks [`Journal::keeps`] about each of their steps, a binary search in a sorted table
    /// and a scan of an unsorted tail (the segment appended to until the compaction sealed
    /// it).
    pub fn settle(&mut self, segments: &[u32]) {
        for id in segments {
            if let Some(t) = self.tables.get_mut(id) {
                t.settle();
            }
        }
    }

    /// Where a profile's steps are, in no particular order (`journal::read::steps_of` orders
    /// them by their arrival times).
    pub fn locations(&self, key: u64) -> Vec<Location> {
        let mut out = Vec::new();
        for (&segment, table) in &self.tables {
            out.extend(table.of_key(key).map(|r| Location {
                segment,
                offset: r.offset,
                len: r.len,
            }));
        }
        out
    }

    /// Whether the step of `key` at `at`, applied at `arrival`, is kept (the caller checks that
    /// the key resolves to a live profile).
    pub fn keeps(&self, key: u64, arrival: i64, at: Location, now: i64) -> bool {
        if !self.enabled() || arrival < self.horizon(now) {
            return false;
        }
        self.tables.get(&at.segment).is_some_and(|t| {
            t.contains(Row {
                key,
                offset: at.offset,
                len: at.len,
            })
        })
    }

    /// After a compaction switched: its input segments' tables replaced by those of its
    /// outputs. Each step of an input is looked up by its place in the compaction's moves
    /// (kept by place: a compaction of a store with history moves about one step per call it
    /// kept); one that moved is listed in the table of the segment it moved to, one that did
    /// not was dropped with its segment. An input's table is freed once read, so the tables
    /// being built and those left to read hold each step once.
    pub fn relocate_all(&mut self, moved: &crate::storage::Places, inputs: &[u32]) {
        // Grown as rows come, not sized up front: an input's table is freed once read, so
        // the tables hold each step about once (sized up front, every output's table was
        // there before the first input's was freed: 5 MB more at W1's peak).
        let mut news: BTreeMap<u32, Table> = BTreeMap::new();
        for id in inputs {
            let Some(table) = self.tables.remove(id) else {
                continue;
            };
            self.steps -= table.rows.len();
            for r in &table.rows {
                let old = Location {
                    segment: *id,
                    offset: r.offset,
                    len: r.len,
                };
                if let Some(new) = moved.get(old) {
                    news.entry(new.segment).or_default().push(Row {
                        key: r.key,
                        offset: new.offset,
                        len: new.len,
                    });
                }
            }
        }
        for (segment, table) in news {
            if table.rows.is_empty() {
                continue;
            }
            // A compaction's outputs are new segments; were one listed already, the two
            // tables would be joined, never one lost.
            let t = self.tables.entry(segment).or_default();
            self.steps -= t.rows.len();
            if t.rows.is_empty() {
                *t = table;
            } else {
                t.rows.extend(table.rows);
                t.sorted = 0;
            }
            t.settle();
            self.steps += t.rows.len();
        }
    }

    /// Steps listed.
    pub fn len(&self) -> usize {
        self.steps
    }

    /// Heap bytes (the tables' rows and the map's nodes, roughly).
    pub fn heap_bytes(&self) -> usize {
        self.tables
            .values()
            .map(|t| t.rows.capacity() * ROW_BYTES + 64)
            .sum()
    }

    /// Bytes [`Journal::encode`] writes for the steps (the guard's part not included): exact,
    /// the snapshot announces the section's length from it.
    pub fn encoded_steps_len(&self) -> usize {
        16 + self.tables.len() * 12 + self.steps * ROW_BYTES
    }

    /// The section of the index snapshot (docs/format.md, "Index snapshot"): clock i64, table
    /// count u64, then per segment `segment u32, n u64, n x (key u64, offset u32, len u32)`,
    /// each table sorted.
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
        out.extend_from_slice(&(self.tables.len() as u64).to_le_bytes());
        for (segment, table) in &self.tables {
            out.extend_from_slice(&segment.to_le_bytes());
            out.extend_from_slice(&(table.rows.len() as u64).to_le_bytes());
            for r in table.sorted_rows() {
                if out.len() >= SPILL_AT {
                    spill(out);
                }
                out.extend_from_slice(&r.key.to_le_bytes());
                out.extend_from_slice(&r.offset.to_le_bytes());
                out.extend_from_slice(&r.len.to_le_bytes());
            }
        }
        self.guard.encode(out);
    }

    /// Read the section written by [`Journal::encode`]; every count is checked against the
    /// bytes left before anything is allocated. The retention is not part of it.
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
            let rows: Vec<Row> = body
                .chunks_exact(ROW_BYTES)
                .map(|c| Row {
                    key: u64_of(&c[..8]),
                    offset: u32_of(&c[8..12]),
                    len: u32_of(&c[12..16]),
                })
                .collect();
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
        let guard = Guard::decode(b, &mut at).ok_or_else(|| fail(at, "damaged guard section"))?;
        if at != b.len() {
            return Err(fail(at, "trailing bytes"));
        }
        Ok(Journal {
            tables,
            steps,
            clock,
            retention_us: 0,
            guard,
        })
    }
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
            assert_eq!(back.locations(key), j.locations(key), "key {key}");
        }
        assert_eq!(back.len(), 4);
        assert_eq!(back.next_arrival(0), 14);
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
                let got = sorted(j.locations(key));
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
        let unsorted = j.clone();
        j.settle(&[3, 4, 5]);
        assert_eq!(
            j.tables[&3].sorted, 500,
            "a compaction's inputs are sorted as it begins"
        );
        assert_eq!(j.tables[&4].sorted, 7 * TAIL / 2);
        check(&j);
        let step = at(3, 32 + 16 * 7);
        let key = u64::from((7u32 * 7919) % 97);
        assert!(!j.keeps(key, 1, step, 2), "history off keeps nothing");
        j.set_retention(std::time::Duration::from_secs(1));
        let mut unsorted = unsorted;
        unsorted.set_retention(std::time::Duration::from_secs(1));
        assert!(
            unsorted.keeps(key, 1, step, 2),
            "found in an unsorted tail too"
        );
        assert!(j.keeps(key, 1, step, 2));
        assert!(!j.keeps(key + 1, 1, step, 2), "another key's step");
        assert!(!j.keeps(key, 1, at(3, 33), 2), "no step there");
        assert!(!j.keeps(key, 1, step, 2_000_002), "older than the window");
    }

    /// Many moves, in any order, a step that did not move, and a move of a place no step is
    /// at: each step lands where its own move says; the inputs' tables are then forgotten.
    #[test]
    fn moves_apply_to_their_own_steps_only() {
        let mut j = Journal::default();
        for i in 0..40u32 {
            j.push(u64::from(i % 3), i64::from(i), at(1 + i % 2, 32 * i));
        }
        let before: Vec<Vec<Location>> = (0..3).map(|k| sorted(j.locations(k))).collect();
        let stays = before[0][0];
        // Every step but one moves to segment 9 at 1000 + its offset.
        let mut moved = crate::storage::Places::with_capacity(41);
        for &l in before.iter().flatten().rev() {
            if l != stays {
                moved.push(l, at(9, 1000 + l.offset));
            }
        }
        moved.push(at(1, 1), at(9, 1));
        moved.seal();
        j.relocate_all(&moved, &[1, 2, 5]);
        assert_eq!(j.len(), 39);
        for (k, list) in before.iter().enumerate() {
            let want: Vec<Location> = list
                .iter()
                .filter(|l| **l != stays)
                .map(|l| at(9, 1000 + l.offset))
                .collect();
            assert_eq!(sorted(j.locations(k as u64)), sorted(want), "key {k}");
        }
    }

    #[test]
    fn compaction_inputs_forget_their_steps() {
        let mut j = Journal::default();
        j.set_retention(std::time::Duration::from_secs(10));
        j.push(1, 100, at(1, 32));
        j.push(1, 200, at(2, 32));
        assert!(j.keeps(1, 200, at(2, 32), 300));
        assert!(!j.keeps(1, 100, at(1, 32), 100 + 10_000_001));
        let mut moved = crate::storage::Places::default();
        moved.push(at(2, 32), at(3, 32));
        moved.seal();
        j.relocate_all(&moved, &[1, 2]);
        assert_eq!(j.locations(1), vec![at(3, 32)]);
        assert_eq!(j.len(), 1);
        assert!(j.keeps(1, 200, at(3, 32), 300));
    }
}
