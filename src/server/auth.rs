//! Who may do what. Write keys are public (analytics.js embeds them in every page): they can
//! only ingest. Reading, deleting, lifting suppressions, `/metrics` and the detailed `/health`
//! need a secret admin token sent as `Authorization: Bearer TOKEN`, either of one project or
//! server-wide. Failed attempts are counted per source address; past the limit the address
//! gets `429` until its window ends (docs/security.md).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use parking_lot::Mutex;

use super::ingest::Reply;
use super::keys::{AdminScope, KeySet};
use super::{AppState, Project, ServerError};

/// What the `Authorization` header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// No `Authorization` header (or an empty basic-auth user): a body key may still
    /// authenticate an ingestion request.
    None,
    /// The basic-auth user: a write key.
    Key(String),
    /// A bearer token: an admin token.
    Bearer(String),
    /// A header that cannot be decoded, or another scheme.
    Malformed,
}

/// The credentials of a request's `Authorization` header.
pub(crate) fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Credentials::None;
    };
    let Ok(value) = value.to_str() else {
        return Credentials::Malformed;
    };
    let value = value.trim();
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Credentials::Malformed;
    };
    if scheme.eq_ignore_ascii_case("bearer") {
        let token = rest.trim();
        return if token.is_empty() {
            Credentials::Malformed
        } else {
            Credentials::Bearer(token.to_string())
        };
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Malformed;
    }
    let Some(decoded) = base64_decode(rest.trim()) else {
        return Credentials::Malformed;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Credentials::Malformed;
    };
    let user = match decoded.split_once(':') {
        Some((user, _password)) => user,
        None => decoded.as_str(),
    };
    if user.is_empty() {
        Credentials::None
    } else {
        Credentials::Key(user.to_string())
    }
}

/// What an admin token reaches.
#[derive(Clone)]
pub(crate) enum Admin {
    Project(Arc<Project>),
    Server,
}

/// The credentials in force (replaced whole when the keys file is reloaded).
pub(crate) struct Creds {
    write: HashMap<String, Arc<Project>>,
    admin: HashMap<String, Admin>,
}

impl Creds {
    /// Resolve a key set against the open projects; every project named must be open.
    pub(crate) fn build(set: &KeySet, projects: &[Arc<Project>]) -> Result<Creds, ServerError> {
        let find =
            |name: &str| {
                projects.iter().find(|p| p.name == name).cloned().ok_or_else(|| {
                ServerError::Config(format!(
                    "project {name:?} has no open store (projects are opened at start: restart \
                     the server to add one)"
                ))
            })
            };
        let mut write = HashMap::new();
        for (key, name) in &set.write_keys {
            write.insert(key.clone(), find(name)?);
        }
        let mut admin = HashMap::new();
        for (token, scope) in &set.admin_tokens {
            let a = match scope {
                AdminScope::Server => Admin::Server,
                AdminScope::Project(name) => Admin::Project(find(name)?),
            };
            admin.insert(token.clone(), a);
        }
        Ok(Creds { write, admin })
    }

    /// The project of a write key.
    pub(crate) fn write_project(&self, key: &str) -> Option<Arc<Project>> {
        self.write.get(key).cloned()
    }
}

