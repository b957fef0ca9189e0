//! The writer queue (`src/db/writers.rs`): calls from many threads are applied in groups by
//! one of them and synced once per group. Each caller must still get its own call's outcome
//! (or refusal), and an acknowledgement must still mean durable:
//!
//! - `many_threads_each_get_their_own_outcomes_and_refusals`: 24 threads, `SyncEach`, each
//!   on its own people, with a refused call every few calls; every outcome and refusal goes
//!   to the thread that made the call, and the store ends as the calls say;
//! - `acknowledged_calls_from_many_threads_survive_kill_9`: a child process applies calls from
//!   16 threads (`SyncEach`) and prints each acknowledgement; the parent kills it with SIGKILL
//!   at a random moment, reopens, and checks that each thread's calls are there as a prefix
//!   (no call of a thread without the ones before it) that covers every acknowledged call.
//!   12 rounds by default; `PROFILEDB_CRASH_ROUNDS` sets more (a third of the total, as in
//!   `crash_kill9`);
//! - `acknowledged_calls_of_many_waiting_threads_survive_a_power_cut`: 12 threads, half
//!   through the queue (`SyncEach` or group commit), half buffered then `Db::sync`, on a `FaultyIo` that stops
//!   the machine at an operation or fails an fdatasync for good; every call a thread was told
//!   is durable is in the power-cut image (32 rounds; it caught a waiter answered before the
//!   sync in flight had ended in three runs out of four).

#[path = "support/common.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use profiledb::rng::SplitMix64;
use profiledb::{Db, Durability, Message, Options, Status};
use serde_json::json;

const USERS_PER_THREAD: u64 = 5;

/// Thread `t`'s call `i`: one of its five people, a counter and the call's number.
fn thread_call(t: u64, i: u64) -> Message {
    Message::from_json(&json!({
        "type": "identify",
        "userId": format!("t{t}-u{}", i % USERS_PER_THREAD),
        "messageId": format!("t{t}-{i}"),
        "$add": {"n": 1},
        "traits": {"last": i, "plan": format!("plan-{}", i % 3)},
    }))
    .unwrap()
}

