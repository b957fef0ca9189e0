//! Shared by the crash, fault and corruption tests: a deterministic stream of identify calls
//! (merges included), applied in order to the one reference model of the rules
//! ([`reference`], also used by `model_based` and `crash.rs`).
//!
//! Call `i` names one of a few people by user id only, by email only, or by both (which
//! merges the user-id profile and the email profile when both exist), and carries
//! `traits.last = i` and `$add {count: n}` with `messageId` `m-<i>`. Some calls are retries:
//! exactly the message of one of the 200 calls before, which must count once (a `Duplicate`).
//!
//! A person's user id and email are never given to anyone else, so protection (SPEC 3.2.4)
//! never applies and the model stays small. Every non-retry call sets `last` on the profile it
//! lands on and a merge keeps the newest `last`, so the largest `last` in a store tells which
//! prefix of the calls it holds: [`prefix_len`].
#![allow(dead_code)]

pub mod faults;
pub mod reference;

use std::collections::{BTreeMap, BTreeSet};

use profiledb::{Db, Message, Outcome, Profile, Selector, Status, Timestamp, Value};
use serde_json::json;

use reference::{Profile as ModelProfile, Reference};

/// People active at a time: calls `k * EPOCH .. (k + 1) * EPOCH` name people
/// `k * PERSONS .. (k + 1) * PERSONS`, so new people (and merges) keep coming.
pub const PERSONS: u64 = 6;
pub const EPOCH: u64 = 48;
/// Seconds since the epoch of call 0's timestamp (2026-01-01T00:00:00Z).
const BASE_SECS: i64 = 1_767_225_600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    UserOnly,
    EmailOnly,
    Both,
}

#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// Index in the stream (also the `messageId` and `last` value, unless a retry).
    pub i: u64,
    /// For a retry: the index of the call whose message is re-sent (never itself a retry).
    pub retry_of: Option<u64>,
    pub person: u64,
    pub names: Names,
    pub add: i64,
}

/// A hash of `x`: the first output of the crate's generator seeded with it.
fn mix(x: u64) -> u64 {
    profiledb::rng::SplitMix64(x).next_u64()
}

/// Call `i` of the stream for `seed` (a pure function: children and parents agree).
pub fn call(seed: u64, i: u64) -> Call {
    let h = mix(seed ^ mix(i));
    if i > 0 && h % 100 < 7 {
        // Retries re-send one of the last 200 calls: well within any dedupe window used.
        let mut j = i - 1 - mix(h) % i.min(200);
        loop {
            let c = call(seed, j);
            match c.retry_of {
                Some(k) => j = k,
                None => {
                    return Call {
                        i,
                        retry_of: Some(j),
                        ..c
                    };
                }
            }
        }
    }
    let names = match (h >> 8) % 3 {
        0 => Names::UserOnly,
        1 => Names::EmailOnly,
        _ => Names::Both,
    };
    Call {
        i,
        retry_of: None,
        person: (h >> 16) % PERSONS + PERSONS * (i / EPOCH),
        names,
        add: 1 + ((h >> 32) % 5) as i64,
    }
}

pub fn user(p: u64) -> String {
    format!("user-{p}")
}

pub fn email(p: u64) -> String {
    format!("p{p}@example.com")
}

fn timestamp(i: u64) -> String {
    Timestamp((BASE_SECS + i as i64) * 1_000_000).to_rfc3339()
}

/// The message a call sends (a retry sends its original's message verbatim).
pub fn message(c: &Call) -> Message {
    let i = c.retry_of.unwrap_or(c.i);
    let mut m = json!({
        "type": "identify",
        "messageId": format!("m-{i}"),
        "timestamp": timestamp(i),
        "traits": {"last": i},
        "$add": {"count": c.add},
    });
    if c.names != Names::EmailOnly {
        m["userId"] = json!(user(c.person));
    }
    if c.names != Names::UserOnly {
        m["traits"]["email"] = json!(email(c.person));
    }
    Message::from_json(&m).expect("workload message parses")
}

