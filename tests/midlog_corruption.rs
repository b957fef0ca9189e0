//! Issue 6, `midlog_corruption`: damage that is not a torn tail (bit flips at many offsets,
//! zeroed 4 KiB blocks, bad frame lengths, bad headers) in sealed and active segments makes
//! open fail with `Error::Corruption` naming the damaged file and an offset at or before the
//! damage; repair quarantines the whole segment (renamed, never deleted) and reports what was
//! lost; nothing ever panics.
//!
//! Storage level (moved here from `storage_torn_tail.rs`) first, then `Db` level.

#[path = "support/identify_model/mod.rs"]
mod identify_model;
#[path = "support/storage.rs"]
mod storage_support;

use std::path::{Path, PathBuf};

use profiledb::{Durability, Error};
use storage_support::*;

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
    let mut rng = profiledb::rng::SplitMix64(0x9E37_79B9_7F4A_7C15);
    for round in 0..200 {
        let copy = tmp.path().join(format!("g{round}"));
        copy_dir(&dir, &copy);
        let mut b = full.clone();
        for _ in 0..(round % 7 + 1) {
            let x = rng.next_u64();
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

// ---- Db level ----------------------------------------------------------------------------

use identify_model::{CallFrame, Model, assert_db_matches, segment_path};
use profiledb::{Db, Options};

const SEED: u64 = 0xC0_4427;

fn db_options(segment_size: u64, repair: bool) -> Options {
    Options {
        durability: Durability::Buffered,
        segment_size,
        compaction_ratio: None,
        repair,
        // Framing tests: their bases are sized (calls x bytes per call) so that the last
        // call's frame ends inside the newest segment; history steps (docs/journal.md) would
        // change every frame's size. The journal's own damage tests are in tests/journal.rs
        // and the decoders' unit tests.
        history_retention: std::time::Duration::ZERO,
        ..Options::default()
    }
}

/// A recorded store: its calls' frames and the model of all of them.
struct Base {
    dir: PathBuf,
    frames: Vec<CallFrame>,
    model: Model,
    segment_size: u64,
}

impl Base {
    fn new(tmp: &Path, segment_size: u64, calls: u64) -> Base {
        let dir = tmp.join(format!("base-{segment_size}"));
        let (frames, model) = identify_model::write_recorded(
            &dir,
            db_options(segment_size, false),
            SEED,
            calls,
            |_, _| {},
        );
        Base {
            dir,
            frames,
            model,
            segment_size,
        }
    }

    fn active(&self) -> u32 {
        self.frames.last().unwrap().segment
    }

    /// Frames (start, end) of segment `id`, in order.
    fn frames_of(&self, id: u32) -> Vec<(u64, u64)> {
        self.frames
            .iter()
            .filter(|f| f.segment == id && f.end > f.start)
            .map(|f| (f.start, f.end))
            .collect()
    }

    /// The offset open must report for damage at byte `d` of segment `id`: the start of the
    /// frame holding it (0 for the header).
    fn frame_at(&self, id: u32, d: u64) -> u64 {
        if d < 32 {
            return 0;
        }
        self.frames_of(id)
            .into_iter()
            .find(|&(s, e)| s <= d && d < e)
            .map_or_else(|| panic!("no frame of {id} holds byte {d}"), |(s, _)| s)
    }
}

/// Copy the base store, let `damage` change segment `id`'s bytes, and expect open to fail
/// with `Corruption` naming that file at `offset`. With `repair`, also reopen with repair and
/// check the quarantine and what survived. Never a panic inside the library.
fn expect_corruption(
    tmp: &Path,
    base: &Base,
    id: u32,
    damage: impl FnOnce(&mut Vec<u8>),
    offset: u64,
    repair: bool,
    ctx: &str,
) {
    let dir = tmp.join("case");
    identify_model::copy_dir(&base.dir, &dir);
    let path = segment_path(&dir, id);
    let mut bytes = std::fs::read(&path).unwrap();
    damage(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let opened = std::panic::catch_unwind(|| Db::open(&dir, db_options(base.segment_size, false)));
    match opened {
        Err(_) => panic!("{ctx}: open panicked"),
        Ok(Err(Error::Corruption {
            file,
            offset: got,
            reason,
        })) => {
            assert_eq!(file, path, "{ctx}: {reason}");
            assert_eq!(got, offset, "{ctx}: {reason}");
        }
        Ok(Err(e)) => panic!("{ctx}: expected Corruption, got {e}"),
        Ok(Ok(_)) => panic!("{ctx}: opened a damaged store"),
    }
    // Nothing was changed by the failed open.
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "{ctx}");
    if repair {
        check_repair(&dir, base, id, &bytes, ctx);
    }
}

/// Open with repair: the damaged segment is renamed (same bytes), reported with its size, and
/// the survivors are right; the repaired store takes calls and reopens without repair.
fn check_repair(dir: &Path, base: &Base, id: u32, damaged: &[u8], ctx: &str) {
    let ctx = format!("{ctx}, repair");
    let db = Db::open(dir, db_options(base.segment_size, true))
        .unwrap_or_else(|e| panic!("{ctx}: open with repair failed: {e}"));
    let qname = format!("{id:010}.seg.quarantined");
    assert_eq!(
        db.stats().storage.recovery.quarantined,
        vec![(qname.clone(), damaged.len() as u64)],
        "{ctx}"
    );
    assert!(!segment_path(dir, id).exists(), "{ctx}");
    assert_eq!(std::fs::read(dir.join(&qname)).unwrap(), damaged, "{ctx}");
    assert!(db.check().unwrap().is_empty(), "{ctx}");
    if id == base.active() {
        // The newest segment holds a suffix of the calls: exactly that suffix is lost.
        let first_lost = base
            .frames
            .iter()
            .find(|f| f.segment == id && f.end > f.start)
            .map_or(base.frames.len() as u64, |f| f.i);
        assert_db_matches(&db, &Model::of_prefix(SEED, first_lost), &ctx);
    } else {
        // Every profile last written after the lost segment is exactly as in the model, or,
        // when its chain of records ran through the lost segment, dropped and reported as
        // such (never shown with properties missing).
        let mut last_writer = std::collections::HashMap::new();
        let mut m = Model::new(SEED);
        for f in &base.frames {
            let (key, _) = m.apply(&identify_model::call(SEED, f.i));
            if f.end > f.start {
                last_writer.insert(key, f.segment);
            }
        }
        // The first call registered the property names `count` and `last`.
        let names_segment = base.frames[0].segment;
        let mut checked = 0;
        for (key, want) in &base.model.profiles {
            if last_writer[key] > id {
                let Some(got) = db.get(&profiledb::Selector::Key(*key)).unwrap() else {
                    let dropped = db.stats().dropped_by_repair;
                    assert!(
                        dropped
                            .iter()
                            .any(|d| d.starts_with(&format!("profile {key} "))
                                && d.contains(&qname.replace(".quarantined", ""))),
                        "{ctx}: profile {key} lost without a report: {dropped:?}"
                    );
                    continue;
                };
                assert_eq!(got.user_id, want.user_id, "{ctx}");
                assert_eq!(got.email, want.email, "{ctx}");
                let props = identify_model::expected_props(want);
                if id == names_segment {
                    // KNOWN LIMITATION (reported): records name their properties by number,
                    // and the numbers' names were registered in the quarantined segment, so
                    // the values in later records can no longer be named and are not shown.
                    // Whatever is shown must still be right.
                    assert!(
                        got.properties.iter().all(|p| props.contains(p)),
                        "{ctx}: profile {key}: {:?}",
                        got.properties
                    );
                } else {
                    assert_eq!(got.properties, props, "{ctx}: profile {key}");
                }
                checked += 1;
            }
        }
        assert!(checked > 0, "{ctx}: nothing to compare");
    }
    // The repaired store works: a call, a clean reopen without repair, the file left alone.
    let c = identify_model::call(SEED, 10_000);
    db.apply(&identify_model::message(&c)).unwrap();
    db.close().unwrap();
    let db = Db::open(dir, db_options(base.segment_size, false))
        .unwrap_or_else(|e| panic!("{ctx}: reopen after repair failed: {e}"));
    assert!(db.check().unwrap().is_empty(), "{ctx}");
    db.close().unwrap();
    assert_eq!(std::fs::read(dir.join(&qname)).unwrap(), damaged, "{ctx}");
}

#[test]
fn db_bit_flips_at_every_byte_of_a_sealed_and_the_active_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Base::new(tmp.path(), 2048, 150);
    let active = base.active();
    assert!(active >= 4, "too few segments: {active}");
    let mut cases = 0;
    for id in [2, active] {
        let len = std::fs::metadata(segment_path(&base.dir, id))
            .unwrap()
            .len();
        // In the active segment the last frame is the tail: a flip there is a torn tail.
        let end = if id == active {
            base.frames_of(id).last().unwrap().0
        } else {
            len
        };
        for d in 0..end {
            let bit = 1u8 << (d % 8);
            let repair = d % 61 == 0 || d < 32 && d % 8 == 0;
            expect_corruption(
                tmp.path(),
                &base,
                id,
                |b| b[d as usize] ^= bit,
                base.frame_at(id, d),
                repair,
                &format!("segment {id}: bit {} of byte {d} flipped", d % 8),
            );
            cases += 1;
        }
    }
    eprintln!("{cases} bit flips checked");
}

#[test]
fn db_a_flip_in_the_last_frame_is_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Base::new(tmp.path(), 2048, 60);
    let active = base.active();
    let (start, end) = *base.frames_of(active).last().unwrap();
    for d in (start..end).step_by(5) {
        let dir = tmp.path().join("case");
        identify_model::copy_dir(&base.dir, &dir);
        let path = segment_path(&dir, active);
        let mut b = std::fs::read(&path).unwrap();
        b[d as usize] ^= 0x10;
        std::fs::write(&path, &b).unwrap();
        let db = Db::open(&dir, db_options(2048, false)).unwrap();
        assert_eq!(
            db.stats().storage.recovery.truncated,
            Some((format!("{active:010}.seg"), end - start)),
            "byte {d}"
        );
        let whole = base
            .frames
            .iter()
            .filter(|f| f.end <= start || f.segment < active);
        let n = whole.count() as u64;
        assert_db_matches(&db, &Model::of_prefix(SEED, n), &format!("byte {d}"));
        db.close().unwrap();
    }
}

