//! `profiledb bench`: W1 through the library, one thread.
//!
//! Calls are generated in batches of 1,024 outside the timed region, then applied one by one;
//! throughput is calls divided by the time spent applying them plus the final sync. Durability
//! as `--durability` (see [`durabilities`]): `group` (default) lets the store's group commit
//! sync at least every 10 ms or 1,000 calls in the background while the calls go on,
//! `buffered` syncs once at the end, `sync` syncs every call. The latency of every 16th call is
//! recorded exactly; p50/p99 come from those samples. Every call is timed for the longest and
//! the stalls (calls of 1 ms or more, and the time in them). With `--batch`, each batch of
//! 1,024 is applied by one `Db::apply_batch`: a batch is timed as a whole, and its time a call
//! is one latency sample (a stall is then a batch whose mean call took 1 ms or more).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use profiledb::workload::{W1, W1Config};
use profiledb::{Db, Durability, Message, Options, ProcessMemory, Status};
use serde::Serialize;

use super::progress::{Progress, Unit};
use super::write::durabilities;
use super::{CmdResult, DurabilityArg, Failure, Global, OK, print_json, warn};

/// Arguments of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Number of calls.
    #[arg(long, default_value_t = 1_000_000)]
    pub calls: u64,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of people [default: calls / 5].
    #[arg(long)]
    pub people: Option<u64>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Apply each generated batch of 1,024 calls with one `Db::apply_batch` (the coming
    /// calls' memory loaded while each is applied) instead of one call at a time.
    #[arg(long)]
    pub batch: bool,
}

/// Latency figures, in microseconds.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of calls sampled (every 16th).
    pub samples: u64,
    /// The sampled calls by latency band: where the time goes (a few slow calls, or many).
    pub bands: Vec<Band>,
    /// Of every call (not only the sampled): the longest, in microseconds.
    pub longest: f64,
    /// Calls that took [`STALL`] or more (every call timed): the writer stopped by a
    /// compaction, a sync, the hint or a table growing.
    pub stalls: u64,
    /// Seconds spent in those calls.
    pub stall_seconds: f64,
}

/// A call this long or longer is a stall.
const STALL: Duration = Duration::from_millis(1);

/// The sampled calls whose latency lies in `[from_us, to_us)`.
#[derive(Debug, Serialize)]
pub struct Band {
    pub from_us: u32,
    /// `None`: no upper bound.
    pub to_us: Option<u32>,
    /// Their share of the sampled calls, in per cent.
    pub calls_pct: f64,
    /// Their share of the sampled calls' time, in per cent.
    pub time_pct: f64,
}

/// Band edges, microseconds.
const BAND_EDGES_US: [u32; 4] = [10, 20, 50, 100];

/// `sorted` (nanoseconds) by [`BAND_EDGES_US`].
fn bands(sorted: &[u32]) -> Vec<Band> {
    let total: u64 = sorted.iter().map(|&s| u64::from(s)).sum();
    let mut from = 0;
    let mut out = Vec::new();
    for to in BAND_EDGES_US.map(Some).into_iter().chain([None]) {
        let within = sorted
            .iter()
            .filter(|&&s| s >= from * 1_000 && to.is_none_or(|to| s < to * 1_000));
        let (n, t) = within.fold((0u64, 0u64), |(n, t), &s| (n + 1, t + u64::from(s)));
        out.push(Band {
            from_us: from,
            to_us: to,
            calls_pct: 100.0 * n as f64 / sorted.len().max(1) as f64,
            time_pct: 100.0 * t as f64 / total.max(1) as f64,
        });
        from = to.unwrap_or(u32::MAX);
    }
    out
}

/// Outcome counts.
#[derive(Debug, Default, Serialize)]
pub struct Outcomes {
    /// Profiles created.
    pub created: u64,
    /// Profiles updated.
    pub updated: u64,
    /// Calls that merged profiles.
    pub merged: u64,
    /// Duplicate messageIds.
    pub duplicate: u64,
    /// Valid calls with nothing to store.
    pub unchanged: u64,
    /// Refused calls (should be 0: W1 is valid).
    pub refused: u64,
}

