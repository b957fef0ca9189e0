//! Fills a Kafka topic with W1 identify calls (docs/benchmarks.md) for measuring
//! `profiledb consume` (docs/scaling.md, "Measured"). Creates the topic with `--partitions P`
//! and produces call `i` of person `p` to partition `p % P`, keyed by the person (the
//! partitioning rule: all of one person's calls on one partition), acks=all; prints the
//! produce rate and each partition's end offset.
//!
//! ```text
//! cargo run --release --features kafka --example kafka_load -- \
//!     --brokers 127.0.0.1:9092 --topic w1 --partitions 4 --calls 200000
//! ```

use std::time::{Duration, Instant};

use profiledb::workload::{W1, W1Config, identify_json};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let brokers = arg("--brokers", "127.0.0.1:9092");
    let topic = arg("--topic", "w1");
    let partitions: i32 = arg("--partitions", "4").parse().expect("--partitions N");
    let calls: u64 = arg("--calls", "200000").parse().expect("--calls N");
    let seed: u64 = arg("--seed", "1").parse().expect("--seed N");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &brokers);
    let admin: AdminClient<DefaultClientContext> = config.create().expect("admin client");
    let created = rt.block_on(admin.create_topics(
        &[NewTopic::new(
            &topic,
            partitions,
            TopicReplication::Fixed(1),
        )],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ));
    println!("create topic {topic} ({partitions} partitions): {created:?}");
    let producer: FutureProducer = config
        .clone()
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut w1 = W1::new(W1Config::new(seed, calls));
    let mut ends = vec![0i64; partitions as usize];
    let mut pending = Vec::new();
    let mut buf = Vec::new();
    let flush = |pending: &mut Vec<rdkafka::producer::DeliveryFuture>, ends: &mut Vec<i64>| {
        for f in pending.drain(..) {
            let d: rdkafka::producer::future_producer::Delivery = rt
                .block_on(f)
                .expect("delivery")
                .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
            let e = &mut ends[d.partition as usize];
            *e = (*e).max(d.offset + 1);
        }
    };
    while let Some((person, _, call)) = w1.next_call() {
        buf.clear();
        identify_json(&call, &mut buf);
        let key = person.to_string();
        let record = FutureRecord::to(&topic)
            .partition((person % partitions as u64) as i32)
            .key(&key)
            .payload(&buf);
        match producer.send_result(record) {
            Ok(f) => pending.push(f),
            Err((e, _)) => panic!("queue: {e}"),
        }
        if pending.len() >= 50_000 {
            flush(&mut pending, &mut ends);
        }
    }
    flush(&mut pending, &mut ends);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {calls} calls in {secs:.1} s ({:.0}/s); partition ends {ends:?}",
        calls as f64 / secs
    );
}
