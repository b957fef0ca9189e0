//! Issue 17, item 3: `profiledb serve --produce-to BROKERS/TOPIC` as a stateless collector.
//! Accepted calls go to the topic keyed by project (acks=all) instead of the store, refused
//! ones are answered as always and not produced; `profiledb consume` then applies them.
//! Real broker (nisshi on 127.0.0.1), real processes, real HTTP.
#![cfg(feature = "kafka")]

#[path = "support/kafka.rs"]
mod kafka;
#[path = "support/server.rs"]
mod server_common;

use std::time::{Duration, Instant};

use kafka::{Broker, ConsumerProcess};
use profiledb::{Db, Options, Selector, Value};
use serde_json::{Value as Json, json};
use server_common::{ServerProcess, basic, request};

#[test]
fn serve_produces_accepted_calls_keyed_by_project_and_consume_applies_them() {
    let Some(bin) = kafka::nisshi() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::start(&bin, tmp.path());
    let topic = "collected";
    broker.create_topic(topic, 2);
    let serve_data = tmp.path().join("collector");
    let spec = format!("{}/{topic}", broker.brokers());
    let server = ServerProcess::start_with_args(
        &serve_data,
        &[("wk-shop", "shop")],
        &["--produce-to", &spec],
    );
    let mut batch: Vec<Json> = (0..30)
        .map(|i| {
            json!({"type": "identify", "userId": format!("u{}", i % 3), "messageId": format!("c{i}"),
                   "timestamp": "2026-01-01T00:00:00Z", "$add": {"visits": 1}})
        })
        .collect();
    batch.push(json!({"type": "identify", "traits": {"no": "identifier"}}));
    let body = json!({ "batch": batch }).to_string();
    let r = request(
        server.addr,
        "POST",
        "/v1/batch",
        &[
            ("Authorization", &basic("wk-shop")),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["accepted"], 30, "{answer}");
    assert_eq!(answer["refused"], 1, "{answer}");
    drop(server);

    // The collector wrote nothing: its store (if any) holds no profile.
    if serve_data.join("shop").is_dir() {
        let db = Db::open(serve_data.join("shop"), Options::default()).unwrap();
        assert_eq!(db.counts().profiles, 0);
    }

    // Keyed by project: all 30 on one partition, in order.
    let data = tmp.path().join("consumers");
    let mut c = ConsumerProcess::start(&data, &broker, topic, "g", tmp.path().join("c.log"));
    let started = Instant::now();
    let (partition, end) = loop {
        let got = broker.committed("g", topic, 2);
        if let Some((p, e)) = got.iter().find(|(_, e)| **e == 30) {
            break (*p, *e);
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "committed {got:?}; log:\n{}",
            c.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(c.terminate(), Some(0), "{}", c.stderr());
    let db = Db::open(
        data.join(format!("{topic}-{partition}")),
        Options::default(),
    )
    .unwrap();
    assert_eq!(db.source_offset(topic, partition).unwrap().next_offset, end);
    for u in 0..3 {
        let p = db.get(&Selector::UserId(format!("u{u}"))).unwrap().unwrap();
        let visits = p.properties.iter().find(|(n, _)| n == "visits");
        assert_eq!(visits, Some(&("visits".to_string(), Value::Int(10))));
    }
    let other = 1 - partition;
    let empty = Db::open(data.join(format!("{topic}-{other}")), Options::default()).unwrap();
    assert_eq!(empty.counts().profiles, 0);
}
