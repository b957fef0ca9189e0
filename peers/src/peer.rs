//! The W1 identify workload written against a plain key-value store, as a competent user of
//! SQLite, redb or fjall would write it: a `profiles` table (key -> the profile as compact
//! JSON), a `user_id -> key` index and an `email -> key` index.
//!
//! Per call: look up by user id and by (normalised) email; create or update the profile and
//! set the call's traits (last write wins per property, by the call's timestamp); when the call
//! names an id-only profile and an email-only profile that exist apart, merge them: move the
//! properties (newest per property wins), re-point the email index, delete the merged-away
//! profile. A profile that already carries another user id is never merged (SPEC 3.2.4): the
//! email is moved instead. Peers do not de-duplicate `messageId`s (profiledb does).

use profiledb::{Identify, Message};
use serde::{Deserialize, Serialize};

/// One profile as the peers store it.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Rec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// created_at, microseconds.
    pub c: i64,
    /// updated_at, microseconds.
    pub t: i64,
    /// Properties sorted by name: (name, value, timestamp of the call that set it).
    pub p: Vec<(String, serde_json::Value, i64)>,
}

/// What the workload needs from a store, inside one open write transaction.
pub trait Kv {
    fn uid(&mut self, uid: &str) -> Option<u64>;
    fn email(&mut self, email: &str) -> Option<u64>;
    fn profile(&mut self, key: u64) -> Option<Vec<u8>>;
    fn set_uid(&mut self, uid: &str, key: u64);
    fn set_email(&mut self, email: &str, key: u64);
    fn del_email(&mut self, email: &str);
    fn set_profile(&mut self, key: u64, value: &[u8]);
    fn del_profile(&mut self, key: u64);
}

fn load(kv: &mut dyn Kv, key: u64) -> Rec {
    kv.profile(key)
        .map(|b| serde_json::from_slice(&b).expect("profile JSON"))
        .unwrap_or_default()
}

fn store(kv: &mut dyn Kv, key: u64, rec: &Rec, buf: &mut Vec<u8>) {
    buf.clear();
    serde_json::to_writer(&mut *buf, rec).expect("encode");
    kv.set_profile(key, buf);
}

fn set_prop(p: &mut Vec<(String, serde_json::Value, i64)>, name: &str, v: serde_json::Value, ts: i64) {
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

fn merge_props(into: &mut Vec<(String, serde_json::Value, i64)>, from: Vec<(String, serde_json::Value, i64)>) {
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
pub fn identify(kv: &mut dyn Kv, message: &Message, next_key: &mut u64, buf: &mut Vec<u8>) {
    let Message::Identify(call) = message else {
        return;
    };
    identify_call(kv, call, next_key, buf)
}

fn identify_call(kv: &mut dyn Kv, call: &Identify, next_key: &mut u64, buf: &mut Vec<u8>) {
    let ts = call.timestamp.map_or(0, |t| t.0);
    let email = call.email.as_deref().map(|e| e.trim().to_lowercase());
    let by_uid = call.user_id.as_deref().and_then(|u| kv.uid(u));
    let by_email = email.as_deref().and_then(|e| kv.email(e));
    let new = |next_key: &mut u64| {
        *next_key += 1;
        (
            *next_key,
            Rec {
                c: ts,
                ..Rec::default()
            },
        )
    };
    let (key, mut rec) = match (by_uid, by_email) {
        (None, None) => new(next_key),
        (Some(k), None) => (k, load(kv, k)),
        (None, Some(k)) => {
            let rec = load(kv, k);
            if rec.u.is_some() && call.user_id.is_some() && rec.u != call.user_id {
                // Another person's email: the new user id gets its own profile, the email moves.
                let mut old = rec;
                old.e = None;
                store(kv, k, &old, buf);
                kv.del_email(email.as_deref().unwrap_or_default());
                new(next_key)
            } else {
                (k, rec)
            }
        }
        (Some(a), Some(b)) if a == b => (a, load(kv, a)),
        (Some(a), Some(b)) => {
            let mut survivor = load(kv, a);
            let mut other = load(kv, b);
            if other.u.is_some() && other.u != call.user_id {
                // Protection: two user ids are never merged; the email moves to the survivor.
                other.e = None;
                store(kv, b, &other, buf);
            } else {
                merge_props(&mut survivor.p, std::mem::take(&mut other.p));
                survivor.c = survivor.c.min(other.c);
                survivor.t = survivor.t.max(other.t);
                kv.del_profile(b);
            }
            (a, survivor)
        }
    };
    if let Some(u) = &call.user_id
        && rec.u.as_deref() != Some(u.as_str())
    {
        rec.u = Some(u.clone());
        kv.set_uid(u, key);
    }
    if let Some(e) = &email
        && rec.e.as_deref() != Some(e.as_str())
    {
        if let Some(old) = rec.e.take() {
            kv.del_email(&old);
        }
        rec.e = Some(e.clone());
        kv.set_email(e, key);
    }
    for (name, value) in &call.traits {
        match value {
            Some(v) => set_prop(&mut rec.p, name, v.to_json(), ts),
            None => rec.p.retain(|(n, _, _)| n != name),
        }
    }
    rec.t = rec.t.max(ts);
    store(kv, key, &rec, buf);
}
