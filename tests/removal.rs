//! SPEC 3.6: delete, suppression, unlink (logout); no byte of a deleted profile remains after
//! compaction.

#[path = "support/common.rs"]
mod common;

use common::*;
use profiledb::{Error, Selector};
use serde_json::json;

fn dir_contains(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn neocom_removal_request_leaves_no_byte_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(
        &db,
        identify(
            Some("victim-user-id"),
            Some("victim.mail@example.com"),
            Some("victim-device"),
            json!({"secret_note": "victim-secret-value"}),
        ),
    );
    for i in 0..50 {
        call(
            &db,
            identify(Some(&format!("other-{i}")), None, None, json!({"n": i})),
        );
    }
    // Several versions of the victim's record.
    for i in 0..5 {
        call(
            &db,
            identify(Some("victim-user-id"), None, None, json!({"visits": i})),
        );
    }
    db.sync().unwrap();
    assert!(!dir_contains(dir.path(), b"victim-secret-value").is_empty());
    let key = db
        .delete(&Selector::Email("VICTIM.mail@example.com".into()), false)
        .unwrap()
        .unwrap();
    assert!(by_user(&db, "victim-user-id").is_none());
    assert!(by_key(&db, key).is_none());
    db.compact().unwrap();
    db.close().unwrap();
    for needle in [
        &b"victim-secret-value"[..],
        b"victim-user-id",
        b"victim.mail@example.com",
        b"victim-device",
    ] {
        assert_eq!(
            dir_contains(dir.path(), needle),
            Vec::<String>::new(),
            "{needle:?}"
        );
    }
    let db = open(dir.path());
    assert!(by_user(&db, "victim-user-id").is_none());
    assert_eq!(db.stats().profiles, 50);
    // The identifiers are free again, and the key is never reused.
    let again = call(&db, identify(Some("victim-user-id"), None, None, json!({})));
    assert!(again.key > key);
}

#[test]
fn suppressed_identifiers_are_refused_also_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        call(
            &db,
            identify(
                Some("gone-user"),
                Some("gone@example.com"),
                Some("gone-dev"),
                json!({}),
            ),
        );
        db.delete(&Selector::UserId("gone-user".into()), true)
            .unwrap()
            .unwrap();
        let err = try_call(&db, identify(Some("gone-user"), None, None, json!({})));
        assert!(
            matches!(err, Err(Error::Suppressed { ref field }) if field == "userId"),
            "{err:?}"
        );
        db.compact().unwrap();
        db.close().unwrap();
    }
    let db = open(dir.path());
    let err = try_call(
        &db,
        identify(Some("someone"), Some("GONE@example.com"), None, json!({})),
    );
    assert!(
        matches!(err, Err(Error::Suppressed { ref field }) if field == "traits.email"),
        "{err:?}"
    );
    let err = try_call(&db, identify(None, None, Some("gone-dev"), json!({})));
    assert!(matches!(err, Err(Error::Suppressed { .. })), "{err:?}");
    assert!(
        by_user(&db, "someone").is_none(),
        "nothing of a refused call is stored"
    );
    assert_eq!(
        dir_contains(dir.path(), b"gone@example.com"),
        Vec::<String>::new()
    );
}

#[test]
fn gosquared_logout_unlink_detaches_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let a = call(&db, identify(Some("u-1"), None, Some("laptop"), json!({})));
    assert_eq!(db.unlink("laptop").unwrap(), Some(a.key));
    assert!(by_anon(&db, "laptop").is_none());
    assert!(by_user(&db, "u-1").unwrap().anonymous_ids.is_empty());
    // The device now starts a new, anonymous person.
    let b = call(&db, identify(None, None, Some("laptop"), json!({})));
    assert_ne!(b.key, a.key);
    assert_eq!(db.unlink("unknown").unwrap(), None);
}

#[test]
fn delete_of_a_missing_profile_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    assert_eq!(
        db.delete(&Selector::UserId("nobody".into()), false)
            .unwrap(),
        None
    );
}

/// A suppressed identifier is refused with an error naming the field as the caller wrote it:
/// an alias's `previousId` (looked up as a user id or an anonymous id) is `previousId`, and an
/// email given in `$set` is `$set.email`.
#[test]
fn suppression_errors_name_the_field_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(
        &db,
        identify(
            Some("gone-user"),
            Some("gone@example.com"),
            Some("gone-dev"),
            json!({}),
        ),
    );
    db.delete(&Selector::UserId("gone-user".into()), true)
        .unwrap()
        .unwrap();
    let field_of = |m: serde_json::Value| match try_call(&db, m.clone()) {
        Err(Error::Suppressed { field }) => field,
        other => panic!("{m}: expected Suppressed, got {other:?}"),
    };
    let alias = |prev: &str, uid: &str| json!({"type": "alias", "previousId": prev, "userId": uid});
    assert_eq!(field_of(alias("gone-dev", "new-user")), "previousId");
    assert_eq!(field_of(alias("gone-user", "new-user")), "previousId");
    assert_eq!(field_of(alias("new-dev", "gone-user")), "userId");
    assert_eq!(
        field_of(json!({"userId": "someone", "$set": {"email": "Gone@Example.com"}})),
        "$set.email"
    );
    assert_eq!(
        field_of(json!({"type": "group", "groupId": "c1", "anonymousId": "gone-dev"})),
        "anonymousId"
    );
    assert_eq!(
        field_of(
            json!({"type": "track", "event": "e", "userId": "gone-user", "anonymousId": "x-1"})
        ),
        "userId"
    );
}
