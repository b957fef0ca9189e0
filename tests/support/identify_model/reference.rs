//! The one reference model of the identify rules (docs/semantics.md; SPEC 3.2-3.6 in
//! docs/spec.md), shared by every suite that compares a store with a model: `model_based`
//! (random calls over a small pool of identifiers), the call stream of `identify_model/`
//! (`crash_kill9`, `fsync_eio`, `write_errors`, `torn_tail`, `midlog_corruption`) and the
//! power-loss workload of `crash.rs` (`powerloss_sim`, `compaction_crash_matrix`,
//! `recovery_crash`). Each of those turns its own calls into [`Call`]s; the rules live here
//! only.
//!
//! Plain and slow on purpose (linear scans, no index): a profile is found by scanning every
//! profile for the identifier. Covered: identifier resolution and survivor choice, merges
//! (identifiers, company, properties, counters, `created_at`), the protection rule (an email or
//! anonymous id moves away from a profile with another user id), property sets (last write wins
//! by timestamp), `$add` counters, an explicit `created_at` trait, duplicates by `messageId`,
//! delete (optionally suppressing the identifiers), unlink, merged-away keys; and the identity
//! journal's rules (issue 16, docs/journal.md): the **guard** (an email or anonymous id moved by
//! the protection rule between more than `guard_max_user_ids` distinct user ids is quarantined:
//! calls carrying it neither find, merge nor move through it, the outcome lists it, a call
//! left with no identifier is refused) and **unmerge** (the documented rule, computed from
//! whole-profile snapshots kept per call: [`Reference::with_journal`], [`Reference::unmerge`]).
//! Not covered: `$set_once`, `$unset`, list operations, late calls arriving out of order
//! (`order_independence` and `property_rules` check those); the guard's window (the model's
//! window never ends: suites use a window far longer than the run); unmerge of profiles with
//! `$add` counters (it panics: no suite mixes the two).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use profiledb::Status;
use serde_json::Value as Json;

/// The lookup form of an email (trimmed, lower-cased), as the store looks emails up.
pub fn norm(email: &str) -> String {
    email.trim().to_lowercase()
}

/// One call as the model sees it. Timestamps are any increasing numbers the suite chooses.
#[derive(Debug, Clone, Default)]
pub struct Call<'a> {
    pub user_id: Option<&'a str>,
    pub email: Option<&'a str>,
    pub anonymous_id: Option<&'a str>,
    pub company_id: Option<&'a str>,
    /// Traits set (last write wins by timestamp).
    pub sets: Vec<(&'a str, Json)>,
    /// `$add` increments.
    pub adds: Vec<(&'a str, i64)>,
    /// An explicit `created_at` trait, on the suite's timestamp scale.
    pub created_at: Option<i64>,
    pub timestamp: i64,
    /// A `messageId` (every call with one is within the store's dedupe window).
    pub message_id: Option<&'a str>,
}

/// A profile of the model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    pub user_id: Option<String>,
    /// As last given.
    pub email: Option<String>,
    pub anonymous_ids: Vec<String>,
    pub company_id: Option<String>,
    /// name -> (timestamp of the newest set, value).
    pub sets: BTreeMap<String, (i64, Json)>,
    /// name -> sum of the increments.
    pub adds: BTreeMap<String, i64>,
    /// Timestamp of the earliest call applied (the default `created_at`, SPEC 3.4).
    pub first_seen: i64,
    /// An explicit `created_at` trait.
    pub created: Option<i64>,
    /// The timestamp of the call whose `created_at` trait `created` holds (the property's
    /// stamp: a merge keeps the stamp of the side whose trait it keeps).
    pub created_stamp: i64,
}

impl Profile {
    /// The `created_at` shown: the trait, else the first call's timestamp (SPEC 3.4).
    pub fn created_at(&self) -> i64 {
        self.created.unwrap_or(self.first_seen)
    }

