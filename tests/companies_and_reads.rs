//! SPEC 1, 2 and 3.7: companies and membership, reads and scans with filters.

#[path = "support/common.rs"]
mod common;

use common::*;
use profiledb::{Filter, Status};
use serde_json::json;

#[test]
fn user_com_company_id_groups_users_with_their_own_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(
        &db,
        identify(
            Some("u-1"),
            None,
            None,
            json!({"company": {"id": "c-1", "name": "Acme", "size": 12}}),
        ),
    );
    call(
        &db,
        json!({"type": "group", "groupId": "c-1", "userId": "u-2", "traits": {"industry": "Analytics"}}),
    );
    let c = db.company("c-1").unwrap().unwrap();
    assert_eq!(c.member_count, 2);
    assert_eq!(
        c.properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_json()))
            .collect::<Vec<_>>(),
        vec![
            ("industry", json!("Analytics")),
            ("name", json!("Acme")),
            ("size", json!(12))
        ]
    );
    let u1 = by_user(&db, "u-1").unwrap();
    assert_eq!(u1.company_id.as_deref(), Some("c-1"));
    assert_eq!(db.members("c-1").unwrap().len(), 2);
    // Moving to another company updates both member lists.
    call(
        &db,
        json!({"type": "group", "groupId": "c-2", "userId": "u-1"}),
    );
    assert_eq!(db.company("c-1").unwrap().unwrap().member_count, 1);
    assert_eq!(db.members("c-2").unwrap(), vec![u1.key]);
    assert!(db.company("nope").unwrap().is_none());
}

#[test]
fn group_without_a_person_only_upserts_the_company_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        let out = call(
            &db,
            json!({"type": "group", "groupId": "c-9", "traits": {"plan": "ent"}}),
        );
        assert_eq!(out.status, Status::Created);
        call(
            &db,
            json!({"type": "group", "groupId": "c-9", "userId": "u-9"}),
        );
        db.close().unwrap();
    }
    let db = open(dir.path());
    let c = db.company("c-9").unwrap().unwrap();
    assert_eq!(c.member_count, 1);
    assert_eq!(c.properties[0].1.to_json(), json!("ent"));
}

#[test]
fn scan_filters_on_equality_comparison_and_existence() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..20 {
        let mut traits = json!({"logins": i, "plan": if i % 2 == 0 {"pro"} else {"free"},
                                "signed_up": format!("2026-01-{:02}T00:00:00Z", i + 1)});
        if i % 5 == 0 {
            traits["vip"] = json!(true);
        }
        call(
            &db,
            identify(Some(&format!("user-{i}")), None, None, traits),
        );
    }
    let count = |text: &str| {
        let f = Filter::parse(text).unwrap();
        let mut n = 0;
        db.scan(&f, &mut |_| {
            n += 1;
            true
        })
        .unwrap();
        n
    };
    assert_eq!(count("plan = \"pro\""), 10);
    assert_eq!(count("logins >= 15"), 5);
    assert_eq!(count("exists vip"), 4);
    assert_eq!(count("plan = \"pro\" and logins < 10"), 5);
    assert_eq!(count("signed_up < 2026-01-04T00:00:00Z"), 3);
    let mut all = 0;
    db.scan(&Filter::All, &mut |_| {
        all += 1;
        all < 7
    })
    .unwrap();
    assert_eq!(all, 7, "the callback stops the scan");
}

#[test]
fn profile_json_has_the_spec_shape() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut m = identify(
        Some("u-123"),
        Some("sarah@example.com"),
        Some("a-9"),
        json!({"first_name": "Sarah", "last_name": "Smith", "plan": "pro", "company": {"id": "c-1", "name": "Acme"}}),
    );
    m["timestamp"] = json!("2026-11-22T10:00:00Z");
    call(&db, m);
    let p = by_user(&db, "u-123").unwrap();
    let got = serde_json::to_value(&p).unwrap();
    assert_eq!(
        got,
        json!({"key": p.key, "user_id": "u-123", "email": "sarah@example.com", "anonymous_ids": ["a-9"],
               "company_id": "c-1", "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:00:00Z",
               "properties": {"first_name": "Sarah", "last_name": "Smith", "name": "Sarah Smith", "plan": "pro"}})
    );
}

/// A filter on `created_at` sees the profile's effective created_at (the top-level field of the
/// profile JSON, defaulted or explicit), and one on `updated_at` its updated_at (docs/cli.md's
/// `created_at < ...` example).
#[test]
fn filters_see_the_effective_created_at_and_updated_at() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let at = |mut m: serde_json::Value, n: u32| {
        m["timestamp"] = json!(ts(n));
        m
    };
    call(&db, at(identify(Some("u1"), None, None, json!({})), 10));
    call(
        &db,
        at(
            identify(
                Some("u2"),
                None,
                None,
                json!({"created_at": "2016-06-07T15:44:20Z"}),
            ),
            30,
        ),
    );
    call(&db, at(identify(Some("u3"), None, None, json!({})), 40));
    call(
        &db,
        at(identify(Some("u1"), None, None, json!({"plan": "pro"})), 50),
    );
    let users = |text: &str| {
        let f = Filter::parse(text).unwrap();
        let mut found = Vec::new();
        db.scan(&f, &mut |p| {
            found.push(p.user_id.unwrap());
            true
        })
        .unwrap();
        found
    };
    assert_eq!(users(&format!("created_at < {}", ts(20))), ["u1", "u2"]);
    assert_eq!(users(&format!("created_at >= {}", ts(40))), ["u3"]);
    assert_eq!(users("exists created_at"), ["u1", "u2", "u3"]);
    assert_eq!(users(&format!("updated_at > {}", ts(35))), ["u1", "u3"]);
    assert_eq!(users(&format!("updated_at = {}", ts(30))), ["u2"]);
    // The profile JSON shows the same value at the top level.
    let p = by_user(&db, "u1").unwrap();
    assert_eq!(p.created_at.to_rfc3339(), ts(10));
}
