//! # profiledb
//!
//! An embedded profile store for the `identify` call of analytics and CRM products.
//!
//! A host program (an ingestion server, a worker, a CLI) opens a data directory with
//! [`Db::open`] and sends it Segment-shaped calls: [`Db::identify`], [`Db::group`],
//! [`Db::alias`], [`Db::link`], or the JSON clients send with [`Db::apply_json`]. Each call
//! creates or updates one [`Profile`], merges profiles that one call proves to be the same person
//! (two different user ids never merge), validates the special properties, keeps typed custom
//! properties with per-property timestamps (`$set_once`, `$unset`, `$add`) and companies, and
//! dedupes retried calls by `messageId`. Each call answers with an [`Outcome`]. A caller holding
//! many calls at once (a request's batch, a file, a consumer's poll) hands them over in one
//! [`Db::apply_batch`]: the same outcomes, faster (the coming calls' memory is loaded while
//! each is applied, and they share one sync). Read back with
//! [`Db::get`] by any identifier ([`Selector`]), [`Db::company`], and [`Db::scan`] with a
//! [`Filter`].
//!
//! Storage is the crate's own: an append-only, CRC-checked, log-structured record store with
//! in-memory indexes by user id, email and anonymous id, group commit, compaction and fast
//! crash recovery. A call acknowledged as durable survives `kill -9` and power loss
//! ([`Durability`]).
//!
//! ## Example
//!
//! ```
//! use profiledb::{Db, Identify, Options, Selector, Status, Value};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Db::open(dir.path(), Options::default())?;
//!
//! // A typed call...
//! let first = db.identify(Identify {
//!     user_id: Some("u-123".into()),
//!     traits: vec![("plan".into(), Some(Value::Str("pro".into())))],
//!     ..Default::default()
//! })?;
//! assert_eq!(first.status, Status::Created);
//!
//! // ...or Segment's JSON, exactly as clients send it.
//! db.apply_json(br#"{"type": "identify", "userId": "u-123",
//!                    "traits": {"email": "Sarah@Example.com", "firstName": "Sarah"}}"#)?;
//! let sarah = db.get(&Selector::Email("sarah@example.com".into()))?.expect("found");
//! assert_eq!(sarah.key, first.key);
//! db.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Features
//!
//! - `cli` (default): the `profiledb` binary (import, export, get, query, compact, check, stats,
//!   the W1 workload generator and benchmark, `serve`).
//! - `server` (default): [`server`], a Segment-compatible HTTP ingestion server with durable
//!   acknowledgements. It does not need `cli`.
//! - `kafka` (not default; implies `cli` and `server`): `profiledb consume` (a Kafka consumer
//!   group member, one store per partition, exactly once through [`Db::apply_at`] /
//!   [`Db::source_offset`]) and `serve --produce-to` (docs/scaling.md). Needs no system
//!   package (rdkafka builds its bundled librdkafka).
//! - `testing`: the crate's own test machinery (fault injection, power-loss simulation, the
//!   storage engine and rules modules as public paths). Not for users; hidden from these docs.
//!
//! ## What it is not
//!
//! Not an analytics database: it keeps the current state of each profile, not the event
//! history, and answers lookups by identifier and filtered scans, not aggregate queries. Not a
//! distributed store: one process opens a data directory at a time (a second open fails with
//! [`Error::Locked`]). Not a general key-value store: the record format and every rule serve
//! the identify call.
//!
//! ## Where the docs are
//!
//! In the repository's `docs/`: `semantics.md` (every rule of identify, merge, properties,
//! removal), `spec.md` (the contract), `format.md` (every byte on disk), `recovery.md`
//! (durability promises and the tests that check them), `server.md`, `cli.md`,
//! `performance.md` with `benchmarks.md`, and `architecture.md` (the layers and where each
//! rule lives).
#![deny(unsafe_code)]
#![deny(missing_docs)]

/// The README's library example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod apply;
mod db;
mod entries;
mod error;
mod index;
mod journal;
mod options;
mod rebuild;
#[cfg(feature = "server")]
pub mod server;
mod types;
mod view;
// Internal layers, public only to the crate's own tests, benches and binary (feature
// `testing`, or `cli` for the W1 generator the binary uses); hidden from the docs.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod profile;
#[cfg(not(feature = "testing"))]
mod profile;
#[cfg(any(feature = "cli", feature = "testing"))]
#[doc(hidden)]
pub mod rng;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod storage;
#[cfg(not(feature = "testing"))]
mod storage;
#[cfg(any(feature = "cli", feature = "testing"))]
#[doc(hidden)]
pub mod workload;

pub use apply::RecordCounts;
pub use db::{Counts, Db, Prepared, ProcessMemory, Stats};
/// The profile record decoder under fuzzing (feature `testing`; fuzz target `profile_decode`).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use entries::profile::fuzz_profile_payload;
pub use error::{Error, FieldError, Result, UnmergeError};
pub use journal::explain::{ExplainedChange, Explanation, FoundBy, KeptValue};
pub use journal::unmerge::Unmerged;
pub use journal::{History, HistoryStep, Identifiers, PropertyChange};
pub use options::{DEFAULT_PLACEHOLDER_IDS, Durability, Options};
pub use profile::filter::{Filter, Op};
pub use profile::message::{Alias, CompanyRef, Group, Identify, Link, Message, Number};
pub use profile::props::ListOp;
pub use storage::StorageStats;
pub use types::value::{CompactString, Timestamp, Value};
pub use types::{Company, Moved, Outcome, Profile, Selector, SourceOffset, Status};
