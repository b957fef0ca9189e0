//! `profiledb serve`: the command-line arguments of the HTTP server, turned into the server's
//! plain [`ServeConfig`] (the server itself does not depend on clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use profiledb::server::{Limits, ServeConfig, ServerError};

/// Arguments of `profiledb serve` (the data directory comes from the global `--data`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port; the address is
    /// printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A write key and the project it writes to, as KEY=PROJECT (repeatable; at least one).
    /// Project PROJECT's store is the directory DATA/PROJECT, created if missing.
    #[arg(long = "write-key", value_name = "KEY=PROJECT", required = true)]
    pub write_keys: Vec<String>,

    /// Largest single message in bytes (Segment: 32 KB).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message_bytes)]
    pub max_message_bytes: usize,

    /// Largest request body in bytes, after gzip decoding (Segment: 500 KB).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_batch_bytes)]
    pub max_batch_bytes: usize,

    /// Most messages in one batch (Segment: 2,500).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_batch_messages)]
    pub max_batch_messages: usize,

    /// A web origin whose pages may write to a project from a browser, as
    /// PROJECT=ORIGIN (e.g. shop=https://shop.example; repeatable). A project without one
    /// accepts browser writes from every origin (docs/browser.md).
    #[arg(long = "allowed-origin", value_name = "PROJECT=ORIGIN")]
    pub allowed_origins: Vec<String>,
}

impl ServeArgs {
    /// Build the configuration for data directory `data`, checking every `KEY=PROJECT`.
    pub fn config(&self, data: impl Into<PathBuf>) -> Result<ServeConfig, ServerError> {
        let mut config = ServeConfig::new(data, self.listen);
        for spec in &self.write_keys {
            config = config.write_key_spec(spec)?;
        }
        for spec in &self.allowed_origins {
            config = config.allowed_origin_spec(spec)?;
        }
        config.limits = Limits {
            max_message_bytes: self.max_message_bytes,
            max_batch_bytes: self.max_batch_bytes,
            max_batch_messages: self.max_batch_messages,
        };
        config.validate()?;
        Ok(config)
    }
}
