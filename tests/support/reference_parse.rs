//! The reference parser of the differential test (tests/parse_differential.rs): the
//! `serde_json::Value`-based `Message::from_json` as it was before the direct parser
//! (src/profile/parse.rs) became the one place that holds the rules of a message's shape.
//! Frozen here as the test's oracle; it is not used by the crate.

use profiledb::profile::message::snake_case_trait;
use profiledb::{
    Alias, CompactString, CompanyRef, Error, Group, Identify, Link, ListOp, Message, Number,
    Timestamp, Value,
};

type Result<T> = std::result::Result<T, Error>;

/// JSON text into a `serde_json::Value`, then the reference rules.
pub fn reference(json: &[u8]) -> Result<Message> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| Error::Malformed(e.to_string()))?;
    from_json(&value)
}

/// The reference rules on a parsed value.
pub fn from_json(value: &serde_json::Value) -> Result<Message> {
    let obj = value
        .as_object()
        .ok_or_else(|| malformed("message", "must be a JSON object"))?;
    let kind = match present(obj, "type") {
        None => "identify".to_string(),
        Some(serde_json::Value::String(s)) => s.trim().to_ascii_lowercase(),
        Some(_) => return Err(malformed("type", "must be a string")),
    };
    match kind.as_str() {
        "identify" => parse_identify(obj).map(Message::Identify),
        "group" => parse_group(obj).map(Message::Group),
        "alias" => parse_alias(obj).map(Message::Alias),
        "track" | "page" | "screen" => Ok(Message::Link(Link {
            user_id: id_field(obj, "userId")?,
            anonymous_id: id_field(obj, "anonymousId")?,
            message_id: id_field(obj, "messageId")?,
            timestamp: timestamp(obj)?,
        })),
        other => Err(malformed(
            "type",
            &format!(
                "unknown message type {other:?} (expected identify, group, alias, track, page or screen)"
            ),
        )),
    }
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

fn malformed(field: &str, rule: &str) -> Error {
    Error::Malformed(format!("{field}: {rule}"))
}

/// A member that is present and not `null` (JSON `null` counts as absent everywhere).
fn present<'a>(obj: &'a JsonObject, name: &str) -> Option<&'a serde_json::Value> {
    obj.get(name).filter(|v| !v.is_null())
}

/// An identifier given as a string or a number (a number becomes its decimal string).
fn id_value(value: &serde_json::Value, field: &str) -> Result<Option<String>> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(malformed(field, "must be a string or a number")),
    }
}

fn id_field(obj: &JsonObject, name: &str) -> Result<Option<String>> {
    match obj.get(name) {
        None => Ok(None),
        Some(v) => id_value(v, name),
    }
}

/// `timestamp`, falling back to `originalTimestamp` (Segment's client-side event time) when
/// `timestamp` is absent. `sentAt` / `receivedAt` are not event times and are ignored.
fn timestamp(obj: &JsonObject) -> Result<Option<Timestamp>> {
    for name in ["timestamp", "originalTimestamp"] {
        match present(obj, name) {
            None => continue,
            Some(serde_json::Value::String(s)) => {
                return Timestamp::parse(s.trim()).map(Some).ok_or_else(|| {
                    malformed(
                        name,
                        "must be an RFC 3339 date-time with a zone, e.g. 2026-11-22T10:00:00Z",
                    )
                });
            }
            Some(_) => {
                return Err(malformed(name, "must be an RFC 3339 date-time string"));
            }
        }
    }
    Ok(None)
}

/// RudderStack's `context.traits` when both levels are objects. A `context` or
/// `context.traits` of another type is ignored, as `context` always was (it is advisory).
fn context_traits(obj: &JsonObject) -> Option<&JsonObject> {
    match present(obj, "context")?.get("traits")? {
        serde_json::Value::Object(t) => Some(t),
        _ => None,
    }
}

