//! The writer queue: calls from many threads applied in groups by one of them (the scheme of
//! LevelDB's writer queue and of the server's `Committer`, here under every `Db::apply*`).
//!
//! A call that finds no writer leading leads: it applies its own call and every call queued
//! meanwhile, one after another (each its own batch, frame and index update, exactly as
//! alone), hands the lead to the oldest call queued since, syncs the log once for its whole
//! group while that next group is applied, and hands each call its result. A call that finds a
//! writer leading queues a copy of itself and sleeps on its own condition variable until its
//! result, or the lead, is handed to it.
//!
//! Why: with many threads on few cores, each taking the index lock and then waiting for a sync
//! in turn, most of a call's time went to handing the lock and the sync waiters from thread to
//! thread (a wake-up and a context switch each, and every sync woke every waiter). In a group,
//! one thread applies the calls back to back, and each waiting thread is woken once.
//!
//! A call alone (one thread, or no contention) leads a group of one: no copy, no queue, two
//! uncontended lock round trips more than the plain write path.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::apply::ahead::Ahead;
use crate::error::{Error, Result};
use crate::options::Durability;
use crate::profile::message::Message;
use crate::types::{Outcome, SourceOffset};

/// Most calls one group takes: a group's calls are answered after all of it is applied and
/// synced, so this bounds how long the first call of a long queue waits behind the others.
const MAX_GROUP: usize = 256;

/// A call: the message (validated), the external log position it brings the store to, and how
/// durable it must be before it is answered.
pub(crate) struct Call {
    pub message: Message,
    pub source: Option<SourceOffset>,
    pub durability: Durability,
}

/// The calls waiting for a leader, and whether one leads.
#[derive(Default)]
pub(crate) struct Writers {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Arc<Slot>>,
    leading: bool,
}

/// A queued call and what it is handed.
struct Slot {
    call: Call,
    state: Mutex<State>,
    handed: Condvar,
}

enum State {
    Waiting,
    /// Lead the next group (this call is in it).
    Lead,
    Done(Result<Outcome>),
}

/// `apply` of each call in turn (with its index) until one fails with an error that is not
/// a refusal: the calls after it are not applied and answer [`Error::NotApplied`].
fn until_failure<T>(
    calls: &[&Message],
    mut apply: impl FnMut(usize, &Message) -> Result<T>,
) -> Vec<Result<T>> {
    let mut stopped: Option<String> = None;
    let mut results = Vec::with_capacity(calls.len());
    for (i, message) in calls.iter().enumerate() {
        let result = match &stopped {
            Some(cause) => Err(Error::NotApplied {
                cause: cause.clone(),
            }),
            None => apply(i, message),
        };
        if let Err(e) = &result
            && stopped.is_none()
            && !e.is_refusal()
        {
            stopped = Some(cause_of(e));
        }
        results.push(result);
    }
    results
}

/// What to name as the cause of `e` in the errors of the calls it stops: a poisoned
/// store's own cause, not the poisoning wrapped once more.
fn cause_of(e: &Error) -> String {
    match e {
        Error::Poisoned { cause } | Error::NotApplied { cause } => cause.clone(),
        other => other.to_string(),
    }
}

/// One call's part in a group: its durability, and its result once applied with the frame
/// that must be durable before it is answered (0: none).
struct Applied {
    durability: Durability,
    result: Result<(Outcome, u64)>,
}

impl Applied {
    fn new(durability: Durability, result: Result<(Outcome, u64)>) -> Applied {
        Applied { durability, result }
    }

    /// The frame the call waits for before it is answered, if it waits.
    fn waits_for(&self) -> Option<u64> {
        waits_for(self.durability, &self.result)
    }

    fn outcome(self) -> Result<Outcome> {
        self.result.map(|(outcome, _)| outcome)
    }
}

/// The frame a call with `result` waits for before it is answered, if it waits.
fn waits_for(durability: Durability, result: &Result<(Outcome, u64)>) -> Option<u64> {
    match (result, durability) {
        (_, Durability::Buffered) | (Err(_), _) | (Ok((_, 0)), _) => None,
        (Ok((_, seq)), _) => Some(*seq),
    }
}

/// What a leader applies each call with and how it syncs (the `Db`'s write path).
pub(crate) trait Engine {
    /// Apply one call without waiting for durability: its outcome, and the sequence number
    /// of the frame that must be durable before it is (0: none). `ahead`: a batch's coming
    /// calls, whose memory may be loaded meanwhile (this call is the pipeline's next).
    fn write_call(
        &self,
        message: &Message,
        source: Option<&SourceOffset>,
        ahead: Option<&mut Ahead<'_>>,
    ) -> Result<(Outcome, u64)>;
    /// Return once the frame `seq` and every one before it is durable.
    fn sync_to(&self, seq: u64) -> Result<()>;
    /// Validate a call not validated yet (a batch's, just before it is applied).
    fn check(&self, message: &Message) -> Result<()>;
}

