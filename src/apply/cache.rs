//! The writer cache: recently written profiles, kept as the encoded records of their chains,
//! so that the next call on a profile reads no record from the log.
//!
//! A cached profile is the bytes of its records, a full record and the deltas written after
//! it, exactly as the calls encoded them for the log ([`Chain`]); a call on it folds them in
//! memory as a read from the log would (`entries::profile::Fold`), and appends the delta it
//! writes. A W1 profile's chain takes ~0.5-1.3 KB this way, against ~3 KB decoded (~40
//! property states, each a few allocations): the same budget holds three to five times the
//! profiles, and what the budget counts is what the process holds (one allocation each).
//! (docs/architecture.md, "The writer cache".)

mod doorkeeper;
mod keys;

use super::{RecordCounts, Written};
use crate::entries::chain::Forwards;
use crate::entries::profile::{self, Fold, MAX_CHAIN_DEPTH, ProfileRecord};
use crate::entries::raw::RawStates;
use crate::entries::wire::{DecodeError, Decoded};
use crate::storage::Location;

/// Budgets from which a full cache admits a profile only at its second try
/// ([`doorkeeper`]); a smaller cache (tests' few profiles) admits every profile.
const ADMISSION_FROM: usize = 1 << 20;

/// Bytes of budget for each key the doorkeeper remembers in a generation: about a tenth of
/// the profiles the budget holds (W1's take ~750 bytes each, slot included), the size that
/// kept the most hits on W1 (docs/architecture.md, "Which profiles the writer cache keeps").
const BUDGET_PER_REFUSED_KEY: usize = 8192;

/// Most keys a generation of the doorkeeper holds (its tables then take ~2.4 MB, made at
/// open): a budget of 512 MiB or more, meant to hold every profile, gets no larger one.
const MAX_GENERATION: usize = 1 << 16;

/// Bytes a cached profile costs beyond its records' buffer: its slot takes this (tested).
/// The slot's entry in the table of slots by key is not counted: 4 bytes a key ever kept,
/// cached or not, a cost of the key space like the index's ([`keys`]).
const CACHE_SLOT_BYTES: usize = 56;

/// Bytes a slot's boxed `ChainAt::through` costs besides the slot ([`Slot::through`]).
const THROUGH_BYTES: usize = 32;

/// Most records a cached chain holds: past it the writer caches its profile as one full
/// record, encoded anew (the log's chain is usually shorter, `Options::chain_limit`; the
/// cached one may run longer after a miss or a compaction reset where the log's stands).
pub(crate) const CACHED_CHAIN_RECORDS: u32 = 8;

/// What an allocation of `n` bytes takes from the allocator (glibc's malloc: an 8-byte
/// header, 16-byte granules, 32 bytes at least; mimalloc's size classes, in the `profiledb`
/// binary, are coarser above 128 bytes), so that the budget counts what the process holds,
/// not only what the records ask for.
pub(super) fn alloc_bytes(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n.saturating_add(8 + 15) & !15).max(32)
    }
}

/// Spare bytes a cached chain's buffer gets when it grows: room for about two W1 deltas.
const CHAIN_SPARE: usize = 256;

/// The encoded records of one profile's chain, oldest (a full record) first, each followed
/// by its length (u32, little-endian), so that a fold reads them newest first from the end.
/// A full record the writer encoded itself also has its states' lengths
/// (`entries::profile::StateLens`) between it and its length, followed by their count (u32),
/// and its length word has [`LENS_BIT`] set.
pub(crate) struct Chain {
    /// The records (`len` bytes), then spare bytes (zeros) to the end: room the next delta or
    /// full record fills without an allocation. A boxed slice and a `u32` length rather than
    /// a `Vec`: 8 bytes less in each of the cache's slots ([`CACHE_SLOT_BYTES`]).
    buf: Box<[u8]>,
    len: u32,
    /// At most `MAX_CHAIN_DEPTH + 1` (a read from the log walks no more).
    records: u16,
    /// Read from the log by a miss, whose fold did not check the UTF-8 of the strings it
    /// stepped over (`entries::wire::Utf8::Kept`): a fold of it checks those it keeps as bytes
    /// (they may be copied into a history step), not only those it builds.
    from_log: bool,
}

/// A record of a cached chain: where it starts in the chain's bytes, its bytes, and its state
/// lengths if it has them ([`Chain::record_before`]).
type CachedRecord<'a> = (usize, &'a [u8], Option<profile::StateLens<'a>>);

/// Set in a full record's length word when its state lengths sit before it.
const LENS_BIT: u32 = 1 << 31;

impl Chain {
    /// A chain of one full record (`data`: a profile record as `entries::encode_profile`
    /// makes it), without its state lengths (as a chain read from the log starts).
    #[cfg(test)]
    pub fn full(data: &[u8]) -> Chain {
        let mut bytes = Vec::with_capacity(data.len() + 4 + CHAIN_SPARE);
        bytes.extend_from_slice(data);
        bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
        Chain::of(bytes, 1, false)
    }

    /// A chain of `records` in `bytes`, its buffer whole (the spare capacity zeroed).
    fn of(mut bytes: Vec<u8>, records: u16, from_log: bool) -> Chain {
        let len = bytes.len();
        debug_assert!(u32::try_from(len).is_ok(), "a cached chain of {len} bytes");
        bytes.resize(bytes.capacity(), 0);
        Chain {
            buf: bytes.into_boxed_slice(),
            len: len as u32,
            records,
            from_log,
        }
    }

    /// The chain's buffer as a `Vec` of its records, for adding to (the spare bytes its
    /// capacity).
    fn into_vec(self) -> Vec<u8> {
        let mut bytes = Vec::from(self.buf);
        bytes.truncate(self.len as usize);
        bytes
    }

    /// The records.
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// A chain of one full record and its state lengths (`data` and `lens` as
    /// `entries::encode_profile_measured` or `entries::profile::splice_full` make them), in a
    /// buffer of the size (rounded up to what the budget counts for it): the next call on the
    /// profile writes its full record anew (`splice_full`) rather than add to this one. In
    /// the buffer of `old`, the chain it replaces: kept when it
    /// has the room and at most an eighth more, else resized to the size, rounded as above (a
    /// `realloc`, often in place); a buffer of its own when there is no old chain. The cache's
    /// budget counts capacity.
    pub fn full_measured_in(old: Option<Chain>, data: &[u8], lens: &[u8]) -> Chain {
        let need = data.len() + lens.len() + 8;
        // As many bytes as the budget counts for `need` (`alloc_bytes`: whole 16-byte granules
        // with an 8-byte header): the next record, often a few bytes longer, then fits, at no
        // cost to the budget.
        let room = alloc_bytes(need) - 8;
        let mut bytes = match old {
            Some(old) => {
                let mut bytes = old.into_vec();
                bytes.clear();
                if bytes.capacity() < need {
                    // A `realloc`: in place when the allocator's block has the room (its
                    // size classes are coarser than 16 bytes), else a new block.
                    bytes.reserve_exact(room);
                } else if bytes.capacity() > need + need / 8 {
                    bytes.shrink_to(room);
                }
                bytes
            }
            _ => Vec::with_capacity(room),
        };
        debug_assert_eq!(
            alloc_bytes(room),
            alloc_bytes(need),
            "the budget's count of the record"
        );
        bytes.extend_from_slice(data);
        Self::put_lens(&mut bytes, data.len(), lens);
        Chain::of(bytes, 1, false)
    }

