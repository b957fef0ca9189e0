//! The peers: SQLite (rusqlite, bundled), redb 4 and fjall 3, each behind [`Engine`], storing
//! the profile in a [`Format`]. The fourth peer, the hand-written log, is in `baseline.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use profiledb::Message;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::peer::{Bincode, Codec, Coded, Json, Kv, identify};

/// How a peer stores the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// bincode 2 of the typed record (the fair form).
    Bincode,
    /// Compact JSON with `serde_json::Value` properties (the earlier form, kept as an extra row).
    Json,
}

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
    /// Profiles held (after the run, untimed: a cross-check that every peer holds as many).
    fn profiles(&mut self) -> u64;
}

/// The number in the environment variable `name`, else `default` (a panic if it is not one).
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: a whole number"))
    })
}

pub(crate) fn ns(t: Instant) -> u32 {
    t.elapsed().as_nanos().min(u32::MAX as u128) as u32
}

fn apply_all(
    kv: &mut dyn Kv,
    format: Format,
    calls: &[Message],
    next_key: &mut u64,
    lat: &mut Vec<u32>,
) {
    match format {
        Format::Bincode => apply_coded::<Bincode>(kv, calls, next_key, lat),
        Format::Json => apply_coded::<Json>(kv, calls, next_key, lat),
    }
}

fn apply_coded<C: Codec>(
    kv: &mut dyn Kv,
    calls: &[Message],
    next_key: &mut u64,
    lat: &mut Vec<u32>,
) {
    let mut buf = Vec::with_capacity(2048);
    let mut store = Coded::<C>::new(kv, &mut buf);
    for m in calls {
        let t = Instant::now();
        identify(&mut store, m, next_key);
        lat.push(ns(t));
    }
}

