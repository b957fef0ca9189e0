//! Segment's own Python client (`segment-analytics-python` from PyPI) against the server.
//!
//! Runs when `PROFILEDB_PYTHON` names a python that can `import segment.analytics` (`.ci/run`
//! makes a virtualenv for it); otherwise it prints why it is skipped and passes.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod server_common;

use std::process::Command;

use serde_json::json;
use server_common::TestServer;

const KEY: &str = "py-write-key";

#[test]
fn segment_python_client_identify_group_alias_track() {
    let Some(python) = std::env::var_os("PROFILEDB_PYTHON").filter(|p| !p.is_empty()) else {
        eprintln!("skipped: PROFILEDB_PYTHON not set (a python with segment-analytics-python)");
        return;
    };
    let check = Command::new(&python)
        .args(["-c", "import segment.analytics"])
        .output()
        .expect("PROFILEDB_PYTHON must be a runnable python");
    assert!(
        check.status.success(),
        "PROFILEDB_PYTHON={python:?} cannot import segment.analytics: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let server = TestServer::start(&[(KEY, "web")]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/segment_client/send.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .arg(format!("http://{}", server.addr))
        .arg(KEY)
        .output()
        .expect("run send.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ok"),
        "send.py failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

    // identify + alias + track (both ids) + group, all on one profile.
    let r = server.read("/v1/profiles?user_id=py-user-1", KEY);
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    assert_eq!(p["email"], "Pat@Example.com");
    assert_eq!(p["properties"]["first_name"], "Pat");
    assert_eq!(p["properties"]["last_name"], "Lee");
    assert_eq!(p["properties"]["name"], "Pat Lee");
    assert_eq!(p["properties"]["plan"], "pro");
    assert_eq!(p["company_id"], "py-co-1");
    let anon = p["anonymous_ids"].as_array().unwrap();
    for a in ["py-anon-1", "py-prev-1", "py-anon-2"] {
        assert!(anon.contains(&json!(a)), "{a} missing: {p}");
    }
    for q in [
        "email=pat%40example.com",
        "anonymous_id=py-prev-1",
        "anonymous_id=py-anon-2",
    ] {
        let r = server.read(&format!("/v1/profiles?{q}"), KEY);
        assert_eq!(r.status, 200, "{q}");
        assert_eq!(r.json()["key"], p["key"], "{q}");
    }

    // The queued, gzip-compressed batches.
    for i in 0..50 {
        let r = server.read(&format!("/v1/profiles?user_id=py-bulk-{i}"), KEY);
        assert_eq!(r.status, 200, "py-bulk-{i}");
        let b = r.json();
        assert_eq!(b["properties"]["n"], i);
        assert_eq!(b["email"], format!("bulk{i}@example.com"));
    }
    let r = server.read("/v1/profiles?anonymous_id=py-bulk-anon", KEY);
    assert_eq!(r.json()["user_id"], "py-bulk-0");

    // The retried messageId was recognised as a duplicate, and nothing was refused.
    let all = server_common::bearer(server_common::ADMIN_ALL);
    let metrics = server
        .request("GET", "/metrics", &[("Authorization", &all)], b"")
        .text();
    assert!(
        metrics.contains("profiledb_duplicates_total{project=\"web\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .filter(|l| l.starts_with("profiledb_refusals_total"))
            .all(|l| l.ends_with(" 0")),
        "{metrics}"
    );
    let (result, _dir) = server.stop();
    result.unwrap();
}
