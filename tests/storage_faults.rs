//! I/O failures poison the store; compaction is crash-safe at every step and really removes
//! deleted bytes; the hint file gives the same state as a full scan; durability modes.

#[path = "support/storage.rs"]
mod storage_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use profiledb::storage::Entry;
use profiledb::storage::io::{FaultKind, FaultyIo, Op, RealIo, UnsyncedTail};
use profiledb::{Durability, Error};
use storage_support::*;

fn faulty(io: &Arc<FaultyIo>, seg: u64) -> profiledb::storage::StoreOptions {
    options(Arc::new(io.clone()), seg, Durability::Buffered)
}

#[test]
fn a_failed_fsync_poisons_the_store_until_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let io = FaultyIo::new();
    let (store, mut r) = open(&dir, faulty(&io, 1 << 20)).unwrap();
    put(&store, &mut r, 1, b"synced");
    store.sync().unwrap();
    put(&store, &mut r, 2, b"unsynced");
    io.fail(Op::Sync, 1, FaultKind::Error, false);
    let err = store.sync().unwrap_err();
    assert!(
        matches!(err, Error::Poisoned { ref cause } if cause.contains("fdatasync")),
        "{err}"
    );
    // Every later call fails too, although the fault was one-shot (an fsync is never retried).
    assert!(matches!(store.sync(), Err(Error::Poisoned { .. })));
    assert!(matches!(
        store.append(&[Entry {
            kind: PUT,
            id: 3,
            data: b"x"
        }]),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        store.wait_durable(1, Durability::SyncEach),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(store.hint_position(), Err(Error::Poisoned { .. })));
    assert!(matches!(store.close(), Err(Error::Poisoned { .. })));
    let (store, r) = open(&dir, faulty(&io, 1 << 20)).unwrap();
    let got = contents(&store, &r);
    assert_eq!(got.get(&1).map(Vec::as_slice), Some(&b"synced"[..]));
    store.close().unwrap();
}

#[test]
fn enospc_on_write_poisons_and_short_writes_are_completed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let io = FaultyIo::new();
    let (store, mut r) = open(&dir, faulty(&io, 1 << 20)).unwrap();
    io.fail(Op::Write, 1, FaultKind::ShortWrite, true);
    for i in 0..50 {
        put(&store, &mut r, i, format!("value {i}").as_bytes());
    }
    store.sync().unwrap();
    io.clear_faults();
    let before = contents(&store, &r);
    store.close().unwrap();
    let (store, mut r) = open(&dir, faulty(&io, 1 << 20)).unwrap();
    assert_eq!(contents(&store, &r), before);
    put(&store, &mut r, 99, b"no room");
    io.fail(Op::Write, 1, FaultKind::NoSpace, false);
    let err = store.sync().unwrap_err();
    assert!(
        err.to_string().contains("No space") || err.to_string().contains("28"),
        "{err}"
    );
    assert!(matches!(store.sync(), Err(Error::Poisoned { .. })));
    drop(store);
    let (store, r) = open(&dir, faulty(&io, 1 << 20)).unwrap();
    assert_eq!(contents(&store, &r).len(), 50);
    store.close().unwrap();
}

