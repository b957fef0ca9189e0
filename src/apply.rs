//! Applying one call to the store: the profile rules (resolution, merge, properties,
//! companies, removal) turned into one atomic batch of entries plus the index changes that
//! follow once the batch is appended. Nothing here mutates the index: a call that fails
//! half-way leaves no trace.

use crate::db::{Moved, Outcome, Status};
use crate::entries::{self, CompanyRecord, Ids, ProfileRecord, kind};
use crate::error::{Error, Result};
use crate::index::{CompanySlot, HashMap, Index};
use crate::options::Options;
use crate::profile::message::{CompanyRef, Identify, Message};
use crate::profile::props::{Applied, ListLimits, PropOp, PropState};
use crate::profile::resolve::{Found, resolve};
use crate::profile::validate::normalize_email;
use crate::profile::value::{Timestamp, Value};
use crate::storage::{Entry, Location, Store};

/// What to change in the index once the entry at the same position is appended.
#[derive(Debug)]
pub(crate) enum Change {
    Profile {
        key: u64,
        old: Option<Ids>,
        new: Ids,
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
    NextKey,
}

/// One call's writes.
pub(crate) struct Batch {
    pub entries: Vec<(u8, u64, Vec<u8>)>,
    pub changes: Vec<Change>,
    pub outcome: Outcome,
    /// The profile records written, decoded, with the position of their entry: they go to
    /// the [`ProfileCache`] once the batch is appended.
    pub written: Vec<(usize, u64, ProfileRecord)>,
}

/// Decoded profiles recently written, so that the next call on a hot profile skips reading
/// and decoding its record. Only writers use it, under the index write lock. An entry is used
/// only while the index still points at the location it was written to.
pub(crate) struct ProfileCache {
    map: HashMap<u64, (Location, ProfileRecord)>,
    capacity: usize,
}

impl ProfileCache {
    pub fn new(capacity: usize) -> Self {
        ProfileCache {
            map: HashMap::default(),
            capacity,
        }
    }

    fn take(&mut self, key: u64, at: Location) -> Option<ProfileRecord> {
        match self.map.remove(&key) {
            Some((loc, rec)) if loc == at => Some(rec),
            _ => None,
        }
    }

    /// Keep the records of an appended batch.
    pub fn insert_written(
        &mut self,
        written: Vec<(usize, u64, ProfileRecord)>,
        locations: &[Location],
    ) {
        if self.capacity == 0 {
            return;
        }
        for (entry, key, rec) in written {
            let Some(&loc) = locations.get(entry) else {
                continue;
            };
            if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
                // Evict an arbitrary entry: cheap, and fair enough for a hot set.
                if let Some(&victim) = self.map.keys().next() {
                    self.map.remove(&victim);
                }
            }
            self.map.insert(key, (loc, rec));
        }
    }

    /// Forget everything (after a compaction moved records).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

impl Batch {
    /// Borrowed entries for [`Store::append`].
    pub fn entries(&self) -> Vec<Entry<'_>> {
        self.entries
            .iter()
            .map(|(kind, id, data)| Entry {
                kind: *kind,
                id: *id,
                data,
            })
            .collect()
    }
}

/// Apply the changes of an appended batch to the index.
pub(crate) fn commit(
    index: &mut Index,
    changes: Vec<Change>,
    locations: &[Location],
    options: &Options,
) {
    for (change, &loc) in changes.into_iter().zip(locations) {
        match change {
            Change::Profile { key, old, new } => {
                if let Some(old) = old {
                    index.unindex(key, &old);
                }
                index.index(key, &new);
                index.profiles.insert(key, loc);
                index.next_key = index.next_key.max(key.saturating_add(1));
            }
            Change::Tombstone { key, old } => {
                index.unindex(key, &old);
                index.profiles.remove(&key);
            }
            Change::Redirect { from, to } => index.add_redirect(from, to, loc),
            Change::Company { key, id } => {
                let slot = index
                    .companies
                    .entry(id.as_str().into())
                    .or_insert_with(|| CompanySlot {
                        key,
                        ..CompanySlot::default()
                    });
                slot.location = loc;
                index.company_ids.insert(key, id.into());
                index.next_company_key = index.next_company_key.max(key.saturating_add(1));
            }
            Change::Name { id, name } => {
                debug_assert_eq!(index.names.len(), id as usize);
                index.names.push((name.as_str().into(), loc));
                index.name_ids.insert(name.into(), id);
            }
            Change::Dedupe { hash } => index.remember_message(hash, loc, options.dedupe_window),
            Change::Suppress { hash } => {
                index
                    .suppressed
                    .insert(hash as u64, ((hash >> 64) as u64, loc));
            }
            Change::NextKey => index.next_key_location = Some(loc),
        }
    }
}

