//! Issue 6, `crash_kill9`: a child process applies identify calls through `Db` (merges by user
//! id / email / both, `$add` counters, retried `messageId`s), with compactions and hint writes
//! mixed in, and prints each acknowledgement; the parent kills it with SIGKILL at a random
//! moment (sometimes while it is still opening the store), reopens, and checks:
//!
//! - the store holds exactly the model of a prefix of the calls (no partial call, no hole),
//!   compared profile by profile through `scan` and `get` by user id, email and key;
//! - the prefix covers every acknowledged call (`SyncEach`, `GroupCommit`; `Buffered`
//!   promises nothing, its state must still be a prefix);
//! - calls written but not acknowledged are in doubt; once seen after a restart they never
//!   vanish later (the prefix never shrinks from round to round);
//! - the prefix never goes beyond what the children started.
//!
//! The children are this test binary, re-executed on an `#[ignore]`d test that does nothing
//! unless its environment variable is set. Each child continues the stream from the prefix the
//! parent found. A fourth mode is `SyncEach` with zeros written ahead of the log's end
//! (`Options::preallocate_bytes`): a kill leaves them after the last frame, and the reopen
//! cuts them off. 400 rounds in all (100 per mode) by default; set
//! `PROFILEDB_CRASH_ROUNDS` for more (the total, split between the modes), and
//! `PROFILEDB_CRASH_SEED` to replay a run (the seed is printed).

#[path = "support/identify_model/mod.rs"]
mod identify_model;

use profiledb::rng::SplitMix64;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use identify_model::*;
use profiledb::{Db, Durability, Options};

const DIR: &str = "PROFILEDB_TEST_KILL9_DIR";
const START: &str = "PROFILEDB_TEST_KILL9_START";
const MODE: &str = "PROFILEDB_TEST_KILL9_MODE";
const SEED: &str = "PROFILEDB_TEST_KILL9_SEED";
const MARK: &str = "@@kill9@@ ";

/// Held while this process has a store open and while it spawns a child. The three tests run
/// in parallel threads: a child forked by one of them while another has its store open would
/// inherit that store's `LOCK` descriptor until it execs, and the other test's next child
/// could then find its directory locked.
static NO_FORK_WHILE_OPEN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn no_fork_while_open() -> std::sync::MutexGuard<'static, ()> {
    NO_FORK_WHILE_OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

fn durability(mode: &str) -> Durability {
    match mode {
        "buffered" => Durability::Buffered,
        "group" => Durability::GroupCommit {
            max_delay: Duration::from_millis(2),
            max_batch: 16,
        },
        "sync" | "sync-prealloc" => Durability::SyncEach,
        other => panic!("unknown mode {other}"),
    }
}

/// Zeros the "sync-prealloc" mode keeps written ahead of the log's end
/// (`Options::preallocate_bytes`): a kill leaves them after the last frame.
const PREALLOCATE: u64 = 8 << 10;

fn options_for(mode: &str, d: Durability) -> Options {
    Options {
        preallocate_bytes: if mode == "sync-prealloc" {
            PREALLOCATE
        } else {
            0
        },
        ..options(d)
    }
}

fn options(d: Durability) -> Options {
    Options {
        durability: d,
        // Small segments: rotations every hundred calls or so.
        segment_size: 32 << 10,
        compaction_ratio: None,
        // Retries re-send one of the last 200 calls; a small window keeps the live messageId
        // notes (which compaction copies) few.
        dedupe_window: 1000,
        ..Options::default()
    }
}

/// One line to the parent, after a marker: the test harness may have started the line.
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    out.write_all(MARK.as_bytes()).unwrap();
    out.write_fmt(line).unwrap();
    out.write_all(b"\n").unwrap();
    out.flush().unwrap();
}

/// Child: continue the stream from `START`, printing `BEGIN i` before and `ACK i` after each
/// call, until killed.
#[test]
#[ignore = "child process of the kill_9_* tests"]
fn kill9_child() {
    let Some(dir) = std::env::var_os(DIR) else {
        return;
    };
    let start: u64 = std::env::var(START).unwrap().parse().unwrap();
    let seed: u64 = std::env::var(SEED).unwrap().parse().unwrap();
    let mode = std::env::var(MODE).unwrap();
    let db = Db::open(Path::new(&dir), options_for(&mode, durability(&mode))).unwrap();
    say(format_args!("READY"));
    for i in start.. {
        say(format_args!("BEGIN {i}"));
        db.apply(&message(&call(seed, i))).unwrap();
        say(format_args!("ACK {i}"));
        // Compactions and hints at moments the kill can hit.
        if i % 53 == 17 {
            db.compact().unwrap();
            say(format_args!("COMPACTED"));
        }
        if i % 41 == 5 {
            db.checkpoint().unwrap();
        }
    }
}

#[derive(Default)]
struct Heard {
    ready: bool,
    begun: Option<u64>,
    acked: Option<u64>,
    compactions: u64,
}

