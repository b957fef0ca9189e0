//! Shared by the crash, fault and corruption tests: a deterministic stream of identify calls
//! (merges included) and a plain in-memory model of them applied in order.
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

use std::collections::{BTreeMap, HashMap};

use profiledb::{Db, Message, Outcome, Profile, Selector, Status, Timestamp, Value};
use serde_json::json;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MProfile {
    pub user: Option<u64>,
    pub email: Option<u64>,
    pub count: i64,
    pub last: u64,
}

/// The model: the calls `0..applied` of one stream, applied in order.
#[derive(Debug, Clone)]
pub struct Model {
    pub seed: u64,
    pub applied: u64,
    pub profiles: BTreeMap<u64, MProfile>,
    pub by_user: HashMap<u64, u64>,
    pub by_email: HashMap<u64, u64>,
    /// Merged-away key -> the key it was merged into.
    pub redirects: HashMap<u64, u64>,
    pub next_key: u64,
}

impl Model {
    pub fn new(seed: u64) -> Model {
        Model {
            seed,
            applied: 0,
            profiles: BTreeMap::new(),
            by_user: HashMap::new(),
            by_email: HashMap::new(),
            redirects: HashMap::new(),
            next_key: 1,
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
        let p = c.person;
        if c.retry_of.is_some() {
            // Its original is in the prefix, well within the dedupe window: nothing changes.
            let key = self
                .by_user
                .get(&p)
                .filter(|_| c.names != Names::EmailOnly)
                .or_else(|| self.by_email.get(&p).filter(|_| c.names != Names::UserOnly))
                .copied()
                .unwrap_or(0);
            return (key, Status::Duplicate);
        }
        let fu = (c.names != Names::EmailOnly)
            .then(|| self.by_user.get(&p).copied())
            .flatten();
        let fe = (c.names != Names::UserOnly)
            .then(|| self.by_email.get(&p).copied())
            .flatten();
        let mut status = Status::Updated;
        let survivor = match fu.or(fe) {
            Some(k) => k,
            None => {
                let k = self.next_key;
                self.next_key += 1;
                self.profiles.insert(
                    k,
                    MProfile {
                        user: None,
                        email: None,
                        count: 0,
                        last: 0,
                    },
                );
                status = Status::Created;
                k
            }
        };
        if let (Some(u), Some(e)) = (fu, fe)
            && u != e
        {
            let gone = self.profiles.remove(&e).expect("email profile");
            self.redirects.insert(e, u);
            let s = self.profiles.get_mut(&u).expect("survivor");
            s.count += gone.count;
            s.last = s.last.max(gone.last);
            status = Status::Merged;
        }
        let s = self.profiles.get_mut(&survivor).expect("survivor");
        if c.names != Names::EmailOnly {
            s.user = Some(p);
            self.by_user.insert(p, survivor);
        }
        if c.names != Names::UserOnly {
            s.email = Some(p);
            self.by_email.insert(p, survivor);
        }
        s.count += c.add;
        s.last = c.i;
        (survivor, status)
    }

    pub fn resolve(&self, mut key: u64) -> Option<u64> {
        loop {
            if self.profiles.contains_key(&key) {
                return Some(key);
            }
            key = *self.redirects.get(&key)?;
        }
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

fn expected_props(m: &MProfile) -> Vec<(String, Value)> {
    vec![
        ("count".to_string(), Value::Int(m.count)),
        ("last".to_string(), Value::Int(m.last as i64)),
    ]
}

fn same(got: &Profile, key: u64, m: &MProfile, ctx: &str) {
    assert_eq!(got.key, key, "{ctx}");
    assert_eq!(got.user_id, m.user.map(user), "{ctx}: user id of {key}");
    assert_eq!(got.email, m.email.map(email), "{ctx}: email of {key}");
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
    let mut persons: Vec<u64> = model
        .by_user
        .keys()
        .chain(model.by_email.keys())
        .copied()
        .collect();
    persons.sort_unstable();
    persons.dedup();
    let next = persons.last().map_or(0, |p| p + 1);
    persons.extend(next..next + 3);
    for p in persons {
        let u = db.get(&Selector::UserId(user(p))).expect("get by user");
        assert_eq!(
            u.map(|x| x.key),
            model.by_user.get(&p).copied(),
            "{ctx}: user {p}"
        );
        let e = db.get(&Selector::Email(email(p))).expect("get by email");
        assert_eq!(
            e.map(|x| x.key),
            model.by_email.get(&p).copied(),
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
