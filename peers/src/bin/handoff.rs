//! What splitting the writer across two threads could give on this machine, before the
//! writer is restructured for it (docs/write-path-next.md, "Where it stands (stop 63)").
//!
//! A synthetic call: a first half of `--first-ns` of work that writes `--bytes` of state, a
//! second half of `--second-ns` that reads that state and writes a small completion the
//! first half reads back before its next call (the index commit the next call must see),
//! and a background thread spending `--background-ns` a call (the compaction) as it keeps up
//! with the calls. `serial` runs both halves on the calling thread (the writer today);
//! `pipeline` runs the second half on a thread of its own, the halves handing calls over
//! through a ring of `--depth` slots, each side spinning for `--spin` rounds before it
//! parks (woken by the other side when it said it sleeps, or after 50 us); `coop` is
//! `pipeline` with the background's work done by the second half's thread, in slices taken
//! when no call waits (two busy threads on the two cores instead of three). It prints calls
//! a second for each mode, and the ratios to `serial`. The work is arithmetic (no memory
//! traffic but the handed-over state): a ceiling for the real writer's halves, not a
//! forecast.
//!
//! `cargo run --release --manifest-path peers/Cargo.toml --bin handoff -- --calls 1000000`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    calls: u64,
    first_ns: u64,
    second_ns: u64,
    background_ns: u64,
    bytes: usize,
    depth: usize,
    spin: u32,
    rounds: u32,
}

fn args() -> Args {
    let mut a = Args {
        calls: 1_000_000,
        first_ns: 3_300,
        second_ns: 3_300,
        background_ns: 2_400,
        bytes: 4_096,
        depth: 64,
        spin: 20_000,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"));
        match flag.as_str() {
            "--calls" => a.calls = v,
            "--first-ns" => a.first_ns = v,
            "--second-ns" => a.second_ns = v,
            "--background-ns" => a.background_ns = v,
            "--bytes" => a.bytes = v as usize,
            "--depth" => a.depth = v as usize,
            "--spin" => a.spin = v as u32,
            "--rounds" => a.rounds = v as u32,
            _ => panic!("unknown flag {flag}"),
        }
    }
    a
}

/// Work of about `ns` nanoseconds: a dependent chain of multiplications, calibrated once.
#[derive(Clone, Copy)]
struct Work {
    per_ns: f64,
}

impl Work {
    fn calibrate() -> Work {
        let n = 50_000_000u64;
        let t = Instant::now();
        black_box(spin(n, 1));
        let per_ns = n as f64 / t.elapsed().as_nanos() as f64;
        Work { per_ns }
    }
    fn run(&self, ns: u64, seed: u64) -> u64 {
        spin((ns as f64 * self.per_ns) as u64, seed)
    }
}

fn spin(n: u64, seed: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    x
}

