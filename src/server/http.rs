//! Routes and the async side of each request: read the body (bounded), hand the work to the
//! blocking pool, turn the reply into a response.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::{DefaultBodyLimit, Query, RawQuery, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::auth::{Credentials, basic_auth_key};
use super::ingest::{self, Endpoint, Reply, is_store_failure};
use super::metrics::{self, StoreFigures};
use super::{AppState, Project};
use super::{mixpanel, posthog};
use crate::Selector;

type Shared = Arc<AppState>;

/// The server's routes.
pub(crate) fn router(state: Shared) -> Router {
    let single = |kind: &'static str| {
        post(
            move |State(s): State<Shared>, headers: HeaderMap, body: Body| {
                ingest_request(s, Endpoint::Single(kind), headers, body)
            },
        )
    };
    Router::new()
        .route(
            "/v1/batch",
            post(|State(s): State<Shared>, headers: HeaderMap, body: Body| {
                ingest_request(s, Endpoint::Batch, headers, body)
            }),
        )
        .route("/v1/identify", single("identify"))
        .route("/v1/group", single("group"))
        .route("/v1/alias", single("alias"))
        .route("/v1/track", single("track"))
        .route("/v1/page", single("page"))
        .route("/v1/screen", single("screen"))
        .route(
            "/v1/profiles",
            get(get_profile).delete(delete_profile).head(get_profile),
        )
        .merge(vendor_routes())
        .route("/health", get(health))
        .route("/metrics", get(render_metrics))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// A vendor dialect's endpoint (src/server/posthog.rs, mixpanel.rs).
#[derive(Debug, Clone, Copy)]
enum Vendor {
    PostHog,
    Mixpanel(mixpanel::Kind),
}

impl Vendor {
    fn label(self) -> &'static str {
        match self {
            Vendor::PostHog => "posthog_capture",
            Vendor::Mixpanel(mixpanel::Kind::Engage) => "mixpanel_engage",
            Vendor::Mixpanel(mixpanel::Kind::Groups) => "mixpanel_groups",
            Vendor::Mixpanel(mixpanel::Kind::Events) => "mixpanel_track",
        }
    }
}

/// PostHog's capture paths and Mixpanel's ingestion paths, each with and without the
/// trailing slash.
fn vendor_routes() -> Router<Shared> {
    let handler = |vendor: Vendor| {
        post(
            move |State(s): State<Shared>,
                  RawQuery(q): RawQuery,
                  headers: HeaderMap,
                  body: Body| { vendor_request(s, vendor, q, headers, body) },
        )
    };
    let mut router = Router::new();
    let paths: [(&str, Vendor); 8] = [
        ("/batch", Vendor::PostHog),
        ("/capture", Vendor::PostHog),
        ("/e", Vendor::PostHog),
        ("/i/v0/e", Vendor::PostHog),
        ("/engage", Vendor::Mixpanel(mixpanel::Kind::Engage)),
        ("/groups", Vendor::Mixpanel(mixpanel::Kind::Groups)),
        ("/track", Vendor::Mixpanel(mixpanel::Kind::Events)),
        ("/import", Vendor::Mixpanel(mixpanel::Kind::Events)),
    ];
    for (path, vendor) in paths {
        router = router
            .route(path, handler(vendor))
            .route(&format!("{path}/"), handler(vendor));
    }
    router
}

async fn vendor_request(
    state: Shared,
    vendor: Vendor,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let label = vendor.label();
    let gzip = match gzip_encoding(&headers) {
        Ok(g) => g,
        Err(reply) => return respond(&state, label, reply),
    };
    let bytes = match read_limited(&state, &headers, body).await {
        Ok(b) => b,
        Err(reply) => return respond(&state, label, reply),
    };
    let worker = Arc::clone(&state);
    let reply = tokio::task::spawn_blocking(move || match vendor {
        Vendor::PostHog => posthog::process(&worker, gzip, &bytes),
        Vendor::Mixpanel(kind) => mixpanel::process(&worker, kind, gzip, query.as_deref(), &bytes),
    })
    .await
    .unwrap_or_else(|e| Reply::error(500, "internal", &format!("request task failed: {e}")));
    respond(&state, label, reply)
}

