//! Model-based test: random sequences of identify / group / alias / track / delete / unlink /
//! reopen / crash over a small pool of identifiers, checked after every step against a plain
//! in-memory reference implementation of SPEC 3.2-3.6 (below), comparing every profile.
//! Also checks the merge invariants: every identifier resolves to exactly one live profile, no
//! profile holds two user ids, a merged-away key resolves to its survivor.

#[path = "support/common.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone, Default, PartialEq)]
struct MProfile {
    user_id: Option<String>,
    email: Option<String>,
    anon: Vec<String>,
    company: Option<String>,
    /// name -> (timestamp, value)
    props: BTreeMap<String, (u32, i64)>,
    /// Timestamp of the earliest call applied (the default created_at, SPEC 3.4).
    first_seen: u32,
    /// An explicit `created_at` trait (as seconds of `ts`).
    created: Option<u32>,
}

/// The traits a model call sets: one integer property, and an explicit `created_at`.
#[derive(Debug, Default, Clone, Copy)]
struct MTraits<'a> {
    prop: Option<(&'a str, i64)>,
    created: Option<u32>,
}

impl MProfile {
    /// The created_at shown: the trait, else the first call's timestamp (SPEC 3.4).
    fn created_at(&self) -> u32 {
        self.created.unwrap_or(self.first_seen)
    }
}

#[derive(Debug, Default)]
struct Model {
    profiles: BTreeMap<u64, MProfile>,
    redirects: HashMap<u64, u64>,
    next_key: u64,
}

fn norm(e: &str) -> String {
    e.trim().to_lowercase()
}

impl Model {
    fn new() -> Self {
        Model {
            next_key: 1,
            ..Model::default()
        }
    }
    fn by_user(&self, u: &str) -> Option<u64> {
        self.profiles
            .iter()
            .find(|(_, p)| p.user_id.as_deref() == Some(u))
            .map(|(k, _)| *k)
    }
    fn by_email(&self, e: &str) -> Option<u64> {
        self.profiles
            .iter()
            .find(|(_, p)| p.email.as_deref().map(norm) == Some(norm(e)))
            .map(|(k, _)| *k)
    }
    fn by_anon(&self, a: &str) -> Option<u64> {
        self.profiles
            .iter()
            .find(|(_, p)| p.anon.iter().any(|x| x == a))
            .map(|(k, _)| *k)
    }
    fn resolve_key(&self, mut k: u64) -> Option<u64> {
        loop {
            if self.profiles.contains_key(&k) {
                return Some(k);
            }
            k = *self.redirects.get(&k)?;
        }
    }

