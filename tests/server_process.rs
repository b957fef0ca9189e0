//! The `profiledb serve` binary as an operator runs it: SIGTERM / SIGINT drain, sync, release
//! the locks and exit 0; `kill -9` while clients send batches loses no acknowledged message
//! and, with the in-flight batch resent after the restart, counts none twice.
//!
//! `PROFILEDB_SERVER_CRASH_ROUNDS` sets the number of kill -9 rounds (default 20).
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod server_common;

use profiledb::rng::SplitMix64;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use profiledb::{Db, Options, Selector, Value};
use serde_json::{Value as Json, json};
use server_common::{ServerProcess, basic, try_request};

const KEY: &str = "wk-test";
const PROJECT: &str = "shop";
const USERS: u64 = 37;

fn post_batch(addr: SocketAddr, batch: &[Json]) -> std::io::Result<(u16, Json)> {
    let auth = basic(KEY);
    let body = json!({ "batch": batch }).to_string();
    let r = try_request(
        addr,
        "POST",
        "/v1/batch",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )?;
    let json = serde_json::from_slice(&r.body).unwrap_or(Json::Null);
    Ok((r.status, json))
}

/// Message number `seq`: one `$add` of 1 to `count` of user `seq % USERS`, unique messageId.
fn message(seq: u64) -> Json {
    json!({
        "type": "identify",
        "userId": format!("user-{}", seq % USERS),
        "messageId": format!("msg-{seq}"),
        "$add": {"count": 1},
        "traits": {"last_seq": seq}
    })
}

fn count_of(db: &Db, user: u64) -> i64 {
    match db.get(&Selector::UserId(format!("user-{user}"))).unwrap() {
        None => 0,
        Some(p) => match p.properties.iter().find(|(n, _)| n == "count") {
            Some((_, Value::Int(n))) => *n,
            other => panic!("user-{user}: count is {other:?}"),
        },
    }
}

/// Every result of a 200 answer must be accepted or duplicate.
fn assert_all_taken(body: &Json) {
    for r in body["results"].as_array().expect("results") {
        let s = r["status"].as_str().unwrap_or("");
        assert!(s == "accepted" || s == "duplicate", "unexpected result {r}");
    }
}

#[test]
fn sigterm_drains_in_flight_requests_syncs_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[(KEY, PROJECT), ("other", "second")]);
    let addr = server.addr;

    // Clients keep sending while the signal arrives.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let stop = Arc::clone(&stop);
        clients.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut seq = c * 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Json> = (seq..seq + 50).map(message).collect();
                match post_batch(addr, &batch) {
                    Ok((200, body)) => {
                        assert_all_taken(&body);
                        acked.extend(seq..seq + 50);
                    }
                    Ok((status, body)) => panic!("status {status}: {body}"),
                    Err(_) => break, // the server stopped accepting
                }
                seq += 50;
            }
            acked
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    server.signal("TERM");
    let status = server.wait(Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    assert!(
        status.success(),
        "exit status {status:?}; stderr:\n{}",
        server.stderr()
    );
    assert!(server.stderr().contains("SIGTERM"), "{}", server.stderr());
    let acked: Vec<u64> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(
        !acked.is_empty(),
        "no batch was acknowledged before SIGTERM"
    );

    // The locks are released (a second open would fail otherwise), and every acknowledged
    // message is there.
    let db = Db::open(dir.path().join(PROJECT), Options::default()).expect("reopen shop");
    let mut expected: HashMap<u64, i64> = HashMap::new();
    for seq in &acked {
        *expected.entry(seq % USERS).or_default() += 1;
    }
    for (user, n) in expected {
        assert!(
            count_of(&db, user) >= n,
            "user-{user} lost acknowledged messages"
        );
    }
    db.close().unwrap();
    Db::open(dir.path().join("second"), Options::default())
        .expect("reopen second")
        .close()
        .unwrap();
}

