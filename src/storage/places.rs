//! Where a compaction moved the entries the layer above finds by their place
//! ([`super::CopyAs::KeepByPlace`]: a profile's history steps, about one per call kept): old
//! place -> new place, 12 bytes a move instead of the 40 of a `(kind, id, old, new)` move.

use super::Location;

/// One move: the entry's old offset, its new segment and offset. Its segment is its run's;
/// its length does not change (the entry is copied as it is).
#[derive(Debug, Clone, Copy)]
struct Move {
    old_offset: u32,
    segment: u32,
    offset: u32,
}

/// The moves of one compaction, in copy order. A compaction reads each input segment once,
/// front to back, so the moves out of one segment are one run of increasing old offsets:
/// found by a binary search over the runs, then one within the run.
#[derive(Debug, Clone, Default)]
pub struct Places {
    moves: Vec<Move>,
    /// `(input segment, first move, end)` per run; sorted by segment once the compaction is
    /// prepared ([`Places::seal`]).
    runs: Vec<(u32, usize, usize)>,
}

impl Places {
    /// Room for `n` moves (the layer above's bound: sized once, not grown by doubling).
    pub(crate) fn with_capacity(n: usize) -> Places {
        Places {
            moves: Vec::with_capacity(n),
            runs: Vec::new(),
        }
    }

    /// The entry at `old` was copied, as it is, to `new`.
    pub(crate) fn push(&mut self, old: Location, new: Location) {
        debug_assert_eq!(old.len, new.len, "an entry moved by place keeps its bytes");
        let i = self.moves.len();
        match self.runs.last_mut() {
            Some(run) if run.0 == old.segment => run.2 = i + 1,
            _ => self.runs.push((old.segment, i, i + 1)),
        }
        self.moves.push(Move {
            old_offset: old.offset,
            segment: new.segment,
            offset: new.offset,
        });
    }

    /// Make the moves searchable: runs sorted by segment, and each run by old offset (already
    /// so, but a run out of order would only be slower to seal, never wrong).
    pub(crate) fn seal(&mut self) {
        for &(_, from, to) in &self.runs {
            let run = &mut self.moves[from..to];
            if !run.is_sorted_by_key(|m| m.old_offset) {
                run.sort_unstable_by_key(|m| m.old_offset);
            }
        }
        self.runs.sort_unstable_by_key(|r| (r.0, r.1));
    }

    /// Where the entry that was at `old` is now; `None` if it was not moved by place.
    pub fn get(&self, old: Location) -> Option<Location> {
        let first = self.runs.partition_point(|r| r.0 < old.segment);
        self.runs[first..]
            .iter()
            .take_while(|r| r.0 == old.segment)
            .find_map(|&(_, from, to)| {
                let run = &self.moves[from..to];
                let i = run
                    .binary_search_by_key(&old.offset, |m| m.old_offset)
                    .ok()?;
                Some(Location {
                    segment: run[i].segment,
                    offset: run[i].offset,
                    len: old.len,
                })
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
        let mut p = Places::with_capacity(8);
        // Inputs read in seq order, not id order; a segment met again makes a second run.
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
            let mut p = Places::with_capacity(gaps.len());
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

    #[test]
    fn a_run_out_of_order_is_sorted_when_sealed() {
        let mut p = Places::with_capacity(3);
        p.push(loc(5, 300, 1), loc(9, 40, 1));
        p.push(loc(5, 100, 1), loc(9, 41, 1));
        p.push(loc(5, 200, 1), loc(9, 42, 1));
        p.seal();
        assert_eq!(p.get(loc(5, 100, 1)), Some(loc(9, 41, 1)));
        assert_eq!(p.get(loc(5, 200, 1)), Some(loc(9, 42, 1)));
        assert_eq!(p.get(loc(5, 300, 1)), Some(loc(9, 40, 1)));
    }
}
