//! Segment-shaped messages (SPEC 2): parsed from JSON into normalised, typed calls.
//!
//! Normalisation done here, once: `null` is absent; a numeric `userId` becomes its decimal
//! string; GoSquared's nested `traits.custom` object is flattened into ordinary traits;
//! Segment's camelCase reserved traits (`firstName`, `createdAt`, ...) are renamed to
//! snake_case; `traits.email` is lifted out as the call's email; `traits.company` (an object
//! with an `id`) is lifted out as the company reference.

use crate::error::{Error, Result};
use crate::profile::props::ListOp;
use crate::types::value::{Timestamp, Value};

/// A numeric increment of `$add`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// Integer increment.
    Int(i64),
    /// Fractional increment.
    Float(f64),
}

/// `traits.company` with an `id`: upsert that company and make the person a member.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompanyRef {
    /// The company's id (a number becomes its decimal string).
    pub id: String,
    /// The company's own properties (everything in the object but `id`); `None` = remove.
    pub traits: Vec<(String, Option<Value>)>,
}

/// An `identify` call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Identify {
    /// `userId`.
    pub user_id: Option<String>,
    /// `anonymousId`.
    pub anonymous_id: Option<String>,
    /// `traits.email`, as given (validation and normalisation come later).
    pub email: Option<String>,
    /// `messageId`.
    pub message_id: Option<String>,
    /// `timestamp`; `None` means now.
    pub timestamp: Option<Timestamp>,
    /// Traits to set, normalised names; `None` = a `null` (remove).
    pub traits: Vec<(String, Option<Value>)>,
    /// `$set_once`.
    pub set_once: Vec<(String, Value)>,
    /// `$unset`.
    pub unset: Vec<String>,
    /// `$add`.
    pub add: Vec<(String, Number)>,
    /// `$append`, `$union` and `$remove`, in that order (docs/semantics.md, "List
    /// operations").
    pub lists: Vec<(String, ListOp)>,
    /// `traits.company` with an id.
    pub company: Option<CompanyRef>,
    /// Where a normalised field came from when the caller wrote it differently:
    /// `(normalised path, path as written)`, e.g. `("traits.first_name", "traits.firstName")`,
    /// `("traits.plan", "traits.custom.plan")`, `("userId", "traits.id")`. Empty in the common
    /// case; validation uses it to name fields as the caller wrote them.
    pub written_as: Vec<(String, String)>,
}

impl Identify {
    /// The path of a normalised field (`userId`, `traits.first_name`, ...) as the caller wrote it.
    pub fn field_as_written<'a>(&'a self, normalised: &'a str) -> &'a str {
        self.written_as
            .iter()
            .find(|(n, _)| n == normalised)
            .map(|(_, w)| w.as_str())
            .unwrap_or(normalised)
    }
}

/// A `group` call: upsert company `group_id` with `traits`; with a user/anonymous id, make
/// that person a member.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Group {
    /// `userId`.
    pub user_id: Option<String>,
    /// `anonymousId`.
    pub anonymous_id: Option<String>,
    /// `groupId` (required).
    pub group_id: String,
    /// The company's traits.
    pub traits: Vec<(String, Option<Value>)>,
    /// `messageId`.
    pub message_id: Option<String>,
    /// `timestamp`.
    pub timestamp: Option<Timestamp>,
}

/// An `alias` call: `previous_id` and `user_id` are one person.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alias {
    /// `previousId` (required).
    pub previous_id: String,
    /// `userId` (required).
    pub user_id: String,
    /// `messageId`.
    pub message_id: Option<String>,
    /// `timestamp`.
    pub timestamp: Option<Timestamp>,
}

/// A `track`, `page` or `screen` call: not stored as an event, but with both ids it links
/// them like an identify without traits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Link {
    /// `userId`.
    pub user_id: Option<String>,
    /// `anonymousId`.
    pub anonymous_id: Option<String>,
    /// `messageId`.
    pub message_id: Option<String>,
    /// `timestamp`.
    pub timestamp: Option<Timestamp>,
}

/// Any message profiledb accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `identify`.
    Identify(Identify),
    /// `group`.
    Group(Group),
    /// `alias`.
    Alias(Alias),
    /// `track`, `page`, `screen`.
    Link(Link),
}

