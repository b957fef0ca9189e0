//! History steps (entry kind 20, docs/format.md "History step", docs/journal.md): what one
//! call did to one profile, kept as an *undo* record. A step holds the profile's state
//! *before* the call for everything the call changed (identifiers, first_seen / updated_at,
//! the state of each property whose state changed), the call's messageId, stamps and the
//! identifiers it carried, and, for a merge, the merged-away profiles as they were. The state
//! after the call is the next step's "before" (or the current record): a profile is rebuilt
//! as of a past time by undoing the steps newer than that time, newest first, from its
//! current record. So only the steps inside the retention window are needed, never a base
//! record older than the window.
//!
//! Layout: tag byte [`STEP_TAG`], arrival time as 8 bytes little-endian (so that compaction
//! reads it without decoding the rest), then a bincode 2 `standard()` body ([`Body`]).

use bincode::{Decode, Encode};

use super::profile::{self, Ids, ProfileRecord};
use crate::error::{Error, Result};
use crate::types::state::PropState;
use crate::types::value::Timestamp;

/// First byte of a step (a later layout would take another value).
pub(crate) const STEP_TAG: u8 = 1;

/// What kind of change a step records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub(crate) enum StepKind {
    /// An identify / group / alias / link call applied to the profile.
    Call,
    /// Another call took one of the profile's identifiers (the protection rule) or an unlink
    /// removed an anonymous id: only identifiers changed.
    Identifiers,
    /// An unmerge restored a merged-away profile (its "before" is the profile as it was at
    /// the merge, so undoing it continues into the key's history before the merge) or took
    /// it out of the survivor (docs/journal.md "Unmerge").
    Unmerge,
}

/// The identifiers a call carried (for unmerge's attribution of later changes).
#[derive(Debug, Clone, PartialEq, Default, Encode, Decode)]
pub(crate) struct Carried {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub anonymous_id: Option<String>,
}

/// Identifiers before the call, as in a profile record.
#[derive(Debug, Clone, PartialEq, Default, Encode, Decode)]
pub(crate) struct StepIds {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub anonymous_ids: Vec<String>,
    pub company_id: Option<String>,
}

impl From<&Ids> for StepIds {
    fn from(i: &Ids) -> StepIds {
        StepIds {
            user_id: i.user_id.clone(),
            email: i.email.clone(),
            anonymous_ids: i.anonymous_ids.clone(),
            company_id: i.company_id.clone(),
        }
    }
}

impl From<StepIds> for Ids {
    fn from(i: StepIds) -> Ids {
        Ids {
            user_id: i.user_id,
            email: i.email,
            anonymous_ids: i.anonymous_ids,
            company_id: i.company_id,
        }
    }
}

/// A step's body (everything after the arrival time).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub(crate) struct Body {
    pub kind: StepKind,
    /// The call's event time and arrival order (its stamp).
    pub event: i64,
    pub order: u64,
    pub message_id: Option<String>,
    pub carried: Carried,
    /// The call created the profile: before it there was nothing.
    pub created: bool,
    /// first_seen and updated_at before the call.
    pub first_seen: i64,
    pub updated_at: i64,
    /// Identifiers before the call, when it changed them.
    pub ids: Option<StepIds>,
    /// Each property whose state the call changed, sorted by name number, with its state
    /// before the call (`None`: the profile had no state for it).
    pub props: Vec<(u32, Option<PropState>)>,
    /// Profiles merged into this one by the call: key and full record (format of kind 1)
    /// as they were just before the merge.
    pub merged: Vec<(u64, Vec<u8>)>,
}

/// A decoded step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// When the store applied the call (journal clock: microseconds, strictly increasing
    /// within a store).
    pub arrival: i64,
    pub body: Body,
}

/// Encode a step.
pub(crate) fn encode(arrival: i64, body: &Body) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 32 * body.props.len());
    out.push(STEP_TAG);
    out.extend_from_slice(&arrival.to_le_bytes());
    out.extend_from_slice(&super::encode(body));
    out
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Decode {
        what: "history step",
        file: Default::default(),
        offset: 0,
        reason: reason.into(),
    }
}

/// The arrival time of a step, read from its first 9 bytes only.
pub(crate) fn arrival(bytes: &[u8]) -> Result<i64> {
    if bytes.first() != Some(&STEP_TAG) {
        return Err(bad("unknown history step tag"));
    }
    let a: [u8; 8] = bytes
        .get(1..9)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("history step shorter than its header"))?;
    Ok(i64::from_le_bytes(a))
}

/// Decode a step (bounded: bincode with the crate's decode limit; the body must fill the
/// bytes exactly).
pub(crate) fn decode(bytes: &[u8]) -> Result<Step> {
    let arrival = arrival(bytes)?;
    let rest = &bytes[9..];
    let body: Body = super::decode_exact(rest, "history step")?;
    for w in body.props.windows(2) {
        if w[0].0 >= w[1].0 {
            return Err(bad("property names out of order"));
        }
    }
    Ok(Step { arrival, body })
}