    /// After a full record of `len` bytes: its state lengths, their count, its length word.
    fn put_lens(bytes: &mut Vec<u8>, len: usize, lens: &[u8]) {
        bytes.extend_from_slice(lens);
        bytes.extend_from_slice(&(lens.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(len as u32 | LENS_BIT).to_le_bytes());
    }

    /// The chain `entries::chain::read_profile_keeping` read: its records newest first, each
    /// followed by its length. `None` if they are not that (a bug: the caller reads again).
    pub fn from_newest_first(read: &[u8]) -> Option<Chain> {
        u32::try_from(read.len()).ok()?;
        let mut bytes = Vec::with_capacity(read.len() + CHAIN_SPARE);
        let mut records = 0u16;
        let mut end = read.len();
        while end > 0 {
            let len_at = end.checked_sub(4)?;
            let len_bytes = &read[len_at..end];
            let len = u32::from_le_bytes(len_bytes.try_into().ok()?) as usize;
            let record = &read[len_at.checked_sub(len)?..len_at];
            bytes.extend_from_slice(record);
            bytes.extend_from_slice(len_bytes);
            records = records.checked_add(1)?;
            end = len_at - len;
        }
        (records > 0).then(|| Chain::of(bytes, records, true))
    }

    /// Add the delta written after the chain's newest record.
    pub fn push_delta(&mut self, data: &[u8]) {
        let need = data.len() + 4;
        let (len, end) = (self.len as usize, self.len as usize + need);
        if let Some(room) = self.buf.get_mut(len..end) {
            // In place: no allocation (a delta of the fast path, usually).
            let (record, word) = room.split_at_mut(data.len());
            record.copy_from_slice(data);
            word.copy_from_slice(&(data.len() as u32).to_le_bytes());
            debug_assert!(u32::try_from(end).is_ok());
            self.len = end as u32;
            self.records = self.records.saturating_add(1);
            return;
        }
        let records = self.records.saturating_add(1);
        let from_log = self.from_log;
        let mut bytes = std::mem::replace(self, Chain::of(Vec::new(), 0, false)).into_vec();
        bytes.reserve_exact(need + CHAIN_SPARE);
        bytes.extend_from_slice(data);
        bytes.extend_from_slice(&(data.len() as u32).to_le_bytes());
        *self = Chain::of(bytes, records, from_log);
    }

    /// The chain's one full record and its state lengths, when it is that (a record this
    /// process encoded, `Chain::full_measured_in`).
    pub fn single_full(&self) -> Option<(&[u8], &[u8])> {
        if self.records != 1 || self.from_log {
            return None;
        }
        match self.record_before(self.len as usize) {
            Ok((0, record, Some(lens))) => Some((record, lens)),
            _ => None,
        }
    }

    /// The chain's whole buffer: its records from the start, then what follows them (a
    /// single full record's state lengths, the length words, spare bytes). What a splice of
    /// the record may read past its end (`entries::profile::splice_mapped`'s `padded`).
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// Records held.
    pub fn records(&self) -> u32 {
        u32::from(self.records)
    }

    /// What the process holds for the chain's buffer.
    fn heap_bytes(&self) -> usize {
        alloc_bytes(self.buf.len())
    }

    /// The profile as of the newest record: the records folded newest first, as a read from
    /// the log folds them. The links the deltas carry are not followed (the records are the
    /// ones before it here, whatever the log holds since a compaction).
    pub fn decode(&self) -> Decoded<ProfileRecord> {
        self.fold(Fold::default().checked_before())
    }

    /// [`Chain::decode`] into `into`'s buffers (what it holds is replaced).
    pub fn decode_into(&self, into: ProfileRecord) -> Decoded<ProfileRecord> {
        let mut fold = Fold::default().checked_before();
        fold.reuse(into);
        self.fold_with(&mut fold)
    }

    /// [`Chain::decode`] with the states of the names in `only` (sorted) and no others: the
    /// identifiers and times are whole (`entries::profile::Fold::only`).
    #[cfg(test)]
    pub fn decode_only(&self, only: &[u32]) -> Decoded<ProfileRecord> {
        self.fold(Fold::only(only).checked_before())
    }

    /// [`Chain::decode_only`], capturing the plain states of those names into `raw` as bytes
    /// instead of building them (`entries::profile::Fold::only_capturing`; `raw` is emptied
    /// first).
    /// `into`: a record whose buffers the result reuses.
    pub fn decode_capturing(
        &self,
        only: &[u32],
        raw: &mut RawStates,
        into: ProfileRecord,
    ) -> Decoded<ProfileRecord> {
        let fold = Fold::only_capturing(only, std::mem::take(raw));
        self.capture(fold, raw, into)
    }

    /// The profile whole, each state that is a plain set or removal captured into `raw` as
    /// bytes instead of built (`entries::profile::Fold::capturing`; `raw` is emptied first):
    /// what a call that writes the profile's full record from its states' bytes loads
    /// (`entries::profile::put_full_parts`).
    pub fn decode_capturing_all(
        &self,
        raw: &mut RawStates,
        into: ProfileRecord,
    ) -> Decoded<ProfileRecord> {
        self.capture(Fold::capturing(std::mem::take(raw)), raw, into)
    }

    /// Fold the chain with `fold`, which captures into the `RawStates` it took from `raw`,
    /// and give them back.
    fn capture(
        &self,
        fold: Fold,
        raw: &mut RawStates,
        into: ProfileRecord,
    ) -> Decoded<ProfileRecord> {
        let mut fold = if self.from_log {
            fold.checking_kept()
        } else {
            fold.checked_before()
        };
        fold.reuse(into);
        let rec = self.fold_with(&mut fold);
        if let Some(captured) = fold.take_raw() {
            *raw = captured;
        }
        rec
    }

    fn fold(&self, mut fold: Fold) -> Decoded<ProfileRecord> {
        self.fold_with(&mut fold)
    }

    /// The record that ends at `end` (a record's length word, after its state lengths if it
    /// has them): where it starts, its bytes and its state lengths.
    fn record_before(&self, end: usize) -> Decoded<CachedRecord<'_>> {
        let broken = |reason| DecodeError { at: end, reason };
        let all = self.bytes();
        let word = |at: usize| {
            let from = at.checked_sub(4).ok_or(broken("cached chain ends early"))?;
            let bytes = all[from..at]
                .try_into()
                .map_err(|_| broken("cached chain length"))?;
            Ok::<_, DecodeError>((from, u32::from_le_bytes(bytes)))
        };
        let (mut len_at, len) = word(end)?;
        let lens = if len & LENS_BIT != 0 {
            let (count_at, count) = word(len_at)?;
            let from = count_at
                .checked_sub(count as usize)
                .ok_or(broken("cached state lengths longer than the chain"))?;
            len_at = from;
            Some(&all[from..count_at])
        } else {
            None
        };
        let start = len_at
            .checked_sub((len & !LENS_BIT) as usize)
            .ok_or(broken("cached record longer than its chain"))?;
        Ok((start, &all[start..len_at], lens))
    }