/// The model: the calls `0..applied` of one stream, applied in order to the one reference
/// model of the rules ([`reference::Reference`], reached through `Deref`: `profiles`,
/// `redirects`, `resolve`, ...).
#[derive(Debug, Clone)]
pub struct Model {
    pub seed: u64,
    pub applied: u64,
    /// Every person the applied calls named.
    pub persons: BTreeSet<u64>,
    pub rules: Reference,
}

impl std::ops::Deref for Model {
    type Target = Reference;
    fn deref(&self) -> &Reference {
        &self.rules
    }
}

impl Model {
    pub fn new(seed: u64) -> Model {
        Model {
            seed,
            applied: 0,
            persons: BTreeSet::new(),
            rules: Reference::default(),
        }
    }

    /// The model of the first `n` calls.
    pub fn of_prefix(seed: u64, n: u64) -> Model {
        let mut m = Model::new(seed);
        m.advance_to(n);
        m
    }

    /// Apply calls until `n` are applied.
    pub fn advance_to(&mut self, n: u64) {
        assert!(n >= self.applied, "the model only moves forward");
        while self.applied < n {
            let c = call(self.seed, self.applied);
            self.apply(&c);
        }
    }

    /// Apply the next call (`c.i` must be `applied`); returns the outcome's key and status.
    pub fn apply(&mut self, c: &Call) -> (u64, Status) {
        assert_eq!(c.i, self.applied);
        self.applied += 1;
        // A retry re-sends its original's message, `messageId` and timestamp included.
        let i = c.retry_of.unwrap_or(c.i);
        let (u, e) = (user(c.person), email(c.person));
        let message_id = format!("m-{i}");
        self.persons.insert(c.person);
        self.rules
            .identify(&reference::Call {
                user_id: (c.names != Names::EmailOnly).then_some(u.as_str()),
                email: (c.names != Names::UserOnly).then_some(e.as_str()),
                sets: vec![("last", json!(i))],
                adds: vec![("count", c.add)],
                timestamp: i as i64,
                message_id: Some(&message_id),
                ..reference::Call::default()
            })
            .expect("the stream suppresses nothing")
    }
}

/// Check an outcome returned by `Db` against the model's.
pub fn check_outcome(got: &Outcome, want: (u64, Status), ctx: &str) {
    assert_eq!((got.key, got.status), want, "{ctx}: outcome {got:?}");
}

/// How many calls of the stream a store holds, judged by the newest `last` it shows (0 if
/// empty). Every check below then compares the store with the model of exactly that prefix.
pub fn prefix_len(db: &Db) -> u64 {
    let mut n = 0;
    db.scan(&profiledb::Filter::All, &mut |p| {
        if let Some((_, Value::Int(l))) = p.properties.iter().find(|(k, _)| k == "last") {
            n = n.max(*l as u64 + 1);
        }
        true
    })
    .expect("scan");
    n
}

/// The properties a profile of the stream shows: `count` and `last`, both integers.
pub fn expected_props(m: &ModelProfile) -> Vec<(String, Value)> {
    (m.properties().into_iter())
        .map(|(k, v)| {
            let n = v.as_i64().expect("the stream sets integers only");
            (k, Value::Int(n))
        })
        .collect()
}

fn same(got: &Profile, key: u64, m: &ModelProfile, ctx: &str) {
    assert_eq!(got.key, key, "{ctx}");
    assert_eq!(got.user_id, m.user_id, "{ctx}: user id of {key}");
    assert_eq!(got.email, m.email, "{ctx}: email of {key}");
    assert!(got.anonymous_ids.is_empty(), "{ctx}: {got:?}");
    assert_eq!(
        got.properties,
        expected_props(m),
        "{ctx}: properties of {key}"
    );
}

