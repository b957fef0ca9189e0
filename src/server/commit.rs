//! Group commit: the write path of the ingestion endpoints (docs/server.md "Group commit").
//!
//! A request parses and validates its messages on its own blocking-pool thread (many at once,
//! on every core), then hands the prepared calls to its project's [`Committer`] as one job and
//! waits. Jobs that arrive while a group is being applied queue up; a waiting request becomes
//! the next group's leader: it takes every queued job, applies their calls in arrival order
//! (each job's calls in the order sent) with [`Durability::Buffered`] appends, lets the next
//! leader in, syncs the log once for the whole group, and hands each job its results. So
//! concurrent requests to one project share appends and one fsync, the next group is applied
//! while this one syncs, and a result handed back after a sync means durable.
//!
//! No thread of its own: the leader is a request's thread (the scheme of LevelDB's writer
//! queue), so a server with nothing to write has nothing running and stopping needs no step.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::{Db, Durability, Error, Outcome, Prepared, Result, Selector};

/// One call of a job. Nearly every call is an `Apply`: boxing it to shrink the rare `Delete`
/// would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Call {
    /// Apply a validated message.
    Apply(Prepared),
    /// Delete the profile the first of these selectors finds (no suppression).
    Delete(Vec<Selector>),
}

/// What a call did. An `Err` inside is a refusal (the store is fine); a store failure ends
/// the whole job instead (see [`Committer::submit`]).
pub(crate) enum Done {
    /// The outcome of [`Call::Apply`].
    Applied(Result<Outcome>),
    /// The deleted key of [`Call::Delete`] (`None`: nothing matched).
    Deleted(Result<Option<u64>>),
}

impl Done {
    /// Whether the call wrote (or found the original of a duplicate), so that the job's answer
    /// must wait for the sync.
    fn needs_sync(&self) -> bool {
        matches!(self, Done::Applied(Ok(_)) | Done::Deleted(Ok(_)))
    }
}

/// The queue of one project's store.
#[derive(Default)]
pub(crate) struct Committer {
    state: Mutex<Queue>,
    /// Signalled whenever a group is finished (its jobs' results are in `done`).
    finished: Condvar,
}

#[derive(Default)]
struct Queue {
    /// Jobs waiting for a leader, in arrival order.
    waiting: Vec<(u64, Vec<Call>)>,
    /// Results of finished jobs not yet taken by their requests, with the jobs' calls: the
    /// request frees its messages on its own thread, not the writer's.
    done: HashMap<u64, (Result<Vec<Done>>, Vec<Call>)>,
    /// A leader is writing a group.
    writing: bool,
    next_ticket: u64,
}

impl Committer {
    /// Apply `calls` as part of a group and return their results once every write among them
    /// is durable. `Err` is a store failure (nothing of the job is acknowledged); it is also
    /// what every job of a group whose sync failed gets. `on_sync` is told how long each
    /// group's sync took (the request that leads the group calls it).
    pub(crate) fn submit(
        &self,
        db: &Db,
        calls: Vec<Call>,
        on_sync: &dyn Fn(Duration),
    ) -> Result<Vec<Done>> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mut queue = self.state.lock();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiting.push((ticket, calls));
        loop {
            if let Some((result, calls)) = queue.done.remove(&ticket) {
                drop(queue);
                drop(calls);
                return result;
            }
            // Lead only while this job waits; while a leader writes, or while the group this
            // job is in is applied or synced, wait.
            if queue.writing || !queue.waiting.iter().any(|(t, _)| *t == ticket) {
                self.finished.wait(&mut queue);
                continue;
            }
            // Lead a group: the jobs queued so far, oldest first, up to the group's cap. Ours
            // may be left for a later group; then this thread leads that one too.
            queue.writing = true;
            let group = take_group(&mut queue.waiting);
            drop(queue);
            let mut leader = Leader {
                committer: self,
                group,
                writing: true,
                results: None,
            };
            let results = apply_group(db, &leader.group);
            // The next group may be applied while this one syncs (the log's sync covers
            // everything appended before it, and concurrent syncs are shared by the engine).
            leader.release_writer();
            leader.results = Some(sync_group(db, results, on_sync));
            drop(leader);
            queue = self.state.lock();
        }
    }
}

/// A group's leader: lets the next leader in once the group is applied, and hands the group's
/// results to its jobs once synced; also when applying or syncing panicked (then every job of
/// the group gets a failure instead of waiting forever).
struct Leader<'a> {
    committer: &'a Committer,
    /// The group's jobs: ticket and calls.
    group: Vec<(u64, Vec<Call>)>,
    /// Still holding the writer's place.
    writing: bool,
    results: Option<Vec<Result<Vec<Done>>>>,
}

impl Leader<'_> {
    fn release_writer(&mut self) {
        self.committer.state.lock().writing = false;
        self.writing = false;
        self.committer.finished.notify_all();
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let results = self.results.take();
        let group = std::mem::take(&mut self.group);
        let mut queue = self.committer.state.lock();
        match results {
            Some(results) => queue.done.extend(
                group
                    .into_iter()
                    .zip(results)
                    .map(|((ticket, calls), result)| (ticket, (result, calls))),
            ),
            None => {
                for (ticket, calls) in group {
                    let failure = Error::Poisoned {
                        cause: "writing a group of requests failed (see the log)".into(),
                    };
                    queue.done.insert(ticket, (Err(failure), calls));
                }
            }
        }
        if self.writing {
            queue.writing = false;
        }
        drop(queue);
        self.committer.finished.notify_all();
    }
}

