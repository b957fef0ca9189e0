//! The three peers: SQLite (rusqlite, bundled), redb 4 and fjall 3, each behind [`Engine`].

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use profiledb::Message;
use redb::ReadableTable;

use crate::peer::{Kv, identify};

/// A peer store: applies a group of calls in one write transaction.
pub trait Engine: Send {
    /// Apply `calls` in one write transaction (one batch), committed with the engine's
    /// durable mode if `sync`. Pushes each call's latency in nanoseconds onto `lat`; the commit
    /// is charged to the last call (its caller is the one that waits for it).
    fn run(&mut self, calls: &[Message], sync: bool, lat: &mut Vec<u32>);
    /// Make everything durable (end of a run).
    fn finish(&mut self);
    /// The engine's own compaction (SQLite: checkpoint + VACUUM; redb: compact); false if none.
    fn compact(&mut self) -> bool;
}

fn ns(t: Instant) -> u32 {
    t.elapsed().as_nanos().min(u32::MAX as u128) as u32
}

fn apply_all(kv: &mut dyn Kv, calls: &[Message], next_key: &mut u64, lat: &mut Vec<u32>) {
    let mut buf = Vec::with_capacity(2048);
    for m in calls {
        let t = Instant::now();
        identify(kv, m, next_key, &mut buf);
        lat.push(ns(t));
    }
}

fn charge_last(lat: &mut [u32], t: Instant) {
    if let Some(l) = lat.last_mut() {
        *l = l.saturating_add(ns(t));
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

pub struct Sqlite {
    conn: rusqlite::Connection,
    next_key: u64,
}

impl Sqlite {
    /// WAL; `synchronous` is `NORMAL` (batched) or `FULL` (durable per call); 64 MB page cache.
    pub fn open(dir: &Path, synchronous: &str) -> Sqlite {
        std::fs::create_dir_all(dir).unwrap();
        let conn = rusqlite::Connection::open(dir.join("w1.sqlite")).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA cache_size=-65536;
             CREATE TABLE IF NOT EXISTS profiles(key INTEGER PRIMARY KEY, data BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS uid(id TEXT PRIMARY KEY, key INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS email(id TEXT PRIMARY KEY, key INTEGER NOT NULL) WITHOUT ROWID;"
        ))
        .unwrap();
        Sqlite { conn, next_key: 0 }
    }
}

struct SqliteKv<'a>(&'a rusqlite::Transaction<'a>);

impl SqliteKv<'_> {
    fn key(&self, sql: &str, id: &str) -> Option<u64> {
        let mut st = self.0.prepare_cached(sql).unwrap();
        let mut rows = st.query([id]).unwrap();
        rows.next().unwrap().map(|r| r.get::<_, i64>(0).unwrap() as u64)
    }
    fn exec(&self, sql: &str, p: impl rusqlite::Params) {
        self.0.prepare_cached(sql).unwrap().execute(p).unwrap();
    }
}

impl Kv for SqliteKv<'_> {
    fn uid(&mut self, uid: &str) -> Option<u64> {
        self.key("SELECT key FROM uid WHERE id = ?1", uid)
    }
    fn email(&mut self, email: &str) -> Option<u64> {
        self.key("SELECT key FROM email WHERE id = ?1", email)
    }
    fn profile(&mut self, key: u64) -> Option<Vec<u8>> {
        let mut st = self
            .0
            .prepare_cached("SELECT data FROM profiles WHERE key = ?1")
            .unwrap();
        let mut rows = st.query([key as i64]).unwrap();
        rows.next().unwrap().map(|r| r.get::<_, Vec<u8>>(0).unwrap())
    }
    fn set_uid(&mut self, uid: &str, key: u64) {
        self.exec(
            "INSERT OR REPLACE INTO uid(id, key) VALUES (?1, ?2)",
            rusqlite::params![uid, key as i64],
        );
    }
    fn set_email(&mut self, email: &str, key: u64) {
        self.exec(
            "INSERT OR REPLACE INTO email(id, key) VALUES (?1, ?2)",
            rusqlite::params![email, key as i64],
        );
    }
    fn del_email(&mut self, email: &str) {
        self.exec("DELETE FROM email WHERE id = ?1", [email]);
    }
    fn set_profile(&mut self, key: u64, value: &[u8]) {
        self.exec(
            "INSERT OR REPLACE INTO profiles(key, data) VALUES (?1, ?2)",
            rusqlite::params![key as i64, value],
        );
    }
    fn del_profile(&mut self, key: u64) {
        self.exec("DELETE FROM profiles WHERE key = ?1", [key as i64]);
    }
}

