//! The in-memory indexes: identifiers -> profile key -> record location, plus the small
//! registries the rules need (property names, companies, recent messageIds, suppressions).
//! The whole structure is what the hint file snapshots (`snapshot.rs`).
//!
//! Memory (docs/performance.md): identifiers live in byte arenas (`idmap.rs`), profile
//! locations in an array indexed by key (`profiles.rs`), messageIds in a ring of hashes
//! (`window.rs`).

mod guard;
mod idmap;
mod journal;
mod names;
mod profiles;
mod snapshot;
mod window;

use idmap::IdMap;
pub(crate) use journal::{Journal, write_outputs, write_table};
use names::NameIds;
use profiles::Profiles;
pub(crate) use profiles::{dense_slot, touch_dense};
pub(crate) use window::Absent;
use window::Window;

/// Hash maps of the index: foldhash is several times faster than SipHash on short keys and
/// still seeded per process (identifiers come from untrusted clients).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// Hash sets of the index.
pub(crate) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

use crate::entries::chain::Forwards;
use crate::entries::{self, EntryKind, Ids};
use crate::storage::{Location, PackData, StoredEntry};
use crate::types::SourceOffset;
use crate::types::email::normalize_email;

/// A company's place in the index.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompanySlot {
    key: u64,
    location: Location,
    members: HashSet<u64>,
}

/// Everything the Db keeps in memory about the data on disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    user: IdMap,
    /// Normalised (trimmed, lower-cased) email -> key.
    email: IdMap,
    anon: IdMap,
    /// Live profile key -> location of its newest record.
    profiles: Profiles,
    /// Merged-away key -> survivor key. Kept flat: the target is the end of the chain (the
    /// live survivor, or a deleted one), not the key the entry on disk names, so a lookup is
    /// one step (see [`Index::add_redirect`]). A key is merged away once, so its `REDIRECT`
    /// entry is live for compaction while the key is here: no location is kept.
    redirects: HashMap<u64, u64>,
    /// Target -> the keys redirected to it: what [`Index::add_redirect`] repoints when the
    /// target is merged away in turn. Not in the snapshot; rebuilt by
    /// [`Index::flatten_redirects`] on open.
    redirect_sources: HashMap<u64, Vec<u64>>,
    companies: HashMap<Box<str>, CompanySlot>,
    /// Company key -> company id (for liveness checks by key).
    company_ids: HashMap<u64, Box<str>>,
    /// Property names by number, with the location of their registration.
    names: Vec<(Box<str>, Location)>,
    name_ids: NameIds,
    /// Recent messageId hashes. A `DEDUPE` entry is live while its hash is in the window.
    dedupe: Window,
    /// Suppressed identifier hashes: low half -> (high half, location of the entry).
    suppressed: HashMap<u64, (u64, Location)>,
    next_key: u64,
    next_key_location: Option<Location>,
    /// History steps by profile (issue 16; `journal.rs`).
    pub(crate) journal: Journal,
    next_company_key: u64,
    /// Sequence number of the newest frame applied (arrival order of calls).
    last_seq: u64,
    /// External log positions applied up to, by [`entries::source_id`], with the location
    /// of the newest `SOURCE_OFFSET` entry (the live one).
    sources: HashMap<u64, (SourceOffset, Location)>,
    /// Where the last compaction moved the records that deltas written during it link to
    /// (`entries::chain`): replaced whole by each compaction (shared with the one running,
    /// which folds chains through it without the index lock), in the snapshot, and rebuilt
    /// from `FORWARD` entries on replay.
    pub(crate) forwards: std::sync::Arc<Forwards>,
    /// While a compaction runs: the records in its inputs that deltas link to, which it
    /// copies even when they are no longer the newest (read under the index lock it holds
    /// to decide liveness; written by the writer, which holds the write lock). Not stored.
    pub(crate) linked: HashSet<Location>,
}

