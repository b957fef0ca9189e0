//! What needs an admin token: reading and deleting profiles (with erasure on demand),
//! listing and lifting suppressions; plus `/health` (per project, and a summary that names
//! projects only to an admin) and the task that erases deleted profiles' bytes in time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::auth;
use super::http::{Peer, Shared, respond};
use super::ingest::{Reply, internal};
use super::{AppState, Project};
use crate::Selector;

/// Query parameters, each at most once (`?user_id=a&user_id=b` is refused, not "the last").
type Params = HashMap<String, String>;

fn params(pairs: Vec<(String, String)>) -> Result<Params, Reply> {
    let mut out = HashMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        if out.contains_key(&name) {
            return Err(Reply::error(
                400,
                "invalid_query",
                &format!("parameter {name:?} is given more than once"),
            ));
        }
        out.insert(name, value);
    }
    Ok(out)
}

/// The selector of `?user_id=|email=|anonymous_id=|key=`: exactly one, no control
/// characters. `None` when none is given and `optional`.
fn selector(query: &Params, optional: bool) -> Result<Option<Selector>, Reply> {
    let found: Vec<(&str, &str)> = ["user_id", "email", "anonymous_id", "key"]
        .into_iter()
        .filter_map(|n| query.get(n).map(|v| (n, v.as_str())))
        .collect();
    let (name, value) = match found.as_slice() {
        [one] => *one,
        [] if optional => return Ok(None),
        _ => {
            return Err(Reply::error(
                400,
                "invalid_query",
                "give exactly one of user_id, email, anonymous_id or key",
            ));
        }
    };
    if value.chars().any(char::is_control) {
        return Err(Reply::error(
            400,
            "invalid_query",
            &format!("{name} contains a control character (NUL, newline, ...)"),
        ));
    }
    Ok(Some(match name {
        "user_id" => Selector::UserId(value.to_string()),
        "email" => Selector::Email(value.to_string()),
        "anonymous_id" => Selector::AnonymousId(value.to_string()),
        _ => value
            .parse()
            .map(Selector::Key)
            .map_err(|_| Reply::error(400, "invalid_query", "key must be an unsigned integer"))?,
    }))
}

/// The selector, required.
fn required(query: &Params) -> Result<Selector, Reply> {
    selector(query, false)?.ok_or_else(|| {
        Reply::error(
            400,
            "invalid_query",
            "give exactly one of user_id, email, anonymous_id or key",
        )
    })
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

/// The project of an admin request, and its parameters.
fn admin_request(
    state: &AppState,
    peer: IpAddr,
    headers: &HeaderMap,
    query: Vec<(String, String)>,
) -> Result<(Arc<Project>, Params), Reply> {
    // Credentials first: an unauthenticated caller learns nothing of the query's validity.
    let project_param = query
        .iter()
        .find(|(n, _)| n == "project")
        .map(|(_, v)| v.clone());
    let project = auth::admin_project(state, peer, headers, project_param.as_deref())?;
    let mut query = params(query)?;
    query.remove("project");
    Ok((project, query))
}

/// Run store work on the blocking pool.
async fn blocking(f: impl FnOnce() -> Reply + Send + 'static) -> Reply {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| internal("request task failed", &e))
}

fn store_error(project: &Project, e: &crate::Error) -> Reply {
    Reply::store_error(project, e)
}

/// `GET|HEAD /v1/profiles?user_id=...`.
pub(crate) async fn get_profile(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let reply = async {
        let (project, query) = admin_request(&state, peer.ip(), &headers, query)?;
        let selector = required(&query)?;
        Ok::<_, Reply>(
            blocking(move || match project.db.get(&selector) {
                Ok(Some(profile)) => Reply::json(&profile),
                Ok(None) => not_found(&selector),
                Err(e) => store_error(&project, &e),
            })
            .await,
        )
    }
    .await;
    let (Ok(r) | Err(r)) = reply;
    respond(&state, "profiles_get", r)
}

#[derive(Serialize)]
struct Deleted {
    deleted: u64,
    suppressed: bool,
    /// The store's files no longer hold the profile's bytes.
    erased: bool,
    /// When not erased now: the bytes leave the disk within this many seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    erased_within_seconds: Option<u64>,
}

fn flag(query: &mut Params, name: &str) -> Result<bool, Reply> {
    match query.remove(name).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") | Some("now") => Ok(true),
        Some(other) => Err(Reply::error(
            400,
            "invalid_query",
            &format!("{name} must be true or false, not {other:?}"),
        )),
    }
}

