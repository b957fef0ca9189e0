//! Reading history: a profile's steps walked back from its current record (each step undoes
//! one call), for `Db::history` and `Db::get_at`.
//!
//! A merged-away profile has no record of its own any more: its state at the merge is held by
//! the survivor's merge step, and its own steps (older than the merge) are walked back from
//! there. A deleted profile has no history (its steps are erased with it).

use super::{History, HistoryStep, Identifiers, PropertyChange};
use crate::entries::ProfileRecord;
use crate::entries::history::{self, Step, StepKind};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::storage::{Location, Store};
use crate::types::value::Timestamp;

/// Most merges a walk follows (a merged-away profile whose survivor was merged away, ...).
const MAX_HOPS: usize = 64;

/// Read and decode the step at `loc`; errors name the segment file and offset.
pub(crate) fn read_step(store: &Store, loc: Location) -> Result<Step> {
    store
        .read(loc, history::decode)?
        .map_err(|e| in_file(store, loc, e))
}

/// The step at `loc` when it was applied after `after`; `None` (its body not decoded) when
/// not. One read of the step; an arrival time `steps_of` already read spares even that.
fn read_step_after(store: &Store, at: StepAt, after: i64) -> Result<Option<Step>> {
    if at.arrival.is_some_and(|a| a <= after) {
        return Ok(None);
    }
    store
        .read(at.loc, |b| match history::arrival(b) {
            Ok(a) if a <= after => Ok(None),
            Ok(_) => history::decode(b).map(Some),
            Err(e) => Err(e),
        })?
        .map_err(|e| in_file(store, at.loc, e))
}

/// The arrival time of the step at `loc` (its first field only).
fn read_arrival(store: &Store, loc: Location) -> Result<i64> {
    store
        .read(loc, history::arrival)?
        .map_err(|e| in_file(store, loc, e))
}

/// One of a profile's steps, in order: where it is, and its arrival time when ordering them
/// read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepAt {
    pub loc: Location,
    /// Read by [`steps_of`] (the first and last step of a segment's run, or every step of runs
    /// whose arrival ranges overlap); `None`: not read. The step itself holds it either way.
    pub arrival: Option<i64>,
}

/// A profile's steps, oldest first, none read whole: the caller reads each once, newest first,
/// and may stop early.
pub(crate) fn steps_of(store: &Store, index: &Index, key: u64) -> Result<Vec<StepAt>> {
    order(index.journal.locations(key)?, |loc| {
        read_arrival(store, loc)
    })
}

/// Order the places of one profile's steps by arrival time, reading as few arrival times (with
/// `arrival_of`) as it can.
///
/// Within one segment the log's order is the arrival order, so a profile's steps there, by
/// offset, are one run in order. The runs of different segments are ordered by their first and
/// last arrival times (two reads a run, one for a run of one step, none when there is one run);
/// a compaction writes old steps to new segments, so a segment's id says nothing of its steps'
/// age. Runs whose ranges overlap (not expected: a compaction copies its inputs' steps merged
/// in seq order, and takes every segment of steps or none, or only expired ones, keeping none
/// of their steps) have every step's arrival read and
/// are sorted together, as is a run whose first step is not older than its last.
fn order(
    mut locs: Vec<Location>,
    mut arrival_of: impl FnMut(Location) -> Result<i64>,
) -> Result<Vec<StepAt>> {
    locs.sort_unstable_by_key(|l| (l.segment, l.offset));
    let unread = |loc| StepAt { loc, arrival: None };
    if locs.first().map(|l| l.segment) == locs.last().map(|l| l.segment) {
        // One run (or none): in order as it is.
        return Ok(locs.into_iter().map(unread).collect());
    }
    struct Run {
        steps: Vec<StepAt>,
        lo: i64,
        hi: i64,
    }
    let mut runs = Vec::new();
    for run in locs.chunk_by(|a, b| a.segment == b.segment) {
        let mut steps: Vec<StepAt> = run.iter().copied().map(unread).collect();
        let n = steps.len();
        let lo = arrival_of(steps[0].loc)?;
        steps[0].arrival = Some(lo);
        let hi = if n > 1 {
            let hi = arrival_of(steps[n - 1].loc)?;
            steps[n - 1].arrival = Some(hi);
            hi
        } else {
            lo
        };
        if lo < hi || n == 1 {
            runs.push(Run { steps, lo, hi });
        } else {
            // Not in arrival order: every arrival read and sorted.
            let steps = read_all(steps, &mut arrival_of)?;
            let lo = steps.first().and_then(|s| s.arrival).unwrap_or(lo);
            let hi = steps.last().and_then(|s| s.arrival).unwrap_or(hi);
            runs.push(Run { steps, lo, hi });
        }
    }
    runs.sort_by_key(|r| r.lo);
    let mut out = Vec::with_capacity(locs.len());
    let mut runs = runs.into_iter().peekable();
    while let Some(first) = runs.next() {
        let mut hi = first.hi;
        let mut group = vec![first];
        while let Some(next) = runs.next_if(|r| r.lo <= hi) {
            hi = hi.max(next.hi);
            group.push(next);
        }
        if group.len() == 1 {
            out.extend(group.into_iter().flat_map(|r| r.steps));
        } else {
            let steps = group.into_iter().flat_map(|r| r.steps).collect();
            out.extend(read_all(steps, &mut arrival_of)?);
        }
    }
    Ok(out)
}

