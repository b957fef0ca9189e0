//! Delta records and their chains (issue 11, deliverables 2 and 7; docs/format.md "Profile
//! delta"): a profile written as a full record plus deltas reads back exactly as if every call
//! had written the whole profile — after the calls, after a crash that left chains unfolded,
//! after compaction folded them (also with writers running during the compaction), after
//! reopening from the hint or from the log; damage inside a chain is an error naming file and
//! offset, never a panic and never a profile with properties silently missing.

use std::path::Path;

#[path = "support/common.rs"]
mod common;
use common::{all_profiles as all, segment_files as segments};

use profiledb::{Db, Error, Message, Options, Selector};
use serde_json::json;

fn options(chain_limit: u32, cache: usize) -> Options {
    Options {
        durability: profiledb::Durability::Buffered,
        compaction_ratio: None,
        segment_size: 4096,
        chain_limit,
        profile_cache_bytes: cache,
        ..Options::default()
    }
}

/// Call `i` of a workload of many calls to few people: sets, `$set_once`, `$add`, `$unset`,
/// emails (moved by protection), anonymous ids, merges.
fn call(i: u32) -> Message {
    let person = i % 3;
    let mut traits = serde_json::Map::new();
    traits.insert(format!("t{}", i % 7), json!(format!("v{i}")));
    traits.insert(format!("n{}", i % 5), json!(i));
    if i.is_multiple_of(11) {
        traits.insert(format!("t{}", (i + 1) % 7), serde_json::Value::Null);
    }
    if i % 13 == 5 {
        traits.insert("email".into(), json!(format!("e{}@x.io", i % 4)));
    }
    let mut m = json!({
        "type": "identify",
        "userId": format!("u{person}"),
        "traits": traits,
        "timestamp": format!("2026-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60),
        "messageId": format!("m{i}"),
    });
    if i % 4 == 1 {
        m["$set_once"] = json!({ format!("once{}", i % 3): i });
    }
    if i % 3 == 2 {
        m["$add"] = json!({ "count": 1, "score": 0.5 });
    }
    if i % 17 == 3 {
        m["$unset"] = json!([format!("n{}", i % 5)]);
    }
    if i % 9 == 4 {
        m["anonymousId"] = json!(format!("a{}", i % 6));
    }
    if i % 29 == 7 {
        // An anonymous-only profile, merged into a user's on a later call.
        m = json!({
            "type": "identify",
            "anonymousId": format!("lonely{i}"),
            "traits": { "x": i },
            "timestamp": "2026-01-01T00:00:00Z",
        });
    }
    if i % 29 == 8 {
        m["anonymousId"] = json!(format!("lonely{}", i - 1));
    }
    Message::parse(m.to_string().as_bytes()).unwrap()
}

fn run(dir: &Path, opts: Options, calls: std::ops::Range<u32>) -> Db {
    run_calls(dir, opts, calls, call)
}

/// A store opened in `dir` with the calls `calls` of a test's own workload (`call`) applied.
fn run_calls(
    dir: &Path,
    opts: Options,
    calls: std::ops::Range<u32>,
    call: impl Fn(u32) -> Message,
) -> Db {
    let db = Db::open(dir, opts).unwrap();
    for i in calls {
        db.apply(&call(i)).unwrap();
    }
    db
}

/// Each step of `user`'s history: its call and its changes (not when it was applied: each
/// store's clock).
fn history_steps(db: &Db, user: &str) -> Vec<impl PartialEq + std::fmt::Debug> {
    let h = db.history(&Selector::UserId(user.into())).unwrap().unwrap();
    h.steps
        .into_iter()
        .map(|s| (s.timestamp, s.message_id, s.created, s.changes))
        .collect()
}

#[test]
fn chains_read_back_as_full_records_through_crash_compaction_and_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let full = run(&tmp.path().join("full"), options(1, 64 << 20), 0..300);
    let want = all(&full);
    assert!(want.len() >= 3);
    for (name, limit, cache) in [("c8", 8, 64 << 20), ("c8-nocache", 8, 0), ("c64", 64, 0)] {
        let dir = tmp.path().join(name);
        let db = run(&dir, options(limit, cache), 0..300);
        assert_eq!(all(&db), want, "{name}: after the calls");
        // A crash: no hint, chains unfolded, the log replayed.
        db.abandon();
        let db = Db::open(&dir, options(limit, cache)).unwrap();
        assert_eq!(all(&db), want, "{name}: after a crash");
        assert!(db.check().unwrap().is_empty(), "{name}");
        db.compact().unwrap();
        assert_eq!(all(&db), want, "{name}: after compaction");
        db.close().unwrap();
        let db = Db::open(&dir, options(limit, cache)).unwrap();
        assert_eq!(all(&db), want, "{name}: after reopening with the hint");
        assert!(db.check().unwrap().is_empty(), "{name}");
        // More calls on the folded records, then a crash again.
        for i in 300..340 {
            db.apply(&call(i)).unwrap();
        }
        db.abandon();
        let db = Db::open(&dir, options(limit, cache)).unwrap();
        let reference = run(
            &tmp.path().join(format!("{name}-ref")),
            options(1, 0),
            0..340,
        );
        assert_eq!(all(&db), all(&reference), "{name}: calls after the fold");
    }
}

