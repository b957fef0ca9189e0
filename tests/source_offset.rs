//! Issue 17, the engine's half of exactly-once consumption: a `SOURCE_OFFSET` entry
//! (`Db::apply_at`, `Db::mark_source_offset`, `Db::source_offset`) lands in the same atomic
//! frame as the call it covers, survives reopen, the index snapshot and compaction, and after
//! a crash (the log cut at every byte of its last frames) the recovered position equals
//! exactly the calls the store holds: never one without the other.

use std::path::Path;

use profiledb::{Db, Durability, Options, Selector, SourceOffset, Value};
use serde_json::json;

const TOPIC: &str = "calls";

fn at(partition: i32, next_offset: i64, next_call: u32) -> SourceOffset {
    SourceOffset {
        topic: TOPIC.into(),
        partition,
        next_offset,
        next_call,
    }
}

fn options() -> Options {
    Options {
        compaction_ratio: None,
        ..Options::default()
    }
}

/// Call `i`: one `$add` to one of 3 people, with a unique messageId.
fn call(i: i64) -> Vec<u8> {
    json!({"userId": format!("p{}", i % 3), "messageId": format!("m{i}"),
           "$add": {"n": 1}, "traits": {"last": i}})
    .to_string()
    .into_bytes()
}

/// Apply calls `from..to` of partition 0, each as its own message.
fn apply(db: &Db, from: i64, to: i64, durability: Durability) {
    for i in from..to {
        let prepared = db.prepare(&call(i)).unwrap();
        db.apply_at(&prepared, &at(0, i + 1, 0), durability)
            .unwrap();
    }
}

/// Sum of the counters of the 3 people.
fn total(db: &Db) -> i64 {
    (0..3)
        .map(|p| {
            db.get(&Selector::UserId(format!("p{p}")))
                .unwrap()
                .and_then(|prof| {
                    prof.properties
                        .iter()
                        .find(|(k, _)| k == "n")
                        .map(|(_, v)| match v {
                            Value::Int(n) => *n,
                            other => panic!("counter is {other:?}"),
                        })
                })
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn position_is_written_with_the_call_and_read_back_after_reopen_hint_and_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = Db::open(dir, options()).unwrap();
    assert_eq!(db.source_offset(TOPIC, 0), None);
    apply(&db, 0, 50, Durability::Buffered);
    assert_eq!(db.source_offset(TOPIC, 0), Some(at(0, 50, 0)));
    assert_eq!(db.source_offset(TOPIC, 1), None);
    assert_eq!(db.source_offset("other", 0), None);
    // A second partition in the same store keeps its own position.
    let p = db.prepare(&call(1000)).unwrap();
    db.apply_at(&p, &at(1, 7, 2), Durability::Buffered).unwrap();
    assert_eq!(db.source_offset(TOPIC, 1), Some(at(1, 7, 2)));
    // A duplicate messageId writes nothing, so records nothing; the mark moves past it.
    let dup = db.prepare(&call(49)).unwrap();
    db.apply_at(&dup, &at(0, 51, 0), Durability::Buffered)
        .unwrap();
    assert_eq!(db.source_offset(TOPIC, 0), Some(at(0, 50, 0)));
    db.mark_source_offset(&at(0, 51, 0), Durability::Buffered)
        .unwrap();
    assert_eq!(db.source_offset(TOPIC, 0), Some(at(0, 51, 0)));
    assert_eq!(total(&db), 51);
    db.close().unwrap();

    // Reopen from the hint.
    let db = Db::open(dir, options()).unwrap();
    assert_eq!(db.source_offset(TOPIC, 0), Some(at(0, 51, 0)));
    assert_eq!(db.source_offset(TOPIC, 1), Some(at(1, 7, 2)));
    // Compaction drops every older position and keeps the newest.
    let before = db.stats().storage.disk_bytes;
    db.compact().unwrap();
    assert!(db.stats().storage.disk_bytes < before);
    assert_eq!(db.source_offset(TOPIC, 0), Some(at(0, 51, 0)));
    apply(&db, 51, 60, Durability::Buffered);
    db.close().unwrap();

    // Reopen by replaying the whole log (no hint).
    std::fs::remove_file(dir.join("HINT")).unwrap();
    let db = Db::open(dir, options()).unwrap();
    assert_eq!(db.source_offset(TOPIC, 0), Some(at(0, 60, 0)));
    assert_eq!(db.source_offset(TOPIC, 1), Some(at(1, 7, 2)));
    assert_eq!(total(&db), 60);
    assert!(db.check().unwrap().is_empty());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() && e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A crash at any byte of the last calls' frames: the store reopens holding the calls of
/// the whole frames and a position that names exactly them, with and without a hint before.
#[test]
fn a_log_cut_at_every_byte_of_the_last_frames_keeps_position_and_calls_together() {
    for with_hint in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        let db = Db::open(&base, options()).unwrap();
        apply(&db, 0, 20, Durability::Buffered);
        if with_hint {
            db.checkpoint().unwrap();
        }
        db.sync().unwrap();
        let seg = base.join("0000000001.seg");
        let start = std::fs::metadata(&seg).unwrap().len();
        apply(&db, 20, 24, Durability::Buffered);
        db.abandon();
        let full = std::fs::read(&seg).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for cut in start..=full.len() as u64 {
            let dir = tmp.path().join(format!("cut{cut}"));
            copy_dir(&base, &dir);
            std::fs::write(dir.join("0000000001.seg"), &full[..cut as usize]).unwrap();
            let db = Db::open(&dir, options()).unwrap();
            let pos = db.source_offset(TOPIC, 0).expect("a position");
            assert_eq!(pos.next_call, 0);
            assert_eq!(
                total(&db),
                pos.next_offset,
                "cut at {cut} (hint {with_hint}): calls and position disagree"
            );
            seen.insert(pos.next_offset);
            drop(db);
            std::fs::remove_dir_all(&dir).unwrap();
        }
        // Every position from the last synced one to the end was recovered at some cut.
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            (20..=24).collect::<Vec<_>>()
        );
    }
}

/// Small segments and compactions between rounds of writes: the newest position is always
/// the live one, and reads back after reopen.
#[test]
fn source_offset_survives_a_background_compaction_while_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(
        tmp.path(),
        Options {
            compaction_ratio: Some(0.1),
            compaction_min_bytes: 1,
            segment_size: 4096,
            ..Options::default()
        },
    )
    .unwrap();
    for round in 0..5 {
        apply(&db, round * 100, (round + 1) * 100, Durability::Buffered);
        db.compact().unwrap();
        assert_eq!(
            db.source_offset(TOPIC, 0),
            Some(at(0, (round + 1) * 100, 0))
        );
    }
    assert_eq!(total(&db), 500);
    db.close().unwrap();
    let db = Db::open(tmp.path(), options()).unwrap();
    assert_eq!(db.source_offset(TOPIC, 0), Some(at(0, 500, 0)));
    assert!(db.check().unwrap().is_empty());
}