    fn fold_with(&self, fold: &mut Fold) -> Decoded<ProfileRecord> {
        let mut end = self.len as usize;
        loop {
            let (start, record, lens) = self.record_before(end)?;
            if profile::is_delta(record) {
                fold.delta(record)?;
                end = start;
            } else {
                return fold.full_with_lens(record, lens);
            }
        }
    }
}

/// Where a profile's newest record stands in its chain.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChainAt {
    /// The depth its record carries (0: a full record); the next delta carries one more.
    pub link: u32,
    /// The deltas a read walks from it down to the full record: `link`, less those a
    /// forward of the last compaction skips. `Options::chain_limit` bounds this.
    pub walked: u32,
    /// The record in a segment a running compaction rewrites that its chain links to, and
    /// that record's depth: set by the delta that linked to it, kept by the deltas after it.
    /// At the compaction's switch `walked` drops to the deltas above it.
    pub through: Option<(Location, u32)>,
}

impl ChainAt {
    /// Whether a profile's next record must be full: a read walks at most `chain_limit`
    /// records (one full and `chain_limit - 1` deltas), and the depth a delta carries stays
    /// within what the decoder accepts.
    pub fn next_is_full(&self, chain_limit: u32) -> bool {
        self.walked + 2 > chain_limit || self.link + 1 > MAX_CHAIN_DEPTH
    }

    /// Read from the log: `link` and `walked` as `entries::chain::read_profile` gives them.
    pub fn read(link: u32, walked: u32) -> ChainAt {
        ChainAt {
            link,
            walked,
            through: None,
        }
    }
}

/// Most bytes of a cached chain [`ProfileCache::touch_chain`] loads: a W1 profile's full
/// record, ~40 properties, is ~700-900 bytes.
const TOUCHED_CHAIN_BYTES: usize = 2048;

/// Profiles recently written, as the encoded records of their chains ([`Chain`]), so that the
/// next call on a hot profile reads nothing from the log. Only writers use it, under the index
/// write lock. An entry is used only while the index still points at the location it was
/// written to.
///
/// Bounded in bytes (`Options::profile_cache_bytes`: each chain's buffer and a slot, and the
/// doorkeeper's keys); evicts by CLOCK (second chance): a profile the writers came back to
/// since the hand last passed it is skipped once. When full (from [`ADMISSION_FROM`]), it
/// keeps a profile that did not come from it (a new one, or a miss) only at the profile's
/// second try lately ([`doorkeeper`]): otherwise it is not kept, and the one the hand would
/// have evicted stays.
pub(crate) struct ProfileCache {
    slots: Vec<Slot>,
    /// The slot of each cached (or reserved) profile.
    keys: keys::SlotsByKey,
    free: Vec<usize>,
    hand: usize,
    bytes: usize,
    budget: usize,
    /// Segments a running compaction is rewriting (sorted). A delta may link into them: the
    /// record it links to goes into `Index::linked`, and the compaction copies it (folded)
    /// even when it is no longer the profile's newest, then forwards the link to the copy.
    pub compacting: Vec<u32>,
    /// The running compaction is switching in: its forwards are written (or being written)
    /// and its manifest may be durable, so a delta may no longer link into `compacting` (a
    /// crash would complete the compaction without a forward for the link): the call writes
    /// a full record instead.
    pub switching: bool,
    /// Profile records written, by form and reason (`Stats::profile_records`).
    pub records: RecordCounts,
    /// Loads of a profile that found it here, and loads that read it from the log.
    pub hits: u64,
    /// See `hits`.
    pub misses: u64,
    /// The profiles refused lately (`None` below [`ADMISSION_FROM`]).
    doorkeeper: Option<doorkeeper::Doorkeeper>,
    /// Profiles not kept: refused by the doorkeeper.
    pub refused: u64,
}

/// A cached profile, or a reservation (no chain). What the budget counts for it is derived
/// ([`Slot::bytes`]): its chain does not change while it is here.
struct Slot {
    key: u64,
    chain: Option<Chain>,
    loc: Location,
    /// `ChainAt::link` and `ChainAt::walked`: at most `MAX_CHAIN_DEPTH` (an insert of more
    /// keeps nothing).
    link: u8,
    walked: u8,
    referenced: bool,
    /// `ChainAt::through`, boxed: set only while a compaction runs, by the deltas that link
    /// into it (~a fifth of them), 20 bytes inline in every slot. Only a slot with a chain
    /// has one.
    through: Option<Box<(Location, u32)>>,
}

impl Slot {
    /// Where its profile's newest record stands.
    fn at(&self) -> ChainAt {
        ChainAt {
            link: u32::from(self.link),
            walked: u32::from(self.walked),
            through: self.through.as_deref().copied(),
        }
    }

    /// What the budget counts for it: its chain's buffers, the slot and its `through`; none
    /// for a reservation.
    fn bytes(&self) -> usize {
        match &self.chain {
            None => 0,
            Some(chain) => {
                chain.heap_bytes()
                    + CACHE_SLOT_BYTES
                    + self.through.as_ref().map_or(0, |_| THROUGH_BYTES)
            }
        }
    }
}

