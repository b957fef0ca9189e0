//! Where a compaction moved the entries it copied, both lists in anonymous maps
//! (`super::anon`): [`Places`] for the entries the layer above finds by their place
//! ([`super::CopyAs::KeepByPlace`]: a profile's history steps, about one per call kept; old
//! place -> new place, 12 bytes a move), [`Moves`] for the others (`(kind, id, old, new)`, 33
//! bytes a move).

use super::Location;
use super::anon::MapList;
use super::record::{u32_at, u64_at};
use crate::types::sorted::gallop_by_key;

/// One move: the entry's old offset, its new segment and offset (u32 little-endian each). Its
/// old segment is its list's; its length does not change (the entry is copied as it is).
type Move = [u8; 12];

/// The `i`-th u32 of a move (0: old offset, 1: new segment, 2: new offset).
fn word(m: &Move, i: usize) -> u32 {
    u32_at(m, 4 * i).unwrap_or_default()
}

fn old_offset(m: &Move) -> u32 {
    word(m, 0)
}

/// The moves of one compaction, a list per input segment. A compaction reads each input
/// segment front to back (interleaved with the others in seq order: stop 22), so each list
/// comes in increasing old offsets: found by a binary search over the segments, then one
/// within the segment's list. A list per segment, not one list for all: one list would need
/// a guess of its length, and its runs of one segment would be as many as the times the
/// interleaved reading came back to the segment. The lists are anonymous maps, not `Vec`s
/// (`super::anon`): they take megabytes, and a compaction drops them all at its end.
#[derive(Debug, Default)]
pub struct Places {
    /// `(input segment, its moves)`; sorted by segment once sealed ([`Places::seal`]).
    segments: Vec<(u32, MapList<12>)>,
    /// Index in `segments` of the last move's segment.
    last: usize,
}

impl Places {
    /// The entry at `old` was copied, as it is, to `new`. An error only if the kernel
    /// refuses memory for the list.
    pub(crate) fn push(&mut self, old: Location, new: Location) -> std::io::Result<()> {
        debug_assert_eq!(old.len, new.len, "an entry moved by place keeps its bytes");
        if self
            .segments
            .get(self.last)
            .is_none_or(|s| s.0 != old.segment)
        {
            self.last = match self.segments.iter().position(|s| s.0 == old.segment) {
                Some(i) => i,
                None => {
                    self.segments.push((old.segment, MapList::default()));
                    self.segments.len() - 1
                }
            };
        }
        let mut m = [0u8; 12];
        m[..4].copy_from_slice(&old.offset.to_le_bytes());
        m[4..8].copy_from_slice(&new.segment.to_le_bytes());
        m[8..].copy_from_slice(&new.offset.to_le_bytes());
        self.segments[self.last].1.push(m)
    }

    /// Make the moves searchable: sorted by segment, and each segment's list by old offset
    /// (already so, but a list out of order would only be slower to seal, never wrong).
    pub(crate) fn seal(&mut self) {
        for (_, moves) in &mut self.segments {
            if !moves.as_slice().is_sorted_by_key(old_offset) {
                moves.sort_by_key(old_offset);
            }
        }
        self.segments.sort_unstable_by_key(|s| s.0);
        self.last = usize::MAX;
    }

    /// Where the entry that was at `old` is now; `None` if it was not moved by place (the
    /// tests' reference for [`Places::get_walking`]).
    #[cfg(test)]
    pub fn get(&self, old: Location) -> Option<Location> {
        let i = self
            .segments
            .binary_search_by_key(&old.segment, |s| s.0)
            .ok()?;
        let moves = self.segments[i].1.as_slice();
        let m = &moves[moves.binary_search_by_key(&old.offset, old_offset).ok()?];
        Some(Location {
            segment: word(m, 1),
            offset: word(m, 2),
            len: old.len,
        })
    }

