//! The identity journal (issue 16, docs/journal.md): each profile's history, kept as undo
//! steps (entry kind 20, `entries::history`) written in the same batch as the call's records.
//!
//! - this file: what the write path adds to a call's batch ([`CallInfo`]) and the public
//!   history types.
//! - [`explain`]: a call's dry run (`Db::explain`).
//! - [`read`]: walking a profile's steps back from its current record: `Db::history`,
//!   `Db::get_at`.

pub(crate) mod explain;
pub(crate) mod guard;
pub(crate) mod read;
pub(crate) mod unmerge;

use serde::Serialize;

use crate::entries::ProfileRecord;
use crate::entries::history::{self, BodyRef, Carried, StepKind};
use crate::entries::wire::string_into;
use crate::index::Index;
use crate::profile::message::Identify;
use crate::profile::props::Stamp;
use crate::types::value::{Timestamp, Value};

/// What a call's history steps say beyond each profile's before and after.
#[derive(Debug, Clone)]
pub(crate) struct CallInfo {
    /// The journal clock's time for this call.
    pub arrival: i64,
    pub kind: StepKind,
    pub carried: Carried,
    /// Emptied buffers for the carried identifiers: a `CallInfo` handed back to
    /// [`CallInfo::for_index`] by the writer's spare buffers copies the next call's
    /// identifiers into them instead of allocating.
    spare: Vec<String>,
    /// The buffer a step's properties are written to before they follow its stamp table
    /// (`history::encode_into`), kept from step to step.
    props: Vec<u8>,
}

/// Most bytes of a step's properties buffer a `CallInfo` keeps from call to call (a W1 step
/// writes a few hundred).
const PROPS_KEPT: usize = 16 << 10;

impl CallInfo {
    /// A call's details, carrying no identifiers yet.
    pub(crate) fn new(arrival: i64, kind: StepKind) -> CallInfo {
        CallInfo {
            arrival,
            kind,
            carried: Carried::default(),
            spare: Vec::new(),
            props: Vec::new(),
        }
    }

    /// `Some` when the store keeps history; `now`: the clock (microseconds) when the call
    /// began; `reuse`: a previous call's, whose buffers it takes (nothing of that call is left
    /// in it).
    /// Boxed: the writer moves its spare buffers from one call to the next, and this is the
    /// largest of them.
    pub(crate) fn for_index(
        index: &Index,
        now: i64,
        reuse: Option<Box<CallInfo>>,
    ) -> Option<Box<CallInfo>> {
        index.journal.enabled().then(|| {
            let arrival = index.journal.next_arrival(now);
            let mut call =
                reuse.unwrap_or_else(|| Box::new(CallInfo::new(arrival, StepKind::Call)));
            call.reset(arrival);
            call
        })
    }

    /// A new call's details at `arrival`: nothing of the call before stays but the
    /// buffers.
    fn reset(&mut self, arrival: i64) {
        self.arrival = arrival;
        self.kind = StepKind::Call;
        let c = &mut self.carried;
        for slot in [&mut c.user_id, &mut c.email, &mut c.anonymous_id] {
            // A push, not `extend` (whose reserve and length guard cost more for one item).
            if let Some(s) = slot.take() {
                self.spare.push(s);
            }
        }
        c.same = Default::default();
        // A large step's (a merge undoing a large profile, say) is not kept for good, as the
        // writer's other spare buffers are not.
        if self.props.capacity() > PROPS_KEPT {
            self.props = Vec::new();
        }
    }

    /// Note the identifiers a call carries (copied into the spare buffers when there are).
    pub(crate) fn carry(&mut self, m: &Identify) {
        let c = &mut self.carried;
        for (slot, given) in [
            (&mut c.user_id, &m.user_id),
            (&mut c.email, &m.email),
            (&mut c.anonymous_id, &m.anonymous_id),
        ] {
            match given {
                Some(given) => {
                    if slot.is_none() {
                        *slot = self.spare.pop();
                    }
                    string_into(given, slot);
                }
                None => {
                    if let Some(s) = slot.take() {
                        self.spare.push(s);
                    }
                }
            }
        }
        c.same = Default::default();
    }

    /// The bytes of one profile's step, appended to `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step(
        &mut self,
        out: &mut Vec<u8>,
        kind: StepKind,
        stamp: Stamp,
        message_id: Option<&str>,
        undo: &history::Undo,
        raw: history::RawBefore<'_>,
        created: bool,
        after: &ProfileRecord,
        merged: &[(u64, ProfileRecord)],
    ) {
        let (ids, first_seen, updated_at, props) = undo;
        // Nearly every step merges nothing: no list built then.
        let merged: Vec<(u64, Vec<u8>)> = if merged.is_empty() {
            Vec::new()
        } else {
            merged
                .iter()
                .map(|(k, r)| (*k, crate::entries::encode_profile(r, 256)))
                .collect()
        };
        let body = BodyRef {
            kind,
            event: stamp.0.0,
            order: stamp.1,
            message_id,
            carried: &self.carried,
            created,
            first_seen: first_seen.0,
            updated_at: updated_at.0,
            ids: ids.as_ref(),
            props,
            raw,
            merged: &merged,
        };
        history::encode_into(out, &mut self.props, self.arrival, &body, &after.ids);
    }
}

