//! Where a compaction moved the entries the layer above finds by their place
//! ([`super::CopyAs::KeepByPlace`]: a profile's history steps, about one per call kept): old
//! place -> new place, 12 bytes a move instead of the 40 of a `(kind, id, old, new)` move.

use super::Location;

/// One move: the entry's old offset, its new segment and offset. Its old segment is its
/// list's; its length does not change (the entry is copied as it is).
#[derive(Debug, Clone, Copy)]
struct Move {
    old_offset: u32,
    segment: u32,
    offset: u32,
}

/// The moves of one compaction, a list per input segment. A compaction reads each input
/// segment front to back (interleaved with the others in seq order: stop 22), so each list
/// comes in increasing old offsets: found by a binary search over the segments, then one
/// within the segment's list. A list per segment, not one list for all: one list would grow
/// by doubling (two copies of the largest allocation of a W1 compaction at that moment) or
/// need a guess of its length, and its runs of one segment would be as many as the times
/// the interleaved reading came back to the segment.
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// `(input segment, its moves)`; sorted by segment once sealed ([`Places::seal`]).
    segments: Vec<(u32, Vec<Move>)>,
    /// Index in `segments` of the last move's segment.
    last: usize,
}

impl Places {
    /// The entry at `old` was copied, as it is, to `new`.
    pub(crate) fn push(&mut self, old: Location, new: Location) {
        debug_assert_eq!(old.len, new.len, "an entry moved by place keeps its bytes");
        if self
            .segments
            .get(self.last)
            .is_none_or(|s| s.0 != old.segment)
        {
            self.last = match self.segments.iter().position(|s| s.0 == old.segment) {
                Some(i) => i,
                None => {
                    self.segments.push((old.segment, Vec::new()));
                    self.segments.len() - 1
                }
            };
        }
        self.segments[self.last].1.push(Move {
            old_offset: old.offset,
            segment: new.segment,
            offset: new.offset,
        });
    }

    /// Make the moves searchable: sorted by segment, and each segment's list by old offset
    /// (already so, but a list out of order would only be slower to seal, never wrong).
    pub(crate) fn seal(&mut self) {
        for (_, moves) in &mut self.segments {
            if !moves.is_sorted_by_key(|m| m.old_offset) {
                moves.sort_unstable_by_key(|m| m.old_offset);
            }
        }
        self.segments.sort_unstable_by_key(|s| s.0);
        self.last = usize::MAX;
    }

    /// Where the entry that was at `old` is now; `None` if it was not moved by place.
    pub fn get(&self, old: Location) -> Option<Location> {
        let i = self
            .segments
            .binary_search_by_key(&old.segment, |s| s.0)
            .ok()?;
        let moves = &self.segments[i].1;
        let j = moves
            .binary_search_by_key(&old.offset, |m| m.old_offset)
            .ok()?;
        Some(Location {
            segment: moves[j].segment,
            offset: moves[j].offset,
            len: old.len,
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
            p.push(old, new);
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
                p.push(old, new);
                model.insert(offset, new);
            }
            p.seal();
            for (&off, &new) in &model {
                proptest::prop_assert_eq!(p.get(loc(3, off, 1)), Some(new));
            }
            for off in probes.into_iter().chain([0, 39, 40, u32::MAX]) {
                proptest::prop_assert_eq!(p.get(loc(3, off, 1)), model.get(&off).copied());
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
            p.push(old, new);
            moves.push((old, new));
        }
        p.seal();
        assert_eq!(p.segments.len(), 2);
        for (old, new) in moves {
            assert_eq!(p.get(old), Some(new), "{old:?}");
        }
        assert_eq!(p.get(loc(4, 50, 3)), None);
    }

    #[test]
    fn a_run_out_of_order_is_sorted_when_sealed() {
        let mut p = Places::default();
        p.push(loc(5, 300, 1), loc(9, 40, 1));
        p.push(loc(5, 100, 1), loc(9, 41, 1));
        p.push(loc(5, 200, 1), loc(9, 42, 1));
        p.seal();
        assert_eq!(p.get(loc(5, 100, 1)), Some(loc(9, 41, 1)));
        assert_eq!(p.get(loc(5, 200, 1)), Some(loc(9, 42, 1)));
        assert_eq!(p.get(loc(5, 300, 1)), Some(loc(9, 40, 1)));
    }
}
