//! `profiledb gen`: the W1 workload as JSON lines.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use clap::Args;
use profiledb::workload::{W1Config, write_json_lines};

use super::progress::{Progress, Unit};
use super::{CmdResult, Failure, OK};

/// Arguments of `gen`.
#[derive(Debug, Clone, Args)]
pub struct GenArgs {
    /// Seed: the same seed gives the same calls.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Number of calls.
    #[arg(long, default_value_t = 1_000_000)]
    pub calls: u64,
    /// Number of people [default: calls / 5].
    #[arg(long)]
    pub people: Option<u64>,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl GenArgs {
    /// The workload configuration.
    pub fn config(&self) -> W1Config {
        let config = W1Config::new(self.seed, self.calls);
        match self.people {
            Some(p) => config.with_people(p),
            None => config,
        }
    }
}

/// `profiledb gen`.
pub fn generate(args: &GenArgs) -> CmdResult {
    let progress = Progress::bar("gen", Some(args.calls), Unit::Items);
    let mut report = |n| progress.set(n);
    match &args.out {
        Some(path) => {
            let file = File::create(path)
                .map_err(|e| Failure::error(format!("cannot create {}: {e}", path.display())))?;
            let mut out = BufWriter::with_capacity(1 << 16, file);
            write_json_lines(args.config(), &mut out, &mut report)
                .and_then(|_| out.into_inner().map_err(|e| e.into_error()))
                .and_then(|f| f.sync_all())
                .map_err(|e| Failure::error(format!("cannot write {}: {e}", path.display())))?;
        }
        None => {
            let stdout = io::stdout();
            let mut out = stdout.lock();
            write_json_lines(args.config(), &mut out, &mut report)
                .and_then(|_| out.flush())
                .map_err(Failure::output)?;
        }
    }
    progress.finish();
    Ok(OK)
}