impl ProfileCache {
    pub fn new(budget: usize) -> Self {
        let (doorkeeper, budget) = if budget >= ADMISSION_FROM {
            let generation = (budget / BUDGET_PER_REFUSED_KEY).min(MAX_GENERATION);
            (
                Some(doorkeeper::Doorkeeper::new(generation)),
                budget.saturating_sub(doorkeeper::Doorkeeper::bytes(generation)),
            )
        } else {
            (None, budget)
        };
        ProfileCache {
            slots: Vec::new(),
            keys: keys::SlotsByKey::default(),
            free: Vec::new(),
            hand: 0,
            bytes: 0,
            budget,
            compacting: Vec::new(),
            switching: false,
            records: Default::default(),
            hits: 0,
            misses: 0,
            doorkeeper,
            refused: 0,
        }
    }

    /// Whether the cache keeps anything (a budget of 0 disables it).
    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// Take the profile whose newest record is at `at` out of the cache: where it stands in
    /// its chain, and its records. Its slot stays reserved for it (its key's entry kept, no
    /// chain, no bytes counted), so that the call's [`ProfileCache::insert`] puts it back
    /// without a second insertion in the table of slots; a reservation no insert followed
    /// (a call that failed) is given up by the next take of the profile.
    pub fn take(&mut self, key: u64, at: Location) -> Option<(ChainAt, Chain)> {
        let i = self.keys.get(key)?;
        let slot = &mut self.slots[i];
        self.bytes -= slot.bytes();
        let at_now = slot.at();
        slot.through = None;
        match slot.chain.take() {
            Some(chain) if slot.loc == at => Some((at_now, chain)),
            _ => {
                self.vacate(key, i);
                None
            }
        }
    }

    /// `key`'s slot, if it has one.
    fn slot_of(&self, key: u64) -> Option<&Slot> {
        self.keys.get(key).and_then(|i| self.slots.get(i))
    }

    /// Load `key`'s entry in the table of slots into the CPU's cache, so that
    /// [`ProfileCache::touch_slot`] finds it there (`apply::ahead`).
    pub fn touch_key(&self, key: u64) {
        self.keys.touch(key);
    }

    /// Load `key`'s slot, if it has one, into the CPU's cache (`apply::ahead`).
    pub fn touch_slot(&self, key: u64) {
        if let Some(slot) = self.slot_of(key) {
            std::hint::black_box(slot.loc);
        }
    }

    /// Load the first [`TOUCHED_CHAIN_BYTES`] of `key`'s cached records into the CPU's cache,
    /// a line at a time (`apply::ahead`).
    pub fn touch_chain(&self, key: u64) {
        if let Some(chain) = self.slot_of(key).and_then(|s| s.chain.as_ref()) {
            let bytes = chain.bytes();
            for at in (0..bytes.len().min(TOUCHED_CHAIN_BYTES)).step_by(64) {
                std::hint::black_box(bytes[at]);
            }
        }
    }

    /// Empty slot `i`, `key`'s, and give it back: its chain dropped, its bytes no longer
    /// counted, its key's entry gone.
    fn vacate(&mut self, key: u64, i: usize) {
        let slot = &mut self.slots[i];
        self.bytes -= slot.bytes();
        slot.chain = None;
        slot.through = None;
        self.keys.remove(key);
        self.free.push(i);
    }

    /// Give up the reservation a take left for `key` (a call that dropped the profile it
    /// loaded: deleted, or merged into another), so that a key no call takes again does not
    /// hold a slot. A slot holding a chain stays.
    pub fn release(&mut self, key: u64) {
        if let Some(i) = self.keys.get(key)
            && self.slots[i].chain.is_none()
        {
            self.vacate(key, i);
        }
    }

    /// Slots, keys' entries and chains held (tests: reservations given up).
    #[cfg(test)]
    pub fn counts(&self) -> (usize, usize, usize) {
        let chains = self.slots.iter().filter(|s| s.chain.is_some()).count();
        (self.slots.len() - self.free.len(), self.keys.len(), chains)
    }

    /// Forget every cached profile and give back the memory of the slots (as a full
    /// compaction begins: its working set then reuses the cache's memory instead of adding
    /// to it). The counters and the running compaction's state stay.
    pub fn clear(&mut self) {
        self.slots = Vec::new();
        self.keys = keys::SlotsByKey::default();
        self.free = Vec::new();
        self.hand = 0;
        self.bytes = 0;
    }

    /// Bytes the cached profiles take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keep the profiles of an appended batch (their decoded records stay in `written`).
    pub fn insert_written(&mut self, written: &mut [Written], locations: &[Location]) {
        // The records stay for `Batch::recycle` to keep their buffers.
        for w in written.iter_mut() {
            let (Some(&loc), Some(chain)) = (locations.get(w.entry), w.chain.take()) else {
                continue;
            };
            self.insert(w.key, loc, w.at, chain, w.hit);
        }
    }