/// An optional member that must be an object when present.
fn object_field<'a>(obj: &'a JsonObject, name: &str) -> Result<Option<&'a JsonObject>> {
    match present(obj, name) {
        None => Ok(None),
        Some(serde_json::Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(malformed(name, "must be an object")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Custom,
    Renamed,
    Direct,
}
type Traits = Vec<(String, Option<Value>)>;

/// `(name, value, source, path as written when it differs from traits.<name>)`.
type TraitItem = (String, Option<Value>, Source, Option<String>);

#[derive(Default)]
struct TraitsBuilder {
    items: Vec<TraitItem>,
    may_repeat: bool,
}

impl TraitsBuilder {
    fn push(
        &mut self,
        name: String,
        value: Option<Value>,
        source: Source,
        written: Option<String>,
    ) {
        self.may_repeat |= source != Source::Direct || written.is_some();
        self.items.push((name, value, source, written));
    }

    /// The traits, one per name, in first-seen order, and the `written_as` entries.
    fn finish(self) -> (Traits, Vec<(String, String)>) {
        let mut items = self.items;
        if self.may_repeat {
            let mut first: std::collections::HashMap<String, usize> =
                std::collections::HashMap::with_capacity(items.len());
            let mut keep: Vec<Option<TraitItem>> = Vec::with_capacity(items.len());
            for item in items {
                match first.get(&item.0) {
                    Some(&i) => {
                        if let Some(Some(old)) = keep.get_mut(i)
                            && item.2 >= old.2
                        {
                            *old = item;
                        }
                    }
                    None => {
                        first.insert(item.0.clone(), keep.len());
                        keep.push(Some(item));
                    }
                }
            }
            items = keep.into_iter().flatten().collect();
        }
        let mut written_as = Vec::new();
        let traits = items
            .into_iter()
            .map(|(name, value, _, written)| {
                if let Some(w) = written {
                    written_as.push((format!("traits.{name}"), w));
                }
                (name, value)
            })
            .collect();
        (traits, written_as)
    }
}

fn parse_identify(obj: &JsonObject) -> Result<Identify> {
    let mut msg = Identify {
        user_id: id_field(obj, "userId")?,
        anonymous_id: id_field(obj, "anonymousId")?,
        message_id: id_field(obj, "messageId")?,
        timestamp: timestamp(obj)?,
        ..Identify::default()
    };
    let mut builder = TraitsBuilder::default();
    let mut traits_id: Option<(String, &str)> = None;
    // RudderStack's clients send identify traits as `context.traits` (read first, so that
    // `traits` wins for a name both carry); `traits` (Segment) and `$set` (PostHog) are the
    // same thing; `$set` is read last.
    for section in ["context.traits", "traits", "$set"] {
        let traits = if section == "context.traits" {
            context_traits(obj)
        } else {
            object_field(obj, section)?
        };
        let Some(traits) = traits else {
            continue;
        };
        let path = |name: &str| format!("{section}.{name}");
        // The path as written, when it is not `traits.<name>`.
        let other_path = |name: &str| (section != "traits").then(|| path(name));
        for (name, value) in traits {
            match name.as_str() {
                "email" => match value {
                    serde_json::Value::Null => {}
                    serde_json::Value::String(s) => {
                        msg.email = Some(s.clone());
                        set_written(&mut msg.written_as, "traits.email", &path(name));
                    }
                    _ => return Err(malformed(&path(name), "must be a string")),
                },
                "id" if !value.is_null() => match id_value(value, "id") {
                    // GoSquared's person id.
                    Ok(Some(id)) => traits_id = Some((id, section)),
                    // Not an id: an ordinary property.
                    _ => builder.push(
                        name.clone(),
                        Value::from_json(value),
                        Source::Direct,
                        other_path(name),
                    ),
                },
                "company" => match company_ref(value, &path(name))? {
                    Some(company) => msg.company = Some(company),
                    None => builder.push(
                        name.clone(),
                        Value::from_json(value),
                        Source::Direct,
                        other_path(name),
                    ),
                },
                "custom" if value.is_object() => {
                    if let serde_json::Value::Object(custom) = value {
                        for (cname, cvalue) in custom {
                            builder.push(
                                cname.clone(),
                                Value::from_json(cvalue),
                                Source::Custom,
                                Some(format!("{section}.custom.{cname}")),
                            );
                        }
                    }
                }
                _ => match snake_case_trait(name) {
                    Some(snake) => builder.push(
                        snake.to_string(),
                        Value::from_json(value),
                        Source::Renamed,
                        Some(path(name)),
                    ),
                    None => builder.push(
                        name.clone(),
                        Value::from_json(value),
                        Source::Direct,
                        other_path(name),
                    ),
                },
            }
        }
    }
    if let Some((id, section)) = traits_id {
        match &msg.user_id {
            None => {
                msg.user_id = Some(id);
                set_written(&mut msg.written_as, "userId", &format!("{section}.id"));
            }
            Some(user_id) if *user_id == id => {}
            // A different id next to a userId: an ordinary property.
            Some(_) => builder.push(
                "id".to_string(),
                Some(Value::Str(id.into())),
                Source::Direct,
                (section != "traits").then(|| format!("{section}.id")),
            ),
        }
    }
    let (traits, written_as) = builder.finish();
    msg.traits = traits.into_iter().map(|(n, v)| (n.into(), v)).collect();
    msg.written_as.extend(written_as);

    if let Some(set_once) = object_field(obj, "$set_once")? {
        for (name, value) in set_once {
            if let Some(v) = Value::from_json(value) {
                msg.set_once.push((name.as_str().into(), v));
            }
        }
    }
    match present(obj, "$unset") {
        None => {}
        Some(serde_json::Value::Array(names)) => {
            for (i, name) in names.iter().enumerate() {
                match name {
                    serde_json::Value::String(s) => msg.unset.push(s.as_str().into()),
                    _ => return Err(malformed(&format!("$unset[{i}]"), "must be a string")),
                }
            }
        }
        Some(_) => return Err(malformed("$unset", "must be an array of property names")),
    }
    if let Some(add) = object_field(obj, "$add")? {
        for (name, value) in add {
            match value {
                serde_json::Value::Null => {}
                serde_json::Value::Number(n) => {
                    let number = match n.as_i64() {
                        Some(i) => Number::Int(i),
                        None => match n.as_f64() {
                            Some(f) if f.is_finite() => Number::Float(f),
                            _ => {
                                return Err(malformed(
                                    &format!("$add.{name}"),
                                    "must be a finite number",
                                ));
                            }
                        },
                    };
                    msg.add.push((name.as_str().into(), number));
                }
                _ => return Err(malformed(&format!("$add.{name}"), "must be a number")),
            }
        }
    }
    msg.lists = list_ops(obj)?;
    Ok(msg)
}

/// `$append: {name: item}`, `$union: {name: [items]}` (a single item counts as a one-item
/// list) and `$remove: {name: item}`. A `null` item is skipped.
fn list_ops(obj: &JsonObject) -> Result<Vec<(CompactString, ListOp)>> {
    let mut ops = Vec::new();
    for section in ["$append", "$union", "$remove"] {
        let Some(members) = object_field(obj, section)? else {
            continue;
        };
        for (name, value) in members {
            let Some(item) = Value::from_json(value) else {
                continue;
            };
            let op = match section {
                "$append" => ListOp::Append(item),
                "$union" => ListOp::Union(match item {
                    Value::Array(items) => items,
                    one => vec![one],
                }),
                _ => ListOp::Remove(item),
            };
            ops.push((name.as_str().into(), op));
        }
    }
    Ok(ops)
}

fn set_written(list: &mut Vec<(String, String)>, normalised: &str, written: &str) {
    list.retain(|(n, _)| n != normalised);
    if normalised != written {
        list.push((normalised.to_string(), written.to_string()));
    }
}

/// `traits.company` as a company reference when it is an object with a non-null `id`.
fn company_ref(value: &serde_json::Value, written: &str) -> Result<Option<CompanyRef>> {
    let serde_json::Value::Object(members) = value else {
        return Ok(None);
    };
    let Some(id) = present(members, "id") else {
        return Ok(None);
    };
    let Some(id) = id_value(id, &format!("{written}.id"))? else {
        return Ok(None);
    };
    let traits = members
        .iter()
        .filter(|(name, _)| name.as_str() != "id")
        .map(|(name, v)| (name.as_str().into(), Value::from_json(v)))
        .collect();
    Ok(Some(CompanyRef { id, traits }))
}

fn plain_traits(obj: &JsonObject) -> Result<Vec<(CompactString, Option<Value>)>> {
    Ok(object_field(obj, "traits")?
        .map(|t| {
            t.iter()
                .map(|(name, v)| (name.as_str().into(), Value::from_json(v)))
                .collect()
        })
        .unwrap_or_default())
}

fn parse_group(obj: &JsonObject) -> Result<Group> {
    Ok(Group {
        user_id: id_field(obj, "userId")?,
        anonymous_id: id_field(obj, "anonymousId")?,
        group_id: id_field(obj, "groupId")?.unwrap_or_default(),
        traits: plain_traits(obj)?,
        message_id: id_field(obj, "messageId")?,
        timestamp: timestamp(obj)?,
    })
}

fn parse_alias(obj: &JsonObject) -> Result<Alias> {
    Ok(Alias {
        previous_id: id_field(obj, "previousId")?.unwrap_or_default(),
        user_id: id_field(obj, "userId")?.unwrap_or_default(),
        message_id: id_field(obj, "messageId")?,
        timestamp: timestamp(obj)?,
    })
}