/// An optional property value as plain JSON (`null` when unset), as profiles show values.
pub(crate) fn ser_opt_value<S: serde::Serializer>(
    v: &Option<Value>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => v.to_json().serialize(s),
        None => s.serialize_none(),
    }
}

/// A profile's identifiers at one point of its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Identifiers {
    /// The host's id.
    pub user_id: Option<String>,
    /// As given.
    pub email: Option<String>,
    /// Devices.
    pub anonymous_ids: Vec<String>,
    /// Company.
    pub company_id: Option<String>,
}

/// One property changed by one call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PropertyChange {
    /// The property.
    pub name: String,
    /// Its value before the call (`None`: unset).
    #[serde(serialize_with = "ser_opt_value")]
    pub old: Option<Value>,
    /// Its value after the call.
    #[serde(serialize_with = "ser_opt_value")]
    pub new: Option<Value>,
}

/// One step of a profile's history: what one call (or an admin action) did to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryStep {
    /// When the store applied it (journal clock, microseconds; strictly increasing).
    #[serde(serialize_with = "crate::types::ser_ts")]
    pub applied_at: Timestamp,
    /// The call's own timestamp.
    #[serde(serialize_with = "crate::types::ser_ts")]
    pub timestamp: Timestamp,
    /// The call's messageId.
    pub message_id: Option<String>,
    /// `call`, `identifiers` (another call took one of its identifiers, or an unlink) or
    /// `unmerge`.
    pub kind: &'static str,
    /// The call created the profile.
    pub created: bool,
    /// The identifiers the call carried.
    pub user_id: Option<String>,
    /// See `user_id`.
    pub email: Option<String>,
    /// See `user_id`.
    pub anonymous_id: Option<String>,
    /// Profiles merged into this one by the call.
    pub merged: Vec<u64>,
    /// The identifiers before and after, when the call changed them.
    pub identifiers: Option<(Identifiers, Identifiers)>,
    /// Properties whose value or state the call changed.
    pub changes: Vec<PropertyChange>,
}

/// A profile's kept history, oldest step first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    /// The profile's key.
    pub key: u64,
    /// Steps older than this are no longer kept (now minus the retention window).
    #[serde(serialize_with = "crate::types::ser_ts")]
    pub kept_since: Timestamp,
    /// Where it was merged into, if it was.
    pub merged_into: Option<u64>,
    /// The steps.
    pub steps: Vec<HistoryStep>,
}

impl From<&crate::entries::Ids> for Identifiers {
    fn from(i: &crate::entries::Ids) -> Identifiers {
        Identifiers {
            user_id: i.user_id.clone(),
            email: i.email.clone(),
            anonymous_ids: i.anonymous_ids.clone(),
            company_id: i.company_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrying(user_id: Option<&str>, email: Option<&str>, anon: Option<&str>) -> Identify {
        Identify {
            user_id: user_id.map(Into::into),
            email: email.map(Into::into),
            anonymous_id: anon.map(Into::into),
            ..Identify::default()
        }
    }

    /// A call's details reused for the next call keep only their buffers: the next call
    /// carries what it carries, whatever the one before carried or what kind it was.
    #[test]
    fn reused_call_details_keep_nothing_of_the_call_before() {
        let mut call = CallInfo::new(1, StepKind::Call);
        call.carry(&carrying(Some("user-1"), Some("a@x.io"), None));
        call.kind = StepKind::Identifiers;
        call.carried.same.email = true;
        call.reset(2);
        assert_eq!(call.arrival, 2);
        assert_eq!(call.kind, StepKind::Call);
        assert_eq!(call.carried, Carried::default());
        // An alias or group call carries nothing: reset alone.
        call.carry(&carrying(None, None, Some("device-9")));
        assert_eq!(
            call.carried,
            Carried {
                anonymous_id: Some("device-9".into()),
                ..Carried::default()
            }
        );
        call.reset(3);
        call.carry(&carrying(Some("u"), Some("b@y.io"), Some("d")));
        assert_eq!(call.carried.user_id.as_deref(), Some("u"));
        assert_eq!(call.carried.email.as_deref(), Some("b@y.io"));
        assert_eq!(call.carried.anonymous_id.as_deref(), Some("d"));
        // The buffers go round: never more than the three identifiers' worth.
        assert!(call.spare.len() <= 3);
    }
}
