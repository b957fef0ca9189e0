//! Shared machinery of the power-loss tests (`powerloss_sim`, `compaction_crash_matrix`,
//! `recovery_crash`): a deterministic workload of identify calls at the `Db` level, what those
//! calls do in the one reference model of the rules (`identify_model/reference.rs`), the list
//! of damages a power cut may do to what was not synced, and the checks every recovered disk
//! image must pass.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use profiledb::storage::StoreOptions;
use profiledb::storage::io::{FaultyIo, Io, NameLoss, PowerCut, RealIo, UnsyncedTail};
use profiledb::{Db, Durability, Filter, Message, Options, Selector};
use serde_json::{Value as Json, json};

#[path = "identify_model/reference.rs"]
pub mod reference;
use reference::Reference;

/// Small segments, so that the workload rotates often.
pub const SEGMENT_SIZE: u64 = 1024;
pub const USERS: u8 = 5;
pub const EMAILS: u8 = 6;

/// A scratch directory, on tmpfs when there is one (the tests fsync a lot).
pub fn scratch() -> tempfile::TempDir {
    if let Ok(d) = std::env::var("PROFILEDB_CRASH_TMP") {
        return tempfile::tempdir_in(d).unwrap();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(t) = tempfile::tempdir_in(shm)
    {
        return t;
    }
    tempfile::tempdir().unwrap()
}

/// Group commit whose background thread never fires during a test (a one-hour window, no
/// batch limit), so that every sync is one a waiting caller leads and crash points are
/// deterministic.
pub const GROUP_COMMIT: Durability = Durability::GroupCommit {
    max_delay: std::time::Duration::from_secs(3600),
    max_batch: usize::MAX,
};

pub fn options() -> Options {
    options_with(Durability::SyncEach)
}

pub fn options_with(durability: Durability) -> Options {
    Options {
        durability,
        segment_size: SEGMENT_SIZE,
        compaction_ratio: None,
        ..Options::default()
    }
}

pub fn store_options(io: Arc<dyn Io>) -> StoreOptions {
    store_options_with(io, Durability::SyncEach)
}

pub fn store_options_with(io: Arc<dyn Io>, durability: Durability) -> StoreOptions {
    StoreOptions {
        segment_size: SEGMENT_SIZE,
        durability,
        repair: false,
        create: true,
        io,
    }
}

pub fn open_faulty(dir: &Path, io: &Arc<FaultyIo>) -> profiledb::Result<Db> {
    open_faulty_with(dir, io, Durability::SyncEach)
}

pub fn open_faulty_with(
    dir: &Path,
    io: &Arc<FaultyIo>,
    durability: Durability,
) -> profiledb::Result<Db> {
    Db::open_with(
        dir,
        options_with(durability),
        store_options_with(Arc::new(io.clone()), durability),
    )
}

pub fn open_real(dir: &Path) -> profiledb::Result<Db> {
    Db::open_with(dir, options(), store_options(Arc::new(RealIo)))
}

pub fn uid(i: u8) -> String {
    format!("user-{i}")
}

pub fn email(i: u8) -> String {
    format!("person{i}@example.com")
}

/// One step of a workload. `Identify`, `Resend` and `Delete` are the calls (numbered in order);
/// `Compact` and `Checkpoint` only move bytes.
#[derive(Debug, Clone)]
pub enum Step {
    /// identify with `traits.plan = "p<call>"`, `$add {n: 1}`, `timestamp` = call number,
    /// `messageId` = `m-<call>`; `buffered` calls do not wait for their fsync.
    Identify {
        uid: Option<u8>,
        email: Option<u8>,
        buffered: bool,
        /// With `pad > 0`, also `traits.bio` = `"<call>-"` and `pad` bytes of padding.
        pad: u16,
    },
    /// Send call number `.0` again, same messageId: a duplicate, changes nothing.
    Resend(usize),
    /// Delete the profile of this user id (no suppression).
    Delete(u8),
    /// Delete the profile of this user id and suppress its identifiers: later calls naming
    /// them are refused (`Error::Suppressed`, nothing written).
    Suppress(u8),
    Compact,
    Checkpoint,
}

impl Step {
    pub fn is_call(&self) -> bool {
        !matches!(self, Step::Compact | Step::Checkpoint)
    }
}

fn id(u: Option<u8>, e: Option<u8>) -> Step {
    Step::Identify {
        uid: u,
        email: e,
        buffered: false,
        pad: 0,
    }
}

fn buffered(u: Option<u8>, e: Option<u8>) -> Step {
    Step::Identify {
        uid: u,
        email: e,
        buffered: true,
        pad: 0,
    }
}

/// Segment size of [`big_workload`]: above the 64 KiB at which the active segment's buffer is
/// written out without a sync, so that crashes also hit those writes.
pub const BIG_SEGMENT_SIZE: u64 = 96 << 10;

/// Bursts of buffered calls with ~1 KiB profiles, each burst acknowledged by one waiting call:
/// unsynced tails of many frames and many sectors, `write()`s of the buffer every 64 KiB, a
/// hint in the middle of a large active segment, a compaction. Run it with
/// [`BIG_SEGMENT_SIZE`].
pub fn big_workload() -> Vec<Step> {
    let mut s = Vec::new();
    for i in 0..120u8 {
        let u = (i % 4 != 3).then_some(i % USERS);
        let e = (i % 3 != 0 || u.is_none()).then_some(((i % EMAILS) * 7 + 2) % EMAILS);
        s.push(Step::Identify {
            uid: u,
            email: e,
            buffered: i % 10 != 9,
            pad: 700 + (i as u16 % 5) * 97,
        });
        match i {
            39 => s.push(Step::Checkpoint),
            59 => s.push(Step::Delete(2)),
            79 => s.push(Step::Compact),
            99 => s.push(Step::Checkpoint),
            _ => {}
        }
    }
    s
}

/// The workload of the power-loss tests: creates, updates, merges (email-only profiles taken
/// over by a user id), protection moves (an email moving between two identified profiles),
/// `$add` counters, a duplicate, a delete and a re-use of the deleted identifiers, buffered
/// calls acknowledged only by a later sync, two checkpoints and a compaction.
pub fn workload() -> Vec<Step> {
    let mut s = vec![
        id(Some(0), Some(0)),
        id(Some(1), None),
        id(None, Some(1)),
        id(Some(1), Some(1)), // merge: the email-only profile joins user-1
        id(None, Some(2)),
        id(Some(2), None),
        buffered(Some(0), None),
        id(Some(2), Some(2)), // merge
        id(Some(3), Some(0)), // protection: email 0 moves from user-0 to a new user-3
        id(Some(0), Some(3)),
        Step::Checkpoint,
        id(None, Some(4)),
        id(Some(4), Some(4)), // the anonymous email profile takes user-4
        Step::Resend(0),
        id(Some(1), Some(2)), // protection: email 2 moves from user-2 to user-1
        buffered(Some(3), None),
        buffered(Some(4), None),
        id(Some(2), Some(5)),
        Step::Delete(1),
        id(None, Some(2)),    // email 2 was freed by the delete
        id(Some(1), Some(2)), // a new user-1 takes the email-only profile
        Step::Compact,
    ];
    for i in 0..48u8 {
        let u = (i % 3 != 2).then_some(i % USERS);
        let e = (i % 4 != 1).then_some((i * 5 + 1) % EMAILS);
        let e = if u.is_none() && e.is_none() {
            Some(i % EMAILS)
        } else {
            e
        };
        s.push(if i % 8 >= 5 { buffered(u, e) } else { id(u, e) });
        if i == 8 || i == 40 {
            s.push(Step::Checkpoint);
        }
        if i == 11 {
            s.push(Step::Delete(3));
        }
        if i == 30 {
            s.push(Step::Compact);
        }
        if i == 35 {
            s.push(Step::Delete(i % USERS));
        }
        if i == 20 {
            s.push(Step::Suppress(4));
        }
        if i == 14 {
            // A retry of the buffered call just made: it must wait for that call's sync.
            let last = s.iter().filter(|x| x.is_call()).count() - 1;
            s.push(Step::Resend(last));
        }
    }
    s
}

/// The calls of a workload (its `Identify`/`Resend`/`Delete` steps), in order.
pub fn calls(steps: &[Step]) -> Vec<Step> {
    steps.iter().filter(|s| s.is_call()).cloned().collect()
}

fn bio(call: usize, pad: u16) -> String {
    format!("{call}-{}", "b".repeat(pad as usize))
}

pub fn message(call: usize, u: Option<u8>, e: Option<u8>, pad: u16) -> Json {
    let mut traits = json!({"plan": format!("p{call}")});
    if pad > 0 {
        traits["bio"] = json!(bio(call, pad));
    }
    if let Some(e) = e {
        traits["email"] = json!(email(e));
    }
    let t = call as u32 + 1;
    let mut m = json!({
        "type": "identify",
        "traits": traits,
        "$add": {"n": 1},
        "messageId": format!("m-{call}"),
        "timestamp": format!("2026-11-22T10:{:02}:{:02}Z", t / 60, t % 60),
    });
    if let Some(u) = u {
        m["userId"] = json!(uid(u));
    }
    m
}

// ---------------------------------------------------------------------------------------------
// The model.

/// A profile as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PState {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub properties: BTreeMap<String, Json>,
}

