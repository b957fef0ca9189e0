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
