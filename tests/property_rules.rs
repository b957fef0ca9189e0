//! SPEC 3.3 to 3.5 through the Db: timestamps, set_once, unset, add, merge, derived and
//! defaulted properties, the property-name limit.

#[path = "support/common.rs"]
mod common;

use common::*;
use profiledb::{Db, Options};
use serde_json::json;

fn at(uid: &str, n: u32, extra: serde_json::Value) -> serde_json::Value {
    let mut m = identify(Some(uid), None, None, json!({}));
    m["timestamp"] = json!(ts(n));
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    m
}

#[test]
fn last_write_wins_by_event_time_not_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(&db, at("u1", 20, json!({"traits": {"plan": "pro"}})));
    call(&db, at("u1", 10, json!({"traits": {"plan": "free"}})));
    assert_eq!(
        prop(&by_user(&db, "u1").unwrap(), "plan"),
        Some(json!("pro"))
    );
}

#[test]
fn set_once_keeps_the_first_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(
        &db,
        at(
            "u1",
            1,
            json!({"$set_once": {"first_seen_campaign": "spring"}}),
        ),
    );
    call(
        &db,
        at(
            "u1",
            2,
            json!({"$set_once": {"first_seen_campaign": "summer"}}),
        ),
    );
    assert_eq!(
        prop(&by_user(&db, "u1").unwrap(), "first_seen_campaign"),
        Some(json!("spring"))
    );
}

#[test]
fn unset_and_null_remove_a_property() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(
        &db,
        at("u1", 1, json!({"traits": {"trial": true, "coupon": "X"}})),
    );
    call(
        &db,
        at(
            "u1",
            2,
            json!({"$unset": ["trial"], "traits": {"coupon": null}}),
        ),
    );
    let p = by_user(&db, "u1").unwrap();
    assert_eq!(prop(&p, "trial"), None);
    assert_eq!(prop(&p, "coupon"), None);
    // An older set arriving late does not bring it back.
    call(&db, at("u1", 1, json!({"traits": {"trial": false}})));
    assert_eq!(prop(&by_user(&db, "u1").unwrap(), "trial"), None);
}

#[test]
fn add_sums_and_a_retried_message_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(
        &db,
        at("u1", 1, json!({"$add": {"logins": 1}, "messageId": "m-1"})),
    );
    call(
        &db,
        at("u1", 2, json!({"$add": {"logins": 2}, "messageId": "m-2"})),
    );
    let retry = call(
        &db,
        at("u1", 2, json!({"$add": {"logins": 2}, "messageId": "m-2"})),
    );
    assert_eq!(retry.status, profiledb::Status::Duplicate);
    assert_eq!(prop(&by_user(&db, "u1").unwrap(), "logins"), Some(json!(3)));
}

#[test]
fn add_on_a_string_is_ignored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(&db, at("u1", 1, json!({"traits": {"plan": "pro"}})));
    let out = call(&db, at("u1", 2, json!({"$add": {"plan": 1}})));
    assert_eq!(out.ignored, vec!["plan".to_string()]);
    assert_eq!(
        prop(&by_user(&db, "u1").unwrap(), "plan"),
        Some(json!("pro"))
    );
}

#[test]
fn typed_values_round_trip_and_date_times_are_rfc3339() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(
        &db,
        at(
            "u1",
            1,
            json!({"traits": {"n": 3, "f": 2.5, "b": true, "s": "x", "d": "2026-01-02T03:04:05+02:00",
                               "arr": [1, "a"], "obj": {"k": "v"}}}),
        ),
    );
    let p = by_user(&db, "u1").unwrap();
    assert_eq!(prop(&p, "n"), Some(json!(3)));
    assert_eq!(prop(&p, "f"), Some(json!(2.5)));
    assert_eq!(prop(&p, "b"), Some(json!(true)));
    assert_eq!(prop(&p, "d"), Some(json!("2026-01-02T01:04:05Z")));
    assert_eq!(prop(&p, "arr"), Some(json!([1, "a"])));
    assert_eq!(prop(&p, "obj"), Some(json!({"k": "v"})));
}

