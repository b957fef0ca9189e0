//! Power-loss simulation at the `Db` level (issue 6, promise 1 and 2 of docs/recovery.md).
//! `kill -9` cannot show a missing fsync; this can. A workload of identify calls (merges,
//! protection moves, `$add` counters, a duplicate, a delete, buffered calls, segment rotations,
//! two checkpoints, a compaction, a clean close) is run once to count its N I/O operations,
//! then once per crash point k in 1..=N with the machine crashing at operation k. Each crash is
//! turned into ten disk images (damages of what was not synced: dropped, kept, cut short,
//! zero-filled, garbage, seeded mixes; names changed since the last directory fsync undone,
//! kept, or kept in part), and each image is reopened with the real file system and checked:
//!
//! - open succeeds (a torn tail is repaired; `Corruption` is a failure, since only unsynced
//!   data was damaged);
//! - the state is the model's after some prefix of the calls between the acknowledged ones
//!   (returned `Ok` after waiting for their fsync, or covered by a later one) and the issued
//!   ones: nothing acknowledged is lost, no call is half applied (a merge is all or nothing);
//! - the state survives a power cut right after the open, and a close and reopen;
//! - `kill -9` then power loss: a process restarted on what the OS had (every written byte)
//!   shows some valid prefix, and what it showed survives a power cut (in doubt, once seen,
//!   never vanishes).
//!
//! `PROFILEDB_POWERLOSS_DAMAGES=n` checks n damages per crash point instead of ten;
//! `PROFILEDB_POWERLOSS_STRIDE=s` checks every s-th crash point only.

#[path = "support/crash.rs"]
mod crash_support;

use std::time::Instant;

use crash_support::*;
use profiledb::Durability;
use profiledb::storage::io::{FaultyIo, NameLoss, PowerCut, UnsyncedTail};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_crash_point_of_a_sync_each_workload_recovers_to_an_acknowledged_prefix() {
    matrix(Durability::SyncEach.into(), workload(), damages);
}

#[test]
fn every_crash_point_of_a_group_commit_workload_recovers_to_an_acknowledged_prefix() {
    matrix(GROUP_COMMIT.into(), workload(), damages);
}

/// Long chains of delta records (docs/format.md, "Profile delta"): 80 calls to two people,
/// most buffered, so that crashes fall between a delta and the full record that folds its
/// chain, inside chains spanning segments, in a compaction that folds every chain, and on
/// calls after it.
#[test]
fn every_crash_point_of_a_workload_of_long_chains_recovers_to_an_acknowledged_prefix() {
    let mut s = Vec::new();
    for i in 0..80u8 {
        s.push(Step::Identify {
            uid: Some(i % 2),
            email: (i % 9 == 4).then_some(i % 3),
            buffered: i % 4 != 3,
            pad: 0,
        });
        match i {
            30 => s.push(Step::Checkpoint),
            55 => s.push(Step::Compact),
            _ => {}
        }
    }
    matrix(Durability::SyncEach.into(), s, damages);
}

/// Bursts of buffered calls with ~1 KiB profiles in 96 KiB segments: unsynced tails of many
/// frames, buffer write-outs every 64 KiB, a hint inside a large active segment.
#[test]
fn every_crash_point_of_a_workload_of_large_buffered_bursts_recovers_to_an_acknowledged_prefix() {
    matrix(
        Config {
            durability: Durability::SyncEach,
            segment_size: BIG_SEGMENT_SIZE,
            preallocate: 0,
        },
        big_workload(),
        damages,
    );
}

/// A store keeping zeros written ahead of its log's end (`Options::preallocate_bytes`): every
/// crash point of the two workloads above, with the zeros written, synced or not, under the
/// frames that follow them, and cut off with each rotation and the close.
#[test]
fn every_crash_point_of_a_preallocating_store_recovers_to_an_acknowledged_prefix() {
    matrix(
        Config {
            preallocate: 512,
            ..Durability::SyncEach.into()
        },
        workload(),
        damages,
    );
    matrix(
        Config {
            durability: Durability::SyncEach,
            segment_size: BIG_SEGMENT_SIZE,
            preallocate: 16 << 10,
        },
        big_workload(),
        damages,
    );
}

/// Group commit with its background thread syncing every millisecond (and early after four
/// frames): syncs happen at times the test does not control, so crash points fall on
/// different operations from run to run; the checks are the same.
#[test]
fn every_crash_point_of_a_busy_group_commit_workload_recovers_to_an_acknowledged_prefix() {
    matrix(
        Durability::GroupCommit {
            max_delay: std::time::Duration::from_millis(1),
            max_batch: 4,
        }
        .into(),
        workload(),
        damages,
    );
}