impl Engine for Sqlite {
    fn run(&mut self, calls: &[Message], _sync: bool, lat: &mut Vec<u32>) {
        // Durability is the connection's `synchronous` setting.
        let tx = self.conn.transaction().unwrap();
        apply_all(&mut SqliteKv(&tx), calls, &mut self.next_key, lat);
        let t = Instant::now();
        tx.commit().unwrap();
        charge_last(lat, t);
    }
    fn finish(&mut self) {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    fn compact(&mut self) -> bool {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        true
    }
}

// ---------------------------------------------------------------------------------------------
// redb

const PROFILES: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("profiles");
const UID: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("uid");
const EMAIL: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("email");

pub struct Redb {
    db: redb::Database,
    next_key: u64,
}

impl Redb {
    pub fn open(dir: &Path) -> Redb {
        std::fs::create_dir_all(dir).unwrap();
        let db = redb::Database::create(dir.join("w1.redb")).unwrap();
        Redb { db, next_key: 0 }
    }
}

struct RedbKv<'t> {
    profiles: redb::Table<'t, u64, &'static [u8]>,
    uid: redb::Table<'t, &'static str, u64>,
    email: redb::Table<'t, &'static str, u64>,
}

impl Kv for RedbKv<'_> {
    fn uid(&mut self, uid: &str) -> Option<u64> {
        self.uid.get(uid).unwrap().map(|g| g.value())
    }
    fn email(&mut self, email: &str) -> Option<u64> {
        self.email.get(email).unwrap().map(|g| g.value())
    }
    fn profile(&mut self, key: u64) -> Option<Vec<u8>> {
        self.profiles.get(key).unwrap().map(|g| g.value().to_vec())
    }
    fn set_uid(&mut self, uid: &str, key: u64) {
        self.uid.insert(uid, key).unwrap();
    }
    fn set_email(&mut self, email: &str, key: u64) {
        self.email.insert(email, key).unwrap();
    }
    fn del_email(&mut self, email: &str) {
        self.email.remove(email).unwrap();
    }
    fn set_profile(&mut self, key: u64, value: &[u8]) {
        self.profiles.insert(key, value).unwrap();
    }
    fn del_profile(&mut self, key: u64) {
        self.profiles.remove(key).unwrap();
    }
}

impl Engine for Redb {
    fn run(&mut self, calls: &[Message], sync: bool, lat: &mut Vec<u32>) {
        // Default durability (Immediate: the commit is on disk when it returns).
        let _ = sync;
        let tx = self.db.begin_write().unwrap();
        {
            let mut kv = RedbKv {
                profiles: tx.open_table(PROFILES).unwrap(),
                uid: tx.open_table(UID).unwrap(),
                email: tx.open_table(EMAIL).unwrap(),
            };
            apply_all(&mut kv, calls, &mut self.next_key, lat);
        }
        let t = Instant::now();
        tx.commit().unwrap();
        charge_last(lat, t);
    }
    fn finish(&mut self) {
        // Every run commits with the default (Immediate) durability: nothing left to do.
    }
    fn compact(&mut self) -> bool {
        while self.db.compact().unwrap() {}
        true
    }
}