/// `DELETE /v1/profiles?user_id=...[&suppress=true][&erase=now]`.
pub(crate) async fn delete_profile(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let erase_within = state.protection.erase_within;
    let reply = async {
        let (project, mut query) = admin_request(&state, peer.ip(), &headers, query)?;
        let suppress = flag(&mut query, "suppress")?;
        let erase = flag(&mut query, "erase")?;
        let selector = required(&query)?;
        Ok::<_, Reply>(
            blocking(move || {
                let started = Instant::now();
                let result = if erase {
                    project.db.delete_and_erase(&selector, suppress)
                } else {
                    project
                        .db
                        .delete(&selector, suppress)
                        .and_then(|d| project.db.sync().map(|()| d))
                };
                match result {
                    Ok(Some(key)) => {
                        let mut since = project.unerased_since.lock();
                        if erase {
                            // That compaction erased every earlier deletion too.
                            if since.is_some_and(|t| t <= started) {
                                *since = None;
                            }
                        } else {
                            since.get_or_insert(started);
                        }
                        Reply::json(&Deleted {
                            deleted: key,
                            suppressed: suppress,
                            erased: erase,
                            erased_within_seconds: (!erase).then_some(erase_within.as_secs()),
                        })
                    }
                    Ok(None) => not_found(&selector),
                    Err(e) => store_error(&project, &e),
                }
            })
            .await,
        )
    }
    .await;
    let (Ok(r) | Err(r)) = reply;
    respond(&state, "profiles_delete", r)
}

#[derive(Serialize)]
struct SuppressionList {
    /// Hashes (hex) of suppressed identifiers: only hashes are stored.
    suppressions: Vec<String>,
    /// Give as `after=` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Most hashes in one page of `GET /v1/suppressions`.
const PAGE: usize = 1000;

/// `GET /v1/suppressions?email=...` (is it suppressed?) or `GET /v1/suppressions[?after=HEX]`
/// (list).
pub(crate) async fn get_suppressions(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let reply = (|| {
        let (project, mut query) = admin_request(&state, peer.ip(), &headers, query)?;
        let after = match query.remove("after") {
            None => None,
            Some(h) => Some(u128::from_str_radix(&h, 16).map_err(|_| {
                Reply::error(400, "invalid_query", "after must be a hash from a listing")
            })?),
        };
        match selector(&query, true)? {
            Some(Selector::Key(_)) => Err(Reply::error(
                400,
                "invalid_query",
                "suppressions are of user_id, email or anonymous_id",
            )),
            Some(s) => Ok(Reply::json(
                &serde_json::json!({"suppressed": project.db.is_suppressed(&s)}),
            )),
            None => {
                let page = project.db.suppressions(after, PAGE);
                let next = (page.len() == PAGE).then(|| format!("{:032x}", page[PAGE - 1]));
                Ok(Reply::json(&SuppressionList {
                    suppressions: page.iter().map(|h| format!("{h:032x}")).collect(),
                    next,
                }))
            }
        }
    })();
    let (Ok(r) | Err(r)) = reply;
    respond(&state, "suppressions_get", r)
}

/// `DELETE /v1/suppressions?email=...`: lift a suppression (durable when answered).
pub(crate) async fn lift_suppression(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let reply = async {
        let (project, query) = admin_request(&state, peer.ip(), &headers, query)?;
        let selector = match required(&query)? {
            Selector::Key(_) => {
                return Err(Reply::error(
                    400,
                    "invalid_query",
                    "suppressions are of user_id, email or anonymous_id",
                ));
            }
            s => s,
        };
        Ok(
            blocking(move || match project.db.lift_suppression(&selector) {
                Ok(true) => Reply::json(&serde_json::json!({"lifted": true})),
                Ok(false) => Reply::error(404, "not_found", "that identifier is not suppressed"),
                Err(e) => store_error(&project, &e),
            })
            .await,
        )
    }
    .await;
    let (Ok(r) | Err(r)) = reply;
    respond(&state, "suppressions_delete", r)
}

/// `/health`: `?project=P` answers for one project (`200 ok` / `503 unavailable` / `404`).
/// Without it, a summary: `200 ok`, `200 degraded: N of M ...` while some project still
/// works, `503` when none does. Which projects failed is said only to a server-wide admin.
pub(crate) async fn health(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let failed = |p: &Project| p.failed.load(Relaxed);
    let query = match params(query) {
        Ok(q) => q,
        Err(r) => return respond(&state, "health", r),
    };
    if let Some(name) = query.get("project") {
        let Some(p) = state.projects.iter().find(|p| &p.name == name) else {
            return respond(
                &state,
                "health",
                Reply::error(404, "unknown_project", "no such project"),
            );
        };
        return text(
            &state,
            failed(p),
            if failed(p) { "unavailable" } else { "ok" }.into(),
        );
    }
    let down: Vec<&str> = state
        .projects
        .iter()
        .filter(|p| failed(p))
        .map(|p| p.name.as_str())
        .collect();
    if down.is_empty() {
        return text(&state, false, "ok".into());
    }
    let total = state.projects.len();
    let mut message = format!(
        "degraded: {} of {total} projects unavailable (restart the server to recover them)",
        down.len()
    );
    if headers.contains_key(axum::http::header::AUTHORIZATION)
        && auth::server_admin(&state, peer.ip(), &headers).is_ok()
    {
        message.push_str(&format!(": {}", down.join(", ")));
    }
    text(&state, down.len() == total, message)
}

fn text(state: &AppState, unavailable: bool, body: String) -> Response {
    let status = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    state.http.record("health", status.as_u16());
    (status, body).into_response()
}

/// Until `stop`: compact every project whose oldest unerased deletion is older than
/// `erase_within`, so that deleted profiles' bytes leave the disk in time even when the
/// store would never reach its compaction ratio.
pub(crate) async fn erase_overdue(
    state: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let bound = state.protection.erase_within;
    // Check often enough to keep the bound (a tenth of it), at most every minute.
    let tick = (bound / 10).clamp(Duration::from_millis(50), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for project in &state.projects {
            let due = project
                .unerased_since
                .lock()
                .is_some_and(|t| t.elapsed() + tick >= bound);
            if !due {
                continue;
            }
            let p = Arc::clone(project);
            let _ = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                match p.db.compact() {
                    Ok(_) => {
                        let mut since = p.unerased_since.lock();
                        if since.is_some_and(|t| t <= started) {
                            *since = None;
                        }
                    }
                    Err(e) => eprintln!(
                        "profiledb serve: project {:?}: erasing deleted profiles failed: {e}",
                        p.name
                    ),
                }
            })
            .await;
        }
    }
}