/// Failed authentications per source address, in fixed windows.
pub(crate) struct FailedAuth {
    per_window: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Addresses tracked at most; past it, expired windows are dropped, then everything.
const MAX_TRACKED: usize = 65_536;

impl FailedAuth {
    pub(crate) fn new(per_window: u32, window: Duration) -> Self {
        FailedAuth {
            per_window,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` used up its failures for the current window.
    pub(crate) fn blocked(&self, ip: IpAddr) -> bool {
        let seen = self.seen.lock();
        matches!(seen.get(&ip), Some((start, n)) if start.elapsed() < self.window && *n >= self.per_window)
    }

    /// Count one failure of `ip`.
    pub(crate) fn failed(&self, ip: IpAddr) {
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_TRACKED {
            let window = self.window;
            seen.retain(|_, (start, _)| start.elapsed() < window);
            if seen.len() >= MAX_TRACKED {
                seen.clear();
            }
        }
        let now = Instant::now();
        let entry = seen.entry(ip).or_insert((now, 0));
        if entry.0.elapsed() >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// `429` for an address over its failed-authentication limit.
pub(crate) fn too_many_failures() -> Reply {
    Reply::error(
        429,
        "too_many_failures",
        "too many failed authentications from this address; wait a minute",
    )
}

fn refuse(state: &AppState, peer: IpAddr, message: &str) -> Reply {
    state.failed_auth.failed(peer);
    Reply::unauthorized(message)
}

/// Authenticate a **write key found in a request body** (Segment's `writeKey`, PostHog's
/// `api_key`/`token`, Mixpanel's `$token`/`token`, ...) and return the project it writes to.
///
/// Every ingestion dialect calls this once it has the key out of the body; it is the only
/// place that maps a body key to a project. A write key can only ingest: never use the result
/// to authorise a read or a delete. `peer` is the request's source address: an unknown key is
/// counted against it, and an address over its failure limit gets `429` whatever the key.
/// The `Err` is the whole-request answer to send (`401` or `429`, Segment's error shape).
/// Requests without an `Authorization` header read their body from the server's small
/// unauthenticated byte budget before calling this (see `http::read_body_budgeted`).
pub(crate) fn project_for_write_key(
    state: &AppState,
    peer: IpAddr,
    key: &str,
) -> Result<Arc<Project>, Reply> {
    if state.failed_auth.blocked(peer) {
        return Err(too_many_failures());
    }
    match state.creds.read().write.get(key) {
        Some(p) => Ok(Arc::clone(p)),
        None => Err(refuse(state, peer, "unknown write key")),
    }
}

/// The project of an ingestion request's `Authorization` header, checked before any body
/// byte is read: `Ok(None)` when there is no header (the body's key decides later).
pub(crate) fn header_write_project(
    state: &AppState,
    peer: IpAddr,
    credentials: &Credentials,
) -> Result<Option<Arc<Project>>, Reply> {
    if state.failed_auth.blocked(peer) {
        return Err(too_many_failures());
    }
    match credentials {
        Credentials::None => Ok(None),
        Credentials::Key(k) => project_for_write_key(state, peer, k).map(Some),
        Credentials::Bearer(_) => Err(refuse(
            state,
            peer,
            "ingestion takes a write key (basic auth), not a bearer token",
        )),
        Credentials::Malformed => Err(refuse(
            state,
            peer,
            "the Authorization header is not valid basic auth",
        )),
    }
}

/// The project an admin request acts on: its token's project, or with a server-wide token
/// `?project=` (optional when the server has one project). `project` is that parameter.
pub(crate) fn admin_project(
    state: &AppState,
    peer: IpAddr,
    headers: &HeaderMap,
    project: Option<&str>,
) -> Result<Arc<Project>, Reply> {
    match admin(state, peer, headers)? {
        Admin::Project(p) => match project {
            Some(name) if name != p.name => Err(Reply::error(
                403,
                "forbidden",
                "this admin token belongs to another project",
            )),
            _ => Ok(p),
        },
        Admin::Server => match project {
            Some(name) => state
                .projects
                .iter()
                .find(|p| p.name == name)
                .cloned()
                .ok_or_else(|| Reply::error(404, "unknown_project", "no such project")),
            None if state.projects.len() == 1 => Ok(Arc::clone(&state.projects[0])),
            None => Err(Reply::error(
                400,
                "invalid_query",
                "a server-wide admin token needs ?project=NAME",
            )),
        },
    }
}

/// Check the request's admin token; `Admin::Server` only for a server-wide one.
pub(crate) fn admin(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> Result<Admin, Reply> {
    if state.failed_auth.blocked(peer) {
        return Err(too_many_failures());
    }
    match credentials(headers) {
        Credentials::Bearer(token) => match state.creds.read().admin.get(&token) {
            Some(a) => Ok(a.clone()),
            None => Err(refuse(state, peer, "unknown admin token")),
        },
        Credentials::Key(k) if state.creds.read().write.contains_key(&k) => Err(Reply::error(
            403,
            "forbidden",
            "write keys can only ingest: this needs an admin token (Authorization: Bearer ...)",
        )),
        Credentials::Key(_) | Credentials::Malformed => Err(refuse(
            state,
            peer,
            "this needs an admin token (Authorization: Bearer ...)",
        )),
        Credentials::None => Err(Reply::unauthorized(
            "this needs an admin token (Authorization: Bearer ...)",
        )),
    }
}

/// A server-wide admin token, or the refusal.
pub(crate) fn server_admin(
    state: &AppState,
    peer: IpAddr,
    headers: &HeaderMap,
) -> Result<(), Reply> {
    match admin(state, peer, headers)? {
        Admin::Server => Ok(()),
        Admin::Project(_) => Err(Reply::error(
            403,
            "forbidden",
            "this needs a server-wide admin token",
        )),
    }
}

/// Decode standard (or URL-safe) base64, padding optional. `None` on any other character.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("a2V5Og==").unwrap(), b"key:");
        assert_eq!(base64_decode("a2V5Og").unwrap(), b"key:");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn reads_the_user() {
        let mut h = HeaderMap::new();
        assert_eq!(credentials(&h), Credentials::None);
        h.insert(AUTHORIZATION, "Basic a2V5Og==".parse().unwrap());
        assert_eq!(credentials(&h), Credentials::Key("key".into()));
        h.insert(AUTHORIZATION, "basic a2V5".parse().unwrap());
        assert_eq!(credentials(&h), Credentials::Key("key".into()));
        h.insert(AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(credentials(&h), Credentials::Malformed);
        h.insert(AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(credentials(&h), Credentials::Bearer("xyz".into()));
        h.insert(AUTHORIZATION, "Digest xyz".parse().unwrap());
        assert_eq!(credentials(&h), Credentials::Malformed);
    }
}