/// Everything `bench` measures.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Calls applied.
    pub calls: u64,
    /// Distinct people of the workload.
    pub people: u64,
    /// Seed.
    pub seed: u64,
    /// `buffered`, `group` or `sync`.
    pub durability: &'static str,
    /// Calls per second (time in `apply` and syncs; generation excluded).
    pub calls_per_sec: f64,
    /// Seconds in `apply` and syncs.
    pub seconds: f64,
    /// Wall time of the load phase, generation included.
    pub wall_seconds: f64,
    /// Whether the calls were applied in batches of 1,024 (`--batch`).
    pub batch: bool,
    /// Per-call latency (with `batch`, each batch's time a call).
    pub latency_us: Latency,
    /// Syncs the bench issued (`group`) or the store counted.
    pub syncs: u64,
    /// Bytes the storage engine appended, divided by calls.
    pub bytes_written_per_call: f64,
    /// Bytes appended by the storage engine during the load.
    pub bytes_appended: u64,
    /// Compactions during the load (the background's).
    pub compactions: u64,
    /// Bytes those compactions wrote, divided by calls.
    pub compacted_bytes_per_call: f64,
    /// Data directory size after the load.
    pub disk_bytes_before_compaction: u64,
    /// Data directory size after a full compaction.
    pub disk_bytes_after_compaction: u64,
    /// Seconds the compaction took.
    pub compaction_seconds: f64,
    /// Seconds to reopen the store after a clean close (with the hint).
    pub reopen_seconds: f64,
    /// Seconds to reopen it once more without the hint (the full log scan).
    pub reopen_full_scan_seconds: f64,
    /// Live profiles at the end.
    pub profiles: u64,
    /// Profile-index bytes per live profile beyond the identifier bytes (after the load).
    pub index_bytes_per_profile: f64,
    /// Share of profile loads by the writers that found the profile in the writer cache
    /// (the rest read its records from the log).
    pub cache_hit_rate: f64,
    /// Profiles the writer cache did not keep after a call: new ones and misses its
    /// doorkeeper had not refused lately (docs/architecture.md, "Which profiles the writer
    /// cache keeps").
    pub cache_refused: u64,
    /// Profile records the load wrote, by form and reason.
    pub records: profiledb::RecordCounts,
    /// The same after the reopen (the index as the hint rebuilds it, sized once).
    pub reopened_index_bytes_per_profile: f64,
    /// Bytes of the messageId dedupe window.
    pub dedupe_bytes: u64,
    /// Messages in the dedupe window.
    pub dedupe_ids: u64,
    /// Peak resident memory of the process (VmHWM), in bytes.
    pub peak_memory_bytes: u64,
    /// Largest anonymous resident memory seen (sampled every 16,384 calls and after each
    /// phase), in bytes.
    pub peak_rss_anon_bytes: u64,
    /// Largest file-backed resident memory seen (sampled likewise), in bytes.
    pub peak_rss_file_bytes: u64,
    /// Resident memory after the load, the compaction, and the reopen.
    pub memory_after_load: ProcessMemory,
    /// See `memory_after_load`.
    pub memory_after_compaction: ProcessMemory,
    /// See `memory_after_load`.
    pub memory_after_reopen: ProcessMemory,
    /// Outcome counts.
    pub outcomes: Outcomes,
    /// The data directory used (removed afterwards when it was temporary).
    pub data_dir: String,
}

/// The largest anonymous and file-backed resident sizes sampled.
#[derive(Default)]
struct Peaks {
    anon: u64,
    file: u64,
}

