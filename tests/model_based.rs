//! Model-based test: random sequences of identify / group / alias / track / delete / unlink /
//! unmerge / compact / reopen / crash over a small pool of identifiers, checked after every step
//! against a plain in-memory reference implementation of SPEC 3.2-3.6 and of the identity
//! journal (the one shared by every suite that needs a model:
//! `support/identify_model/reference.rs`), comparing every profile, each call's outcome (status,
//! survivor, quarantined identifiers, refusals), unmerge's result or refusal, the guard's
//! quarantine list and counter, and `get_at` of every past step.
//! Also checks the merge invariants: every identifier resolves to exactly one live profile, no
//! profile holds two user ids, a merged-away key resolves to its survivor.
//!
//! Each case runs with a small guard limit (1 to 3 user ids) so that the guard fires; the test
//! counts quarantines and unmerges across the run and fails if either never happened.

#[path = "support/common.rs"]
mod common;
#[path = "support/props.rs"]
mod props;

#[path = "support/identify_model/reference.rs"]
mod reference;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reference::Reference;
use serde_json::json;

/// Across the run: identifiers the guard quarantined, unmerges done, unmerges refused.
static QUARANTINES: AtomicU64 = AtomicU64::new(0);
static UNMERGES: AtomicU64 = AtomicU64::new(0);
static UNMERGE_REFUSALS: AtomicU64 = AtomicU64::new(0);

/// The one reference model of the rules, with the traits a call of this suite sets: up to
/// four integer properties, and an explicit `created_at`.
fn model_identify(
    model: &mut Reference,
    ids: (Option<&str>, Option<&str>, Option<&str>),
    company: Option<&str>,
    props: &[(String, i64)],
    created: Option<u32>,
    ts: u32,
) -> Result<reference::Outcome, reference::Refused> {
    let (user_id, email, anonymous_id) = ids;
    let call = reference::Call {
        user_id,
        email,
        anonymous_id,
        company_id: company,
        sets: props.iter().map(|(n, v)| (n.as_str(), json!(v))).collect(),
        created_at: created.map(i64::from),
        timestamp: i64::from(ts),
        ..reference::Call::default()
    };
    let before = model.quarantined.len();
    let out = model.identify_outcome(&call);
    QUARANTINES.fetch_add((model.quarantined.len() - before) as u64, Ordering::Relaxed);
    assert_ne!(
        out,
        Err(reference::Refused::Suppressed),
        "this suite suppresses nothing"
    );
    out
}

