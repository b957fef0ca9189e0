//! Applying one call to the store: the profile rules (resolution, merge, properties,
//! companies, removal) turned into one atomic batch of entries plus the index changes that
//! follow once the batch is appended. Nothing here mutates the index: a call that fails
//! half-way leaves no trace.

pub(crate) mod ahead;
mod cache;
mod forget;

pub(crate) use cache::ProfileCache;
use cache::{CACHED_CHAIN_RECORDS, Chain, ChainAt};
use forget::{Forgetting, HoldsNothing};

use crate::entries::profile::{DeltaOut, Fold, FullMap, Link};
use crate::entries::raw::{RawState, RawStates};
use crate::entries::{self, CompanyRecord, EntryKind, Ids, ProfileRecord};
use crate::error::{Error, Result};
use crate::index::{CompanyInfo, HashMap, Index, Update};
use crate::options::Options;
use crate::profile::merge::{CallOp, call_ops, merge_into};
use crate::profile::message::{CompanyRef, Identify, Message};
use crate::profile::props::{Applied, ListLimits, PropOp, PropState, Stamp, write_replaces};
use crate::profile::resolve::{Found, resolve};
use crate::profile::validate::normalize_email;
use crate::storage::{Location, Store};
use crate::types::value::Timestamp;
use crate::types::{Moved, Outcome, Status};

/// Property names a call is expected to change at most, for sizing the lists a loaded profile
/// keeps of them (more only grows them).
const CALL_NAMES: usize = 16;

/// What to change in the index once the entry at the same position is appended.
///
/// Kept within 128 bytes (checked at compile time), so that a move (a push, every call's three or
/// more) is inline stores, not a libc `memcpy`: the identifiers of a profile change are boxed
/// (rare: only a change of an existing profile's identifiers, or an unmerge, allocates).
#[derive(Debug)]
pub(crate) enum Change {
    /// A profile's newest record; `ids` = (identifiers before, after) when they changed.
    Profile {
        key: u64,
        ids: Option<(Option<Box<Ids>>, After)>,
    },
    Tombstone {
        key: u64,
        old: Ids,
    },
    Redirect {
        from: u64,
        to: u64,
    },
    Company {
        key: u64,
        id: String,
    },
    Name {
        id: u32,
        name: String,
    },
    Dedupe {
        hash: u128,
    },
    Suppress {
        hash: u128,
    },
    NextKey {
        next: u64,
    },
    /// A guard link or quarantine (issue 16, `crate::journal::guard`).
    Guard(crate::index::GuardChange),
    /// A history step (issue 16, `crate::journal`).
    History {
        key: u64,
        arrival: i64,
    },
    /// An external log position (issue 17, `Db::apply_at`).
    Source {
        id: u64,
        at: crate::types::SourceOffset,
    },
}

impl HoldsNothing for Change {
    fn holds_nothing(&self) -> bool {
        match self {
            Change::Profile { ids, key: _ } => Change::profile_holds_nothing(ids),
            Change::Redirect { .. }
            | Change::Dedupe { .. }
            | Change::Suppress { .. }
            | Change::NextKey { .. }
            | Change::History { .. }
            | Change::Guard(crate::index::GuardChange::Link { .. }) => true,
            Change::Tombstone { .. }
            | Change::Company { .. }
            | Change::Name { .. }
            | Change::Guard(crate::index::GuardChange::Quarantine { .. })
            | Change::Source { .. } => false,
        }
    }

    fn placeholder() -> Change {
        Change::NextKey { next: 0 }
    }
}

impl Change {
    /// [`HoldsNothing::holds_nothing`] of a [`Change::Profile`] with these `ids`: no boxed
    /// identifiers before or after (those after left in the call's record).
    #[inline(always)]
    fn profile_holds_nothing(ids: &Option<(Option<Box<Ids>>, After)>) -> bool {
        matches!(ids, None | Some((None, After::Written(_))))
    }
}

// A move of either is inline within 128 bytes (see their notes).
const _: () = assert!(size_of::<Change>() <= 128 && size_of::<Batch>() <= 128);

/// A profile's identifiers after a call, for the index ([`Change::Profile`]).
#[derive(Debug)]
pub(crate) enum After {
    /// These.
    Ids(Box<Ids>),
    /// Those of the record the batch wrote for the entry: the call's profile `i`
    /// (`Spare::profiles[i]`, kept until [`Batch::recycle`]; not copied).
    Written(usize),
}

/// A profile record written by a call: the profile decoded, and its chain's records for the
/// [`ProfileCache`] once the batch is appended.
pub(crate) struct Written {
    /// Position of its entry in the batch.
    entry: usize,
    key: u64,
    /// Where it stands in its chain.
    at: ChainAt,
    /// The record after the call: `Spare::profiles[work].1.rec`, left there until
    /// [`Batch::recycle`] (a record is 136 bytes: each move of it is a libc `memcpy`). A
    /// fast-path call's new states are not in it (`FastSets`): `explain`, its one reader, runs
    /// without the writer cache, which never takes that path.
    work: usize,
    /// What the cache keeps (`None`: the cache is off).
    chain: Option<Chain>,
    /// Whether the call found it in the cache (a second chance when the cache evicts).
    hit: bool,
}

/// The buffers a call's batch is built in, kept by each writing thread from one call to the
/// next ([`Builder::new`] takes them, [`Batch::recycle`] gives them back emptied), so that a
/// call allocates none of them. Boxed, and held by the builder and then the batch as the box:
/// moving a builder or a batch (each is returned by value) copies a pointer, not the ~270
/// bytes of these lists.
#[derive(Default)]
pub(crate) struct Spare {
    entries: Vec<(EntryKind, u64, Vec<u8>)>,
    changes: Changes,
    written: Vec<Written>,
    /// The call's profiles; the batch keeps them (their records are those `written`) until
    /// [`Batch::recycle`].
    profiles: Works,
    /// The records in segments a running compaction rewrites that the call's deltas link to
    /// ([`Batch::linked`], drained into the index by the commit).
    linked: Vec<Location>,
    pools: Pools,
}

/// A call's index changes ([`Spare::changes`]): most own nothing (a profile's whose
/// identifiers stayed, a history step's, a messageId's), and are forgotten when the list is
/// cleared (`forget`).
pub(crate) type Changes = Forgetting<Change>;

/// A call's profiles ([`Spare::profiles`]): nearly every one holds nothing by the time the
/// list is cleared (`finish` took its lists, `keep_record` its record), and is forgotten
/// (`forget`).
type Works = Forgetting<(u64, Work)>;

/// Emptied buffers the builder hands out and takes back within a call.
#[derive(Default)]
struct Pools {
    /// Entry data buffers.
    bufs: Vec<Vec<u8>>,
    /// [`Work::changed`] lists.
    names: Vec<Vec<u32>>,
    /// [`Before::props`] lists.
    befores: Vec<Vec<(u32, Option<PropState>)>>,
    /// [`Work::raw`] captures.
    raws: Vec<RawStates>,
    /// [`Before::raw`] lists.
    raw_befores: Vec<Vec<(u32, RawState)>>,
    /// [`Work::fast`] sets.
    fasts: Vec<FastSets>,
    /// The previous call's history details, for their buffers (`CallInfo::for_index`).
    call: Option<Box<crate::journal::CallInfo>>,
    /// Records written by earlier calls, for their buffers: a load decodes the profile's
    /// identifiers and states into one (`Chain::decode_capturing`, `Fold::reuse`).
    records: Vec<ProfileRecord>,
    /// [`Work::map`]s: boxed as a `Work` holds them (~3 KB each, handed over, not copied).
    #[allow(clippy::vec_box)]
    maps: Vec<Box<FullMap>>,
}

impl Pools {
    fn buf(&mut self) -> Vec<u8> {
        self.bufs.pop().unwrap_or_default()
    }
    fn map(&mut self) -> Box<FullMap> {
        self.maps.pop().unwrap_or_else(|| Box::new(FullMap::new()))
    }
    fn keep_map(&mut self, map: Option<Box<FullMap>>) {
        self.maps.extend(map);
    }

    fn names(&mut self) -> Vec<u32> {
        self.names
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CALL_NAMES))
    }

    fn befores(&mut self) -> Vec<(u32, Option<PropState>)> {
        self.befores
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CALL_NAMES))
    }

    fn raws(&mut self) -> RawStates {
        self.raws.pop().unwrap_or_default()
    }

    fn raw_befores(&mut self) -> Vec<(u32, RawState)> {
        self.raw_befores
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CALL_NAMES))
    }

    fn fast(&mut self) -> FastSets {
        self.fasts.pop().unwrap_or_else(|| FastSets {
            sets: Vec::with_capacity(CALL_NAMES),
            bytes: Vec::with_capacity(256),
        })
    }

    fn keep_fast(&mut self, mut fast: FastSets) {
        if self.fasts.len() < SPARE_BUFS && fast.bytes.capacity() <= SPARE_BUF_BYTES {
            fast.sets.clear();
            fast.bytes.clear();
            self.fasts.push(fast);
        }
    }

    fn record(&mut self) -> ProfileRecord {
        self.records.pop().unwrap_or_default()
    }

    /// Take back a record written (its states dropped; its identifiers' buffers kept for the
    /// next decode to overwrite, unless they hold more than the largest buffer kept: a profile
    /// of many anonymous ids); `rec` is left without identifiers or states (its two times
    /// stay, for whatever uses it next to overwrite).
    fn keep_record(&mut self, rec: &mut ProfileRecord) {
        if self.records.len() < SPARE_BUFS
            && rec.props.capacity() * size_of::<(u32, PropState)>() <= SPARE_BUF_BYTES
        {
            if ids_bytes(&rec.ids) > SPARE_BUF_BYTES {
                rec.ids = Default::default();
            }
            rec.props.clear();
            // Taken field by field where it stands: taken whole (`mem::take`) and pushed, it
            // was moved twice, each a libc `memcpy` of its 136 bytes (and passed by value,
            // once more); its parts move inline.
            let ProfileRecord {
                ids,
                first_seen,
                updated_at,
                props,
            } = rec;
            self.records.push(ProfileRecord {
                ids: std::mem::take(ids),
                first_seen: *first_seen,
                updated_at: *updated_at,
                props: std::mem::take(props),
            });
        } else {
            // Its identifiers' buffers still serve (`entries::wire::keep_string`).
            clear_ids(&mut rec.ids);
        }
    }

    /// Take back a profile's capture and its list of captured states before.
    fn keep_raw(&mut self, mut raw: RawStates, befores: Vec<(u32, RawState)>) {
        // Not one that holds no buffer (a new profile's).
        if self.raws.len() < SPARE_BUFS
            && raw.bytes.capacity() != 0
            && raw.bytes.capacity() <= SPARE_BUF_BYTES
        {
            raw.clear();
            self.raws.push(raw);
        }
        keep(&mut self.raw_befores, befores);
    }
}

thread_local! {
    static SPARE: std::cell::RefCell<Option<Box<Spare>>> = const { std::cell::RefCell::new(None) };
}

/// Buffers (and lists) of a kind kept at most: a merge writes more entries, the rest are
/// freed.
const SPARE_BUFS: usize = 8;
/// The largest buffer or list kept, in bytes of capacity (a large record's, or the list of a
/// call with thousands of names, is freed).
const SPARE_BUF_BYTES: usize = 16 << 10;

/// Empty `ids`, their strings' buffers kept for the thread's next identifiers
/// (`entries::wire::keep_string`).
fn clear_ids(ids: &mut Ids) {
    use crate::entries::wire::{keep_string, string_gone};
    string_gone(&mut ids.user_id);
    string_gone(&mut ids.email);
    ids.anonymous_ids.drain(..).for_each(keep_string);
    string_gone(&mut ids.company_id);
}

/// The heap bytes a record's identifiers hold (capacities).
fn ids_bytes(ids: &Ids) -> usize {
    let strings = [&ids.user_id, &ids.email, &ids.company_id]
        .into_iter()
        .flatten()
        .chain(&ids.anonymous_ids);
    strings.map(String::capacity).sum::<usize>()
        + ids.anonymous_ids.capacity() * size_of::<String>()
}

/// Keep `v`, emptied, in `pool` for a later call, unless the pool is full or `v` is large,
/// or holds no buffer (a list a new profile started without: kept, it would make a later call
/// allocate). Inline: a call keeps ~6 buffers, each a call of ~30 instructions.
#[inline]
fn keep<T>(pool: &mut Vec<Vec<T>>, mut v: Vec<T>) {
    if pool.len() < SPARE_BUFS
        && v.capacity() != 0
        && v.capacity() * size_of::<T>() <= SPARE_BUF_BYTES
    {
        v.clear();
        pool.push(v);
    }
}

/// One call's writes.
///
/// Kept within 128 bytes (checked at compile time): returned by value, a move of it is inline stores,
/// not a libc `memcpy` (its lists are in the boxed [`Spare`]). The call's outcome is not in
/// it: the write path keeps it where the build left it (carried through the batch, it was
/// moved three times more, ~112 bytes each).
pub(crate) struct Batch {
    /// The entries (`spare.entries`), their index changes (`spare.changes`, at the same
    /// positions) and the profile records written, decoded (`spare.written`); and the
    /// builder's other buffers, for [`Batch::recycle`].
    spare: Box<Spare>,
}

/// Profile records written since open (`Stats::profile_records`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordCounts {
    /// Delta records (what a call changed, linked to the profile's previous record).
    pub deltas: u64,
    /// Full records of a profile created, or rewritten whole by a merge, an unmerge or a
    /// change of its identifiers that needs one.
    pub full_whole: u64,
    /// Full records written because the profile's chain was at `Options::chain_limit`.
    pub full_chain_limit: u64,
    /// Of `deltas`: those that link to a record in a segment a running compaction was
    /// rewriting (the compaction copies that record and forwards the link to the copy).
    pub linked_into_compaction: u64,
    /// Of `deltas`: those written by the in-order fast path (every change a set newer than
    /// the state it replaces, kept as its value's bytes; `apply::FastSets`).
    pub fast_path: u64,
    /// Full records written because the profile's newest record lay in a segment a
    /// compaction was switching in (its forwards written: no delta may link there any more).
    pub full_at_switch: u64,
    /// Full records (the writer cache's, and the log's at the chain limit) a fast-path call
    /// wrote from the states a whole load captured as bytes (after a miss, or on a cached
    /// chain of several records), with no whole record built
    /// (`entries::profile::put_full_parts`).
    pub full_from_parts: u64,
    /// Full records the writer cache keeps, written from the one before by
    /// `entries::profile::splice_full`.
    pub spliced: u64,
    /// Of `spliced`: those written to the log as well, a fast call's full record at the chain
    /// limit spliced from the cached full record before it.
    pub full_spliced: u64,
}

