//! The accept loop: HTTP/1.1 connections served by hyper with the router, within the limits
//! gatehoused(8) describes. A client gets `web.header_timeout` to send a request's head,
//! `web.idle_timeout` to start the next request on a kept-alive connection (and to take a
//! response it is sent), and `web.request_timeout` to send the body and be answered; and
//! no more than `web.max_connections` connections are open at once, nor
//! `web.max_connections_per_peer` from one address other than a trusted proxy.

use crate::error::{ApiError, WebError};
use crate::state::App;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use gatehouse::log::Level;
use hyper::body::Incoming;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;

/// How often at most a refusal, or a failing `accept`, is reported.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// A listening socket from `web.listen`.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Stream {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

impl Listener {
    async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, addr)| Stream::Tcp(s, addr)),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Stream::Unix(s)),
        }
    }
}

/// The timeouts of `[web]`.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    idle: Duration,
    request: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connections open now, in all and per client address.
struct Slots {
    max_total: usize,
    max_per_peer: usize,
    /// Addresses counted in the total only: a reverse proxy carries everyone's connections.
    unlimited: Vec<IpAddr>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Total,
    Peer,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Total => "max-connections",
            Refusal::Peer => "max-connections-per-peer",
        }
    }
}

/// An admitted connection's place; given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    peer: Option<IpAddr>,
}

impl Slots {
    fn new(max_total: usize, max_per_peer: usize, unlimited: Vec<IpAddr>) -> Arc<Slots> {
        Arc::new(Slots { max_total, max_per_peer, unlimited, open: Mutex::new(Open::default()) })
    }

    /// A place for a connection from `peer` (None: a unix socket), or why there is none.
    fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Slot, Refusal> {
        let mut open = lock(&self.open);
        if open.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let counted = peer.filter(|ip| !self.unlimited.contains(ip));
        if let Some(ip) = counted {
            let n = open.per_peer.entry(ip).or_insert(0);
            if *n >= self.max_per_peer {
                return Err(Refusal::Peer);
            }
            *n += 1;
        }
        open.total += 1;
        Ok(Slot { slots: self.clone(), peer: counted })
    }

    /// Connections open now: in all, and from `peer`.
    #[cfg(test)]
    fn open(&self, peer: IpAddr) -> (usize, usize) {
        let open = lock(&self.open);
        (open.total, open.per_peer.get(&peer).copied().unwrap_or(0))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.slots.open);
        open.total = open.total.saturating_sub(1);
        if let Some(ip) = self.peer {
            if let Some(n) = open.per_peer.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.per_peer.remove(&ip);
                }
            }
        }
    }
}

/// Lets a repeated event through to the log at most once per `every`, with the number of
/// times it happened since the last line, so that no client can flood the log.
struct Throttle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle { every, state: Mutex::new((None, 0)) }
    }

    /// Counts one event at `now`; the count to report when a line is due.
    fn note(&self, now: Instant) -> Option<u64> {
        let mut state = lock(&self.state);
        state.1 += 1;
        if state.0.is_some_and(|last| now.saturating_duration_since(last) < self.every) {
            return None;
        }
        let count = state.1;
        *state = (Some(now), 0);
        Some(count)
    }
}

/// A connection's socket. It counts the bytes read, for [`HeadClock`], and fails a write
/// that makes no progress for the idle timeout: a client that does not read its answer.
struct Watched<S> {
    inner: S,
    reads: Arc<AtomicU64>,
    idle: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            self.reads.fetch_add(read as u64, Ordering::Relaxed);
        }
        result
    }
}

impl<S> Watched<S> {
    /// A write that could not be made waits for the client at most the idle timeout.
    fn progress<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let idle = self.idle;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        if stalled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client does not read")));
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // A socket's flush and shutdown do not wait for the client.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// hyper's clock for its header read timeout. hyper starts that timeout whenever it waits
/// for a request head: when the connection is accepted, and again as soon as a response has
/// been sent on a kept-alive connection (hyper 1.x, `proto/h1/conn.rs`, `poll_read_head`).
/// Left alone, an idle kept-alive connection would get `header` too. This clock keeps
/// hyper's deadline for the first request; for a later one it waits `idle` for the first
/// byte, and from that byte on `header` for the rest of the head.
struct HeadClock {
    reads: Arc<AtomicU64>,
    waited: AtomicBool,
    header: Duration,
    idle: Duration,
}

impl hyper::rt::Timer for HeadClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            sleep: Box::pin(tokio::time::sleep(duration)),
            before_first_byte: None,
            header: self.header,
        })
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        if !self.waited.swap(true, Ordering::Relaxed) {
            let deadline = tokio::time::Instant::from_std(deadline);
            return Box::pin(HeadSleep {
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                before_first_byte: None,
                header: self.header,
            });
        }
        let reads = self.reads.load(Ordering::Relaxed);
        Box::pin(HeadSleep {
            sleep: Box::pin(tokio::time::sleep(self.idle)),
            before_first_byte: Some((self.reads.clone(), reads)),
            header: self.header,
        })
    }
}