/// Whether `Content-Encoding` says gzip; a 400 for an encoding other than gzip or identity.
fn gzip_encoding(headers: &HeaderMap) -> Result<bool, Reply> {
    match headers.get(CONTENT_ENCODING).map(|v| v.to_str()) {
        None => Ok(false),
        Some(Ok(v)) if v.trim().eq_ignore_ascii_case("gzip") => Ok(true),
        Some(Ok(v)) if v.trim().eq_ignore_ascii_case("identity") || v.trim().is_empty() => {
            Ok(false)
        }
        Some(_) => Err(Reply::error(
            400,
            "unsupported_encoding",
            "Content-Encoding must be gzip or absent",
        )),
    }
}

/// The body, bounded by the batch limit (a declared length far over it is refused at once).
async fn read_limited(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, Reply> {
    let limit = state.limits.max_batch_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT.max(limit) as u64) {
        return Err(ingest::too_large(limit, "as sent"));
    }
    read_body(body, limit).await
}

fn respond(state: &AppState, endpoint: &'static str, reply: Reply) -> Response {
    state.http.record(endpoint, reply.status);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, reply.body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Bytes of an over-limit body read and thrown away so that the client, still sending, gets
/// the `400` instead of a reset connection. Past this much the connection is just closed.
const DRAIN_LIMIT: usize = 8 << 20;

/// Read the body, refusing it once it passes `limit` bytes (the rest is drained, up to
/// [`DRAIN_LIMIT`], and dropped).
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, Reply> {
    let mut buf = Vec::new();
    let mut seen = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None if seen > limit => return Err(ingest::too_large(limit, "as sent")),
            None => return Ok(buf),
            Some(Err(e)) => {
                return Err(Reply::error(
                    400,
                    "invalid_body",
                    &format!("reading the body failed: {e}"),
                ));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    seen = seen.saturating_add(data.len());
                    if seen > limit {
                        buf = Vec::new();
                        if seen > DRAIN_LIMIT {
                            return Err(ingest::too_large(limit, "as sent"));
                        }
                    } else {
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

async fn ingest_request(
    state: Shared,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let label = endpoint.label();
    let credentials = basic_auth_key(&headers);
    match &credentials {
        Credentials::Key(k) if state.project(k).is_none() => {
            return respond(&state, label, Reply::unauthorized("unknown write key"));
        }
        Credentials::Malformed => {
            return respond(
                &state,
                label,
                Reply::unauthorized("the Authorization header is not valid basic auth"),
            );
        }
        _ => {}
    }
    let gzip = match gzip_encoding(&headers) {
        Ok(g) => g,
        Err(reply) => return respond(&state, label, reply),
    };
    let bytes = match read_limited(&state, &headers, body).await {
        Ok(b) => b,
        Err(reply) => return respond(&state, label, reply),
    };
    let worker = Arc::clone(&state);
    let reply = tokio::task::spawn_blocking(move || {
        ingest::process(&worker, endpoint, credentials, gzip, &bytes)
    })
    .await
    .unwrap_or_else(|e| Reply::error(500, "internal", &format!("request task failed: {e}")));
    respond(&state, label, reply)
}

/// The project of a read or delete request (basic auth only: keys do not belong in URLs).
fn reader_project(state: &AppState, headers: &HeaderMap) -> Result<Arc<Project>, Reply> {
    match basic_auth_key(headers) {
        Credentials::Key(k) => state
            .project(&k)
            .cloned()
            .ok_or_else(|| Reply::unauthorized("unknown write key")),
        Credentials::Malformed => Err(Reply::unauthorized(
            "the Authorization header is not valid basic auth",
        )),
        Credentials::None => Err(Reply::unauthorized(
            "no write key: send it as the HTTP basic-auth user",
        )),
    }
}

/// The selector of `?user_id=|email=|anonymous_id=|key=` (exactly one).
fn selector(query: &HashMap<String, String>) -> Result<Selector, Reply> {
    let mut found = Vec::new();
    for name in ["user_id", "email", "anonymous_id", "key"] {
        if let Some(v) = query.get(name) {
            found.push((name, v.as_str()));
        }
    }
    match found.as_slice() {
        [(name, value)] => match *name {
            "user_id" => Ok(Selector::UserId(value.to_string())),
            "email" => Ok(Selector::Email(value.to_string())),
            "anonymous_id" => Ok(Selector::AnonymousId(value.to_string())),
            _ => value
                .parse()
                .map(Selector::Key)
                .map_err(|_| Reply::error(400, "invalid_query", "key must be an unsigned integer")),
        },
        _ => Err(Reply::error(
            400,
            "invalid_query",
            "give exactly one of user_id, email, anonymous_id or key",
        )),
    }
}

fn not_found(selector: &Selector) -> Reply {
    let what = match selector {
        Selector::UserId(v) => format!("user id {v:?}"),
        Selector::Email(v) => format!("email {v:?}"),
        Selector::AnonymousId(v) => format!("anonymous id {v:?}"),
        Selector::Key(k) => format!("key {k}"),
    };
    Reply::error(404, "not_found", &format!("no profile with {what}"))
}

async fn get_profile(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let reply = match profile_reply(&state, &headers, &query).await {
        Ok(r) | Err(r) => r,
    };
    respond(&state, "profiles_get", reply)
}

async fn profile_reply(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Reply, Reply> {
    let project = reader_project(state, headers)?;
    let selector = selector(query)?;
    let reply = tokio::task::spawn_blocking(move || match project.db.get(&selector) {
        Ok(Some(profile)) => Reply::json(&profile),
        Ok(None) => not_found(&selector),
        Err(e) if is_store_failure(&e) => Reply::unavailable(&project, &e),
        Err(e) => Reply::error(400, e.kind(), &e.to_string()),
    })
    .await
    .unwrap_or_else(|e| Reply::error(500, "internal", &format!("request task failed: {e}")));
    Ok(reply)
}

#[derive(Serialize)]
struct Deleted {
    deleted: u64,
    suppressed: bool,
}

async fn delete_profile(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let reply = match delete_reply(&state, &headers, &query).await {
        Ok(r) | Err(r) => r,
    };
    respond(&state, "profiles_delete", reply)
}

async fn delete_reply(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Reply, Reply> {
    let project = reader_project(state, headers)?;
    let mut query = query.clone();
    let suppress = match query.remove("suppress").as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") | Some("") => true,
        Some(other) => {
            return Err(Reply::error(
                400,
                "invalid_query",
                &format!("suppress must be true or false, not {other:?}"),
            ));
        }
    };
    let selector = selector(&query)?;
    let reply = tokio::task::spawn_blocking(move || {
        let result = project
            .db
            .delete(&selector, suppress)
            .and_then(|deleted| project.db.sync().map(|()| deleted));
        match result {
            Ok(Some(key)) => Reply::json(&Deleted {
                deleted: key,
                suppressed: suppress,
            }),
            Ok(None) => not_found(&selector),
            Err(e) if is_store_failure(&e) => Reply::unavailable(&project, &e),
            Err(e) => Reply::error(400, e.kind(), &e.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| Reply::error(500, "internal", &format!("request task failed: {e}")));
    Ok(reply)
}

/// `200 ok`, or `503` naming the projects whose store failed (they need a restart).
async fn health(State(state): State<Shared>) -> Response {
    let failed: Vec<&str> = state
        .projects
        .iter()
        .filter(|p| p.failed.load(std::sync::atomic::Ordering::Relaxed))
        .map(|p| p.name.as_str())
        .collect();
    if failed.is_empty() {
        state.http.record("health", 200);
        (StatusCode::OK, "ok").into_response()
    } else {
        state.http.record("health", 503);
        let text = format!(
            "unavailable: the store of {} failed; restart the server to recover it",
            failed.join(", ")
        );
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

async fn render_metrics(State(state): State<Shared>) -> Response {
    let worker = Arc::clone(&state);
    let text = tokio::task::spawn_blocking(move || {
        let figures: Vec<_> = worker
            .projects
            .iter()
            .map(|p| {
                let s = p.db.stats();
                StoreFigures {
                    disk_bytes: s.storage.disk_bytes,
                    live_bytes: s.live_bytes,
                    profiles: s.profiles,
                    companies: s.companies,
                    syncs: s.storage.syncs,
                }
            })
            .collect();
        let rows: Vec<_> = worker
            .projects
            .iter()
            .zip(figures)
            .map(|(p, f)| (p.name.as_str(), &p.metrics, Some(f)))
            .collect();
        metrics::render(&worker.http, &rows)
    })
    .await;
    match text {
        Ok(text) => {
            state.http.record("metrics", 200);
            let mut response = (StatusCode::OK, text).into_response();
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Err(e) => respond(
            &state,
            "metrics",
            Reply::error(500, "internal", &format!("metrics task failed: {e}")),
        ),
    }
}