// Issue 16, the identity journal (docs/journal.md): history, the profile as it was, explain.
// All behind the admin token, like the other profile reads.

/// The journal's admin routes: `GET /v1/profiles/history?SELECTOR`,
/// `GET /v1/profiles/at?SELECTOR&at=RFC3339`, `POST /v1/explain` (body: one message).
pub(crate) fn journal_routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/v1/profiles/history", axum::routing::get(get_history))
        .route("/v1/profiles/at", axum::routing::get(get_profile_at))
        .route("/v1/explain", axum::routing::post(explain))
        .route("/v1/profiles/unmerge", axum::routing::post(unmerge))
        .route(
            "/v1/quarantine",
            axum::routing::get(get_quarantined).delete(release_quarantined),
        )
}

/// `GET /v1/quarantine`: the identifiers the guard quarantined.
async fn get_quarantined(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let reply = match admin_request(&state, peer.ip(), &headers, query) {
        Ok((project, _)) => Reply::json(&serde_json::json!({
            "quarantined": project.db.quarantined(),
        })),
        Err(r) => r,
    };
    respond(&state, "quarantine_get", reply)
}

/// `DELETE /v1/quarantine?email=...|anonymous_id=...`: release one.
async fn release_quarantined(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let reply = async {
        let (project, query) = admin_request(&state, peer.ip(), &headers, query)?;
        let (kind, value) = match (query.get("email"), query.get("anonymous_id")) {
            (Some(e), None) => ("email", e.clone()),
            (None, Some(a)) => ("anonymous_id", a.clone()),
            _ => {
                return Err(Reply::error(
                    400,
                    "invalid_query",
                    "give exactly one of email or anonymous_id",
                ));
            }
        };
        Ok::<_, Reply>(
            blocking(move || match project.db.release_quarantined(kind, &value) {
                Ok(true) => {
                    Reply::json(&serde_json::json!({ "released": format!("{kind}:{value}") }))
                }
                Ok(false) => Reply::error(404, "not_found", "that identifier is not quarantined"),
                Err(e) => store_error(&project, &e),
            })
            .await,
        )
    }
    .await;
    let (Ok(r) | Err(r)) = reply;
    respond(&state, "quarantine_release", r)
}

