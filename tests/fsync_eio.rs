//! Issue 6, `fsync_eio`: fail the n-th `fdatasync` (and the n-th directory `fsync`) of a
//! workload of identify calls that rotates segments, writes a hint, compacts, reads and
//! closes, for every n, once and permanently (and `ENOSPC` from fdatasync). The failing call
//! errs, the store is poisoned until reopen, no fsync is retried, and a power cut right after
//! loses no acknowledged call and leaves no hole. The harness and its checks are in
//! `identify_model/faults.rs`.

mod identify_model;

use identify_model::faults::every_n;
use profiledb::storage::io::{FaultKind, Op};

#[test]
fn every_fdatasync_failing_once() {
    let (points, errored) = every_n(Op::Sync, FaultKind::Error, false);
    assert!(points > 40, "only {points} fdatasyncs in the workload");
    // Every fdatasync matters: each failure must reach a caller.
    assert_eq!(errored, points);
}

#[test]
fn every_fdatasync_failing_permanently() {
    let (points, errored) = every_n(Op::Sync, FaultKind::Error, true);
    assert_eq!(errored, points);
}

#[test]
fn every_fdatasync_failing_with_enospc() {
    let (points, errored) = every_n(Op::Sync, FaultKind::NoSpace, false);
    assert_eq!(errored, points);
}

#[test]
fn every_directory_fsync_failing_once_and_permanently() {
    for permanent in [false, true] {
        let (points, errored) = every_n(Op::SyncDir, FaultKind::Error, permanent);
        assert!(
            points >= 5,
            "only {points} directory fsyncs in the workload"
        );
        assert_eq!(errored, points);
    }
}

/// Several threads wait for their syncs at once (leader/follower) when one fdatasync fails:
/// no thread may lead another fdatasync after it (a retry, which can "succeed" after the
/// kernel dropped the dirty pages), and every call after the failure errs.
#[test]
fn concurrent_waiters_never_retry_a_failed_fdatasync() {
    use std::sync::Arc;

    use profiledb::storage::StoreOptions;
    use profiledb::storage::io::FaultyIo;
    use profiledb::{Db, Durability, Error};

    let tmp = tempfile::tempdir().unwrap();
    let mut retried = Vec::new();
    let rounds = 60;
    for round in 0..rounds {
        let dir = tmp.path().join(format!("db{round}"));
        let io = FaultyIo::new();
        let mut options = identify_model::faults::options();
        options.durability = Durability::SyncEach;
        options.segment_size = 1 << 20;
        let so = StoreOptions {
            segment_size: options.segment_size,
            durability: options.durability,
            repair: false,
            create: true,
            io: Arc::new(io.clone()),
        };
        let db = Db::open_with(&dir, options, so).unwrap();
        let base = io.count(Op::Sync);
        let n = 1 + round % 12;
        io.fail(Op::Sync, n, FaultKind::Error, false);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let db = &db;
                s.spawn(move || {
                    let mut failed = false;
                    for k in 0..40u64 {
                        let m = serde_json::json!({
                            "userId": format!("thread{t}"),
                            "messageId": format!("t{t}-{k}"),
                            "$add": {"count": 1},
                        });
                        let r = db.apply(&profiledb::Message::from_json(&m).unwrap());
                        match r {
                            Ok(_) => assert!(!failed, "a call succeeded after a failed one"),
                            Err(Error::Poisoned { .. }) => failed = true,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    assert!(failed, "the fault never reached thread {t}");
                });
            }
        });
        let syncs = io.count(Op::Sync) - base;
        drop(db);
        assert_eq!(
            io.count(Op::Sync) - base,
            syncs,
            "round {round}: a sync on drop"
        );
        if syncs != n {
            retried.push((round, n, syncs));
        }
    }
    assert!(
        retried.is_empty(),
        "(round, failing sync, syncs attempted): a failed fdatasync was followed by another: \
         {retried:?}"
    );
}
