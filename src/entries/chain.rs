//! Reading a profile back through its chain: the newest record (where the index points) is
//! either full or a delta linking to the previous record, down to a full record. A read walks
//! at most `Options::chain_limit` records (the writer writes a full record before a chain
//! would grow past that), so it costs at most that many record reads. The depth a delta
//! carries may be higher than the records a read walks (it keeps counting across a forward,
//! below) but never above [`MAX_CHAIN_DEPTH`], where the writer writes a full record too; the
//! decoder refuses any chain deeper than that, whatever the bytes say.
//!
//! Every link is checked: a delta's depth must be one more than its predecessor's (down to a
//! full record at depth 0), and the record a link names must exist and decode. A broken link is
//! an error naming the segment file and offset, never a panic and never a profile silently
//! missing properties.
//!
//! A delta written while a compaction ran may link to a record in a segment that compaction
//! then removed: compaction copied that record (folded into a full record) and left a
//! [`Forwards`] pair, old place -> new place. A link found in the forwards is followed to the
//! new place, which must hold a full record (docs/architecture.md, "Compaction").

use super::profile::{self, Ids, Link, MAX_CHAIN_DEPTH, ProfileRecord};
use super::wire::DecodeError;
use crate::error::{Error, Result};
use crate::storage::{Location, Store};

/// Where the last compaction moved the records that deltas written during it link to (old
/// place -> new place, the new place always a full record): kept by the index, persisted as
/// `FORWARD` entries and in the hint, replaced by the next compaction (which folds every
/// chain that used them).
#[derive(Debug, Clone, Default)]
pub(crate) struct Forwards {
    /// The segments the old places are in (sorted; the inputs of one compaction, a few): a
    /// link into any other segment, nearly every link, is not looked up in the map.
    from: Vec<u32>,
    map: std::collections::HashMap<Location, Location, foldhash::fast::RandomState>,
}

impl Forwards {
    /// Where the record at `old` is now, if a compaction moved it after a delta linked to it.
    pub fn get(&self, old: &Location) -> Option<Location> {
        if self.from.binary_search(&old.segment).is_err() {
            return None;
        }
        self.map.get(old).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The pairs (old place, new place), in no order.
    pub fn iter(&self) -> impl Iterator<Item = (Location, Location)> + '_ {
        self.map.iter().map(|(&old, &new)| (old, new))
    }

    /// Add pairs.
    pub fn extend(&mut self, pairs: impl IntoIterator<Item = (Location, Location)>) {
        for (old, new) in pairs {
            if let Err(i) = self.from.binary_search(&old.segment) {
                self.from.insert(i, old.segment);
            }
            self.map.insert(old, new);
        }
    }

    /// Keep the pairs for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(Location, Location) -> bool) {
        self.map.retain(|old, new| keep(*old, *new));
        self.from = self.map.keys().map(|old| old.segment).collect();
        self.from.sort_unstable();
        self.from.dedup();
    }

    /// Heap bytes (estimated).
    pub fn heap_bytes(&self) -> usize {
        self.map.capacity() * 40 + self.from.capacity() * 4
    }
}

/// The record a link names: its new place if the last compaction moved it, with the depth
/// the record there must have (a forwarded record is full).
fn follow(forwards: &Forwards, prev: Location, depth: u32) -> (Location, u32) {
    match forwards.get(&prev) {
        Some(moved) => (moved, 0),
        None => (prev, depth),
    }
}

/// The error for a record at `loc` that did not decode.
pub(crate) fn decode_error(
    store: &Store,
    what: &'static str,
    loc: Location,
    e: DecodeError,
) -> Error {
    Error::Decode {
        what,
        file: store.segment_path(loc.segment),
        offset: u64::from(loc.offset) + e.at as u64,
        reason: e.reason.to_string(),
    }
}

fn broken(store: &Store, loc: Location, reason: String) -> Error {
    Error::Corruption {
        file: store.segment_path(loc.segment),
        offset: u64::from(loc.offset),
        reason,
    }
}

enum Step {
    /// The chain's full record was read: the profile, folded.
    Full(ProfileRecord),
    /// A delta was read; its link.
    Delta(Link),
}

/// Fold the record `bytes` into `fold`.
fn fold_step(fold: &mut profile::Fold, bytes: &[u8]) -> std::result::Result<Step, DecodeError> {
    if profile::is_delta(bytes) {
        fold.delta(bytes).map(Step::Delta)
    } else {
        fold.full(bytes).map(Step::Full)
    }
}

/// Check that the record `d` (read at `at`) may follow a record of depth `expect`.
fn check_depth(store: &Store, at: Location, got: u32, expect: Option<u32>) -> Result<()> {
    match expect {
        Some(e) if e != got => Err(broken(
            store,
            at,
            format!(
                "profile chain link holds a record of depth {got} where depth {e} was expected"
            ),
        )),
        _ => Ok(()),
    }
}