/// Hash of a suppressed identifier (`domain` is `user_id`, `email` or `anonymous_id`).
pub(crate) fn suppression_hash(domain: &str, value: &str) -> u128 {
    entries::hash128(domain, value)
}

/// Hash of a messageId.
pub(crate) fn message_hash(message_id: &str) -> u128 {
    entries::hash128("message", message_id)
}

/// Read a profile record at a location.
pub(crate) fn read_profile(store: &Store, loc: Location) -> Result<ProfileRecord> {
    store.read(loc, |bytes| entries::decode(bytes, "profile"))?
}

/// Read a company record at a location.
pub(crate) fn read_company(store: &Store, loc: Location) -> Result<CompanyRecord> {
    store.read(loc, |bytes| entries::decode(bytes, "company"))?
}

/// Builds one call's batch against a read-only view of the index.
pub(crate) struct Builder<'a> {
    index: &'a Index,
    cache: &'a mut ProfileCache,
    written: Vec<(usize, u64, ProfileRecord)>,
    store: &'a Store,
    options: &'a Options,
    entries: Vec<(u8, u64, Vec<u8>)>,
    changes: Vec<Change>,
    new_names: Vec<String>,
    /// Records loaded or changed in this call, written once at the end.
    profiles: HashMap<u64, (Option<Ids>, ProfileRecord)>,
    profile_order: Vec<u64>,
    companies: HashMap<String, (u64, CompanyRecord)>,
    next_key: u64,
    next_company_key: u64,
    order: u64,
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
        Builder {
            index,
            cache,
            written: Vec::new(),
            store,
            options,
            entries: Vec::new(),
            changes: Vec::new(),
            new_names: Vec::new(),
            profiles: HashMap::default(),
            profile_order: Vec::new(),
            companies: HashMap::default(),
            next_key: index.next_key.max(1),
            next_company_key: index.next_company_key.max(1),
            // Saturating: a damaged log may end at seq 2^64-1 (the append then refuses).
            order: index.last_seq.saturating_add(1),
        }
    }

    fn push(&mut self, kind: u8, id: u64, data: Vec<u8>, change: Change) {
        self.entries.push((kind, id, data));
        self.changes.push(change);
    }

    /// Load a profile into the working set.
    fn load(&mut self, key: u64) -> Result<()> {
        if self.profiles.contains_key(&key) {
            return Ok(());
        }
        let loc = self
            .index
            .profiles
            .get(&key)
            .copied()
            .ok_or_else(|| Error::Corruption {
                file: Default::default(),
                offset: 0,
                reason: format!("index names profile {key} but it has no record"),
            })?;
        let rec = match self.cache.take(key, loc) {
            Some(rec) => rec,
            None => read_profile(self.store, loc)?,
        };
        self.profiles.insert(key, (Some(rec.ids.clone()), rec));
        self.profile_order.push(key);
        Ok(())
    }

    fn rec(&mut self, key: u64) -> &mut ProfileRecord {
        &mut self
            .profiles
            .get_mut(&key)
            .expect("profile loaded before use")
            .1
    }

    /// The number of a property name, registering it if new; `None` beyond the limit.
    fn name_id(&mut self, name: &str) -> Option<u32> {
        if let Some(&id) = self.index.name_ids.get(name) {
            return Some(id);
        }
        if let Some(pos) = self.new_names.iter().position(|n| n == name) {
            return Some((self.index.names.len() + pos) as u32);
        }
        let total = self.index.names.len() + self.new_names.len();
        if total >= self.options.max_property_names {
            return None;
        }
        self.new_names.push(name.to_string());
        let id = total as u32;
        self.push(
            kind::PROP_NAME,
            id as u64,
            name.as_bytes().to_vec(),
            Change::Name {
                id,
                name: name.to_string(),
            },
        );
        Some(id)
    }

    /// Finish: write every changed profile and company, the dedupe note.
    pub fn finish(mut self, outcome: Outcome, message_id: Option<&str>) -> Batch {
        // Companies before profiles so that membership finds its company slot.
        let mut companies: Vec<_> = std::mem::take(&mut self.companies).into_values().collect();
        companies.sort_by_key(|(k, _)| *k);
        for (key, rec) in companies {
            let data = entries::encode(&rec);
            self.push(
                kind::COMPANY,
                key,
                data,
                Change::Company { key, id: rec.id },
            );
        }
        for key in std::mem::take(&mut self.profile_order) {
            if let Some((old, rec)) = self.profiles.remove(&key) {
                // The previous version's size is a good guess of this one's.
                let guess = self
                    .index
                    .profiles
                    .get(&key)
                    .map_or(256, |l| l.len as usize + 128);
                let data = entries::encode_profile(&rec, guess);
                let new = rec.ids.clone();
                self.written.push((self.entries.len(), key, rec));
                self.push(kind::PROFILE, key, data, Change::Profile { key, old, new });
            }
        }
        if let Some(mid) = message_id {
            let hash = message_hash(mid);
            let (id, data) = entries::split_hash(hash);
            self.push(kind::DEDUPE, id, data.to_vec(), Change::Dedupe { hash });
        }
        Batch {
            entries: self.entries,
            changes: self.changes,
            outcome,
            written: self.written,
        }
    }

    /// Apply a message; returns the outcome (the batch comes from [`Builder::finish`]).
    pub fn apply(&mut self, message: &Message) -> Result<Outcome> {
        let now = Timestamp::now();
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
                let target = self.index.user.get(a.user_id.as_str()).copied();
                if let Some(&prev) = self.index.user.get(a.previous_id.as_str()) {
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
                        .and_then(|u| self.index.user.get(u))
                        .or_else(|| {
                            l.anonymous_id
                                .as_deref()
                                .and_then(|a| self.index.anon.get(a))
                        })
                        .copied()
                        .unwrap_or(0);
                    Ok(outcome(key, Status::Unchanged))
                }
            }
        }
    }

    /// Refuse a call naming a suppressed identifier; the error names the field as the caller
    /// wrote it (an alias's `previousId`, an email given in `$set`).
    pub fn check_suppressed(&self, message: &Message) -> Result<()> {
        if self.index.suppressed.is_empty() {
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
                        normalize_email(e),
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
        user.and_then(|u| index.user.get(u).copied())
            .or_else(|| email.and_then(|e| index.email.get(normalize_email(e).as_str()).copied()))
            .or_else(|| anon.and_then(|a| index.anon.get(a).copied()))
            .unwrap_or(0)
    }

    fn identify(&mut self, m: &Identify, ts: Timestamp) -> Result<Outcome> {
        let uid = m.user_id.as_deref();
        let email_norm = m.email.as_deref().map(normalize_email);
        let anon = m.anonymous_id.as_deref();
        let by_user = uid.and_then(|u| self.index.user.get(u).copied());
        let by_email = email_norm
            .as_deref()
            .and_then(|e| self.index.email.get(e).copied());
        let by_anon = anon.and_then(|a| self.index.anon.get(a).copied());
        for key in [by_user, by_email, by_anon].into_iter().flatten() {
            self.load(key)?;
        }
        let found = |key: Option<u64>| {
            key.map(|k| Found {
                key: k,
                user_id: self.profiles[&k].1.ids.user_id.as_deref(),
            })
        };
        let plan = resolve(uid, found(by_user), found(by_email), found(by_anon));

        let mut out = outcome(0, Status::Updated);
        let survivor = match plan.survivor {
            Some(k) => k,
            None => {
                let k = take_key(&mut self.next_key, "profile", self.store)?;
                let rec = ProfileRecord {
                    first_seen: ts,
                    updated_at: ts,
                    ..ProfileRecord::default()
                };
                self.profiles.insert(k, (None, rec));
                self.profile_order.push(k);
                out.status = Status::Created;
                k
            }
        };
        out.key = survivor;

        // Protection: identifiers move instead of profiles merging.
        if let (Some(from), Some(email)) = (plan.take_email_from, m.email.as_ref()) {
            self.rec(from).ids.email = None;
            out.moved.push(Moved {
                identifier: "email".into(),
                value: email.clone(),
                from,
            });
        }
        if let (Some(from), Some(a)) = (plan.take_anonymous_id_from, anon) {
            self.rec(from).ids.anonymous_ids.retain(|x| x != a);
            out.moved.push(Moved {
                identifier: "anonymous_id".into(),
                value: a.to_string(),
                from,
            });
        }

        // Merges: the merged-away profiles go, their keys redirect to the survivor.
        for &gone in &plan.merge {
            let Some((old, rec)) = self.profiles.remove(&gone) else {
                continue;
            };
            self.profile_order.retain(|k| *k != gone);
            let created_at = self.index.name_ids.get("created_at").copied();
            merge_into(self.rec(survivor), rec, created_at);
            self.push(
                kind::TOMBSTONE,
                gone,
                Vec::new(),
                Change::Tombstone {
                    key: gone,
                    old: old.unwrap_or_default(),
                },
            );
            self.push(
                kind::REDIRECT,
                gone,
                entries::u64_bytes(survivor).to_vec(),
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
        {
            let rec = self.rec(survivor);
            if let Some(u) = uid {
                rec.ids.user_id = Some(u.to_string());
            }
            if let Some(e) = &m.email {
                rec.ids.email = Some(e.clone());
            }
            if let Some(a) = anon
                && !rec.ids.anonymous_ids.iter().any(|x| x == a)
            {
                rec.ids.anonymous_ids.push(a.to_string());
            }
            let extra = rec.ids.anonymous_ids.len().saturating_sub(max_anon);
            rec.ids.anonymous_ids.drain(..extra);
        }

        if let Some(company) = &m.company {
            self.upsert_company(company, ts)?;
            self.rec(survivor).ids.company_id = Some(company.id.clone());
        }

        // Properties (SPEC 3.3, 3.5). All operations of a call share its stamp; they apply in
        // PostHog's order: traits / `$set`, `$set_once`, `$add`, and `$unset` last. So a name
        // the call also `$unset`s gets only the removal (whatever came before it in the call
        // would be removed by it), and a `$set_once` counts as older than an `$add` of the same
        // call (`PropState` treats equal stamps so).
        let order = self.order;
        let unset_too = |name: &str| m.unset.iter().any(|u| u == name);
        let mut ops: Vec<(&str, PropOp)> = Vec::new();
        for (name, value) in &m.traits {
            if !unset_too(name) {
                ops.push((
                    name,
                    match value {
                        Some(v) => PropOp::Set(v.clone()),
                        None => PropOp::Unset,
                    },
                ));
            }
        }
        for (name, value) in &m.set_once {
            if !unset_too(name) {
                ops.push((name, PropOp::SetOnce(value.clone())));
            }
        }
        for (name, n) in &m.add {
            if !unset_too(name) {
                ops.push((name, PropOp::Add(*n)));
            }
        }
        for (name, list) in &m.lists {
            if !unset_too(name) {
                ops.push((name, PropOp::List(list.clone())));
            }
        }
        for name in &m.unset {
            ops.push((name, PropOp::Unset));
        }
        let list_limits = ListLimits {
            max_items: self.options.max_list_items,
            max_bytes: self.options.max_value_bytes,
        };
        for (name, op) in ops {
            // A removal registers a new name too, so that it is remembered with its
            // timestamp: an older set arriving later must not bring the property back (SPEC
            // 3.3, order independence; tests/order_independence.rs).
            let Some(id) = self.name_id(name) else {
                // Over the name limit. A removal loses nothing there (no profile can hold the
                // name, and a later set of it is refused too), so it is not reported.
                if !matches!(op, PropOp::Unset) {
                    out.ignored.push(name.to_string());
                }
                continue;
            };
            let rec = self.rec(survivor);
            let state = match rec.props.binary_search_by_key(&id, |p| p.0) {
                Ok(i) => &mut rec.props[i].1,
                Err(i) => {
                    rec.props.insert(i, (id, PropState::default()));
                    &mut rec.props[i].1
                }
            };
            let applied = match op {
                PropOp::List(list) => state.apply_list(list, ts, order, list_limits),
                op => state.apply_owned(op, ts, order),
            };
            if applied != Applied::Taken {
                out.ignored.push(name.to_string());
            }
        }
        let rec = self.rec(survivor);
        rec.updated_at = rec.updated_at.max(ts);
        rec.first_seen = rec.first_seen.min(ts);
        out.ignored.sort();
        out.ignored.dedup();
        Ok(out)
    }

    /// Upsert a company's own properties. Returns whether it was created.
    fn upsert_company(&mut self, company: &CompanyRef, ts: Timestamp) -> Result<bool> {
        let mut created = false;
        if !self.companies.contains_key(&company.id) {
            let (key, rec) = match self.index.companies.get(company.id.as_str()) {
                Some(slot) if slot.location.len > 0 => {
                    (slot.key, read_company(self.store, slot.location)?)
                }
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
            self.companies.insert(company.id.clone(), (key, rec));
        }
        let order = self.order;
        let rec = &mut self
            .companies
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
                    rec.props.insert(i, (name.clone(), PropState::default()));
                    &mut rec.props[i].1
                }
            };
            state.apply_owned(op, ts, order);
        }
        Ok(created)
    }

    /// Delete a profile (SPEC 3.6), optionally suppressing its identifiers.
    pub fn delete(&mut self, key: u64, suppress: bool) -> Result<Outcome> {
        self.load(key)?;
        let Some((_, rec)) = self.profiles.remove(&key) else {
            return Ok(outcome(key, Status::Unchanged));
        };
        self.profile_order.retain(|k| *k != key);
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
                self.push(kind::SUPPRESS, id, data.to_vec(), Change::Suppress { hash });
            }
        }
        self.push(
            kind::TOMBSTONE,
            key,
            Vec::new(),
            Change::Tombstone { key, old: rec.ids },
        );
        let next = self.next_key.max(key.saturating_add(1));
        self.push(
            kind::NEXT_KEY,
            0,
            entries::u64_bytes(next).to_vec(),
            Change::NextKey,
        );
        Ok(outcome(key, Status::Updated))
    }

    /// Detach an anonymous id from its profile (SPEC 3.6).
    pub fn unlink(&mut self, key: u64, anonymous_id: &str) -> Result<Outcome> {
        self.load(key)?;
        self.rec(key)
            .ids
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
    }
}

