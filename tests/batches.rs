//! `Db::apply_batch`: a batch of calls applied by one caller, each call applied while the
//! memory of the coming ones is loaded (`src/apply/ahead.rs`), the writer queue taken once,
//! one sync for the batch. It must give exactly what the same calls give one by one:
//!
//! - `a_batch_gives_what_the_calls_one_by_one_give` (proptest): W1-shaped calls over a few
//!   people (so that calls create, update and merge the same profiles inside one batch and
//!   the pipeline's looked-up keys go stale), with refused calls and repeated messageIds
//!   mixed in, applied one by one to one store and in batches of random lengths to another:
//!   the same result for every call, the same profiles, and the same again after a reopen;
//! - `a_failed_sync_answers_a_batch_as_the_calls_one_by_one`: on a `FaultyIo` whose first
//!   `fdatasync` fails, a `SyncEach` batch (a call that writes, then a call that writes
//!   nothing, then a refused one) answers what the same calls one by one answer;
//! - `a_refusal_inside_a_batch_stops_nothing`: a call refused by the store itself (it names a
//!   suppressed identifier), not by validation, is refused alone;
//! - `batches_and_single_calls_from_many_threads`: threads applying batches and threads
//!   applying single calls at once (a batch that finds the queue busy goes through it call
//!   by call), `SyncEach`: every caller gets its own calls' results and the store ends as the
//!   calls say.

#[path = "support/common.rs"]
mod common;
#[path = "support/props.rs"]
mod props;

use std::sync::Arc;

use common::*;
use profiledb::workload::{W1, W1Config};
use profiledb::{Db, Durability, Message, Options, Outcome, Status};
use proptest::prelude::*;
use serde_json::json;

/// A call's result as two stores can compare it (errors by their text).
fn comparable(result: profiledb::Result<Outcome>) -> Result<Outcome, String> {
    result.map_err(|e| e.to_string())
}

/// `calls` W1 calls over `people` people (seed `seed`), with a refused call (no identifier)
/// at every index in `refused` and, at every index in `repeats`, a repeat of an earlier call
/// (a duplicate messageId).
fn calls(seed: u64, n: u64, people: u64, refused: &[usize], repeats: &[usize]) -> Vec<Message> {
    let mut out: Vec<Message> = W1::new(W1Config::new(seed, n).with_people(people)).collect();
    for &at in refused {
        let at = at % (out.len() + 1);
        let message = Message::from_json(&json!({
            "type": "identify",
            "messageId": format!("refused-{at}"),
            "traits": {"plan": "pro"},
        }))
        .unwrap();
        out.insert(at, message);
    }
    for &at in repeats {
        let at = at % out.len();
        let earlier = out[at / 2].clone();
        out.insert(at, earlier);
    }
    out
}

proptest! {
    #![proptest_config(props::config(24, "tests/batches.proptest-regressions"))]

    #[test]
    fn a_batch_gives_what_the_calls_one_by_one_give(
        seed in 0u64..1_000,
        n in 1u64..300,
        people in 1u64..12,
        refused in prop::collection::vec(0usize..400, 0..6),
        repeats in prop::collection::vec(0usize..400, 0..6),
        lengths in prop::collection::vec(1usize..64, 1..12),
    ) {
        let messages = calls(seed, n, people, &refused, &repeats);
        let one_dir = tempfile::tempdir().unwrap();
        let batch_dir = tempfile::tempdir().unwrap();
        let one = open(one_dir.path());
        let batched = open(batch_dir.path());
        let mut want = Vec::new();
        for m in &messages {
            want.push(comparable(one.apply_with(m, Durability::Buffered)));
        }
        let mut got = Vec::new();
        let mut rest = &messages[..];
        let mut next = lengths.iter().cycle();
        while !rest.is_empty() {
            let take = (*next.next().unwrap()).min(rest.len());
            let (batch, after) = rest.split_at(take);
            let results = batched.apply_batch(batch, Durability::Buffered);
            prop_assert_eq!(results.len(), batch.len());
            got.extend(results.into_iter().map(comparable));
            rest = after;
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            prop_assert_eq!(g, w, "call {} of {}", i, messages.len());
        }
        prop_assert_eq!(want.iter().any(|r| r.is_err()), !refused.is_empty());
        let profiles = all_profiles(&one);
        prop_assert_eq!(&all_profiles(&batched), &profiles);
        batched.close().unwrap();
        let reopened = open(batch_dir.path());
        prop_assert_eq!(&all_profiles(&reopened), &profiles);
    }
}

