//! SPEC 3.2: resolution and merge, with protection.

#[path = "support/common.rs"]
mod common;

use common::*;
use profiledb::Status;
use serde_json::json;

#[test]
fn no_identifier_found_creates_one_profile_holding_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let out = call(
        &db,
        identify(
            Some("u-1"),
            Some("Sarah@Example.com"),
            Some("a-1"),
            json!({}),
        ),
    );
    assert_eq!(out.status, Status::Created);
    let p = by_user(&db, "u-1").unwrap();
    assert_eq!(p.key, out.key);
    assert_eq!(p.email.as_deref(), Some("Sarah@Example.com"));
    assert_eq!(p.anonymous_ids, vec!["a-1".to_string()]);
    // Email lookups are case-insensitive and trimmed.
    assert_eq!(by_email(&db, "  sarah@EXAMPLE.com ").unwrap().key, out.key);
    assert_eq!(by_anon(&db, "a-1").unwrap().key, out.key);
}

#[test]
fn gosquared_id_and_email_profiles_merge_when_one_call_names_both() {
    // GoSquared: "tracking users by their id and email separately will create two different
    // profiles. GoSquared will merge these two profiles together when you next identify a user
    // with both id and email in the properties of the same identify call."
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let by_id = call(
        &db,
        identify(Some("253552"), None, None, json!({"plan": "pro"})),
    );
    let by_mail = call(
        &db,
        identify(
            None,
            Some("simon@example.com"),
            None,
            json!({"username": "simontabor"}),
        ),
    );
    assert_ne!(by_id.key, by_mail.key);
    let out = call(
        &db,
        identify(Some("253552"), Some("simon@example.com"), None, json!({})),
    );
    assert_eq!(out.status, Status::Merged);
    assert_eq!(out.key, by_id.key, "the userId's profile survives");
    assert_eq!(out.merged, vec![by_mail.key]);
    let p = by_user(&db, "253552").unwrap();
    assert_eq!(p.email.as_deref(), Some("simon@example.com"));
    assert_eq!(prop(&p, "plan"), Some(json!("pro")));
    assert_eq!(prop(&p, "username"), Some(json!("simontabor")));
    // The merged-away key resolves to the survivor.
    assert_eq!(by_key(&db, by_mail.key).unwrap().key, by_id.key);
    assert_eq!(db.stats().profiles, 1);
}

#[test]
fn all_found_in_one_profile_updates_it_and_attaches_missing_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let first = call(&db, identify(Some("u-1"), None, None, json!({})));
    let out = call(&db, identify(Some("u-1"), None, Some("dev-1"), json!({})));
    assert_eq!(out.status, Status::Updated);
    assert_eq!(out.key, first.key);
    assert_eq!(by_anon(&db, "dev-1").unwrap().key, first.key);
}

#[test]
fn two_profiles_with_different_user_ids_never_merge_the_email_moves() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let a = call(
        &db,
        identify(Some("u-a"), Some("shared@example.com"), None, json!({})),
    );
    let b = call(&db, identify(Some("u-b"), None, None, json!({})));
    let out = call(
        &db,
        identify(Some("u-b"), Some("shared@example.com"), None, json!({})),
    );
    assert_eq!(out.status, Status::Updated);
    assert!(out.merged.is_empty());
    assert_eq!(out.moved.len(), 1);
    assert_eq!(out.moved[0].identifier, "email");
    assert_eq!(out.moved[0].from, a.key);
    assert_eq!(by_email(&db, "shared@example.com").unwrap().key, b.key);
    let pa = by_user(&db, "u-a").unwrap();
    assert_eq!(pa.email, None, "the email was released by the other person");
    assert_eq!(db.stats().profiles, 2);
}

#[test]
fn a_shared_device_is_not_proof_of_one_person() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let a = call(
        &db,
        identify(Some("u-a"), None, Some("family-ipad"), json!({})),
    );
    // A new user id on a device of another identified person: a new profile takes the device.
    let out = call(
        &db,
        identify(Some("u-b"), None, Some("family-ipad"), json!({})),
    );
    assert_eq!(out.status, Status::Created);
    assert_ne!(out.key, a.key);
    assert_eq!(out.moved[0].identifier, "anonymous_id");
    assert_eq!(
        by_anon(&db, "family-ipad").unwrap().user_id.as_deref(),
        Some("u-b")
    );
    assert!(by_user(&db, "u-a").unwrap().anonymous_ids.is_empty());
}