/// Everything the tests compare: every profile by key, and where each identifier of the pool
/// resolves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub profiles: BTreeMap<u64, PState>,
    pub users: BTreeMap<String, u64>,
    pub emails: BTreeMap<String, u64>,
}

impl State {
    /// A short description of how `self` differs from `other`.
    pub fn diff(&self, other: &State) -> String {
        let mut out = Vec::new();
        for (k, p) in &self.profiles {
            match other.profiles.get(k) {
                None => out.push(format!("key {k} only here: {p:?}")),
                Some(q) if q != p => out.push(format!("key {k}: {p:?} vs {q:?}")),
                _ => {}
            }
        }
        for k in other.profiles.keys() {
            if !self.profiles.contains_key(k) {
                out.push(format!("key {k} missing"));
            }
        }
        if self.users != other.users {
            out.push(format!("users {:?} vs {:?}", self.users, other.users));
        }
        if self.emails != other.emails {
            out.push(format!("emails {:?} vs {:?}", self.emails, other.emails));
        }
        out.join("; ")
    }
}

/// The workload's calls applied in order to the one reference model of the rules
/// ([`reference::Reference`], reached through `Deref`: `next_key`, `suppressed_users`,
/// `suppressed_emails`, ...). Its calls name a user id and an email only; `plan` (and `bio`)
/// are sets, `n` an `$add` counter.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub rules: Reference,
}

