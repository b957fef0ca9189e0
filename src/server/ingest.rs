//! The ingestion endpoints' work, done on the blocking pool: decode, authenticate, check
//! limits, apply each message, sync once, answer with a result per message.

use std::io::Read as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::auth;
use super::commit::{Call, Done};
use super::metrics::{reason_index, type_index};
use super::{AppState, Project};
use crate::profile::parse::{IngestRefusal, TypeSeen, parse_ingested, parse_ingested_value};
use crate::{Error, Moved, Status};

/// Which ingestion endpoint a request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v1/batch`: `{"batch": [...], "context"?, "writeKey"?}`.
    Batch,
    /// `POST /v1/identify`, `/v1/group`, ...: one message whose `type` is the path's.
    Single(&'static str),
}

impl Endpoint {
    /// The name used in metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Batch => "batch",
            Endpoint::Single(t) => t,
        }
    }
}

/// An answer: status code and JSON body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

impl Reply {
    /// `{"code", "message"}` with a status, as Segment's clients expect.
    pub(crate) fn error(status: u16, code: &str, message: &str) -> Reply {
        let body = serde_json::to_vec(&ErrorBody { code, message }).unwrap_or_default();
        Reply { status, body }
    }

    /// `(code, message)` of an error made by [`Reply::error`].
    pub(crate) fn error_parts(&self) -> Option<(String, String)> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        Some((
            v.get("code")?.as_str()?.to_string(),
            v.get("message")?.as_str()?.to_string(),
        ))
    }

    pub(crate) fn json<T: Serialize>(value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply { status: 200, body },
            Err(e) => Reply::error(500, "internal", &format!("cannot encode the answer: {e}")),
        }
    }

    pub(crate) fn unauthorized(message: &str) -> Reply {
        Reply::error(401, "unauthorized", message)
    }

    /// `503`: the store failed. The details (file paths, OS errors) go to the server's log,
    /// never to the client.
    pub(crate) fn unavailable(project: &Project, e: &Error) -> Reply {
        project.metrics.unavailable.fetch_add(1, Relaxed);
        project.failed.store(true, Relaxed);
        eprintln!(
            "profiledb serve: project {:?}: store failure: {e}",
            project.name
        );
        Reply::error(
            503,
            "store_unavailable",
            "the store failed; nothing of this request is acknowledged, retry later",
        )
    }

    /// The answer to a store error: `503` for a failure of the store, `400` for a refusal.
    pub(crate) fn store_error(project: &Project, e: &Error) -> Reply {
        if e.is_refusal() {
            Reply::error(400, e.kind(), &e.to_string())
        } else {
            Reply::unavailable(project, e)
        }
    }
}

/// `500` for a bug on the server's side (logged, not described to the client).
pub(crate) fn internal(what: &str, e: &dyn std::fmt::Display) -> Reply {
    eprintln!("profiledb serve: internal error: {what}: {e}");
    Reply::error(500, "internal", "internal error; see the server's log")
}

/// One message's result.
#[derive(Serialize)]
struct MessageResult {
    index: usize,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Status>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    merged: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    moved: Vec<Moved>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ignored: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

impl MessageResult {
    /// A result with only a status and a key (deleted, not found, duplicate, produced).
    fn plain(index: usize, status: &'static str, key: Option<u64>) -> Self {
        MessageResult {
            index,
            status,
            key,
            outcome: None,
            merged: Vec::new(),
            moved: Vec::new(),
            ignored: Vec::new(),
            reason: None,
            error: None,
        }
    }

    /// Accepted and produced to the topic of `serve --produce-to` (no key: no store wrote it).
    #[cfg(feature = "kafka")]
    fn produced(index: usize) -> Self {
        Self::plain(index, "accepted", None)
    }

