//! `profiledb consume` (feature `kafka`, docs/scaling.md): a member of a Kafka consumer
//! group that applies the messages of its assigned partitions, one store per partition
//! (`DATA/TOPIC-<partition>`), a thread per partition.
//!
//! - `calls`: a message's payload split into calls.
//! - `worker`: a partition's store and thread (apply, checkpoint, close).
//! - `dead`: the dead-letter path.
//! - this file: arguments, the group membership (assign = open the stores and seek each
//!   partition to its store's own position; revoke = drain and close them), the poll loop,
//!   the group commit of durable positions, the stats line, SIGTERM.

mod calls;
mod dead;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use profiledb::SourceOffset;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::{CmdResult, Failure, Global, OK};
use dead::DeadLetters;
use worker::{Msg, Worker};

/// Arguments of `profiledb consume` (the data directory comes from the global `--data`).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeArgs {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT[,...]")]
    pub brokers: String,

    /// The topic to consume.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,

    /// The consumer group.
    #[arg(long, value_name = "GROUP")]
    pub group: String,

    /// Topic for messages that cannot be applied [default: TOPIC.dead]; an empty string
    /// only logs them (with partition and offset).
    #[arg(long, value_name = "TOPIC")]
    pub dead_letter_topic: Option<String>,

    /// Seconds between checkpoints: each partition syncs its store, then its position is
    /// committed to the group.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub commit_interval: f64,

    /// Seconds between stats lines on stderr (0: none).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub stats_interval: f64,

    /// A librdkafka setting as KEY=VALUE (repeatable), applied last, e.g.
    /// session.timeout.ms=10000.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub kafka_options: Vec<String>,
}

/// A line on stderr.
pub(crate) fn log(message: &str) {
    super::warn(&format!("consume: {message}"));
}

fn seconds(flag: &str, v: f64, zero_ok: bool) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| zero_ok || !d.is_zero())
        .ok_or_else(|| Failure::error(format!("--{flag}: give a positive number of seconds")))
}

/// The client settings shared by the consumer and the dead-letter producer.
pub(crate) fn client_config(brokers: &str, options: &[String]) -> Result<ClientConfig, Failure> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for spec in options {
        let (k, v) = spec
            .split_once('=')
            .ok_or_else(|| Failure::error(format!("--kafka-option {spec:?}: give KEY=VALUE")))?;
        config.set(k, v);
    }
    Ok(config)
}

/// State shared by the poll loop and the rebalance callback (both run on the main thread,
/// the callback inside `poll`).
struct Shared {
    data: PathBuf,
    topic: String,
    interval: Duration,
    dead: Arc<DeadLetters>,
    workers: Mutex<BTreeMap<i32, Worker>>,
    /// Fetch high watermarks from the client's statistics (the broker's ListOffsets answer
    /// is not trusted: docs/scaling.md).
    high: Mutex<HashMap<i32, i64>>,
    /// The first failure of a partition or of a rebalance: the process stops on it.
    failure: Mutex<Option<String>>,
}

impl Shared {
    fn fail(&self, message: String) {
        log(&message);
        self.failure.lock().get_or_insert(message);
    }

    /// Open the store of a partition and start its thread; where to resume.
    fn assign(&self, partition: i32) -> Result<SourceOffset, String> {
        let dir = self.data.join(format!("{}-{partition}", self.topic));
        let db = worker::open_store(&dir)?;
        let resume = db
            .source_offset(&self.topic, partition)
            .unwrap_or(SourceOffset {
                topic: self.topic.clone(),
                partition,
                next_offset: 0,
                next_call: 0,
            });
        let w = worker::start(db, resume.clone(), Arc::clone(&self.dead), self.interval)
            .map_err(|e| format!("partition {partition}: cannot start its thread: {e}"))?;
        self.workers.lock().insert(partition, w);
        log(&format!(
            "partition {partition} assigned: store {} at offset {} (call {})",
            dir.display(),
            resume.next_offset,
            resume.next_call
        ));
        Ok(resume)
    }

    /// Drain a partition's queue into its store, checkpoint and close it.
    fn revoke(&self, partition: i32) {
        let Some(w) = self.workers.lock().remove(&partition) else {
            return;
        };
        drop(w.tx);
        match w.handle.join() {
            Ok(Ok(())) => log(&format!(
                "partition {partition} revoked: store closed at offset {}",
                w.progress.durable.load(Relaxed)
            )),
            Ok(Err(e)) => self.fail(e),
            Err(_) => self.fail(format!("partition {partition}: its thread panicked")),
        }
    }