/// `steps` with every arrival time read (those not read yet), sorted by it.
fn read_all(
    mut steps: Vec<StepAt>,
    arrival_of: &mut impl FnMut(Location) -> Result<i64>,
) -> Result<Vec<StepAt>> {
    for s in &mut steps {
        if s.arrival.is_none() {
            s.arrival = Some(arrival_of(s.loc)?);
        }
    }
    steps.sort_by_key(|s| s.arrival);
    Ok(steps)
}

/// A decode error of the entry at `loc`, named by its segment file and offset.
fn in_file(store: &Store, loc: Location, e: Error) -> Error {
    match e {
        Error::Decode {
            what,
            offset,
            reason,
            ..
        } => Error::Decode {
            what,
            file: store.segment_path(loc.segment),
            offset: u64::from(loc.offset) + offset,
            reason,
        },
        other => other,
    }
}

/// Where a merged-away profile went: the key whose step merged it, and that step's arrival.
struct MergedAway {
    into: u64,
    arrival: i64,
}

/// The newest state of `key`: its current record, or, merged away, its record at the merge.
/// `None` when it has neither (never existed, deleted, or its merge step is older than the
/// window).
fn start(
    store: &Store,
    index: &Index,
    key: u64,
) -> Result<Option<(ProfileRecord, Option<MergedAway>)>> {
    if let Some(loc) = index.location(key) {
        return Ok(Some((crate::apply::read_profile(store, index, loc)?, None)));
    }
    let Some(end) = index.resolve_key(key) else {
        return Ok(None);
    };
    // The merge step is in the survivor's steps or in those of a profile merged into it later;
    // or in those of a profile merged into one of these and taken out again by an unmerge
    // since (the keys merged into it before stay redirected to the survivor, docs/journal.md
    // "Unmerge"): those are named by the merge steps read on the way, searched after the others.
    // A key merged, taken out by an unmerge and merged again has a merge step for each time:
    // the newest is the one in force (the key's own steps since the unmerge lead up to it), so
    // every candidate is read, not only up to the first merge step found.
    let mut candidates = vec![end];
    candidates.extend(index.redirect_sources(end));
    let mut seen: std::collections::HashSet<u64> = candidates.iter().copied().collect();
    let mut newest: Option<(i64, u64, ProfileRecord)> = None;
    let mut i = 0;
    while let Some(&k) = candidates.get(i) {
        i += 1;
        for s in steps_of(store, index, k)?.iter().rev() {
            let step = read_step(store, s.loc)?;
            if let Some((_, bytes)) = step.body.merged.iter().find(|(g, _)| *g == key)
                && newest.as_ref().is_none_or(|n| step.arrival > n.0)
            {
                newest = Some((step.arrival, k, history::merged_record(bytes)?));
            }
            for (g, _) in &step.body.merged {
                if seen.insert(*g) {
                    candidates.push(*g);
                }
            }
        }
    }
    Ok(newest.map(|(arrival, into, rec)| (rec, Some(MergedAway { into, arrival }))))
}