    fn refused(index: usize, error: &'static str, reason: String) -> Self {
        MessageResult {
            reason: Some(reason),
            error: Some(error),
            ..Self::plain(index, "refused", None)
        }
    }
}

/// The answer of a request's messages: counts and one result per message.
#[derive(Serialize)]
pub(crate) struct BatchAnswer {
    success: bool,
    pub(crate) accepted: usize,
    pub(crate) duplicates: usize,
    pub(crate) refused: usize,
    results: Vec<MessageResult>,
}

impl BatchAnswer {
    /// The first refused message's index and reason.
    pub(crate) fn first_refusal(&self) -> Option<(usize, &str)> {
        self.results
            .iter()
            .find(|r| r.status == "refused")
            .map(|r| (r.index, r.reason.as_deref().unwrap_or("refused")))
    }
}

/// Decode a gzip body, reading at most `limit` bytes of output.
pub(crate) fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, Reply> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    if let Err(e) = decoder.read_to_end(&mut out) {
        return Err(Reply::error(
            400,
            "invalid_gzip",
            &format!("the body is not valid gzip: {e}"),
        ));
    }
    if out.len() > limit {
        return Err(too_large(limit, "after gzip decoding"));
    }
    Ok(out)
}

pub(crate) fn too_large(limit: usize, what: &str) -> Reply {
    Reply::error(
        400,
        "payload_too_large",
        &format!("the request body is larger than {limit} bytes {what} (batch limit)"),
    )
}

/// The top level of a `/v1/batch` body; each message stays raw until it is looked at, so its
/// size as sent is known without re-encoding it.
///
/// The batch-level `context` is not read at all: copying it into each of up to 2,500
/// messages made one small gzip body cost seconds of CPU (issue 13). Clients send each
/// message's own `context` (where RudderStack's `context.traits` is read).
#[derive(serde::Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Option<&'a RawValue>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
}

/// [`BatchBody`] when `batch` is an array (or absent, or `null`): the body read in one pass,
/// each message's text cut out as it goes. Reading a [`BatchBody`] and then its `batch` text
/// again as an array read every message twice (~4,500 instructions per W1 message,
/// docs/performance.md). A body this refuses is read again as a [`BatchBody`], whose errors
/// are the answer; a body this accepts, [`BatchBody`] accepts too, with the same messages.
#[derive(serde::Deserialize)]
struct ArrayBody<'a> {
    #[serde(borrow)]
    batch: Option<Vec<&'a RawValue>>,
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
}

/// What a `/v1/batch` body holds: its `writeKey`, and its messages (`None`: no `batch`;
/// `Some(Err)`: `batch` is not an array).
type BatchParts<'a> = (Option<Value>, Option<Result<Vec<&'a RawValue>, ()>>);

/// Read a `/v1/batch` body ([`ArrayBody`], else [`BatchBody`]); `Err` is the `400` of a body
/// that is not JSON.
fn batch_parts(body: &[u8]) -> Result<BatchParts<'_>, Reply> {
    if let Ok(top) = serde_json::from_slice::<ArrayBody<'_>>(body) {
        return Ok((top.write_key, top.batch.map(Ok)));
    }
    let top: BatchBody<'_> = serde_json::from_slice(body).map_err(invalid_json)?;
    let messages = top
        .batch
        .map(|raw| serde_json::from_str(raw.get()).map_err(|_| ()));
    Ok((top.write_key, messages))
}

/// A message still to be parsed: raw JSON (batch), already a value (single endpoints), or
/// the translation of a vendor dialect's message (src/server/posthog.rs, mixpanel.rs).
pub(crate) enum Pending<'a> {
    /// A message's JSON text, as sent (an element of a batch).
    Raw(&'a str),
    Parsed(Value),
    Item(Item),
}

