//! `profiledb serve`: a Segment-compatible HTTP ingestion server with durable acknowledgements
//! (SPEC 5; docs/server.md).
//!
//! One store per project, chosen by write key: project `P` is the ordinary store directory
//! `DATA/P`, opened when the server starts and closed (synced, lock released) when it stops.
//! Every store call runs on tokio's blocking pool (`spawn_blocking`), never on an async worker.
//! A request's messages are applied with [`Durability::Buffered`] and followed by one
//! [`Db::sync`], so a `200` is sent only once every accepted message of the request is durable;
//! concurrent requests share their fsyncs inside the storage engine.
//!
//! Entry points: [`run`] (what `profiledb serve` calls: own runtime, signals, exit on SIGTERM or
//! SIGINT) and [`serve`] (async, on a listener the caller bound, until a future resolves; used
//! by tests and embedders).

mod auth;
mod body;
mod http;
mod ingest;
mod metrics;
mod mixpanel;
mod posthog;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::{Db, Durability, Options};

pub use ingest::Endpoint;

/// Segment's default size limits, enforced on every ingestion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single message, in bytes of its compact JSON form (Segment: 32 KB).
    pub max_message_bytes: usize,
    /// Largest request body after gzip decoding (Segment: 500 KB a batch). Also caps the
    /// decompressed size of a gzip body, so a decompression bomb costs at most this much.
    pub max_batch_bytes: usize,
    /// Most messages in one `/v1/batch` request (Segment: 2,500).
    pub max_batch_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            max_batch_messages: 2500,
        }
    }
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The data directory; project `P`'s store is `data/P`.
    pub data: PathBuf,
    /// Address to listen on (used by [`run`]; [`serve`] takes a bound listener instead).
    pub listen: SocketAddr,
    /// `(write key, project)` pairs. Several keys may name one project.
    pub write_keys: Vec<(String, String)>,
    /// Options every project's store is opened with (`create` is forced on).
    pub options: Options,
    /// Size limits of requests and messages.
    pub limits: Limits,
}

impl ServeConfig {
    /// A configuration with default options and limits.
    pub fn new(data: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        ServeConfig {
            data: data.into(),
            listen,
            write_keys: Vec::new(),
            options: Options::default(),
            limits: Limits::default(),
        }
    }

    /// Add a write key for a project (builder style).
    pub fn write_key(mut self, key: impl Into<String>, project: impl Into<String>) -> Self {
        self.write_keys.push((key.into(), project.into()));
        self
    }
}

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
}