/// A call's result in the store agrees with the model's: the survivor, status and
/// quarantined identifiers, or the guard's refusal naming the field.
fn check_call(
    got: profiledb::Result<profiledb::Outcome>,
    want: Result<reference::Outcome, reference::Refused>,
    step: usize,
) {
    match (got, want) {
        (Ok(got), Ok(want)) => {
            assert_eq!(
                (got.key, got.status, got.quarantined),
                (want.key, want.status, want.quarantined),
                "step {step}: survivor, status and quarantined identifiers"
            );
        }
        (Err(profiledb::Error::Invalid(errors)), Err(reference::Refused::Quarantined(field))) => {
            assert_eq!(errors.len(), 1, "step {step}: {errors:?}");
            assert_eq!(errors[0].field, field, "step {step}: {errors:?}");
            assert!(
                errors[0].rule.contains("quarantined"),
                "step {step}: {errors:?}"
            );
        }
        (got, want) => panic!("step {step}: the store gave {got:?}, the model {want:?}"),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Identify {
        uid: Option<u8>,
        email: Option<u8>,
        upper: bool,
        anon: Option<u8>,
        /// Integer properties `p0`..`p3`, each once, in the call's order: several in one call
        /// take the writer's paths for many names (a new profile's states pushed in name
        /// order, the in-order fast path).
        props: Vec<(u8, i64)>,
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
    /// Unmerge a merged-away key (the `pick`-th, by key) out of its survivor, named by that key
    /// or, with `by_user`, by a user id (often the wrong profile: a refusal).
    Unmerge {
        pick: u8,
        by_user: Option<u8>,
    },
    Reopen,
    /// Close and open by a full replay of the log (the hint removed).
    ReopenReplaying,
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
            proptest::collection::vec((0u8..4, -5i64..5), 0..4).prop_map(|mut props| {
                let mut seen = [false; 4];
                props.retain(|&(n, _)| !std::mem::replace(&mut seen[usize::from(n)], true));
                props
            }),
            proptest::option::weighted(0.2, 0u8..5),
        )
            .prop_filter("needs an identifier", |(u, e, _, a, _, _)| {
                u.is_some() || e.is_some() || a.is_some()
            })
            .prop_map(|(uid, email, upper, anon, props, created)| Op::Identify { uid, email, upper, anon, props, created }),
        1 => (0u8..2, proptest::option::of(small.clone()), proptest::option::of(small.clone()))
            .prop_map(|(company, uid, anon)| Op::Group { company, uid, anon }),
        1 => (any::<bool>(), small.clone(), small.clone())
            .prop_map(|(prev_is_user, prev, uid)| Op::Alias { prev_is_user, prev, uid }),
        1 => (small.clone(), small.clone()).prop_map(|(uid, anon)| Op::Track { uid, anon }),
        1 => small.clone().prop_map(Op::Delete),
        1 => small.clone().prop_map(Op::Unlink),
        2 => (any::<u8>(), proptest::option::weighted(0.25, small.clone()))
            .prop_map(|(pick, by_user)| Op::Unmerge { pick, by_user }),
        1 => Just(Op::Reopen),
        1 => Just(Op::ReopenReplaying),
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

/// The model's profiles after each step, with the journal time just after it and the key
/// the next new profile would get then.
type Past = Vec<(profiledb::Timestamp, BTreeMap<u64, reference::Profile>, u64)>;

/// History (issue 16): `get_at` of every past step matches the model as it was then, for
/// every key whose profile (or survivor) still lives (a deleted profile's history is erased).
fn compare_past(db: &profiledb::Db, model: &Reference, past: &Past, step: usize) {
    for (i, (at, then, next_key)) in past.iter().enumerate() {
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
            // (A key merged away then and restored by an unmerge since gives the profile as it
            // was at the merge: docs/journal.md "Unmerge", limits.)
            if key >= *next_key {
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
    compare_history(db, model, step);
}

/// `Db::history` of every live profile lists the model's steps: kind, the identifiers the call
/// carried, the keys it merged in (every step is inside the window: none is dropped).
fn compare_history(db: &profiledb::Db, model: &Reference, step: usize) {
    let journal = model.journal.as_ref().expect("the model keeps the journal");
    for &key in model.profiles.keys() {
        let h = db
            .history(&profiledb::Selector::Key(key))
            .unwrap()
            .unwrap_or_else(|| panic!("step {step}: no history of {key}"));
        let got: Vec<_> = (h.steps.iter())
            .map(|s| {
                let mut carried = Vec::new();
                carried.extend(s.user_id.clone().map(|u| ("user_id", u)));
                carried.extend(s.email.as_deref().map(|e| ("email", reference::norm(e))));
                carried.extend(s.anonymous_id.clone().map(|a| ("anonymous_id", a)));
                (s.kind.to_string(), carried, s.merged.clone())
            })
            .collect();
        let want: Vec<_> = (journal.get(&key).into_iter().flatten())
            .map(|s| {
                let kind = match s.kind {
                    reference::StepKind::Call => "call",
                    reference::StepKind::Identifiers => "identifiers",
                    reference::StepKind::Unmerge => "unmerge",
                };
                let merged: Vec<u64> = s.merged.iter().map(|(k, _)| *k).collect();
                (kind.to_string(), s.carried.clone(), merged)
            })
            .collect();
        assert_eq!(got, want, "step {step}: history of {key}");
        assert_eq!(h.merged_into, None, "step {step}: {key} is live");
    }
}

/// The store's unmerge refusal as the model names it.
fn refusal(e: &profiledb::Error) -> reference::UnmergeRefusal {
    use profiledb::UnmergeError as E;
    use reference::UnmergeRefusal as R;
    match e {
        profiledb::Error::Unmerge(E::NoSurvivor) => R::NoSurvivor,
        profiledb::Error::Unmerge(E::Unknown { .. }) => R::Unknown,
        profiledb::Error::Unmerge(E::NotMergedInto { .. }) => R::NotMergedInto,
        profiledb::Error::Unmerge(E::OutsideWindow { .. }) => R::OutsideWindow,
        other => panic!("not an unmerge refusal: {other:?}"),
    }
}

fn options(guard: usize) -> profiledb::Options {
    profiledb::Options {
        guard_max_user_ids: guard,
        ..common::options()
    }
}

fn run(guard: usize, ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let reopen = || profiledb::Db::open(dir.path(), options(guard)).expect("open");
    let mut db = reopen();
    let mut model = Reference::with_journal(guard);
    // `Db::counts().guard_skipped_calls` counts since open.
    let mut skipped_at_open = 0;
    let mut past: Past = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        let t = step as u32 + 1;
        // Reopens, crashes, compactions and unmerges also check the whole past.
        let check_past = matches!(
            op,
            Op::Reopen | Op::ReopenReplaying | Op::Crash | Op::Compact | Op::Unmerge { .. }
        );
        match op {
            Op::Identify {
                uid: u,
                email: e,
                upper,
                anon: a,
                props,
                created,
            } => {
                let mut m = identify(
                    u.map(uid).as_deref(),
                    e.map(|e| email(e, upper)).as_deref(),
                    a.map(anon).as_deref(),
                    json!({}),
                );
                let props: Vec<(String, i64)> =
                    props.iter().map(|&(n, v)| (format!("p{n}"), v)).collect();
                for (n, v) in &props {
                    m["traits"][n] = json!(v);
                }
                let created = created.map(|c| u32::from(c) * 10);
                if let Some(c) = created {
                    m["traits"]["created_at"] = json!(ts(c));
                }
                m["timestamp"] = json!(ts(t));
                let got = try_call(&db, m);
                let want = model_identify(
                    &mut model,
                    (
                        u.map(uid).as_deref(),
                        e.map(|e| email(e, upper)).as_deref(),
                        a.map(anon).as_deref(),
                    ),
                    None,
                    &props,
                    created,
                    t,
                );
                check_call(got, want, step);
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
                let got = try_call(&db, m);
                if u.is_some() || a.is_some() {
                    let want = model_identify(
                        &mut model,
                        (u.map(uid).as_deref(), None, a.map(anon).as_deref()),
                        Some(&format!("co-{company}")),
                        &[],
                        None,
                        t,
                    );
                    check_call(got, want, step);
                } else {
                    assert!(got.is_ok(), "step {step}: {got:?}");
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
                        let want = model_identify(
                            &mut model,
                            (Some(&uid(u)), None, Some(&prev_id)),
                            None,
                            &[],
                            None,
                            t,
                        );
                        check_call(got, want, step);
                    }
                }
            }
            Op::Track { uid: u, anon: a } => {
                let got = try_call(
                    &db,
                    json!({"type": "track", "event": "x", "userId": uid(u), "anonymousId": anon(a),
                           "timestamp": ts(t)}),
                );
                let want = model_identify(
                    &mut model,
                    (Some(&uid(u)), None, Some(&anon(a))),
                    None,
                    &[],
                    None,
                    t,
                );
                check_call(got, want, step);
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
            Op::Unmerge { pick, by_user } => {
                // Even picks: a key whose survivor lives (most often undoable); odd: any.
                let mut gone: Vec<u64> = (model.redirects.keys().copied())
                    .filter(|k| pick % 2 == 1 || model.resolve(*k).is_some())
                    .collect();
                gone.sort_unstable();
                let pick = pick / 2;
                // No merged-away key yet: a key never used (refused).
                let key = if gone.is_empty() {
                    1000 + u64::from(pick)
                } else {
                    gone[usize::from(pick) % gone.len()]
                };
                let (selector, survivor) = match by_user {
                    Some(u) => (profiledb::Selector::UserId(uid(u)), model.by_user(&uid(u))),
                    None => (profiledb::Selector::Key(key), model.resolve(key)),
                };
                let got = db.unmerge(&selector, key);
                let want = model.unmerge(survivor, key);
                match (&got, &want) {
                    (Ok(got), Ok((s, r))) => {
                        UNMERGES.fetch_add(1, Ordering::Relaxed);
                        assert_eq!(got.restored.key, key, "step {step}: restored key");
                        same(
                            &got.survivor,
                            s,
                            &format!("step {step}: unmerge's survivor"),
                        );
                        same(
                            &got.restored,
                            r,
                            &format!("step {step}: unmerge's restored"),
                        );
                    }
                    (Err(e), Err(w)) => {
                        UNMERGE_REFUSALS.fetch_add(1, Ordering::Relaxed);
                        assert_eq!(refusal(e), *w, "step {step}: unmerge refusal {e}");
                    }
                    _ => panic!("step {step}: unmerge of {key}: store {got:?}, model {want:?}"),
                }
            }
            Op::Reopen => {
                db.close().unwrap();
                db = reopen();
                skipped_at_open = model.guard_skipped_calls;
            }
            Op::Crash => {
                db.sync().unwrap();
                db.abandon();
                db = reopen();
                skipped_at_open = model.guard_skipped_calls;
            }
            Op::ReopenReplaying => {
                db.close().unwrap();
                std::fs::remove_file(dir.path().join("HINT")).unwrap();
                db = reopen();
                skipped_at_open = model.guard_skipped_calls;
            }
            Op::Compact => {
                db.compact().unwrap();
            }
        }
        compare(&db, &model, step);
        assert_eq!(
            db.quarantined(),
            model.quarantined_list(),
            "step {step}: quarantined identifiers"
        );
        let counts = db.counts();
        assert_eq!(
            counts.guard_skipped_calls,
            model.guard_skipped_calls - skipped_at_open,
            "step {step}: calls that skipped a quarantined identifier since open"
        );
        assert_eq!(counts.quarantined as usize, model.quarantined.len());
        if check_past {
            compare_past(&db, &model, &past, step);
        }
        past.push((db.history_clock(), model.profiles.clone(), model.next_key));
    }
    compare_past(&db, &model, &past, usize::MAX);
}

#[test]
fn db_matches_the_reference_model() {
    // PROFILEDB_MODEL_CASES runs more cases (a soak); CI runs 64.
    let cases = std::env::var("PROFILEDB_MODEL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        ..props::config(cases, "tests/model_based.proptest-regressions")
    });
    runner
        .run(
            &(1usize..4, proptest::collection::vec(op(), 1..40)),
            |(guard, ops)| {
                run(guard, ops);
                Ok(())
            },
        )
        .unwrap();
    // The run exercised what it checks: the guard fired, unmerges were done and refused.
    let (q, u, r) = (
        QUARANTINES.load(Ordering::Relaxed),
        UNMERGES.load(Ordering::Relaxed),
        UNMERGE_REFUSALS.load(Ordering::Relaxed),
    );
    eprintln!("quarantines {q}, unmerges {u}, unmerge refusals {r}");
    assert!(q > 0, "the guard never fired");
    assert!(u > 0, "no unmerge was done");
    assert!(r > 0, "no unmerge was refused");
}
