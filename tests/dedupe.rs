//! SPEC 2: a messageId already applied is acknowledged and ignored, also after a restart and a
//! compaction, within the configured window.

#[path = "support/common.rs"]
mod common;

use common::*;
use profiledb::{Db, Options, Status};
use serde_json::json;

fn add(mid: &str) -> serde_json::Value {
    json!({"userId": "u-1", "messageId": mid, "$add": {"logins": 1}})
}

#[test]
fn a_retried_message_is_a_duplicate_across_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        assert_eq!(call(&db, add("m-1")).status, Status::Created);
        assert_eq!(call(&db, add("m-1")).status, Status::Duplicate);
        db.compact().unwrap();
        // Crash-like: no clean close, so the next open replays the log.
        db.sync().unwrap();
        db.abandon();
    }
    let db = open(dir.path());
    let out = call(&db, add("m-1"));
    assert_eq!(out.status, Status::Duplicate);
    assert_ne!(out.key, 0, "the duplicate names the profile");
    call(&db, add("m-2"));
    db.compact().unwrap();
    db.close().unwrap();
    let db = open(dir.path());
    assert_eq!(call(&db, add("m-2")).status, Status::Duplicate);
    assert_eq!(
        prop(&by_user(&db, "u-1").unwrap(), "logins"),
        Some(json!(2))
    );
}

#[test]
fn the_dedupe_window_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        Options {
            dedupe_window: 2,
            ..options()
        },
    )
    .unwrap();
    for m in ["a1", "a2", "a3"] {
        call(&db, add(m));
    }
    assert_eq!(call(&db, add("a3")).status, Status::Duplicate);
    assert_eq!(
        call(&db, add("a1")).status,
        Status::Updated,
        "a1 fell out of the window"
    );
}

/// A blank `messageId` (`""` or only whitespace) counts as absent: it is never remembered,
/// so later calls with a blank id are applied, not answered `duplicate`.
#[test]
fn a_blank_message_id_counts_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for mid in ["", "", "   ", "\t"] {
        let out = call(&db, add(mid));
        assert_ne!(out.status, Status::Duplicate, "messageId {mid:?}");
    }
    // The typed API too.
    let typed = profiledb::Identify {
        user_id: Some("u-1".into()),
        message_id: Some(" ".into()),
        add: vec![("logins".into(), profiledb::Number::Int(1))],
        ..profiledb::Identify::default()
    };
    assert_eq!(db.identify(typed.clone()).unwrap().status, Status::Updated);
    assert_eq!(db.identify(typed).unwrap().status, Status::Updated);
    let p = by_user(&db, "u-1").unwrap();
    assert_eq!(prop(&p, "logins"), Some(json!(6)));
    // A real id is still deduped.
    call(&db, add("m-1"));
    assert_eq!(call(&db, add("m-1")).status, Status::Duplicate);
}
