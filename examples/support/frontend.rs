//! The cart service's HTTP front end: its own accept loop, timeouts for slow clients, and admission
//! control that sheds what it cannot serve within the request's TTL.
//!
//! - **Accept loop**: at most `max_connections` open connections (the loop stops accepting while
//!   full; the kernel's backlog holds the rest). HTTP/1.1 only, as `axum::serve` was.
//! - **Slow clients**: a request's head must arrive within `header_timeout` (an idle kept-alive
//!   connection gets the same time to start its next request), or the connection is closed; its
//!   body within `body_timeout`, or it is answered `408` and closed. The body is read *before*
//!   admission, so a slow sender holds a connection, never a permit.
//! - **Admission**: at most `max_inflight` requests in the handlers; at most `max_queue` waiting
//!   for a permit, each only as long as its TTL (`X-Request-Ttl-Ms`, 2000 ms by default) allows.
//!   A request that cannot be served in time (queue full, estimated wait past its TTL, or TTL run
//!   out while waiting) is answered at once with `503`, `Retry-After` (whole seconds, at least 1)
//!   and `X-Retry-After-Ms`, from the estimate: position in the queue / permits x recent service
//!   time. An admitted request's `X-Request-Ttl-Ms` is rewritten to what is left of its TTL, so
//!   the actor behind it gets the shrunk deadline.
//! - **Back-off held per connection**: a connection answered `503` is not read again until the
//!   back-off it was given has passed; what its client sends meanwhile waits in the socket,
//!   unread (TCP's own backpressure), as it would behind a client that honoured `Retry-After`.
//!   The back-off is at least the estimate and at least open connections / `shed_rate`, so the
//!   front end answers at most about `shed_rate` 503s a second however many clients ignore
//!   them: a 503 costs about a third of a served add in CPU (reading, parsing, loopback TCP),
//!   and answering every excess request at once left a third of the peak at 10x overload.
//!
//! Why not tower's `ConcurrencyLimit` + `LoadShed`: `LoadShed` sheds whenever no permit is free
//! at once (no waiting at all, so a burst of `max_inflight + 1` already fails), while
//! `ConcurrencyLimit` alone waits without bound (the queue of the issue). Here a request waits,
//! but only as long as its own TTL allows and only behind a bounded number of others.

use std::convert::Infallible;
use std::future::poll_fn;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, SemaphorePermit};

/// The largest request body the front end buffers (the routes have their own, smaller limits):
/// with `max_connections`, it bounds the memory held by bodies being read.
const MAX_BODY: usize = 64 * 1024;
/// The TTL of a request without `X-Request-Ttl-Ms` (as the handlers assume).
const DEFAULT_TTL: Duration = Duration::from_millis(2000);
/// File descriptors kept for the store and the process itself, besides connections.
const RESERVED_FDS: u64 = 64;

/// The front end's limits; each has a command-line flag (see [`Limits::set`]).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Requests in the handlers at once (`--max-inflight`).
    pub max_inflight: usize,
    /// Requests waiting for a permit (`--max-queue`); more are shed at once.
    pub max_queue: usize,
    /// Open connections (`--max-connections`), also capped by the file-descriptor limit.
    pub max_connections: usize,
    /// Time for a request's head to arrive (`--header-timeout-ms`).
    pub header_timeout: Duration,
    /// Time for a request's body to arrive (`--body-timeout-ms`).
    pub body_timeout: Duration,
    /// 503s a second the front end budgets for (`--shed-rate`): the back-off a shed connection
    /// is held to is at least open connections / this.
    pub shed_rate: u64,
    /// Test knob (`--hold-ms`): every admitted request holds its permit this long before it is
    /// handled, so tests can make the service slow on purpose. Zero in production.
    pub hold: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Limits {
            max_inflight: 32 * cores,
            max_queue: 32 * cores,
            max_connections: 4096,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            shed_rate: 1000 * cores as u64,
            hold: Duration::ZERO,
        }
    }
}

