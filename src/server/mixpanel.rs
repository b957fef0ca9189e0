//! Mixpanel's ingestion API (`POST /engage`, `/groups`, `/track`, `/import`): each record is
//! translated into the Segment-shaped message the library parses (or a removal), so every rule
//! of docs/semantics.md has one place. docs/clients.md says what maps to what and why.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::body::{self, id_of};
use super::ingest::{self, BatchAnswer, Item, Pending, Reply};
use super::{AppState, Project};
use crate::Selector;

/// Which Mixpanel endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `/engage`: people records.
    Engage,
    /// `/groups`: group records.
    Groups,
    /// `/track` and `/import`: events.
    Events,
}

/// The whole work of one request (on the blocking pool). `verbose=1` (query or form) answers
/// `{"status": 1|0, "error": ...}` plus per-record results; otherwise `1` or `0`.
pub(crate) fn process(
    state: &AppState,
    kind: Kind,
    gzip: bool,
    query: Option<&str>,
    body: &[u8],
) -> Reply {
    let query = body::query_pairs(query);
    let from_query = |name: &str| {
        query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let decoded = body::decode(body, gzip, state.limits.max_batch_bytes);
    let verbose = from_query("verbose")
        .or_else(|| {
            decoded
                .as_ref()
                .ok()
                .and_then(|d| d.field("verbose").map(str::to_string))
        })
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let result = decoded.and_then(|d| ingest_records(state, kind, d.json));
    match result {
        Ok(answer) => {
            let error = answer
                .first_refusal()
                .map(|(i, reason)| format!("record {i}: {reason}"));
            let status = u8::from(error.is_none());
            if verbose {
                Reply::json(&Answer {
                    status,
                    error,
                    answer: &answer,
                })
            } else {
                Reply {
                    status: 200,
                    body: status.to_string().into_bytes(),
                }
            }
        }
        Err(reply) if verbose => {
            let message = reply.error_parts().map_or_else(
                || "request failed".to_string(),
                |(code, m)| format!("{code}: {m}"),
            );
            Reply {
                status: reply.status,
                body: json!({"status": 0, "error": message})
                    .to_string()
                    .into_bytes(),
            }
        }
        Err(reply) => Reply {
            status: reply.status,
            body: b"0".to_vec(),
        },
    }
}

#[derive(Serialize)]
struct Answer<'a> {
    status: u8,
    error: Option<String>,
    #[serde(flatten)]
    answer: &'a BatchAnswer,
}

fn ingest_records(state: &AppState, kind: Kind, json: Value) -> Result<BatchAnswer, Reply> {
    let limits = state.limits;
    let records = match json {
        Value::Array(records) => records,
        one @ Value::Object(_) => vec![one],
        _ => {
            return Err(Reply::error(
                400,
                "invalid_json",
                "data must be a record or an array of records",
            ));
        }
    };
    if records.len() > limits.max_batch_messages {
        return Err(Reply::error(
            400,
            "too_many_messages",
            &format!(
                "{} records; at most {} are accepted",
                records.len(),
                limits.max_batch_messages
            ),
        ));
    }
    let project = project_of(state, kind, &records)?;
    let items = records
        .iter()
        .map(|r| {
            let size = serde_json::to_string(r).map_or(0, |s| s.len());
            let item = if size > limits.max_message_bytes {
                refused(
                    "too_large",
                    &format!(
                        "record: is {size} bytes; at most {} are accepted",
                        limits.max_message_bytes
                    ),
                )
            } else {
                match kind {
                    Kind::Engage => engage(r),
                    Kind::Groups => group(r),
                    Kind::Events => event(r),
                }
            };
            Pending::Item(item)
        })
        .collect();
    ingest::apply_messages(project, items, None, limits)
}

/// A record's project token: `$token` (engage, groups) or `properties.token` (events).
fn record_token(kind: Kind, record: &Value) -> Option<String> {
    let token = match kind {
        Kind::Engage | Kind::Groups => record.get("$token"),
        Kind::Events => record.get("properties").and_then(|p| p.get("token")),
    };
    token
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Every record's token must name a key of one project.
fn project_of<'s>(
    state: &'s AppState,
    kind: Kind,
    records: &[Value],
) -> Result<&'s Arc<Project>, Reply> {
    let mut project: Option<&Arc<Project>> = None;
    for record in records {
        let Some(token) = record_token(kind, record) else {
            continue;
        };
        let p = ingest::project_for_body_key(state, &token)?;
        match project {
            Some(first) if !Arc::ptr_eq(first, p) => {
                return Err(Reply::error(
                    400,
                    "mixed_projects",
                    "the records of one request name tokens of different projects",
                ));
            }
            _ => project = Some(p),
        }
    }
    project.ok_or_else(|| {
        Reply::unauthorized(match kind {
            Kind::Events => "no project token: send it as properties.token",
            _ => "no project token: send it as $token",
        })
    })
}

