//! Helpers shared by the Db-level tests.
#![allow(dead_code)]

use profiledb::{Db, Durability, Message, Options, Outcome, Profile, Selector};
use serde_json::{Value as Json, json};

/// Options for tests: buffered (fast), small segments, no background compaction.
pub fn options() -> Options {
    Options {
        durability: Durability::Buffered,
        segment_size: 1 << 20,
        compaction_ratio: None,
        ..Options::default()
    }
}

pub fn open(dir: &std::path::Path) -> Db {
    Db::open(dir, options()).expect("open")
}

/// Every profile of the store, in `scan` order.
pub fn all_profiles(db: &Db) -> Vec<Profile> {
    let mut out = Vec::new();
    db.scan(&profiledb::Filter::All, &mut |p| {
        out.push(p);
        true
    })
    .unwrap();
    out
}

/// The segment files (`*.seg`) of a store directory, oldest first.
pub fn segment_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// A store on the fault-injecting `io` with `options`, every call synced (power-cut tests).
pub fn open_faulty(
    dir: &std::path::Path,
    io: &std::sync::Arc<profiledb::storage::io::FaultyIo>,
    options: Options,
) -> profiledb::Result<Db> {
    let options = Options {
        durability: Durability::SyncEach,
        ..options
    };
    open_faulty_as(dir, io, options)
}

/// A store on the fault-injecting `io` with `options` as they are (their durability too).
pub fn open_faulty_as(
    dir: &std::path::Path,
    io: &std::sync::Arc<profiledb::storage::io::FaultyIo>,
    options: Options,
) -> profiledb::Result<Db> {
    let store = profiledb::storage::StoreOptions {
        segment_size: options.segment_size,
        durability: options.durability,
        repair: false,
        create: true,
        io: std::sync::Arc::new(io.clone()),
    };
    Db::open_with(dir, options, store)
}

/// What a simulated power cut leaves of the unsynced bytes, each of which the power-cut tests
/// try at every I/O operation.
pub const UNSYNCED_FATES: [profiledb::storage::io::UnsyncedTail; 5] = {
    use profiledb::storage::io::UnsyncedTail;
    [
        UnsyncedTail::Drop,
        UnsyncedTail::All,
        UnsyncedTail::Keep(40),
        UnsyncedTail::Zeros(4096),
        UnsyncedTail::Garbage(4096),
    ]
};

/// Apply a JSON message; panics on refusal (tests that expect refusal use `try_call`).
pub fn call(db: &Db, message: Json) -> Outcome {
    try_call(db, message.clone()).unwrap_or_else(|e| panic!("{message} refused: {e}"))
}

pub fn try_call(db: &Db, message: Json) -> profiledb::Result<Outcome> {
    let m = Message::from_json(&message)?;
    db.apply(&m)
}

pub fn by_user(db: &Db, uid: &str) -> Option<Profile> {
    db.get(&Selector::UserId(uid.into())).expect("get")
}

pub fn by_email(db: &Db, email: &str) -> Option<Profile> {
    db.get(&Selector::Email(email.into())).expect("get")
}

pub fn by_anon(db: &Db, anon: &str) -> Option<Profile> {
    db.get(&Selector::AnonymousId(anon.into())).expect("get")
}

pub fn by_key(db: &Db, key: u64) -> Option<Profile> {
    db.get(&Selector::Key(key)).expect("get")
}

/// A property's JSON value.
pub fn prop(p: &Profile, name: &str) -> Option<Json> {
    p.properties
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.to_json())
}

/// `2026-11-22T10:00:SSZ` style timestamps, `n` seconds apart.
pub fn ts(n: u32) -> String {
    format!("2026-11-22T10:{:02}:{:02}Z", n / 60, n % 60)
}

pub fn identify(uid: Option<&str>, email: Option<&str>, anon: Option<&str>, traits: Json) -> Json {
    let mut traits = traits;
    if let Some(e) = email {
        traits["email"] = json!(e);
    }
    let mut m = json!({"type": "identify", "traits": traits});
    if let Some(u) = uid {
        m["userId"] = json!(u);
    }
    if let Some(a) = anon {
        m["anonymousId"] = json!(a);
    }
    m
}
