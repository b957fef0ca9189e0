//! Torn tails and corruption: a tail cut at every byte of the last two frames recovers whole
//! frames only; a flipped bit elsewhere is `Corruption` naming file and offset; repair
//! quarantines.

mod storage_support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use profiledb::storage::io::RealIo;
use profiledb::storage::{Entry, Store};
use profiledb::{Durability, Error};
use storage_support::*;

fn real(segment_size: u64) -> profiledb::storage::StoreOptions {
    options(Arc::new(RealIo), segment_size, Durability::Buffered)
}

fn data(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat((i as usize * 7) % 23)).into_bytes()
}

/// Writes `n` frames (every third holds two entries); returns the frame boundaries.
fn write_frames(dir: &Path, n: u64, segment_size: u64) -> Vec<u64> {
    let (store, mut r) = open(dir, real(segment_size)).unwrap();
    let mut bounds = vec![32u64];
    for i in 0..n {
        let d = data(i);
        if i % 3 == 2 {
            let a = store
                .append(&[
                    Entry {
                        kind: PUT,
                        id: i,
                        data: &d,
                    },
                    Entry {
                        kind: PUT,
                        id: 1000 + i,
                        data: b"pair",
                    },
                ])
                .unwrap();
            r.put(i, a.locations[0]);
        } else {
            put(&store, &mut r, i, &d);
        }
        bounds.push(32 + store.stats().bytes_appended);
    }
    store.close().unwrap();
    bounds
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn seg(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.seg"))
}

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

fn flip(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x04;
    std::fs::write(path, b).unwrap();
}

#[test]
fn flipped_bit_in_a_sealed_segment_is_corruption_and_repair_quarantines() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    // 1 KiB segments: frames 0.. land in several segments.
    let (store, mut r) = open(&dir, real(1024)).unwrap();
    let mut locs = Vec::new();
    for i in 0..60u64 {
        put(&store, &mut r, i, &data(i));
        locs.push(r.map[&(PUT, i)]);
    }
    store.close().unwrap();
    let in_first: Vec<_> = locs.iter().filter(|l| l.segment == 1).collect();
    assert!(in_first.len() >= 3 && locs.iter().any(|l| l.segment >= 3));
    // Damage the data of the second frame of segment 1.
    let victim = in_first[1];
    let frame_start = victim.offset as u64 - 13 - 12 - 8;
    flip(&seg(&dir, 1), victim.offset as u64 + 2);
    match open(&dir, real(1024)) {
        Err(Error::Corruption {
            file,
            offset,
            reason,
        }) => {
            assert_eq!(file, seg(&dir, 1));
            assert_eq!(offset, frame_start);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected corruption, got {:?}", other.map(|_| ())),
    }
    let mut o = real(1024);
    o.repair = true;
    let (store, r) = open(&dir, o).unwrap();
    let report = store.stats().recovery;
    let len = std::fs::metadata(dir.join("0000000001.seg.quarantined"))
        .unwrap()
        .len();
    assert_eq!(
        report.quarantined,
        vec![("0000000001.seg.quarantined".to_string(), len)]
    );
    assert!(!seg(&dir, 1).exists());
    let got = contents(&store, &r);
    for (i, l) in locs.iter().enumerate() {
        assert_eq!(got.contains_key(&(i as u64)), l.segment != 1, "id {i}");
    }
    assert!(store.check().unwrap().is_empty());
    store.close().unwrap();
    // The quarantined file is left alone on later opens.
    let (store, _) = open(&dir, real(1024)).unwrap();
    assert!(dir.join("0000000001.seg.quarantined").exists());
    store.close().unwrap();
}

#[test]
fn flipped_bit_mid_way_in_the_active_segment_is_corruption_not_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let bounds = write_frames(&dir, 10, 1 << 20);
    // A bit in frame 4's length field, then one in its body: both corrupt, both named.
    for (frame, delta) in [(4usize, 1u64), (4, 30), (7, 9)] {
        let copy = tmp.path().join(format!("c{frame}-{delta}"));
        copy_dir(&dir, &copy);
        flip(&seg(&copy, 1), bounds[frame] + delta);
        match open(&copy, real(1 << 20)) {
            Err(Error::Corruption { file, offset, .. }) => {
                assert_eq!(file, seg(&copy, 1));
                assert_eq!(offset, bounds[frame]);
            }
            other => panic!("expected corruption, got {:?}", other.map(|_| ())),
        }
        let mut o = real(1 << 20);
        o.repair = true;
        let (store, r) = open(&copy, o).unwrap();
        assert_eq!(store.stats().recovery.quarantined.len(), 1);
        assert!(contents(&store, &r).is_empty());
        // A fresh active segment takes the appends.
        let mut r = r;
        put(&store, &mut r, 5, b"new");
        assert_eq!(contents(&store, &r).len(), 1);
        store.close().unwrap();
    }
    // A flipped bit in the LAST frame is a torn tail: truncated, the rest kept.
    flip(&seg(&dir, 1), bounds[9] + 20);
    let (store, r) = open(&dir, real(1 << 20)).unwrap();
    assert_eq!(
        store.stats().recovery.truncated,
        Some(("0000000001.seg".into(), bounds[10] - bounds[9]))
    );
    assert_eq!(contents(&store, &r).len(), 9 + 3); // 9 frames, 3 of them with a pair
    store.close().unwrap();
}

#[test]
fn garbage_and_bad_headers_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let bounds = write_frames(&dir, 5, 1 << 20);
    let full = std::fs::read(seg(&dir, 1)).unwrap();
    let mut x = 0x9E3779B97F4A7C15u64;
    for round in 0..200 {
        let copy = tmp.path().join(format!("g{round}"));
        copy_dir(&dir, &copy);
        let mut b = full.clone();
        for _ in 0..(round % 7 + 1) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x as usize) % b.len();
            b[at] = (x >> 32) as u8;
        }
        std::fs::write(seg(&copy, 1), &b).unwrap();
        // Any outcome but a panic is fine; a successful open checks clean.
        if let Ok((store, _)) = open(&copy, real(1 << 20)) {
            assert!(store.check().unwrap().is_empty());
            store.close().unwrap();
        }
        std::fs::remove_dir_all(&copy).unwrap();
    }
    let _ = bounds;
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
