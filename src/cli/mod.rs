//! Arguments, dispatch, errors and output of the `profiledb` command line.
//!
//! Exit status: 0 ok; 1 not found, refused input (an `identify` refused, an `import` with
//! refused lines) or problems found by `check`; 2 usage or any other error (I/O, locked
//! directory, corruption on open, a bad filter). Output is JSON on stdout; diagnostics go to
//! stderr.

mod bench;
#[cfg(feature = "kafka")]
mod consume;
mod generate;
mod lines;
mod maintain;
mod progress;
mod read;
#[cfg(feature = "server")]
mod serve;
mod write;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use profiledb::{Db, Durability, Options, Selector};

/// Exit status: success.
pub const OK: u8 = 0;
/// Exit status: not found, refused input, or problems found by `check`.
pub const FAILED: u8 = 1;
/// Exit status: usage or any other error.
pub const ERROR: u8 = 2;

/// The data directory used when `--data` is not given.
pub const DEFAULT_DATA: &str = "./profiledb-data";

const ABOUT: &str = "An embedded profile store for the identify call: import Segment-shaped \
messages, read profiles back, verify and benchmark a store.";

const MAIN_HELP: &str = "\
Examples:
  profiledb gen --seed 1 --calls 100000 --out w1.jsonl
  profiledb import w1.jsonl
  profiledb get --user-id user-00000042
  profiledb query 'plan = \"pro\" and logins >= 3'
  profiledb bench --calls 200000

Exit status: 0 ok; 1 not found, refused input or problems found by check; 2 usage or other error.";

/// `profiledb [--data DIR] [--durability MODE] <command>`.
#[derive(Debug, Parser)]
#[command(name = "profiledb", version, about = ABOUT, after_help = MAIN_HELP)]
pub struct Cli {
    /// Data directory of the store [default: ./profiledb-data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data: Option<PathBuf>,

    /// When writes are durable: buffered (sync at the end), group (a sync at least every
    /// 10 ms or 1,000 calls; the default) or sync (every call synced before the next).
    #[arg(long, global = true, value_enum, value_name = "MODE")]
    pub durability: Option<DurabilityArg>,

    /// Days each change to a profile is kept in its history (`history`, `get --at`); 0 turns
    /// history off (docs/journal.md) [default: 30].
    #[arg(long, global = true, value_name = "DAYS")]
    pub history_days: Option<u32>,

    /// Memory for recently written profiles kept between writes, as their encoded records,
    /// in MiB (the writer cache, docs/architecture.md) [default: 32].
    #[arg(long, global = true, value_name = "MIB")]
    pub cache_mb: Option<usize>,

    /// Zeros kept written ahead of the log's end, in MiB, so that a sync commits only data:
    /// cheaper durable acknowledgements for up to this much more disk (`Options::
    /// preallocate_bytes`, docs/performance.md) [default: 0, none].
    #[arg(long, global = true, value_name = "MIB")]
    pub preallocate_mb: Option<u64>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Durability choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Written to the OS only; one sync at the end of the command.
    Buffered,
    /// Group commit: a sync at least every 10 ms or every 1,000 calls.
    Group,
    /// Every call is synced before the next one is applied.
    Sync,
}

impl DurabilityArg {
    /// The library's durability for the store's default.
    pub fn durability(self) -> Durability {
        match self {
            DurabilityArg::Buffered => Durability::Buffered,
            DurabilityArg::Group => Durability::group_commit(),
            DurabilityArg::Sync => Durability::SyncEach,
        }
    }

    /// Name as typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DurabilityArg::Buffered => "buffered",
            DurabilityArg::Group => "group",
            DurabilityArg::Sync => "sync",
        }
    }
}

/// Which profile, for `get`, `delete` and `unlink`: exactly one of the four.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct SelectorArgs {
    /// By userId.
    #[arg(long, value_name = "ID")]
    pub user_id: Option<String>,
    /// By email (case-insensitive).
    #[arg(long, value_name = "EMAIL")]
    pub email: Option<String>,
    /// By anonymous id.
    #[arg(long, value_name = "ID")]
    pub anonymous_id: Option<String>,
    /// By key (a merged-away key resolves to its survivor).
    #[arg(long, value_name = "KEY")]
    pub key: Option<u64>,
}