impl Message {
    /// Parse one Segment-shaped JSON message. `type` defaults to `identify` when absent.
    /// Never panics; a message that is not JSON or not of a known shape is `Error::Malformed`
    /// naming the field.
    ///
    /// Parses straight into the message, without a `serde_json::Value` (see
    /// `profile::parse`); accepts and refuses exactly what `serde_json::from_slice` into a
    /// `Value` followed by [`Message::from_json`] does, with the same error text.
    pub fn parse(json: &[u8]) -> Result<Message> {
        crate::profile::parse::parse(json)
    }

    /// Same as [`Message::parse`] from an already-parsed JSON value.
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

    /// The message's `messageId`, for dedupe. A blank one (empty or only whitespace) counts as
    /// absent: otherwise every later blank-id call would be answered `duplicate`.
    pub fn message_id(&self) -> Option<&str> {
        let id = match self {
            Message::Identify(m) => m.message_id.as_deref(),
            Message::Group(m) => m.message_id.as_deref(),
            Message::Alias(m) => m.message_id.as_deref(),
            Message::Link(m) => m.message_id.as_deref(),
        };
        id.filter(|id| !id.trim().is_empty())
    }

    /// The message's `timestamp`.
    pub fn timestamp(&self) -> Option<Timestamp> {
        match self {
            Message::Identify(m) => m.timestamp,
            Message::Group(m) => m.timestamp,
            Message::Alias(m) => m.timestamp,
            Message::Link(m) => m.timestamp,
        }
    }
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

pub(crate) fn malformed(field: &str, rule: &str) -> Error {
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

/// Segment's camelCase reserved traits and their snake_case names.
const CAMEL_CASE_TRAITS: &[(&str, &str)] = &[
    ("firstName", "first_name"),
    ("lastName", "last_name"),
    ("createdAt", "created_at"),
    ("companyName", "company_name"),
    ("companySize", "company_size"),
    ("companyIndustry", "company_industry"),
    ("companyPosition", "company_position"),
];

/// The snake_case name of a camelCase reserved trait.
pub fn snake_case_trait(name: &str) -> Option<&'static str> {
    CAMEL_CASE_TRAITS
        .iter()
        .find(|(camel, _)| *camel == name)
        .map(|(_, snake)| *snake)
}

/// Priority of a trait's source: when two sources give the same normalised name, the higher
/// one wins (a snake_case name written directly beats a renamed camelCase one, which beats a
/// member of GoSquared's `custom` object; between equals, the later one wins).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    Custom,
    Renamed,
    Direct,
}

/// Collects traits; duplicates of one normalised name are resolved once at the end, and only
/// when they are possible (renamed, flattened or `$set` traits), so the common call pays
/// nothing for it.
/// Normalised traits; `None` = remove.
type Traits = Vec<(String, Option<Value>)>;

/// `(name, value, source, path as written when it differs from traits.<name>)`.
type TraitItem = (String, Option<Value>, Source, Option<String>);

#[derive(Default)]
pub(crate) struct TraitsBuilder {
    items: Vec<TraitItem>,
    may_repeat: bool,
}

impl TraitsBuilder {
    pub(crate) fn push(
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
    pub(crate) fn finish(self) -> (Traits, Vec<(String, String)>) {
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
                Some(Value::Str(id)),
                Source::Direct,
                (section != "traits").then(|| format!("{section}.id")),
            ),
        }
    }
    let (traits, written_as) = builder.finish();
    msg.traits = traits;
    msg.written_as.extend(written_as);

    if let Some(set_once) = object_field(obj, "$set_once")? {
        for (name, value) in set_once {
            if let Some(v) = Value::from_json(value) {
                msg.set_once.push((name.clone(), v));
            }
        }
    }
    match present(obj, "$unset") {
        None => {}
        Some(serde_json::Value::Array(names)) => {
            for (i, name) in names.iter().enumerate() {
                match name {
                    serde_json::Value::String(s) => msg.unset.push(s.clone()),
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
                    msg.add.push((name.clone(), number));
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
fn list_ops(obj: &JsonObject) -> Result<Vec<(String, ListOp)>> {
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
            ops.push((name.clone(), op));
        }
    }
    Ok(ops)
}

pub(crate) fn set_written(list: &mut Vec<(String, String)>, normalised: &str, written: &str) {
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
        .map(|(name, v)| (name.clone(), Value::from_json(v)))
        .collect();
    Ok(Some(CompanyRef { id, traits }))
}

fn plain_traits(obj: &JsonObject) -> Result<Vec<(String, Option<Value>)>> {
    Ok(object_field(obj, "traits")?
        .map(|t| {
            t.iter()
                .map(|(name, v)| (name.clone(), Value::from_json(v)))
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
