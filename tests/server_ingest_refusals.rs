//! Per-message refusals of the ingestion endpoints as the one parser (src/profile/parse.rs)
//! gives them over real HTTP: control characters in identifiers are refused before any shape
//! rule and whatever the message's type, a message that is not JSON (a number out of range,
//! which the batch's raw scan lets through) is `malformed` with the tokenizer's error, and
//! `/metrics` counts each message under its `type` as written.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod server_common;

use serde_json::Value;
use server_common::{TestServer, basic};

const KEY: &str = "key-r";

fn post_raw(s: &TestServer, path: &str, body: &str) -> Value {
    let auth = basic(KEY);
    let r = s.request(
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn control(field: &str) -> String {
    format!("call refused: {field}: contains a control character (NUL, newline, ...)")
}

#[test]
fn refusals_and_type_counts_are_those_of_the_one_parser() {
    let s = TestServer::start(&[(KEY, "rp")]);
    let body = post_raw(
        &s,
        "/v1/batch",
        r#"{"batch": [
            {"type": "bogus", "userId": "a\u0000b"},
            {"type": "group", "groupId": "g\nx"},
            {"type": "track", "userId": "u", "previousId": "p\u0007"},
            {"userId": "u", "traits": {"email": "a\tb@example.com"}},
            {"userId": "u", "n": 1e400},
            {"userId": "ok-1", "traits": {"email": "ok@example.com"}},
            {"type": " TRACK", "userId": "u-9", "anonymousId": "a-9"},
            {"type": 5},
            [1]
        ]}"#,
    );
    let results = body["results"].as_array().expect("results");
    let refusal = |i: usize| {
        (
            results[i]["status"].as_str().unwrap_or("").to_string(),
            results[i]["error"].as_str().unwrap_or("").to_string(),
            results[i]["reason"].as_str().unwrap_or("").to_string(),
        )
    };
    let refused = |error: &str, reason: &str| ("refused".into(), error.into(), reason.into());
    assert_eq!(refusal(0), refused("invalid", &control("userId")));
    assert_eq!(refusal(1), refused("invalid", &control("groupId")));
    assert_eq!(refusal(2), refused("invalid", &control("previousId")));
    assert_eq!(refusal(3), refused("invalid", &control("traits.email")));
    let (status, error, reason) = refusal(4);
    assert_eq!((status.as_str(), error.as_str()), ("refused", "malformed"));
    assert!(
        reason.starts_with("message: not valid JSON: number out of range"),
        "{reason}"
    );
    assert_eq!(results[5]["status"], "accepted", "{}", results[5]);
    assert_eq!(results[6]["status"], "accepted", "{}", results[6]);
    assert_eq!(
        refusal(7),
        refused("malformed", "malformed message: type: must be a string")
    );
    assert_eq!(
        refusal(8),
        refused(
            "malformed",
            "malformed message: message: must be a JSON object"
        )
    );
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["refused"], 7);

    // A single endpoint: the body is the message, its type the path's.
    let single = post_raw(&s, "/v1/track", r#"{"userId": "x\u0001", "event": "E"}"#);
    assert_eq!(single["results"][0]["reason"], control("userId").as_str());

    let all = server_common::bearer(server_common::ADMIN_ALL);
    let text = s
        .request("GET", "/metrics", &[("Authorization", &all)], b"")
        .text();
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
    let typed = |t: &str| {
        value(&format!(
            "profiledb_messages_total{{project=\"rp\",type=\"{t}\"}}"
        ))
    };
    // A message that is not an object has no `type`: counted as an identify, as before.
    assert_eq!(typed("identify"), 3.0);
    assert_eq!(typed("group"), 1.0);
    assert_eq!(typed("track"), 3.0);
    assert_eq!(typed("other"), 3.0);
    let reason = |r: &str| {
        value(&format!(
            "profiledb_refusals_total{{project=\"rp\",reason=\"{r}\"}}"
        ))
    };
    assert_eq!(reason("invalid"), 5.0);
    assert_eq!(reason("malformed"), 3.0);
}
