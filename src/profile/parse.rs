//! The direct parser behind [`Message::parse`]: JSON bytes straight into the typed
//! [`Message`], in one pass of serde_json's tokenizer, without a `serde_json::Value` tree.
//!
//! It is the one place that holds the rules of a message's shape ([`Message::from_json`] reads
//! its value with the same visitors, [`parse_value`]). It accepts exactly what parsing into a
//! `serde_json::Value` and then the former `Value`-based rules accepted (kept as the oracle of
//! tests/parse_differential.rs, tests/support/reference_parse.rs), and refuses the rest with
//! the same error text:
//!
//! - JSON errors come from the same tokenizer at the same place, because every part of the
//!   message, fields profiledb ignores included, is read with `deserialize_any` (serde's
//!   `IgnoredAny` would skip strings without checking their UTF-8, which `Value` refuses);
//! - the rules of the message's shape are checked after the whole text is read, in the order
//!   the reference checks them, whatever order the members came in;
//! - a member given twice counts once, with its last value, and the members of an object are
//!   looked at in the order of their names, as `Value`'s sorted map has them.
//!
//! One difference, deliberate: `Value` reads an object whose first member is named
//! `$serde_json::private::RawValue` as raw JSON text (a serde_json implementation detail);
//! here it is an ordinary member.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, Result};
use crate::profile::message::{
    Alias, CompanyRef, Group, Identify, Link, Message, Number, Source, TraitsBuilder, malformed,
    set_written, snake_case_trait,
};
use crate::profile::props::ListOp;
use crate::types::value::{CompactString, Timestamp, Value};

/// serde_json's `from_slice`, read through `from_str` when the whole text is UTF-8: checked
/// once here (std's check runs a word at a time over ASCII), so that the tokenizer does not
/// check each string again as it reads it (~2,400 instructions of a W1 line's ~17,000:
/// docs/performance.md, "Engine round 54"). A text that is not UTF-8 is read by `from_slice`
/// as before, whose error names the first string with a byte that is not; for one that is,
/// the two readers are the same tokenizer and give the same values and the same errors.
fn from_json<'a, T: de::Deserialize<'a>>(json: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(json) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(json),
    }
}

/// Parse one Segment-shaped JSON message (see the module documentation).
pub fn parse(json: &[u8]) -> Result<Message> {
    let top: Top<'_> = from_json(json).map_err(|e| Error::Malformed(e.to_string()))?;
    match top {
        Top::NotObject => Err(malformed("message", "must be a JSON object")),
        Top::Object(fields) => fields.into_message(),
    }
}

/// [`parse`] of a message already read as a `serde_json::Value` (what
/// [`Message::from_json`] does): the same visitors read the value itself instead of its text
/// written out again, so the same rules apply and a number is the one the value holds.
pub fn parse_value(value: &serde_json::Value) -> Result<Message> {
    let top: Top<'_> =
        de::Deserialize::deserialize(value).map_err(|e| Error::Malformed(e.to_string()))?;
    match top {
        Top::NotObject => Err(malformed("message", "must be a JSON object")),
        Top::Object(fields) => fields.into_message(),
    }
}

/// A message's `type` member as written, for counting messages by type (the server's
/// `/metrics`): whatever the message's fate.
#[cfg_attr(not(feature = "server"), allow(dead_code))] // the server's ingest path
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TypeSeen<'a> {
    /// Absent or `null` (an identify), or the message is not an object.
    Unnamed,
    /// A string, as written (not trimmed).
    Named(Cow<'a, str>),
    /// Another JSON type, or the text is not JSON.
    Other,
}

/// Why [`parse_ingested`] refused a message.
#[cfg_attr(not(feature = "server"), allow(dead_code))] // the server's ingest path
#[derive(Debug)]
pub(crate) enum IngestRefusal {
    /// The text is not JSON (the tokenizer's error).
    Json(serde_json::Error),
    /// An identifier (`userId`, `anonymousId`, `previousId`, `groupId`, `traits.email`)
    /// holds a control character: the refusal's reason.
    Control(String),
    /// A rule of the message's shape ([`Error::Malformed`]).
    Shape(Error),
}

