//! `Db`: the public API. Wires the profile rules to the storage engine and owns locking.

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::options::{Durability, Options};
use crate::profile::filter::Filter;
use crate::profile::message::Message;
use crate::profile::value::Value;

/// How a call changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A new profile was created.
    Created,
    /// An existing profile was updated.
    Updated,
    /// Two or more profiles were merged into one.
    Merged,
    /// The `messageId` was applied before; nothing changed.
    Duplicate,
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
    /// Property names ignored (over the name limit, or `$add` on a non-number).
    pub ignored: Vec<String>,
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
    #[serde(serialize_with = "crate::db::ser_ts")]
    pub created_at: crate::Timestamp,
    /// Newest call applied.
    #[serde(serialize_with = "crate::db::ser_ts")]
    pub updated_at: crate::Timestamp,
    /// Current values, derived `name` included, sorted by name.
    #[serde(serialize_with = "crate::db::ser_props")]
    pub properties: Vec<(String, Value)>,
}

/// A company with its member count.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Company {
    /// Its id.
    pub id: String,
    /// Its own properties, sorted by name.
    #[serde(serialize_with = "crate::db::ser_props")]
    pub properties: Vec<(String, Value)>,
    /// Profiles whose `company_id` is this company.
    pub member_count: u64,
}

/// Store statistics (`profiledb stats`).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Live profiles.
    pub profiles: u64,
    /// Companies.
    pub companies: u64,
    /// Distinct property names tracked.
    pub property_names: u64,
    /// Bytes of live entries.
    pub live_bytes: u64,
    /// Bytes of superseded or deleted entries still on disk.
    pub dead_bytes: u64,
    /// Estimated bytes of the in-memory index (identifier bytes included).
    pub index_bytes: u64,
    /// Estimated index bytes per live profile beyond the identifier bytes themselves.
    pub index_bytes_per_profile: f64,
    /// The storage engine's counters.
    pub storage: crate::storage::StorageStats,
}

/// An open profile store.
pub struct Db {}

impl Db {
    /// Open (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        todo!("{:?} {:?}", dir.as_ref(), options)
    }

    /// Apply one message with the store's default durability.
    pub fn apply(&self, message: &Message) -> Result<Outcome> {
        todo!("{message:?}")
    }

    /// Apply one message with an explicit durability.
    pub fn apply_with(&self, message: &Message, durability: Durability) -> Result<Outcome> {
        todo!("{message:?} {durability:?}")
    }

    /// Parse (enforcing the call-size limit) and apply one JSON message.
    pub fn apply_json(&self, json: &[u8]) -> Result<Outcome> {
        todo!("{}", json.len())
    }

    /// Get a profile.
    pub fn get(&self, selector: &Selector) -> Result<Option<Profile>> {
        todo!("{selector:?}")
    }

    /// Delete a profile; with `suppress`, later calls naming its identifiers are refused.
    /// Returns the deleted key, or `None` if nothing matched.
    pub fn delete(&self, selector: &Selector, suppress: bool) -> Result<Option<u64>> {
        todo!("{selector:?} {suppress}")
    }

    /// Detach an anonymous id from its profile (logout). Returns the profile's key.
    pub fn unlink(&self, anonymous_id: &str) -> Result<Option<u64>> {
        todo!("{anonymous_id}")
    }

    /// A company with its member count.
    pub fn company(&self, id: &str) -> Result<Option<Company>> {
        todo!("{id}")
    }

    /// Keys of a company's members.
    pub fn members(&self, id: &str) -> Result<Vec<u64>> {
        todo!("{id}")
    }

    /// Visit every profile matching `filter`; `f` returns false to stop.
    pub fn scan(&self, filter: &Filter, f: &mut dyn FnMut(Profile) -> bool) -> Result<()> {
        todo!("{filter:?} {:p}", f)
    }

    /// Make everything applied so far durable.
    pub fn sync(&self) -> Result<()> {
        todo!()
    }

    /// Compact now; returns bytes reclaimed.
    pub fn compact(&self) -> Result<u64> {
        todo!()
    }

    /// Verify every record's CRC and that the indexes match the data; lists each problem
    /// with file and offset.
    pub fn check(&self) -> Result<Vec<String>> {
        todo!()
    }

    /// Statistics.
    pub fn stats(&self) -> Stats {
        todo!()
    }

    /// Sync, write the index snapshot, release the lock.
    pub fn close(self) -> Result<()> {
        todo!()
    }
}

pub(crate) fn ser_ts<S: serde::Serializer>(ts: &crate::Timestamp, s: S) -> Result<S::Ok, S::Error> {
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
