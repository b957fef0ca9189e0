//! SPEC 3.3, at the Db level: calls that touch one person leave the same profile whatever
//! order they reach the store in (sets and unsets win by event time, `$set_once` keeps the
//! oldest, `$add`s sum, `created_at` is the earliest call, `updated_at` the newest).
//!
//! The property-state level (every mix of operations, merges) is in `unit_props.rs`; this
//! runs whole identify calls through `Db`, with reopen in the middle of the shuffled run.

#[path = "support/common.rs"]
mod common;
#[path = "support/props.rs"]
mod props;

use common::*;
use proptest::prelude::*;
use serde_json::{Value as Json, json};

/// One call's operations: `(name index, Some(value) = set / None = null)` traits, an optional
/// `$unset`, an optional `$set_once` of `first_plan`, an optional `$add` to `logins`.
#[derive(Debug, Clone)]
struct Call {
    traits: Vec<(usize, Option<i64>)>,
    unset: Option<usize>,
    set_once: Option<i64>,
    add: Option<i64>,
    with_email: bool,
}

const NAMES: [&str; 4] = ["plan", "seats", "first_name", "region"];

fn call_strategy() -> impl Strategy<Value = Call> {
    (
        prop::collection::vec((0..NAMES.len(), prop::option::weighted(0.8, 0i64..5)), 0..4),
        prop::option::weighted(0.2, 0..NAMES.len()),
        prop::option::weighted(0.2, 0i64..5),
        prop::option::weighted(0.3, -3i64..10),
        any::<bool>(),
    )
        .prop_map(|(traits, unset, set_once, add, with_email)| Call {
            traits,
            unset,
            set_once,
            add,
            with_email,
        })
}

/// The message of call number `i` (its event time is `i` seconds after a fixed start).
fn message(i: usize, c: &Call) -> Json {
    let mut traits = serde_json::Map::new();
    for (n, v) in &c.traits {
        let value = match (NAMES[*n], v) {
            (_, None) => Json::Null,
            // first_name must be 2 to 50 characters.
            ("first_name", Some(v)) => json!(format!("Name{v}")),
            (_, Some(v)) => json!(v),
        };
        traits.insert(NAMES[*n].to_string(), value);
    }
    if c.with_email {
        traits.insert("email".into(), json!("pat@example.com"));
    }
    let mut m = json!({
        "type": "identify",
        "userId": "user-1",
        "messageId": format!("m-{i}"),
        "timestamp": format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
        "traits": traits,
    });
    if let Some(n) = c.unset {
        m["$unset"] = json!([NAMES[n]]);
    }
    if let Some(v) = c.set_once {
        m["$set_once"] = json!({"first_plan": v});
    }
    if let Some(v) = c.add {
        m["$add"] = json!({"logins": v});
    }
    m
}

fn profile_json(db: &profiledb::Db) -> Option<Json> {
    by_user(db, "user-1").map(|p| {
        let mut j = serde_json::to_value(&p).unwrap();
        // Keys are assigned in arrival order; everything else must agree.
        j["key"] = Json::Null;
        j
    })
}

proptest! {
    #![proptest_config(props::config(48, "tests/order_independence.proptest-regressions"))]

    #[test]
    fn any_arrival_order_of_one_persons_calls_leaves_the_same_profile(
        (calls, order, reopen_at) in prop::collection::vec(call_strategy(), 1..14)
            .prop_flat_map(|calls| {
                let n = calls.len();
                let order: Vec<usize> = (0..n).collect();
                (Just(calls), Just(order).prop_shuffle(), 0..n)
            })
    ) {
        let in_order = tempfile::tempdir().unwrap();
        let db = open(in_order.path());
        for (i, c) in calls.iter().enumerate() {
            call(&db, message(i, c));
        }
        let expected = profile_json(&db);
        db.close().unwrap();

        let shuffled = tempfile::tempdir().unwrap();
        let mut db = open(shuffled.path());
        for (step, &i) in order.iter().enumerate() {
            if step == reopen_at {
                db.close().unwrap();
                db = open(shuffled.path());
            }
            call(&db, message(i, &calls[i]));
        }
        prop_assert_eq!(profile_json(&db), expected.clone(), "order {:?}", order);
        // A redelivery of every call (same messageIds) changes nothing.
        for (i, c) in calls.iter().enumerate() {
            call(&db, message(i, c));
        }
        prop_assert_eq!(profile_json(&db), expected);
        db.close().unwrap();
    }
}
