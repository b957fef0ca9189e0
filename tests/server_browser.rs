//! The browser side of `serve` (docs/browser.md).
//!
//! Over plain HTTP (always run): the embed script's caching, CORS of write endpoints and its
//! absence on admin endpoints, per-project origins, `text/plain` bodies, the ingestion-side
//! unlink, and the start-up endpoints of analytics.js and posthog-js.
//!
//! In a real browser (`real_browser_*`): Debian's headless Chromium driven through
//! chromedriver by selenium (tests/browser/drive.py) with the npm packages `.ci/run` installs.
//! Outside CI a missing tool skips the test with a message; under `CI=true` it fails.
#![cfg(feature = "server")]

#[path = "support/server.rs"]
mod server_common;

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::Command;

use serde_json::json;
use server_common::{ADMIN_ALL, ServerProcess, TestServer, bearer};

const KEY: &str = "web-write-key";
const LOCKED_KEY: &str = "locked-write-key";
const ELSEWHERE: &str = "https://elsewhere.example";

fn start() -> TestServer {
    TestServer::start_with(&[(KEY, "web"), (LOCKED_KEY, "locked")], |c| {
        c.allowed_origin("locked", ELSEWHERE)
    })
}

fn preflight(server: &TestServer, path: &str, origin: &str) -> server_common::Resp {
    server.request(
        "OPTIONS",
        path,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        b"",
    )
}

#[test]
fn write_endpoints_answer_preflights_and_admin_endpoints_do_not() {
    let server = start();
    let page = "http://127.0.0.1:9999";
    for path in [
        "/v1/batch",
        "/v1/identify",
        "/v1/i",
        "/v1/b",
        "/v1/unlink",
        "/flags/",
    ] {
        let r = preflight(&server, path, page);
        assert!(r.status < 300, "{path}: {}", r.status);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(page),
            "{path}"
        );
        let methods = r.header("access-control-allow-methods").unwrap_or("");
        assert!(methods.contains("POST"), "{path}: {methods}");
        let headers = r.header("access-control-allow-headers").unwrap_or("");
        assert!(headers.contains("authorization"), "{path}: {headers}");
        assert!(r.header("access-control-max-age").is_some(), "{path}");
        assert!(r.header("access-control-allow-credentials").is_none());
    }
    for path in ["/v1/profiles?user_id=u1", "/health", "/metrics"] {
        let r = preflight(&server, path, page);
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{path} must not be CORS-enabled: {:?}",
            r.headers
        );
        let auth = bearer(&server.admin_of(KEY));
        let r = server.request(
            "GET",
            path,
            &[("Origin", page), ("Authorization", &auth)],
            b"",
        );
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{path} (GET) must not be CORS-enabled"
        );
    }
}