/// A store that is closing gives up its background compaction in flight instead of waiting
/// for it (`Db::close`; the hook gives up as the background does, after some entries are
/// copied and output files exist): no output file is left and no input is missing, every
/// profile reads back as before, calls after it are kept, and the next open's compaction
/// reclaims what this one would have.
#[test]
fn a_compaction_given_up_at_close_leaves_the_store_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4, 1 << 20);
    // Many people, no messageIds (whose notes a compaction holds back to pack them): the
    // compaction writes its outputs as it copies.
    let person = |i: u32| {
        Message::from_json(&json!({
            "type": "identify",
            "userId": format!("p{}", i % 400),
            "traits": {"n": i, "plan": format!("plan-{}", i % 5)},
        }))
        .unwrap()
    };
    let db = run_calls(dir.path(), opts.clone(), 0..3000, person);
    let inputs = segments(dir.path());
    assert!(inputs.len() > 4, "a store of several segments");
    let before = all(&db);
    let (reclaimed, outputs) = db.compact_giving_up_after(600).unwrap();
    assert_eq!(reclaimed, 0, "the compaction was given up");
    assert!(!outputs.is_empty(), "it gave up with output files written");
    let tmp: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "outputs left behind: {tmp:?}");
    let after = segments(dir.path());
    assert!(
        inputs.iter().all(|s| after.contains(s)),
        "an input went: {inputs:?} -> {after:?}"
    );
    assert_eq!(all(&db), before);
    for i in 3000..3100 {
        db.apply(&person(i)).unwrap();
    }
    let written = all(&db);
    db.close().unwrap();
    let db = Db::open(dir.path(), opts).unwrap();
    assert_eq!(all(&db), written);
    assert!(db.compact().unwrap() > 0, "the next compaction reclaims");
    assert_eq!(all(&db), written);
}

/// A full compaction empties the writer cache first (so that its working set reuses the
/// cache's memory); the calls after it read their profiles from the compacted log, fill the
/// cache again, and write what a store without a cache writes.
#[test]
fn a_full_compaction_empties_the_writer_cache_and_the_calls_after_it_fill_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let db = run(&tmp.path().join("cached"), options(8, 64 << 20), 0..200);
    assert!(db.stats().profile_cache_bytes > 0);
    db.compact().unwrap();
    assert_eq!(db.stats().profile_cache_bytes, 0);
    for i in 200..260 {
        db.apply(&call(i)).unwrap();
    }
    assert!(db.stats().profile_cache_bytes > 0, "filled again");
    let reference = run(&tmp.path().join("reference"), options(8, 0), 0..260);
    assert_eq!(all(&db), all(&reference));
    db.close().unwrap();
    let db = Db::open(tmp.path().join("cached"), options(8, 64 << 20)).unwrap();
    assert_eq!(all(&db), all(&reference), "after reopening");
}