    /// The properties shown (sets and counters), by name.
    pub fn properties(&self) -> BTreeMap<String, Json> {
        let mut out: BTreeMap<String, Json> = (self.sets.iter())
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect();
        for (k, n) in &self.adds {
            out.insert(k.clone(), Json::from(*n));
        }
        out
    }
}

/// A refused call: nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It names a suppressed identifier.
    Suppressed,
    /// Every identifier it carried is quarantined by the guard; the field named (`anonymousId`
    /// when the call carried one, else `traits.email`).
    Quarantined(&'static str),
}

/// What an applied call did, as `Outcome` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub key: u64,
    pub status: Status,
    /// `email:VALUE` / `anonymous_id:VALUE` (as the call gave it): skipped because quarantined,
    /// or quarantined by this call; email before anonymous id, skips before new quarantines.
    pub quarantined: Vec<String>,
}

/// Which identifier a journal entry names: `("user_id" | "email" | "anonymous_id", value)`,
/// emails in their lookup form.
pub type Ident = (&'static str, String);

/// Why the model refuses an unmerge (the store's `UnmergeError`, without its fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmergeRefusal {
    NoSurvivor,
    Unknown,
    NotMergedInto,
    OutsideWindow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// A call landed on the profile.
    Call,
    /// Another call (protection) or an unlink took one of its identifiers.
    Identifiers,
    Unmerge,
}

/// One change to a live profile, as whole snapshots (the model keeps no undo records).
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: StepKind,
    /// The identifiers the call carried (before the guard's skips); empty for unlink/unmerge.
    pub carried: Vec<Ident>,
    /// The profile before (`None`: created by this call) and after.
    pub before: Option<Profile>,
    pub after: Profile,
    /// Profiles merged into this one by the call, as they were just before.
    pub merged: Vec<(u64, Profile)>,
}

/// A property's state as the unmerge rule compares it: the stamp (timestamp of the call that
/// decided it) and the value. `created_at` is one of them, as in the store.
type PropState = (i64, Json);

fn states(p: &Profile) -> BTreeMap<String, PropState> {
    assert!(
        p.adds.is_empty(),
        "the model's unmerge does not cover $add counters"
    );
    let mut out: BTreeMap<String, PropState> = p.sets.clone();
    if let Some(c) = p.created {
        out.insert("created_at".into(), (p.created_stamp, Json::from(c)));
    }
    out
}

fn set_state(p: &mut Profile, name: &str, state: Option<PropState>) {
    if name == "created_at" {
        match state {
            Some((stamp, v)) => {
                p.created = Some(v.as_i64().unwrap());
                p.created_stamp = stamp;
            }
            None => {
                p.created = None;
                p.created_stamp = 0;
            }
        }
    } else {
        match state {
            Some(s) => {
                p.sets.insert(name.to_string(), s);
            }
            None => {
                p.sets.remove(name);
            }
        }
    }
}

/// The identifiers a profile holds.
fn idents(p: &Profile) -> Vec<Ident> {
    let mut out: Vec<Ident> = Vec::new();
    out.extend(p.user_id.clone().map(|u| ("user_id", u)));
    out.extend(p.email.as_deref().map(|e| ("email", norm(e))));
    out.extend(p.anonymous_ids.iter().map(|a| ("anonymous_id", a.clone())));
    out
}

/// Names whose state differs between two snapshots.
fn changed(before: Option<&Profile>, after: &Profile) -> BTreeSet<String> {
    let b = before.map(states).unwrap_or_default();
    let a = states(after);
    (b.keys().chain(a.keys()))
        .filter(|n| b.get(*n) != a.get(*n))
        .cloned()
        .collect()
}

