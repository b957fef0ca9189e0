//! Group commit under `kill -9`: many clients post batches to one project at once (so their
//! requests are applied in shared groups with one sync each), the server process is killed
//! with SIGKILL right after a number of `200`s, and the store, reopened by the library, holds
//! every call that any `200` acknowledged, with its values.
//!
//! `PROFILEDB_GROUP_COMMIT_ROUNDS` sets the number of kill rounds (default 4).
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod server_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use profiledb::{Db, Options, Selector, Value};
use serde_json::{Value as Json, json};
use server_common::{ServerProcess, basic, try_request};

const KEY: &str = "wk-group";
const PROJECT: &str = "shop";
const CLIENTS: u64 = 8;

/// Call `n` of client `c` in round `r`: a new profile with two traits and a messageId.
fn message(r: u64, c: u64, n: u64) -> Json {
    json!({
        "type": "identify",
        "userId": format!("r{r}-c{c}-n{n}"),
        "messageId": format!("m-r{r}-c{c}-n{n}"),
        "traits": {"email": format!("r{r}-c{c}-n{n}@example.com"), "n": n},
    })
}

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
    Ok((
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Json::Null),
    ))
}

#[test]
fn kill_9_right_after_concurrent_200s_loses_no_acknowledged_call() {
    let rounds: u64 = std::env::var("PROFILEDB_GROUP_COMMIT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dir = tempfile::tempdir().unwrap();
    // (round, client, n) of every acknowledged call.
    let acked: Arc<Mutex<Vec<(u64, u64, u64)>>> = Arc::default();
    for round in 0..rounds {
        let mut server = ServerProcess::start(dir.path(), &[(KEY, PROJECT)]);
        let addr = server.addr;
        let pid = server.child.id();
        // Kill after this many acknowledged requests (of all clients together).
        let kill_after = 20 + 15 * round as usize;
        let answered = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let acked = Arc::clone(&acked);
                let answered = Arc::clone(&answered);
                let killed = Arc::clone(&killed);
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    for request in 0u64.. {
                        // Batches of 1 to 100 calls.
                        let size = 1 + (request * 37 + c * 11) % 100;
                        let batch: Vec<Json> =
                            (n..n + size).map(|i| message(round, c, i)).collect();
                        match post_batch(addr, &batch) {
                            Ok((200, body)) => {
                                assert_eq!(body["accepted"], size, "{body}");
                                acked
                                    .lock()
                                    .unwrap()
                                    .extend((n..n + size).map(|i| (round, c, i)));
                                n += size;
                                // The first client to see the threshold kills the server at
                                // once; the others keep sending until their socket fails.
                                if answered.fetch_add(1, Ordering::SeqCst) + 1 >= kill_after
                                    && !killed.swap(true, Ordering::SeqCst)
                                {
                                    let status = std::process::Command::new("kill")
                                        .arg("-KILL")
                                        .arg(pid.to_string())
                                        .status()
                                        .expect("run kill");
                                    assert!(status.success());
                                }
                            }
                            Ok((status, body)) => panic!("status {status}: {body}"),
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().expect("client thread");
        }
        let status = server.wait(Duration::from_secs(30));
        assert!(
            !status.success(),
            "round {round}: the server was not killed"
        );
    }

    let acked = acked.lock().unwrap();
    assert!(
        acked.len() as u64 >= rounds * 20,
        "too few acknowledged calls"
    );
    let db = Db::open(dir.path().join(PROJECT), Options::default()).unwrap();
    for &(r, c, n) in acked.iter() {
        let user = format!("r{r}-c{c}-n{n}");
        let profile = db
            .get(&Selector::UserId(user.clone()))
            .unwrap()
            .unwrap_or_else(|| panic!("{user}: acknowledged but missing after kill -9"));
        let value = |name: &str| {
            profile
                .properties
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(value("n"), Some(Value::Int(n as i64)), "{user}");
        assert_eq!(
            profile.email.as_deref(),
            Some(format!("{user}@example.com").as_str()),
            "{user}"
        );
    }
    eprintln!(
        "group commit kill -9 test: {} acknowledged calls over {rounds} rounds, all present",
        acked.len()
    );
}