/// What one entry changes in the index: one variant per entry kind, applied by
/// [`Index::apply`] both when a call's batch is committed and when the log is replayed on
/// open, so the two can never disagree. Identifier maps are not part of it: a profile entry's
/// identifiers are in its payload, which the write path has decoded already
/// ([`Index::index_ids`] / [`Index::unindex_ids`]) and replay reads once per profile at the
/// end (`rebuild.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Update<'a> {
    /// The profile's newest record (`EntryKind::Profile` or `EntryKind::ProfileDelta`).
    Profile { key: u64 },
    /// The profile was deleted or merged away (`EntryKind::Tombstone`).
    Tombstone { key: u64 },
    /// `from` was merged into `to` (`EntryKind::Redirect`).
    Redirect { from: u64, to: u64 },
    /// A company's record (`EntryKind::Company`).
    Company { key: u64, id: &'a str },
    /// A property name registered under number `id` (`EntryKind::PropName`).
    Name { id: u32, name: &'a str },
    /// A messageId applied (`EntryKind::Dedupe`).
    Dedupe { hash: u128 },
    /// An identifier suppressed (`EntryKind::Suppress`).
    Suppress { hash: u128 },
    /// The next profile key to assign is at least `next` (`EntryKind::NextKey`).
    NextKey { next: u64 },
    /// A history step of profile `key`, applied at `arrival` (`EntryKind::History`).
    History { key: u64, arrival: i64 },
    /// The guard linked identifier `ident` to a user id (`EntryKind::GuardLink`).
    GuardLink { ident: u128, user: u64, time: i64 },
    /// The guard quarantined an identifier (`EntryKind::Quarantine`).
    Quarantine { ident: u128, text: &'a str },
    /// An external log position applied up to (`EntryKind::SourceOffset`).
    Source { id: u64, at: &'a SourceOffset },
}

/// A guard entry's change to the index, owned (the write path's `Change::Guard`).
#[derive(Debug)]
pub(crate) enum GuardChange {
    Link { ident: u128, user: u64, time: i64 },
    Quarantine { ident: u128, text: String },
}

impl GuardChange {
    /// The [`Update`] of the appended entry.
    pub(crate) fn update(&self) -> Update<'_> {
        match self {
            &GuardChange::Link { ident, user, time } => Update::GuardLink { ident, user, time },
            GuardChange::Quarantine { ident, text } => Update::Quarantine {
                ident: *ident,
                text,
            },
        }
    }
}

/// A company as the index knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompanyInfo {
    pub key: u64,
    /// Its newest record; `None` when it has none (a profile named it, and its record was
    /// lost to repair).
    pub location: Option<Location>,
    pub members: usize,
}

impl Index {
    /// An empty index whose messageId window holds `dedupe_window` ids.
    pub fn new(dedupe_window: usize) -> Index {
        Index {
            dedupe: Window::new(dedupe_window),
            ..Index::default()
        }
    }

    /// Apply what one entry, now at `at`, changes (see [`Update`]). Marked inline: the
    /// writer's commit (`apply::commit_written`) calls it for each change but the two most
    /// calls make (a profile's record and its history step: [`Index::apply_profile`] and
    /// `Journal::push` directly) and the messageId's (`Index::insert_message`).
    #[inline]
    pub fn apply(&mut self, update: Update<'_>, at: Location) {
        match update {
            Update::Profile { key } => self.apply_profile(key, at),
            Update::Tombstone { key } => {
                self.profiles.remove(key);
                self.bump_next_key(key);
            }
            Update::Redirect { from, to } => {
                self.add_redirect(from, to);
                self.bump_next_key(from);
            }
            Update::Company { key, id } => {
                let slot = self.companies.entry(id.into()).or_default();
                if slot.key != key && self.company_ids.get(&slot.key).map(|c| &**c) == Some(id) {
                    // Only a damaged log names one company under two keys: the newest wins.
                    self.company_ids.remove(&slot.key);
                }
                slot.key = key;
                slot.location = at;
                self.company_ids.insert(key, id.into());
                self.next_company_key = self.next_company_key.max(key.saturating_add(1));
            }
            Update::Name { id, name } => {
                // Names are numbered 0, 1, 2, ... as they are registered; a gap (names lost to
                // a quarantined segment) is filled with placeholders. The replay bounds `id`
                // before it gets here (`rebuild.rs`).
                let id = id as usize;
                if self.names.len() <= id {
                    self.names
                        .resize(id + 1, (Box::from(""), Location::default()));
                }
                self.names[id] = (name.into(), at);
                self.name_ids.insert(name, id as u32);
            }
            Update::Dedupe { hash } => {
                self.dedupe.insert(hash);
            }
            Update::Suppress { hash } => {
                self.suppressed
                    .insert(hash as u64, ((hash >> 64) as u64, at));
            }
            Update::NextKey { next } => {
                self.next_key = self.next_key.max(next);
                self.next_key_location = Some(at);
            }
            Update::History { key, arrival } => self.journal.push(key, arrival, at),
            Update::GuardLink { ident, user, time } => {
                self.journal.guard.link(ident, user, time, at)
            }
            Update::Quarantine { ident, text } => {
                self.journal.guard.quarantine(ident, text.to_string(), at)
            }
            Update::Source { id, at: offset } => {
                self.sources.insert(id, (offset.clone(), at));
            }
        }
    }

    /// [`Index::apply`] of [`Update::Profile`]: the writer's commit calls it directly
    /// (`apply::commit_written`), without making an `Update` to match again.
    #[inline(always)]
    pub fn apply_profile(&mut self, key: u64, at: Location) {
        // A record under a merged-away key: an unmerge brought it back
        // (docs/journal.md "Unmerge"); its redirect ends here.
        if !self.redirects.is_empty() {
            self.remove_redirect(key);
        }
        self.profiles.insert(key, at);
        self.bump_next_key(key);
    }

    fn bump_next_key(&mut self, key: u64) {
        self.next_key = self.next_key.max(key.saturating_add(1));
    }

    /// After open: make every redirect point at the end of its chain, and start the key
    /// counters at 1 (0 means "no profile" in outcomes).
    pub fn finish_open(&mut self) {
        self.flatten_redirects();
        self.next_key = self.next_key.max(1);
        self.next_company_key = self.next_company_key.max(1);
    }

    /// Forget a profile and every identifier pointing at it (repair: its records were lost
    /// with a quarantined segment, so its identifiers cannot be read).
    pub fn forget_profile(&mut self, key: u64) {
        self.profiles.remove(key);
        for map in [&mut self.user, &mut self.email, &mut self.anon] {
            map.retain(|k| k != key);
        }
        for slot in self.companies.values_mut() {
            slot.members.remove(&key);
        }
    }

    /// The newest record of a live profile.
    pub fn location(&self, key: u64) -> Option<Location> {
        self.profiles.get(key)
    }

    /// Live profiles with the location of their newest record, in no particular order.
    pub fn profiles(&self) -> impl Iterator<Item = (u64, Location)> + '_ {
        self.profiles.iter()
    }

    /// Number of live profiles.
    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    /// The profile a user id belongs to.
    pub fn user_key(&self, user_id: &str) -> Option<u64> {
        self.user.get(user_id)
    }

    /// The profile an email belongs to (`email` as given: it is normalised here, the one
    /// place lookups and the index agree on the form).
    pub fn email_key(&self, email: &str) -> Option<u64> {
        self.email.get(&normalize_email(email))
    }

    /// Load into the CPU's cache what a call's look-ups of the message id `hash` and of the
    /// profile `key` read first (`apply::ahead`).
    pub fn touch(&self, message: Option<u128>, key: Option<u64>) {
        if let Some(hash) = message {
            self.dedupe.touch(hash);
        }
        if let Some(key) = key {
            self.profiles.touch(key);
        }
    }

    /// The profile an anonymous id belongs to.
    pub fn anon_key(&self, anonymous_id: &str) -> Option<u64> {
        self.anon.get(anonymous_id)
    }

    /// Number of identifiers indexed (user ids, emails, anonymous ids).
    pub fn identifier_count(&self) -> usize {
        self.user.len() + self.email.len() + self.anon.len()
    }

    /// A company by id.
    pub fn company(&self, id: &str) -> Option<CompanyInfo> {
        self.companies.get(id).map(|s| CompanyInfo {
            key: s.key,
            location: (s.location.len > 0).then_some(s.location),
            members: s.members.len(),
        })
    }

    /// Keys of a company's members, ascending.
    pub fn members(&self, id: &str) -> Vec<u64> {
        let mut keys: Vec<u64> = self
            .companies
            .get(id)
            .map(|s| s.members.iter().copied().collect())
            .unwrap_or_default();
        keys.sort_unstable();
        keys
    }

    /// Number of companies.
    pub fn company_count(&self) -> usize {
        self.companies.len()
    }

    /// A property name by number.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(id as usize).map(|n| &*n.0)
    }

    /// A property name's number. Inlined: one call a look-up (`NameIds::get`), not two.
    #[inline]
    pub fn name_id(&self, name: &str) -> Option<u32> {
        self.name_ids.get(name)
    }

    /// Number of property names registered.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Whether any identifier is suppressed.
    pub fn any_suppressed(&self) -> bool {
        !self.suppressed.is_empty()
    }

    /// The next profile key to assign.
    pub fn next_key(&self) -> u64 {
        self.next_key
    }

    /// The next company key to assign.
    pub fn next_company_key(&self) -> u64 {
        self.next_company_key
    }

    /// Sequence number of the newest frame applied.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Record that frames up to `seq` are applied.
    pub fn set_last_seq(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Follow redirects from `key` to a live profile: `None` for a key never used, deleted, or
    /// merged into a profile that was deleted since.
    pub fn resolve_key(&self, key: u64) -> Option<u64> {
        let end = self.chain_end(key);
        self.profiles.get(end).is_some().then_some(end)
    }

    /// Point the journal's entries that moved in a compaction out of `inputs` at their new
    /// places: the history steps through the outputs' table files (written from
    /// `relocations.by_place` before the switch, `journal::write_outputs`), the guard's link
    /// and quarantine events from `relocations.moved`; those left in `inputs` are forgotten.
    /// Returns the inputs' table files, to remove once the index snapshot no longer names
    /// them.
    pub fn relocate_journal(
        &mut self,
        relocations: &crate::storage::Relocations,
        inputs: &[u32],
        tables: Vec<journal::TableFile>,
    ) -> Vec<std::path::PathBuf> {
        let gone = self.journal.install(inputs, tables);
        let guard: HashMap<Location, Location> = relocations
            .moved
            .iter()
            .filter(|m| m.0 == EntryKind::GuardLink.byte() || m.0 == EntryKind::Quarantine.byte())
            .map(|(_, _, old, new)| (old, new))
            .collect();
        if !guard.is_empty() {
            self.journal.guard.relocate_all(&guard);
        }
        self.journal.guard.forget_segments(inputs);
        gone
    }

    /// The keys redirected to `key` (merged into it, directly or through others).
    pub fn redirect_sources(&self, key: u64) -> Vec<u64> {
        self.redirect_sources.get(&key).cloned().unwrap_or_default()
    }

    /// The end of the redirect chain from `key` (`key` itself when it is not redirected).
    /// Redirects are kept flat, so this is normally one step; the walk stays correct for any
    /// length and stops on a cycle (which only corrupt data could hold).
    fn chain_end(&self, mut key: u64) -> u64 {
        for _ in 0..=self.redirects.len() {
            match self.redirects.get(&key) {
                Some(&to) if to != key => key = to,
                _ => return key,
            }
        }
        key
    }

    /// Record that `from` was merged into `to`: `from`, and every key redirected to `from`
    /// before, now point straight at the end of `to`'s chain. Entries may come in any order
    /// (a compaction may reorder them on disk): the result is the same.
    fn add_redirect(&mut self, from: u64, to: u64) {
        let to = self.chain_end(to);
        if to == from {
            return;
        }
        if let Some(old) = self.redirects.insert(from, to)
            && let Some(sources) = self.redirect_sources.get_mut(&old)
        {
            sources.retain(|k| *k != from);
        }
        let moved = self.redirect_sources.remove(&from).unwrap_or_default();
        for &k in &moved {
            if let Some(r) = self.redirects.get_mut(&k) {
                *r = to;
            }
        }
        let sources = self.redirect_sources.entry(to).or_default();
        sources.extend(moved);
        sources.push(from);
    }

    /// Forget the redirect of `key` (an unmerge restored it). Keys merged into `key` before it
    /// was merged away stay with the survivor (docs/journal.md "Unmerge", limits).
    fn remove_redirect(&mut self, key: u64) {
        if let Some(to) = self.redirects.remove(&key)
            && let Some(sources) = self.redirect_sources.get_mut(&to)
        {
            sources.retain(|k| *k != key);
        }
    }

    /// Make every redirect point at the end of its chain and rebuild
    /// [`Index::redirect_sources`] (on open: the replay records redirects as written, and a
    /// snapshot holds no sources).
    /// Linear in the number of redirects: each chain is walked once, and every key on the way
    /// is pointed at its end before the next walk.
    fn flatten_redirects(&mut self) {
        let keys: Vec<u64> = self.redirects.keys().copied().collect();
        let mut path = Vec::new();
        for k in keys {
            path.clear();
            let mut at = k;
            while let Some(&to) = self.redirects.get(&at) {
                if to == at || path.len() > self.redirects.len() {
                    break; // a cycle: only corrupt data could hold one
                }
                path.push(at);
                at = to;
            }
            for p in &path {
                if let Some(r) = self.redirects.get_mut(p) {
                    *r = at;
                }
            }
        }
        self.redirect_sources.clear();
        for (&k, &end) in &self.redirects {
            self.redirect_sources.entry(end).or_default().push(k);
        }
    }

    /// Remove the identifiers of `ids` that point to `key`; leave membership consistent.
    pub fn unindex_ids(&mut self, key: u64, ids: &Ids) {
        if let Some(u) = &ids.user_id {
            self.user.remove_if(u, key);
        }
        if let Some(e) = &ids.email {
            self.email.remove_if(&normalize_email(e), key);
        }
        for a in &ids.anonymous_ids {
            self.anon.remove_if(a, key);
        }
        if let Some(c) = &ids.company_id
            && let Some(slot) = self.companies.get_mut(c.as_str())
        {
            slot.members.remove(&key);
        }
    }

    /// Point the identifiers of `ids` at `key`; add membership.
    pub fn index_ids(&mut self, key: u64, ids: &Ids) {
        if let Some(u) = &ids.user_id {
            self.user.insert(u, key);
        }
        if let Some(e) = &ids.email {
            self.email.insert(&normalize_email(e), key);
        }
        for a in &ids.anonymous_ids {
            self.anon.insert(a, key);
        }
        if let Some(c) = &ids.company_id {
            self.ensure_company(c);
            if let Some(slot) = self.companies.get_mut(c.as_str()) {
                slot.members.insert(key);
            }
        }
    }

    /// Membership needs the company slot; a profile may name a company that has no record
    /// yet only if the record was lost to repair (the write path writes a company's record
    /// before its members'). Create an empty slot so membership stays counted.
    fn ensure_company(&mut self, id: &str) {
        // A damaged log can claim company key 2^64-1 (open saturates at it; the `open_dir`
        // fuzz target found the `+= 1` here overflowing): then no slot is made (membership of
        // that company goes uncounted) rather than reusing a key; new companies are refused
        // by the write path.
        if !self.companies.contains_key(id) && self.next_company_key < u64::MAX {
            let key = self.next_company_key.max(1);
            self.next_company_key = key + 1;
            self.company_ids.insert(key, id.into());
            self.companies.insert(
                id.into(),
                CompanySlot {
                    key,
                    ..CompanySlot::default()
                },
            );
        }
    }

    /// The messageId hashes of a `Dedupe` or `DedupeBlock` entry that are still in the window,
    /// as a block's data (16 bytes each, oldest first): what compaction packs of it. `at`:
    /// where in the window the next hash is expected ([`Window::contains_walking`]; a
    /// compaction passes the same one for every entry, read in the log's order).
    pub fn dedupe_live_bytes(&self, e: &StoredEntry<'_>, at: &mut usize) -> PackData {
        let mut out = PackData::new();
        let mut keep = |h: u128| {
            if self.dedupe.contains_walking(h, at) {
                out.extend_from_slice(&h.to_le_bytes());
            }
        };
        if e.kind == EntryKind::DedupeBlock.byte() {
            if let Ok(hashes) = entries::hash_block(e.data) {
                hashes.for_each(&mut keep);
            }
        } else if let Ok(h) = entries::join_hash(e.id, e.data) {
            keep(h);
        }
        out
    }

    /// Whether the entry is the current version of what it records (compaction keeps it),
    /// with the windows (history steps, guard links) measured at `now` (microseconds): a
    /// compaction asks of every entry it reads, at the time it began, and does not read the
    /// clock per entry (a step that leaves the window meanwhile is kept, and dropped by the
    /// next compaction: the window is a floor).
    pub fn is_live(&self, e: &StoredEntry<'_>, now: i64) -> bool {
        let loc = Some(e.location);
        let Ok(kind) = EntryKind::try_from(e.kind) else {
            return false;
        };
        match kind {
            // Only a chain's newest record: compaction folds the chain into it.
            EntryKind::Profile | EntryKind::ProfileDelta => self.profiles.get(e.id) == loc,
            EntryKind::Tombstone => false,
            EntryKind::Redirect => self.redirects.contains_key(&e.id),
            EntryKind::Company => {
                self.company_ids
                    .get(&e.id)
                    .and_then(|id| self.companies.get(id))
                    .map(|s| s.location)
                    == loc
            }
            EntryKind::PropName => self.names.get(e.id as usize).map(|n| n.1) == loc,
            EntryKind::Dedupe => {
                entries::join_hash(e.id, e.data).is_ok_and(|h| self.dedupe.contains(h))
            }
            EntryKind::DedupeBlock => entries::hash_block(e.data)
                .is_ok_and(|mut hashes| hashes.any(|h| self.dedupe.contains(h))),
            // Needed only until the next compaction, which folds every chain through them.
            EntryKind::Forward => false,
            EntryKind::Suppress => self.suppressed.get(&e.id).map(|d| d.1) == loc,
            EntryKind::NextKey => self.next_key_location == loc,
            EntryKind::GuardLink => entries::guard::link(e.id, e.data)
                .is_ok_and(|(ident, _, _)| self.journal.guard.link_live(ident, e.location, now)),
            EntryKind::Quarantine => entries::guard::quarantine(e.id, e.data)
                .is_ok_and(|(ident, _)| self.journal.guard.quarantine_live(ident, e.location)),
            EntryKind::History => {
                self.resolve_key(e.id).is_some()
                    && entries::history::arrival(e.data).is_ok_and(|a| self.journal.keeps(a, now))
            }
            EntryKind::SourceOffset => self.sources.get(&e.id).map(|s| s.1) == loc,
        }
    }

    /// Point every entry that moved in a compaction at its new location (only where the
    /// index still points at the old one: newer versions written meanwhile stay).
    pub fn relocate(&mut self, kind_: u8, id: u64, old: Location, new: Location) {
        fn swap(slot: &mut Location, old: Location, new: Location) {
            if *slot == old {
                *slot = new;
            }
        }
        let Ok(kind) = EntryKind::try_from(kind_) else {
            return;
        };
        match kind {
            EntryKind::Profile | EntryKind::ProfileDelta => self.profiles.relocate(id, old, new),
            // Liveness by membership: nothing to point elsewhere.
            EntryKind::Tombstone
            | EntryKind::Redirect
            | EntryKind::Dedupe
            | EntryKind::DedupeBlock
            | EntryKind::Forward => {}
            EntryKind::Company => {
                if let Some(cid) = self.company_ids.get(&id)
                    && let Some(slot) = self.companies.get_mut(cid)
                {
                    swap(&mut slot.location, old, new)
                }
            }
            EntryKind::PropName => {
                if let Some(n) = self.names.get_mut(id as usize) {
                    swap(&mut n.1, old, new)
                }
            }
            EntryKind::Suppress => {
                if let Some(d) = self.suppressed.get_mut(&id) {
                    swap(&mut d.1, old, new)
                }
            }
            EntryKind::SourceOffset => {
                if let Some(s) = self.sources.get_mut(&id) {
                    swap(&mut s.1, old, new)
                }
            }
            EntryKind::NextKey => {
                if let Some(l) = self.next_key_location.as_mut() {
                    swap(l, old, new)
                }
            }
            // Many per profile: moved all at once by `relocate_journal`.
            EntryKind::History | EntryKind::GuardLink | EntryKind::Quarantine => {}
        }
    }

    /// Whether a messageId hash was applied within the window.
    pub fn seen_message(&self, hash: u128) -> bool {
        self.dedupe.contains(hash)
    }

    /// [`Index::seen_message`]: `None` when seen, else what the probe found, for
    /// [`Index::insert_message`] at the call's commit.
    pub fn message_absent(&self, hash: u128) -> Option<window::Absent> {
        self.dedupe.absent(hash)
    }

    /// What [`Index::apply`] does for [`Update::Dedupe`] of the hash `absent` probed for,
    /// without probing the window again (`Window::insert_absent`).
    pub fn insert_message(&mut self, absent: window::Absent) {
        self.dedupe.insert_absent(absent);
    }

    /// Whether an identifier hash is suppressed.
    pub fn is_suppressed(&self, hash: u128) -> bool {
        self.suppressed.get(&(hash as u64)).map(|d| d.0) == Some((hash >> 64) as u64)
    }

    /// Every suppressed identifier hash, in no particular order.
    pub fn suppressed_hashes(&self) -> impl Iterator<Item = u128> + '_ {
        self.suppressed
            .iter()
            .map(|(&lo, &(hi, _))| (u128::from(hi) << 64) | u128::from(lo))
    }

    /// Forget a suppression (its entry is then no longer live, so the next compaction drops it
    /// from disk). Returns whether it was there.
    pub fn lift_suppression(&mut self, hash: u128) -> bool {
        if !self.is_suppressed(hash) {
            return false;
        }
        self.suppressed.remove(&(hash as u64)).is_some()
    }

    /// The position applied up to in an external log's topic partition, if any call from it
    /// was applied.
    pub fn source_offset(&self, topic: &str, partition: i32) -> Option<&SourceOffset> {
        self.sources
            .get(&entries::source_id(topic, partition))
            .map(|s| &s.0)
            .filter(|s| s.topic == topic && s.partition == partition)
    }

    /// Bytes of the live entries the index points at.
    pub fn live_bytes(&self) -> u64 {
        let p: u64 = self.profiles.iter().map(|(_, l)| l.len as u64).sum();
        let c: u64 = self.companies.values().map(|s| s.location.len as u64).sum();
        let r = self.redirects.len() as u64 * 8;
        // A messageId costs 16 bytes once compaction has packed it; a suppression 8 and up.
        let d = self.dedupe.len() as u64 * 16 + self.suppressed.len() as u64 * 8;
        let n: u64 = self.names.iter().map(|n| n.1.len as u64).sum();
        let s: u64 = self.sources.values().map(|s| s.1.len as u64).sum();
        p + c + r + d + n + s
    }

    /// Heap bytes of the index, by part, counted from the real allocation sizes (every hash
    /// table bucket with its control byte at the table's actual load, vector capacities, and
    /// 16 bytes of allocator overhead per separate allocation).
    pub fn memory(&self) -> Memory {
        let id_bytes = self.user.id_bytes() + self.email.id_bytes() + self.anon.id_bytes();
        let sources: usize = self
            .redirect_sources
            .values()
            .map(|v| v.capacity() * 8 + 16)
            .sum();
        let profiles = self.user.heap_bytes()
            + self.email.heap_bytes()
            + self.anon.heap_bytes()
            + self.profiles.heap_bytes()
            + (map_bytes(&self.redirects) + map_bytes(&self.redirect_sources) + sources) as u64;
        let dedupe = self.dedupe.heap_bytes();
        let boxed = |s: &str| s.len() + 16;
        let other = map_bytes(&self.company_ids)
            + self.company_ids.values().map(|s| boxed(s)).sum::<usize>()
            + map_bytes(&self.companies)
            + self
                .companies
                .iter()
                .map(|(id, s)| boxed(id) + table_bytes::<u64>(s.members.capacity()))
                .sum::<usize>()
            + self.name_ids.heap_bytes()
            + self.names.capacity() * std::mem::size_of::<(Box<str>, Location)>()
            + self.names.iter().map(|n| boxed(&n.0)).sum::<usize>()
            + map_bytes(&self.suppressed)
            + self.forwards.heap_bytes()
            + table_bytes::<Location>(self.linked.capacity());
        Memory {
            profiles,
            id_bytes,
            dedupe,
            other: other as u64,
        }
    }
}

