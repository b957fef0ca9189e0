//! The identity journal (issue 16, docs/journal.md): history, the profile as it was
//! (`get_at`), retention through compaction and reopen, erasure of a deleted profile's history.

#[path = "support/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use profiledb::{Db, Options, Selector, Timestamp};
use serde_json::json;

fn key(k: u64) -> Selector {
    Selector::Key(k)
}

fn with_retention(retention: Duration) -> Options {
    Options {
        history_retention: retention,
        ..options()
    }
}

/// Every segment file's bytes, concatenated. A file the background compaction removes
/// between the listing and its read is skipped (its bytes left the disk).
fn disk(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            match std::fs::read(&p) {
                Ok(bytes) => all.extend(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("read {}: {e}", p.display()),
            }
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn history_lists_each_call_and_get_at_shows_each_past_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = open(dir.path());
    let mut states = Vec::new();
    for (i, plan) in ["basic", "pro", "team"].iter().enumerate() {
        let mut m = identify(Some("u1"), None, None, json!({ "plan": plan, "n": i }));
        m["messageId"] = json!(format!("m{i}"));
        call(&db, m);
        states.push((db.history_clock(), by_user(&db, "u1").unwrap()));
    }
    let check = |db: &Db, when: &str| {
        let h = db.history(&Selector::UserId("u1".into())).unwrap().unwrap();
        assert_eq!(h.steps.len(), 3, "{when}: {h:?}");
        assert!(h.steps[0].created);
        assert_eq!(h.steps[1].message_id.as_deref(), Some("m1"));
        assert_eq!(h.steps[2].user_id.as_deref(), Some("u1"));
        let plan = h.steps[2]
            .changes
            .iter()
            .find(|c| c.name == "plan")
            .unwrap();
        assert_eq!(plan.old, Some(profiledb::Value::Str("pro".into())));
        assert_eq!(plan.new, Some(profiledb::Value::Str("team".into())));
        for (at, want) in &states {
            assert_eq!(
                db.get_at(&Selector::UserId("u1".into()), *at)
                    .unwrap()
                    .as_ref(),
                Some(want),
                "{when}: at {at}"
            );
        }
        let before = Timestamp(h.steps[0].applied_at.0 - 1);
        assert_eq!(
            db.get_at(&key(states[0].1.key), before).unwrap(),
            None,
            "{when}: before its first call the profile did not exist"
        );
    };
    check(&db, "live");
    db.compact().unwrap();
    check(&db, "compacted");
    db.close().unwrap();
    db = open(dir.path());
    check(&db, "reopened");
    db.sync().unwrap();
    db.abandon();
    let db = open(dir.path());
    check(&db, "after a crash");
}

#[test]
fn a_merged_away_profile_is_found_as_it_was_before_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let a = call(
        &db,
        identify(None, None, Some("anon-a"), json!({"color": "red"})),
    )
    .key;
    let b = call(
        &db,
        identify(None, Some("b@example.com"), None, json!({"size": 3})),
    )
    .key;
    let before_merge = db.history_clock();
    let pa = by_key(&db, a).unwrap();
    let pb = by_key(&db, b).unwrap();
    let out = call(
        &db,
        identify(
            Some("u-1"),
            Some("b@example.com"),
            Some("anon-a"),
            json!({"color": "blue"}),
        ),
    );
    assert_eq!(out.merged.len(), 1, "{out:?}");
    let gone = out.merged[0];
    let after_merge = db.history_clock();
    db.compact().unwrap();
    assert_eq!(
        db.get_at(&key(a), before_merge).unwrap().as_ref(),
        Some(&pa)
    );
    assert_eq!(
        db.get_at(&key(b), before_merge).unwrap().as_ref(),
        Some(&pb)
    );
    // By identifier: today's profile carries both; before the merge each had its own.
    assert_eq!(
        db.get_at(&Selector::AnonymousId("anon-a".into()), before_merge)
            .unwrap()
            .map(|p| p.key),
        Some(a)
    );
    assert_eq!(
        db.get_at(&Selector::Email("B@example.com".into()), before_merge)
            .unwrap()
            .map(|p| p.key),
        Some(b)
    );
    // After the merge the merged-away key shows its survivor.
    assert_eq!(
        db.get_at(&key(gone), after_merge).unwrap(),
        by_key(&db, out.key)
    );
    let h = db.history(&key(gone)).unwrap().unwrap();
    assert_eq!(h.merged_into, Some(out.key));
    let hs = db.history(&key(out.key)).unwrap().unwrap();
    assert_eq!(hs.steps.last().unwrap().merged, vec![gone]);
}

