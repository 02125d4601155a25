//! The observer's HTTP side: the page, the frames (JSON, and server-sent events), the controls.
//!
//! Bad input is answered with a clear 4xx: unknown paths 404, other methods 405 (axum's method
//! router), bodies over 1 KiB 413, a missing or malformed query 400, a path over 1,024 bytes or
//! not starting with `/` 400, a path that names nothing 404, controls without a configured token
//! 403 and with a wrong one 401.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};

use super::model::{self, Entry, Handled, NodeView, Shape};
use super::ObserverOptions;
use crate::clock::Instant;
use crate::sync::Arc;
use crate::system::System;

const PAGE: &str = include_str!("page.html");
const MAX_PATH: usize = 1024;
const LEASES_SHOWN: usize = 50;
/// Time between a page's frames, in multiples of the last frame's build time (at least).
const FRAME_BUDGET: u32 = 50;

#[derive(Clone)]
struct Ctx {
    system: System,
    opts: Arc<ObserverOptions>,
}

/// The observer's routes, to mount in an application's router (`Router::nest("/observer", ..)`).
/// The router holds a handle on `system`, which keeps it alive while the router is.
pub fn router(system: &System, opts: ObserverOptions) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/api/tree", get(tree))
        .route("/api/children", get(children))
        .route("/api/crash", post(crash))
        .route("/api/rejuvenate", post(rejuvenate))
        .fallback(|| async { fail(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(1024))
        .with_state(Ctx {
            system: system.clone(),
            opts: Arc::new(opts),
        })
}

/// The observer on a listener of its own (see [`bind`]).
#[derive(Debug)]
pub struct Listener {
    listener: tokio::net::TcpListener,
    router: Router,
}

/// Binds the observer's own listener at [`ObserverOptions::listen`] (loopback by default).
pub async fn bind(system: &System, opts: ObserverOptions) -> io::Result<Listener> {
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    Ok(Listener {
        listener,
        router: router(system, opts),
    })
}

impl Listener {
    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until an error of the listener.
    pub async fn serve(self) -> io::Result<()> {
        axum::serve(self.listener, self.router).await
    }
}

fn fail(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

/// One update of the page.
#[derive(Serialize)]
struct Frame {
    tree: Option<NodeView>,
    /// Live slots, supervisors and families.
    slots: usize,
    events: Vec<EventView>,
    /// Events the journal dropped so far (it keeps the newest 1,024).
    dropped: u64,
    last_seq: u64,
    leases: LeasesView,
    /// Tasks abandoned in blocking code.
    abandoned: u64,
    /// The application's sections (see [`super::Panel`]).
    panels: Vec<super::Table>,
    /// How long building this frame took, in microseconds.
    build_us: u64,
}

#[derive(Serialize)]
struct EventView {
    seq: u64,
    kind: &'static str,
    path: String,
    detail: String,
    unix_ms: u64,
}

#[derive(Serialize)]
struct LeasesView {
    total: usize,
    shown: Vec<LeaseView>,
}

#[derive(Serialize)]
struct LeaseView {
    resource: String,
    holder: String,
    left_ms: u64,
}

/// Reads the system and builds a frame: events after `after`, rates against `prev`.
fn frame(
    ctx: &Ctx,
    top: &str,
    page: Option<(&str, usize)>,
    after: u64,
    prev: Option<(&Handled, Duration)>,
) -> (Frame, Vec<Entry>) {
    let began = std::time::Instant::now();
    let shared = ctx.system.shared();
    let entries = model::collect(shared.registry().live());
    let now: Instant = shared.now();
    let shape = Shape {
        now,
        limit: ctx.opts.max_children.max(1),
        prev,
        page,
    };
    let tree = model::tree(&entries, top, &shape);
    let (events, dropped) = shared.journal().since(after);
    let last_seq = events.last().map_or(after, |e| e.seq);
    let (total, shown) = shared.leases().held(now, LEASES_SHOWN);
    let frame = Frame {
        tree,
        slots: entries.len(),
        events: events
            .into_iter()
            .map(|e| EventView {
                seq: e.seq,
                kind: e.kind.as_str(),
                path: e.path,
                detail: e.detail.to_string(),
                unix_ms: e.unix_ms,
            })
            .collect(),
        dropped,
        last_seq,
        leases: LeasesView {
            total,
            shown: shown
                .into_iter()
                .map(|(resource, holder, left)| LeaseView {
                    resource,
                    holder,
                    left_ms: left.as_millis() as u64,
                })
                .collect(),
        },
        abandoned: ctx.system.abandoned(),
        panels: ctx.opts.panels.iter().map(|p| p.table()).collect(),
        build_us: began.elapsed().as_micros() as u64,
    };
    (frame, entries)
}

async fn tree(State(ctx): State<Ctx>) -> Response {
    Json(frame(&ctx, "/", None, 0, None).0).into_response()
}

#[derive(Deserialize)]
struct PathQuery {
    path: String,
    #[serde(default)]
    offset: usize,
}

/// Why a request was refused (each a 4xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    BadPath,
    NotFound,
    Disabled,
    Unauthorized,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::BadPath => fail(
                StatusCode::BAD_REQUEST,
                "path must start with / and be at most 1024 bytes",
            ),
            Refused::NotFound => fail(StatusCode::NOT_FOUND, "nothing lives at this path"),
            Refused::Disabled => fail(StatusCode::FORBIDDEN, "controls are disabled: no token is configured"),
            Refused::Unauthorized => fail(StatusCode::UNAUTHORIZED, "missing or wrong x-observer-token"),
        }
    }
}

