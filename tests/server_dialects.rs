//! PostHog's and Mixpanel's HTTP dialects over real HTTP on loopback: body shapes, token
//! locations, gzip and form bodies, bad bodies, answers, and the identity events' mapping
//! (docs/clients.md).
#![cfg(feature = "server")]

mod server_common;

use std::io::Write as _;

use serde_json::{Value, json};
use server_common::{Resp, TestServer, base64};

const KEY: &str = "phc_key";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn post(server: &TestServer, path: &str, content_type: &str, body: &[u8]) -> Resp {
    server.request("POST", path, &[("Content-Type", content_type)], body)
}

fn post_json(server: &TestServer, path: &str, body: &Value) -> Resp {
    post(
        server,
        path,
        "application/json",
        body.to_string().as_bytes(),
    )
}

fn profile(server: &TestServer, query: &str) -> Option<Value> {
    let r = server.get(&format!("/v1/profiles?{query}"), KEY);
    (r.status == 200).then(|| r.json())
}

fn statuses(r: &Resp) -> Vec<String> {
    r.json()["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {}", r.text()))
        .iter()
        .map(|x| x["status"].as_str().unwrap().to_string())
        .collect()
}

// ---- PostHog ----

#[test]
fn posthog_body_shapes_and_token_locations() {
    let server = TestServer::start(&[(KEY, "app")]);
    // A single event, key as api_key at the top.
    let r = post_json(
        &server,
        "/capture/",
        &json!({"api_key": KEY, "event": "$set", "distinct_id": "u-1", "$set": {"plan": "a"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], 1);
    assert_eq!(statuses(&r), ["accepted"]);
    // An array of events, the key in each event's properties.token.
    let r = post_json(
        &server,
        "/e/",
        &json!([{"event": "x", "distinct_id": "u-2", "properties": {"token": KEY,
                 "$set": {"plan": "b"}}}]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // {"api_key", "batch"} gzip-compressed with the header, at /batch/ and /batch.
    let body = json!({"api_key": KEY, "batch": [
        {"event": "x", "distinct_id": "u-3", "$set": {"plan": "c"}},
        {"event": "x", "distinct_id": "u-4", "properties": {"$set": {"plan": "d"}}}]});
    for path in ["/batch/", "/batch"] {
        let r = server.request(
            "POST",
            path,
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            &gzip(body.to_string().as_bytes()),
        );
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    // posthog-js: gzip without the header (?compression=gzip-js), `$token` on the event.
    let body = json!([{"event": "x", "$token": KEY, "distinct_id": "u-5", "$set": {"plan": "e"}}]);
    let r = post(
        &server,
        "/i/v0/e/?compression=gzip-js",
        "text/plain",
        &gzip(body.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A form with data= holding base64 of JSON, and `token` at the body's top.
    let body = json!({"token": KEY, "event": "x", "distinct_id": "u-6", "$set": {"plan": "f"}});
    let form = format!(
        "data={}",
        base64(body.to_string().as_bytes()).replace('+', "%2B")
    );
    let r = post(
        &server,
        "/e",
        "application/x-www-form-urlencoded",
        form.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for (user, plan) in [
        ("u-1", "a"),
        ("u-2", "b"),
        ("u-3", "c"),
        ("u-4", "d"),
        ("u-5", "e"),
        ("u-6", "f"),
    ] {
        let p = profile(&server, &format!("user_id={user}")).expect(user);
        assert_eq!(p["properties"]["plan"], plan, "{user}");
    }
}

#[test]
fn posthog_refuses_bad_requests_in_its_error_shape() {
    let server = TestServer::start(&[(KEY, "app"), ("other", "b")]);
    let check = |r: Resp, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let body = r.json();
        assert_eq!(body["code"], code, "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
    };
    check(
        post_json(
            &server,
            "/batch/",
            &json!({"batch": [{"event": "x", "distinct_id": "u"}]}),
        ),
        401,
        "unauthorized",
    );
    let r = post_json(&server, "/batch/", &json!({"api_key": "nope", "batch": []}));
    assert_eq!(r.json()["type"], "authentication_error");
    check(r, 401, "unauthorized");
    check(
        post(&server, "/capture/", "application/json", b"{not json"),
        400,
        "invalid_json",
    );
    check(
        post_json(
            &server,
            "/batch/",
            &json!({"api_key": KEY, "batch": {"event": "x"}}),
        ),
        400,
        "invalid_batch",
    );
    check(
        post(&server, "/e/", "application/json", b"\x1f\x8b\x08garbage"),
        400,
        "invalid_gzip",
    );
    check(
        post(
            &server,
            "/e/",
            "application/x-www-form-urlencoded",
            b"data=%%%",
        ),
        400,
        "invalid_body",
    );
    check(
        post_json(
            &server,
            "/batch/",
            &json!([
            {"event": "x", "api_key": KEY, "distinct_id": "u"},
            {"event": "x", "api_key": "other", "distinct_id": "u"}]),
        ),
        400,
        "mixed_projects",
    );
    // Nothing was written.
    assert!(profile(&server, "user_id=u").is_none());
}

#[test]
fn posthog_per_event_results_and_identity_events() {
    let server = TestServer::start(&[(KEY, "app")]);
    let r = post_json(
        &server,
        "/batch/",
        &json!({"api_key": KEY, "batch": [
            // 0: anonymous visitor with $set_once (properties) and $set (top level).
            {"event": "page", "distinct_id": "anon-1", "uuid": "e-0",
             "properties": {"$is_identified": false, "$set_once": {"campaign": "spring"}},
             "$set": {"seen": true}},
            // 1: $identify merges it into the identified person.
            {"event": "$identify", "distinct_id": "user-1", "uuid": "e-1",
             "properties": {"$anon_distinct_id": "anon-1", "$set": {"email": "a@example.com"}}},
            // 2: a bad email: refused alone.
            {"event": "$identify", "distinct_id": "user-2", "properties": {"$set": {"email": "nope"}}},
            // 3: a retry of event 1.
            {"event": "$identify", "distinct_id": "user-1", "uuid": "e-1"},
            // 4: $create_alias: distinct_id is the previous id, properties.alias the user.
            {"event": "$create_alias", "distinct_id": "anon-2", "properties": {"alias": "user-1"}},
            // 5: an event without person properties stores nothing.
            {"event": "clicked", "distinct_id": "user-1"},
            // 6: not an object.
            7,
            // 7: $unset both at the top level and in properties.
            {"event": "x", "distinct_id": "user-1", "$unset": ["seen"], "properties": {"$unset": ["campaign"]}},
            // 8: $groupidentify upserts the company only.
            {"event": "$groupidentify", "distinct_id": "user-1",
             "properties": {"$group_type": "company", "$group_key": "co-1", "$group_set": {"name": "Co"}}},
            // 9: person-less events do not touch profiles.
            {"event": "x", "distinct_id": "user-9", "$set": {"a": 1},
             "properties": {"$process_person_profile": false}}
        ]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        statuses(&r),
        [
            "accepted",
            "accepted",
            "refused",
            "duplicate",
            "accepted",
            "accepted",
            "refused",
            "accepted",
            "accepted",
            "accepted"
        ]
    );
    let body = r.json();
    assert_eq!(body["results"][1]["outcome"], "updated", "{body}");
    assert_eq!(body["results"][2]["error"], "invalid");
    assert_eq!(body["results"][5]["outcome"], "unchanged");
    assert_eq!(body["results"][6]["error"], "malformed");
    let p = profile(&server, "user_id=user-1").unwrap();
    assert_eq!(p["email"], "a@example.com");
    assert_eq!(p["anonymous_ids"], json!(["anon-1", "anon-2"]));
    assert!(
        p["properties"].get("seen").is_none() && p["properties"].get("campaign").is_none(),
        "{p}"
    );
    assert!(profile(&server, "user_id=user-9").is_none());
    assert!(profile(&server, "user_id=co-1").is_none());
}

#[test]
fn posthog_merge_dangerously_is_honoured_only_where_protection_allows() {
    let server = TestServer::start(&[(KEY, "app")]);
    let send = |events: Value| {
        let r = post_json(
            &server,
            "/batch/",
            &json!({"api_key": KEY, "batch": events}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    send(json!([
        {"event": "$set", "distinct_id": "u-a", "$set": {"x": 1}},
        {"event": "$set", "distinct_id": "u-b", "$set": {"y": 2}},
        {"event": "p", "distinct_id": "anon-z", "properties": {"$is_identified": false}, "$set": {"z": 3}}
    ]));
    // Two identified people: refused, both stay.
    let body = send(json!([{"event": "$merge_dangerously", "distinct_id": "u-a",
                            "properties": {"alias": "u-b"}}]));
    assert_eq!(body["results"][0]["status"], "refused", "{body}");
    assert_eq!(body["results"][0]["error"], "invalid");
    assert_ne!(
        profile(&server, "user_id=u-a").unwrap()["key"],
        profile(&server, "user_id=u-b").unwrap()["key"]
    );
    // An anonymous person: merged in.
    let body = send(json!([{"event": "$merge_dangerously", "distinct_id": "u-a",
                            "properties": {"alias": "anon-z"}}]));
    assert_eq!(body["results"][0]["outcome"], "merged", "{body}");
    let p = profile(&server, "user_id=u-a").unwrap();
    assert_eq!(p["properties"]["z"], 3);
    assert_eq!(p["anonymous_ids"], json!(["anon-z"]));
}

// ---- Mixpanel ----

fn form(data: &Value, extra: &str) -> Vec<u8> {
    let mut s = String::from("data=");
    s.extend(form_urlencoded_byte_serialize(data.to_string().as_bytes()));
    s.push_str(extra);
    s.into_bytes()
}

/// Percent-encode for a form value.
fn form_urlencoded_byte_serialize(bytes: &[u8]) -> impl Iterator<Item = String> + '_ {
    bytes.iter().map(|b| match b {
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
            (*b as char).to_string()
        }
        _ => format!("%{b:02X}"),
    })
}

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn mixpanel_bodies_tokens_and_verbose_answers() {
    let server = TestServer::start(&[(KEY, "app")]);
    // Form with plain JSON, verbose=1 in the form.
    let rec =
        json!({"$token": KEY, "$distinct_id": "m-1", "$set": {"plan": "a", "$city": "Paris"}});
    let r = post(&server, "/engage", FORM, &form(&rec, "&verbose=1"));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(
        (body["status"].clone(), body["error"].clone()),
        (json!(1), Value::Null),
        "{body}"
    );
    // Mixpanel's own `$` properties are dropped and listed.
    assert_eq!(body["results"][0]["ignored"], json!(["$city"]));
    // Form with base64 data, not verbose: a bare 1.
    let rec = json!([{"$token": KEY, "$distinct_id": "m-2", "$set": {"plan": "b"}}]);
    let form_b64 = format!(
        "data={}",
        base64(rec.to_string().as_bytes())
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let r = post(&server, "/engage/", FORM, form_b64.as_bytes());
    assert_eq!((r.status, r.text()), (200, "1".to_string()));
    // A JSON body, verbose in the query, gzip.
    let rec = json!([{"$token": KEY, "$distinct_id": "m-3", "$set": {"plan": "c"}}]);
    let r = server.request(
        "POST",
        "/engage?verbose=1",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(rec.to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], 1);
    for (u, plan) in [("m-1", "a"), ("m-2", "b"), ("m-3", "c")] {
        assert_eq!(
            profile(&server, &format!("user_id={u}")).expect(u)["properties"]["plan"],
            plan
        );
    }
    // Unknown or missing token: 401, `0` or {"status": 0, "error"}.
    let rec = json!({"$token": "nope", "$distinct_id": "m-4", "$set": {"plan": "x"}});
    let r = post(&server, "/engage", FORM, &form(&rec, ""));
    assert_eq!((r.status, r.text()), (401, "0".to_string()));
    let rec = json!({"$distinct_id": "m-4", "$set": {"plan": "x"}});
    let r = post(&server, "/engage?verbose=1", FORM, &form(&rec, ""));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["status"], 0);
    assert!(r.json()["error"].as_str().unwrap().contains("token"));
    // Bad bodies.
    let r = post(&server, "/engage?verbose=1", FORM, b"nodata=1");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["status"], 0);
    let r = post(&server, "/engage?verbose=1", FORM, b"data=%7Bbroken");
    assert_eq!(r.status, 400);
    assert!(profile(&server, "user_id=m-4").is_none());
}

#[test]
fn mixpanel_engage_operations_delete_and_partial_refusal() {
    let server = TestServer::start(&[(KEY, "app")]);
    let rec = |distinct: &str, op: &str, v: Value| json!({"$token": KEY, "$distinct_id": distinct, op: v});
    let r = post_json(
        &server,
        "/engage?verbose=1",
        &json!([
            rec(
                "m-1",
                "$set",
                json!({"$email": "m1@example.com", "$name": "Em One", "$avatar": "https://x.test/a.png"})
            ),
            rec("m-1", "$set_once", json!({"first": 1})),
            rec("m-1", "$add", json!({"n": 2})),
            rec("m-1", "$union", json!({"tags": ["a", "b"]})),
            rec("m-1", "$remove", json!({"tags": "a"})),
            rec("m-1", "$append", json!({"log": {"k": 1}})),
            // An email is never removed; the rest of the $unset is applied.
            rec("m-1", "$unset", json!(["first", "$email"])),
            // A bad avatar: refused alone; status 0 names it.
            rec("m-1", "$set", json!({"$avatar": "not a url"})),
            rec("m-2", "$set", json!({"plan": "x"})),
            rec("m-2", "$delete", json!("")),
            rec("m-3", "$delete", json!("")),
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], 0, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("record 7:"),
        "{body}"
    );
    assert_eq!(
        statuses(&r),
        [
            "accepted",
            "accepted",
            "accepted",
            "accepted",
            "accepted",
            "accepted",
            "accepted",
            "refused",
            "accepted",
            "deleted",
            "not_found"
        ]
    );
    assert_eq!(body["results"][6]["ignored"], json!(["$email"]));
    let p = profile(&server, "user_id=m-1").unwrap();
    assert_eq!(p["email"], "m1@example.com");
    assert_eq!(p["properties"]["name"], "Em One");
    assert_eq!(p["properties"]["avatar"], "https://x.test/a.png");
    assert_eq!(p["properties"]["n"], 2);
    assert_eq!(p["properties"]["tags"], json!(["b"]));
    assert_eq!(p["properties"]["log"], json!([{"k": 1}]));
    assert!(p["properties"].get("first").is_none());
    assert!(profile(&server, "user_id=m-2").is_none());
}

#[test]
fn mixpanel_identity_events_on_track_and_import() {
    let server = TestServer::start(&[(KEY, "app")]);
    let ev = |name: &str, props: Value| {
        let mut props = props;
        props["token"] = json!(KEY);
        json!({"event": name, "properties": props})
    };
    post_json(
        &server,
        "/engage",
        &json!({"$token": KEY, "$distinct_id": "anon-1", "$set": {"a": 1}}),
    );
    // The engage above made "anon-1" a user id (distinct_ids are user ids); an anonymous
    // person comes from events' $device_id.
    let r = post_json(
        &server,
        "/import?verbose=1",
        &json!([
            ev(
                "$identify",
                json!({"distinct_id": "u-1", "$identified_id": "u-1", "$anon_id": "dev-1", "$insert_id": "i-1", "time": 1767225600})
            ),
            ev(
                "$identify",
                json!({"distinct_id": "u-1", "$identified_id": "u-1", "$anon_id": "dev-1", "$insert_id": "i-1", "time": 1767225600})
            ),
            ev(
                "$create_alias",
                json!({"distinct_id": "dev-2", "alias": "u-1", "time": 1767225600})
            ),
            ev(
                "Played",
                json!({"distinct_id": "u-1", "$user_id": "u-1", "$device_id": "dev-3", "time": 1767225601123u64})
            ),
            ev(
                "$merge",
                json!({"$distinct_ids": ["u-1", "dev-4"], "time": 1767225600})
            ),
            ev("$merge", json!({"$distinct_ids": ["u-1", "anon-1"]})),
            ev("$merge", json!({"$distinct_ids": ["u-1"]})),
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        statuses(&r),
        [
            "accepted",
            "duplicate",
            "accepted",
            "accepted",
            "accepted",
            "refused",
            "refused"
        ]
    );
    let p = profile(&server, "user_id=u-1").unwrap();
    assert_eq!(
        p["anonymous_ids"],
        json!(["dev-1", "dev-2", "dev-3", "dev-4"])
    );
    // `time` in seconds, then in milliseconds.
    assert_eq!(p["created_at"], "2026-01-01T00:00:00Z");
    assert_eq!(p["updated_at"], "2026-01-01T00:00:01.123Z");
    // /track takes the same events.
    let r = post(
        &server,
        "/track",
        FORM,
        &form(
            &ev(
                "$identify",
                json!({"$identified_id": "u-2", "$anon_id": "dev-9"}),
            ),
            "",
        ),
    );
    assert_eq!((r.status, r.text()), (200, "1".to_string()));
    assert_eq!(
        profile(&server, "anonymous_id=dev-9").unwrap()["user_id"],
        "u-2"
    );
}

#[test]
fn mixpanel_groups_set_unset_and_refusals() {
    let server = TestServer::start(&[(KEY, "app")]);
    let g = |op: &str, v: Value| json!({"$token": KEY, "$group_key": "company", "$group_id": "co-1", op: v});
    let r = post_json(
        &server,
        "/groups?verbose=1",
        &json!([
            g("$set", json!({"name": "Co", "tier": 1, "$x": 2})),
            g("$unset", json!(["tier"])),
            g("$union", json!({"tags": ["a"]})),
            g("$delete", json!("")),
        ]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(
        statuses(&r),
        ["accepted", "accepted", "accepted", "refused"],
        "{body}"
    );
    assert_eq!(body["results"][0]["ignored"], json!(["$x"]));
    assert_eq!(body["results"][2]["ignored"], json!(["tags"]));
    assert_eq!(body["status"], 0);
    let (result, dir) = server.stop();
    result.unwrap();
    let db = profiledb::Db::open(dir.path().join("app"), profiledb::Options::default()).unwrap();
    let c = serde_json::to_value(db.company("co-1").unwrap().unwrap()).unwrap();
    assert_eq!(c["properties"], json!({"name": "Co"}), "{c}");
    db.close().unwrap();
}

#[test]
fn list_operations_over_every_dialect() {
    let server = TestServer::start(&[(KEY, "app")]);
    // Segment's /v1/batch.
    let r = server.post(
        "/v1/batch",
        KEY,
        &json!({"batch": [{"userId": "l-1", "$union": {"tags": ["seg"]}}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // PostHog events (top level and in properties).
    let r = post_json(
        &server,
        "/batch/",
        &json!({"api_key": KEY, "batch": [
        {"event": "x", "distinct_id": "l-1", "$union": {"tags": ["ph", "seg"]}},
        {"event": "x", "distinct_id": "l-1", "properties": {"$append": {"tags": "ph2"}}}]}),
    );
    assert_eq!(statuses(&r), ["accepted", "accepted"], "{}", r.text());
    // Mixpanel's /engage.
    let r = post_json(
        &server,
        "/engage?verbose=1",
        &json!([
        {"$token": KEY, "$distinct_id": "l-1", "$remove": {"tags": "seg"}},
        {"$token": KEY, "$distinct_id": "l-1", "$union": {"tags": ["mp"]}}]),
    );
    assert_eq!(r.json()["status"], 1, "{}", r.text());
    let p = profile(&server, "user_id=l-1").unwrap();
    assert_eq!(p["properties"]["tags"], json!(["ph", "ph2", "mp"]), "{p}");
}