#[test]
fn merge_keeps_the_newest_value_of_each_property() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut a = identify(Some("u1"), None, None, json!({"plan": "old", "only_a": 1}));
    a["timestamp"] = json!(ts(1));
    call(&db, a);
    let mut b = identify(
        None,
        Some("m@example.com"),
        None,
        json!({"plan": "new", "only_b": 2}),
    );
    b["timestamp"] = json!(ts(5));
    call(&db, b);
    let mut c = identify(Some("u1"), Some("m@example.com"), None, json!({}));
    c["timestamp"] = json!(ts(6));
    call(&db, c);
    let p = by_user(&db, "u1").unwrap();
    assert_eq!(prop(&p, "plan"), Some(json!("new")));
    assert_eq!(prop(&p, "only_a"), Some(json!(1)));
    assert_eq!(prop(&p, "only_b"), Some(json!(2)));
}

#[test]
fn gosquared_name_is_derived_from_first_and_last_name_unless_set() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(
        &db,
        identify(Some("u1"), None, None, json!({"first_name": "Simon"})),
    );
    assert_eq!(
        prop(&by_user(&db, "u1").unwrap(), "name"),
        Some(json!("Simon"))
    );
    call(
        &db,
        identify(Some("u1"), None, None, json!({"last_name": "Tabor"})),
    );
    assert_eq!(
        prop(&by_user(&db, "u1").unwrap(), "name"),
        Some(json!("Simon Tabor"))
    );
    call(
        &db,
        identify(Some("u1"), None, None, json!({"lastName": "Smith"})),
    );
    assert_eq!(
        prop(&by_user(&db, "u1").unwrap(), "name"),
        Some(json!("Simon Smith"))
    );
    call(&db, identify(Some("u1"), None, None, json!({"name": "Si"})));
    assert_eq!(
        prop(&by_user(&db, "u1").unwrap(), "name"),
        Some(json!("Si"))
    );
}

#[test]
fn created_at_defaults_to_the_first_call_and_a_merge_keeps_the_earliest() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut a = identify(Some("u1"), None, None, json!({}));
    a["timestamp"] = json!(ts(30));
    call(&db, a);
    assert_eq!(by_user(&db, "u1").unwrap().created_at.to_rfc3339(), ts(30));
    let mut b = identify(None, Some("c@example.com"), None, json!({}));
    b["timestamp"] = json!(ts(10));
    call(&db, b);
    call(
        &db,
        identify(Some("u1"), Some("c@example.com"), None, json!({})),
    );
    assert_eq!(by_user(&db, "u1").unwrap().created_at.to_rfc3339(), ts(10));
    // Given by the call: stored as given.
    call(
        &db,
        identify(
            Some("v1"),
            None,
            None,
            json!({"created_at": "2016-06-07T15:44:20Z"}),
        ),
    );
    assert_eq!(
        by_user(&db, "v1").unwrap().created_at.to_rfc3339(),
        "2016-06-07T15:44:20Z"
    );
}

#[test]
fn gosquared_1000_property_limit_ignores_new_names_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_property_names: 5,
        ..options()
    };
    {
        let db = Db::open(dir.path(), opts.clone()).unwrap();
        let out = call(
            &db,
            identify(
                Some("u1"),
                None,
                None,
                json!({"a1": 1, "a2": 2, "a3": 3, "a4": 4}),
            ),
        );
        assert!(out.ignored.is_empty());
        let out = call(
            &db,
            identify(Some("u1"), None, None, json!({"a1": 9, "b1": 1, "b2": 2})),
        );
        assert_eq!(out.ignored, vec!["b2".to_string()], "one name left");
        let p = by_user(&db, "u1").unwrap();
        assert_eq!(
            prop(&p, "a1"),
            Some(json!(9)),
            "the rest of the call applied"
        );
        assert_eq!(prop(&p, "b1"), Some(json!(1)));
        db.close().unwrap();
    }
    let db = Db::open(dir.path(), opts).unwrap();
    let out = call(
        &db,
        identify(Some("w1"), None, None, json!({"c1": 1, "a2": 5})),
    );
    assert_eq!(out.ignored, vec!["c1".to_string()]);
    assert_eq!(db.stats().property_names, 5);
}