impl SelectorArgs {
    /// The library selector.
    pub fn selector(&self) -> Selector {
        if let Some(v) = &self.user_id {
            Selector::UserId(v.clone())
        } else if let Some(v) = &self.email {
            Selector::Email(v.clone())
        } else if let Some(v) = &self.anonymous_id {
            Selector::AnonymousId(v.clone())
        } else {
            // clap guarantees one of the four is present.
            Selector::Key(self.key.unwrap_or(0))
        }
    }
}

/// Describe a selector for "not found" messages.
pub fn describe(selector: &Selector) -> String {
    match selector {
        Selector::UserId(v) => format!("user id {v:?}"),
        Selector::Email(v) => format!("email {v:?}"),
        Selector::AnonymousId(v) => format!("anonymous id {v:?}"),
        Selector::Key(k) => format!("key {k}"),
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply one Segment-shaped message (identify, group, alias, track, page, screen) and
    /// print the outcome.
    #[command(after_help = "\
Example:
  profiledb identify '{\"userId\": \"u-123\", \"traits\": {\"email\": \"sarah@example.com\", \"plan\": \"pro\"}}'
  echo '{\"userId\": \"u-123\"}' | profiledb identify -

Prints {\"key\", \"status\", \"merged\", \"moved\", \"ignored\"}. A refused message exits with 1.")]
    Identify {
        /// The message as JSON, or `-` to read it from stdin.
        json: String,
    },

    /// Apply a file of JSON lines (one message a line); bad lines are reported and skipped.
    #[command(after_help = "\
Example:
  profiledb import calls.jsonl
  profiledb gen --calls 1000 | profiledb import -

A line that is not JSON or that the rules refuse is reported on stderr as FILE:LINE: reason,
and the import goes on. Prints a summary {lines, accepted, refused, duplicates, merges,
created, updated, unchanged, ...}; exits with 1 when any line was refused.")]
    Import {
        /// The file, or `-` for stdin.
        file: String,
        /// Threads that parse and validate lines (0: one per core). Lines are applied in file
        /// order whatever the number, with the same outcome.
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },

    /// Print one profile as JSON.
    #[command(after_help = "\
Example:
  profiledb get --email sarah@example.com
  profiledb get --key 7

A missing profile exits with 1. With --at, the profile as it was then (within the history
window, docs/journal.md).")]
    Get {
        /// Which profile.
        #[command(flatten)]
        selector: SelectorArgs,
        /// The profile as it was at this time (RFC 3339, e.g. 2026-11-30T09:00:00Z).
        #[arg(long, value_name = "TIMESTAMP")]
        at: Option<String>,
    },

    /// Print a profile's kept history as JSON: each call that changed it (messageId,
    /// timestamps, identifiers it carried, merges, each property's old and new value).
    #[command(after_help = "\
Example:
  profiledb history --user-id u-123

A missing profile exits with 1.")]
    History(SelectorArgs),

    /// Show what a message would do, without writing: which profile each identifier finds,
    /// the survivor and its rule, merges, moved identifiers, each property's old and new value
    /// and the stamp that decides it, or the refusal with its fields.
    #[command(after_help = "\
Example:
  profiledb explain '{\"userId\": \"u-123\", \"anonymousId\": \"a-9\", \"traits\": {\"plan\": \"pro\"}}'

Prints {verdict, found, survivor, rule, outcome, changes, kept, refusals}; verdict is apply,
duplicate or refuse (a refusal exits 0: the explanation is the answer).")]
    Explain {
        /// The message as JSON, or `-` to read it from stdin.
        json: String,
    },

    /// Print every profile, one JSON line each.
    #[command(after_help = "\
Example:
  profiledb export > profiles.jsonl")]
    Export,

    /// Delete a profile and free its identifiers (their bytes leave the disk at the next
    /// compaction, or before the command ends with --erase).
    #[command(after_help = "\
Example:
  profiledb delete --user-id u-123 --suppress --erase

Prints {\"deleted\": KEY, \"suppressed\": BOOL, \"erased\": BOOL}. A missing profile exits
with 1.")]
    Delete {
        /// Which profile.
        #[command(flatten)]
        selector: SelectorArgs,
        /// Also refuse later calls naming the profile's identifiers.
        #[arg(long)]
        suppress: bool,
        /// Rewrite the store's segments now, so that no file holds the profile's bytes when
        /// the command ends (a full compaction).
        #[arg(long)]
        erase: bool,
    },

    /// Detach devices (anonymous ids) from a profile: logout.
    #[command(after_help = "\
Example:
  profiledb unlink --anonymous-id a-9      # this device only
  profiledb unlink --user-id u-123         # every device of the profile

Prints {\"key\": KEY, \"unlinked\": [IDS]}. A missing profile or device exits with 1.")]
    Unlink(SelectorArgs),

    /// Split a merge back (docs/journal.md "Unmerge"): the profile merged away under
    /// --merged-key returns with the identifiers and properties it brought; the survivor
    /// (selected as for `get`) loses them.
    #[command(after_help = "\
Example:
  profiledb unmerge --user-id u-123 --merged-key 7

Prints {\"survivor\": PROFILE, \"restored\": PROFILE}. A survivor that is missing, a key not
merged into it, a merge outside the history window or history off exits with 1.")]
    Unmerge {
        /// The survivor.
        #[command(flatten)]
        selector: SelectorArgs,
        /// The key of the merged-away profile (`merged` in its history).
        #[arg(long, value_name = "KEY")]
        merged_key: u64,
    },

    /// Print a company with its member count.
    #[command(after_help = "\
Example:
  profiledb company c-1 --members

A missing company exits with 1.")]
    Company {
        /// The company id.
        id: String,
        /// Also list the keys of its members.
        #[arg(long)]
        members: bool,
    },

    /// Print the profiles whose properties match a filter, one JSON line each.
    #[command(after_help = "\
Example:
  profiledb query 'plan = \"pro\" and logins >= 3'
  profiledb query 'exists company_size'
  profiledb query 'created_at < 2026-01-01T00:00:00Z'

The filter syntax is described in docs/cli.md. A filter that does not parse exits with 2.")]
    Query {
        /// The filter.
        filter: String,
    },

    /// Rewrite live data and drop superseded records; prints the bytes reclaimed.
    #[command(after_help = "\
Example:
  profiledb compact")]
    Compact,

    /// Verify every record's checksum and that the indexes match the data.
    #[command(after_help = "\
Example:
  profiledb check

Prints {\"ok\", \"problems\"}; each problem names the file and offset. Exits with 1 when any
problem is found.")]
    Check,

    /// Print store statistics as JSON.
    #[command(after_help = "\
Example:
  profiledb stats")]
    Stats,

    /// Write the W1 benchmark workload as Segment-shaped JSON lines.
    #[command(after_help = "\
Example:
  profiledb gen --seed 1 --calls 1000000 --out w1.jsonl
  profiledb gen --calls 1000 | profiledb import -

The same seed always gives the same calls (see docs/benchmarks.md, W1).")]
    Gen(generate::GenArgs),

    /// Run W1 through the library and print throughput, latency, bytes written per call,
    /// disk use after compaction and peak memory.
    #[command(after_help = "\
Example:
  profiledb bench --calls 1000000 --seed 1
  profiledb bench --calls 200000 --durability sync --json

Without --data the run uses a fresh temporary directory, removed afterwards; with --data DIR,
DIR must be missing or empty, and is kept.")]
    Bench(bench::BenchArgs),
    /// Serve Segment's tracking API over HTTP, one store per project (see docs/server.md).
    #[cfg(feature = "server")]
    #[command(after_help = "\
Example:
  profiledb --data /var/lib/profiledb serve --listen 0.0.0.0:8080 --write-key wk_live_1=shop

Project PROJECT's store is DATA/PROJECT. SIGTERM or SIGINT drains, syncs and exits 0.")]
    Serve(serve::ServeArgs),
    /// Apply a Kafka topic's messages as a consumer group member, one store per partition
    /// (DATA/TOPIC-<partition>), exactly once across crashes (see docs/scaling.md).
    #[cfg(feature = "kafka")]
    #[command(after_help = "\
Example:
  profiledb --data /var/lib/profiledb consume --brokers 10.0.0.5:9092 --topic calls --group profiledb

Each message is one Segment-shaped JSON call or a JSON array of them. Each store records the
position it has applied up to in the same frame as the calls; a partition resumes there.
SIGTERM or SIGINT drains, syncs, commits and exits 0.")]
    Consume(consume::ConsumeArgs),
}

/// Global options every command sees.
#[derive(Debug, Clone)]
pub struct Global {
    /// The data directory.
    pub data: PathBuf,
    /// Whether `--data` was given.
    pub data_given: bool,
    /// `--durability`, if given.
    pub durability: Option<DurabilityArg>,
    /// `--history-days`, if given.
    pub history_days: Option<u32>,
    /// `--cache-mb`, if given.
    pub cache_mb: Option<usize>,
    /// `--preallocate-mb`, if given.
    pub preallocate_mb: Option<u64>,
}

impl Global {
    /// The history retention the commands open stores with.
    pub fn history_retention(&self) -> std::time::Duration {
        match self.history_days {
            Some(d) => std::time::Duration::from_secs(u64::from(d) * 24 * 3600),
            None => Options::default().history_retention,
        }
    }

    /// The writer cache's budget the commands open stores with.
    pub fn profile_cache_bytes(&self) -> usize {
        self.cache_mb
            .map_or(Options::default().profile_cache_bytes, |m| {
                m.saturating_mul(1 << 20)
            })
    }

    /// The zeros written ahead of the log's end the commands open stores with.
    pub fn preallocate_bytes(&self) -> u64 {
        self.preallocate_mb
            .map_or(Options::default().preallocate_bytes, |m| {
                m.saturating_mul(1 << 20)
            })
    }
}

/// A failed command: the exit status and the message for stderr (none: exit quietly).
#[derive(Debug)]
pub struct Failure {
    /// Exit status.
    pub code: u8,
    /// For stderr.
    pub message: Option<String>,
}

impl Failure {
    /// Exit 1: not found / refused.
    pub fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: FAILED,
            message: Some(message.into()),
        }
    }

    /// Exit 2: usage or other error.
    pub fn error(message: impl Into<String>) -> Self {
        Failure {
            code: ERROR,
            message: Some(message.into()),
        }
    }

    /// An error of the library: refusals exit with 1, everything else with 2.
    pub fn db(e: profiledb::Error) -> Self {
        if e.is_refusal() {
            Failure::failed(e.to_string())
        } else {
            Failure::error(e.to_string())
        }
    }

    /// An output error: a closed pipe (`profiledb export | head`) ends the command quietly.
    pub fn output(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure {
                code: OK,
                message: None,
            }
        } else {
            Failure::error(format!("cannot write output: {e}"))
        }
    }
}