/// One message of a vendor dialect, translated.
pub(crate) enum Item {
    /// A Segment-shaped message, and the property names the translation dropped (listed in
    /// the result's `ignored`).
    Message { value: Value, dropped: Vec<String> },
    /// A profile removal (Mixpanel's `$delete`): the first selector that finds a profile.
    Delete(Vec<crate::Selector>),
    /// Refused while translating: `error` is a stable name (`malformed`, `invalid`).
    Refused { error: &'static str, reason: String },
}

fn invalid_json(e: impl std::fmt::Display) -> Reply {
    Reply::error(
        400,
        "invalid_json",
        &format!("the body is not valid JSON: {e}"),
    )
}

/// The project of a write key found in a request body (a PostHog project API key, a Mixpanel
/// project token): security's write-key check ([`auth::project_for_write_key`]: ingest only,
/// failures counted against `peer`). The one place vendor body tokens are checked; the caller
/// then checks the request's web origin (`state.origins.check`, docs/browser.md).
pub(crate) fn project_for_body_key(
    state: &AppState,
    peer: IpAddr,
    key: &str,
) -> Result<Arc<Project>, Reply> {
    auth::project_for_write_key(state, peer, key)
}

/// The project of a request: the one its `Authorization` header named (checked before the
/// body was read), else the body's `writeKey`; refused when the request comes from a web page
/// whose origin the project does not allow (docs/browser.md).
fn authenticate(
    state: &AppState,
    peer: IpAddr,
    header: Option<Arc<Project>>,
    body_key: Option<&Value>,
    origin: Option<&str>,
) -> Result<Arc<Project>, Reply> {
    let project = match (header, body_key) {
        (Some(p), _) => p,
        (None, Some(Value::String(k))) => auth::project_for_write_key(state, peer, k)?,
        (None, _) => {
            return Err(Reply::unauthorized(
                "no write key: send it as the HTTP basic-auth user or as writeKey in the body",
            ));
        }
    };
    state.origins.check(&project.name, origin)?;
    Ok(project)
}

/// The whole work of one ingestion request (runs on the blocking pool).
pub(crate) fn process(
    state: &AppState,
    peer: IpAddr,
    endpoint: Endpoint,
    header_project: Option<Arc<Project>>,
    origin: Option<&str>,
    gzip: bool,
    body: &[u8],
) -> Reply {
    let limits = state.limits;
    let decoded;
    let body = if gzip {
        decoded = match gunzip(body, limits.max_batch_bytes) {
            Ok(d) => d,
            Err(r) => return r,
        };
        &decoded[..]
    } else {
        body
    };
    if body.len() > limits.max_batch_bytes {
        return too_large(limits.max_batch_bytes, "");
    }
    // Only an object is a request (serde would also read a struct from an array).
    if body.trim_ascii_start().first() != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Err(e) => invalid_json(e),
            Ok(_) => Reply::error(400, "invalid_json", "the body must be a JSON object"),
        };
    }
    match endpoint {
        Endpoint::Batch => {
            let (write_key, batch) = match batch_parts(body) {
                Ok(parts) => parts,
                Err(reply) => return reply,
            };
            let project =
                match authenticate(state, peer, header_project, write_key.as_ref(), origin) {
                    Ok(p) => p,
                    Err(r) => return r,
                };
            let Some(batch) = batch else {
                return Reply::error(
                    400,
                    "invalid_batch",
                    "the body has no \"batch\" array of messages",
                );
            };
            let Ok(messages) = batch else {
                return Reply::error(400, "invalid_batch", "\"batch\" must be an array");
            };
            if messages.len() > limits.max_batch_messages {
                return Reply::error(
                    400,
                    "too_many_messages",
                    &format!(
                        "the batch has {} messages; at most {} are accepted",
                        messages.len(),
                        limits.max_batch_messages
                    ),
                );
            }
            let pending = messages
                .into_iter()
                .map(|m| Pending::Raw(m.get()))
                .collect();
            apply_all(&project, pending, limits)
        }
        Endpoint::Single(kind) => {
            // The body is the message: Segment's 32 KB applies to it as sent.
            if body.len() > limits.max_message_bytes {
                return Reply::error(
                    400,
                    "message_too_large",
                    &format!(
                        "the message is {} bytes; at most {} are accepted",
                        body.len(),
                        limits.max_message_bytes
                    ),
                );
            }
            let mut top: Map<String, Value> = match serde_json::from_slice(body) {
                Ok(t) => t,
                Err(e) => return invalid_json(e),
            };
            let body_key = top.remove("writeKey");
            let project = match authenticate(state, peer, header_project, body_key.as_ref(), origin)
            {
                Ok(p) => p,
                Err(r) => return r,
            };
            top.insert("type".into(), Value::String(kind.into()));
            apply_all(&project, vec![Pending::Parsed(Value::Object(top))], limits)
        }
    }
}