fn rounds_per_mode() -> u64 {
    std::env::var("PROFILEDB_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(100, |total| total.div_ceil(4))
}

fn kill_9_rounds(mode: &str) {
    let rounds = rounds_per_mode();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let seed = std::env::var("PROFILEDB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill_9 {mode}: seed {seed}, {rounds} rounds");
    let mut rng = SplitMix64(seed);
    let durable = durability(mode).waits();
    // What the last reopen showed: the model of that prefix (only ever moves forward).
    let mut model = Model::new(seed);
    let mut total_acked = 0u64;
    let mut total_compactions = 0u64;
    let mut in_doubt_kept = 0u64;
    let mut zero_tails = 0u64;
    for round in 0..rounds {
        let ctx = format!("{mode} seed {seed} round {round}");
        let start = model.applied;
        let spawning = no_fork_while_open();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill9_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR, &dir)
            .env(START, start.to_string())
            .env(MODE, mode)
            .env(SEED, seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(spawning);
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut heard = Heard::default();
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
                        heard.ready = true;
                        let _ = ready_tx.send(());
                    } else if l == "COMPACTED" {
                        heard.compactions += 1;
                    } else if let Some(i) = l.strip_prefix("BEGIN ") {
                        heard.begun = Some(i.parse().unwrap());
                    } else if let Some(i) = l.strip_prefix("ACK ") {
                        heard.acked = Some(i.parse().unwrap());
                    }
                }
                line.clear();
            }
            heard
        });
        // One round in five kills the child while it may still be opening (recovering) the
        // store; the others let it run 0-40 ms after it is ready.
        let r = rng.next_u64();
        if r.is_multiple_of(5) {
            std::thread::sleep(Duration::from_millis(r % 15));
        } else {
            // Wait for READY (or the child's death, which closes the channel).
            let _ = ready_rx.recv_timeout(Duration::from_secs(60));
            std::thread::sleep(Duration::from_micros((r >> 8) % 40_000));
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let heard = reader.join().unwrap();
        let errors = errors.join().unwrap();
        {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(9),
                "{ctx}: the child died before the kill ({status}):\n{errors}"
            );
        }
        total_compactions += heard.compactions;
        if zeros_at_the_end(&dir) {
            zero_tails += 1;
        }

        let open = no_fork_while_open();
        let db = Db::open(&dir, options_for(mode, Durability::Buffered))
            .unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
        let n = prefix_len(&db);
        // Never shrinks: what an earlier reopen showed stays.
        assert!(
            n >= model.applied,
            "{ctx}: the store went back from {} calls to {n}",
            model.applied
        );
        // Never beyond what was started.
        let limit = heard.begun.map_or(start, |b| b + 1);
        assert!(n <= limit, "{ctx}: {n} calls present, only {limit} started");
        // Every durably acknowledged call is there (a trailing retry changes nothing, so
        // `prefix_len` may stop before it; the model of the longer prefix is the same).
        if durable && let Some(a) = heard.acked {
            let mut need = a + 1;
            while need > n && call(seed, need - 1).retry_of.is_some() {
                need -= 1;
            }
            assert!(
                n >= need,
                "{ctx}: call {a} was acknowledged but only {n} calls survived"
            );
            total_acked += a + 1 - start;
        }
        if let Some(a) = heard.acked
            && n > a + 1
        {
            in_doubt_kept += 1;
        }
        model.advance_to(n);
        assert_db_matches(&db, &model, &ctx);
        db.close().unwrap();
        drop(open);
    }
    eprintln!(
        "kill_9 {mode}: {} calls in the store after {rounds} kills; {total_acked} durable \
         acknowledgements checked; {total_compactions} compactions acknowledged; \
         {in_doubt_kept} rounds kept an unacknowledged call",
        model.applied
    );
    assert!(
        model.applied > 0,
        "{mode}: the children never applied anything"
    );
    // The preallocating children were killed with zeros after their last frame (then cut
    // off by the reopen, which the checks above followed); the others never leave any.
    if mode == "sync-prealloc" {
        assert!(zero_tails > 0, "{mode}: no kill left a tail of zeros");
    } else {
        assert_eq!(
            zero_tails, 0,
            "{mode}: a tail of zeros without preallocation"
        );
    }
}

/// Whether a segment of `dir` ends with a preallocated block of zeros (the active log
/// segment; after a compaction its id is not the highest).
fn zeros_at_the_end(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let tail = PREALLOCATE as usize / 2;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .any(|path| {
            let bytes = std::fs::read(&path).unwrap_or_default();
            bytes.len() > tail && bytes[bytes.len() - tail..].iter().all(|b| *b == 0)
        })
}

#[test]
fn kill_9_buffered() {
    kill_9_rounds("buffered");
}

#[test]
fn kill_9_group_commit() {
    kill_9_rounds("group");
}

#[test]
fn kill_9_sync_each() {
    kill_9_rounds("sync");
}

/// As `kill_9_sync_each`, the store keeping zeros written ahead of its log's end.
#[test]
fn kill_9_sync_each_preallocating() {
    kill_9_rounds("sync-prealloc");
}
