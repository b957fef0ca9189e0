//! The fourth peer: what a competent user writes in an afternoon instead of using a store.
//! Every profile lives decoded in a `HashMap<key, Profile>`, with `HashMap`s from user id and
//! from email to the key; each call is applied by the same code as the other peers
//! (`peer::identify`), and every profile it writes (or deletes, on a merge) is appended as a
//! whole to one append-only log through a `BufWriter`:
//!
//! ```text
//! [len u32 LE][crc32 u32 LE of the payload][payload: tag u8 (1 put, 0 delete), key u64 LE,
//!                                           bincode 2 of the Profile (puts only)]
//! ```
//!
//! `Engine::run` flushes and `fdatasync`s once per group of calls: one per 1,000 calls in the
//! batched form, one per call in the durable form. Reopen scans the log (last record per key
//! wins, a torn or damaged tail is cut off) and rebuilds the two indexes from the profiles.
//! Compaction writes the live profiles to a new log and renames it over the old one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use profiledb::Message;

use crate::engines::{Engine, charge_last, ns};
use crate::peer::{Bincode, Codec, Profile, PropValue, Store, identify};

const LOG: &str = "profiles.log";
const PUT: u8 = 1;
const DEL: u8 = 0;
/// Frame header: length and CRC of the payload.
const HEADER: usize = 8;

/// The in-memory state: what reopen rebuilds from the log.
#[derive(Default)]
struct State {
    by_uid: HashMap<String, u64>,
    by_email: HashMap<String, u64>,
    profiles: HashMap<u64, Profile<PropValue>>,
}

pub struct LogStore {
    dir: PathBuf,
    state: State,
    log: BufWriter<File>,
    /// Encoding scratch: one framed record.
    buf: Vec<u8>,
    next_key: u64,
}

/// What a reopen found.
#[derive(Debug, Clone, Copy)]
pub struct Scan {
    pub records: u64,
    pub bytes: u64,
    /// Bytes of a torn or damaged tail cut off.
    pub cut: u64,
}

impl LogStore {
    /// Open the log in `dir` (created if missing), scanning what is there.
    pub fn open(dir: &Path) -> (LogStore, Scan) {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(LOG);
        let (state, next_key, scan) = match File::open(&path) {
            Ok(f) => scan(f),
            Err(_) => (
                State::default(),
                0,
                Scan {
                    records: 0,
                    bytes: 0,
                    cut: 0,
                },
            ),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        if scan.cut > 0 {
            file.set_len(scan.bytes).unwrap();
        }
        let store = LogStore {
            dir: dir.to_path_buf(),
            state,
            log: BufWriter::with_capacity(256 << 10, file),
            buf: Vec::with_capacity(4096),
            next_key,
        };
        (store, scan)
    }

    /// Live profiles.
    pub fn len(&self) -> usize {
        self.state.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.state.profiles.is_empty()
    }

    fn sync(&mut self) {
        self.log.flush().unwrap();
        self.log.get_ref().sync_data().unwrap();
    }
}

/// Read the whole log: the state, the last key handed out, and where the valid records end.
fn scan(mut f: File) -> (State, u64, Scan) {
    let mut bytes = Vec::with_capacity(f.metadata().map_or(0, |m| m.len() as usize));
    f.read_to_end(&mut bytes).unwrap();
    let mut state = State::default();
    let mut next_key = 0;
    let mut records = 0;
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if len < 9 || crc32fast::hash(payload) != crc {
            break;
        }
        let key = u64::from_le_bytes(payload[1..9].try_into().unwrap());
        next_key = next_key.max(key);
        match payload[0] {
            PUT => {
                state.profiles.insert(key, Bincode::decode(&payload[9..]));
            }
            DEL => {
                state.profiles.remove(&key);
            }
            _ => break,
        }
        records += 1;
        at += HEADER + len;
    }
    for (&key, p) in &state.profiles {
        if let Some(u) = &p.user_id {
            state.by_uid.insert(u.clone(), key);
        }
        if let Some(e) = &p.email {
            state.by_email.insert(e.clone(), key);
        }
    }
    let scan = Scan {
        records,
        bytes: at as u64,
        cut: (bytes.len() - at) as u64,
    };
    (state, next_key, scan)
}

/// Frame one record into `buf` (cleared first).
fn frame(buf: &mut Vec<u8>, key: u64, profile: Option<&Profile<PropValue>>) {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER]);
    buf.push(if profile.is_some() { PUT } else { DEL });
    buf.extend_from_slice(&key.to_le_bytes());
    if let Some(p) = profile {
        Bincode::encode(p, buf);
    }
    let len = (buf.len() - HEADER) as u32;
    let crc = crc32fast::hash(&buf[HEADER..]);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// One call's view of the store: writes go to the maps and to the log's buffer.
struct Call<'a> {
    state: &'a mut State,
    log: &'a mut BufWriter<File>,
    buf: &'a mut Vec<u8>,
}

