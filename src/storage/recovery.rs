//! Open: lock, finish or discard an interrupted compaction, load the hint, validate the log
//! (torn tail vs corruption, repair), replay in sequence order. docs/recovery.md walks through
//! the same steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::compaction;
use super::hint::{self, HINT};
use super::io::Io;
use super::log::{Shared, State, create_segment};
use super::mmap::Bytes;
use super::record::{self, FrameRef, HEADER_LEN, KIND_LOG, KIND_STEPS, SegmentHeader};
use super::segment::{self, Sealed, parse_any_id, parse_seg_name, quarantine_name, seg_name};
use super::{Location, RecoveryReport, Replay, StoreOptions, StoredEntry, lock};
use crate::error::{Error, Result};

struct Seg {
    id: u32,
    path: PathBuf,
    header: SegmentHeader,
    bytes: Bytes,
    /// Validated frames, and the offset validation started from.
    frames: Vec<FrameRef>,
    scanned_from: Option<usize>,
    newest_log: bool,
}

impl Seg {
    fn name(&self) -> String {
        seg_name(self.id)
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error::io(op, path, e)
}

/// Whether `name` is a temporary file this engine writes: a compaction output
/// (`NNNNNNNNNN.seg.tmp`), the index snapshot's or the compaction manifest's temp name.
pub(crate) fn is_own_temp(name: &str) -> bool {
    name == super::hint::HINT_TMP
        || name == compaction::MANIFEST_TMP
        || name
            .strip_suffix(".seg.tmp")
            .is_some_and(|id| id.len() == 10 && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` is a file a store directory holds (segments under any of their names,
/// `LOCK`, `HINT`, `COMPACT` and their temp names, history table files).
pub(crate) fn is_store_file(name: &str) -> bool {
    is_own_temp(name)
        || parse_any_id(name).is_some()
        || segment::parse_steps_name(name).is_some()
        || name == super::lock::LOCK
        || name == super::hint::HINT
        || name == compaction::MANIFEST
}

/// Refuse a non-empty directory holding none of a store's files: it is someone else's, and
/// opening it for writing would add a store to it (nothing is touched).
pub fn check_store_dir(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut others = 0usize;
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        match entry.file_name().to_str() {
            Some(name) if is_store_file(name) => return Ok(()),
            _ => others += 1,
        }
    }
    if others == 0 {
        return Ok(());
    }
    Err(Error::Options {
        name: "data directory",
        reason: format!(
            "{} is not empty and is not a profiledb store ({others} other entries); refusing \
             to write into it: give an empty or new directory, or an existing store",
            dir.display()
        ),
    })
}

pub(crate) fn open(dir: &Path, opts: &StoreOptions, replay: &mut dyn Replay) -> Result<Shared> {
    let t0 = Instant::now();
    let io: &dyn Io = opts.io.as_ref();
    validate_options(opts)?;
    if !dir.is_dir() {
        if !opts.create {
            return Err(Error::io(
                "open",
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "data directory does not exist",
                ),
            ));
        }
        io.create_dir_all(dir)
            .map_err(io_err("create directory", dir))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = io.sync_dir(parent);
        }
    }
    let lock = lock::lock(dir)?;
    let mut report = RecoveryReport::default();

    // 1. An interrupted compaction: finish it if committed, drop its temp files if not.
    let mut names = io.list(dir).map_err(io_err("list", dir))?;
    if compaction::complete_interrupted(io, dir, &names)? {
        names = io.list(dir).map_err(io_err("list", dir))?;
    }
    let mut removed = false;
    // Only names this engine creates: another program's `*.tmp` is not ours to remove.
    for n in names.iter().filter(|n| is_own_temp(n)) {
        let p = dir.join(n);
        io.remove(&p).map_err(io_err("unlink", &p))?;
        removed = true;
    }
    if removed {
        io.sync_dir(dir).map_err(io_err("fsync", dir))?;
    }
    let max_any_id = names.iter().filter_map(|n| parse_any_id(n)).max();
    let mut ids: Vec<u32> = names.iter().filter_map(|n| parse_seg_name(n)).collect();
    ids.sort_unstable();

    // 2. Segment headers. A newest file without a valid header and without data is a segment
    //    whose creation was interrupted: removed. "Without data" is "no longer than a header":
    //    frames are appended only after the header was synced, so a bad header with nothing
    //    after it is an unsynced header write a power cut left torn, zero-filled or as garbage
    //    (found by tests/powerloss_sim.rs, damage "garbage"), never a lost acknowledged frame.
    let mut segs: Vec<Seg> = Vec::with_capacity(ids.len());
    let newest_id = ids.last().copied();
    for &id in &ids {
        let path = dir.join(seg_name(id));
        let bytes = segment::map(io, &path)?;
        match SegmentHeader::decode(&bytes) {
            Ok(header) if header.id == id => segs.push(Seg {
                id,
                path,
                header,
                bytes,
                frames: Vec::new(),
                scanned_from: None,
                newest_log: false,
            }),
            Ok(header) => {
                let reason = format!("header names segment {} but the file is {id}", header.id);
                damaged(io, dir, &path, id, 0, reason, opts.repair, &mut report)?;
            }
            Err(reason) => {
                if Some(id) == newest_id
                    && (bytes.len() <= HEADER_LEN || bytes.iter().all(|&b| b == 0))
                {
                    let len = bytes.len() as u64;
                    drop(bytes);
                    io.remove(&path).map_err(io_err("unlink", &path))?;
                    io.sync_dir(dir).map_err(io_err("fsync", dir))?;
                    report.truncated = Some((seg_name(id), len));
                } else {
                    damaged(io, dir, &path, id, 0, reason, opts.repair, &mut report)?;
                }
            }
        }
    }
    if let Some(s) = segs.iter_mut().rev().find(|s| s.header.kind == KIND_LOG) {
        s.newest_log = true;
    }

    // 3. The hint, if it matches the segments present.
    let hint = load_hint(io, dir, &segs);
    report.hint_bytes = hint.as_ref().map_or(0, |(_, bytes, _)| bytes.len() as u64);
    let mut used_hint = None;
    if let Some((pos, _, _)) = &hint {
        for i in 0..segs.len() {
            let from = if segs[i].id == pos.active {
                pos.offset as usize
            } else if pos.segments.contains(&segs[i].id) {
                continue;
            } else {
                HEADER_LEN
            };
            scan_segment(io, dir, &mut segs, i, from, opts.repair, &mut report)?;
        }
        segs.retain(|s| s.scanned_from != Some(usize::MAX));
        let all_there = pos
            .segments
            .iter()
            .all(|id| segs.iter().any(|s| s.id == *id));
        if all_there {
            let payload = hint.as_ref().and_then(|(_, b, r)| b.get(r.clone()));
            match payload.map(|p| replay.load_snapshot(p)) {
                Some(Ok(())) => used_hint = Some(pos.clone()),
                _ => replay.reset(),
            }
        }
    }
    if hint.is_none() {
        remove_stale_hint(io, dir, &names)?;
    }

    // 4. Without a usable hint: validate everything.
    if used_hint.is_none() {
        for i in 0..segs.len() {
            if segs[i].scanned_from != Some(HEADER_LEN) {
                scan_segment(io, dir, &mut segs, i, HEADER_LEN, opts.repair, &mut report)?;
            }
        }
        segs.retain(|s| s.scanned_from != Some(usize::MAX));
    }

    // 5. Replay in sequence order.
    let after = used_hint.as_ref().map_or(0, |p| p.seq);
    let order = frame_order(&segs, after)?;
    // Where the replay leaves each sealed segment for good (frames of several segments
    // interleave in sequence order: a compacted segment holds old sequence numbers).
    let mut last_of = vec![None; segs.len()];
    for (n, &(_, si, _)) in order.iter().enumerate() {
        if let Some(last) = last_of.get_mut(si) {
            *last = Some(n);
        }
    }
    let mut entries: Vec<StoredEntry<'_>> = Vec::new();
    for (n, &(seq, si, off)) in order.iter().enumerate() {
        let Some(seg) = segs.get(si) else { continue };
        let frame =
            record::decode_frame(&seg.bytes, off as usize).map_err(|reason| Error::Corruption {
                file: seg.path.clone(),
                offset: off as u64,
                reason,
            })?;
        entries.clear();
        entries.extend(frame.entries().map(|(kind, id, o, data)| StoredEntry {
            kind,
            id,
            data,
            location: Location {
                segment: seg.id,
                offset: o as u32,
                len: data.len() as u32,
            },
        }));
        replay.apply(seq, &entries)?;
        if last_of.get(si) == Some(&Some(n)) && !seg.newest_log {
            replay.sealed(seg.id)?;
            seg.bytes.release_pages();
        }
    }
    drop(entries);
    report.frames_replayed = order.len() as u64;
    report.used_hint = used_hint.is_some();

    // 6. Sequence numbers and segment ids continue above everything ever used. Saturating:
    //    a damaged log may hold seq 2^64-1, and then appends refuse (see `Shared::append`).
    let mut next_seq = 1u64;
    if let Some(p) = &used_hint {
        next_seq = next_seq.max(p.seq.saturating_add(1));
    }
    for s in &segs {
        next_seq = next_seq.max(s.header.seq_floor);
        if let Some(f) = s.frames.last() {
            next_seq = next_seq.max(f.seq.saturating_add(1));
        }
    }
    let mut next_segment = max_any_id.map_or(1, |m| m.saturating_add(1));

    // 7. The newest log segment stays active; the others are sealed.
    let mut sealed = BTreeMap::new();
    let mut active = None;
    for s in segs {
        if s.newest_log {
            active = Some(s);
        } else {
            // The scan read it through the map: let its pages go (reads use `pread`).
            s.bytes.release_pages();
            sealed.insert(
                s.id,
                Arc::new(Sealed {
                    id: s.id,
                    kind: s.header.kind,
                    path: s.path,
                    bytes: s.bytes,
                }),
            );
        }
    }
    let state = match active {
        Some(s) => {
            // Its bytes stay on the file (reads go there); only new appends are buffered.
            let flushed = s.bytes.len();
            drop(s.bytes);
            let file = io.open(&s.path).map_err(io_err("open", &s.path))?;
            // What we read may be only in the page cache (after kill -9): make it durable.
            file.sync_data().map_err(io_err("fdatasync", &s.path))?;
            State {
                id: s.id,
                path: s.path,
                file,
                flushed,
                buf: Vec::with_capacity(super::log::FLUSH_AT + 4096),
                behind: super::log::Behind::default(),
                next_seq,
                preallocate: 0,
                zeroed_to: 0,
                zero_limit: 0,
            }
        }
        None => {
            let id = next_segment;
            next_segment += 1;
            let (path, file, header) = create_segment(
                io,
                dir,
                SegmentHeader {
                    id,
                    kind: KIND_LOG,
                    seq_floor: next_seq,
                },
            )?;
            State {
                id,
                path,
                file,
                buf: Vec::with_capacity(super::log::FLUSH_AT + 4096),
                behind: super::log::Behind::default(),
                flushed: header.len(),
                next_seq,
                preallocate: 0,
                zeroed_to: 0,
                zero_limit: 0,
            }
        }
    };
    io.sync_dir(dir).map_err(io_err("fsync", dir))?;
    report.micros = t0.elapsed().as_micros() as u64;
    Ok(Shared::new(
        dir.to_path_buf(),
        opts.io.clone(),
        opts.segment_size,
        opts.durability,
        state,
        sealed,
        next_segment,
        report,
        lock,
    ))
}

fn validate_options(opts: &StoreOptions) -> Result<()> {
    if opts.segment_size < 1024 || opts.segment_size > (1 << 31) {
        return Err(Error::Options {
            name: "segment_size",
            reason: format!(
                "must be between 1 KiB and 2 GiB (got {})",
                opts.segment_size
            ),
        });
    }
    Ok(())
}

/// The hint file, its position and the payload's range in it, if the hint matches `segs`.
fn load_hint(
    io: &dyn Io,
    dir: &Path,
    segs: &[Seg],
) -> Option<(hint::Position, Vec<u8>, std::ops::Range<usize>)> {
    let bytes = io.read(&dir.join(HINT)).ok()?;
    let (pos, payload) = hint::decode(&bytes).ok()?;
    let start = payload.as_ptr() as usize - bytes.as_ptr() as usize;
    let range = start..start + payload.len();
    let covered = pos
        .segments
        .iter()
        .all(|id| segs.iter().any(|s| s.id == *id));
    let active = segs.iter().find(|s| s.id == pos.active)?;
    if !covered || (pos.offset as usize) < HEADER_LEN || pos.offset as usize > active.bytes.len() {
        return None;
    }
    Some((pos, bytes, range))
}

/// Remove a `HINT` that covers a segment gone under every name (`.seg`, `.seg.tmp`,
/// `.seg.quarantined`). Such a segment was compacted away and ids are never reused, so the hint
/// can never be used again, yet it still holds the index snapshot of its time: identifiers of
/// profiles deleted since. A crash between a compaction's commit and the hint written after
/// it leaves one behind, and the deleted identifiers stayed on disk until the next checkpoint
/// or close (found by tests/compaction_crash_matrix.rs). A hint that does not decode is left
/// alone (it was synced before it was renamed into place: damage is not ours to delete).
fn remove_stale_hint(io: &dyn Io, dir: &Path, names: &[String]) -> Result<()> {
    let path = dir.join(HINT);
    let Ok(bytes) = io.read(&path) else {
        return Ok(());
    };
    let Ok((pos, _)) = hint::decode(&bytes) else {
        return Ok(());
    };
    let gone = |id: &u32| !names.iter().any(|n| parse_any_id(n) == Some(*id));
    if pos.segments.iter().any(gone) {
        io.remove(&path).map_err(io_err("unlink", &path))?;
        io.sync_dir(dir).map_err(io_err("fsync", dir))?;
    }
    Ok(())
}

/// Validate segment `i` from `from`; handle its damage (truncate a torn tail, quarantine, or
/// fail). A quarantined segment is marked with `scanned_from = usize::MAX`.
fn scan_segment(
    io: &dyn Io,
    dir: &Path,
    segs: &mut [Seg],
    i: usize,
    from: usize,
    repair: bool,
    report: &mut RecoveryReport,
) -> Result<()> {
    let Some(seg) = segs.get_mut(i) else {
        return Ok(());
    };
    let (frames, damage) = record::scan(&seg.bytes, from);
    seg.frames = frames;
    seg.scanned_from = Some(from);
    let Some(d) = damage else {
        // Checked: let its pages go (the replay faults back those it reads, a segment at a
        // time), so that a scan of the whole log does not hold the whole log resident.
        seg.bytes.release_pages();
        return Ok(());
    };
    if seg.newest_log && !d.followed_by_valid {
        // A torn tail: cut it off. A tail of zeros alone is reported apart: what a store that
        // preallocates wrote ahead of its data (`State::preallocate`), or a write lost before
        // its bytes landed.
        let dropped = seg.bytes.len() - d.offset;
        let file = io.open(&seg.path).map_err(io_err("open", &seg.path))?;
        file.set_len(d.offset as u64)
            .map_err(io_err("truncate", &seg.path))?;
        file.sync_data().map_err(io_err("fdatasync", &seg.path))?;
        let kept = seg.bytes.get(..d.offset).unwrap_or(&[]).to_vec();
        seg.bytes = Bytes::Owned(kept);
        let cut = Some((seg.name(), dropped as u64));
        if d.only_zeros {
            report.zeros_cut = cut;
        } else {
            report.truncated = cut;
        }
        return Ok(());
    }
    let path = seg.path.clone();
    let id = seg.id;
    let offset = d.offset as u64;
    seg.bytes = Bytes::Owned(Vec::new());
    damaged(io, dir, &path, id, offset, d.reason, repair, report)?;
    if let Some(seg) = segs.get_mut(i) {
        seg.scanned_from = Some(usize::MAX);
        seg.frames.clear();
    }
    Ok(())
}

/// A damaged segment: `Corruption`, or with repair, quarantine the whole file.
#[allow(clippy::too_many_arguments)]
fn damaged(
    io: &dyn Io,
    dir: &Path,
    path: &Path,
    id: u32,
    offset: u64,
    reason: String,
    repair: bool,
    report: &mut RecoveryReport,
) -> Result<()> {
    if !repair {
        return Err(Error::Corruption {
            file: path.to_path_buf(),
            offset,
            reason,
        });
    }
    let len = io.len(path).map_err(io_err("stat", path))?;
    let q = dir.join(quarantine_name(id));
    io.rename(path, &q).map_err(io_err("rename", path))?;
    io.sync_dir(dir).map_err(io_err("fsync", dir))?;
    report.quarantined.push((quarantine_name(id), len));
    Ok(())
}

/// `(seq, segment index, frame offset)` of every validated frame with seq > `after`, in seq
/// order.
fn frame_order(segs: &[Seg], after: u64) -> Result<Vec<(u64, usize, u32)>> {
    let mut idx: Vec<usize> = (0..segs.len())
        .filter(|&i| !segs[i].frames.is_empty())
        .collect();
    idx.sort_by_key(|&i| segs[i].frames.first().map_or(0, |f| f.seq));
    let total: usize = idx.iter().map(|&i| segs[i].frames.len()).sum();
    let mut out = Vec::with_capacity(total);
    for &i in &idx {
        out.extend(
            segs[i]
                .frames
                .iter()
                .filter(|f| f.seq > after)
                .map(|f| (f.seq, i, f.offset)),
        );
    }
    if out.windows(2).any(|w| w[0].0 >= w[1].0) {
        // A compaction writes a frame's history steps apart, with the frame's seq, to a
        // segment of steps (docs/format.md): a seq may appear once there and once elsewhere,
        // replayed in that order.
        let steps = |i: usize| segs[i].header.kind == KIND_STEPS;
        out.sort_unstable_by_key(|x| (x.0, steps(x.1)));
        if let Some(w) = out
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && steps(w[0].1) == steps(w[1].1))
        {
            let s = &segs[w[1].1];
            return Err(Error::Corruption {
                file: s.path.clone(),
                offset: w[1].2 as u64,
                reason: format!(
                    "sequence number {} also appears in {}",
                    w[1].0,
                    segs[w[0].1].name()
                ),
            });
        }
    }
    Ok(out)
}