/// Identifier members that must not hold NUL or other control characters when they arrive
/// over the network (they end up in logs, URLs and other systems' keys): checked before the
/// shape rules, whatever the message's type.
#[cfg_attr(not(feature = "server"), allow(dead_code))] // the server's ingest path
const ID_MEMBERS: [&str; 4] = ["userId", "anonymousId", "previousId", "groupId"];

/// [`parse`] for a message that arrived over the network (the server's endpoints): also
/// refuses control characters in identifiers ([`IngestRefusal::Control`], before any shape
/// rule), tells a JSON error from a shape error, and reports the `type` as written.
#[cfg_attr(not(feature = "server"), allow(dead_code))] // the server's ingest path
pub(crate) fn parse_ingested(
    json: &[u8],
) -> (TypeSeen<'_>, std::result::Result<Message, IngestRefusal>) {
    ingested(from_json(json))
}

/// [`parse_ingested`] for a message already read as a `serde_json::Value` (the single-message
/// endpoints, the translations of the vendor dialects): read from the value by the same
/// visitors, so the same rules apply without writing the value back to text first. A number
/// is the one the value holds (what [`parse_ingested`] gives for the text it was read from).
#[cfg_attr(not(feature = "server"), allow(dead_code))] // the server's ingest path
pub(crate) fn parse_ingested_value(
    value: &serde_json::Value,
) -> (TypeSeen<'_>, std::result::Result<Message, IngestRefusal>) {
    ingested(de::Deserialize::deserialize(value))
}

#[cfg_attr(not(feature = "server"), allow(dead_code))] // the server's ingest path
fn ingested(
    top: std::result::Result<Top<'_>, serde_json::Error>,
) -> (TypeSeen<'_>, std::result::Result<Message, IngestRefusal>) {
    let top = match top {
        Ok(t) => t,
        Err(e) => return (TypeSeen::Other, Err(IngestRefusal::Json(e))),
    };
    let fields = match top {
        Top::NotObject => {
            let e = malformed("message", "must be a JSON object");
            return (TypeSeen::Unnamed, Err(IngestRefusal::Shape(e)));
        }
        Top::Object(fields) => fields,
    };
    let seen = match &fields.kind {
        None | Some(Loose::Null) => TypeSeen::Unnamed,
        Some(Loose::Text(t)) => TypeSeen::Named(t.clone()),
        Some(_) => TypeSeen::Other,
    };
    if let Some(reason) = fields.control_in_ids() {
        return (seen, Err(IngestRefusal::Control(reason)));
    }
    (seen, fields.into_message().map_err(IngestRefusal::Shape))
}

/// A member's value where profiledb wants a scalar (ids, `type`, `timestamp`, a trait named
/// `email` or `id`, ...): strings and numbers kept as written.
#[derive(Debug)]
enum Loose<'a> {
    Null,
    Text(Cow<'a, str>),
    Num(serde_json::Number),
    /// `true`/`false`, an array or an object, as a property value.
    Other(Value),
}

/// A member of `traits` (or of another object profiledb looks into): a property value, or
/// the parts that the rules of some names need.
#[derive(Debug)]
enum Slot<'a> {
    /// Any value (`None`: `null`).
    Plain(Option<Value>),
    /// A member named `email` or `id`.
    Loose(Loose<'a>),
    /// An object under a name whose members matter (`company`, `custom`), sorted by name,
    /// one per name; its member `id` is a [`Slot::Loose`].
    Object(Vec<(Cow<'a, str>, Slot<'a>)>),
}

/// An optional member that must be an object when present.
#[derive(Debug, Default)]
enum Section<'a> {
    #[default]
    Absent,
    Object(Vec<(Cow<'a, str>, Slot<'a>)>),
    NotObject,
}

/// `$unset`.
#[derive(Debug, Default)]
enum List<'a> {
    #[default]
    Absent,
    Array(Vec<Loose<'a>>),
    NotArray,
}

