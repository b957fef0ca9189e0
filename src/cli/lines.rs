//! `import`'s pipeline: one thread reads the input and cuts it into chunks of whole lines,
//! worker threads parse and validate the lines of a chunk ([`Db::prepare`]), and the calling
//! thread receives the prepared lines in file order, to apply them itself.
//!
//! Memory is bounded whatever the input's size: at most [`Pipeline::in_flight`] chunks exist at
//! once (a chunk holds about [`CHUNK_BYTES`] of input and its prepared messages; a line longer
//! than the call-size limit is never held, only its first `cap` bytes are read into the chunk
//! and it is handed on as [`Line::TooLong`]).

use std::collections::BTreeMap;
use std::io::{self, BufRead};
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use profiledb::{Db, Prepared};

/// Input bytes per chunk (a chunk also ends after [`CHUNK_LINES`] lines).
pub const CHUNK_BYTES: usize = 256 << 10;
/// Lines per chunk at most.
pub const CHUNK_LINES: usize = 1024;

/// What became of one non-blank line.
// Nearly every line is the large variant: boxing it would only add an allocation per line.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Line {
    /// Parsed and validated, or the refusal (or other error) of doing so.
    Prepared(profiledb::Result<Prepared>),
    /// Longer than the call-size limit: not parsed.
    TooLong,
}

/// One non-blank line, in file order.
#[derive(Debug)]
pub struct Item {
    /// Its 1-based line number.
    pub lineno: u64,
    /// Input bytes consumed up to and including this line (for progress).
    pub consumed: u64,
    /// What became of it.
    pub line: Line,
}

/// What the reader hands on, in file order.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event {
    /// A non-blank line.
    Item(Item),
    /// Reading failed before line `lineno`; nothing follows.
    ReadError {
        /// The line that could not be read.
        lineno: u64,
        /// Why.
        error: io::Error,
    },
}

/// A chunk of raw lines as the reader cut it.
struct Chunk {
    seq: u64,
    data: Vec<u8>,
    /// `(lineno, consumed, the line's bytes in data, or None when too long)`.
    lines: Vec<(u64, u64, Option<Range<usize>>)>,
    read_error: Option<(u64, io::Error)>,
}

/// A chunk after the workers: its events in order.
struct Done {
    seq: u64,
    events: Vec<Event>,
}

/// Read `input` on one thread, prepare its lines on `workers` threads against `db`, and call
/// `apply` on the calling thread for every event in file order. `apply` returns false to stop
/// early (the other threads then stop too). Returns when the input is exhausted (or after a
/// read error, which is the last event) or `apply` stopped.
pub fn run(
    db: &Db,
    input: Box<dyn BufRead + Send + '_>,
    workers: usize,
    apply: &mut dyn FnMut(Event) -> bool,
) {
    let pipeline = Pipeline::new(workers);
    let cap = db.options().max_call_bytes;
    let (work_tx, work_rx) = sync_channel::<Chunk>(pipeline.workers);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = sync_channel::<Done>(pipeline.in_flight);
    // One token per chunk allowed to exist: the reader takes one before it cuts a chunk, the
    // applying thread gives it back once the chunk is applied.
    let (token_tx, token_rx) = sync_channel::<()>(pipeline.in_flight);
    for _ in 0..pipeline.in_flight {
        let _ = token_tx.send(());
    }
    std::thread::scope(|scope| {
        scope.spawn(move || read_chunks(input, cap, token_rx, work_tx));
        for _ in 0..pipeline.workers {
            let work_rx = Arc::clone(&work_rx);
            let done_tx = done_tx.clone();
            scope.spawn(move || prepare_chunks(db, &work_rx, &done_tx));
        }
        drop(done_tx);
        deliver_in_order(done_rx, token_tx, apply);
    });
}

/// How many threads and chunks.
struct Pipeline {
    workers: usize,
    in_flight: usize,
}

impl Pipeline {
    fn new(workers: usize) -> Pipeline {
        let workers = workers.max(1);
        Pipeline {
            workers,
            // Enough for every worker to hold one, one more queued for each, and the reader's
            // and the applier's.
            in_flight: 2 * workers + 2,
        }
    }
}