fn check_path(path: &str) -> Result<(), Refused> {
    if path.len() > MAX_PATH || !path.starts_with('/') {
        return Err(Refused::BadPath);
    }
    Ok(())
}

async fn children(State(ctx): State<Ctx>, Query(q): Query<PathQuery>) -> Response {
    if let Err(r) = check_path(&q.path) {
        return r.into_response();
    }
    match frame(&ctx, &q.path, Some((&q.path, q.offset)), u64::MAX, None).0.tree {
        Some(node) => Json(node).into_response(),
        None => Refused::NotFound.into_response(),
    }
}

/// The live frames: the first at once, then one every interval, each with the events since the
/// previous one and messages per second since it.
async fn events(State(ctx): State<Ctx>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    struct Sampler {
        ctx: Ctx,
        after: u64,
        prev: Option<(Handled, Instant)>,
        built: Duration,
    }
    let start = Sampler {
        ctx,
        after: 0,
        prev: None,
        built: Duration::ZERO,
    };
    let stream = futures::stream::unfold(start, |mut s| async move {
        if s.prev.is_some() {
            // A connected page costs at most about 2% of a core: at least 50 times the last
            // build's time between frames, so with a huge tree it updates less often rather than
            // taking time from the actors (with 100,000 actors, every second or two).
            let pace = s.ctx.opts.interval.max(FRAME_BUDGET * s.built);
            s.ctx.system.shared().clock().sleep(pace).await;
        }
        // Built on a thread of the blocking pool: with a huge tree, a frame takes tens of ms,
        // which must not stall the worker threads that run the actors.
        let (s, data) = crate::rt::off_workers(move || {
            let now = s.ctx.system.shared().now();
            let prev = s.prev.as_ref().map(|(h, at)| (h, now.saturating_duration_since(*at)));
            let (frame, entries) = frame(&s.ctx, "/", None, s.after, prev);
            s.after = frame.last_seq;
            s.built = Duration::from_micros(frame.build_us);
            s.prev = Some((model::handled(&entries), now));
            let data = serde_json::to_string(&frame).unwrap_or_else(|_| "{}".to_owned());
            (s, data)
        })
        .await;
        Some((Ok(Event::default().event("frame").data(data)), s))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Checks the control token: 403 when none is configured, 401 when it is missing or wrong.
fn authorize(ctx: &Ctx, headers: &HeaderMap) -> Result<(), Refused> {
    let Some(want) = &ctx.opts.token else {
        return Err(Refused::Disabled);
    };
    let got = headers
        .get("x-observer-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    // Compared in full whatever the first difference, so timing does not tell the prefix.
    let same = got.len() == want.len() && got.iter().zip(want.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same {
        Ok(())
    } else {
        Err(Refused::Unauthorized)
    }
}

#[derive(Deserialize)]
struct ControlQuery {
    path: String,
}

/// The entries a control applies to: the node at `path` and everything below it.
fn subtree(ctx: &Ctx, path: &str) -> Result<(Entry, Vec<Entry>), Refused> {
    check_path(path)?;
    let mut target = None;
    let mut below = Vec::new();
    let prefix = if path == "/" {
        "/".to_owned()
    } else {
        format!("{path}/")
    };
    for e in model::collect(ctx.system.shared().registry().live()) {
        if e.snap.path == path {
            target = Some(e);
        } else if e.snap.path.starts_with(&prefix) {
            below.push(e);
        }
    }
    match target {
        Some(t) => Ok((t, below)),
        None => Err(Refused::NotFound),
    }
}

/// Crash-reboots `path`: an actor crashes from outside and its supervisor restarts it; a
/// supervisor or family: every actor below it does. Answers `{"crashed": n}`.
/// (The body is read, and ignored, so that the body limit answers 413 to an oversized one.)
async fn crash(State(ctx): State<Ctx>, headers: HeaderMap, Query(q): Query<ControlQuery>, _body: Bytes) -> Response {
    let (target, below) = match authorize(&ctx, &headers).and_then(|()| subtree(&ctx, &q.path)) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let mut crashed = usize::from(target.inspect.crash_reboot());
    if target.snap.stats.is_none() {
        crashed += below.iter().filter(|e| e.inspect.crash_reboot()).count();
    }
    tracing::warn!(path = %q.path, crashed, "observer: crash-reboot");
    Json(serde_json::json!({ "crashed": crashed })).into_response()
}

/// Rejuvenates `path` (a supervisor or family: its whole subtree), through the crash path after
/// the current message, not counted against restart intensity.
async fn rejuvenate(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Query(q): Query<ControlQuery>,
    _body: Bytes,
) -> Response {
    let (target, _) = match authorize(&ctx, &headers).and_then(|()| subtree(&ctx, &q.path)) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    target.inspect.rejuvenate_now();
    tracing::info!(path = %q.path, "observer: rejuvenate");
    Json(serde_json::json!({ "rejuvenated": q.path })).into_response()
}