#[test]
fn db_zeroed_4k_blocks_and_bad_lengths_are_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    // 16 KiB segments: 4 KiB blocks fall inside them.
    let base = Base::new(tmp.path(), 16 << 10, 420);
    let active = base.active();
    assert!(active >= 3, "too few segments: {active}");
    let mut cases = 0;
    for id in [1, active] {
        let len = std::fs::metadata(segment_path(&base.dir, id))
            .unwrap()
            .len();
        let last_start = base.frames_of(id).last().unwrap().0;
        for block in (0..len).step_by(4096) {
            let block_end = (block + 4096).min(len);
            // In the active segment, zeros running into the last frame are a torn tail.
            if id == active && block_end > last_start {
                continue;
            }
            let first = if block == 0 {
                0
            } else {
                base.frame_at(id, block)
            };
            expect_corruption(
                tmp.path(),
                &base,
                id,
                |b| b[block as usize..block_end as usize].fill(0),
                first,
                true,
                &format!("segment {id}: 4 KiB block at {block} zeroed"),
            );
            cases += 1;
        }
        // Bad lengths in several frames (not the active segment's last).
        let frames = base.frames_of(id);
        for &(start, end) in frames.iter().take(frames.len() - 1).step_by(3) {
            let len = (end - start - 8) as u32;
            for bad in [
                0,
                11,
                len - 1,
                len + 1,
                len * 2,
                1 << 30,
                (1 << 30) + 1,
                u32::MAX,
            ] {
                expect_corruption(
                    tmp.path(),
                    &base,
                    id,
                    |b| b[start as usize..start as usize + 4].copy_from_slice(&bad.to_le_bytes()),
                    start,
                    bad == 0,
                    &format!("segment {id}: frame at {start} given length {bad} (was {len})"),
                );
                cases += 1;
            }
        }
    }
    eprintln!("{cases} zeroed blocks and bad lengths checked");
}