/// The front end's flags, shared by `cart` and `litmus --overload` (which passes them on).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Requests in the handlers at once [default: 32 per core]
    #[arg(long, value_name = "N", value_parser = super::cli::positive)]
    pub max_inflight: Option<u64>,
    /// Requests waiting for a permit; more are shed with 503 [default: 32 per core]
    #[arg(long, value_name = "N")]
    pub max_queue: Option<u64>,
    /// Open connections, also capped by the open-files limit [default: 4096]
    #[arg(long, value_name = "N", value_parser = super::cli::positive)]
    pub max_connections: Option<u64>,
    /// Time for a request's head to arrive, in milliseconds [default: 5000]
    #[arg(long, value_name = "MS", value_parser = super::cli::positive)]
    pub header_timeout_ms: Option<u64>,
    /// Time for a request's body to arrive, in milliseconds [default: 10000]
    #[arg(long, value_name = "MS", value_parser = super::cli::positive)]
    pub body_timeout_ms: Option<u64>,
    /// 503s a second budgeted for: a shed connection is not read again for open connections /
    /// this (or the estimated wait, if longer) [default: 1000 per core]
    #[arg(long, value_name = "N", value_parser = super::cli::positive)]
    pub shed_rate: Option<u64>,
    /// Test knob: every admitted request holds its permit this long before it is handled
    #[arg(long, value_name = "MS", hide = true)]
    pub hold_ms: Option<u64>,
}

impl LimitArgs {
    /// The limits: the defaults, with what was given.
    pub fn limits(&self) -> Limits {
        let d = Limits::default();
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        Limits {
            max_inflight: self.max_inflight.map_or(d.max_inflight, |n| n as usize),
            max_queue: self.max_queue.map_or(d.max_queue, |n| n as usize),
            max_connections: self.max_connections.map_or(d.max_connections, |n| n as usize),
            header_timeout: ms(self.header_timeout_ms, d.header_timeout),
            body_timeout: ms(self.body_timeout_ms, d.body_timeout),
            shed_rate: self.shed_rate.unwrap_or(d.shed_rate),
            hold: ms(self.hold_ms, d.hold),
        }
    }

    /// The flags that were given, as a command line (to pass them on to a service).
    #[allow(dead_code)] // litmus --overload passes them on; cart does not
    pub fn to_args(&self) -> Vec<String> {
        let given = [
            ("--max-inflight", self.max_inflight),
            ("--max-queue", self.max_queue),
            ("--max-connections", self.max_connections),
            ("--header-timeout-ms", self.header_timeout_ms),
            ("--body-timeout-ms", self.body_timeout_ms),
            ("--shed-rate", self.shed_rate),
            ("--hold-ms", self.hold_ms),
        ];
        given
            .into_iter()
            .filter_map(|(flag, v)| Some([flag.to_owned(), v?.to_string()]))
            .flatten()
            .collect()
    }
}

/// Raises the soft limit on open files to the hard limit; returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        eprintln!(
            "open files: soft limit {before} -> {} (hard limit {})",
            lim.rlim_cur, lim.rlim_max
        );
        #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
        let soft = lim.rlim_cur as u64;
        soft
    }
}

/// The HTTP front end, bound to its address and ready to serve.
pub struct Frontend {
    listener: TcpListener,
    limits: Limits,
}