    /// [`Places::get`], for places asked in increasing order (the history tables' rows of a
    /// batch, sorted by old place: `journal::write_outputs`): `at` is where the last one
    /// was. Within the same segment and forward of it, the move is searched for by
    /// galloping from there (steps of 1, 2, 4, ... then a binary search of the last one), so
    /// that the look-ups walk the list (12 bytes a move, ~12 MB for W1's million steps)
    /// nearly in order instead of each touching ~20 places spread over all of it. Any order
    /// gives the right answers; increasing order makes them cheap.
    pub fn get_walking(&self, old: Location, at: &mut Walk) -> Option<Location> {
        if self
            .segments
            .get(at.segment)
            .is_none_or(|s| s.0 != old.segment)
        {
            at.segment = self
                .segments
                .binary_search_by_key(&old.segment, |s| s.0)
                .ok()?;
            at.position = 0;
        }
        let moves = self.segments[at.segment].1.as_slice();
        // Every move before the last one found is below `old` when the places come in
        // increasing order (a segment's old offsets are distinct); otherwise from the start.
        let from = match moves.get(at.position) {
            Some(m) if old_offset(m) <= old.offset => at.position,
            _ => 0,
        };
        let found = gallop_by_key(moves, from, &old.offset, old_offset);
        // The last move at or before `old` (where the next, larger place starts).
        at.position = found.unwrap_or_else(|i| i.saturating_sub(1));
        let m = moves.get(found.ok()?)?;
        Some(Location {
            segment: word(m, 1),
            offset: word(m, 2),
            len: old.len,
        })
    }
}

/// Where [`Places::get_walking`]'s last look-up was: an index into the segments and one into
/// that segment's moves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Walk {
    segment: usize,
    position: usize,
}

/// `(kind, id, old place, new place)` of every entry a compaction copied and listed (all but
/// those kept by place): 33 bytes each in an anonymous map (`super::anon`), in copy order
/// until the copy ends, then sorted by kind and id ([`Moves::sort_by_kind_and_id`]).
#[derive(Debug, Default)]
pub struct Moves {
    list: MapList<33>,
}

impl Moves {
    /// An empty list sized for about `n` moves (pages are resident only once written).
    pub(crate) fn with_capacity(n: usize) -> Self {
        Moves {
            list: MapList::with_capacity(n),
        }
    }

