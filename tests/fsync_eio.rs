//! Issue 6, `fsync_eio`: fail the n-th `fdatasync` (and the n-th directory `fsync`) of a
//! workload of identify calls that rotates segments, writes a hint, compacts, reads and
//! closes, for every n, once and permanently (and `ENOSPC` from fdatasync). The failing call
//! errs, the store is poisoned until reopen, no fsync is retried, and a power cut right after
//! loses no acknowledged call and leaves no hole. The harness and its checks are in
//! `support/identify_model/faults.rs`.

#[path = "support/identify_model/mod.rs"]
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
    for durability in [
        profiledb::Durability::SyncEach,
        profiledb::Durability::GroupCommit {
            max_delay: std::time::Duration::from_millis(1),
            max_batch: 3,
        },
    ] {
        let retried = identify_model::faults::concurrent_waiters(Op::Sync, durability);
        assert!(
            retried.is_empty(),
            "{durability:?} (round, failing fdatasync, fdatasyncs attempted): a failed fdatasync \
             was followed by another: {retried:?}"
        );
    }
}