impl std::ops::Deref for Model {
    type Target = Reference;
    fn deref(&self) -> &Reference {
        &self.rules
    }
}

impl Model {
    /// Whether a call naming these identifiers is refused.
    pub fn refuses(&self, uid: Option<&str>, email: Option<&str>) -> bool {
        self.rules.refuses(&reference::Call {
            user_id: uid,
            email,
            ..reference::Call::default()
        })
    }

    /// Apply call number `call` of `calls`.
    pub fn apply(&mut self, call: usize, calls: &[Step]) {
        match &calls[call] {
            Step::Identify {
                uid: u,
                email: e,
                pad,
                ..
            } => {
                let (u, e) = (u.map(uid), e.map(email));
                let mut sets = vec![("plan", json!(format!("p{call}")))];
                if *pad > 0 {
                    sets.push(("bio", json!(bio(call, *pad))));
                }
                // A refused call (a suppressed identifier) changes nothing.
                let _ = self.rules.identify(&reference::Call {
                    user_id: u.as_deref(),
                    email: e.as_deref(),
                    sets,
                    adds: vec![("n", 1)],
                    timestamp: call as i64 + 1,
                    ..reference::Call::default()
                });
            }
            Step::Delete(u) => {
                self.rules.delete(&uid(*u), false);
            }
            Step::Suppress(u) => {
                self.rules.delete(&uid(*u), true);
            }
            Step::Resend(_) | Step::Compact | Step::Checkpoint => {}
        }
    }