impl Peaks {
    fn sample(&mut self) -> ProcessMemory {
        let m = ProcessMemory::now();
        self.anon = self.anon.max(m.rss_anon_bytes);
        self.file = self.file.max(m.rss_file_bytes);
        m
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1_000.0
}

/// Where the bench runs: a fresh temporary directory, or `--data` when given (it must be
/// missing or empty, and is kept).
fn bench_dir(global: &Global) -> Result<(PathBuf, bool), Failure> {
    if global.data_given {
        let dir = &global.data;
        let empty = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(Failure::error(format!("{}: {e}", dir.display()))),
        };
        if !empty {
            return Err(Failure::error(format!(
                "bench needs a missing or empty directory, and {} is not empty (omit --data to \
                 use a temporary one)",
                dir.display()
            )));
        }
        return Ok((dir.clone(), false));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir =
        std::env::temp_dir().join(format!("profiledb-bench-{}-{nanos:x}", std::process::id()));
    Ok((dir, true))
}

/// Removes a temporary directory when dropped.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `profiledb bench`.
pub fn bench(global: &Global, args: &BenchArgs) -> CmdResult {
    let mode = global.durability.unwrap_or(DurabilityArg::Group);
    let mut config = W1Config::new(args.seed, args.calls);
    if let Some(people) = args.people {
        config = config.with_people(people);
    }
    let (dir, temporary) = bench_dir(global)?;
    let _cleanup = TempDir(temporary.then(|| dir.clone()));
    let report = run(
        &dir,
        config,
        mode,
        args.batch,
        global.history_retention(),
        (global.profile_cache_bytes(), global.preallocate_bytes()),
    )
    .map_err(|e| Failure::error(e.to_string()))?;
    if report.outcomes.refused > 0 {
        warn(&format!(
            "{} calls of the workload were refused: the figures are not W1's",
            report.outcomes.refused
        ));
    }
    if args.json {
        print_json(&report)?;
    } else {
        print_human(&report, temporary).map_err(Failure::output)?;
    }
    Ok(OK)
}

/// Count a call's result; an error other than a refusal stops the run.
fn count(
    outcomes: &mut Outcomes,
    first_refusal: &mut Option<String>,
    result: profiledb::Result<profiledb::Outcome>,
) -> profiledb::Result<()> {
    match result {
        Ok(outcome) => match outcome.status {
            Status::Created => outcomes.created += 1,
            Status::Updated => outcomes.updated += 1,
            Status::Merged => outcomes.merged += 1,
            Status::Duplicate => outcomes.duplicate += 1,
            Status::Unchanged => outcomes.unchanged += 1,
        },
        Err(e) if e.is_refusal() => {
            outcomes.refused += 1;
            first_refusal.get_or_insert_with(|| e.to_string());
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

fn run(
    dir: &Path,
    config: W1Config,
    mode: DurabilityArg,
    in_batches: bool,
    history_retention: std::time::Duration,
    (profile_cache_bytes, preallocate_bytes): (usize, u64),
) -> profiledb::Result<Report> {
    let (store_durability, call_durability) = durabilities(mode);
    let options = Options {
        durability: store_durability,
        history_retention,
        profile_cache_bytes,
        preallocate_bytes,
        ..Options::default()
    };
    let db = Db::open(dir, options.clone())?;
    let progress = Progress::bar("bench", Some(config.calls), Unit::Items);
    let mut w1 = W1::new(config);
    let mut batch: Vec<Message> = Vec::with_capacity(1024);
    let mut samples: Vec<u32> = Vec::with_capacity((config.calls / 16 + 1) as usize);
    let mut outcomes = Outcomes::default();
    let mut first_refusal = None;
    let (mut busy, mut i) = (Duration::ZERO, 0u64);
    let mut peaks = Peaks::default();
    let (mut stalls, mut longest) = ((0u64, Duration::ZERO), Duration::ZERO);
    let wall = Instant::now();
    loop {
        batch.clear();
        batch.extend(w1.by_ref().take(1024));
        if batch.is_empty() {
            break;
        }
        let started = Instant::now();
        if in_batches {
            for result in db.apply_batch(&batch, call_durability) {
                count(&mut outcomes, &mut first_refusal, result)?;
            }
            let took = started.elapsed();
            let mean = took / batch.len() as u32;
            samples.push(mean.as_nanos().min(u32::MAX as u128) as u32);
            if mean >= STALL {
                stalls.0 += 1;
                stalls.1 += took;
            }
            longest = longest.max(mean);
            i += batch.len() as u64;
            busy += took;
            progress.set(i);
            if i % 16384 == 0 {
                peaks.sample();
            }
            continue;
        }
        for message in &batch {
            let t = Instant::now();
            count(
                &mut outcomes,
                &mut first_refusal,
                db.apply_with(message, call_durability),
            )?;
            let took = t.elapsed();
            if i & 15 == 0 {
                samples.push(took.as_nanos().min(u32::MAX as u128) as u32);
            }
            if took >= STALL {
                stalls.0 += 1;
                stalls.1 += took;
            }
            longest = longest.max(took);
            i += 1;
        }
        busy += started.elapsed();
        progress.set(i);
        if i % 16384 == 0 {
            peaks.sample();
        }
    }
    let started = Instant::now();
    db.sync()?;
    busy += started.elapsed();
    let wall_seconds = wall.elapsed().as_secs_f64();
    progress.finish();
    if let Some(e) = first_refusal {
        warn(&format!("first refusal: {e}"));
    }

    let loaded = db.stats();
    let memory_after_load = peaks.sample();
    let compaction = Progress::spinner("compacting");
    let started = Instant::now();
    db.compact()?;
    let compaction_seconds = started.elapsed().as_secs_f64();
    compaction.finish();
    let compacted = db.stats();
    let memory_after_compaction = peaks.sample();
    db.close()?;
    let started = Instant::now();
    let reopened = Db::open(dir, options)?;
    let reopen_seconds = started.elapsed().as_secs_f64();
    let reopened_stats = reopened.stats();
    let memory_after_reopen = peaks.sample();
    reopened.close()?;
    let hint = dir.join("HINT");
    std::fs::remove_file(&hint).map_err(|e| profiledb::Error::io("unlink", &hint, e))?;
    let started = Instant::now();
    let scanned = Db::open(dir, Options::default())?;
    let reopen_full_scan_seconds = started.elapsed().as_secs_f64();
    scanned.close()?;

    samples.sort_unstable();
    let seconds = busy.as_secs_f64();
    Ok(Report {
        calls: i,
        people: config.people,
        seed: config.seed,
        durability: mode.name(),
        calls_per_sec: i as f64 / seconds.max(1e-9),
        seconds,
        wall_seconds,
        batch: in_batches,
        latency_us: Latency {
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            p999: percentile(&samples, 99.9),
            max: percentile(&samples, 100.0),
            samples: samples.len() as u64,
            bands: bands(&samples),
            longest: longest.as_secs_f64() * 1e6,
            stalls: stalls.0,
            stall_seconds: stalls.1.as_secs_f64(),
        },
        syncs: loaded.storage.syncs,
        bytes_written_per_call: loaded.storage.bytes_appended as f64 / i.max(1) as f64,
        bytes_appended: loaded.storage.bytes_appended,
        compactions: loaded.storage.compactions,
        compacted_bytes_per_call: loaded.storage.compacted_bytes as f64 / i.max(1) as f64,
        disk_bytes_before_compaction: loaded.storage.disk_bytes,
        disk_bytes_after_compaction: compacted.storage.disk_bytes,
        compaction_seconds,
        reopen_seconds,
        reopen_full_scan_seconds,
        profiles: compacted.profiles,
        index_bytes_per_profile: compacted.index_bytes_per_profile,
        records: loaded.profile_records,
        cache_hit_rate: loaded.profile_cache_hits as f64
            / (loaded.profile_cache_hits + loaded.profile_cache_misses).max(1) as f64,
        cache_refused: loaded.profile_cache_refused,
        reopened_index_bytes_per_profile: reopened_stats.index_bytes_per_profile,
        dedupe_bytes: compacted.dedupe_bytes,
        dedupe_ids: i.min(options_window()),
        peak_memory_bytes: memory_after_reopen.peak_rss_bytes,
        peak_rss_anon_bytes: peaks.anon,
        peak_rss_file_bytes: peaks.file,
        memory_after_load,
        memory_after_compaction,
        memory_after_reopen,
        outcomes,
        data_dir: dir.display().to_string(),
    })
}

/// The dedupe window of the options the bench uses.
fn options_window() -> u64 {
    Options::default().dedupe_window as u64
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn print_human(r: &Report, temporary: bool) -> std::io::Result<()> {
    use std::io::Write;
    let durability = match r.durability {
        "group" => match Durability::group_commit() {
            Durability::GroupCommit {
                max_delay,
                max_batch,
            } => format!(
                "group commit (a sync at least every {} ms or {max_batch} calls)",
                max_delay.as_millis()
            ),
            _ => "group commit".to_string(),
        },
        "sync" => "sync per call".to_string(),
        other => format!("{other} (one sync at the end)"),
    };
    let l = &r.latency_us;
    let o = &r.outcomes;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "W1: {} calls over {} people, seed {}, one thread, {durability}{}",
        r.calls,
        r.people,
        r.seed,
        if r.batch {
            ", batches of 1,024 (`apply_batch`; latency: each batch's time a call)"
        } else {
            ""
        }
    )?;
    writeln!(
        out,
        "  throughput      {:.0} calls/s ({:.2} s in calls and syncs, {:.2} s wall)",
        r.calls_per_sec, r.seconds, r.wall_seconds
    )?;
    writeln!(
        out,
        "  latency         p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us ({} samples)",
        l.p50, l.p99, l.p999, l.max, l.samples
    )?;
    let bands: Vec<String> = l
        .bands
        .iter()
        .map(|b| match b.to_us {
            Some(to) => format!("{}-{to} us {:.0} %", b.from_us, b.time_pct),
            None => format!(">= {} us {:.0} %", b.from_us, b.time_pct),
        })
        .collect();
    writeln!(
        out,
        "  latency time    {} (of the sampled calls' time)",
        bands.join(", ")
    )?;
    writeln!(
        out,
        "  stalls          {} calls >= {} ms, {:.2} s in them ({:.1} % of the time); longest call {:.1} ms",
        l.stalls,
        STALL.as_millis(),
        l.stall_seconds,
        100.0 * l.stall_seconds / r.seconds.max(1e-9),
        l.longest / 1000.0
    )?;
    writeln!(
        out,
        "  written         {:.0} bytes/call ({} appended, {} syncs)",
        r.bytes_written_per_call,
        mb(r.bytes_appended),
        r.syncs
    )?;
    writeln!(
        out,
        "  compactions     {} during the load, {:.0} bytes/call written by them",
        r.compactions, r.compacted_bytes_per_call
    )?;
    writeln!(
        out,
        "  disk            {} after the load, {} after compaction ({:.2} s)",
        mb(r.disk_bytes_before_compaction),
        mb(r.disk_bytes_after_compaction),
        r.compaction_seconds
    )?;
    writeln!(
        out,
        "  reopen          {:.3} s with the hint, {:.3} s without (full scan, {:.1}x) ({} profiles)",
        r.reopen_seconds,
        r.reopen_full_scan_seconds,
        r.reopen_full_scan_seconds / r.reopen_seconds.max(1e-9),
        r.profiles,
    )?;
    writeln!(
        out,
        "  writer cache    {:.1} % of profile loads hit; {} profiles not admitted",
        100.0 * r.cache_hit_rate,
        r.cache_refused
    )?;
    let rc = r.records;
    writeln!(
        out,
        "  records         {} deltas ({} linked into a running compaction, {} by the fast \
         path); full: {} new or rewritten whole, {} at the chain limit, {} while a compaction \
         switched in; {} full records written from a cached chain's bytes; {} spliced ({} \
         of them for the log)",
        rc.deltas,
        rc.linked_into_compaction,
        rc.fast_path,
        rc.full_whole,
        rc.full_chain_limit,
        rc.full_at_switch,
        rc.full_from_parts,
        rc.spliced,
        rc.full_spliced
    )?;
    writeln!(
        out,
        "  index           {:.1} bytes/profile beyond identifier bytes ({:.1} after reopen); \
         dedupe window {} for {} ids ({:.1} bytes/id)",
        r.index_bytes_per_profile,
        r.reopened_index_bytes_per_profile,
        mb(r.dedupe_bytes),
        r.dedupe_ids,
        r.dedupe_bytes as f64 / r.dedupe_ids.max(1) as f64
    )?;
    writeln!(
        out,
        "  peak memory     {} (VmHWM); sampled peaks: anonymous {}, file-backed {}",
        mb(r.peak_memory_bytes),
        mb(r.peak_rss_anon_bytes),
        mb(r.peak_rss_file_bytes)
    )?;
    for (phase, m) in [
        ("after load", &r.memory_after_load),
        ("after compact", &r.memory_after_compaction),
        ("after reopen", &r.memory_after_reopen),
    ] {
        writeln!(
            out,
            "  rss {phase:<13} anonymous {}, file-backed {}",
            mb(m.rss_anon_bytes),
            mb(m.rss_file_bytes)
        )?;
    }
    writeln!(
        out,
        "  outcomes        {} created, {} updated, {} merged, {} duplicate, {} unchanged, {} refused",
        o.created, o.updated, o.merged, o.duplicate, o.unchanged, o.refused
    )?;
    if !temporary {
        writeln!(out, "  data            {}", r.data_dir)?;
    }
    out.flush()
}