/// Heap bytes of a std (hashbrown) map: its buckets (a power of two, at most 7/8 full), each
/// with an entry and a control byte, plus a group of trailing control bytes.
pub(crate) fn map_bytes<K, V, S>(m: &std::collections::HashMap<K, V, S>) -> usize {
    table_bytes::<(K, V)>(m.capacity())
}

/// Heap bytes of a hashbrown table able to hold `cap` items of type `T`.
pub(crate) fn table_bytes<T>(cap: usize) -> usize {
    let buckets = match cap {
        0 => return 0,
        1..8 => cap + 1,
        _ => (cap * 8 / 7).next_power_of_two(),
    };
    buckets * (std::mem::size_of::<T>() + 1) + 16
}

/// Estimated bytes of the in-memory index, by part.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// Identifier maps, key -> location, redirects (identifier bytes included).
    pub profiles: u64,
    /// The identifier bytes alone.
    pub id_bytes: u64,
    /// The messageId dedupe window (sized by `Options::dedupe_window`, not by profiles).
    pub dedupe: u64,
    /// Companies, property names, suppressions.
    pub other: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u32) -> Location {
        Location {
            segment: 1,
            offset: n,
            len: 10,
        }
    }

    #[test]
    fn flattening_on_open_points_every_key_of_a_long_chain_at_its_end() {
        // As a replay leaves them: each entry names the key it was merged into.
        let mut index = Index::default();
        let n = 5000u64;
        for k in 1..n {
            index.redirects.insert(k, k + 1);
        }
        index.profiles.insert(n, at(1));
        index.flatten_redirects();
        for k in 1..n {
            assert_eq!(index.redirects[&k], n, "key {k}");
            assert_eq!(index.resolve_key(k), Some(n));
        }
        assert_eq!(index.redirect_sources[&n].len() as u64, n - 1);
    }

    #[test]
    fn redirects_stay_flat_whatever_the_order_of_entries() {
        // The chain 1 -> 2 -> 3 -> 4 (4 live), in merge order and in two other orders.
        for order in [
            [(1, 2), (2, 3), (3, 4)],
            [(3, 4), (2, 3), (1, 2)],
            [(2, 3), (1, 2), (3, 4)],
        ] {
            let mut index = Index::default();
            index.profiles.insert(4, at(1));
            for (from, to) in order {
                index.add_redirect(from, to);
            }
            for k in 1..=4 {
                assert_eq!(index.resolve_key(k), Some(4), "{order:?}: key {k}");
            }
            for k in 1..=3 {
                assert_eq!(index.redirects[&k], 4, "{order:?}: key {k} is flat");
            }
            // A snapshot loses the sources; flattening rebuilds them.
            let mut loaded = index.clone();
            loaded.redirect_sources.clear();
            loaded.flatten_redirects();
            loaded.profiles.insert(5, at(9));
            loaded.add_redirect(4, 5);
            for k in 1..=4 {
                assert_eq!(
                    loaded.redirects[&k], 5,
                    "{order:?}: key {k} after a snapshot"
                );
            }
        }
    }
}