impl Writers {
    /// Apply `message` as part of a group; its result once as durable as `durability` says.
    pub(crate) fn submit(
        &self,
        engine: &dyn Engine,
        message: &Message,
        source: Option<&SourceOffset>,
        durability: Durability,
    ) -> Result<Outcome> {
        let mut queue = self.queue.lock();
        if !queue.leading {
            queue.leading = true;
            if queue.waiting.is_empty() {
                drop(queue);
                return self.lead_alone(engine, message, source, durability);
            }
            let group = take_group(&mut queue.waiting);
            drop(queue);
            return self.lead(engine, Own::Borrowed(message, source, durability), group);
        }
        let slot = Arc::new(Slot {
            call: Call {
                message: message.clone(),
                source: source.cloned(),
                durability,
            },
            state: Mutex::new(State::Waiting),
            handed: Condvar::new(),
        });
        queue.waiting.push_back(Arc::clone(&slot));
        drop(queue);
        let mut state = slot.state.lock();
        loop {
            match std::mem::replace(&mut *state, State::Waiting) {
                State::Done(result) => return result,
                State::Lead => {
                    drop(state);
                    let group = take_group(&mut self.queue.lock().waiting);
                    return self.lead(engine, Own::Queued(slot), group);
                }
                State::Waiting => slot.handed.wait(&mut state),
            }
        }
    }

    /// Apply `calls` (validated) one after another: their results, each once as durable as
    /// `durability` says, as [`Writers::submit`] of each in turn would give them.
    ///
    /// A caller that finds nobody leading and nobody queued leads the whole batch (other
    /// callers queue behind it meanwhile: the batch's length is its caller's choice): each
    /// call is applied while the memory of the coming ones is loaded (`apply::ahead`), and one
    /// sync follows the last. Otherwise each call goes through the queue as `submit`'s does,
    /// waiting for its own sync. Either way, a failure that is not a refusal stops the batch:
    /// the calls after it are not applied and answer [`Error::NotApplied`]. With `validate`,
    /// each call is validated just before it is applied ([`Engine::check`]; a refused call's
    /// result is its refusal): its message is then read once while it is in the CPU's caches,
    /// not in a pass over the whole batch first.
    pub(crate) fn submit_batch(
        &self,
        engine: &dyn Engine,
        calls: &[&Message],
        durability: Durability,
        validate: bool,
    ) -> Vec<Result<Outcome>> {
        let check = |message: &Message| {
            if validate {
                engine.check(message)
            } else {
                Ok(())
            }
        };
        let mut queue = self.queue.lock();
        if queue.leading || !queue.waiting.is_empty() {
            drop(queue);
            let results = until_failure(calls, |_, message| {
                check(message).and_then(|()| self.submit(engine, message, None, durability))
            });
            return results;
        }
        queue.leading = true;
        drop(queue);
        let mut lead = Lead {
            writers: self,
            group: Vec::new(),
            leading: true,
        };
        let mut ahead = Ahead::new(calls);
        let results = until_failure(calls, |i, message| {
            check(message).and_then(|()| {
                ahead.set_at(i);
                engine.write_call(message, None, Some(&mut ahead))
            })
        });
        // The newest frame any call so far wrote: a call after it is answered only once that
        // frame is durable, even if it wrote nothing itself (one by one, it would have found
        // the store poisoned by that frame's failed sync).
        let mut newest = 0;
        let mut applied: Vec<Applied> = results
            .into_iter()
            .map(|result| {
                let result = result.map(|(outcome, seq)| {
                    newest = newest.max(seq);
                    (outcome, newest)
                });
                Applied::new(durability, result)
            })
            .collect();
        lead.hand_on();
        let sync_to = applied.iter().filter_map(Applied::waits_for).max();
        if let Some(seq) = sync_to
            && let Err(e) = engine.sync_to(seq)
        {
            let cause = cause_of(&e);
            let mut first = Some(e);
            for done in applied.iter_mut().filter(|done| done.waits_for().is_some()) {
                done.result = Err(first.take().unwrap_or_else(|| Error::Poisoned {
                    cause: cause.clone(),
                }));
            }
        }
        applied.into_iter().map(Applied::outcome).collect()
    }

