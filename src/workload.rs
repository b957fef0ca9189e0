//! The standard benchmark workload W1 (docs/benchmarks.md), deterministic for a seed.
//!
//! - `calls` identify calls (default 1,000,000) over `people` people (default `calls / 5`);
//!   80 % of the calls go to a hot 20 % of the people.
//! - Each call names its person by `userId` only (70 %), `traits.email` only (20 %) or both
//!   (10 %); the both-calls merge the person's id-only and email-only profiles when those
//!   exist apart.
//! - Each call sets 10 traits drawn from a vocabulary of 40 names: 4 strings (8 to 24
//!   characters), 3 integers, 2 booleans and 1 RFC 3339 date-time.
//! - Every call has a unique `messageId` and a strictly increasing `timestamp` (one
//!   millisecond apart, from 2026-01-01T00:00:00Z).
//!
//! The same calls come in two forms: [`W1`] is an iterator of ready-built
//! [`Message`](crate::Message)s (cheap: no JSON involved), and [`W1::write_json_line`] /
//! [`write_json_lines`] write them as Segment-shaped JSON lines, which
//! [`Message::parse`](crate::Message::parse) turns back into the same messages.
//!
//! ```
//! use profiledb::workload::{W1, W1Config};
//!
//! let calls: Vec<_> = W1::new(W1Config::new(7, 100)).collect();
//! assert_eq!(calls.len(), 100);
//! let again: Vec<_> = W1::new(W1Config::new(7, 100)).collect();
//! assert_eq!(calls, again);
//! ```

use std::io::{self, Write};

use crate::profile::message::{Identify, Message};
use crate::rng::SplitMix64;
use crate::types::value::{CompactString, Timestamp, Value};

/// String-valued trait names of the vocabulary.
const STRING_TRAITS: [&str; 16] = [
    "plan",
    "city",
    "country",
    "job_title",
    "industry",
    "referrer",
    "utm_source",
    "utm_campaign",
    "language",
    "timezone",
    "browser",
    "os",
    "device_model",
    "favorite_color",
    "team",
    "role",
];

/// Integer-valued trait names of the vocabulary.
const INT_TRAITS: [&str; 12] = [
    "logins",
    "tenure_days",
    "seats",
    "credits",
    "score",
    "visits",
    "orders",
    "level",
    "points",
    "streak",
    "friends",
    "messages",
];

/// Boolean-valued trait names of the vocabulary.
const BOOL_TRAITS: [&str; 8] = [
    "verified",
    "newsletter",
    "beta",
    "admin",
    "on_trial",
    "mobile",
    "dark_mode",
    "premium",
];

/// Date-time-valued trait names of the vocabulary.
const DATE_TRAITS: [&str; 4] = [
    "last_login_at",
    "signup_at",
    "trial_ends_at",
    "last_order_at",
];

/// The 40 trait names W1 draws from (16 strings, 12 integers, 8 booleans, 4 date-times).
pub fn vocabulary() -> impl Iterator<Item = &'static str> {
    STRING_TRAITS
        .iter()
        .chain(INT_TRAITS.iter())
        .chain(BOOL_TRAITS.iter())
        .chain(DATE_TRAITS.iter())
        .copied()
}

/// 2026-01-01T00:00:00Z in microseconds since the epoch: the first call's timestamp.
const BASE_MICROS: i64 = 1_767_225_600_000_000;

/// Parameters of a W1 run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct W1Config {
    /// Seed of the generator: the same seed gives the same calls.
    pub seed: u64,
    /// Number of calls.
    pub calls: u64,
    /// Number of distinct people (at least 1).
    pub people: u64,
}

impl W1Config {
    /// `calls` calls over `calls / 5` people (at least one), as docs/benchmarks.md's W1.
    pub fn new(seed: u64, calls: u64) -> Self {
        W1Config {
            seed,
            calls,
            people: (calls / 5).max(1),
        }
    }

    /// The same, over `people` people (at least one).
    pub fn with_people(mut self, people: u64) -> Self {
        self.people = people.max(1);
        self
    }

    /// Size of the hot set: 20 % of the people (at least one).
    pub fn hot_people(&self) -> u64 {
        (self.people / 5).max(1)
    }
}

impl Default for W1Config {
    /// The full W1: seed 1, 1,000,000 calls over 200,000 people.
    fn default() -> Self {
        W1Config::new(1, 1_000_000)
    }
}

