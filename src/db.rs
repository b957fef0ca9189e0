//! `Db`: the public API. Wires the profile rules to the storage engine and owns locking.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock, RwLockUpgradableReadGuard};
use serde::Serialize;

use crate::apply::{self, Builder, ProfileCache};
use crate::entries::{self, EntryKind};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::options::{Durability, Options};
use crate::profile::filter::Filter;
use crate::profile::message::{Alias, Group, Identify, Link, Message};
use crate::profile::validate::{PlaceholderLens, validate_with};
use crate::rebuild::Rebuild;
use crate::storage::{CopyAs, Entry, Location, Store, StoreOptions};
use crate::types::{Company, Outcome, Profile, Selector, SourceOffset, Status};
use crate::view;

mod writers;

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
    /// Bytes of the messageId dedupe window (bounded by `Options::dedupe_window`).
    pub dedupe_bytes: u64,
    /// The process's resident memory now, anonymous and file-backed apart.
    pub process: ProcessMemory,
    /// Bytes the writer cache holds: its profiles' encoded records, as allocated, and their
    /// slots (bounded by `Options::profile_cache_bytes`, less the doorkeeper's tables, which
    /// are not counted here: ~150 KB for 32 MiB).
    pub profile_cache_bytes: u64,
    /// Loads of a profile by a writer since open that found it in the writer cache, and that
    /// read its records from the log.
    pub profile_cache_hits: u64,
    /// See `profile_cache_hits`.
    pub profile_cache_misses: u64,
    /// Profiles the writer cache did not keep after a call, for want of room: new ones and
    /// misses its doorkeeper had not refused lately (docs/architecture.md, "Which profiles
    /// the writer cache keeps").
    pub profile_cache_refused: u64,
    /// Profile records the writers wrote since open, by form and by why a call wrote a whole
    /// record rather than a delta (docs/format.md "Profile delta").
    pub profile_records: crate::apply::RecordCounts,
    /// Profiles the last open's repair dropped because their chain of records ran through a
    /// quarantined segment (as a profile whose only record was there is lost), each with the
    /// missing link's file and offset.
    pub dropped_by_repair: Vec<String>,
    /// History steps kept (issue 16, docs/journal.md), and the estimated heap bytes of their
    /// index: the in-memory tables (the segment appended to and those sealed since their
    /// tables were written) and a key per 256 steps of the table files (stop 19).
    pub history_steps: u64,
    /// See `history_steps`.
    pub history_index_bytes: u64,
    /// Identifiers the guard quarantined (`email:...`, `anonymous_id:...`; docs/journal.md).
    pub quarantined: Vec<String>,
    /// Calls since open that carried a quarantined identifier (or had one quarantined).
    pub guard_skipped_calls: u64,
    /// The storage engine's counters.
    pub storage: crate::storage::StorageStats,
}

/// Resident memory of the process, from Linux's `/proc/self/status` (zeros where it is not
/// available). Anonymous memory is the heap (index, caches, buffers); file-backed memory is
/// mostly segment pages mapped for reads, which the kernel can drop under pressure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcessMemory {
    /// `RssAnon`: anonymous resident bytes.
    pub rss_anon_bytes: u64,
    /// `RssFile`: file-backed resident bytes.
    pub rss_file_bytes: u64,
    /// `VmHWM`: peak resident bytes since the process started (both kinds together: the
    /// kernel keeps no peak per kind).
    pub peak_rss_bytes: u64,
}

impl ProcessMemory {
    /// Read the figures now.
    pub fn now() -> ProcessMemory {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        ProcessMemory {
            rss_anon_bytes: field("RssAnon:"),
            rss_file_bytes: field("RssFile:"),
            peak_rss_bytes: field("VmHWM:"),
        }
    }
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

/// How long compaction spins for the index's read lock before it blocks (a few writer calls'
/// worth: see `Inner::read_index_spinning`).
const SPIN_FOR: Duration = Duration::from_micros(250);

struct Inner {
    store: Store,
    index: RwLock<Index>,
    /// Taken by a writer while it holds the index's upgradable lock (and released before it
    /// upgrades), by compaction under the write lock, by `counts` under the read lock: never
    /// held while waiting for the index.
    cache: Mutex<ProfileCache>,
    /// Profiles the open's repair dropped (their chain ran through a quarantined segment).
    lost: Vec<String>,
    options: Options,
    /// Of `options`, read once for every call's validation.
    placeholder_lens: PlaceholderLens,
    compaction: Mutex<()>,
    /// Calls the guard skipped an identifier of (issue 16).
    guard_skipped: std::sync::atomic::AtomicU64,
    /// What the segments of history steps held after the last compaction that rewrote them
    /// (or at the open). See [`Steps`].
    steps_rewritten: std::sync::atomic::AtomicU64,
    /// The store is closing: the background thread ends, and gives up the compaction in
    /// flight (read between its entries) rather than make `Db::close` wait for it
    /// ([`Inner::compact_or_give_up`]). Set under `wake_lock`, so a thread about to wait on
    /// `wake` cannot miss it.
    stopping: std::sync::atomic::AtomicBool,
    wake_lock: Mutex<()>,
    wake: Condvar,
    /// Calls from many threads, applied in groups (`db/writers.rs`).
    writers: writers::Writers,
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
        Self::open_store(dir.as_ref(), options, store_options)
    }

