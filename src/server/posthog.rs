//! PostHog's capture API (`POST /batch/`, `/capture/`, `/e/`, `/i/v0/e/`): each event is
//! translated into the Segment-shaped message the library parses, so every rule of
//! docs/semantics.md has one place. docs/clients.md says what maps to what and why.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::body::{self, id_of};
use super::ingest::{self, BatchAnswer, Item, Pending, Reply};
use super::{AppState, Project};

/// The whole work of one capture request (on the blocking pool); errors in PostHog's shape.
pub(crate) fn process(state: &AppState, gzip: bool, body: &[u8]) -> Reply {
    match capture(state, gzip, body) {
        Ok(reply) => reply,
        Err(reply) => reshape_error(reply),
    }
}

#[derive(Serialize)]
struct Answer<'a> {
    /// PostHog's own answer is `{"status": 1}`.
    status: u8,
    #[serde(flatten)]
    answer: &'a BatchAnswer,
}

/// `{"type", "code", "detail"}`: posthog-python raises `APIError(status, detail)`.
fn reshape_error(reply: Reply) -> Reply {
    let Some((code, message)) = reply.error_parts() else {
        return reply;
    };
    let kind = match reply.status {
        401 => "authentication_error",
        s if s >= 500 => "server_error",
        _ => "validation_error",
    };
    let body = json!({"type": kind, "code": code, "detail": message}).to_string();
    Reply {
        status: reply.status,
        body: body.into_bytes(),
    }
}

/// The project key of a body or an event: `api_key`, `token` or `$token`.
fn token_in(obj: &Map<String, Value>) -> Option<String> {
    ["api_key", "token", "$token"]
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// An event's own key: at its top level or in its `properties`.
fn event_token(event: &Value) -> Option<String> {
    let obj = event.as_object()?;
    token_in(obj).or_else(|| obj.get("properties")?.as_object().and_then(token_in))
}

fn capture(state: &AppState, gzip: bool, body: &[u8]) -> Result<Reply, Reply> {
    let limits = state.limits;
    let decoded = body::decode(body, gzip, limits.max_batch_bytes)?;
    let form_token = decoded.field("api_key").map(str::to_string);
    let (top_token, events) = match decoded.json {
        Value::Array(events) => (None, events),
        Value::Object(mut obj) => match obj.remove("batch") {
            Some(Value::Array(events)) => (token_in(&obj), events),
            Some(_) => {
                return Err(Reply::error(
                    400,
                    "invalid_batch",
                    "\"batch\" must be an array",
                ));
            }
            None => (None, vec![Value::Object(obj)]),
        },
        _ => {
            return Err(Reply::error(
                400,
                "invalid_json",
                "the body must be an event, an array of events or {\"api_key\", \"batch\": [...]}",
            ));
        }
    };
    let top_token = top_token.or(form_token);
    if events.len() > limits.max_batch_messages {
        return Err(Reply::error(
            400,
            "too_many_messages",
            &format!(
                "the batch has {} events; at most {} are accepted",
                events.len(),
                limits.max_batch_messages
            ),
        ));
    }
    let project = project_of(state, top_token, &events)?;
    let items = events
        .iter()
        .map(|e| Pending::Item(translate(e, limits.max_message_bytes)))
        .collect();
    let answer = ingest::apply_messages(project, items, None, limits)?;
    Ok(Reply::json(&Answer {
        status: 1,
        answer: &answer,
    }))
}

/// The project of the body's key, else of the first event's; every event naming a key must
/// name one of the same project.
fn project_of<'s>(
    state: &'s AppState,
    top: Option<String>,
    events: &[Value],
) -> Result<&'s Arc<Project>, Reply> {
    let Some(token) = top.or_else(|| events.iter().find_map(event_token)) else {
        return Err(Reply::unauthorized(
            "no project API key: send it as api_key, token or $token",
        ));
    };
    let project = ingest::project_for_body_key(state, &token)?;
    for event in events {
        if let Some(other) = event_token(event)
            && other != token
            && !Arc::ptr_eq(ingest::project_for_body_key(state, &other)?, project)
        {
            return Err(Reply::error(
                400,
                "mixed_projects",
                "the events of one request name keys of different projects",
            ));
        }
    }
    Ok(project)
}

fn refused(error: &'static str, reason: &str) -> Item {
    Item::Refused {
        error,
        reason: reason.to_string(),
    }
}