/// How a call names its person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `userId` only (70 %).
    UserId,
    /// `traits.email` only (20 %).
    Email,
    /// Both (10 %).
    Both,
}

/// The `userId` of person `p` (valid: 2..255 characters, not an email, not a placeholder).
pub fn user_id(p: u64) -> String {
    format!("user-{p:08}")
}

/// The email of person `p` (a valid address).
pub fn email(p: u64) -> String {
    format!("person{p}@example.com")
}

/// `count` (at most 4) distinct indexes below `n` (at most 16): a partial Fisher-Yates.
fn pick(n: usize, count: usize, rng: &mut SplitMix64) -> [usize; 4] {
    let mut idx: [usize; 16] = std::array::from_fn(|k| k);
    let mut chosen = [0usize; 4];
    for (k, slot) in chosen.iter_mut().enumerate().take(count) {
        let j = k + rng.below((n - k) as u64) as usize;
        idx.swap(k, j);
        *slot = idx[k];
    }
    chosen
}

/// The W1 generator: an iterator of identify messages.
#[derive(Debug, Clone)]
pub struct W1 {
    config: W1Config,
    rng: SplitMix64,
    next: u64,
}

/// Alphabet of generated string values (never an RFC 3339 date-time, never needs escaping).
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

impl W1 {
    /// A generator for `config`.
    pub fn new(config: W1Config) -> Self {
        let config = W1Config {
            people: config.people.max(1),
            ..config
        };
        W1 {
            config,
            rng: SplitMix64(config.seed ^ 0x5731_5731_5731_5731),
            next: 0,
        }
    }

    /// The configuration (with `people` at least 1).
    pub fn config(&self) -> W1Config {
        self.config
    }

