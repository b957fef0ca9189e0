//! `profiledb serve`: a Segment-compatible HTTP ingestion server with durable acknowledgements
//! (SPEC 5; docs/server.md).
//!
//! One store per project, chosen by write key: project `P` is the ordinary store directory
//! `DATA/P`, opened when the server starts and closed (synced, lock released) when it stops.
//! Every store call runs on tokio's blocking pool (`spawn_blocking`), never on an async worker.
//! A request parses and validates its messages on its own thread, then hands them to its
//! project's group commit (`commit.rs`): concurrent requests' calls are applied in one group
//! with [`crate::Durability::Buffered`] appends and one [`Db::sync`], so a `200` is sent only
//! once every accepted message of the request is durable.
//!
//! Entry points: [`run`] (what `profiledb serve` calls: own runtime, signals, exit on SIGTERM or
//! SIGINT) and [`serve`] (async, on a listener the caller bound, until a future resolves; used
//! by tests and embedders).

mod admin;
mod auth;
mod body;
mod browser;
mod budget;
mod commit;
mod conn;
mod http;
mod ingest;
pub mod keys;
mod metrics;
mod mixpanel;
mod posthog;
#[cfg(feature = "kafka")]
mod produce;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::{Db, Options};

pub use keys::{AdminScope, KeySet};

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

/// Timeouts and caps that bound what any client, authenticated or not, can cost the server
/// (docs/security.md lists each with its default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    /// From the moment a connection is ready for a request (just opened, or its previous
    /// answer sent) until the request's whole head has arrived; also how long an idle
    /// keep-alive connection stays open. hyper's `header_read_timeout`.
    pub header_timeout: Duration,
    /// The whole body of a request must arrive within this, from the end of its head.
    pub body_timeout: Duration,
    /// A connection on which no byte moved, either way, for this long while none of its
    /// requests was being handled is closed (a client that stopped reading its answer).
    pub idle_timeout: Duration,
    /// Open connections at most; one more gets `503 server_busy` and is closed.
    pub max_connections: usize,
    /// Bytes of request bodies (and their gzip-decoded form) buffered at once across every
    /// request in flight; past it, `503 server_busy`.
    pub max_inflight_bytes: usize,
    /// The part of `max_inflight_bytes` open to requests without an `Authorization` header
    /// (their key is in the body, so they are read before they are authenticated).
    pub max_unauthenticated_bytes: usize,
    /// After SIGTERM: how long connections may finish their requests before being dropped.
    pub drain: Duration,
    /// Failed authentications per source address per minute before `429`.
    pub auth_failures_per_minute: u32,
    /// A deleted profile's bytes leave the disk within this (a compaction is forced when the
    /// oldest unerased deletion gets this old).
    pub erase_within: Duration,
}