#[test]
fn deltas_write_far_fewer_bytes_than_full_records() {
    let tmp = tempfile::tempdir().unwrap();
    // One person with 40 properties, ten of them set per call.
    let bytes = |limit: u32| {
        // The record codec alone: history steps (docs/journal.md) add the same bytes to both.
        let db = Db::open(
            tmp.path().join(format!("b{limit}")),
            Options {
                history_retention: std::time::Duration::ZERO,
                ..options(limit, 64 << 20)
            },
        )
        .unwrap();
        for i in 0..200u32 {
            let mut traits = serde_json::Map::new();
            for k in 0..10 {
                traits.insert(
                    format!("p{}", (i * 10 + k) % 40),
                    json!(format!("value {i}")),
                );
            }
            let m = json!({"type": "identify", "userId": "user-1", "traits": traits});
            db.apply(&Message::parse(m.to_string().as_bytes()).unwrap())
                .unwrap();
        }
        db.stats().storage.bytes_appended
    };
    let (full, chained) = (bytes(1), bytes(8));
    assert!(
        chained * 2 < full,
        "deltas {chained} bytes, full records {full} bytes"
    );
}

#[test]
fn writers_during_compaction_link_into_the_segments_it_rewrites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = std::sync::Arc::new(run(&dir, options(8, 0), 0..200));
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 200..1200 {
                db.apply(&call(i)).unwrap();
            }
        })
    };
    let mut compactions = 0;
    while !writer.is_finished() {
        db.compact().unwrap();
        compactions += 1;
    }
    writer.join().unwrap();
    db.compact().unwrap();
    let reference = run(&tmp.path().join("ref"), options(1, 0), 0..1200);
    assert!(compactions >= 1);
    assert_eq!(all(&db), all(&reference));
    let db = std::sync::Arc::into_inner(db).unwrap();
    db.abandon();
    let db = Db::open(&dir, options(8, 0)).unwrap();
    assert_eq!(all(&db), all(&reference), "after a crash and replay");
    assert!(db.check().unwrap().is_empty());
}

/// Deltas written while a compaction runs link to records in the segments it rewrites: the
/// compaction copies those records (folded) and leaves forwards to the copies, through which
/// the chains read back, with and without the writer cache, after the switch, through
/// further compactions that fold those chains, after reopening from the hint, and after a
/// replay of the log that finds the forwards only in `FORWARD` entries.
#[test]
fn deltas_written_during_a_compaction_read_back_through_its_forwards() {
    for cache in [0, 1 << 20] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let db = run(&dir, options(64, cache), 0..150);
        let mut next = 150;
        let expect = |upto: u32, what: &str, db: &Db| {
            let reference = run(
                &tmp.path().join(format!("ref{upto}")),
                options(1, 0),
                0..upto,
            );
            assert_eq!(
                all(db),
                all(&reference),
                "cache {cache}: {what} (calls 0..{upto})"
            );
        };
        for round in 0..4 {
            let mut during = || {
                for _ in 0..3 {
                    db.apply(&call(next)).unwrap();
                    next += 1;
                }
                for p in 0..3 {
                    db.get(&Selector::UserId(format!("u{p}"))).unwrap().unwrap();
                }
            };
            db.compact_with(&mut during).unwrap();
            expect(next, &format!("after compaction {round}"), &db);
            assert!(
                db.check().unwrap().is_empty(),
                "cache {cache}: check, round {round}"
            );
            // Deltas after the switch, on chains that run through the forwards.
            for _ in 0..3 {
                db.apply(&call(next)).unwrap();
                next += 1;
            }
        }
        let r = db.stats().profile_records;
        assert!(
            r.linked_into_compaction >= 8,
            "cache {cache}: {} deltas linked into a compaction",
            r.linked_into_compaction
        );
        db.close().unwrap();
        let db = Db::open(&dir, options(64, cache)).unwrap();
        expect(next, "reopened from the hint", &db);
        // A compaction with writes during it, then a crash before any further hint: the
        // replay finds the forwards in the log only.
        let mut during = || {
            for _ in 0..3 {
                db.apply(&call(next)).unwrap();
                next += 1;
            }
        };
        db.compact_with(&mut during).unwrap();
        db.abandon();
        std::fs::remove_file(dir.join("HINT")).unwrap();
        let db = Db::open(&dir, options(64, cache)).unwrap();
        expect(next, "replayed from the log", &db);
        assert!(
            db.check().unwrap().is_empty(),
            "cache {cache}: check after the replay"
        );
        for _ in 0..20 {
            db.apply(&call(next)).unwrap();
            next += 1;
        }
        db.compact().unwrap();
        expect(next, "a last compaction folds it all", &db);
    }
}