// ---------------------------------------------------------------------------------------------
// fjall

pub struct Fjall {
    db: fjall::Database,
    profiles: fjall::Keyspace,
    uid: fjall::Keyspace,
    email: fjall::Keyspace,
    /// The batch's own writes, so that later calls of the batch read them (a `WriteBatch` is
    /// not readable): table, key -> value or removal.
    pending: HashMap<(u8, Vec<u8>), Option<Vec<u8>>>,
    next_key: u64,
}

impl Fjall {
    pub fn open(dir: &Path) -> Fjall {
        let db = fjall::Database::builder(dir).open().unwrap();
        let ks = |name: &str| {
            db.keyspace(name, fjall::KeyspaceCreateOptions::default)
                .unwrap()
        };
        let (profiles, uid, email) = (ks("profiles"), ks("uid"), ks("email"));
        Fjall {
            db,
            profiles,
            uid,
            email,
            pending: HashMap::new(),
            next_key: 0,
        }
    }
}

struct FjallKv<'a> {
    ks: [&'a fjall::Keyspace; 3],
    pending: &'a mut HashMap<(u8, Vec<u8>), Option<Vec<u8>>>,
}

impl FjallKv<'_> {
    fn get(&mut self, t: u8, k: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.pending.get(&(t, k.to_vec())) {
            return v.clone();
        }
        self.ks[t as usize].get(k).unwrap().map(|v| v.to_vec())
    }
    fn key(&mut self, t: u8, k: &[u8]) -> Option<u64> {
        self.get(t, k)
            .map(|v| u64::from_be_bytes(v.as_slice().try_into().unwrap()))
    }
}

impl Kv for FjallKv<'_> {
    fn uid(&mut self, uid: &str) -> Option<u64> {
        self.key(1, uid.as_bytes())
    }
    fn email(&mut self, email: &str) -> Option<u64> {
        self.key(2, email.as_bytes())
    }
    fn profile(&mut self, key: u64) -> Option<Vec<u8>> {
        self.get(0, &key.to_be_bytes())
    }
    fn set_uid(&mut self, uid: &str, key: u64) {
        self.pending
            .insert((1, uid.as_bytes().to_vec()), Some(key.to_be_bytes().to_vec()));
    }
    fn set_email(&mut self, email: &str, key: u64) {
        self.pending
            .insert((2, email.as_bytes().to_vec()), Some(key.to_be_bytes().to_vec()));
    }
    fn del_email(&mut self, email: &str) {
        self.pending.insert((2, email.as_bytes().to_vec()), None);
    }
    fn set_profile(&mut self, key: u64, value: &[u8]) {
        self.pending
            .insert((0, key.to_be_bytes().to_vec()), Some(value.to_vec()));
    }
    fn del_profile(&mut self, key: u64) {
        self.pending.insert((0, key.to_be_bytes().to_vec()), None);
    }
}

impl Engine for Fjall {
    fn run(&mut self, calls: &[Message], sync: bool, lat: &mut Vec<u32>) {
        {
            let mut kv = FjallKv {
                ks: [&self.profiles, &self.uid, &self.email],
                pending: &mut self.pending,
            };
            apply_all(&mut kv, calls, &mut self.next_key, lat);
        }
        let t = Instant::now();
        let ks = [&self.profiles, &self.uid, &self.email];
        let mut batch = self
            .db
            .batch()
            .durability(sync.then_some(fjall::PersistMode::SyncData));
        for ((table, k), v) in self.pending.drain() {
            match v {
                Some(v) => batch.insert(ks[table as usize], k, v),
                None => batch.remove(ks[table as usize], k),
            }
        }
        batch.commit().unwrap();
        charge_last(lat, t);
    }
    fn finish(&mut self) {
        self.db.persist(fjall::PersistMode::SyncData).unwrap();
    }
    fn compact(&mut self) -> bool {
        false
    }
}
