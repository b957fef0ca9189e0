//! What the comparison reads about its own (child) process and its files: `/proc/self/io`,
//! `/proc/self/status` (peak RSS, and anonymous / file-backed RSS sampled while the run goes),
//! and allocated disk bytes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// `/proc/self/io`: (`write_bytes`, `wchar`).
pub fn proc_io() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("write_bytes:"), field("wchar:"))
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn status() -> String {
    std::fs::read_to_string("/proc/self/status").unwrap_or_default()
}

/// Peak resident set (`VmHWM`), bytes.
pub fn peak_rss() -> u64 {
    status_field(&status(), "VmHWM:")
}

/// Peak resident set (`VmHWM`) of process `pid` so far, bytes (0 once it has exited).
pub fn peak_rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status_field(&status, "VmHWM:")
}

/// (`RssAnon`, `RssFile` + `RssShmem`) now, bytes.
fn rss_split() -> (u64, u64) {
    let s = status();
    (
        status_field(&s, "RssAnon:"),
        status_field(&s, "RssFile:") + status_field(&s, "RssShmem:"),
    )
}

/// Samples anonymous and file-backed RSS every 10 ms on a thread of its own and keeps the
/// split at the sample where their sum peaked (the kernel keeps no peak of each apart).
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, u64)>,
}

impl RssSampler {
    pub fn start() -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut best = (0, 0);
            loop {
                let now = rss_split();
                if now.0 + now.1 > best.0 + best.1 {
                    best = now;
                }
                if flag.load(Ordering::Relaxed) {
                    return best;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssSampler { stop, thread }
    }

    /// (anonymous, file-backed) RSS at the sampled peak, bytes.
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

/// Allocated bytes under `p`, as `du` (fjall preallocates its journal sparsely).
pub fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => std::os::unix::fs::MetadataExt::blocks(&m) * 512,
            Err(_) => 0,
        })
        .sum()
}

/// CPU time so far of this process's threads whose name (`/proc/self/task/*/comm`, at most 15
/// bytes) starts with `prefix`, summed: the first field of each thread's `schedstat`
/// (nanoseconds on a CPU). Threads that ended are not counted.
pub fn threads_cpu(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ns = 0u64;
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(ns)
}
