//! Routes and the async side of each request: authenticate from the headers, reserve the
//! body's bytes, read the body (bounded in size and time), hand the work to the blocking
//! pool, turn the reply into a response.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::{ConnectInfo, DefaultBodyLimit, RawQuery, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use super::AppState;
use super::admin;
use super::auth::{self, credentials};
use super::budget::Reserved;
use super::ingest::{self, Endpoint, Reply};
use super::metrics::{self, StoreFigures};
use super::{mixpanel, posthog};

pub(crate) type Shared = Arc<AppState>;
/// The source address of a request (set per connection by `conn`).
pub(crate) type Peer = ConnectInfo<SocketAddr>;

/// The route of an ingestion endpoint: the request's source address, headers and body to
/// [`ingest_request`]. Shared by Segment's paths and analytics.js's short ones (browser.rs).
pub(crate) fn ingest_route(endpoint: Endpoint) -> MethodRouter<Shared> {
    post(
        move |State(s): State<Shared>, ConnectInfo(peer): Peer, headers: HeaderMap, body: Body| {
            ingest_request(s, peer.ip(), endpoint, headers, body)
        },
    )
}

/// The server's routes.
pub(crate) fn router(state: Shared) -> Router {
    let single = |kind: &'static str| ingest_route(Endpoint::Single(kind));
    // What web pages call: answered to browsers of the allowed origins (CORS).
    let writes = Router::new()
        .route("/v1/batch", ingest_route(Endpoint::Batch))
        .route("/v1/identify", single("identify"))
        .route("/v1/group", single("group"))
        .route("/v1/alias", single("alias"))
        .route("/v1/track", single("track"))
        .route("/v1/page", single("page"))
        .route("/v1/screen", single("screen"))
        .merge(super::browser::write_routes())
        .merge(vendor_routes())
        .layer(super::browser::cors_layer(&state));
    // Reads, deletes and operations need an admin token and are never answered to browsers
    // of other origins (no CORS).
    Router::new()
        .merge(writes)
        .merge(super::browser::script_routes())
        .route(
            "/v1/profiles",
            get(admin::get_profile)
                .delete(admin::delete_profile)
                .head(admin::get_profile),
        )
        .route(
            "/v1/suppressions",
            get(admin::get_suppressions).delete(admin::lift_suppression),
        )
        .merge(admin::journal_routes())
        .route("/health", get(admin::health))
        .route("/metrics", get(admin_metrics))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The routes of the separate metrics address: `/metrics` without credentials.
pub(crate) fn metrics_router(state: Shared) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Shared>| async move { render_metrics(&s) }),
        )
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
                  ConnectInfo(peer): Peer,
                  RawQuery(q): RawQuery,
                  headers: HeaderMap,
                  body: Body| {
                vendor_request(s, peer.ip(), vendor, q, headers, body)
            },
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

