//! Where each profile's history steps are (entry kind 20, `entries::history`): profile key ->
//! the (arrival time, location) of its steps, oldest first, and the journal clock. Part of the
//! index so that it rides on the same lock, replay, compaction relocation and hint snapshot.
//!
//! A step is live for compaction while it is listed here, is younger than the retention
//! window and its key still resolves to a live profile (itself or, merged away, its survivor):
//! a deleted profile's steps, and those of every profile merged into it, are dropped by the
//! next compaction (which `delete --erase` runs at once).

use super::HashMap;
use super::guard::Guard;
use crate::error::{Error, Result};
use crate::storage::Location;

/// A profile's steps, oldest first: inline when there is one (most profiles of a store loaded
/// once), so reading the snapshot back allocates nothing for them.
type Steps = smallvec::SmallVec<[(i64, Location); 1]>;

/// Profile key -> its steps. Keys are handed out from 0 up, so most live in a vector indexed
/// by key (no hashing, and a snapshot reads back into it in one sequential pass). The vector
/// grows only while it stays within [`DENSE_SLACK`] slots of twice the keys it holds: any
/// other key (sparse keys, or a damaged log's far ones) goes to a map, so the memory follows
/// the steps held, whatever the keys.
#[derive(Debug, Clone, Default)]
struct ByKey {
    dense: Vec<Steps>,
    sparse: HashMap<u64, Steps>,
    /// Keys with at least one step.
    keys: usize,
    /// Steps held (kept by [`Journal`]: `push` adds, `forget_segments` recounts).
    steps: usize,
}

/// Slots the vector may hold beyond twice the keys it holds.
const DENSE_SLACK: u64 = 1 << 10;

impl ByKey {
    // A key lives in the map if it is there (it went there while beyond the vector's end,
    // and stays even once the vector grows past it), else in the vector.
    fn get(&self, key: u64) -> Option<&Steps> {
        if let Some(list) = self.sparse.get(&key) {
            return Some(list);
        }
        usize::try_from(key).ok().and_then(|k| self.dense.get(k))
    }

    /// The list of `key`, created empty if missing; the caller adds at least one step
    /// (counted here).
    fn list(&mut self, key: u64) -> &mut Steps {
        let grows_to = 2 * self.keys as u64 + DENSE_SLACK;
        let dense = key < (self.dense.len() as u64).max(grows_to);
        let list = if dense && !self.sparse.contains_key(&key) {
            let k = key as usize;
            if self.dense.len() <= k {
                self.dense.resize(k + 1, Steps::new());
            }
            &mut self.dense[k]
        } else {
            self.sparse.entry(key).or_default()
        };
        if list.is_empty() {
            self.keys += 1;
        }
        list
    }

    /// Keep in each list the steps `keep` says, and forget lists left empty.
    fn retain(&mut self, mut keep: impl FnMut(&(i64, Location)) -> bool) {
        for list in &mut self.dense {
            list.retain(|s| keep(s));
        }
        self.sparse.retain(|_, list| {
            list.retain(|s| keep(s));
            !list.is_empty()
        });
        (self.keys, self.steps) = self
            .iter()
            .fold((0, 0), |(keys, steps), (_, l)| (keys + 1, steps + l.len()));
        // Mostly empty now (a short retention on a store of many profiles): the keys left
        // move to the map, so the vector does not keep a slot for every key ever seen.
        if self.dense.len() as u64 > 2 * self.keys as u64 + DENSE_SLACK {
            let dense = std::mem::take(&mut self.dense);
            for (k, list) in dense.into_iter().enumerate() {
                if !list.is_empty() {
                    self.sparse.insert(k as u64, list);
                }
            }
        }
    }

    /// Change each step in place (their order by arrival must stay).
    fn for_each_step(&mut self, mut f: impl FnMut(&mut (i64, Location))) {
        for list in self.dense.iter_mut().chain(self.sparse.values_mut()) {
            list.iter_mut().for_each(&mut f);
        }
    }