impl Batch {
    /// The batch's buffers go back to the thread's [`Spare`] for its next
    /// call (emptied: `changes` were drained by the commit; the records `written` go to the
    /// spare records, their cached forms taken by `ProfileCache::insert_written`).
    pub fn recycle(self) {
        let mut spare = self.spare;
        if spare.linked.capacity() * size_of::<Location>() <= SPARE_BUF_BYTES {
            spare.linked.clear();
        } else {
            spare.linked = Vec::new();
        }
        let Spare {
            entries,
            changes,
            written,
            profiles,
            pools,
            ..
        } = &mut *spare;
        for (_, _, data) in entries.drain(..) {
            keep(&mut pools.bufs, data);
        }
        changes.clear();
        // The records written, and those of the profiles loaded and left: each taken where
        // it stands (a profile's `Work` is large to move).
        for work in profiles.iter_mut() {
            pools.keep_record(&mut work.1.rec);
        }
        // What is left of each (a merge's records, lists `finish` did not take) goes; the
        // list's buffer stays (see `Works::clear`).
        profiles.clear();
        written.clear();
        // A thread being torn down keeps nothing.
        let _ = SPARE.try_with(|s| *s.borrow_mut() = Some(spare));
    }

    /// The entries built: kind, id, data (explain reads them). [`Store::append`] frames them
    /// as they stand ([`FrameEntry`](crate::storage::FrameEntry)): a list of borrowed
    /// `Entry`s made of them cost ~100 instructions a call.
    pub(crate) fn built_entries(&self) -> &[(EntryKind, u64, Vec<u8>)] {
        &self.spare.entries
    }

    /// The records in segments a running compaction rewrites that the batch's deltas link to
    /// (for `Index::linked`, once appended), taken out.
    pub fn linked(&mut self) -> std::vec::Drain<'_, Location> {
        self.spare.linked.drain(..)
    }

    /// Whether the call writes nothing.
    pub fn is_empty(&self) -> bool {
        self.spare.entries.is_empty()
    }

    /// The profile records written, decoded (the writer cache takes their chains).
    pub fn written_mut(&mut self) -> &mut Vec<Written> {
        &mut self.spare.written
    }

    /// Apply the batch's changes to the index ([`commit`]), its entries appended at
    /// `locations`; the identifiers of the records it wrote are read from them.
    /// `absent`: the probe of the window for the call's messageId, when it found it absent
    /// (`Index::message_absent`, under the same lock): its `Dedupe` change is inserted there.
    pub fn commit(
        &mut self,
        index: &mut Index,
        locations: &[Location],
        absent: Option<crate::index::Absent>,
    ) {
        let Spare {
            changes, profiles, ..
        } = &mut *self.spare;
        commit_written(index, changes, locations, profiles, absent);
    }

    /// The profile records the batch writes, decoded (explain reads them).
    pub(crate) fn written_records(&self) -> impl Iterator<Item = (u64, &ProfileRecord)> {
        let profiles = &self.spare.profiles;
        self.spare
            .written
            .iter()
            .filter_map(|w| profiles.get(w.work).map(|p| (w.key, &p.1.rec)))
    }

    /// Add the entry recording the external log position this batch brings the store to
    /// (`Db::apply_at`): it lands in the same frame as the call's entries.
    pub fn push_source(&mut self, at: &crate::types::SourceOffset) {
        let id = entries::source_id(&at.topic, at.partition);
        let data = entries::encode(&entries::SourceRecord::from_offset(at));
        self.spare.entries.push((EntryKind::SourceOffset, id, data));
        self.spare
            .changes
            .push(Change::Source { id, at: at.clone() });
    }
}

/// A batch's entry, framed by the log as it stands ([`Batch::built_entries`]).
impl crate::storage::FrameEntry for (EntryKind, u64, Vec<u8>) {
    #[inline]
    fn kind(&self) -> u8 {
        self.0.byte()
    }
    #[inline]
    fn id(&self) -> u64 {
        self.1
    }
    #[inline]
    fn data(&self) -> &[u8] {
        &self.2
    }
}

/// Apply the changes of an appended batch to the index: each entry's [`Update`] (the same
/// mutation the replay applies on open), and the identifier maps of the profiles written.
pub(crate) fn commit(index: &mut Index, changes: Vec<Change>, locations: &[Location]) {
    commit_written(index, &mut changes.into(), locations, &[], None);
}

/// [`commit`], the identifiers a profile change leaves to its record read from the call's
/// `profiles`.
fn commit_written(
    index: &mut Index,
    changes: &mut Changes,
    locations: &[Location],
    profiles: &[std::mem::ManuallyDrop<(u64, Work)>],
    mut absent: Option<crate::index::Absent>,
) {
    // Read in place, each change dropped as it is applied: a `drain` moved each `Change` (~200 bytes then, a libc
    // `memcpy` each) out of the list and again into the zip's item, three or more a call.
    let mut locations = locations.iter();
    changes.clear_after(|change| {
        let Some(&loc) = locations.next() else {
            return change.holds_nothing();
        };
        let nothing = commit_change(index, change, loc, profiles, &mut absent);
        debug_assert_eq!(nothing, change.holds_nothing());
        nothing
    });
}

/// Apply one change of [`commit_written`] at the location of its entry, and say whether it
/// holds nothing ([`HoldsNothing`]): the arms of the kinds nearly every call makes know it,
/// so that the list is cleared without a second `match` on the change's kind.
///
/// Those kinds (a profile's record, its history step, the messageId's note: a W1 call makes
/// the three, in that order) are tested one by one before the others, which go to
/// [`commit_other`]. One `match` on all of them compiled to a jump table whose target changed
/// from each change to the next: its indirect branch mispredicted nearly every time (~3 a W1
/// call), where a few tests in a row are each predictable.
#[inline(always)]
fn commit_change(
    index: &mut Index,
    change: &Change,
    loc: Location,
    profiles: &[std::mem::ManuallyDrop<(u64, Work)>],
    absent: &mut Option<crate::index::Absent>,
) -> bool {
    if let Change::Profile { key, ids } = change {
        commit_profile(index, *key, ids, loc, profiles);
        return Change::profile_holds_nothing(ids);
    }
    if let &Change::History { key, arrival } = change {
        index.journal.push(key, arrival, loc);
        return true;
    }
    if let &Change::Dedupe { hash } = change
        && let Some(absent) = absent.take_if(|a| a.hash() == hash)
    {
        // `Update::Dedupe` without probing the window again.
        index.insert_message(absent);
        return true;
    }
    commit_other(index, change, loc, profiles)
}

/// [`commit_change`] of a [`Change::Profile`]: what `Index::apply` does for
/// `Update::Profile` (the same function), after the identifier maps when they changed.
#[inline(always)]
fn commit_profile(
    index: &mut Index,
    key: u64,
    ids: &Option<(Option<Box<Ids>>, After)>,
    loc: Location,
    profiles: &[std::mem::ManuallyDrop<(u64, Work)>],
) {
    if let Some((old, new)) = ids {
        if let Some(old) = old {
            index.unindex_ids(key, old);
        }
        let new = match new {
            After::Ids(ids) => Some(&**ids),
            After::Written(i) => profiles.get(*i).map(|p| &p.1.rec.ids),
        };
        // `Builder::finish` pushes the record with its change: only [`commit`] (given no
        // records) could miss one, and no change it is given names one.
        debug_assert!(new.is_some(), "profile {key}: no identifiers to index");
        if let Some(new) = new {
            index.index_ids(key, new);
        }
    }
    index.apply_profile(key, loc);
}

/// [`commit_change`] of any kind but the three it tests first (and of a messageId's note the
/// window was not probed for): its [`Update`], applied by `Index::apply`. Out of line, so
/// that its `match` is not merged with those tests into one jump table. (A profile's change, a
/// history step and a probed messageId's note never come here; their arms are there for the
/// `match` to be whole, and do what the tests before do.)
#[inline(never)]
fn commit_other(
    index: &mut Index,
    change: &Change,
    loc: Location,
    profiles: &[std::mem::ManuallyDrop<(u64, Work)>],
) -> bool {
    let update = match change {
        Change::Profile { key, ids } => {
            commit_profile(index, *key, ids, loc, profiles);
            return Change::profile_holds_nothing(ids);
        }
        Change::Tombstone { key, old } => {
            index.unindex_ids(*key, old);
            Update::Tombstone { key: *key }
        }
        &Change::Redirect { from, to } => Update::Redirect { from, to },
        Change::Company { key, id } => Update::Company { key: *key, id },
        Change::Name { id, name } => Update::Name { id: *id, name },
        &Change::Dedupe { hash } => Update::Dedupe { hash },
        &Change::Suppress { hash } => Update::Suppress { hash },
        &Change::NextKey { next } => Update::NextKey { next },
        &Change::History { key, arrival } => Update::History { key, arrival },
        Change::Guard(g) => g.update(),
        Change::Source { id, at } => Update::Source { id: *id, at },
    };
    index.apply(update, loc);
    change.holds_nothing()
}

/// Hash of a suppressed identifier (`domain` is `user_id`, `email` or `anonymous_id`).
pub(crate) fn suppression_hash(domain: &str, value: &str) -> u128 {
    entries::hash128(domain, value)
}

/// Hash of a messageId.
pub(crate) fn message_hash(message_id: &str) -> u128 {
    // `entries::hash128("message", message_id)`.
    entries::hash_prefixed(b"message\0", message_id.as_bytes())
}

/// Read the profile whose newest record is at `loc` (following its chain).
pub(crate) fn read_profile(store: &Store, index: &Index, loc: Location) -> Result<ProfileRecord> {
    Ok(entries::chain::read_profile(store, &index.forwards, loc)?.0)
}

/// Read a company record at a location.
pub(crate) fn read_company(store: &Store, loc: Location) -> Result<CompanyRecord> {
    store.read(loc, |bytes| entries::decode(bytes, "company"))?
}

/// Builds one call's batch against a read-only view of the index.
pub(crate) struct Builder<'a> {
    index: &'a Index,
    cache: &'a mut ProfileCache,
    store: &'a Store,
    options: &'a Options,
    /// The thread's [`Spare`]: the entries, their changes and the records written; the
    /// profiles loaded or created in this call (`profiles`: few, so a linear search beats a
    /// map; written once at the end, in this order); buffers for the entries' data and lists
    /// for [`Work`] (`pools`).
    spare: Box<Spare>,
    new_names: Vec<String>,
    /// The companies the call created or changed, by id (`upsert_company`): boxed when the
    /// call has some (nearly none does). A map held in place made a new map (its hasher
    /// seeded) every call and took the `Builder` over 128 bytes, so that `finish_hashed`'s
    /// move of it was a libc `memcpy` call.
    companies: Option<Box<Companies>>,
    next_key: u64,
    next_company_key: u64,
    order: u64,
    /// The call's event time (its stamp with `order`).
    call_ts: Timestamp,
    /// The clock when the call began (`Builder::new`): a message without a timestamp takes it.
    now: Timestamp,
    /// History (issue 16): `Some` while the store keeps history; what the call's steps say
    /// beyond the profiles' before and after (`crate::journal::CallInfo`).
    pub(crate) history: Option<Box<crate::journal::CallInfo>>,
}

/// A call's companies, by id: key and record ([`Builder::upsert_company`]).
type Companies = HashMap<String, (u64, CompanyRecord)>;