#[test]
fn deleting_with_erase_leaves_no_byte_of_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    // Two profiles merged, then the survivor deleted: neither's history may stay.
    call(
        &db,
        identify(
            None,
            None,
            Some("anon-zq81"),
            json!({"secret": "xylophone-7731"}),
        ),
    );
    call(
        &db,
        identify(
            Some("user-zq81"),
            None,
            None,
            json!({"secret": "marimba-9912"}),
        ),
    );
    call(
        &db,
        identify(
            Some("user-zq81"),
            Some("erased-zq81@example.com"),
            Some("anon-zq81"),
            json!({"secret": "celesta-4410"}),
        ),
    );
    call(
        &db,
        identify(
            Some("keep-me"),
            None,
            None,
            json!({"plan": "kept-plan-5521"}),
        ),
    );
    db.sync().unwrap();
    // Two later calls: the compaction moves the first's step (its undo holds the value it
    // replaced) to a segment of steps, since the second superseded its record; the
    // background's compactions leave that segment alone. The erase must rewrite it too.
    for secret in ["oboe-2208", "bassoon-6064"] {
        call(
            &db,
            identify(Some("user-zq81"), None, None, json!({ "secret": secret })),
        );
    }
    db.sync().unwrap();
    db.compact_in_background_mode().unwrap();
    let segments_of_steps: Vec<u8> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .filter(|b| b.starts_with(b"PDBSEG\r\n") && b.get(10) == Some(&3))
        .flatten()
        .collect();
    assert!(
        contains(&segments_of_steps, "celesta-4410"),
        "the replaced value in a segment of steps"
    );
    assert!(db.counts().history_segment_bytes > 0);
    let before = disk(dir.path());
    for s in [
        "xylophone-7731",
        "marimba-9912",
        "celesta-4410",
        "oboe-2208",
    ] {
        assert!(contains(&before, s), "{s} written");
    }
    db.delete_and_erase(&Selector::UserId("user-zq81".into()), false)
        .unwrap()
        .unwrap();
    let after = disk(dir.path());
    for s in [
        "xylophone-7731",
        "marimba-9912",
        "celesta-4410",
        "oboe-2208",
        "bassoon-6064",
        "anon-zq81",
        "user-zq81",
        "erased-zq81",
    ] {
        assert!(!contains(&after, s), "{s} still on disk after the erase");
    }
    assert!(contains(&after, "kept-plan-5521"), "other history stays");
    assert_eq!(
        db.history(&Selector::UserId("keep-me".into()))
            .unwrap()
            .unwrap()
            .steps
            .len(),
        1
    );
}

#[test]
fn compaction_drops_steps_older_than_the_window_and_zero_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    // A window of one millisecond: every step is out of it by the time compaction runs.
    let db = Db::open(dir.path(), with_retention(Duration::from_millis(1))).unwrap();
    call(
        &db,
        identify(Some("u-1"), None, None, json!({"p": "old-value-8812"})),
    );
    call(
        &db,
        identify(Some("u-1"), None, None, json!({"p": "new-value-3321"})),
    );
    assert_eq!(
        db.history(&Selector::UserId("u-1".into()))
            .unwrap()
            .unwrap()
            .steps
            .len(),
        2
    );
    db.sync().unwrap();
    assert!(contains(&disk(dir.path()), "old-value-8812"));
    std::thread::sleep(Duration::from_millis(5));
    db.compact().unwrap();
    assert!(!contains(&disk(dir.path()), "old-value-8812"));
    assert!(
        db.history(&Selector::UserId("u-1".into()))
            .unwrap()
            .unwrap()
            .steps
            .is_empty()
    );
    assert!(
        db.get_at(&Selector::UserId("u-1".into()), Timestamp(0))
            .is_err()
    );
    drop(db);

    let off = tempfile::tempdir().unwrap();
    let on = tempfile::tempdir().unwrap();
    let db_off = Db::open(off.path(), with_retention(Duration::ZERO)).unwrap();
    let db_on = Db::open(on.path(), options()).unwrap();
    for i in 0..20 {
        let m = identify(Some("u-1"), None, None, json!({ "n": i }));
        call(&db_off, m.clone());
        call(&db_on, m);
    }
    let h = db_off
        .history(&Selector::UserId("u-1".into()))
        .unwrap()
        .unwrap();
    assert!(h.steps.is_empty(), "history off writes no step");
    assert!(
        db_off
            .get_at(&Selector::UserId("u-1".into()), db_off.history_clock())
            .is_err()
    );
    db_off.sync().unwrap();
    db_on.sync().unwrap();
    assert!(
        db_off.counts().disk_bytes < db_on.counts().disk_bytes,
        "steps cost bytes only when history is on"
    );
}