    pub fn state(&self) -> State {
        let mut st = State::default();
        for (&k, p) in &self.profiles {
            st.profiles.insert(
                k,
                PState {
                    user_id: p.user_id.clone(),
                    email: p.email.clone(),
                    properties: p.properties(),
                },
            );
        }
        for i in 0..USERS {
            if let Some(k) = self.by_user(&uid(i)) {
                st.users.insert(uid(i), k);
            }
        }
        for i in 0..EMAILS {
            if let Some(k) = self.by_email(&email(i)) {
                st.emails.insert(email(i), k);
            }
        }
        st
    }
}

/// The model's state after each prefix of the calls: `states[p]` = after the first `p` calls.
pub fn model_states(calls: &[Step]) -> Vec<State> {
    let mut m = Model::default();
    let mut out = vec![m.state()];
    for i in 0..calls.len() {
        m.apply(i, calls);
        out.push(m.state());
    }
    out
}

/// The state of an open store, read through the public API.
pub fn db_state(db: &Db) -> profiledb::Result<State> {
    let mut st = State::default();
    let mut err = None;
    db.scan(&Filter::All, &mut |p| {
        let properties = p
            .properties
            .iter()
            .map(|(n, v)| (n.clone(), v.to_json()))
            .collect();
        st.profiles.insert(
            p.key,
            PState {
                user_id: p.user_id,
                email: p.email,
                properties,
            },
        );
        true
    })?;
    for i in 0..USERS {
        match db.get(&Selector::UserId(uid(i))) {
            Ok(Some(p)) => {
                st.users.insert(uid(i), p.key);
            }
            Ok(None) => {}
            Err(e) => err = Some(e),
        }
    }
    for i in 0..EMAILS {
        match db.get(&Selector::Email(email(i))) {
            Ok(Some(p)) => {
                st.emails.insert(email(i), p.key);
            }
            Ok(None) => {}
            Err(e) => err = Some(e),
        }
    }
    match err {
        Some(e) => Err(e),
        None => Ok(st),
    }
}

// ---------------------------------------------------------------------------------------------
// Running a workload.

/// What a (possibly crashed) run of the workload did.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Calls acknowledged durable: the first `acked` calls must survive any power cut.
    pub acked: usize,
    /// Calls issued (returned Ok, or failed after possibly writing something).
    pub issued: usize,
    /// Total I/O operations done (`FaultyIo::ops`) when the run ended.
    pub ops: u64,
    /// The first error, if the run stopped on one.
    pub error: Option<String>,
}

/// How a workload's store is opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// What the non-buffered calls and the delete wait for (`SyncEach` or a group commit).
    pub durability: Durability,
    pub segment_size: u64,
    /// `Options::preallocate_bytes`.
    pub preallocate: u64,
}

impl From<Durability> for Config {
    fn from(durability: Durability) -> Config {
        Config {
            durability,
            segment_size: SEGMENT_SIZE,
            preallocate: 0,
        }
    }
}

