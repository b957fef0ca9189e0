//! The browser side of `serve` (docs/browser.md): the embed script, CORS for the write
//! endpoints, the ingestion-side `unlink` of a logout, and the start-up calls of Segment's
//! analytics.js and posthog-js answered with "nothing enabled".
//!
//! Admin endpoints (reads, deletes, health, metrics) are not routed here and get no CORS
//! headers: a browser on another origin can never read their answers.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, HOST, IF_NONE_MATCH,
    ORIGIN, VARY,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::auth::{self, credentials};
use super::http::{Peer, ingest_route, read_protected, respond};
use super::ingest::{self, Endpoint, Reply};
use super::keys::KeySet;
use super::{AppState, ServeConfig, ServerError};

type Shared = Arc<AppState>;

/// The embed script as kept in the repository (readable; docs/browser.md, "Size").
const EMBED_SOURCE: &str = include_str!("embed/profiledb.js");

/// Largest the served script may be, gzip-compressed (issue 15: 5 KB).
#[cfg(test)]
const EMBED_GZIP_BUDGET: usize = 5 * 1024;

/// The script as served: the source without indentation, blank lines and whole-line `//`
/// comments (so the source must not hold multi-line strings). No other change: what runs in
/// the browser reads like the source.
fn embed_js_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let mut out = String::with_capacity(EMBED_SOURCE.len());
        for line in EMBED_SOURCE.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    })
}

/// How long browsers and proxies may reuse the script without asking again.
const EMBED_MAX_AGE: &str = "public, max-age=3600";

/// How long a browser may cache a preflight answer (Chromium caps it at 2 hours).
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(7200);

/// Which web origins may write to which project. A project absent from the map accepts
/// every origin (the default; docs/browser.md says why).
#[derive(Debug, Default)]
pub(crate) struct Origins {
    by_project: HashMap<String, Vec<String>>,
}

impl Origins {
    /// Check and collect `config.allowed_origins`; `keys` holds every credential (flags,
    /// environment, keys file).
    pub(crate) fn from_config(config: &ServeConfig, keys: &KeySet) -> Result<Origins, ServerError> {
        let mut by_project: HashMap<String, Vec<String>> = HashMap::new();
        for (project, origin) in &config.allowed_origins {
            if !keys.write_keys.iter().any(|(_, p)| p == project) {
                return Err(ServerError::Config(format!(
                    "allowed origin {origin:?} names project {project:?}, which has no write key"
                )));
            }
            let origin = normalize_origin(origin).ok_or_else(|| {
                ServerError::Config(format!(
                    "allowed origin {origin:?} for project {project:?}: expected \
                     scheme://host[:port] without a path (e.g. https://shop.example), or *"
                ))
            })?;
            by_project.entry(project.clone()).or_default().push(origin);
        }
        Ok(Origins { by_project })
    }

    /// Whether some project accepts `origin` (the preflight cannot know the project: the key
    /// is in the request that follows).
    fn any_allows(&self, projects: usize, origin: &str) -> bool {
        self.by_project.len() < projects
            || self
                .by_project
                .values()
                .any(|list| list_allows(list, origin))
    }

    /// Refuse a write to `project` from a page whose origin it does not accept. Requests
    /// without an `Origin` header (servers, curl) are not browsers' and are not checked.
    pub(crate) fn check(&self, project: &str, origin: Option<&str>) -> Result<(), Reply> {
        let (Some(origin), Some(list)) = (origin, self.by_project.get(project)) else {
            return Ok(());
        };
        if list_allows(list, origin) {
            Ok(())
        } else {
            Err(Reply::error(
                403,
                "origin_not_allowed",
                &format!(
                    "pages of {origin:?} may not write to this project (see --allowed-origin)"
                ),
            ))
        }
    }
}

fn list_allows(list: &[String], origin: &str) -> bool {
    list.iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

/// `scheme://host[:port]` lower-cased, a trailing `/` dropped; `*` and `null` kept.
fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim();
    if origin == "*" || origin == "null" {
        return Some(origin.to_string());
    }
    let origin = origin.strip_suffix('/').unwrap_or(origin);
    let (scheme, host) = origin.split_once("://")?;
    let ok = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !host.is_empty()
        && !host.contains(['/', '?', '#', '@'])
        && !host.chars().any(char::is_whitespace);
    ok.then(|| origin.to_ascii_lowercase())
}