impl ServeArgs {
    /// Build the configuration for data directory `data`, checking every `KEY=PROJECT`.
    pub fn config(&self, data: impl Into<PathBuf>) -> Result<ServeConfig, ServerError> {
        let mut config = ServeConfig::new(data, self.listen);
        for spec in &self.write_keys {
            let Some((key, project)) = spec.rsplit_once('=') else {
                return Err(ServerError::Config(format!(
                    "--write-key {spec:?}: expected KEY=PROJECT"
                )));
            };
            config
                .write_keys
                .push((key.to_string(), project.to_string()));
        }
        config.limits = Limits {
            max_message_bytes: self.max_message_bytes,
            max_batch_bytes: self.max_batch_bytes,
            max_batch_messages: self.max_batch_messages,
        };
        validate_config(&config)?;
        Ok(config)
    }
}

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable (no key, a bad project name, a key given twice, ...).
    #[error("invalid server configuration: {0}")]
    Config(String),
    /// A project's store could not be opened.
    #[error("opening the store of project {project:?}: {source}")]
    Open {
        /// The project.
        project: String,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// A project's store failed to sync or close at shutdown.
    #[error("closing the store of project {project:?}: {source}")]
    Close {
        /// The project.
        project: String,
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime, a signal handler or the listener failed.
    #[error("server I/O error during {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One project: its store and its counters.
pub(crate) struct Project {
    pub(crate) name: String,
    pub(crate) db: Db,
    pub(crate) metrics: metrics::ProjectMetrics,
    /// Set once the store failed (I/O error, poisoned): `/health` reports it until restart.
    pub(crate) failed: std::sync::atomic::AtomicBool,
}

impl Project {
    fn new(name: String, db: Db) -> Self {
        Project {
            name,
            db,
            metrics: metrics::ProjectMetrics::default(),
            failed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Shared by every request.
pub(crate) struct AppState {
    pub(crate) keys: HashMap<String, Arc<Project>>,
    pub(crate) projects: Vec<Arc<Project>>,
    pub(crate) limits: Limits,
    pub(crate) http: metrics::HttpMetrics,
}

impl AppState {
    /// The project of a write key.
    pub(crate) fn project(&self, key: &str) -> Option<&Arc<Project>> {
        self.keys.get(key)
    }
}

/// The durability of each message inside a request; the request's one sync follows.
pub(crate) const PER_MESSAGE: Durability = Durability::Buffered;

fn validate_project_name(name: &str) -> Result<(), ServerError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ServerError::Config(format!(
            "project name {name:?}: use 1 to 128 letters, digits, '-', '_' or '.' (it names a \
             directory under the data directory)"
        )))
    }
}

fn validate_config(config: &ServeConfig) -> Result<(), ServerError> {
    if config.write_keys.is_empty() {
        return Err(ServerError::Config(
            "at least one --write-key KEY=PROJECT is required".into(),
        ));
    }
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (key, project) in &config.write_keys {
        if key.is_empty() || key.contains(':') || key.chars().any(char::is_whitespace) {
            return Err(ServerError::Config(format!(
                "write key {key:?} for project {project:?}: must be non-empty, without ':' or \
                 spaces (it is sent as the HTTP basic-auth user)"
            )));
        }
        validate_project_name(project)?;
        if let Some(other) = seen.insert(key, project)
            && other != project
        {
            return Err(ServerError::Config(format!(
                "write key {key:?} is given for two projects ({other:?} and {project:?})"
            )));
        }
    }
    let l = &config.limits;
    if l.max_message_bytes == 0 || l.max_batch_bytes == 0 || l.max_batch_messages == 0 {
        return Err(ServerError::Config("size limits must be positive".into()));
    }
    Ok(())
}

/// Open every project's store (on the calling thread: it blocks).
fn open_projects(config: &ServeConfig) -> Result<AppState, ServerError> {
    validate_config(config)?;
    let mut stores: Vec<(String, Db)> = Vec::new();
    for (_, name) in &config.write_keys {
        if stores.iter().any(|(n, _)| n == name) {
            continue;
        }
        let options = Options {
            create: true,
            ..config.options.clone()
        };
        let db = Db::open(config.data.join(name), options).map_err(|source| ServerError::Open {
            project: name.clone(),
            source,
        })?;
        stores.push((name.clone(), db));
    }
    build_state(config, stores)
}

/// The shared state over opened stores; every project named by a key must be among them.
fn build_state(config: &ServeConfig, stores: Vec<(String, Db)>) -> Result<AppState, ServerError> {
    let projects: Vec<Arc<Project>> = stores
        .into_iter()
        .map(|(name, db)| Arc::new(Project::new(name, db)))
        .collect();
    let mut keys = HashMap::new();
    for (key, name) in &config.write_keys {
        let Some(p) = projects.iter().find(|p| &p.name == name) else {
            return Err(ServerError::Config(format!(
                "write key {key:?} names project {name:?}, which has no store"
            )));
        };
        keys.insert(key.clone(), Arc::clone(p));
    }
    Ok(AppState {
        keys,
        projects,
        limits: config.limits,
        http: metrics::HttpMetrics::default(),
    })
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting, finish the requests in
/// flight, sync and close every store (releasing its lock) and return.
///
/// Opens the stores first (an error there is returned before anything is served).
pub async fn serve<F>(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let state = open_async(config).await?;
    serve_state(state, listener, shutdown).await
}

/// Like [`serve`], over stores the caller opened (tests use it to inject I/O faults):
/// `stores` pairs each project name of `config.write_keys` with its open [`Db`]. They are
/// closed at the end like stores [`serve`] opened.
#[doc(hidden)]
pub async fn serve_stores<F>(
    config: ServeConfig,
    stores: Vec<(String, Db)>,
    listener: tokio::net::TcpListener,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    validate_config(&config)?;
    let state = build_state(&config, stores)?;
    serve_state(state, listener, shutdown).await
}

async fn open_async(config: ServeConfig) -> Result<AppState, ServerError> {
    tokio::task::spawn_blocking(move || open_projects(&config))
        .await
        .map_err(|e| ServerError::Io {
            op: "opening the stores",
            source: std::io::Error::other(e.to_string()),
        })?
}

async fn serve_state<F>(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let state = Arc::new(state);
    let app = http::router(Arc::clone(&state));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServerError::Io {
            op: "serving",
            source,
        });
    // Requests whose client went away may still be finishing on the blocking pool; they hold
    // the last references. Wait for them, then close every store.
    let closed = close_all(state).await;
    served.and(closed)
}

/// Wait (bounded) until `arc` is the only reference, then unwrap it.
async fn unwrap_when_alone<T>(mut arc: Arc<T>) -> Result<T, Arc<T>> {
    for _ in 0..6000 {
        match Arc::try_unwrap(arc) {
            Ok(v) => return Ok(v),
            Err(a) => {
                arc = a;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Err(arc)
}

async fn close_all(state: Arc<AppState>) -> Result<(), ServerError> {
    let state = match unwrap_when_alone(state).await {
        Ok(s) => s,
        Err(shared) => {
            // Still referenced after a minute: sync what we can; the stores close on drop.
            for p in &shared.projects {
                p.db.sync().map_err(|source| ServerError::Close {
                    project: p.name.clone(),
                    source,
                })?;
            }
            return Ok(());
        }
    };
    let AppState { keys, projects, .. } = state;
    drop(keys);
    let mut first_error = None;
    for project in projects {
        let result = match unwrap_when_alone(project).await {
            Ok(p) => {
                let name = p.name.clone();
                tokio::task::spawn_blocking(move || p.db.close())
                    .await
                    .map_err(|e| crate::Error::Poisoned {
                        cause: format!("close task failed: {e}"),
                    })
                    .and_then(|r| r)
                    .map_err(|source| ServerError::Close {
                        project: name,
                        source,
                    })
            }
            Err(p) => p.db.sync().map_err(|source| ServerError::Close {
                project: p.name.clone(),
                source,
            }),
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed when this is called,
/// not when the future is first polled, so a signal arriving early is not lost.
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, ServerError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let io = |source| ServerError::Io {
            op: "installing signal handlers",
            source,
        };
        let mut term = signal(SignalKind::terminate()).map_err(io)?;
        let mut int = signal(SignalKind::interrupt()).map_err(io)?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => eprintln!("profiledb serve: SIGTERM received, draining"),
                _ = int.recv() => eprintln!("profiledb serve: SIGINT received, draining"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("profiledb serve: interrupt received, draining");
        })
    }
}

/// Run the server until SIGTERM or SIGINT: build a multi-thread runtime, open every project's
/// store, listen on `config.listen` (the bound address is printed on stderr as
/// `profiledb serve: listening on ADDR`), and on the signal stop accepting, finish the
/// requests in flight, sync and close every store. `Ok(())` means a clean stop (exit 0).
pub fn run(config: ServeConfig) -> Result<(), ServerError> {
    validate_config(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("profiledb-http")
        .build()
        .map_err(|source| ServerError::Io {
            op: "starting the async runtime",
            source,
        })?;
    runtime.block_on(async move {
        let shutdown = {
            // Signal handlers need the runtime's driver: install them inside it, first.
            shutdown_signal()?
        };
        let addr = config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| ServerError::Io {
            op: "reading the bound address",
            source,
        })?;
        let names: Vec<String> = {
            let mut v: Vec<String> = config.write_keys.iter().map(|(_, p)| p.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        let data = config.data.clone();
        let state = open_async(config).await?;
        eprintln!(
            "profiledb serve: listening on {bound} (data {}, projects: {})",
            data.display(),
            names.join(", ")
        );
        let result = serve_state(state, listener, shutdown).await;
        if result.is_ok() {
            eprintln!("profiledb serve: stores synced and closed; bye");
        }
        result
    })
}
