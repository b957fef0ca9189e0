//! The fault-injection harness of `fsync_eio` and `write_errors`: one identify workload (with
//! rotations, a hint write, a compaction, reads and a close) run through `Db` on a `FaultyIo`
//! that fails the n-th operation of one kind, for every n until the fault no longer fires.
//!
//! For each run it checks:
//! - the call that hit the fault errs, and every later call errs with `Error::Poisoned`
//!   (appends, syncs, reads, hints, compactions, close);
//! - after the failure no fsync, directory fsync, write, create or rename is attempted at all
//!   (`FaultyIo::count`): an fsync is never retried;
//! - the directory a power cut would leave (only synced bytes and names) reopens with real
//!   I/O to exactly the model of a prefix of the calls that covers every durably acknowledged
//!   call and no call after the failing one;
//! - the real directory (everything the OS got) reopens the same way, and takes new calls.

use std::path::Path;
use std::sync::Arc;

use profiledb::storage::StoreOptions;
use profiledb::storage::io::{FaultKind, FaultyIo, Op, UnsyncedTail};
use profiledb::{Db, Durability, Error, Options, Selector};

use super::{Model, assert_db_matches, call, check_outcome, message, prefix_len};

/// Seed of the fault workload's call stream (fixed: the runs must be reproducible).
pub const SEED: u64 = 0x5EED_F00D;
/// Calls in the workload.
pub const CALLS: u64 = 48;

#[derive(Debug, Clone, Copy)]
enum Step {
    Call(u64, Durability),
    Checkpoint,
    Compact,
    Sync,
    Read,
    Close,
}

fn steps() -> Vec<Step> {
    let mut s = Vec::new();
    for i in 0..CALLS {
        let d = if i % 3 == 2 {
            Durability::Buffered
        } else {
            Durability::SyncEach
        };
        s.push(Step::Call(i, d));
        match i {
            14 => s.push(Step::Checkpoint),
            20 => s.push(Step::Read),
            28 => s.push(Step::Compact),
            34 => s.push(Step::Sync),
            40 => s.push(Step::Read),
            _ => {}
        }
    }
    s.push(Step::Close);
    s
}

pub fn options() -> Options {
    Options {
        durability: Durability::Buffered,
        // About ten calls per segment: rotations throughout.
        segment_size: 2048,
        compaction_ratio: None,
        ..Options::default()
    }
}

fn open_faulty(dir: &Path, io: &Arc<FaultyIo>) -> Db {
    let o = options();
    let so = StoreOptions {
        segment_size: o.segment_size,
        durability: o.durability,
        repair: false,
        create: true,
        io: Arc::new(io.clone()),
    };
    Db::open_with(dir, o, so).expect("open on FaultyIo")
}

/// What one run saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunResult {
    /// The n-th operation was reached (and failed, or was cut short).
    pub fired: bool,
    /// Some step returned an error.
    pub errored: bool,
}

/// Operation counts that must not move once the store is poisoned.
const FROZEN: [Op; 5] = [Op::Sync, Op::SyncDir, Op::Write, Op::Create, Op::Rename];

fn counts(io: &FaultyIo) -> Vec<u64> {
    FROZEN.iter().map(|op| io.count(*op)).collect()
}

/// Run the workload once with the `n`-th `op` failing as `kind` (`permanent`: and every one
/// after it). `tmp` is a scratch directory.
pub fn run(tmp: &Path, op: Op, n: u64, kind: FaultKind, permanent: bool) -> RunResult {
    let ctx = format!(
        "{op:?} #{n} {kind:?}{}",
        if permanent { " permanent" } else { "" }
    );
    let dir = tmp.join("db");
    let image = tmp.join("image");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&image);
    let io = FaultyIo::new();
    let db = open_faulty(&dir, &io);
    let base = io.count(op);
    io.fail(op, n, kind, permanent);

    let mut model = Model::new(SEED);
    let mut durable = 0u64; // calls known to be on stable storage
    let mut attempted = 0u64; // calls that may have reached the log
    let mut failed_at: Option<(String, Vec<u64>)> = None;
    let mut db = Some(db);
    for step in steps() {
        let Some(d) = db.as_ref() else { break };
        let result: Result<(), Error> = match step {
            Step::Call(i, dur) => {
                if failed_at.is_none() {
                    attempted = i + 1;
                }
                let c = call(SEED, i);
                d.apply_with(&message(&c), dur).map(|out| {
                    let want = model.apply(&c);
                    check_outcome(&out, want, &format!("{ctx}: call {i}"));
                    if dur.waits() {
                        durable = model.applied;
                    }
                })
            }
            Step::Checkpoint | Step::Compact | Step::Sync => match step {
                Step::Checkpoint => d.checkpoint(),
                Step::Compact => d.compact().map(|_| ()),
                _ => d.sync(),
            }
            .map(|()| durable = model.applied),
            Step::Read => {
                // Always an existing profile, so that the read reaches the store (a failure
                // in the very first call leaves none: nothing to read then).
                let Some(&k) = model.profiles.keys().next() else {
                    continue;
                };
                d.get(&Selector::Key(k)).map(|p| {
                    assert_eq!(p.map(|p| p.key), Some(k), "{ctx}: read");
                })
            }
            Step::Close => {
                let r = db.take().expect("open").close();
                if r.is_ok() {
                    durable = model.applied;
                }
                r
            }
        };
        match (result, &failed_at) {
            (Ok(()), None) => {}
            (Ok(()), Some((at, _))) => {
                panic!("{ctx}: {step:?} succeeded after the store failed at {at}")
            }
            (Err(e), None) => {
                failed_at = Some((format!("{step:?}: {e}"), counts(&io)));
            }
            (Err(e), Some(_)) => {
                assert!(
                    matches!(e, Error::Poisoned { .. }),
                    "{ctx}: {step:?} after the failure: expected Poisoned, got {e}"
                );
            }
        }
    }
    let fired = io.count(op) - base >= n;
    if let Some((at, frozen)) = &failed_at {
        assert!(fired, "{ctx}: {at} although the fault never fired");
        // Dropping the poisoned store must not sync either.
        drop(db.take());
        assert_eq!(
            &counts(&io),
            frozen,
            "{ctx}: I/O ({FROZEN:?}) after the failure at {at}: an fsync or write was retried"
        );
    }

    // A power cut now: only what was synced survives.
    io.power_loss(&dir, &image, UnsyncedTail::Drop).unwrap();
    drop(db);
    check_reopen(
        &image,
        &model,
        durable,
        attempted,
        &format!("{ctx}, power cut"),
    );
    // The real directory (what the OS has) reopens too, and takes new calls.
    let got = check_reopen(
        &dir,
        &model,
        durable,
        attempted,
        &format!("{ctx}, real dir"),
    );
    let db = Db::open(&dir, options()).unwrap();
    let mut m = Model::of_prefix(SEED, got);
    let c = call(SEED, got);
    let out = db.apply(&message(&c)).expect("call after reopen");
    check_outcome(&out, m.apply(&c), &format!("{ctx}: call after reopen"));
    assert_db_matches(&db, &m, &format!("{ctx}: after a new call"));
    db.close().unwrap();
    RunResult {
        fired,
        errored: failed_at.is_some(),
    }
}