#[test]
fn an_anonymous_profile_becomes_the_user_ids_profile() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let anon = call(
        &db,
        identify(None, None, Some("cookie-1"), json!({"seen": 1})),
    );
    let out = call(
        &db,
        identify(Some("u-1"), None, Some("cookie-1"), json!({})),
    );
    assert_eq!(out.status, Status::Updated);
    assert_eq!(out.key, anon.key);
    assert_eq!(prop(&by_user(&db, "u-1").unwrap(), "seen"), Some(json!(1)));
}

#[test]
fn survivor_without_user_id_is_the_first_that_carries_one_in_order_email_anonymous_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let by_mail = call(&db, identify(None, Some("x@example.com"), None, json!({})));
    let identified = call(&db, identify(Some("u-9"), None, Some("dev-9"), json!({})));
    let out = call(
        &db,
        identify(None, Some("x@example.com"), Some("dev-9"), json!({})),
    );
    assert_eq!(out.status, Status::Merged);
    assert_eq!(out.key, identified.key);
    assert_eq!(out.merged, vec![by_mail.key]);
    // Neither carries a user id: the one found by email survives.
    let e = call(&db, identify(None, Some("y@example.com"), None, json!({})));
    let d = call(&db, identify(None, None, Some("dev-y"), json!({})));
    let out = call(
        &db,
        identify(None, Some("y@example.com"), Some("dev-y"), json!({})),
    );
    assert_eq!(out.key, e.key);
    assert_eq!(out.merged, vec![d.key]);
}

#[test]
fn a_new_email_replaces_the_old_one_which_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let a = call(
        &db,
        identify(Some("u-1"), Some("old@example.com"), None, json!({})),
    );
    call(
        &db,
        identify(Some("u-1"), Some("new@example.com"), None, json!({})),
    );
    assert_eq!(by_email(&db, "new@example.com").unwrap().key, a.key);
    assert!(by_email(&db, "old@example.com").is_none());
    // The released email can identify somebody else.
    let b = call(
        &db,
        identify(Some("u-2"), Some("old@example.com"), None, json!({})),
    );
    assert!(b.moved.is_empty());
    assert_eq!(by_email(&db, "old@example.com").unwrap().key, b.key);
}

#[test]
fn merged_away_keys_keep_resolving_through_chains_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2, k3);
    {
        let db = open(dir.path());
        k1 = call(&db, identify(None, Some("p@example.com"), None, json!({}))).key;
        k2 = call(&db, identify(None, None, Some("dev-p"), json!({}))).key;
        call(
            &db,
            identify(None, Some("p@example.com"), Some("dev-p"), json!({})),
        );
        k3 = call(&db, identify(Some("u-p"), None, None, json!({}))).key;
        call(
            &db,
            identify(Some("u-p"), Some("p@example.com"), None, json!({})),
        );
        db.close().unwrap();
    }
    let db = open(dir.path());
    for k in [k1, k2, k3] {
        assert_eq!(by_key(&db, k).unwrap().key, k3, "key {k}");
    }
    assert_eq!(db.stats().profiles, 1);
}

#[test]
fn alias_links_an_anonymous_id_to_the_user_id() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let anon = call(
        &db,
        identify(None, None, Some("anon-7"), json!({"visits": 3})),
    );
    let user = call(&db, identify(Some("u-7"), None, None, json!({})));
    let out = call(
        &db,
        json!({"type": "alias", "previousId": "anon-7", "userId": "u-7"}),
    );
    assert_eq!(out.status, Status::Merged);
    assert_eq!(out.key, user.key);
    assert_eq!(out.merged, vec![anon.key]);
    // Unknown previousId: attached as an anonymous id.
    call(
        &db,
        json!({"type": "alias", "previousId": "never-seen", "userId": "u-7"}),
    );
    assert_eq!(by_anon(&db, "never-seen").unwrap().key, user.key);
}

#[test]
fn alias_of_two_identified_people_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(&db, identify(Some("u-a"), None, None, json!({})));
    call(&db, identify(Some("u-b"), None, None, json!({})));
    let err = try_call(
        &db,
        json!({"type": "alias", "previousId": "u-a", "userId": "u-b"}),
    );
    assert!(matches!(err, Err(profiledb::Error::Invalid(_))), "{err:?}");
    assert_eq!(db.stats().profiles, 2);
}