/// The number of workers `import` uses when not told: one per core.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn read_chunks(
    mut input: Box<dyn BufRead + Send + '_>,
    cap: usize,
    tokens: Receiver<()>,
    work: SyncSender<Chunk>,
) {
    let (mut seq, mut lineno, mut consumed) = (0u64, 0u64, 0u64);
    let mut line = Vec::with_capacity(1024);
    loop {
        if tokens.recv().is_err() {
            return;
        }
        let mut chunk = Chunk {
            seq,
            data: Vec::with_capacity(CHUNK_BYTES + 1024),
            lines: Vec::with_capacity(CHUNK_LINES),
            read_error: None,
        };
        seq += 1;
        let mut end = false;
        while chunk.data.len() < CHUNK_BYTES && chunk.lines.len() < CHUNK_LINES {
            let (used, long) = match read_line(&mut *input, &mut line, cap) {
                Ok(read) => read,
                Err(e) => {
                    chunk.read_error = Some((lineno + 1, e));
                    end = true;
                    break;
                }
            };
            if used == 0 {
                end = true;
                break;
            }
            lineno += 1;
            consumed += used as u64;
            if long {
                chunk.lines.push((lineno, consumed, None));
                continue;
            }
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let start = chunk.data.len();
            chunk.data.extend_from_slice(text);
            chunk
                .lines
                .push((lineno, consumed, Some(start..chunk.data.len())));
        }
        if (!chunk.lines.is_empty() || chunk.read_error.is_some()) && work.send(chunk).is_err() {
            return;
        }
        if end {
            return;
        }
    }
}

fn prepare_chunks(db: &Db, work: &Mutex<Receiver<Chunk>>, done: &SyncSender<Done>) {
    loop {
        let chunk = match work.lock() {
            Ok(rx) => match rx.recv() {
                Ok(chunk) => chunk,
                Err(_) => return,
            },
            Err(_) => return,
        };
        let mut events: Vec<Event> = chunk
            .lines
            .into_iter()
            .map(|(lineno, consumed, range)| {
                let line = match range {
                    Some(range) => Line::Prepared(db.prepare(&chunk.data[range])),
                    None => Line::TooLong,
                };
                Event::Item(Item {
                    lineno,
                    consumed,
                    line,
                })
            })
            .collect();
        if let Some((lineno, error)) = chunk.read_error {
            events.push(Event::ReadError { lineno, error });
        }
        if done
            .send(Done {
                seq: chunk.seq,
                events,
            })
            .is_err()
        {
            return;
        }
    }
}

fn deliver_in_order(
    done: Receiver<Done>,
    tokens: SyncSender<()>,
    apply: &mut dyn FnMut(Event) -> bool,
) {
    // Chunks finished ahead of their turn; at most `in_flight` of them (the tokens).
    let mut waiting: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
    let mut next = 0u64;
    for chunk in done {
        waiting.insert(chunk.seq, chunk.events);
        while let Some(events) = waiting.remove(&next) {
            next += 1;
            for event in events {
                if !apply(event) {
                    return;
                }
            }
            // The reader may be gone already (end of input): nothing to give back to then.
            let _ = tokens.send(());
        }
    }
}

/// Read one line (newline excluded) into `buf`, keeping at most `cap` bytes of it. Returns the
/// bytes consumed (0 at the end of input) and whether the line was longer than `cap`.
pub fn read_line(r: &mut dyn BufRead, buf: &mut Vec<u8>, cap: usize) -> io::Result<(usize, bool)> {
    buf.clear();
    let (mut consumed, mut long) = (0usize, false);
    loop {
        let chunk = match r.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((consumed, long));
        }
        let newline = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..newline.unwrap_or(chunk.len())];
        let room = cap.saturating_sub(buf.len());
        if part.len() > room {
            long = true;
        }
        buf.extend_from_slice(&part[..part.len().min(room)]);
        let used = newline.map_or(chunk.len(), |i| i + 1);
        r.consume(used);
        consumed += used;
        if newline.is_some() {
            return Ok((consumed, long));
        }
    }
}