/// The request's `Origin` header, if it is text.
pub(crate) fn origin_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// CORS of the write endpoints: preflights and simple requests from the origins some project
/// accepts (the request's own project is checked when its key is known, [`Origins::check`]).
/// No credentials: the embed script and the SDKs send the key, not cookies.
pub(crate) fn cors_layer(state: &Shared) -> CorsLayer {
    let state = Arc::clone(state);
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| state.origins.any_allows(state.projects.len(), o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(PREFLIGHT_MAX_AGE)
}

/// Write-side routes pages call (all behind [`cors_layer`]).
pub(crate) fn write_routes() -> Router<Shared> {
    // analytics.js posts each call to `{apiHost}/{first letter of its type}` and batches to
    // `{apiHost}/b` (its default apiHost is `api.segment.io/v1`).
    let single = |kind: &'static str| ingest_route(Endpoint::Single(kind));
    let flags = get(no_flags).post(no_flags);
    Router::new()
        .route("/v1/i", single("identify"))
        .route("/v1/g", single("group"))
        .route("/v1/a", single("alias"))
        .route("/v1/t", single("track"))
        .route("/v1/p", single("page"))
        .route("/v1/s", single("screen"))
        .route("/v1/b", ingest_route(Endpoint::Batch))
        .route("/v1/unlink", post(unlink))
        .route("/v1/projects/{key}/settings", get(segment_settings))
        .route("/flags", flags.clone())
        .route("/flags/", flags.clone())
        .route("/decide", flags.clone())
        .route("/decide/", flags)
        .route("/array/{token}/config", get(posthog_config))
        .route("/array/{token}/config.js", get(posthog_config_js))
}

/// The embed script's route (a `<script src>` needs no CORS).
pub(crate) fn script_routes() -> Router<Shared> {
    Router::new().route("/v1/embed.js", get(embed_js))
}

/// The script gzip-compressed once, for clients that accept it.
fn embed_gzip() -> &'static [u8] {
    static GZ: OnceLock<Vec<u8>> = OnceLock::new();
    GZ.get_or_init(|| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(embed_js_text().as_bytes());
        enc.finish().unwrap_or_default()
    })
}

/// A strong validator of the script's bytes.
fn embed_etag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        format!(
            "\"pdb-{:08x}-{}\"",
            crc32fast::hash(embed_js_text().as_bytes()),
            embed_js_text().len()
        )
    })
}

/// Whether an `Accept-Encoding` value accepts gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[derive(Deserialize)]
struct KeyQuery {
    key: Option<String>,
}

