//! The in-memory indexes: identifiers -> profile key -> record location, plus the small
//! registries the rules need (property names, companies, recent messageIds, suppressions).
//! The whole structure is what the hint file snapshots.

use std::collections::VecDeque;

/// Hash maps of the index: foldhash is several times faster than SipHash on short keys and
/// still seeded per process (identifiers come from untrusted clients).
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// Hash sets of the index.
pub(crate) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

use serde::{Deserialize, Serialize};

use crate::entries::{Ids, kind};
use crate::profile::validate::normalize_email;
use crate::storage::{Location, StoredEntry};

/// A company's place in the index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CompanySlot {
    pub key: u64,
    pub location: Location,
    pub members: HashSet<u64>,
}

/// Everything the Db keeps in memory about the data on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    pub user: HashMap<Box<str>, u64>,
    /// Normalised (trimmed, lower-cased) email -> key.
    pub email: HashMap<Box<str>, u64>,
    pub anon: HashMap<Box<str>, u64>,
    /// Live profile key -> location of its newest record.
    pub profiles: HashMap<u64, Location>,
    /// Merged-away key -> (survivor key, location of the redirect entry).
    pub redirects: HashMap<u64, (u64, Location)>,
    pub companies: HashMap<Box<str>, CompanySlot>,
    /// Company key -> company id (for liveness checks by key).
    pub company_ids: HashMap<u64, Box<str>>,
    /// Property names by number, with the location of their registration.
    pub names: Vec<(Box<str>, Location)>,
    pub name_ids: HashMap<Box<str>, u32>,
    /// Recent messageId hashes (low half, oldest first), and per low half the high half and
    /// where it is recorded. Keyed by the low half, which is also the entry id.
    pub dedupe_order: VecDeque<u64>,
    pub dedupe: HashMap<u64, (u64, Location)>,
    /// Suppressed identifier hashes, keyed the same way.
    pub suppressed: HashMap<u64, (u64, Location)>,
    pub next_key: u64,
    pub next_key_location: Option<Location>,
    pub next_company_key: u64,
    /// Sequence number of the newest frame applied (arrival order of calls).
    pub last_seq: u64,
}

impl Index {
    /// Follow redirects from `key` to a live profile.
    pub fn resolve_key(&self, mut key: u64) -> Option<u64> {
        for _ in 0..64 {
            if self.profiles.contains_key(&key) {
                return Some(key);
            }
            key = self.redirects.get(&key)?.0;
        }
        None
    }

    /// Remove the identifiers of `ids` that point to `key`; leave membership consistent.
    pub fn unindex(&mut self, key: u64, ids: &Ids) {
        if let Some(u) = &ids.user_id {
            remove_if(&mut self.user, u, key);
        }
        if let Some(e) = &ids.email {
            remove_if(&mut self.email, &normalize_email(e), key);
        }
        for a in &ids.anonymous_ids {
            remove_if(&mut self.anon, a, key);
        }
        if let Some(c) = &ids.company_id
            && let Some(slot) = self.companies.get_mut(c.as_str())
        {
            slot.members.remove(&key);
        }
    }

    /// Point the identifiers of `ids` at `key`; add membership.
    pub fn index(&mut self, key: u64, ids: &Ids) {
        if let Some(u) = &ids.user_id {
            self.user.insert(u.as_str().into(), key);
        }
        if let Some(e) = &ids.email {
            self.email.insert(normalize_email(e).into(), key);
        }
        for a in &ids.anonymous_ids {
            self.anon.insert(a.as_str().into(), key);
        }
        if let Some(c) = &ids.company_id
            && let Some(slot) = self.companies.get_mut(c.as_str())
        {
            slot.members.insert(key);
        }
    }

    /// Remember a messageId hash, forgetting the oldest beyond `window`.
    pub fn remember_message(&mut self, hash: u128, location: Location, window: usize) {
        let (lo, hi) = (hash as u64, (hash >> 64) as u64);
        if self.dedupe.insert(lo, (hi, location)).is_none() {
            self.dedupe_order.push_back(lo);
        }
        while self.dedupe_order.len() > window {
            if let Some(old) = self.dedupe_order.pop_front() {
                self.dedupe.remove(&old);
            }
        }
    }