/// A PostHog or Mixpanel request. Their key is in the body, so they are read before they are
/// authenticated: from the unauthenticated share of the in-flight byte budget, within the
/// body timeout, and refused at once (`429`) for an address over its failed-auth limit.
async fn vendor_request(
    state: Shared,
    peer: IpAddr,
    vendor: Vendor,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let label = vendor.label();
    if state.failed_auth.blocked(peer) {
        return respond(&state, label, auth::too_many_failures());
    }
    let gzip = match gzip_encoding(&headers) {
        Ok(g) => g,
        Err(reply) => return respond(&state, label, reply),
    };
    let limit = state.limits.max_batch_bytes;
    let (bytes, reserved) =
        match read_protected(&state, label, &headers, body, limit, gzip, false).await {
            Ok(b) => b,
            Err(response) => return response,
        };
    let origin = super::browser::origin_of(&headers);
    let worker = Arc::clone(&state);
    let reply = tokio::task::spawn_blocking(move || {
        let reply = match vendor {
            Vendor::PostHog => posthog::process(&worker, peer, origin.as_deref(), gzip, &bytes),
            Vendor::Mixpanel(kind) => mixpanel::process(
                &worker,
                peer,
                kind,
                origin.as_deref(),
                gzip,
                query.as_deref(),
                &bytes,
            ),
        };
        drop(reserved);
        reply
    })
    .await
    .unwrap_or_else(|e| ingest::internal("request task failed", &e));
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

pub(crate) fn respond(state: &AppState, endpoint: &'static str, reply: Reply) -> Response {
    state.http.record(endpoint, reply.status);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry = matches!(reply.status, 429 | 503);
    let mut response = (status, reply.body).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if retry {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// `503 server_busy`: the byte cap is reached.
fn busy() -> Reply {
    Reply::error(
        503,
        "server_busy",
        "too many request bytes in flight; retry shortly",
    )
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

/// Read a request's body under the server's protections (docs/security.md): a declared
/// length far over `limit` is refused at once; what the body may cost in memory (as sent, at
/// most `limit`, plus its decoded form for gzip) is reserved from the in-flight byte budget
/// first, from its unauthenticated share unless `authenticated`; the whole body must arrive
/// within the body timeout. The reservation is given back when the caller drops it. `Err` is
/// the answer to send, already recorded under `label`.
pub(crate) async fn read_protected(
    state: &AppState,
    label: &'static str,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    gzip: bool,
    authenticated: bool,
) -> Result<(Vec<u8>, Reserved), Response> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT.max(limit) as u64) {
        return Err(respond(state, label, ingest::too_large(limit, "as sent")));
    }
    let as_sent = declared.map_or(limit, |n| (n as usize).min(limit));
    let cost = as_sent
        + if gzip {
            state.limits.max_batch_bytes
        } else {
            0
        };
    let Some(reserved) = state.budget.try_reserve(cost, authenticated) else {
        return Err(respond(state, label, busy()));
    };
    let timeout = state.protection.body_timeout;
    match tokio::time::timeout(timeout, read_body(body, limit)).await {
        Ok(Ok(bytes)) => Ok((bytes, reserved)),
        Ok(Err(reply)) => Err(respond(state, label, reply)),
        Err(_) => {
            let reply = Reply::error(
                408,
                "body_timeout",
                &format!("the body did not arrive within {} s", timeout.as_secs_f64()),
            );
            let mut response = respond(state, label, reply);
            response
                .headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

pub(crate) async fn ingest_request(
    state: Shared,
    peer: IpAddr,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let label = endpoint.label();
    // Authentication from the headers comes before any body byte is read.
    let project = match auth::header_write_project(&state, peer, &credentials(&headers)) {
        Ok(p) => p,
        Err(reply) => return respond(&state, label, reply),
    };
    let gzip = match gzip_encoding(&headers) {
        Ok(g) => g,
        Err(reply) => return respond(&state, label, reply),
    };
    let limit = state.limits.max_batch_bytes;
    let authenticated = project.is_some();
    let (bytes, reserved) =
        match read_protected(&state, label, &headers, body, limit, gzip, authenticated).await {
            Ok(b) => b,
            Err(response) => return response,
        };
    let origin = super::browser::origin_of(&headers);
    let worker = Arc::clone(&state);
    let reply = tokio::task::spawn_blocking(move || {
        let reply = ingest::process(
            &worker,
            peer,
            endpoint,
            project,
            origin.as_deref(),
            gzip,
            &bytes,
        );
        drop(reserved);
        reply
    })
    .await
    .unwrap_or_else(|e| ingest::internal("request task failed", &e));
    respond(&state, label, reply)
}

/// `/metrics` on the main address: a server-wide admin token (it names every project).
async fn admin_metrics(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
) -> Response {
    match auth::server_admin(&state, peer.ip(), &headers) {
        Ok(()) => render_metrics(&state),
        Err(reply) => respond(&state, "metrics", reply),
    }
}

/// Render `/metrics` from counters kept as writes happen: the cost does not grow with the
/// number of profiles (no walk of the index, no blocking task).
fn render_metrics(state: &AppState) -> Response {
    let rows: Vec<_> = state
        .projects
        .iter()
        .map(|p| {
            let c = p.db.counts();
            let figures = StoreFigures {
                disk_bytes: c.disk_bytes,
                profiles: c.profiles,
                companies: c.companies,
                syncs: c.syncs,
                quarantined: c.quarantined,
                guard_skipped_calls: c.guard_skipped_calls,
            };
            (p.name.as_str(), &p.metrics, Some(figures))
        })
        .collect();
    let text = metrics::render(&state.http, &rows);
    state.http.record("metrics", 200);
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