/// A checkpoint written while a compaction is decided but not yet switched in (the third
/// point of `Db::compact_with`) names the segments the compaction replaces. After a crash that
/// leaves it as the newest hint, the open finds those segments gone, does not use it, and
/// replays the log: the delta linked into the compaction reads back through its forward, and
/// the calls made once it was decided (full records: no delta links into its inputs then).
#[test]
fn a_checkpoint_while_a_compaction_switches_in_is_not_used_once_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = run(&dir, options(64, 1 << 20), 0..150);
    let (mut point, mut next, mut hint) = (0, 150, None);
    db.compact_with(&mut || {
        point += 1;
        // Person 0 once the inputs are sealed (a delta linking into them); persons 1 and 2
        // once the compaction is decided (their newest records lie in the inputs).
        let calls = match point {
            1 => 1,
            3 => 2,
            _ => 0,
        };
        for _ in 0..calls {
            db.apply(&call(next)).unwrap();
            next += 1;
        }
        if point == 3 {
            db.checkpoint().unwrap();
            hint = Some(std::fs::read(dir.join("HINT")).unwrap());
        }
    })
    .unwrap();
    let r = db.stats().profile_records;
    assert!(
        r.linked_into_compaction >= 1 && r.full_at_switch >= 1,
        "{r:?}"
    );
    db.abandon();
    let hint = hint.unwrap();
    assert_ne!(
        std::fs::read(dir.join("HINT")).unwrap(),
        hint,
        "the compaction's own hint"
    );
    std::fs::write(dir.join("HINT"), hint).unwrap();
    let db = Db::open(&dir, options(64, 1 << 20)).unwrap();
    assert!(
        !dir.join("HINT").exists(),
        "the open removes a hint whose segments were compacted away"
    );
    let reference = run(&tmp.path().join("ref"), options(1, 0), 0..next);
    assert_eq!(all(&db), all(&reference));
    assert!(db.check().unwrap().is_empty());
}

#[test]
fn damage_inside_a_chain_is_corruption_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    // One chain of 60 records spanning several 4 KiB segments.
    let db = Db::open(&dir, options(64, 0)).unwrap();
    for i in 0..60 {
        let mut traits = serde_json::Map::new();
        for k in 0..10 {
            traits.insert(
                format!("p{}", (i * 10 + k) % 40),
                json!(format!("value {i} {k:>20}")),
            );
        }
        let m = json!({"type": "identify", "userId": "u0", "traits": traits});
        db.apply(&Message::parse(m.to_string().as_bytes()).unwrap())
            .unwrap();
    }
    db.abandon();
    let segs = segments(&dir);
    assert!(segs.len() >= 4, "{segs:?}");
    // Damage the middle of the newest sealed segment (inside the current chains: with a
    // limit of 64 they reach back over the last ~190 calls).
    let victim = &segs[segs.len() - 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(victim, &bytes).unwrap();
    match Db::open(&dir, options(64, 0)) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(&file, victim);
            assert!(offset <= at as u64);
        }
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
    // Repair quarantines the segment: the profile whose chain ran through it is dropped (as a
    // full record in a quarantined segment is lost) and the open's report names it and the
    // missing link's file; never a panic, never a profile with properties silently missing.
    let repaired = Options {
        repair: true,
        ..options(64, 0)
    };
    let db = Db::open(&dir, repaired).unwrap();
    assert_eq!(db.get(&Selector::UserId("u0".into())).unwrap(), None);
    assert!(
        db.check().unwrap().is_empty(),
        "the repaired store is consistent"
    );
    let problems = db.stats().dropped_by_repair;
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("dropped by repair") && p.contains(&name)),
        "{problems:?}"
    );
}