#[test]
fn explain_reports_what_a_call_would_do_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let mut first = identify(
        Some("u-1"),
        None,
        None,
        json!({"plan": "basic", "seats": 3}),
    );
    first["timestamp"] = json!(ts(100));
    first["messageId"] = json!("first");
    let k1 = call(&db, first.clone()).key;
    let k2 = call(
        &db,
        identify(None, None, Some("anon-2"), json!({"color": "red"})),
    )
    .key;
    db.sync().unwrap();
    let appended = db.stats().storage.bytes_appended;
    let before = (by_key(&db, k1), by_key(&db, k2));

    // A merge with one newer and one older property.
    let mut m = identify(Some("u-1"), None, Some("anon-2"), json!({"plan": "pro"}));
    m["timestamp"] = json!(ts(200));
    m["context"] = json!({});
    let mut older = m.clone();
    older["traits"] = json!({"plan": "ancient", "seats": 1});
    older["timestamp"] = json!(ts(50));
    let ex = db.explain_json(m.to_string().as_bytes()).unwrap();
    assert_eq!(ex.verdict, "apply");
    assert_eq!(ex.survivor, Some(k1));
    assert!(ex.rule.contains("userId"), "{}", ex.rule);
    let found: Vec<_> = ex.found.iter().map(|f| (f.identifier, f.key)).collect();
    assert_eq!(
        found,
        vec![("user_id", Some(k1)), ("anonymous_id", Some(k2))]
    );
    let out = ex.outcome.as_ref().unwrap();
    assert_eq!(out.merged, vec![k2]);
    let plan = ex.changes.iter().find(|c| c.name == "plan").unwrap();
    assert_eq!(plan.old, Some(profiledb::Value::Str("basic".into())));
    assert_eq!(plan.new, Some(profiledb::Value::Str("pro".into())));
    assert!(plan.by_this_call);
    let color = ex.changes.iter().find(|c| c.name == "color").unwrap();
    assert_eq!(
        color.old, None,
        "the survivor had no color: the merge brings it"
    );
    assert!(!color.by_this_call);

    let ex = db.explain_json(older.to_string().as_bytes()).unwrap();
    let kept: Vec<_> = ex.kept.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(kept, vec!["plan", "seats"], "{ex:?}");
    assert_eq!(ex.kept[0].decided_by.to_rfc3339(), ts(100));

    // Refusals name the field; a duplicate says so.
    let bad = identify(Some("u-1"), Some("not-an-email"), None, json!({}));
    let ex = db.explain_json(bad.to_string().as_bytes()).unwrap();
    assert_eq!(ex.verdict, "refuse");
    assert_eq!(ex.refusals[0].field, "traits.email");
    let ex = db.explain_json(first.to_string().as_bytes()).unwrap();
    assert_eq!(ex.verdict, "duplicate");

    // Nothing was written.
    db.sync().unwrap();
    assert_eq!(db.stats().storage.bytes_appended, appended);
    assert_eq!((by_key(&db, k1), by_key(&db, k2)), before);
    // And the call then does what was explained.
    let ex = db.explain_json(m.to_string().as_bytes()).unwrap();
    assert_eq!(Some(call(&db, m)), ex.outcome);
}

#[test]
fn the_guard_quarantines_an_identifier_that_links_too_many_user_ids() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options {
        guard_max_user_ids: 3,
        ..options()
    };
    let mut db = Db::open(dir.path(), opts()).unwrap();
    let dev = |u: &str| identify(Some(u), None, Some("shared-device"), json!({}));
    for u in ["u-1", "u-2", "u-3"] {
        let out = call(&db, dev(u));
        assert!(out.quarantined.is_empty(), "{u}: {out:?}");
    }
    assert_eq!(
        by_anon(&db, "shared-device").unwrap().user_id.as_deref(),
        Some("u-3")
    );
    // The fourth user id would make four: quarantined, and the device stays where it was.
    let ex = db.explain_json(dev("u-4").to_string().as_bytes()).unwrap();
    assert_eq!(
        ex.outcome.unwrap().quarantined,
        vec!["anonymous_id:shared-device"]
    );
    let out = call(&db, dev("u-4"));
    assert_eq!(out.quarantined, vec!["anonymous_id:shared-device"]);
    assert!(out.moved.is_empty());
    assert_eq!(
        by_anon(&db, "shared-device").unwrap().user_id.as_deref(),
        Some("u-3")
    );
    assert!(by_user(&db, "u-4").unwrap().anonymous_ids.is_empty());
    // Later calls neither move nor merge through it.
    let out = call(&db, dev("u-5"));
    assert_eq!(out.quarantined, vec!["anonymous_id:shared-device"]);
    assert!(by_user(&db, "u-5").unwrap().anonymous_ids.is_empty());
    let err = try_call(&db, identify(None, None, Some("shared-device"), json!({}))).unwrap_err();
    assert!(err.to_string().contains("quarantined"), "{err}");
    assert_eq!(db.stats().quarantined, vec!["anonymous_id:shared-device"]);
    assert_eq!(db.stats().guard_skipped_calls, 2);

    // Kept through compaction, reopen and crash.
    db.compact().unwrap();
    db.close().unwrap();
    db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(db.quarantined(), vec!["anonymous_id:shared-device"]);
    db.sync().unwrap();
    db.abandon();
    db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(db.quarantined(), vec!["anonymous_id:shared-device"]);
    assert_eq!(
        call(&db, dev("u-6")).quarantined,
        vec!["anonymous_id:shared-device"]
    );

    // Released: the device moves again, and the release lasts.
    assert!(
        db.release_quarantined("anonymous_id", "shared-device")
            .unwrap()
    );
    assert!(
        !db.release_quarantined("anonymous_id", "shared-device")
            .unwrap()
    );
    db.close().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    assert!(db.quarantined().is_empty());
    let out = call(&db, dev("u-7"));
    assert!(out.quarantined.is_empty());
    assert_eq!(out.moved.len(), 1);
}

