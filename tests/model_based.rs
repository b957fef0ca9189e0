//! Model-based test: random sequences of identify / group / alias / track / delete / unlink /
//! reopen / crash over a small pool of identifiers, checked after every step against a plain
//! in-memory reference implementation of SPEC 3.2-3.6 (the one shared by every suite that needs
//! a model: `support/identify_model/reference.rs`), comparing every profile.
//! Also checks the merge invariants: every identifier resolves to exactly one live profile, no
//! profile holds two user ids, a merged-away key resolves to its survivor.

#[path = "support/common.rs"]
mod common;

#[path = "support/identify_model/reference.rs"]
mod reference;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use reference::Reference;
use serde_json::json;

/// The one reference model of the rules, with the traits a call of this suite sets: one
/// integer property, and an explicit `created_at`.
fn model_identify(
    model: &mut Reference,
    ids: (Option<&str>, Option<&str>, Option<&str>),
    company: Option<&str>,
    prop: Option<(&str, i64)>,
    created: Option<u32>,
    ts: u32,
) -> (u64, profiledb::Status) {
    let (user_id, email, anonymous_id) = ids;
    let call = reference::Call {
        user_id,
        email,
        anonymous_id,
        company_id: company,
        sets: prop.map(|(n, v)| (n, json!(v))).into_iter().collect(),
        created_at: created.map(i64::from),
        timestamp: i64::from(ts),
        ..reference::Call::default()
    };
    model
        .identify(&call)
        .expect("this suite suppresses nothing")
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
fn same(p: &profiledb::Profile, m: &reference::Profile, what: &str) {
    assert_eq!(p.user_id, m.user_id, "{what}: user id");
    assert_eq!(p.email, m.email, "{what}: email");
    let mut a = p.anonymous_ids.clone();
    a.sort();
    let mut b = m.anonymous_ids.clone();
    b.sort();
    assert_eq!(a, b, "{what}: anonymous ids");
    assert_eq!(p.company_id, m.company_id, "{what}: company");
    assert_eq!(
        p.created_at.to_rfc3339(),
        ts(u32::try_from(m.created_at()).unwrap()),
        "{what}: created_at"
    );
    let props: BTreeMap<String, i64> = p
        .properties
        .iter()
        .filter_map(|(k, v)| v.to_json().as_i64().map(|v| (k.clone(), v)))
        .collect();
    let want: BTreeMap<String, i64> = (m.properties().into_iter())
        .map(|(k, v)| (k, v.as_i64().expect("this suite sets integers only")))
        .collect();
    assert_eq!(props, want, "{what}: properties");
}

/// The model's profiles after each step, with the journal time just after it.
type Past = Vec<(profiledb::Timestamp, BTreeMap<u64, reference::Profile>)>;

/// History (issue 16): `get_at` of every past step matches the model as it was then, for
/// every key whose profile (or survivor) still lives (a deleted profile's history is erased).
fn compare_past(db: &profiledb::Db, model: &Reference, past: &Past, step: usize) {
    for (i, (at, then)) in past.iter().enumerate() {
        for (&key, m) in then {
            if model.resolve(key).is_none() {
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

fn compare(db: &profiledb::Db, model: &Reference, step: usize) {
    assert_eq!(
        db.stats().profiles as usize,
        model.profiles.len(),
        "step {step}: profile count"
    );
    for (&key, m) in &model.profiles {
        let p = by_key(db, key).unwrap_or_else(|| panic!("step {step}: profile {key} missing"));
        assert_eq!(p.key, key);
        same(&p, m, &format!("step {step}: profile {key}"));
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
            model.resolve(k),
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
    let mut model = Reference::default();
    let mut past: Past = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        let t = step as u32 + 1;
        // Reopens, crashes and compactions also check the whole past (`compare_past`).
        let check_past = matches!(op, Op::Reopen | Op::Crash | Op::Compact);
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
                let want = model_identify(
                    &mut model,
                    (
                        u.map(uid).as_deref(),
                        e.map(|e| email(e, upper)).as_deref(),
                        a.map(anon).as_deref(),
                    ),
                    None,
                    name.as_ref().map(|(n, v)| (n.as_str(), *v)),
                    created,
                    t,
                );
                assert_eq!(
                    (out.key, out.status),
                    want,
                    "step {step}: survivor and status"
                );
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
                    model_identify(
                        &mut model,
                        (u.map(uid).as_deref(), None, a.map(anon).as_deref()),
                        Some(&format!("co-{company}")),
                        None,
                        None,
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
                        model_identify(
                            &mut model,
                            (Some(&uid(u)), None, Some(&prev_id)),
                            None,
                            None,
                            None,
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
                model_identify(
                    &mut model,
                    (Some(&uid(u)), None, Some(&anon(a))),
                    None,
                    None,
                    None,
                    t,
                );
            }
            Op::Delete(u) => {
                let got = db
                    .delete(&profiledb::Selector::UserId(uid(u)), false)
                    .unwrap();
                let want = model.delete(&uid(u), false);
                assert_eq!(got, want, "step {step}: delete");
            }
            Op::Unlink(a) => {
                let got = db.unlink(&anon(a)).unwrap();
                let want = model.unlink(&anon(a));
                assert_eq!(got, want, "step {step}: unlink");
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
        if check_past {
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