    /// [`Writers::lead`] of a call that found nobody leading and nobody queued (a caller
    /// alone, every call of one thread): its own call, the lead handed on, its sync. The
    /// same steps without the group's lists and walks.
    fn lead_alone(
        &self,
        engine: &dyn Engine,
        message: &Message,
        source: Option<&SourceOffset>,
        durability: Durability,
    ) -> Result<Outcome> {
        // Hands the lead on should the call panic, as `lead`'s does.
        let mut lead = Lead {
            writers: self,
            group: Vec::new(),
            leading: true,
        };
        // The result stays where the call wrote it until it is answered (through `Applied`,
        // the outcome was copied once more).
        let result = engine.write_call(message, source, None);
        lead.hand_on();
        if let Some(seq) = waits_for(durability, &result) {
            engine.sync_to(seq)?;
        }
        result.map(|(outcome, _)| outcome)
    }

    /// Apply the leader's own call and `group`, hand the lead on, sync once, answer.
    fn lead(&self, engine: &dyn Engine, own: Own<'_>, group: Vec<Arc<Slot>>) -> Result<Outcome> {
        let mut lead = Lead {
            writers: self,
            group,
            leading: true,
        };
        let (message, source, durability) = own.call();
        let mut own = Applied::new(durability, engine.write_call(message, source, None));
        let applied: Vec<Applied> = lead
            .group
            .iter()
            .map(|slot| {
                let call = &slot.call;
                Applied::new(
                    call.durability,
                    engine.write_call(&call.message, call.source.as_ref(), None),
                )
            })
            .collect();
        // The next group is applied while this one syncs (a sync covers everything appended
        // before it; the log shares concurrent syncs).
        lead.hand_on();
        // Calls that need not wait for the sync are answered first; the others stay in the
        // group (answered with a failure should anything below panic).
        let mut sync_to = own.waits_for();
        let mut results = Vec::with_capacity(applied.len());
        let group = std::mem::take(&mut lead.group);
        for (slot, done) in group.into_iter().zip(applied) {
            match done.waits_for() {
                Some(seq) => {
                    sync_to = sync_to.max(Some(seq));
                    lead.group.push(slot);
                    results.push(done);
                }
                None => slot.hand(done.outcome()),
            }
        }
        if let Some(seq) = sync_to
            && let Err(e) = engine.sync_to(seq)
        {
            let cause = e.to_string();
            let mut first = Some(e);
            let mut fail = || {
                Err(first.take().unwrap_or_else(|| Error::Poisoned {
                    cause: cause.clone(),
                }))
            };
            if own.waits_for().is_some() {
                own.result = fail();
            }
            for done in &mut results {
                done.result = fail();
            }
        }
        for (slot, done) in lead.group.drain(..).zip(results) {
            slot.hand(done.outcome());
        }
        own.outcome()
    }
}

/// The leader's own call: borrowed from its caller (it led at once) or queued (it was handed
/// the lead).
enum Own<'a> {
    Borrowed(&'a Message, Option<&'a SourceOffset>, Durability),
    Queued(Arc<Slot>),
}

impl Own<'_> {
    fn call(&self) -> (&Message, Option<&SourceOffset>, Durability) {
        match self {
            Own::Borrowed(m, s, d) => (m, *s, *d),
            Own::Queued(slot) => (
                &slot.call.message,
                slot.call.source.as_ref(),
                slot.call.durability,
            ),
        }
    }
}

impl Slot {
    fn hand(&self, result: Result<Outcome>) {
        *self.state.lock() = State::Done(result);
        self.handed.notify_one();
    }
}

/// A leader's place: hands the lead on once (to the oldest queued call, or to nobody), and if
/// the leader panics, answers its group's calls with a failure instead of leaving them asleep.
struct Lead<'a> {
    writers: &'a Writers,
    group: Vec<Arc<Slot>>,
    leading: bool,
}

impl Lead<'_> {
    fn hand_on(&mut self) {
        if !std::mem::replace(&mut self.leading, false) {
            return;
        }
        let mut queue = self.writers.queue.lock();
        match queue.waiting.pop_front() {
            Some(next) => {
                drop(queue);
                *next.state.lock() = State::Lead;
                next.handed.notify_one();
            }
            None => queue.leading = false,
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        // Only a panic leaves calls here (`lead` answers every one).
        for slot in self.group.drain(..) {
            slot.hand(Err(Error::Poisoned {
                cause: "the thread applying a group of calls panicked".into(),
            }));
        }
        self.hand_on();
    }
}

