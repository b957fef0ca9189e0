//! The journal's admin endpoints (issue 16) over real HTTP on loopback: history, the profile
//! as it was, explain; all behind the admin token.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod server_common;

use serde_json::{Value, json};
use server_common::TestServer;

const KEY: &str = "key-j";

#[test]
fn history_at_and_explain_answer_admins_only() {
    let s = TestServer::start(&[(KEY, "journal")]);
    let r = s.post(
        "/v1/identify",
        KEY,
        &json!({"userId": "u-1", "traits": {"plan": "basic"}, "messageId": "m-1"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let h = s.read("/v1/profiles/history?user_id=u-1", KEY);
    assert_eq!(h.status, 200, "{}", h.text());
    let steps = h.json()["steps"].as_array().unwrap().clone();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["message_id"], "m-1");
    let first = steps[0]["applied_at"].as_str().unwrap().to_string();
    s.post(
        "/v1/identify",
        KEY,
        &json!({"userId": "u-1", "traits": {"plan": "pro"}}),
    );

    let at = |t: &str| {
        s.read(
            &format!("/v1/profiles/at?user_id=u-1&at={}", t.replace('+', "%2B")),
            KEY,
        )
    };
    let then = at(&first);
    assert_eq!(then.status, 200, "{}", then.text());
    assert_eq!(then.json()["properties"]["plan"], "basic");
    assert_eq!(at("not-a-time").status, 400);
    assert_eq!(
        at("1990-01-01T00:00:00Z").status,
        400,
        "older than the window"
    );
    assert_eq!(s.read("/v1/profiles/at?user_id=u-1", KEY).status, 400);

    let auth = format!("Bearer {}", s.admin_of(KEY));
    let message = json!({"type": "identify", "userId": "u-1", "traits": {"plan": "team"}});
    let r = s.request(
        "POST",
        "/v1/explain",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        message.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let ex: Value = r.json();
    assert_eq!(ex["verdict"], "apply");
    assert_eq!(ex["changes"][0]["old"], "pro");
    assert_eq!(ex["changes"][0]["new"], "team");
    // Nothing was written.
    let now = s.read("/v1/profiles?user_id=u-1", KEY).json();
    assert_eq!(now["properties"]["plan"], "pro");
    let big = vec![b' '; 200_000];
    let r = s.request("POST", "/v1/explain", &[("Authorization", &auth)], &big);
    assert_eq!(r.status, 400, "{}", r.text());

    // Without the admin token: refused.
    assert_eq!(
        s.request("GET", "/v1/profiles/history?user_id=u-1", &[], b"")
            .status,
        401
    );
    let r = s.request(
        "POST",
        "/v1/explain",
        &[("Authorization", "Bearer wrong-token-wrong-token")],
        message.to_string().as_bytes(),
    );
    assert_eq!(r.status, 401);
}

#[test]
fn unmerge_over_http_answers_admins_only_with_typed_statuses() {
    let s = TestServer::start(&[(KEY, "journal")]);
    let r = s.post(
        "/v1/identify",
        KEY,
        &json!({"anonymousId": "a-1", "traits": {"plan": "free"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let anon_key = s.read("/v1/profiles?anonymous_id=a-1", KEY).json()["key"]
        .as_u64()
        .unwrap();
    s.post(
        "/v1/identify",
        KEY,
        &json!({"userId": "u-1", "traits": {"name": "Ann"}}),
    );
    s.post(
        "/v1/identify",
        KEY,
        &json!({"userId": "u-1", "anonymousId": "a-1"}),
    );
    let merged = s.read("/v1/profiles?anonymous_id=a-1", KEY).json();
    assert_eq!(merged["user_id"], "u-1", "{merged}");

    let auth = format!("Bearer {}", s.admin_of(KEY));
    let unmerge = |query: &str, auth: &str| {
        s.request(
            "POST",
            &format!("/v1/profiles/unmerge?{query}"),
            &[("Authorization", auth)],
            b"",
        )
    };
    let path = format!("user_id=u-1&merged_key={anon_key}");
    assert_eq!(unmerge(&path, "Bearer wrong-token-wrong-token").status, 401);
    assert_eq!(unmerge("user_id=u-1&merged_key=x", &auth).status, 400);
    assert_eq!(
        unmerge(&format!("merged_key={anon_key}"), &auth).status,
        400
    );
    let r = unmerge(&format!("user_id=nobody&merged_key={anon_key}"), &auth);
    assert_eq!(r.status, 404, "{}", r.text());
    let r = unmerge(&path, &auth);
    assert_eq!(r.status, 200, "{}", r.text());
    let out: Value = r.json();
    assert_eq!(out["restored"]["key"], anon_key);
    assert_eq!(out["restored"]["properties"]["plan"], "free");
    let back = s.read("/v1/profiles?anonymous_id=a-1", KEY).json();
    assert_eq!(back["key"], anon_key, "{back}");
    assert!(back["user_id"].is_null());
    let r = unmerge(&path, &auth);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["code"], "not_merged", "{}", r.text());
}

/// The guard over HTTP: a small limit quarantines an anonymous id moved between user ids;
/// `/metrics` counts the quarantined identifiers and the calls that skipped one, the admin
/// endpoint lists and releases it, and the counters follow.
#[test]
fn guard_counters_in_metrics_follow_quarantine_skips_and_release() {
    let s = TestServer::start_with(&[(KEY, "journal")], |mut c| {
        c.options.guard_max_user_ids = 1;
        c
    });
    let all = server_common::bearer(server_common::ADMIN_ALL);
    let metric = |name: &str| -> u64 {
        let r = s.request("GET", "/metrics", &[("Authorization", &all)], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let text = r.text();
        let line = format!("{name}{{project=\"journal\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
            .parse()
            .unwrap()
    };
    let quarantined = "profiledb_guard_quarantined_identifiers";
    let skipped = "profiledb_guard_skipped_calls_total";
    assert_eq!((metric(quarantined), metric(skipped)), (0, 0));

    let identify = |body: Value| s.post("/v1/identify", KEY, &body);
    assert_eq!(
        identify(json!({"userId": "u-1", "anonymousId": "dev"})).status,
        200
    );
    // The device's id would move from u-1 to u-2: linked to 2 user ids > 1, quarantined.
    assert_eq!(
        identify(json!({"userId": "u-2", "anonymousId": "dev"})).status,
        200
    );
    assert_eq!((metric(quarantined), metric(skipped)), (1, 1));
    let list = s.read("/v1/quarantine", KEY);
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.json()["quarantined"], json!(["anonymous_id:dev"]));
    // It stayed with u-1; u-2's profile was made without it.
    let u1 = s.read("/v1/profiles?user_id=u-1", KEY).json();
    assert_eq!(u1["anonymous_ids"], json!(["dev"]), "{u1}");
    let u2 = s.read("/v1/profiles?user_id=u-2", KEY).json();
    assert_eq!(u2["anonymous_ids"], json!([]), "{u2}");

    // A later call carrying it skips it (counted); one carrying only it is refused (not
    // counted: nothing was applied).
    assert_eq!(
        identify(json!({"userId": "u-3", "anonymousId": "dev"})).status,
        200
    );
    let r = identify(json!({"anonymousId": "dev", "traits": {"x": 1}}));
    assert_eq!(r.status, 200, "{}", r.text());
    let result = &r.json()["results"][0];
    assert_eq!(result["status"], "refused", "{}", r.text());
    assert_eq!(result["error"], "invalid", "{}", r.text());
    assert!(
        result["reason"].as_str().unwrap().contains("quarantined"),
        "{}",
        r.text()
    );
    assert_eq!((metric(quarantined), metric(skipped)), (1, 2));
    let u3 = s.read("/v1/profiles?user_id=u-3", KEY).json();
    assert_eq!(u3["anonymous_ids"], json!([]), "{u3}");

    // Released by an admin: the gauge drops, calls carrying it count no more.
    let auth = format!("Bearer {}", s.admin_of(KEY));
    let r = s.request(
        "DELETE",
        "/v1/quarantine?anonymous_id=dev",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(metric(quarantined), 0);
    assert_eq!(
        identify(json!({"userId": "u-1", "anonymousId": "dev"})).status,
        200
    );
    assert_eq!((metric(quarantined), metric(skipped)), (0, 2));
}
