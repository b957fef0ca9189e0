//! Compaction is crash-safe at the `Db` level (issue 6, promise 5 of docs/recovery.md).
//! A store with live, superseded (updated, merged-away) and deleted profiles, all calls
//! acknowledged, is compacted with the machine crashing at every I/O operation of
//! `Db::compact` in turn (prepare, commit, switch, unlink, the hint written after it). Each
//! crash becomes ten disk images (damages of the unsynced data and of the names changed since
//! the last directory fsync, the kill -9 image among them) plus a restart after kill -9, and
//! each is reopened with the real file system and checked:
//!
//! - open succeeds and the profiles are exactly those before the compaction (which equal those
//!   after it), identifiers resolving the same way: deleted profiles never return;
//! - the segments are the old set or the new one, never a mix;
//! - no `*.tmp` or `COMPACT` file is left after the open;
//! - once the compaction took effect (old segments gone), and the store was closed (fresh
//!   hint), no byte of the deleted profile's user id remains in the directory; a second
//!   compaction after the recovery keeps the state.
//!
//! This goes beyond `storage_faults::compaction_is_crash_safe_at_every_step` (raw storage,
//! one fault kind at a time, power cut dropping everything unsynced).

#[path = "support/crash.rs"]
mod crash_support;

use std::path::Path;
use std::time::Instant;

use crash_support::*;
use profiledb::Durability;
use profiledb::storage::io::FaultyIo;

/// The setup: the first part of the power-loss workload (merges, protection moves, a
/// duplicate, a delete, buffered calls) plus updates and the delete of `user-0`, whose id is
/// never used again; a checkpoint before the last calls.
fn setup_steps() -> Vec<Step> {
    let mut steps: Vec<Step> = workload()
        .into_iter()
        .take_while(|s| !matches!(s, Step::Compact))
        .filter(|s| !matches!(s, Step::Checkpoint))
        .collect();
    for i in 0..6u8 {
        steps.push(Step::Identify {
            uid: Some(2 + i % 3),
            email: None,
            buffered: false,
            pad: 0,
        });
    }
    steps.push(Step::Delete(0));
    steps.push(Step::Identify {
        uid: Some(4),
        email: Some(5),
        buffered: false,
        pad: 0,
    });
    steps
}

/// Segment ids in a directory.
fn segment_ids(dir: &Path) -> Vec<u32> {
    names(dir)
        .iter()
        .filter_map(|n| n.strip_suffix(".seg")?.parse().ok())
        .collect()
}

