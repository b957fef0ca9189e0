//! `Db`: the public API. Wires the profile rules to the storage engine and owns locking.

use std::path::Path;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, RwLock};
use serde::Serialize;

use crate::apply::{self, Builder, ProfileCache};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::options::{Durability, Options};
use crate::profile::filter::Filter;
use crate::profile::message::{Alias, Group, Identify, Link, Message};
use crate::profile::validate::{normalize_email, validate};
use crate::profile::value::Value;
use crate::rebuild::Rebuild;
use crate::storage::{Store, StoreOptions};
use crate::view;

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
}

/// A message that passed validation (SPEC 3.1) against a store's options, ready for
/// [`Db::apply_prepared`]; built by [`Db::prepare`] or [`Db::prepare_message`].
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared(Message);

impl Prepared {
    /// The validated message.
    pub fn message(&self) -> &Message {
        &self.0
    }
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
    /// Estimated bytes of the whole in-memory index (identifier bytes included).
    pub index_bytes: u64,
    /// Estimated bytes per live profile of the profile indexes (identifiers -> key -> location,
    /// redirects) beyond the identifier bytes themselves.
    pub index_bytes_per_profile: f64,
    /// Estimated bytes of the messageId dedupe window (bounded by `Options::dedupe_window`).
    pub dedupe_bytes: u64,
    /// The storage engine's counters.
    pub storage: crate::storage::StorageStats,
}

/// An open profile store. `Send + Sync`: share it between threads (e.g. in an `Arc`).
///
/// Writers are serialised by one index lock held only while a call is applied in memory and
/// appended; durability waits happen after it is released, so concurrent callers share syncs
/// and readers never wait for an fsync or a compaction.
pub struct Db {
    inner: Arc<Inner>,
    background: Option<std::thread::JoinHandle<()>>,
    closed: bool,
}

struct Inner {
    store: Store,
    index: RwLock<Index>,
    /// Taken only by writers, always after the index write lock.
    cache: Mutex<ProfileCache>,
    options: Options,
    compaction: Mutex<()>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Db {
    /// Open (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db> {
        let store_options = StoreOptions {
            segment_size: options.segment_size,
            durability: options.durability,
            repair: options.repair,
            create: options.create,
            io: Arc::new(crate::storage::io::RealIo),
        };
        Self::open_with(dir.as_ref(), options, store_options)
    }