#[test]
fn many_threads_each_get_their_own_outcomes_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Db::open(
            dir.path(),
            Options {
                durability: Durability::SyncEach,
                ..options()
            },
        )
        .unwrap(),
    );
    const THREADS: u64 = 24;
    const CALLS: u64 = 60;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..CALLS {
                    let out = db.apply(&thread_call(t, i)).unwrap();
                    let want = if i < USERS_PER_THREAD {
                        Status::Created
                    } else {
                        Status::Updated
                    };
                    assert_eq!(out.status, want, "thread {t} call {i}");
                    assert_eq!(
                        db.get(&profiledb::Selector::Key(out.key))
                            .unwrap()
                            .and_then(|p| p.user_id),
                        Some(format!("t{t}-u{}", i % USERS_PER_THREAD)),
                        "thread {t} call {i}: the outcome names another call's profile"
                    );
                    if i % 7 == 6 {
                        // Refused by the rules (two identified profiles are never merged by an
                        // alias): the refusal is this thread's, and its next call goes on.
                        let alias = Message::from_json(&json!({
                            "type": "alias",
                            "userId": format!("t{t}-u0"),
                            "previousId": format!("t{t}-u1"),
                        }))
                        .unwrap();
                        let e = db.apply(&alias).unwrap_err();
                        assert!(e.is_refusal(), "thread {t} call {i}: {e}");
                    }
                    if i % 11 == 10 {
                        // A retry: the duplicate of this thread's call, not another's.
                        let again = db.apply(&thread_call(t, i)).unwrap();
                        assert_eq!(again.status, Status::Duplicate, "thread {t} call {i}");
                        assert_eq!(again.key, out.key, "thread {t} call {i}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..THREADS {
        for u in 0..USERS_PER_THREAD {
            let p = by_user(&db, &format!("t{t}-u{u}")).unwrap();
            let calls: Vec<u64> = (0..CALLS).filter(|i| i % USERS_PER_THREAD == u).collect();
            assert_eq!(prop(&p, "n"), Some(json!(calls.len())), "t{t}-u{u}");
            assert_eq!(prop(&p, "last"), Some(json!(calls.last())), "t{t}-u{u}");
        }
    }
    assert_eq!(db.stats().profiles, THREADS * USERS_PER_THREAD);
    assert_eq!(db.check().unwrap(), Vec::<String>::new());
}

const DIR: &str = "PROFILEDB_TEST_QUEUE_KILL9_DIR";
const MARK: &str = "@@queue@@ ";
const KILL_THREADS: u64 = 16;

/// Child: `KILL_THREADS` threads apply their calls (`SyncEach`) until killed, each printing
/// `ACK t i` after its call `i` is acknowledged.
#[test]
#[ignore = "child process of acknowledged_calls_from_many_threads_survive_kill_9"]
fn queue_kill9_child() {
    let Some(dir) = std::env::var_os(DIR) else {
        return;
    };
    let db = Arc::new(
        Db::open(
            Path::new(&dir),
            Options {
                durability: Durability::SyncEach,
                segment_size: 64 << 10,
                ..options()
            },
        )
        .unwrap(),
    );
    say(format_args!("READY"));
    let threads: Vec<_> = (0..KILL_THREADS)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0.. {
                    db.apply(&thread_call(t, i)).unwrap();
                    say(format_args!("ACK {t} {i}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    out.write_all(MARK.as_bytes()).unwrap();
    out.write_fmt(line).unwrap();
    out.write_all(b"\n").unwrap();
    out.flush().unwrap();
}

/// How many of thread `t`'s calls the store holds, checking that they are a prefix: each of
/// its people holds the counter and the last call number of exactly the first `n` calls.
fn thread_prefix(db: &Db, t: u64, ctx: &str) -> u64 {
    let mut counts = [0u64; USERS_PER_THREAD as usize];
    for (u, count) in counts.iter_mut().enumerate() {
        if let Some(p) = by_user(db, &format!("t{t}-u{u}")) {
            *count = prop(&p, "n").and_then(|n| n.as_u64()).unwrap();
        }
    }
    let n: u64 = counts.iter().sum();
    for (u, &count) in counts.iter().enumerate() {
        let calls: Vec<u64> = (0..n)
            .filter(|i| i % USERS_PER_THREAD == u as u64)
            .collect();
        assert_eq!(
            count,
            calls.len() as u64,
            "{ctx}: thread {t}'s calls in the store are not a prefix (person {u})"
        );
        if let Some(last) = calls.last() {
            let p = by_user(db, &format!("t{t}-u{u}")).unwrap();
            assert_eq!(prop(&p, "last"), Some(json!(last)), "{ctx}: t{t}-u{u}");
        }
    }
    n
}

#[test]
fn acknowledged_calls_from_many_threads_survive_kill_9() {
    let rounds = std::env::var("PROFILEDB_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(12, |total| total.div_ceil(3));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("writer queue kill_9: seed {seed}, {rounds} rounds");
    let mut rng = SplitMix64(seed);
    let (mut acked_total, mut in_doubt) = (0u64, 0u64);
    for round in 0..rounds {
        let ctx = format!("seed {seed} round {round}");
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "queue_kill9_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked = vec![None::<u64>; KILL_THREADS as usize];
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                // A line cut by the kill is not an acknowledgement.
                if let Some(l) = line
                    .strip_suffix('\n')
                    .and_then(|l| l.rsplit_once(MARK))
                    .map(|(_, l)| l)
                {
                    if l == "READY" {
                        let _ = ready_tx.send(());
                    } else if let Some(rest) = l.strip_prefix("ACK ") {
                        let (t, i) = rest.split_once(' ').unwrap();
                        let (t, i): (usize, u64) = (t.parse().unwrap(), i.parse().unwrap());
                        acked[t] = acked[t].max(Some(i));
                    }
                }
                line.clear();
            }
            acked
        });
        let _ = ready_rx.recv_timeout(Duration::from_secs(60));
        std::thread::sleep(Duration::from_micros(20_000 + rng.next_u64() % 200_000));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let acked = reader.join().unwrap();
        let errors = errors.join().unwrap();
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "{ctx}: the child died before the kill ({status}):\n{errors}"
            );
        }
        let db = Db::open(&dir, options()).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
        for t in 0..KILL_THREADS {
            let n = thread_prefix(&db, t, &ctx);
            if let Some(a) = acked[t as usize] {
                assert!(
                    n > a,
                    "{ctx}: thread {t}'s call {a} was acknowledged, only {n} of its calls survived"
                );
                acked_total += a + 1;
                in_doubt += n - (a + 1);
            }
        }
        assert_eq!(db.check().unwrap(), Vec::<String>::new(), "{ctx}");
        db.close().unwrap();
    }
    eprintln!(
        "writer queue kill_9: {acked_total} acknowledged calls checked over {rounds} rounds; \
         {in_doubt} calls written but not acknowledged were kept"
    );
    assert!(acked_total > 0, "the children acknowledged nothing");
}

