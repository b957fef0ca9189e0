//! One assigned partition: its store, the thread that applies its messages in offset order,
//! and the figures the stats line and the group commit read.
//!
//! Every call is applied with `Db::apply_at`, which writes the position just after it in
//! the same frame; calls that write nothing (refused, duplicate) are covered by
//! `Db::mark_source_offset` at the next checkpoint. A checkpoint (every commit interval and
//! at close) marks, syncs, and only then publishes the position as durable: the group commit
//! takes nothing else.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use profiledb::{Db, Durability, Options, SourceOffset};

use super::calls;
use super::dead::DeadLetters;

/// A message handed to a partition's thread.
pub struct Msg {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// Figures of a partition, read by the main thread.
#[derive(Default)]
pub struct Progress {
    /// Next offset to apply (every message before it processed).
    pub applied: AtomicI64,
    /// Next offset to apply as of the last sync.
    pub durable: AtomicI64,
    /// Calls applied (written, duplicates included).
    pub calls: AtomicU64,
    /// Messages or calls refused and sent to the dead-letter path.
    pub bad: AtomicU64,
}

/// A running partition.
pub struct Worker {
    pub tx: SyncSender<Msg>,
    pub handle: JoinHandle<Result<(), String>>,
    pub progress: Arc<Progress>,
}

/// Messages a partition's queue holds before the poll loop waits for it.
pub const QUEUE: usize = 512;

/// How long an assignment waits for a store another process still holds (it is closing it
/// after a rebalance, or it was killed and the kernel is releasing its lock).
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Open (creating if needed) the store of a partition, waiting for its lock.
pub fn open_store(dir: &Path) -> Result<Db, String> {
    let started = Instant::now();
    loop {
        Db::check_store_dir(dir).map_err(|e| e.to_string())?;
        let options = Options {
            durability: Durability::Buffered,
            ..Options::default()
        };
        match Db::open(dir, options) {
            Ok(db) => return Ok(db),
            Err(profiledb::Error::Locked { .. }) if started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("opening {}: {e}", dir.display())),
        }
    }
}

/// Start the thread of a partition whose store is open; it applies from `resume` on.
pub fn start(
    db: Db,
    resume: SourceOffset,
    dead: Arc<DeadLetters>,
    interval: Duration,
) -> std::io::Result<Worker> {
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let progress = Arc::new(Progress::default());
    progress.applied.store(resume.next_offset, Relaxed);
    progress.durable.store(resume.next_offset, Relaxed);
    let p = Arc::clone(&progress);
    let handle = std::thread::Builder::new()
        .name(format!("partition-{}", resume.partition))
        .spawn(move || {
            let mut part = Partition {
                db,
                pos: resume,
                progress: p,
                dead,
            };
            let result = part.run(rx, interval);
            // Close even after a failure: whatever was synced stays.
            let closed = part
                .db
                .close()
                .map_err(|e| format!("closing the store: {e}"));
            result.and(closed)
        })?;
    Ok(Worker {
        tx,
        handle,
        progress,
    })
}

struct Partition {
    db: Db,
    /// Where the store is: the next call to apply.
    pos: SourceOffset,
    progress: Arc<Progress>,
    dead: Arc<DeadLetters>,
}

impl Partition {
    fn run(&mut self, rx: Receiver<Msg>, interval: Duration) -> Result<(), String> {
        let mut synced = Instant::now();
        loop {
            match rx.recv_timeout(interval) {
                Ok(msg) => self.message(msg)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if synced.elapsed() >= interval {
                self.checkpoint()?;
                synced = Instant::now();
            }
        }
        self.checkpoint()
    }

    /// Make everything processed durable, then publish it for the group commit.
    fn checkpoint(&mut self) -> Result<(), String> {
        let err = |e: profiledb::Error| format!("partition {}: {e}", self.pos.partition);
        self.db
            .mark_source_offset(&self.pos, Durability::Buffered)
            .map_err(err)?;
        self.db.sync().map_err(err)?;
        self.progress.durable.store(self.pos.next_offset, Relaxed);
        Ok(())
    }

    fn message(&mut self, msg: Msg) -> Result<(), String> {
        let partition = self.pos.partition;
        if msg.offset < self.pos.next_offset {
            // Already in the store (the broker may deliver from before the position asked).
            return Ok(());
        }
        if msg.offset > self.pos.next_offset {
            super::log(&format!(
                "partition {partition}: offsets {}..{} are gone from the topic (retention or \
                 compaction); continuing at {}",
                self.pos.next_offset, msg.offset, msg.offset
            ));
        }
        let skip = if msg.offset == self.pos.next_offset {
            self.pos.next_call as usize
        } else {
            0
        };
        let topic = self.pos.topic.clone();
        let at = |offset: i64, call: usize, of: usize| {
            let (next_offset, next_call) = if call + 1 >= of {
                (offset + 1, 0)
            } else {
                (offset, call as u32 + 1)
            };
            SourceOffset {
                topic: topic.clone(),
                partition,
                next_offset,
                next_call,
            }
        };
        match calls::split(msg.payload.as_deref()) {
            Err(reason) => {
                self.bad(&msg, None, &reason);
            }
            Ok(list) => {
                let n = list.len();
                for (i, call) in list.into_iter().enumerate().skip(skip) {
                    let next = at(msg.offset, i, n);
                    let applied = self
                        .db
                        .prepare(call)
                        .and_then(|p| self.db.apply_at(&p, &next, Durability::Buffered));
                    match applied {
                        Ok(_) => {
                            self.progress.calls.fetch_add(1, Relaxed);
                        }
                        Err(e) if e.is_refusal() => {
                            let single = Msg {
                                offset: msg.offset,
                                key: msg.key.clone(),
                                payload: Some(call.to_vec()),
                            };
                            self.bad(&single, Some(i), &e.to_string());
                        }
                        Err(e) => {
                            return Err(format!(
                                "partition {partition} offset {} call {i}: {e}",
                                msg.offset
                            ));
                        }
                    }
                    self.pos = next;
                }
            }
        }
        self.pos.next_offset = msg.offset + 1;
        self.pos.next_call = 0;
        self.progress.applied.store(self.pos.next_offset, Relaxed);
        Ok(())
    }

    fn bad(&self, msg: &Msg, call: Option<usize>, reason: &str) {
        let n = self.progress.bad.fetch_add(1, Relaxed) + 1;
        self.dead.send(
            self.pos.partition,
            msg,
            call,
            reason,
            n <= 100 || n.is_multiple_of(1000),
        );
    }
}