/// The members of the message profiledb reads; the last of a repeated member wins.
#[derive(Debug, Default)]
struct Fields<'a> {
    kind: Option<Loose<'a>>,
    user_id: Option<Loose<'a>>,
    anonymous_id: Option<Loose<'a>>,
    message_id: Option<Loose<'a>>,
    group_id: Option<Loose<'a>>,
    previous_id: Option<Loose<'a>>,
    timestamp: Option<Loose<'a>>,
    original_timestamp: Option<Loose<'a>>,
    /// RudderStack's `context.traits` when both levels are objects (else absent: `context` is
    /// advisory).
    context_traits: Section<'a>,
    traits: Section<'a>,
    set: Section<'a>,
    set_once: Section<'a>,
    add: Section<'a>,
    unset: List<'a>,
    append: Section<'a>,
    union: Section<'a>,
    remove: Section<'a>,
}

enum Top<'a> {
    Object(Box<Fields<'a>>),
    NotObject,
}

// ---- Conversions to values (the same as `Value::from_json`) ----

fn text_value(s: &str) -> Value {
    match Timestamp::parse(s) {
        Some(ts) => Value::DateTime(ts),
        None => Value::Str(CompactString::from(s)),
    }
}

fn number_value(n: &serde_json::Number) -> Value {
    match n.as_i64() {
        Some(i) => Value::Int(i),
        None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

impl Loose<'_> {
    fn into_value(self) -> Option<Value> {
        match self {
            Loose::Null => None,
            Loose::Text(s) => Some(text_value(&s)),
            Loose::Num(n) => Some(number_value(&n)),
            Loose::Other(v) => Some(v),
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Loose::Null)
    }
}

impl Slot<'_> {
    fn into_value(self) -> Option<Value> {
        match self {
            Slot::Plain(v) => v,
            Slot::Loose(l) => l.into_value(),
            Slot::Object(members) => Some(Value::Object(
                members
                    .into_iter()
                    .map(|(k, s)| (k.into_owned(), s.into_value().unwrap_or(Value::Null)))
                    .collect(),
            )),
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Slot::Plain(None) | Slot::Loose(Loose::Null))
    }
}

/// Sort members by name and keep the last of each name, as a `serde_json::Map` does.
fn sort_members<K: Ord, V>(members: &mut Vec<(K, V)>) {
    if members.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    members.sort_by(|a, b| a.0.cmp(&b.0));
    members.dedup_by(|later, kept| {
        if later.0 == kept.0 {
            std::mem::swap(later, kept);
            true
        } else {
            false
        }
    });
}

// ---- The rules (the same order and texts as the former `Value`-based rules) ----

/// An identifier given as a string or a number (a number becomes its decimal string).
fn id_value(value: Option<Loose<'_>>, field: &str) -> Result<Option<String>> {
    match value {
        None | Some(Loose::Null) => Ok(None),
        Some(Loose::Text(s)) => Ok(Some(s.into_owned())),
        Some(Loose::Num(n)) => Ok(Some(n.to_string())),
        Some(Loose::Other(_)) => Err(malformed(field, "must be a string or a number")),
    }
}