/// Many callers waiting for syncs at once (leaders of groups in the log's leader/follower
/// wait, queued calls behind them): a power cut at an operation chosen per round (every
/// later operation fails) keeps every call any thread was told is durable. The log's waiters
/// sleep on two condition variables, one for the sync in flight and one for the next
/// (`storage/log.rs`, `SyncState`): a waiter filed on the wrong one would be answered before
/// its frame is synced, or never (the round would hang).
#[test]
fn acknowledged_calls_of_many_waiting_threads_survive_a_power_cut() {
    use profiledb::storage::io::{FaultKind, FaultyIo, Op, UnsyncedTail};
    use std::sync::atomic::{AtomicU64, Ordering};

    const THREADS: usize = 12;
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = SplitMix64(59);
    for round in 0..32u64 {
        let dir = tmp.path().join(format!("db{round}"));
        let io = FaultyIo::new();
        // Half the rounds with group commit: its background thread syncs too, every
        // millisecond or after three frames, and takes part in the waits.
        let durability = if round % 4 < 2 {
            Durability::SyncEach
        } else {
            Durability::GroupCommit {
                max_delay: Duration::from_millis(1),
                max_batch: 3,
            }
        };
        let o = Options {
            durability,
            ..options()
        };
        let db = open_faulty_as(&dir, &io, o).unwrap();
        // Even rounds: the machine stops at one of the threads' first few hundred writes and
        // syncs. Odd rounds: one of their first fdatasyncs fails (nothing it was to cover is
        // durable), and every later one.
        if round % 2 == 0 {
            io.crash_at(io.ops() + 40 + rng.below(400));
        } else {
            io.fail(Op::Sync, 5 + rng.below(40), FaultKind::Error, true);
        }
        let acked: Vec<AtomicU64> = (0..THREADS).map(|_| AtomicU64::new(0)).collect();
        std::thread::scope(|s| {
            for (t, acked) in acked.iter().enumerate() {
                let db = &db;
                s.spawn(move || {
                    for i in 0..10_000u64 {
                        // Half the threads through the writer queue (its leaders wait in the
                        // log), half buffered and then `Db::sync` (each waits in the log).
                        let call = thread_call(t as u64, i);
                        let done = if t % 2 == 0 {
                            db.apply(&call).map(drop)
                        } else {
                            db.apply_with(&call, Durability::Buffered)
                                .and_then(|_| db.sync())
                        };
                        if done.is_err() {
                            return;
                        }
                        acked.store(i + 1, Ordering::Release);
                    }
                    panic!("round {round}: the crash point was never reached");
                });
            }
        });
        drop(db);
        let image = tmp.path().join(format!("image{round}"));
        io.power_loss(&dir, &image, UnsyncedTail::Drop).unwrap();
        let db = Db::open(&image, options()).unwrap();
        for (t, acked) in acked.iter().enumerate() {
            let acked = acked.load(Ordering::Acquire);
            for u in 0..USERS_PER_THREAD.min(acked) {
                let calls = (0..acked).filter(|i| i % USERS_PER_THREAD == u).count() as u64;
                let p = by_user(&db, &format!("t{t}-u{u}"))
                    .unwrap_or_else(|| panic!("round {round}: thread {t}'s user {u} lost"));
                let n = prop(&p, "n").and_then(|n| n.as_u64()).unwrap_or(0);
                assert!(
                    n >= calls,
                    "round {round}: thread {t}'s user {u} holds {n} calls, {calls} acknowledged"
                );
            }
        }
    }
}