/// Count and describe one refused message.
fn refuse(
    metrics: &super::metrics::ProjectMetrics,
    refused: &mut usize,
    index: usize,
    error: &'static str,
    reason: String,
) -> MessageResult {
    metrics.refusals[reason_index(error)].fetch_add(1, Relaxed);
    *refused += 1;
    MessageResult::refused(index, error, reason)
}

fn apply_all(project: &Arc<Project>, messages: Vec<Pending<'_>>, limits: super::Limits) -> Reply {
    match apply_messages(project, messages, limits) {
        Ok(answer) => Reply::json(&answer),
        Err(reply) => reply,
    }
}

/// A message of a request after parsing and validation: refused already, or a call for the
/// group commit (with the property names a dialect's translation dropped).
enum Checked {
    Refused(MessageResult),
    Call(Call, Vec<String>),
    /// `serve --produce-to`: validated, to be produced as this JSON text instead of applied.
    #[cfg(feature = "kafka")]
    Produce(Vec<u8>),
}

/// A message to parse: its JSON text, or a value already read.
enum Input<'a> {
    Text(&'a str),
    Value(Value),
}

/// Parse and validate one message (on the request's own thread: this is the part of the work
/// that runs on every core); counts the message's type.
fn check(
    project: &Project,
    index: usize,
    pending: Pending<'_>,
    limits: super::Limits,
    refused: &mut usize,
) -> Checked {
    let metrics = &project.metrics;
    let mut refuse = |error: &'static str, reason: String| {
        Checked::Refused(refuse(metrics, refused, index, error, reason))
    };
    let mut dropped = Vec::new();
    let input = match pending {
        Pending::Raw(raw) => Input::Text(raw),
        Pending::Parsed(value) => Input::Value(value),
        Pending::Item(Item::Message { value, dropped: d }) => {
            dropped = d;
            Input::Value(value)
        }
        Pending::Item(Item::Refused { error, reason }) => {
            metrics.messages[type_index("other")].fetch_add(1, Relaxed);
            return refuse(error, reason);
        }
        Pending::Item(Item::Delete(selectors)) => {
            metrics.messages[type_index("other")].fetch_add(1, Relaxed);
            return Checked::Call(Call::Delete(selectors), dropped);
        }
    };
    let (seen, parsed) = match &input {
        // Segment's 32 KB applies to each message as sent.
        Input::Text(raw) if raw.len() > limits.max_message_bytes => {
            metrics.messages[type_index("other")].fetch_add(1, Relaxed);
            return refuse(
                "too_large",
                format!(
                    "message: is {} bytes; at most {} are accepted",
                    raw.len(),
                    limits.max_message_bytes
                ),
            );
        }
        Input::Text(raw) => parse_ingested(raw.as_bytes()),
        // A value (a single endpoint's body, a dialect's translation) is read by the same
        // parser's visitors, so that one place holds the rules of a message's shape.
        Input::Value(value) => parse_ingested_value(value),
    };
    let kind = match &seen {
        TypeSeen::Unnamed => 0,
        TypeSeen::Named(t) => type_index(t.trim()),
        TypeSeen::Other => type_index("other"),
    };
    metrics.messages[kind].fetch_add(1, Relaxed);
    let prepared = match parsed {
        Ok(message) => project.db.prepare_message(message),
        Err(IngestRefusal::Json(e)) => {
            return refuse("malformed", format!("message: not valid JSON: {e}"));
        }
        Err(IngestRefusal::Control(reason)) => return refuse("invalid", reason),
        Err(IngestRefusal::Shape(e)) => Err(e),
    };
    match prepared {
        #[cfg(feature = "kafka")]
        Ok(_) if project.sink.is_some() => Checked::Produce(match &input {
            Input::Text(raw) => raw.as_bytes().to_vec(),
            Input::Value(value) => encode(value),
        }),
        Ok(p) => Checked::Call(Call::Apply(p), dropped),
        Err(e) => refuse(e.kind(), e.to_string()),
    }
}