    /// Open with explicit storage options (tests use this to inject I/O faults).
    #[doc(hidden)]
    pub fn open_with(dir: &Path, options: Options, store_options: StoreOptions) -> Result<Db> {
        if options.max_property_names > u32::MAX as usize {
            return Err(Error::Options {
                name: "max_property_names",
                reason: "must fit in 32 bits".into(),
            });
        }
        let mut rebuild = Rebuild::new(options.dedupe_window);
        let store = Store::open(dir, store_options, &mut rebuild)?;
        let mut index = rebuild.finish(&store)?;
        // The replay records redirects as written, and a snapshot holds no reverse map.
        index.flatten_redirects();
        index.next_key = index.next_key.max(1);
        index.next_company_key = index.next_company_key.max(1);
        let inner = Arc::new(Inner {
            store,
            index: RwLock::new(index),
            cache: Mutex::new(ProfileCache::new(options.profile_cache)),
            options,
            compaction: Mutex::new(()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let background = inner.options.compaction_ratio.map(|_| {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("profiledb-compactor".into())
                .spawn(move || background_compaction(weak))
        });
        let background = match background {
            Some(Ok(handle)) => Some(handle),
            Some(Err(e)) => return Err(Error::io("spawn compaction thread", dir, e)),
            None => None,
        };
        Ok(Db {
            inner,
            background,
            closed: false,
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Apply one message with the store's default durability.
    pub fn apply(&self, message: &Message) -> Result<Outcome> {
        self.apply_with(message, self.inner.options.durability)
    }

    /// Apply one message with an explicit durability.
    pub fn apply_with(&self, message: &Message, durability: Durability) -> Result<Outcome> {
        validate(message, &self.inner.options)?;
        self.apply_valid(message, durability)
    }

    /// Apply a message that passed validation.
    fn apply_valid(&self, message: &Message, durability: Durability) -> Result<Outcome> {
        self.write(
            durability,
            |b| {
                b.check_suppressed(message)?;
                Ok((b.apply(message)?, message.message_id()))
            },
            message.message_id().map(|mid| (mid, message)),
        )
    }

    /// Apply an `identify` call (SPEC 2) with the store's default durability.
    pub fn identify(&self, call: Identify) -> Result<Outcome> {
        self.apply(&Message::Identify(call))
    }

    /// Apply a `group` call: upsert a company and, with an identifier, its membership.
    pub fn group(&self, call: Group) -> Result<Outcome> {
        self.apply(&Message::Group(call))
    }

    /// Apply an `alias` call: `previous_id` and `user_id` are one person.
    pub fn alias(&self, call: Alias) -> Result<Outcome> {
        self.apply(&Message::Alias(call))
    }

    /// Apply a `track` / `page` / `screen` call: links its user id and anonymous id.
    pub fn link(&self, call: Link) -> Result<Outcome> {
        self.apply(&Message::Link(call))
    }

    /// Parse (enforcing the call-size limit) and apply one JSON message.
    pub fn apply_json(&self, json: &[u8]) -> Result<Outcome> {
        let prepared = self.prepare(json)?;
        self.apply_prepared(&prepared, self.inner.options.durability)
    }

    /// Parse (enforcing the call-size limit) and validate one JSON message without touching
    /// the store: the part of [`Db::apply_json`] that needs no lock, so that many threads can
    /// prepare calls while one applies them ([`Db::apply_prepared`]). The errors are those
    /// `apply_json` gives for the same bytes before it writes anything.
    pub fn prepare(&self, json: &[u8]) -> Result<Prepared> {
        let limit = self.inner.options.max_call_bytes;
        if json.len() > limit {
            return Err(Error::invalid(
                "message",
                format!("is {} bytes; at most {limit} are accepted", json.len()),
            ));
        }
        self.prepare_message(Message::parse(json)?)
    }

    /// Validate a message (SPEC 3.1) without touching the store; see [`Db::prepare`].
    pub fn prepare_message(&self, message: Message) -> Result<Prepared> {
        validate(&message, &self.inner.options)?;
        Ok(Prepared(message))
    }

    /// Apply a message validated by [`Db::prepare`] / [`Db::prepare_message`] of this store:
    /// the same as [`Db::apply_with`] without validating again.
    pub fn apply_prepared(&self, prepared: &Prepared, durability: Durability) -> Result<Outcome> {
        self.apply_valid(&prepared.0, durability)
    }

    /// The one write path: build a batch under the index lock, append it, update the index,
    /// release the lock, then wait for durability.
    fn write<'m>(
        &self,
        durability: Durability,
        build: impl FnOnce(&mut Builder<'_>) -> Result<(Outcome, Option<&'m str>)>,
        dedupe: Option<(&str, &Message)>,
    ) -> Result<Outcome> {
        let inner = &*self.inner;
        let mut index = inner.index.write();
        if let Some((mid, message)) = dedupe
            && index.seen_message(apply::message_hash(mid))
        {
            let key = Builder::current_key(&index, message);
            let seq = index.last_seq;
            drop(index);
            // The first delivery may still be waiting for its sync: so does the retry.
            inner.store.wait_durable(seq, durability)?;
            return Ok(Outcome {
                key,
                status: Status::Duplicate,
                merged: Vec::new(),
                moved: Vec::new(),
                ignored: Vec::new(),
            });
        }
        let mut cache = inner.cache.lock();
        let mut builder = Builder::new(&index, &mut cache, &inner.store, &inner.options);
        let (outcome, message_id) = build(&mut builder)?;
        let batch = builder.finish(outcome, message_id);
        if batch.entries.is_empty() {
            return Ok(batch.outcome);
        }
        let appended = inner.store.append(&batch.entries())?;
        cache.insert_written(batch.written, &appended.locations);
        drop(cache);
        index.last_seq = appended.seq;
        apply::commit(
            &mut index,
            batch.changes,
            &appended.locations,
            &inner.options,
        );
        drop(index);
        inner.store.wait_durable(appended.seq, durability)?;
        Ok(batch.outcome)
    }

    fn lookup(index: &Index, selector: &Selector) -> Option<u64> {
        match selector {
            Selector::UserId(u) => index.user.get(u.as_str()).copied(),
            Selector::Email(e) => index.email.get(normalize_email(e).as_str()).copied(),
            Selector::AnonymousId(a) => index.anon.get(a.as_str()).copied(),
            Selector::Key(k) => index.resolve_key(*k),
        }
    }

    /// Get a profile.
    pub fn get(&self, selector: &Selector) -> Result<Option<Profile>> {
        let index = self.inner.index.read();
        let Some(key) = Self::lookup(&index, selector) else {
            return Ok(None);
        };
        self.view(&index, key)
    }

    fn view(&self, index: &Index, key: u64) -> Result<Option<Profile>> {
        let Some(&loc) = index.profiles.get(&key) else {
            return Ok(None);
        };
        let rec = apply::read_profile(&self.inner.store, loc)?;
        Ok(Some(view::profile(index, key, rec)))
    }

    /// Delete a profile; with `suppress`, later calls naming its identifiers are refused.
    /// Returns the deleted key, or `None` if nothing matched.
    pub fn delete(&self, selector: &Selector, suppress: bool) -> Result<Option<u64>> {
        let key = match Self::lookup(&self.inner.index.read(), selector) {
            Some(k) => k,
            None => return Ok(None),
        };
        let durability = self.inner.options.durability;
        let out = self.write(durability, |b| Ok((b.delete(key, suppress)?, None)), None)?;
        Ok(Some(out.key))
    }

    /// Detach an anonymous id from its profile (logout). Returns the profile's key.
    pub fn unlink(&self, anonymous_id: &str) -> Result<Option<u64>> {
        let Some(key) = self.inner.index.read().anon.get(anonymous_id).copied() else {
            return Ok(None);
        };
        let durability = self.inner.options.durability;
        let out = self.write(
            durability,
            |b| Ok((b.unlink(key, anonymous_id)?, None)),
            None,
        )?;
        Ok(Some(out.key))
    }

    /// A company with its member count.
    pub fn company(&self, id: &str) -> Result<Option<Company>> {
        let index = self.inner.index.read();
        let Some(slot) = index.companies.get(id) else {
            return Ok(None);
        };
        let properties = if slot.location.len > 0 {
            view::props_of_company(apply::read_company(&self.inner.store, slot.location)?)
        } else {
            Vec::new()
        };
        Ok(Some(Company {
            id: id.to_string(),
            properties,
            member_count: slot.members.len() as u64,
        }))
    }

    /// Keys of a company's members, ascending.
    pub fn members(&self, id: &str) -> Result<Vec<u64>> {
        let index = self.inner.index.read();
        let mut keys: Vec<u64> = index
            .companies
            .get(id)
            .map(|s| s.members.iter().copied().collect())
            .unwrap_or_default();
        keys.sort_unstable();
        Ok(keys)
    }

    /// Visit every profile matching `filter`, in key order; `f` returns false to stop.
    /// Writers are not blocked for the whole scan: each profile is read under a short lock.
    pub fn scan(&self, filter: &Filter, f: &mut dyn FnMut(Profile) -> bool) -> Result<()> {
        let mut keys: Vec<u64> = self.inner.index.read().profiles.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            let profile = {
                let index = self.inner.index.read();
                self.view(&index, key)?
            };
            if let Some(p) = profile
                && filter.matches_profile(&p)
                && !f(p)
            {
                break;
            }
        }
        Ok(())
    }

    /// Make everything applied so far durable.
    pub fn sync(&self) -> Result<()> {
        self.inner.store.sync()
    }

    /// Compact now; returns bytes reclaimed.
    pub fn compact(&self) -> Result<u64> {
        self.inner.compact()
    }

    /// Write the index snapshot (hint file) now, so that the next open replays less.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.write_hint()
    }

    /// Verify every record's CRC and that the indexes match the data; lists each problem
    /// with file and offset.
    pub fn check(&self) -> Result<Vec<String>> {
        let mut problems: Vec<String> = self
            .inner
            .store
            .check()?
            .into_iter()
            .map(|(file, offset, reason)| format!("{file} offset {offset}: {reason}"))
            .collect();
        let index = self.inner.index.read();
        let mut identifiers = 0usize;
        for (&key, &loc) in &index.profiles {
            let rec = match apply::read_profile(&self.inner.store, loc) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!(
                        "segment {} offset {}: profile {key}: {e}",
                        loc.segment, loc.offset
                    ));
                    continue;
                }
            };
            let ids = &rec.ids;
            let mut expect = |map: &crate::index::HashMap<Box<str>, u64>, what, v: &str| {
                identifiers += 1;
                if map.get(v) != Some(&key) {
                    problems.push(format!(
                        "segment {} offset {}: profile {key} has {what} {v:?} but the index \
                         points it at {:?}",
                        loc.segment,
                        loc.offset,
                        map.get(v)
                    ));
                }
            };
            if let Some(u) = &ids.user_id {
                expect(&index.user, "user id", u);
            }
            if let Some(e) = &ids.email {
                expect(&index.email, "email", &normalize_email(e));
            }
            for a in &ids.anonymous_ids {
                expect(&index.anon, "anonymous id", a);
            }
        }
        let indexed = index.user.len() + index.email.len() + index.anon.len();
        if indexed != identifiers {
            problems.push(format!(
                "index holds {indexed} identifiers but the profiles carry {identifiers}"
            ));
        }
        Ok(problems)
    }

