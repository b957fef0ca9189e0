//! Zeros written ahead of the log's end (`Options::preallocate_bytes`, docs/recovery.md
//! "Preallocated tail"): the active segment's file holds them while the store is open, a
//! rotation seals a segment without them, a clean close cuts them off, and a store reopened
//! from the hint or from the log alone holds exactly what a store without them holds. The
//! kill -9 and power-loss suites cover crashes with the zeros in place (`crash_kill9`'s
//! `kill_9_sync_each_preallocating`, `powerloss_sim`'s preallocating matrix).

#[path = "support/common.rs"]
mod common;

use std::path::Path;

use common::{all_profiles as all, segment_files as segments};
use profiledb::workload::{W1, W1Config};
use profiledb::{Db, Durability, Options};

fn options(preallocate_bytes: u64, segment_size: u64) -> Options {
    Options {
        durability: Durability::SyncEach,
        segment_size,
        preallocate_bytes,
        compaction_ratio: None,
        ..Options::default()
    }
}

/// A store in `dir` with the first `calls` calls of W1 (seed 3) applied, left open.
fn load(dir: &Path, opts: Options, calls: u64) -> Db {
    let db = Db::open(dir, opts).unwrap();
    for m in W1::new(W1Config::new(3, calls).with_people(calls / 4)) {
        db.apply(&m).unwrap();
    }
    db
}

fn ends_with_zeros(path: &Path, n: usize) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.len() >= n && bytes[bytes.len() - n..].iter().all(|b| *b == 0)
}

#[test]
fn zeros_ahead_while_open_and_none_after_a_clean_close() {
    let tmp = tempfile::tempdir().unwrap();
    let (with, without) = (tmp.path().join("with"), tmp.path().join("without"));
    let db = load(&with, options(256 << 10, 64 << 20), 2_000);
    let plain = load(&without, options(0, 64 << 20), 2_000);
    let active = segments(&with).pop().unwrap();
    let open_len = std::fs::metadata(&active).unwrap().len();
    let data_len = std::fs::metadata(segments(&without).pop().unwrap())
        .unwrap()
        .len();
    // The same frames, then at least half of the 256 KiB of zeros kept ahead.
    assert!(
        open_len >= data_len + (128 << 10),
        "{open_len} bytes open against {data_len} of data"
    );
    assert!(ends_with_zeros(&active, 128 << 10));
    assert!(!ends_with_zeros(&segments(&without).pop().unwrap(), 4096));
    let want = all(&plain);
    assert_eq!(all(&db), want);
    db.close().unwrap();
    plain.close().unwrap();
    // Closed: the file ends with its last frame, as the store without zeros does.
    let closed_len = std::fs::metadata(&active).unwrap().len();
    assert!(
        closed_len < open_len - (128 << 10),
        "{closed_len} of {open_len} bytes kept"
    );
    assert!(!ends_with_zeros(&active, 4096));

    // Reopened with the hint, and from the log alone: the same profiles, nothing cut.
    for hint in [true, false] {
        if !hint {
            std::fs::remove_file(with.join("HINT")).unwrap();
        }
        let db = Db::open(&with, options(256 << 10, 64 << 20)).unwrap();
        let recovery = db.stats().storage.recovery;
        assert_eq!(recovery.used_hint, hint);
        assert_eq!(recovery.truncated, None);
        assert_eq!(recovery.zeros_cut, None);
        assert!(recovery.quarantined.is_empty());
        assert_eq!(all(&db), want);
        db.close().unwrap();
    }
}

/// After a crash the zeros are cut and reported apart from a torn tail: the store without
/// preallocation whose log ends with zeros (a write lost before its bytes landed) says so too.
#[test]
fn a_tail_of_zeros_is_cut_and_reported_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = load(&dir, options(0, 64 << 20), 500);
    let want = all(&db);
    db.close().unwrap();
    let active = segments(&dir).pop().unwrap();
    let len = std::fs::metadata(&active).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap();
    file.set_len(len + 4096).unwrap();
    drop(file);
    let db = Db::open(&dir, options(0, 64 << 20)).unwrap();
    let recovery = db.stats().storage.recovery;
    assert_eq!(recovery.truncated, None);
    let (name, bytes) = recovery
        .zeros_cut
        .clone()
        .expect("the zeros cut are reported");
    assert_eq!(bytes, 4096);
    assert!(active.ends_with(&name), "{name}");
    assert_eq!(std::fs::metadata(&active).unwrap().len(), len);
    assert_eq!(all(&db), want);
    db.close().unwrap();
}

#[test]
fn sealed_segments_end_with_their_last_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let (with, without) = (tmp.path().join("with"), tmp.path().join("without"));
    // 64 KiB segments, 32 KiB of zeros ahead: a rotation every ~100 calls.
    let db = load(&with, options(32 << 10, 64 << 10), 3_000);
    let plain = load(&without, options(0, 64 << 10), 3_000);
    let (segs, plain_segs) = (segments(&with), segments(&without));
    assert!(segs.len() > 10, "only {} segments", segs.len());
    assert_eq!(segs.len(), plain_segs.len());
    // Every sealed segment ends with its last frame: no zeros ahead were left in it.
    for seg in &segs[..segs.len() - 1] {
        assert!(
            !ends_with_zeros(seg, 4096),
            "{} ends with zeros",
            seg.display()
        );
    }
    assert!(ends_with_zeros(segs.last().unwrap(), 16 << 10));
    let want = all(&plain);
    // Dropped without a close (the zeros stay until the best-effort cut on drop, then the
    // next open cuts whatever is left), then reopened from the log alone.
    drop(db);
    plain.close().unwrap();
    let _ = std::fs::remove_file(with.join("HINT"));
    let db = Db::open(&with, options(0, 64 << 10)).unwrap();
    let recovery = db.stats().storage.recovery;
    assert!(recovery.quarantined.is_empty());
    assert_eq!(recovery.truncated, None);
    assert_eq!(recovery.zeros_cut, None);
    assert_eq!(all(&db), want);
    db.close().unwrap();
    assert!(!ends_with_zeros(&segments(&with).pop().unwrap(), 4096));
}

#[test]
fn more_zeros_than_a_segment_holds_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let Err(err) = Db::open(tmp.path(), options(2 << 20, 1 << 20)) else {
        panic!("2 MiB of zeros ahead in 1 MiB segments was accepted");
    };
    assert!(err.to_string().contains("preallocate_bytes"), "{err}");
}