/// A profile the guard keeps a quarantined identifier on is loaded by the call but not changed:
/// it gets no record and no history step, also when its chain is full (the model-based suite
/// found a spurious `identifiers` step there, which unmerge's attribution would have read as a
/// call carrying the identifier).
#[test]
fn a_profile_the_guard_leaves_alone_gets_no_step() {
    for chain_limit in [1, 2, 8] {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(
            dir.path(),
            Options {
                guard_max_user_ids: 1,
                chain_limit,
                ..options()
            },
        )
        .unwrap();
        for i in 0..3 {
            call(
                &db,
                identify(Some("u1"), None, Some("dev"), json!({"n": i})),
            );
        }
        let steps = |u: &str| {
            let h = db.history(&Selector::UserId(u.into())).unwrap().unwrap();
            h.steps.len()
        };
        let before = steps("u1");
        let out = call(&db, identify(Some("u2"), None, Some("dev"), json!({})));
        assert_eq!(out.quarantined, vec!["anonymous_id:dev".to_string()]);
        assert!(out.moved.is_empty(), "{out:?}");
        assert_eq!(steps("u1"), before, "chain limit {chain_limit}");
        assert_eq!(
            by_user(&db, "u1").unwrap().anonymous_ids,
            vec!["dev".to_string()]
        );
        assert_eq!(steps("u2"), 1);
        drop(db);
    }
}

/// A power cut at each I/O operation of a call that quarantines an identifier, with several
/// fates for what was not synced: the store reopens with the call and its quarantine both, or
/// neither; an acknowledged call is never lost.
#[test]
fn a_power_cut_during_a_quarantining_call_keeps_the_call_and_the_quarantine_together() {
    use profiledb::storage::io::FaultyIo;
    use std::sync::Arc;
    let open_store = |dir: &std::path::Path, io: &Arc<FaultyIo>| {
        let options = Options {
            guard_max_user_ids: 1,
            ..options()
        };
        open_faulty(dir, io, options).unwrap()
    };
    let first = identify(Some("u1"), None, Some("dev"), json!({"n": 1}));
    let quarantining = identify(Some("u2"), None, Some("dev"), json!({"n": 2}));
    // How many operations the quarantining call takes.
    let probe = tempfile::tempdir().unwrap();
    let io = FaultyIo::new();
    let db = open_store(probe.path(), &io);
    call(&db, first.clone());
    let before = io.ops();
    assert_eq!(call(&db, quarantining.clone()).quarantined.len(), 1);
    let n = io.ops() - before;
    drop(db);
    assert!(n > 0);

    let (mut saw_before, mut saw_after) = (false, false);
    for k in 1..=n + 1 {
        for tail in &UNSYNCED_FATES {
            let dir = tempfile::tempdir().unwrap();
            let io = FaultyIo::new();
            let db = open_store(dir.path(), &io);
            call(&db, first.clone());
            io.crash_at(io.ops() + k);
            let done = try_call(&db, quarantining.clone()).is_ok();
            let image = tempfile::tempdir().unwrap();
            io.power_loss(dir.path(), image.path(), *tail).unwrap();
            db.abandon();
            let db = Db::open(
                image.path(),
                Options {
                    guard_max_user_ids: 1,
                    ..options()
                },
            )
            .unwrap();
            let what = format!("crash at op {k} of {n}, {tail:?}");
            let u1 = by_user(&db, "u1").unwrap_or_else(|| panic!("{what}: u1 lost"));
            assert_eq!(u1.anonymous_ids, vec!["dev".to_string()], "{what}");
            match by_user(&db, "u2") {
                Some(u2) => {
                    assert!(u2.anonymous_ids.is_empty(), "{what}: {u2:?}");
                    assert_eq!(
                        db.quarantined(),
                        vec!["anonymous_id:dev".to_string()],
                        "{what}"
                    );
                    saw_after = true;
                }
                None => {
                    assert!(!done, "{what}: an acknowledged call was lost");
                    assert!(
                        db.quarantined().is_empty(),
                        "{what}: quarantine without its call"
                    );
                    saw_before = true;
                }
            }
            assert_eq!(db.check().unwrap(), Vec::<String>::new(), "{what}");
        }
    }
    assert!(saw_before && saw_after, "the cuts hit both sides");
}

