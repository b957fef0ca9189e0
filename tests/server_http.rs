//! Black-box tests of the HTTP ingestion server over real HTTP on loopback: every endpoint,
//! authentication, Segment's limits, gzip, project isolation, metrics and graceful shutdown.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod server_common;

use std::io::Write as _;

use profiledb::server::Limits;
use profiledb::{Db, Options, Selector};
use serde_json::{Value, json};
use server_common::{TestServer, basic};

const KEY_A: &str = "key-a";
const KEY_B: &str = "key-b";

fn start() -> TestServer {
    TestServer::start(&[(KEY_A, "alpha"), (KEY_B, "beta"), ("key-a2", "alpha")])
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn results(body: &Value) -> &Vec<Value> {
    body["results"].as_array().expect("results array")
}

#[test]
fn batch_answers_a_result_per_message() {
    let s = start();
    let r = s.post(
        "/v1/batch",
        KEY_A,
        &json!({"batch": [
            {"type": "identify", "userId": "u-1", "messageId": "m-1",
             "traits": {"email": "sarah@example.com", "plan": "pro"}, "$add": {"logins": 1}},
            {"type": "identify", "userId": "u-1", "messageId": "m-2", "traits": {"plan": "team"}},
            {"type": "identify", "userId": "u-1", "traits": {"first_name": "S"}},
            {"type": "identify", "userId": "u-1", "messageId": "m-1", "$add": {"logins": 1}},
            {"type": "group", "userId": "u-1", "groupId": "c-1", "traits": {"name": "Acme"}},
            {"type": "alias", "previousId": "anon-1", "userId": "u-1"},
            {"type": "track", "userId": "u-1", "anonymousId": "anon-2", "event": "Clicked"},
            {"type": "bogus"},
            "not an object",
            {"userId": "u-2"}
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["success"], true);
    let res = results(&body);
    assert_eq!(res.len(), 10);
    for (i, r) in res.iter().enumerate() {
        assert_eq!(r["index"], i, "{r}");
    }
    assert_eq!(res[0]["status"], "accepted");
    assert_eq!(res[0]["outcome"], "created");
    let key = res[0]["key"].as_u64().unwrap();
    assert_eq!(res[1]["status"], "accepted");
    assert_eq!(res[1]["outcome"], "updated");
    assert_eq!(res[1]["key"], key);
    assert_eq!(res[2]["status"], "refused");
    assert_eq!(res[2]["error"], "invalid");
    assert!(
        res[2]["reason"].as_str().unwrap().contains("first_name"),
        "{}",
        res[2]
    );
    assert_eq!(res[3]["status"], "duplicate");
    assert_eq!(res[3]["key"], key);
    assert_eq!(res[4]["status"], "accepted");
    assert_eq!(res[5]["status"], "accepted");
    assert_eq!(res[6]["status"], "accepted");
    assert_eq!(res[7]["status"], "refused");
    assert_eq!(res[7]["error"], "malformed");
    assert_eq!(res[8]["status"], "refused");
    assert_eq!(res[8]["error"], "malformed");
    assert_eq!(
        res[9]["status"], "accepted",
        "a message without type is an identify"
    );
    assert_eq!(body["accepted"], 6);
    assert_eq!(body["duplicates"], 1);
    assert_eq!(body["refused"], 3);

    let p = s.read("/v1/profiles?user_id=u-1", KEY_A);
    assert_eq!(p.status, 200, "{}", p.text());
    let p = p.json();
    assert_eq!(p["key"], key);
    assert_eq!(p["email"], "sarah@example.com");
    assert_eq!(p["company_id"], "c-1");
    assert_eq!(p["properties"]["plan"], "team");
    assert_eq!(
        p["properties"]["logins"], 1,
        "the duplicate must not count twice"
    );
    let anon = p["anonymous_ids"].as_array().unwrap();
    assert!(
        anon.contains(&json!("anon-1")) && anon.contains(&json!("anon-2")),
        "{p}"
    );
}

#[test]
fn single_message_endpoints_take_the_type_from_the_path() {
    let s = start();
    let r = s.post(
        "/v1/identify",
        KEY_A,
        &json!({"userId": "u-7", "traits": {"email": "Bob@Example.com"}, "messageId": "i-1"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["success"], true);
    assert_eq!(results(&body)[0]["outcome"], "created");
    let key = results(&body)[0]["key"].clone();

    // The path's type wins over the body's.
    let r = s.post(
        "/v1/group",
        KEY_A,
        &json!({"type": "identify", "userId": "u-7", "groupId": "g-7", "traits": {"plan": "x"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(results(&r.json())[0]["status"], "accepted", "{}", r.text());

    let r = s.post(
        "/v1/alias",
        KEY_A,
        &json!({"previousId": "dev-7", "userId": "u-7"}),
    );
    assert_eq!(results(&r.json())[0]["status"], "accepted", "{}", r.text());
    for (path, anon) in [
        ("/v1/track", "t-7"),
        ("/v1/page", "p-7"),
        ("/v1/screen", "s-7"),
    ] {
        let r = s.post(
            path,
            KEY_A,
            &json!({"userId": "u-7", "anonymousId": anon, "event": "E", "name": "N"}),
        );
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            results(&r.json())[0]["status"],
            "accepted",
            "{path}: {}",
            r.text()
        );
    }
    // An identify without any identifier is refused, with the answer still 200.
    let r = s.post("/v1/identify", KEY_A, &json!({"traits": {"plan": "x"}}));
    assert_eq!(r.status, 200);
    assert_eq!(results(&r.json())[0]["status"], "refused");

    let p = s.read("/v1/profiles?email=bob%40example.com", KEY_A).json();
    assert_eq!(p["key"], key);
    assert_eq!(p["company_id"], "g-7");
    let anon = p["anonymous_ids"].as_array().unwrap();
    for a in ["dev-7", "t-7", "p-7", "s-7"] {
        assert!(anon.contains(&json!(a)), "{a} missing in {p}");
    }
    for q in [
        "user_id=u-7",
        "anonymous_id=s-7",
        &format!("key={key}"),
        "email=BOB@example.com",
    ] {
        let r = s.read(&format!("/v1/profiles?{q}"), KEY_A);
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(r.json()["key"], key, "{q}");
    }
}

#[test]
fn unknown_or_missing_keys_are_refused() {
    let s = start();
    let msg = json!({"batch": [{"userId": "u-1"}]});
    let plain = msg.to_string();

    let r = s.request("POST", "/v1/batch", &[], plain.as_bytes());
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "unauthorized");
    assert!(r.json()["message"].is_string());

    let r = s.post("/v1/batch", "wrong", &msg);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "unauthorized");

    let r = s.request(
        "POST",
        "/v1/batch",
        &[("Authorization", "Basic %%%")],
        plain.as_bytes(),
    );
    assert_eq!(r.status, 401);

    // The key in the body.
    let with_key = json!({"writeKey": KEY_A, "batch": [{"userId": "u-1"}]}).to_string();
    let r = s.request("POST", "/v1/batch", &[], with_key.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(results(&r.json())[0]["status"], "accepted");
    let r = s.request(
        "POST",
        "/v1/identify",
        &[],
        json!({"writeKey": KEY_A, "userId": "u-2"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let wrong = json!({"writeKey": "nope", "batch": [{"userId": "u-1"}]}).to_string();
    let r = s.request("POST", "/v1/batch", &[], wrong.as_bytes());
    assert_eq!(r.status, 401);

    // A wrong header key is not rescued by a right body key.
    let auth = basic("wrong");
    let r = s.request(
        "POST",
        "/v1/batch",
        &[("Authorization", &auth)],
        with_key.as_bytes(),
    );
    assert_eq!(r.status, 401);

    // Reads need an admin token: none, an unknown one, or a write key are refused.
    assert_eq!(
        s.request("GET", "/v1/profiles?user_id=u-1", &[], b"")
            .status,
        401
    );
    assert_eq!(s.read("/v1/profiles?user_id=u-1", "wrong").status, 401);
    assert_eq!(s.get("/v1/profiles?user_id=u-1", KEY_A).status, 403);
    assert_eq!(s.read("/v1/profiles?user_id=u-1", KEY_A).status, 200);
    // The server-wide token names the project.
    let all = server_common::bearer(server_common::ADMIN_ALL);
    let r = s.request(
        "GET",
        "/v1/profiles?user_id=u-1&project=alpha",
        &[("Authorization", &all)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn a_key_reaches_only_its_project() {
    let s = start();
    let r = s.post(
        "/v1/batch",
        KEY_A,
        &json!({"batch": [{"userId": "only-in-a", "traits": {"plan": "a"}}]}),
    );
    assert_eq!(results(&r.json())[0]["status"], "accepted");
    let r = s.post(
        "/v1/batch",
        KEY_B,
        &json!({"batch": [{"userId": "only-in-b", "traits": {"plan": "b"}}]}),
    );
    assert_eq!(results(&r.json())[0]["status"], "accepted");

    assert_eq!(s.read("/v1/profiles?user_id=only-in-a", KEY_A).status, 200);
    assert_eq!(s.read("/v1/profiles?user_id=only-in-a", KEY_B).status, 404);
    assert_eq!(s.read("/v1/profiles?user_id=only-in-b", KEY_A).status, 404);
    assert_eq!(s.read("/v1/profiles?user_id=only-in-b", KEY_B).status, 200);
    let r = s.admin("DELETE", "/v1/profiles?user_id=only-in-a", KEY_B);
    assert_eq!(r.status, 404, "B cannot delete A's profile");
    let r = s.admin(
        "DELETE",
        "/v1/profiles?user_id=only-in-a&project=alpha",
        KEY_B,
    );
    assert_eq!(r.status, 403, "B's admin token is not A's");
    assert_eq!(s.read("/v1/profiles?user_id=only-in-a", KEY_A).status, 200);

    // On disk: each project is its own store under DATA/PROJECT.
    let (result, dir) = s.stop();
    result.expect("clean stop");
    let a = Db::open(dir.path().join("alpha"), Options::default()).unwrap();
    let b = Db::open(dir.path().join("beta"), Options::default()).unwrap();
    assert!(
        a.get(&Selector::UserId("only-in-a".into()))
            .unwrap()
            .is_some()
    );
    assert!(
        a.get(&Selector::UserId("only-in-b".into()))
            .unwrap()
            .is_none()
    );
    assert!(
        b.get(&Selector::UserId("only-in-b".into()))
            .unwrap()
            .is_some()
    );
    assert!(
        b.get(&Selector::UserId("only-in-a".into()))
            .unwrap()
            .is_none()
    );
}

#[test]
fn batch_context_is_accepted_and_messages_keep_their_own() {
    let s = start();
    let r = s.post(
        "/v1/batch",
        KEY_A,
        &json!({
            "context": {"library": {"name": "test"}, "ip": "1.2.3.4"},
            "batch": [
                {"userId": "ctx-1", "context": {"ip": "5.6.7.8"}},
                {"userId": "ctx-2", "context": null},
                {"userId": "ctx-3", "context": "odd but kept"}
            ]
        }),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for res in results(&r.json()) {
        assert_eq!(res["status"], "accepted", "{res}");
    }
}

#[test]
fn gzip_bodies_are_decoded() {
    let s = start();
    let body = json!({"batch": [{"userId": "gz-1", "traits": {"plan": "zip"}}]}).to_string();
    let auth = basic(KEY_A);
    let r = s.request(
        "POST",
        "/v1/batch",
        &[("Authorization", &auth), ("Content-Encoding", "gzip")],
        &gzip(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(results(&r.json())[0]["status"], "accepted");
    assert_eq!(
        s.read("/v1/profiles?user_id=gz-1", KEY_A).json()["properties"]["plan"],
        "zip"
    );

    // Not gzip although it says so.
    let r = s.request(
        "POST",
        "/v1/batch",
        &[("Authorization", &auth), ("Content-Encoding", "gzip")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "invalid_gzip");

    // An encoding we do not speak.
    let r = s.request(
        "POST",
        "/v1/batch",
        &[("Authorization", &auth), ("Content-Encoding", "br")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "unsupported_encoding");

    // A decompression bomb: 50 MB of zeros in ~50 KB; refused after 500 KB of output.
    let mut bomb = b"{\"batch\": [], \"pad\": \"".to_vec();
    bomb.resize(50 << 20, b'0');
    let r = s.request(
        "POST",
        "/v1/batch",
        &[("Authorization", &auth), ("Content-Encoding", "gzip")],
        &gzip(&bomb),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "payload_too_large");
}

#[test]
fn malformed_bodies_get_400_with_code_and_message() {
    let s = start();
    let auth = basic(KEY_A);
    for (body, code) in [
        (&b"{not json"[..], "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"{\"batch\": 3}", "invalid_batch"),
        (b"{\"messages\": []}", "invalid_batch"),
    ] {
        let r = s.request("POST", "/v1/batch", &[("Authorization", &auth)], body);
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(body));
        let j = r.json();
        assert_eq!(j["code"], code, "{j}");
        assert!(j["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let r = s.request(
        "POST",
        "/v1/identify",
        &[("Authorization", &auth)],
        b"{\"userId\":",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "invalid_json");
    // An empty batch is fine.
    let r = s.post("/v1/batch", KEY_A, &json!({"batch": []}));
    assert_eq!(r.status, 200);
    assert_eq!(results(&r.json()).len(), 0);
}

#[test]
fn segment_limits_are_enforced() {
    let s = start();
    let big = "x".repeat(33 * 1024);

    // One message over 32 KB on a single-message endpoint: the request is refused.
    let r = s.post(
        "/v1/identify",
        KEY_A,
        &json!({"userId": "big-1", "traits": {"blob": big}}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "message_too_large");

    // Inside a batch: only that message is refused.
    let r = s.post(
        "/v1/batch",
        KEY_A,
        &json!({"batch": [
            {"userId": "small-1"},
            {"userId": "big-2", "traits": {"blob": big}},
            {"userId": "small-2"}
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let res = results(&body);
    assert_eq!(res[0]["status"], "accepted");
    assert_eq!(res[1]["status"], "refused");
    assert_eq!(res[1]["error"], "too_large");
    assert_eq!(res[2]["status"], "accepted");
    assert_eq!(s.read("/v1/profiles?user_id=big-2", KEY_A).status, 404);

    // Just under the limit passes.
    let fits = "y".repeat(31 * 1024);
    let r = s.post(
        "/v1/batch",
        KEY_A,
        &json!({"batch": [{"userId": "fits-1", "traits": {"note": fits}}, {"userId": "fits-2"}]}),
    );
    let body = r.json();
    // (`note` may exceed the store's own value-size limit; what matters is that the server's
    // size check did not refuse it.)
    assert_ne!(results(&body)[0]["error"], "too_large", "{body}");

    // A batch over 500 KB: 400.
    let batch: Vec<Value> = (0..20)
        .map(|i| json!({"userId": format!("bulk-{i}"), "traits": {"blob": "z".repeat(30 * 1024)}}))
        .collect();
    let r = s.post("/v1/batch", KEY_A, &json!({ "batch": batch }));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "payload_too_large");
    assert_eq!(s.read("/v1/profiles?user_id=bulk-0", KEY_A).status, 404);

    // More than 2,500 messages: 400.
    let batch: Vec<Value> = (0..2501)
        .map(|i| json!({"userId": format!("n{i}")}))
        .collect();
    let r = s.post("/v1/batch", KEY_A, &json!({ "batch": batch }));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], "too_many_messages");
    assert_eq!(s.read("/v1/profiles?user_id=n0", KEY_A).status, 404);

    // Exactly 2,500 is fine.
    let batch: Vec<Value> = (0..2500)
        .map(|i| json!({"userId": format!("n{i}")}))
        .collect();
    let r = s.post("/v1/batch", KEY_A, &json!({ "batch": batch }));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 2500);
}

#[test]
fn limits_are_configurable() {
    let s = TestServer::start_with(&[(KEY_A, "alpha")], |mut c| {
        c.limits = Limits {
            max_message_bytes: 200,
            max_batch_bytes: 1000,
            max_batch_messages: 3,
        };
        c
    });
    let r = s.post(
        "/v1/batch",
        KEY_A,
        &json!({"batch": [{"userId": "a1"}, {"userId": "a2"}, {"userId": "a3"}, {"userId": "a4"}]}),
    );
    assert_eq!(r.json()["code"], "too_many_messages");
    let r = s.post(
        "/v1/batch",
        KEY_A,
        &json!({"batch": [{"userId": "a1", "traits": {"t": "q".repeat(300)}}, {"userId": "a2"}]}),
    );
    let body = r.json();
    assert_eq!(results(&body)[0]["error"], "too_large", "{body}");
    assert_eq!(results(&body)[1]["status"], "accepted", "{body}");
    let r = s.post(
        "/v1/batch",
        KEY_A,
        &json!({"batch": [{"userId": "a1", "traits": {"t": "q".repeat(1200)}}]}),
    );
    assert_eq!(r.json()["code"], "payload_too_large");
}

#[test]
fn profiles_can_be_read_and_deleted() {
    let s = start();
    let r = s.post(
        "/v1/batch",
        KEY_A,
        &json!({"batch": [
            {"userId": "del-1", "anonymousId": "dev-del", "traits": {"email": "del@example.com"}},
            {"userId": "keep-1"}
        ]}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(s.read("/v1/profiles?user_id=nobody", KEY_A).status, 404);
    assert_eq!(
        s.read("/v1/profiles?user_id=nobody", KEY_A).json()["code"],
        "not_found"
    );
    assert_eq!(s.read("/v1/profiles", KEY_A).status, 400);
    assert_eq!(s.read("/v1/profiles?user_id=a&email=b", KEY_A).status, 400);
    assert_eq!(s.read("/v1/profiles?key=abc", KEY_A).status, 400);

    let r = s.admin(
        "DELETE",
        "/v1/profiles?email=del%40example.com&suppress=true",
        KEY_A,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["deleted"].is_u64());
    assert_eq!(r.json()["suppressed"], true);
    assert_eq!(s.read("/v1/profiles?user_id=del-1", KEY_A).status, 404);
    assert_eq!(
        s.read("/v1/profiles?anonymous_id=dev-del", KEY_A).status,
        404
    );
    assert_eq!(s.read("/v1/profiles?user_id=keep-1", KEY_A).status, 200);
    let r = s.admin("DELETE", "/v1/profiles?user_id=del-1", KEY_A);
    assert_eq!(r.status, 404);
    let r = s.admin(
        "DELETE",
        "/v1/profiles?user_id=keep-1&suppress=maybe",
        KEY_A,
    );
    assert_eq!(r.status, 400);

    // Suppressed identifiers are refused afterwards.
    let r = s.post("/v1/identify", KEY_A, &json!({"userId": "del-1"}));
    let body = r.json();
    assert_eq!(results(&body)[0]["status"], "refused", "{body}");
    assert_eq!(results(&body)[0]["error"], "suppressed", "{body}");

    // Without suppression the id may come back.
    let r = s.admin("DELETE", "/v1/profiles?user_id=keep-1", KEY_A);
    assert_eq!(r.status, 200);
    let r = s.post("/v1/identify", KEY_A, &json!({"userId": "keep-1"}));
    assert_eq!(results(&r.json())[0]["outcome"], "created");
}

#[test]
fn health_and_metrics() {
    let s = start();
    let r = s.request("GET", "/health", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");

    s.post(
        "/v1/batch",
        KEY_A,
        &json!({"batch": [
            {"userId": "m-1", "messageId": "x-1", "traits": {"email": "m@example.com"}},
            {"userId": "m-1", "messageId": "x-1"},
            {"anonymousId": "m-anon", "traits": {"email": "m2@example.com"}},
            {"userId": "m-1", "anonymousId": "m-anon", "type": "track"},
            {"type": "group", "groupId": "g", "userId": "m-1"},
            {"userId": "m@example.com"},
            {"type": "identify"}
        ]}),
    );
    s.post("/v1/batch", "wrong", &json!({"batch": []}));

    // /metrics names every project: a server-wide admin token only.
    assert_eq!(s.request("GET", "/metrics", &[], b"").status, 401);
    assert_eq!(s.read("/metrics", KEY_A).status, 403);
    let all = server_common::bearer(server_common::ADMIN_ALL);
    let r = s.request("GET", "/metrics", &[("Authorization", &all)], b"");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.text();
    let value = |line: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line) && l[line.len()..].starts_with(' '))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        value("profiledb_messages_total{project=\"alpha\",type=\"identify\"}"),
        5.0
    );
    assert_eq!(
        value("profiledb_messages_total{project=\"alpha\",type=\"track\"}"),
        1.0
    );
    assert_eq!(
        value("profiledb_messages_total{project=\"alpha\",type=\"group\"}"),
        1.0
    );
    assert_eq!(value("profiledb_accepted_total{project=\"alpha\"}"), 4.0);
    assert_eq!(value("profiledb_duplicates_total{project=\"alpha\"}"), 1.0);
    assert_eq!(value("profiledb_merges_total{project=\"alpha\"}"), 1.0);
    assert_eq!(
        value("profiledb_refusals_total{project=\"alpha\",reason=\"invalid\"}"),
        2.0
    );
    assert_eq!(
        value("profiledb_request_sync_seconds_count{project=\"alpha\"}"),
        1.0
    );
    assert_eq!(
        value("profiledb_request_sync_seconds_bucket{project=\"alpha\",le=\"+Inf\"}"),
        1.0
    );
    assert_eq!(value("profiledb_store_profiles{project=\"alpha\"}"), 1.0);
    assert_eq!(value("profiledb_store_profiles{project=\"beta\"}"), 0.0);
    assert!(value("profiledb_store_disk_bytes{project=\"alpha\"}") > 0.0);
    assert_eq!(
        value("profiledb_http_responses_total{endpoint=\"batch\",code=\"401\"}"),
        1.0
    );
    assert_eq!(
        value("profiledb_http_responses_total{endpoint=\"batch\",code=\"200\"}"),
        1.0
    );
}

#[test]
fn graceful_stop_syncs_and_releases_the_stores() {
    let s = start();
    let batch: Vec<Value> = (0..100)
        .map(|i| json!({"userId": format!("g-{i}"), "messageId": format!("gm-{i}"), "$add": {"n": 1}}))
        .collect();
    let r = s.post("/v1/batch", KEY_A, &json!({ "batch": batch }));
    assert_eq!(r.json()["accepted"], 100);
    let (result, dir) = s.stop();
    result.expect("serve returns Ok after a graceful stop");
    // The lock is released: the store opens again, with every acknowledged message.
    let db = Db::open(dir.path().join("alpha"), Options::default()).expect("reopen");
    for i in 0..100 {
        let p = db
            .get(&Selector::UserId(format!("g-{i}")))
            .unwrap()
            .expect("acknowledged profile");
        assert_eq!(
            p.properties
                .iter()
                .find(|(n, _)| n == "n")
                .map(|(_, v)| v.clone()),
            Some(profiledb::Value::Int(1))
        );
    }
    db.close().unwrap();
    Db::open(dir.path().join("beta"), Options::default())
        .expect("beta released too")
        .close()
        .unwrap();
}

#[test]
fn bad_configurations_are_refused() {
    use profiledb::server::{ServeConfig, ServerError};
    // What `profiledb serve --write-key ...` builds (src/cli/serve.rs): each KEY=PROJECT
    // parsed, then the whole configuration checked.
    let config = |keys: &[&str]| -> Result<ServeConfig, ServerError> {
        let mut c = ServeConfig::new("/tmp/x", "127.0.0.1:0".parse().unwrap());
        for k in keys {
            c = c.write_key_spec(k)?;
        }
        c.validate()?;
        Ok(c)
    };
    for bad in [
        &[][..],
        &["nokey"],
        &["=proj"],
        &["k=../escape"],
        &["k=a/b"],
        &["k=.."],
        &["k=a", "k=b"],
        &["k:x=a"],
    ] {
        assert!(
            matches!(config(bad), Err(ServerError::Config(_))),
            "{bad:?} should be refused"
        );
    }
    let short_token = config(&["k=a"]).map(|c| c.admin_token("short", Some("a")));
    assert!(matches!(
        short_token.and_then(|c| c.validate()),
        Err(ServerError::Config(_))
    ));
    let c = config(&["k=a", "k=a", "k2=a", "x=y=b"]).unwrap();
    assert_eq!(c.write_keys.len(), 4);
    assert_eq!(c.write_keys[3], ("x=y".to_string(), "b".to_string()));
}