    fn revoke_all(&self) {
        let all: Vec<i32> = self.workers.lock().keys().copied().collect();
        for p in all {
            self.revoke(p);
        }
    }
}

/// The consumer's callbacks: rebalances and statistics.
struct Ctx(Arc<Shared>);

impl ClientContext for Ctx {
    fn stats(&self, statistics: Statistics) {
        if let Some(t) = statistics.topics.get(&self.0.topic) {
            let mut high = self.0.high.lock();
            for (p, s) in &t.partitions {
                if *p >= 0 && s.hi_offset >= 0 {
                    high.insert(*p, s.hi_offset);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    /// Eager rebalancing: on assignment, open each store and start the partition at the
    /// store's own position (a fresh store from the beginning); on revocation, finish and
    /// close the stores before the partitions move.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let shared = &self.0;
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                for (topic, p) in partitions {
                    let offset = match shared.assign(p) {
                        Ok(r) if r.next_offset > 0 => Offset::Offset(r.next_offset),
                        Ok(_) => Offset::Beginning,
                        Err(e) => {
                            shared.fail(e);
                            continue;
                        }
                    };
                    if let Err(e) = tpl.set_partition_offset(&topic, p, offset) {
                        shared.fail(format!("partition {p}: {e}"));
                    }
                }
                if let Err(e) = consumer.assign(tpl) {
                    shared.fail(format!("assign: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                for (_, p) in partitions {
                    shared.revoke(p);
                }
                if let Err(e) = consumer.unassign() {
                    log(&format!("unassign: {e}"));
                }
            }
            other => {
                log(&format!(
                    "rebalance error {other:?}: releasing every partition"
                ));
                shared.revoke_all();
                let _ = consumer.unassign();
            }
        }
    }
}

/// SIGTERM / SIGINT set `stop`.
fn watch_signals(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            });
            stop.store(true, Relaxed);
        })?;
    Ok(())
}

/// Commit each partition's durable position to the group.
fn commit(consumer: &BaseConsumer<Ctx>, shared: &Shared, mode: CommitMode) {
    let mut tpl = TopicPartitionList::new();
    for (p, w) in shared.workers.lock().iter() {
        let durable = w.progress.durable.load(Relaxed);
        if durable > 0 {
            let _ = tpl.add_partition_offset(&shared.topic, *p, Offset::Offset(durable));
        }
    }
    if tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, mode)
    {
        log(&format!("commit: {e}"));
    }
    // The list is dropped here, before the consumer can be (rdkafka hangs otherwise).
    drop(tpl);
}

/// The stats line: per partition the applied and durable positions, the fetch high
/// watermark and the lag; calls per second since the last line.
fn stats_line(shared: &Shared, calls_before: &mut u64, since: &mut Instant) {
    let high = shared.high.lock().clone();
    let workers = shared.workers.lock();
    let mut total = 0;
    let partitions: Vec<serde_json::Value> = workers
        .iter()
        .map(|(p, w)| {
            let applied = w.progress.applied.load(Relaxed);
            let calls = w.progress.calls.load(Relaxed);
            total += calls;
            let hw = high.get(p).copied();
            serde_json::json!({
                "partition": p,
                "applied_offset": applied,
                "durable_offset": w.progress.durable.load(Relaxed),
                "high_watermark": hw,
                "lag": hw.map(|h| (h - applied).max(0)),
                "calls": calls,
                "bad": w.progress.bad.load(Relaxed),
            })
        })
        .collect();
    drop(workers);
    let secs = since.elapsed().as_secs_f64().max(1e-9);
    let rate = total.saturating_sub(*calls_before) as f64 / secs;
    *calls_before = total;
    *since = Instant::now();
    let line = serde_json::json!({
        "topic": shared.topic,
        "partitions": partitions,
        "calls_per_second": rate.round(),
    });
    let _ = writeln!(std::io::stderr().lock(), "profiledb: consume stats {line}");
}