/// Unsynced writes reaching the disk out of order (a later sector written, an earlier one
/// not) are among the assumptions of docs/recovery.md, but promise 3 makes a bad frame
/// followed by a valid one `Corruption`: open refuses such an image although only unsynced
/// bytes were damaged, and `repair` would quarantine the whole newest segment, acknowledged
/// frames included. Known limitation, kept as a failing test until the policy is decided.
#[test]
#[ignore = "known limitation: reordered unsynced sectors are reported as corruption"]
fn reordered_unsynced_sectors_recover_to_an_acknowledged_prefix() {
    let sectors = |k| {
        vec![(
            "reordered sectors".to_string(),
            PowerCut {
                tail: UnsyncedTail::Sectors(k),
                names: NameLoss::Current,
            },
        )]
    };
    let big = Config {
        durability: Durability::SyncEach,
        segment_size: BIG_SEGMENT_SIZE,
        preallocate: 0,
    };
    matrix(big, big_workload(), sectors);
    matrix(Durability::SyncEach.into(), workload(), sectors);
}

fn matrix(config: Config, steps: Vec<Step>, damages: fn(u64) -> Vec<(String, PowerCut)>) {
    let durable = config.durability;
    let t0 = Instant::now();
    let tmp = scratch();
    let calls = calls(&steps);
    let states = model_states(&calls);

    // The counting run: no crash; it also checks the model against the store after every call.
    let io = FaultyIo::new();
    let clean = run_workload(
        &tmp.path().join("count"),
        &io,
        &steps,
        Some(&states),
        config,
    );
    assert!(clean.error.is_none(), "{:?}", clean.error);
    assert_eq!(clean.acked, calls.len());
    let n = clean.ops;
    assert!(n > 50, "only {n} I/O operations: the workload is too small");
    let stride = env("PROFILEDB_POWERLOSS_STRIDE", 1).max(1);

    let mut failures = Failures::default();
    let mut images = 0usize;
    let mut points = 0usize;
    let mut in_doubt_kept = 0usize;
    let mut torn_or_lost = 0usize;
    let mut k = 1;
    while k <= n {
        points += 1;
        let base = tmp.path().join(format!("k{k}"));
        let dir = base.join("db");
        let io = FaultyIo::new();
        io.crash_at(k);
        let run = run_workload(&dir, &io, &steps, None, config);
        // (With a busy group-commit thread the run may do fewer operations than the
        // counting run; then the crash point is never reached and the run ends cleanly.)
        assert!(
            run.error.is_some() || durable != Durability::SyncEach && durable != GROUP_COMMIT,
            "crash point {k} of {n} was never reached"
        );
        for (d, (name, cut)) in damages(k).into_iter().enumerate() {
            let image = base.join(format!("image{d}"));
            io.power_loss_with(&dir, &image, cut).unwrap();
            images += 1;
            match check_image(&image, &states, &calls, run.acked, run.issued) {
                Ok(p) if p > run.acked => in_doubt_kept += 1,
                Ok(p) if p < run.issued => torn_or_lost += 1,
                Ok(_) => {}
                Err(e) => failures.push(format!(
                    "crash at op {k}/{n} ({}; acked {}, issued {}), damage {name}: {e}",
                    run.error.as_deref().unwrap_or(""),
                    run.acked,
                    run.issued
                )),
            }
        }
        // kill -9, restart on what the OS had, then a power cut: what the restarted process
        // showed must survive.
        io.revive();
        images += 1;
        match open_faulty(&dir, &io) {
            Err(e) => failures.push(format!("crash at op {k}: restart after kill -9: {e}")),
            Ok(db) => {
                let seen = db_state(&db).unwrap();
                match matching_prefix(&states, &seen, run.acked, run.issued) {
                    None => failures.push(format!(
                        "crash at op {k}: restart after kill -9 shows no valid prefix: {}",
                        seen.diff(&states[run.acked])
                    )),
                    Some(_) => {
                        let image = base.join("after-restart");
                        io.power_loss_with(
                            &dir,
                            &image,
                            PowerCut {
                                tail: UnsyncedTail::Drop,
                                names: NameLoss::Durable,
                            },
                        )
                        .unwrap();
                        drop(db);
                        match open_real(&image).map(|db| db_state(&db)) {
                            Ok(Ok(after)) if after == seen => {}
                            Ok(Ok(after)) => failures.push(format!(
                                "crash at op {k}: state seen after kill -9 vanished in a \
                                 power cut: {}",
                                after.diff(&seen)
                            )),
                            Ok(Err(e)) | Err(e) => failures.push(format!(
                                "crash at op {k}: open after kill -9 and power cut: {e}"
                            )),
                        }
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&base);
        k += stride;
    }
    eprintln!(
        "powerloss_sim ({config:?}, {} calls): {points} crash points of {n} ops, {} damages each + kill -9, {images} \
         images checked ({in_doubt_kept} kept in-doubt calls, {torn_or_lost} lost unacknowledged \
         ones), {:.1?}",
        calls.len(),
        damages(1).len(),
        t0.elapsed()
    );
    failures.assert_none(images);
    assert!(
        in_doubt_kept > 0 && torn_or_lost > 0,
        "the damages never differed"
    );
}

/// The workload does what the matrix relies on: merges, a suppression, deletes, rotations.
#[test]
fn the_workload_merges_deletes_and_suppresses() {
    let steps = workload();
    let calls = calls(&steps);
    let mut model = Model::default();
    for i in 0..calls.len() {
        model.apply(i, &calls);
    }
    assert_eq!(model.suppressed_users, vec![uid(4)]);
    assert!(!model.suppressed_emails.is_empty());
    let states = model_states(&calls);
    let last = states.last().unwrap();
    // Keys were handed out to more profiles than are left: merges and deletes.
    let max_key = states.iter().flat_map(|s| s.profiles.keys()).max().unwrap();
    assert!(
        *max_key as usize > last.profiles.len() + 3,
        "{max_key} {last:?}"
    );
    // Calls were refused after the suppression (their state did not change).
    assert!(
        (1..states.len()).any(|p| states[p] == states[p - 1]
            && matches!(calls[p - 1], Step::Identify { uid: Some(4), .. })),
        "no call was refused"
    );
}

/// The simulator itself: crash points, synced content, journaled names.
#[test]
fn faulty_io_images_keep_what_was_synced_and_a_prefix_of_the_names() {
    use profiledb::storage::io::{Io, Op};
    let tmp = scratch();
    let dir = tmp.path().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    let io = FaultyIo::new();
    let a = io.create(&dir.join("a")).unwrap(); // op 1
    a.write_at(0, b"synced").unwrap(); // op 2
    a.sync_data().unwrap(); // op 3
    io.sync_dir(&dir).unwrap(); // op 4
    a.write_at(6, b"+tail").unwrap(); // op 5
    let b = io.create(&dir.join("b")).unwrap(); // op 6
    b.write_at(0, b"new").unwrap(); // op 7
    io.rename(&dir.join("a"), &dir.join("c")).unwrap(); // op 8
    assert_eq!(io.ops(), 8);
    assert_eq!(io.count(Op::Write), 3);
    io.crash_at(9);
    assert!(io.sync_dir(&dir).is_err());
    assert!(io.crashed());
    assert!(b.write_at(3, b"x").is_err(), "the machine is off");
    let image = |name: &str, tail, lost| {
        let dest = tmp.path().join(name);
        let cut = PowerCut { tail, names: lost };
        io.power_loss_with(&dir, &dest, cut).unwrap();
        names(&dest)
            .into_iter()
            .map(|n| (n.clone(), std::fs::read(dest.join(&n)).unwrap()))
            .collect::<Vec<_>>()
    };
    let f = |n: &str, b: &[u8]| (n.to_string(), b.to_vec());
    assert_eq!(
        image("durable", UnsyncedTail::Drop, NameLoss::Durable),
        vec![f("a", b"synced")]
    );
    assert_eq!(
        image("kill9", UnsyncedTail::All, NameLoss::Current),
        vec![f("b", b"new"), f("c", b"synced+tail")]
    );
    assert_eq!(
        image("prefix", UnsyncedTail::Keep(2), NameLoss::Prefix(1)),
        vec![f("a", b"synced+t"), f("b", b"ne")]
    );
    assert_eq!(
        image("zeros", UnsyncedTail::Zeros(usize::MAX), NameLoss::Current),
        vec![f("b", &[0, 0, 0]), f("c", b"synced\0\0\0\0\0")]
    );
    // A restart after kill -9 sees everything, and what it syncs becomes durable.
    io.revive();
    let c = io.open(&dir.join("c")).unwrap();
    c.sync_data().unwrap();
    io.sync_dir(&dir).unwrap();
    assert_eq!(
        image("after", UnsyncedTail::Drop, NameLoss::Durable),
        vec![f("b", b""), f("c", b"synced+tail")]
    );
}