/// `GET /v1/embed.js?key=WRITE_KEY`: the script (the same bytes for every key; the key is
/// checked so that a typo shows as a failed script load rather than silently lost calls).
async fn embed_js(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<KeyQuery>,
) -> Response {
    match query.key.as_deref() {
        Some(k) if state.project(k).is_some() => {}
        Some(_) => return respond(&state, "embed_js", Reply::unauthorized("unknown write key")),
        None => {
            return respond(
                &state,
                "embed_js",
                Reply::error(400, "invalid_query", "give the write key as ?key=WRITE_KEY"),
            );
        }
    }
    let etag = embed_etag();
    let fresh = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
        });
    let gzip = accepts_gzip(&headers);
    let mut response = if fresh {
        state.http.record("embed_js", 304);
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        state.http.record("embed_js", 200);
        let body = if gzip {
            Body::from(embed_gzip())
        } else {
            Body::from(embed_js_text())
        };
        (StatusCode::OK, body).into_response()
    };
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static(EMBED_MAX_AGE));
    h.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    // Pages that isolate themselves (Cross-Origin-Embedder-Policy) may still load it.
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(ETAG, v);
    }
    if gzip && !fresh {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// Longest body of `/v1/unlink`.
const UNLINK_BODY_BYTES: usize = 4096;

#[derive(Deserialize)]
struct UnlinkBody {
    #[serde(rename = "anonymousId")]
    anonymous_id: Option<Value>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
}

/// `POST /v1/unlink {"anonymousId": A, "writeKey"?}`: detach device `A` from its profile
/// (SPEC 3.6, what the embed script's `reset()` sends at logout). Authenticated and bounded
/// like the other write endpoints (write key in the header, checked before the body is read,
/// or in the body), answered once durable.
async fn unlink(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match unlink_reply(&state, peer.ip(), &headers, body).await {
        Ok(reply) | Err(UnlinkError::Reply(reply)) => respond(&state, "unlink", reply),
        Err(UnlinkError::Response(response)) => response,
    }
}

/// An unlink refused before or while its body was read (already a response) or after.
enum UnlinkError {
    Response(Response),
    Reply(Reply),
}

impl From<Reply> for UnlinkError {
    fn from(reply: Reply) -> Self {
        UnlinkError::Reply(reply)
    }
}

async fn unlink_reply(
    state: &Shared,
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<Reply, UnlinkError> {
    let header_project = auth::header_write_project(state, peer, &credentials(headers))?;
    let authenticated = header_project.is_some();
    let (bytes, reserved) = read_protected(
        state,
        "unlink",
        headers,
        body,
        UNLINK_BODY_BYTES,
        false,
        authenticated,
    )
    .await
    .map_err(UnlinkError::Response)?;
    let parsed: UnlinkBody = serde_json::from_slice(&bytes).map_err(|e| {
        Reply::error(
            400,
            "invalid_json",
            &format!("the body is not a JSON object with anonymousId: {e}"),
        )
    })?;
    let project = match (header_project, &parsed.write_key) {
        (Some(p), _) => p,
        (None, Some(Value::String(k))) => auth::project_for_write_key(state, peer, k)?,
        (None, _) => {
            return Err(Reply::unauthorized(
                "no write key: send it as the HTTP basic-auth user or as writeKey in the body",
            )
            .into());
        }
    };
    state
        .origins
        .check(&project.name, origin_of(headers).as_deref())?;
    let anonymous_id = match parsed.anonymous_id {
        Some(Value::String(a)) if !a.trim().is_empty() && a.chars().count() <= 255 => a,
        _ => {
            return Err(Reply::error(
                400,
                "invalid_unlink",
                "anonymousId: must be a non-blank string of at most 255 characters",
            )
            .into());
        }
    };
    let reply = tokio::task::spawn_blocking(move || {
        let _reserved = reserved;
        let result = project
            .db
            .unlink(&anonymous_id)
            .and_then(|key| project.db.sync().map(|()| key));
        match result {
            Ok(key) => Reply::json(&json!({
                "success": true,
                "unlinked": key.is_some(),
                "key": key,
            })),
            Err(e) => Reply::store_error(&project, &e),
        }
    })
    .await
    .unwrap_or_else(|e| ingest::internal("request task failed", &e));
    Ok(reply)
}

/// The scheme and host a browser reached this server by: `X-Forwarded-Proto` (set by a
/// TLS-terminating proxy) or `http`, and the `Host` header.
fn public_base(headers: &HeaderMap) -> Option<(String, String)> {
    let host = headers.get(HOST)?.to_str().ok()?;
    if host.is_empty() || host.contains(['/', ' ', '"', '\\']) {
        return None;
    }
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|p| p == "https" || p == "http")
        .unwrap_or_else(|| "http".to_string());
    Some((proto, host.to_string()))
}

fn json_response(state: &AppState, label: &'static str, value: &Value) -> Response {
    let mut response = respond(state, label, Reply::json(value));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /v1/projects/{writeKey}/settings`: what analytics.js loads from its CDN first. Only
/// the Segment.io destination (this server) is on; no device-mode destinations, middleware,
/// tracking plans or metrics.
async fn segment_settings(
    State(state): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    if state.project(&key).is_none() {
        return respond(
            &state,
            "segment_settings",
            Reply::error(404, "not_found", "unknown write key"),
        );
    }
    let mut segment =
        json!({"apiKey": key, "addBundledMetadata": false, "unbundledIntegrations": []});
    if let Some((proto, host)) = public_base(&headers) {
        segment["apiHost"] = json!(format!("{host}/v1"));
        segment["protocol"] = json!(proto);
    }
    let settings = json!({
        "integrations": {"Segment.io": segment},
        "plan": {"track": {"__default": {"enabled": true, "integrations": {}}},
                 "identify": {"__default": {"enabled": true}},
                 "group": {"__default": {"enabled": true}}},
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": [],
        "consentSettings": {"allCategories": []},
    });
    json_response(&state, "segment_settings", &settings)
}

/// PostHog's remote configuration with every product off: no autocapture, recordings,
/// surveys, heatmaps, site apps or feature flags. Events go to the capture endpoint.
fn posthog_remote_config(token: &str) -> Value {
    json!({
        "token": token,
        "supportedCompression": [],
        "hasFeatureFlags": false,
        "captureDeadClicks": false,
        "capturePerformance": false,
        "autocapture_opt_out": true,
        "autocaptureExceptions": false,
        "analytics": {"endpoint": "/e/"},
        "elementsChainAsString": true,
        "sessionRecording": false,
        "heatmaps": false,
        "surveys": false,
        "productTours": false,
        "defaultIdentifiedOnly": true,
        "siteApps": [],
        "toolbarParams": {},
        "isAuthenticated": false,
        "editorParams": {},
    })
}

/// `POST /flags/` and `/decide/` (PostHog's feature flags, and in older clients the whole
/// start-up configuration): no flags, every product off. The body is not read: nothing in it
/// changes the answer.
async fn no_flags(State(state): State<Shared>) -> Response {
    let mut answer = posthog_remote_config("");
    if let Value::Object(m) = &mut answer {
        m.remove("token");
        m.insert("featureFlags".into(), json!({}));
        m.insert("featureFlagPayloads".into(), json!({}));
        m.insert("flags".into(), json!({}));
        m.insert("errorsWhileComputingFlags".into(), json!(false));
        m.insert("quotaLimited".into(), json!([]));
        m.insert("config".into(), json!({"enable_collect_everything": false}));
    }
    json_response(&state, "posthog_flags", &answer)
}

/// `GET /array/{token}/config`: posthog-js's remote configuration.
async fn posthog_config(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    if state.project(&token).is_none() {
        return respond(
            &state,
            "posthog_config",
            Reply::error(404, "not_found", "unknown project token"),
        );
    }
    json_response(&state, "posthog_config", &posthog_remote_config(&token))
}

/// `GET /array/{token}/config.js`: the same configuration as the script posthog-js's loader
/// snippet includes.
async fn posthog_config_js(State(state): State<Shared>, Path(token): Path<String>) -> Response {
    if state.project(&token).is_none() {
        return respond(
            &state,
            "posthog_config",
            Reply::error(404, "not_found", "unknown project token"),
        );
    }
    let config = posthog_remote_config(&token);
    let key = Value::String(token).to_string();
    let text = format!(
        "(function(){{window._POSTHOG_REMOTE_CONFIG=window._POSTHOG_REMOTE_CONFIG||{{}};\
         window._POSTHOG_REMOTE_CONFIG[{key}]={{config:{config},siteApps:[]}};}})();\n"
    );
    state.http.record("posthog_config", 200);
    let mut response = (StatusCode::OK, text).into_response();
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            normalize_origin("https://Shop.Example/").as_deref(),
            Some("https://shop.example")
        );
        assert_eq!(
            normalize_origin("http://127.0.0.1:8000").as_deref(),
            Some("http://127.0.0.1:8000")
        );
        assert_eq!(normalize_origin("*").as_deref(), Some("*"));
        assert!(normalize_origin("shop.example").is_none());
        assert!(normalize_origin("https://shop.example/path").is_none());
        assert!(normalize_origin("https://").is_none());
    }

    #[test]
    fn gzip_acceptance() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(ACCEPT_ENCODING, "gzip, deflate, br".parse().unwrap());
        assert!(accepts_gzip(&h));
        h.insert(ACCEPT_ENCODING, "gzip;q=0, br".parse().unwrap());
        assert!(!accepts_gzip(&h));
        h.insert(ACCEPT_ENCODING, "br".parse().unwrap());
        assert!(!accepts_gzip(&h));
    }

    #[test]
    fn the_gzip_copy_inflates_to_the_script() {
        use std::io::Read as _;
        let mut out = String::new();
        flate2::read::GzDecoder::new(embed_gzip())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, embed_js_text());
    }

    #[test]
    fn the_served_script_fits_the_size_budget() {
        let gz = embed_gzip().len();
        eprintln!(
            "embed.js: source {} bytes, served {} bytes, {gz} bytes gzip-compressed",
            EMBED_SOURCE.len(),
            embed_js_text().len()
        );
        assert!(gz <= EMBED_GZIP_BUDGET, "embed.js is {gz} bytes gzipped");
        // The compaction keeps every statement line.
        let statements = |t: &str| t.lines().filter(|l| l.trim_end().ends_with(';')).count();
        assert_eq!(statements(EMBED_SOURCE), statements(embed_js_text()));
    }
}
