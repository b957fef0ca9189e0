//! Issue 6, `write_errors`: fail the n-th write, file create, rename and unlink of a workload of
//! identify calls that rotates segments, writes a hint, compacts, reads and closes, for every
//! n, once and permanently; also `ENOSPC` on writes and creates, and short writes (which must
//! be completed, not reported). A failure that reaches a caller poisons the store until
//! reopen, nothing is written or synced after it, and the directory a power cut leaves, like
//! the real one, holds exactly a prefix of the calls covering every acknowledged one. The
//! harness and its checks are in `support/identify_model/faults.rs`.

#[path = "support/identify_model/mod.rs"]
mod identify_model;

use identify_model::faults::{every_n, run};
use profiledb::storage::io::{FaultKind, Op};

#[test]
fn every_write_failing_once_and_permanently() {
    for permanent in [false, true] {
        let (points, errored) = every_n(Op::Write, FaultKind::Error, permanent);
        assert!(points > 30, "only {points} writes in the workload");
        assert_eq!(errored, points, "a failed write went unreported");
    }
}

#[test]
fn every_write_failing_with_enospc() {
    let (points, errored) = every_n(Op::Write, FaultKind::NoSpace, false);
    assert_eq!(errored, points);
}

#[test]
fn every_create_failing_once_permanently_and_with_enospc() {
    for (kind, permanent) in [
        (FaultKind::Error, false),
        (FaultKind::Error, true),
        (FaultKind::NoSpace, false),
    ] {
        let (points, errored) = every_n(Op::Create, kind, permanent);
        assert!(points >= 5, "only {points} creates in the workload");
        assert_eq!(errored, points);
    }
}

#[test]
fn every_rename_failing_once_and_permanently() {
    for permanent in [false, true] {
        let (points, errored) = every_n(Op::Rename, FaultKind::Error, permanent);
        // The hint's rename and the compaction's manifest and segment renames.
        assert!(points >= 3, "only {points} renames in the workload");
        assert_eq!(errored, points);
    }
}

#[test]
fn every_unlink_failing_once_and_permanently() {
    for permanent in [false, true] {
        let (points, errored) = every_n(Op::Remove, FaultKind::Error, permanent);
        assert!(points >= 3, "only {points} unlinks in the workload");
        // Removing a stale temp file before writing a new one is best effort (a failure
        // there changes nothing); unlinking the compacted-away segments and the manifest is
        // not.
        assert!(
            errored >= 2,
            "{errored} of {points} unlink failures reached a caller"
        );
    }
}

#[test]
fn short_writes_are_completed_not_reported() {
    let tmp = tempfile::tempdir().unwrap();
    // Every write short (permanent), and a single short write at each of the first points.
    let r = run(tmp.path(), Op::Write, 1, FaultKind::ShortWrite, true);
    assert!(r.fired && !r.errored, "{r:?}");
    for n in [1, 2, 3, 7, 20, 40] {
        let r = run(tmp.path(), Op::Write, n, FaultKind::ShortWrite, false);
        assert!(r.fired && !r.errored, "short write #{n}: {r:?}");
    }
}

/// Several threads wait for their syncs at once when the leader's write fails: no write is
/// attempted after it, and every call after the failure errs.
#[test]
fn concurrent_waiters_never_write_after_a_failed_write() {
    for durability in [
        profiledb::Durability::SyncEach,
        profiledb::Durability::GroupCommit {
            max_delay: std::time::Duration::from_millis(1),
            max_batch: 3,
        },
    ] {
        let retried = identify_model::faults::concurrent_waiters(Op::Write, durability);
        assert!(
            retried.is_empty(),
            "{durability:?} (round, failing write, writes attempted): a failed write was \
             followed by another: {retried:?}"
        );
    }
}