/// Decode a merged-away profile's record held in a step.
pub(crate) fn merged_record(bytes: &[u8]) -> Result<ProfileRecord> {
    profile::full(bytes).map_err(|e| Error::Decode {
        what: "merged profile in a history step",
        file: Default::default(),
        offset: e.at as u64,
        reason: e.reason.to_string(),
    })
}

/// The undo part of a step: identifiers before (if they changed), first_seen and updated_at
/// before, the state before of each property whose state changed.
pub(crate) type Undo = (
    Option<StepIds>,
    Timestamp,
    Timestamp,
    Vec<(u32, Option<PropState>)>,
);

/// The undo part of a step, computed from a profile's record before and after a call:
/// identifiers (if they differ), times, and every property whose state differs.
pub(crate) fn diff(before: Option<&ProfileRecord>, after: &ProfileRecord) -> Undo {
    let empty = ProfileRecord::default();
    let b = before.unwrap_or(&empty);
    let ids = (before.is_none() || b.ids != after.ids).then(|| StepIds::from(&b.ids));
    let mut props = Vec::new();
    let (mut i, mut j) = (0, 0);
    let (bp, ap) = (&b.props, &after.props);
    while i < bp.len() || j < ap.len() {
        match (bp.get(i), ap.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                if x.1 != y.1 {
                    props.push((x.0, Some(x.1.clone())));
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                // Only a damaged or undone record loses a property; record it all the same.
                props.push((x.0, Some(x.1.clone())));
                i += 1;
            }
            (Some(x), None) => {
                props.push((x.0, Some(x.1.clone())));
                i += 1;
            }
            (_, Some(y)) => {
                props.push((y.0, None));
                j += 1;
            }
            (None, None) => break,
        }
    }
    (ids, b.first_seen, b.updated_at, props)
}

impl Body {
    /// Turn `rec` (the state after the call) into the state before it.
    pub(crate) fn undo(&self, rec: &mut ProfileRecord) {
        if let Some(ids) = &self.ids {
            rec.ids = ids.clone().into();
        }
        rec.first_seen = Timestamp(self.first_seen);
        rec.updated_at = Timestamp(self.updated_at);
        for (id, state) in &self.props {
            match state {
                Some(s) => *rec.state_mut(*id) = s.clone(),
                None => {
                    if let Ok(i) = rec.props.binary_search_by_key(id, |p| p.0) {
                        rec.props.remove(i);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::state::Stamp;
    use crate::types::value::Value;

    fn rec(props: &[(u32, i64)], user: &str) -> ProfileRecord {
        let mut r = ProfileRecord {
            ids: Ids {
                user_id: Some(user.into()),
                ..Ids::default()
            },
            first_seen: Timestamp(1),
            updated_at: Timestamp(2),
            props: Vec::new(),
        };
        for (id, v) in props {
            // The state a `$set` of `v` at time 3 leaves (built directly: the codec layer does
            // not call the rules).
            *r.state_mut(*id) = PropState {
                lww: Some((Stamp(Timestamp(3), 1), Some(Value::Int(*v)))),
                once: None,
                adds: None,
            };
        }
        r
    }

    #[test]
    fn undo_of_a_diff_restores_the_record_before() {
        let before = rec(&[(1, 1), (3, 3), (5, 5)], "a");
        let mut after = rec(&[(1, 1), (2, 2), (3, 4)], "b");
        after.first_seen = Timestamp(0);
        after.updated_at = Timestamp(9);
        let (ids, fs, ua, props) = diff(Some(&before), &after);
        let body = Body {
            kind: StepKind::Call,
            event: 9,
            order: 4,
            message_id: Some("m".into()),
            carried: Carried::default(),
            created: false,
            first_seen: fs.0,
            updated_at: ua.0,
            ids,
            props,
            merged: Vec::new(),
        };
        let bytes = encode(77, &body);
        assert_eq!(arrival(&bytes).unwrap(), 77);
        let step = decode(&bytes).unwrap();
        assert_eq!(step.body, body);
        let mut r = after.clone();
        step.body.undo(&mut r);
        assert_eq!(r, before);
    }

    #[test]
    fn damaged_steps_are_errors() {
        let body = Body {
            kind: StepKind::Call,
            event: 1,
            order: 1,
            message_id: None,
            carried: Carried::default(),
            created: true,
            first_seen: 0,
            updated_at: 0,
            ids: None,
            props: vec![(2, None), (1, None)],
            merged: Vec::new(),
        };
        let bytes = encode(1, &body);
        assert!(decode(&bytes).is_err(), "names out of order");
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err());
        }
        let mut extra = encode(
            1,
            &Body {
                props: vec![],
                ..body
            },
        );
        extra.push(0);
        assert!(decode(&extra).is_err(), "trailing bytes");
    }
}