/// Read the profile whose newest record is at `head`: the record as of that record, the depth
/// of `head` (0 when it is a full record), which the next delta's depth follows, and the
/// number of deltas walked (less than the depth when a link was forwarded).
pub(crate) fn read_profile(
    store: &Store,
    forwards: &Forwards,
    head: Location,
) -> Result<(ProfileRecord, u32, u32)> {
    read_profile_keeping(store, forwards, head, None, &mut profile::Fold::default())
}

/// [`read_profile`] folding with `fold` (a partial one builds some states only,
/// `profile::Fold::only`), also appending each record read to `keep`, newest first, each
/// followed by its length (u32, little-endian): the writer cache keeps a chain read from the
/// log without encoding the profile again.
pub(crate) fn read_profile_keeping(
    store: &Store,
    forwards: &Forwards,
    head: Location,
    mut keep: Option<&mut Vec<u8>>,
    fold: &mut profile::Fold,
) -> Result<(ProfileRecord, u32, u32)> {
    let mut at = head;
    let mut expect: Option<u32> = None;
    let mut head_depth = None;
    loop {
        let step = match keep.as_deref_mut() {
            // Read straight into what is kept, and folded from there: no copy of each record
            // from the thread's read buffer (`storage::log::with_read_buf`).
            Some(keep) => {
                let from = keep.len();
                store.read_appending(at, keep)?;
                let bytes = &keep[from..];
                let len = bytes.len() as u32;
                let step = fold_step(fold, bytes);
                keep.extend_from_slice(&len.to_le_bytes());
                step
            }
            None => store.read(at, |bytes| fold_step(fold, bytes))?,
        };
        match step.map_err(|e| decode_error(store, "profile record", at, e))? {
            Step::Delta(link) => {
                check_depth(store, at, link.depth, expect)?;
                head_depth.get_or_insert(link.depth);
                let (next, depth) = follow(forwards, link.prev, link.depth - 1);
                expect = Some(depth);
                at = next;
            }
            Step::Full(rec) => {
                check_depth(store, at, 0, expect)?;
                return Ok((rec, head_depth.unwrap_or(0), fold.deltas()));
            }
        }
        if fold.deltas() > MAX_CHAIN_DEPTH {
            return Err(broken(
                store,
                at,
                "profile chain longer than any writer makes".into(),
            ));
        }
    }
}

/// The identifiers of the profile whose newest record is at `head`: from the newest record of
/// the chain that carries them (a delta carries all of them when its call changed any, so this
/// decodes record prefixes only).
pub(crate) fn read_ids(store: &Store, forwards: &Forwards, head: Location) -> Result<Ids> {
    let mut at = head;
    let mut expect: Option<u32> = None;
    for _ in 0..=MAX_CHAIN_DEPTH + 1 {
        let step = store.read(at, |bytes| {
            if profile::is_delta(bytes) {
                profile::delta_ids(bytes).map(|(link, ids)| (Some(link), ids))
            } else {
                profile::full_ids(bytes).map(|ids| (None, Some(ids)))
            }
        })?;
        let (link, ids) = step.map_err(|e| decode_error(store, "profile identifiers", at, e))?;
        let depth = link.map_or(0, |l: Link| l.depth);
        check_depth(store, at, depth, expect)?;
        if let Some(ids) = ids {
            return Ok(ids);
        }
        // No identifiers: a delta (a full record always has them).
        let Some(link) = link else {
            break;
        };
        let (next, depth) = follow(forwards, link.prev, link.depth - 1);
        expect = Some(depth);
        at = next;
    }
    Err(broken(
        store,
        at,
        "profile chain longer than any writer makes".into(),
    ))
}

#[cfg(test)]
mod forwards_tests {
    use super::*;

    fn loc(segment: u32, offset: u32) -> Location {
        Location {
            segment,
            offset,
            len: 10,
        }
    }

    #[test]
    fn forwards_answer_only_for_their_pairs_and_keep_their_segments_after_retain() {
        let mut f = Forwards::default();
        f.extend([
            (loc(3, 0), loc(9, 0)),
            (loc(3, 40), loc(9, 20)),
            (loc(5, 0), loc(9, 40)),
        ]);
        assert_eq!(f.get(&loc(3, 40)), Some(loc(9, 20)));
        assert_eq!(f.get(&loc(3, 41)), None);
        assert_eq!(f.get(&loc(4, 0)), None);
        f.retain(|old, _| old.segment != 3);
        assert_eq!(f.len(), 1);
        assert_eq!(f.from, vec![5]);
        assert_eq!(f.get(&loc(3, 0)), None);
        assert_eq!(f.get(&loc(5, 0)), Some(loc(9, 40)));
        let mut pairs: Vec<_> = f.iter().collect();
        pairs.sort_by_key(|p| (p.0.segment, p.0.offset));
        assert_eq!(pairs, vec![(loc(5, 0), loc(9, 40))]);
    }
}