    /// Calls generated so far.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The next call as a plain [`Identify`], with the person and naming it was drawn for.
    pub fn next_call(&mut self) -> Option<(u64, Naming, Identify)> {
        if self.next >= self.config.calls {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let rng = &mut self.rng;

        let hot = self.config.hot_people();
        let people = self.config.people;
        let person = if rng.below(100) < 80 || hot >= people {
            rng.below(hot)
        } else {
            hot + rng.below(people - hot)
        };
        let naming = match rng.below(100) {
            0..70 => Naming::UserId,
            70..90 => Naming::Email,
            _ => Naming::Both,
        };

        // Names are sorted as `&'static str` (cheaper to compare than inline strings) and
        // become `CompactString`s pointing at the static text: no allocation per name.
        let mut named: Vec<(&'static str, Value)> = Vec::with_capacity(10);
        for &k in &pick(STRING_TRAITS.len(), 4, rng)[..4] {
            let len = 8 + rng.below(17) as usize;
            let mut text = [0u8; 24];
            for b in &mut text[..len] {
                *b = ALPHABET[rng.below(ALPHABET.len() as u64) as usize];
            }
            // ASCII, so never lossy; at most 24 bytes, so held inline.
            named.push((
                STRING_TRAITS[k],
                Value::Str(CompactString::from_utf8_lossy(&text[..len])),
            ));
        }
        for &k in &pick(INT_TRAITS.len(), 3, rng)[..3] {
            let v = rng.below(1_000_000) as i64;
            named.push((INT_TRAITS[k], Value::Int(v)));
        }
        for &k in &pick(BOOL_TRAITS.len(), 2, rng)[..2] {
            let v = rng.below(2) == 1;
            named.push((BOOL_TRAITS[k], Value::Bool(v)));
        }
        {
            let k = rng.below(DATE_TRAITS.len() as u64) as usize;
            // Whole seconds within ~3 years before the base time.
            let secs = rng.below(3 * 365 * 86_400) as i64;
            let ts = Timestamp(BASE_MICROS - secs * 1_000_000);
            named.push((DATE_TRAITS[k], Value::DateTime(ts)));
        }
        // JSON objects come back sorted by name; keep the in-memory form in the same order.
        named.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let traits = named
            .into_iter()
            .map(|(name, v)| (CompactString::const_new(name), Some(v)))
            .collect();

        let call = Identify {
            user_id: matches!(naming, Naming::UserId | Naming::Both).then(|| user_id(person)),
            anonymous_id: None,
            email: matches!(naming, Naming::Email | Naming::Both).then(|| email(person)),
            message_id: Some(format!("w1-{:x}-{i}", self.config.seed)),
            timestamp: Some(Timestamp(BASE_MICROS + i as i64 * 1_000)),
            traits,
            ..Identify::default()
        };
        Some((person, naming, call))
    }

    /// Write the next call as one JSON line (with the trailing newline) into `out`; returns
    /// false when the workload is exhausted.
    pub fn write_json_line(&mut self, out: &mut Vec<u8>) -> bool {
        match self.next_call() {
            Some((_, _, call)) => {
                identify_json(&call, out);
                out.push(b'\n');
                true
            }
            None => false,
        }
    }
}

impl Iterator for W1 {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        self.next_call().map(|(_, _, call)| Message::Identify(call))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.config.calls - self.next).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// Append `s` as a JSON string.
fn json_str(s: &str, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Write a (W1-shaped) identify call as Segment JSON: `type`, `messageId`, `timestamp`,
/// `userId`, `anonymousId`, and `traits` (with `email`). `$set_once`, `$unset`, `$add` and
/// `traits.company` are written too when present.
pub fn identify_json(call: &Identify, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"type":"identify""#);
    if let Some(id) = &call.message_id {
        out.extend_from_slice(br#","messageId":"#);
        json_str(id, out);
    }
    if let Some(ts) = call.timestamp {
        out.extend_from_slice(br#","timestamp":"#);
        json_str(&ts.to_rfc3339(), out);
    }
    if let Some(id) = &call.user_id {
        out.extend_from_slice(br#","userId":"#);
        json_str(id, out);
    }
    if let Some(id) = &call.anonymous_id {
        out.extend_from_slice(br#","anonymousId":"#);
        json_str(id, out);
    }
    out.extend_from_slice(br#","traits":{"#);
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    if let Some(email) = &call.email {
        sep(out);
        out.extend_from_slice(br#""email":"#);
        json_str(email, out);
    }
    for (name, value) in &call.traits {
        sep(out);
        json_str(name, out);
        out.push(b':');
        match value {
            Some(v) => {
                let _ = serde_json::to_writer(&mut *out, &v.to_json());
            }
            None => out.extend_from_slice(b"null"),
        }
    }
    if let Some(company) = &call.company {
        sep(out);
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), serde_json::Value::String(company.id.clone()));
        for (k, v) in &company.traits {
            let v = v.as_ref().map_or(serde_json::Value::Null, Value::to_json);
            obj.insert(k.to_string(), v);
        }
        out.extend_from_slice(br#""company":"#);
        let _ = serde_json::to_writer(&mut *out, &obj);
    }
    out.push(b'}');
    let obj = |pairs: Vec<(String, serde_json::Value)>| {
        serde_json::Value::Object(pairs.into_iter().collect())
    };
    if !call.set_once.is_empty() {
        out.extend_from_slice(br#","$set_once":"#);
        let v = obj(call
            .set_once
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_json()))
            .collect());
        let _ = serde_json::to_writer(&mut *out, &v);
    }
    if !call.unset.is_empty() {
        out.extend_from_slice(br#","$unset":"#);
        let _ = serde_json::to_writer(&mut *out, &call.unset);
    }
    if !call.add.is_empty() {
        out.extend_from_slice(br#","$add":"#);
        let v = obj(call
            .add
            .iter()
            .map(|(k, n)| {
                let n = match n {
                    crate::Number::Int(i) => serde_json::Value::from(*i),
                    crate::Number::Float(f) => serde_json::Value::from(*f),
                };
                (k.to_string(), n)
            })
            .collect());
        let _ = serde_json::to_writer(&mut *out, &v);
    }
    out.push(b'}');
}

/// Write the whole workload of `config` as JSON lines; `progress` is called with the number
/// of calls written so far every 4,096 calls. Returns the number of calls written.
pub fn write_json_lines(
    config: W1Config,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let mut w1 = W1::new(config);
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        let more = w1.write_json_line(&mut buf);
        let n = w1.position();
        if buf.len() >= (1 << 16) - 1024 || !more {
            out.write_all(&buf)?;
            buf.clear();
        }
        if n.is_multiple_of(4096) || !more {
            progress(n);
        }
        if !more {
            break;
        }
    }
    out.flush()?;
    Ok(w1.position())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_calls_other_seed_other_calls() {
        let a: Vec<_> = W1::new(W1Config::new(42, 500)).collect();
        let b: Vec<_> = W1::new(W1Config::new(42, 500)).collect();
        let c: Vec<_> = W1::new(W1Config::new(43, 500)).collect();
        assert_eq!(a.len(), 500);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn json_lines_are_deterministic() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_json_lines(W1Config::new(9, 300), &mut a, &mut |_| {}).unwrap();
        write_json_lines(W1Config::new(9, 300), &mut b, &mut |_| {}).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 300);
    }

    #[test]
    fn distribution_is_roughly_w1() {
        let config = W1Config::new(1, 100_000);
        assert_eq!(config.people, 20_000);
        let hot = config.hot_people();
        let mut w1 = W1::new(config);
        let (mut hot_calls, mut by_id, mut by_email, mut both) = (0u64, 0u64, 0u64, 0u64);
        let mut seen_ids = std::collections::HashSet::new();
        let mut last_ts = None;
        while let Some((person, naming, call)) = w1.next_call() {
            assert!(person < config.people);
            if person < hot {
                hot_calls += 1;
            }
            match naming {
                Naming::UserId => by_id += 1,
                Naming::Email => by_email += 1,
                Naming::Both => both += 1,
            }
            assert_eq!(call.traits.len(), 10);
            let count = |f: fn(&Value) -> bool| {
                call.traits
                    .iter()
                    .filter(|(_, v)| v.as_ref().is_some_and(f))
                    .count()
            };
            assert_eq!(count(|v| matches!(v, Value::Str(_))), 4);
            assert_eq!(count(|v| matches!(v, Value::Int(_))), 3);
            assert_eq!(count(|v| matches!(v, Value::Bool(_))), 2);
            assert_eq!(count(|v| matches!(v, Value::DateTime(_))), 1);
            for (name, value) in &call.traits {
                assert!(vocabulary().any(|v| v == name));
                if let Some(Value::Str(s)) = value {
                    assert!((8..=24).contains(&s.len()), "{s}");
                }
            }
            let mut names: Vec<_> = call.traits.iter().map(|(n, _)| n).collect();
            names.dedup();
            assert_eq!(names.len(), 10, "trait names are distinct and sorted");
            assert!(seen_ids.insert(call.message_id.clone().unwrap()));
            assert!(last_ts < call.timestamp);
            last_ts = call.timestamp;
        }
        let pct = |n: u64| n as f64 / 1_000.0;
        assert!((78.0..82.0).contains(&pct(hot_calls)), "{}", pct(hot_calls));
        assert!((68.0..72.0).contains(&pct(by_id)), "{}", pct(by_id));
        assert!((18.5..21.5).contains(&pct(by_email)), "{}", pct(by_email));
        assert!((9.0..11.0).contains(&pct(both)), "{}", pct(both));
    }

    #[test]
    fn vocabulary_has_forty_distinct_names() {
        let mut names: Vec<_> = vocabulary().collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 40);
    }

    #[test]
    fn identifiers_are_valid_per_the_rules() {
        let options = crate::Options::default();
        for p in [0, 1, 7, 199_999, u64::MAX / 3] {
            let id = user_id(p);
            assert!((2..=255).contains(&id.chars().count()));
            assert!(!id.contains('@'));
            assert!(
                !options
                    .placeholder_ids
                    .iter()
                    .any(|b| b.eq_ignore_ascii_case(&id))
            );
            let e = email(p);
            assert_eq!(e.matches('@').count(), 1);
            assert!(e.len() <= 254 && !e.contains(' '));
        }
    }

    #[test]
    fn every_call_passes_the_rules() {
        let options = crate::Options::default();
        for message in W1::new(W1Config::new(11, 2_000)) {
            crate::profile::validate::validate(&message, &options).unwrap();
        }
    }

    #[test]
    fn tiny_configs_do_not_panic() {
        assert_eq!(W1::new(W1Config::new(0, 0)).count(), 0);
        assert_eq!(W1::new(W1Config::new(0, 3)).count(), 3);
        assert_eq!(W1::new(W1Config::new(0, 50).with_people(1)).count(), 50);
        assert_eq!(W1::new(W1Config::new(0, 50).with_people(0)).count(), 50);
    }

    /// Needs `Message::parse` (implemented in parallel): the JSON form parses back to the
    /// same message.
    #[test]
    fn json_form_parses_back_to_the_same_message() {
        let mut w1 = W1::new(W1Config::new(3, 200));
        let mut line = Vec::new();
        while let Some((_, _, call)) = w1.next_call() {
            line.clear();
            identify_json(&call, &mut line);
            let parsed = Message::parse(&line).unwrap();
            assert_eq!(
                parsed,
                Message::Identify(call),
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
    }
}