/// The most calls a group takes (at least one job, whatever its size): a group's requests are
/// answered only after all of it is applied and synced, so the cap bounds how long the first
/// request of a long queue waits behind the others (the p99 per batch), while groups of
/// several requests still share one sync. 1,000 W1 calls are ~20 ms of the engine's time.
const MAX_GROUP_CALLS: usize = 1_000;

/// Take the oldest waiting jobs, as many as fit under [`MAX_GROUP_CALLS`] (at least one).
fn take_group(waiting: &mut Vec<(u64, Vec<Call>)>) -> Vec<(u64, Vec<Call>)> {
    let mut calls = 0usize;
    let taken = waiting
        .iter()
        .position(|(_, job)| {
            calls += job.len();
            calls > MAX_GROUP_CALLS
        })
        .map_or(waiting.len(), |over| over.max(1));
    if taken == waiting.len() {
        std::mem::take(waiting)
    } else {
        let rest = waiting.split_off(taken);
        std::mem::replace(waiting, rest)
    }
}

/// Apply a group's jobs in order.
fn apply_group(db: &Db, group: &[(u64, Vec<Call>)]) -> Vec<Result<Vec<Done>>> {
    group
        .iter()
        .map(|(_, calls)| write_job(db, calls))
        .collect()
}

/// Sync once if any job of the group wrote; on failure every job that wrote gets it.
fn sync_group(
    db: &Db,
    mut results: Vec<Result<Vec<Done>>>,
    on_sync: &dyn Fn(Duration),
) -> Vec<Result<Vec<Done>>> {
    let wrote = |r: &Result<Vec<Done>>| r.as_ref().is_ok_and(|d| d.iter().any(Done::needs_sync));
    if results.iter().any(wrote) {
        let started = Instant::now();
        let synced = db.sync();
        on_sync(started.elapsed());
        if let Err(e) = synced {
            let cause = e.to_string();
            let mut first = Some(e);
            for result in &mut results {
                if wrote(result) {
                    *result = Err(first.take().unwrap_or_else(|| Error::Poisoned {
                        cause: cause.clone(),
                    }));
                }
            }
        }
    }
    results
}

/// Apply one job's calls in order, each run of `Apply` calls as one batch
/// ([`Db::apply_prepared_batch`]: the coming calls' memory loaded while each is applied); a
/// store failure ends the job (the batch applies nothing after it).
fn write_job(db: &Db, calls: &[Call]) -> Result<Vec<Done>> {
    let mut done = Vec::with_capacity(calls.len());
    let mut rest = calls;
    while let Some(call) = rest.first() {
        let run = rest
            .iter()
            .take_while(|c| matches!(c, Call::Apply(_)))
            .count();
        if run == 0 {
            if let Call::Delete(selectors) = call {
                done.push(Done::Deleted(refusal_only(delete_first(db, selectors))?));
            }
            rest = &rest[1..];
            continue;
        }
        let (applies, after) = rest.split_at(run);
        let prepared = applies.iter().filter_map(|c| match c {
            Call::Apply(prepared) => Some(prepared),
            Call::Delete(_) => None,
        });
        for result in db.apply_prepared_refs(prepared, PER_CALL) {
            done.push(Done::Applied(refusal_only(result)?));
        }
        rest = after;
    }
    Ok(done)
}

/// The durability of each call of a group; the group's one sync follows.
const PER_CALL: Durability = Durability::Buffered;

/// `Ok(result)` for a success or a refusal, `Err` for a store failure.
fn refusal_only<T>(result: Result<T>) -> Result<Result<T>> {
    match result {
        Err(e) if !e.is_refusal() => Err(e),
        other => Ok(other),
    }
}

/// Delete the profile the first of `selectors` finds (no suppression); its key, or `None`.
fn delete_first(db: &Db, selectors: &[Selector]) -> Result<Option<u64>> {
    for selector in selectors {
        if let Some(key) = db.delete(selector, false)? {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::{Call, MAX_GROUP_CALLS, take_group};

    fn jobs(sizes: &[usize]) -> Vec<(u64, Vec<Call>)> {
        sizes
            .iter()
            .enumerate()
            .map(|(t, &n)| (t as u64, (0..n).map(|_| Call::Delete(Vec::new())).collect()))
            .collect()
    }

    fn tickets(group: &[(u64, Vec<Call>)]) -> Vec<u64> {
        group.iter().map(|(t, _)| *t).collect()
    }

    #[test]
    fn a_group_takes_the_oldest_jobs_up_to_the_cap() {
        let mut waiting = jobs(&[400, 600, 1, 5]);
        assert_eq!(tickets(&take_group(&mut waiting)), [0, 1]);
        assert_eq!(tickets(&waiting), [2, 3]);
        assert_eq!(tickets(&take_group(&mut waiting)), [2, 3]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_job_over_the_cap_is_a_group_of_its_own() {
        let mut waiting = jobs(&[MAX_GROUP_CALLS + 1, 1]);
        assert_eq!(tickets(&take_group(&mut waiting)), [0]);
        let mut waiting = jobs(&[1, MAX_GROUP_CALLS + 1]);
        assert_eq!(tickets(&take_group(&mut waiting)), [0]);
        assert_eq!(tickets(&take_group(&mut waiting)), [1]);
    }
}
