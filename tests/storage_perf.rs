//! One-shot measurements (not a test of speed: nothing is asserted about time). Run in release:
//! `cargo test --release --test storage_perf -- --ignored --nocapture`
//! `PROFILEDB_PERF_RECORDS` changes the record count (default 1,000,000).

#[path = "support/storage.rs"]
mod storage_support;

use std::sync::Arc;
use std::time::Instant;

use profiledb::Durability;
use profiledb::storage::Entry;
use profiledb::storage::io::RealIo;
use storage_support::*;

fn records() -> u64 {
    std::env::var("PROFILEDB_PERF_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn payload(i: u64) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; 265];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn rate(n: u64, t: Instant) -> String {
    let s = t.elapsed().as_secs_f64();
    format!("{n} in {s:.3} s = {:.0}/s", n as f64 / s)
}

#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn measure_append_and_reopen() {
    let n = records();
    let tmp =
        tempfile::tempdir_in(std::env::var("PROFILEDB_PERF_DIR").unwrap_or(".".into())).unwrap();
    let opts = |d| options(Arc::new(RealIo), 64 << 20, d);

    // Buffered, one thread, one sync at the end.
    let dir = tmp.path().join("buffered");
    let (s, _) = open(&dir, opts(Durability::Buffered)).unwrap();
    let t = Instant::now();
    for i in 0..n {
        s.append(&[Entry {
            kind: PUT,
            id: i,
            data: &payload(i),
        }])
        .unwrap();
    }
    s.sync().unwrap();
    println!(
        "append buffered (265-byte records, 1 thread): {}",
        rate(n, t)
    );
    s.close().unwrap();

    // Group commit (10 ms / 1000), one thread, callers do not wait.
    let dir = tmp.path().join("group");
    let (s, mut r) = open(&dir, opts(Durability::group_commit())).unwrap();
    let t = Instant::now();
    for i in 0..n {
        let a = s
            .append(&[Entry {
                kind: PUT,
                id: i,
                data: &payload(i),
            }])
            .unwrap();
        r.put(i, a.locations[0]);
        r.last_seq = a.seq;
    }
    s.sync().unwrap();
    println!(
        "append group commit 10ms/1000, 1 thread, no wait: {} ({} fdatasyncs)",
        rate(n, t),
        s.stats().syncs
    );

    // Reopen with and without a hint (1 entry per record, upper layer = HashMap).
    hint(&s, &r).unwrap();
    s.close().unwrap();
    drop(r);
    let t = Instant::now();
    let (s, r) = open(&dir, opts(Durability::Buffered)).unwrap();
    let with_hint = t.elapsed();
    let hint_micros = s.stats().recovery.micros;
    assert!(s.stats().recovery.used_hint);
    assert_eq!(r.map.len() as u64, n);
    s.close().unwrap();
    drop(r);
    std::fs::remove_file(dir.join("HINT")).unwrap();
    let t = Instant::now();
    let (s, r) = open(&dir, opts(Durability::Buffered)).unwrap();
    let without = t.elapsed();
    assert_eq!(r.map.len() as u64, n);
    println!(
        "reopen {n} records (test upper layer = HashMap): with hint {:.3} s, full scan {:.3} s; \
         storage's own share (RecoveryReport::micros, replay callbacks included): {} us / {} us",
        with_hint.as_secs_f64(),
        without.as_secs_f64(),
        hint_micros,
        s.stats().recovery.micros
    );
    s.close().unwrap();
    drop(r);

    // The same two opens with an upper layer that does nothing: storage's own cost.
    struct Nothing(u64);
    impl profiledb::storage::Replay for Nothing {
        fn load_snapshot(&mut self, p: &[u8]) -> profiledb::Result<()> {
            self.0 += p.len() as u64;
            Ok(())
        }
        fn reset(&mut self) {}
        fn apply(
            &mut self,
            _: u64,
            e: &[profiledb::storage::StoredEntry<'_>],
        ) -> profiledb::Result<()> {
            self.0 += e.len() as u64;
            Ok(())
        }
    }
    let (s, r) = open(&dir, opts(Durability::Buffered)).unwrap();
    hint(&s, &r).unwrap();
    s.close().unwrap();
    drop(r);
    let mut times = Vec::new();
    for with_hint in [true, false] {
        if !with_hint {
            std::fs::remove_file(dir.join("HINT")).unwrap();
        }
        let t = Instant::now();
        let mut nothing = Nothing(0);
        let s = profiledb::storage::Store::open(&dir, opts(Durability::Buffered), &mut nothing)
            .unwrap();
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(s.stats().recovery.used_hint, with_hint);
        s.close().unwrap();
    }
    println!(
        "reopen {n} records, storage alone (no-op upper layer): with hint {:.3} s, full scan {:.3} s",
        times[0], times[1]
    );

    // Durable acknowledgements: SyncEach one thread, and 64 concurrent waiting callers.
    for (threads, per) in [(1u64, 5_000u64), (64, 2_000)] {
        for (name, d) in [
            ("sync each", Durability::SyncEach),
            ("group commit (waiting)", Durability::group_commit()),
        ] {
            let dir = tmp.path().join(format!("durable-{threads}-{name}"));
            let (s, _) = open(&dir, opts(d)).unwrap();
            let t = Instant::now();
            std::thread::scope(|sc| {
                for th in 0..threads {
                    let s = &s;
                    sc.spawn(move || {
                        for i in 0..per {
                            let id = th * per + i;
                            let a = s
                                .append(&[Entry {
                                    kind: PUT,
                                    id,
                                    data: &payload(id),
                                }])
                                .unwrap();
                            s.wait_durable(a.seq, d).unwrap();
                        }
                    });
                }
            });
            println!(
                "durable acks, {name}, {threads} threads: {} ({} fdatasyncs)",
                rate(threads * per, t),
                s.stats().syncs
            );
            s.close().unwrap();
        }
    }
}
