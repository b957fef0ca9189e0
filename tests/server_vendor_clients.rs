//! Vendor clients from PyPI, unchanged, against the built `profiledb serve` on loopback:
//! RudderStack (`rudder-sdk-python`), PostHog (`posthog`) and Mixpanel (`mixpanel`). Each test
//! runs a script of `tests/vendor_clients/` with the python `PROFILEDB_PYTHON` names (`.ci/run`
//! installs the clients into its virtualenv), then reads the profiles back over HTTP.
//!
//! Outside CI, a test whose client is not installed prints why it is skipped and passes; under
//! `CI=true` a missing client fails the test.
#![cfg(feature = "server")]

mod server_common;

use std::ffi::OsString;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use server_common::{ServerProcess, basic, try_request};

/// The python to use, if it can import `module`; `None` (skip) outside CI, panic under CI.
fn python_with(module: &str) -> Option<OsString> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let python = std::env::var_os("PROFILEDB_PYTHON").filter(|p| !p.is_empty());
    let Some(python) = python else {
        assert!(
            !ci,
            "CI=true but PROFILEDB_PYTHON is not set (.ci/run sets it)"
        );
        eprintln!("skipped: PROFILEDB_PYTHON not set (a python with {module} installed)");
        return None;
    };
    let check = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .expect("PROFILEDB_PYTHON must be a runnable python");
    if !check.status.success() {
        let why = String::from_utf8_lossy(&check.stderr);
        assert!(!ci, "CI=true but {python:?} cannot import {module}: {why}");
        eprintln!("skipped: {python:?} cannot import {module}: {why}");
        return None;
    }
    Some(python)
}