    /// Keep `chain`, the records of the profile `key` whose newest is at `loc`. `hit`: the
    /// call found it here (it gets a second chance when the hand passes, and needs no
    /// admission); otherwise, when it takes an eviction to keep it, it is kept only if the
    /// doorkeeper refused it lately.
    pub fn insert(&mut self, key: u64, loc: Location, at: ChainAt, chain: Chain, hit: bool) {
        // The profile's slot, emptied (a reservation its take left, or a chain kept before):
        // one load from the table of slots by key.
        let reserved = self.keys.get(key);
        if let Some(i) = reserved {
            let slot = &mut self.slots[i];
            self.bytes -= slot.bytes();
            slot.chain = None;
            slot.through = None;
        }
        debug_assert!(
            at.link <= MAX_CHAIN_DEPTH,
            "profile {key}: a chain {} records deep",
            at.link
        );
        let depths = (u8::try_from(at.link), u8::try_from(at.walked));
        let through = at.through.map(Box::new);
        let bytes =
            chain.heap_bytes() + CACHE_SLOT_BYTES + through.as_ref().map_or(0, |_| THROUGH_BYTES);
        let turned_away = !hit
            && self.bytes + bytes > self.budget
            && self
                .doorkeeper
                .as_mut()
                .is_some_and(|door| !door.admit(key));
        if turned_away {
            self.refused += 1;
        }
        let (Ok(link), Ok(walked)) = depths else {
            // Deeper than a chain goes (`MAX_CHAIN_DEPTH`; unreachable, asserted above): not
            // kept.
            if let Some(i) = reserved {
                self.vacate(key, i);
            }
            return;
        };
        if bytes > self.budget || turned_away {
            if let Some(i) = reserved {
                self.vacate(key, i);
            }
            return;
        }
        while self.bytes + bytes > self.budget && self.evict_one() {}
        let slot = Slot {
            key,
            chain: Some(chain),
            loc,
            link,
            walked,
            referenced: hit,
            through,
        };
        debug_assert_eq!(slot.bytes(), bytes);
        let i = match reserved.or_else(|| self.free.pop()) {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        if reserved.is_none() {
            self.keys.insert(key, i);
        }
        self.bytes += bytes;
    }

    /// Advance the hand to the first profile not referenced since it last passed, and evict it.
    /// `false`: nothing to evict (no slot holds a chain; reserved ones hold none).
    fn evict_one(&mut self) -> bool {
        let n = self.slots.len();
        if n == 0 {
            return false;
        }
        // Two turns at most: the first clears every reference bit.
        for _ in 0..2 * n + 1 {
            self.hand = if self.hand + 1 >= n { 0 } else { self.hand + 1 };
            let slot = &mut self.slots[self.hand];
            if slot.chain.is_none() {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            let key = slot.key;
            self.vacate(key, self.hand);
            return true;
        }
        false
    }

    /// Follow a compaction: a profile whose newest record it copied is now at the copy's
    /// location, as one full record (chains are folded; the cached records still fold to the
    /// same profile); any other cached profile whose record lay in the compacted segments
    /// (`inputs`, sorted) is forgotten. A profile written since the inputs were sealed whose
    /// chain links into them now reads through `forwards` (the compaction's): its chain walks
    /// only the deltas above the forwarded record.
    pub fn relocate(&mut self, moved: &crate::storage::Moves, inputs: &[u32], forwards: &Forwards) {
        let profile = [
            crate::entries::EntryKind::Profile.byte(),
            crate::entries::EntryKind::ProfileDelta.byte(),
        ];
        for (kind, key, old, new) in moved.iter() {
            if !profile.contains(&kind) {
                continue;
            }
            if let Some(i) = self.keys.get(key) {
                let slot = &mut self.slots[i];
                if slot.loc == old {
                    self.bytes -= slot.bytes();
                    slot.loc = new;
                    (slot.link, slot.walked, slot.through) = (0, 0, None);
                    self.bytes += slot.bytes();
                }
            }
        }
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.chain.is_some() && inputs.binary_search(&slot.loc.segment).is_ok() {
                self.vacate(slot.key, i);
            }
            let slot = &mut self.slots[i];
            if let Some(through) = slot.through.take() {
                self.bytes -= THROUGH_BYTES;
                let (linked, depth) = *through;
                if forwards.get(&linked).is_some() {
                    // At most `link`, a `u8`.
                    slot.walked = slot
                        .walked
                        .min(u32::from(slot.link).saturating_sub(depth) as u8);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::profile::{DeltaOut, Link, put_delta};
    use crate::profile::props::Stamp;
    use crate::types::value::{Timestamp, Value};

    fn set(rec: &mut ProfileRecord, id: u32, v: i64, ts: i64) {
        rec.state_mut(id)
            .apply_set_ref(Some(&Value::Int(v)), Timestamp(ts), ts as u64);
    }

    fn delta(rec: &ProfileRecord, changed: &[u32], ts: i64, depth: u32) -> Vec<u8> {
        let mut out = Vec::new();
        put_delta(
            &DeltaOut {
                link: Link {
                    prev: Location {
                        segment: 1,
                        offset: 0,
                        len: 1,
                    },
                    depth,
                },
                stamp: Stamp::new(Timestamp(ts), ts as u64),
                times: true,
                ids: None,
                rec,
                changed,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn a_cached_chain_folds_to_the_profile_its_records_wrote() {
        let mut rec = ProfileRecord::default();
        rec.ids.user_id = Some("u1".into());
        set(&mut rec, 1, 10, 100);
        set(&mut rec, 2, 20, 100);
        let mut chain = Chain::full(&crate::entries::encode_profile(&rec, 64));
        assert_eq!(chain.decode().unwrap(), rec);
        for (i, (id, v)) in [(1, 11), (3, 30), (1, 12)].into_iter().enumerate() {
            let ts = 200 + i as i64;
            set(&mut rec, id, v, ts);
            rec.updated_at = rec.updated_at.max(Timestamp(ts));
            rec.first_seen = rec.first_seen.min(Timestamp(ts));
            chain.push_delta(&delta(&rec, &[id], ts, i as u32 + 1));
            assert_eq!(chain.decode().unwrap(), rec, "after delta {i}");
        }
        assert_eq!(chain.records(), 4);
        // The same records as a read from the log hands them: newest first.
        let mut read = Vec::new();
        let mut end = chain.bytes().len();
        while end > 0 {
            let len = u32::from_le_bytes(chain.bytes()[end - 4..end].try_into().unwrap()) as usize;
            read.extend_from_slice(&chain.bytes()[end - 4 - len..end]);
            end -= 4 + len;
        }
        let again = Chain::from_newest_first(&read).unwrap();
        assert_eq!(again.bytes(), chain.bytes());
        assert_eq!(again.records(), 4);
        assert_eq!(again.decode().unwrap(), rec);
        assert!(Chain::from_newest_first(&[]).is_none());
        assert!(Chain::from_newest_first(&[1, 2, 3]).is_none());
        // The writer's own full records carry their state lengths: the same folds, whole and
        // partial, with a delta after it, with a state too long for a length byte (stepped
        // over by reading it) and with one that fits.
        let long = Value::Str("x".repeat(300).into());
        rec.state_mut(4)
            .apply_set_ref(Some(&long), Timestamp(300), 300);
        rec.updated_at = Timestamp(300);
        let before = rec.clone();
        let mut lens = Vec::new();
        let data = crate::entries::encode_profile_measured(&rec, 64, Some(&mut lens));
        assert_eq!(data, crate::entries::encode_profile(&rec, 64));
        assert_eq!(lens.len(), rec.props.len());
        assert!(lens[3] == 0 && lens[..3].iter().all(|&l| l > 0), "{lens:?}");
        let mut measured = Chain::full_measured_in(None, &data, &lens);
        assert_eq!(measured.decode().unwrap(), rec);
        set(&mut rec, 2, 21, 400);
        rec.updated_at = Timestamp(400);
        measured.push_delta(&delta(&rec, &[2], 400, 1));
        assert_eq!(measured.decode().unwrap(), rec);
        for only in [&[1u32][..], &[2, 4], &[3, 4, 9], &[]] {
            let mut want = rec.clone();
            want.props.retain(|(id, _)| only.contains(id));
            assert_eq!(measured.decode_only(only).unwrap(), want, "{only:?}");
            // Captured as bytes: every state here is a plain set (name 2's from the delta, the
            // others from the full record); decoded, they are the same states.
            let mut raw = RawStates::default();
            let mut got = measured
                .decode_capturing(only, &mut raw, ProfileRecord::default())
                .unwrap();
            assert!(got.props.is_empty(), "{only:?}: {:?}", got.props);
            for (id, r) in &raw.states {
                *got.state_mut(*id) = raw.decode(r).unwrap();
            }
            assert_eq!(got, want, "{only:?}");
        }
        let again = Chain::full_measured_in(None, &data, &lens);
        assert_eq!(again.decode().unwrap(), before);
    }

    #[test]
    fn a_chain_read_from_the_log_checks_the_strings_a_hit_keeps() {
        // A full record whose second string is not UTF-8 (a crafted log): the miss's fold
        // stepped over it unchecked, so a hit that keeps it as bytes must check it; one that
        // steps over it need not. A chain this process encoded is checked when built only.
        let data = profile::full_with_bad_string();
        let mut read = data.clone();
        read.extend_from_slice(&(data.len() as u32).to_le_bytes());
        let logged = Chain::from_newest_first(&read).unwrap();
        let mut raw = RawStates::default();
        assert!(
            logged
                .decode_capturing(&[1], &mut raw, ProfileRecord::default())
                .is_ok()
        );
        assert_eq!(raw.states.len(), 1);
        let err = logged
            .decode_capturing(&[2], &mut raw, ProfileRecord::default())
            .unwrap_err();
        assert_eq!(err.reason, "string is not UTF-8");
        assert!(logged.decode().is_err());
        let encoded = Chain::full(&data);
        assert!(
            encoded
                .decode_capturing(&[2], &mut raw, ProfileRecord::default())
                .is_ok()
        );
    }

    /// A delta longer than a chain's spare bytes grows its buffer: the chain keeps its
    /// records and adds the delta, counts one record more, stays read from the log (its fold
    /// still checks the strings it keeps), and its buffer is larger, its spare bytes zeros.
    #[test]
    fn a_delta_longer_than_the_spare_bytes_grows_a_chain_read_from_the_log() {
        let mut rec = ProfileRecord::default();
        rec.ids.user_id = Some("u1".into());
        set(&mut rec, 1, 10, 100);
        let full = crate::entries::encode_profile(&rec, 64);
        set(&mut rec, 2, 20, 200);
        rec.updated_at = Timestamp(200);
        let small = delta(&rec, &[2], 200, 1);
        // As a read from the log hands them: newest first, each followed by its length.
        let mut read = Vec::new();
        for record in [&small, &full] {
            read.extend_from_slice(record);
            read.extend_from_slice(&(record.len() as u32).to_le_bytes());
        }
        let mut chain = Chain::from_newest_first(&read).unwrap();
        assert!(chain.from_log);
        assert_eq!(chain.records(), 2);
        assert_eq!(chain.decode().unwrap(), rec);
        let (before, heap_before) = (chain.bytes().to_vec(), chain.heap_bytes());
        rec.state_mut(3).apply_set_ref(
            Some(&Value::Str("y".repeat(2 * CHAIN_SPARE).into())),
            Timestamp(300),
            300,
        );
        rec.updated_at = Timestamp(300);
        let long = delta(&rec, &[3], 300, 2);
        assert!(
            chain.buf.len() - chain.bytes().len() < long.len() + 4,
            "the delta must not fit in the spare bytes"
        );
        chain.push_delta(&long);
        assert_eq!(chain.records(), 3);
        assert!(chain.from_log, "still read from the log");
        assert!(chain.heap_bytes() > heap_before);
        assert!(chain.buf.len() - chain.bytes().len() >= CHAIN_SPARE);
        assert!(chain.buf[chain.bytes().len()..].iter().all(|&b| b == 0));
        let mut want = before;
        want.extend_from_slice(&long);
        want.extend_from_slice(&(long.len() as u32).to_le_bytes());
        assert_eq!(chain.bytes(), &want[..]);
        assert_eq!(chain.decode().unwrap(), rec);
        let mut raw = RawStates::default();
        let got = chain
            .decode_capturing_all(&mut raw, ProfileRecord::default())
            .unwrap();
        assert_eq!((got.ids, got.updated_at), (rec.ids.clone(), rec.updated_at));
        assert_eq!(raw.states.len(), 3);
        // Another delta fits in the grown buffer's spare bytes.
        set(&mut rec, 1, 11, 400);
        rec.updated_at = Timestamp(400);
        let heap = chain.heap_bytes();
        chain.push_delta(&delta(&rec, &[1], 400, 3));
        assert_eq!((chain.records(), chain.heap_bytes()), (4, heap));
        assert!(chain.from_log);
        assert_eq!(chain.decode().unwrap(), rec);
    }

    #[test]
    fn a_damaged_cached_chain_is_an_error_not_a_panic() {
        let rec = ProfileRecord::default();
        let good = Chain::full(&crate::entries::encode_profile(&rec, 64));
        for cut in 0..good.bytes().len() {
            let chain = Chain::of(good.bytes()[..cut].to_vec(), 1, false);
            let _ = chain.decode();
        }
        let mut long = good.bytes().to_vec();
        let n = long.len();
        long[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        let long = Chain::of(long, 1, false);
        assert!(long.decode().is_err());
    }

    impl ProfileCache {
        /// Whether the profile `key` is kept (a chain in its slot, not a reservation).
        fn holds(&self, key: u64) -> bool {
            self.keys
                .get(key)
                .is_some_and(|i| self.slots[i].chain.is_some())
        }

        /// The cache's bookkeeping agrees with its slots: each key's entry names a slot of its
        /// key, no free slot is named or listed twice, the bytes counted are the kept
        /// chains', within the budget.
        fn check(&self) {
            let mut named = vec![false; self.slots.len()];
            for (key, i) in self.keys.iter() {
                assert_eq!(self.slots[i].key, key);
                assert!(
                    !std::mem::replace(&mut named[i], true),
                    "slot {i} named twice"
                );
            }
            let mut free = vec![false; self.slots.len()];
            for &i in &self.free {
                assert!(!named[i], "free slot {i} is named by a key");
                assert!(self.slots[i].chain.is_none());
                assert!(
                    !std::mem::replace(&mut free[i], true),
                    "slot {i} free twice"
                );
            }
            for (i, slot) in self.slots.iter().enumerate() {
                assert!(named[i] || free[i], "slot {i} neither named nor free");
                assert_eq!(slot.chain.is_none(), slot.bytes() == 0, "slot {i}");
                assert!(slot.chain.is_some() || slot.through.is_none(), "slot {i}");
            }
            let kept: usize = self.slots.iter().map(|s| s.bytes()).sum();
            assert_eq!(self.bytes, kept);
            assert!(self.bytes <= self.budget);
        }
    }

    /// A location in segment 1 at `offset` (the cache tests' profiles).
    fn loc(offset: u32) -> Location {
        Location {
            segment: 1,
            offset,
            len: 1,
        }
    }

    /// A full cache (of a budget with a doorkeeper) keeps a profile that did not come from it
    /// only at its second try: the first is refused and every cached profile stays; the
    /// second evicts one. A profile that came from the cache goes back in without asking.
    #[test]
    fn a_full_cache_admits_a_new_profile_at_its_second_try() {
        let mut rec = ProfileRecord::default();
        rec.state_mut(1).apply_set_ref(
            Some(&Value::Str("x".repeat(100_000).into())),
            Timestamp(1),
            1,
        );
        let data = crate::entries::encode_profile(&rec, 64);
        let chain = || Chain::full(&data);
        let mut cache = ProfileCache::new(ADMISSION_FROM);
        assert!(cache.doorkeeper.is_some());
        // A budget meant as "no limit" gets a doorkeeper of a bounded size.
        assert!(ProfileCache::new(usize::MAX).budget > usize::MAX - (8 << 20));
        let mut key = 0;
        while cache.bytes() + chain().heap_bytes() + CACHE_SLOT_BYTES <= cache.budget {
            cache.insert(key, loc(key as u32), ChainAt::default(), chain(), false);
            key += 1;
        }
        let kept = key;
        assert!(kept >= 5, "{kept}");
        assert_eq!(cache.refused, 0, "admitted while there was room");
        let cached = |cache: &ProfileCache| (0..=kept + 1).filter(|k| cache.holds(*k)).count();
        cache.insert(kept, loc(kept as u32), ChainAt::default(), chain(), false);
        assert_eq!(cache.refused, 1);
        assert_eq!(cached(&cache), kept as usize, "refused: nothing evicted");
        assert!(!cache.holds(kept));
        cache.insert(kept, loc(kept as u32), ChainAt::default(), chain(), false);
        assert_eq!(cache.refused, 1, "the second try is let in");
        assert!(cache.holds(kept));
        assert_eq!(cached(&cache), kept as usize, "one evicted for it");
        // The room a call's take leaves is filled without the doorkeeper; the profile taken
        // goes back in without it too, evicting another.
        let out = (0..kept).find(|k| cache.holds(*k)).unwrap();
        let (at, taken) = cache.take(out, loc(out as u32)).unwrap();
        cache.insert(
            kept + 1,
            loc(kept as u32 + 1),
            ChainAt::default(),
            chain(),
            false,
        );
        assert!(cache.holds(kept + 1), "room a take left");
        cache.insert(out, loc(out as u32), at, taken, true);
        assert!(cache.holds(out));
        assert_eq!(cache.refused, 1);
        assert_eq!(cached(&cache), kept as usize, "one evicted for it");
        assert!(cache.bytes() <= cache.budget);
    }

    /// What a slot takes, against what the budget counts for it; what
    /// its boxed `through` takes from the allocator.
    #[test]
    fn a_slot_takes_what_the_budget_counts() {
        assert_eq!(size_of::<Slot>(), CACHE_SLOT_BYTES);
        assert_eq!(size_of::<Option<Chain>>(), 24);
        assert_eq!(alloc_bytes(size_of::<(Location, u32)>()), THROUGH_BYTES);
    }

    #[test]
    fn the_budget_counts_each_chain_and_evicts_the_unreferenced_first() {
        let rec = ProfileRecord::default();
        let data = crate::entries::encode_profile(&rec, 64);
        let one = Chain::full(&data).heap_bytes() + CACHE_SLOT_BYTES;
        let mut cache = ProfileCache::new(3 * one);
        cache.insert(1, loc(1), ChainAt::default(), Chain::full(&data), true);
        cache.insert(2, loc(2), ChainAt::default(), Chain::full(&data), false);
        cache.insert(3, loc(3), ChainAt::default(), Chain::full(&data), false);
        assert_eq!(cache.bytes(), 3 * one);
        cache.insert(4, loc(4), ChainAt::default(), Chain::full(&data), false);
        assert_eq!(cache.bytes(), 3 * one);
        // 1 was referenced: the hand passed it and took 2.
        assert!(cache.take(2, loc(2)).is_none());
        assert!(cache.take(1, loc(1)).is_some());
        // A profile whose index location moved on is not used.
        assert!(cache.take(3, loc(99)).is_none());
        assert!(
            cache.take(3, loc(3)).is_none(),
            "taken out by the stale look"
        );
        assert!(cache.take(4, loc(4)).is_some());
        assert_eq!(cache.bytes(), 0);
    }

    /// A take's reservation: the profile put back takes its slot again (no slot or key's entry
    /// added); one never put back is given up by the next take; an insert that is refused
    /// gives it up too.
    #[test]
    fn a_taken_profile_goes_back_into_its_slot() {
        let data = crate::entries::encode_profile(&ProfileRecord::default(), 64);
        let one = Chain::full(&data).heap_bytes() + CACHE_SLOT_BYTES;
        let chain = || Chain::full(&data);
        let mut cache = ProfileCache::new(3 * one);
        for key in 1..=3 {
            cache.insert(key, loc(key as u32), ChainAt::default(), chain(), false);
        }
        let (at, taken) = cache.take(2, loc(2)).unwrap();
        assert_eq!(cache.bytes(), 2 * one);
        assert!(!cache.holds(2));
        cache.check();
        cache.insert(2, loc(7), at, taken, true);
        assert_eq!((cache.slots.len(), cache.keys.len()), (3, 3));
        assert!(cache.take(2, loc(7)).is_some());
        cache.check();
        // Not put back: the next take gives the slot up.
        assert!(cache.take(2, loc(7)).is_none());
        assert_eq!((cache.keys.len(), cache.free.len()), (2, 1));
        cache.check();
        // Refused (larger than the budget): the reservation is given up.
        let mut small = ProfileCache::new(one);
        small.insert(5, loc(5), ChainAt::default(), chain(), false);
        let (at, _) = small.take(5, loc(5)).unwrap();
        let mut rec = ProfileRecord::default();
        rec.state_mut(1)
            .apply_set_ref(Some(&Value::Str("x".repeat(500).into())), Timestamp(1), 1);
        let large = crate::entries::encode_profile(&rec, 64);
        small.insert(5, loc(5), at, Chain::full(&large), true);
        assert_eq!(small.keys.len(), 0);
        assert_eq!(small.free.len(), 1);
        small.check();
    }

    /// Where a chain stands, as an insert in the proptest below gives it: `link` up to
    /// `MAX_CHAIN_DEPTH`, `walked` at most `link`, and maybe a `through` (the offset, in the
    /// sealed segment the next compaction rewrites, of the record its chain links to, and
    /// that record's depth, below `link`).
    fn chain_at() -> impl proptest::strategy::Strategy<Value = (u32, u32, Option<(u32, u32)>)> {
        use proptest::strategy::{Just, Strategy};
        (0..=MAX_CHAIN_DEPTH).prop_flat_map(|link| {
            (
                Just(link),
                0..=link,
                proptest::option::of((0u32..3, 0..link.max(1))),
            )
        })
    }

    /// The fields of a `ChainAt`, to compare.
    fn fields(at: &ChainAt) -> (u32, u32, Option<(Location, u32)>) {
        (at.link, at.walked, at.through)
    }

    proptest::proptest! {
        /// Any sequence of inserts (new, of any depth and with or without a `through`, or
        /// putting back what a take gave), takes (at the profile's location or a stale one),
        /// takes never put back and compactions followed (`relocate`: some profiles moved,
        /// the others in the inputs forgotten, the `through`s dropped, some forwarded) keeps
        /// the cache's bookkeeping whole (the bytes counted are the slots', `through`s
        /// included), and a take gives back the location and `ChainAt` the last insert of the
        /// profile kept, as the compactions since changed them. Releases give up reservations
        /// only; some keys lie far beyond the table of slots by key's array (kept in its map).
        #[test]
        fn takes_and_inserts_keep_the_cache_whole(
            ops in proptest::collection::vec(
                (
                    0u8..10,
                    0u64..12,
                    0u32..3,
                    proptest::bool::ANY,
                    chain_at(),
                    proptest::collection::vec((0u8..3, 0u64..12, 0u32..4), 0..8),
                    proptest::collection::vec(0u32..3, 0..3),
                ),
                1..300,
            ),
            room in 2usize..8,
        ) {
            let data = crate::entries::encode_profile(&ProfileRecord::default(), 64);
            let one = Chain::full(&data).heap_bytes() + CACHE_SLOT_BYTES;
            let mut cache = ProfileCache::new(room * one);
            // The segment written to; the one before it is sealed, the next compaction's input
            // (and the segment the `through`s link into). The compaction writes its output to
            // the one after `active`, and the writes go on in the one after that.
            let mut active = 2u32;
            let place = |segment: u32, offset: u32| Location { segment, offset, len: 1 };
            // Where each profile was last kept and where its chain stood, as the test saw it.
            let mut last: std::collections::HashMap<u64, (Location, ChainAt)> = Default::default();
            let mut out: Vec<(u64, ChainAt, Chain)> = Vec::new();
            // Keys 10 and 11 stand for keys beyond what the array of slots by key may grow to.
            let far = |key: u64| match key {
                10 => 1 << 40,
                11 => u64::MAX,
                _ => key,
            };
            for (op, key, at, back, (link, walked, through), moves, forwarded) in ops {
                let key = far(key);
                match op {
                    0..=2 => {
                        let chain_at = ChainAt {
                            link,
                            walked,
                            through: through.map(|(o, depth)| (place(active - 1, o), depth)),
                        };
                        // `back`: a profile whose newest record is in the sealed segment.
                        let l = place(if back { active - 1 } else { active }, at);
                        cache.insert(key, l, chain_at, Chain::full(&data), false);
                        last.insert(key, (l, chain_at));
                    }
                    3 | 4 => {
                        // At the profile's location (a hit if it is kept), or maybe a stale one.
                        let l = match last.get(&key) {
                            Some(&(l, _)) if at == 0 => l,
                            _ => place(active, at),
                        };
                        let taken = cache.take(key, l);
                        if let Some((chain_at, _)) = &taken {
                            let &(want, want_at) = last.get(&key).unwrap();
                            proptest::prop_assert_eq!(want, l);
                            proptest::prop_assert_eq!(fields(chain_at), fields(&want_at));
                            proptest::prop_assert!(chain_at.walked <= chain_at.link);
                        }
                        if let Some((chain_at, chain)) = taken
                            && back
                        {
                            out.push((key, chain_at, chain));
                        }
                    }
                    5 | 6 => {
                        if let Some((key, chain_at, chain)) = out.pop() {
                            let l = place(active, at);
                            cache.insert(key, l, chain_at, chain, true);
                            last.insert(key, (l, chain_at));
                        }
                    }
                    7 => {
                        proptest::prop_assert!(!cache.holds(key) || last.contains_key(&key));
                    }
                    8 => {
                        let held = cache.holds(key);
                        cache.release(key);
                        proptest::prop_assert_eq!(cache.holds(key), held);
                    }
                    _ => {
                        // A compaction of the sealed segment (`back`: of every segment before
                        // the one written to) into the one after `active`. It moved
                        // the records listed (a profile's, its newest at the place its index
                        // entry names, when `at` is 0; another kind's of the same id, which
                        // the cache ignores), and forwards the records at the offsets
                        // `forwarded` (some of those the cached chains link to).
                        let inputs: Vec<u32> = if back { (1..active).collect() } else { vec![active - 1] };
                        let output = active + 1;
                        let mut moved = crate::storage::Moves::with_capacity(moves.len());
                        for (n, &(kind, key, at)) in moves.iter().enumerate() {
                            let key = far(key);
                            let kind = [
                                crate::entries::EntryKind::Profile,
                                crate::entries::EntryKind::ProfileDelta,
                                crate::entries::EntryKind::Company,
                            ][kind as usize];
                            let old = match last.get(&key) {
                                Some(&(l, _)) if at == 0 => l,
                                _ => place(active - 1, at),
                            };
                            if inputs.binary_search(&old.segment).is_err() {
                                continue;
                            }
                            let new = place(output, 100 + n as u32);
                            moved.push(kind.byte(), key, old, new).unwrap();
                        }
                        let mut forwards = Forwards::default();
                        forwards.extend(
                            forwarded.iter().map(|&o| (place(active - 1, o), place(output, 1000 + o))),
                        );
                        cache.relocate(&moved, &inputs, &forwards);
                        // What the cache should have done, on the test's record.
                        for (kind, key, old, new) in moved.iter() {
                            if kind == crate::entries::EntryKind::Company.byte() {
                                continue;
                            }
                            if let Some((l, at)) = last.get_mut(&key)
                                && *l == old
                            {
                                *l = new;
                                *at = ChainAt::default();
                            }
                        }
                        for (_, at) in last.values_mut() {
                            if let Some((linked, depth)) = at.through.take()
                                && forwards.get(&linked).is_some()
                            {
                                at.walked = at.walked.min(at.link.saturating_sub(depth));
                            }
                        }
                        for slot in &cache.slots {
                            proptest::prop_assert!(slot.through.is_none());
                            proptest::prop_assert!(slot.walked <= slot.link);
                            proptest::prop_assert!(
                                slot.chain.is_none() || inputs.binary_search(&slot.loc.segment).is_err()
                            );
                        }
                        active += 2;
                    }
                }
                cache.check();
            }
        }
    }
}