/// Run `steps` on a store in `dir` opened through `io` with `config`, stopping at the
/// first error; a clean `close` ends it. With `check`, the store is compared with the model
/// after every call (the counting run uses this to validate the model itself).
pub fn run_workload(
    dir: &Path,
    io: &Arc<FaultyIo>,
    steps: &[Step],
    check: Option<&[State]>,
    config: impl Into<Config>,
) -> Run {
    let config = config.into();
    let durable = config.durability;
    let mut run = Run::default();
    let opened = Db::open_with(
        dir,
        Options {
            segment_size: config.segment_size,
            preallocate_bytes: config.preallocate,
            ..options_with(durable)
        },
        StoreOptions {
            segment_size: config.segment_size,
            ..store_options_with(Arc::new(io.clone()), durable)
        },
    );
    let db = match opened {
        Ok(db) => db,
        Err(e) => {
            run.error = Some(format!("open: {e}"));
            run.ops = io.ops();
            return run;
        }
    };
    let calls = calls(steps);
    let mut call = 0usize;
    for step in steps {
        let r: profiledb::Result<()> = match step {
            Step::Identify {
                uid: u,
                email: e,
                buffered,
                pad,
            } => {
                run.issued = call + 1;
                let m = Message::from_json(&message(call, *u, *e, *pad)).unwrap();
                let d = if *buffered {
                    Durability::Buffered
                } else {
                    durable
                };
                match db.apply_with(&m, d) {
                    Ok(_) => {
                        if d.waits() {
                            run.acked = call + 1;
                        }
                        Ok(())
                    }
                    // Refused before anything is written: no effect, nothing to wait for.
                    Err(profiledb::Error::Suppressed { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Step::Resend(i) => {
                run.issued = call + 1;
                let Step::Identify {
                    uid: u,
                    email: e,
                    pad,
                    ..
                } = &calls[*i]
                else {
                    panic!("resend of a non-identify")
                };
                let m = Message::from_json(&message(*i, *u, *e, *pad)).unwrap();
                db.apply_with(&m, durable).map(|o| {
                    assert_eq!(o.status, profiledb::Status::Duplicate, "resend of {i}");
                    run.acked = call + 1;
                })
            }
            Step::Delete(u) | Step::Suppress(u) => {
                run.issued = call + 1;
                let suppress = matches!(step, Step::Suppress(_));
                db.delete(&Selector::UserId(uid(*u)), suppress)
                    .map(|_| run.acked = call + 1)
            }
            Step::Compact => db.compact().map(|_| ()),
            Step::Checkpoint => db.checkpoint(),
        };
        if let Err(e) = r {
            run.error = Some(format!("{step:?}: {e}"));
            break;
        }
        if step.is_call() {
            call += 1;
            if let Some(states) = check {
                let got = db_state(&db).unwrap();
                assert_eq!(
                    got,
                    states[call],
                    "the model disagrees after call {call}: {}",
                    got.diff(&states[call])
                );
            }
        }
    }
    if run.error.is_none() {
        match db.close() {
            Ok(()) => run.acked = calls.len(),
            Err(e) => run.error = Some(format!("close: {e}")),
        }
    } else {
        drop(db);
    }
    run.ops = io.ops();
    run
}

// ---------------------------------------------------------------------------------------------
// Damages.

/// Check what a crash at operation `k` left in `dir`: each power-cut image of [`damages`]
/// (written under `base`), then the live directory itself, restarted after a kill -9
/// (everything written is there).
pub fn check_crash_images(
    io: &FaultyIo,
    dir: &Path,
    base: &Path,
    k: u64,
    mut check: impl FnMut(&Path, &str),
) {
    for (d, (name, cut)) in damages(k).into_iter().enumerate() {
        let image = base.join(format!("image{d}"));
        io.power_loss_with(dir, &image, cut).unwrap();
        check(&image, &name);
    }
    io.revive();
    check(dir, "restart after kill -9");
}

/// The damages every crash point is checked with (`PROFILEDB_POWERLOSS_DAMAGES=n` adds seeded
/// ones up to `n`). `k` varies the seeded ones between crash points.
pub fn damages(k: u64) -> Vec<(String, PowerCut)> {
    let cut = |tail, names| PowerCut { tail, names };
    let mut d = vec![
        (
            "drop, durable names".into(),
            cut(UnsyncedTail::Drop, NameLoss::Durable),
        ),
        (
            "all (kill -9)".into(),
            cut(UnsyncedTail::All, NameLoss::Current),
        ),
        (
            "all data, durable names".into(),
            cut(UnsyncedTail::All, NameLoss::Durable),
        ),
        (
            "drop data, current names".into(),
            cut(UnsyncedTail::Drop, NameLoss::Current),
        ),
        (
            "length grown, zeros".into(),
            cut(UnsyncedTail::Zeros(usize::MAX), NameLoss::Current),
        ),
        (
            "last write cut short".into(),
            cut(
                UnsyncedTail::Keep((k as usize * 37) % 700 + 1),
                NameLoss::Prefix(1),
            ),
        ),
        (
            "garbage".into(),
            cut(UnsyncedTail::Garbage(usize::MAX), NameLoss::Seeded(k)),
        ),
        (
            format!("seeded {k}"),
            cut(UnsyncedTail::Seeded(k), NameLoss::Seeded(k)),
        ),
        (
            format!("seeded {}", k + 1_000_003),
            cut(UnsyncedTail::Seeded(k + 1_000_003), NameLoss::Current),
        ),
        (
            format!("seeded {}", k + 2_000_003),
            cut(UnsyncedTail::Seeded(k + 2_000_003), NameLoss::Durable),
        ),
    ];
    let n: usize = std::env::var("PROFILEDB_POWERLOSS_DAMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d.len());
    let mut extra = 3u64;
    while d.len() < n {
        let seed = k.wrapping_mul(7919).wrapping_add(extra * 1_000_003);
        d.push((
            format!("seeded {seed}"),
            cut(UnsyncedTail::Seeded(seed), NameLoss::Seeded(seed)),
        ));
        extra += 1;
    }
    d
}

/// Names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Temporary files that must not survive a completed open.
pub fn leftovers(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".tmp") || n == "COMPACT")
        .collect()
}

/// Which prefix of the calls `got` is, within `acked..=issued`.
pub fn matching_prefix(
    states: &[State],
    got: &State,
    acked: usize,
    issued: usize,
) -> Option<usize> {
    (acked..=issued.min(states.len() - 1)).find(|&p| states[p] == *got)
}

/// Open a recovered image and check it against the model: open succeeds, the state is the
/// model after some prefix of the calls between `acked` and `issued`, `check` finds nothing,
/// no temporary file is left, and the state survives a power cut right after the open as well
/// as a clean close and reopen; then resending the last applied call (same messageId) is a
/// duplicate that changes nothing. Returns the prefix, or what went wrong.
/// The identity journal (docs/journal.md) after recovery: every live profile's history reads,
/// the profile as of now is the profile, and the profile as of its oldest kept step reads.
pub fn journal_consistent(db: &Db) -> Result<(), String> {
    let now = db.history_clock();
    let mut profiles = Vec::new();
    db.scan(&profiledb::Filter::All, &mut |p| {
        profiles.push(p);
        true
    })
    .map_err(|e| format!("scan: {e}"))?;
    for p in profiles {
        let key = profiledb::Selector::Key(p.key);
        let h = db
            .history(&key)
            .map_err(|e| format!("history of {}: {e}", p.key))?
            .ok_or_else(|| format!("profile {} has no history", p.key))?;
        let at = db
            .get_at(&key, now)
            .map_err(|e| format!("get_at(now) of {}: {e}", p.key))?;
        if at.as_ref() != Some(&p) {
            return Err(format!(
                "profile {} as of now differs from the profile: {at:?} vs {p:?}",
                p.key
            ));
        }
        if let Some(first) = h.steps.first() {
            db.get_at(&key, first.applied_at)
                .map_err(|e| format!("get_at(first step) of {}: {e}", p.key))?;
        }
    }
    Ok(())
}

pub fn check_image(
    image: &Path,
    states: &[State],
    calls: &[Step],
    acked: usize,
    issued: usize,
) -> Result<usize, String> {
    let io = FaultyIo::new();
    let db = open_faulty(image, &io).map_err(|e| format!("open failed: {e}"))?;
    let got = db_state(&db).map_err(|e| format!("read failed: {e}"))?;
    let Some(p) = matching_prefix(states, &got, acked, issued) else {
        return Err(format!(
            "state is no prefix of the calls in {acked}..={issued}; vs acked: {}; vs issued: {}",
            got.diff(&states[acked]),
            got.diff(&states[issued.min(states.len() - 1)])
        ));
    };
    let problems = db.check().map_err(|e| format!("check failed: {e}"))?;
    if !problems.is_empty() {
        return Err(format!("check: {problems:?}"));
    }
    journal_consistent(&db)?;
    let left = leftovers(image);
    if !left.is_empty() {
        return Err(format!("temporary files left after open: {left:?}"));
    }
    // What the open showed must survive a power cut right after it (the open made it
    // durable), and a clean close and reopen.
    let again = image.with_extension("again");
    io.power_loss(image, &again, UnsyncedTail::Drop)
        .map_err(|e| format!("power loss: {e}"))?;
    drop(db);
    let db = open_real(&again).map_err(|e| format!("second open failed: {e}"))?;
    let second = db_state(&db).map_err(|e| format!("read failed: {e}"))?;
    if second != got {
        return Err(format!(
            "power cut after recovery changed the state (call prefix {p}): {}",
            second.diff(&got)
        ));
    }
    db.close().map_err(|e| format!("close: {e}"))?;
    let db = open_real(&again).map_err(|e| format!("third open failed: {e}"))?;
    let third = db_state(&db).map_err(|e| format!("read failed: {e}"))?;
    if third != got {
        return Err(format!(
            "close and reopen changed the state: {}",
            third.diff(&got)
        ));
    }
    let mut model = Model::default();
    for i in 0..p.saturating_sub(1) {
        model.apply(i, calls);
    }
    if let Some(Step::Identify {
        uid: u,
        email: e,
        pad,
        ..
    }) = p.checked_sub(1).map(|i| &calls[i])
        && !model.refuses(u.map(uid).as_deref(), e.map(email).as_deref())
    {
        let m = Message::from_json(&message(p - 1, *u, *e, *pad)).unwrap();
        let out = db.apply(&m).map_err(|e| format!("resend: {e}"))?;
        if out.status != profiledb::Status::Duplicate {
            return Err(format!(
                "resending applied call {} was not a duplicate: {:?}",
                p - 1,
                out.status
            ));
        }
        let after = db_state(&db).map_err(|e| format!("read failed: {e}"))?;
        if after != got {
            return Err(format!(
                "a duplicate changed the state: {}",
                after.diff(&got)
            ));
        }
    }
    // Suppressions of the applied deletes hold (refused, nothing written).
    if let Some(i) = p.checked_sub(1) {
        model.apply(i, calls);
    }
    let probes = (model.suppressed_users.iter())
        .map(|u| json!({"userId": u}))
        .chain(
            (model.suppressed_emails.iter())
                .map(|e| json!({"userId": "probe", "traits": {"email": e}})),
        );
    for probe in probes {
        match db.apply(&Message::from_json(&probe).unwrap()) {
            Err(profiledb::Error::Suppressed { .. }) => {}
            other => {
                return Err(format!(
                    "{probe} should be refused as suppressed (call prefix {p}): {other:?}"
                ));
            }
        }
    }
    // Keys are never reused: a new profile gets a key above every key of the prefix (deleted
    // and merged-away ones included).
    let fresh = json!({"userId": "fresh-after-recovery"});
    let out = db
        .apply(&Message::from_json(&fresh).unwrap())
        .map_err(|e| format!("a new profile after recovery: {e}"))?;
    if out.key < model.next_key {
        return Err(format!(
            "a new profile after recovery got key {}, already used (call prefix {p} used keys \
             up to {})",
            out.key,
            model.next_key - 1
        ));
    }
    db.close().map_err(|e| format!("close: {e}"))?;
    let _ = std::fs::remove_dir_all(&again);
    Ok(p)
}

/// The failures of a matrix, reported together (the first few in full).
#[derive(Default)]
pub struct Failures(pub Vec<String>);

impl Failures {
    pub fn push(&mut self, what: String) {
        self.0.push(what);
    }
    pub fn assert_none(&self, checked: usize) {
        if !self.0.is_empty() {
            let shown: Vec<&String> = self.0.iter().take(12).collect();
            panic!(
                "{} of {checked} recovered images failed; the first ones:\n{}",
                self.0.len(),
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

pub fn path_of(base: &Path, parts: &[&str]) -> PathBuf {
    let mut p = base.to_path_buf();
    for x in parts {
        p.push(x);
    }
    p
}
