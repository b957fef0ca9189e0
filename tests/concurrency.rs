//! SPEC 4: `Db` is `Send + Sync`; many threads identify and read at once, and the result equals
//! some serial order of the calls. A merge is one atomic write.

#[path = "support/common.rs"]
mod common;

use std::sync::Arc;

use common::*;
use profiledb::{Db, Durability, Options, Selector};
use serde_json::json;

#[test]
fn concurrent_adds_from_many_threads_all_count() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Db::open(
            dir.path(),
            Options {
                durability: Durability::group_commit(),
                ..options()
            },
        )
        .unwrap(),
    );
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..200 {
                    let person = i % 10;
                    call(
                        &db,
                        json!({"userId": format!("person-{person}"), "messageId": format!("t{t}-{i}"),
                               "$add": {"calls": 1}, "traits": {"last_thread": t}}),
                    );
                    if i % 7 == 0 {
                        // Readers run alongside writers.
                        let p = db.get(&Selector::UserId(format!("person-{person}"))).unwrap();
                        assert!(p.is_some());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut total = 0;
    for person in 0..10 {
        let p = by_user(&db, &format!("person-{person}")).unwrap();
        total += prop(&p, "calls").unwrap().as_i64().unwrap();
    }
    assert_eq!(total, 8 * 200);
    assert_eq!(db.stats().profiles, 10);
    assert_eq!(db.check().unwrap(), Vec::<String>::new());
}

#[test]
fn concurrent_merges_leave_every_identifier_on_one_profile() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..100 {
                    let p = (i + t) % 20;
                    let m = match i % 3 {
                        0 => identify(Some(&format!("u{p}")), None, None, json!({})),
                        1 => identify(None, Some(&format!("e{p}@example.com")), None, json!({})),
                        _ => identify(
                            Some(&format!("u{p}")),
                            Some(&format!("e{p}@example.com")),
                            Some(&format!("a{t}")),
                            json!({}),
                        ),
                    };
                    call(&db, m);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for p in 0..20 {
        let by_u = by_user(&db, &format!("u{p}")).map(|p| p.key);
        let by_e = by_email(&db, &format!("e{p}@example.com")).map(|p| p.key);
        assert_eq!(by_u, by_e, "person {p} is one profile");
    }
    assert_eq!(db.check().unwrap(), Vec::<String>::new());
}

#[test]
fn a_merge_torn_at_any_byte_leaves_both_profiles_or_the_merged_one() {
    let master = tempfile::tempdir().unwrap();
    let (before, after);
    {
        let db = open(master.path());
        call(&db, identify(Some("u-m"), None, None, json!({"a": 1})));
        call(
            &db,
            identify(None, Some("m@example.com"), None, json!({"b": 2})),
        );
        db.sync().unwrap();
        before = std::fs::metadata(common::segment_files(master.path()).last().unwrap())
            .unwrap()
            .len();
        call(
            &db,
            identify(Some("u-m"), Some("m@example.com"), None, json!({"c": 3})),
        );
        db.sync().unwrap();
        after = std::fs::metadata(common::segment_files(master.path()).last().unwrap())
            .unwrap()
            .len();
        db.abandon();
    }
    assert!(after > before);
    let seg_name = common::segment_files(master.path())
        .last()
        .unwrap()
        .file_name()
        .unwrap()
        .to_owned();
    for cut in before..after {
        let dir = tempfile::tempdir().unwrap();
        for f in common::segment_files(master.path()) {
            std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
        }
        let seg = dir.path().join(&seg_name);
        let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let db = open(dir.path());
        let u = by_user(&db, "u-m").unwrap();
        let e = by_email(&db, "m@example.com").unwrap();
        if u.key == e.key {
            assert_eq!(
                prop(&u, "c"),
                Some(json!(3)),
                "cut {cut}: merged without its traits"
            );
            assert_eq!(db.stats().profiles, 1);
        } else {
            assert_eq!(prop(&u, "c"), None, "cut {cut}: half a merge");
            assert_eq!(db.stats().profiles, 2);
        }
        assert_eq!(db.check().unwrap(), Vec::<String>::new(), "cut {cut}");
    }
}
