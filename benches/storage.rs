//! Storage engine micro-benchmarks: append throughput in the three durability modes, and frame
//! encode / decode. Run with `cargo bench --bench storage`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use profiledb::Durability;
use profiledb::storage::io::RealIo;
use profiledb::storage::{Entry, Location, Replay, Store, StoreOptions, StoredEntry};

struct Nothing;
impl Replay for Nothing {
    fn load_snapshot(&mut self, _: &[u8]) -> profiledb::Result<()> {
        Ok(())
    }
    fn reset(&mut self) {}
    fn apply(&mut self, _: u64, _: &[StoredEntry<'_>]) -> profiledb::Result<()> {
        Ok(())
    }
}

fn store(dir: &std::path::Path, durability: Durability) -> Store {
    let opts = StoreOptions {
        segment_size: 64 << 20,
        durability,
        repair: false,
        create: true,
        io: Arc::new(RealIo),
    };
    Store::open(dir, opts, &mut Nothing).unwrap()
}

fn payload() -> Vec<u8> {
    (0..265u32).map(|i| (i * 7) as u8).collect()
}

fn append(c: &mut Criterion) {
    let data = payload();
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    for (name, durability) in [
        ("buffered", Durability::Buffered),
        ("group_commit_no_wait", Durability::group_commit()),
        ("sync_each", Durability::SyncEach),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), durability);
        let mut id = 0u64;
        if matches!(durability, Durability::SyncEach) {
            g.measurement_time(Duration::from_secs(3)).sample_size(20);
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                id += 1;
                let a = s
                    .append(&[Entry {
                        kind: 1,
                        id,
                        data: &data,
                    }])
                    .unwrap();
                if matches!(durability, Durability::SyncEach) {
                    s.wait_durable(a.seq, durability).unwrap();
                }
            })
        });
        s.close().unwrap();
    }
    g.finish();
}

fn codec(c: &mut Criterion) {
    let data = payload();
    let entries = [
        Entry {
            kind: 1,
            id: 42,
            data: &data,
        },
        Entry {
            kind: 3,
            id: 43,
            data: b"index entry",
        },
    ];
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(512),
            |buf| profiledb::storage::encode_frame(buf, 7, &entries).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let mut frame = Vec::new();
    profiledb::storage::encode_frame(&mut frame, 7, &entries).unwrap();
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut n = 0usize;
            profiledb::storage::decode_frame(std::hint::black_box(&frame), |_, _, d| n += d.len())
                .unwrap();
            n
        })
    });
    g.finish();
    let _ = Location::default();
}

criterion_group!(benches, append, codec);
criterion_main!(benches);