#[test]
fn a_delta_whose_link_is_damaged_is_an_error_not_a_panic() {
    // Damage that keeps the CRC right: rewrite a chain's newest record with its link bytes
    // changed (the frame re-encoded), so the decoder itself must catch the broken link.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = run(&dir, options(8, 0), 0..40);
    db.close().unwrap();
    let segs = segments(&dir);
    let last = segs.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    let mut at = 32;
    let mut frames = Vec::new();
    while at < bytes.len() {
        let Ok((seq, total)) = profiledb::storage::decode_frame(&bytes[at..], |_, _, _| {}) else {
            break;
        };
        frames.push((at, seq, total));
        at += total;
    }
    let mut damaged = 0;
    for (i, &(start, seq, total)) in frames.iter().enumerate().rev() {
        let mut entries: Vec<(u8, u64, Vec<u8>)> = Vec::new();
        profiledb::storage::decode_frame(&bytes[start..start + total], |k, id, d| {
            entries.push((k, id, d.to_vec()))
        })
        .unwrap();
        let Some(e) = entries.iter_mut().find(|e| e.0 == 9) else {
            continue;
        };
        // Byte 1.. is the previous record's segment id: point it at segment 77.
        e.2[1] = 77;
        let borrowed: Vec<profiledb::storage::Entry<'_>> = entries
            .iter()
            .map(|(kind, id, data)| profiledb::storage::Entry {
                kind: *kind,
                id: *id,
                data,
            })
            .collect();
        let mut frame = Vec::new();
        profiledb::storage::encode_frame(&mut frame, seq, &borrowed).unwrap();
        assert_eq!(frame.len(), total);
        let mut b = bytes.clone();
        b[start..start + total].copy_from_slice(&frame);
        std::fs::write(last, &b).unwrap();
        std::fs::remove_file(dir.join("HINT")).ok();
        match Db::open(&dir, options(8, 0)) {
            Err(e @ (Error::Corruption { .. } | Error::Decode { .. })) => {
                assert!(e.to_string().contains("0000000077.seg"), "{e}");
                damaged += 1;
            }
            Ok(db) => {
                // The damaged delta was superseded by a later record: reads are fine.
                assert!(db.check().unwrap().is_empty());
            }
            Err(e) => panic!("frame {i}: unexpected {e}"),
        }
        std::fs::write(last, &bytes).unwrap();
        if damaged > 0 {
            break;
        }
    }
    assert!(damaged > 0, "some newest record was a delta");
}

#[test]
fn options_bound_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in [0, 65] {
        let o = Options {
            chain_limit: bad,
            ..options(8, 0)
        };
        assert!(matches!(
            Db::open(tmp.path().join(format!("o{bad}")), o),
            Err(Error::Options {
                name: "chain_limit",
                ..
            })
        ));
    }
}

