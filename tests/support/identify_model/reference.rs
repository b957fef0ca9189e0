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
//! delete (optionally suppressing the identifiers), unlink, merged-away keys. Not covered:
//! `$set_once`, `$unset`, list operations, late calls arriving out of order (`order_independence`
//! and `property_rules` check those).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

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

/// A call naming a suppressed identifier: refused, nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed;

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
        }
    }
}

impl Reference {
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
    pub fn identify(&mut self, c: &Call<'_>) -> Result<(u64, Status), Suppressed> {
        if let Some(id) = c.message_id
            && self.seen.contains(id)
        {
            let key = (c.user_id.and_then(|u| self.by_user(u)))
                .or_else(|| c.email.and_then(|e| self.by_email(e)))
                .or_else(|| c.anonymous_id.and_then(|a| self.by_anon(a)))
                .unwrap_or(0);
            return Ok((key, Status::Duplicate));
        }
        if self.refuses(c) {
            return Err(Suppressed);
        }
        if let Some(id) = c.message_id {
            self.seen.insert(id.to_string());
        }
        let uid = c.user_id;
        let fu = uid.and_then(|u| self.by_user(u));
        let fe = c.email.and_then(|e| self.by_email(e));
        let fa = c.anonymous_id.and_then(|a| self.by_anon(a));
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
        for (i, f) in others.iter().enumerate() {
            let Some(k) = *f else { continue };
            if k == survivor || merged.contains(&k) {
                continue;
            }
            let theirs = uid_of(self, k);
            if theirs.is_some() && s_uid.is_some() && theirs != s_uid {
                // Protection (SPEC 3.2.4): the identifier moves, the profiles stay apart.
                let p = self.profiles.get_mut(&k).unwrap();
                if i == 0 {
                    p.email = None;
                } else {
                    p.anonymous_ids
                        .retain(|x| Some(x.as_str()) != c.anonymous_id);
                }
            } else {
                merged.push(k);
            }
        }
        if !merged.is_empty() {
            status = Status::Merged;
        }
        for k in merged {
            let gone = self.profiles.remove(&k).unwrap();
            self.redirects.insert(k, survivor);
            let s = self.profiles.get_mut(&survivor).unwrap();
            // A merge keeps the earliest effective created_at; where one side has the trait,
            // the trait carries it.
            let earliest = s.created_at().min(gone.created_at());
            if s.created.is_some() || gone.created.is_some() {
                s.created = Some(earliest);
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
        if let Some(e) = c.email {
            s.email = Some(e.to_string());
        }
        if let Some(a) = c.anonymous_id
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
        }
        s.first_seen = s.first_seen.min(c.timestamp);
        Ok((survivor, status))
    }

    /// Delete the profile of user id `u` (with `suppress`, also refuse its identifiers from
    /// now on); returns its key.
    pub fn delete(&mut self, u: &str, suppress: bool) -> Option<u64> {
        let k = self.by_user(u)?;
        let p = self.profiles.remove(&k).unwrap();
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
        self.profiles
            .get_mut(&k)
            .unwrap()
            .anonymous_ids
            .retain(|x| x != a);
        Some(k)
    }
}
