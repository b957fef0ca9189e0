//! Issue 6, `readers_vs_compaction`: reader threads (get by user id, email and key; scans) and
//! writer threads run while another thread compacts over and over (and writers write hints),
//! so sealed segments are swapped out under the readers constantly. Checked:
//!
//! - no stale read: each reader's observations of a counter profile never go backwards, and a
//!   profile once seen never disappears;
//! - no torn read: every profile read is whole (its identifiers, and `count == last + 1`,
//!   which each call keeps true);
//! - no error at all (in particular no "no such segment" after a swap);
//! - no deadlock: the main thread is a watchdog that fails the test after a generous timeout
//!   instead of hanging;
//! - at the end every counter equals the number of calls made to it, before and after a
//!   reopen, and the store checks clean.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use profiledb::{Db, Durability, Filter, Message, Options, Profile, Selector, Value};
use serde_json::json;

const WRITERS: u64 = 2;
const PROFILES_PER_WRITER: u64 = 4;
/// Each writer makes at least this many calls, and goes on until `MIN_COMPACTIONS` ran.
const CALLS_PER_WRITER: u64 = 500;
const MIN_COMPACTIONS: u64 = 60;
const READERS: u64 = 3;
const WATCHDOG: Duration = Duration::from_secs(240);

fn options() -> Options {
    Options {
        durability: Durability::Buffered,
        // Small segments: every compaction swaps several files.
        segment_size: 4096,
        compaction_ratio: None,
        // A small cache so writers read records back from the segments too.
        profile_cache_bytes: 8 << 10,
        // Few live messageId notes: compactions stay cheap, so there are many of them.
        dedupe_window: 64,
        // History steps leave the window at once, so every compaction writes them and drops
        // them (the step write path under concurrent compactions) without the copies growing
        // with the calls, which would make each compaction slower than this test's pace.
        history_retention: Duration::from_millis(1),
        ..Options::default()
    }
}

fn uid(w: u64, j: u64) -> String {
    format!("writer{w}-profile{j}")
}

fn mail(w: u64, j: u64) -> String {
    format!("writer{w}-profile{j}@example.com")
}

fn int(p: &Profile, name: &str) -> Option<i64> {
    p.properties.iter().find_map(|(k, v)| match v {
        Value::Int(i) if k == name => Some(*i),
        _ => None,
    })
}

/// A whole profile of writer `w`'s profile `j`: its counter.
fn check_whole(p: &Profile, w: u64, j: u64, how: &str) -> i64 {
    assert_eq!(
        p.user_id.as_deref(),
        Some(uid(w, j).as_str()),
        "{how}: {p:?}"
    );
    assert_eq!(
        p.email.as_deref(),
        Some(mail(w, j).as_str()),
        "{how}: {p:?}"
    );
    let count = int(p, "count").unwrap_or_else(|| panic!("{how}: no count in {p:?}"));
    let last = int(p, "last").unwrap_or_else(|| panic!("{how}: no last in {p:?}"));
    assert_eq!(count, last + 1, "{how}: torn profile {p:?}");
    let pad = p.properties.iter().find(|(k, _)| k == "pad");
    assert!(
        matches!(pad, Some((_, Value::Str(s))) if s.len() == 200),
        "{how}: {p:?}"
    );
    count
}

