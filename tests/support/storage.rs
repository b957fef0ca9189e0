//! Shared helpers of the storage tests: a tiny upper layer that keeps `(kind, id) -> Location`.
//! Kind 1 = put, kind 2 = delete tombstone for id.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use profiledb::storage::io::Io;
use profiledb::storage::{Entry, Location, Replay, Store, StoreOptions, StoredEntry};
use profiledb::{Durability, Error, Result};

pub const PUT: u8 = 1;
pub const DEL: u8 = 2;

/// The test's upper layer: its index and the frames it saw.
#[derive(Default, Debug, Clone)]
pub struct MapReplay {
    pub map: HashMap<(u8, u64), Location>,
    pub last_seq: u64,
    pub frames: u64,
    pub snapshots: u64,
    /// Make `load_snapshot` fail (to test the fallback).
    pub refuse_snapshot: bool,
}

impl MapReplay {
    pub fn put(&mut self, id: u64, loc: Location) {
        self.map.insert((PUT, id), loc);
    }
    pub fn delete(&mut self, id: u64) {
        self.map.remove(&(PUT, id));
    }
    pub fn is_live(&self, e: &StoredEntry<'_>) -> bool {
        e.kind == PUT && self.map.get(&(PUT, e.id)) == Some(&e.location)
    }
    pub fn snapshot(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.last_seq.to_le_bytes());
        for ((k, id), l) in &self.map {
            b.push(*k);
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&l.segment.to_le_bytes());
            b.extend_from_slice(&l.offset.to_le_bytes());
            b.extend_from_slice(&l.len.to_le_bytes());
        }
        b
    }
    /// Apply the relocations of a compaction.
    pub fn relocate(&mut self, moved: &profiledb::storage::Moves) {
        for (k, id, old, new) in moved.iter() {
            if let Some(l) = self.map.get_mut(&(k, id))
                && *l == old
            {
                *l = new;
            }
        }
    }
}

impl Replay for MapReplay {
    fn load_snapshot(&mut self, payload: &[u8]) -> Result<()> {
        if self.refuse_snapshot {
            return Err(Error::Malformed("refused by test".into()));
        }
        self.snapshots += 1;
        self.last_seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
        for c in payload[8..].chunks(21) {
            let id = u64::from_le_bytes(c[1..9].try_into().unwrap());
            let l = Location {
                segment: u32::from_le_bytes(c[9..13].try_into().unwrap()),
                offset: u32::from_le_bytes(c[13..17].try_into().unwrap()),
                len: u32::from_le_bytes(c[17..21].try_into().unwrap()),
            };
            self.map.insert((c[0], id), l);
        }
        Ok(())
    }
    fn reset(&mut self) {
        let refuse = self.refuse_snapshot;
        *self = MapReplay::default();
        self.refuse_snapshot = refuse;
    }
    fn apply(&mut self, seq: u64, entries: &[StoredEntry<'_>]) -> Result<()> {
        assert!(
            seq > self.last_seq,
            "replay out of order: {seq} after {}",
            self.last_seq
        );
        self.last_seq = seq;
        self.frames += 1;
        for e in entries {
            if e.kind == DEL {
                self.delete(e.id);
            } else {
                self.map.insert((e.kind, e.id), e.location);
            }
        }
        Ok(())
    }
}

pub fn options(io: Arc<dyn Io>, segment_size: u64, durability: Durability) -> StoreOptions {
    StoreOptions {
        segment_size,
        durability,
        repair: false,
        create: true,
        io,
    }
}

pub fn open(dir: &Path, opts: StoreOptions) -> Result<(Store, MapReplay)> {
    let mut r = MapReplay::default();
    let s = Store::open(dir, opts, &mut r)?;
    Ok((s, r))
}

/// Put `data` under `id`; updates the replay map.
pub fn put(store: &Store, r: &mut MapReplay, id: u64, data: &[u8]) -> u64 {
    let a = store
        .append(&[Entry {
            kind: PUT,
            id,
            data,
        }])
        .unwrap();
    r.put(id, a.locations[0]);
    r.last_seq = a.seq;
    a.seq
}

pub fn delete(store: &Store, r: &mut MapReplay, id: u64) -> u64 {
    let a = store
        .append(&[Entry {
            kind: DEL,
            id,
            data: &[],
        }])
        .unwrap();
    r.delete(id);
    r.last_seq = a.seq;
    a.seq
}

/// Every live put, read back through the store.
pub fn contents(store: &Store, r: &MapReplay) -> BTreeMap<u64, Vec<u8>> {
    r.map
        .iter()
        .filter(|((k, _), _)| *k == PUT)
        .map(|((_, id), l)| (*id, store.read(*l, |b| b.to_vec()).unwrap()))
        .collect()
}

/// Prepare + commit a compaction and relocate the replay map.
pub fn compact(store: &Store, r: &mut MapReplay) -> Result<()> {
    let snapshot = r.clone();
    let prepared = store.prepare_compaction(&mut |e| snapshot.is_live(e))?;
    if let Some(p) = prepared {
        let rel = store.commit_compaction(p)?;
        r.relocate(&rel.moved);
    }
    Ok(())
}

/// Write a hint with the replay map as payload.
pub fn hint(store: &Store, r: &MapReplay) -> Result<()> {
    let pos = store.hint_position()?;
    store.write_hint(&pos, &r.snapshot())
}

/// Real I/O, buffered, `segment_size`-byte segments.
pub fn real(segment_size: u64) -> StoreOptions {
    options(
        Arc::new(profiledb::storage::io::RealIo),
        segment_size,
        Durability::Buffered,
    )
}

/// The payload of record `i`.
pub fn data(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat((i as usize * 7) % 23)).into_bytes()
}

/// Writes `n` frames (every third holds two entries); returns the frame boundaries.
pub fn write_frames(dir: &Path, n: u64, segment_size: u64) -> Vec<u64> {
    let (store, mut r) = open(dir, real(segment_size)).unwrap();
    let mut bounds = vec![32u64];
    for i in 0..n {
        let d = data(i);
        if i % 3 == 2 {
            let a = store
                .append(&[
                    profiledb::storage::Entry {
                        kind: PUT,
                        id: i,
                        data: &d,
                    },
                    profiledb::storage::Entry {
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

/// Copy a directory's files.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The path of segment `id`.
pub fn seg(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:010}.seg"))
}
