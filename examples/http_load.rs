//! Load generator for `profiledb serve`: W1 identify calls (docs/benchmarks.md) sent to
//! `POST /v1/batch` in batches over keep-alive HTTP/1.1 connections; each answer is a durable
//! acknowledgement. Prints identify/s and request latency.
//!
//! ```text
//! # against a server this example starts in-process on a fresh temporary directory:
//! cargo run --release --example http_load -- --calls 300000 --batch 100 --connections 16
//! # against a running server (e.g. `profiledb --data D serve --write-key load=load`):
//! cargo run --release --example http_load -- --addr 127.0.0.1:8080 --key load
//! ```
//!
//! Options: `--addr ADDR` (default: start a server in-process), `--key KEY` (default `load`),
//! `--calls N` (300000), `--batch N` (100), `--connections N` (16), `--seed N` (1),
//! `--gzip` (compress bodies), `--data DIR` (store directory of the in-process server; default
//! a temporary directory).

/// The allocator of the `profiledb` binary (src/main.rs), so that the in-process server costs
/// what `profiledb serve` costs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use profiledb::server::{ServeConfig, serve};
use profiledb::workload::{W1, W1Config};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    addr: Option<SocketAddr>,
    key: String,
    calls: u64,
    batch: usize,
    connections: usize,
    seed: u64,
    gzip: bool,
    data: Option<std::path::PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: None,
        key: "load".into(),
        calls: 300_000,
        batch: 100,
        connections: 16,
        seed: 1,
        gzip: false,
        data: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--addr" => a.addr = Some(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--key" => a.key = value()?,
            "--calls" => a.calls = num(value()?)?,
            "--batch" => a.batch = num(value()?)?.max(1) as usize,
            "--connections" => a.connections = num(value()?)?.max(1) as usize,
            "--seed" => a.seed = num(value()?)?,
            "--gzip" => a.gzip = true,
            "--data" => a.data = Some(value()?.into()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

/// Pre-built request bodies, so the generator spends its CPU on sending, not on JSON.
fn bodies(args: &Args) -> Vec<Vec<u8>> {
    let mut w1 = W1::new(W1Config::new(args.seed, args.calls));
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        let mut body = b"{\"batch\":[".to_vec();
        let mut n = 0;
        while n < args.batch {
            line.clear();
            if !w1.write_json_line(&mut line) {
                break;
            }
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(line.trim_ascii_end());
            n += 1;
        }
        if n == 0 {
            break;
        }
        body.extend_from_slice(b"]}");
        if args.gzip {
            use std::io::Write as _;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = e.write_all(&body);
            body = e.finish().unwrap_or_default();
        }
        out.push(body);
    }
    out
}