impl From<profiledb::Error> for Failure {
    fn from(e: profiledb::Error) -> Self {
        Failure::db(e)
    }
}

/// A command's result: the exit status on success paths (0, or 1 for "done, but refused").
pub type CmdResult = Result<u8, Failure>;

/// Write a line to stderr, ignoring a closed stderr (never panics, unlike `eprintln!`).
pub fn warn(message: &str) {
    let _ = writeln!(io::stderr().lock(), "profiledb: {message}");
}

/// Print one JSON value on stdout: pretty on a terminal, one line otherwise.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let stdout = io::stdout();
    let pretty = stdout.is_terminal();
    let mut out = stdout.lock();
    let written = if pretty {
        serde_json::to_writer_pretty(&mut out, value)
    } else {
        serde_json::to_writer(&mut out, value)
    };
    written.map_err(|e| Failure::output(e.into()))?;
    writeln!(out)
        .and_then(|_| out.flush())
        .map_err(Failure::output)
}

/// How a command uses the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: the directory must exist; no background compaction.
    Read,
    /// Writes: the directory is created if missing.
    Write,
}

/// Open the store of `global.data` with `durability` as its default.
pub fn open(global: &Global, access: Access, durability: Durability) -> Result<Db, Failure> {
    try_open(global, access, durability)?.map_err(|e| Failure::error(e.to_string()))
}