    /// Whether the entry is the current version of what it records (compaction keeps it).
    pub fn is_live(&self, e: &StoredEntry<'_>) -> bool {
        let loc = Some(e.location);
        match e.kind {
            kind::PROFILE => self.profiles.get(&e.id).copied() == loc,
            kind::REDIRECT => self.redirects.get(&e.id).map(|r| r.1) == loc,
            kind::COMPANY => {
                self.company_ids
                    .get(&e.id)
                    .and_then(|id| self.companies.get(id))
                    .map(|s| s.location)
                    == loc
            }
            kind::PROP_NAME => self.names.get(e.id as usize).map(|n| n.1) == loc,
            kind::DEDUPE => self.dedupe.get(&e.id).map(|d| d.1) == loc,
            kind::SUPPRESS => self.suppressed.get(&e.id).map(|d| d.1) == loc,
            kind::NEXT_KEY => self.next_key_location == loc,
            _ => false,
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
        match kind_ {
            kind::PROFILE => {
                if let Some(l) = self.profiles.get_mut(&id) {
                    swap(l, old, new)
                }
            }
            kind::REDIRECT => {
                if let Some(r) = self.redirects.get_mut(&id) {
                    swap(&mut r.1, old, new)
                }
            }
            kind::COMPANY => {
                if let Some(cid) = self.company_ids.get(&id)
                    && let Some(slot) = self.companies.get_mut(cid)
                {
                    swap(&mut slot.location, old, new)
                }
            }
            kind::PROP_NAME => {
                if let Some(n) = self.names.get_mut(id as usize) {
                    swap(&mut n.1, old, new)
                }
            }
            kind::DEDUPE => {
                if let Some(d) = self.dedupe.get_mut(&id) {
                    swap(&mut d.1, old, new)
                }
            }
            kind::SUPPRESS => {
                if let Some(d) = self.suppressed.get_mut(&id) {
                    swap(&mut d.1, old, new)
                }
            }
            kind::NEXT_KEY => {
                if let Some(l) = self.next_key_location.as_mut() {
                    swap(l, old, new)
                }
            }
            _ => {}
        }
    }

    /// Whether a messageId hash was applied within the window.
    pub fn seen_message(&self, hash: u128) -> bool {
        self.dedupe.get(&(hash as u64)).map(|d| d.0) == Some((hash >> 64) as u64)
    }

    /// Whether an identifier hash is suppressed.
    pub fn is_suppressed(&self, hash: u128) -> bool {
        self.suppressed.get(&(hash as u64)).map(|d| d.0) == Some((hash >> 64) as u64)
    }

    /// Bytes of the live entries the index points at.
    pub fn live_bytes(&self) -> u64 {
        let p: u64 = self.profiles.values().map(|l| l.len as u64).sum();
        let c: u64 = self.companies.values().map(|s| s.location.len as u64).sum();
        let r = self.redirects.len() as u64 * 8;
        let d = (self.dedupe.len() + self.suppressed.len()) as u64 * 8;
        let n: u64 = self.names.iter().map(|n| n.1.len as u64).sum();
        p + c + r + d + n
    }

    /// Estimated heap bytes of the index, and of the identifier strings within it.
    pub fn memory(&self) -> (u64, u64) {
        fn map<K, V>(m: &HashMap<K, V>) -> u64 {
            // hashbrown: one control byte per bucket plus the entries.
            (m.capacity() as u64) * (std::mem::size_of::<(K, V)>() as u64 + 1)
        }
        let id_bytes: u64 = self.user.keys().map(|k| k.len() as u64).sum::<u64>()
            + self.email.keys().map(|k| k.len() as u64).sum::<u64>()
            + self.anon.keys().map(|k| k.len() as u64).sum::<u64>();
        let total = map(&self.user)
            + map(&self.email)
            + map(&self.anon)
            + map(&self.profiles)
            + map(&self.redirects)
            + map(&self.company_ids)
            + map(&self.name_ids)
            + map(&self.dedupe)
            + map(&self.suppressed)
            + self
                .companies
                .values()
                .map(|s| s.members.capacity() as u64 * 9)
                .sum::<u64>()
            + id_bytes;
        (total, id_bytes)
    }
}

fn remove_if(map: &mut HashMap<Box<str>, u64>, k: &str, key: u64) {
    if map.get(k) == Some(&key) {
        map.remove(k);
    }
}