/// An object operator (`$set`, `$set_once`) from `properties` and the event's top level; the
/// top level wins name by name. A value that is not an object is passed on for the parser to
/// refuse, naming it.
fn object_op(event: &Map<String, Value>, props: &Map<String, Value>, name: &str) -> Option<Value> {
    match (props.get(name), event.get(name)) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut merged = a.clone();
            merged.extend(b.iter().map(|(k, v)| (k.clone(), v.clone())));
            Some(Value::Object(merged))
        }
        (inner, top) => top.or(inner).filter(|v| !v.is_null()).cloned(),
    }
}

/// `$unset` from `properties` and the top level, both read.
fn unset_op(event: &Map<String, Value>, props: &Map<String, Value>) -> Option<Value> {
    match (props.get("$unset"), event.get("$unset")) {
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            Some(Value::Array(a.iter().chain(b).cloned().collect()))
        }
        (inner, top) => top.or(inner).filter(|v| !v.is_null()).cloned(),
    }
}

/// Whether an event comes from an anonymous person: posthog-js marks it
/// `$is_identified: false`, or sends `$device_id` equal to the `distinct_id`.
fn anonymous(props: &Map<String, Value>, distinct_id: Option<&str>) -> bool {
    props.get("$is_identified") == Some(&Value::Bool(false))
        || (distinct_id.is_some() && props.get("$device_id").and_then(Value::as_str) == distinct_id)
}

/// One PostHog event as a Segment-shaped message.
fn translate(event: &Value, max_bytes: usize) -> Item {
    let Value::Object(e) = event else {
        return refused("malformed", "event: must be a JSON object");
    };
    let size = serde_json::to_string(event).map_or(0, |s| s.len());
    if size > max_bytes {
        return refused(
            "too_large",
            &format!("event: is {size} bytes; at most {max_bytes} are accepted"),
        );
    }
    let Some(name) = e.get("event").and_then(Value::as_str) else {
        return refused("malformed", "event: must be a string naming the event");
    };
    let empty = Map::new();
    let props = match e.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return refused("malformed", "properties: must be an object"),
    };
    let distinct_id = id_of(e.get("distinct_id"))
        .or_else(|| id_of(e.get("$distinct_id")))
        .or_else(|| id_of(props.get("distinct_id")));
    let mut m = Map::new();
    if let Some(uuid) = id_of(e.get("uuid")) {
        m.insert("messageId".into(), Value::String(uuid));
    }
    if let Some(ts) = e.get("timestamp").filter(|t| !t.is_null()) {
        m.insert("timestamp".into(), ts.clone());
    }
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.into(), v);
        }
    };
    let person_ops = |put: &mut dyn FnMut(&str, Option<Value>)| {
        put("$set", object_op(e, props, "$set"));
        put("$set_once", object_op(e, props, "$set_once"));
        put("$unset", unset_op(e, props));
        // Not PostHog's: profiledb's list operations, read like `$set` (docs/clients.md).
        for list in ["$append", "$union", "$remove"] {
            put(list, object_op(e, props, list));
        }
    };
    let id = |v: Option<String>| v.map(Value::String);
    match name {
        "$identify" => {
            put("type", Some("identify".into()));
            let anon =
                id_of(props.get("$anon_distinct_id")).filter(|a| Some(a) != distinct_id.as_ref());
            put("userId", id(distinct_id));
            put("anonymousId", id(anon));
            person_ops(&mut put);
        }
        "$create_alias" => {
            put("type", Some("alias".into()));
            put("previousId", id(distinct_id));
            put("userId", id(id_of(props.get("alias"))));
        }
        "$merge_dangerously" => {
            put("type", Some("alias".into()));
            put("previousId", id(id_of(props.get("alias"))));
            put("userId", id(distinct_id));
        }
        "$groupidentify" => {
            put("type", Some("group".into()));
            put("groupId", id(id_of(props.get("$group_key"))));
            put(
                "traits",
                props.get("$group_set").filter(|v| !v.is_null()).cloned(),
            );
        }
        _ => {
            let has_ops = [
                "$set",
                "$set_once",
                "$unset",
                "$append",
                "$union",
                "$remove",
            ]
            .iter()
            .any(|k| e.contains_key(*k) || props.contains_key(*k));
            let personless = props.get("$process_person_profile") == Some(&Value::Bool(false));
            let field = if anonymous(props, distinct_id.as_deref()) {
                "anonymousId"
            } else {
                "userId"
            };
            put(field, id(distinct_id));
            if has_ops && !personless {
                put("type", Some("identify".into()));
                person_ops(&mut put);
            } else {
                put("type", Some("track".into()));
            }
        }
    }
    Item::Message {
        value: Value::Object(m),
        dropped: Vec::new(),
    }
}