/// The model: every live profile by key, merged-away keys, suppressions, seen `messageId`s.
#[derive(Debug, Clone)]
pub struct Reference {
    pub profiles: BTreeMap<u64, Profile>,
    /// Merged-away key -> the key it was merged into.
    pub redirects: HashMap<u64, u64>,
    /// The key the next new profile gets (keys are never reused).
    pub next_key: u64,
    /// Suppressed user ids, emails (as given) and anonymous ids.
    pub suppressed_users: Vec<String>,
    pub suppressed_emails: Vec<String>,
    pub suppressed_anons: Vec<String>,
    seen: HashSet<String>,
    /// The guard's limit (`Options::guard_max_user_ids`; 0: off). Default: the store's.
    pub guard_max_user_ids: usize,
    /// Guarded identifier -> the user ids its moves linked it to.
    pub links: BTreeMap<Ident, BTreeSet<String>>,
    /// Quarantined identifier -> its text as listed (`email:VALUE` as the quarantining call
    /// gave it).
    pub quarantined: BTreeMap<Ident, String>,
    /// Applied calls whose outcome listed a quarantined identifier.
    pub guard_skipped_calls: u64,
    /// Every step of every profile, by key (`None`: the journal is off).
    pub journal: Option<BTreeMap<u64, Vec<Step>>>,
}

impl Default for Reference {
    fn default() -> Self {
        Reference {
            profiles: BTreeMap::new(),
            redirects: HashMap::new(),
            next_key: 1,
            suppressed_users: Vec::new(),
            suppressed_emails: Vec::new(),
            suppressed_anons: Vec::new(),
            seen: HashSet::new(),
            guard_max_user_ids: profiledb::Options::default().guard_max_user_ids,
            links: BTreeMap::new(),
            quarantined: BTreeMap::new(),
            guard_skipped_calls: 0,
            journal: None,
        }
    }
}

impl Reference {
    /// A model that keeps each profile's steps (for [`Reference::unmerge`]), with the guard's
    /// limit `guard_max_user_ids` (0: off).
    pub fn with_journal(guard_max_user_ids: usize) -> Reference {
        Reference {
            guard_max_user_ids,
            journal: Some(BTreeMap::new()),
            ..Reference::default()
        }
    }

    /// The quarantined identifiers as `Db::quarantined` lists them (sorted texts).
    pub fn quarantined_list(&self) -> Vec<String> {
        let mut v: Vec<String> = self.quarantined.values().cloned().collect();
        v.sort();
        v
    }

    fn record(&mut self, key: u64, step: Step) {
        if let Some(j) = self.journal.as_mut() {
            j.entry(key).or_default().push(step);
        }
    }

    pub fn by_user(&self, u: &str) -> Option<u64> {
        self.profiles
            .iter()
            .find(|(_, p)| p.user_id.as_deref() == Some(u))
            .map(|(k, _)| *k)
    }

    pub fn by_email(&self, e: &str) -> Option<u64> {
        self.profiles
            .iter()
            .find(|(_, p)| p.email.as_deref().map(norm) == Some(norm(e)))
            .map(|(k, _)| *k)
    }

    pub fn by_anon(&self, a: &str) -> Option<u64> {
        self.profiles
            .iter()
            .find(|(_, p)| p.anonymous_ids.iter().any(|x| x == a))
            .map(|(k, _)| *k)
    }

    /// The live profile a key names (a merged-away key resolves to its survivor).
    pub fn resolve(&self, mut key: u64) -> Option<u64> {
        loop {
            if self.profiles.contains_key(&key) {
                return Some(key);
            }
            key = *self.redirects.get(&key)?;
        }
    }

    /// Whether a call naming these identifiers is refused.
    pub fn refuses(&self, c: &Call<'_>) -> bool {
        c.user_id
            .is_some_and(|u| self.suppressed_users.iter().any(|s| s == u))
            || c.email
                .is_some_and(|e| self.suppressed_emails.iter().any(|s| norm(s) == norm(e)))
            || c.anonymous_id
                .is_some_and(|a| self.suppressed_anons.iter().any(|s| s == a))
    }