fn refused(error: &'static str, reason: &str) -> Item {
    Item::Refused {
        error,
        reason: reason.to_string(),
    }
}

/// Mixpanel's reserved people properties and the names profiledb stores them under.
const RESERVED: &[(&str, &str)] = &[
    ("$email", "email"),
    ("$first_name", "first_name"),
    ("$last_name", "last_name"),
    ("$name", "name"),
    ("$created", "created_at"),
    ("$avatar", "avatar"),
    ("$phone", "phone"),
];

/// The stored name of a people property; `None` for another `$` name (Mixpanel's own, such as
/// `$city` or `$transactions`: dropped and listed in `ignored`).
fn people_name(name: &str) -> Option<&str> {
    match RESERVED.iter().find(|(mp, _)| *mp == name) {
        Some((_, ours)) => Some(ours),
        None if name.starts_with('$') => None,
        None => Some(name),
    }
}

/// `$created` as Mixpanel writes it (`2026-01-02T03:04:05`, UTC without a zone) gets its `Z`.
fn created_value(value: &Value) -> Value {
    match value {
        Value::String(s) if s.len() == 19 && s.as_bytes().get(10) == Some(&b'T') => {
            Value::String(format!("{s}Z"))
        }
        other => other.clone(),
    }
}

/// Mixpanel's `$time` / `time`: seconds (mixpanel-python sends a float) or milliseconds since
/// the epoch, as an RFC 3339 timestamp.
fn time_value(value: Option<&Value>) -> Option<Value> {
    let n = value?.as_f64()?;
    let micros = if n.abs() < 1e11 { n * 1e6 } else { n * 1e3 };
    if !micros.is_finite() {
        return None;
    }
    let t = chrono::DateTime::from_timestamp_micros(micros as i64)?;
    Some(Value::String(
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    ))
}

/// An object operator of a people record with its names mapped.
fn people_object(
    value: &Value,
    section: &str,
    dropped: &mut Vec<String>,
) -> Result<Map<String, Value>, Item> {
    let Value::Object(members) = value else {
        return Err(refused(
            "malformed",
            &format!("{section}: must be an object"),
        ));
    };
    let mut out = Map::new();
    for (name, v) in members {
        match people_name(name) {
            Some("created_at") => {
                out.insert("created_at".into(), created_value(v));
            }
            Some(ours) => {
                out.insert(ours.to_string(), v.clone());
            }
            None => dropped.push(name.clone()),
        }
    }
    Ok(out)
}

/// An `/engage` record.
fn engage(record: &Value) -> Item {
    let Value::Object(r) = record else {
        return refused("malformed", "record: must be a JSON object");
    };
    let Some(distinct_id) = id_of(r.get("$distinct_id")) else {
        return refused("malformed", "$distinct_id: required (a string or a number)");
    };
    if r.contains_key("$delete") {
        return Item::Delete(vec![
            Selector::UserId(distinct_id.clone()),
            Selector::AnonymousId(distinct_id),
        ]);
    }
    let mut dropped = Vec::new();
    let mut m = Map::new();
    m.insert("type".into(), "identify".into());
    m.insert("userId".into(), Value::String(distinct_id));
    if let Some(t) = time_value(r.get("$time")) {
        m.insert("timestamp".into(), t);
    }
    for section in ["$set", "$set_once", "$add", "$append", "$union", "$remove"] {
        let Some(value) = r.get(section).filter(|v| !v.is_null()) else {
            continue;
        };
        let mut members = match people_object(value, section, &mut dropped) {
            Ok(m) => m,
            Err(item) => return item,
        };
        if section == "$set_once"
            && let Some(email) = members.remove("email")
        {
            // An email is an identifier, not a property: `$set_once` gives it like `$set`.
            let set = m.entry("$set").or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(set) = set {
                set.entry("email").or_insert(email);
            }
        }
        if !members.is_empty() {
            match m.get_mut(section) {
                Some(Value::Object(existing)) => existing.extend(members),
                _ => {
                    m.insert(section.into(), Value::Object(members));
                }
            }
        }
    }
    if let Some(unset) = r.get("$unset").filter(|v| !v.is_null()) {
        let Value::Array(names) = unset else {
            return refused("malformed", "$unset: must be an array of property names");
        };
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let Some(name) = name.as_str() else {
                return refused("malformed", &format!("$unset[{i}]: must be a string"));
            };
            match people_name(name) {
                // An email is never removed by a call (docs/semantics.md D-A5).
                Some("email") | None => dropped.push(name.to_string()),
                Some(ours) => out.push(Value::String(ours.to_string())),
            }
        }
        m.insert("$unset".into(), Value::Array(out));
    }
    Item::Message {
        value: Value::Object(m),
        dropped,
    }
}

