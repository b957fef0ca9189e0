//! Explain / dry run (issue 16): what a call would do, without writing. The write path's own
//! [`Builder`] runs against the live index under a read lock, with an empty writer cache and
//! history forced on (its steps hold every changed property's state before the call); the
//! batch it builds is read and dropped, never appended. So the rules are the write path's,
//! not a second copy of them.

use serde::Serialize;

use crate::apply::{Builder, ProfileCache};
use crate::entries::history::{self, StepKind};
use crate::entries::{EntryKind, ProfileRecord};
use crate::error::{Error, FieldError, Result};
use crate::index::Index;
use crate::options::Options;
use crate::profile::message::Message;
use crate::profile::props::PropState;
use crate::storage::Store;
use crate::types::Outcome;
use crate::types::value::{CompactString, Timestamp, Value};

/// Which profile one of the call's identifiers found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoundBy {
    /// `user_id`, `email`, `anonymous_id`, or `previous_id` (an alias's).
    pub identifier: &'static str,
    /// Its value as the call gave it.
    pub value: String,
    /// The profile it belongs to now (`None`: none).
    pub key: Option<u64>,
}

/// One property the call would change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExplainedChange {
    /// The profile.
    pub key: u64,
    /// The property.
    pub name: String,
    /// Its value before (`None`: unset).
    #[serde(serialize_with = "super::ser_opt_value")]
    pub old: Option<Value>,
    /// Its value after.
    #[serde(serialize_with = "super::ser_opt_value")]
    pub new: Option<Value>,
    /// The event time of the operation that decides the new value.
    #[serde(serialize_with = "crate::types::ser_ts")]
    pub decided_by: Timestamp,
    /// Whether that operation is this call's (else an older one wins, e.g. a merge brought it
    /// or the call's value is older than the stored one).
    pub by_this_call: bool,
}

/// A property the call names whose value would not change: a newer stored operation wins.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeptValue {
    /// The property.
    pub name: String,
    /// Its value, unchanged.
    #[serde(serialize_with = "super::ser_opt_value")]
    pub value: Option<Value>,
    /// The event time of the stored operation that keeps it.
    #[serde(serialize_with = "crate::types::ser_ts")]
    pub decided_by: Timestamp,
}

/// What a call would do (`Db::explain`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// `apply`, `duplicate` (its messageId was applied already: nothing would change) or
    /// `refuse`.
    pub verdict: &'static str,
    /// What each identifier of the call finds.
    pub found: Vec<FoundBy>,
    /// The profile that would receive the call, and the rule that chose it.
    pub survivor: Option<u64>,
    /// See `survivor`.
    pub rule: String,
    /// The outcome the call would return (status, merges, moved identifiers, ignored names).
    pub outcome: Option<Outcome>,
    /// Each property change, with old and new value and the deciding stamp.
    pub changes: Vec<ExplainedChange>,
    /// Properties the call names that would keep their stored value.
    pub kept: Vec<KeptValue>,
    /// Why the call would be refused (field and rule), when it would.
    pub refusals: Vec<FieldError>,
}

impl Explanation {
    /// A call refused before it could be read as a message (parse errors).
    pub(crate) fn refused(refusals: Vec<FieldError>) -> Explanation {
        Explanation {
            verdict: "refuse",
            found: Vec::new(),
            survivor: None,
            rule: String::new(),
            outcome: None,
            changes: Vec::new(),
            kept: Vec::new(),
            refusals,
        }
    }
}

/// The identifiers of a call, as the lookups see them.
fn identifiers(index: &Index, m: &Message) -> Vec<FoundBy> {
    let mut out = Vec::new();
    let mut add = |identifier, value: &str, key| {
        out.push(FoundBy {
            identifier,
            value: value.to_string(),
            key,
        })
    };
    let (user, email, anon) = match m {
        Message::Identify(i) => (
            i.user_id.as_deref(),
            i.email.as_deref(),
            i.anonymous_id.as_deref(),
        ),
        Message::Group(g) => (g.user_id.as_deref(), None, g.anonymous_id.as_deref()),
        Message::Link(l) => (l.user_id.as_deref(), None, l.anonymous_id.as_deref()),
        Message::Alias(a) => {
            add(
                "previous_id",
                &a.previous_id,
                index
                    .user_key(&a.previous_id)
                    .or_else(|| index.anon_key(&a.previous_id)),
            );
            (Some(a.user_id.as_str()), None, None)
        }
    };
    if let Some(u) = user {
        add("user_id", u, index.user_key(u));
    }
    if let Some(e) = email {
        add("email", e, index.email_key(e));
    }
    if let Some(a) = anon {
        add("anonymous_id", a, index.anon_key(a));
    }
    out
}

/// The survivor rule of SPEC 3.2 (`profile::resolve`), in words, for the outcome given.
fn rule(found: &[FoundBy], out: &Outcome, has_user_id: bool) -> String {
    use crate::types::Status;
    let by = |what: &str| {
        found
            .iter()
            .find(|f| f.identifier == what)
            .and_then(|f| f.key)
    };
    if out.status == Status::Created {
        return "no profile found by the call's identifiers: a new profile".into();
    }
    if out.key == 0 {
        return "no profile: the call names a company only".into();
    }
    if by("user_id") == Some(out.key) {
        return "the profile of the call's userId".into();
    }
    let via = if by("email") == Some(out.key) {
        "email"
    } else {
        "anonymous id"
    };
    if has_user_id {
        format!(
            "the first profile found (email, then anonymous id) without a user id of its own takes the call's userId (found by {via})"
        )
    } else {
        format!(
            "no userId in the call: the first profile found that carries a user id, else the one found by email (found by {via})"
        )
    }
}