/// Like [`open`], but hands back the library's error (the outer error: no store there).
pub fn try_open(
    global: &Global,
    access: Access,
    durability: Durability,
) -> Result<profiledb::Result<Db>, Failure> {
    if access == Access::Read && !global.data.is_dir() {
        return Err(Failure::error(format!(
            "no profile store at {} (give --data DIR, or create one with `profiledb import`)",
            global.data.display()
        )));
    }
    // Never turn someone else's directory into a store, nor read it as one (nothing is
    // touched).
    Db::check_store_dir(&global.data).map_err(|e| Failure::error(e.to_string()))?;
    let options = Options {
        durability,
        create: access == Access::Write,
        compaction_ratio: match access {
            Access::Read => None,
            Access::Write => Options::default().compaction_ratio,
        },
        history_retention: global.history_retention(),
        profile_cache_bytes: global.profile_cache_bytes(),
        preallocate_bytes: global.preallocate_bytes(),
        ..Options::default()
    };
    Ok(Db::open(&global.data, options))
}

/// Close the store, reporting a failure to sync.
pub fn close(db: Db) -> Result<(), Failure> {
    db.close()
        .map_err(|e| Failure::error(format!("closing the store: {e}")))
}

/// Parse the arguments and run the command; the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = Global {
        data: cli
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA)),
        data_given: cli.data.is_some(),
        durability: cli.durability,
        history_days: cli.history_days,
        cache_mb: cli.cache_mb,
        preallocate_mb: cli.preallocate_mb,
    };
    // A panic is a bug; still, exit with the documented status for "other error".
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&global, cli.command)));
    let code = match result {
        Ok(Ok(code)) => code,
        Ok(Err(Failure { code, message })) => {
            if let Some(message) = message {
                warn(&message);
            }
            code
        }
        Err(_) => {
            warn("internal error (a bug: please report it with the command that caused it)");
            ERROR
        }
    };
    ExitCode::from(code)
}

