//! The W1 identify workload written against a store of whole profiles, as a competent user of
//! SQLite, redb, fjall or a hand-written log would write it: a profiles table (key -> the
//! profile, encoded), a `user_id -> key` index and an `email -> key` index.
//!
//! Per call: look up by user id and by (normalised) email; create or update the profile and
//! set the call's traits (last write wins per property, by the call's timestamp); when the call
//! names an id-only profile and an email-only profile that exist apart, merge them: move the
//! properties (newest per property wins), re-point the email index, delete the merged-away
//! profile. A profile that already carries another user id is never merged (SPEC 3.2.4): the
//! email is moved instead. Peers do not de-duplicate `messageId`s (profiledb does).
//!
//! The profile is a typed record ([`Profile`]) whose property values are [`PropValue`] and
//! whose stored form is bincode 2 ([`Bincode`]). [`Json`] keeps the earlier form (the same
//! record with `serde_json::Value` properties, as compact JSON) for the extra JSON rows.

use std::marker::PhantomData;

use profiledb::{Identify, Message, Value};
use serde::{Deserialize, Serialize};

/// A property value, typed: the kinds of `profiledb::Value`, owned by the peers.
#[derive(Debug, Clone, PartialEq, bincode::Encode, bincode::Decode)]
pub enum PropValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Microseconds since the Unix epoch, UTC.
    DateTime(i64),
    Array(Vec<PropValue>),
    Object(Vec<(String, PropValue)>),
    /// A `null` nested inside an array or object.
    Null,
}

/// How a call's trait value becomes a stored property value.
pub trait PropVal: Sized {
    fn from_value(v: &Value) -> Self;
}

impl PropVal for PropValue {
    fn from_value(v: &Value) -> Self {
        match v {
            Value::Bool(b) => PropValue::Bool(*b),
            Value::Int(i) => PropValue::Int(*i),
            Value::Float(f) => PropValue::Float(*f),
            Value::Str(s) => PropValue::Str(s.to_string()),
            Value::DateTime(t) => PropValue::DateTime(t.0),
            Value::Array(items) => PropValue::Array(items.iter().map(Self::from_value).collect()),
            Value::Object(members) => PropValue::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), Self::from_value(v)))
                    .collect(),
            ),
            Value::Null => PropValue::Null,
        }
    }
}

impl PropVal for serde_json::Value {
    fn from_value(v: &Value) -> Self {
        v.to_json()
    }
}

/// One profile as the peers store it. The serde names are the short keys of the JSON form
/// (unchanged from the earlier peers, so the JSON rows stay comparable).
#[derive(Debug, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub struct Profile<V> {
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Normalised (trimmed, lower case).
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Every `anonymousId` seen (W1 sends none).
    #[serde(rename = "a", default, skip_serializing_if = "Vec::is_empty")]
    pub anonymous_ids: Vec<String>,
    /// Microseconds.
    #[serde(rename = "c")]
    pub created_at: i64,
    /// Microseconds.
    #[serde(rename = "t")]
    pub updated_at: i64,
    /// The property map, sorted by name: (name, value, timestamp of the call that set it).
    #[serde(rename = "p")]
    pub props: Vec<(String, V, i64)>,
}

impl<V> Default for Profile<V> {
    fn default() -> Self {
        Profile {
            user_id: None,
            email: None,
            anonymous_ids: Vec::new(),
            created_at: 0,
            updated_at: 0,
            props: Vec::new(),
        }
    }
}

/// What the workload needs from a store of decoded profiles, inside one open write
/// transaction. Every profile [`Store::load`]ed by a call is [`Store::put`] back or
/// [`Store::del`]eted by the same call.
pub trait Store<V> {
    fn uid(&mut self, uid: &str) -> Option<u64>;
    fn email(&mut self, email: &str) -> Option<u64>;
    /// The profile under `key` (an empty one if none).
    fn load(&mut self, key: u64) -> Profile<V>;
    fn put(&mut self, key: u64, profile: Profile<V>);
    fn del(&mut self, key: u64);
    fn set_uid(&mut self, uid: &str, key: u64);
    fn set_email(&mut self, email: &str, key: u64);
    fn del_email(&mut self, email: &str);
}