impl Store<PropValue> for Call<'_> {
    fn uid(&mut self, uid: &str) -> Option<u64> {
        self.state.by_uid.get(uid).copied()
    }
    fn email(&mut self, email: &str) -> Option<u64> {
        self.state.by_email.get(email).copied()
    }
    fn load(&mut self, key: u64) -> Profile<PropValue> {
        // Taken out and put back (or deleted) by the same call: no copy.
        self.state.profiles.remove(&key).unwrap_or_default()
    }
    fn put(&mut self, key: u64, profile: Profile<PropValue>) {
        frame(self.buf, key, Some(&profile));
        self.log.write_all(self.buf).unwrap();
        self.state.profiles.insert(key, profile);
    }
    fn del(&mut self, key: u64) {
        frame(self.buf, key, None);
        self.log.write_all(self.buf).unwrap();
        self.state.profiles.remove(&key);
    }
    fn set_uid(&mut self, uid: &str, key: u64) {
        self.state.by_uid.insert(uid.to_string(), key);
    }
    fn set_email(&mut self, email: &str, key: u64) {
        self.state.by_email.insert(email.to_string(), key);
    }
    fn del_email(&mut self, email: &str) {
        self.state.by_email.remove(email);
    }
}

impl Engine for LogStore {
    /// Applies the calls, then flushes and `fdatasync`s the log once if `sync`.
    fn run(&mut self, calls: &[Message], sync: bool, lat: &mut Vec<u32>) {
        let mut call = Call {
            state: &mut self.state,
            log: &mut self.log,
            buf: &mut self.buf,
        };
        for m in calls {
            let t = Instant::now();
            identify(&mut call, m, &mut self.next_key);
            lat.push(ns(t));
        }
        if sync {
            let t = Instant::now();
            self.sync();
            charge_last(lat, t);
        }
    }
    fn finish(&mut self) {
        self.sync();
    }
    /// One put per live profile into a new log, synced, renamed over the old one.
    fn compact(&mut self) -> bool {
        self.sync();
        let tmp = self.dir.join("profiles.log.tmp");
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).unwrap());
        let mut keys: Vec<u64> = self.state.profiles.keys().copied().collect();
        keys.sort_unstable();
        for key in keys {
            frame(&mut self.buf, key, self.state.profiles.get(&key));
            out.write_all(&self.buf).unwrap();
        }
        // The highest key ever handed out survives as a delete record, so keys are not reused.
        if !self.state.profiles.contains_key(&self.next_key) && self.next_key > 0 {
            frame(&mut self.buf, self.next_key, None);
            out.write_all(&self.buf).unwrap();
        }
        let file = out.into_inner().unwrap();
        file.sync_data().unwrap();
        drop(file);
        let path = self.dir.join(LOG);
        std::fs::rename(&tmp, &path).unwrap();
        File::open(&self.dir).unwrap().sync_all().unwrap();
        let file = OpenOptions::new().append(true).open(&path).unwrap();
        self.log = BufWriter::with_capacity(256 << 10, file);
        true
    }
    fn profiles(&mut self) -> u64 {
        self.state.profiles.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use profiledb::workload::{W1, W1Config};

    fn fingerprint(s: &LogStore) -> Vec<(u64, Vec<u8>)> {
        let mut v: Vec<(u64, Vec<u8>)> = s
            .state
            .profiles
            .iter()
            .map(|(k, p)| {
                let mut b = Vec::new();
                Bincode::encode(p, &mut b);
                (*k, b)
            })
            .collect();
        v.sort();
        v
    }

    /// An index as sorted (identifier, key) pairs.
    type Index = Vec<(String, u64)>;

    fn indexes(s: &LogStore) -> (Index, Index) {
        let sorted = |m: &HashMap<String, u64>| {
            let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
            v.sort();
            v
        };
        (sorted(&s.state.by_uid), sorted(&s.state.by_email))
    }

    #[test]
    fn reopen_rebuilds_the_state_cuts_a_torn_tail_and_survives_compaction() {
        let dir = std::env::temp_dir().join(format!("peers-baseline-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let calls: Vec<Message> = W1::new(W1Config::new(7, 5_000).with_people(800)).collect();
        let (mut s, _) = LogStore::open(&dir);
        let mut lat = Vec::new();
        for group in calls.chunks(1000) {
            s.run(group, true, &mut lat);
        }
        let (profiles, idx, next_key) = (fingerprint(&s), indexes(&s), s.next_key);
        assert!(profiles.len() > 100 && profiles.len() < 800);
        drop(s);

        // A torn last record: half a frame appended after the valid ones.
        let mut half = Vec::new();
        frame(&mut half, 1, None);
        let mut f = OpenOptions::new().append(true).open(dir.join(LOG)).unwrap();
        f.write_all(&half[..half.len() / 2]).unwrap();
        drop(f);

        let (mut s, scan) = LogStore::open(&dir);
        assert_eq!(scan.cut, (half.len() / 2) as u64);
        // Every call appends its profile; merges and email moves append one more record.
        assert!(scan.records >= 5_000, "{scan:?}");
        assert_eq!(
            (fingerprint(&s), indexes(&s), s.next_key),
            (profiles.clone(), idx.clone(), next_key)
        );

        assert!(s.compact());
        drop(s);
        let (s, scan) = LogStore::open(&dir);
        assert_eq!(scan.cut, 0);
        assert_eq!(
            (fingerprint(&s), indexes(&s), s.next_key),
            (profiles, idx, next_key)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