/// `POST /v1/profiles/unmerge?user_id=...&merged_key=K` (survivor selector as for reads):
/// split a merge back (docs/journal.md "Unmerge"). 200 with `{survivor, restored}`; a missing
/// survivor 404, a key not merged into it 409 `not_merged`, a merge outside the window 410
/// `outside_window`, history off 409 `history_off`.
async fn unmerge(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let reply = async {
        let (project, mut query) = admin_request(&state, peer.ip(), &headers, query)?;
        let key = query
            .remove("merged_key")
            .ok_or_else(|| Reply::error(400, "invalid_query", "give merged_key=KEY"))?;
        let key: u64 = key.parse().map_err(|_| {
            Reply::error(
                400,
                "invalid_query",
                "merged_key must be an unsigned integer",
            )
        })?;
        let selector = required(&query)?;
        Ok::<_, Reply>(
            blocking(move || match project.db.unmerge(&selector, key) {
                Ok(out) => Reply::json(&out),
                Err(crate::Error::Unmerge(e)) => {
                    use crate::UnmergeError as U;
                    let (status, code) = match e {
                        U::NoSurvivor => (404, "not_found"),
                        U::OutsideWindow { .. } => (410, "outside_window"),
                        U::HistoryOff => (409, "history_off"),
                        _ => (409, "not_merged"),
                    };
                    Reply::error(status, code, &e.to_string())
                }
                Err(e) => store_error(&project, &e),
            })
            .await,
        )
    }
    .await;
    let (Ok(r) | Err(r)) = reply;
    respond(&state, "profiles_unmerge", r)
}

/// `GET /v1/profiles/history?user_id=...`.
async fn get_history(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let reply = async {
        let (project, query) = admin_request(&state, peer.ip(), &headers, query)?;
        let selector = required(&query)?;
        Ok::<_, Reply>(
            blocking(move || match project.db.history(&selector) {
                Ok(Some(history)) => Reply::json(&history),
                Ok(None) => not_found(&selector),
                Err(e) => store_error(&project, &e),
            })
            .await,
        )
    }
    .await;
    let (Ok(r) | Err(r)) = reply;
    respond(&state, "profiles_history", r)
}

/// `GET /v1/profiles/at?user_id=...&at=2026-11-30T09:00:00Z`.
async fn get_profile_at(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let reply = async {
        let (project, mut query) = admin_request(&state, peer.ip(), &headers, query)?;
        let at = query
            .remove("at")
            .ok_or_else(|| Reply::error(400, "invalid_query", "give at=TIMESTAMP (RFC 3339)"))?;
        let at = crate::Timestamp::parse(&at).ok_or_else(|| {
            Reply::error(
                400,
                "invalid_query",
                "at must be an RFC 3339 date-time with a zone",
            )
        })?;
        let selector = required(&query)?;
        Ok::<_, Reply>(
            blocking(move || match project.db.get_at(&selector, at) {
                Ok(Some(profile)) => Reply::json(&profile),
                Ok(None) => not_found(&selector),
                Err(e) => store_error(&project, &e),
            })
            .await,
        )
    }
    .await;
    let (Ok(r) | Err(r)) = reply;
    respond(&state, "profiles_at", r)
}

/// `POST /v1/explain?project=...` with one message as the body: what it would do.
async fn explain(
    State(state): State<Shared>,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
    body: axum::body::Body,
) -> Response {
    let reply = async {
        let (project, _) = admin_request(&state, peer.ip(), &headers, query)?;
        // One message: bounded by the store's call limit (and a little for whitespace).
        let limit = project.db.options().max_call_bytes + 1024;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            Reply::error(
                400,
                "payload_too_large",
                &format!("explain takes one message of at most {limit} bytes"),
            )
        })?;
        Ok::<_, Reply>(
            blocking(move || match project.db.explain_json(bytes.trim_ascii()) {
                Ok(ex) => Reply::json(&ex),
                Err(e) => store_error(&project, &e),
            })
            .await,
        )
    }
    .await;
    let (Ok(r) | Err(r)) = reply;
    respond(&state, "explain", r)
}