/// The files of a store directory whose names end with `suffix`, sorted.
fn files_ending(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// The `*.steps` files of a store directory, by name.
fn table_files(dir: &std::path::Path) -> Vec<String> {
    files_ending(dir, ".steps")
}

/// Sealed segments' history tables are files beside them (docs/journal.md, "Where the steps
/// are"): written at a checkpoint, named by the snapshot, read on reopen; a damaged or
/// missing one makes the open scan the log instead, with the same history; one no snapshot
/// names is removed; a compaction writes its outputs' and removes its inputs'.
#[test]
fn sealed_segments_keep_their_history_tables_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        segment_size: 64 << 10,
        ..options()
    };
    let users: Vec<String> = (0..40).map(|u| format!("user-{u}")).collect();
    let db = Db::open(dir.path(), options()).unwrap();
    for i in 0..1_500u32 {
        let u = &users[(i as usize * 7) % users.len()];
        let mut m = identify(
            Some(u),
            None,
            None,
            json!({ "n": i, "pad": "x".repeat(40) }),
        );
        m["messageId"] = json!(format!("m-{i}"));
        call(&db, m);
    }
    // Each user's steps (the history's `kept_since` moves with the clock).
    let histories = |db: &Db| -> Vec<Vec<profiledb::HistoryStep>> {
        users
            .iter()
            .map(|u| {
                let h = db.history(&Selector::UserId(u.clone())).unwrap().unwrap();
                h.steps
            })
            .collect()
    };
    let want = histories(&db);
    assert_eq!(want.iter().map(Vec::len).sum::<usize>(), 1_500);
    let same = |got: Vec<Vec<profiledb::HistoryStep>>, what: &str| {
        if let Some(u) = (0..users.len()).find(|&u| got[u] != want[u]) {
            panic!("{what}: {} differs: {:?}", users[u], got[u]);
        }
    };
    let in_memory = db.stats().history_index_bytes;
    db.checkpoint().unwrap();
    let files = table_files(dir.path());
    assert!(files.len() >= 3, "several sealed segments: {files:?}");
    let stats = db.stats();
    assert_eq!(stats.history_steps, 1_500);
    assert!(
        stats.history_index_bytes < in_memory / 2,
        "{} bytes after the checkpoint, {in_memory} before",
        stats.history_index_bytes
    );
    same(histories(&db), "read from the files");
    db.close().unwrap();

    let reopen = |what: &str, hint: bool| {
        let db = Db::open(dir.path(), options()).unwrap();
        let stats = db.stats();
        assert_eq!(stats.storage.recovery.used_hint, hint, "{what}: hint used");
        // A scan of the log writes each sealed segment's table to its file as it passes
        // it: no more steps are in memory after it than the active segment's (these options
        // start no background thread, which would write them a second later).
        assert!(
            stats.history_index_bytes < in_memory / 2,
            "{what}: {} bytes of history index after the open, {in_memory} with every step \
             in memory",
            stats.history_index_bytes
        );
        same(histories(&db), what);
        assert!(db.check().unwrap().is_empty(), "{what}");
        db.close().unwrap();
    };
    reopen("intact", true);

    // A flipped bit in one table file: the snapshot is refused, the log scanned.
    let victim = dir.path().join(&files[1]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[40] ^= 0x04;
    std::fs::write(&victim, &bytes).unwrap();
    reopen("a damaged table file", false);
    // That close wrote the tables and a snapshot naming them again.
    reopen("after the rescan", true);
    std::fs::remove_file(dir.path().join(&files[0])).unwrap();
    reopen("a missing table file", false);

    // A file no snapshot names is removed at open.
    let stray = dir.path().join("0000999999.steps");
    std::fs::write(&stray, b"not a table").unwrap();
    reopen("a stray table file", true);
    assert!(!stray.exists());

    // The background's compactions: the steps whose call's record was superseded go to
    // segments of their own. The second finds those past twice the first's floor (two
    // segments) and rewrites them; the third leaves them alone: their table files stay.
    let db = Db::open(dir.path(), options()).unwrap();
    assert_eq!(db.counts().history_segment_bytes, 0);
    db.compact_in_background_mode().unwrap();
    let moved = db.counts().history_segment_bytes;
    assert!(moved > 2 * (64 << 10), "{moved} bytes of steps moved");
    same(histories(&db), "after moving the steps");
    db.compact_in_background_mode().unwrap();
    let rewritten = db.counts().history_segment_bytes;
    assert!(rewritten <= moved, "{rewritten} after {moved}");
    let tables = table_files(dir.path());
    db.compact_in_background_mode().unwrap();
    assert_eq!(db.counts().history_segment_bytes, rewritten);
    let kept: Vec<_> = table_files(dir.path())
        .into_iter()
        .filter(|f| tables.contains(f))
        .collect();
    assert!(
        kept.len() > 1,
        "the steps' segments stay: {tables:?} -> {kept:?}"
    );
    same(histories(&db), "after a compaction without them");
    db.close().unwrap();
    reopen("with segments of steps", true);

    // Compaction of everything: the outputs' tables are files, the inputs' are gone.
    let db = Db::open(dir.path(), options()).unwrap();
    let before = table_files(dir.path());
    db.compact().unwrap();
    let after = table_files(dir.path());
    assert!(!after.is_empty());
    assert!(
        before.iter().all(|f| !after.contains(f)),
        "{before:?} -> {after:?}"
    );
    same(histories(&db), "after the compaction");
    assert_eq!(db.stats().history_steps, 1_500);
    db.close().unwrap();
    reopen("after the compaction", true);
}