/// The oldest waiting calls, at most [`MAX_GROUP`].
fn take_group(waiting: &mut VecDeque<Arc<Slot>>) -> Vec<Arc<Slot>> {
    let n = waiting.len().min(MAX_GROUP);
    waiting.drain(..n).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use super::*;
    use crate::profile::message::Identify;
    use crate::types::Status;

    /// An engine that answers every call with frame `seq`, panics on the first `panics`
    /// calls, and fails its syncs when `sync_fails`; it counts the syncs asked of it.
    struct Fake {
        panics: AtomicU32,
        seq: u64,
        sync_fails: bool,
        syncs: AtomicU64,
    }

    impl Fake {
        fn new(panics: u32, seq: u64, sync_fails: bool) -> Fake {
            Fake {
                panics: AtomicU32::new(panics),
                seq,
                sync_fails,
                syncs: AtomicU64::new(0),
            }
        }
    }

    impl Engine for Fake {
        fn write_call(
            &self,
            _: &Message,
            _: Option<&SourceOffset>,
            _: Option<&mut Ahead<'_>>,
        ) -> Result<(Outcome, u64)> {
            if self.panics.load(Ordering::SeqCst) > 0 {
                self.panics.fetch_sub(1, Ordering::SeqCst);
                panic!("the engine's call panicked");
            }
            let outcome = Outcome {
                key: 7,
                status: Status::Created,
                merged: Vec::new(),
                moved: Vec::new(),
                ignored: Vec::new(),
                quarantined: Vec::new(),
            };
            Ok((outcome, self.seq))
        }

        fn check(&self, _: &Message) -> Result<()> {
            Ok(())
        }

        fn sync_to(&self, _: u64) -> Result<()> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.sync_fails {
                return Err(Error::Poisoned {
                    cause: "the sync failed".into(),
                });
            }
            Ok(())
        }
    }

    fn message() -> Message {
        Message::Identify(Identify {
            user_id: Some("u1".into()),
            ..Identify::default()
        })
    }

    /// A caller alone whose call panics hands the lead on: the next call leads and is
    /// answered (it would wait for a leader forever otherwise).
    #[test]
    fn a_call_alone_that_panics_hands_the_lead_on() {
        let writers = Writers::default();
        let engine = Fake::new(1, 3, false);
        let m = message();
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            writers.submit(&engine, &m, None, Durability::Buffered)
        }));
        assert!(first.is_err(), "the engine's panic reaches the caller");
        assert!(
            !writers.queue.lock().leading,
            "nobody leads after the panic"
        );
        let next = writers.submit(&engine, &m, None, Durability::Buffered);
        assert_eq!(next.map(|o| o.key).ok(), Some(7));
    }

    /// A caller alone waits for the sync only when its durability asks for one, and gets
    /// the sync's error as it comes.
    #[test]
    fn a_call_alone_syncs_only_when_asked_and_answers_the_syncs_error() {
        let writers = Writers::default();
        let m = message();
        let buffered = Fake::new(0, 3, true);
        let answer = writers.submit(&buffered, &m, None, Durability::Buffered);
        assert_eq!(answer.map(|o| o.key).ok(), Some(7));
        assert_eq!(buffered.syncs.load(Ordering::SeqCst), 0);
        let synced = Fake::new(0, 3, true);
        let answer = writers.submit(&synced, &m, None, Durability::SyncEach);
        assert!(matches!(answer, Err(Error::Poisoned { .. })), "{answer:?}");
        assert_eq!(synced.syncs.load(Ordering::SeqCst), 1);
        // Nothing to wait for (frame 0: the call wrote nothing): no sync.
        let nothing = Fake::new(0, 0, true);
        let answer = writers.submit(&nothing, &m, None, Durability::SyncEach);
        assert_eq!(answer.map(|o| o.key).ok(), Some(7));
        assert_eq!(nothing.syncs.load(Ordering::SeqCst), 0);
        assert!(!writers.queue.lock().leading);
    }

    /// An engine that answers its calls from a script (`Ok(frame)` or an error), records how
    /// many it was asked, and fails its syncs when `sync_fails`.
    struct Scripted {
        answers: Mutex<VecDeque<Result<u64>>>,
        asked: AtomicU32,
        sync_fails: bool,
        syncs: AtomicU64,
    }

    impl Scripted {
        fn new(answers: Vec<Result<u64>>, sync_fails: bool) -> Scripted {
            Scripted {
                answers: Mutex::new(answers.into()),
                asked: AtomicU32::new(0),
                sync_fails,
                syncs: AtomicU64::new(0),
            }
        }
    }

    impl Engine for Scripted {
        fn write_call(
            &self,
            _: &Message,
            _: Option<&SourceOffset>,
            _: Option<&mut Ahead<'_>>,
        ) -> Result<(Outcome, u64)> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers.lock().pop_front().unwrap_or(Ok(0));
            answer.map(|seq| {
                let outcome = Outcome {
                    key: seq,
                    status: Status::Created,
                    merged: Vec::new(),
                    moved: Vec::new(),
                    ignored: Vec::new(),
                    quarantined: Vec::new(),
                };
                (outcome, seq)
            })
        }

        fn check(&self, _: &Message) -> Result<()> {
            Ok(())
        }

        fn sync_to(&self, _: u64) -> Result<()> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.sync_fails {
                return Err(Error::Io {
                    op: "fdatasync",
                    path: "log".into(),
                    source: std::io::Error::other("the disk failed"),
                });
            }
            Ok(())
        }
    }

    fn kinds(results: &[Result<Outcome>]) -> Vec<&'static str> {
        results
            .iter()
            .map(|r| match r {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            })
            .collect()
    }

    /// A batch syncs once, after its last call; when that sync fails, every call that waits
    /// for it is answered with the failure, a call that wrote nothing itself too once an
    /// earlier call of the batch wrote (one by one, it would have found the store poisoned),
    /// but not one before any write.
    #[test]
    fn a_batch_syncs_once_and_a_failed_sync_answers_every_call_after_a_write() {
        let writers = Writers::default();
        let m = message();
        let calls = [&m, &m, &m, &m];
        let engine = Scripted::new(vec![Ok(0), Ok(3), Ok(0), Ok(5)], true);
        let results = writers.submit_batch(&engine, &calls, Durability::SyncEach, false);
        assert_eq!(kinds(&results), ["ok", "io", "poisoned", "poisoned"]);
        assert_eq!(engine.syncs.load(Ordering::SeqCst), 1);
        assert!(!writers.queue.lock().leading, "the lead is handed on");
        let engine = Scripted::new(vec![Ok(3), Ok(5)], false);
        let results = writers.submit_batch(&engine, &calls[..2], Durability::SyncEach, false);
        assert_eq!(kinds(&results), ["ok", "ok"]);
        assert_eq!(engine.syncs.load(Ordering::SeqCst), 1);
        let engine = Scripted::new(vec![Ok(3), Ok(5)], true);
        let results = writers.submit_batch(&engine, &calls[..2], Durability::Buffered, false);
        assert_eq!(
            kinds(&results),
            ["ok", "ok"],
            "buffered calls wait for no sync"
        );
        assert_eq!(engine.syncs.load(Ordering::SeqCst), 0);
        assert!(
            writers
                .submit_batch(&engine, &[], Durability::SyncEach, false)
                .is_empty()
        );
    }

    /// A refusal stops nothing; the first failure that is not one stops the batch: the calls
    /// after it are not applied (the engine is not asked) and answer `NotApplied`.
    #[test]
    fn a_batch_stops_at_its_first_failure_but_not_at_a_refusal() {
        let writers = Writers::default();
        let m = message();
        let calls = [&m, &m, &m, &m];
        let failed = || Error::Poisoned {
            cause: "the log failed".into(),
        };
        let engine = Scripted::new(
            vec![
                Err(Error::Malformed("no".into())),
                Ok(2),
                Err(failed()),
                Ok(4),
            ],
            false,
        );
        let results = writers.submit_batch(&engine, &calls, Durability::Buffered, false);
        assert_eq!(
            kinds(&results),
            ["malformed", "ok", "poisoned", "not_applied"]
        );
        assert_eq!(engine.asked.load(Ordering::SeqCst), 3);
        let Err(Error::NotApplied { cause }) = &results[3] else {
            panic!("{:?}", results[3]);
        };
        assert_eq!(cause, "the log failed", "the cause is not wrapped again");
    }

    /// A batch whose call panics hands the lead on.
    #[test]
    fn a_batch_that_panics_hands_the_lead_on() {
        let writers = Writers::default();
        let engine = Fake::new(1, 3, false);
        let m = message();
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            writers.submit_batch(&engine, &[&m, &m], Durability::SyncEach, false)
        }));
        assert!(first.is_err(), "the engine's panic reaches the caller");
        assert!(
            !writers.queue.lock().leading,
            "nobody leads after the panic"
        );
        let next = writers.submit_batch(&engine, &[&m], Durability::SyncEach, false);
        assert_eq!(kinds(&next), ["ok"]);
    }
}