/// The record of `key` as it was at journal time `at` (after every call applied at or before
/// it), with the key it was under then: a profile merged away after `at` is returned under
/// its own key, one merged away before it as its survivor. `None`: no such profile then.
pub(crate) fn at(
    store: &Store,
    index: &Index,
    key: u64,
    at: i64,
) -> Result<Option<(u64, ProfileRecord)>> {
    let mut key = key;
    for _ in 0..MAX_HOPS {
        let Some((mut rec, merged)) = start(store, index, key)? else {
            return Ok(None);
        };
        if let Some(m) = merged
            && at >= m.arrival
        {
            key = m.into;
            continue;
        }
        for &s in steps_of(store, index, key)?.iter().rev() {
            let Some(step) = read_step_after(store, s, at)? else {
                break;
            };
            if step.body.created {
                return Ok(None);
            }
            step.body.undo(&mut rec);
        }
        return Ok(Some((key, rec)));
    }
    Ok(None)
}

/// Keys merged into `key` by its steps applied after `after`.
pub(crate) fn merged_since(store: &Store, index: &Index, key: u64, after: i64) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for &s in steps_of(store, index, key)?.iter().rev() {
        let Some(step) = read_step_after(store, s, after)? else {
            break;
        };
        out.extend(step.body.merged.iter().map(|(k, _)| *k));
    }
    Ok(out)
}