struct HeadSleep {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// While no byte of the awaited request has come: the read count when the wait began.
    before_first_byte: Option<(Arc<AtomicU64>, u64)>,
    header: Duration,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Some((reads, at_start)) = &this.before_first_byte {
            if reads.load(Ordering::Relaxed) != *at_start {
                this.before_first_byte = None;
                this.sleep.as_mut().reset(tokio::time::Instant::now() + this.header);
            }
        }
        this.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// The answer to a request that outlived `web.request_timeout`; the connection closes.
fn timed_out(api: bool) -> Response {
    let mut response =
        if api { ApiError(WebError::TimedOut).into_response() } else { WebError::TimedOut.into_response() };
    crate::routes::set_security_headers(response.headers_mut());
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves one connection until it closes, a timeout ends it, or the service stops.
async fn serve_connection<S>(
    stream: S,
    peer: Option<SocketAddr>,
    router: axum::Router,
    timeouts: Timeouts,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let reads = Arc::new(AtomicU64::new(0));
    let io = Watched { inner: stream, reads: reads.clone(), idle: timeouts.idle, stalled: None };
    let router = hyper_util::service::TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(addr) = peer {
            req.extensions_mut().insert(ConnectInfo(addr));
        }
        let api = req.uri().path().starts_with("/api/");
        let answer = hyper::service::Service::call(&router, req);
        async move {
            match tokio::time::timeout(timeouts.request, answer).await {
                Ok(result) => result,
                Err(_) => Ok(timed_out(api)),
            }
        }
    });
    let clock = HeadClock { reads, waited: AtomicBool::new(false), header: timeouts.header, idle: timeouts.idle };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(clock).header_read_timeout(timeouts.header);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    // Errors (a timeout, a reset, a malformed request hyper answered) end the connection
    // and nothing else; they are not logged, so that clients cannot flood the log.
    let stop = tokio::select! {
        _ = conn.as_mut() => false,
        _ = stopping.wait_for(|&stop| stop) => true,
    };
    if stop {
        // No new request on this connection; the one in progress is finished.
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// Accepts and serves connections until `shutdown` completes, then waits for the requests
/// in progress.
pub async fn run(app: Arc<App>, listener: Listener, shutdown: impl Future<Output = ()>) {
    let web = &app.config.web;
    let timeouts = Timeouts { header: web.header_timeout, idle: web.idle_timeout, request: web.request_timeout };
    let slots = Slots::new(web.max_connections, web.max_connections_per_peer, web.trusted_proxies.clone());
    let router = crate::routes::router(app.clone());
    let refused = [Throttle::new(REPORT_EVERY), Throttle::new(REPORT_EVERY)];
    let accept_failed = Throttle::new(REPORT_EVERY);
    let (stop, stopping) = watch::channel(false);
    // Each connection's task holds a receiver; all are dropped once every task has ended.
    let (running, running_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // A connection reset before it was accepted concerns that client alone;
                // anything else (out of file descriptors) is worth a pause and a line.
                if !matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
                    if let Some(n) = accept_failed.note(Instant::now()) {
                        eprintln!("gatehoused: cannot accept connections: {e} ({n} times since the last such line)");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let peer = match &stream {
            Stream::Tcp(_, addr) => Some(addr.ip().to_canonical()),
            Stream::Unix(_) => None,
        };
        let slot = match slots.admit(peer) {
            Ok(slot) => slot,
            Err(refusal) => {
                // Closed at once, before a byte is read.
                drop(stream);
                let throttle = &refused[refusal as usize];
                if let Some(n) = throttle.note(Instant::now()) {
                    let source = peer.map(|ip| ip.to_string()).unwrap_or_else(|| "unix".to_string());
                    app.log(
                        Level::Warning,
                        &[
                            ("action", "connect"),
                            ("source", &source),
                            ("verdict", "refuse"),
                            ("reason", refusal.reason()),
                            ("refused", &n.to_string()),
                        ],
                    );
                }
                continue;
            }
        };
        let (router, stopping, running) = (router.clone(), stopping.clone(), running_rx.clone());
        tokio::spawn(async move {
            match stream {
                Stream::Tcp(s, addr) => serve_connection(s, Some(addr), router, timeouts, stopping).await,
                Stream::Unix(s) => serve_connection(s, None, router, timeouts, stopping).await,
            }
            drop(slot);
            drop(running);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(running_rx);
    running.closed().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn slots_cap_each_peer_and_the_total() {
        let slots = Slots::new(4, 2, vec!["10.0.0.9".parse().unwrap()]);
        let a1 = slots.admit(ip("10.0.0.1")).unwrap();
        let _a2 = slots.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.admit(ip("10.0.0.1")).err(), Some(Refusal::Peer));
        let _b = slots.admit(ip("10.0.0.2")).unwrap();
        // A trusted proxy is not capped per peer, only in the total.
        let _p = slots.admit(ip("10.0.0.9")).unwrap();
        assert_eq!(slots.admit(ip("10.0.0.9")).err(), Some(Refusal::Total));
        assert_eq!(slots.admit(None).err(), Some(Refusal::Total));
        assert_eq!(slots.open("10.0.0.1".parse().unwrap()), (4, 2));
        drop(a1);
        assert_eq!(slots.open("10.0.0.1".parse().unwrap()), (3, 1));
        let _a3 = slots.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.admit(ip("10.0.0.3")).err(), Some(Refusal::Total));
    }

    #[test]
    fn slots_are_given_back() {
        let slots = Slots::new(3, 1, Vec::new());
        for _ in 0..1000 {
            let held: Vec<Slot> = [ip("10.0.0.1"), None, None].into_iter().map(|p| slots.admit(p).unwrap()).collect();
            assert_eq!(slots.admit(ip("10.0.0.2")).err(), Some(Refusal::Total));
            drop(held);
        }
        assert_eq!(slots.open("10.0.0.1".parse().unwrap()), (0, 0));
        assert!(lock(&slots.open).per_peer.is_empty(), "no entry is left behind");
    }

    #[test]
    fn throttle_reports_once_per_period_with_the_count() {
        let t = Throttle::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(t.note(start), Some(1));
        for s in 1..60 {
            assert_eq!(t.note(start + Duration::from_secs(s)), None);
        }
        assert_eq!(t.note(start + Duration::from_secs(60)), Some(60));
        assert_eq!(t.note(start + Duration::from_secs(61)), None);
        assert_eq!(t.note(start + Duration::from_secs(500)), Some(2));
    }
}