/// `Stats::profile_records` counts each record a call writes by form and reason: a creation
/// writes a full record, the next calls deltas until the chain holds `chain_limit` records,
/// then a full record again; a merge rewrites the survivor whole.
#[test]
fn records_written_are_counted_by_form_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), options(4, 1 << 20)).unwrap();
    let set = |user: &str, i: u32| {
        let m = json!({"type": "identify", "userId": user, "traits": {"n": i}});
        db.apply(&Message::from_json(&m).unwrap()).unwrap();
    };
    for i in 0..9 {
        set("u1", i);
    }
    // full, 3 deltas (a chain of 4 records), full, 3 deltas, full.
    let r = db.stats().profile_records;
    assert_eq!(
        (
            r.full_whole,
            r.deltas,
            r.full_chain_limit,
            r.linked_into_compaction
        ),
        (1, 6, 2, 0)
    );
    let m = json!({"type": "identify", "anonymousId": "a1", "traits": {"x": 1}});
    db.apply(&Message::from_json(&m).unwrap()).unwrap();
    let m = json!({"type": "identify", "userId": "u1", "anonymousId": "a1"});
    db.apply(&Message::from_json(&m).unwrap()).unwrap();
    let r = db.stats().profile_records;
    // The anonymous profile's creation and the survivor rewritten whole by the merge.
    assert_eq!((r.full_whole, r.deltas), (3, 6));
}

/// A chain that a compaction forwarded is as short as what a read walks: the deltas above the
/// forwarded record. The chain limit counts those, so a hot profile does not write a full
/// record early after every compaction (with and without the writer cache).
#[test]
fn the_chain_limit_counts_the_records_a_read_walks_after_a_forward() {
    for cache in [0, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), options(4, cache)).unwrap();
        let set = |i: u32| {
            let m = json!({"type": "identify", "userId": "u1", "traits": {"n": i}});
            db.apply(&Message::from_json(&m).unwrap()).unwrap();
        };
        // A full record and two deltas: a read walks 2 deltas.
        for i in 0..3 {
            set(i);
        }
        // One delta linked into the compaction's inputs (3 deltas), then forwarded: the
        // record it links to is copied as a full record, so a read walks 1 delta.
        db.compact_with(&mut || {
            if db.stats().profile_records.linked_into_compaction == 0 {
                set(3);
            }
        })
        .unwrap();
        let before = db.stats().profile_records;
        assert_eq!(
            (
                before.full_whole,
                before.deltas,
                before.linked_into_compaction
            ),
            (1, 3, 1),
            "cache {cache}"
        );
        // Two more deltas fit (3 walked, 4 records); counting the depth the head carries
        // (3) instead, the first would be a full record.
        for i in 4..6 {
            set(i);
        }
        let after = db.stats().profile_records;
        assert_eq!(
            (after.deltas - before.deltas, after.full_chain_limit),
            (2, 0),
            "cache {cache}"
        );
        // Then the limit.
        set(6);
        assert_eq!(
            db.stats().profile_records.full_chain_limit,
            1,
            "cache {cache}"
        );
        let p = db.get(&Selector::UserId("u1".into())).unwrap().unwrap();
        let n = p
            .properties
            .iter()
            .find(|(k, _)| k == "n")
            .map(|(_, v)| v.to_json());
        assert_eq!(n, Some(json!(6)), "cache {cache}");
    }
}