fn present(value: Option<Loose<'_>>) -> Option<Loose<'_>> {
    value.filter(|v| !v.is_null())
}

impl<'a> Fields<'a> {
    /// The refusal's reason when an identifier member or `traits.email` (as written, whatever
    /// the message's type) is a string holding a control character.
    #[cfg_attr(not(feature = "server"), allow(dead_code))] // the server's ingest path
    fn control_in_ids(&self) -> Option<String> {
        let ids = [
            &self.user_id,
            &self.anonymous_id,
            &self.previous_id,
            &self.group_id,
        ];
        let email = match &self.traits {
            Section::Object(members) => members
                .binary_search_by(|(name, _)| (**name).cmp("email"))
                .ok()
                .and_then(|i| match &members[i].1 {
                    Slot::Loose(Loose::Text(t)) => Some(("traits.email", &**t)),
                    _ => None,
                }),
            _ => None,
        };
        ID_MEMBERS
            .iter()
            .zip(ids)
            .filter_map(|(field, v)| match v {
                Some(Loose::Text(t)) => Some((*field, &**t)),
                _ => None,
            })
            .chain(email)
            .find(|(_, text)| text.chars().any(char::is_control))
            .map(|(field, _)| {
                format!("call refused: {field}: contains a control character (NUL, newline, ...)")
            })
    }

    fn into_message(mut self) -> Result<Message> {
        let kind = match present(self.kind.take()) {
            None => Cow::Borrowed("identify"),
            Some(Loose::Text(s)) => {
                let t = s.trim();
                if t.bytes().any(|b| b.is_ascii_uppercase()) {
                    Cow::Owned(t.to_ascii_lowercase())
                } else {
                    Cow::Owned(t.to_string())
                }
            }
            Some(_) => return Err(malformed("type", "must be a string")),
        };
        match &*kind {
            "identify" => self.identify().map(Message::Identify),
            "group" => self.group().map(Message::Group),
            "alias" => self.alias().map(Message::Alias),
            "track" | "page" | "screen" => Ok(Message::Link(Link {
                user_id: id_value(self.user_id.take(), "userId")?,
                anonymous_id: id_value(self.anonymous_id.take(), "anonymousId")?,
                message_id: id_value(self.message_id.take(), "messageId")?,
                timestamp: self.timestamp()?,
            })),
            other => Err(malformed(
                "type",
                &format!(
                    "unknown message type {other:?} (expected identify, group, alias, track, page or screen)"
                ),
            )),
        }
    }

    /// `timestamp`, falling back to `originalTimestamp`.
    fn timestamp(&mut self) -> Result<Option<Timestamp>> {
        for (name, value) in [
            ("timestamp", self.timestamp.take()),
            ("originalTimestamp", self.original_timestamp.take()),
        ] {
            match present(value) {
                None => continue,
                Some(Loose::Text(s)) => {
                    return Timestamp::parse(s.trim()).map(Some).ok_or_else(|| {
                        malformed(
                            name,
                            "must be an RFC 3339 date-time with a zone, e.g. 2026-11-22T10:00:00Z",
                        )
                    });
                }
                Some(_) => return Err(malformed(name, "must be an RFC 3339 date-time string")),
            }
        }
        Ok(None)
    }

    fn identify(mut self) -> Result<Identify> {
        let mut msg = Identify {
            user_id: id_value(self.user_id.take(), "userId")?,
            anonymous_id: id_value(self.anonymous_id.take(), "anonymousId")?,
            message_id: id_value(self.message_id.take(), "messageId")?,
            timestamp: self.timestamp()?,
            ..Identify::default()
        };
        let mut traits_id: Option<(String, &str)> = None;
        let sections = [
            ("context.traits", std::mem::take(&mut self.context_traits)),
            ("traits", std::mem::take(&mut self.traits)),
            ("$set", std::mem::take(&mut self.set)),
        ];
        let members = sections.iter().map(|(_, s)| match s {
            Section::Object(members) => members.len(),
            _ => 0,
        });
        let mut builder = TraitsBuilder::with_capacity(members.sum());
        for (section, members) in sections {
            let members = match members {
                Section::Absent => continue,
                Section::NotObject => return Err(malformed(section, "must be an object")),
                Section::Object(members) => members,
            };
            let path = |name: &str| format!("{section}.{name}");
            let other_path = |name: &str| (section != "traits").then(|| path(name));
            for (name, slot) in members {
                match &*name {
                    "email" => match slot {
                        Slot::Loose(Loose::Null) | Slot::Plain(None) => {}
                        Slot::Loose(Loose::Text(s)) => {
                            msg.email = Some(s.into_owned());
                            set_written(&mut msg.written_as, "traits.email", &path(&name));
                        }
                        _ => return Err(malformed(&path(&name), "must be a string")),
                    },
                    "id" if !slot.is_null() => match slot {
                        Slot::Loose(Loose::Text(s)) => traits_id = Some((s.into_owned(), section)),
                        Slot::Loose(Loose::Num(n)) => traits_id = Some((n.to_string(), section)),
                        other => builder.push(
                            CompactString::from(&*name),
                            other.into_value(),
                            Source::Direct,
                            other_path(&name),
                        ),
                    },
                    "company" => match company_ref(slot, &path(&name))? {
                        Ok(company) => msg.company = Some(company),
                        Err(slot) => builder.push(
                            CompactString::from(&*name),
                            slot.into_value(),
                            Source::Direct,
                            other_path(&name),
                        ),
                    },
                    "custom" if matches!(slot, Slot::Object(_)) => {
                        if let Slot::Object(custom) = slot {
                            for (cname, cslot) in custom {
                                let written = format!("{section}.custom.{cname}");
                                builder.push(
                                    CompactString::from(cname),
                                    cslot.into_value(),
                                    Source::Custom,
                                    Some(written),
                                );
                            }
                        }
                    }
                    _ => match snake_case_trait(&name) {
                        Some(snake) => builder.push(
                            CompactString::const_new(snake),
                            slot.into_value(),
                            Source::Renamed,
                            Some(path(&name)),
                        ),
                        None => {
                            let written = other_path(&name);
                            builder.push(
                                CompactString::from(name),
                                slot.into_value(),
                                Source::Direct,
                                written,
                            )
                        }
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
                Some(_) => builder.push(
                    CompactString::const_new("id"),
                    Some(Value::Str(id.into())),
                    Source::Direct,
                    (section != "traits").then(|| format!("{section}.id")),
                ),
            }
        }
        let (traits, written_as) = builder.finish();
        msg.traits = traits;
        msg.written_as.extend(written_as);

        match std::mem::take(&mut self.set_once) {
            Section::Absent => {}
            Section::NotObject => return Err(malformed("$set_once", "must be an object")),
            Section::Object(members) => {
                for (name, slot) in members {
                    if let Some(v) = slot.into_value() {
                        msg.set_once.push((CompactString::from(name), v));
                    }
                }
            }
        }
        match std::mem::take(&mut self.unset) {
            List::Absent => {}
            List::NotArray => {
                return Err(malformed("$unset", "must be an array of property names"));
            }
            List::Array(names) => {
                for (i, name) in names.into_iter().enumerate() {
                    match name {
                        Loose::Text(s) => msg.unset.push(CompactString::from(s)),
                        _ => return Err(malformed(&format!("$unset[{i}]"), "must be a string")),
                    }
                }
            }
        }
        match std::mem::take(&mut self.add) {
            Section::Absent => {}
            Section::NotObject => return Err(malformed("$add", "must be an object")),
            Section::Object(members) => {
                for (name, slot) in members {
                    let number = match slot {
                        Slot::Plain(None) | Slot::Loose(Loose::Null) => continue,
                        Slot::Loose(Loose::Num(n)) => add_number(&n),
                        Slot::Plain(Some(Value::Int(i))) => Some(Number::Int(i)),
                        Slot::Plain(Some(Value::Float(f))) => Some(Number::Float(f)),
                        _ => return Err(malformed(&format!("$add.{name}"), "must be a number")),
                    };
                    match number {
                        Some(Number::Float(f)) if !f.is_finite() => {
                            return Err(malformed(
                                &format!("$add.{name}"),
                                "must be a finite number",
                            ));
                        }
                        Some(number) => msg.add.push((CompactString::from(name), number)),
                        None => {
                            return Err(malformed(
                                &format!("$add.{name}"),
                                "must be a finite number",
                            ));
                        }
                    }
                }
            }
        }
        for (section, members) in [
            ("$append", std::mem::take(&mut self.append)),
            ("$union", std::mem::take(&mut self.union)),
            ("$remove", std::mem::take(&mut self.remove)),
        ] {
            let members = match members {
                Section::Absent => continue,
                Section::NotObject => return Err(malformed(section, "must be an object")),
                Section::Object(members) => members,
            };
            for (name, slot) in members {
                let Some(item) = slot.into_value() else {
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
                msg.lists.push((CompactString::from(name), op));
            }
        }
        Ok(msg)
    }

    fn group(mut self) -> Result<Group> {
        Ok(Group {
            user_id: id_value(self.user_id.take(), "userId")?,
            anonymous_id: id_value(self.anonymous_id.take(), "anonymousId")?,
            group_id: id_value(self.group_id.take(), "groupId")?.unwrap_or_default(),
            traits: match std::mem::take(&mut self.traits) {
                Section::Absent => Vec::new(),
                Section::NotObject => return Err(malformed("traits", "must be an object")),
                Section::Object(members) => members
                    .into_iter()
                    .map(|(name, slot)| (CompactString::from(name), slot.into_value()))
                    .collect(),
            },
            message_id: id_value(self.message_id.take(), "messageId")?,
            timestamp: self.timestamp()?,
        })
    }

    fn alias(mut self) -> Result<Alias> {
        Ok(Alias {
            previous_id: id_value(self.previous_id.take(), "previousId")?.unwrap_or_default(),
            user_id: id_value(self.user_id.take(), "userId")?.unwrap_or_default(),
            message_id: id_value(self.message_id.take(), "messageId")?,
            timestamp: self.timestamp()?,
        })
    }
}

fn add_number(n: &serde_json::Number) -> Option<Number> {
    match n.as_i64() {
        Some(i) => Some(Number::Int(i)),
        None => n.as_f64().map(Number::Float),
    }
}

/// `traits.company` as a company reference when it is an object with a non-null `id`;
/// otherwise the slot back, to be stored as an ordinary property.
fn company_ref<'a>(slot: Slot<'a>, written: &str) -> Result<Result<CompanyRef, Slot<'a>>> {
    let Slot::Object(members) = slot else {
        return Ok(Err(slot));
    };
    let id = match members.iter().find(|(name, _)| name == "id") {
        None => return Ok(Err(Slot::Object(members))),
        Some((_, slot)) if slot.is_null() => return Ok(Err(Slot::Object(members))),
        Some((_, Slot::Loose(Loose::Text(s)))) => s.to_string(),
        Some((_, Slot::Loose(Loose::Num(n)))) => n.to_string(),
        Some(_) => {
            return Err(malformed(
                &format!("{written}.id"),
                "must be a string or a number",
            ));
        }
    };
    let traits = members
        .into_iter()
        .filter(|(name, _)| name != "id")
        .map(|(name, slot)| (CompactString::from(name), slot.into_value()))
        .collect();
    Ok(Ok(CompanyRef { id, traits }))
}

// ---- Deserialisation: every part read through `deserialize_any` ----

/// A map key, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(
                self,
                s: &'de str,
            ) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> std::result::Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads and checks any value, keeps nothing.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Skip, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

/// A property value: [`Value`] as `Value::from_json_inner` builds it (`null` is `Null`).
struct Plain(Value);

impl<'de> de::Deserialize<'de> for Plain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(PlainVisitor).map(Plain)
    }
}