/// A profile's kept history, oldest step first.
pub(crate) fn history(store: &Store, index: &Index, key: u64) -> Result<Option<History>> {
    let Some((mut post, merged)) = start(store, index, key)? else {
        return Ok(None);
    };
    let mut steps = Vec::new();
    for s in steps_of(store, index, key)?.iter().rev() {
        let Step { arrival, body } = read_step(store, s.loc)?;
        let carried = body.carried(&post.ids);
        let mut pre = post.clone();
        body.undo(&mut pre);
        let changes = body
            .props
            .iter()
            .map(|(id, old)| PropertyChange {
                name: index
                    .name(*id)
                    .map_or_else(|| format!("#{id}"), str::to_string),
                old: old.as_ref().and_then(|s| s.value()),
                new: post
                    .props
                    .binary_search_by_key(id, |p| p.0)
                    .ok()
                    .and_then(|i| post.props[i].1.value()),
            })
            .filter(|c| c.old != c.new)
            .collect();
        steps.push(HistoryStep {
            applied_at: Timestamp(arrival),
            timestamp: Timestamp(body.event),
            message_id: body.message_id,
            kind: match body.kind {
                StepKind::Call => "call",
                StepKind::Identifiers => "identifiers",
                StepKind::Unmerge => "unmerge",
            },
            created: body.created,
            user_id: carried.user_id,
            email: carried.email,
            anonymous_id: carried.anonymous_id,
            merged: body.merged.iter().map(|(k, _)| *k).collect(),
            identifiers: body.ids.map(|ids| {
                let before = crate::entries::Ids::from(ids);
                (Identifiers::from(&before), Identifiers::from(&post.ids))
            }),
            changes,
        });
        post = pre;
    }
    steps.reverse();
    Ok(Some(History {
        key,
        kept_since: Timestamp(index.journal.horizon(Timestamp::now().0)),
        merged_into: merged.map(|m| m.into),
        steps,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn at(segment: u32, offset: u32) -> Location {
        Location {
            segment,
            offset,
            len: 9,
        }
    }

    /// `order` over `steps` (`(segment, offset, arrival)`, in any order): the places it
    /// returns, the arrival times it read, and the number of reads.
    fn ordered(steps: &[(u32, u32, i64)]) -> (Vec<Location>, Vec<Option<i64>>, usize) {
        let arrivals: HashMap<Location, i64> =
            steps.iter().map(|&(s, o, a)| (at(s, o), a)).collect();
        let mut reads = 0;
        let out = order(steps.iter().map(|&(s, o, _)| at(s, o)).collect(), |loc| {
            reads += 1;
            Ok(arrivals[&loc])
        })
        .unwrap();
        for s in &out {
            if let Some(a) = s.arrival {
                assert_eq!(a, arrivals[&s.loc], "a read arrival is the step's own");
            }
        }
        let locs = out.iter().map(|s| s.loc).collect();
        (locs, out.iter().map(|s| s.arrival).collect(), reads)
    }

    /// The places of `steps` sorted by their arrival times (the model).
    fn by_arrival(steps: &[(u32, u32, i64)]) -> Vec<Location> {
        let mut v = steps.to_vec();
        v.sort_by_key(|s| s.2);
        v.iter().map(|&(s, o, _)| at(s, o)).collect()
    }

    #[test]
    fn one_segment_is_in_offset_order_and_reads_nothing() {
        let steps = [(4, 300, 30), (4, 100, 10), (4, 200, 20)];
        let (locs, arrivals, reads) = ordered(&steps);
        assert_eq!(locs, by_arrival(&steps));
        assert_eq!(reads, 0);
        assert!(arrivals.iter().all(Option::is_none));
        assert_eq!(ordered(&[]), (vec![], vec![], 0));
    }

    /// A compaction's output (a higher segment id) holds the oldest steps: the runs are
    /// ordered by their arrival ranges, two reads a run (one for a run of one step).
    #[test]
    fn disjoint_runs_are_ordered_by_their_ranges_not_by_segment() {
        let steps = [
            (9, 100, 1),
            (9, 200, 2),
            (9, 300, 3),
            (9, 400, 4),
            (3, 100, 10),
            (3, 150, 11),
            (3, 900, 12),
            (5, 64, 7),
            (12, 32, 20),
            (12, 64, 21),
        ];
        let (locs, arrivals, reads) = ordered(&steps);
        assert_eq!(locs, by_arrival(&steps));
        assert_eq!(reads, 2 + 2 + 1 + 2);
        assert_eq!(
            arrivals,
            [
                Some(1),
                None,
                None,
                Some(4),
                Some(7),
                Some(10),
                None,
                Some(12),
                Some(20),
                Some(21)
            ]
        );
    }

    /// Runs whose ranges overlap (not what a compaction writes, but ordered right all the
    /// same): every arrival of the overlapping runs read and sorted; the others untouched.
    #[test]
    fn overlapping_runs_are_read_whole_and_sorted() {
        let steps = [
            (2, 100, 1),
            (2, 200, 5),
            (2, 300, 9),
            (7, 100, 3),
            (7, 200, 4),
            (7, 300, 12),
            (8, 100, 11),
            (8, 200, 13),
            // Disjoint from the rest: first and last read only.
            (1, 100, 20),
            (1, 200, 21),
            (1, 300, 22),
        ];
        let (locs, arrivals, reads) = ordered(&steps);
        assert_eq!(locs, by_arrival(&steps));
        assert_eq!(reads, 8 + 2);
        assert_eq!(arrivals[8..], [Some(20), None, Some(22)]);
        // Touching ranges (one's last is another's first) count as overlapping.
        let steps = [(2, 100, 1), (2, 200, 5), (3, 100, 5), (3, 200, 6)];
        assert_eq!(ordered(&steps).0, by_arrival(&steps));
    }

    /// A run whose first step is not older than its last (offsets out of arrival order:
    /// never written so, but not trusted) is read whole and sorted.
    #[test]
    fn a_run_out_of_arrival_order_is_read_whole() {
        let steps = [
            (2, 100, 8),
            (2, 200, 3),
            (2, 300, 6),
            (2, 400, 2),
            (5, 100, 10),
            (5, 200, 11),
        ];
        let (locs, _, reads) = ordered(&steps);
        assert_eq!(locs, by_arrival(&steps));
        assert_eq!(reads, 4 + 2);
    }

    #[test]
    fn a_failed_read_is_the_error() {
        let got = order(vec![at(1, 32), at(2, 32)], |loc| {
            if loc.segment == 2 {
                Err(Error::Decode {
                    what: "history step",
                    file: Default::default(),
                    offset: 0,
                    reason: "bad".into(),
                })
            } else {
                Ok(1)
            }
        });
        assert!(matches!(got, Err(Error::Decode { .. })));
    }
}