/// The in-order fast path (`apply::FastSets`, docs/architecture.md): a call whose every
/// operation sets a known name newer than its state writes its delta from the values' bytes.
/// Such calls must leave the same profiles and the same history as the general path (a store
/// without the writer cache loads profiles whole and never takes it); calls that set a name
/// older than its state, remove one or add a new name take the general path. Debug builds also
/// check each fast delta and undo step byte for byte against the general encoders.
#[test]
fn sets_newer_than_the_state_take_the_fast_path_and_match_the_general_one() {
    let tmp = tempfile::tempdir().unwrap();
    let call = |i: u32| {
        let person = i % 20;
        // Mostly increasing times; every seventh call is late (older than what it sets).
        let minute = if i % 7 == 6 { i / 2 } else { i };
        let mut traits = serde_json::Map::new();
        // Each person's names change from round to round (a name it does not have yet).
        traits.insert(format!("t{}", (i / 20) % 5), json!(format!("v{i}")));
        traits.insert(format!("n{}", (i / 20 + person) % 4), json!(i));
        traits.insert("flag".into(), json!(i.is_multiple_of(2)));
        if i % 11 == 10 {
            traits.insert(format!("new{i}"), json!(1.5));
        }
        let mut m = json!({
            "type": "identify",
            "userId": format!("u{person}"),
            "traits": traits,
            "timestamp": format!("2026-01-01T{:02}:{:02}:00Z", minute / 60, minute % 60),
            "messageId": format!("m{i}"),
        });
        if i % 13 == 12 {
            m["$unset"] = json!([format!("n{}", (i / 20) % 4)]);
        }
        Message::from_json(&m).unwrap()
    };
    let run = |name: &str, cache: usize| {
        let dir = tmp.path().join(name);
        let db = run_calls(&dir, options(8, cache), 0..CALLS, call);
        (dir, db)
    };
    const CALLS: u32 = 400;
    let (_, general) = run("general", 0);
    assert_eq!(general.stats().profile_records.fast_path, 0);
    // A cache too small for the 20 profiles keeps chains (and misses); a roomy one keeps
    // them all.
    let (_, roomy) = run("roomy", 1 << 20);
    let (dir, fast) = run("fast", 8 << 10);
    for db in [&fast, &roomy] {
        let taken = db.stats().profile_records.fast_path as u32;
        // Every call but the first on each profile, the late ones, those adding a name and
        // those removing one could take it; most do.
        assert!(
            taken >= CALLS / 3,
            "fast path taken {taken} times of {CALLS} calls"
        );
        assert!(
            taken < CALLS - 20 - CALLS / 7,
            "late calls, new names or removals took it too: {taken}"
        );
        assert_eq!(all(db), all(&general));
    }
    for p in 0..20 {
        let user = format!("u{p}");
        assert_eq!(
            history_steps(&fast, &user),
            history_steps(&general, &user),
            "history of {user}"
        );
        assert_eq!(
            history_steps(&roomy, &user),
            history_steps(&general, &user),
            "history of {user}"
        );
    }
    // The log's fold of the fast deltas: after a crash (no hint) and after compaction.
    fast.abandon();
    let fast = Db::open(&dir, options(8, 1 << 20)).unwrap();
    assert_eq!(all(&fast), all(&general), "after a crash");
    fast.compact().unwrap();
    assert_eq!(all(&fast), all(&general), "after compaction");
}

/// A fast call writes the full record the writer cache keeps (and the log's, at the chain
/// limit) from the states' bytes: spliced from the cached full record before it
/// (`entries::profile::splice_full`), or, after a miss or on a chain of several records, from
/// the parts a whole fold captured (`entries::profile::put_full_parts`), building no whole
/// record: the profiles and their history are those of a store without the writer cache, and
/// debug builds check each such record byte for byte against the encoder of the whole record.
/// A stream of new people keeps evicting and the ten regulars stay in it.
#[test]
fn full_records_written_from_a_cached_chains_bytes_are_the_whole_records() {
    let tmp = tempfile::tempdir().unwrap();
    let call = |i: u32| {
        let person = if i.is_multiple_of(2) {
            format!("regular{}", (i / 2) % 10)
        } else {
            format!("once{i}")
        };
        let mut traits = serde_json::Map::new();
        traits.insert(format!("s{}", i % 6), json!(format!("text {i}")));
        traits.insert(format!("n{}", i % 5), json!(i));
        traits.insert(format!("b{}", i % 3), json!(i.is_multiple_of(4)));
        traits.insert(
            "when".into(),
            json!(format!("2026-02-01T00:{:02}:00Z", i % 60)),
        );
        let mut m = json!({
            "type": "identify",
            "userId": person,
            "traits": traits,
            "timestamp": format!("2026-01-01T{:02}:{:02}:00Z", i / 3600, (i / 60) % 60),
            "messageId": format!("m{i}"),
        });
        if i % 50 == 48 {
            // A `$set_once` state (not a plain one: built, not captured, by the load), and a
            // removal (captured without a value). Such a call takes the general path.
            m["$set_once"] = json!({ "first": i });
            m["$unset"] = json!([format!("s{}", (i + 1) % 6)]);
        }
        Message::from_json(&m).unwrap()
    };
    const CALLS: u32 = 1200;
    let run = |name: &str, cache: usize| {
        let dir = tmp.path().join(name);
        let db = run_calls(&dir, options(5, cache), 0..CALLS, call);
        (dir, db)
    };
    let (_, general) = run("general", 0);
    // Budgets that keep the regulars' chains and evict the others (with less, the regulars
    // are evicted too).
    let (mut from_parts, mut spliced, mut full_spliced) = (0, 0, 0);
    let mut stores = Vec::new();
    for kib in [10, 12] {
        let (dir, db) = run(&format!("cache{kib}"), kib << 10);
        let r = db.stats().profile_records;
        from_parts += r.full_from_parts;
        spliced += r.spliced;
        full_spliced += r.full_spliced;
        assert_eq!(all(&db), all(&general), "{kib} KiB");
        for p in 0..10 {
            let user = format!("regular{p}");
            assert_eq!(
                history_steps(&db, &user),
                history_steps(&general, &user),
                "history of {user}"
            );
        }
        stores.push((dir, db));
    }
    assert!(from_parts > 0, "no full record from a cached chain's bytes");
    assert!(
        spliced > 0,
        "no cached full record spliced from the one before"
    );
    assert!(
        full_spliced > 0,
        "no full record at the chain limit spliced for the log"
    );
    let (dir, parts) = stores.pop().unwrap();
    // The records written read back from the log alone.
    parts.abandon();
    let parts = Db::open(&dir, options(5, 0)).unwrap();
    assert_eq!(all(&parts), all(&general), "after a crash");
}