/// Run `tests/vendor_clients/SCRIPT URL KEY`; it must print `ok`.
fn run_script(python: &OsString, script: &str, url: &str, key: &str) {
    let path = format!(
        "{}/tests/vendor_clients/{script}",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new(python)
        .arg(&path)
        .arg(url)
        .arg(key)
        .output()
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ok"),
        "{script} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

struct Server {
    process: ServerProcess,
    _dir: tempfile::TempDir,
    key: &'static str,
}

impl Server {
    fn start(key: &'static str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let process = ServerProcess::start(dir.path(), &[(key, "app")]);
        Server {
            process,
            _dir: dir,
            key,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.process.addr)
    }

    /// The profile a query selects, or `None` on 404.
    fn profile(&self, query: &str) -> Option<Value> {
        let auth = basic(self.key);
        let r = try_request(
            self.process.addr,
            "GET",
            &format!("/v1/profiles?{query}"),
            &[("Authorization", &auth)],
            b"",
        )
        .unwrap();
        match r.status {
            200 => Some(r.json()),
            404 => None,
            other => panic!("GET {query}: {other} {}", r.text()),
        }
    }

    fn metrics(&self) -> String {
        try_request(self.process.addr, "GET", "/metrics", &[], b"")
            .unwrap()
            .text()
    }

    /// SIGTERM and a clean exit; the project's store, reopened.
    fn stop(mut self) -> (profiledb::Db, tempfile::TempDir) {
        self.process.signal("TERM");
        let status = self.process.wait(Duration::from_secs(60));
        assert!(status.success(), "{status:?}\n{}", self.process.stderr());
        let db = profiledb::Db::open(self._dir.path().join("app"), profiledb::Options::default())
            .expect("reopen the project's store");
        (db, self._dir)
    }
}

fn refusals_are_zero(metrics: &str) -> bool {
    metrics
        .lines()
        .filter(|l| l.starts_with("profiledb_refusals_total"))
        .all(|l| l.ends_with(" 0"))
}

#[test]
fn rudderstack_python_client_identify_group_alias_track() {
    let Some(python) = python_with("rudderstack.analytics") else {
        return;
    };
    let server = Server::start("rs-write-key");
    run_script(&python, "send_rudderstack.py", &server.url(), server.key);

    let p = server.profile("user_id=rs-user-1").expect("rs-user-1");
    // The traits came in context.traits only.
    assert_eq!(p["email"], "Robin@Example.com", "{p}");
    assert_eq!(p["properties"]["first_name"], "Robin");
    assert_eq!(p["properties"]["name"], "Robin Stone");
    assert_eq!(p["properties"]["seats"], 5);
    // The second identify's trait won; its retry (same messageId) changed nothing.
    assert_eq!(p["properties"]["plan"], "enterprise");
    assert_eq!(p["company_id"], "rs-co-1");
    let anon = p["anonymous_ids"].as_array().unwrap();
    for a in ["rs-anon-1", "rs-prev-1", "rs-anon-2"] {
        assert!(anon.contains(&json!(a)), "{a} missing: {p}");
    }
    for q in ["email=robin%40example.com", "anonymous_id=rs-prev-1"] {
        assert_eq!(server.profile(q).expect(q)["key"], p["key"], "{q}");
    }
    for i in 0..20 {
        let b = server
            .profile(&format!("user_id=rs-bulk-{i}"))
            .expect("bulk");
        assert_eq!(b["properties"]["n"], i);
        assert_eq!(b["email"], format!("rsbulk{i}@example.com"));
    }
    let metrics = server.metrics();
    assert!(
        metrics.contains("profiledb_duplicates_total{project=\"app\"} 1"),
        "{metrics}"
    );
    assert!(refusals_are_zero(&metrics), "{metrics}");
    let (db, _dir) = server.stop();
    db.close().unwrap();
}

#[test]
fn posthog_python_client_identify_set_set_once_unset_alias_group_identify() {
    let Some(python) = python_with("posthog") else {
        return;
    };
    let server = Server::start("phc_project_key");
    run_script(&python, "send_posthog.py", &server.url(), server.key);

    let p = server.profile("user_id=ph-user-1").expect("ph-user-1");
    // $identify merged the anonymous person (and its $set_once) into the identified one.
    assert_eq!(p["email"], "Pip@Example.com", "{p}");
    assert_eq!(p["properties"]["first_name"], "Pip");
    assert_eq!(p["properties"]["first_campaign"], "spring");
    // set after the $identify's $set wins; set_once leaves a set property alone.
    assert_eq!(p["properties"]["plan"], "team");
    assert_eq!(p["properties"]["signup_source"], "ads");
    // $unset on an ordinary event.
    assert!(p["properties"].get("temp").is_none(), "{p}");
    let anon = p["anonymous_ids"].as_array().unwrap();
    for a in ["ph-anon-1", "ph-anon-2"] {
        assert!(anon.contains(&json!(a)), "{a} missing: {p}");
    }
    assert_eq!(
        server.profile("anonymous_id=ph-anon-1").unwrap()["key"],
        p["key"]
    );
    // The unknown key wrote nothing.
    assert!(server.profile("user_id=ph-user-2").is_none());
    assert!(refusals_are_zero(&server.metrics()), "{}", server.metrics());
    let (db, _dir) = server.stop();
    let company = db
        .company("ph-co-1")
        .unwrap()
        .expect("group_identify made the company");
    let company = serde_json::to_value(&company).unwrap();
    assert_eq!(company["properties"]["name"], "PostCo", "{company}");
    assert_eq!(company["properties"]["employees"], 11, "{company}");
    db.close().unwrap();
}

#[test]
fn mixpanel_python_client_people_operations_and_group_set() {
    let Some(python) = python_with("mixpanel") else {
        return;
    };
    let server = Server::start("mp-project-token");
    run_script(&python, "send_mixpanel.py", &server.url(), server.key);

    let p = server.profile("user_id=mp-user-1").expect("mp-user-1");
    let props = &p["properties"];
    // Reserved properties under profiledb's names; the email is the identifier.
    assert_eq!(p["email"], "Max@Example.com", "{p}");
    assert_eq!(props["first_name"], "Max");
    assert_eq!(props["name"], "Max Power");
    assert_eq!(props["created_at"], "2026-01-02T03:04:05Z");
    assert_eq!(p["created_at"], "2026-01-02T03:04:05Z");
    assert_eq!(props["phone"], "+44 20 7946 0000");
    assert_eq!(props["plan"], "free");
    assert_eq!(props["source"], "ads");
    assert_eq!(props["logins"], 5);
    assert_eq!(props["events"], json!(["signup", "upgrade"]));
    assert_eq!(props["tags"], json!(["a", "c", "d"]));
    assert!(props.get("temp").is_none(), "{p}");
    // people_delete removed the profile.
    assert!(server.profile("user_id=mp-gone").is_none());
    assert!(server.profile("user_id=mp-user-2").is_none());
    assert!(refusals_are_zero(&server.metrics()), "{}", server.metrics());
    let (db, _dir) = server.stop();
    let company = db
        .company("mp-co-1")
        .unwrap()
        .expect("group_set made the company");
    let company = serde_json::to_value(&company).unwrap();
    assert_eq!(company["properties"]["name"], "MixCo", "{company}");
    assert_eq!(company["properties"]["tier"], 2, "{company}");
    db.close().unwrap();
}