/// SPEC 3.4 "A merge keeps the earliest created_at": the earliest of both profiles'
/// *effective* created_at (explicit trait, else first seen), whichever side holds which.
#[test]
fn a_merge_keeps_the_earliest_created_at() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let at = |mut m: serde_json::Value, n: u32| {
        m["timestamp"] = json!(ts(n));
        m
    };
    // Survivor (u1) has an explicit created_at later than the other profile's first call.
    call(
        &db,
        at(identify(None, Some("a@example.com"), None, json!({})), 10),
    );
    call(
        &db,
        at(
            identify(Some("u1"), None, None, json!({"created_at": ts(50)})),
            20,
        ),
    );
    let out = call(
        &db,
        at(
            identify(Some("u1"), Some("a@example.com"), None, json!({})),
            30,
        ),
    );
    assert_eq!(out.status, profiledb::Status::Merged);
    let p = by_user(&db, "u1").unwrap();
    assert_eq!(p.created_at.to_rfc3339(), ts(10));
    // The created_at property, when shown, agrees with the top-level field.
    assert_eq!(prop(&p, "created_at"), Some(json!(ts(10))));

    // The merged-away profile has the explicit (later) created_at; the survivor's first call
    // is earlier.
    call(&db, at(identify(Some("u2"), None, None, json!({})), 5));
    call(
        &db,
        at(
            identify(None, None, Some("dev-2"), json!({"created_at": ts(40)})),
            15,
        ),
    );
    call(
        &db,
        at(identify(Some("u2"), None, Some("dev-2"), json!({})), 35),
    );
    let p = by_user(&db, "u2").unwrap();
    assert_eq!(p.created_at.to_rfc3339(), ts(5));
    assert_eq!(prop(&p, "created_at"), Some(json!(ts(5))));

    // An explicit created_at earlier than the other's first call is kept.
    call(&db, at(identify(Some("u3"), None, None, json!({})), 25));
    call(
        &db,
        at(
            identify(
                None,
                None,
                Some("dev-3"),
                json!({"created_at": "2016-06-07T15:44:20Z"}),
            ),
            45,
        ),
    );
    call(
        &db,
        at(identify(Some("u3"), None, Some("dev-3"), json!({})), 46),
    );
    assert_eq!(
        by_user(&db, "u3").unwrap().created_at.to_rfc3339(),
        "2016-06-07T15:44:20Z"
    );

    // And after a reopen.
    drop(db);
    let db = open(dir.path());
    assert_eq!(by_user(&db, "u1").unwrap().created_at.to_rfc3339(), ts(10));
    assert_eq!(by_user(&db, "u2").unwrap().created_at.to_rfc3339(), ts(5));
}