    /// Statistics.
    pub fn stats(&self) -> Stats {
        let storage = self.inner.store.stats();
        let index = self.inner.index.read();
        let live_bytes = index.live_bytes();
        let memory = index.memory();
        let profiles = index.profiles.len() as u64;
        Stats {
            profiles,
            companies: index.companies.len() as u64,
            property_names: index.names.len() as u64,
            live_bytes,
            dead_bytes: storage.disk_bytes.saturating_sub(live_bytes),
            index_bytes: memory.profiles + memory.dedupe + memory.other,
            index_bytes_per_profile: if profiles == 0 {
                0.0
            } else {
                (memory.profiles - memory.id_bytes) as f64 / profiles as f64
            },
            dedupe_bytes: memory.dedupe,
            storage,
        }
    }

    /// Sync, write the index snapshot, release the lock.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Test hook: give up the store without syncing or writing the index snapshot, as a
    /// crash would (bytes the OS already has stay), so that the next open replays the log.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        self.closed = true;
        let _ = self.shutdown();
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(handle) = self.background.take() {
            *self.inner.stop.lock() = true;
            self.inner.wake.notify_all();
            let _ = handle.join();
        }
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        self.inner.store.sync()?;
        self.inner.write_hint()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl Inner {
    fn write_hint(&self) -> Result<()> {
        // The read lock keeps writers out, so the snapshot matches the position exactly.
        let index = self.index.read();
        let position = self.store.hint_position()?;
        let payload = crate::entries::encode_serde(&*index);
        drop(index);
        self.store.write_hint(&position, &payload)
    }

    fn compact(&self) -> Result<u64> {
        let _one_at_a_time = self.compaction.lock();
        let prepared = self
            .store
            .prepare_compaction(&mut |e| self.index.read().is_live(e))?;
        let Some(prepared) = prepared else {
            return Ok(0);
        };
        let reclaimed = {
            let mut index = self.index.write();
            let relocations = self.store.commit_compaction(prepared)?;
            for &(kind, id, old, new) in &relocations.moved {
                index.relocate(kind, id, old, new);
            }
            self.cache.lock().clear();
            relocations.reclaimed_bytes
        };
        self.write_hint()?;
        Ok(reclaimed)
    }

    fn wants_compaction(&self) -> bool {
        let Some(ratio) = self.options.compaction_ratio else {
            return false;
        };
        let sealed = self.store.sealed_bytes();
        let live = self.index.read().live_bytes();
        let disk = self.store.stats().disk_bytes;
        let dead = disk.saturating_sub(live);
        dead >= self.options.compaction_min_bytes && sealed > 0 && dead as f64 > ratio * disk as f64
    }
}

fn background_compaction(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        {
            let mut stop = strong.stop.lock();
            if *stop {
                return;
            }
            strong
                .wake
                .wait_for(&mut stop, std::time::Duration::from_secs(1));
            if *stop {
                return;
            }
        }
        if strong.wants_compaction() {
            // Errors poison the store; the next call reports them.
            let _ = strong.compact();
        }
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
