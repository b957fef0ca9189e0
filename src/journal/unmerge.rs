//! Unmerge (issue 16 item 3, docs/journal.md "Unmerge"): split a merge back, from the
//! survivor's history steps. This file computes the two records; `Db::unmerge` writes them
//! with their steps in one batch.
//!
//! The rule, in short: the merged-away profile comes back as it was at the merge (the full
//! record held by the survivor's merge step); a later call on the survivor is **attributed** to
//! the restored profile when every identifier it carried was one the merged-away profile
//! brought (and it carried at least one); its property changes go to the restored profile and
//! are taken back from the survivor. An identifier the merged-away profile brought goes back
//! unless a later call attributed to the survivor carried it (then the survivor keeps it). A
//! property the merged-away side touched (it brought it: the merge left the merged record's
//! state; or an attributed call changed it) returns, on the survivor, to the survivor's own
//! newest state: after the newest survivor call that changed it since the merge (the merging
//! call included), else its state before the merge.

use crate::entries::ProfileRecord;
use crate::entries::history::{self, StepKind};
use crate::error::{Error, Result, UnmergeError};
use crate::index::Index;
use crate::journal::read::read_step;
use crate::storage::Store;
use crate::types::email::normalize_email;
use crate::types::value::Timestamp;

/// What [`crate::Db::unmerge`] did: both profiles as they are after it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Unmerged {
    /// The survivor, without what went back.
    pub survivor: crate::types::Profile,
    /// The restored profile, under the merged-away key.
    pub restored: crate::types::Profile,
}

/// What an unmerge writes.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The survivor as it is now (the "before" of its unmerge step).
    pub survivor_before: ProfileRecord,
    /// The survivor after the unmerge.
    pub survivor: ProfileRecord,
    /// The merged-away profile as it was at the merge (the "before" of its unmerge step).
    pub merged_at_merge: ProfileRecord,
    /// The restored profile.
    pub restored: ProfileRecord,
}

/// The identifiers a profile record holds, as `(domain, value)` (emails normalised).
fn idents(rec: &ProfileRecord) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(u) = &rec.ids.user_id {
        out.push(("user_id", u.clone()));
    }
    if let Some(e) = &rec.ids.email {
        out.push(("email", normalize_email(e).into_owned()));
    }
    for a in &rec.ids.anonymous_ids {
        out.push(("anonymous_id", a.clone()));
    }
    out
}

fn carried(c: &history::Carried) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(u) = &c.user_id {
        out.push(("user_id", u.clone()));
    }
    if let Some(e) = &c.email {
        out.push(("email", normalize_email(e).into_owned()));
    }
    if let Some(a) = &c.anonymous_id {
        out.push(("anonymous_id", a.clone()));
    }
    out
}

fn state_of(rec: &ProfileRecord, id: u32) -> Option<&crate::types::state::PropState> {
    rec.props
        .binary_search_by_key(&id, |p| p.0)
        .ok()
        .map(|i| &rec.props[i].1)
}

fn set_state(rec: &mut ProfileRecord, id: u32, state: Option<crate::types::state::PropState>) {
    match state {
        Some(s) => *rec.state_mut(id) = s,
        None => {
            if let Ok(i) = rec.props.binary_search_by_key(&id, |p| p.0) {
                rec.props.remove(i);
            }
        }
    }
}