/// A `/groups` record: a company upsert (`$group_id`; `$group_key` is not kept).
fn group(record: &Value) -> Item {
    let Value::Object(r) = record else {
        return refused("malformed", "record: must be a JSON object");
    };
    let Some(group_id) = id_of(r.get("$group_id")) else {
        return refused("malformed", "$group_id: required (a string or a number)");
    };
    if r.contains_key("$delete") {
        return refused(
            "invalid",
            "$delete: companies are never deleted in profiledb",
        );
    }
    let mut dropped = Vec::new();
    let mut traits = Map::new();
    if let Some(set) = r.get("$set").filter(|v| !v.is_null()) {
        let Value::Object(set) = set else {
            return refused("malformed", "$set: must be an object");
        };
        for (name, v) in set {
            if name.starts_with('$') {
                dropped.push(name.clone());
            } else {
                traits.insert(name.clone(), v.clone());
            }
        }
    }
    if let Some(Value::Array(names)) = r.get("$unset") {
        for name in names.iter().filter_map(Value::as_str) {
            traits.insert(name.to_string(), Value::Null);
        }
    }
    // Companies keep plain last-write-wins properties only.
    for section in ["$set_once", "$union", "$remove", "$append", "$add"] {
        if let Some(Value::Object(members)) = r.get(section) {
            dropped.extend(members.keys().cloned());
        }
    }
    let mut m = Map::new();
    m.insert("type".into(), "group".into());
    m.insert("groupId".into(), Value::String(group_id));
    m.insert("traits".into(), Value::Object(traits));
    if let Some(t) = time_value(r.get("$time")) {
        m.insert("timestamp".into(), t);
    }
    Item::Message {
        value: Value::Object(m),
        dropped,
    }
}

/// A `/track` or `/import` event: only identity events change profiles.
fn event(record: &Value) -> Item {
    let Value::Object(r) = record else {
        return refused("malformed", "event: must be a JSON object");
    };
    let Some(name) = r.get("event").and_then(Value::as_str) else {
        return refused("malformed", "event: must be a string naming the event");
    };
    let empty = Map::new();
    let props = match r.get("properties") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return refused("malformed", "properties: must be an object"),
    };
    let distinct_id = id_of(props.get("distinct_id"));
    let mut m = Map::new();
    if let Some(id) = id_of(props.get("$insert_id")) {
        m.insert("messageId".into(), Value::String(id));
    }
    if let Some(t) = time_value(props.get("time")) {
        m.insert("timestamp".into(), t);
    }
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v));
        }
    };
    match name {
        "$identify" => {
            put("type", Some("identify".into()));
            put("userId", id_of(props.get("$identified_id")));
            put("anonymousId", id_of(props.get("$anon_id")));
        }
        "$create_alias" => {
            put("type", Some("alias".into()));
            put("previousId", distinct_id);
            put("userId", id_of(props.get("alias")));
        }
        "$merge" => {
            let ids: Vec<String> = match props.get("$distinct_ids") {
                Some(Value::Array(ids)) => ids.iter().filter_map(|v| id_of(Some(v))).collect(),
                _ => Vec::new(),
            };
            let [first, second] = ids.as_slice() else {
                return refused("malformed", "$distinct_ids: must hold exactly two ids");
            };
            put("type", Some("alias".into()));
            put("userId", Some(first.clone()));
            put("previousId", Some(second.clone()));
        }
        _ => {
            // Simplified ID merge: `$user_id` and `$device_id` link; a `$device:` distinct_id is
            // an anonymous id.
            put("type", Some("track".into()));
            let device = id_of(props.get("$device_id"));
            match id_of(props.get("$user_id")) {
                Some(user) => {
                    put("userId", Some(user));
                    put("anonymousId", device);
                }
                None => match distinct_id {
                    Some(d) if d.starts_with("$device:") => {
                        put("anonymousId", Some(d["$device:".len()..].to_string()));
                    }
                    d => put("userId", d),
                },
            }
        }
    }
    Item::Message {
        value: Value::Object(m),
        dropped: Vec::new(),
    }
}
