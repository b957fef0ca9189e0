//! `profiledb serve`: the command-line arguments of the HTTP server, turned into the server's
//! plain [`ServeConfig`] (the server itself does not depend on clap).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use profiledb::server::{Limits, Protection, ServeConfig, ServerError, keys};

/// Arguments of `profiledb serve` (the data directory comes from the global `--data`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port; the address is
    /// printed on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// File of write keys and admin tokens (`write KEY PROJECT`, `admin TOKEN PROJECT|*`, one
    /// a line), re-read on SIGHUP. The preferred way; so is the environment
    /// (PROFILEDB_WRITE_KEYS=KEY=PROJECT,..., PROFILEDB_ADMIN_TOKENS=TOKEN=PROJECT|*,...).
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,

    /// A write key and the project it writes to, as KEY=PROJECT (repeatable). Write keys are
    /// public and can only ingest. Project PROJECT's store is DATA/PROJECT, created if missing.
    #[arg(long = "write-key", value_name = "KEY=PROJECT")]
    pub write_keys: Vec<String>,

    /// An admin token as TOKEN=PROJECT or TOKEN=* (server-wide). Visible in `ps`: prefer
    /// --keys-file or PROFILEDB_ADMIN_TOKENS.
    #[arg(long = "admin-token", value_name = "TOKEN=PROJECT")]
    pub admin_tokens: Vec<String>,

    /// Also serve /metrics here without credentials (bind it to a private address).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Largest single message in bytes (Segment: 32 KB).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_message_bytes)]
    pub max_message_bytes: usize,

    /// Largest request body in bytes, after gzip decoding (Segment: 500 KB).
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_batch_bytes)]
    pub max_batch_bytes: usize,

    /// Most messages in one batch (Segment: 2,500).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_batch_messages)]
    pub max_batch_messages: usize,

    /// Seconds for a request's head to arrive (also the keep-alive idle limit).
    #[arg(long, value_name = "SECS", default_value_t = Protection::default().header_timeout.as_secs_f64())]
    pub header_timeout: f64,

    /// Seconds for a request's whole body to arrive.
    #[arg(long, value_name = "SECS", default_value_t = Protection::default().body_timeout.as_secs_f64())]
    pub body_timeout: f64,

    /// Seconds without a byte moving on a connection before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = Protection::default().idle_timeout.as_secs_f64())]
    pub idle_timeout: f64,

    /// Open connections at most.
    #[arg(long, value_name = "N", default_value_t = Protection::default().max_connections)]
    pub max_connections: usize,

    /// Bytes of request bodies buffered at once across all requests.
    #[arg(long, value_name = "BYTES", default_value_t = Protection::default().max_inflight_bytes)]
    pub max_inflight_bytes: usize,

    /// Of those, bytes open to requests without an Authorization header.
    #[arg(long, value_name = "BYTES", default_value_t = Protection::default().max_unauthenticated_bytes)]
    pub max_unauthenticated_bytes: usize,

    /// Seconds connections may finish their requests after SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = Protection::default().drain.as_secs_f64())]
    pub drain_timeout: f64,

    /// Failed authentications per source address per minute before 429.
    #[arg(long, value_name = "N", default_value_t = Protection::default().auth_failures_per_minute)]
    pub auth_failures_per_minute: u32,

    /// Seconds within which a deleted profile's bytes leave the disk (default 24 h).
    #[arg(long, value_name = "SECS", default_value_t = Protection::default().erase_within.as_secs_f64())]
    pub erase_within: f64,

    /// A web origin whose pages may write to a project from a browser, as
    /// PROJECT=ORIGIN (e.g. shop=https://shop.example; repeatable). A project without one
    /// accepts browser writes from every origin (docs/browser.md).
    #[arg(long = "allowed-origin", value_name = "PROJECT=ORIGIN")]
    pub allowed_origins: Vec<String>,

    /// Produce accepted calls to a Kafka topic, keyed by project, as BROKERS/TOPIC
    /// (e.g. 10.0.0.5:9092/calls), instead of writing the stores; each request is answered
    /// once the broker acknowledged its calls (acks=all). See docs/scaling.md.
    #[cfg(feature = "kafka")]
    #[arg(long, value_name = "BROKERS/TOPIC")]
    pub produce_to: Option<String>,
}

impl Default for ServeArgs {
    /// What the command line gives when only credentials are passed.
    fn default() -> Self {
        let l = Limits::default();
        let p = Protection::default();
        ServeArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            keys_file: None,
            write_keys: Vec::new(),
            admin_tokens: Vec::new(),
            metrics_listen: None,
            max_message_bytes: l.max_message_bytes,
            max_batch_bytes: l.max_batch_bytes,
            max_batch_messages: l.max_batch_messages,
            header_timeout: p.header_timeout.as_secs_f64(),
            body_timeout: p.body_timeout.as_secs_f64(),
            idle_timeout: p.idle_timeout.as_secs_f64(),
            max_connections: p.max_connections,
            max_inflight_bytes: p.max_inflight_bytes,
            max_unauthenticated_bytes: p.max_unauthenticated_bytes,
            drain_timeout: p.drain.as_secs_f64(),
            auth_failures_per_minute: p.auth_failures_per_minute,
            erase_within: p.erase_within.as_secs_f64(),
            allowed_origins: Vec::new(),
            #[cfg(feature = "kafka")]
            produce_to: None,
        }
    }
}

fn seconds(flag: &str, v: f64) -> Result<Duration, ServerError> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| ServerError::Config(format!("--{flag}: give a positive number of seconds")))
}

impl ServeArgs {
    /// Build the configuration for data directory `data`: flags, then the environment, then
    /// the keys file; every credential is checked.
    pub fn config(&self, data: impl Into<PathBuf>) -> Result<ServeConfig, ServerError> {
        let mut config = ServeConfig::new(data, self.listen);
        for spec in &self.write_keys {
            config
                .write_keys
                .push(keys::parse_pair(spec, "--write-key")?);
        }
        for spec in &self.admin_tokens {
            let (token, project) = keys::parse_pair(spec, "--admin-token")?;
            config = config.admin_token(token, (project != "*").then_some(project.as_str()));
        }
        let env = keys::from_env()?;
        config.write_keys.extend(env.write_keys);
        config.admin_tokens.extend(env.admin_tokens);
        config.keys_file = self.keys_file.clone();
        config.metrics_listen = self.metrics_listen;
        #[cfg(feature = "kafka")]
        {
            config.produce_to = self.produce_to.clone();
        }
        config.limits = Limits {
            max_message_bytes: self.max_message_bytes,
            max_batch_bytes: self.max_batch_bytes,
            max_batch_messages: self.max_batch_messages,
        };
        config.protection = Protection {
            header_timeout: seconds("header-timeout", self.header_timeout)?,
            body_timeout: seconds("body-timeout", self.body_timeout)?,
            idle_timeout: seconds("idle-timeout", self.idle_timeout)?,
            max_connections: self.max_connections,
            max_inflight_bytes: self.max_inflight_bytes,
            max_unauthenticated_bytes: self.max_unauthenticated_bytes,
            drain: seconds("drain-timeout", self.drain_timeout)?,
            auth_failures_per_minute: self.auth_failures_per_minute,
            erase_within: seconds("erase-within", self.erase_within)?,
        };
        for spec in &self.allowed_origins {
            config = config.allowed_origin_spec(spec)?;
        }
        config.validate()?;
        Ok(config)
    }
}