impl Frontend {
    /// Raises the file-descriptor limit, caps `max_connections` by it, and binds `addr`.
    pub async fn bind(addr: &str, mut limits: Limits) -> Result<Frontend, String> {
        let fds = raise_fd_limit();
        let room = fds.saturating_sub(RESERVED_FDS).max(1) as usize;
        if limits.max_connections > room {
            eprintln!(
                "max connections {} lowered to {room} by the open-files limit",
                limits.max_connections
            );
            limits.max_connections = room;
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        Ok(Frontend { listener, limits })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// Serves `router` until accepting fails for good; returns that error.
    pub async fn run(self, router: Router) -> std::io::Error {
        let limits = self.limits;
        let connections = Arc::new(Semaphore::new(limits.max_connections));
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            // Bounds what one connection buffers while its head arrives.
            .max_buf_size(32 * 1024);
        let http = Arc::new(http);
        let gate = Arc::new(Admission::new(router, limits, connections.clone()));
        loop {
            // While full, stop accepting: waiting connections stay in the kernel's backlog.
            let slot = connections.clone().acquire_owned().await.expect("never closed");
            let (stream, peer) = match self.listener.accept().await {
                Ok(s) => s,
                Err(e) if transient(&e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(e) => return e,
            };
            let _ = stream.set_nodelay(true);
            let (http, gate) = (http.clone(), gate.clone());
            tokio::spawn(async move {
                tracing::debug!(%peer, "connection opened");
                let hold = Arc::new(Hold::default());
                let io = Held::new(TokioIo::new(stream), hold.clone());
                let service = hyper::service::service_fn(move |req| gate.clone().handle(req, hold.clone()));
                match http.serve_connection(io, service).await {
                    Ok(()) => tracing::debug!(%peer, "connection closed"),
                    Err(e) => tracing::debug!(%peer, "connection closed: {e}"),
                }
                drop(slot);
            });
        }
    }
}

/// Accept errors that pass: the peer gave up, or the process is out of descriptors for a moment.
fn transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        )
}

/// Admission control in front of the router.
struct Admission {
    router: Router,
    limits: Limits,
    permits: Semaphore,
    /// Requests waiting for a permit.
    waiting: AtomicUsize,
    /// Recent time in the handlers (exponentially weighted), microseconds.
    service_us: AtomicU64,
    /// The accept loop's connection slots (open connections = limit - available).
    connections: Arc<Semaphore>,
}

/// Why a request is not handed to the router.
enum Refusal {
    /// Cannot be served within its TTL: `503` with this estimate of when to retry.
    Shed(Duration),
    /// The response to send instead.
    Answer(Response<Body>),
}

/// Decrements the count of waiting requests when a waiter leaves, however it leaves.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Admission {
    fn new(router: Router, limits: Limits, connections: Arc<Semaphore>) -> Self {
        Admission {
            router,
            permits: Semaphore::new(limits.max_inflight),
            limits,
            waiting: AtomicUsize::new(0),
            service_us: AtomicU64::new(0),
            connections,
        }
    }

    /// The back-off a shed connection is held to: the estimate, but at least open connections /
    /// the shed budget, and at most half the header timeout (a held connection must not be
    /// closed as a slow client) or 5 s.
    fn back_off(&self, estimate: Duration) -> Duration {
        let open = self
            .limits
            .max_connections
            .saturating_sub(self.connections.available_permits());
        let budget = Duration::from_secs_f64(open as f64 / self.limits.shed_rate.max(1) as f64);
        let most = (self.limits.header_timeout / 2).min(Duration::from_secs(5));
        estimate.max(budget).min(most)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, hold: Arc<Hold>) -> Result<Response<Body>, Infallible> {
        let arrived = Instant::now();
        let ttl = request_ttl(req.headers());
        let deadline = arrived + ttl.unwrap_or(DEFAULT_TTL);
        let (mut parts, body) = req.into_parts();
        let answer = async {
            // The body first: a slow sender must not hold a permit.
            let body = self.read_body(&parts.headers, body).await?;
            let _permit = self.admit(deadline).await?;
            let started = Instant::now();
            let left = deadline.saturating_duration_since(started);
            if left.is_zero() {
                return Err(Refusal::Shed(self.estimate(1)));
            }
            if ttl.is_some() || !parts.headers.contains_key("x-request-ttl-ms") {
                // What is left of the TTL travels on (rounded up: 0.4 ms left is 1 ms).
                let ms = left.as_micros().div_ceil(1000) as u64;
                parts.headers.insert("x-request-ttl-ms", HeaderValue::from(ms));
            }
            if !self.limits.hold.is_zero() {
                tokio::time::sleep(self.limits.hold).await;
            }
            let mut router = self.router.clone();
            let served = async {
                poll_fn(|cx| tower::Service::<Request<Body>>::poll_ready(&mut router, cx)).await?;
                tower::Service::call(&mut router, Request::from_parts(parts, body)).await
            };
            let response = match served.await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            self.record(started.elapsed());
            Ok(response)
        };
        Ok(match answer.await {
            Ok(r) => r,
            Err(Refusal::Shed(wait)) => {
                let wait = self.back_off(wait);
                hold.until(Instant::now() + wait);
                shed(wait)
            }
            Err(Refusal::Answer(r)) => r,
        })
    }