/// The background thread: spends `ns` a call for every call the writer finished, as the
/// compaction spends its CPU in proportion to the calls written.
fn background(work: Work, ns: u64, done: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> u64 {
    let mut seen = 0;
    let mut acc = 0;
    while !stop.load(Ordering::Relaxed) {
        let now = done.load(Ordering::Relaxed);
        if now == seen {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // In batches, as a compaction takes a sealed segment at a time.
        let batch = (now - seen).min(1_000);
        acc ^= work.run(ns * batch, seen);
        seen += batch;
    }
    acc
}

/// One call's state handed from the first half to the second. The ring's counters hand a
/// slot to one side at a time, so its lock is never contended (and no `unsafe` is needed).
struct Slot {
    state: Mutex<Vec<u64>>,
}

/// Spin `spins` rounds, then park until woken (`Waiter::wake`) or 50 us pass.
fn wait(spins: u32, sleeping: &AtomicBool, mut ready: impl FnMut() -> bool) {
    let mut n = 0u32;
    while !ready() {
        if n < spins {
            std::hint::spin_loop();
            n += 1;
        } else {
            sleeping.store(true, Ordering::SeqCst);
            if !ready() {
                std::thread::park_timeout(Duration::from_micros(50));
            }
            sleeping.store(false, Ordering::SeqCst);
        }
    }
}

/// Wake `thread` if it said it sleeps.
fn wake(sleeping: &AtomicBool, thread: &std::thread::Thread) {
    if sleeping.load(Ordering::SeqCst) {
        thread.unpark();
    }
}

fn serial(a: &Args, work: Work, done: &AtomicU64) -> Duration {
    let mut state = vec![0u64; a.bytes / 8];
    let t = Instant::now();
    let mut acc = 0u64;
    for call in 0..a.calls {
        acc ^= work.run(a.first_ns, call);
        for (i, w) in state.iter_mut().enumerate() {
            *w = acc ^ i as u64;
        }
        acc ^= work.run(a.second_ns, acc);
        acc ^= state.iter().fold(0, |x, y| x ^ y);
        done.store(call + 1, Ordering::Relaxed);
    }
    black_box(acc);
    t.elapsed()
}

/// `coop`: the second thread also does the background's work, in slices of at most 20 us
/// run only when no call waits for it, so that two threads, not three, share the two cores.
/// The time counted includes the background work still owed when the calls end.
fn pipeline(a: &Args, work: Work, done: &Arc<AtomicU64>, coop: bool) -> Duration {
    let ring: Arc<Vec<Slot>> = Arc::new(
        (0..a.depth)
            .map(|_| Slot {
                state: Mutex::new(vec![0u64; a.bytes / 8]),
            })
            .collect(),
    );
    // Calls the second half has finished (the completions the first half reads back).
    let finished = Arc::new(AtomicU64::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let (calls, depth, spins, second_ns) = (a.calls, a.depth as u64, a.spin, a.second_ns);
    let owed_each = if coop { a.background_ns } else { 0 };
    let first_sleeps = Arc::new(AtomicBool::new(false));
    let second_sleeps = Arc::new(AtomicBool::new(false));
    let first_thread = std::thread::current();
    let second = {
        let (ring, finished, published, done) = (
            ring.clone(),
            finished.clone(),
            published.clone(),
            done.clone(),
        );
        let (first_sleeps, second_sleeps) = (first_sleeps.clone(), second_sleeps.clone());
        std::thread::spawn(move || {
            let mut acc = 0u64;
            // Background work owed, in ns.
            let mut owed = 0u64;
            for call in 0..calls {
                while owed > 0 && published.load(Ordering::Acquire) <= call {
                    let slice = owed.min(20_000);
                    acc ^= work.run(slice, owed);
                    owed -= slice;
                }
                wait(spins, &second_sleeps, || {
                    published.load(Ordering::Acquire) > call
                });
                let slot = &ring[(call % depth) as usize];
                acc ^= slot.state.lock().unwrap().iter().fold(0, |x, y| x ^ y);
                acc ^= work.run(second_ns, acc);
                owed += owed_each;
                finished.store(call + 1, Ordering::Release);
                wake(&first_sleeps, &first_thread);
                done.store(call + 1, Ordering::Relaxed);
            }
            acc ^ work.run(owed, owed)
        })
    };
    let t = Instant::now();
    let mut acc = 0u64;
    let mut applied = 0u64;
    for call in 0..a.calls {
        // The completions of earlier calls, applied before this call's first half (the
        // index's commit), and a free slot.
        let f = finished.load(Ordering::Acquire);
        if f > applied {
            acc ^= f;
            applied = f;
        }
        if call >= depth {
            wait(spins, &first_sleeps, || {
                finished.load(Ordering::Acquire) > call - depth
            });
        }
        acc ^= work.run(a.first_ns, call);
        let slot = &ring[(call % depth) as usize];
        for (i, w) in slot.state.lock().unwrap().iter_mut().enumerate() {
            *w = acc ^ i as u64;
        }
        published.store(call + 1, Ordering::Release);
        wake(&second_sleeps, second.thread());
    }
    wait(spins, &first_sleeps, || {
        finished.load(Ordering::Acquire) == calls
    });
    black_box(acc ^ second.join().unwrap());
    t.elapsed()
}

fn main() {
    let a = args();
    let work = Work::calibrate();
    println!(
        "first {} ns, second {} ns, background {} ns a call; {} bytes handed over; ring {}, spin {}",
        a.first_ns, a.second_ns, a.background_ns, a.bytes, a.depth, a.spin
    );
    for round in 0..a.rounds {
        let mut rates = Vec::new();
        for mode in ["serial", "pipeline", "coop"] {
            let done = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let bg = (a.background_ns > 0 && mode != "coop").then(|| {
                let (done, stop, ns) = (done.clone(), stop.clone(), a.background_ns);
                std::thread::spawn(move || background(work, ns, done, stop))
            });
            let took = match mode {
                "serial" => serial(&a, work, &done),
                "pipeline" => pipeline(&a, work, &done, false),
                _ => pipeline(&a, work, &done, true),
            };
            stop.store(true, Ordering::Relaxed);
            if let Some(bg) = bg {
                black_box(bg.join().unwrap());
            }
            let rate = a.calls as f64 / took.as_secs_f64();
            println!("round {round} {mode:>8}: {rate:>9.0} calls/s");
            rates.push(rate);
        }
        println!(
            "round {round}    ratio: pipeline {:.2}x, coop {:.2}x",
            rates[1] / rates[0],
            rates[2] / rates[0]
        );
    }
}