/// Steps moved to their segments by the background's compactions are dropped by them too
/// once history is turned off, though those segments never double.
#[test]
fn history_turned_off_empties_the_segments_of_steps() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    for i in 0..50 {
        call(
            &db,
            identify(
                Some("u-1"),
                None,
                None,
                json!({ "n": i, "p": "gone-value-4471" }),
            ),
        );
    }
    db.compact_in_background_mode().unwrap();
    assert!(db.counts().history_segment_bytes > 0);
    db.close().unwrap();
    let db = Db::open(dir.path(), with_retention(Duration::ZERO)).unwrap();
    assert!(db.counts().history_segment_bytes > 0);
    db.compact_in_background_mode().unwrap();
    assert_eq!(db.counts().history_segment_bytes, 0);
    let n = prop(&by_user(&db, "u-1").unwrap(), "n");
    assert_eq!(n, Some(json!(49)), "the profile itself stays");
}

/// One call on `u1` (message id `m<n>`, `n` the number of calls so far), noted with the
/// journal clock after it and the profile it left.
fn call_u1(db: &Db, states: &mut Vec<(String, Timestamp, profiledb::Profile)>, anon: Option<&str>) {
    let n = states.len();
    let id = format!("m{n}");
    let mut m = identify(
        Some("u1"),
        None,
        anon,
        json!({ "n": n, "plan": format!("plan-{}", n % 3), "pad": "x".repeat(40 + n % 7) }),
    );
    m["messageId"] = json!(id);
    call(db, m);
    states.push((id, db.history_clock(), by_user(db, "u1").unwrap()));
}