#[test]
fn a_failed_rotation_poisons_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let io = FaultyIo::new();
    let (store, mut r) = open(&dir, faulty(&io, 1024)).unwrap();
    io.fail(Op::Create, 1, FaultKind::Error, false);
    let mut failed = false;
    for i in 0..40u64 {
        match store.append(&[Entry {
            kind: PUT,
            id: i,
            data: &[7u8; 100],
        }]) {
            Ok(a) => r.put(i, a.locations[0]),
            Err(Error::Poisoned { .. }) => {
                failed = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(failed, "the segment creation fault never fired");
    assert!(matches!(store.sync(), Err(Error::Poisoned { .. })));
}

/// Puts 0..40 (some deleted), compacts with a permanent fault on the `n`-th operation of kind
/// `op`, then cuts the power. Returns whether the fault fired before the compaction finished.
fn compaction_with_crash(tmp: &Path, op: Op, n: u64) -> bool {
    let dir = tmp.join(format!("{op:?}-{n}"));
    let io = FaultyIo::new();
    let (store, mut r) = open(&dir, faulty(&io, 2048)).unwrap();
    for i in 0..40u64 {
        put(
            &store,
            &mut r,
            i % 25,
            format!("value {i} {}", "z".repeat(50)).as_bytes(),
        );
    }
    for i in 0..5 {
        delete(&store, &mut r, i * 3);
    }
    store.sync().unwrap();
    let expected = contents(&store, &r);
    io.fail(op, n, FaultKind::Error, true);
    let done = compact(&store, &mut r);
    let fired = done.is_err();
    if fired {
        assert!(matches!(done, Err(Error::Poisoned { .. })), "{done:?}");
    }
    let image = tmp.join(format!("{op:?}-{n}-image"));
    io.power_loss(&dir, &image, UnsyncedTail::Drop).unwrap();
    drop(store);
    let (store, r) = open(
        &image,
        options(Arc::new(RealIo), 2048, Durability::Buffered),
    )
    .unwrap_or_else(|e| panic!("{op:?} #{n}: reopen failed: {e}"));
    assert_eq!(contents(&store, &r), expected, "{op:?} #{n}");
    assert!(store.check().unwrap().is_empty());
    let names: Vec<String> = std::fs::read_dir(&image)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(".tmp") || n == "COMPACT"),
        "{names:?}"
    );
    store.close().unwrap();
    fired
}

#[test]
fn compaction_is_crash_safe_at_every_step() {
    let tmp = tempfile::tempdir().unwrap();
    for op in [
        Op::Create,
        Op::Write,
        Op::Sync,
        Op::SyncDir,
        Op::Rename,
        Op::Remove,
    ] {
        let mut n = 1;
        while compaction_with_crash(tmp.path(), op, n) {
            n += 1;
            assert!(n < 200, "{op:?}: compaction never finished");
        }
        assert!(
            n > 1 || op == Op::Write,
            "{op:?}: no fault point hit at all"
        );
    }
}

fn dir_contains(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            hits.push(e.file_name().into_string().unwrap());
        }
    }
    hits
}

#[test]
fn compaction_physically_removes_deleted_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let (store, mut r) = open(&dir, options(Arc::new(RealIo), 4096, Durability::Buffered)).unwrap();
    let marker = b"SECRET-MARKER-4f1c9e";
    for i in 0..100u64 {
        let mut v = format!("live {i} ").into_bytes();
        if i % 10 == 0 {
            v.extend_from_slice(marker);
        }
        put(&store, &mut r, i, &v);
        // Overwritten versions must go too.
        if i % 10 == 5 {
            let mut old = marker.to_vec();
            old.extend_from_slice(b" old version");
            put(&store, &mut r, 1000 + i, &old);
            put(&store, &mut r, 1000 + i, b"new version");
        }
    }
    for i in (0..100u64).step_by(10) {
        delete(&store, &mut r, i);
    }
    store.sync().unwrap();
    assert!(!dir_contains(&dir, marker).is_empty());
    let expected = contents(&store, &r);
    let before = store.stats().disk_bytes;
    compact(&store, &mut r).unwrap();
    assert_eq!(dir_contains(&dir, marker), Vec::<String>::new());
    assert_eq!(contents(&store, &r), expected);
    assert!(store.stats().disk_bytes < before);
    assert_eq!(store.stats().compactions, 1);
    store.close().unwrap();
    let (store, r) = open(&dir, options(Arc::new(RealIo), 4096, Durability::Buffered)).unwrap();
    assert_eq!(contents(&store, &r), expected);
    store.close().unwrap();
}

