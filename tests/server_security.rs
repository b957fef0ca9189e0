//! `profiledb serve` under attack (issue 13), black-box over real sockets on loopback: each
//! finding reproduced as an attacker would, and checked to be refused or bounded. Nothing
//! acknowledged is lost in any of them.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod server_common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use profiledb::server::Protection;
use profiledb::{Db, Durability, Identify, Message, Options, Selector};
use serde_json::{Value, json};
use server_common::{
    ADMIN_ALL, ServerProcess, TestServer, basic, bearer, read_response, request, try_request,
};

const KEY: &str = "public-write-key";
const PROJECT: &str = "shop";

fn start_with(tweak: impl FnOnce(&mut Protection)) -> TestServer {
    TestServer::start_with(&[(KEY, PROJECT)], |mut c| {
        tweak(&mut c.protection);
        c
    })
}

fn identify(s: &TestServer, user: &str, email: &str, name: &str) {
    let r = s.post(
        "/v1/identify",
        KEY,
        &json!({"userId": user, "traits": {"email": email, "name": name, "plan": "pro"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["results"][0]["status"], "accepted", "{}", r.text());
}

/// Read until the server closes the connection or `limit` passes; whether it closed.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Files under `dir` holding `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<std::path::PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p)
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

// ---- 1. credentials ------------------------------------------------------------------------

#[test]
fn a_write_key_cannot_read_delete_enumerate_or_suppress() {
    let s = TestServer::start(&[(KEY, PROJECT)]);
    for i in 0..5 {
        identify(&s, &format!("u-{i}"), &format!("p{i}@example.com"), "Sarah");
    }
    let wk = basic(KEY);
    let h = [("Authorization", wk.as_str())];
    for key in 1..=10 {
        let r = s.request("GET", &format!("/v1/profiles?key={key}"), &h, b"");
        assert_eq!(r.status, 403, "key={key}: {}", r.text());
        assert!(!r.text().contains("example.com"), "{}", r.text());
        let r = s.request(
            "DELETE",
            &format!("/v1/profiles?key={key}&suppress=true"),
            &h,
            b"",
        );
        assert_eq!(r.status, 403, "{}", r.text());
    }
    for (method, path) in [
        ("GET", "/v1/profiles?email=p1%40example.com"),
        ("DELETE", "/v1/profiles?user_id=u-1"),
        ("GET", "/v1/suppressions"),
        ("DELETE", "/v1/suppressions?email=p1%40example.com"),
        ("GET", "/metrics"),
    ] {
        let r = s.request(method, path, &h, b"");
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
        let r = s.request(method, path, &[], b"");
        assert_eq!(r.status, 401, "{method} {path} without credentials");
    }
    // Nothing was deleted or suppressed; the admin token reads everything, `key=` included.
    for i in 0..5 {
        let r = s.read(&format!("/v1/profiles?user_id=u-{i}"), KEY);
        assert_eq!(r.status, 200, "{}", r.text());
        let key = r.json()["key"].as_u64().unwrap();
        assert_eq!(s.read(&format!("/v1/profiles?key={key}"), KEY).status, 200);
    }
    let r = s.post("/v1/identify", KEY, &json!({"userId": "u-1"}));
    assert_eq!(r.json()["results"][0]["status"], "accepted");
    // The server-wide token is refused where a project is ambiguous... (one project here).
    let all = bearer(ADMIN_ALL);
    let r = s.request(
        "GET",
        "/v1/profiles?user_id=u-1",
        &[("Authorization", &all)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn suppressions_are_listed_and_lifted_by_an_admin_and_the_lift_survives_a_restart() {
    let s = TestServer::start(&[(KEY, PROJECT)]);
    identify(&s, "sup-1", "owner@example.com", "Owner");
    let r = s.admin(
        "DELETE",
        "/v1/profiles?email=owner%40example.com&suppress=true",
        KEY,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.post(
        "/v1/identify",
        KEY,
        &json!({"userId": "xx", "traits": {"email": "owner@example.com"}}),
    );
    assert_eq!(r.json()["results"][0]["error"], "suppressed");

    let list = s.read("/v1/suppressions", KEY).json();
    assert_eq!(list["suppressions"].as_array().unwrap().len(), 2, "{list}");
    let r = s.read("/v1/suppressions?email=Owner%40example.com", KEY);
    assert_eq!(r.json()["suppressed"], true, "{}", r.text());
    let r = s.admin("DELETE", "/v1/suppressions?email=owner%40example.com", KEY);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["lifted"], true);
    let r = s.admin("DELETE", "/v1/suppressions?email=owner%40example.com", KEY);
    assert_eq!(r.status, 404);
    assert_eq!(
        s.read("/v1/suppressions", KEY).json()["suppressions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // After a restart the lift holds and the user id stays suppressed.
    let (result, dir) = s.stop();
    result.unwrap();
    let db = Db::open(dir.path().join(PROJECT), Options::default()).unwrap();
    assert!(!db.is_suppressed(&Selector::Email("owner@example.com".into())));
    assert!(db.is_suppressed(&Selector::UserId("sup-1".into())));
    let s = TestServer::start_stores(dir, &[(KEY, PROJECT)], vec![(PROJECT.into(), db)]);
    let r = s.post(
        "/v1/identify",
        KEY,
        &json!({"userId": "new", "traits": {"email": "owner@example.com"}}),
    );
    assert_eq!(r.json()["results"][0]["status"], "accepted", "{}", r.text());
    let r = s.post("/v1/identify", KEY, &json!({"userId": "sup-1"}));
    assert_eq!(r.json()["results"][0]["error"], "suppressed");
}

#[test]
fn failed_authentication_is_rate_limited_per_address() {
    let s = start_with(|p| p.auth_failures_per_minute = 5);
    for i in 0..5 {
        let r = s.post("/v1/batch", &format!("guess-{i}"), &json!({"batch": []}));
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // Over the limit: refused whatever the credential, including admin token guesses.
    let r = s.post("/v1/batch", "guess-5", &json!({"batch": []}));
    assert_eq!(r.status, 429, "{}", r.text());
    let r = s.post("/v1/batch", KEY, &json!({"batch": [{"userId": "blocked"}]}));
    assert_eq!(r.status, 429);
    let body = json!({"writeKey": KEY, "batch": [{"userId": "blocked"}]}).to_string();
    assert_eq!(
        s.request("POST", "/v1/batch", &[], body.as_bytes()).status,
        429
    );
    let r = s.request(
        "GET",
        "/v1/profiles?key=1",
        &[("Authorization", &bearer("guessed-admin-token-xxxxxxxx"))],
        b"",
    );
    assert_eq!(r.status, 429);
    assert_eq!(s.read("/v1/profiles?user_id=blocked", KEY).status, 429);
}

// ---- 2. bounded cost -----------------------------------------------------------------------

#[test]
fn slowloris_headers_are_cut_off() {
    let s = start_with(|p| p.header_timeout = Duration::from_secs(1));
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(b"POST /v1/batch HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // One header byte every 200 ms: each read makes progress, the head never completes.
    let started = Instant::now();
    let mut cut = false;
    for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
    {
        std::thread::sleep(Duration::from_millis(200));
        if c.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(3)
            && closed_within(&mut c, Duration::from_millis(10))
        {
            cut = true;
            break;
        }
    }
    assert!(
        cut || closed_within(&mut c, Duration::from_secs(5)),
        "a slow head must be cut off"
    );
    assert_eq!(request(s.addr, "GET", "/health", &[], b"").status, 200);
}

#[test]
fn slow_bodies_are_cut_off_and_nothing_of_them_is_stored() {
    let s = start_with(|p| p.body_timeout = Duration::from_secs(1));
    let body = json!({"batch": [{"userId": "slow-body"}]}).to_string();
    let mut c = TcpStream::connect(s.addr).unwrap();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n",
        basic(KEY),
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    let mut answer = None;
    c.set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let mut reader = BufReader::new(c.try_clone().unwrap());
    for b in body.as_bytes().iter().take(body.len() - 1) {
        if c.write_all(&[*b]).is_err() {
            break;
        }
        if let Ok(r) = read_response(&mut reader) {
            answer = Some(r);
            break;
        }
    }
    let answer = answer.expect("the server answers a body that trickles in");
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert_eq!(s.read("/v1/profiles?user_id=slow-body", KEY).status, 404);
}

#[test]
fn an_idle_connection_is_closed() {
    let s = start_with(|p| p.header_timeout = Duration::from_secs(1));
    let mut quiet = TcpStream::connect(s.addr).unwrap();
    assert!(
        closed_within(&mut quiet, Duration::from_secs(20)),
        "an idle connection stays open"
    );
    // A keep-alive connection that goes quiet after a request is closed too.
    let mut kept = TcpStream::connect(s.addr).unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_response(&mut BufReader::new(kept.try_clone().unwrap())).unwrap();
    assert_eq!(r.status, 200);
    assert!(closed_within(&mut kept, Duration::from_secs(20)));
}

#[test]
fn connections_over_the_cap_are_refused_and_the_server_stays_reachable() {
    let s = start_with(|p| {
        p.max_connections = 8;
        p.header_timeout = Duration::from_secs(60);
    });
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(s.addr).unwrap())
        .collect();
    // Once the server has accepted all eight (a loaded machine may take a while: a fixed
    // sleep here failed under CI), the next connection is refused; until then it is served.
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = try_request(s.addr, "GET", "/health", &[], b"").expect("an answer, not a hang");
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["code"], "server_busy");
    drop(idle);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = request(s.addr, "GET", "/health", &[], b"");
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slots are given back when connections close"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    identify(&s, "after-cap", "cap@example.com", "Cap");
}

#[test]
fn unauthenticated_half_sent_bodies_are_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(dir.path(), &[(KEY, PROJECT)]);
    let addr = server.addr;
    let before = server.rss_bytes();
    // 400 connections, each announcing 500 KB without credentials and sending 400 KB of it.
    let chunk = vec![b' '; 400 * 1024];
    let mut open = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let head = "POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 512000\r\n\r\n";
        c.write_all(head.as_bytes()).unwrap();
        if c.write_all(&chunk).is_err() {
            refused += 1;
        }
        open.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = server.rss_bytes();
    let grown = after.saturating_sub(before);
    assert!(
        grown < 96 << 20,
        "the server grew by {} MB buffering unauthenticated bodies ({refused} connections refused)",
        grown >> 20
    );
    // A credential in the header is checked before any body byte: refused at once.
    let mut c = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 500000\r\n\r\n",
        basic("wrong")
    );
    c.write_all(head.as_bytes()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let r = read_response(&mut BufReader::new(c)).unwrap();
    assert_eq!(r.status, 401);
    // The server still serves, and acknowledges durably.
    let r = request(
        addr,
        "POST",
        "/v1/batch",
        &[("Authorization", &basic(KEY))],
        json!({"batch": [{"userId": "still-here"}]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    drop(open);
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(60)).success());
    let db = Db::open(dir.path().join(PROJECT), Options::default()).unwrap();
    assert!(
        db.get(&Selector::UserId("still-here".into()))
            .unwrap()
            .is_some()
    );
}

#[test]
fn sigterm_with_a_stuck_client_exits_after_the_drain_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start_args(
        dir.path(),
        &[
            "--write-key",
            &format!("{KEY}={PROJECT}"),
            "--drain-timeout",
            "2",
            "--header-timeout",
            "600",
            "--body-timeout",
            "600",
            "--idle-timeout",
            "600",
        ],
        &[],
    );
    let addr = server.addr;
    let r = request(
        addr,
        "POST",
        "/v1/batch",
        &[("Authorization", &basic(KEY))],
        json!({"batch": [{"userId": "acked", "messageId": "m-acked"}]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200);
    // A request half sent, and a connection that sent half a head.
    let mut stuck = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 1000\r\n\r\n{{\"batch\": [",
        basic(KEY)
    );
    stuck.write_all(head.as_bytes()).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHo").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.signal("TERM");
    // `wait` panics past its limit; on a server without a drain deadline it never exits.
    let status = server.wait(Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", server.stderr());
    assert!(
        server.stderr().contains("drain deadline"),
        "{}",
        server.stderr()
    );
    drop((stuck, half));
    let db = Db::open(dir.path().join(PROJECT), Options::default()).unwrap();
    assert!(db.get(&Selector::UserId("acked".into())).unwrap().is_some());
}

/// CPU ticks the server spends answering `n` scrapes of `/metrics`.
fn scrape_cost(server: &ServerProcess, n: usize) -> u64 {
    let all = bearer(ADMIN_ALL);
    let before = server.cpu_ticks();
    for _ in 0..n {
        let r = request(
            server.addr,
            "GET",
            "/metrics",
            &[("Authorization", &all)],
            b"",
        );
        assert_eq!(r.status, 200);
    }
    server.cpu_ticks() - before
}

#[test]
fn metrics_cost_does_not_grow_with_the_store() {
    // A store of 60,000 profiles, written through the library, and an empty one.
    let big = tempfile::tempdir().unwrap();
    {
        let db = Db::open(big.path().join(PROJECT), Options::default()).unwrap();
        for i in 0..60_000 {
            let call = Identify {
                user_id: Some(format!("user-{i:06}")),
                email: Some(format!("user{i}@example.com")),
                ..Identify::default()
            };
            db.apply_with(&Message::Identify(call), Durability::Buffered)
                .unwrap();
        }
        db.close().unwrap();
    }
    let small = tempfile::tempdir().unwrap();
    let keys = [(KEY, PROJECT)];
    let s_small = ServerProcess::start(small.path(), &keys);
    let s_big = ServerProcess::start(big.path(), &keys);
    let all = bearer(ADMIN_ALL);
    let text = request(
        s_big.addr,
        "GET",
        "/metrics",
        &[("Authorization", &all)],
        b"",
    )
    .text();
    assert!(
        text.contains("profiledb_store_profiles{project=\"shop\"} 60000"),
        "{text}"
    );
    // Work, not time: the CPU the server used for 600 scrapes of each.
    let small_cost = scrape_cost(&s_small, 600);
    let big_cost = scrape_cost(&s_big, 600);
    assert!(
        big_cost <= small_cost * 2 + 25,
        "600 scrapes cost {big_cost} ticks at 60,000 profiles vs {small_cost} on an empty store"
    );
}

#[test]
fn the_batch_context_is_not_copied_into_each_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[(KEY, PROJECT)]);
    let messages: Vec<Value> = (0..2500)
        .map(|i| json!({"type": "track", "userId": format!("c-{i}")}))
        .collect();
    let context: serde_json::Map<String, Value> = (0..18_000)
        .map(|i| (format!("k{i:05}"), json!(i)))
        .collect();
    let auth = basic(KEY);
    let cost = |with_context: bool| {
        let mut body = json!({ "batch": messages });
        if with_context {
            body["context"] = Value::Object(context.clone());
        }
        let bytes = body.to_string();
        assert!(bytes.len() < 500 * 1024, "{}", bytes.len());
        let before = server.cpu_ticks();
        let r = request(
            server.addr,
            "POST",
            "/v1/batch",
            &[("Authorization", &auth)],
            bytes.as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["accepted"], 2500);
        server.cpu_ticks() - before
    };
    let plain = cost(false);
    let with_context = cost(true);
    assert!(
        with_context <= plain * 3 + 50,
        "a batch with a {}-key context cost {with_context} ticks, without {plain}",
        context.len()
    );
}

// ---- 3. erasure ----------------------------------------------------------------------------

#[test]
fn erase_now_leaves_no_byte_of_the_profile_in_any_file() {
    let s = TestServer::start(&[(KEY, PROJECT)]);
    for round in 0..3 {
        identify(
            &s,
            "gone-1",
            "erase-me@example.com",
            &format!("Zebulon Quixote {round}"),
        );
        identify(
            &s,
            &format!("stay-{round}"),
            &format!("stay{round}@example.com"),
            "Stay",
        );
    }
    let dir = s.project_dir(PROJECT);
    assert!(!files_holding(&dir, "erase-me@example.com").is_empty());
    let r = s.admin(
        "DELETE",
        "/v1/profiles?email=erase-me%40example.com&erase=now",
        KEY,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["erased"], true);
    for needle in ["erase-me@example.com", "Zebulon", "gone-1"] {
        assert_eq!(
            files_holding(&dir, needle),
            Vec::<std::path::PathBuf>::new(),
            "{needle}"
        );
    }
    for round in 0..3 {
        assert_eq!(
            s.read(&format!("/v1/profiles?user_id=stay-{round}"), KEY)
                .status,
            200
        );
    }
    let (result, dir) = s.stop();
    result.unwrap();
    let project = dir.path().join(PROJECT);
    assert!(files_holding(&project, "erase-me@example.com").is_empty());
    let db = Db::open(&project, Options::default()).unwrap();
    assert!(
        db.get(&Selector::UserId("stay-2".into()))
            .unwrap()
            .is_some()
    );
    assert!(
        db.get(&Selector::UserId("gone-1".into()))
            .unwrap()
            .is_none()
    );
}

#[test]
fn deleted_bytes_leave_the_disk_within_the_bound_without_erase_now() {
    let s = start_with(|p| p.erase_within = Duration::from_secs(1));
    identify(&s, "later-1", "later@example.com", "Later Person");
    identify(&s, "keep-1", "keep@example.com", "Keep");
    let r = s.admin("DELETE", "/v1/profiles?user_id=later-1", KEY);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["erased"], false);
    assert_eq!(r.json()["erased_within_seconds"], 1);
    let dir = s.project_dir(PROJECT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !files_holding(&dir, "later@example.com").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the deleted profile's bytes stayed on disk"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.read("/v1/profiles?user_id=keep-1", KEY).status, 200);
}

// ---- 4. files ------------------------------------------------------------------------------

#[test]
fn a_directory_that_is_not_a_store_is_refused_and_left_intact() {
    let dir = tempfile::tempdir().unwrap();
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("thesis.tmp"), b"three years of work").unwrap();
    std::fs::write(mine.join("notes.txt"), b"notes").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .arg("--data")
        .arg(&mine)
        .args(["identify", r#"{"userId": "u-1"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a profiledb store"), "{stderr}");
    let mut names: Vec<String> = std::fs::read_dir(&mine)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["notes.txt", "thesis.tmp"]);
    assert_eq!(
        std::fs::read(mine.join("thesis.tmp")).unwrap(),
        b"three years of work"
    );

    // The server refuses it as a project directory too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .arg("--data")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--write-key", "k=mine"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a profiledb store"));
    assert!(!mine.join("LOCK").exists());

    // A store keeps a stranger's `*.tmp` file; its files are 0600 and its directory 0700.
    let store = dir.path().join("store");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .arg("--data")
        .arg(&store)
        .args(["identify", r#"{"userId": "u-1"}"#])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(store.join("editor-swap.tmp"), b"x").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .arg("--data")
        .arg(&store)
        .args(["identify", r#"{"userId": "u-2"}"#])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(store.join("editor-swap.tmp").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store), 0o700);
        for f in files(&store) {
            if f.file_name().unwrap() != "editor-swap.tmp" {
                assert_eq!(mode(&f), 0o600, "{}", f.display());
            }
        }
    }
}

// ---- 5. answers ----------------------------------------------------------------------------

#[test]
fn duplicate_selectors_and_control_characters_are_refused() {
    let s = TestServer::start(&[(KEY, PROJECT)]);
    identify(&s, "aa", "a@example.com", "A");
    identify(&s, "bb", "b@example.com", "B");
    let r = s.read("/v1/profiles?user_id=aa&user_id=bb", KEY);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.admin("DELETE", "/v1/profiles?user_id=bb&user_id=aa", KEY);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(s.read("/v1/profiles?user_id=aa", KEY).status, 200);
    assert_eq!(s.read("/v1/profiles?user_id=bb", KEY).status, 200);
    assert_eq!(s.read("/v1/profiles?user_id=aa%00", KEY).status, 400);
    assert_eq!(
        s.read("/v1/profiles?email=a%0A%40example.com", KEY).status,
        400
    );
    let r = s.post(
        "/v1/batch",
        KEY,
        &json!({"batch": [
            {"userId": "nul\u{0}id"},
            {"userId": "ok-id", "anonymousId": "line\nbreak"},
            {"userId": "fine", "traits": {"email": "x\u{1}@example.com"}},
            {"userId": "clean"}
        ]}),
    );
    let body = r.json();
    let res = body["results"].as_array().unwrap();
    for r in &res[..3] {
        assert_eq!(r["status"], "refused", "{r}");
        assert_eq!(r["error"], "invalid", "{r}");
    }
    assert_eq!(res[3]["status"], "accepted");
}

#[test]
fn health_per_project_and_a_summary() {
    let s = TestServer::start(&[(KEY, PROJECT), ("other-key", "other")]);
    assert_eq!(request(s.addr, "GET", "/health", &[], b"").text(), "ok");
    assert_eq!(
        request(s.addr, "GET", "/health?project=shop", &[], b"").status,
        200
    );
    assert_eq!(
        request(s.addr, "GET", "/health?project=nope", &[], b"").status,
        404
    );
    assert_eq!(
        request(s.addr, "GET", "/health?project=a&project=b", &[], b"").status,
        400
    );
}

// ---- keys ----------------------------------------------------------------------------------

#[test]
fn the_keys_file_is_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let admin_1 = "first-admin-token-abcdefgh";
    let admin_2 = "second-admin-token-abcdefgh";
    std::fs::write(
        &keys,
        format!("write key-1 {PROJECT}\nadmin {admin_1} {PROJECT}\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut server = ServerProcess::start_args(
        &data,
        &["--keys-file", keys.to_str().unwrap()],
        &[("PROFILEDB_ADMIN_TOKENS", "")],
    );
    let addr = server.addr;
    let post = |key: &str, user: &str| {
        request(
            addr,
            "POST",
            "/v1/identify",
            &[("Authorization", &basic(key))],
            json!({"userId": user}).to_string().as_bytes(),
        )
        .status
    };
    let read = |token: &str| {
        request(
            addr,
            "GET",
            "/v1/profiles?user_id=r-1",
            &[("Authorization", &bearer(token))],
            b"",
        )
        .status
    };
    assert_eq!(post("key-1", "r-1"), 200);
    assert_eq!(read(admin_1), 200);
    assert_eq!(
        read(ADMIN_ALL),
        401,
        "the environment was emptied for this server"
    );

    // Rotate both, then signal.
    std::fs::write(
        &keys,
        format!("write key-2 {PROJECT}\nadmin {admin_2} {PROJECT}\n"),
    )
    .unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while post("key-2", "r-2") != 200 {
        assert!(
            Instant::now() < deadline,
            "the new key never worked:\n{}",
            server.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(post("key-1", "r-3"), 401);
    assert_eq!(read(admin_1), 401);
    assert_eq!(read(admin_2), 200);

    // A broken file is refused and the keys in force stay.
    std::fs::write(&keys, "write only-two-fields\n").unwrap();
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.stderr().contains("NOT reloaded") {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(post("key-2", "r-4"), 200);
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(60)).success());
}

#[test]
fn keys_come_from_the_environment_and_admin_tokens_must_be_long() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_args(
        dir.path(),
        &[],
        &[("PROFILEDB_WRITE_KEYS", &format!("env-key={PROJECT}"))],
    );
    let r = request(
        server.addr,
        "POST",
        "/v1/identify",
        &[("Authorization", &basic("env-key"))],
        json!({"userId": "e-1"}).to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    drop(server);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiledb"))
        .arg("--data")
        .arg(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--write-key",
            "k=p",
            "--admin-token",
            "short=p",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");
    assert!(
        !stderr.contains("short"),
        "a secret is never echoed: {stderr}"
    );
}

#[test]
fn the_cli_erases_on_request_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_profiledb"))
            .arg("--data")
            .arg(&store)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "identify",
        r#"{"userId": "cli-gone", "traits": {"email": "cli-gone@example.com"}}"#,
    ]);
    run(&[
        "identify",
        r#"{"userId": "cli-stay", "traits": {"email": "cli-stay@example.com"}}"#,
    ]);
    assert!(!files_holding(&store, "cli-gone@example.com").is_empty());
    let out = run(&["delete", "--email", "cli-gone@example.com", "--erase"]);
    assert!(out.contains("\"erased\":true"), "{out}");
    assert!(files_holding(&store, "cli-gone@example.com").is_empty());
    assert!(!files_holding(&store, "cli-stay@example.com").is_empty());
}

#[test]
fn metrics_on_their_own_address_need_no_credentials_and_the_main_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_args(
        dir.path(),
        &[
            "--write-key",
            &format!("{KEY}={PROJECT}"),
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics_addr: std::net::SocketAddr = loop {
        let log = server.stderr();
        if let Some(addr) = log
            .split("metrics on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            break addr;
        }
        assert!(Instant::now() < deadline, "no metrics address in:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let r = request(metrics_addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .contains("profiledb_store_profiles{project=\"shop\"} 0"),
        "{}",
        r.text()
    );
    // Only /metrics lives there; the main address wants a server-wide admin token.
    let r = request(
        metrics_addr,
        "GET",
        "/v1/profiles?key=1",
        &[("Authorization", &bearer(ADMIN_ALL))],
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        request(server.addr, "GET", "/metrics", &[], b"").status,
        401
    );
}

#[test]
fn an_oversized_head_is_refused() {
    let s = TestServer::start(&[(KEY, PROJECT)]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    let mut head = String::from("GET /health HTTP/1.1\r\nHost: x\r\n");
    for i in 0..2000 {
        head.push_str(&format!("X-Filler-{i}: {}\r\n", "a".repeat(40)));
    }
    head.push_str("\r\n");
    let _ = c.write_all(head.as_bytes());
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    match read_response(&mut BufReader::new(c)) {
        Ok(r) => assert_eq!(r.status, 431, "{}", r.text()),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "no answer: {e}"),
    }
    assert_eq!(request(s.addr, "GET", "/health", &[], b"").status, 200);
}