/// Sends once when dropped (also when its thread panics), for the watchdog.
struct Done(mpsc::Sender<()>);
impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[test]
fn readers_and_writers_see_no_stale_or_torn_profile_while_compaction_swaps_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let db = Arc::new(Db::open(&dir, options()).unwrap());
    let writing = Arc::new(AtomicU64::new(WRITERS));
    let stop = Arc::new(AtomicBool::new(false));
    let keys: Arc<parking_lot::RwLock<HashMap<(u64, u64), u64>>> = Arc::default();
    let compactions = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let calls: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let (done_tx, done_rx) = mpsc::channel();
    let mut handles = Vec::new();

    for w in 0..WRITERS {
        let (db, writing, keys, done) =
            (db.clone(), writing.clone(), keys.clone(), done_tx.clone());
        let (calls, compactions) = (calls.clone(), compactions.clone());
        handles.push(std::thread::spawn(move || {
            let _done = Done(done);
            let pad = "p".repeat(200);
            let mut k = 0;
            while k < CALLS_PER_WRITER || compactions.load(Ordering::SeqCst) < MIN_COMPACTIONS {
                let j = k % PROFILES_PER_WRITER;
                let n = k / PROFILES_PER_WRITER;
                let m = json!({
                    "type": "identify",
                    "userId": uid(w, j),
                    "messageId": format!("w{w}-{k}"),
                    "traits": {"email": mail(w, j), "last": n, "pad": pad},
                    "$add": {"count": 1},
                });
                let out = db.apply(&Message::from_json(&m).unwrap()).unwrap();
                keys.write().insert((w, j), out.key);
                if k % 97 == 50 {
                    db.checkpoint().unwrap();
                }
                k += 1;
                calls[w as usize].store(k, Ordering::SeqCst);
            }
            writing.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    {
        let (db, writing, compactions, done) = (
            db.clone(),
            writing.clone(),
            compactions.clone(),
            done_tx.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let _done = Done(done);
            while writing.load(Ordering::SeqCst) > 0 {
                db.compact().unwrap();
                compactions.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for r in 0..READERS {
        let (db, stop, keys, reads, done) = (
            db.clone(),
            stop.clone(),
            keys.clone(),
            reads.clone(),
            done_tx.clone(),
        );
        handles.push(std::thread::spawn(move || {
            let _done = Done(done);
            // What this reader saw last of each profile.
            let mut seen: HashMap<(u64, u64), i64> = HashMap::new();
            let mut observe = |w: u64, j: u64, p: Option<Profile>, how: &str| {
                let prev = seen.get(&(w, j)).copied();
                match p {
                    None => assert!(prev.is_none(), "{how}: ({w},{j}) vanished after {prev:?}"),
                    Some(p) => {
                        let c = check_whole(&p, w, j, how);
                        if let Some(prev) = prev {
                            assert!(c >= prev, "{how}: ({w},{j}) went back from {prev} to {c}");
                        }
                        seen.insert((w, j), c);
                    }
                }
            };
            let mut i = r;
            // At least one full pass after the writers stop.
            let mut last_pass = false;
            loop {
                let finished = stop.load(Ordering::SeqCst);
                i += 1;
                let w = i % WRITERS;
                let j = (i / WRITERS) % PROFILES_PER_WRITER;
                let got = |s: Selector| db.get(&s).unwrap_or_else(|e| panic!("get {s:?}: {e}"));
                match i % 4 {
                    0 => observe(w, j, got(Selector::UserId(uid(w, j))), "get by user id"),
                    1 => observe(w, j, got(Selector::Email(mail(w, j))), "get by email"),
                    2 => {
                        let key = keys.read().get(&(w, j)).copied();
                        if let Some(key) = key {
                            let p = got(Selector::Key(key));
                            assert!(p.is_some(), "key {key} of ({w},{j}) not found");
                            observe(w, j, p, "get by key");
                        }
                    }
                    _ => {
                        let mut found = Vec::new();
                        db.scan(&Filter::All, &mut |p| {
                            found.push(p);
                            true
                        })
                        .unwrap_or_else(|e| panic!("scan: {e}"));
                        for p in found {
                            let name = p.user_id.clone().unwrap();
                            let (w, j) = (0..WRITERS)
                                .flat_map(|w| (0..PROFILES_PER_WRITER).map(move |j| (w, j)))
                                .find(|&(w, j)| uid(w, j) == name)
                                .unwrap();
                            observe(w, j, Some(p), "scan");
                        }
                    }
                }
                reads.fetch_add(1, Ordering::Relaxed);
                if last_pass && i % 8 == r {
                    break;
                }
                last_pass |= finished;
            }
        }));
    }
    drop(done_tx);

    // Watchdog: every thread reports when it ends; the readers are told to stop once the
    // writers and the compactor are done.
    let deadline = std::time::Instant::now() + WATCHDOG;
    let mut ended = 0;
    let threads = handles.len();
    while ended < threads {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => ended += 1,
            Err(_) => panic!(
                "deadlock? {ended} of {threads} threads ended within {WATCHDOG:?} \
                 ({} compactions, {} reads so far)",
                compactions.load(Ordering::Relaxed),
                reads.load(Ordering::Relaxed)
            ),
        }
        // Once the writers are done the compactor ends by itself; the readers make a last
        // pass and end.
        if writing.load(Ordering::SeqCst) == 0 {
            stop.store(true, Ordering::SeqCst);
        }
    }
    for h in handles {
        if let Err(panic) = h.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let compactions = compactions.load(Ordering::SeqCst);
    let calls: Vec<u64> = calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    eprintln!(
        "{WRITERS} writers ({calls:?} calls), {READERS} readers: {} reads, \
         {compactions} compactions",
        reads.load(Ordering::Relaxed)
    );
    assert!(
        compactions >= MIN_COMPACTIONS,
        "only {compactions} compactions ran"
    );

    let check_final = |db: &Db, how: &str| {
        for w in 0..WRITERS {
            for j in 0..PROFILES_PER_WRITER {
                // Calls k with k % PROFILES_PER_WRITER == j.
                let made = (calls[w as usize] + PROFILES_PER_WRITER - 1 - j) / PROFILES_PER_WRITER;
                let p = db.get(&Selector::UserId(uid(w, j))).unwrap().unwrap();
                assert_eq!(check_whole(&p, w, j, how), made as i64, "{how}");
            }
        }
        assert!(db.check().unwrap().is_empty(), "{how}");
    };
    check_final(&db, "at the end");
    let db = Arc::into_inner(db).expect("every thread let go of the store");
    db.close().unwrap();
    let db = Db::open(&dir, options()).unwrap();
    check_final(&db, "after a reopen");
    db.close().unwrap();
}

/// The segment-table swap protocol of `Db` + `storage`, modelled small and explored with
/// shuttle (random and PCT schedules) instead of hoping the OS scheduler finds the bad
/// interleaving:
///
/// - readers hold the index read lock from looking up a location until they have read it
///   (`Db::get` -> `Store::read`); `Store::read` looks in the sealed table, then at the active
///   segment under the append lock, then in the table again (a rotation may have sealed it
///   in between);
/// - writers append under the index write lock (`Db::write`), and rotation moves the active
///   segment into the sealed table;
/// - compaction prepares outside the index lock (seal, copy the entries the index still points
///   at), then under the index write lock swaps the table entries and relocates the index
///   entries that still point at the old copies (`Inner::compact`, `compaction::switch`).
///
/// The same model with the reader letting go of the index lock before reading is caught
/// ("no such segment"): the exploration can fail.
mod swap_protocol {
    use std::collections::{BTreeMap, HashMap};

    use shuttle::sync::{Arc, Mutex, RwLock};

    /// (segment id, slot in it).
    type Loc = (u32, usize);
    /// A sealed segment: its (key, value) entries.
    type Segment = Arc<Vec<(u8, u64)>>;

    struct Active {
        id: u32,
        entries: Vec<(u8, u64)>,
    }

    struct Store {
        sealed: RwLock<BTreeMap<u32, Segment>>,
        active: Mutex<Active>,
        next_id: Mutex<u32>,
        compaction: Mutex<()>,
    }

    struct Prepared {
        inputs: Vec<u32>,
        output: (u32, Segment),
        moved: Vec<(u8, Loc, Loc)>,
    }

    impl Store {
        fn new() -> Store {
            Store {
                sealed: RwLock::new(BTreeMap::new()),
                active: Mutex::new(Active {
                    id: 1,
                    entries: Vec::new(),
                }),
                next_id: Mutex::new(2),
                compaction: Mutex::new(()),
            }
        }

        fn rotate(&self, a: &mut Active) {
            if a.entries.is_empty() {
                return;
            }
            let id = {
                let mut n = self.next_id.lock().unwrap();
                *n += 1;
                *n - 1
            };
            let old = std::mem::replace(
                a,
                Active {
                    id,
                    entries: Vec::new(),
                },
            );
            self.sealed
                .write()
                .unwrap()
                .insert(old.id, Arc::new(old.entries));
        }

        /// Append; rotate after every second entry.
        fn append(&self, key: u8, value: u64) -> Loc {
            let mut a = self.active.lock().unwrap();
            a.entries.push((key, value));
            let loc = (a.id, a.entries.len() - 1);
            if a.entries.len() >= 2 {
                self.rotate(&mut a);
            }
            loc
        }

        fn read(&self, loc: Loc) -> Result<(u8, u64), String> {
            if let Some(s) = self.sealed.read().unwrap().get(&loc.0).cloned() {
                return Ok(s[loc.1]);
            }
            {
                let a = self.active.lock().unwrap();
                if a.id == loc.0 {
                    return Ok(a.entries[loc.1]);
                }
            }
            match self.sealed.read().unwrap().get(&loc.0).cloned() {
                Some(s) => Ok(s[loc.1]),
                None => Err(format!("no such segment {} (a stale location)", loc.0)),
            }
        }

        fn prepare(&self, is_live: impl Fn(u8, Loc) -> bool) -> Option<Prepared> {
            let _one = self.compaction.lock().unwrap();
            {
                let mut a = self.active.lock().unwrap();
                self.rotate(&mut a);
            }
            let inputs: Vec<(u32, Segment)> = self
                .sealed
                .read()
                .unwrap()
                .iter()
                .map(|(id, s)| (*id, s.clone()))
                .collect();
            if inputs.is_empty() {
                return None;
            }
            let id = {
                let mut n = self.next_id.lock().unwrap();
                *n += 1;
                *n - 1
            };
            let mut out = Vec::new();
            let mut moved = Vec::new();
            for (sid, s) in &inputs {
                for (slot, &(k, v)) in s.iter().enumerate() {
                    if is_live(k, (*sid, slot)) {
                        moved.push((k, (*sid, slot), (id, out.len())));
                        out.push((k, v));
                    }
                }
            }
            Some(Prepared {
                inputs: inputs.iter().map(|(id, _)| *id).collect(),
                output: (id, Arc::new(out)),
                moved,
            })
        }

        fn commit(&self, p: &Prepared) {
            let _one = self.compaction.lock().unwrap();
            let mut t = self.sealed.write().unwrap();
            for id in &p.inputs {
                t.remove(id);
            }
            t.insert(p.output.0, p.output.1.clone());
        }
    }

    struct Db {
        index: RwLock<HashMap<u8, Loc>>,
        store: Store,
    }

    impl Db {
        fn put(&self, key: u8, value: u64) {
            let mut ix = self.index.write().unwrap();
            let loc = self.store.append(key, value);
            ix.insert(key, loc);
        }

        fn get(&self, key: u8, hold_index_lock: bool) -> Option<u64> {
            let (k, v) = if hold_index_lock {
                let ix = self.index.read().unwrap();
                let loc = *ix.get(&key)?;
                self.store.read(loc)
            } else {
                // The broken variant: the location outlives the lock that made it valid.
                let loc = *self.index.read().unwrap().get(&key)?;
                self.store.read(loc)
            }
            .unwrap_or_else(|e| panic!("read of key {key}: {e}"));
            assert_eq!(k, key, "read another key's entry");
            Some(v)
        }

        fn compact(&self) {
            let Some(p) = self
                .store
                .prepare(|k, loc| self.index.read().unwrap().get(&k) == Some(&loc))
            else {
                return;
            };
            let mut ix = self.index.write().unwrap();
            self.store.commit(&p);
            for (k, old, new) in &p.moved {
                if ix.get(k) == Some(old) {
                    ix.insert(*k, *new);
                }
            }
        }
    }

    /// One writer bumping two counters, one compactor compacting twice, one reader checking
    /// that each counter it sees never goes back and never fails to read.
    fn scenario(hold_index_lock: bool) {
        let db = Arc::new(Db {
            index: RwLock::new(HashMap::new()),
            store: Store::new(),
        });
        db.put(0, 0);
        db.put(1, 0);
        let writer = {
            let db = db.clone();
            shuttle::thread::spawn(move || {
                for v in 1..=3 {
                    db.put((v % 2) as u8, v);
                }
            })
        };
        let compactor = {
            let db = db.clone();
            shuttle::thread::spawn(move || {
                db.compact();
                db.compact();
            })
        };
        let reader = {
            let db = db.clone();
            shuttle::thread::spawn(move || {
                let mut last = [0u64; 2];
                for i in 0..6 {
                    let key = (i % 2) as u8;
                    let v = db.get(key, hold_index_lock).expect("written before");
                    assert!(v >= last[key as usize], "key {key} went back");
                    last[key as usize] = v;
                }
            })
        };
        writer.join().unwrap();
        compactor.join().unwrap();
        reader.join().unwrap();
        assert_eq!(db.get(0, true), Some(2));
        assert_eq!(db.get(1, true), Some(3));
    }

    #[test]
    fn readers_holding_the_index_lock_never_see_a_swapped_out_segment() {
        shuttle::check_random(|| scenario(true), 3000);
        shuttle::check_pct(|| scenario(true), 3000, 3);
    }

    #[test]
    #[should_panic(expected = "no such segment")]
    fn a_reader_letting_go_of_the_index_lock_early_is_caught() {
        shuttle::check_pct(|| scenario(false), 3000, 3);
    }
}