    /// Open with explicit storage options (feature `testing`: tests inject I/O faults this way).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn open_with(dir: &Path, options: Options, store_options: StoreOptions) -> Result<Db> {
        Self::open_store(dir, options, store_options)
    }

    /// Test hook (feature `testing`): a full compaction given up, as a background one is when
    /// the store closes, once it has been asked `entries` times whether to go on (before it
    /// begins, then before each entry it copies). Returns the bytes reclaimed (0 when given
    /// up) and the compaction's output files (`*.seg.tmp`) that existed when it gave up.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn compact_giving_up_after(&self, entries: usize) -> Result<(u64, Vec<String>)> {
        let dir = self.inner.store.dir().to_path_buf();
        let (mut asked, mut outputs) = (0, Vec::new());
        let reclaimed = self
            .inner
            .compact_or_give_up(Steps::All, &mut || {}, &mut || {
                asked += 1;
                if asked <= entries {
                    return false;
                }
                if outputs.is_empty() {
                    outputs = std::fs::read_dir(&dir)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.ends_with(".seg.tmp"))
                        .collect();
                }
                true
            })?;
        Ok((reclaimed, outputs))
    }

    /// Refuse to write into `dir` if it is a non-empty directory holding no store file: it is
    /// someone else's, and opening it for writing would add a store to it ([`Error::Options`];
    /// nothing is touched). A missing or empty directory, or a store, passes. Surfaces that
    /// create stores (the CLI's write commands, the server) call this before [`Db::open`].
    pub fn check_store_dir(dir: impl AsRef<Path>) -> Result<()> {
        crate::storage::check_store_dir(dir.as_ref())
    }

    fn open_store(dir: &Path, options: Options, store_options: StoreOptions) -> Result<Db> {
        if options.chain_limit == 0
            || options.chain_limit > crate::entries::profile::MAX_CHAIN_DEPTH + 1
        {
            return Err(Error::Options {
                name: "chain_limit",
                reason: format!(
                    "must be between 1 and {}",
                    crate::entries::profile::MAX_CHAIN_DEPTH + 1
                ),
            });
        }
        if options.max_property_names > u32::MAX as usize {
            return Err(Error::Options {
                name: "max_property_names",
                reason: "must fit in 32 bits".into(),
            });
        }
        let mut rebuild = Rebuild::new(options.dedupe_window, store_options.io.clone(), dir);
        rebuild.repair = store_options.repair;
        if options.preallocate_bytes > options.segment_size {
            return Err(Error::Options {
                name: "preallocate_bytes",
                reason: "must be at most segment_size".into(),
            });
        }
        let store = Store::open(dir, store_options, &mut rebuild)?;
        store.set_preallocate(options.preallocate_bytes)?;
        let (mut index, lost) = rebuild.finish(&store)?;
        remove_unnamed_tables(&store, &index)?;
        // The replay's steps are not told apart by segment kind: counted as dead until the
        // first compaction moves them (see `Journal::in_log_bytes`).
        index.journal.in_log_bytes = 0;
        index.journal.set_retention(options.history_retention);
        index.journal.guard.max_user_ids = options.guard_max_user_ids;
        index.journal.guard.window_us =
            i64::try_from(options.guard_window.as_micros()).unwrap_or(i64::MAX);
        let store_step_bytes = store.step_bytes();
        let inner = Arc::new(Inner {
            store,
            index: RwLock::new(index),
            cache: Mutex::new(ProfileCache::new(options.profile_cache_bytes)),
            lost,
            placeholder_lens: PlaceholderLens::of(&options),
            options,
            compaction: Mutex::new(()),
            guard_skipped: std::sync::atomic::AtomicU64::new(0),
            steps_rewritten: std::sync::atomic::AtomicU64::new(store_step_bytes),
            stopping: std::sync::atomic::AtomicBool::new(false),
            wake_lock: Mutex::new(()),
            wake: Condvar::new(),
            writers: writers::Writers::default(),
        });
        // The background thread compacts and writes the history tables of sealed segments
        // to files (without it, checkpoints, compactions and close write them).
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
    ///
    /// Calls from many threads at once are applied in groups by one of them and synced once
    /// per group (the writer queue, docs/architecture.md): each call is still its own atomic
    /// frame with its own outcome, answered once as durable as `durability` says.
    pub fn apply_with(&self, message: &Message, durability: Durability) -> Result<Outcome> {
        validate_with(message, &self.inner.options, self.inner.placeholder_lens)?;
        self.apply_valid(message, durability)
    }

    /// Apply `messages` in order, one thread, with an explicit durability: the same results
    /// as [`Db::apply_with`] of each in turn (a refused call is refused alone; the others are
    /// applied), faster. For a caller holding many calls at once: the server's batches, an
    /// import, a consumer's poll (docs/architecture.md, "Batches").
    ///
    /// When no other thread is writing, the batch takes the writer queue once, applies each
    /// call while the memory the coming calls will read is loaded into the CPU's caches
    /// (their identifiers' entries, their profiles' cached records: `apply::ahead`), and the
    /// calls that must wait for a sync wait for one sync after the last; otherwise its calls
    /// go through the queue one by one. A failure that is not a refusal (an I/O error, a
    /// damaged record) stops the batch: the calls after it are not applied and answer
    /// [`Error::NotApplied`].
    pub fn apply_batch(
        &self,
        messages: &[Message],
        durability: Durability,
    ) -> Vec<Result<Outcome>> {
        let calls: Vec<&Message> = messages.iter().collect();
        self.inner
            .writers
            .submit_batch(self, &calls, durability, true)
    }

    /// [`Db::apply_batch`] of messages validated by [`Db::prepare`] /
    /// [`Db::prepare_message`] of this store, without validating them again.
    pub fn apply_prepared_batch(
        &self,
        prepared: &[Prepared],
        durability: Durability,
    ) -> Vec<Result<Outcome>> {
        self.apply_prepared_refs(prepared.iter(), durability)
    }

    /// [`Db::apply_prepared_batch`] of prepared messages held apart (the server's calls).
    pub(crate) fn apply_prepared_refs<'p>(
        &self,
        prepared: impl Iterator<Item = &'p Prepared>,
        durability: Durability,
    ) -> Vec<Result<Outcome>> {
        let calls: Vec<&Message> = prepared.map(|p| &p.0).collect();
        self.inner
            .writers
            .submit_batch(self, &calls, durability, false)
    }

    /// Apply a message that passed validation.
    fn apply_valid(&self, message: &Message, durability: Durability) -> Result<Outcome> {
        self.apply_valid_at(message, None, durability)
    }

    /// Through the writer queue: applied in a group with the calls of other threads, answered
    /// once as durable as `durability` says (`db/writers.rs`).
    fn apply_valid_at(
        &self,
        message: &Message,
        source: Option<&SourceOffset>,
        durability: Durability,
    ) -> Result<Outcome> {
        self.inner.writers.submit(self, message, source, durability)
    }

    /// Apply a prepared message and record, in the same atomic frame, that the store has
    /// applied an external log up to `at` (the consumer of docs/scaling.md passes the position
    /// just after this call). After a crash the store holds the call and `at` together or
    /// neither, so [`Db::source_offset`] says exactly where to resume. A call that writes
    /// nothing (a duplicate `messageId`) or is refused records nothing: replaying it from the
    /// older position gives the same answer; [`Db::mark_source_offset`] moves the position
    /// past such calls.
    pub fn apply_at(
        &self,
        prepared: &Prepared,
        at: &SourceOffset,
        durability: Durability,
    ) -> Result<Outcome> {
        self.apply_valid_at(&prepared.0, Some(at), durability)
    }

    /// Record that an external log was applied up to `at` without applying a call (one small
    /// frame): for messages that wrote nothing, such as a poison message sent to a
    /// dead-letter topic. Does nothing when the store is already at `at`.
    pub fn mark_source_offset(&self, at: &SourceOffset, durability: Durability) -> Result<()> {
        if self.source_offset(&at.topic, at.partition).as_ref() == Some(at) {
            return Ok(());
        }
        self.write(
            durability,
            |_| {
                Ok(Outcome {
                    key: 0,
                    status: Status::Unchanged,
                    merged: Vec::new(),
                    moved: Vec::new(),
                    ignored: Vec::new(),
                    quarantined: Vec::new(),
                })
            },
            None,
            Some(at),
        )
        .map(|_| ())
    }

    /// The position in an external log's topic partition this store has applied up to
    /// (written by [`Db::apply_at`] / [`Db::mark_source_offset`], kept through compaction and
    /// the index snapshot, recovered on open); `None` if it never applied anything from it.
    pub fn source_offset(&self, topic: &str, partition: i32) -> Option<SourceOffset> {
        self.inner
            .index
            .read()
            .source_offset(topic, partition)
            .cloned()
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
        validate_with(&message, &self.inner.options, self.inner.placeholder_lens)?;
        Ok(Prepared(message))
    }

    /// Apply a message validated by [`Db::prepare`] / [`Db::prepare_message`] of this store:
    /// the same as [`Db::apply_with`] without validating again.
    pub fn apply_prepared(&self, prepared: &Prepared, durability: Durability) -> Result<Outcome> {
        self.apply_valid(&prepared.0, durability)
    }

    /// The one write path: build a batch under the index lock, append it, update the index,
    /// release the lock, then wait for durability.
    fn write(
        &self,
        durability: Durability,
        build: impl FnOnce(&mut Builder<'_>) -> Result<Outcome>,
        dedupe: Option<(&str, &Message)>,
        source: Option<&SourceOffset>,
    ) -> Result<Outcome> {
        let (outcome, seq) = self.write_unsynced(build, dedupe, source, None)?;
        // A duplicate's first delivery may still be waiting for its sync: so does the retry.
        self.inner.store.wait_durable(seq, durability)?;
        Ok(outcome)
    }

    /// [`Db::write`] but the wait: the outcome, and the frame sequence number that must be
    /// durable before the call is (0: it wrote nothing); `Poisoned` if the store failed by
    /// the time the call is done (`Durability::Buffered`'s check, as `write` makes it).
    /// `dedupe`: the call's messageId and message, for the dedupe check and the note `finish`
    /// writes (the build returns its outcome alone: returned with the messageId, it was moved
    /// once more, ~112 bytes). `ahead`: a batch's coming calls, whose memory is loaded
    /// meanwhile (`apply::ahead`).
    fn write_unsynced(
        &self,
        build: impl FnOnce(&mut Builder<'_>) -> Result<Outcome>,
        dedupe: Option<(&str, &Message)>,
        source: Option<&SourceOffset>,
        ahead: Option<&mut apply::ahead::Ahead<'_>>,
    ) -> Result<(Outcome, u64)> {
        let inner = &*self.inner;
        // Upgradable: readers (compaction's per-entry look-ups, `get`) go on while the call
        // is built, encoded and appended, which only read the index; the write lock is taken
        // for the commit alone. Writers still exclude each other (and anything under the
        // write lock or another upgradable lock, such as the hint's snapshot).
        let index = inner.index.upgradable_read();
        // Hashed once: the dedupe note `finish` writes is of the same messageId. Probed once
        // too: the commit inserts it where this check found it absent (no other writer runs
        // meanwhile).
        let hashed = dedupe.map(|(mid, _)| (mid, apply::message_hash(mid)));
        let absent = hashed.and_then(|(_, hash)| index.message_absent(hash));
        if let (Some((_, message)), Some(_), None) = (dedupe, hashed, absent) {
            let key = Builder::current_key(&index, message);
            let seq = index.last_seq();
            drop(index);
            let outcome = Outcome {
                key,
                status: Status::Duplicate,
                merged: Vec::new(),
                moved: Vec::new(),
                ignored: Vec::new(),
                quarantined: Vec::new(),
            };
            inner.store.wait_durable(seq, Durability::Buffered)?;
            return Ok((outcome, seq));
        }
        let mut cache = inner.cache.lock();
        if let Some(ahead) = ahead {
            ahead.step(&index, &cache);
        }
        let mut builder = Builder::new(&index, &mut cache, &inner.store, &inner.options);
        let outcome = build(&mut builder)?;
        if !outcome.quarantined.is_empty() {
            inner
                .guard_skipped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // The dedupe check's messageId, its hash kept.
        let mut batch = builder.finish_hashed(&outcome, hashed)?;
        if let Some(at) = source {
            batch.push_source(at);
        }
        if batch.is_empty() {
            batch.recycle();
            inner.store.wait_durable(0, Durability::Buffered)?;
            return Ok((outcome, 0));
        }
        let appended = inner.store.append(batch.built_entries())?;
        cache.insert_written(batch.written_mut(), &appended.locations);
        drop(cache);
        let mut index = RwLockUpgradableReadGuard::upgrade(index);
        index.linked.extend(batch.linked());
        index.set_last_seq(appended.seq);
        batch.commit(&mut index, &appended.locations, absent);
        drop(index);
        batch.recycle();
        inner
            .store
            .wait_durable(appended.seq, Durability::Buffered)?;
        Ok((outcome, appended.seq))
    }

    fn lookup(index: &Index, selector: &Selector) -> Option<u64> {
        match selector {
            Selector::UserId(u) => index.user_key(u),
            Selector::Email(e) => index.email_key(e),
            Selector::AnonymousId(a) => index.anon_key(a),
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
        let Some(loc) = index.location(key) else {
            return Ok(None);
        };
        let rec = apply::read_profile(&self.inner.store, index, loc)?;
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
        let out = self.write(durability, |b| b.delete(key, suppress), None, None)?;
        Ok(Some(out.key))
    }

    /// Detach an anonymous id from its profile (logout). Returns the profile's key.
    pub fn unlink(&self, anonymous_id: &str) -> Result<Option<u64>> {
        let Some(key) = self.inner.index.read().anon_key(anonymous_id) else {
            return Ok(None);
        };
        let durability = self.inner.options.durability;
        let out = self.write(durability, |b| b.unlink(key, anonymous_id), None, None)?;
        Ok(Some(out.key))
    }

    /// A company with its member count.
    pub fn company(&self, id: &str) -> Result<Option<Company>> {
        let index = self.inner.index.read();
        let Some(info) = index.company(id) else {
            return Ok(None);
        };
        let properties = match info.location {
            Some(at) => view::props_of_company(apply::read_company(&self.inner.store, at)?),
            None => Vec::new(),
        };
        Ok(Some(Company {
            id: id.to_string(),
            properties,
            member_count: info.members as u64,
        }))
    }

    /// Keys of a company's members, ascending.
    pub fn members(&self, id: &str) -> Result<Vec<u64>> {
        Ok(self.inner.index.read().members(id))
    }

    /// Visit every profile matching `filter`, in key order; `f` returns false to stop.
    /// Writers are not blocked for the whole scan: each profile is read under a short lock.
    pub fn scan(&self, filter: &Filter, f: &mut dyn FnMut(Profile) -> bool) -> Result<()> {
        let mut keys: Vec<u64> = self.inner.index.read().profiles().map(|p| p.0).collect();
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

    /// Compact now, every sealed segment (the segments of history steps too); returns bytes
    /// reclaimed. Like every full compaction it empties the writer cache first
    /// ([`Steps::All`]).
    pub fn compact(&self) -> Result<u64> {
        self.inner.compact(Steps::All, &mut || {})
    }

    /// Compact now as the background thread does: every sealed segment but the segments of
    /// history steps, unless they are due (doubled since they were last rewritten, or
    /// history off: `Steps::Due`). Returns bytes
    /// reclaimed. docs/journal.md, "What compactions write with history on".
    pub fn compact_in_background_mode(&self) -> Result<u64> {
        self.inner.compact(Steps::Due, &mut || {})
    }

    /// Delete the segments of history steps whose every step has left the window, as the
    /// background thread does every second: they are read (each step checked) and nothing
    /// is written. Returns bytes reclaimed (0 when none has expired). docs/journal.md, "What
    /// compactions write with history on".
    pub fn drop_expired_history_segments(&self) -> Result<u64> {
        self.inner.compact(Steps::Expired, &mut || {})
    }

    /// [`Db::compact`], calling `during` once the segments to compact are sealed, again
    /// once their live records are copied, and a third time once the compaction is decided
    /// (forwards and manifest durable), just before the switch: for tests that write while a
    /// compaction runs, at a known point. `during` runs without the index and cache
    /// locks but with the compaction's own: it may write and read, not compact, erase,
    /// lift a suppression or unmerge (those wait for the compaction).
    #[doc(hidden)]
    pub fn compact_with(&self, during: &mut dyn FnMut()) -> Result<u64> {
        self.inner.compact(Steps::All, during)
    }

    /// Write the index snapshot (hint file) now, so that the next open replays less.
    /// The history tables of segments sealed since the last compaction are written to files
    /// first (`index::journal`), so that the snapshot names them instead of listing them.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.spill_history_tables(false)?;
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
        for (key, loc) in index.profiles() {
            let rec = match apply::read_profile(&self.inner.store, &index, loc) {
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
            let mut expect = |found: Option<u64>, what, v: &str| {
                identifiers += 1;
                if found != Some(key) {
                    problems.push(format!(
                        "segment {} offset {}: profile {key} has {what} {v:?} but the index \
                         points it at {found:?}",
                        loc.segment, loc.offset,
                    ));
                }
            };
            if let Some(u) = &ids.user_id {
                expect(index.user_key(u), "user id", u);
            }
            if let Some(e) = &ids.email {
                expect(index.email_key(e), "email", e);
            }
            for a in &ids.anonymous_ids {
                expect(index.anon_key(a), "anonymous id", a);
            }
        }
        let indexed = index.identifier_count();
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
        let profiles = index.profile_count() as u64;
        let cache = self.inner.cache.lock();
        Stats {
            profiles,
            companies: index.company_count() as u64,
            property_names: index.name_count() as u64,
            live_bytes,
            dead_bytes: storage.disk_bytes.saturating_sub(live_bytes),
            index_bytes: memory.profiles + memory.dedupe + memory.other,
            index_bytes_per_profile: if profiles == 0 {
                0.0
            } else {
                (memory.profiles - memory.id_bytes) as f64 / profiles as f64
            },
            dedupe_bytes: memory.dedupe,
            process: ProcessMemory::now(),
            profile_cache_bytes: cache.bytes() as u64,
            profile_cache_hits: cache.hits,
            profile_cache_misses: cache.misses,
            profile_cache_refused: cache.refused,
            profile_records: cache.records,
            dropped_by_repair: self.inner.lost.clone(),
            history_steps: index.journal.len() as u64,
            history_index_bytes: index.journal.heap_bytes() as u64,
            quarantined: index.journal.guard.list(),
            guard_skipped_calls: self
                .inner
                .guard_skipped
                .load(std::sync::atomic::Ordering::Relaxed),
            storage,
        }
    }

    /// Sync, write the index snapshot, release the lock.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Test hook (feature `testing`): give up the store without syncing or writing the index snapshot, as a
    /// crash would (bytes the OS already has stay), so that the next open replays the log.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn abandon(mut self) {
        self.closed = true;
        let _ = self.shutdown();
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(handle) = self.background.take() {
            {
                let _held = self.inner.wake_lock.lock();
                self.inner
                    .stopping
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            self.inner.wake.notify_all();
            let _ = handle.join();
        }
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        self.inner.store.sync()?;
        self.inner.store.trim_preallocated()?;
        self.inner.spill_history_tables(true)?;
        self.inner.write_hint()
    }
}

/// Figures cheap enough to read on every metrics scrape (see [`Db::counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Live profiles.
    pub profiles: u64,
    /// Companies.
    pub companies: u64,
    /// Bytes of all segment files.
    pub disk_bytes: u64,
    /// Bytes of the segments that hold history steps only (within `disk_bytes`; see
    /// docs/journal.md, "What compactions write with history on").
    pub history_segment_bytes: u64,
    /// fdatasync calls since the store was opened.
    pub syncs: u64,
    /// Identifiers the guard holds quarantined (docs/journal.md "Guard").
    pub quarantined: u64,
    /// Calls since open that carried a quarantined identifier (or had one quarantined).
    pub guard_skipped_calls: u64,
}

// Administration for servers: cheap counts, and listing and lifting suppressions.
impl Db {
    /// Counts kept as writes happen: cost independent of the number of profiles (map sizes
    /// under a short read lock, the segment table, atomic counters). [`Db::stats`] walks the
    /// whole index instead.
    pub fn counts(&self) -> Counts {
        let storage = self.inner.store.stats();
        let index = self.inner.index.read();
        Counts {
            profiles: index.profile_count() as u64,
            companies: index.company_count() as u64,
            disk_bytes: storage.disk_bytes,
            history_segment_bytes: self.inner.store.step_bytes(),
            syncs: storage.syncs,
            quarantined: index.journal.guard.list().len() as u64,
            guard_skipped_calls: self
                .inner
                .guard_skipped
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The suppression hash of a selector's identifier (`None` for [`Selector::Key`]).
    fn suppression_of(selector: &Selector) -> Option<u128> {
        Some(match selector {
            Selector::UserId(u) => apply::suppression_hash("user_id", u),
            Selector::Email(e) => {
                apply::suppression_hash("email", &crate::profile::validate::normalize_email(e))
            }
            Selector::AnonymousId(a) => apply::suppression_hash("anonymous_id", a),
            Selector::Key(_) => return None,
        })
    }

    /// Whether calls naming this identifier are refused (a [`Selector::Key`] never is).
    pub fn is_suppressed(&self, selector: &Selector) -> bool {
        Self::suppression_of(selector).is_some_and(|h| self.inner.index.read().is_suppressed(h))
    }

    /// Suppressed identifiers, as their 128-bit hashes (only hashes are stored), ascending,
    /// at most `limit` of them after `after`.
    pub fn suppressions(&self, after: Option<u128>, limit: usize) -> Vec<u128> {
        let index = self.inner.index.read();
        let mut all: Vec<u128> = index
            .suppressed_hashes()
            .filter(|h| after.is_none_or(|a| *h > a))
            .collect();
        all.sort_unstable();
        all.truncate(limit);
        all
    }

    /// Lift the suppression of an identifier: later calls naming it are accepted again.
    /// `Ok(false)` if it was not suppressed. The suppression entry is dropped from the index
    /// and the store compacted before this returns, so the lift is durable (the entry is no
    /// longer in any segment); no new kind of entry is written. If the compaction fails the
    /// error is returned and the suppression comes back at the next open.
    pub fn lift_suppression(&self, selector: &Selector) -> Result<bool> {
        let Some(hash) = Self::suppression_of(selector) else {
            return Ok(false);
        };
        {
            if !self.inner.index.write().lift_suppression(hash) {
                return Ok(false);
            }
        }
        self.inner.store.sync()?;
        self.inner.compact(Steps::All, &mut || {})?;
        Ok(true)
    }

    /// Delete a profile and rewrite every segment before returning, so that no file of the
    /// store holds its bytes any more (the old segments are unlinked, the index snapshot
    /// rewritten). Costs a full compaction. `Ok(None)` if nothing matched.
    pub fn delete_and_erase(&self, selector: &Selector, suppress: bool) -> Result<Option<u64>> {
        let deleted = self.delete(selector, suppress)?;
        if deleted.is_some() {
            self.inner.store.sync()?;
            self.inner.compact(Steps::All, &mut || {})?;
        }
        Ok(deleted)
    }
}

// Issue 16, the identity journal (docs/journal.md): history and the profile as it was.
impl Db {
    /// A profile's history as kept (steps younger than `Options::history_retention`), oldest
    /// first. A key merged away has the history it had up to the merge. `Ok(None)` if
    /// nothing matched (a deleted profile's history is gone with it).
    pub fn history(&self, selector: &Selector) -> Result<Option<crate::journal::History>> {
        let index = self.inner.index.read();
        let key = match selector {
            Selector::Key(k) => *k,
            other => match Self::lookup(&index, other) {
                Some(k) => k,
                None => return Ok(None),
            },
        };
        crate::journal::read::history(&self.inner.store, &index, key)
    }

    /// Identifiers the guard quarantined, as `email:VALUE` / `anonymous_id:VALUE`, sorted.
    pub fn quarantined(&self) -> Vec<String> {
        self.inner.index.read().journal.guard.list()
    }

    /// Release a quarantined identifier (`kind` is `email` or `anonymous_id`): later calls
    /// carrying it merge and move through it again, and its link count starts from zero.
    /// `Ok(false)` if it was not quarantined. Like [`Db::lift_suppression`], its entry is
    /// dropped from the index and the store compacted before this returns (a crash before
    /// that brings the quarantine back at the next open: fail closed).
    pub fn release_quarantined(&self, kind: &str, value: &str) -> Result<bool> {
        if kind != "email" && kind != "anonymous_id" {
            return Err(Error::invalid("kind", "must be email or anonymous_id"));
        }
        let ident = crate::journal::guard::hash(kind, value);
        if !self.inner.index.write().journal.guard.release(ident) {
            return Ok(false);
        }
        self.inner.store.sync()?;
        self.inner.compact(Steps::All, &mut || {})?;
        Ok(true)
    }

    /// What `message` would do, without writing anything: which profile each identifier
    /// finds, the survivor and the rule that chose it, merges, moved identifiers, each
    /// property change (old, new, the deciding stamp), or the refusal with its fields. Runs
    /// the write path's own rules on copies under a read lock (`journal::explain`).
    pub fn explain(&self, message: &Message) -> Result<crate::journal::explain::Explanation> {
        let index = self.inner.index.read();
        crate::journal::explain::explain(&index, &self.inner.store, &self.inner.options, message)
    }

    /// [`Db::explain`] of one JSON message (a message that does not parse is an error).
    pub fn explain_json(&self, json: &[u8]) -> Result<crate::journal::explain::Explanation> {
        let limit = self.inner.options.max_call_bytes;
        if json.len() > limit {
            return Err(Error::invalid(
                "message",
                format!("is {} bytes; at most {limit} are accepted", json.len()),
            ));
        }
        match Message::parse(json) {
            Ok(m) => self.explain(&m),
            Err(Error::Invalid(fields)) => {
                Ok(crate::journal::explain::Explanation::refused(fields))
            }
            Err(e) => Err(e),
        }
    }

    /// Split a merge back (docs/journal.md "Unmerge"): `merged_key`, merged into the profile
    /// `survivor` selects within the history window, returns under its key with the
    /// identifiers and properties it brought and the changes of later calls attributed to it;
    /// the survivor loses them. One batch (one frame): both records, both steps, and the end
    /// of the key's redirect, so a crash leaves either the merge or the unmerge, never half.
    /// Refusals are [`Error::Unmerge`]; nothing is written then.
    pub fn unmerge(
        &self,
        survivor: &Selector,
        merged_key: u64,
    ) -> Result<crate::journal::unmerge::Unmerged> {
        use crate::apply::Change;
        use crate::entries::history::StepKind;
        use crate::error::UnmergeError;
        let inner = &*self.inner;
        // No compaction meanwhile: the key's redirect entry is then never copied after the
        // record that ends it.
        let _no_compaction = inner.compaction.lock();
        let mut index = inner.index.write();
        let survivor =
            Self::lookup(&index, survivor).ok_or(Error::Unmerge(UnmergeError::NoSurvivor))?;
        let now = crate::types::value::Timestamp::now();
        let plan =
            crate::journal::unmerge::plan(&inner.store, &index, survivor, merged_key, now.0)?;
        let arrival = index.journal.next_arrival(now.0);
        let mut call = crate::journal::CallInfo::new(arrival, StepKind::Unmerge);
        let stamp = crate::types::state::Stamp::new(now, index.last_seq().saturating_add(1));
        let (mut step_s, mut step_r) = (Vec::new(), Vec::new());
        call.step(
            &mut step_s,
            StepKind::Unmerge,
            stamp,
            None,
            &crate::entries::history::diff(Some(&plan.survivor_before), &plan.survivor),
            Default::default(),
            false,
            &plan.survivor,
            &[],
        );
        call.step(
            &mut step_r,
            StepKind::Unmerge,
            stamp,
            None,
            &crate::entries::history::diff(Some(&plan.merged_at_merge), &plan.restored),
            Default::default(),
            false,
            &plan.restored,
            &[],
        );
        let rec_s = crate::entries::encode_profile(&plan.survivor, 256);
        let rec_r = crate::entries::encode_profile(&plan.restored, 256);
        let entries = [
            (EntryKind::Profile, survivor, &rec_s),
            (EntryKind::History, survivor, &step_s),
            (EntryKind::Profile, merged_key, &rec_r),
            (EntryKind::History, merged_key, &step_r),
        ];
        let entries: Vec<crate::storage::Entry<'_>> = entries
            .iter()
            .map(|(kind, id, data)| crate::storage::Entry {
                kind: kind.byte(),
                id: *id,
                data,
            })
            .collect();
        let changes = vec![
            Change::Profile {
                key: survivor,
                ids: Some((
                    Some(Box::new(plan.survivor_before.ids.clone())),
                    crate::apply::After::Ids(Box::new(plan.survivor.ids.clone())),
                )),
            },
            Change::History {
                key: survivor,
                arrival,
            },
            Change::Profile {
                key: merged_key,
                ids: Some((
                    None,
                    crate::apply::After::Ids(Box::new(plan.restored.ids.clone())),
                )),
            },
            Change::History {
                key: merged_key,
                arrival,
            },
        ];
        let appended = inner.store.append(&entries)?;
        index.set_last_seq(appended.seq);
        apply::commit(&mut index, changes, &appended.locations);
        let out = crate::journal::unmerge::Unmerged {
            survivor: view::profile(&index, survivor, plan.survivor),
            restored: view::profile(&index, merged_key, plan.restored),
        };
        drop(index);
        inner
            .store
            .wait_durable(appended.seq, Durability::SyncEach)?;
        Ok(out)
    }

    /// "As of now" for [`Db::get_at`]: a time at or after the `applied_at` of every step
    /// written so far and before that of any later one (the journal clock hands out
    /// `max(now, last + 1)`, so this is `max(last, now - 1 µs)`).
    pub fn history_clock(&self) -> crate::types::value::Timestamp {
        let now = crate::types::value::Timestamp::now().0;
        let last = self.inner.index.read().journal.next_arrival(0) - 1;
        crate::types::value::Timestamp(last.max(now - 1))
    }

    /// The profile as it was at `at` (after every call the store applied at or before that
    /// time, by the journal clock `HistoryStep::applied_at`). An identifier selector finds
    /// today's profile, then, going back, the profile that carried the identifier at `at`
    /// (one merged into it since, if the identifier came with it). A [`Selector::Key`] of a
    /// profile merged away before `at` gives its survivor. `Ok(None)`: no such profile then.
    /// `at` older than the retention window is [`Error::Invalid`] (the steps are gone).
    pub fn get_at(
        &self,
        selector: &Selector,
        at: crate::types::value::Timestamp,
    ) -> Result<Option<Profile>> {
        let index = self.inner.index.read();
        if !index.journal.enabled() {
            return Err(Error::invalid(
                "at",
                "history is off for this store (history_retention 0)",
            ));
        }
        let horizon = index
            .journal
            .horizon(crate::types::value::Timestamp::now().0);
        if at.0 < horizon {
            return Err(Error::invalid(
                "at",
                format!(
                    "is older than the history window (kept since {})",
                    crate::types::value::Timestamp(horizon)
                ),
            ));
        }
        let store = &self.inner.store;
        let (key, by_key) = match selector {
            Selector::Key(k) => (*k, true),
            other => match Self::lookup(&index, other) {
                Some(k) => (k, false),
                None => return Ok(None),
            },
        };
        let found = crate::journal::read::at(store, &index, key, at.0)?;
        if by_key {
            return Ok(found.map(|(k, rec)| view::profile(&index, k, rec)));
        }
        let carries = |rec: &crate::entries::ProfileRecord| match selector {
            Selector::UserId(u) => rec.ids.user_id.as_deref() == Some(u.as_str()),
            Selector::Email(e) => rec.ids.email.as_deref().is_some_and(|x| {
                crate::profile::validate::normalize_email(x)
                    == crate::profile::validate::normalize_email(e)
            }),
            Selector::AnonymousId(a) => rec.ids.anonymous_ids.iter().any(|x| x == a),
            Selector::Key(_) => true,
        };
        if let Some((k, rec)) = &found
            && carries(rec)
        {
            return Ok(Some(view::profile(&index, *k, rec.clone())));
        }
        for gone in crate::journal::read::merged_since(store, &index, key, at.0)? {
            if let Some((k, rec)) = crate::journal::read::at(store, &index, gone, at.0)?
                && carries(&rec)
            {
                return Ok(Some(view::profile(&index, k, rec)));
            }
        }
        Ok(None)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// How the writer queue's leader applies a call and syncs the group.
impl writers::Engine for Db {
    fn write_call(
        &self,
        message: &Message,
        source: Option<&SourceOffset>,
        ahead: Option<&mut apply::ahead::Ahead<'_>>,
    ) -> Result<(Outcome, u64)> {
        // As `write` does for every call, `write_unsynced` checks that the store did not fail
        // since (a sync of the group commit thread, say: `Poisoned`, also for a duplicate):
        // the result is handed on as it comes (kept here to check it, the outcome was copied
        // once more, ~16 instructions).
        self.write_unsynced(
            |b| {
                b.check_suppressed(message)?;
                b.apply(message)
            },
            message.message_id().map(|mid| (mid, message)),
            source,
            ahead,
        )
    }

    fn sync_to(&self, seq: u64) -> Result<()> {
        self.inner.store.wait_durable(seq, Durability::SyncEach)
    }

    fn check(&self, message: &Message) -> Result<()> {
        validate_with(message, &self.inner.options, self.inner.placeholder_lens)
    }
}

impl Inner {
    fn write_hint(&self) -> Result<()> {
        // An upgradable lock keeps writers out (they build their calls under one too) while
        // the snapshot is written (into the page cache, streamed), so it matches the position
        // exactly; it is released before the syncs. The temp file is made and prefilled
        // before it is taken (`Store::hint_writer`).
        let writer = self.store.hint_writer()?;
        let mut index = Some(self.index.upgradable_read());
        let position = self.store.hint_position()?;
        writer.write(&position, &mut |sink| {
            let written = match &index {
                Some(index) => index.write_snapshot(sink),
                None => Ok(crc32fast::Hasher::new()),
            };
            index = None;
            written
        })
    }

    /// The index's read lock for compaction, which takes it once per entry while a writer
    /// takes the write lock once per call (for its index update only, so the lock is nearly
    /// always free): waiting for it by spinning (at most [`SPIN_FOR`], then blocking) instead
    /// of parking spares the writer a futex wake at nearly every unlock.
    fn read_index_spinning(&self) -> parking_lot::RwLockReadGuard<'_, Index> {
        let mut since = None;
        loop {
            for _ in 0..64 {
                if let Some(index) = self.index.try_read() {
                    return index;
                }
                std::hint::spin_loop();
            }
            let started = *since.get_or_insert_with(Instant::now);
            if started.elapsed() >= SPIN_FOR {
                return self.index.read();
            }
            std::thread::yield_now();
        }
    }

    /// Compaction with chain folding: every live profile is copied as one full record (its
    /// chain folded), every other record of a chain is dropped. Writers continue meanwhile
    /// and may link deltas into the inputs (sealed under the index write lock, so no append
    /// slips in between): the record a delta links to is kept (`Index::linked`) and
    /// copied folded even when it is no longer the newest, and before the switch the pairs
    /// old place -> new place of those records are written and synced as `FORWARD` entries,
    /// then replace the index's forwards (docs/architecture.md, "Compaction"). Writers wait
    /// for the seal and the in-memory switch only: the log's segment is synced before it is
    /// sealed (the seal's own syncs, the tail and the next segment's creation, find little
    /// to do), and deltas stop linking into the inputs while the forwards and the manifest
    /// are synced without the index and cache locks.
    ///
    /// `during` runs once the inputs are sealed, again once they are copied, and a third
    /// time once the compaction is decided (its forwards and manifest durable) but not yet
    /// switched in, without the index and cache locks (tests use it to write at those
    /// points).
    fn compact(&self, steps: Steps, during: &mut dyn FnMut()) -> Result<u64> {
        self.compact_or_give_up(steps, during, &mut || false)
    }

    /// [`Inner::compact`], given up while `give_up` answers true (asked before it begins and
    /// before each entry it copies): the background's compactions give up once the store is
    /// closing (`stopping`). A compaction given up leaves the store as it was (its outputs
    /// removed) and returns 0; only the copy is given up (the decision and the switch are
    /// short and run to their end), and a compaction of the segments of steps alone
    /// (`Steps::Expired`) is not.
    fn compact_or_give_up(
        &self,
        steps: Steps,
        during: &mut dyn FnMut(),
        give_up: &mut dyn FnMut() -> bool,
    ) -> Result<u64> {
        let _one_at_a_time = self.compaction.lock();
        if give_up() {
            return Ok(0);
        }
        let with_steps = match steps {
            Steps::All | Steps::Expired => true,
            Steps::Due => self.steps_due(),
        };
        // Segments of steps alone: no profile record moves, so the forwards and the links
        // into a running compaction are left as they are.
        let only_steps = matches!(steps, Steps::Expired);
        if !only_steps {
            // Sealing the log's segment syncs it and starts the next one under the index's
            // lock: the next one is created here, and most of the sealed one's bytes are
            // synced, without it.
            self.store.create_next_segment()?;
            self.store.sync()?;
        }
        let (inputs, forwards, tables, steps_in_inputs) = {
            let mut index = self.index.write();
            let inputs = if only_steps {
                let expired = self.expired_segments(&index);
                index.journal.forget_bounds(&expired.gone);
                let inputs = self.store.begin_compaction_of_steps(&expired.steps);
                if inputs.is_empty() {
                    return Ok(0);
                }
                inputs
            } else {
                self.store.begin_compaction(with_steps)?
            };
            // Every step in the inputs leaves the log segments (to the segments of steps, or
            // dropped); those appended from here on stay in them.
            let steps_in_inputs = if only_steps {
                0
            } else {
                index.journal.in_log_bytes
            };
            // The inputs' history tables, read without the lock to write the outputs'.
            let tables = index.journal.freeze(&inputs);
            let mut cache = self.cache.lock();
            if matches!(steps, Steps::All) {
                cache.clear();
            }
            cache.compacting = inputs.clone();
            drop(cache);
            if !only_steps {
                index.linked.clear();
            }
            (inputs, index.forwards.clone(), tables, steps_in_inputs)
        };
        during();
        // Nearly every entry the compaction keeps and lists is a profile's record (the steps
        // are moved by place, a list per input segment).
        let moves = if only_steps {
            0
        } else {
            self.index.read().profile_count() * 9 / 8 + 1024
        };
        // The windows (history, guard links) as of the compaction's start: one clock read.
        let now = crate::types::value::Timestamp::now().0;
        // Where in the messageId window the next `DEDUPE` entry's hash is expected.
        let mut window_at = 0;
        let prepared = self.store.prepare_compaction_of(&inputs, moves, &mut |e| {
            // The store is closing: this compaction's dead bytes wait for the next open's.
            if !only_steps && give_up() {
                return Ok(CopyAs::Abandon);
            }
            let index = self.read_index_spinning();
            if e.kind == EntryKind::Dedupe.byte() || e.kind == EntryKind::DedupeBlock.byte() {
                // The messageIds still in the window, packed into blocks (16 bytes each
                // instead of a 21-byte entry and, mostly, a frame of its own); none left is
                // an empty pack, which the storage layer drops.
                return Ok(CopyAs::Pack {
                    kind: EntryKind::DedupeBlock.byte(),
                    data: index.dedupe_live_bytes(e, &mut window_at),
                });
            }
            let profile =
                e.kind == EntryKind::Profile.byte() || e.kind == EntryKind::ProfileDelta.byte();
            // A profile's newest record, or one a delta written since the inputs were
            // sealed links to (read under the index lock, which such a writer held).
            let keep = index.is_live(e, now) || (profile && index.linked.contains(&e.location));
            if !keep {
                return Ok(CopyAs::Drop);
            }
            if e.kind == EntryKind::History.byte() {
                // One per call kept: listed by place, found by place (`Journal::relocate_all`).
                return Ok(CopyAs::KeepByPlace);
            }
            if e.kind != EntryKind::ProfileDelta.byte() {
                return Ok(CopyAs::Keep);
            }
            // Folding the chain reads only sealed records and the forwards of the last
            // compaction, which change only at this one's switch: the writers need not wait.
            drop(index);
            let (rec, ..) =
                crate::entries::chain::read_profile(&self.store, &forwards, e.location)?;
            Ok(CopyAs::Replace {
                kind: EntryKind::Profile.byte(),
                data: crate::entries::encode_profile(&rec, e.data.len() * 4),
            })
        });
        // The outputs' history tables, written before the switch (a compaction that does not
        // switch in leaves them unnamed: the next open removes them).
        let prepared = prepared.and_then(|p| match p {
            Some(p) => {
                let written = self.store.side_files(|io, dir| {
                    crate::index::write_outputs(io, dir, &tables, p.by_place())
                })?;
                Ok(Some((p, written)))
            }
            None => Ok(None),
        });
        drop(tables);
        let (prepared, written) = match prepared {
            Ok(Some(p)) => {
                during();
                p
            }
            other => {
                self.abandon_compaction(only_steps);
                return other.map(|_| 0);
            }
        };
        // The switch, in three parts, so that the writers wait for none of its syncs:
        // 1. Under the locks: from here no delta links into the inputs (a call whose
        //    profile's newest record lies there writes a full record), so the links made so
        //    far are all the forwards there will be.
        let linked = if only_steps {
            None
        } else {
            let mut index = self.index.write();
            self.cache.lock().switching = true;
            Some(std::mem::take(&mut index.linked))
        };
        // 2. Without them: the forwards written and synced, then the compaction decided (its
        //    manifest durable, its outputs renamed and opened). A crash from here completes
        //    it on open, and every delta linking into the inputs has its forward in the log.
        let decided = (|| {
            let forwards = match &linked {
                Some(linked) => Some(self.write_forwards(linked, prepared.moved())?),
                None => None,
            };
            Ok((forwards, self.store.decide_compaction(prepared)?))
        })();
        let (forwards, decided) = match decided {
            Ok(decided) => decided,
            Err(e) => {
                self.abandon_compaction(only_steps);
                return Err(e);
            }
        };
        during();
        // 3. Under the locks again, with no I/O: the outputs replace the inputs in memory,
        //    and the index and the cache follow them.
        let (reclaimed, gone) = {
            let mut index = self.index.write();
            let mut cache = self.cache.lock();
            cache.compacting.clear();
            cache.switching = false;
            let (relocations, _) = self.store.switch_compaction(decided);
            if let Some(forwards) = forwards {
                index.forwards = std::sync::Arc::new(forwards);
            }
            for (kind, id, old, new) in relocations.moved.iter() {
                index.relocate(kind, id, old, new);
            }
            let gone = index.relocate_journal(&relocations, &inputs, written);
            index.journal.in_log_bytes = index.journal.in_log_bytes.saturating_sub(steps_in_inputs);
            cache.relocate(&relocations.moved, &inputs, &index.forwards);
            (relocations.reclaimed_bytes, gone)
        };
        self.store.unlink_compacted(&inputs)?;
        if with_steps && !only_steps {
            self.steps_rewritten.store(
                self.store.step_bytes(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        self.write_hint()?;
        // The new snapshot no longer names the inputs' table files (one left by a crash
        // before this point is removed by the next open).
        self.remove_files(&gone)?;
        Ok(reclaimed)
    }

    /// A compaction that will not switch in: writers stop treating its inputs as compacted
    /// (no link recorded, no full record written for them) and the links it collected go.
    fn abandon_compaction(&self, only_steps: bool) {
        let mut index = self.index.write();
        let mut cache = self.cache.lock();
        cache.compacting.clear();
        cache.switching = false;
        if !only_steps {
            index.linked = Default::default();
        }
    }

    /// The forwards of a compaction about to switch in: for each record in `linked` (the
    /// records deltas link to), its copy's place from `moved`. Appended as `FORWARD`
    /// entries and synced before the switch, so that a crash after it finds them on replay
    /// (one before it finds old places that still exist, which replay ignores).
    fn write_forwards(
        &self,
        linked: &crate::index::HashSet<Location>,
        moved: &crate::storage::Moves,
    ) -> Result<crate::entries::chain::Forwards> {
        let mut forwards = crate::entries::chain::Forwards::default();
        if linked.is_empty() {
            return Ok(forwards);
        }
        // `linked` holds places of profile records only, and a place is one entry's.
        let pairs: Vec<(Location, Location)> = moved
            .iter()
            .filter(|m| linked.contains(&m.2))
            .map(|m| (m.2, m.3))
            .collect();
        if pairs.is_empty() {
            return Ok(forwards);
        }
        let mut seq = 0;
        // 2,048 pairs (48 KiB) an entry, an entry a frame, each frame appended under the
        // index's lock of its own, as every append is (its arrival order, the hint's
        // position), then all synced without it. One append of every pair (2-4 MiB on W1,
        // 64 entries a frame) held the writers 5-42 ms a compaction; the pairs need no one
        // frame (each is replayed alone, and none is used before the compaction is decided,
        // after the sync).
        for pairs in pairs.chunks(2048) {
            let data = entries::forward_block(pairs);
            let entry = Entry {
                kind: EntryKind::Forward.byte(),
                id: 0,
                data: &data,
            };
            let mut index = self.index.write();
            seq = self.store.append(&[entry])?.seq;
            index.set_last_seq(seq);
        }
        self.store.wait_durable(seq, Durability::SyncEach)?;
        forwards.extend(pairs);
        Ok(forwards)
    }

    /// Remove table files the index no longer names, as compaction unlinks its inputs (one
    /// already gone is fine; a failure is the store's, and one left by a crash is removed by
    /// the next open).
    fn remove_files(&self, paths: &[std::path::PathBuf]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        self.store.side_files(|io, _| {
            for p in paths {
                crate::storage::io::remove_if_present(io.as_ref(), p)
                    .map_err(|e| Error::io("unlink", p, e))?;
            }
            Ok(())
        })
    }

    /// Write the history tables of segments the log sealed to files, so that memory holds
    /// only the table of the segment appended to (`index::journal`): the tables are frozen
    /// under the index's write lock, written without it, then read from the files. One at a
    /// time with compactions (which replace such tables too).
    ///
    /// `wait`: wait for a running compaction; else (a checkpoint, the background thread)
    /// leave the tables to the next round.
    fn spill_history_tables(&self, wait: bool) -> Result<()> {
        let _one_at_a_time = if wait {
            self.compaction.lock()
        } else {
            match self.compaction.try_lock() {
                Some(guard) => guard,
                None => return Ok(()),
            }
        };
        let frozen = {
            let mut index = self.index.write();
            // Read under the index's lock: every append goes with its index update under
            // it, so no step of a segment sealed after this can be missing from its table
            // (read before, a segment the log moved on to meanwhile would be frozen while
            // still appended to).
            let active = self.store.active_segment();
            index
                .journal
                .freeze_sealed(|id| id != active && self.store.has_segment(id))
        };
        if frozen.is_empty() {
            return Ok(());
        }
        let written = self.store.side_files(|io, dir| {
            frozen
                .iter()
                .map(|(id, rows)| crate::index::write_table(io, dir, *id, rows))
                .collect::<Result<Vec<_>>>()
        })?;
        drop(frozen);
        let stale = self.index.write().journal.install_spilled(written);
        self.remove_files(&stale)
    }

    /// Whether a background compaction takes the segments of history steps (see [`Steps`]).
    fn steps_due(&self) -> bool {
        let bytes = self.store.step_bytes();
        if bytes == 0 {
            return false;
        }
        let base = self
            .steps_rewritten
            .load(std::sync::atomic::Ordering::Relaxed);
        // History turned off, or doubled (expired steps go with their whole segments:
        // `Steps::Expired`).
        self.options.history_retention.is_zero()
            || bytes > base.max(self.options.segment_size).saturating_mul(2)
    }

    /// The segments whose every history step has left the window, by the journal's bounds.
    fn expired_segments(&self, index: &Index) -> Expired {
        let now = crate::types::value::Timestamp::now().0;
        let mut expired = Expired::default();
        for id in index.journal.expired_before(index.journal.horizon(now)) {
            match self.store.sealed_is_steps(id) {
                Some(true) => expired.steps.push(id),
                Some(false) => expired.log = true,
                None if !self.store.has_segment(id) => expired.gone.push(id),
                None => {}
            }
        }
        expired
    }

    /// Whether the background should compact: `log` from [`Inner::expired_segments`].
    fn wants_compaction(&self, expired_log: bool) -> bool {
        let Some(ratio) = self.options.compaction_ratio else {
            return false;
        };
        if self.steps_due() || expired_log {
            return true;
        }
        let (live, in_log) = {
            let index = self.index.read();
            (index.live_bytes(), index.journal.in_log_bytes)
        };
        let steps = self.store.step_bytes();
        let bytes = StoreBytes {
            disk: self.store.stats().disk_bytes,
            sealed: self.store.sealed_bytes(),
            step_segments: steps,
            steps_in_log: in_log,
            live,
        };
        bytes.dead_past(ratio, self.options.compaction_min_bytes)
    }
}

/// [`Inner::expired_segments`].
#[derive(Default)]
struct Expired {
    /// Segments of steps: deleted whole by [`Steps::Expired`].
    steps: Vec<u32>,
    /// A sealed log segment among them: its steps leave with the next compaction, which the
    /// background then starts (else a store whose profiles' dead bytes stay low keeps them).
    log: bool,
    /// Segments no longer in the store (quarantined at an open): their bounds are forgotten.
    gone: Vec<u32>,
}

/// What the background's trigger weighs (`Inner::wants_compaction`).
struct StoreBytes {
    /// Every segment file.
    disk: u64,
    /// The sealed segments (`disk` but the one appended to).
    sealed: u64,
    /// The segments of history steps (sealed).
    step_segments: u64,
    /// The history steps still in the other segments (`Journal::in_log_bytes`).
    steps_in_log: u64,
    /// What the index estimates live, the history apart (`Index::live_bytes`).
    live: u64,
}

impl StoreBytes {
    /// Whether the dead bytes are past `ratio` of the store and `min`, the history left out
    /// of both: the segments of steps (their dead steps are the doubling rule's, `Steps`)
    /// and the steps still in the log segments (moving them out is no reason to compact), so
    /// that the profiles are rewritten as often as with history off (stop 22).
    fn dead_past(&self, ratio: f64, min: u64) -> bool {
        let sealed = self.sealed.saturating_sub(self.step_segments);
        let disk = self
            .disk
            .saturating_sub(self.step_segments)
            .saturating_sub(self.steps_in_log);
        let dead = disk.saturating_sub(self.live);
        dead >= min && sealed > 0 && dead as f64 > ratio * disk as f64
    }
}

#[cfg(test)]
mod tests {
    use super::StoreBytes;

    /// A profile a call deletes or merges away after a hit gives its writer cache slot up
    /// (the hit's take reserved it for an insert that does not come): the cache keeps no slot
    /// for a key no call takes again.
    #[test]
    fn dropped_profiles_leave_no_cache_slot() {
        let dir = tempfile::tempdir().unwrap();
        let db = super::Db::open(dir.path(), Default::default()).unwrap();
        let call = |s: String| db.apply_json(s.as_bytes()).unwrap();
        for i in 0..500 {
            call(format!(
                r#"{{"type":"identify","userId":"u{i}","traits":{{"a":{i}}}}}"#
            ));
            call(format!(
                r#"{{"type":"identify","userId":"u{i}","traits":{{"b":{i}}}}}"#
            ));
            db.delete(&crate::types::Selector::UserId(format!("u{i}")), false)
                .unwrap();
            // Two profiles, each cached, then merged by a call that names both.
            call(format!(
                r#"{{"type":"identify","userId":"m{i}","traits":{{"a":1}}}}"#
            ));
            call(format!(
                r#"{{"type":"identify","userId":"m{i}","traits":{{"b":1}}}}"#
            ));
            call(format!(
                r#"{{"type":"identify","anonymousId":"x{i}","traits":{{"email":"m{i}@example.com"}}}}"#
            ));
            call(format!(
                r#"{{"type":"identify","anonymousId":"x{i}","traits":{{"c":1}}}}"#
            ));
            call(format!(
                r#"{{"type":"identify","userId":"m{i}","anonymousId":"x{i}","traits":{{"d":1}}}}"#
            ));
        }
        let stats = db.stats();
        assert!(
            stats.profile_cache_hits > 1_000,
            "{}",
            stats.profile_cache_hits
        );
        let (slots, entries, chains) = db.inner.cache.lock().counts();
        assert_eq!(
            (slots, entries),
            (chains, chains),
            "every slot in use holds a chain"
        );
        // One profile of each merged pair is left.
        assert_eq!(stats.profiles, 500);
    }

    /// The trigger weighs the profiles' dead bytes against the store without its history:
    /// steps waiting in the log are neither dead nor part of the whole, the segments of steps
    /// are not weighed at all.
    #[test]
    fn the_background_trigger_leaves_the_history_out() {
        const MB: u64 = 1 << 20;
        let bytes = |disk, step_segments, steps_in_log, live| StoreBytes {
            disk: disk * MB,
            sealed: disk * MB - MB,
            step_segments: step_segments * MB,
            steps_in_log: steps_in_log * MB,
            live: live * MB,
        };
        let due = |b: StoreBytes| b.dead_past(0.5, 16 * MB);
        // 100 MB of log: 60 of steps, 30 of live records, 10 dead: not due (counted as dead,
        // the steps made it due, and every live record was rewritten to move them).
        assert!(!due(bytes(100, 0, 60, 30)));
        // 25 dead of the 40 that are not steps: due.
        assert!(due(bytes(100, 0, 60, 15)));
        // The same beside 500 MB of segments of steps: the same answers.
        assert!(!due(bytes(600, 500, 60, 30)));
        assert!(due(bytes(600, 500, 60, 15)));
        // History off: the whole store weighed.
        assert!(due(bytes(100, 0, 0, 30)));
        assert!(!due(bytes(100, 0, 0, 60)));
        // Past the ratio but under the least worth a compaction.
        assert!(!due(bytes(20, 0, 0, 5)));
        // Nothing sealed: nothing to compact.
        assert!(
            !StoreBytes {
                sealed: 0,
                ..bytes(100, 0, 0, 10)
            }
            .dead_past(0.5, MB)
        );
    }
}

/// Remove the history table files the index does not read (left by a compaction that did
/// not switch in, by one that did before the snapshot naming its outputs was written, or
/// written for a snapshot that was not: such a segment's table is in memory again).
fn remove_unnamed_tables(store: &Store, index: &crate::index::Index) -> Result<()> {
    store.side_files(|io, dir| {
        let names = io.list(dir).map_err(|e| Error::io("list", dir, e))?;
        for name in names {
            if let Some(id) = crate::storage::parse_steps_name(&name)
                && !index.journal.has_file(id)
            {
                let p = dir.join(&name);
                io.remove(&p).map_err(|e| Error::io("unlink", &p, e))?;
            }
        }
        Ok(())
    })
}

/// Which segments of history steps a compaction takes. A compaction writes the frames it keeps
/// that hold history steps only (nearly every step, once its profile was written again) to
/// segments of their own (`storage::Store::step_bytes`); copying them again at every
/// compaction would copy every step younger than the window again each time.
#[derive(Debug, Clone, Copy)]
enum Steps {
    /// All of them (`Db::compact`, erase, lifting a suppression, releasing a quarantine: a
    /// compaction that must leave no dead byte behind). It empties the writer cache as it
    /// begins: it rewrites every profile's record anyway, and its working set (the places of
    /// every entry it moves) then reuses the cache's memory instead of adding to the peak
    /// (docs/performance.md, "Engine round 32"); the calls after it fill the cache again.
    All,
    /// The background's: none, unless they hold more than twice what they held after they
    /// were last rewritten (and more than two segments' worth), or history is off. While
    /// the history fills its first window a step is copied about twice on average (once out
    /// of the log, about once more when its segments double); after that, about once (the
    /// segments stop doubling: [`Steps::Expired`] deletes as much as arrives).
    Due,
    /// The background's too, every second (after the `Due` compaction, if one was wanted):
    /// the segments of steps whose every step has left the window (by the journal's bound on
    /// each segment's arrivals), alone: deleted whole, nothing copied. (A sealed log segment
    /// whose steps have all left the window makes the background start a `Due` compaction,
    /// which takes it.) A step thus leaves the disk about a window after the newest step
    /// that shares its segment arrived; a step whose profile was deleted stays until then
    /// too (at once with `Db::compact` and `delete --erase`).
    Expired,
}

fn background_compaction(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let closing = || strong.stopping.load(std::sync::atomic::Ordering::Relaxed);
        {
            let mut held = strong.wake_lock.lock();
            if closing() {
                return;
            }
            strong
                .wake
                .wait_for(&mut held, std::time::Duration::from_secs(1));
            if closing() {
                return;
            }
        }
        if strong.index.read().journal.enabled() {
            // An error poisons the store, as every I/O failure does; the next call reports it.
            let _ = strong.spill_history_tables(false);
        }
        // Errors poison the store; the next call reports them. (The expiry looks again under
        // the index's write lock: a compaction before it may have taken its segments.)
        let expired = strong.expired_segments(&strong.index.read());
        // A store closing gives up the compaction in flight (`Db::close` does not wait for
        // one it does not need) and starts no other.
        if strong.wants_compaction(expired.log) {
            let _ = strong.compact_or_give_up(Steps::Due, &mut || {}, &mut || closing());
        }
        if !expired.steps.is_empty() && !closing() {
            let _ = strong.compact(Steps::Expired, &mut || {});
        }
    }
}