/// A key-value store of encoded profiles (SQLite, redb, fjall), inside one write transaction.
pub trait Kv {
    fn uid(&mut self, uid: &str) -> Option<u64>;
    fn email(&mut self, email: &str) -> Option<u64>;
    /// Calls `read` with the stored bytes of `key`, in place where the store allows; false if
    /// there is none.
    fn profile(&mut self, key: u64, read: &mut dyn FnMut(&[u8])) -> bool;
    fn set_uid(&mut self, uid: &str, key: u64);
    fn set_email(&mut self, email: &str, key: u64);
    fn del_email(&mut self, email: &str);
    fn set_profile(&mut self, key: u64, value: &[u8]);
    fn del_profile(&mut self, key: u64);
}

/// How a profile is stored as bytes.
pub trait Codec {
    type Val: PropVal;
    fn decode(bytes: &[u8]) -> Profile<Self::Val>;
    fn encode(profile: &Profile<Self::Val>, out: &mut Vec<u8>);
}

/// bincode 2, standard configuration (varint integers), derived encoder.
pub struct Bincode;

impl Codec for Bincode {
    type Val = PropValue;
    fn decode(bytes: &[u8]) -> Profile<PropValue> {
        bincode::decode_from_slice(bytes, bincode::config::standard())
            .expect("a bincode profile written by this peer")
            .0
    }
    fn encode(profile: &Profile<PropValue>, out: &mut Vec<u8>) {
        bincode::encode_into_std_write(profile, out, bincode::config::standard())
            .expect("encoding into a Vec cannot fail");
    }
}

/// Compact JSON of the profile with `serde_json::Value` properties (the earlier peers).
pub struct Json;

impl Codec for Json {
    type Val = serde_json::Value;
    fn decode(bytes: &[u8]) -> Profile<serde_json::Value> {
        serde_json::from_slice(bytes).expect("a JSON profile written by this peer")
    }
    fn encode(profile: &Profile<serde_json::Value>, out: &mut Vec<u8>) {
        serde_json::to_writer(out, profile).expect("encoding into a Vec cannot fail");
    }
}

/// A [`Kv`] seen as a [`Store`] through codec `C`.
pub struct Coded<'a, C> {
    kv: &'a mut dyn Kv,
    buf: &'a mut Vec<u8>,
    codec: PhantomData<C>,
}

impl<'a, C: Codec> Coded<'a, C> {
    /// `buf` is the encoding scratch, reused call after call.
    pub fn new(kv: &'a mut dyn Kv, buf: &'a mut Vec<u8>) -> Self {
        Coded {
            kv,
            buf,
            codec: PhantomData,
        }
    }
}

impl<C: Codec> Store<C::Val> for Coded<'_, C> {
    fn uid(&mut self, uid: &str) -> Option<u64> {
        self.kv.uid(uid)
    }
    fn email(&mut self, email: &str) -> Option<u64> {
        self.kv.email(email)
    }
    fn load(&mut self, key: u64) -> Profile<C::Val> {
        let mut out = None;
        self.kv.profile(key, &mut |b| out = Some(C::decode(b)));
        out.unwrap_or_default()
    }
    fn put(&mut self, key: u64, profile: Profile<C::Val>) {
        self.buf.clear();
        C::encode(&profile, self.buf);
        self.kv.set_profile(key, self.buf);
    }
    fn del(&mut self, key: u64) {
        self.kv.del_profile(key);
    }
    fn set_uid(&mut self, uid: &str, key: u64) {
        self.kv.set_uid(uid, key);
    }
    fn set_email(&mut self, email: &str, key: u64) {
        self.kv.set_email(email, key);
    }
    fn del_email(&mut self, email: &str) {
        self.kv.del_email(email);
    }
}

