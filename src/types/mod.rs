//! The value types the API takes and returns: [`Profile`], [`Company`], [`Outcome`] (with its
//! [`Status`] and [`Moved`] identifiers), [`Selector`], and in [`value`] the typed property
//! values ([`Value`], [`Timestamp`]).
//!
//! This is the bottom of the layers (docs/architecture.md): plain data with no behaviour that
//! needs the store, so every layer above (record codec, index, profile rules, write path, `Db`)
//! can name them without importing from the API layer. Internal to the crate: `state`
//! (`PropState`, `Stamp`, `Adds`) and `record` (`ProfileRecord`, `Ids`), the data the record
//! codec stores and the profile rules change, whose methods live with those layers; `email`,
//! the one lookup form of an email, used by the index and by validation; `sorted`, the
//! galloping search the writer cache and the compaction share.

use serde::Serialize;

pub(crate) mod email;
pub(crate) mod record;
pub(crate) mod sorted;
pub(crate) mod state;
pub mod value;

use value::{Timestamp, Value};

/// How a call changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A new profile was created.
    Created,
    /// An existing profile received the call (also when nothing visible changed, and for an
    /// alias whose two ids are already one person).
    Updated,
    /// Two or more profiles were merged into one.
    Merged,
    /// The `messageId` was applied before; nothing changed.
    Duplicate,
    /// Valid, but nothing to store: a `track` / `page` / `screen` naming only one id.
    Unchanged,
}

/// An identifier moved from another profile by the protection rule (SPEC 3.2.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moved {
    /// `email` or `anonymous_id`.
    pub identifier: String,
    /// Its value.
    pub value: String,
    /// The profile it was taken from.
    pub from: u64,
}

/// The outcome of one call (SPEC 2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The profile's key (for a company-only `group`, 0).
    pub key: u64,
    /// What happened.
    pub status: Status,
    /// Keys merged away into `key`.
    pub merged: Vec<u64>,
    /// Identifiers moved from other profiles.
    pub moved: Vec<Moved>,
    /// Property names whose operation was not applied: a new name over the name limit, an
    /// `$add` on a non-number, or an `$add` that would overflow to infinity.
    pub ignored: Vec<String>,
    /// Identifiers of the call the guard quarantined (`email:...`, `anonymous_id:...`,
    /// docs/journal.md "Guard"): the call neither merged nor moved through them, and they were
    /// not attached.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<String>,
}

/// Which profile: by any identifier or by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// By `userId`.
    UserId(String),
    /// By email (normalised before lookup).
    Email(String),
    /// By anonymous id.
    AnonymousId(String),
    /// By key (a merged-away key resolves to its survivor).
    Key(u64),
}

/// A profile as read back; serialises to the SPEC 5 profile JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// Never reused.
    pub key: u64,
    /// The host's id.
    pub user_id: Option<String>,
    /// As last given.
    pub email: Option<String>,
    /// Devices.
    pub anonymous_ids: Vec<String>,
    /// Company.
    pub company_id: Option<String>,
    /// SPEC 3.4.
    #[serde(serialize_with = "crate::types::ser_ts")]
    pub created_at: Timestamp,
    /// Newest call applied.
    #[serde(serialize_with = "crate::types::ser_ts")]
    pub updated_at: Timestamp,
    /// Current values, derived `name` included, sorted by name.
    #[serde(serialize_with = "crate::types::ser_props")]
    pub properties: Vec<(String, Value)>,
}

/// A company with its member count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Company {
    /// Its id.
    pub id: String,
    /// Its own properties, sorted by name.
    #[serde(serialize_with = "crate::types::ser_props")]
    pub properties: Vec<(String, Value)>,
    /// Profiles whose `company_id` is this company.
    pub member_count: u64,
}

pub(crate) fn ser_ts<S: serde::Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts.to_rfc3339())
}

pub(crate) fn ser_props<S: serde::Serializer>(
    props: &[(String, Value)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(props.len()))?;
    for (k, v) in props {
        map.serialize_entry(k, &v.to_json())?;
    }
    map.end()
}

/// A position in an external partitioned log (a Kafka topic partition) that a store has
/// applied up to: every message before `next_offset`, and the first `next_call` calls of the
/// message at `next_offset` (a message may carry several calls). Written in the same atomic
/// frame as the call it covers ([`crate::Db::apply_at`]), so after a crash the store's own
/// position says exactly what it holds (docs/scaling.md, "Exactly once").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct SourceOffset {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Offset of the first message not (fully) applied.
    pub next_offset: i64,
    /// Calls of the message at `next_offset` already applied (0: none).
    pub next_call: u32,
}