    /// Apply an identify-shaped call (identify; also group, alias and track, as the identifiers
    /// they name): the profile it lands on and the status. A `messageId` seen before answers
    /// `Duplicate` with the key the identifiers name now (0 if none), before any suppression
    /// check, as `Db` does.
    pub fn identify(&mut self, c: &Call<'_>) -> Result<(u64, Status), Refused> {
        self.identify_outcome(c).map(|o| (o.key, o.status))
    }

    /// [`Reference::identify`], with the guard's part of the outcome.
    pub fn identify_outcome(&mut self, c: &Call<'_>) -> Result<Outcome, Refused> {
        if let Some(id) = c.message_id
            && self.seen.contains(id)
        {
            let key = (c.user_id.and_then(|u| self.by_user(u)))
                .or_else(|| c.email.and_then(|e| self.by_email(e)))
                .or_else(|| c.anonymous_id.and_then(|a| self.by_anon(a)))
                .unwrap_or(0);
            return Ok(Outcome {
                key,
                status: Status::Duplicate,
                quarantined: Vec::new(),
            });
        }
        if self.refuses(c) {
            return Err(Refused::Suppressed);
        }
        // The guard: a quarantined identifier is dropped from the call (it finds nothing and
        // is attached to nothing); a call left with none is refused.
        let guard_on = self.guard_max_user_ids > 0;
        let mut quarantined = Vec::new();
        let mut email = c.email;
        let mut anon = c.anonymous_id;
        if guard_on {
            if let Some(e) = email.filter(|e| self.quarantined.contains_key(&("email", norm(e)))) {
                quarantined.push(format!("email:{e}"));
                email = None;
            }
            if let Some(a) = anon.filter(|a| {
                self.quarantined
                    .contains_key(&("anonymous_id", a.to_string()))
            }) {
                quarantined.push(format!("anonymous_id:{a}"));
                anon = None;
            }
            if c.user_id.is_none() && email.is_none() && anon.is_none() {
                return Err(Refused::Quarantined(if c.anonymous_id.is_some() {
                    "anonymousId"
                } else {
                    "traits.email"
                }));
            }
        }
        if let Some(id) = c.message_id {
            self.seen.insert(id.to_string());
        }
        let snapshot = self.journal.is_some().then(|| self.profiles.clone());
        let uid = c.user_id;
        let fu = uid.and_then(|u| self.by_user(u));
        let fe = email.and_then(|e| self.by_email(e));
        let fa = anon.and_then(|a| self.by_anon(a));
        let uid_of = |m: &Reference, k: u64| m.profiles[&k].user_id.clone();
        let others = [fe, fa];
        // Who survives (SPEC 3.2): the user id's profile; else, for a call with a user id, the
        // first other profile without one; else the first other profile with a user id, or
        // the first other profile.
        let survivor = if fu.is_some() {
            fu
        } else if uid.is_some() {
            others
                .iter()
                .flatten()
                .copied()
                .find(|k| uid_of(self, *k).is_none())
        } else {
            others
                .iter()
                .flatten()
                .copied()
                .find(|k| uid_of(self, *k).is_some())
                .or(others.iter().flatten().copied().next())
        };
        let mut status = Status::Updated;
        let survivor = survivor.unwrap_or_else(|| {
            let k = self.next_key;
            self.next_key += 1;
            self.profiles.insert(
                k,
                Profile {
                    first_seen: c.timestamp,
                    ..Profile::default()
                },
            );
            status = Status::Created;
            k
        });
        let s_uid = uid
            .map(str::to_string)
            .or_else(|| self.profiles[&survivor].user_id.clone());
        let mut merged = Vec::new();
        let mut moved_from = Vec::new();
        for (i, f) in others.iter().enumerate() {
            let Some(k) = *f else { continue };
            if k == survivor || merged.contains(&k) {
                continue;
            }
            let theirs = uid_of(self, k);
            if let (Some(theirs), Some(mine)) = (&theirs, &s_uid)
                && theirs != mine
            {
                // Protection (SPEC 3.2.4): the identifier moves, the profiles stay apart;
                // unless the guard finds the move links it to too many user ids: then it is
                // quarantined instead, and the call goes on without it.
                let (kind, value) = if i == 0 {
                    ("email", email.unwrap())
                } else {
                    ("anonymous_id", anon.unwrap())
                };
                if guard_on {
                    let ident: Ident = (kind, if i == 0 { norm(value) } else { value.into() });
                    let mut users = self.links.get(&ident).cloned().unwrap_or_default();
                    users.extend([theirs.clone(), mine.clone()]);
                    if users.len() > self.guard_max_user_ids {
                        self.links.remove(&ident);
                        let text = format!("{kind}:{value}");
                        self.quarantined.insert(ident, text.clone());
                        quarantined.push(text);
                        if i == 0 {
                            email = None;
                        } else {
                            anon = None;
                        }
                        continue;
                    }
                    self.links.insert(ident, users);
                }
                let p = self.profiles.get_mut(&k).unwrap();
                if i == 0 {
                    p.email = None;
                } else {
                    p.anonymous_ids.retain(|x| Some(x.as_str()) != anon);
                }
                if !moved_from.contains(&k) {
                    moved_from.push(k);
                }
            } else {
                merged.push(k);
            }
        }
        if !merged.is_empty() {
            status = Status::Merged;
        }
        let mut merged_profiles = Vec::new();
        for k in merged {
            let gone = self.profiles.remove(&k).unwrap();
            merged_profiles.push((k, gone.clone()));
            // Redirects stay flat (as the store keeps them): keys merged into `k` before now
            // name the survivor directly.
            for to in self.redirects.values_mut() {
                if *to == k {
                    *to = survivor;
                }
            }
            self.redirects.insert(k, survivor);
            let s = self.profiles.get_mut(&survivor).unwrap();
            // A merge keeps the earliest effective created_at; where one side has the trait,
            // the trait carries it (with the stamp of the side whose trait it keeps).
            match (s.created, gone.created) {
                (Some(a), Some(b)) => {
                    if b < a {
                        s.created = Some(b);
                        s.created_stamp = gone.created_stamp;
                    }
                }
                (None, Some(b)) => {
                    s.created = Some(b.min(s.first_seen));
                    s.created_stamp = gone.created_stamp;
                }
                (Some(a), None) => s.created = Some(a.min(gone.first_seen)),
                (None, None) => {}
            }
            s.first_seen = s.first_seen.min(gone.first_seen);
            if s.user_id.is_none() {
                s.user_id = gone.user_id;
            }
            if s.email.is_none() {
                s.email = gone.email;
            }
            for a in gone.anonymous_ids {
                if !s.anonymous_ids.contains(&a) {
                    s.anonymous_ids.push(a);
                }
            }
            if s.company_id.is_none() {
                s.company_id = gone.company_id;
            }
            for (name, (t, v)) in gone.sets {
                let e = s.sets.entry(name).or_insert((t, v.clone()));
                if t > e.0 {
                    *e = (t, v);
                }
            }
            for (name, n) in gone.adds {
                *s.adds.entry(name).or_insert(0) += n;
            }
        }
        let s = self.profiles.get_mut(&survivor).unwrap();
        if let Some(u) = uid {
            s.user_id = Some(u.to_string());
        }
        if let Some(e) = email {
            s.email = Some(e.to_string());
        }
        if let Some(a) = anon
            && !s.anonymous_ids.iter().any(|x| x == a)
        {
            s.anonymous_ids.push(a.to_string());
        }
        if let Some(co) = c.company_id {
            s.company_id = Some(co.to_string());
        }
        for (name, v) in &c.sets {
            let e = s
                .sets
                .entry(name.to_string())
                .or_insert((c.timestamp, v.clone()));
            if c.timestamp >= e.0 {
                *e = (c.timestamp, v.clone());
            }
        }
        for (name, n) in &c.adds {
            *s.adds.entry(name.to_string()).or_insert(0) += n;
        }
        if let Some(created) = c.created_at {
            // The suites' calls come in timestamp order: the trait set now wins.
            s.created = Some(created);
            s.created_stamp = c.timestamp;
        }
        s.first_seen = s.first_seen.min(c.timestamp);
        if !quarantined.is_empty() {
            self.guard_skipped_calls += 1;
        }
        if let Some(before) = snapshot {
            let mut carried: Vec<Ident> = Vec::new();
            carried.extend(c.user_id.map(|u| ("user_id", u.to_string())));
            carried.extend(c.email.map(|e| ("email", norm(e))));
            carried.extend(c.anonymous_id.map(|a| ("anonymous_id", a.to_string())));
            for k in moved_from {
                let step = Step {
                    kind: StepKind::Identifiers,
                    carried: carried.clone(),
                    before: before.get(&k).cloned(),
                    after: self.profiles[&k].clone(),
                    merged: Vec::new(),
                };
                self.record(k, step);
            }
            let step = Step {
                kind: StepKind::Call,
                carried,
                before: before.get(&survivor).cloned(),
                after: self.profiles[&survivor].clone(),
                merged: merged_profiles,
            };
            self.record(survivor, step);
        }
        Ok(Outcome {
            key: survivor,
            status,
            quarantined,
        })
    }