fn json_call(value: serde_json::Value) -> Message {
    Message::from_json(&value).unwrap()
}

/// Each call's result as a kind (`ok` or the error's kind).
fn kinds(results: &[profiledb::Result<Outcome>]) -> Vec<&'static str> {
    results
        .iter()
        .map(|r| match r {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        })
        .collect()
}

#[test]
fn a_failed_sync_answers_a_batch_as_the_calls_one_by_one() {
    use profiledb::storage::io::{FaultKind, FaultyIo, Op};
    let calls = [
        json_call(json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}})),
        // Writes nothing: the person exists and the call names nothing new.
        json_call(json!({"type": "track", "userId": "u1", "event": "x"})),
        json_call(json!({"type": "identify", "traits": {"plan": "pro"}})),
    ];
    let mut answers = Vec::new();
    for batched in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let db = open_faulty(dir.path(), &io, options()).unwrap();
        io.fail(Op::Sync, 1, FaultKind::Error, false);
        let results = if batched {
            db.apply_batch(&calls, Durability::SyncEach)
        } else {
            calls
                .iter()
                .map(|m| db.apply_with(m, Durability::SyncEach))
                .collect()
        };
        answers.push(kinds(&results));
    }
    assert_eq!(
        answers[0],
        ["poisoned", "poisoned", "invalid"],
        "one by one"
    );
    assert_eq!(answers[1], answers[0], "in a batch");
}

#[test]
fn a_refusal_inside_a_batch_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    call(&db, json!({"type": "identify", "userId": "gone"}));
    db.delete(&profiledb::Selector::UserId("gone".into()), true)
        .unwrap()
        .unwrap();
    let calls = [
        json_call(json!({"type": "identify", "userId": "aa", "messageId": "m1"})),
        json_call(json!({"type": "identify", "userId": "gone", "messageId": "m2"})),
        json_call(json!({"type": "identify", "userId": "bb", "messageId": "m3"})),
    ];
    let results = db.apply_batch(&calls, Durability::Buffered);
    assert_eq!(kinds(&results), ["ok", "suppressed", "ok"]);
    assert!(by_user(&db, "bb").is_some());
    assert!(by_user(&db, "gone").is_none());
}

/// Thread `t`'s call `i`: one of its three people, a counter and the call's number.
fn thread_call(t: u64, i: u64) -> Message {
    Message::from_json(&json!({
        "type": "identify",
        "userId": format!("t{t}-u{}", i % 3),
        "messageId": format!("t{t}-{i}"),
        "$add": {"n": 1},
        "traits": {"last": i},
    }))
    .unwrap()
}

#[test]
fn batches_and_single_calls_from_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Db::open(
            dir.path(),
            Options {
                durability: Durability::SyncEach,
                ..options()
            },
        )
        .unwrap(),
    );
    const THREADS: u64 = 8;
    const CALLS: u64 = 90;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                let messages: Vec<Message> = (0..CALLS).map(|i| thread_call(t, i)).collect();
                let results: Vec<Outcome> = if t % 2 == 0 {
                    messages
                        .chunks(1 + t as usize * 3)
                        .flat_map(|batch| db.apply_batch(batch, Durability::SyncEach))
                        .map(|r| r.unwrap())
                        .collect()
                } else {
                    messages.iter().map(|m| db.apply(m).unwrap()).collect()
                };
                for (i, out) in results.iter().enumerate() {
                    let want = if i < 3 {
                        Status::Created
                    } else {
                        Status::Updated
                    };
                    assert_eq!(out.status, want, "thread {t} call {i}");
                    let profile = db.get(&profiledb::Selector::Key(out.key)).unwrap().unwrap();
                    assert_eq!(
                        profile.user_id.as_deref(),
                        Some(format!("t{t}-u{}", i % 3).as_str()),
                        "thread {t} call {i}: the outcome names another call's profile"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..THREADS {
        for u in 0..3 {
            let p = by_user(&db, &format!("t{t}-u{u}")).unwrap();
            assert_eq!(prop(&p, "n"), Some(json!(CALLS / 3)), "thread {t} user {u}");
            assert_eq!(prop(&p, "last"), Some(json!(CALLS - 3 + u)));
        }
    }
}