fn basic(key: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let data = format!("{key}:").into_bytes();
    let mut out = String::from("Basic ");
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                A[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    accepted: u64,
    duplicates: u64,
    refused: u64,
    errors: u64,
}

async fn connection(
    addr: SocketAddr,
    auth: Arc<String>,
    gzip: bool,
    bodies: Arc<Vec<Vec<u8>>>,
    next: Arc<AtomicUsize>,
) -> Result<Tally, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut tally = Tally::default();
    let mut line = String::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(body) = bodies.get(i) else {
            return Ok(tally);
        };
        let head = format!(
            "POST /v1/batch HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\n\
             Content-Type: application/json\r\n{}Content-Length: {}\r\n\r\n",
            if gzip {
                "Content-Encoding: gzip\r\n"
            } else {
                ""
            },
            body.len()
        );
        let started = Instant::now();
        write
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        write.write_all(body).await.map_err(|e| e.to_string())?;
        // Status line, headers, Content-Length body.
        line.clear();
        read.read_line(&mut line).await.map_err(|e| e.to_string())?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        loop {
            line.clear();
            read.read_line(&mut line).await.map_err(|e| e.to_string())?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':')
                && n.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().map_err(|_| "bad content-length")?;
            }
        }
        let mut answer = vec![0; length];
        read.read_exact(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        tally.latencies.push(started.elapsed());
        if status != 200 {
            tally.errors += 1;
            eprintln!("status {status}: {}", String::from_utf8_lossy(&answer));
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        tally.accepted += v["accepted"].as_u64().unwrap_or(0);
        tally.duplicates += v["duplicates"].as_u64().unwrap_or(0);
        tally.refused += v["refused"].as_u64().unwrap_or(0);
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("http_load: {e}");
            std::process::exit(2);
        }
    };
    eprintln!(
        "http_load: building {} W1 calls in batches of {}...",
        args.calls, args.batch
    );
    let bodies = Arc::new(bodies(&args));
    let body_bytes: usize = bodies.iter().map(Vec::len).sum();

    // An in-process server on its own runtime unless --addr was given.
    let mut server = None;
    let _tmp;
    let addr = match args.addr {
        Some(a) => a,
        None => {
            let dir = match &args.data {
                Some(d) => d.clone(),
                None => {
                    let t = tempfile::tempdir().expect("tempdir");
                    let p = t.path().to_path_buf();
                    _tmp = t;
                    p
                }
            };
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            let addr = listener.local_addr().expect("addr");
            let config = ServeConfig::new(&dir, addr).write_key(args.key.clone(), "load");
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let handle = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    serve(config, listener, async move {
                        let _ = rx.await;
                    })
                    .await
                })
            });
            server = Some((tx, handle));
            // Wait until it answers.
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "server did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
            eprintln!(
                "http_load: started an in-process server on {addr} ({})",
                dir.display()
            );
            addr
        }
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let auth = Arc::new(basic(&args.key));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tallies = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.connections {
            tasks.push(tokio::spawn(connection(
                addr,
                Arc::clone(&auth),
                args.gzip,
                Arc::clone(&bodies),
                Arc::clone(&next),
            )));
        }
        let mut out = Vec::new();
        for t in tasks {
            match t.await {
                Ok(Ok(tally)) => out.push(tally),
                Ok(Err(e)) => eprintln!("http_load: connection failed: {e}"),
                Err(e) => eprintln!("http_load: task failed: {e}"),
            }
        }
        out
    });
    let elapsed = started.elapsed();

    let mut all = Tally::default();
    for t in tallies {
        all.latencies.extend(t.latencies);
        all.accepted += t.accepted;
        all.duplicates += t.duplicates;
        all.refused += t.refused;
        all.errors += t.errors;
    }
    all.latencies.sort();
    let pct = |p: f64| {
        all.latencies
            .get(((all.latencies.len() as f64 * p) as usize).min(all.latencies.len().max(1) - 1))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let calls = all.accepted + all.duplicates + all.refused;
    let rate = calls as f64 / elapsed.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "calls": calls,
            "accepted": all.accepted,
            "duplicates": all.duplicates,
            "refused": all.refused,
            "http_errors": all.errors,
            "requests": all.latencies.len(),
            "batch": args.batch,
            "connections": args.connections,
            "gzip": args.gzip,
            "body_mb": body_bytes as f64 / 1e6,
            "seconds": elapsed.as_secs_f64(),
            "identify_per_s": rate.round(),
            "latency_ms_p50": pct(0.50),
            "latency_ms_p99": pct(0.99),
            "latency_ms_max": pct(1.0),
        })
    );
    eprintln!(
        "http_load: {calls} identify calls in {:.2} s = {:.0} identify/s, durable acks \
         (p50 {:.2} ms, p99 {:.2} ms per batch of {})",
        elapsed.as_secs_f64(),
        rate,
        pct(0.5),
        pct(0.99),
        args.batch
    );
    if let Some((tx, handle)) = server {
        let _ = tx.send(());
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("http_load: server: {e}"),
            Err(_) => eprintln!("http_load: server thread panicked"),
        }
    }
}