/// The JSON text of a value (writing a `serde_json::Value` to memory cannot fail).
#[cfg(feature = "kafka")]
fn encode(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Apply a request's messages in order through the project's group commit; `Err` is the 503
/// of a store failure. A message is answered only once its write is durable.
pub(crate) fn apply_messages(
    project: &Arc<Project>,
    messages: Vec<Pending<'_>>,
    limits: super::Limits,
) -> Result<BatchAnswer, Reply> {
    let metrics = &project.metrics;
    let (mut accepted, mut duplicates, mut refused) = (0usize, 0usize, 0usize);
    let mut checked = Vec::with_capacity(messages.len());
    let mut calls = Vec::with_capacity(messages.len());
    #[cfg(feature = "kafka")]
    let mut acks = None;
    for (index, pending) in messages.into_iter().enumerate() {
        match check(project, index, pending, limits, &mut refused) {
            Checked::Refused(r) => checked.push(Err(Some(r))),
            Checked::Call(call, dropped) => {
                calls.push(call);
                checked.push(Ok(dropped));
            }
            // Produced instead of applied (`None` below: answered as accepted once the broker
            // acknowledged every call of the request).
            #[cfg(feature = "kafka")]
            Checked::Produce(json) => match super::produce::offer(project, &mut acks, &json) {
                Ok(()) => checked.push(Err(None)),
                Err(e) if !e.is_refusal() => {
                    return Err(Reply::error(503, "unavailable", &format!("produce: {e}")));
                }
                Err(e) => checked.push(Err(Some(refuse(
                    metrics,
                    &mut refused,
                    index,
                    e.kind(),
                    e.to_string(),
                )))),
            },
        }
    }
    let started = Instant::now();
    let done = project
        .committer
        .submit(&project.db, calls, &|took| metrics.sync.observe(took))
        .map_err(|e| Reply::unavailable(project, &e))?;
    #[cfg(feature = "kafka")]
    if let Some(acks) = acks {
        acks.wait()
            .map_err(|e| Reply::error(503, "unavailable", &format!("produce: {e}")))?;
    }
    let mut done = done.into_iter();
    let mut results = Vec::with_capacity(checked.len());
    for (index, item) in checked.into_iter().enumerate() {
        let mut dropped = match item {
            Err(Some(result)) => {
                results.push(result);
                continue;
            }
            Err(None) => {
                metrics.accepted.fetch_add(1, Relaxed);
                accepted += 1;
                #[cfg(feature = "kafka")]
                results.push(MessageResult::produced(index));
                continue;
            }
            Ok(dropped) => dropped,
        };
        let Some(call) = done.next() else {
            return Err(internal("group commit", &"fewer results than calls"));
        };
        let outcome = match call {
            Done::Deleted(Ok(deleted)) => {
                if deleted.is_some() {
                    // Its bytes leave the disk within the erasure bound (admin.rs).
                    project.unerased_since.lock().get_or_insert(started);
                }
                accepted += 1;
                let status = if deleted.is_some() {
                    "deleted"
                } else {
                    "not_found"
                };
                results.push(MessageResult::plain(index, status, deleted));
                continue;
            }
            Done::Deleted(Err(e)) | Done::Applied(Err(e)) => {
                results.push(refuse(
                    metrics,
                    &mut refused,
                    index,
                    e.kind(),
                    e.to_string(),
                ));
                continue;
            }
            Done::Applied(Ok(outcome)) => outcome,
        };
        if outcome.status == Status::Duplicate {
            metrics.duplicates.fetch_add(1, Relaxed);
            duplicates += 1;
            results.push(MessageResult::plain(index, "duplicate", Some(outcome.key)));
            continue;
        }
        metrics.accepted.fetch_add(1, Relaxed);
        if outcome.status == Status::Merged {
            metrics.merges.fetch_add(1, Relaxed);
        }
        accepted += 1;
        results.push(MessageResult {
            index,
            status: "accepted",
            key: Some(outcome.key),
            outcome: Some(outcome.status),
            merged: outcome.merged,
            moved: outcome.moved,
            ignored: {
                let mut ignored = outcome.ignored;
                if !dropped.is_empty() {
                    ignored.append(&mut dropped);
                    ignored.sort();
                    ignored.dedup();
                }
                ignored
            },
            reason: None,
            error: None,
        });
    }
    Ok(BatchAnswer {
        success: true,
        accepted,
        duplicates,
        refused,
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::{BatchBody, batch_parts, invalid_json};
    use serde_json::value::RawValue;

    /// What a body's parts are read as, comparable: the writeKey, the messages' texts.
    type Seen = Result<(Option<String>, Option<Result<Vec<String>, ()>>), (u16, Vec<u8>)>;

    fn seen(parts: Result<super::BatchParts<'_>, super::Reply>) -> Seen {
        match parts {
            Ok((key, batch)) => Ok((
                key.map(|k| k.to_string()),
                batch.map(|b| b.map(|m| m.iter().map(|r| r.get().to_string()).collect())),
            )),
            Err(reply) => Err((reply.status, reply.body)),
        }
    }

    /// The reading before the one-pass form: the body, then its `batch` text as an array.
    fn two_passes(body: &[u8]) -> Seen {
        let parts = serde_json::from_slice::<BatchBody<'_>>(body)
            .map_err(invalid_json)
            .map(|top| {
                let batch = top
                    .batch
                    .map(|raw| serde_json::from_str::<Vec<&RawValue>>(raw.get()).map_err(|_| ()));
                (top.write_key, batch)
            });
        seen(parts)
    }

    #[test]
    fn one_pass_reads_every_body_as_two_passes_did() {
        let bodies: &[&[u8]] = &[
            br#"{"batch":[]}"#,
            br#"{"batch":[{"userId":"u"}, 1, "x", [null], {"a":{"b":[]}}]}"#,
            br#"{ "batch" : [ {"userId":"u"} ] , "writeKey":"k", "context":{"x":1} }"#,
            br#"{"writeKey":"k"}"#,
            br#"{"batch":null,"writeKey":"k"}"#,
            br#"{"batch":{"userId":"u"}}"#,
            br#"{"batch":"[1]"}"#,
            br#"{"batch":1e400}"#,
            br#"{"batch":"\ud800"}"#,
            br#"{"batch":[{"userId":"\ud800"}]}"#,
            br#"{"batch":[1],"batch":[2]}"#,
            br#"{"batch":[1],"writeKey":"a","writeKey":"b"}"#,
            br#"{"b\u0061tch":[{"userId":"u"}],"writeKey":5}"#,
            br#"{"batch":[1,]}"#,
            br#"{"batch":[1]"#,
            br#"{"batch":[1]} x"#,
            b"{\"batch\":[\"\xff\"]}",
            b"{\"other\":\"\xff\",\"batch\":[]}",
            br#"[{"batch":[]}]"#,
        ];
        for body in bodies {
            assert_eq!(
                seen(batch_parts(body)),
                two_passes(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Deep nesting: past serde_json's recursion limit both refuse the body.
        let deep = format!(r#"{{"batch":[{}1{}]}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(
            seen(batch_parts(deep.as_bytes())),
            two_passes(deep.as_bytes())
        );
    }
}