/// Run one command.
pub fn run(global: &Global, command: Command) -> CmdResult {
    match command {
        Command::Identify { json } => write::identify(global, &json),
        Command::Import { file, workers } => write::import(global, &file, workers),
        Command::Get { selector, at } => read::get(global, &selector.selector(), at.as_deref()),
        Command::History(selector) => read::history(global, &selector.selector()),
        Command::Explain { json } => read::explain(global, &json),
        Command::Export => read::query(global, None),
        Command::Delete {
            selector,
            suppress,
            erase,
        } => write::delete(global, &selector.selector(), suppress, erase),
        Command::Unlink(selector) => write::unlink(global, &selector.selector()),
        Command::Unmerge {
            selector,
            merged_key,
        } => write::unmerge(global, &selector.selector(), merged_key),
        Command::Company { id, members } => read::company(global, &id, members),
        Command::Query { filter } => read::query(global, Some(&filter)),
        Command::Compact => maintain::compact(global),
        Command::Check => maintain::check(global),
        Command::Stats => read::stats(global),
        Command::Gen(args) => generate::generate(&args),
        Command::Bench(args) => bench::bench(global, &args),
        #[cfg(feature = "server")]
        Command::Serve(args) => args
            .config(&global.data)
            .and_then(profiledb::server::run)
            .map(|()| OK)
            .map_err(|e| Failure::error(e.to_string())),
        #[cfg(feature = "kafka")]
        Command::Consume(args) => consume::consume(global, &args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }
}
