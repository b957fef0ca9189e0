//! Helpers of the server tests: an in-process server on loopback, a minimal blocking HTTP/1.1
//! client (so the tests speak real HTTP over TCP without an HTTP-client dependency), and a
//! handle on the built `profiledb serve` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use profiledb::server::{ServeConfig, ServerError, serve, serve_stores};

/// The server-wide admin token every test server (in-process or process) is given.
pub const ADMIN_ALL: &str = "test-admin-token-server-wide-0123456789";

/// The admin token of one project in the test servers.
pub fn admin_token(project: &str) -> String {
    format!("test-admin-token-of-{project}-0123456789")
}

/// `Bearer TOKEN`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A server running in-process on its own tokio runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    /// `(write key, project)` it was started with.
    pub keys: Vec<(String, String)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    /// Start with `(key, project)` pairs on a fresh data directory.
    pub fn start(keys: &[(&str, &str)]) -> TestServer {
        Self::start_with(keys, |c| c)
    }

    /// Start with a configuration hook (limits, options).
    pub fn start_with(
        keys: &[(&str, &str)],
        tweak: impl FnOnce(ServeConfig) -> ServeConfig,
    ) -> TestServer {
        Self::launch(tempfile::tempdir().expect("tempdir"), keys, tweak, None)
    }

    /// Start over stores the test opened itself (e.g. with a fault-injecting I/O layer).
    pub fn start_stores(
        dir: tempfile::TempDir,
        keys: &[(&str, &str)],
        stores: Vec<(String, profiledb::Db)>,
    ) -> TestServer {
        Self::launch(dir, keys, |c| c, Some(stores))
    }

    fn launch(
        dir: tempfile::TempDir,
        keys: &[(&str, &str)],
        tweak: impl FnOnce(ServeConfig) -> ServeConfig,
        stores: Option<Vec<(String, profiledb::Db)>>,
    ) -> TestServer {
        let mut config = ServeConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap());
        let mut projects: Vec<&str> = Vec::new();
        for (k, p) in keys {
            config = config.write_key(*k, *p);
            if !projects.contains(p) {
                projects.push(p);
            }
        }
        for p in projects {
            config = config.admin_token(admin_token(p), Some(p));
        }
        config = config.admin_token(ADMIN_ALL, None);
        let config = tweak(config);
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let shutdown = async move {
                    let _ = rx.await;
                };
                match stores {
                    None => serve(config, listener, shutdown).await,
                    Some(stores) => serve_stores(config, stores, listener, shutdown).await,
                }
            })
        });
        let server = TestServer {
            addr,
            dir,
            keys: keys
                .iter()
                .map(|(k, p)| (k.to_string(), p.to_string()))
                .collect(),
            stop: Some(tx),
            thread: Some(thread),
        };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = try_request(self.addr, "GET", "/health", &[], b"")
                && r.status == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "server did not become healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The data directory of a project.
    pub fn project_dir(&self, project: &str) -> PathBuf {
        self.dir.path().join(project)
    }

    /// Send a request.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        request(self.addr, method, path, headers, body)
    }

    /// POST JSON with the key as basic auth.
    pub fn post(&self, path: &str, key: &str, body: &serde_json::Value) -> Resp {
        let auth = basic(key);
        self.request(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    /// GET with the key as basic auth.
    pub fn get(&self, path: &str, key: &str) -> Resp {
        let auth = basic(key);
        self.request("GET", path, &[("Authorization", &auth)], b"")
    }

    /// The admin token of the project a write key writes to (a key the server does not know
    /// gets a token no project has).
    pub fn admin_of(&self, key: &str) -> String {
        match self.keys.iter().find(|(k, _)| k == key) {
            Some((_, p)) => admin_token(p),
            None => format!("no-such-admin-token-for-{key}"),
        }
    }

    /// An admin request (`Authorization: Bearer` the admin token of `key`'s project).
    pub fn admin(&self, method: &str, path: &str, key: &str) -> Resp {
        let auth = bearer(&self.admin_of(key));
        self.request(method, path, &[("Authorization", &auth)], b"")
    }

    /// `GET` as the admin of `key`'s project.
    pub fn read(&self, path: &str, key: &str) -> Resp {
        self.admin("GET", path, key)
    }

    /// Stop gracefully and return what `serve` returned.
    pub fn stop(mut self) -> (Result<(), ServerError>, tempfile::TempDir) {
        let result = self.shutdown();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (result, dir)
    }

    fn shutdown(&mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): status {} body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `Basic base64(key:)`.
pub fn basic(key: &str) -> String {
    format!("Basic {}", base64(format!("{key}:").as_bytes()))
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One request on a fresh connection (`Connection: close`); panics on a transport error.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One request on a fresh connection.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // A server may answer (e.g. 400 for an oversized body) before reading all of it: a failed
    // write is reported only if no answer can be read either.
    let written = stream.write_all(body);
    match read_response(&mut BufReader::new(stream)) {
        Ok(r) => Ok(r),
        Err(e) => Err(written.err().unwrap_or(e)),
    }
}

/// Read one response (Content-Length, chunked, or until close).
pub fn read_response<R: BufRead>(r: &mut R) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| bad("bad content-length"))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line)?;
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// The built `profiledb` binary running `serve`, with the address it printed.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    stderr_log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Start `profiledb --data DATA serve --listen 127.0.0.1:0 --write-key ...` and wait for
    /// its "listening on" line.
    pub fn start(data: &Path, keys: &[(&str, &str)]) -> ServerProcess {
        Self::start_with_args(data, keys, &[])
    }

    /// Like [`ServerProcess::start`], with more `serve` arguments.
    pub fn start_with_args(data: &Path, keys: &[(&str, &str)], extra: &[&str]) -> ServerProcess {
        let mut args: Vec<String> = Vec::new();
        for (k, p) in keys {
            args.push("--write-key".into());
            args.push(format!("{k}={p}"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_args(data, &args, &[])
    }

    /// Start `profiledb --data DATA serve --listen 127.0.0.1:0 ARGS...` with extra
    /// environment variables (`PROFILEDB_ADMIN_TOKENS` holds [`ADMIN_ALL`] unless given).
    pub fn start_args(data: &Path, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_profiledb"));
        cmd.arg("--data")
            .arg(data)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args)
            .env("PROFILEDB_ADMIN_TOKENS", format!("{ADMIN_ALL}=*"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn profiledb serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log2 = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Ok(mut l) = log2.lock() {
                            l.push_str(&line);
                        }
                        if let Some(rest) = line.split("listening on ").nth(1)
                            && let Some(addr) = rest.split_whitespace().next()
                            && let Ok(addr) = addr.parse::<SocketAddr>()
                        {
                            let _ = tx.send(addr);
                        }
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "profiledb serve did not start ({status:?}); stderr:\n{}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        ServerProcess {
            child,
            addr,
            stderr_log: log,
        }
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// CPU time the process has used so far, in clock ticks (user + system, from
    /// `/proc/PID/stat`): work done, whatever the wall time.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/PID/stat");
        // Fields after the command name (which is in parentheses).
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    /// Resident memory of the process, in bytes (`VmRSS` of `/proc/PID/status`).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    /// Send a signal with `kill -SIG pid`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Wait for exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "profiledb serve did not exit in {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