/// Compare every profile of `db` with the model, through `scan` and through `get` by user id,
/// email, key and merged-away key; and check the store's own index/data consistency.
pub fn assert_db_matches(db: &Db, model: &Model, ctx: &str) {
    let mut seen = BTreeMap::new();
    db.scan(&profiledb::Filter::All, &mut |p| {
        seen.insert(p.key, p);
        true
    })
    .unwrap_or_else(|e| panic!("{ctx}: scan failed: {e}"));
    let got_keys: Vec<u64> = seen.keys().copied().collect();
    let want_keys: Vec<u64> = model.profiles.keys().copied().collect();
    assert_eq!(got_keys, want_keys, "{ctx}: profile keys");
    for (k, m) in &model.profiles {
        same(&seen[k], *k, m, ctx);
        let by_key = db
            .get(&Selector::Key(*k))
            .unwrap_or_else(|e| panic!("{ctx}: get key {k}: {e}"));
        assert_eq!(by_key.as_ref(), Some(&seen[k]), "{ctx}: get by key {k}");
    }
    // Every person the model knows, and a few it does not.
    let next = model.persons.last().map_or(0, |p| p + 1);
    for p in model.persons.iter().copied().chain(next..next + 3) {
        let u = db.get(&Selector::UserId(user(p))).expect("get by user");
        assert_eq!(u.map(|x| x.key), model.by_user(&user(p)), "{ctx}: user {p}");
        let e = db.get(&Selector::Email(email(p))).expect("get by email");
        assert_eq!(
            e.map(|x| x.key),
            model.by_email(&email(p)),
            "{ctx}: email {p}"
        );
    }
    for old in model.redirects.keys() {
        let got = db.get(&Selector::Key(*old)).expect("get merged-away key");
        assert_eq!(
            got.map(|x| x.key),
            model.resolve(*old),
            "{ctx}: merged-away key {old}"
        );
    }
    let problems = db.check().unwrap_or_else(|e| panic!("{ctx}: check: {e}"));
    assert!(problems.is_empty(), "{ctx}: check found {problems:?}");
}

/// Where one call's frame landed (`start == end`: the call wrote nothing, e.g. a duplicate).
#[derive(Debug, Clone, Copy)]
pub struct CallFrame {
    pub i: u64,
    pub segment: u32,
    pub start: u64,
    pub end: u64,
    pub status: Status,
}

/// The newest segment file of `dir` (the active one when no compaction ran): id and length.
pub fn newest_segment(dir: &std::path::Path) -> (u32, u64) {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".seg")?.parse::<u32>().ok()?;
            Some((id, e.metadata().unwrap().len()))
        })
        .max()
        .expect("a segment file")
}

pub fn segment_path(dir: &std::path::Path, id: u32) -> std::path::PathBuf {
    dir.join(format!("{id:010}.seg"))
}

/// Apply calls `0..n` of `seed` to a new store in `dir`, syncing after each to record where
/// its frame landed; `between(db, i)` runs after call `i`. The store is then abandoned without
/// a hint (its bytes are written out), so that the next open validates and replays every frame.
pub fn write_recorded(
    dir: &std::path::Path,
    options: profiledb::Options,
    seed: u64,
    n: u64,
    mut between: impl FnMut(&Db, u64),
) -> (Vec<CallFrame>, Model) {
    let db = Db::open(dir, options).unwrap();
    let mut model = Model::new(seed);
    let mut frames = Vec::new();
    for i in 0..n {
        let (segment, start) = newest_segment(dir);
        let c = call(seed, i);
        let out = db.apply(&message(&c)).unwrap();
        let want = model.apply(&c);
        check_outcome(&out, want, &format!("recording call {i}"));
        db.sync().unwrap();
        let mut end = std::fs::metadata(segment_path(dir, segment)).unwrap().len();
        let (mut segment, mut start) = (segment, start);
        let (newest, newest_len) = newest_segment(dir);
        if end == start && newest != segment {
            // The segment was full: the frame opened the next one (after its 32-byte header).
            (segment, start, end) = (newest, 32, newest_len);
        }
        frames.push(CallFrame {
            i,
            segment,
            start,
            end,
            status: out.status,
        });
        between(&db, i);
    }
    db.abandon();
    (frames, model)
}

/// Copy the files of `from` into a new directory `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