fn set_prop<V>(p: &mut Vec<(String, V, i64)>, name: &str, v: V, ts: i64) {
    match p.binary_search_by(|(n, _, _)| n.as_str().cmp(name)) {
        Ok(i) => {
            if ts >= p[i].2 {
                p[i].1 = v;
                p[i].2 = ts;
            }
        }
        Err(i) => p.insert(i, (name.to_string(), v, ts)),
    }
}

fn merge_props<V>(into: &mut Vec<(String, V, i64)>, from: Vec<(String, V, i64)>) {
    for (name, v, ts) in from {
        match into.binary_search_by(|(n, _, _)| n.as_str().cmp(&name)) {
            Ok(i) => {
                if ts > into[i].2 {
                    into[i].1 = v;
                    into[i].2 = ts;
                }
            }
            Err(i) => into.insert(i, (name, v, ts)),
        }
    }
}

/// Apply one W1 message. `next_key` is the last key handed out.
pub fn identify<V: PropVal, S: Store<V> + ?Sized>(
    store: &mut S,
    message: &Message,
    next_key: &mut u64,
) {
    let Message::Identify(call) = message else {
        return;
    };
    identify_call(store, call, next_key)
}

fn identify_call<V: PropVal, S: Store<V> + ?Sized>(
    store: &mut S,
    call: &Identify,
    next_key: &mut u64,
) {
    let ts = call.timestamp.map_or(0, |t| t.0);
    let email = call.email.as_deref().map(|e| e.trim().to_lowercase());
    let by_uid = call.user_id.as_deref().and_then(|u| store.uid(u));
    let by_email = email.as_deref().and_then(|e| store.email(e));
    let new = |next_key: &mut u64| {
        *next_key += 1;
        (
            *next_key,
            Profile {
                created_at: ts,
                ..Profile::default()
            },
        )
    };
    let (key, mut rec) = match (by_uid, by_email) {
        (None, None) => new(next_key),
        (Some(k), None) => (k, store.load(k)),
        (None, Some(k)) => {
            let rec = store.load(k);
            if rec.user_id.is_some() && call.user_id.is_some() && rec.user_id != call.user_id {
                // Another person's email: the new user id gets its own profile, the email moves.
                let mut old = rec;
                old.email = None;
                store.put(k, old);
                store.del_email(email.as_deref().unwrap_or_default());
                new(next_key)
            } else {
                (k, rec)
            }
        }
        (Some(a), Some(b)) if a == b => (a, store.load(a)),
        (Some(a), Some(b)) => {
            let mut survivor = store.load(a);
            let mut other = store.load(b);
            if other.user_id.is_some() && other.user_id != call.user_id {
                // Protection: two user ids are never merged; the email moves to the survivor.
                other.email = None;
                store.put(b, other);
            } else {
                merge_props(&mut survivor.props, std::mem::take(&mut other.props));
                for anon in other.anonymous_ids {
                    if !survivor.anonymous_ids.contains(&anon) {
                        survivor.anonymous_ids.push(anon);
                    }
                }
                survivor.created_at = survivor.created_at.min(other.created_at);
                survivor.updated_at = survivor.updated_at.max(other.updated_at);
                store.del(b);
            }
            (a, survivor)
        }
    };
    if let Some(u) = &call.user_id
        && rec.user_id.as_deref() != Some(u.as_str())
    {
        rec.user_id = Some(u.clone());
        store.set_uid(u, key);
    }
    if let Some(e) = &email
        && rec.email.as_deref() != Some(e.as_str())
    {
        if let Some(old) = rec.email.take() {
            store.del_email(&old);
        }
        rec.email = Some(e.clone());
        store.set_email(e, key);
    }
    if let Some(anon) = &call.anonymous_id
        && !rec.anonymous_ids.contains(anon)
    {
        rec.anonymous_ids.push(anon.clone());
    }
    for (name, value) in &call.traits {
        match value {
            Some(v) => set_prop(&mut rec.props, name, V::from_value(v), ts),
            None => rec.props.retain(|(n, _, _)| n != name),
        }
    }
    rec.updated_at = rec.updated_at.max(ts);
    store.put(key, rec);
}