// A move of it (`finish_hashed` takes it by value) is inline within 128 bytes.
const _: () = assert!(size_of::<Builder<'static>>() <= 128);

/// A profile loaded or created by a call, and what the call did to it.
struct Work {
    /// Identifiers as the index has them.
    old: OldIds,
    rec: ProfileRecord,
    /// `rec` holds the identifiers, the times and the states of the names the call changes
    /// only (loaded partially, `Builder::load`); `cached` holds its records.
    partial: bool,
    /// Loaded partially with every other state too: each plain state captured in `raw`, the
    /// others built in `rec` (its chain's next record is a full one: the fast path writes it
    /// from these, `entries::profile::put_full_parts`).
    captured_all: bool,
    /// Where its newest record is, and where that stands in its chain (`None`: a new
    /// profile).
    head: Option<(Location, ChainAt)>,
    /// Found in the writer cache.
    hit: bool,
    /// Its records, as the writer cache had them or as read from the log: the call's delta is
    /// added to them for the cache.
    cached: Option<Chain>,
    /// States of the names the call changes that the partial load captured as bytes
    /// (`entries::raw`) instead of building them into `rec` (none in `rec` then), and the
    /// bytes of their values (also those of [`Before::raw`]).
    raw: RawStates,
    /// Write a full record whatever the chain (a merge survivor).
    full: bool,
    /// The in-order fast path: the call's new states, kept as its values' bytes instead of in
    /// `rec` (see [`FastSets`]); `None`: they are in `rec`.
    fast: Option<FastSets>,
    /// Names whose state the call changed.
    changed: Vec<u32>,
    /// Whether the call's event time moves `first_seen` / `updated_at`.
    stamped: bool,
    /// History only: what the call's undo step needs, saved as the call changes it (not a
    /// copy of the whole record per call), and the profiles merged into it.
    before: Before,
    merged: Vec<(u64, ProfileRecord)>,
    /// Where the parts of its cached full record sit, read by the load
    /// (`entries::profile::full_mapped`) when the call is to splice the cache's next full
    /// record from it (`entries::profile::splice_mapped`): the record is walked once.
    map: Option<Box<FullMap>>,
}

impl Work {
    /// One that holds nothing (the placeholder of [`Works`]).
    fn empty() -> Work {
        Work {
            old: OldIds::New,
            rec: ProfileRecord::default(),
            partial: false,
            captured_all: false,
            head: None,
            hit: false,
            cached: None,
            raw: RawStates::default(),
            full: false,
            fast: None,
            changed: Vec::new(),
            stamped: false,
            before: Before::default(),
            merged: Vec::new(),
            map: None,
        }
    }

    /// Whether it owns no heap memory (so that forgetting it leaks nothing, [`Works`]): every
    /// field that can own some is empty and holds no buffer. Every field is named, so that a
    /// field added must be considered here.
    fn holds_nothing(&self) -> bool {
        // The fields not looked at own nothing (they are `Copy`: checked at compile time).
        fn copy<T: Copy>(_: &T) {}
        let Work {
            old,
            rec,
            partial,
            captured_all,
            head,
            hit,
            cached,
            raw,
            full,
            fast,
            changed,
            stamped,
            before,
            merged,
            map,
        } = self;
        let ProfileRecord {
            ids,
            first_seen,
            updated_at,
            props,
        } = rec;
        copy(partial);
        copy(captured_all);
        copy(head);
        copy(hit);
        copy(full);
        copy(stamped);
        copy(first_seen);
        copy(updated_at);
        let Ids {
            user_id,
            email,
            anonymous_ids,
            company_id,
        } = ids;
        let RawStates { states, bytes } = raw;
        let Before {
            times,
            props: before_props,
            raw: before_raw,
            mapped,
            whole,
            #[cfg(debug_assertions)]
            loaded,
            #[cfg(debug_assertions)]
            mapped_raw,
        } = before;
        copy(times);
        copy(mapped);
        #[cfg(debug_assertions)]
        if loaded.is_some() || mapped_raw.is_some() {
            return false;
        }
        // Every field read and one test made (`|`, `&`: no short circuit): as a chain of
        // `&&`, each field's own test mispredicted as what was left varied from call to call
        // (~1.2 a call, `Batch::recycle`).
        let capacities = anonymous_ids.capacity()
            | props.capacity()
            | states.capacity()
            | bytes.capacity()
            | changed.capacity()
            | before_props.capacity()
            | before_raw.capacity()
            | merged.capacity();
        matches!(old, OldIds::New | OldIds::Same)
            & user_id.is_none()
            & email.is_none()
            & company_id.is_none()
            & cached.is_none()
            & fast.is_none()
            & whole.is_none()
            & map.is_none()
            & (capacities == 0)
    }

    /// The call at `ts` changed the profile: its times take the call's.
    fn stamp(&mut self, ts: Timestamp) {
        self.stamped = true;
        self.rec.updated_at = self.rec.updated_at.max(ts);
        self.rec.first_seen = self.rec.first_seen.min(ts);
    }
}

impl HoldsNothing for (u64, Work) {
    fn holds_nothing(&self) -> bool {
        self.1.holds_nothing()
    }

    fn placeholder() -> (u64, Work) {
        (0, Work::empty())
    }
}

/// History only: a loaded profile as it was before the call, kept no larger than what the
/// call changes. Most calls change a few properties of a ~40-property profile: only those
/// states are copied, the first time the call changes each. A merge changes the survivor
/// wholesale, so it copies the whole record once, just before merging.
#[derive(Default)]
struct Before {
    /// `first_seen` and `updated_at` when loaded.
    times: (Timestamp, Timestamp),
    /// Each property the call changed, with its state before the first change (`None`: the
    /// profile did not have it).
    props: Vec<(u32, Option<PropState>)>,
    /// The same for the properties whose state before was captured as bytes and that the call
    /// overwrote whole ([`Work::raw`] holds their bytes).
    raw: Vec<(u32, RawState)>,
    /// The fast path took the states its load left in its mapped record
    /// (`FullMap::pending`): they are the states before of the names it set that the profile
    /// had (none in `raw`), read from the record by the history step (`settle` moves them
    /// into `raw` once captured).
    mapped: bool,
    /// The whole record before the call (identifiers included), copied at a merge. Boxed, as
    /// `OldIds::Saved`: each call moves its `Work` into the list, and most have neither.
    whole: Option<Box<ProfileRecord>>,
    /// Debug builds: the whole record as loaded, to check the saved parts against.
    #[cfg(debug_assertions)]
    loaded: Option<ProfileRecord>,
    /// Debug builds: the states the load left in its mapped record, captured (`settle`), to
    /// check the step read from the record against.
    #[cfg(debug_assertions)]
    mapped_raw: Option<RawStates>,
}

/// A loaded profile's identifiers as the index has them, copied only when the call first
/// changes them (most calls do not: no copy, no comparison).
enum OldIds {
    /// A new profile: the index has none.
    New,
    /// Unchanged so far: `Work::rec.ids` are the index's.
    Same,
    /// Changed by the call; these are the index's (boxed: see [`Before::whole`]).
    Saved(Box<Ids>),
}

/// The in-order fast path (docs/write-path-next.md, steps 3 and 4). When every operation of a
/// call is a set of a registered name (each once) on a profile loaded partially, and each
/// name's state before is a plain set or removal older than the call (captured as bytes,
/// `entries::raw`) or absent, every new state is `{lww: (the call's stamp, the value)}`
/// whatever the state before (`PropState::before_write`). The call then builds no
/// `PropState`: it keeps each value's bytes as `Value::put` writes them, in the delta's
/// `FORM_SET` states (`entries::profile::put_set_item`), which the delta copies whole
/// (`entries::profile::put_delta_sets`). Anything that needs the states in `rec` (a full
/// record) first puts them there ([`materialize`]).
struct FastSets {
    /// (name, its value's bytes in `bytes`), sorted by name once the call is applied.
    sets: Vec<(u32, std::ops::Range<u32>)>,
    /// The sets as a delta writes its states, in the order of `sets` (name order): each
    /// name's number, `FORM_SET` and its value's bytes (those `sets` name).
    bytes: Vec<u8>,
}

impl FastSets {
    fn values(&self) -> impl ExactSizeIterator<Item = (u32, &[u8])> + Clone {
        self.sets
            .iter()
            // `get`, not an index: no panic to keep, so that a walk of the names alone
            // (`entries::profile::splice_mapped`'s first) does not slice the values. The
            // ranges are the call's own, within `bytes`.
            .map(|(id, r)| {
                let value = self.bytes.get(r.start as usize..r.end as usize);
                debug_assert!(value.is_some(), "a fast set's value outside its bytes");
                (*id, value.unwrap_or_default())
            })
    }
}

/// Put a fast-path call's new states into `rec` (see [`FastSets`]): each a set by the call at
/// `stamp`, as `PropState::apply_set_ref` leaves it on the empty state. The fast sets go back
/// to `pools`.
fn materialize(work: &mut Work, stamp: Stamp, pools: &mut Pools) -> Result<()> {
    let Some(fast) = work.fast.take() else {
        return Ok(());
    };
    for (id, bytes) in fast.values() {
        *work.rec.state_mut(id) = fast_state(bytes, stamp)?;
    }
    pools.keep_fast(fast);
    Ok(())
}

/// The state a fast-path set leaves: the value whose bytes `bytes` are, set at `stamp`.
fn fast_state(bytes: &[u8], stamp: Stamp) -> Result<PropState> {
    entries::raw::plain_state(stamp, Some(bytes)).map_err(|e| Error::Corruption {
        file: Default::default(),
        offset: 0,
        // Bytes this process encoded: only a bug gets here.
        reason: format!("a value of the call's fast path: {}", e.reason),
    })
}

/// A fast call's full record written from its parts (`entries::profile::put_full_parts`):
/// the states the load captured as bytes, those it built, and the call's sets at `stamp`;
/// `work` was loaded with every state ([`Work::captured_all`]), and its identifiers and times
/// are the profile's after the call. `lens`: the record's state lengths.
fn full_from_parts(
    work: &Work,
    fast: &FastSets,
    stamp: Stamp,
    out: &mut Vec<u8>,
    lens: &mut Vec<u8>,
) -> entries::wire::Decoded<()> {
    use entries::profile::Part;
    let broken = |reason| entries::wire::DecodeError { at: 0, reason };
    // Made empty where it stands, then reserved: `with_capacity` returned the list by value,
    // a libc `memcpy` of its ~3 KiB inline room (~300 instructions) each call.
    let mut parts = smallvec::SmallVec::<[(u32, Part<'_>); 64]>::new();
    parts.reserve_exact(work.raw.states.len() + work.rec.props.len() + fast.sets.len());
    // Three lists sorted by name, no name in two (the fast path took the call's names out of
    // the captured states, and found none of them built): merged. A name in two is written
    // twice, which `put_full_parts` refuses.
    let (raw, built) = (&work.raw.states[..], &work.rec.props[..]);
    let (mut r, mut b) = (0, 0);
    let mut push_below =
        |bound: u32, parts: &mut smallvec::SmallVec<_>| -> entries::wire::Decoded<()> {
            loop {
                let rn = raw.get(r).map(|p| p.0).filter(|&id| id < bound);
                let bn = built.get(b).map(|p| p.0).filter(|&id| id < bound);
                let take_raw = match (rn, bn) {
                    (None, None) => return Ok(()),
                    (Some(rn), Some(bn)) => rn < bn,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                };
                match take_raw {
                    true => {
                        let (id, state) = &raw[r];
                        r += 1;
                        let value = match &state.value {
                            None => None,
                            Some(_) => Some(
                                work.raw
                                    .value_bytes(state)
                                    .ok_or(broken("a captured value outside its bytes"))?,
                            ),
                        };
                        parts.push((*id, Part::Plain(state.stamp, value)));
                    }
                    false => {
                        let (id, state) = &built[b];
                        b += 1;
                        parts.push((*id, Part::State(state)));
                    }
                }
            }
        };
    for (id, value) in fast.values() {
        push_below(id, &mut parts)?;
        parts.push((id, Part::Plain(stamp, Some(value))));
    }
    push_below(u32::MAX, &mut parts)?;
    if r < raw.len() || b < built.len() {
        // A name of `u32::MAX` (only a bug or a crafted name table gets here).
        return Err(broken("a state named u32::MAX"));
    }
    entries::profile::put_full_parts(
        &work.rec.ids,
        (work.rec.first_seen, work.rec.updated_at),
        &parts,
        out,
        lens,
    )
}

/// The single full record cached for `work`'s profile, spliced with its fast sets into `data`
/// and `lens`: by the load's map when it has one (`entries::profile::splice_mapped`), else
/// from the record itself (`splice_full`). `false` when the splice does not apply, or when only
/// a bug stopped it (debug-asserted): the caller writes the record the general way then.
fn splice_cached(
    work: &Work,
    chain: &Chain,
    stamp: Stamp,
    key: u64,
    data: &mut Vec<u8>,
    lens: &mut Vec<u8>,
) -> bool {
    let (Some((old, old_lens)), Some(fast)) = (chain.single_full(), &work.fast) else {
        return false;
    };
    let times = (work.rec.first_seen, work.rec.updated_at);
    let done = match work.map.as_deref() {
        Some(map) => entries::profile::splice_mapped(
            chain.buffer(),
            old,
            old_lens,
            map,
            times,
            stamp,
            fast.values(),
            data,
            lens,
        ),
        None => {
            entries::profile::splice_full(old, old_lens, times, stamp, fast.values(), data, lens)
        }
    };
    match done {
        Ok(true) => {
            #[cfg(debug_assertions)]
            check_full_from_bytes(
                work,
                chain.decode().ok(),
                stamp,
                data,
                Some(lens),
                key,
                true,
            );
            true
        }
        Ok(false) => false,
        Err(e) => {
            // Bytes this process encoded: only a bug gets here.
            debug_assert!(false, "splice of profile {key}: {}", e.reason);
            false
        }
    }
}

/// Debug builds: a full record a fast call wrote from bytes ([`full_from_parts`], or
/// [`entries::profile::splice_full`] with its state lengths `lens`) is the one `put_full`
/// writes of the whole profile after the call: `before`, the profile its records fold to, with
/// the call's identifiers, times and sets put in. Bytes first copied from a log another
/// encoder wrote may keep a number's longer form: then the record must read as the profile;
/// `exact`: the bytes came from this process's own records (a spliced cached record, never one
/// read from the log), which must be `put_full`'s bytes.
#[cfg(debug_assertions)]
fn check_full_from_bytes(
    work: &Work,
    before: Option<ProfileRecord>,
    stamp: Stamp,
    data: &[u8],
    lens: Option<&[u8]>,
    key: u64,
    exact: bool,
) {
    let Some(mut whole) = before else {
        panic!("profile {key}: its cached records do not decode");
    };
    whole.ids = work.rec.ids.clone();
    whole.first_seen = work.rec.first_seen;
    whole.updated_at = work.rec.updated_at;
    let whole = with_fast(whole, work.fast.as_ref(), stamp);
    let (mut want, mut want_lens) = (Vec::new(), Vec::new());
    entries::profile::put_full(&whole, &mut want, Some(&mut want_lens));
    if exact || data == &want[..] {
        assert!(
            data == &want[..],
            "full record of profile {key}: not put_full's bytes"
        );
        if let Some(lens) = lens {
            assert_eq!(lens, &want_lens[..], "state lengths of profile {key}");
        }
    } else {
        assert_eq!(
            entries::profile::full(data).ok().as_ref(),
            Some(&whole),
            "full record of profile {key} written from bytes"
        );
    }
}

/// What [`fits_walk`] decides, by a bisection of each list for each name (the form it
/// replaced; its debug check and its proptest): every name in `only` either has a captured
/// state in `states` that the write at `ts` replaces, or no state at all in `props`.
#[cfg(any(test, debug_assertions))]
fn fits_by_bisection(
    only: &[u32],
    states: &[(u32, Stamp)],
    props: &[(u32, PropState)],
    ts: Timestamp,
    order: u64,
) -> bool {
    only.iter()
        .all(|id| match states.binary_search_by_key(id, |s| s.0) {
            Ok(j) => write_replaces(Some(states[j].1), ts, order),
            Err(_) => props.binary_search_by_key(id, |p| p.0).is_err(),
        })
}

/// [`Builder::fast_fits`]' walk: whether each of `only` (sorted) has a captured state of
/// the `n` states `state(0..n)` (name and stamp, sorted) that a write at `ts` replaces, or no
/// state (not one built into `props`). `only`, the captured states and the built ones are each
/// sorted by name: one walk along the three (a bisection of each list for each name cost ~55
/// instructions a name).
///
/// Whether a name has a captured state, and whether the write replaces it, are folded into
/// `fits` and the place in the states by masks, not branched on: a profile holds some of a
/// call's names and not others, in no order the processor could learn (a branch on each, and
/// on stepping the states past it, were ~5 mispredictions a W1 call). The states of names not
/// in `only` (none when the load kept only the call's names) are stepped over by a loop that
/// is not entered.
#[inline(always)]
fn fits_walk(
    only: &[u32],
    n: usize,
    state: impl Fn(usize) -> (u32, Stamp),
    props: &[(u32, PropState)],
    ts: Timestamp,
    order: u64,
) -> bool {
    let Some(last) = n.checked_sub(1) else {
        let mut p = 0;
        return only.iter().all(|&id| !built(props, &mut p, id));
    };
    // The state at `j`, read at a place clamped into the states; past the last, named
    // `u32::MAX`. A select, not a branch: `&&`, `&` and a mask alike compiled to one on
    // `j < n`, whose outcome changes at a place in the walk that varies from call to call.
    let at = |j: usize| {
        let (name, stamp) = state(j.min(last));
        (
            std::hint::select_unpredictable(j < n, name, u32::MAX),
            stamp,
        )
    };
    let (mut j, mut p) = (0, 0);
    let mut fits = true;
    for &id in only {
        let mut st = at(j);
        while st.0 < id {
            j += 1;
            st = at(j);
        }
        let captured = (j < n) & (st.0 == id);
        fits &= !captured | write_replaces(Some(st.1), ts, order);
        j += usize::from(captured);
        // A built state counts only for a name with none captured (no built list: nearly every
        // call, where this steps nowhere).
        fits &= captured | !built(props, &mut p, id);
    }
    fits
}

/// Whether `props` (sorted by name) has a state of `id`, stepping `p` past the names below it
/// ([`fits_walk`]'s walk of the built states).
#[inline(always)]
fn built(props: &[(u32, PropState)], p: &mut usize, id: u32) -> bool {
    while props.get(*p).is_some_and(|pr| pr.0 < id) {
        *p += 1;
    }
    props.get(*p).is_some_and(|pr| pr.0 == id)
}

/// Capture into `work.raw` the states of the call's names its load left in the full record
/// it mapped (`FullMap::pending`, `entries::profile::full_mapped`): what the load captures
/// otherwise. Anything but the fast path (`Builder::fast_fits`, `Builder::apply_fast`, the
/// history step) reads the states there: the call's other ops, `complete`.
fn settle(work: &mut Work) -> Result<()> {
    let Work {
        map,
        cached,
        raw,
        before,
        ..
    } = work;
    let Some(map) = map.as_deref_mut().filter(|m| m.pending) else {
        return Ok(());
    };
    map.pending = false;
    match cached.as_ref().and_then(Chain::single_full) {
        Some((old, _)) if map.capture(old, raw) => {
            // The fast path took them all (its sets then put into `rec`, `materialize`): its
            // states before, as `take_ascending` leaves them.
            if std::mem::take(&mut before.mapped) {
                before.raw.append(&mut raw.states);
            }
            Ok(())
        }
        // The map was read from the record the cache holds, which the call does not change
        // before it writes: only a bug gets here.
        _ => Err(Error::Corruption {
            file: Default::default(),
            offset: 0,
            reason: "the states a load left in its mapped record: the record is gone".into(),
        }),
    }
}

/// The states a load left in its mapped record (see [`settle`]), captured from `cached`, the
/// records `map` was read from (`None` when it left none): debug builds check the load, and
/// the history step read from the record, with them.
#[cfg(debug_assertions)]
fn captured_with(map: Option<&FullMap>, cached: &Chain) -> Option<RawStates> {
    let map = map.filter(|m| m.pending)?;
    let (old, _) = cached.single_full()?;
    let mut raw = RawStates {
        states: Vec::with_capacity(map.found().len()),
        bytes: Vec::with_capacity(old.len()),
    };
    assert!(map.capture(old, &mut raw), "the mapped record's states");
    Some(raw)
}

/// Make a partially loaded profile (`Work::partial`) whole: the records it was loaded from
/// folded whole, with the identifiers, times and states the call has by now (it changed no
/// other state).
fn complete(work: &mut Work, store: &Store, index: &Index) -> Result<()> {
    debug_assert!(work.fast.is_none(), "completing a profile with fast sets");
    if !work.partial {
        return Ok(());
    }
    settle(work)?;
    if work.captured_all {
        // Every state is in `rec` or captured: the captured ones decoded into it (the call
        // took out those it changed).
        for (id, r) in &work.raw.states {
            *work.rec.state_mut(*id) = work.raw.decode(r).map_err(|e| Error::Corruption {
                file: Default::default(),
                offset: 0,
                // Bytes this process read and checked: only a bug gets here.
                reason: format!("a captured state: {e}"),
            })?;
        }
        work.raw.states.clear();
        #[cfg(debug_assertions)]
        if work.before.loaded.is_some() {
            work.before.loaded = work.cached.as_ref().and_then(|c| c.decode().ok());
        }
        work.partial = false;
        work.captured_all = false;
        return Ok(());
    }
    let loaded = match work.cached.as_ref().map(Chain::decode) {
        Some(Ok(rec)) => rec,
        _ => {
            // A bug, or a string of a crafted log that a miss's fold stepped over unchecked
            // (`entries::wire::Utf8::Kept`): the read from the log decides, and names the damage.
            let (loc, _) = work.head.ok_or_else(|| Error::Corruption {
                file: Default::default(),
                offset: 0,
                reason: "a partially loaded profile without a record".into(),
            })?;
            entries::chain::read_profile(store, &index.forwards, loc)?.0
        }
    };
    let mut rec = std::mem::replace(&mut work.rec, loaded);
    let whole = &mut work.rec;
    // The identifiers the call holds (it may have changed them); the decoded ones' buffers
    // are kept for the thread's next.
    let mut decoded = std::mem::replace(&mut whole.ids, std::mem::take(&mut rec.ids));
    clear_ids(&mut decoded);
    whole.first_seen = rec.first_seen;
    whole.updated_at = rec.updated_at;
    for (id, state) in rec.props {
        *whole.state_mut(id) = state;
    }
    // The states still captured are in the whole record now (the bytes stay for
    // `Before::raw`).
    work.raw.states.clear();
    #[cfg(debug_assertions)]
    if work.before.loaded.is_some() {
        work.before.loaded = work.cached.as_ref().and_then(|c| c.decode().ok());
    }
    work.partial = false;
    Ok(())
}

/// `rec` with the states `raw` captured decoded into it (debug builds check a partial load
/// with it).
#[cfg(debug_assertions)]
fn with_raw(mut rec: ProfileRecord, raw: &RawStates) -> ProfileRecord {
    for (id, r) in &raw.states {
        if let Ok(state) = raw.decode(r) {
            *rec.state_mut(*id) = state;
        }
    }
    rec
}

/// `rec` with a fast-path call's new states put in (debug builds check the fast path with it).
#[cfg(debug_assertions)]
fn with_fast(mut rec: ProfileRecord, fast: Option<&FastSets>, stamp: Stamp) -> ProfileRecord {
    for (id, bytes) in fast.into_iter().flat_map(FastSets::values) {
        if let Ok(state) = fast_state(bytes, stamp) {
            *rec.state_mut(id) = state;
        }
    }
    rec
}

/// What a partial load (`only`) of `rec` gives: its identifiers, times and the states of
/// those names (debug builds check a cache hit against the log with it).
#[cfg(debug_assertions)]
fn project(mut rec: ProfileRecord, only: Option<&[u32]>) -> ProfileRecord {
    if let Some(only) = only {
        rec.props.retain(|(id, _)| only.binary_search(id).is_ok());
    }
    rec
}

/// Hand out the next key of a counter. Keys are never reused, and only a damaged log can claim
/// key 2^64-1 (open saturates at it): then new keys are refused. Found by the `open_dir` fuzz
/// target: the plain `+= 1` overflowed, and in release wrapped to 0 and reused keys.
fn take_key(next: &mut u64, what: &str, store: &Store) -> Result<u64> {
    let key = *next;
    if key == u64::MAX {
        return Err(Error::Corruption {
            file: store.dir().to_path_buf(),
            offset: 0,
            reason: format!("{what} keys are used up (the log claims key 2^64-1)"),
        });
    }
    *next = key + 1;
    Ok(key)
}

impl<'a> Builder<'a> {
    pub fn new(
        index: &'a Index,
        cache: &'a mut ProfileCache,
        store: &'a Store,
        options: &'a Options,
    ) -> Self {
        let mut spare = SPARE
            .try_with(|s| s.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_default();
        // The clock read once for the call: the journal's arrival and the default timestamp
        // (`apply`) come from the same read (two reads took ~150 instructions a call more).
        let now = Timestamp::now();
        let history = crate::journal::CallInfo::for_index(index, now.0, spare.pools.call.take());
        Builder {
            index,
            cache,
            store,
            options,
            spare,
            new_names: Vec::new(),
            companies: None,
            next_key: index.next_key().max(1),
            next_company_key: index.next_company_key().max(1),
            // Saturating: a damaged log may end at seq 2^64-1 (the append then refuses).
            order: index.last_seq().saturating_add(1),
            call_ts: Timestamp(0),
            now,
            history,
        }
    }

    /// The entries of the companies the call created or changed, by key. Called only when
    /// there are some (collecting the map builds and frees a list).
    fn push_companies(&mut self, companies: Companies) {
        let mut companies: Vec<_> = companies.into_values().collect();
        companies.sort_by_key(|(k, _)| *k);
        for (key, rec) in companies {
            let data = entries::encode(&rec);
            self.push(
                EntryKind::Company,
                key,
                data,
                Change::Company { key, id: rec.id },
            );
        }
    }

    fn push(&mut self, kind: EntryKind, id: u64, data: Vec<u8>, change: Change) {
        self.spare.entries.push((kind, id, data));
        self.spare.changes.push(change);
    }

    fn position(&self, key: u64) -> Option<usize> {
        self.spare.profiles.iter().position(|p| p.0 == key)
    }

    /// Load a profile into the working set: whole, or (`only`: the names the call changes,
    /// sorted) partially when the writer cache keeps its records: its identifiers and times,
    /// and the states of those names only; [`complete`] makes it whole from the records when
    /// the call needs more (a merge, a full record).
    fn load(
        &mut self,
        key: u64,
        only: Option<&[u32]>,
        known: entries::profile::Known<'_>,
    ) -> Result<()> {
        if self.position(key).is_some() {
            return Ok(());
        }
        let loc = self.index.location(key).ok_or_else(|| Error::Corruption {
            file: Default::default(),
            offset: 0,
            reason: format!("index names profile {key} but it has no record"),
        })?;
        let chain_limit = self.options.chain_limit;
        let mut raw = self.spare.pools.raws();
        let cached = self.cache.take(key, loc).and_then(|(at, chain)| {
            // One full record the writer encoded: a call on the fast path writes the cache's
            // next full record from it (`entries::profile::splice_full`), loading only the
            // call's states; so also when the log's next record is a full one (the chain
            // limit), which is then the spliced record too (`finish`). Capturing every state
            // there and writing the record from them (below) cost ~9,000 instructions more a
            // call. Any other chain (several records): every plain state captured as bytes, so
            // that a call on the fast path writes the full record (the cache's, and the log's
            // at its chain limit) from them (`entries::profile::put_full_parts`) and builds
            // none.
            let splice = chain.single_full().is_some();
            let all = only.is_some() && !splice;
            let only = only.filter(|_| {
                !all && (splice || !at.next_is_full(chain_limit))
                    && chain.records() < CACHED_CHAIN_RECORDS
            });
            let mut map = None;
            let single = chain.single_full().filter(|_| splice);
            let rec = match (only, &chain) {
                // The record walked once: where its parts sit is kept for the splice.
                (Some(only), _) if let Some((old, lens)) = single => {
                    let mut m = self.spare.pools.map();
                    let into = self.spare.pools.record();
                    // The call's states left in the record, found by the map (`settle`
                    // captures them when anything but the fast path needs them).
                    let mapped = entries::profile::full_mapped(
                        old, lens, only, &mut raw, false, into, &mut m, known,
                    );
                    match mapped {
                        Ok(Some(rec)) => {
                            map = Some(m);
                            Ok(rec)
                        }
                        Ok(None) => {
                            self.spare.pools.keep_map(Some(m));
                            chain.decode_capturing(only, &mut raw, self.spare.pools.record())
                        }
                        Err(e) => Err(e),
                    }
                }
                (Some(only), _) => {
                    chain.decode_capturing(only, &mut raw, self.spare.pools.record())
                }
                (None, c) if all => c.decode_capturing_all(&mut raw, self.spare.pools.record()),
                (None, _) => chain.decode_into(self.spare.pools.record()),
            };
            match rec {
                Ok(rec) => Some((at, rec, chain, only, all, map)),
                // A bug, or a string of a crafted log that a miss's fold stepped over unchecked
                // (`entries::wire::Utf8::Kept`): the read from the log decides, and names the
                // damage.
                Err(_) => None,
            }
        });
        // Debug builds: the states the load left in its mapped record, captured.
        #[cfg(debug_assertions)]
        let mut mapped_raw = None;
        let (at, rec, cached, hit, partial, all, map) = match cached {
            Some((at, rec, chain, only, all, map)) => {
                self.cache.hits += 1;
                #[cfg(debug_assertions)]
                {
                    mapped_raw = captured_with(map.as_deref(), &chain);
                }
                #[cfg(debug_assertions)]
                if let Ok((logged, ..)) =
                    entries::chain::read_profile(self.store, &self.index.forwards, loc)
                {
                    debug_assert!(
                        project(logged, only)
                            == with_raw(rec.clone(), mapped_raw.as_ref().unwrap_or(&raw)),
                        "cached profile {key} differs from the log"
                    );
                }
                (at, rec, Some(chain), true, only.is_some() || all, all, map)
            }
            None => {
                self.cache.misses += 1;
                raw.clear();
                // The records read are what the cache keeps (no encoding of the profile).
                // A pooled buffer: a W1 chain's records take ~1 KB, read four at a time.
                let mut read = self.cache.enabled().then(|| self.spare.pools.buf());
                let only = only.filter(|_| read.is_some());
                // Every plain state captured (the cache keeps the full record a fast call writes
                // from them); so every string of the chain is checked here, not only the call's.
                let all = only.is_some();
                let mut fold = match only {
                    Some(_) => Fold::capturing(std::mem::take(&mut raw)).checking_kept(),
                    None => Fold::default(),
                };
                if only.is_some() {
                    fold.reuse(self.spare.pools.record());
                }
                let (rec, link, walked) = entries::chain::read_profile_keeping(
                    self.store,
                    &self.index.forwards,
                    loc,
                    read.as_mut(),
                    &mut fold,
                )?;
                if let Some(captured) = fold.take_raw() {
                    raw = captured;
                }
                let chain = read.and_then(|r| {
                    let chain = Chain::from_newest_first(&r);
                    keep(&mut self.spare.pools.bufs, r);
                    chain
                });
                let (rec, partial) = match (&chain, only) {
                    (Some(_), Some(_)) => (rec, true),
                    // A partial read needs the records to complete it (only a bug gets here).
                    (None, Some(_)) => {
                        raw.states.clear();
                        (
                            entries::chain::read_profile(self.store, &self.index.forwards, loc)?.0,
                            false,
                        )
                    }
                    (_, None) => (rec, false),
                };
                (
                    ChainAt::read(link, walked),
                    rec,
                    chain,
                    false,
                    partial,
                    all && partial,
                    None,
                )
            }
        };
        let before = Before {
            times: (rec.first_seen, rec.updated_at),
            props: match self.history {
                Some(_) => self.spare.pools.befores(),
                None => Vec::new(),
            },
            raw: match self.history {
                Some(_) => self.spare.pools.raw_befores(),
                None => Vec::new(),
            },
            #[cfg(debug_assertions)]
            loaded: self
                .history
                .is_some()
                .then(|| with_raw(rec.clone(), mapped_raw.as_ref().unwrap_or(&raw))),
            #[cfg(debug_assertions)]
            mapped_raw,
            ..Before::default()
        };
        self.spare.profiles.push((
            key,
            Work {
                old: OldIds::Same,
                rec,
                partial,
                captured_all: all,
                head: Some((loc, at)),
                hit,
                full: false,
                fast: None,
                changed: self.spare.pools.names(),
                stamped: false,
                cached,
                raw,
                before,
                merged: Vec::new(),
                map,
            },
        ));
        Ok(())
    }

    /// Make a partially loaded profile whole (see [`complete`]).
    fn whole(&mut self, key: u64) -> Result<()> {
        let i = self.position(key).expect("profile loaded before use");
        complete(&mut self.spare.profiles[i].1, self.store, self.index)
    }

    fn work(&mut self, key: u64) -> &mut Work {
        let i = self.position(key).expect("profile loaded before use");
        &mut self.spare.profiles[i].1
    }

    fn rec(&mut self, key: u64) -> &mut ProfileRecord {
        &mut self.work(key).rec
    }

    /// A loaded profile's identifiers, to change: the index's copy is kept first (once).
    fn ids_mut(&mut self, key: u64) -> &mut Ids {
        let work = self.work(key);
        if matches!(work.old, OldIds::Same) {
            work.old = OldIds::Saved(Box::new(work.rec.ids.clone()));
        }
        &mut work.rec.ids
    }

    /// Take a loaded profile out of the call (deleted, or merged into another): its slot in the
    /// writer cache, reserved by the load's take, is given up (no insert follows).
    fn remove(&mut self, key: u64) -> Option<Work> {
        let i = self.position(key)?;
        let (_, work) = self.spare.profiles.remove(i);
        if work.hit {
            self.cache.release(key);
        }
        Some(work)
    }

    /// The number of a property name, registering it if new; `None` beyond the limit.
    fn name_id(&mut self, name: &str) -> Option<u32> {
        if let Some(id) = self.index.name_id(name) {
            return Some(id);
        }
        if let Some(pos) = self.new_names.iter().position(|n| n == name) {
            return Some((self.index.name_count() + pos) as u32);
        }
        let total = self.index.name_count() + self.new_names.len();
        if total >= self.options.max_property_names {
            return None;
        }
        self.new_names.push(name.to_string());
        let id = total as u32;
        self.push(
            EntryKind::PropName,
            id as u64,
            name.as_bytes().to_vec(),
            Change::Name {
                id,
                name: name.to_string(),
            },
        );
        Some(id)
    }

    /// The link of a delta record after `head` (the profile's newest record and where it
    /// stands in its chain) and where the delta will stand, or `None` when the call must
    /// write a full record; counted either way.
    fn delta_link(&mut self, head: Option<(Location, ChainAt)>) -> Option<(Link, ChainAt)> {
        let records = &mut self.cache.records;
        let Some((prev, at)) = head else {
            records.full_whole += 1;
            return None;
        };
        if at.next_is_full(self.options.chain_limit) {
            records.full_chain_limit += 1;
            return None;
        }
        let mut next = ChainAt {
            link: at.link + 1,
            walked: at.walked + 1,
            through: at.through,
        };
        if self.cache.compacting.binary_search(&prev.segment).is_ok() {
            if self.cache.switching {
                records.full_at_switch += 1;
                return None;
            }
            records.linked_into_compaction += 1;
            self.spare.linked.push(prev);
            next.through = Some((prev, at.link));
        }
        records.deltas += 1;
        Some((
            Link {
                prev,
                depth: next.link,
            },
            next,
        ))
    }

    /// Finish: write every changed profile and company, the dedupe note.
    pub fn finish(self, outcome: &Outcome, message_id: Option<&str>) -> Result<Batch> {
        self.finish_hashed(outcome, message_id.map(|mid| (mid, message_hash(mid))))
    }

    /// [`Builder::finish`] given the messageId with its hash ([`message_hash`]), which the
    /// write path computed for its dedupe check.
    pub fn finish_hashed(
        mut self,
        outcome: &Outcome,
        message: Option<(&str, u128)>,
    ) -> Result<Batch> {
        let message_id = message.map(|(mid, _)| mid);
        // Companies before profiles so that membership finds its company slot.
        if let Some(companies) = self.companies.take() {
            self.push_companies(*companies);
        }
        let stamp = Stamp::new(self.call_ts, self.order);
        let mut profiles = std::mem::take(&mut self.spare.profiles);
        // Each profile is written where it stands in the list (a `Work` is large to move):
        // what goes on (its record, its lists' buffers) is taken out of it.
        for (nth, item) in profiles.iter_mut().enumerate() {
            let (key, work): (u64, &mut Work) = (item.0, &mut item.1);
            // Only the fast path writes from the states a load left in its mapped record
            // (`settle`).
            if work.fast.is_none() {
                settle(work)?;
            }
            let ids_changed = match &work.old {
                OldIds::New => true,
                OldIds::Same => false,
                OldIds::Saved(old) => **old != work.rec.ids,
            };
            if !work.full && !ids_changed && !work.stamped && work.changed.is_empty() {
                // Nothing to write (also when its chain is full: a profile loaded and left as
                // it was, e.g. one the guard kept a quarantined identifier on, gets no record
                // and no history step): the cached records stay valid.
                if let (Some((loc, at)), Some(chain)) = (work.head, work.cached.take()) {
                    self.cache.insert(key, loc, at, chain, work.hit);
                }
                self.spare.pools.keep_raw(
                    std::mem::take(&mut work.raw),
                    std::mem::take(&mut work.before.raw),
                );
                self.spare.pools.keep_map(work.map.take());
                continue;
            }
            // The size of a full record encoded for it: the previous version's is a good guess.
            let full_guess = work.head.map_or(256, |(l, _)| l.len as usize + 128);
            let link = if work.full {
                self.cache.records.full_whole += 1;
                None
            } else {
                self.delta_link(work.head)
            };
            // A full record, for the log or for the cache (a loaded chain at its length),
            // needs the whole profile.
            let cache_full = self.cache.enabled()
                && (work.captured_all
                    || work
                        .cached
                        .as_ref()
                        .is_none_or(|c| c.records() >= CACHED_CHAIN_RECORDS));
            // The fast path's delta is written from its bytes (and the cache's chain or hot
            // record from the delta or the bytes); a full record needs the states in `rec`.
            let fast_delta = link.is_some()
                && !cache_full
                && !ids_changed
                && !work.full
                && work.cached.is_some();
            // A fast call on a chain whose next record is a full one (for the log, or for the
            // cache after this delta), loaded with every plain state captured: the full record
            // is written from the captured states' bytes, the states built and the call's
            // sets (`entries::profile::put_full_parts`), with no whole record built.
            //
            // A fast call whose record is a full one (the chain limit, or a compaction
            // switching in) on a chain of one full record, which its load mapped: the full
            // record spliced from the old one's bytes (`entries::profile::splice_mapped`), as
            // the cache's next full record is after a delta; it is the log's and the cache's.
            // When the splice does not apply, the general path below completes the profile.
            let from_splice = match (&work.fast, &work.cached, &work.map) {
                (Some(_), Some(chain), Some(_)) if link.is_none() && !ids_changed && !work.full => {
                    let mut data = self.spare.pools.buf();
                    data.reserve(full_guess);
                    let mut lens = self.spare.pools.buf();
                    if splice_cached(work, chain, stamp, key, &mut data, &mut lens) {
                        self.cache.records.spliced += 1;
                        self.cache.records.full_spliced += 1;
                        Some((data, lens))
                    } else {
                        keep(&mut self.spare.pools.bufs, data);
                        keep(&mut self.spare.pools.bufs, lens);
                        None
                    }
                }
                _ => None,
            };
            let from_parts = match (&work.fast, &work.cached) {
                _ if from_splice.is_some() => from_splice,
                (Some(fast), Some(_))
                    if work.captured_all
                        && (link.is_none() || cache_full)
                        && !ids_changed
                        && !work.full =>
                {
                    let mut data = self.spare.pools.buf();
                    data.reserve(full_guess);
                    let mut lens = self.spare.pools.buf();
                    match full_from_parts(work, fast, stamp, &mut data, &mut lens) {
                        Ok(()) => {
                            #[cfg(debug_assertions)]
                            check_full_from_bytes(
                                work,
                                work.cached.as_ref().and_then(|c| c.decode().ok()),
                                stamp,
                                &data,
                                None,
                                key,
                                false,
                            );
                            self.cache.records.full_from_parts += 1;
                            Some((data, lens))
                        }
                        Err(e) => {
                            // Only a bug gets here: the general path below writes the record.
                            debug_assert!(false, "full record of profile {key}: {}", e.reason);
                            keep(&mut self.spare.pools.bufs, data);
                            keep(&mut self.spare.pools.bufs, lens);
                            None
                        }
                    }
                }
                _ => None,
            };
            let (mut parts_full, parts_lens) = from_parts.unzip();
            if parts_full.is_some() {
                if link.is_some() {
                    self.cache.records.fast_path += 1;
                }
            } else {
                if !fast_delta {
                    materialize(work, stamp, &mut self.spare.pools)?;
                } else if work.fast.is_some() {
                    self.cache.records.fast_path += 1;
                }
                if link.is_none() || cache_full {
                    complete(work, self.store, self.index)?;
                }
            }
            // The fast path pushed its names in name order, each once (`apply_fast` walks the
            // call's sorted names): sorting them again cost ~60 instructions a call.
            if work.fast.is_none() {
                work.changed.sort_unstable();
                work.changed.dedup();
            }
            debug_assert!(
                work.changed.is_sorted_by(|a, b| a < b),
                "names changed, each once"
            );
            // The full record's state lengths, for the cache (`cache::Chain::full_measured_in`).
            let mut lens = parts_lens.unwrap_or_else(|| self.spare.pools.buf());
            let (kind, data, at) = match link {
                Some((link, at)) => {
                    let mut data = self.spare.pools.buf();
                    data.reserve(64 + 24 * work.changed.len());
                    match &work.fast {
                        Some(fast) => entries::profile::put_delta_sets(
                            link,
                            stamp,
                            work.stamped,
                            fast.sets.len(),
                            &fast.bytes,
                            &mut data,
                        ),
                        None => entries::profile::put_delta(
                            &DeltaOut {
                                link,
                                stamp,
                                times: work.stamped,
                                ids: ids_changed.then_some(&work.rec.ids),
                                rec: &work.rec,
                                changed: &work.changed,
                            },
                            &mut data,
                        ),
                    }
                    // Debug builds: the fast path's delta is the one the states give.
                    #[cfg(debug_assertions)]
                    if work.fast.is_some() {
                        let mut slow = Vec::new();
                        entries::profile::put_delta(
                            &DeltaOut {
                                link,
                                stamp,
                                times: work.stamped,
                                ids: None,
                                rec: &with_fast(work.rec.clone(), work.fast.as_ref(), stamp),
                                changed: &work.changed,
                            },
                            &mut slow,
                        );
                        debug_assert_eq!(data, slow, "fast path's delta of profile {key}");
                    }
                    (EntryKind::ProfileDelta, data, at)
                }
                None => (
                    EntryKind::Profile,
                    match parts_full.take() {
                        Some(data) => data,
                        None => {
                            let mut data = self.spare.pools.buf();
                            data.reserve(full_guess);
                            // A new profile: every state the call's set (or removal), at
                            // the call's stamp, written without a table built.
                            let one_stamp = matches!(work.old, OldIds::New)
                                && entries::profile::put_full_one_stamp(
                                    &work.rec,
                                    &mut data,
                                    self.cache.enabled().then_some(&mut lens),
                                );
                            if !one_stamp {
                                entries::profile::put_full(
                                    &work.rec,
                                    &mut data,
                                    self.cache.enabled().then_some(&mut lens),
                                );
                            }
                            data
                        }
                    },
                    ChainAt::default(),
                ),
            };
            let mut unmapped = None;
            let step = self.history.as_mut().map(|call| {
                let kind = if key == outcome.key {
                    call.kind
                } else {
                    crate::entries::history::StepKind::Identifiers
                };
                let undo = match (&work.before.whole, &work.old) {
                    (Some(whole), _) => crate::entries::history::diff(Some(&**whole), &work.rec),
                    // Every name the fast path set has a state after the call: the undo is the
                    // states before (absent ones here, captured ones in `raw`) and the times.
                    // `apply_fast` pushed them in name order: no sort.
                    (None, _) if work.fast.is_some() => {
                        let props = std::mem::take(&mut work.before.props);
                        debug_assert!(props.is_sorted_by_key(|p| p.0), "states before, by name");
                        (None, work.before.times.0, work.before.times.1, props)
                    }
                    (None, OldIds::New) => crate::entries::history::diff_into(
                        None,
                        &work.rec,
                        self.spare.pools.befores(),
                    ),
                    (None, old) => crate::entries::history::diff_changed(
                        match old {
                            OldIds::Saved(ids) => Some(&**ids),
                            _ => None,
                        },
                        work.before.times,
                        std::mem::take(&mut work.before.props),
                        &work.rec,
                    ),
                };
                // The states before captured as bytes, by name (the step merges them in).
                // The fast path captured them in name order (`apply_fast`): no sort.
                if work.fast.is_none() {
                    work.before.raw.sort_unstable_by_key(|r| r.0);
                }
                debug_assert!(
                    work.before.raw.is_sorted_by_key(|r| r.0),
                    "captured, by name"
                );
                // A fast call whose load left the states before in its mapped record
                // (`FullMap::pending`): the step reads them from the record's bytes (the cache
                // still holds it: the step is written before the cache's next record).
                let mapped = work.map.as_deref().filter(|m| m.pending).and_then(|m| {
                    let (old, _) = work.cached.as_ref()?.single_full()?;
                    entries::profile::MappedStates::of(old, m)
                });
                if mapped.is_none() && work.map.as_deref().is_some_and(|m| m.pending) {
                    // The record mapped is the one the cache holds until after the step: only
                    // a bug gets here. No step without the states before.
                    debug_assert!(
                        false,
                        "profile {key}: the states before in its mapped record"
                    );
                    unmapped = Some(Error::Corruption {
                        file: Default::default(),
                        offset: 0,
                        reason: format!("profile {key}: the record its load mapped is gone"),
                    });
                }
                debug_assert!(
                    mapped.is_none() || (work.fast.is_some() && work.before.raw.is_empty()),
                    "only the fast path leaves the states before in the record"
                );
                let raw = crate::entries::history::RawBefore {
                    states: &work.before.raw,
                    bytes: &work.raw.bytes,
                    mapped,
                };
                let mut data = self.spare.pools.buf();
                call.step(
                    &mut data,
                    kind,
                    stamp,
                    message_id,
                    &undo,
                    raw,
                    work.head.is_none(),
                    &work.rec,
                    &work.merged,
                );
                // Debug builds: the saved parts, the captured states decoded, are what the
                // whole record before the call gives, and the step is the one they encode to.
                #[cfg(debug_assertions)]
                if let Some(loaded) = &work.before.loaded {
                    // The states the load left in its mapped record, captured: the step read
                    // from the record is byte for byte the one they give.
                    let (befores, captured) = match (mapped, &work.before.mapped_raw) {
                        (Some(_), Some(c)) => (&c.states, c),
                        (Some(_), None) => panic!("profile {key}: its mapped states, captured"),
                        (None, _) => (&work.before.raw, &work.raw),
                    };
                    if mapped.is_some() {
                        let mut from_captured = Vec::with_capacity(data.len());
                        call.step(
                            &mut from_captured,
                            kind,
                            stamp,
                            message_id,
                            &undo,
                            crate::entries::history::RawBefore {
                                states: befores,
                                bytes: &captured.bytes,
                                mapped: None,
                            },
                            work.head.is_none(),
                            &work.rec,
                            &work.merged,
                        );
                        assert_eq!(
                            data, from_captured,
                            "step of profile {key} from its mapped record"
                        );
                    }
                    let mut all = undo.clone();
                    for (id, r) in befores {
                        all.3.push((*id, captured.decode(r).ok()));
                    }
                    all.3.sort_unstable_by_key(|p| p.0);
                    // The states captured and left as they were are the profile's still (the
                    // fast path took every state the load found).
                    let none = RawStates::default();
                    let after = with_raw(
                        with_fast(work.rec.clone(), work.fast.as_ref(), stamp),
                        match mapped {
                            Some(_) => &none,
                            None => &work.raw,
                        },
                    );
                    let whole = crate::entries::history::diff(Some(loaded), &after);
                    debug_assert_eq!(all, whole, "undo step from the saved parts");
                    let mut decoded = Vec::new();
                    call.step(
                        &mut decoded,
                        kind,
                        stamp,
                        message_id,
                        &all,
                        Default::default(),
                        work.head.is_none(),
                        &work.rec,
                        &work.merged,
                    );
                    // The same step: byte for byte when the records were written by this
                    // encoder (a captured value keeps the bytes it was read with, which a
                    // record from elsewhere may hold in a longer form of the same number).
                    debug_assert!(
                        data == decoded
                            || matches!(
                                (
                                    crate::entries::history::decode(&data),
                                    crate::entries::history::decode(&decoded),
                                ),
                                (Ok(a), Ok(b)) if a == b
                            ),
                        "undo step from the captured states"
                    );
                }
                let (ids, _, _, befores) = undo;
                keep(&mut self.spare.pools.befores, befores);
                // The identifiers before, which only a call that changed them has: dropped
                // when there are some (the drop glue's call for none was ~24 instructions).
                if let Some(ids) = ids {
                    drop(ids);
                }
                (data, call.arrival)
            });
            if let Some(e) = unmapped {
                return Err(e);
            }
            // What the cache keeps: the records loaded and this delta, or this full record,
            // or (a loaded chain at its length) the profile encoded whole.
            let chain = match (self.cache.enabled(), work.cached.take()) {
                (false, _) => None,
                (true, cached) => Some(match (kind, cached) {
                    (EntryKind::Profile, old) => Chain::full_measured_in(old, &data, &lens),
                    (_, Some(chain))
                        if !ids_changed
                            && chain.single_full().is_some()
                            && work.fast.is_some()
                            && parts_full.is_none() =>
                    {
                        let mut spliced = self.spare.pools.buf();
                        let mut spliced_lens = self.spare.pools.buf();
                        let next = if splice_cached(
                            work,
                            &chain,
                            stamp,
                            key,
                            &mut spliced,
                            &mut spliced_lens,
                        ) {
                            self.cache.records.spliced += 1;
                            Chain::full_measured_in(Some(chain), &spliced, &spliced_lens)
                        } else {
                            let mut chain = chain;
                            chain.push_delta(&data);
                            chain
                        };
                        keep(&mut self.spare.pools.bufs, spliced);
                        keep(&mut self.spare.pools.bufs, spliced_lens);
                        next
                    }
                    (_, Some(mut chain))
                        if chain.records() < CACHED_CHAIN_RECORDS && parts_full.is_none() =>
                    {
                        chain.push_delta(&data);
                        chain
                    }
                    (_, old) => {
                        let data = match parts_full.take() {
                            Some(data) => data,
                            None => {
                                let mut data = self.spare.pools.buf();
                                data.reserve(full_guess);
                                entries::profile::put_full(&work.rec, &mut data, Some(&mut lens));
                                data
                            }
                        };
                        let chain = Chain::full_measured_in(old, &data, &lens);
                        keep(&mut self.spare.pools.bufs, data);
                        chain
                    }
                }),
            };
            keep(&mut self.spare.pools.bufs, lens);
            // The identifiers after: those of the record written (`Written`, below).
            let ids = ids_changed.then(|| {
                let old = match std::mem::replace(&mut work.old, OldIds::New) {
                    OldIds::New => None,
                    OldIds::Same => Some(Box::new(work.rec.ids.clone())),
                    OldIds::Saved(old) => Some(old),
                };
                // The record stays in the profile's `Work` (`Written::work`).
                (old, After::Written(nth))
            });
            keep(
                &mut self.spare.pools.names,
                std::mem::take(&mut work.changed),
            );
            self.spare.pools.keep_raw(
                std::mem::take(&mut work.raw),
                std::mem::take(&mut work.before.raw),
            );
            if let Some(fast) = work.fast.take() {
                self.spare.pools.keep_fast(fast);
            }
            self.spare.pools.keep_map(work.map.take());
            self.spare.written.push(Written {
                entry: self.spare.entries.len(),
                key,
                at,
                work: nth,
                chain,
                hit: work.hit,
            });
            self.push(kind, key, data, Change::Profile { key, ids });
            if let Some((data, arrival)) = step {
                self.push(
                    EntryKind::History,
                    key,
                    data,
                    Change::History { key, arrival },
                );
            }
        }
        if let Some((_, hash)) = message {
            let (id, bytes) = entries::split_hash(hash);
            let mut data = self.spare.pools.buf();
            data.extend_from_slice(&bytes);
            self.push(EntryKind::Dedupe, id, data, Change::Dedupe { hash });
        }
        // The builder taken apart: its call details go back to the pools whole (dropping
        // the builder's emptied `history` and the pools' emptied slot ran the drop glue of a
        // `None` twice, ~13 instructions each).
        let Builder {
            mut spare, history, ..
        } = self;
        // `Builder::new` took the pools' one (`CallInfo::for_index`): the slot is empty.
        if spare.pools.call.is_none() {
            spare.pools.call = history;
        }
        // The profiles stay for the batch (their records are those written), until
        // `Batch::recycle`.
        spare.profiles = profiles;
        Ok(Batch { spare })
    }

    /// Apply a message; returns the outcome (the batch comes from [`Builder::finish`]).
    pub fn apply(&mut self, message: &Message) -> Result<Outcome> {
        let now = self.now;
        self.call_ts = now;
        match message {
            Message::Identify(m) => self.identify(m, m.timestamp.unwrap_or(now)),
            Message::Group(g) => {
                let ts = g.timestamp.unwrap_or(now);
                let company = CompanyRef {
                    id: g.group_id.clone(),
                    traits: g.traits.clone(),
                };
                if g.user_id.is_none() && g.anonymous_id.is_none() {
                    let created = self.upsert_company(&company, ts)?;
                    return Ok(outcome(
                        0,
                        if created {
                            Status::Created
                        } else {
                            Status::Updated
                        },
                    ));
                }
                let call = Identify {
                    user_id: g.user_id.clone(),
                    anonymous_id: g.anonymous_id.clone(),
                    company: Some(company),
                    ..Identify::default()
                };
                self.identify(&call, ts)
            }
            Message::Alias(a) => {
                let ts = a.timestamp.unwrap_or(now);
                let target = self.index.user_key(&a.user_id);
                if let Some(prev) = self.index.user_key(&a.previous_id) {
                    // Already one person: nothing to store (D-AL1; the status is `updated`,
                    // as for any call that reaches an existing profile, D-R7).
                    if Some(prev) == target {
                        return Ok(outcome(prev, Status::Updated));
                    }
                    return Err(Error::invalid(
                        "previousId",
                        if target.is_some() {
                            "is the user id of another identified profile than userId's; \
                             profiles with different user ids are never merged"
                        } else {
                            "is already a user id, and userId has no profile: an alias never \
                             renames a user id (a profile carries one user id)"
                        },
                    ));
                }
                let call = Identify {
                    user_id: Some(a.user_id.clone()),
                    anonymous_id: Some(a.previous_id.clone()),
                    ..Identify::default()
                };
                self.identify(&call, ts)
            }
            Message::Link(l) => {
                let ts = l.timestamp.unwrap_or(now);
                if l.user_id.is_some() && l.anonymous_id.is_some() {
                    let call = Identify {
                        user_id: l.user_id.clone(),
                        anonymous_id: l.anonymous_id.clone(),
                        ..Identify::default()
                    };
                    self.identify(&call, ts)
                } else {
                    let key = l
                        .user_id
                        .as_deref()
                        .and_then(|u| self.index.user_key(u))
                        .or_else(|| {
                            l.anonymous_id
                                .as_deref()
                                .and_then(|a| self.index.anon_key(a))
                        })
                        .unwrap_or(0);
                    Ok(outcome(key, Status::Unchanged))
                }
            }
        }
    }

    /// Refuse a call naming a suppressed identifier; the error names the field as the caller
    /// wrote it (an alias's `previousId`, an email given in `$set`).
    pub fn check_suppressed(&self, message: &Message) -> Result<()> {
        if !self.index.any_suppressed() {
            return Ok(());
        }
        let mut checks: Vec<(&str, &str, String)> = Vec::with_capacity(3);
        let mut person = |user: Option<&str>, anon: Option<&str>| {
            if let Some(u) = user {
                checks.push(("userId", "user_id", u.to_string()));
            }
            if let Some(a) = anon {
                checks.push(("anonymousId", "anonymous_id", a.to_string()));
            }
        };
        match message {
            Message::Identify(m) => {
                person(m.user_id.as_deref(), None);
                if let Some(e) = &m.email {
                    checks.push((
                        m.field_as_written("traits.email"),
                        "email",
                        normalize_email(e).into_owned(),
                    ));
                }
                if let Some(a) = &m.anonymous_id {
                    checks.push(("anonymousId", "anonymous_id", a.clone()));
                }
            }
            Message::Group(g) => person(g.user_id.as_deref(), g.anonymous_id.as_deref()),
            Message::Link(l) => person(l.user_id.as_deref(), l.anonymous_id.as_deref()),
            Message::Alias(a) => {
                // previousId is looked up as a user id, then as an anonymous id.
                checks.push(("userId", "user_id", a.user_id.clone()));
                checks.push(("previousId", "user_id", a.previous_id.clone()));
                checks.push(("previousId", "anonymous_id", a.previous_id.clone()));
            }
        }
        for (field, domain, value) in checks {
            if self.index.is_suppressed(suppression_hash(domain, &value)) {
                return Err(Error::Suppressed {
                    field: field.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The profile a message's identifiers point to now (for a duplicate's outcome).
    pub fn current_key(index: &Index, message: &Message) -> u64 {
        let (user, anon, email) = match message {
            Message::Identify(m) => (
                m.user_id.as_deref(),
                m.anonymous_id.as_deref(),
                m.email.as_deref(),
            ),
            Message::Group(g) => (g.user_id.as_deref(), g.anonymous_id.as_deref(), None),
            Message::Alias(a) => (Some(a.user_id.as_str()), None, None),
            Message::Link(l) => (l.user_id.as_deref(), l.anonymous_id.as_deref(), None),
        };
        user.and_then(|u| index.user_key(u))
            .or_else(|| email.and_then(|e| index.email_key(e)))
            .or_else(|| anon.and_then(|a| index.anon_key(a)))
            .unwrap_or(0)
    }

    fn identify(&mut self, m: &Identify, ts: Timestamp) -> Result<Outcome> {
        self.call_ts = ts;
        if let Some(h) = self.history.as_mut() {
            h.carry(m);
        }
        let uid = m.user_id.as_deref();
        let mut anon = m.anonymous_id.as_deref();
        let mut email = m.email.as_ref();
        // The guard (issue 16): a quarantined identifier neither finds nor joins a profile.
        let mut quarantined = Vec::new();
        if self.index.journal.guard.enabled() {
            use crate::journal::guard::skips;
            if let Some(e) = email.filter(|e| skips(self.index, "email", e)) {
                quarantined.push(format!("email:{e}"));
                email = None;
            }
            if let Some(a) = anon.filter(|a| skips(self.index, "anonymous_id", a)) {
                quarantined.push(format!("anonymous_id:{a}"));
                anon = None;
            }
            if uid.is_none() && email.is_none() && anon.is_none() {
                // Nothing left to find or make a profile by.
                return Err(Error::invalid(
                    if m.anonymous_id.is_some() {
                        "anonymousId"
                    } else {
                        "traits.email"
                    },
                    "is quarantined by the guard (it linked too many user ids); an admin can \
                     release it",
                ));
            }
        }
        let by_user = uid.and_then(|u| self.index.user_key(u));
        let by_email = email.and_then(|e| self.index.email_key(e));
        let by_anon = anon.and_then(|a| self.index.anon_key(a));
        // The names the call changes that profiles may hold (a name not registered yet is in
        // none): the profiles found are loaded with those states only. The registered names
        // are listed with their operation's place in `call_ops`'s order, packed as
        // `id << 32 | place`: each number is unique, so an unstable sort keeps a name named
        // twice in its operations' order. The one sort of the call's names: the fast path
        // walks the operations in this order, so that the lists it builds (its sets, the names
        // changed, the states before) come out sorted. No list of every operation's number is
        // kept (one push and one walk of it more a call): the slow path below rebuilds it from
        // this one.
        //
        // Sorted without a sort for nearly every call: a name numbered below 128 (a store's
        // first names), named once, at one of the first 256 places, marks its bit in `marked`
        // and notes its place in `places`; the bits are then read in increasing order. Only
        // the others are pushed to `sorted` as they come, and sorted with the marked ones when
        // there are any (a name named twice among them: its second and later operations).
        // The sort of ten names cost ~280 instructions a call.
        let mut spilled = smallvec::SmallVec::<[u64; 16]>::new();
        let mut marked = [0u64; 2];
        let mut places = [0u8; 128];
        // Whether every operation is a set (the fast path's first condition, `FastSets`), and
        // how many operations there are.
        let mut all_sets = true;
        let mut ops = 0usize;
        call_ops(m, |name, op| {
            all_sets &= matches!(op, CallOp::Set(_));
            if let Some(id) = self.index.name_id(name) {
                let (w, bit) = ((id / 64) as usize, 1u64 << (id % 64));
                if id < 128 && ops < 256 && marked[w] & bit == 0 {
                    marked[w] |= bit;
                    places[id as usize] = ops as u8;
                } else {
                    spilled.push((u64::from(id) << 32) | ops as u64);
                }
            }
            ops += 1;
        });
        // The place fits its 32 bits (a call's operations are bounded far below by the
        // request's size and `max_property_names`).
        debug_assert!(ops <= u32::MAX as usize);
        let n_marked = (marked[0].count_ones() + marked[1].count_ones()) as usize;
        let named = spilled.len() + n_marked;
        // Every operation's name registered.
        let all_named = named == ops;
        // `sorted`, and each registered name once, in name order (`only`: the loads' list).
        // Nearly every call: written into arrays in place and used from there (a push a name,
        // each checking whether the list had spilled, cost ~10 instructions more a name; and
        // moving the arrays into `SmallVec`s copied their 192 bytes).
        let (mut packed, mut ids) = ([0u64; 16], [0u32; 16]);
        let mut only_spilled = smallvec::SmallVec::<[u32; 16]>::new();
        let (sorted, only): (&[u64], &[u32]) = if spilled.is_empty() && n_marked <= 16 {
            let mut n = 0;
            for (w, mut bits) in marked.into_iter().enumerate() {
                while bits != 0 && n < 16 {
                    let id = w as u32 * 64 + bits.trailing_zeros();
                    bits &= bits - 1;
                    packed[n] = (u64::from(id) << 32) | u64::from(places[id as usize]);
                    ids[n] = id;
                    n += 1;
                }
            }
            (&packed[..n], &ids[..n])
        } else {
            for (w, mut bits) in marked.into_iter().enumerate() {
                while bits != 0 {
                    let id = w as u32 * 64 + bits.trailing_zeros();
                    bits &= bits - 1;
                    spilled.push((u64::from(id) << 32) | u64::from(places[id as usize]));
                }
            }
            spilled.sort_unstable();
            // Collected, then deduplicated in one pass (only names pushed unmarked can
            // repeat): a push a name and a look at its last one cost ~25 instructions a call
            // more.
            only_spilled.extend(spilled.iter().map(|&packed| (packed >> 32) as u32));
            only_spilled.dedup();
            (&spilled, &only_spilled)
        };
        debug_assert!(sorted.is_sorted() && sorted.len() == named);
        debug_assert!(only.is_sorted_by(|a, b| a < b), "each name once");
        // The profiles found hold the identifiers they were found by: read as the call's.
        let known = entries::profile::Known {
            user_id: uid,
            email: email.map(String::as_str),
            anonymous_id: anon,
        };
        for key in [by_user, by_email, by_anon].into_iter().flatten() {
            self.load(key, Some(only), known)?;
        }
        let found = |key: Option<u64>| {
            key.map(|k| Found {
                key: k,
                user_id: self
                    .spare
                    .profiles
                    .iter()
                    .find(|p| p.0 == k)
                    .and_then(|p| p.1.rec.ids.user_id.as_deref()),
            })
        };
        let mut plan = resolve(uid, found(by_user), found(by_email), found(by_anon));
        if self.index.journal.guard.enabled() {
            self.guard_moves(&mut plan, uid, &mut email, &mut anon, &mut quarantined);
        }

        let mut out = outcome(0, Status::Updated);
        let survivor = match plan.survivor {
            Some(k) => k,
            None => {
                let k = take_key(&mut self.next_key, "profile", self.store)?;
                // A record an earlier call left (its states' buffer), with no identifier of
                // the profile it held: the call attaches the new profile's.
                let mut rec = self.spare.pools.record();
                clear_ids(&mut rec.ids);
                rec.first_seen = ts;
                rec.updated_at = ts;
                rec.props.clear();
                // Room for the call's names: no reallocation as it sets them.
                rec.props.reserve(m.traits.len());
                self.spare.profiles.push((
                    k,
                    Work {
                        old: OldIds::New,
                        rec,
                        partial: false,
                        captured_all: false,
                        head: None,
                        hit: false,
                        full: true,
                        fast: None,
                        changed: self.spare.pools.names(),
                        stamped: true,
                        cached: None,
                        raw: RawStates::default(),
                        before: Before::default(),
                        merged: Vec::new(),
                        map: None,
                    },
                ));
                out.status = Status::Created;
                k
            }
        };
        out.key = survivor;
        out.quarantined = quarantined;

        // Protection: identifiers move instead of profiles merging.
        if let (Some(from), Some(email)) = (plan.take_email_from, email) {
            self.ids_mut(from).email = None;
            out.moved.push(Moved {
                identifier: "email".into(),
                value: email.clone(),
                from,
            });
        }
        if let (Some(from), Some(a)) = (plan.take_anonymous_id_from, anon) {
            self.ids_mut(from).anonymous_ids.retain(|x| x != a);
            out.moved.push(Moved {
                identifier: "anonymous_id".into(),
                value: a.to_string(),
                from,
            });
        }

        // Merges: the merged-away profiles go, their keys redirect to the survivor. Both
        // whole: every state merges.
        if !plan.merge.is_empty() {
            self.whole(survivor)?;
        }
        for &gone in &plan.merge {
            if self.position(gone).is_some() {
                self.whole(gone)?;
            }
            let Some(work) = self.remove(gone) else {
                continue;
            };
            let old = match work.old {
                OldIds::New => Ids::default(),
                OldIds::Same => work.rec.ids.clone(),
                OldIds::Saved(old) => *old,
            };
            if self.history.is_some() {
                // Merged away before the call changed any of its properties: its record with
                // the identifiers it had before the call (a move may have taken one).
                let was = ProfileRecord {
                    ids: old.clone(),
                    ..work.rec.clone()
                };
                #[cfg(debug_assertions)]
                if let Some(loaded) = &work.before.loaded {
                    debug_assert_eq!(&was, loaded, "merged-away profile as it was");
                }
                self.work(survivor).merged.push((gone, was));
            }
            let created_at = self.index.name_id("created_at");
            self.ids_mut(survivor);
            if self.history.is_some() {
                let work = self.work(survivor);
                if work.before.whole.is_none() && !matches!(work.old, OldIds::New) {
                    let mut whole = work.rec.clone();
                    if let OldIds::Saved(ids) = &work.old {
                        whole.ids = (**ids).clone();
                    }
                    (whole.first_seen, whole.updated_at) = work.before.times;
                    work.before.whole = Some(Box::new(whole));
                }
            }
            merge_into(self.rec(survivor), work.rec, created_at);
            self.work(survivor).full = true;
            self.push(
                EntryKind::Tombstone,
                gone,
                Vec::new(),
                Change::Tombstone { key: gone, old },
            );
            // A pooled buffer (the batch's entries go back to the pool): a new one of 8 bytes
            // would make a later entry written in it grow it.
            let mut to = self.spare.pools.buf();
            to.extend_from_slice(&entries::u64_bytes(survivor));
            self.push(
                EntryKind::Redirect,
                gone,
                to,
                Change::Redirect {
                    from: gone,
                    to: survivor,
                },
            );
            out.merged.push(gone);
            out.status = Status::Merged;
        }

        // Attach the call's identifiers (an email replaces the old one, SPEC 3.2.5).
        let max_anon = self.options.max_anonymous_ids.max(1);
        let have = &self.rec(survivor).ids;
        let attach = uid.is_some_and(|u| have.user_id.as_deref() != Some(u))
            || email.is_some_and(|e| have.email.as_ref() != Some(e))
            || anon.is_some_and(|a| !have.anonymous_ids.iter().any(|x| x == a))
            || have.anonymous_ids.len() > max_anon;
        if attach {
            // Into the buffers the record holds, or spare ones (`entries::wire::keep_string`).
            use crate::entries::wire::{keep_string, string_into, string_of};
            let ids = self.ids_mut(survivor);
            if let Some(u) = uid {
                string_into(u, &mut ids.user_id);
            }
            if let Some(e) = email {
                string_into(e, &mut ids.email);
            }
            if let Some(a) = anon
                && !ids.anonymous_ids.iter().any(|x| x == a)
            {
                ids.anonymous_ids.push(string_of(a));
            }
            let extra = ids.anonymous_ids.len().saturating_sub(max_anon);
            ids.anonymous_ids.drain(..extra).for_each(keep_string);
        }

        if let Some(company) = &m.company {
            self.upsert_company(company, ts)?;
            if self.rec(survivor).ids.company_id.as_ref() != Some(&company.id) {
                crate::entries::wire::string_into(
                    &company.id,
                    &mut self.ids_mut(survivor).company_id,
                );
            }
        }

        // The in-order fast path (`FastSets`): every operation a set of a registered name,
        // each once, on the one profile found, which the call neither merges nor re-identifies.
        let fast = all_sets
            && plan.merge.is_empty()
            && !attach
            && m.company.is_none()
            && out.moved.is_empty()
            && out.quarantined.is_empty()
            && all_named
            && only.len() == ops
            && self
                .position(survivor)
                .is_some_and(|i| self.fast_fits(i, only, ts));
        if fast {
            self.apply_fast(survivor, m, sorted);
            self.work(survivor).stamp(ts);
            return Ok(out);
        }
        // Off the fast path the states the loads left in their mapped records are captured
        // (`settle`), as the operations below take them.
        for item in self.spare.profiles.iter_mut() {
            settle(&mut item.1)?;
        }

        // Properties (SPEC 3.3, 3.5), in the call's order (`call_ops`).
        let order = self.order;
        // A new profile whose call only sets registered names, each once (W1's creates, a
        // fifth of its calls): its states are pushed in name order (`sorted`) instead of
        // inserted one at a time in the call's order, and nothing is saved for the undo step
        // (a new profile has no state before the call). The states, names changed and outcome
        // are the ones the loop below makes (tests/model_based.rs, tests/property_rules.rs).
        if out.status == Status::Created && all_sets && all_named && only.len() == ops {
            let work = self.work(survivor);
            debug_assert!(work.rec.props.is_empty() && matches!(work.old, OldIds::New));
            for &packed in sorted {
                let (id, nth) = ((packed >> 32) as u32, packed as u32 as usize);
                if let Some(v) = crate::profile::merge::set_of_place(m, nth) {
                    work.changed.push(id);
                    let mut state = PropState::default();
                    state.apply_set_ref(Some(v), ts, order);
                    work.rec.props.push((id, state));
                }
            }
            debug_assert!(work.rec.props.is_sorted_by(|a, b| a.0 < b.0));
            work.stamp(ts);
            return Ok(out);
        }
        let list_limits = ListLimits {
            max_items: self.options.max_list_items,
            max_bytes: self.options.max_value_bytes,
        };
        self.work(survivor).changed.reserve(ops);
        // Each operation's name number by its place (`None`: not registered yet).
        let mut numbered = smallvec::SmallVec::<[Option<u32>; 16]>::from_elem(None, ops);
        for &packed in sorted {
            numbered[packed as u32 as usize] = Some((packed >> 32) as u32);
        }
        // Applied as `call_ops` yields them: no per-call list of operations.
        let mut nth = 0;
        let mut failed = None;
        call_ops(m, |name, op| {
            let found = numbered.get(nth).copied().flatten();
            nth += 1;
            // A removal registers a new name too, so that it is remembered with its
            // timestamp: an older set arriving later must not bring the property back (SPEC
            // 3.3, order independence; tests/order_independence.rs).
            let Some(id) = found.or_else(|| self.name_id(name)) else {
                // Over the name limit. A removal loses nothing there (no profile can hold the
                // name, and a later set of it is refused too), so it is not reported.
                if !matches!(op, CallOp::Unset) {
                    out.ignored.push(name.to_string());
                }
                return;
            };
            let keep_before = self.history.is_some();
            let work = self.work(survivor);
            work.changed.push(id);
            let save = keep_before
                && work.before.whole.is_none()
                && !matches!(work.old, OldIds::New)
                && !work.before.props.iter().any(|(n, _)| *n == id)
                && !work.before.raw.iter().any(|(n, _)| *n == id);
            let Work {
                rec, raw, before, ..
            } = work;
            let writes = matches!(op, CallOp::Set(_) | CallOp::Unset);
            let captured = raw.take(id);
            let (state, found) = rec.state_mut_found(id);
            match captured {
                // Captured as bytes and overwritten whole: `state` is the empty one, and the
                // bytes are the undo step's.
                Some(c) if writes && write_replaces(Some(c.stamp), ts, order) => {
                    if save {
                        before.raw.push((id, c));
                    }
                }
                captured => {
                    let found = found || captured.is_some();
                    if let Some(c) = captured {
                        match raw.decode(&c) {
                            Ok(decoded) => *state = decoded,
                            Err(e) => {
                                // Bytes this process read and checked: only a bug gets here.
                                failed.get_or_insert(Error::Corruption {
                                    file: Default::default(),
                                    offset: 0,
                                    reason: format!("a captured state of profile {survivor}: {e}"),
                                });
                                return;
                            }
                        }
                    }
                    if save {
                        let was = found.then(|| {
                            if writes {
                                // Taken out when the write does not depend on it (no copy).
                                state.before_write(ts, order)
                            } else {
                                state.clone()
                            }
                        });
                        before.props.push((id, was));
                    }
                }
            }
            let applied = match op {
                CallOp::Set(v) => {
                    state.apply_set_ref(Some(v), ts, order);
                    Applied::Taken
                }
                CallOp::Unset => {
                    state.apply_set_ref(None, ts, order);
                    Applied::Taken
                }
                CallOp::SetOnce(v) => {
                    state.apply_set_once_ref(v, ts, order);
                    Applied::Taken
                }
                CallOp::Add(n) => state.apply_owned(PropOp::Add(n), ts, order),
                CallOp::List(list) => state.apply_list(list.clone(), ts, order, list_limits),
            };
            if applied != Applied::Taken {
                out.ignored.push(name.to_string());
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        self.work(survivor).stamp(ts);
        out.ignored.sort();
        out.ignored.dedup();
        Ok(out)
    }

    /// Whether the fast path fits the loaded profile `i` (of `self.spare.profiles`) for a call that
    /// sets the names `only` (sorted, each once) at `ts`: loaded partially and not changed
    /// whole, and each name's state before a captured plain state older than the call or
    /// absent (not one built into `rec`).
    fn fast_fits(&self, i: usize, only: &[u32], ts: Timestamp) -> bool {
        let work = &self.spare.profiles[i].1;
        work.partial
            && matches!(work.old, OldIds::Same)
            && !work.full
            && work.fast.is_none()
            && work.before.whole.is_none()
            && work.merged.is_empty()
            && {
                // The captured states: in `raw`, or left in the mapped record (`settle`).
                let props = &work.rec.props;
                let fits = match work.map.as_deref().filter(|m| m.pending) {
                    Some(map) => {
                        let state = |j| map.found_at(j);
                        fits_walk(only, map.n_found(), state, props, ts, self.order)
                    }
                    None => {
                        let states = &work.raw.states;
                        let state = |j: usize| (states[j].0, states[j].1.stamp);
                        fits_walk(only, states.len(), state, props, ts, self.order)
                    }
                };
                #[cfg(debug_assertions)]
                {
                    let states: Vec<(u32, Stamp)> = match work.map.as_deref() {
                        Some(map) if map.pending => map.found().collect(),
                        _ => work.raw.states.iter().map(|(n, r)| (*n, r.stamp)).collect(),
                    };
                    debug_assert_eq!(
                        fits,
                        fits_by_bisection(only, &states, props, ts, self.order),
                        "the walk decides as the bisections do"
                    );
                }
                fits
            }
    }

    /// Apply a call on the fast path (`FastSets`; [`Builder::fast_fits`] said it fits): each
    /// set's value kept as bytes, the state before saved for the undo step as the slow path
    /// saves it (the captured bytes, or "absent").
    ///
    /// `sorted`: the call's names in name order, each with its operation's place in
    /// `call_ops`'s order (`id << 32 | place`); the sets are taken in that order, so that the
    /// fast sets, the names changed and the states before come out sorted (no sort of each).
    fn apply_fast(&mut self, key: u64, m: &Identify, sorted: &[u64]) {
        let keep_before = self.history.is_some();
        let mut fast = self.spare.pools.fast();
        let Some(i) = self.position(key) else {
            return;
        };
        // Every operation is a set here: the `nth` is the `nth` trait's (`set_of_place`), so
        // no list of the operations is built (a second walk over them and a push each: ~400
        // instructions a fast call).
        #[cfg(debug_assertions)]
        {
            let mut nth = 0;
            call_ops(m, |_, op| {
                let set = match op {
                    CallOp::Set(v) => Some(v),
                    _ => None,
                };
                debug_assert_eq!(set, crate::profile::merge::set_of_place(m, nth), "a set");
                nth += 1;
            });
        }
        let Work {
            raw,
            changed,
            before,
            map,
            ..
        } = &mut self.spare.profiles[i].1;
        // The names come in increasing order, each once: their captured states are taken in
        // one walk (`take_ascending`).
        let sets = sorted.iter().filter_map(|&packed| {
            let (id, nth) = ((packed >> 32) as u32, packed as u32);
            crate::profile::merge::set_of_place(m, nth as usize).map(|v| (id, v))
        });
        if let Some(map) = map.as_deref().filter(|m| m.pending) {
            // The states before left in the mapped record: the call sets every name the map
            // found (they are the call's names the profile had), so those are the states
            // before as they stand, which the history step reads from the record; only the
            // names the profile did not have are listed.
            {
                let mut found = map.found().map(|(n, _)| n).peekable();
                for (id, v) in sets {
                    changed.push(id);
                    let had = found.next_if_eq(&id).is_some();
                    if keep_before && !had {
                        before.props.push((id, None));
                    }
                    let value = entries::profile::put_set_item(id, v, &mut fast.bytes);
                    fast.sets.push((id, value.start as u32..value.end as u32));
                }
                debug_assert!(found.next().is_none(), "every state found, set");
            }
            before.mapped = true;
            let work = &mut self.spare.profiles[i].1;
            debug_assert!(fast.sets.is_sorted_by_key(|s| s.0));
            work.fast = Some(fast);
            return;
        }
        raw.take_ascending(
            sets,
            |&(id, _)| id,
            |(id, v), captured| {
                changed.push(id);
                if keep_before {
                    match captured {
                        Some(c) => before.raw.push((id, c)),
                        None => before.props.push((id, None)),
                    }
                }
                let value = entries::profile::put_set_item(id, v, &mut fast.bytes);
                fast.sets.push((id, value.start as u32..value.end as u32));
            },
        );
        let work = &mut self.spare.profiles[i].1;
        debug_assert!(fast.sets.is_sorted_by_key(|s| s.0));
        work.fast = Some(fast);
    }

    /// The guard's check of the plan's moves (issue 16, `crate::journal::guard`): each move
    /// links its identifier to the two user ids; a move that would link more than the limit
    /// quarantines the identifier instead, and the call goes on without it.
    fn guard_moves<'m>(
        &mut self,
        plan: &mut crate::profile::resolve::Plan,
        uid: Option<&str>,
        email: &mut Option<&'m String>,
        anon: &mut Option<&'m str>,
        quarantined: &mut Vec<String>,
    ) {
        let user_of = |b: &Self, key: u64| {
            b.position(key)
                .and_then(|i| b.spare.profiles[i].1.rec.ids.user_id.clone())
        };
        let moves = [
            (plan.take_email_from, "email", email.map(String::as_str)),
            (plan.take_anonymous_id_from, "anonymous_id", *anon),
        ];
        // Most calls move nothing: no user id copied for them.
        if !moves
            .iter()
            .any(|(from, _, value)| from.is_some() && value.is_some())
        {
            return;
        }
        let to = uid
            .map(str::to_string)
            .or_else(|| plan.survivor.and_then(|k| user_of(self, k)));
        for (i, (from, kind, value)) in moves.into_iter().enumerate() {
            let (Some(from), Some(value)) = (from, value) else {
                continue;
            };
            let from_user = user_of(self, from);
            let (quarantine, writes) = crate::journal::guard::on_move(
                self.index,
                kind,
                value,
                from_user.as_deref(),
                to.as_deref(),
            );
            for (k, id, data, change) in writes {
                self.push(k, id, data, Change::Guard(change));
            }
            if quarantine {
                quarantined.push(format!("{kind}:{value}"));
                if i == 0 {
                    plan.take_email_from = None;
                    *email = None;
                } else {
                    plan.take_anonymous_id_from = None;
                    *anon = None;
                }
            }
        }
    }

    /// Upsert a company's own properties. Returns whether it was created.
    fn upsert_company(&mut self, company: &CompanyRef, ts: Timestamp) -> Result<bool> {
        let mut created = false;
        let companies = self.companies.get_or_insert_with(Default::default);
        if !companies.contains_key(&company.id) {
            let (key, rec) = match self.index.company(&company.id) {
                Some(CompanyInfo {
                    key,
                    location: Some(at),
                    ..
                }) => (key, read_company(self.store, at)?),
                Some(slot) => (
                    slot.key,
                    CompanyRecord {
                        id: company.id.clone(),
                        props: Vec::new(),
                    },
                ),
                None => {
                    created = true;
                    let key = take_key(&mut self.next_company_key, "company", self.store)?;
                    (
                        key,
                        CompanyRecord {
                            id: company.id.clone(),
                            props: Vec::new(),
                        },
                    )
                }
            };
            companies.insert(company.id.clone(), (key, rec));
        }
        let order = self.order;
        let rec = &mut companies
            .get_mut(&company.id)
            .expect("company inserted above")
            .1;
        for (name, value) in &company.traits {
            let op = match value {
                Some(v) => PropOp::Set(v.clone()),
                None => PropOp::Unset,
            };
            let state = match rec.props.binary_search_by(|p| p.0.as_str().cmp(name)) {
                Ok(i) => &mut rec.props[i].1,
                Err(i) => {
                    rec.props
                        .insert(i, (name.to_string(), PropState::default()));
                    &mut rec.props[i].1
                }
            };
            state.apply_owned(op, ts, order);
        }
        Ok(created)
    }

    /// Delete a profile (SPEC 3.6), optionally suppressing its identifiers.
    pub fn delete(&mut self, key: u64, suppress: bool) -> Result<Outcome> {
        self.load(key, None, Default::default())?;
        let Some(Work { rec, .. }) = self.remove(key) else {
            return Ok(outcome(key, Status::Unchanged));
        };
        if suppress {
            let ids = &rec.ids;
            let mut hashes = Vec::new();
            if let Some(u) = &ids.user_id {
                hashes.push(suppression_hash("user_id", u));
            }
            if let Some(e) = &ids.email {
                hashes.push(suppression_hash("email", &normalize_email(e)));
            }
            for a in &ids.anonymous_ids {
                hashes.push(suppression_hash("anonymous_id", a));
            }
            for hash in hashes {
                let (id, data) = entries::split_hash(hash);
                self.push(
                    EntryKind::Suppress,
                    id,
                    data.to_vec(),
                    Change::Suppress { hash },
                );
            }
        }
        self.push(
            EntryKind::Tombstone,
            key,
            Vec::new(),
            Change::Tombstone { key, old: rec.ids },
        );
        let next = self.next_key.max(key.saturating_add(1));
        self.push(
            EntryKind::NextKey,
            0,
            entries::u64_bytes(next).to_vec(),
            Change::NextKey { next },
        );
        Ok(outcome(key, Status::Updated))
    }

    /// Detach an anonymous id from its profile (SPEC 3.6).
    pub fn unlink(&mut self, key: u64, anonymous_id: &str) -> Result<Outcome> {
        if let Some(h) = self.history.as_mut() {
            h.kind = crate::entries::history::StepKind::Identifiers;
        }
        self.load(key, None, Default::default())?;
        self.ids_mut(key)
            .anonymous_ids
            .retain(|a| a != anonymous_id);
        Ok(outcome(key, Status::Updated))
    }
}

fn outcome(key: u64, status: Status) -> Outcome {
    Outcome {
        key,
        status,
        merged: Vec::new(),
        moved: Vec::new(),
        ignored: Vec::new(),
        quarantined: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sorted names, each once, from a small range (so that lists share names).
    fn sorted_names() -> impl proptest::strategy::Strategy<Value = Vec<u32>> {
        use proptest::strategy::Strategy;
        // Names near `u32::MAX` too: the walk's end marker past a list is `u32::MAX`.
        let name = proptest::prop_oneof![4 => 0u32..24, 1 => (u32::MAX - 2)..=u32::MAX];
        proptest::collection::btree_set(name, 0..12).prop_map(|s| s.into_iter().collect())
    }

    proptest::proptest! {
        /// The walk decides as a bisection of each list for each name (the form it replaces):
        /// captured states of names in `only` and not, older than the write, as old and
        /// newer, built states with and without a captured one.
        #[test]
        fn fits_walk_decides_as_the_bisections(
            only in sorted_names(),
            captured in sorted_names(),
            at in proptest::collection::vec(999i64..1_002, 12),
            built_names in sorted_names(),
        ) {
            let (ts, order) = (Timestamp(1_000), 7);
            let states: Vec<(u32, Stamp)> = captured
                .iter()
                .zip(&at)
                .map(|(&n, &at)| (n, Stamp(Timestamp(at), order)))
                .collect();
            let props: Vec<(u32, PropState)> =
                built_names.iter().map(|&n| (n, PropState::default())).collect();
            let walked = fits_walk(&only, states.len(), |j| states[j], &props, ts, order);
            let bisected = fits_by_bisection(&only, &states, &props, ts, order);
            proptest::prop_assert_eq!(walked, bisected);
        }
    }

    /// The commit's tests of the three kinds nearly every call makes, and its `match` of the
    /// rest (`commit_other`), change the index as each change's `Update` says: every kind the
    /// write path makes for a plain call, a messageId's note with and without the window's
    /// probe, in an order where the kind changes from each change to the next.
    #[test]
    fn commit_applies_each_kind() {
        let loc = |i: u32| Location {
            segment: 1,
            offset: 100 * i,
            len: 10,
        };
        let ids = Ids {
            user_id: Some("a".into()),
            ..Ids::default()
        };
        let (probed, unprobed) = ((7u128 << 64) | 3, (9u128 << 64) | 5);
        let changes = vec![
            Change::Profile {
                key: 1,
                ids: Some((None, After::Ids(Box::new(ids)))),
            },
            Change::History { key: 1, arrival: 5 },
            Change::Dedupe { hash: probed },
            Change::Profile { key: 2, ids: None },
            Change::Dedupe { hash: unprobed },
            Change::Name {
                id: 0,
                name: "x".into(),
            },
            Change::NextKey { next: 9 },
            Change::Redirect { from: 3, to: 1 },
            Change::History { key: 2, arrival: 6 },
        ];
        let locations: Vec<Location> = (0..changes.len() as u32).map(loc).collect();
        let mut index = Index::new(16);
        let absent = index.message_absent(probed);
        assert!(absent.is_some());
        let mut changes: Changes = changes.into();
        commit_written(&mut index, &mut changes, &locations, &[], absent);
        assert!(changes.is_empty());
        assert_eq!(index.location(1), Some(loc(0)));
        assert_eq!(index.location(2), Some(loc(3)));
        assert_eq!(index.user_key("a"), Some(1));
        assert_eq!(index.journal.locations(1).unwrap(), vec![loc(1)]);
        assert_eq!(index.journal.locations(2).unwrap(), vec![loc(8)]);
        assert!(index.message_absent(probed).is_none());
        assert!(index.message_absent(unprobed).is_none());
        assert_eq!(index.name_id("x"), Some(0));
        assert!(index.next_key() >= 9);
        assert_eq!(index.resolve_key(3), Some(1));
    }

    /// What `Works::clear` and `Changes::clear` forget (not drop) owns no heap memory: each
    /// field that can own some, given a buffer, makes it held.
    #[test]
    fn forgotten_holds_nothing() {
        assert!(Work::empty().holds_nothing());
        let held: [fn(&mut Work); 14] = [
            |w| w.old = OldIds::Saved(Box::default()),
            |w| w.raw.states.reserve(1),
            |w| w.before.whole = Some(Box::default()),
            |w| w.rec.ids.user_id = Some(String::new()),
            |w| w.rec.ids.email = Some(String::new()),
            |w| w.rec.ids.company_id = Some(String::new()),
            |w| w.rec.ids.anonymous_ids.reserve(1),
            |w| w.rec.props.reserve(1),
            |w| w.raw.bytes.reserve(1),
            |w| w.changed.reserve(1),
            |w| w.before.props.reserve(1),
            |w| w.before.raw.reserve(1),
            |w| w.merged.reserve(1),
            |w| w.map = Some(Box::new(FullMap::new())),
        ];
        for (i, hold) in held.iter().enumerate() {
            let mut w = Work::empty();
            hold(&mut w);
            assert!(!w.holds_nothing(), "field {i}");
            let mut works = Works::default();
            works.push((1, w));
            works.clear();
            assert!(works.is_empty());
        }
        assert!(Change::Profile { key: 1, ids: None }.holds_nothing());
        assert!(
            Change::Profile {
                key: 1,
                ids: Some((None, After::Written(0)))
            }
            .holds_nothing()
        );
        assert!(
            !Change::Profile {
                key: 1,
                ids: Some((Some(Box::default()), After::Written(0)))
            }
            .holds_nothing()
        );
        assert!(
            !Change::Name {
                id: 1,
                name: String::new()
            }
            .holds_nothing()
        );
        let mut changes = Changes::default();
        changes.push(Change::Name {
            id: 1,
            name: "x".into(),
        });
        changes.push(Change::NextKey { next: 2 });
        changes.clear();
        assert!(changes.is_empty());
    }
}