#[test]
fn text_plain_body_with_key_in_body_from_a_page() {
    let server = start();
    let page = "http://127.0.0.1:9999";
    let body = json!({"writeKey": KEY, "batch": [{"type": "identify", "userId": "tp-1",
        "traits": {"plan": "pro"}}]});
    let r = server.request(
        "POST",
        "/v1/batch",
        &[
            ("Origin", page),
            ("Content-Type", "text/plain;charset=UTF-8"),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(page));
    assert_eq!(r.json()["accepted"], 1);
    let p = server.read("/v1/profiles?user_id=tp-1", KEY).json();
    assert_eq!(p["properties"]["plan"], "pro");
}

#[test]
fn a_project_with_allowed_origins_refuses_other_pages() {
    let server = start();
    let body = |id: &str| {
        json!({"writeKey": LOCKED_KEY, "batch": [{"type": "identify", "userId": id}]}).to_string()
    };
    // Another page's origin: refused before anything is stored.
    let r = server.request(
        "POST",
        "/v1/batch",
        &[("Origin", "http://127.0.0.1:9999")],
        body("lk-1").as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["code"], "origin_not_allowed");
    assert_eq!(
        server.read("/v1/profiles?user_id=lk-1", LOCKED_KEY).status,
        404
    );
    // Its own origin, and a request that is not a browser's (no Origin): accepted.
    let r = server.request(
        "POST",
        "/v1/batch",
        &[("Origin", ELSEWHERE)],
        body("lk-2").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(ELSEWHERE));
    let r = server.request("POST", "/v1/batch", &[], body("lk-3").as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    for id in ["lk-2", "lk-3"] {
        let r = server.read(&format!("/v1/profiles?user_id={id}"), LOCKED_KEY);
        assert_eq!(r.status, 200, "{id}");
    }
    // The unlink endpoint follows the same rule.
    let r = server.request(
        "POST",
        "/v1/unlink",
        &[("Origin", "http://127.0.0.1:9999")],
        json!({"writeKey": LOCKED_KEY, "anonymousId": "a-1"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());
}

#[test]
fn only_allowed_origins_pass_preflights_when_every_project_is_restricted() {
    let server = TestServer::start_with(&[(LOCKED_KEY, "locked")], |c| {
        c.allowed_origin("locked", ELSEWHERE)
    });
    let r = preflight(&server, "/v1/batch", "http://127.0.0.1:9999");
    assert!(r.header("access-control-allow-origin").is_none());
    let r = preflight(&server, "/v1/batch", ELSEWHERE);
    assert_eq!(r.header("access-control-allow-origin"), Some(ELSEWHERE));
}

#[test]
fn bad_allowed_origins_are_configuration_errors() {
    use profiledb::server::ServeConfig;
    let dir = tempfile::tempdir().unwrap();
    for (project, origin) in [
        ("web", "https://shop.example/path"),
        ("web", "shop.example"),
        ("other", "https://shop.example"),
    ] {
        let config = ServeConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap())
            .write_key(KEY, "web")
            .allowed_origin(project, origin);
        let err = profiledb::server::run(config).expect_err(origin);
        assert!(err.to_string().contains("allowed origin"), "{err}");
    }
}

#[test]
fn embed_script_is_cacheable_and_checks_its_key() {
    let server = start();
    let r = server.request("GET", &format!("/v1/embed.js?key={KEY}"), &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().contains("javascript"));
    assert!(r.header("cache-control").unwrap().contains("max-age="));
    let etag = r.header("etag").expect("etag").to_string();
    let text = r.text();
    assert!(text.contains("profiledbloaded") && text.contains("sendBeacon"));
    assert!(r.header("content-encoding").is_none());

    let r = server.request(
        "GET",
        &format!("/v1/embed.js?key={KEY}"),
        &[("If-None-Match", &etag)],
        b"",
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let r = server.request(
        "GET",
        &format!("/v1/embed.js?key={KEY}"),
        &[("Accept-Encoding", "gzip, br")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut inflated = String::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_string(&mut inflated)
        .unwrap();
    assert_eq!(inflated, text);
    assert!(
        r.body.len() <= 5 * 1024,
        "served gzip is {} bytes",
        r.body.len()
    );
    eprintln!(
        "embed.js served: {} bytes, {} gzip-compressed",
        text.len(),
        r.body.len()
    );

    let r = server.request("GET", "/v1/embed.js?key=nope", &[], b"");
    assert_eq!(r.status, 401);
    let r = server.request("GET", "/v1/embed.js", &[], b"");
    assert_eq!(r.status, 400);
}

#[test]
fn unlink_detaches_a_device_durably() {
    let server = start();
    let r = server.post(
        "/v1/identify",
        KEY,
        &json!({"userId": "ul-1", "anonymousId": "ul-dev-1"}),
    );
    assert_eq!(r.status, 200);
    let r = server.request(
        "POST",
        "/v1/unlink",
        &[("Content-Type", "text/plain")],
        json!({"writeKey": KEY, "anonymousId": "ul-dev-1"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["unlinked"], true);
    assert_eq!(
        server
            .read("/v1/profiles?anonymous_id=ul-dev-1", KEY)
            .status,
        404
    );
    let p = server.read("/v1/profiles?user_id=ul-1", KEY).json();
    assert_eq!(p["anonymous_ids"], json!([]));
    // A retry (or an unknown device) is not an error.
    let r = server.post("/v1/unlink", KEY, &json!({"anonymousId": "ul-dev-1"}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["unlinked"], false);
    // Bad requests.
    let r = server.post("/v1/unlink", KEY, &json!({"anonymousId": " "}));
    assert_eq!(r.status, 400);
    let r = server.post("/v1/unlink", "nope", &json!({"anonymousId": "x1"}));
    assert_eq!(r.status, 401);
    let r = server.request("POST", "/v1/unlink", &[], b"{\"anonymousId\": \"x1\"}");
    assert_eq!(r.status, 401);
    let r = server.request("POST", "/v1/unlink", &[], &vec![b' '; 10_000]);
    assert_eq!(r.status, 400);
    // Durable: still detached after a restart.
    let (result, dir) = server.stop();
    result.unwrap();
    let db = profiledb::Db::open(dir.path().join("web"), profiledb::Options::default()).unwrap();
    let p = db
        .get(&profiledb::Selector::UserId("ul-1".into()))
        .unwrap()
        .unwrap();
    assert!(p.anonymous_ids.is_empty());
}

#[test]
fn segment_settings_and_short_paths() {
    let server = start();
    let r = server.request(
        "GET",
        &format!("/v1/projects/{KEY}/settings"),
        &[("Origin", "http://127.0.0.1:9999")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://127.0.0.1:9999")
    );
    let s = r.json();
    let segment = &s["integrations"]["Segment.io"];
    assert_eq!(segment["apiKey"], KEY);
    assert_eq!(segment["apiHost"], format!("{}/v1", server.addr));
    assert_eq!(segment["protocol"], "http");
    assert_eq!(s["integrations"].as_object().unwrap().len(), 1);
    assert_eq!(s["remotePlugins"], json!([]));
    let r = server.request("GET", "/v1/projects/nope/settings", &[], b"");
    assert_eq!(r.status, 404);

    // analytics.js's per-call paths: /v1/{i,g,a,t,p,s} and /v1/b.
    let r = server.post(
        "/v1/i",
        KEY,
        &json!({"userId": "sp-1", "anonymousId": "sp-anon", "traits": {"plan": "x"}}),
    );
    assert_eq!(r.json()["accepted"], 1, "{}", r.text());
    let r = server.post("/v1/g", KEY, &json!({"userId": "sp-1", "groupId": "sp-co"}));
    assert_eq!(r.json()["accepted"], 1, "{}", r.text());
    let r = server.post(
        "/v1/b",
        KEY,
        &json!({"batch": [{"type": "identify", "userId": "sp-1", "traits": {"plan": "y"}}]}),
    );
    assert_eq!(r.json()["accepted"], 1, "{}", r.text());
    let p = server.read("/v1/profiles?user_id=sp-1", KEY).json();
    assert_eq!(p["properties"]["plan"], "y");
    assert_eq!(p["company_id"], "sp-co");
}

#[test]
fn posthog_start_up_calls_get_nothing_enabled() {
    let server = start();
    for path in ["/flags/?v=2&config=true", "/decide/?v=4"] {
        let r = server.request("POST", path, &[("Content-Type", "application/json")], b"{}");
        assert_eq!(r.status, 200, "{path}");
        let a = r.json();
        assert_eq!(a["featureFlags"], json!({}), "{path}");
        assert_eq!(a["sessionRecording"], false, "{path}");
        assert_eq!(a["surveys"], false, "{path}");
    }
    let r = server.request("GET", &format!("/array/{KEY}/config"), &[], b"");
    assert_eq!(r.status, 200);
    let c = r.json();
    assert_eq!(c["token"], KEY);
    assert_eq!(c["hasFeatureFlags"], false);
    assert_eq!(c["autocapture_opt_out"], true);
    let r = server.request("GET", &format!("/array/{KEY}/config.js"), &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("_POSTHOG_REMOTE_CONFIG"));
    assert_eq!(
        server.request("GET", "/array/nope/config", &[], b"").status,
        404
    );
}

// ---- in a real browser ----

/// What the browser tests need, or why they cannot run.
struct Tools {
    python: PathBuf,
    npm: PathBuf,
    node: PathBuf,
}

fn tools() -> Result<Tools, String> {
    let python = std::env::var_os("PROFILEDB_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .ok_or("PROFILEDB_PYTHON not set (a python with selenium; .ci/run makes one)")?;
    let ok = Command::new(&python)
        .args(["-c", "import selenium"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return Err(format!("{python:?} cannot import selenium"));
    }
    for (var, default) in [
        ("PROFILEDB_CHROMIUM", "/usr/bin/chromium"),
        ("PROFILEDB_CHROMEDRIVER", "/usr/bin/chromedriver"),
    ] {
        let path = std::env::var(var).unwrap_or_else(|_| default.into());
        if !std::path::Path::new(&path).exists() {
            return Err(format!(
                "{path} missing (apt-get install chromium chromium-driver)"
            ));
        }
    }
    let npm = std::env::var_os("PROFILEDB_NPM_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/profiledb/npm/node_modules"))
        })
        .ok_or("PROFILEDB_NPM_DIR not set and no HOME")?;
    for package in ["@segment/analytics-next", "posthog-js", "terser"] {
        if !npm.join(package).join("package.json").exists() {
            return Err(format!(
                "{package} not installed in {npm:?} (.ci/run installs it)"
            ));
        }
    }
    let node = PathBuf::from(std::env::var("PROFILEDB_NODE").unwrap_or_else(|_| "node".into()));
    Ok(Tools { python, npm, node })
}

/// The tools, or `None` after saying loudly why the test is skipped (outside CI only).
fn tools_or_skip(test: &str) -> Option<Tools> {
    match tools() {
        Ok(t) => Some(t),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: CI=true but {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

#[test]
fn real_browser_embed_analytics_js_posthog_js() {
    run_in_browser(
        "real_browser_embed_analytics_js_posthog_js",
        &["embed", "segment", "posthog_start"],
    );
}

/// posthog-js's identify read back as a profile: its person writes carry PostHog's own
/// `$initial_*` properties in `$set_once`, which the PostHog dialect drops (and lists in
/// `ignored`) so that the rest of the call is applied.
#[test]
fn real_browser_posthog_js_identify() {
    run_in_browser("real_browser_posthog_js_identify", &["posthog"]);
}

fn run_in_browser(test: &str, scenarios: &[&str]) {
    let Some(tools) = tools_or_skip(test) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_args(
        data.path(),
        &[(KEY, "web"), (LOCKED_KEY, "locked")],
        &["--allowed-origin", &format!("locked={ELSEWHERE}")],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/drive.py");
    let out = Command::new(&tools.python)
        .arg(script)
        .arg(format!("http://{}", server.addr))
        .args([KEY, LOCKED_KEY])
        .arg(&tools.npm)
        .args(scenarios)
        .env("SE_OFFLINE", "true")
        .env("PROFILEDB_ADMIN_TOKEN", ADMIN_ALL)
        .env("PROFILEDB_ADMIN_PROJECT", "web")
        .output()
        .expect("run drive.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "drive.py failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver:\n{}",
        out.status,
        server.stderr()
    );
    for scenario in scenarios {
        assert!(
            stdout.lines().any(|l| l == format!("ok {scenario}")),
            "{scenario} did not finish: {stdout}"
        );
    }
}

#[test]
fn embed_script_minified_size_with_terser() {
    let Some(tools) = tools_or_skip("embed_script_minified_size_with_terser") else {
        return;
    };
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/src/server/embed/profiledb.js");
    let out = Command::new(&tools.node)
        .arg(tools.npm.join("terser/bin/terser"))
        .args([source, "--compress", "--mangle"])
        .output()
        .expect("run node terser");
    assert!(
        out.status.success(),
        "terser failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&out.stdout).unwrap();
    let gz = gz.finish().unwrap();
    eprintln!(
        "embed.js minified with terser: {} bytes, {} bytes gzip-compressed",
        out.stdout.len(),
        gz.len()
    );
    assert!(gz.len() <= 5 * 1024, "min+gz is {} bytes", gz.len());
}