    /// Delete the profile of user id `u` (with `suppress`, also refuse its identifiers from
    /// now on); returns its key.
    pub fn delete(&mut self, u: &str, suppress: bool) -> Option<u64> {
        let k = self.by_user(u)?;
        let p = self.profiles.remove(&k).unwrap();
        if let Some(j) = self.journal.as_mut() {
            // A delete erases the profile's history and that of every profile merged into it.
            j.remove(&k);
            for (from, to) in &self.redirects {
                if *to == k {
                    j.remove(from);
                }
            }
        }
        if suppress {
            self.suppressed_users.extend(p.user_id);
            self.suppressed_emails.extend(p.email);
            self.suppressed_anons.extend(p.anonymous_ids);
        }
        Some(k)
    }

    /// Take anonymous id `a` off its profile; returns that profile's key.
    pub fn unlink(&mut self, a: &str) -> Option<u64> {
        let k = self.by_anon(a)?;
        let before = self.profiles[&k].clone();
        self.profiles
            .get_mut(&k)
            .unwrap()
            .anonymous_ids
            .retain(|x| x != a);
        let step = Step {
            kind: StepKind::Identifiers,
            carried: Vec::new(),
            before: Some(before),
            after: self.profiles[&k].clone(),
            merged: Vec::new(),
        };
        self.record(k, step);
        Some(k)
    }