struct PlainVisitor;

impl<'de> Visitor<'de> for PlainVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> std::result::Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> std::result::Result<Value, E> {
        Ok(match i64::try_from(u) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(u as f64),
        })
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> std::result::Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Value, E> {
        Ok(text_value(s))
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Plain(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut members: Vec<(String, Value)> = Vec::new();
        while let Some(Key(k)) = map.next_key()? {
            let Plain(v) = map.next_value()?;
            members.push((k.into_owned(), v));
        }
        sort_members(&mut members);
        Ok(Value::Object(members))
    }
}

/// Reads a [`Loose`].
struct LooseSeed;

impl<'de> DeserializeSeed<'de> for LooseSeed {
    type Value = Loose<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Loose<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LooseSeed {
    type Value = Loose<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> std::result::Result<Loose<'de>, E> {
        Ok(Loose::Other(Value::Bool(b)))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> std::result::Result<Loose<'de>, E> {
        Ok(Loose::Num(i.into()))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> std::result::Result<Loose<'de>, E> {
        Ok(Loose::Num(u.into()))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> std::result::Result<Loose<'de>, E> {
        Ok(match serde_json::Number::from_f64(f) {
            Some(n) => Loose::Num(n),
            None => Loose::Other(Value::Float(f)),
        })
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> std::result::Result<Loose<'de>, E> {
        Ok(Loose::Text(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Loose<'de>, E> {
        Ok(Loose::Text(Cow::Owned(s.to_string())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> std::result::Result<Loose<'de>, E> {
        Ok(Loose::Text(Cow::Owned(s)))
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Loose<'de>, E> {
        Ok(Loose::Null)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Loose<'de>, E> {
        Ok(Loose::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Loose<'de>, A::Error> {
        PlainVisitor.visit_seq(seq).map(Loose::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Loose<'de>, A::Error> {
        PlainVisitor.visit_map(map).map(Loose::Other)
    }
}

/// The seed of a member of an object profiledb looks into: a [`Slot`] by its name.
fn slot_of<'de, A: MapAccess<'de>>(
    map: &mut A,
    name: &str,
) -> std::result::Result<Slot<'de>, A::Error> {
    Ok(match name {
        "email" | "id" => Slot::Loose(map.next_value_seed(LooseSeed)?),
        "company" | "custom" => map.next_value_seed(ObjectSeed)?,
        _ => Slot::Plain(match map.next_value::<Plain>()?.0 {
            Value::Null => None,
            v => Some(v),
        }),
    })
}

/// Members of an object, each read by [`slot_of`], sorted by name, one per name.
fn members<'de, A: MapAccess<'de>>(
    mut map: A,
) -> std::result::Result<Vec<(Cow<'de, str>, Slot<'de>)>, A::Error> {
    let mut members = Vec::new();
    while let Some(Key(name)) = map.next_key()? {
        if members.is_empty() {
            // Room for a profile's usual traits at once rather than by doublings (serde_json
            // gives no size hint), allocated only for an object with members.
            members.reserve(map.size_hint().unwrap_or(16).min(64));
        }
        let slot = slot_of(&mut map, &name)?;
        members.push((name, slot));
    }
    sort_members(&mut members);
    Ok(members)
}

/// `company` / `custom`: an object's members as slots, anything else as a plain value.
struct ObjectSeed;

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = Slot<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Slot<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! plain_scalars {
    ($wrap:expr) => {
        fn visit_bool<E: de::Error>(self, b: bool) -> std::result::Result<Self::Value, E> {
            PlainVisitor.visit_bool(b).map($wrap)
        }
        fn visit_i64<E: de::Error>(self, i: i64) -> std::result::Result<Self::Value, E> {
            PlainVisitor.visit_i64(i).map($wrap)
        }
        fn visit_u64<E: de::Error>(self, u: u64) -> std::result::Result<Self::Value, E> {
            PlainVisitor.visit_u64(u).map($wrap)
        }
        fn visit_f64<E: de::Error>(self, f: f64) -> std::result::Result<Self::Value, E> {
            PlainVisitor.visit_f64(f).map($wrap)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Self::Value, E> {
            PlainVisitor.visit_str(s).map($wrap)
        }
        fn visit_seq<A: SeqAccess<'de>>(
            self,
            seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            PlainVisitor.visit_seq(seq).map($wrap)
        }
    };
}

impl<'de> Visitor<'de> for ObjectSeed {
    type Value = Slot<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    plain_scalars!(|v| Slot::Plain(Some(v)));
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Slot<'de>, E> {
        Ok(Slot::Plain(None))
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Slot<'de>, E> {
        Ok(Slot::Plain(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Slot<'de>, A::Error> {
        members(map).map(Slot::Object)
    }
}

/// `traits`, `$set`, `$set_once`, `$add`: an object's members, or not an object.
struct SectionSeed;

impl<'de> DeserializeSeed<'de> for SectionSeed {
    type Value = Section<'de>;
    fn deserialize<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Section<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SectionSeed {
    type Value = Section<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    plain_scalars!(|_| Section::NotObject);
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Section<'de>, E> {
        Ok(Section::Absent)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Section<'de>, E> {
        Ok(Section::Absent)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Section<'de>, A::Error> {
        members(map).map(Section::Object)
    }
}

/// `$unset`: an array's elements, or not an array.
struct ListSeed;

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = List<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<List<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = List<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<List<'de>, E> {
        Ok(List::NotArray)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<List<'de>, E> {
        Ok(List::NotArray)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<List<'de>, E> {
        Ok(List::NotArray)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<List<'de>, E> {
        Ok(List::NotArray)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<List<'de>, E> {
        Ok(List::NotArray)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<List<'de>, E> {
        Ok(List::Absent)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<List<'de>, E> {
        Ok(List::Absent)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<List<'de>, A::Error> {
        SkipVisitor.visit_map(map).map(|_| List::NotArray)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<List<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(LooseSeed)? {
            items.push(item);
        }
        Ok(List::Array(items))
    }
}

/// `context`: its `traits` when both are objects, else absent.
struct ContextSeed;

impl<'de> DeserializeSeed<'de> for ContextSeed {
    type Value = Section<'de>;
    fn deserialize<D: Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Section<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ContextSeed {
    type Value = Section<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Section<'de>, E> {
        Ok(Section::Absent)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<Section<'de>, E> {
        Ok(Section::Absent)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<Section<'de>, E> {
        Ok(Section::Absent)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Section<'de>, E> {
        Ok(Section::Absent)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<Section<'de>, E> {
        Ok(Section::Absent)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Section<'de>, E> {
        Ok(Section::Absent)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Section<'de>, E> {
        Ok(Section::Absent)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Section<'de>, A::Error> {
        SkipVisitor.visit_seq(seq).map(|_| Section::Absent)
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Section<'de>, A::Error> {
        let mut traits = Section::Absent;
        while let Some(Key(name)) = map.next_key()? {
            if name == "traits" {
                traits = match map.next_value_seed(SectionSeed)? {
                    Section::NotObject => Section::Absent,
                    other => other,
                };
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok(traits)
    }
}

impl<'de> de::Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    plain_scalars!(|_| Top::NotObject);
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Top<'de>, E> {
        Ok(Top::NotObject)
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Top<'de>, E> {
        Ok(Top::NotObject)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Top<'de>, A::Error> {
        let mut f = Fields::default();
        while let Some(Key(name)) = map.next_key()? {
            match &*name {
                "type" => f.kind = Some(map.next_value_seed(LooseSeed)?),
                "userId" => f.user_id = Some(map.next_value_seed(LooseSeed)?),
                "anonymousId" => f.anonymous_id = Some(map.next_value_seed(LooseSeed)?),
                "messageId" => f.message_id = Some(map.next_value_seed(LooseSeed)?),
                "groupId" => f.group_id = Some(map.next_value_seed(LooseSeed)?),
                "previousId" => f.previous_id = Some(map.next_value_seed(LooseSeed)?),
                "timestamp" => f.timestamp = Some(map.next_value_seed(LooseSeed)?),
                "originalTimestamp" => f.original_timestamp = Some(map.next_value_seed(LooseSeed)?),
                "traits" => f.traits = map.next_value_seed(SectionSeed)?,
                "$set" => f.set = map.next_value_seed(SectionSeed)?,
                "$set_once" => f.set_once = map.next_value_seed(SectionSeed)?,
                "$add" => f.add = map.next_value_seed(SectionSeed)?,
                "$unset" => f.unset = map.next_value_seed(ListSeed)?,
                "$append" => f.append = map.next_value_seed(SectionSeed)?,
                "$union" => f.union = map.next_value_seed(SectionSeed)?,
                "$remove" => f.remove = map.next_value_seed(SectionSeed)?,
                "context" => f.context_traits = map.next_value_seed(ContextSeed)?,
                _ => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Top::Object(Box::new(f)))
    }
}