fn dir_contains(dir: &Path, needle: &[u8]) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| {
            std::fs::read(dir.join(n))
                .map(|b| b.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .collect()
}

/// The setup on a fresh store; returns the store (still open) and the segment ids before the
/// compaction.
fn setup(dir: &Path, io: &std::sync::Arc<FaultyIo>, steps: &[Step]) -> (profiledb::Db, Vec<u32>) {
    let db = open_faulty(dir, io).unwrap();
    let calls = calls(steps);
    for (call, step) in steps.iter().enumerate() {
        match step {
            Step::Identify {
                uid: u,
                email: e,
                buffered,
                pad,
            } => {
                let m = profiledb::Message::from_json(&message(call, *u, *e, *pad)).unwrap();
                let d = if *buffered {
                    Durability::Buffered
                } else {
                    Durability::SyncEach
                };
                db.apply_with(&m, d).unwrap();
            }
            Step::Resend(i) => {
                let Step::Identify {
                    uid: u,
                    email: e,
                    pad,
                    ..
                } = &calls[*i]
                else {
                    unreachable!()
                };
                let m = profiledb::Message::from_json(&message(*i, *u, *e, *pad)).unwrap();
                db.apply(&m).unwrap();
            }
            Step::Suppress(_) => unreachable!(),
            Step::Delete(u) => {
                db.delete(&profiledb::Selector::UserId(uid(*u)), false)
                    .unwrap();
            }
            Step::Compact | Step::Checkpoint => unreachable!(),
        }
        // A hint from before the compaction, covering segments it removes.
        if call + 4 == steps.len() {
            db.checkpoint().unwrap();
        }
    }
    db.sync().unwrap();
    // The segments holding data: an active segment that is only its 32-byte header (the
    // workload's last frame may fill a segment exactly, as with the delta records) has nothing
    // to compact and stays the active one.
    let ids = segment_ids(dir)
        .into_iter()
        .filter(|id| {
            std::fs::metadata(dir.join(format!("{id:010}.seg"))).map_or(true, |m| m.len() > 32)
        })
        .collect();
    (db, ids)
}

/// Checks specific to compaction on a recovered image `dir` (already checked by
/// `check_image`, so closed cleanly): old or new segments, never a mix; once compacted, the
/// deleted user id is gone from every file; a second compaction keeps the state.
fn check_compaction(dir: &Path, old: &[u32], expected: &State) -> Result<bool, String> {
    let present: Vec<u32> = segment_ids(dir)
        .into_iter()
        .filter(|id| old.contains(id))
        .collect();
    let compacted = present.is_empty();
    if !compacted && present.len() != old.len() {
        return Err(format!(
            "a mix of old and new segments: old {old:?}, present {:?}",
            names(dir)
        ));
    }
    if compacted {
        // Right after the recovery that finished the compaction, before any new hint.
        let hits = dir_contains(dir, uid(0).as_bytes());
        if !hits.is_empty() {
            return Err(format!(
                "the deleted profile's user id is still in {hits:?} after the recovery that \
                 finished the compaction"
            ));
        }
    }
    let db = open_real(dir).map_err(|e| format!("reopen: {e}"))?;
    db.close().map_err(|e| format!("close: {e}"))?;
    if compacted {
        let hits = dir_contains(dir, uid(0).as_bytes());
        if !hits.is_empty() {
            return Err(format!(
                "the deleted profile's user id is still in {hits:?} after the compaction"
            ));
        }
    }
    let db = open_real(dir).map_err(|e| format!("reopen: {e}"))?;
    db.compact()
        .map_err(|e| format!("second compaction: {e}"))?;
    let got = db_state(&db).map_err(|e| e.to_string())?;
    db.close().map_err(|e| format!("close: {e}"))?;
    if got != *expected {
        return Err(format!(
            "a second compaction changed the state: {}",
            got.diff(expected)
        ));
    }
    let hits = dir_contains(dir, uid(0).as_bytes());
    if !hits.is_empty() {
        return Err(format!(
            "the deleted profile's user id is still in {hits:?} after a second compaction"
        ));
    }
    Ok(compacted)
}

/// What [`at_each_crash_point`] found: the images checked, those where the operation took
/// effect and those where it did not, and what was wrong with the others.
#[derive(Default)]
struct Tally {
    images: usize,
    after: usize,
    before: usize,
    failures: Failures,
}

/// Each crash point `k` of `ops`: a store set up afresh in its own directory under `tmp`
/// (`setup`), `run` on it with the machine crashing at its `k`th I/O operation (it must
/// fail: `run` gives whether it did, and what `check` needs of it), then `check(k, &set up,
/// &ran, image)` on each disk image the crash leaves (`check_crash_images`): whether the
/// operation (`what`, for the failures' text) took effect in it, or what is wrong.
fn at_each_crash_point<S, T>(
    tmp: &Path,
    ops: std::ops::RangeInclusive<u64>,
    what: &str,
    mut setup: impl FnMut(&Path, &std::sync::Arc<FaultyIo>) -> (profiledb::Db, S),
    mut run: impl FnMut(&profiledb::Db) -> (bool, T),
    mut check: impl FnMut(u64, &S, &T, &Path) -> Result<bool, String>,
) -> Tally {
    let mut tally = Tally::default();
    let first = *ops.start();
    for k in ops {
        let base = tmp.join(format!("k{k}"));
        let dir = base.join("db");
        let io = FaultyIo::new();
        let (db, set_up) = setup(&dir, &io);
        io.crash_at(k);
        let (failed, ran) = run(&db);
        assert!(failed, "crash point {k} was not hit");
        drop(db);
        check_crash_images(&io, &dir, &base, k, |image, damage| {
            tally.images += 1;
            match check(k, &set_up, &ran, image) {
                Ok(true) => tally.after += 1,
                Ok(false) => tally.before += 1,
                Err(e) => tally.failures.push(format!(
                    "crash at op {k} ({} of the {what}), {damage}: {e}",
                    k - first + 1
                )),
            }
        });
        let _ = std::fs::remove_dir_all(&base);
    }
    tally
}

#[test]
fn a_crash_at_every_io_operation_of_a_compaction_keeps_before_or_after() {
    let t0 = Instant::now();
    let tmp = scratch();
    let steps = setup_steps();
    let calls = calls(&steps);
    let states = model_states(&calls);
    let expected = states.last().unwrap().clone();
    assert!(
        !expected.users.contains_key(&uid(0)),
        "the setup must delete user-0"
    );

    // Counting run: the operations of the setup, then of the compaction.
    let io = FaultyIo::new();
    let dir = tmp.path().join("count");
    let (db, old) = setup(&dir, &io, &steps);
    assert_eq!(db_state(&db).unwrap(), expected, "the model disagrees");
    assert!(old.len() >= 3, "too few segments to compact: {old:?}");
    assert!(
        !dir_contains(&dir, uid(0).as_bytes()).is_empty(),
        "the deleted user id should be on disk before the compaction"
    );
    let first = io.ops() + 1;
    let reclaimed = db.compact().unwrap();
    assert!(reclaimed > 0, "nothing was reclaimed");
    let last = io.ops();
    assert_eq!(db_state(&db).unwrap(), expected);
    db.close().unwrap();
    assert!(segment_ids(&dir).iter().all(|id| !old.contains(id)));
    assert_eq!(dir_contains(&dir, uid(0).as_bytes()), Vec::<String>::new());
    assert!(
        last - first > 15,
        "the compaction did only {} ops",
        last - first + 1
    );

    let points = last - first + 1;
    let n = calls.len();
    let Tally {
        images,
        after,
        before,
        failures,
    } = at_each_crash_point(
        tmp.path(),
        first..=last,
        "compaction",
        |dir, io| setup(dir, io, &steps),
        |db| (db.compact().is_err(), ()),
        |_, old, _, image| {
            check_image(image, &states, &calls, n, n)
                .and_then(|_| check_compaction(image, old, &expected))
        },
    );
    eprintln!(
        "compaction_crash_matrix: {points} crash points (ops {first}..={last}), {} damages + \
         kill -9 each, {images} images checked ({before} before the compaction, {after} after), \
         {:.1?}",
        damages(1).len(),
        t0.elapsed()
    );
    failures.assert_none(images);
    assert!(before > 0 && after > 0, "{before} before, {after} after");
}

/// Calls issued from inside a compaction (`Db::compact_with`): two once the inputs are sealed,
/// two once they are copied, two once it is decided (forwards and manifest durable) but not
/// switched in. Each of the first four updates a profile whose newest record lies in the
/// inputs or was written by the one before it, so the deltas link into the segments being
/// rewritten and the compaction writes `FORWARD` entries before its switch; the fifth updates
/// user 1, whose newest record lies in the inputs, when no delta may link there any more (it
/// writes a full record), the sixth user 2 again (a delta after one written during it).
fn during_steps() -> Vec<Step> {
    [2u8, 3, 2, 4, 1, 2]
        .into_iter()
        .map(|u| Step::Identify {
            uid: Some(u),
            email: None,
            buffered: false,
            pad: 0,
        })
        .collect()
}

/// Run `Db::compact_with` issuing `steps[from..]` (durable) from its three hook points; returns
/// the compaction's result and how many of those calls were acknowledged and issued.
fn compact_with_calls(
    db: &profiledb::Db,
    steps: &[Step],
    from: usize,
) -> (profiledb::Result<u64>, usize, usize) {
    let (mut acked, mut issued, mut failed) = (from, from, false);
    let mut hook = || {
        for _ in 0..2 {
            let Some(Step::Identify {
                uid: u,
                email: e,
                pad,
                ..
            }) = steps.get(issued)
            else {
                return;
            };
            if failed {
                return;
            }
            let m = profiledb::Message::from_json(&message(issued, *u, *e, *pad)).unwrap();
            issued += 1;
            match db.apply_with(&m, Durability::SyncEach) {
                Ok(_) => acked += 1,
                Err(_) => failed = true,
            }
        }
    };
    let r = db.compact_with(&mut hook);
    (r, acked, issued)
}

/// Issue 11: deltas written while a compaction runs link into the segments it rewrites, and
/// read through the forwards it leaves. A crash at every I/O operation of such a compaction
/// (the calls' own writes and syncs, the `FORWARD` entries and their sync, the switch, the
/// hint) loses no acknowledged call, and the store reads back whole, passes `Db::check`, and
/// keeps its state through a further compaction.
#[test]
fn a_crash_at_every_io_operation_of_a_compaction_with_writers_linking_into_it() {
    let t0 = Instant::now();
    let tmp = scratch();
    let mut steps = setup_steps();
    let split = steps.len();
    steps.extend(during_steps());
    let calls = calls(&steps);
    let states = model_states(&calls);
    let n = calls.len();

    // Counting run.
    let io = FaultyIo::new();
    let dir = tmp.path().join("count");
    let (db, old) = setup(&dir, &io, &steps[..split]);
    assert!(old.len() >= 3, "too few segments to compact: {old:?}");
    let first = io.ops() + 1;
    let (r, acked, issued) = compact_with_calls(&db, &steps, split);
    r.unwrap();
    assert_eq!((acked, issued), (n, n));
    let last = io.ops();
    assert_eq!(db_state(&db).unwrap(), states[n]);
    let records = db.stats().profile_records;
    let linked = records.linked_into_compaction;
    assert!(
        linked >= 2,
        "only {linked} deltas linked into the compaction"
    );
    assert_eq!(
        records.full_at_switch, 1,
        "the call on user 1 while the compaction switched in"
    );
    db.close().unwrap();
    let db = open_real(&dir).unwrap();
    assert_eq!(db_state(&db).unwrap(), states[n], "after reopen");
    db.close().unwrap();

    let points = last - first + 1;
    let Tally {
        images, failures, ..
    } = at_each_crash_point(
        tmp.path(),
        first..=last,
        "compaction",
        |dir, io| setup(dir, io, &steps[..split]),
        |db| {
            let (r, acked, issued) = compact_with_calls(db, &steps, split);
            (r.is_err(), (acked, issued))
        },
        |_, _, &(acked, issued), image| {
            check_image(image, &states, &calls, acked, issued)
                .and_then(|_| {
                    let db = open_real(image).map_err(|e| format!("reopen: {e}"))?;
                    let before = db_state(&db).map_err(|e| e.to_string())?;
                    db.compact()
                        .map_err(|e| format!("second compaction: {e}"))?;
                    let got = db_state(&db).map_err(|e| e.to_string())?;
                    let problems = db.check().map_err(|e| format!("check: {e}"))?;
                    db.close().map_err(|e| format!("close: {e}"))?;
                    if got != before {
                        return Err(format!(
                            "a second compaction changed the state: {}",
                            got.diff(&before)
                        ));
                    }
                    if !problems.is_empty() {
                        return Err(format!("check after a second compaction: {problems:?}"));
                    }
                    Ok(true)
                })
                .map_err(|e| format!("{acked} acked, {issued} issued: {e}"))
        },
    );
    eprintln!(
        "compaction_crash_matrix (writers linking in): {points} crash points (ops \
         {first}..={last}), {} damages + kill -9 each, {images} images checked, {:.1?}",
        damages(1).len(),
        t0.elapsed()
    );
    failures.assert_none(images);
}

/// The setup, then a compaction that moves every history step to segments of steps, then a
/// clean close; the segments of steps, and `db` reopened on `io` with a window every step
/// has left (the store's own options otherwise).
fn setup_expired(
    dir: &Path,
    io: &std::sync::Arc<FaultyIo>,
    steps: &[Step],
) -> (profiledb::Db, Vec<u32>) {
    let (db, _) = setup(dir, io, steps);
    db.compact().unwrap();
    assert!(db.counts().history_segment_bytes > 0, "no segment of steps");
    db.close().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let db = profiledb::Db::open_with(
        dir,
        profiledb::Options {
            history_retention: std::time::Duration::from_millis(1),
            ..options()
        },
        store_options(std::sync::Arc::new(io.clone())),
    )
    .unwrap();
    let all = segment_ids(dir);
    (db, all)
}

/// Stop 23: the segments of history steps whose every step has left the window are deleted
/// whole (`Db::drop_expired_history_segments`: a compaction of those alone, with no output).
/// A crash at every I/O operation of it (the manifest, the unlinks, the hint, the table files'
/// removal) leaves the profiles as they were, the segments of steps all there or all gone,
/// no temporary file after the open, and a journal that reads back (`check_image`).
#[test]
fn a_crash_at_every_io_operation_of_deleting_expired_segments_of_steps() {
    let t0 = Instant::now();
    let tmp = scratch();
    let steps = setup_steps();
    let calls = calls(&steps);
    let states = model_states(&calls);
    let expected = states.last().unwrap().clone();

    // Counting run: which segments go, and the operations of the deletion.
    let io = FaultyIo::new();
    let dir = tmp.path().join("count");
    let (db, all) = setup_expired(&dir, &io, &steps);
    let first = io.ops() + 1;
    let reclaimed = db.drop_expired_history_segments().unwrap();
    let last = io.ops();
    assert!(reclaimed > 0, "nothing deleted");
    assert_eq!(db.counts().history_segment_bytes, 0);
    assert_eq!(db_state(&db).unwrap(), expected);
    db.close().unwrap();
    let gone: Vec<u32> = all
        .iter()
        .copied()
        .filter(|id| !segment_ids(&dir).contains(id))
        .collect();
    assert!(!gone.is_empty(), "no segment deleted");
    assert!(last >= first, "the deletion did no I/O");

    let points = last - first + 1;
    let n = calls.len();
    let Tally {
        images,
        after: deleted,
        before: kept,
        failures,
    } = at_each_crash_point(
        tmp.path(),
        first..=last,
        "deletion",
        |dir, io| setup_expired(dir, io, &steps),
        |db| (db.drop_expired_history_segments().is_err(), ()),
        |_, _, _, image| {
            // After the open, which finishes a deletion whose manifest it finds.
            check_image(image, &states, &calls, n, n).and_then(|_| {
                let present = gone
                    .iter()
                    .filter(|id| segment_ids(image).contains(id))
                    .count();
                if present != 0 && present != gone.len() {
                    Err(format!(
                        "a mix after the open: {present} of the segments of steps {gone:?}"
                    ))
                } else {
                    Ok(present == 0)
                }
            })
        },
    );
    eprintln!(
        "expired steps: {points} crash points (ops {first}..={last}), {images} images checked \
         ({kept} kept, {deleted} deleted), {:.1?}",
        t0.elapsed()
    );
    failures.assert_none(images);
    assert!(kept > 0 && deleted > 0, "{kept} kept, {deleted} deleted");
}
