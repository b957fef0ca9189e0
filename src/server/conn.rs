//! Connections: accept with a cap, serve HTTP/1.1 with hyper's header-read timeout, close
//! connections on which nothing moves, and drain with a deadline at shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Protection;

/// Answer to a connection over the cap, written before closing it.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
Content-Type: application/json\r\nContent-Length: 70\r\n\r\n\
{\"code\":\"server_busy\",\"message\":\"too many connections; retry shortly\"}";

/// Largest request head, in bytes (hyper's minimum buffer is 8 KB).
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// A stream that notes when a byte last moved in either direction.
struct Watched {
    inner: TcpStream,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl Watched {
    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once no byte moved for `idle` while no request of the connection was being
/// handled (a long erasure is not idleness; a client that stopped reading its answer is).
async fn idle_watch(last: Arc<AtomicU64>, busy: Arc<AtomicUsize>, epoch: Instant, idle: Duration) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        let now = epoch.elapsed().as_millis() as u64;
        if busy.load(Relaxed) > 0 {
            last.store(now, Relaxed);
        }
        let quiet = now.saturating_sub(last.load(Relaxed));
        if quiet >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then stop accepting, let the
/// connections finish their requests for at most `protection.drain`, and drop the rest.
pub(crate) async fn serve_connections<F>(
    listener: TcpListener,
    app: Router,
    protection: Protection,
    shutdown: F,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(protection.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(protection.header_timeout)
        // A request head (and each read of a body) fits in this: a head larger than it is
        // refused, so headers cost at most this per connection (hyper's default is ~400 KB).
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                eprintln!("profiledb serve: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tasks.spawn(async move {
                // Answer, then read what the client sends until it closes (at most a second),
                // so that closing does not reset the connection before it reads the answer.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stream.write_all(BUSY).await;
                    let _ = stream.shutdown().await;
                    let mut sink = [0u8; 1024];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let epoch = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let io = Watched {
            inner: stream,
            last: Arc::clone(&last),
            epoch,
        };
        let busy = Arc::new(AtomicUsize::new(0));
        let service = service(app.clone(), peer, Arc::clone(&busy));
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let conn = graceful.watch(conn);
        let idle = protection.idle_timeout;
        tasks.spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = conn => {}
                () = idle_watch(last, busy, epoch, idle) => {}
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(protection.drain, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!(
            "profiledb serve: drain deadline ({:?}) passed; closing the remaining connections",
            protection.drain
        );
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// The router as a hyper service, with the peer address as axum's `ConnectInfo`.
/// Counts a request as being handled while it lives.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

fn service(
    app: Router,
    peer: SocketAddr,
    busy: Arc<AtomicUsize>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        busy.fetch_add(1, Relaxed);
        let handling = Busy(Arc::clone(&busy));
        async move {
            let _handling = handling;
            std::future::poll_fn(|cx| {
                <Router as tower_service::Service<hyper::Request<Incoming>>>::poll_ready(
                    &mut app, cx,
                )
            })
            .await?;
            tower_service::Service::call(&mut app, req).await
        }
    })
}