    /// Add a move. An error only if the kernel refuses memory for the list.
    pub(crate) fn push(
        &mut self,
        kind: u8,
        id: u64,
        old: Location,
        new: Location,
    ) -> std::io::Result<()> {
        let mut r = [0u8; 33];
        r[0] = kind;
        r[1..9].copy_from_slice(&id.to_le_bytes());
        for (i, v) in [
            old.segment,
            old.offset,
            old.len,
            new.segment,
            new.offset,
            new.len,
        ]
        .into_iter()
        .enumerate()
        {
            r[9 + 4 * i..13 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        self.list.push(r)
    }

    /// Moves listed.
    #[cfg(any(test, feature = "testing"))]
    pub fn len(&self) -> usize {
        self.list.as_slice().len()
    }

    /// Whether none is listed.
    #[cfg(any(test, feature = "testing"))]
    pub fn is_empty(&self) -> bool {
        self.list.as_slice().is_empty()
    }

    /// Sort the moves by kind, then id (in place). The layer above applies them under its
    /// locks, to tables indexed by id (profile key): in this order it walks those tables
    /// forwards instead of at random, a cache miss a move (W1: 100,000-190,000 moves a
    /// compaction). Moves of one kind and id keep no particular order: each names its own
    /// old place.
    pub(crate) fn sort_by_kind_and_id(&mut self) {
        self.list
            .sort_by_key(|r| (r[0], u64_at(r, 1).unwrap_or_default()));
    }

    /// The moves, `(kind, id, old, new)`: in copy order, or sorted once
    /// [`Moves::sort_by_kind_and_id`] ran.
    pub fn iter(&self) -> impl Iterator<Item = (u8, u64, Location, Location)> + '_ {
        self.list.as_slice().iter().map(|r| {
            let w = |i: usize| u32_at(r, 9 + 4 * i).unwrap_or_default();
            (
                r[0],
                u64_at(r, 1).unwrap_or_default(),
                Location {
                    segment: w(0),
                    offset: w(1),
                    len: w(2),
                },
                Location {
                    segment: w(3),
                    offset: w(4),
                    len: w(5),
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(segment: u32, offset: u32, len: u32) -> Location {
        Location {
            segment,
            offset,
            len,
        }
    }

    #[test]
    fn every_move_is_found_by_its_old_place_and_nothing_else_is() {
        let mut p = Places::default();
        // Inputs read in seq order, not id order; a segment met again adds to its list.
        let moves = [
            (loc(7, 40, 10), loc(20, 40, 10)),
            (loc(7, 90, 5), loc(20, 60, 5)),
            (loc(3, 40, 8), loc(20, 80, 8)),
            (loc(3, 200, 8), loc(21, 40, 8)),
            (loc(7, 300, 4), loc(21, 60, 4)),
        ];
        for (old, new) in moves {
            p.push(old, new).unwrap();
        }
        p.seal();
        for (old, new) in moves {
            assert_eq!(p.get(old), Some(new), "{old:?}");
        }
        for missing in [loc(7, 41, 10), loc(3, 0, 8), loc(4, 40, 8), loc(21, 40, 8)] {
            assert_eq!(p.get(missing), None, "{missing:?}");
        }
        assert_eq!(Places::default().get(loc(1, 40, 1)), None);
    }

    proptest::proptest! {
        /// Sorted, the moves are the same moves (each read back as pushed, the kinds and ids
        /// of the full 0..=255 and u64 ranges among them), in the order of a plain sort of
        /// them by `(kind, id)`.
        #[test]
        fn sorted_moves_are_the_moves_a_plain_sort_orders(
            moves in proptest::collection::vec(
                (
                    proptest::prop_oneof![0u8..3, proptest::num::u8::ANY],
                    proptest::prop_oneof![0u64..20, proptest::num::u64::ANY],
                    proptest::num::u32::ANY,
                    proptest::num::u32::ANY,
                ),
                0..400,
            ),
        ) {
            let mut m = Moves::with_capacity(moves.len());
            let mut model = Vec::new();
            for (i, &(kind, id, old, new)) in moves.iter().enumerate() {
                let (old, new) = (loc(i as u32 + 1, old, 7), loc(900, new, 7));
                m.push(kind, id, old, new).unwrap();
                model.push((kind, id, old, new));
            }
            m.sort_by_kind_and_id();
            let got: Vec<_> = m.iter().collect();
            // Each old place is a move's own: sorting by the whole tuple fixes the order
            // of moves of one kind and id, which the sort leaves open.
            let mut same_order = got.clone();
            same_order.sort_by_key(|&(kind, id, old, _)| (kind, id, old.segment));
            model.sort_by_key(|&(kind, id, old, _)| (kind, id, old.segment));
            proptest::prop_assert_eq!(&same_order, &model);
            proptest::prop_assert!(got.windows(2).all(|w| (w[0].0, w[0].1) <= (w[1].0, w[1].1)));
        }

        /// Every move is found by its old place, whatever the spacing of the offsets (gaps
        /// of a few bytes, hundreds and up to 100,000, mixed), and no other place is found.
        #[test]
        fn the_search_finds_what_a_map_finds(
            gaps in proptest::collection::vec(
                proptest::prop_oneof![1u32..4, 1u32..200, 1u32..100_000],
                0..300,
            ),
            probes in proptest::collection::vec(0u32..2_000_000, 0..50),
        ) {
            let mut p = Places::default();
            let mut model = std::collections::HashMap::new();
            let mut offset = 40u32;
            for (i, gap) in gaps.iter().enumerate() {
                offset = offset.saturating_add(*gap);
                let (old, new) = (loc(3, offset, 1), loc(9, i as u32, 1));
                p.push(old, new).unwrap();
                model.insert(offset, new);
            }
            p.seal();
            for (&off, &new) in &model {
                proptest::prop_assert_eq!(p.get(loc(3, off, 1)), Some(new));
            }
            for off in probes.iter().copied().chain([0, 39, 40, u32::MAX]) {
                proptest::prop_assert_eq!(p.get(loc(3, off, 1)), model.get(&off).copied());
            }
            // Walking: the moved places and the probes in increasing order (as
            // `write_outputs` asks), then in the order given, and places of another segment.
            let mut asked: Vec<u32> = model.keys().copied().chain(probes.iter().copied()).collect();
            asked.sort_unstable();
            asked.extend(probes.iter().copied().chain(model.keys().copied()));
            let mut walk = Walk::default();
            for &off in &asked {
                proptest::prop_assert_eq!(
                    p.get_walking(loc(3, off, 1), &mut walk),
                    model.get(&off).copied()
                );
                proptest::prop_assert_eq!(p.get_walking(loc(4, off, 1), &mut walk), None);
            }
            // Three segments whose moves interleave as the inputs are read, walked by
            // increasing (segment, place) as `write_outputs` asks, then in the order given.
            let mut q = Places::default();
            let mut model3 = std::collections::HashMap::new();
            for (i, &off) in model.keys().enumerate() {
                for segment in [7u32, 2, 5] {
                    let new = loc(20 + segment, i as u32, 1);
                    q.push(loc(segment, off, 1), new).unwrap();
                    model3.insert((segment, off), new);
                }
            }
            q.seal();
            let mut places: Vec<(u32, u32)> = [2u32, 5, 6, 7]
                .into_iter()
                .flat_map(|s| asked.iter().map(move |&o| (s, o)))
                .collect();
            places.sort_unstable();
            places.extend(probes.iter().map(|&o| (5, o)));
            let mut walk = Walk::default();
            for (segment, off) in places {
                proptest::prop_assert_eq!(
                    q.get_walking(loc(segment, off, 1), &mut walk),
                    model3.get(&(segment, off)).copied()
                );
            }
        }
    }

    /// Two inputs read interleaved, a frame from each in turn (a compacted segment and a
    /// segment of steps of one earlier compaction): every move is found.
    #[test]
    fn interleaved_inputs_are_found_whole() {
        let mut p = Places::default();
        let mut moves = Vec::new();
        for i in 0..1_000u32 {
            let old = loc(4 + i % 2, 40 + i * 10, 3);
            let new = loc(30, 40 + i * 3, 3);
            p.push(old, new).unwrap();
            moves.push((old, new));
        }
        p.seal();
        assert_eq!(p.segments.len(), 2);
        for (old, new) in &moves {
            assert_eq!(p.get(*old), Some(*new), "{old:?}");
        }
        // Walked in increasing place (segment, offset), as `write_outputs` asks.
        moves.sort_by_key(|(old, _)| (old.segment, old.offset));
        let mut walk = Walk::default();
        for (old, new) in moves {
            assert_eq!(p.get_walking(old, &mut walk), Some(new), "{old:?}");
        }
        assert_eq!(p.get(loc(4, 50, 3)), None);
    }

    #[test]
    fn moves_read_back_whole_and_in_order() {
        let mut m = Moves::with_capacity(2);
        assert!(m.is_empty());
        let all: Vec<_> = (0..20_000u32)
            .map(|i| {
                (
                    (i % 23) as u8,
                    u64::MAX - u64::from(i) * 7_919,
                    loc(i, i.wrapping_mul(31), i ^ 0x55),
                    loc(u32::MAX - i, i, 1 + i % 9),
                )
            })
            .collect();
        for &(k, id, old, new) in &all {
            m.push(k, id, old, new).unwrap();
        }
        assert_eq!(m.len(), all.len());
        assert_eq!(m.iter().collect::<Vec<_>>(), all);
    }

    #[test]
    fn a_run_out_of_order_is_sorted_when_sealed() {
        let mut p = Places::default();
        p.push(loc(5, 300, 1), loc(9, 40, 1)).unwrap();
        p.push(loc(5, 100, 1), loc(9, 41, 1)).unwrap();
        p.push(loc(5, 200, 1), loc(9, 42, 1)).unwrap();
        p.seal();
        assert_eq!(p.get(loc(5, 100, 1)), Some(loc(9, 41, 1)));
        assert_eq!(p.get(loc(5, 200, 1)), Some(loc(9, 42, 1)));
        assert_eq!(p.get(loc(5, 300, 1)), Some(loc(9, 40, 1)));
    }
}