/// With a hint covering a sealed segment, open does not re-read that segment (docs/recovery.md:
/// that is what makes open fast), so damage there is not an open error; `Db::check` must still
/// find it, naming the file and the frame. Reads do not check CRCs, so until then a damaged
/// live record may be served as a wrong profile: counted and printed (a known gap, reported),
/// not asserted.
#[test]
fn db_damage_under_a_hint_is_found_by_check() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Base::new(tmp.path(), 2048, 60);
    // Write a hint covering everything (a clean close).
    let db = Db::open(&base.dir, db_options(2048, false)).unwrap();
    db.close().unwrap();
    let (mut cases, mut read_errors, mut wrong_reads) = (0, 0, 0);
    for (id, d) in [2, base.active() - 1].into_iter().flat_map(|id| {
        (40..base.frames_of(id).last().unwrap().1)
            .step_by(37)
            .map(move |d| (id, d))
    }) {
        let dir = tmp.path().join("case");
        identify_model::copy_dir(&base.dir, &dir);
        let path = segment_path(&dir, id);
        let mut b = std::fs::read(&path).unwrap();
        b[d as usize] ^= 0x01;
        std::fs::write(&path, &b).unwrap();
        let db = Db::open(&dir, db_options(2048, false)).unwrap();
        assert!(db.stats().storage.recovery.used_hint);
        let problems = db.check().unwrap();
        let want = format!("{id:010}.seg offset {}", base.frame_at(id, d));
        assert!(
            problems.iter().any(|p| p.starts_with(&want)),
            "segment {id} byte {d}: {problems:?}"
        );
        // What reads serve meanwhile (not a promise: reported, not asserted).
        for (key, m) in &base.model.profiles {
            match db.get(&profiledb::Selector::Key(*key)) {
                Err(_) => read_errors += 1,
                Ok(Some(p))
                    if p.user_id == m.user_id
                        && p.email == m.email
                        && p.properties == identify_model::expected_props(m) => {}
                Ok(_) => wrong_reads += 1,
            }
        }
        db.close().unwrap();
        cases += 1;
    }
    eprintln!(
        "{cases} flips under a hint: check found each; reads meanwhile: {read_errors} errors, \
         {wrong_reads} profiles served wrong"
    );
}
