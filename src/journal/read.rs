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

/// A profile's steps, oldest first: `(arrival, place)` each. The index lists where they are;
/// their arrival times are read from the steps themselves (the first field of each).
pub(crate) fn steps_of(store: &Store, index: &Index, key: u64) -> Result<Vec<(i64, Location)>> {
    let mut out = Vec::new();
    for loc in index.journal.locations(key)? {
        let arrival = store
            .read(loc, history::arrival)?
            .map_err(|e| in_file(store, loc, e))?;
        out.push((arrival, loc));
    }
    out.sort_unstable_by_key(|s| s.0);
    Ok(out)
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
    let mut candidates = vec![end];
    candidates.extend(index.redirect_sources(end));
    let mut seen: std::collections::HashSet<u64> = candidates.iter().copied().collect();
    let mut i = 0;
    while let Some(&k) = candidates.get(i) {
        i += 1;
        for &(arrival, loc) in steps_of(store, index, k)?.iter().rev() {
            let step = read_step(store, loc)?;
            if let Some((_, bytes)) = step.body.merged.iter().find(|(g, _)| *g == key) {
                let rec = history::merged_record(bytes)?;
                return Ok(Some((rec, Some(MergedAway { into: k, arrival }))));
            }
            for (g, _) in &step.body.merged {
                if seen.insert(*g) {
                    candidates.push(*g);
                }
            }
        }
    }
    Ok(None)
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
        for &(arrival, loc) in steps_of(store, index, key)?.iter().rev() {
            if arrival <= at {
                break;
            }
            let step = read_step(store, loc)?;
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
    for &(arrival, loc) in steps_of(store, index, key)?.iter().rev() {
        if arrival <= after {
            break;
        }
        let step = read_step(store, loc)?;
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
    for &(arrival, loc) in steps_of(store, index, key)?.iter().rev() {
        let Step { body, .. } = read_step(store, loc)?;
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