/// A profile whose steps span many small segments, compactions (one with calls written while
/// it runs, so that newer steps sit in a lower-numbered segment than the older ones it moved)
/// and a merge: its history lists the calls in order, `get_at` gives the state after each of
/// them, the merged-away profile is found as it was, and the unmerge reads the steps after
/// the merge in order. Checked live, after a reopen and after a crash.
#[test]
fn history_across_segments_and_compactions_is_in_call_order() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options {
        segment_size: 1024,
        ..options()
    };
    let db = Db::open(dir.path(), opts()).unwrap();
    let mut states = Vec::new();
    for _ in 0..6 {
        call_u1(&db, &mut states, None);
    }
    // A device profile of its own, merged into u1 further on.
    let dev = call(
        &db,
        identify(None, None, Some("dev-1"), json!({"device": "phone"})),
    )
    .key;
    let dev_before = (db.history_clock(), by_key(&db, dev).unwrap());
    db.compact_with(&mut || {
        for _ in 0..3 {
            call_u1(&db, &mut states, None);
        }
    })
    .unwrap();
    for _ in 0..4 {
        call_u1(&db, &mut states, None);
    }
    call_u1(&db, &mut states, Some("dev-1"));
    let merged_at = states.len() - 1;
    for _ in 0..3 {
        call_u1(&db, &mut states, None);
    }
    db.compact().unwrap();
    for _ in 0..3 {
        call_u1(&db, &mut states, None);
    }
    db.compact_with(&mut || call_u1(&db, &mut states, None))
        .unwrap();
    call_u1(&db, &mut states, None);
    assert_ne!(by_user(&db, "u1").unwrap().key, dev);

    let check = |db: &Db, when: &str| {
        let u1 = Selector::UserId("u1".into());
        let h = db.history(&u1).unwrap().unwrap();
        let ids: Vec<&str> = h
            .steps
            .iter()
            .map(|s| s.message_id.as_deref().unwrap_or("-"))
            .collect();
        let want: Vec<&str> = states.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(ids, want, "{when}");
        for (i, (s, (_, clock, _))) in h.steps.iter().zip(&states).enumerate() {
            assert!(s.applied_at <= *clock, "{when}: step {i}");
            if i > 0 {
                assert!(s.applied_at > states[i - 1].1, "{when}: step {i}");
            }
        }
        assert_eq!(h.steps[merged_at].merged, vec![dev], "{when}");
        let n = h
            .steps
            .iter()
            .find(|s| s.message_id.as_deref() == Some("m7"));
        let change = n.unwrap().changes.iter().find(|c| c.name == "n").unwrap();
        assert_eq!(change.old, Some(profiledb::Value::Int(6)), "{when}");
        for (id, clock, want) in &states {
            assert_eq!(
                db.get_at(&u1, *clock).unwrap().as_ref(),
                Some(want),
                "{when}: after {id}"
            );
        }
        let before = Timestamp(h.steps[0].applied_at.0 - 1);
        assert_eq!(db.get_at(&u1, before).unwrap(), None, "{when}");
        assert_eq!(
            db.get_at(&key(dev), dev_before.0).unwrap().as_ref(),
            Some(&dev_before.1),
            "{when}"
        );
        assert_eq!(
            db.get_at(&Selector::AnonymousId("dev-1".into()), dev_before.0)
                .unwrap()
                .map(|p| p.key),
            Some(dev),
            "{when}"
        );
    };
    check(&db, "live");
    db.close().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    check(&db, "reopened");
    db.sync().unwrap();
    db.abandon();
    let db = Db::open(dir.path(), opts()).unwrap();
    check(&db, "after a crash");

    let out = db.unmerge(&Selector::UserId("u1".into()), dev).unwrap();
    assert_eq!(out.restored.key, dev);
    assert_eq!(out.restored.anonymous_ids, vec!["dev-1".to_string()]);
    assert_eq!(prop(&out.restored, "device"), Some(json!("phone")));
    assert_eq!(prop(&out.survivor, "device"), None);
    let last = states.last().unwrap();
    assert_eq!(prop(&out.survivor, "n"), prop(&last.2, "n"));
    let h = db.history(&Selector::UserId("u1".into())).unwrap().unwrap();
    assert_eq!(h.steps.len(), states.len() + 1);
    assert_eq!(h.steps.last().unwrap().kind, "unmerge");
}

/// The steps `db` holds of `u-1`, as the values of its property `n` they set.
fn step_ns(db: &Db) -> Vec<i64> {
    let h = db
        .history(&Selector::UserId("u-1".into()))
        .unwrap()
        .unwrap();
    let mut ns: Vec<i64> = h
        .steps
        .iter()
        .filter_map(|s| {
            s.changes
                .iter()
                .find(|c| c.name == "n")
                .and_then(|c| c.new.as_ref())
                .and_then(|v| v.to_json().as_i64())
        })
        .collect();
    ns.sort_unstable();
    ns
}

