//! A store that fails (an fsync error poisons it) answers 503 and never claims success; the
//! other projects keep working; `/health` names the failed project; after a restart the store
//! recovers and a resent batch is applied exactly once.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod server_common;

use std::sync::Arc;

use profiledb::storage::StoreOptions;
use profiledb::storage::io::{FaultKind, FaultyIo, Op};
use profiledb::{Db, Durability, Options};
use serde_json::json;
use server_common::TestServer;

#[test]
fn a_failed_sync_answers_503_and_never_success() {
    let dir = tempfile::tempdir().unwrap();
    let io = FaultyIo::new();
    let options = Options::default();
    let faulty = Db::open_with(
        &dir.path().join("bad"),
        options.clone(),
        StoreOptions {
            segment_size: options.segment_size,
            durability: Durability::Buffered,
            repair: false,
            create: true,
            io: Arc::new(io.clone()),
        },
    )
    .unwrap();
    let good = Db::open(dir.path().join("good"), options).unwrap();
    let s = TestServer::start_stores(
        dir,
        &[("kb", "bad"), ("kg", "good")],
        vec![("bad".into(), faulty), ("good".into(), good)],
    );
    let batch = json!({"batch": [
        {"userId": "f-1", "messageId": "fm-1", "$add": {"n": 1}},
        {"userId": "f-2", "messageId": "fm-2", "$add": {"n": 1}}
    ]});
    let r = s.post("/v1/batch", "kb", &batch);
    assert_eq!(r.status, 200, "{}", r.text());

    io.fail(Op::Sync, 1, FaultKind::Error, false);
    let batch2 = json!({"batch": [{"userId": "f-3", "messageId": "fm-3"}]});
    let r = s.post("/v1/batch", "kb", &batch2);
    assert_eq!(r.status, 503, "{}", r.text());
    let body = r.json();
    assert_eq!(body["code"], "store_unavailable");
    // The details (paths, OS errors) are logged, not sent.
    let message = body["message"].as_str().unwrap();
    assert!(
        !message.contains('/') && !message.contains(".seg"),
        "{message}"
    );
    assert!(body.get("success").is_none(), "{body}");
    assert!(body.get("results").is_none(), "{body}");
    // Poisoned: later requests fail too (the fault was one-shot), single endpoints as well.
    let r = s.post("/v1/identify", "kb", &json!({"userId": "f-4"}));
    assert_eq!(r.status, 503, "{}", r.text());
    // The other project is unaffected.
    let r = s.post("/v1/identify", "kg", &json!({"userId": "g-1"}));
    assert_eq!(r.status, 200, "{}", r.text());

    // The summary says a project is down but names it only to an admin; per project, 503.
    let h = s.request("GET", "/health", &[], b"");
    assert_eq!(h.status, 200, "{}", h.text());
    assert!(h.text().contains("degraded: 1 of 2"), "{}", h.text());
    assert!(!h.text().contains("bad"), "{}", h.text());
    let all = server_common::bearer(server_common::ADMIN_ALL);
    let h = s.request("GET", "/health", &[("Authorization", &all)], b"");
    assert!(h.text().contains("bad"), "{}", h.text());
    assert_eq!(
        s.request("GET", "/health?project=bad", &[], b"").status,
        503
    );
    assert_eq!(
        s.request("GET", "/health?project=good", &[], b"").status,
        200
    );
    let m = s
        .request("GET", "/metrics", &[("Authorization", &all)], b"")
        .text();
    assert!(
        m.contains("profiledb_unavailable_total{project=\"bad\"} 2"),
        "{m}"
    );

    // Stopping reports the failed store but still releases every lock.
    let (result, dir) = s.stop();
    assert!(result.is_err(), "closing a poisoned store must be reported");

    // Restart on real I/O: the lock was released, the acknowledged batch is there, and
    // resending both batches applies each message once.
    let db = Db::open(dir.path().join("bad"), Options::default()).expect("reopen after poison");
    let s = TestServer::start_stores(dir, &[("kb", "bad")], vec![("bad".into(), db)]);
    let r = s.post("/v1/batch", "kb", &batch2);
    assert_eq!(r.status, 200, "{}", r.text());
    let status = r.json()["results"][0]["status"].clone();
    assert!(status == "accepted" || status == "duplicate", "{status}");
    let r = s.post("/v1/batch", "kb", &batch);
    assert_eq!(r.json()["duplicates"], 2, "{}", r.text());
    for u in ["f-1", "f-2"] {
        let p = s.read(&format!("/v1/profiles?user_id={u}"), "kb").json();
        assert_eq!(p["properties"]["n"], 1, "{p}");
    }
    assert_eq!(s.read("/v1/profiles?user_id=f-3", "kb").status, 200);
    let (result, _dir) = s.stop();
    result.unwrap();
}