/// Within one call the operations apply in PostHog's order: traits / `$set`, then
/// `$set_once`, then `$add`, then `$unset` last.
#[test]
fn one_call_applies_set_then_set_once_then_add_then_unset() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(&db, at("u1", 1, json!({"traits": {"x": 1, "c": 1}})));
    let out = call(
        &db,
        at(
            "u1",
            2,
            json!({
                "traits": {"k": 10, "j": null, "q": 5},
                "$set_once": {"x": 2, "y": 2, "n": 10, "j": 3, "q": 6, "c": 10},
                "$add": {"n": 1, "m": 1, "k": 1, "c": 1},
                "$unset": ["x", "y", "m"]
            }),
        ),
    );
    assert!(out.ignored.is_empty(), "{out:?}");
    let p = by_user(&db, "u1").unwrap();
    // $unset comes last: it removes what $set_once or $add did in the same call.
    assert_eq!(prop(&p, "x"), None, "x had a value, $set_once + $unset");
    assert_eq!(prop(&p, "y"), None, "y was new, $set_once + $unset");
    assert_eq!(prop(&p, "m"), None, "$add + $unset");
    // $set_once before $add: the add counts on the set_once value.
    assert_eq!(prop(&p, "n"), Some(json!(11)), "$set_once 10 + $add 1");
    // A set before $add, and a set before $set_once.
    assert_eq!(prop(&p, "k"), Some(json!(11)), "set 10 + $add 1");
    assert_eq!(prop(&p, "q"), Some(json!(5)), "set 5 + $set_once 6");
    // A trait null removes, then $set_once finds the property empty.
    assert_eq!(prop(&p, "j"), Some(json!(3)), "null + $set_once 3");
    // $set_once finds an existing value: only the add counts.
    assert_eq!(prop(&p, "c"), Some(json!(2)), "1, $set_once 10, $add 1");
    // The same after a reopen (the states are stored, not just the values).
    drop(db);
    let db = open(dir.path());
    let q = by_user(&db, "u1").unwrap();
    assert_eq!(q.properties, p.properties);
}

/// SPEC 3.3 and 3.5: a removal (`$unset`, trait `null`) of a name no call set yet is
/// remembered with its timestamp, so an older set of it that arrives later does not bring the
/// property back; it registers the name like a set would. Past the limit it is a no-op and not
/// reported (nothing can hold the name).
#[test]
fn removing_a_never_seen_property_is_remembered_against_an_older_late_set() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_property_names: 2,
        ..options()
    };
    let db = Db::open(dir.path(), opts.clone()).unwrap();
    let out = call(&db, at("u1", 5, json!({"$unset": ["plan"]})));
    assert!(out.ignored.is_empty(), "{out:?}");
    assert_eq!(db.stats().property_names, 1);
    // Older than the removal, arriving after it: stays removed.
    call(&db, at("u1", 3, json!({"traits": {"plan": "pro"}})));
    assert_eq!(prop(&by_user(&db, "u1").unwrap(), "plan"), None);
    // Newer: set.
    call(&db, at("u1", 7, json!({"traits": {"plan": "team"}})));
    assert_eq!(
        prop(&by_user(&db, "u1").unwrap(), "plan"),
        Some(json!("team"))
    );
    // Fill the limit; a removal of yet another name is a no-op, not an ignored operation.
    let out = call(&db, at("u1", 8, json!({"traits": {"b": 2}})));
    assert!(out.ignored.is_empty(), "{out:?}");
    let out = call(
        &db,
        at("u1", 9, json!({"$unset": ["ghost"], "traits": {"c": 1}})),
    );
    assert_eq!(out.ignored, vec!["c".to_string()], "{out:?}");
    drop(db);
    let db = Db::open(dir.path(), opts).unwrap();
    assert_eq!(db.stats().property_names, 2);
}

/// An `$add` that would overflow a float to infinity is not applied and is listed in
/// `ignored`, like an `$add` on a non-number; the value stays as it was (never `null`).
#[test]
fn add_overflowing_to_infinity_is_ignored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let out = call(&db, at("u1", 1, json!({"$add": {"big": 1e308}})));
    assert!(out.ignored.is_empty());
    let out = call(&db, at("u1", 2, json!({"$add": {"big": 1e308, "n": 1}})));
    assert_eq!(out.ignored, vec!["big".to_string()]);
    let p = by_user(&db, "u1").unwrap();
    assert_eq!(prop(&p, "big"), Some(json!(1e308)));
    assert_eq!(prop(&p, "n"), Some(json!(1)));
}