/// The stamp that decides a property's value: the newest counted `$add`, else the set /
/// removal, else the `$set_once`.
fn deciding(s: &PropState) -> Option<crate::profile::props::Stamp> {
    s.adds
        .as_ref()
        .map(|a| a.last)
        .or(s.lww.as_ref().map(|l| l.0))
        .or(s.once.as_ref().map(|o| o.0))
}

fn state_of(rec: &ProfileRecord, id: u32) -> Option<&PropState> {
    rec.props
        .binary_search_by_key(&id, |p| p.0)
        .ok()
        .map(|i| &rec.props[i].1)
}

/// Explain `message` (already parsed) against the store as it is.
pub(crate) fn explain(
    index: &Index,
    store: &Store,
    options: &Options,
    message: &Message,
) -> Result<Explanation> {
    let found = identifiers(index, message);
    let mut ex = Explanation {
        verdict: "refuse",
        found,
        survivor: None,
        rule: String::new(),
        outcome: None,
        changes: Vec::new(),
        kept: Vec::new(),
        refusals: Vec::new(),
    };
    let refuse = |mut ex: Explanation, e: Error| -> Result<Explanation> {
        ex.refusals = match e {
            Error::Invalid(fields) => fields,
            Error::Suppressed { field } => vec![FieldError::new(
                field,
                "is a suppressed identifier (its profile was deleted with suppression)",
            )],
            other if other.is_refusal() => vec![FieldError::new("message", other.to_string())],
            other => return Err(other),
        };
        Ok(ex)
    };
    if let Err(e) = crate::profile::validate::validate(message, options) {
        return refuse(ex, e);
    }
    if let Some(mid) = message.message_id()
        && index.seen_message(crate::apply::message_hash(mid))
    {
        ex.verdict = "duplicate";
        ex.rule = "its messageId was applied already: nothing would change".into();
        return Ok(ex);
    }
    let mut cache = ProfileCache::new(0);
    let mut b = Builder::new(index, &mut cache, store, options);
    b.history = Some(Box::new(crate::journal::CallInfo::new(
        Timestamp::now().0,
        StepKind::Call,
    )));
    if let Err(e) = b.check_suppressed(message) {
        return refuse(ex, e);
    }
    let out = match b.apply(message) {
        Ok(out) => out,
        Err(e) => return refuse(ex, e),
    };
    let order = index.last_seq().saturating_add(1);
    let batch = b.finish(&out, message.message_id())?;
    let has_user_id = ex
        .found
        .iter()
        .any(|f| f.identifier == "user_id" && !matches!(message, Message::Alias(_)))
        || matches!(message, Message::Alias(_));
    ex.rule = rule(&ex.found, &out, has_user_id);
    ex.survivor = (out.key != 0).then_some(out.key);
    ex.verdict = "apply";
    // Names registered by this call are not in the index yet.
    let new_names: Vec<(u32, String)> = batch
        .built_entries()
        .iter()
        .filter(|(k, _, _)| *k == EntryKind::PropName)
        .map(|(_, id, data)| (*id as u32, String::from_utf8_lossy(data).into_owned()))
        .collect();
    let name = |id: u32| {
        index
            .name(id)
            .map(str::to_string)
            .or_else(|| {
                new_names
                    .iter()
                    .find(|(n, _)| *n == id)
                    .map(|(_, s)| s.clone())
            })
            .unwrap_or_else(|| format!("#{id}"))
    };
    for (key, after) in batch.written_records() {
        let Some((_, _, data)) = batch
            .built_entries()
            .iter()
            .find(|(k, id, _)| *k == EntryKind::History && *id == key)
        else {
            continue;
        };
        let step = history::decode(data)?;
        for (id, before) in &step.body.props {
            let Some(now) = state_of(after, *id) else {
                continue;
            };
            let old = before.as_ref().and_then(PropState::value);
            let new = now.value();
            let stamp = deciding(now);
            let change = ExplainedChange {
                key,
                name: name(*id),
                old,
                new,
                decided_by: stamp.map_or(Timestamp(0), |s| s.0),
                by_this_call: stamp.is_some_and(|s| s.1 == order),
            };
            if change.old != change.new {
                ex.changes.push(change);
            }
        }
        if key == out.key
            && let Message::Identify(m) = message
        {
            let named = m
                .traits
                .iter()
                .map(|(n, _)| n.as_str())
                .chain(m.set_once.iter().map(|(n, _)| n.as_str()))
                .chain(m.unset.iter().map(CompactString::as_str));
            for n in named {
                if ex.changes.iter().any(|c| c.key == key && c.name == n) {
                    continue;
                }
                let Some(id) = index.name_id(n) else { continue };
                if let Some(s) = state_of(after, id)
                    && let Some(stamp) = deciding(s)
                    && stamp.1 != order
                {
                    ex.kept.push(KeptValue {
                        name: n.to_string(),
                        value: s.value(),
                        decided_by: stamp.0,
                    });
                }
            }
        }
    }
    ex.outcome = Some(out);
    Ok(ex)
}