/// Run `profiledb consume` until SIGTERM / SIGINT or a store failure.
pub fn consume(global: &Global, args: &ConsumeArgs) -> CmdResult {
    let interval = seconds("commit-interval", args.commit_interval, false)?;
    let stats_every = seconds("stats-interval", args.stats_interval, true)?;
    std::fs::create_dir_all(&global.data)
        .map_err(|e| Failure::error(format!("cannot create {}: {e}", global.data.display())))?;
    let base = client_config(&args.brokers, &[])?;
    let dead_topic = args
        .dead_letter_topic
        .clone()
        .unwrap_or_else(|| format!("{}.dead", args.topic));
    let mut dead_config = base.clone();
    for spec in &args.kafka_options {
        if let Some((k, v)) = spec.split_once('=')
            && !k.starts_with("group.")
            && !k.starts_with("session.")
        {
            dead_config.set(k, v);
        }
    }
    let dead =
        DeadLetters::new(&dead_config, dead_topic, args.topic.clone()).map_err(Failure::error)?;
    let shared = Arc::new(Shared {
        data: global.data.clone(),
        topic: args.topic.clone(),
        interval,
        dead: Arc::new(dead),
        workers: Mutex::new(BTreeMap::new()),
        high: Mutex::new(HashMap::new()),
        failure: Mutex::new(None),
    });
    let mut config = base;
    config
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // The first join takes about half of it on some brokers (docs/scaling.md).
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1500")
        // Also the rebalance timeout: how long a rebalance waits for a member that died
        // without leaving (a poll never takes long here: queues are bounded).
        .set("max.poll.interval.ms", "60000")
        .set("statistics.interval.ms", "1000");
    for spec in &args.kafka_options {
        let (k, v) = spec
            .split_once('=')
            .ok_or_else(|| Failure::error(format!("--kafka-option {spec:?}: give KEY=VALUE")))?;
        config.set(k, v);
    }
    let consumer: BaseConsumer<Ctx> = config
        .create_with_context(Ctx(Arc::clone(&shared)))
        .map_err(|e| Failure::error(format!("kafka consumer: {e}")))?;
    consumer
        .subscribe(&[&args.topic])
        .map_err(|e| Failure::error(format!("subscribe to {}: {e}", args.topic)))?;
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(Arc::clone(&stop))
        .map_err(|e| Failure::error(format!("cannot watch signals: {e}")))?;
    log(&format!(
        "joining group {} on topic {} at {}",
        args.group, args.topic, args.brokers
    ));

    let (mut last_commit, mut last_stats) = (Instant::now(), Instant::now());
    let mut calls_before = 0u64;
    while !stop.load(Relaxed) && shared.failure.lock().is_none() {
        match consumer.poll(Duration::from_millis(100)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => log(&format!("poll: {e}")),
            Some(Ok(m)) => {
                let p = m.partition();
                let msg = Msg {
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                };
                drop(m);
                // The worker's queue is bounded: a slow store slows the poll loop.
                let tx = shared.workers.lock().get(&p).map(|w| w.tx.clone());
                if let Some(tx) = tx
                    && tx.send(msg).is_err()
                {
                    // Its thread stopped: its failure is reported by revoke.
                    shared.revoke(p);
                }
            }
        }
        if last_commit.elapsed() >= interval {
            commit(&consumer, &shared, CommitMode::Async);
            last_commit = Instant::now();
        }
        if !stats_every.is_zero() && last_stats.elapsed() >= stats_every {
            stats_line(&shared, &mut calls_before, &mut last_stats);
        }
    }
    // Clean stop: every partition drains its queue, checkpoints and closes; then the
    // durable positions are committed and the group left.
    let workers: Vec<i32> = shared.workers.lock().keys().copied().collect();
    let mut closed = TopicPartitionList::new();
    for p in workers {
        let durable = {
            let w = shared.workers.lock();
            w.get(&p).map(|w| Arc::clone(&w.progress))
        };
        shared.revoke(p);
        if let Some(progress) = durable {
            let d = progress.durable.load(Relaxed);
            if d > 0 {
                let _ = closed.add_partition_offset(&shared.topic, p, Offset::Offset(d));
            }
        }
    }
    if closed.count() > 0
        && let Err(e) = consumer.commit(&closed, CommitMode::Sync)
    {
        log(&format!("final commit: {e}"));
    }
    drop(closed);
    shared.dead.flush();
    drop(consumer);
    let failure = shared.failure.lock().take();
    match failure {
        Some(e) => Err(Failure::error(e)),
        None => {
            log("stopped");
            Ok(OK)
        }
    }
}