    /// Every key with steps, and its steps.
    fn iter(&self) -> impl Iterator<Item = (u64, &Steps)> {
        let dense = self.dense.iter().enumerate().map(|(k, l)| (k as u64, l));
        dense
            .chain(self.sparse.iter().map(|(&k, l)| (k, l)))
            .filter(|(_, l)| !l.is_empty())
    }

    /// Heap bytes: the vector, the map's slots and every list spilled to the heap.
    fn heap_bytes(&self) -> usize {
        let step = std::mem::size_of::<(i64, Location)>();
        let spilled = |v: &Steps| {
            if v.spilled() {
                v.capacity() * step + 16
            } else {
                0
            }
        };
        self.dense.capacity() * std::mem::size_of::<Steps>()
            + self.sparse.capacity() * (std::mem::size_of::<(u64, Steps)>() + 1)
            + self.dense.iter().map(spilled).sum::<usize>()
            + self.sparse.values().map(spilled).sum::<usize>()
    }
}

/// Steps of every profile that has any, and the journal clock.
#[derive(Debug, Clone, Default)]
pub(crate) struct Journal {
    steps: ByKey,
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
        self.steps.steps += 1;
        let list = self.steps.list(key);
        // Replay and the write path both append in log order; keep the list sorted anyway.
        let i = list.partition_point(|s| s.0 <= arrival);
        list.insert(i, (arrival, at));
    }

    /// A profile's steps, oldest first.
    pub fn steps(&self, key: u64) -> &[(i64, Location)] {
        self.steps.get(key).map_or(&[], |v| v.as_slice())
    }

    /// Whether the step of `key` at `at`, applied at `arrival`, is kept (the caller checks that
    /// the key resolves to a live profile).
    pub fn keeps(&self, key: u64, arrival: i64, at: Location, now: i64) -> bool {
        if !self.enabled() || arrival < self.horizon(now) {
            return false;
        }
        // Sorted by arrival, and arrivals are unique within a store: one binary search.
        let list = self.steps(key);
        let i = list.partition_point(|s| s.0 < arrival);
        list[i..]
            .iter()
            .take_while(|s| s.0 == arrival)
            .any(|s| s.1 == at)
    }

    /// Steps moved by compaction, all at once: each listed step looked up by its place in
    /// the compaction's moves (kept by place: a compaction of a store with history moves
    /// about one step per call it kept, and its list of them, 40 bytes a move with kind and
    /// id, was the largest allocation of W1's peak). Steps not found stay; those left in the
    /// inputs are dropped by [`Journal::forget_segments`].
    pub fn relocate_all(&mut self, moved: &crate::storage::Places) {
        if moved.is_empty() {
            return;
        }
        self.steps.for_each_step(|s| {
            if let Some(new) = moved.get(s.1) {
                s.1 = new;
            }
        });
    }

    /// After a compaction switched: forget the steps left in its input segments (dropped).
    pub fn forget_segments(&mut self, inputs: &[u32]) {
        self.steps
            .retain(|s| inputs.binary_search(&s.1.segment).is_err());
    }

    /// Steps listed.
    pub fn len(&self) -> usize {
        self.steps.steps
    }

    /// Heap bytes (the key vector, map slots, lists spilled to the heap).
    pub fn heap_bytes(&self) -> usize {
        self.steps.heap_bytes()
    }

    /// Bytes [`Journal::encode`] writes for the steps (the guard's part not included): exact,
    /// the snapshot announces the section's length from it.
    pub fn encoded_steps_len(&self) -> usize {
        16 + self.steps.keys * 12 + self.len() * 20
    }

    /// The section of the index snapshot (docs/format.md, "Index snapshot"): clock i64, key
    /// count u64, then per key `key u64, n u32, n x (arrival i64, loc)`.
    #[cfg(test)]
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_with(out, &mut |_| {})
    }

    /// [`Journal::encode`], handing `out` to `spill` whenever it holds `spill_at` bytes or
    /// more (between two keys), so that a caller streaming the snapshot to a file holds a
    /// chunk, not the section (a million steps are 20 MB).
    pub fn encode_with(&self, out: &mut Vec<u8>, spill: &mut dyn FnMut(&mut Vec<u8>)) {
        const SPILL_AT: usize = 1 << 20;
        out.extend_from_slice(&self.clock.to_le_bytes());
        out.extend_from_slice(&(self.steps.keys as u64).to_le_bytes());
        for (key, list) in self.steps.iter() {
            if out.len() >= SPILL_AT {
                spill(out);
            }
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for (a, l) in list {
                out.extend_from_slice(&a.to_le_bytes());
                out.extend_from_slice(&l.segment.to_le_bytes());
                out.extend_from_slice(&l.offset.to_le_bytes());
                out.extend_from_slice(&l.len.to_le_bytes());
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
        let keys = u64_of(take(8)?);
        if keys.saturating_mul(12) > b.len() as u64 {
            return Err(fail(16, "key count exceeds the section"));
        }
        let mut steps = ByKey {
            dense: Vec::with_capacity(keys as usize),
            ..ByKey::default()
        };
        for _ in 0..keys {
            let key = u64_of(take(8)?);
            let n = u32_of(take(4)?) as usize;
            let body = take(n.saturating_mul(20))?;
            let list: Steps = body
                .chunks_exact(20)
                .map(|c| {
                    (
                        u64_of(&c[..8]) as i64,
                        Location {
                            segment: u32_of(&c[8..12]),
                            offset: u32_of(&c[12..16]),
                            len: u32_of(&c[16..20]),
                        },
                    )
                })
                .collect();
            if list.windows(2).any(|w| w[0].0 > w[1].0) {
                return Err(fail(0, "steps out of order"));
            }
            let slot = steps.list(key);
            if list.is_empty() || !slot.is_empty() {
                return Err(fail(0, "a key without steps, or twice"));
            }
            *slot = list;
            steps.steps += slot.len();
        }
        let guard = Guard::decode(b, &mut at).ok_or_else(|| fail(at, "damaged guard section"))?;
        if at != b.len() {
            return Err(fail(at, "trailing bytes"));
        }
        Ok(Journal {
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

    #[test]
    fn the_section_round_trips_and_damage_is_an_error() {
        let mut j = Journal::default();
        let l = |o| Location {
            segment: 1,
            offset: o,
            len: 9,
        };
        j.push(5, 10, l(32));
        j.push(5, 12, l(64));
        j.push(7, 11, l(96));
        let mut b = Vec::new();
        j.encode(&mut b);
        let back = Journal::decode(&b).unwrap();
        assert_eq!(back.steps(5), j.steps(5));
        assert_eq!(back.steps(7), j.steps(7));
        assert_eq!(back.next_arrival(0), 13);
        for n in 0..b.len() {
            assert!(Journal::decode(&b[..n]).is_err());
        }
        let mut big = b.clone();
        big[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Journal::decode(&big).is_err());
    }

    /// Keys far beyond the vector go to the map and stay found there when the vector grows
    /// past them; the key count and the snapshot see both; keys that jump far each time (a
    /// damaged or hostile log) cannot make the vector big.
    #[test]
    fn far_keys_live_in_the_map_and_round_trip() {
        let mut j = Journal::default();
        let l = |o| Location {
            segment: 1,
            offset: o,
            len: 9,
        };
        let far = 3 * DENSE_SLACK;
        j.push(far, 1, l(32));
        j.push(u64::MAX, 2, l(64));
        assert!(j.steps.dense.is_empty(), "far keys do not grow the vector");
        // Dense keys grow the vector past `far`.
        for k in 0..=far + 10 {
            j.push(k, 3, l(96));
        }
        assert!(
            j.steps.dense.len() as u64 > far,
            "the vector grew past the far key"
        );
        j.push(far, 5, l(160));
        assert_eq!(j.steps(far), &[(1, l(32)), (3, l(96)), (5, l(160))]);
        assert_eq!(j.steps(u64::MAX), &[(2, l(64))]);
        let keys = j.steps.iter().count();
        assert_eq!(j.steps.keys, keys);
        assert_eq!(j.len(), j.steps.iter().map(|(_, l)| l.len()).sum::<usize>());
        let mut b = Vec::new();
        j.encode(&mut b);
        let back = Journal::decode(&b).unwrap();
        assert_eq!(back.steps.keys, keys);
        for (k, list) in j.steps.iter() {
            assert_eq!(back.steps(k), list.as_slice());
        }
        assert_eq!(back.len(), j.len());

        // Keys a million apart: the vector stays within twice the keys plus the slack.
        let mut hostile = Journal::default();
        for i in 0..100u64 {
            hostile.push(i << 20, 1, l(32));
        }
        assert!(hostile.steps.dense.len() as u64 <= 2 * 100 + DENSE_SLACK);
        assert_eq!(hostile.len(), 100);
    }

    /// When most lists empty out (a short retention on a store of many profiles), the keys
    /// left move to the map and the vector goes.
    #[test]
    fn a_mostly_empty_vector_is_given_up() {
        let mut j = Journal::default();
        let at = |s, o| Location {
            segment: s,
            offset: o,
            len: 1,
        };
        for k in 0..10_000u64 {
            let segment = if k % 100 == 0 { 2 } else { 1 };
            j.push(k, k as i64, at(segment, 32));
        }
        assert_eq!(j.steps.dense.len(), 10_000);
        j.forget_segments(&[1]);
        assert!(j.steps.dense.is_empty());
        assert_eq!(j.steps.keys, 100);
        assert_eq!(j.len(), 100);
        assert_eq!(j.steps(200), &[(200, at(2, 32))]);
        assert!(j.steps(201).is_empty());
    }

    /// Many moves per profile, in any order, a step that did not move, and a move of a place
    /// no step is at: each step lands where its own move says.
    #[test]
    fn moves_apply_to_their_own_steps_only() {
        let mut j = Journal::default();
        let at = |s, o| Location {
            segment: s,
            offset: o,
            len: 1,
        };
        for i in 0..40u32 {
            j.push(u64::from(i % 3), i64::from(i), at(1 + i % 2, 32 * i));
        }
        let before: Vec<Vec<(i64, Location)>> = (0..3).map(|k| j.steps(k).to_vec()).collect();
        // Every step but the first of key 0 moves to segment 9 at 1000 + its offset; also
        // a place no step is at.
        let mut moved = crate::storage::Places::with_capacity(41);
        for l in before.iter().flatten().map(|s| s.1).rev() {
            if l != before[0][0].1 {
                moved.push(l, at(9, 1000 + l.offset));
            }
        }
        moved.push(at(1, 1), at(9, 1));
        moved.seal();
        j.relocate_all(&moved);
        for k in 0..3u64 {
            let want: Vec<(i64, Location)> = before[k as usize]
                .iter()
                .enumerate()
                .map(|(i, s)| match (k, i) {
                    (0, 0) => *s,
                    _ => (s.0, at(9, 1000 + s.1.offset)),
                })
                .collect();
            assert_eq!(j.steps(k), want.as_slice(), "key {k}");
        }
        assert!(j.steps(7).is_empty());
    }

    #[test]
    fn compaction_inputs_forget_their_steps() {
        let mut j = Journal::default();
        j.set_retention(std::time::Duration::from_secs(10));
        let at = |s, o| Location {
            segment: s,
            offset: o,
            len: 1,
        };
        j.push(1, 100, at(1, 32));
        j.push(1, 200, at(2, 32));
        assert!(j.keeps(1, 200, at(2, 32), 300));
        assert!(!j.keeps(1, 100, at(1, 32), 100 + 10_000_001));
        let mut moved = crate::storage::Places::default();
        moved.push(at(2, 32), at(3, 32));
        moved.seal();
        j.relocate_all(&moved);
        j.forget_segments(&[1, 2]);
        assert_eq!(j.steps(1), &[(200, at(3, 32))]);
    }
}
