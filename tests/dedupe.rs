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

/// Compaction packs the messageIds still in the window into blocks (16 bytes each, instead of
/// a 21-byte entry in a 20-byte frame of its own once the profile records around them are
/// superseded); a full replay of the log (no hint) reads them back, oldest first, so every
/// one is still a duplicate and the window still forgets the oldest first.
#[test]
fn compaction_packs_the_window_and_a_full_replay_reads_it_back() {
    const N: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        dedupe_window: N,
        // No history steps: the disk then holds the profile and the window alone.
        history_retention: std::time::Duration::ZERO,
        ..options()
    };
    {
        let db = Db::open(dir.path(), opts.clone()).unwrap();
        for i in 0..N {
            call(&db, add(&format!("m-{i}")));
        }
        db.compact().unwrap();
        let disk = db.stats().storage.disk_bytes;
        // One profile of one property and N hashes: ~80 KB packed; ~205 KB as notes.
        assert!(
            disk < (N as u64) * 16 + 16_384,
            "{disk} bytes on disk after compaction for {N} messageIds"
        );
        db.sync().unwrap();
        db.abandon();
    }
    std::fs::remove_file(dir.path().join("HINT")).ok();
    let db = Db::open(dir.path(), opts).unwrap();
    assert!(!db.stats().storage.recovery.used_hint);
    for i in (0..N).step_by(97).chain([N - 1]) {
        assert_eq!(
            call(&db, add(&format!("m-{i}"))).status,
            Status::Duplicate,
            "m-{i} after a full replay"
        );
    }
    // The window is full: one new id pushes out the oldest, m-0, and only it.
    assert_eq!(call(&db, add("new")).status, Status::Updated);
    assert_eq!(call(&db, add("m-1")).status, Status::Duplicate);
    assert_eq!(call(&db, add("m-0")).status, Status::Updated);
    assert_eq!(
        prop(&by_user(&db, "u-1").unwrap(), "logins"),
        Some(json!(N as i64 + 2))
    );
}

/// A second compaction repacks the blocks of the first, keeping only the ids still in the
/// window; a full replay then holds exactly the newest `window` ids.
#[test]
fn a_second_compaction_repacks_only_the_ids_still_in_the_window() {
    const WINDOW: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        dedupe_window: WINDOW,
        history_retention: std::time::Duration::ZERO,
        ..options()
    };
    {
        let db = Db::open(dir.path(), opts.clone()).unwrap();
        for i in 0..5_000 {
            call(&db, add(&format!("m-{i}")));
        }
        db.compact().unwrap();
        for i in 5_000..6_000 {
            call(&db, add(&format!("m-{i}")));
        }
        db.compact().unwrap();
        // The window's 3,000 ids at 16 bytes, and one small profile.
        let disk = db.stats().storage.disk_bytes;
        assert!(disk < (WINDOW as u64) * 16 + 16_384, "{disk} bytes");
        db.sync().unwrap();
        db.abandon();
    }
    std::fs::remove_file(dir.path().join("HINT")).ok();
    let db = Db::open(dir.path(), opts).unwrap();
    assert!(!db.stats().storage.recovery.used_hint);
    for i in (3_000..6_000).step_by(61).chain([5_999]) {
        assert_eq!(
            call(&db, add(&format!("m-{i}"))).status,
            Status::Duplicate,
            "m-{i}"
        );
    }
    assert_eq!(call(&db, add("m-2999")).status, Status::Updated);
}