/// Merge a merged-away profile into the survivor (SPEC 3.2.3, 3.3, 3.4).
fn merge_into(survivor: &mut ProfileRecord, gone: ProfileRecord, created_at: Option<u32>) {
    // A merge keeps the earliest *effective* created_at (SPEC 3.4): the explicit trait where
    // it is a date-time, else the first call's timestamp.
    let earliest_created =
        effective_created_at(survivor, created_at).min(effective_created_at(&gone, created_at));
    let ids = &mut survivor.ids;
    if ids.user_id.is_none() {
        ids.user_id = gone.ids.user_id;
    }
    if ids.email.is_none() {
        ids.email = gone.ids.email;
    }
    for a in gone.ids.anonymous_ids {
        if !ids.anonymous_ids.contains(&a) {
            ids.anonymous_ids.push(a);
        }
    }
    if ids.company_id.is_none() {
        ids.company_id = gone.ids.company_id;
    }
    survivor.first_seen = survivor.first_seen.min(gone.first_seen);
    survivor.updated_at = survivor.updated_at.max(gone.updated_at);
    for (id, state) in gone.props {
        match survivor.props.binary_search_by_key(&id, |p| p.0) {
            Ok(i) => {
                let mine = &mut survivor.props[i].1;
                if Some(id) == created_at {
                    // A merge keeps the earliest created_at (SPEC 3.4).
                    if let (Some(Value::DateTime(a)), Some(Value::DateTime(b))) =
                        (mine.value(), state.value())
                    {
                        if b < a {
                            *mine = state;
                        }
                        continue;
                    }
                }
                mine.merge(&state);
            }
            Err(i) => survivor.props.insert(i, (id, state)),
        }
    }
    // Only one side had the trait, and the other side's default is earlier: the trait takes
    // that value, so that the property and the top-level created_at agree.
    if effective_created_at(survivor, created_at) != earliest_created
        && let Some(id) = created_at
        && let Ok(i) = survivor.props.binary_search_by_key(&id, |p| p.0)
    {
        survivor.props[i]
            .1
            .overwrite(Value::DateTime(earliest_created));
    }
}

/// A profile's created_at as shown (SPEC 3.4): the `created_at` property when it is a
/// date-time, else the timestamp of its first call (the view's rule).
pub(crate) fn effective_created_at(rec: &ProfileRecord, created_at: Option<u32>) -> Timestamp {
    created_at
        .and_then(|id| rec.props.binary_search_by_key(&id, |p| p.0).ok())
        .and_then(|i| match rec.props[i].1.value() {
            Some(Value::DateTime(ts)) => Some(ts),
            _ => None,
        })
        .unwrap_or(rec.first_seen)
}
