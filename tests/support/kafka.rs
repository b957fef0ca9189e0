//! A real Kafka-protocol broker (`nisshi`, installed by `.ci/run`; found through
//! `PROFILEDB_NISSHI`) on 127.0.0.1, a real client (rdkafka), and `profiledb consume`
//! processes. Outside CI without the broker the tests skip loudly; under `CI=true` they fail.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The broker binary, or `None` (with a loud note) outside CI when it is missing.
pub fn nisshi() -> Option<PathBuf> {
    let path = std::env::var_os("PROFILEDB_NISSHI")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/profiledb/nisshi/bin/nisshi"))
        });
    match path {
        Some(p) if p.is_file() => Some(p),
        other => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "CI=true but the nisshi broker is missing ({other:?}); .ci/run installs it"
            );
            eprintln!("SKIPPED: no nisshi broker ({other:?}); run .ci/run or set PROFILEDB_NISSHI");
            None
        }
    }
}

/// A broker on a free loopback port, killed on drop.
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Broker {
    pub fn start(bin: &Path, dir: &Path) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = dir.join("nisshi.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://nisshi/"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start nisshi");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nisshi did not listen; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Broker { child, addr, log }
    }

    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers());
        c
    }

    /// Create a topic of `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let result = block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topic");
        for r in result {
            r.expect("create topic");
        }
    }

    /// A producer waiting for every replica (acks=all).
    pub fn producer(&self) -> FutureProducer {
        self.config()
            .set("acks", "all")
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }

    /// Produce `(partition, key, payload)` records in order; the end offset (the next offset
    /// to be written) of each partition written to.
    pub fn produce(&self, topic: &str, records: &[(i32, String, Vec<u8>)]) -> BTreeMap<i32, i64> {
        let producer = self.producer();
        let mut ends = BTreeMap::new();
        let futures: Vec<_> = records
            .iter()
            .map(|(p, k, v)| {
                producer
                    .send_result(FutureRecord::to(topic).partition(*p).key(k).payload(v))
                    .map_err(|(e, _)| e)
                    .expect("queue a record")
            })
            .collect();
        for f in futures {
            let d = block_on(f).expect("delivery").expect("delivered");
            let e = ends.entry(d.partition).or_insert(0);
            *e = (*e).max(d.offset + 1);
        }
        ends
    }

    /// Every message of `partition` before offset `end`, read from the beginning by a plain
    /// consumer (the broker's "latest offset" answer is not trusted).
    pub fn read_partition(&self, topic: &str, partition: i32, end: i64) -> Vec<(i64, Vec<u8>)> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", "profiledb-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        drop(tpl);
        let mut out = Vec::new();
        let started = Instant::now();
        while out.last().is_none_or(|(o, _)| o + 1 < end) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "partition {partition}: read {} messages, want up to offset {end}",
                out.len()
            );
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                out.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
            }
        }
        out
    }

    /// The offsets group `group` has committed, by partition.
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let mut out = BTreeMap::new();
        if let Ok(got) = consumer.committed_offsets(tpl, Duration::from_secs(5)) {
            for e in got.elements() {
                if let Offset::Offset(o) = e.offset() {
                    out.insert(e.partition(), o);
                }
            }
            // The list goes before the consumer (rdkafka hangs otherwise).
            drop(got);
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "nisshi log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Run a future to completion on a small runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A `profiledb consume` process; its stderr goes to a file.
pub struct ConsumerProcess {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl ConsumerProcess {
    pub fn start(data: &Path, broker: &Broker, topic: &str, group: &str, log: PathBuf) -> Self {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_profiledb"))
            .arg("--data")
            .arg(data)
            .args(["consume", "--brokers", &broker.brokers(), "--topic", topic])
            .args([
                "--group",
                group,
                "--commit-interval",
                "0.3",
                "--stats-interval",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn profiledb consume");
        ConsumerProcess {
            child: Some(child),
            log,
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit; its status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let started = Instant::now();
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s.code();
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("profiledb consume did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ConsumerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