#[test]
fn sigint_stops_cleanly_and_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[(KEY, PROJECT)]);
    let (status, body) = post_batch(server.addr, &[message(1), message(2)]).unwrap();
    assert_eq!(status, 200, "{body}");
    server.signal("INT");
    let status = server.wait(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", server.stderr());
    // Restart on the same directory: the data is there, the lock was released.
    let server = ServerProcess::start(dir.path(), &[(KEY, PROJECT)]);
    let auth = server_common::bearer(server_common::ADMIN_ALL);
    let r = try_request(
        server.addr,
        "GET",
        "/v1/profiles?user_id=user-1",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn a_second_server_on_the_same_directory_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _server = ServerProcess::start(dir.path(), &[(KEY, PROJECT)]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .arg("--data")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--write-key"])
        .arg(format!("{KEY}={PROJECT}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked"), "{err}");
}

#[test]
fn kill_9_loses_no_acknowledged_message_and_counts_none_twice() {
    let rounds: u64 = std::env::var("PROFILEDB_SERVER_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    eprintln!("kill -9 test: {rounds} rounds, seed {seed}");
    let mut rng = SplitMix64(seed);
    let dir = tempfile::tempdir().unwrap();
    // How many messages of each user have been acknowledged (each adds 1 to its count).
    let mut expected: HashMap<u64, i64> = HashMap::new();
    let mut next_seq = 0u64;
    let mut pending: Option<Vec<u64>> = None;
    let mut total_acked = 0usize;
    for round in 0..rounds {
        let mut server = ServerProcess::start(dir.path(), &[(KEY, PROJECT)]);
        let addr = server.addr;
        // First resend the batch that was in flight at the last kill: its messages must be
        // applied exactly once, whether or not the server had applied them.
        if let Some(seqs) = pending.take() {
            let batch: Vec<Json> = seqs.iter().copied().map(message).collect();
            let (status, body) = post_batch(addr, &batch).expect("resend after restart");
            assert_eq!(status, 200, "round {round}: {body}");
            assert_all_taken(&body);
            for s in &seqs {
                *expected.entry(s % USERS).or_default() += 1;
            }
            total_acked += seqs.len();
        }
        // Verify the store against what was acknowledged so far, over HTTP.
        let auth = server_common::bearer(server_common::ADMIN_ALL);
        for user in 0..USERS {
            let want = expected.get(&user).copied().unwrap_or(0);
            let r = try_request(
                addr,
                "GET",
                &format!("/v1/profiles?user_id=user-{user}"),
                &[("Authorization", &auth)],
                b"",
            )
            .unwrap();
            let got = if r.status == 404 {
                0
            } else {
                let p: Json = serde_json::from_slice(&r.body).unwrap();
                p["properties"]["count"].as_i64().unwrap_or(-1)
            };
            assert_eq!(
                got, want,
                "round {round} (seed {seed}): user-{user} has count {got}, {want} acknowledged"
            );
        }

        // A client sends batches until the server dies.
        let start_seq = next_seq;
        let client = std::thread::spawn(move || {
            let mut acked: Vec<Vec<u64>> = Vec::new();
            let mut seq = start_seq;
            loop {
                let size = 1 + (seq % 40);
                let seqs: Vec<u64> = (seq..seq + size).collect();
                seq += size;
                let batch: Vec<Json> = seqs.iter().copied().map(message).collect();
                match post_batch(addr, &batch) {
                    Ok((200, body)) => {
                        assert_all_taken(&body);
                        acked.push(seqs);
                    }
                    Ok((status, body)) => panic!("status {status}: {body}"),
                    Err(_) => return (acked, seqs, seq),
                }
            }
        });
        let wait = Duration::from_millis(rng.next_u64() % 400);
        let started = Instant::now();
        while started.elapsed() < wait && !client.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        server.signal("KILL");
        let status = server.wait(Duration::from_secs(30));
        assert!(!status.success());
        let (acked, in_flight, seq_after) = client.join().expect("client thread");
        for seqs in &acked {
            for s in seqs {
                *expected.entry(s % USERS).or_default() += 1;
            }
            total_acked += seqs.len();
        }
        pending = Some(in_flight);
        next_seq = seq_after;
        drop(server);
    }
    // Final check through the library, after a last restart that resends the in-flight batch.
    let server = ServerProcess::start(dir.path(), &[(KEY, PROJECT)]);
    if let Some(seqs) = pending.take() {
        let batch: Vec<Json> = seqs.iter().copied().map(message).collect();
        let (status, body) = post_batch(server.addr, &batch).unwrap();
        assert_eq!(status, 200, "{body}");
        for s in &seqs {
            *expected.entry(s % USERS).or_default() += 1;
        }
        total_acked += seqs.len();
    }
    let mut server = server;
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(60)).success());
    let db = Db::open(dir.path().join(PROJECT), Options::default()).unwrap();
    let mut sum = 0;
    for user in 0..USERS {
        let want = expected.get(&user).copied().unwrap_or(0);
        let got = count_of(&db, user);
        assert_eq!(got, want, "seed {seed}: user-{user}");
        sum += got;
    }
    assert_eq!(sum as usize, total_acked);
    eprintln!(
        "kill -9 test: {total_acked} acknowledged messages over {rounds} rounds, all present once"
    );
}