#[test]
fn track_with_both_ids_links_them_and_stores_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let anon = call(&db, identify(None, None, Some("anon-t"), json!({})));
    let user = call(&db, identify(Some("u-t"), None, None, json!({})));
    let out = call(
        &db,
        json!({"type": "track", "event": "Signed Up", "userId": "u-t", "anonymousId": "anon-t",
               "properties": {"plan": "pro"}}),
    );
    assert_eq!(out.status, Status::Merged);
    assert_eq!(out.key, user.key);
    assert_eq!(out.merged, vec![anon.key]);
    assert_eq!(prop(&by_user(&db, "u-t").unwrap(), "plan"), None);
    let out = call(
        &db,
        json!({"type": "page", "userId": "u-t", "name": "Home"}),
    );
    assert_eq!(out.status, Status::Unchanged);
}

/// SPEC 3.2.3 / 3.7: a merged-away key keeps resolving to its live survivor however long the
/// chain of merges (here 200, each merging the previous survivor away), after a clean reopen
/// (index snapshot), after a crash (log replay), and after a compaction.
#[test]
fn merged_away_keys_resolve_to_the_survivor_through_a_chain_of_200_merges() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    let survivor;
    {
        let db = open(dir.path());
        keys.push(call(&db, identify(None, None, Some("dev-chain"), json!({}))).key);
        for i in 0..200 {
            let email = format!("chain-{i}@example.com");
            let k = call(&db, identify(None, Some(&email), None, json!({}))).key;
            // The email's profile survives; the one holding the device is merged away.
            let out = call(
                &db,
                identify(None, Some(&email), Some("dev-chain"), json!({})),
            );
            assert_eq!(out.status, Status::Merged);
            assert_eq!(out.key, k);
            assert_eq!(out.merged, [*keys.last().unwrap()]);
            keys.push(k);
        }
        survivor = *keys.last().unwrap();
        for &k in &keys {
            assert_eq!(by_key(&db, k).map(|p| p.key), Some(survivor), "key {k}");
        }
        db.close().unwrap();
    }
    let check = |db: &profiledb::Db, want: Option<u64>, when: &str| {
        for &k in &keys {
            assert_eq!(by_key(db, k).map(|p| p.key), want, "key {k} {when}");
        }
    };
    let db = open(dir.path());
    check(&db, Some(survivor), "after reopen");
    assert_eq!(db.stats().profiles, 1);
    // One more merge after the reopen extends the chain from the snapshot.
    let last = call(
        &db,
        identify(None, Some("last@example.com"), None, json!({})),
    )
    .key;
    call(
        &db,
        identify(None, Some("last@example.com"), Some("dev-chain"), json!({})),
    );
    check(&db, Some(last), "after one more merge");
    db.sync().unwrap();
    db.abandon();
    let db = open(dir.path());
    check(&db, Some(last), "after a crash");
    db.compact().unwrap();
    drop(db);
    let db = open(dir.path());
    check(&db, Some(last), "after a compaction");
    assert_eq!(db.stats().profiles, 1);
    // Deleting the survivor makes the whole chain resolve to nothing.
    db.delete(&profiledb::Selector::Key(keys[0]), false)
        .unwrap();
    check(&db, None, "after the survivor's delete");
}

/// D-AL1: an alias whose `previousId` is a known user id is refused, and the error says why
/// for each case: another identified person (never merged), or a `userId` with no profile
/// (an alias never renames a user id). An alias whose two ids are already one person is
/// `updated` (not `unchanged`) and changes nothing.
#[test]
fn alias_never_renames_a_user_id_and_the_error_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let a = call(&db, identify(Some("u-a"), None, None, json!({})));
    call(&db, identify(Some("u-b"), None, None, json!({})));
    let rule = |m: serde_json::Value| match try_call(&db, m.clone()) {
        Err(profiledb::Error::Invalid(errors)) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].field, "previousId");
            errors[0].rule.clone()
        }
        other => panic!("{m}: expected Invalid, got {other:?}"),
    };
    let two = rule(json!({"type": "alias", "previousId": "u-a", "userId": "u-b"}));
    assert!(two.contains("never merged"), "{two}");
    let rename = rule(json!({"type": "alias", "previousId": "u-a", "userId": "u-new"}));
    assert!(rename.contains("rename"), "{rename}");
    assert!(!rename.contains("another identified"), "{rename}");
    assert!(by_user(&db, "u-new").is_none());
    // Already one person.
    let out = call(
        &db,
        json!({"type": "alias", "previousId": "u-a", "userId": "u-a"}),
    );
    assert_eq!(out.status, Status::Updated);
    assert_eq!(out.key, a.key);
    assert_eq!(db.stats().profiles, 2);
}