/// A full writer cache of a real budget (1 MiB and more keep a doorkeeper) refuses a new
/// person and lets them in when they come back; its regulars' full records are spliced by
/// the next calls: the profiles
/// and their history are still those of a store without the cache, and the log alone reads
/// them back after a crash.
#[test]
fn a_full_cache_refuses_one_off_people_and_the_store_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    // ~8 KB a profile (40 states of ~190 bytes, each short enough to be spliced): 1 MiB
    // holds ~120 of them, the 12 regulars and some of the others.
    let call = |i: u32| {
        // Two calls in three to a regular, in turn; the third to a newcomer, called three
        // times in nine calls (refused, let in, found) and never again.
        let person = match i % 3 {
            2 => format!("newcomer{}", i / 9),
            r => format!("regular{}", (i / 3 * 2 + r) % 12),
        };
        let mut traits = serde_json::Map::new();
        for p in 0..40 {
            traits.insert(format!("p{p}"), json!(format!("{:0>180}", i * 40 + p)));
        }
        traits.insert("n".into(), json!(i));
        let m = json!({
            "type": "identify",
            "userId": person,
            "traits": traits,
            "timestamp": format!("2026-01-01T{:02}:{:02}:00Z", i / 3600, (i / 60) % 60),
            "messageId": format!("m{i}"),
        });
        Message::from_json(&m).unwrap()
    };
    // Segments of 1 MiB: ~8 KB records in `options`' 4 KiB segments make thousands.
    let opts = |cache| Options {
        segment_size: 1 << 20,
        ..options(5, cache)
    };
    let run = |name: &str, cache: usize| {
        let dir = tmp.path().join(name);
        let db = run_calls(&dir, opts(cache), 0..1200, call);
        (dir, db)
    };
    let (_, general) = run("general", 0);
    let (dir, cached) = run("cached", 1 << 20);
    let stats = cached.stats();
    assert!(stats.profile_cache_refused > 0, "nobody refused");
    assert!(stats.profile_cache_hits > 0);
    assert!(stats.profile_records.spliced > 0, "no full record spliced");
    assert_eq!(all(&cached), all(&general));
    for p in 0..12 {
        let user = format!("regular{p}");
        assert_eq!(
            history_steps(&cached, &user),
            history_steps(&general, &user),
            "history of {user}"
        );
    }
    cached.abandon();
    let reread = Db::open(&dir, opts(0)).unwrap();
    assert_eq!(all(&reread), all(&general), "after a crash");
}