impl Default for Protection {
    fn default() -> Self {
        Protection {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_inflight_bytes: 256 << 20,
            max_unauthenticated_bytes: 16 << 20,
            drain: Duration::from_secs(10),
            auth_failures_per_minute: 20,
            erase_within: Duration::from_secs(24 * 3600),
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
    /// `(admin token, scope)` pairs.
    pub admin_tokens: Vec<(String, AdminScope)>,
    /// A keys file read at start and again on SIGHUP (adds to the two lists above).
    pub keys_file: Option<PathBuf>,
    /// Options every project's store is opened with (`create` is forced on).
    pub options: Options,
    /// Size limits of requests and messages.
    pub limits: Limits,
    /// Timeouts and caps.
    pub protection: Protection,
    /// Where `/metrics` is also served without credentials (a private address); on the main
    /// address it needs a server-wide admin token.
    pub metrics_listen: Option<SocketAddr>,
    /// `(project, origin)` pairs: the web origins whose pages may write to a project from a
    /// browser (CORS, docs/browser.md). A project with none accepts every origin.
    pub allowed_origins: Vec<(String, String)>,
    /// `BROKERS/TOPIC`: produce accepted calls there, keyed by project, instead of writing the
    /// stores (feature `kafka`, docs/scaling.md).
    #[cfg(feature = "kafka")]
    pub produce_to: Option<String>,
}

impl ServeConfig {
    /// A configuration with default options and limits.
    pub fn new(data: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        ServeConfig {
            data: data.into(),
            listen,
            write_keys: Vec::new(),
            admin_tokens: Vec::new(),
            keys_file: None,
            options: Options::default(),
            limits: Limits::default(),
            protection: Protection::default(),
            metrics_listen: None,
            allowed_origins: Vec::new(),
            #[cfg(feature = "kafka")]
            produce_to: None,
        }
    }

    /// Add an admin token (builder style): of one project, or server-wide with `None`.
    pub fn admin_token(mut self, token: impl Into<String>, project: Option<&str>) -> Self {
        let scope = match project {
            Some(p) => AdminScope::Project(p.to_string()),
            None => AdminScope::Server,
        };
        self.admin_tokens.push((token.into(), scope));
        self
    }

    /// Every credential: the lists plus the keys file (read now).
    pub fn key_set(&self) -> Result<KeySet, ServerError> {
        let mut set = KeySet {
            write_keys: self.write_keys.clone(),
            admin_tokens: self.admin_tokens.clone(),
        };
        if let Some(path) = &self.keys_file {
            set.extend(keys::read_keys_file(path)?);
        }
        keys::validate(&set)?;
        Ok(set)
    }

    /// Add a write key for a project (builder style).
    pub fn write_key(mut self, key: impl Into<String>, project: impl Into<String>) -> Self {
        self.write_keys.push((key.into(), project.into()));
        self
    }

    /// Add a write key given as `KEY=PROJECT` (the form of `--write-key`; the project is what
    /// follows the last `=`).
    pub fn write_key_spec(self, spec: &str) -> Result<Self, ServerError> {
        let (key, project) = keys::parse_pair(spec, "--write-key")?;
        Ok(self.write_key(key, project))
    }

    /// Let pages of `origin` (`https://shop.example`, or `*`) write to `project` from a
    /// browser (builder style). Once a project has one, other origins are refused.
    pub fn allowed_origin(mut self, project: impl Into<String>, origin: impl Into<String>) -> Self {
        self.allowed_origins.push((project.into(), origin.into()));
        self
    }

    /// Add an allowed origin given as `PROJECT=ORIGIN` (the form of `--allowed-origin`).
    pub fn allowed_origin_spec(self, spec: &str) -> Result<Self, ServerError> {
        let Some((project, origin)) = spec.split_once('=') else {
            return Err(ServerError::Config(format!(
                "--allowed-origin {spec:?}: expected PROJECT=ORIGIN"
            )));
        };
        Ok(self.allowed_origin(project, origin))
    }

    /// Check the configuration as [`run`] and [`serve`] do before they start: at least one
    /// write key, usable credentials (the keys file's included) and project names, no key
    /// for two projects, positive limits and caps, allowed origins of known projects.
    pub fn validate(&self) -> Result<(), ServerError> {
        validate_config(self).map(|_| ())
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
    /// The group commit every ingestion write goes through.
    pub(crate) committer: commit::Committer,
    pub(crate) metrics: metrics::ProjectMetrics,
    /// Set once the store failed (I/O error, poisoned): `/health` reports it until restart.
    pub(crate) failed: std::sync::atomic::AtomicBool,
    /// When the oldest deletion whose bytes may still be on disk happened.
    pub(crate) unerased_since: parking_lot::Mutex<Option<std::time::Instant>>,
    /// `--produce-to`: accepted calls go to this topic instead of the store (produce.rs).
    #[cfg(feature = "kafka")]
    pub(crate) sink: Option<Arc<produce::Sink>>,
}

impl Project {
    fn new(name: String, db: Db) -> Self {
        Project {
            name,
            db,
            committer: commit::Committer::default(),
            metrics: metrics::ProjectMetrics::default(),
            failed: std::sync::atomic::AtomicBool::new(false),
            unerased_since: parking_lot::Mutex::new(None),
            #[cfg(feature = "kafka")]
            sink: None,
        }
    }
}

/// Shared by every request.
pub(crate) struct AppState {
    /// The credentials in force; replaced whole when the keys file is reloaded.
    pub(crate) creds: parking_lot::RwLock<auth::Creds>,
    /// Credentials that do not come from the keys file (flags, environment, API).
    base_keys: KeySet,
    keys_file: Option<PathBuf>,
    pub(crate) projects: Vec<Arc<Project>>,
    pub(crate) limits: Limits,
    pub(crate) protection: Protection,
    pub(crate) failed_auth: auth::FailedAuth,
    pub(crate) budget: budget::Budget,
    pub(crate) http: metrics::HttpMetrics,
    /// Which web origins may write to which project (CORS).
    pub(crate) origins: browser::Origins,
}

impl AppState {
    /// The project of a write key (no failure counted: for keys that are not credentials of
    /// the request, such as the one in the embed script's URL).
    pub(crate) fn project(&self, key: &str) -> Option<Arc<Project>> {
        self.creds.read().write_project(key)
    }

    /// Re-read the keys file and switch to its credentials; on any error the credentials in
    /// force stay and the error is returned (and logged by the caller).
    pub(crate) fn reload_keys(&self) -> Result<(), ServerError> {
        let mut set = self.base_keys.clone();
        if let Some(path) = &self.keys_file {
            set.extend(keys::read_keys_file(path)?);
        }
        keys::validate(&set)?;
        let creds = auth::Creds::build(&set, &self.projects)?;
        *self.creds.write() = creds;
        Ok(())
    }
}

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

/// Check the configuration; returns every credential (keys file included).
fn validate_config(config: &ServeConfig) -> Result<KeySet, ServerError> {
    let set = config.key_set()?;
    if set.write_keys.is_empty() {
        return Err(ServerError::Config(
            "at least one write key is required (keys file `write KEY PROJECT`, \
             PROFILEDB_WRITE_KEYS=KEY=PROJECT, or --write-key KEY=PROJECT)"
                .into(),
        ));
    }
    let l = &config.limits;
    if l.max_message_bytes == 0 || l.max_batch_bytes == 0 || l.max_batch_messages == 0 {
        return Err(ServerError::Config("size limits must be positive".into()));
    }
    browser::Origins::from_config(config, &set)?;
    let p = &config.protection;
    if p.max_connections == 0
        || p.max_inflight_bytes < l.max_batch_bytes
        || p.max_unauthenticated_bytes > p.max_inflight_bytes
        || p.auth_failures_per_minute == 0
    {
        return Err(ServerError::Config(
            "connection and byte caps must be positive, the in-flight byte cap at least the \
             batch limit and at least the unauthenticated cap"
                .into(),
        ));
    }
    Ok(set)
}

/// The projects of a key set: those of write keys and of project admin tokens, in order.
fn project_names(set: &KeySet) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let scoped = set.admin_tokens.iter().filter_map(|(_, s)| match s {
        AdminScope::Project(p) => Some(p),
        AdminScope::Server => None,
    });
    for name in set.write_keys.iter().map(|(_, p)| p).chain(scoped) {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Open every project's store (on the calling thread: it blocks).
fn open_projects(config: &ServeConfig) -> Result<AppState, ServerError> {
    let set = validate_config(config)?;
    let mut stores: Vec<(String, Db)> = Vec::new();
    for name in project_names(&set) {
        let dir = config.data.join(&name);
        let open = crate::storage::check_store_dir(&dir).and_then(|()| {
            let options = Options {
                create: true,
                ..config.options.clone()
            };
            Db::open(&dir, options)
        });
        let db = open.map_err(|source| ServerError::Open {
            project: name.clone(),
            source,
        })?;
        stores.push((name, db));
    }
    build_state(config, set, stores)
}

/// The shared state over opened stores; every project named by a credential must be among
/// them.
fn build_state(
    config: &ServeConfig,
    set: KeySet,
    stores: Vec<(String, Db)>,
) -> Result<AppState, ServerError> {
    #[cfg(feature = "kafka")]
    let sink = match &config.produce_to {
        Some(spec) => Some(Arc::new(produce::Sink::new(spec)?)),
        None => None,
    };
    let projects: Vec<Arc<Project>> = stores
        .into_iter()
        .map(|(name, db)| {
            #[allow(unused_mut)]
            let mut project = Project::new(name, db);
            #[cfg(feature = "kafka")]
            {
                project.sink = sink.clone();
            }
            Arc::new(project)
        })
        .collect();
    let creds = auth::Creds::build(&set, &projects)?;
    let origins = browser::Origins::from_config(config, &set)?;
    let p = config.protection;
    Ok(AppState {
        origins,
        creds: parking_lot::RwLock::new(creds),
        base_keys: KeySet {
            write_keys: config.write_keys.clone(),
            admin_tokens: config.admin_tokens.clone(),
        },
        keys_file: config.keys_file.clone(),
        projects,
        limits: config.limits,
        protection: p,
        failed_auth: auth::FailedAuth::new(p.auth_failures_per_minute, Duration::from_secs(60)),
        budget: budget::Budget::new(p.max_inflight_bytes, p.max_unauthenticated_bytes),
        http: metrics::HttpMetrics::default(),
    })
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting, let the requests in
/// flight finish (at most [`Protection::drain`]), sync and close every store (releasing its
/// lock) and return.
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
    let metrics_listen = config.metrics_listen;
    let state = open_async(config).await?;
    serve_state(state, listener, metrics_listen, shutdown).await
}

/// Like [`serve`], over stores the caller opened (feature `testing`: tests inject I/O faults):
/// `stores` pairs each project name of the configuration with its open [`Db`]. They are
/// closed at the end like stores [`serve`] opened.
#[cfg(feature = "testing")]
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
    let set = validate_config(&config)?;
    let state = build_state(&config, set, stores)?;
    serve_state(state, listener, config.metrics_listen, shutdown).await
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
    metrics_listen: Option<SocketAddr>,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let state = Arc::new(state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut background = tokio::task::JoinSet::new();
    background.spawn(admin::erase_overdue(Arc::clone(&state), stop_rx.clone()));
    #[cfg(unix)]
    background.spawn(reload_on_sighup(Arc::clone(&state), stop_rx.clone()));
    if let Some(addr) = metrics_listen {
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        if let Ok(bound) = metrics_listener.local_addr() {
            eprintln!("profiledb serve: metrics on {bound}");
        }
        let app = http::metrics_router(Arc::clone(&state));
        let mut rx = stop_rx.clone();
        background.spawn(conn::serve_connections(
            metrics_listener,
            app,
            state.protection,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ));
    }
    let app = http::router(Arc::clone(&state));
    conn::serve_connections(listener, app, state.protection, shutdown).await;
    let _ = stop_tx.send(true);
    while background.join_next().await.is_some() {}
    // Requests whose client went away may still be finishing on the blocking pool; they hold
    // the last references. Wait for them, then close every store.
    close_all(state).await
}

/// Re-read the keys file on every SIGHUP until `stop`.
#[cfg(unix)]
async fn reload_on_sighup(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        eprintln!("profiledb serve: cannot install the SIGHUP handler; keys will not reload");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => match state.reload_keys() {
                Ok(()) => eprintln!("profiledb serve: SIGHUP: keys reloaded"),
                Err(e) => eprintln!("profiledb serve: SIGHUP: keys NOT reloaded, the previous ones stay: {e}"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
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
    let AppState {
        creds, projects, ..
    } = state;
    drop(creds);
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
/// requests in flight (at most the drain deadline), sync and close every store. SIGHUP
/// re-reads the keys file. `Ok(())` means a clean stop (exit 0).
pub fn run(config: ServeConfig) -> Result<(), ServerError> {
    let set = validate_config(&config)?;
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
        let mut names = project_names(&set);
        names.sort();
        let data = config.data.clone();
        let metrics_listen = config.metrics_listen;
        let state = open_async(config).await?;
        eprintln!(
            "profiledb serve: listening on {bound} (data {}, projects: {})",
            data.display(),
            names.join(", ")
        );
        let result = serve_state(state, listener, metrics_listen, shutdown).await;
        if result.is_ok() {
            eprintln!("profiledb serve: stores synced and closed; bye");
        }
        result
    })
}