#[test]
fn reopen_with_and_without_the_hint_gives_the_same_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let opts = || options(Arc::new(RealIo), 2048, Durability::Buffered);
    let (store, mut r) = open(&dir, opts()).unwrap();
    for i in 0..200u64 {
        put(&store, &mut r, i % 37, format!("first {i}").as_bytes());
    }
    compact(&store, &mut r).unwrap();
    for i in 0..20u64 {
        delete(&store, &mut r, i);
    }
    hint(&store, &r).unwrap();
    // Frames after the hint: in the hint's active segment and in new ones.
    for i in 0..150u64 {
        put(&store, &mut r, 10 + i % 40, format!("after {i}").as_bytes());
    }
    delete(&store, &mut r, 45);
    let expected = contents(&store, &r);
    let expected_locs = r.map.clone();
    store.close().unwrap();

    let hint_len = std::fs::metadata(dir.join("HINT")).unwrap().len();
    let (store, r) = open(&dir, opts()).unwrap();
    let report = store.stats().recovery;
    assert!(report.used_hint);
    assert_eq!(report.hint_bytes, hint_len, "the hint's length, reported");
    assert_eq!(r.snapshots, 1);
    assert_eq!(report.frames_replayed, 151);
    assert_eq!(contents(&store, &r), expected);
    assert_eq!(r.map, expected_locs);
    store.close().unwrap();

    // A snapshot the upper layer refuses: reset and full replay.
    let mut refusing = MapReplay {
        refuse_snapshot: true,
        ..MapReplay::default()
    };
    let store = profiledb::storage::Store::open(&dir, opts(), &mut refusing).unwrap();
    assert!(!store.stats().recovery.used_hint);
    assert_eq!(refusing.map, expected_locs);
    store.close().unwrap();

    // A damaged hint is ignored.
    let hint_path = dir.join("HINT");
    let mut h = std::fs::read(&hint_path).unwrap();
    let mid = h.len() / 2;
    h[mid] ^= 1;
    std::fs::write(&hint_path, &h).unwrap();
    let (store, r) = open(&dir, opts()).unwrap();
    assert!(!store.stats().recovery.used_hint);
    assert_eq!(r.map, expected_locs);
    store.close().unwrap();

    // No hint at all.
    std::fs::remove_file(&hint_path).unwrap();
    let (store, r) = open(&dir, opts()).unwrap();
    assert!(!store.stats().recovery.used_hint);
    assert_eq!(contents(&store, &r), expected);
    assert_eq!(r.map, expected_locs);
    store.close().unwrap();
}

#[test]
fn a_hint_from_before_a_compaction_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let opts = || options(Arc::new(RealIo), 1024, Durability::Buffered);
    let (store, mut r) = open(&dir, opts()).unwrap();
    for i in 0..60u64 {
        put(&store, &mut r, i % 7, format!("v{i}").as_bytes());
    }
    hint(&store, &r).unwrap();
    compact(&store, &mut r).unwrap();
    put(&store, &mut r, 3, b"last");
    let expected = contents(&store, &r);
    store.close().unwrap();
    let (store, r) = open(&dir, opts()).unwrap();
    assert!(!store.stats().recovery.used_hint);
    assert_eq!(contents(&store, &r), expected);
    store.close().unwrap();
}

#[test]
fn concurrent_durable_writers_all_return_and_survive() {
    for durability in [
        Durability::SyncEach,
        Durability::GroupCommit {
            max_delay: Duration::from_millis(2),
            max_batch: 4,
        },
        Durability::group_commit(),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        let io = FaultyIo::new();
        let (store, _) = open(&dir, options(Arc::new(io.clone()), 4096, durability)).unwrap();
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..25u64 {
                        let id = t * 1000 + i;
                        let a = store
                            .append(&[Entry {
                                kind: PUT,
                                id,
                                data: &id.to_le_bytes(),
                            }])
                            .unwrap();
                        store.wait_durable(a.seq, store.durability()).unwrap();
                    }
                });
            }
        });
        // Everything acknowledged was synced: a power cut right now loses nothing.
        let image = tmp.path().join("image");
        io.power_loss(&dir, &image, UnsyncedTail::Drop).unwrap();
        drop(store);
        let (store, r) = open(
            &image,
            options(Arc::new(RealIo), 4096, Durability::Buffered),
        )
        .unwrap();
        assert_eq!(contents(&store, &r).len(), 200, "{durability:?}");
        assert!(store.stats().recovery.frames_replayed == 200);
        store.close().unwrap();
    }
}

#[test]
fn buffered_data_is_synced_by_the_group_commit_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let io = FaultyIo::new();
    let d = Durability::GroupCommit {
        max_delay: Duration::from_millis(1),
        max_batch: 1000,
    };
    let (store, mut r) = open(&dir, options(Arc::new(io.clone()), 1 << 20, d)).unwrap();
    let syncs = io.count(Op::Sync);
    put(&store, &mut r, 1, b"x");
    // No caller waits: the background thread syncs on its own (poll, no timing assertion).
    let mut polls = 0;
    while io.count(Op::Sync) == syncs {
        std::thread::sleep(Duration::from_millis(1));
        polls += 1;
        assert!(polls < 30_000, "the group-commit thread never synced");
    }
    store.close().unwrap();
}