/// A segment of history steps whose every step has left the window is deleted whole, without
/// a byte written, live and after a reopen (its bound from the hint, or from the scan of the
/// log when the hint is gone); one holding a step still in the window stays, whole. After a
/// rewrite of every segment of steps (`compact`), the segments holding only old steps keep
/// the old steps' bound.
#[test]
fn segments_of_steps_past_the_window_are_deleted_whole() {
    let now_us = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
    };
    for (hint, rewrite) in [(true, false), (false, false), (true, true)] {
        let dir = tempfile::tempdir().unwrap();
        let small = |retention| Options {
            segment_size: 4096,
            ..with_retention(retention)
        };
        let db = Db::open(dir.path(), small(Duration::from_secs(3600))).unwrap();
        let batch = |db: &Db, from: i64| {
            for n in from..from + 40 {
                let pad = "x".repeat(60);
                call(
                    db,
                    identify(Some("u-1"), None, None, json!({ "n": n, "pad": pad })),
                );
            }
        };
        batch(&db, 0);
        db.compact_in_background_mode().unwrap();
        let first = db.counts().history_segment_bytes;
        assert!(first > 0, "the first calls' steps are in segments of steps");
        std::thread::sleep(Duration::from_millis(1000));
        let between = now_us();
        std::thread::sleep(Duration::from_millis(3000));
        batch(&db, 40);
        db.compact_in_background_mode().unwrap();
        let both = db.counts().history_segment_bytes;
        assert!(
            both > first,
            "the second calls' steps are in segments of their own"
        );
        assert_eq!(step_ns(&db), (0..80).collect::<Vec<_>>());
        // Nothing has left the hour's window.
        assert_eq!(db.drop_expired_history_segments().unwrap(), 0);
        assert_eq!(db.counts().history_segment_bytes, both);
        if rewrite {
            db.compact().unwrap();
        }
        let both = db.counts().history_segment_bytes;
        db.close().unwrap();
        if !hint {
            std::fs::remove_file(dir.path().join("HINT")).unwrap();
        }

        // A window that the first calls have left (its start is 0.8 s before `between`, at
        // least 0.2 s after them, and only moves later) and that the second stay in for the
        // rest of this round unless it takes over 3.8 s.
        let window = Duration::from_micros((now_us() - between + 800_000) as u64);
        let db = Db::open(dir.path(), small(window)).unwrap();
        let before = files_ending(dir.path(), ".seg");
        let reclaimed = db.drop_expired_history_segments().unwrap();
        if rewrite {
            // The rewrite's outputs in seq order: the one where the two batches meet stays.
            assert!(reclaimed > 0 && reclaimed < both, "{reclaimed} of {both}");
        } else {
            assert_eq!(
                reclaimed, first,
                "hint {hint}: the first segments of steps, whole"
            );
        }
        assert_eq!(db.counts().history_segment_bytes, both - reclaimed);
        let after = files_ending(dir.path(), ".seg");
        assert!(
            after.iter().all(|n| before.contains(n)),
            "hint {hint}: no segment written ({before:?} -> {after:?})"
        );
        // What a read finds is what is on disk (the window is a floor): after the rewrite,
        // the older calls of the segment where the batches meet too.
        let kept = step_ns(&db);
        let oldest = if rewrite { kept[0] } else { 40 };
        assert!(oldest > 0 && oldest <= 40, "hint {hint}: {kept:?}");
        assert_eq!(kept, (oldest..80).collect::<Vec<_>>(), "hint {hint}");
        assert_eq!(db.drop_expired_history_segments().unwrap(), 0);
        let n = prop(&by_user(&db, "u-1").unwrap(), "n");
        assert_eq!(n, Some(json!(79)), "the profile itself stays");
        db.close().unwrap();
        let db = Db::open(dir.path(), small(window)).unwrap();
        assert_eq!(step_ns(&db), kept, "hint {hint}, reopened");
    }
}

/// Steps still in the log segments (no compaction has moved them) whose window has passed:
/// the background compacts those segments though the profiles' dead bytes would not call for
/// it (`compaction_min_bytes` out of reach), and the steps leave the disk.
#[test]
fn the_background_compacts_log_segments_whose_steps_have_expired() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        dir.path(),
        Options {
            segment_size: 4096,
            ..with_retention(Duration::from_secs(3600))
        },
    )
    .unwrap();
    for n in 0..40 {
        let p = format!("expiring-value-{n:02}-5520");
        call(
            &db,
            identify(Some("u-1"), None, None, json!({ "n": n, "p": p })),
        );
    }
    db.close().unwrap();
    assert!(contains(&disk(dir.path()), "expiring-value-00-5520"));
    std::thread::sleep(Duration::from_millis(5));
    let db = Db::open(
        dir.path(),
        Options {
            segment_size: 4096,
            compaction_ratio: Some(0.5),
            compaction_min_bytes: u64::MAX,
            ..with_retention(Duration::from_millis(1))
        },
    )
    .unwrap();
    // The background looks once a second; give it up to 30 s on a loaded machine.
    let gone = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        !contains(&disk(dir.path()), "expiring-value-00-5520")
    });
    assert!(gone, "the expired steps are still in the log segments");
    let n = prop(&by_user(&db, "u-1").unwrap(), "p");
    assert_eq!(
        n,
        Some(json!("expiring-value-39-5520")),
        "the profile stays"
    );
    db.close().unwrap();
}