pub(crate) fn charge_last(lat: &mut [u32], t: Instant) {
    if let Some(l) = lat.last_mut() {
        *l = l.saturating_add(ns(t));
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite

pub struct Sqlite {
    conn: rusqlite::Connection,
    format: Format,
    next_key: u64,
}

impl Sqlite {
    /// WAL; `synchronous` is `NORMAL` (batched) or `FULL` (durable per call); 64 MB page cache;
    /// the WAL checkpointed every 50,000 pages (~200 MB) instead of SQLite's default 1,000: a W1
    /// batch of 1,000 calls dirties ~1,100 pages, so the default checkpointed (and synced the
    /// database file) on the calling thread at nearly every commit (round 55: 44,238 / 44,488
    /// calls/s on the default, 50,874 / 50,189 at 10,000 pages, 63,098 / 60,360 at 50,000).
    /// The durable form (`FULL`, a sync a call) keeps the default: there the large WAL grew
    /// the file at each commit, and its syncs cost more (round 55: `sqlite-c` 3,741 calls/s
    /// against 6,945).
    pub fn open(dir: &Path, synchronous: &str, format: Format) -> Sqlite {
        std::fs::create_dir_all(dir).unwrap();
        // `PEER_SQLITE_CHECKPOINT=N`: another period for the batched form (round 55's runs).
        let checkpoint = if synchronous == "FULL" {
            1000
        } else {
            env_or("PEER_SQLITE_CHECKPOINT", 50_000)
        };
        let conn = rusqlite::Connection::open(dir.join("w1.sqlite")).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA cache_size=-65536;
             PRAGMA wal_autocheckpoint={checkpoint};
             CREATE TABLE IF NOT EXISTS profiles(key INTEGER PRIMARY KEY, data BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS uid(id TEXT PRIMARY KEY, key INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS email(id TEXT PRIMARY KEY, key INTEGER NOT NULL) WITHOUT ROWID;"
        ))
        .unwrap();
        Sqlite {
            conn,
            format,
            next_key: 0,
        }
    }
}

struct SqliteKv<'a>(&'a rusqlite::Transaction<'a>);

impl SqliteKv<'_> {
    fn key(&self, sql: &str, id: &str) -> Option<u64> {
        let mut st = self.0.prepare_cached(sql).unwrap();
        let mut rows = st.query([id]).unwrap();
        rows.next()
            .unwrap()
            .map(|r| r.get::<_, i64>(0).unwrap() as u64)
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
    fn profile(&mut self, key: u64, read: &mut dyn FnMut(&[u8])) -> bool {
        let mut st = self
            .0
            .prepare_cached("SELECT data FROM profiles WHERE key = ?1")
            .unwrap();
        let mut rows = st.query([key as i64]).unwrap();
        match rows.next().unwrap() {
            Some(r) => {
                read(r.get_ref(0).unwrap().as_blob().unwrap());
                true
            }
            None => false,
        }
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
        apply_all(
            &mut SqliteKv(&tx),
            self.format,
            calls,
            &mut self.next_key,
            lat,
        );
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
            .execute_batch(
                "PRAGMA wal_checkpoint(TRUNCATE); VACUUM; PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .unwrap();
        true
    }
    fn profiles(&mut self) -> u64 {
        self.conn
            .query_row("SELECT count(*) FROM profiles", [], |r| r.get::<_, i64>(0))
            .unwrap() as u64
    }
}

// ---------------------------------------------------------------------------------------------
// redb

const PROFILES: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("profiles");
const UID: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("uid");
const EMAIL: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("email");

pub struct Redb {
    db: redb::Database,
    format: Format,
    next_key: u64,
}

impl Redb {
    pub fn open(dir: &Path, format: Format) -> Redb {
        std::fs::create_dir_all(dir).unwrap();
        let db = redb::Database::create(dir.join("w1.redb")).unwrap();
        Redb {
            db,
            format,
            next_key: 0,
        }
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
    fn profile(&mut self, key: u64, read: &mut dyn FnMut(&[u8])) -> bool {
        match self.profiles.get(key).unwrap() {
            Some(g) => {
                read(g.value());
                true
            }
            None => false,
        }
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
            apply_all(&mut kv, self.format, calls, &mut self.next_key, lat);
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
    fn profiles(&mut self) -> u64 {
        let tx = self.db.begin_read().unwrap();
        tx.open_table(PROFILES).unwrap().len().unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// fjall

/// The batch's own writes of one table, so that later calls of the batch read them (a
/// `WriteBatch` is not readable): key -> value, or `None` for a removal.
type Pending = HashMap<Vec<u8>, Option<Vec<u8>>>;

pub struct Fjall {
    db: fjall::Database,
    /// profiles, uid, email.
    ks: [fjall::Keyspace; 3],
    pending: [Pending; 3],
    format: Format,
    next_key: u64,
}

impl Fjall {
    pub fn open(dir: &Path, format: Format) -> Fjall {
        // A 1 GiB block cache, as redb's default: fjall's docs advise ~20-25 % of the memory,
        // or more when the data fits (its default, 32 MiB, ran W1 6-8 % slower: round 55).
        // Compression off and `expect_point_read_hits` were tried too: no change measured.
        // `PEER_FJALL_CACHE_MB=N`: another cache (round 55's runs).
        let db = fjall::Database::builder(dir)
            .cache_size(env_or("PEER_FJALL_CACHE_MB", 1024) << 20)
            .open()
            .unwrap();
        let ks = |name: &str| {
            db.keyspace(name, fjall::KeyspaceCreateOptions::default)
                .unwrap()
        };
        let ks = [ks("profiles"), ks("uid"), ks("email")];
        Fjall {
            db,
            ks,
            pending: Default::default(),
            format,
            next_key: 0,
        }
    }
}

const PROFILES_KS: usize = 0;
const UID_KS: usize = 1;
const EMAIL_KS: usize = 2;

struct FjallKv<'a> {
    ks: &'a [fjall::Keyspace; 3],
    pending: &'a mut [Pending; 3],
}

impl FjallKv<'_> {
    fn get(&mut self, t: usize, k: &[u8], read: &mut dyn FnMut(&[u8])) -> bool {
        if let Some(v) = self.pending[t].get(k) {
            return match v {
                Some(v) => {
                    read(v);
                    true
                }
                None => false,
            };
        }
        match self.ks[t].get(k).unwrap() {
            Some(v) => {
                read(&v);
                true
            }
            None => false,
        }
    }
    fn key(&mut self, t: usize, k: &[u8]) -> Option<u64> {
        let mut key = None;
        self.get(t, k, &mut |v| {
            key = Some(u64::from_be_bytes(v.try_into().unwrap()))
        });
        key
    }
    fn set(&mut self, t: usize, k: &[u8], v: Option<&[u8]>) {
        let v = v.map(<[u8]>::to_vec);
        match self.pending[t].get_mut(k) {
            Some(slot) => *slot = v,
            None => {
                self.pending[t].insert(k.to_vec(), v);
            }
        }
    }
}

impl Kv for FjallKv<'_> {
    fn uid(&mut self, uid: &str) -> Option<u64> {
        self.key(UID_KS, uid.as_bytes())
    }
    fn email(&mut self, email: &str) -> Option<u64> {
        self.key(EMAIL_KS, email.as_bytes())
    }
    fn profile(&mut self, key: u64, read: &mut dyn FnMut(&[u8])) -> bool {
        self.get(PROFILES_KS, &key.to_be_bytes(), read)
    }
    fn set_uid(&mut self, uid: &str, key: u64) {
        self.set(UID_KS, uid.as_bytes(), Some(&key.to_be_bytes()));
    }
    fn set_email(&mut self, email: &str, key: u64) {
        self.set(EMAIL_KS, email.as_bytes(), Some(&key.to_be_bytes()));
    }
    fn del_email(&mut self, email: &str) {
        self.set(EMAIL_KS, email.as_bytes(), None);
    }
    fn set_profile(&mut self, key: u64, value: &[u8]) {
        self.set(PROFILES_KS, &key.to_be_bytes(), Some(value));
    }
    fn del_profile(&mut self, key: u64) {
        self.set(PROFILES_KS, &key.to_be_bytes(), None);
    }
}

impl Engine for Fjall {
    fn run(&mut self, calls: &[Message], sync: bool, lat: &mut Vec<u32>) {
        {
            let mut kv = FjallKv {
                ks: &self.ks,
                pending: &mut self.pending,
            };
            apply_all(&mut kv, self.format, calls, &mut self.next_key, lat);
        }
        let t = Instant::now();
        let mut batch = self
            .db
            .batch()
            .durability(sync.then_some(fjall::PersistMode::SyncData));
        for (table, pending) in self.pending.iter_mut().enumerate() {
            for (k, v) in pending.drain() {
                match v {
                    Some(v) => batch.insert(&self.ks[table], k, v),
                    None => batch.remove(&self.ks[table], k),
                }
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
    fn profiles(&mut self) -> u64 {
        self.ks[PROFILES_KS].len().unwrap() as u64
    }
}
