//! State-machine test of the storage engine against a `BTreeMap` model: put / delete / get /
//! sync / compact / hint / reopen / crash (power loss drops what was never synced).

#[path = "support/storage.rs"]
mod storage_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use profiledb::Durability;
use profiledb::storage::Store;
use profiledb::storage::io::{FaultyIo, UnsyncedTail};
use proptest::prelude::*;
use storage_support::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u64, usize),
    Delete(u64),
    Get(u64),
    Sync,
    Compact,
    Hint,
    Reopen,
    Crash(UnsyncedTail),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..16, 0usize..300).prop_map(|(id, len)| Op::Put(id, len)),
        3 => (0u64..16).prop_map(Op::Delete),
        3 => (0u64..16).prop_map(Op::Get),
        1 => Just(Op::Sync),
        1 => Just(Op::Compact),
        1 => Just(Op::Hint),
        1 => Just(Op::Reopen),
        2 => prop_oneof![
            Just(UnsyncedTail::Drop),
            (0usize..400).prop_map(UnsyncedTail::Keep),
            (0usize..400).prop_map(UnsyncedTail::Zeros),
            (0usize..400).prop_map(UnsyncedTail::Garbage),
        ]
        .prop_map(Op::Crash),
    ]
}

struct Harness {
    root: tempfile::TempDir,
    dir: PathBuf,
    generation: u32,
    io: Arc<FaultyIo>,
    store: Option<Store>,
    r: MapReplay,
    model: BTreeMap<u64, Vec<u8>>,
    /// States the store may recover to after a crash (the last durable one first).
    possible: Vec<BTreeMap<u64, Vec<u8>>>,
    counter: u64,
}

impl Harness {
    fn new() -> Harness {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("g0");
        let io = FaultyIo::new();
        let (store, r) = open(
            &dir,
            options(Arc::new(io.clone()), 1024, Durability::Buffered),
        )
        .unwrap();
        Harness {
            root,
            dir,
            generation: 0,
            io,
            store: Some(store),
            r,
            model: BTreeMap::new(),
            possible: vec![BTreeMap::new()],
            counter: 0,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn durable_now(&mut self) {
        self.possible = vec![self.model.clone()];
    }

    fn verify(&self) {
        assert_eq!(contents(self.store(), &self.r), self.model);
        assert!(self.store().check().unwrap().is_empty());
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Put(id, len) => {
                self.counter += 1;
                let mut v = format!("v{}:{id}:", self.counter).into_bytes();
                v.resize(v.len() + len, b'a' + (self.counter % 26) as u8);
                let store = self.store.take().unwrap();
                put(&store, &mut self.r, *id, &v);
                self.store = Some(store);
                self.model.insert(*id, v);
                self.possible.push(self.model.clone());
            }
            Op::Delete(id) => {
                let store = self.store.take().unwrap();
                delete(&store, &mut self.r, *id);
                self.store = Some(store);
                self.model.remove(id);
                self.possible.push(self.model.clone());
            }
            Op::Get(id) => {
                let got = self
                    .r
                    .map
                    .get(&(PUT, *id))
                    .map(|l| self.store().read(*l, |b| b.to_vec()).unwrap());
                assert_eq!(got.as_ref(), self.model.get(id));
                // The same bytes appended after what a buffer holds.
                if let Some(l) = self.r.map.get(&(PUT, *id)) {
                    let mut out = b"before".to_vec();
                    self.store().read_appending(*l, &mut out).unwrap();
                    assert_eq!(&out[..6], b"before");
                    assert_eq!(Some(&out[6..].to_vec()), self.model.get(id));
                }
            }
            Op::Sync => {
                self.store().sync().unwrap();
                self.durable_now();
            }
            Op::Compact => {
                let store = self.store.take().unwrap();
                compact(&store, &mut self.r).unwrap();
                self.store = Some(store);
                self.verify();
            }
            Op::Hint => {
                hint(self.store(), &self.r).unwrap();
                self.durable_now();
            }
            Op::Reopen => {
                self.store.take().unwrap().close().unwrap();
                let (s, r) = open(
                    &self.dir,
                    options(Arc::new(self.io.clone()), 1024, Durability::Buffered),
                )
                .unwrap();
                self.store = Some(s);
                self.r = r;
                self.durable_now();
                self.verify();
            }
            Op::Crash(tail) => {
                self.generation += 1;
                let next = self.root.path().join(format!("g{}", self.generation));
                self.io.power_loss(&self.dir, &next, *tail).unwrap();
                drop(self.store.take());
                self.dir = next;
                self.io = FaultyIo::new();
                let (s, r) = open(
                    &self.dir,
                    options(Arc::new(self.io.clone()), 1024, Durability::Buffered),
                )
                .unwrap();
                self.store = Some(s);
                self.r = r;
                let got = contents(self.store(), &self.r);
                assert!(
                    self.possible.contains(&got),
                    "recovered state is not a prefix of the history: {got:?}\nmodel {:?}",
                    self.model
                );
                self.model = got;
                self.durable_now();
                assert!(self.store().check().unwrap().is_empty());
            }
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_btreemap_model(ops in proptest::collection::vec(op(), 1..80)) {
        let mut h = Harness::new();
        for op in &ops {
            h.step(op);
        }
        h.verify();
        h.store.take().unwrap().close().unwrap();
        let _ = &h.root;
    }
}
