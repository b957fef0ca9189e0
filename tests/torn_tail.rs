//! Issue 6, `torn_tail`: a tail cut at every byte offset recovers whole frames / whole calls
//! only, and what is appended after the cut reads back, also after another reopen.
//!
//! Storage level (moved here from `storage_torn_tail.rs`): every byte of the last two frames,
//! cut and zero-filled. `Db` level (below): every byte of the last calls' frames (a merge among
//! them), with and without a hint before them, cut, zero-filled and garbage-filled; the store
//! must equal the model of the calls whose frames are whole.

#[path = "support/identify_model/mod.rs"]
mod identify_model;
#[path = "support/storage.rs"]
mod storage_support;

use std::path::Path;

use profiledb::Durability;
use profiledb::storage::Store;
use storage_support::*;

#[test]
fn torn_tail_at_every_byte_of_the_last_two_frames_keeps_whole_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let n = 8;
    let bounds = write_frames(&base, n, 1 << 20);
    let full = std::fs::read(seg(&base, 1)).unwrap();
    assert_eq!(full.len() as u64, bounds[n as usize]);
    let start = bounds[n as usize - 2];
    for cut in start..full.len() as u64 {
        for zero_fill in [false, true] {
            if zero_fill && cut % 5 != 0 {
                continue;
            }
            let dir = tmp.path().join(format!("cut{cut}-{zero_fill}"));
            copy_dir(&base, &dir);
            let mut bytes = full[..cut as usize].to_vec();
            if zero_fill {
                bytes.resize(full.len() + 64, 0);
            }
            std::fs::write(seg(&dir, 1), &bytes).unwrap();
            let whole = bounds.iter().filter(|&&b| b <= cut).count() as u64 - 1;
            let (store, mut r) = open(&dir, real(1 << 20)).unwrap();
            let report = store.stats().recovery;
            assert_eq!(report.frames_replayed, whole, "cut at {cut}");
            let expect_dropped = bytes.len() as u64 - bounds[whole as usize];
            if expect_dropped == 0 {
                assert!(report.truncated.is_none(), "cut at {cut}");
            } else {
                assert_eq!(
                    report.truncated,
                    Some(("0000000001.seg".to_string(), expect_dropped)),
                    "cut at {cut}"
                );
            }
            let got = contents(&store, &r);
            for i in 0..n {
                assert_eq!(
                    got.get(&i),
                    (i < whole).then(|| data(i)).as_ref(),
                    "cut {cut} id {i}"
                );
            }
            // Appends after the truncation read back, also after another reopen.
            put(&store, &mut r, 777, b"after the tear");
            store.close().unwrap();
            let (store, r) = open(&dir, real(1 << 20)).unwrap();
            let got = contents(&store, &r);
            assert_eq!(
                got.get(&777).map(Vec::as_slice),
                Some(&b"after the tear"[..])
            );
            let singles = got.keys().filter(|&&k| k < n).count() as u64;
            assert_eq!(singles, whole, "cut at {cut}");
            assert!(store.stats().recovery.truncated.is_none());
            assert!(store.check().unwrap().is_empty());
            store.close().unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn a_second_segment_in_any_order_replays_by_sequence() {
    // Compaction writes segments whose ids are above the active one: replay still goes by seq.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let (store, mut r) = open(&dir, real(1024)).unwrap();
    for i in 0..40u64 {
        put(&store, &mut r, i % 10, &data(i));
    }
    compact(&store, &mut r).unwrap();
    for i in 40..60u64 {
        put(&store, &mut r, i % 10, &data(i));
    }
    let before = contents(&store, &r);
    store.close().unwrap();
    let (store, r) = open(&dir, real(1024)).unwrap();
    assert_eq!(contents(&store, &r), before);
    let _: &Store = &store;
    store.close().unwrap();
}

// ---- Db level ----------------------------------------------------------------------------

const SEED: u64 = 0x7042_7A11;

/// The stream's first merge after call 30, and a length that ends 4 calls after it.
fn calls_ending_after_a_merge() -> (u64, u64) {
    let mut m = identify_model::Model::new(SEED);
    for i in 0..1000 {
        let (_, status) = m.apply(&identify_model::call(SEED, i));
        if i >= 30 && status == profiledb::Status::Merged {
            return (i + 4, i);
        }
    }
    panic!("no merge in the stream");
}

fn db_options() -> profiledb::Options {
    profiledb::Options {
        durability: Durability::Buffered,
        segment_size: 1 << 20,
        compaction_ratio: None,
        ..profiledb::Options::default()
    }
}

#[derive(Debug, Clone, Copy)]
enum Fill {
    /// The file simply ends at the cut.
    Cut,
    /// Zeros from the cut to past the old end (size updated, data blocks not).
    Zeros,
    /// Garbage from the cut to the old end (a torn sector write).
    Garbage,
}

/// Cut the single segment of a copy of `base` at every byte of the last calls' frames, reopen
/// through `Db`, and check the store is the model of exactly the calls whose frames are whole;
/// then append the next call, reopen again and check once more. Returns the cases checked.
fn cut_every_byte(tmp: &Path, with_hint: bool) -> u64 {
    // The tail starts at the last merge (a frame with the survivor, the tombstone and the
    // redirect of the merged-away key).
    let (calls, merge) = calls_ending_after_a_merge();
    let base = tmp.join(format!("base-{with_hint}"));
    // With a hint: written two calls before the tail.
    let (frames, _) = identify_model::write_recorded(&base, db_options(), SEED, calls, |db, i| {
        if with_hint && i + 2 == merge {
            db.checkpoint().unwrap();
        }
    });
    assert_eq!(frames[merge as usize].status, profiledb::Status::Merged);
    assert!(frames.iter().all(|f| f.segment == 1));
    assert_eq!(base.join("HINT").exists(), with_hint);
    let tail = &frames[merge as usize..];
    let full = std::fs::read(seg(&base, 1)).unwrap();
    assert_eq!(full.len() as u64, frames.last().unwrap().end);
    let from = tail[0].start;
    let mut cases = 0;
    for cut in from..=full.len() as u64 {
        for fill in [Fill::Cut, Fill::Zeros, Fill::Garbage] {
            match fill {
                Fill::Cut => {}
                Fill::Zeros if cut % 7 != 0 => continue,
                Fill::Garbage if cut % 11 != 3 || cut == full.len() as u64 => continue,
                _ => {}
            }
            cases += 1;
            let ctx = format!("hint {with_hint}, cut at {cut}, {fill:?}");
            let dir = tmp.join("case");
            identify_model::copy_dir(&base, &dir);
            let mut bytes = full[..cut as usize].to_vec();
            match fill {
                Fill::Cut => {}
                Fill::Zeros => bytes.resize(full.len() + 64, 0),
                Fill::Garbage => {
                    let mut rng = profiledb::rng::SplitMix64(cut);
                    while bytes.len() < full.len() {
                        bytes.push(rng.next_u64() as u8);
                    }
                }
            }
            std::fs::write(seg(&dir, 1), &bytes).unwrap();
            // Whole calls: those whose frame ends at or before the cut.
            let whole = frames.iter().filter(|f| f.end <= cut).count() as u64;
            let boundary = frames
                .iter()
                .filter(|f| f.end <= cut)
                .map(|f| f.end)
                .max()
                .unwrap_or(32);
            let db = profiledb::Db::open(&dir, db_options())
                .unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
            let report = db.stats().storage.recovery;
            let dropped = bytes.len() as u64 - boundary;
            let want = (dropped > 0).then(|| ("0000000001.seg".to_string(), dropped));
            assert_eq!(report.truncated, want, "{ctx}");
            assert_eq!(report.used_hint, with_hint, "{ctx}");
            let mut model = identify_model::Model::of_prefix(SEED, whole);
            identify_model::assert_db_matches(&db, &model, &ctx);
            // The next call goes where the tear was, and reads back after a reopen.
            let c = identify_model::call(SEED, whole);
            let out = db.apply(&identify_model::message(&c)).unwrap();
            identify_model::check_outcome(&out, model.apply(&c), &ctx);
            identify_model::assert_db_matches(&db, &model, &format!("{ctx}, after a call"));
            db.close().unwrap();
            let db = profiledb::Db::open(&dir, db_options()).unwrap();
            assert_eq!(db.stats().storage.recovery.truncated, None, "{ctx}");
            identify_model::assert_db_matches(&db, &model, &format!("{ctx}, reopened"));
            db.close().unwrap();
        }
    }
    cases
}

#[test]
fn db_torn_tail_at_every_byte_of_the_last_calls_keeps_whole_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = cut_every_byte(tmp.path(), false);
    eprintln!("{cases} torn tails checked without a hint");
}

#[test]
fn db_torn_tail_after_a_hint_keeps_whole_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = cut_every_byte(tmp.path(), true);
    eprintln!("{cases} torn tails checked after a hint");
}