    /// The whole body, within the body timeout and [`MAX_BODY`].
    async fn read_body(&self, headers: &HeaderMap, mut body: Incoming) -> Result<Body, Refusal> {
        if body.is_end_stream() {
            return Ok(Body::empty());
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(Refusal::Answer(closing(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large",
            )));
        }
        let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
        let read = async {
            while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                let frame = frame.map_err(|_| closing(StatusCode::BAD_REQUEST, "broken body"))?;
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() > MAX_BODY {
                        return Err(closing(StatusCode::PAYLOAD_TOO_LARGE, "body too large"));
                    }
                    buf.extend_from_slice(&data);
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.limits.body_timeout, read).await {
            Ok(Ok(())) => Ok(Body::from(Bytes::from(buf))),
            Ok(Err(r)) => Err(Refusal::Answer(r)),
            Err(_) => Err(Refusal::Answer(closing(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ))),
        }
    }

    /// A permit, if one frees up before `deadline` and the queue has room; otherwise the estimate
    /// of when one will.
    async fn admit(&self, deadline: Instant) -> Result<SemaphorePermit<'_>, Refusal> {
        if let Ok(p) = self.permits.try_acquire() {
            return Ok(p);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        let estimate = self.estimate(ahead + 1);
        if ahead >= self.limits.max_queue || Instant::now() + estimate > deadline {
            return Err(Refusal::Shed(estimate));
        }
        match tokio::time::timeout_at(deadline.into(), self.permits.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Refusal::Shed(self.estimate(self.waiting.load(Ordering::Relaxed)))),
        }
    }

    /// How long the request `position`-th in the queue waits for a permit.
    fn estimate(&self, position: usize) -> Duration {
        let us = self.service_us.load(Ordering::Relaxed);
        let us = us.saturating_mul(position as u64) / self.limits.max_inflight as u64;
        Duration::from_micros(us.max(1000))
    }

    /// Folds one request's time in the handlers into the recent service time (weight 1/8).
    fn record(&self, took: Duration) {
        let sample = took.as_micros().min(u64::MAX as u128) as u64;
        let old = self.service_us.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { old - old / 8 + sample / 8 };
        self.service_us.store(new, Ordering::Relaxed);
    }
}

/// The request's TTL from `X-Request-Ttl-Ms`: `None` when absent or invalid (the handler then
/// uses its default or answers `400`).
fn request_ttl(headers: &HeaderMap) -> Option<Duration> {
    let ms: u64 = headers.get("x-request-ttl-ms")?.to_str().ok()?.trim().parse().ok()?;
    (1..=60_000).contains(&ms).then(|| Duration::from_millis(ms))
}

/// When a shed connection may be read again (set by its handler, read by its [`Held`] IO).
#[derive(Default)]
struct Hold(std::sync::Mutex<Option<Instant>>);

impl Hold {
    fn until(&self, t: Instant) {
        *self.0.lock().unwrap() = Some(t);
    }

    fn take(&self) -> Option<Instant> {
        self.0.lock().unwrap().take()
    }
}

/// A connection's IO whose reads wait out its [`Hold`]; writes (the 503 itself) go at once.
struct Held<T> {
    io: T,
    hold: Arc<Hold>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Held<T> {
    fn new(io: T, hold: Arc<Hold>) -> Self {
        Held { io, hold, sleep: None }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Held<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(sleep) = &mut this.sleep {
                std::task::ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            match this.hold.take() {
                Some(until) if until > Instant::now() => {
                    this.sleep = Some(Box::pin(tokio::time::sleep_until(until.into())));
                }
                _ => return Pin::new(&mut this.io).poll_read(cx, buf),
            }
        }
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Held<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

/// `503` with when to retry: `Retry-After` in whole seconds (at least 1), `X-Retry-After-Ms` exact.
/// Made as cheap as an answer can be (a static body, no formatting): under overload most answers
/// are these, and what they cost is taken from the requests being served.
fn shed(wait: Duration) -> Response<Body> {
    let ms = wait.as_millis().max(1) as u64;
    let mut r = Response::new(Body::from(
        r#"{"error":"overloaded: retry after the Retry-After header"}"#,
    ));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000).max(1)));
    h.insert("x-retry-after-ms", HeaderValue::from(ms));
    r
}

/// An error answer after which the connection is closed (its body is left unread).
fn closing(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("{{\"error\":\"{msg}\"}}")));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}
