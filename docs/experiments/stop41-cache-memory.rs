// Not built with the crate (it calls glibc's `malloc_stats`, which needs `unsafe`): the
// program behind docs/performance.md round 24's heap figures. To rerun:
//   cp docs/experiments/stop41-cache-memory.rs examples/cache_memory.rs
//   cargo run --release --example cache_memory -- 32 1000000 c   # cache MiB, calls, c: compaction on
//   cargo run --release --example cache_memory -- 0 1000000 c
// It prints RSS and the store's own counts every 100,000 calls, then glibc's `malloc_stats`
// on stderr ("in use bytes" of "Total"). Runs on the system allocator, as `compare` does.
use profiledb::workload::{W1, W1Config};
use profiledb::{Db, Durability, Options, ProcessMemory};

unsafe extern "C" {
    fn malloc_stats();
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mb: usize = a[1].parse().unwrap();
    let calls: u64 = a[2].parse().unwrap();
    let compact = a.get(3).is_some_and(|s| s == "c");
    let dir = std::path::PathBuf::from("/tmp/cache_memory");
    let _ = std::fs::remove_dir_all(&dir);
    let options = Options {
        profile_cache_bytes: mb << 20,
        compaction_ratio: if compact { Options::default().compaction_ratio } else { None },
        ..Options::default()
    };
    let db = Db::open(&dir, options).unwrap();
    for (i, m) in W1::new(W1Config::new(1, calls)).enumerate() {
        db.apply_with(&m, Durability::Buffered).unwrap();
        if (i + 1) % 100_000 == 0 {
            let s = db.stats();
            let mem = ProcessMemory::now();
            let loads = (s.profile_cache_hits + s.profile_cache_misses).max(1);
            println!(
                "{} anon {:.1} MB peak {:.1} MB | cache {:.1} index {:.1} dedupe {:.1} MB | hits {:.3}",
                i + 1,
                mem.rss_anon_bytes as f64 / 1e6,
                mem.peak_rss_bytes as f64 / 1e6,
                s.profile_cache_bytes as f64 / 1e6,
                s.index_bytes as f64 / 1e6,
                s.dedupe_bytes as f64 / 1e6,
                s.profile_cache_hits as f64 / loads as f64,
            );
        }
    }
    // SAFETY: glibc's `malloc_stats` takes no arguments and only prints to stderr.
    unsafe { malloc_stats() };
}