/// Plan the unmerge of `merged_key` out of `survivor` (a live profile key), as of `now`.
pub(crate) fn plan(
    store: &Store,
    index: &Index,
    survivor: u64,
    merged_key: u64,
    now: i64,
) -> Result<Plan> {
    let not_merged = || {
        Error::Unmerge(UnmergeError::NotMergedInto {
            key: merged_key,
            survivor,
        })
    };
    if !index.journal.enabled() {
        return Err(Error::Unmerge(UnmergeError::HistoryOff));
    }
    if index.location(merged_key).is_some() || merged_key == survivor {
        return Err(not_merged());
    }
    match index.resolve_key(merged_key) {
        None => return Err(Error::Unmerge(UnmergeError::Unknown { key: merged_key })),
        Some(s) if s != survivor => return Err(not_merged()),
        Some(_) => {}
    }
    // The survivor's merge step for the key, newest first; the steps after it, read on the
    // way, are kept (newest first for now).
    let mut later = Vec::new();
    let mut found = None;
    for s in super::read::steps_of(store, index, survivor)?.iter().rev() {
        let step = read_step(store, s.loc)?;
        let merged = step.body.merged.iter().find(|(k, _)| *k == merged_key);
        if let Some(rec) = merged.map(|(_, b)| history::merged_record(b)).transpose()? {
            found = Some((step.arrival, step, rec));
            break;
        }
        later.push(step);
    }
    let horizon = index.journal.horizon(now);
    let Some((arrival, merge_step, merged_rec)) = found else {
        // Merged into a profile that was merged into the survivor in turn: not this
        // survivor's merge. Otherwise its step has left the window (compacted away). (Any
        // order will do: each step is read once, none ordered.)
        for k in index.redirect_sources(survivor) {
            for loc in index.journal.locations(k)? {
                if read_step(store, loc)?
                    .body
                    .merged
                    .iter()
                    .any(|m| m.0 == merged_key)
                {
                    return Err(not_merged());
                }
            }
        }
        return Err(Error::Unmerge(UnmergeError::OutsideWindow {
            key: merged_key,
            merged_at: None,
        }));
    };
    if arrival < horizon {
        return Err(Error::Unmerge(UnmergeError::OutsideWindow {
            key: merged_key,
            merged_at: Some(Timestamp(arrival)),
        }));
    }
    let brought = idents(&merged_rec);
    let survivor_loc = index.location(survivor).ok_or_else(not_merged)?;
    let current = crate::apply::read_profile(store, index, survivor_loc)?;

    // Walk back from the current record to the state right after the merge, noting each later
    // step's after-state and attribution.
    later.reverse();
    type State = Option<crate::types::state::PropState>;
    let mut restored = merged_rec.clone();
    let mut cur = current.clone();
    // Each attributed call's (step, property, state after it), newest first for now.
    let mut restored_updates: Vec<(usize, u32, State)> = Vec::new();
    // Each property a survivor call changed since the merge: its state after the newest one.
    let mut survivor_last: std::collections::BTreeMap<u32, State> = Default::default();
    let mut kept_ids: Vec<(&'static str, String)> = Vec::new();
    for (j, step) in later.iter().enumerate().rev() {
        let c = carried(&step.body.carried(&cur.ids));
        let mine = step.body.kind == StepKind::Call
            && !c.is_empty()
            && c.iter().all(|x| brought.contains(x));
        for (id, _) in &step.body.props {
            let after = state_of(&cur, *id).cloned();
            if mine {
                restored_updates.push((j, *id, after));
            } else {
                survivor_last.entry(*id).or_insert(after);
            }
        }
        if mine {
            restored.updated_at = restored.updated_at.max(Timestamp(step.body.event));
        } else {
            kept_ids.extend(c.into_iter().filter(|x| brought.contains(x)));
        }
        step.body.undo(&mut cur);
    }
    let after_merge = cur.clone();
    let mut before_merge = cur;
    merge_step.body.undo(&mut before_merge);

    // Properties the merged-away profile brought (the merge changed them and left M's state);
    // the merging call's own changes are the survivor's.
    let mut take_back: Vec<u32> = Vec::new();
    for (id, _) in &merge_step.body.props {
        let after = state_of(&after_merge, *id);
        if state_of(&merged_rec, *id).is_some() && after == state_of(&merged_rec, *id) {
            take_back.push(*id);
        } else {
            survivor_last.entry(*id).or_insert(after.cloned());
        }
    }
    // The restored profile: the merged record, then what the attributed calls did, in order.
    restored_updates.reverse();
    for (_, id, after) in restored_updates {
        set_state(&mut restored, id, after);
        take_back.push(id);
    }
    take_back.sort_unstable();
    take_back.dedup();
    // The survivor: what the merged side brought or changed goes back to the survivor's own
    // newest state (after its newest call that changed it, else before the merge).
    let mut survivor_rec = current.clone();
    for id in take_back {
        let own = match survivor_last.get(&id) {
            Some(s) => s.clone(),
            None => state_of(&before_merge, id).cloned(),
        };
        set_state(&mut survivor_rec, id, own);
    }
    // Identifiers: those brought and still on the survivor go back, unless kept.
    let now_on_survivor = idents(&current);
    let back = |x: (&'static str, String)| now_on_survivor.contains(&x) && !kept_ids.contains(&x);
    let ids = &mut restored.ids;
    if ids
        .user_id
        .take()
        .is_some_and(|u| back(("user_id", u.clone())))
        && let Some(u) = &merged_rec.ids.user_id
    {
        ids.user_id = Some(u.clone());
        survivor_rec.ids.user_id = None;
    }
    if let Some(e) = merged_rec.ids.email.clone() {
        if back(("email", normalize_email(&e).into_owned())) {
            ids.email = Some(e);
            survivor_rec.ids.email = None;
        } else {
            ids.email = None;
        }
    }
    ids.anonymous_ids
        .retain(|a| back(("anonymous_id", a.clone())));
    survivor_rec
        .ids
        .anonymous_ids
        .retain(|a| !restored.ids.anonymous_ids.contains(a));
    Ok(Plan {
        survivor_before: current,
        survivor: survivor_rec,
        merged_at_merge: merged_rec,
        restored,
    })
}