/// Reopen `dir` with real I/O; the store must be the model of a prefix of at least `durable`
/// and at most `attempted` calls. Returns the prefix length.
fn check_reopen(dir: &Path, model: &Model, durable: u64, attempted: u64, ctx: &str) -> u64 {
    let db = Db::open(dir, options()).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
    let mut n = prefix_len(&db);
    // A trailing retry changes nothing: the longer prefix has the same model.
    while n < durable && call(SEED, n).retry_of.is_some() {
        n += 1;
    }
    assert!(
        n >= durable,
        "{ctx}: {durable} calls were acknowledged durable, only {n} survived"
    );
    assert!(
        n <= attempted,
        "{ctx}: {n} calls present, only {attempted} attempted"
    );
    let m = if n <= model.applied {
        Model::of_prefix(SEED, n)
    } else {
        // The failing call itself may have reached the log.
        let mut m = model.clone();
        m.advance_to(n);
        m
    };
    assert_db_matches(&db, &m, ctx);
    db.close().unwrap();
    n
}

/// Run every n for one fault until it stops firing; returns (runs, runs that errored).
pub fn every_n(op: Op, kind: FaultKind, permanent: bool) -> (u64, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let mut errored = 0;
    let mut n = 1;
    loop {
        let r = run(tmp.path(), op, n, kind, permanent);
        if !r.fired {
            break;
        }
        errored += r.errored as u64;
        n += 1;
        assert!(n < 2000, "{op:?}: the fault kept firing");
    }
    eprintln!(
        "{op:?} {kind:?}{}: {} fault points, {errored} failed a call",
        if permanent { " permanent" } else { "" },
        n - 1
    );
    (n - 1, errored)
}

/// Four threads apply calls with `durability` (`SyncEach` or `GroupCommit`: they wait on each
/// other's syncs, and with group commit on the background thread's too) while the n-th `op`
/// fails once, for n in 1..=12, five times each. Every call after a thread's first
/// failure must err with `Poisoned`, and no `op` may be attempted after the failed one (not on
/// drop either). Returns the rounds where one was: `(round, n, ops attempted)`.
pub fn concurrent_waiters(op: Op, durability: Durability) -> Vec<(u64, u64, u64)> {
    let tmp = tempfile::tempdir().unwrap();
    let mut retried = Vec::new();
    for round in 0..60u64 {
        let dir = tmp.path().join(format!("db{round}"));
        let io = FaultyIo::new();
        let mut o = options();
        o.durability = durability;
        o.segment_size = 1 << 20;
        let so = StoreOptions {
            segment_size: o.segment_size,
            durability: o.durability,
            repair: false,
            create: true,
            io: Arc::new(io.clone()),
        };
        let db = Db::open_with(&dir, o, so).unwrap();
        let base = io.count(op);
        let n = 1 + round % 12;
        io.fail(op, n, FaultKind::Error, false);
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
                        match db.apply(&profiledb::Message::from_json(&m).unwrap()) {
                            Ok(_) => assert!(!failed, "a call succeeded after a failed one"),
                            Err(Error::Poisoned { .. }) => failed = true,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    assert!(failed, "the fault never reached thread {t}");
                });
            }
        });
        let ops = io.count(op) - base;
        drop(db);
        assert_eq!(io.count(op) - base, ops, "round {round}: {op:?} on drop");
        if ops != n {
            retried.push((round, n, ops));
        }
    }
    retried
}