    /// Undo the merge of `merged_key` into the live profile `survivor` (docs/journal.md
    /// "Unmerge", written from the rule's text over whole snapshots, not from the store's undo
    /// records): returns the survivor and the restored profile as they are after it. Needs the
    /// journal ([`Reference::with_journal`]); the model's window never ends.
    pub fn unmerge(
        &mut self,
        survivor: Option<u64>,
        merged_key: u64,
    ) -> Result<(Profile, Profile), UnmergeRefusal> {
        let survivor = survivor
            .and_then(|k| self.resolve(k))
            .ok_or(UnmergeRefusal::NoSurvivor)?;
        if self.profiles.contains_key(&merged_key) || merged_key == survivor {
            return Err(UnmergeRefusal::NotMergedInto);
        }
        match self.resolve(merged_key) {
            None => return Err(UnmergeRefusal::Unknown),
            Some(s) if s != survivor => return Err(UnmergeRefusal::NotMergedInto),
            Some(_) => {}
        }
        let journal = self.journal.as_ref().expect("unmerge needs the journal");
        let steps = journal.get(&survivor).map(Vec::as_slice).unwrap_or(&[]);
        let Some(at) = steps
            .iter()
            .rposition(|s| s.merged.iter().any(|(k, _)| *k == merged_key))
        else {
            // Merged into a profile that was merged into the survivor later: not this
            // survivor's merge.
            let via = (self.redirects.iter())
                .filter(|(_, to)| **to == survivor)
                .any(|(from, _)| {
                    (journal.get(from).into_iter().flatten())
                        .any(|s| s.merged.iter().any(|(k, _)| *k == merged_key))
                });
            return Err(if via {
                UnmergeRefusal::NotMergedInto
            } else {
                UnmergeRefusal::OutsideWindow
            });
        };
        let merge = &steps[at];
        let m = (merge.merged.iter())
            .find(|(k, _)| *k == merged_key)
            .map(|(_, p)| p.clone())
            .unwrap();
        let brought = idents(&m);
        let current = self.profiles[&survivor].clone();

        // 1. Attribution of each later step; what each changed and its state after.
        let mut restored = m.clone();
        let mut take_back: BTreeSet<String> = BTreeSet::new();
        // name -> the state after the newest later step that stays with the survivor.
        let mut survivor_last: BTreeMap<String, Option<PropState>> = BTreeMap::new();
        let mut kept: BTreeSet<Ident> = BTreeSet::new();
        for step in &steps[at + 1..] {
            let mine = step.kind == StepKind::Call
                && !step.carried.is_empty()
                && step.carried.iter().all(|x| brought.contains(x));
            let after = states(&step.after);
            for name in changed(step.before.as_ref(), &step.after) {
                let state = after.get(&name).cloned();
                if mine {
                    // 3. The restored profile takes the state as the survivor had it then.
                    set_state(&mut restored, &name, state);
                    take_back.insert(name);
                } else {
                    survivor_last.insert(name, state);
                }
            }
            if !mine {
                kept.extend(step.carried.iter().filter(|x| brought.contains(x)).cloned());
            }
        }
        // 4. The merging call: a property it left in M's state was brought by M; its other
        // changes are the survivor's own (unless a later survivor step changed them again).
        let before_merge = merge.before.as_ref().map(states).unwrap_or_default();
        let after_merge = states(&merge.after);
        let m_states = states(&m);
        for name in changed(merge.before.as_ref(), &merge.after) {
            let after = after_merge.get(&name);
            if m_states.contains_key(&name) && after == m_states.get(&name) {
                take_back.insert(name);
            } else {
                survivor_last.entry(name).or_insert_with(|| after.cloned());
            }
        }
        let mut s = current.clone();
        for name in &take_back {
            let own = match survivor_last.get(name) {
                Some(state) => state.clone(),
                None => before_merge.get(name).cloned(),
            };
            set_state(&mut s, name, own);
        }
        // 2. Identifiers: what M brought goes back if the survivor still holds it and no later
        // step staying with the survivor carried it.
        let on_survivor = idents(&current);
        let back = |x: Ident| on_survivor.contains(&x) && !kept.contains(&x);
        restored.user_id = m.user_id.clone().filter(|u| back(("user_id", u.clone())));
        if restored.user_id.is_some() {
            s.user_id = None;
        }
        restored.email = m.email.clone().filter(|e| back(("email", norm(e))));
        if restored.email.is_some() {
            s.email = None;
        }
        restored
            .anonymous_ids
            .retain(|a| back(("anonymous_id", a.clone())));
        s.anonymous_ids
            .retain(|a| !restored.anonymous_ids.contains(a));
        // 5. Times: the restored profile's first_seen is M's (kept from the clone); the
        // survivor's stay.

        self.redirects.remove(&merged_key);
        self.profiles.insert(survivor, s.clone());
        self.profiles.insert(merged_key, restored.clone());
        let unmerge_step = |before: Profile, after: &Profile| Step {
            kind: StepKind::Unmerge,
            carried: Vec::new(),
            before: Some(before),
            after: after.clone(),
            merged: Vec::new(),
        };
        let (a, b) = (unmerge_step(current, &s), unmerge_step(m, &restored));
        self.record(survivor, a);
        self.record(merged_key, b);
        Ok((s, restored))
    }
}
