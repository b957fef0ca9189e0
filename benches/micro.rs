//! Micro-benchmarks of the identify hot path, through the public API, on W1 calls
//! (docs/benchmarks.md): JSON parse, validation, property-state apply / merge /
//! encode / decode, identify end to end on a `Db` (Buffered durability), and reads by user id
//! and email. Run with `cargo bench --bench micro`; kept short (small samples) on purpose.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use profiledb::profile::props::{PropOp, PropState};
use profiledb::profile::validate::validate;
use profiledb::workload::{self, W1, W1Config};
use profiledb::{Db, Durability, Message, Options, Selector, Timestamp, Value};

/// `n` W1 calls as JSON lines (without the newline).
fn json_lines(n: u64) -> Vec<Vec<u8>> {
    let mut w1 = W1::new(W1Config::new(1, n));
    let mut lines = Vec::new();
    let mut line = Vec::new();
    while w1.write_json_line(&mut line) {
        line.pop();
        lines.push(std::mem::take(&mut line));
    }
    lines
}

fn short<'c>(
    c: &'c mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'c, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(1));
    g
}

fn message(c: &mut Criterion) {
    let lines = json_lines(1024);
    let messages: Vec<Message> = W1::new(W1Config::new(1, 1024)).collect();
    let options = Options::default();
    let mut g = short(c, "message");
    let mut i = 0usize;
    g.bench_function("parse_w1_line", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(Message::parse(black_box(&lines[i])).unwrap())
        })
    });
    // The parser `parse_w1_line` replaced: a `serde_json::Value`, then `Message::from_json`.
    g.bench_function("parse_w1_line_via_value", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let v: serde_json::Value = serde_json::from_slice(black_box(&lines[i])).unwrap();
            black_box(Message::from_json(&v).unwrap())
        })
    });
    g.bench_function("validate_w1", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            validate(black_box(&messages[i]), &options).unwrap()
        })
    });
    g.bench_function("generate_w1_call", |b| {
        let mut w1 = W1::new(W1Config::new(1, u64::MAX));
        b.iter(|| black_box(w1.next()))
    });
    g.finish();
}

/// The ten set operations of a W1 call, and the properties a hot profile accumulates.
fn props(c: &mut Criterion) {
    let calls: Vec<Message> = W1::new(W1Config::new(1, 64)).collect();
    let ops: Vec<Vec<PropOp>> = calls
        .iter()
        .map(|m| match m {
            Message::Identify(call) => call
                .traits
                .iter()
                .map(|(_, v)| PropOp::Set(v.clone().unwrap()))
                .collect(),
            _ => unreachable!(),
        })
        .collect();
    // A profile's 40 properties, each set a few times.
    let profile = |offset: i64| -> Vec<PropState> {
        (0..40)
            .map(|k| {
                let mut s = PropState::default();
                for j in 0..3i64 {
                    let v = if k % 2 == 0 {
                        Value::Str(format!("value-{k}-{j}-abcdefgh").into())
                    } else {
                        Value::Int(k * 1000 + j)
                    };
                    s.apply(
                        &PropOp::Set(v),
                        Timestamp(offset + j * 1_000),
                        (offset + j) as u64,
                    );
                }
                s
            })
            .collect()
    };
    let a = profile(1_767_225_600_000_000);
    let b = profile(1_767_225_600_500_000);
    let config = bincode::config::standard();
    let encoded = bincode::encode_to_vec(&a, config).unwrap();

    let mut g = short(c, "props");
    let mut i = 0usize;
    g.bench_function("apply_10_sets", |bch| {
        let mut state: Vec<PropState> = vec![PropState::default(); 10];
        let mut order = 0u64;
        bch.iter(|| {
            i = (i + 1) & 63;
            order += 1;
            for (s, op) in state.iter_mut().zip(&ops[i]) {
                black_box(s.apply(op, Timestamp(1_767_225_600_000_000 + order as i64), order));
            }
        })
    });
    g.bench_function("merge_40_props", |bch| {
        bch.iter_batched_ref(
            || a.clone(),
            |x| {
                for (s, o) in x.iter_mut().zip(&b) {
                    s.merge(o);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("value_40_props", |bch| {
        bch.iter(|| {
            for s in &a {
                black_box(s.value());
            }
        })
    });
    g.bench_function("encode_40_props_bincode", |bch| {
        let mut buf = Vec::with_capacity(4096);
        bch.iter(|| {
            buf.clear();
            bincode::encode_into_std_write(black_box(&a), &mut buf, config).unwrap();
            black_box(buf.len())
        })
    });
    g.bench_function("decode_40_props_bincode", |bch| {
        bch.iter(|| {
            let (v, _): (Vec<PropState>, usize) =
                bincode::decode_from_slice(black_box(&encoded), config).unwrap();
            black_box(v)
        })
    });
    g.finish();
}

fn buffered() -> Options {
    Options {
        durability: Durability::Buffered,
        compaction_ratio: None,
        ..Options::default()
    }
}

/// identify end to end on a `Db` (validation, resolution, record building, append, index).
fn identify(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), buffered()).unwrap();
    // Warm the store with 20,000 W1 calls over 4,000 people, then keep going on the same people.
    let config = W1Config::new(1, u64::MAX).with_people(4_000);
    let mut w1 = W1::new(config);
    for m in w1.by_ref().take(20_000) {
        db.apply(&m).unwrap();
    }
    let mut g = short(c, "identify");
    g.bench_function("apply_w1_buffered", |b| {
        b.iter_batched(
            || w1.next().unwrap(),
            |m| black_box(db.apply_with(&m, Durability::Buffered).unwrap()),
            BatchSize::SmallInput,
        )
    });
    let mut line = Vec::new();
    g.bench_function("apply_json_w1_buffered", |b| {
        b.iter_batched(
            || {
                line.clear();
                w1.write_json_line(&mut line);
                line.pop();
                line.clone()
            },
            |l: Vec<u8>| black_box(db.apply_json(&l).unwrap()),
            BatchSize::SmallInput,
        )
    });
    let mut p = 0u64;
    g.bench_function("get_by_user_id", |b| {
        let ids: Vec<Selector> = (0..1024)
            .map(|p| Selector::UserId(workload::user_id(p)))
            .collect();
        b.iter(|| {
            p = (p + 1) & 1023;
            black_box(db.get(&ids[p as usize]).unwrap())
        })
    });
    g.bench_function("get_by_email", |b| {
        let ids: Vec<Selector> = (0..1024)
            .map(|p| Selector::Email(workload::email(p)))
            .collect();
        b.iter(|| {
            p = (p + 1) & 1023;
            black_box(db.get(&ids[p as usize]).unwrap())
        })
    });
    g.bench_function("get_missing_user_id", |b| {
        let id = Selector::UserId("user-nobody".into());
        b.iter(|| black_box(db.get(&id).unwrap()))
    });
    g.finish();
    db.close().unwrap();
}

criterion_group!(benches, message, props, identify);
criterion_main!(benches);