    fn identify(
        &mut self,
        uid: Option<&str>,
        email: Option<&str>,
        anon: Option<&str>,
        company: Option<&str>,
        traits: MTraits<'_>,
        ts: u32,
    ) -> u64 {
        let MTraits { prop, created } = traits;
        let fu = uid.and_then(|u| self.by_user(u));
        let fe = email.and_then(|e| self.by_email(e));
        let fa = anon.and_then(|a| self.by_anon(a));
        let uid_of = |m: &Model, k: u64| m.profiles[&k].user_id.clone();
        let others = [fe, fa];
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
        let survivor = survivor.unwrap_or_else(|| {
            let k = self.next_key;
            self.next_key += 1;
            self.profiles.insert(
                k,
                MProfile {
                    first_seen: ts,
                    ..MProfile::default()
                },
            );
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
                // Protection: move the identifier.
                let p = self.profiles.get_mut(&k).unwrap();
                if i == 0 {
                    p.email = None;
                } else {
                    p.anon.retain(|x| Some(x.as_str()) != anon);
                }
            } else {
                merged.push(k);
            }
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
            for a in gone.anon {
                if !s.anon.contains(&a) {
                    s.anon.push(a);
                }
            }
            if s.company.is_none() {
                s.company = gone.company;
            }
            for (name, (t, v)) in gone.props {
                let e = s.props.entry(name).or_insert((t, v));
                if t > e.0 {
                    *e = (t, v);
                }
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
            && !s.anon.iter().any(|x| x == a)
        {
            s.anon.push(a.to_string());
        }
        if let Some(c) = company {
            s.company = Some(c.to_string());
        }
        if let Some((name, v)) = prop {
            s.props.insert(name.to_string(), (ts, v));
        }
        if let Some(c) = created {
            // Every step is newer than the ones before: the trait set now wins.
            s.created = Some(c);
        }
        s.first_seen = s.first_seen.min(ts);
        survivor
    }
}

#[derive(Debug, Clone)]
enum Op {
    Identify {
        uid: Option<u8>,
        email: Option<u8>,
        upper: bool,
        anon: Option<u8>,
        prop: Option<(u8, i64)>,
        /// An explicit `created_at` trait: `ts(10 * c)`.
        created: Option<u8>,
    },
    Group {
        company: u8,
        uid: Option<u8>,
        anon: Option<u8>,
    },
    Alias {
        prev_is_user: bool,
        prev: u8,
        uid: u8,
    },
    Track {
        uid: u8,
        anon: u8,
    },
    Delete(u8),
    Unlink(u8),
    Reopen,
    Crash,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    let small = 0u8..4;
    prop_oneof![
        6 => (
            proptest::option::of(small.clone()),
            proptest::option::of(small.clone()),
            any::<bool>(),
            proptest::option::of(small.clone()),
            proptest::option::of((0u8..3, -5i64..5)),
            proptest::option::weighted(0.2, 0u8..5),
        )
            .prop_filter("needs an identifier", |(u, e, _, a, _, _)| {
                u.is_some() || e.is_some() || a.is_some()
            })
            .prop_map(|(uid, email, upper, anon, prop, created)| Op::Identify { uid, email, upper, anon, prop, created }),
        1 => (0u8..2, proptest::option::of(small.clone()), proptest::option::of(small.clone()))
            .prop_map(|(company, uid, anon)| Op::Group { company, uid, anon }),
        1 => (any::<bool>(), small.clone(), small.clone())
            .prop_map(|(prev_is_user, prev, uid)| Op::Alias { prev_is_user, prev, uid }),
        1 => (small.clone(), small.clone()).prop_map(|(uid, anon)| Op::Track { uid, anon }),
        1 => small.clone().prop_map(Op::Delete),
        1 => small.clone().prop_map(Op::Unlink),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Compact),
    ]
}

fn uid(i: u8) -> String {
    format!("user-{i}")
}
fn email(i: u8, upper: bool) -> String {
    if upper {
        format!("Person{i}@Example.COM")
    } else {
        format!("person{i}@example.com")
    }
}
fn anon(i: u8) -> String {
    format!("anon-{i}")
}

/// A stored profile equals the model's.
fn same(p: &profiledb::Profile, m: &MProfile, what: &str) {
    assert_eq!(p.user_id, m.user_id, "{what}: user id");
    assert_eq!(p.email, m.email, "{what}: email");
    let mut a = p.anonymous_ids.clone();
    a.sort();
    let mut b = m.anon.clone();
    b.sort();
    assert_eq!(a, b, "{what}: anonymous ids");
    assert_eq!(p.company_id, m.company, "{what}: company");
    assert_eq!(
        p.created_at.to_rfc3339(),
        ts(m.created_at()),
        "{what}: created_at"
    );
    let props: BTreeMap<String, i64> = p
        .properties
        .iter()
        .filter_map(|(k, v)| v.to_json().as_i64().map(|v| (k.clone(), v)))
        .collect();
    let want: BTreeMap<String, i64> = m.props.iter().map(|(k, (_, v))| (k.clone(), *v)).collect();
    assert_eq!(props, want, "{what}: properties");
}

/// The model's profiles after each step, with the journal time just after it.
type Past = Vec<(profiledb::Timestamp, BTreeMap<u64, MProfile>)>;

/// History (issue 16): `get_at` of every past step matches the model as it was then, for
/// every key whose profile (or survivor) still lives (a deleted profile's history is erased).
fn compare_past(db: &profiledb::Db, model: &Model, past: &Past, step: usize) {
    for (i, (at, then)) in past.iter().enumerate() {
        for (&key, m) in then {
            if model.resolve_key(key).is_none() {
                continue;
            }
            let what = format!("step {step}: profile {key} as of step {i}");
            let got = db
                .get_at(&profiledb::Selector::Key(key), *at)
                .unwrap()
                .unwrap_or_else(|| panic!("{what}: missing"));
            assert_eq!(got.key, key, "{what}");
            same(&got, m, &what);
        }
        for &key in model.profiles.keys() {
            if !then.contains_key(&key) && key > then.keys().max().map_or(0, |k| *k) {
                let got = db.get_at(&profiledb::Selector::Key(key), *at).unwrap();
                assert_eq!(
                    got, None,
                    "step {step}: profile {key} did not exist at step {i}"
                );
            }
        }
    }
}

fn compare(db: &profiledb::Db, model: &Model, step: usize) {
    assert_eq!(
        db.stats().profiles as usize,
        model.profiles.len(),
        "step {step}: profile count"
    );
    for (&key, m) in &model.profiles {
        let p = by_key(db, key).unwrap_or_else(|| panic!("step {step}: profile {key} missing"));
        assert_eq!(p.key, key);
        assert_eq!(p.user_id, m.user_id, "step {step}: user id of {key}");
        assert_eq!(p.email, m.email, "step {step}: email of {key}");
        let mut a = p.anonymous_ids.clone();
        a.sort();
        let mut b = m.anon.clone();
        b.sort();
        assert_eq!(a, b, "step {step}: anonymous ids of {key}");
        assert_eq!(p.company_id, m.company, "step {step}: company of {key}");
        assert_eq!(
            p.created_at.to_rfc3339(),
            ts(m.created_at()),
            "step {step}: created_at of {key}"
        );
        let props: BTreeMap<String, i64> = p
            .properties
            .iter()
            .filter_map(|(k, v)| v.to_json().as_i64().map(|v| (k.clone(), v)))
            .collect();
        let want: BTreeMap<String, i64> =
            m.props.iter().map(|(k, (_, v))| (k.clone(), *v)).collect();
        assert_eq!(props, want, "step {step}: properties of {key}");
    }
    // Every identifier resolves to exactly the model's profile (or none).
    for i in 0..4u8 {
        assert_eq!(
            by_user(db, &uid(i)).map(|p| p.key),
            model.by_user(&uid(i)),
            "step {step}: user {i}"
        );
        assert_eq!(
            by_email(db, &email(i, false)).map(|p| p.key),
            model.by_email(&email(i, false)),
            "step {step}: email {i}"
        );
        assert_eq!(
            by_anon(db, &anon(i)).map(|p| p.key),
            model.by_anon(&anon(i)),
            "step {step}: anon {i}"
        );
    }
    // Merged-away keys resolve to their survivor.
    for &k in model.redirects.keys() {
        assert_eq!(
            by_key(db, k).map(|p| p.key),
            model.resolve_key(k),
            "step {step}: redirect {k}"
        );
    }
    assert_eq!(
        db.check().unwrap(),
        Vec::<String>::new(),
        "step {step}: check"
    );
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(dir.path());
    let mut model = Model::new();
    let mut past: Past = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        let t = step as u32 + 1;
        // Reopens, crashes and compactions also check the whole past (`compare_past`).
        let op_kind = matches!(op, Op::Reopen | Op::Crash | Op::Compact).then_some(());
        match op {
            Op::Identify {
                uid: u,
                email: e,
                upper,
                anon: a,
                prop: p,
                created,
            } => {
                let mut m = identify(
                    u.map(uid).as_deref(),
                    e.map(|e| email(e, upper)).as_deref(),
                    a.map(anon).as_deref(),
                    json!({}),
                );
                if let Some((n, v)) = p {
                    m["traits"][format!("p{n}")] = json!(v);
                }
                let created = created.map(|c| u32::from(c) * 10);
                if let Some(c) = created {
                    m["traits"]["created_at"] = json!(ts(c));
                }
                m["timestamp"] = json!(ts(t));
                let out = call(&db, m);
                let name = p.map(|(n, v)| (format!("p{n}"), v));
                let want = model.identify(
                    u.map(uid).as_deref(),
                    e.map(|e| email(e, upper)).as_deref(),
                    a.map(anon).as_deref(),
                    None,
                    MTraits {
                        prop: name.as_ref().map(|(n, v)| (n.as_str(), *v)),
                        created,
                    },
                    t,
                );
                assert_eq!(out.key, want, "step {step}: survivor");
            }
            Op::Group {
                company,
                uid: u,
                anon: a,
            } => {
                let mut m = json!({"type": "group", "groupId": format!("co-{company}"),
                                   "timestamp": ts(t)});
                if let Some(u) = u {
                    m["userId"] = json!(uid(u));
                }
                if let Some(a) = a {
                    m["anonymousId"] = json!(anon(a));
                }
                call(&db, m);
                if u.is_some() || a.is_some() {
                    model.identify(
                        u.map(uid).as_deref(),
                        None,
                        a.map(anon).as_deref(),
                        Some(&format!("co-{company}")),
                        MTraits::default(),
                        t,
                    );
                }
            }
            Op::Alias {
                prev_is_user,
                prev,
                uid: u,
            } => {
                let prev_id = if prev_is_user { uid(prev) } else { anon(prev) };
                let m = json!({"type": "alias", "previousId": prev_id, "userId": uid(u),
                               "timestamp": ts(t)});
                let got = try_call(&db, m);
                match model.by_user(&prev_id) {
                    Some(k) if Some(k) == model.by_user(&uid(u)) => {
                        assert!(got.is_ok(), "step {step}: {got:?}")
                    }
                    Some(_) => assert!(got.is_err(), "step {step}: alias of two users"),
                    None => {
                        assert!(got.is_ok(), "step {step}: {got:?}");
                        model.identify(
                            Some(&uid(u)),
                            None,
                            Some(&prev_id),
                            None,
                            MTraits::default(),
                            t,
                        );
                    }
                }
            }
            Op::Track { uid: u, anon: a } => {
                call(
                    &db,
                    json!({"type": "track", "event": "x", "userId": uid(u), "anonymousId": anon(a),
                           "timestamp": ts(t)}),
                );
                model.identify(
                    Some(&uid(u)),
                    None,
                    Some(&anon(a)),
                    None,
                    MTraits::default(),
                    t,
                );
            }
            Op::Delete(u) => {
                let got = db
                    .delete(&profiledb::Selector::UserId(uid(u)), false)
                    .unwrap();
                let want = model.by_user(&uid(u));
                assert_eq!(got, want, "step {step}: delete");
                if let Some(k) = want {
                    model.profiles.remove(&k);
                }
            }
            Op::Unlink(a) => {
                let got = db.unlink(&anon(a)).unwrap();
                let want = model.by_anon(&anon(a));
                assert_eq!(got, want, "step {step}: unlink");
                if let Some(k) = want {
                    model
                        .profiles
                        .get_mut(&k)
                        .unwrap()
                        .anon
                        .retain(|x| *x != anon(a));
                }
            }
            Op::Reopen => {
                db.close().unwrap();
                db = open(dir.path());
            }
            Op::Crash => {
                db.sync().unwrap();
                db.abandon();
                db = open(dir.path());
            }
            Op::Compact => {
                db.compact().unwrap();
            }
        }
        compare(&db, &model, step);
        if matches!(op_kind, Some(())) {
            compare_past(&db, &model, &past, step);
        }
        past.push((db.history_clock(), model.profiles.clone()));
    }
    compare_past(&db, &model, &past, usize::MAX);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn db_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops);
    }
}
