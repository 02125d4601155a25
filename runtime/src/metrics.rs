//! Prometheus metrics, liveness and readiness of a [`System`] (feature `metrics`).
//!
//! Every actor counts, through the [`metrics`](https://docs.rs/metrics) facade into a
//! `metrics-exporter-prometheus` recorder that belongs to its system (no process-wide recorder):
//!
//! | name | kind | what |
//! | --- | --- | --- |
//! | `crashonly_handled_total` | counter | messages handled to completion (successfully or not) |
//! | `crashonly_crashes_total` | counter | instances that crashed, aborts by a supervisor included |
//! | `crashonly_restarts_total` | counter | instances started after the first one |
//! | `crashonly_expired_total` | counter | envelopes dropped at dequeue, past their deadline |
//! | `crashonly_retry_after_total` | counter | sends refused at once with `RetryAfter` |
//! | `crashonly_handling_seconds` | histogram | time spent handling one message: one in 16 of each actor (sampled) |
//! | `crashonly_mailbox_depth`, `_max` | gauge | messages waiting: sum and deepest mailbox |
//! | `crashonly_live` | gauge | live slots (for an entity family: its live activations) |
//! | `crashonly_activations_total` | counter | entity activations |
//! | `crashonly_passivations_total` | counter | entity passivations, `reason` = `idle` or `cap` |
//! | `crashonly_escalations_total`, `crashonly_escalating` | counter, gauge | supervisors that gave up; giving up now |
//! | `crashonly_abandoned_tasks`, `crashonly_ready` | gauge | see [`System::abandoned`]; `/readyz` as 1 or 0 |
//!
//! They are labelled by `actor` (the actor's type name) and `path`, the path *pattern* of the
//! actor: an entity's path is its family's followed by `/*` (a key is never a label), an unnamed
//! child's last segment is `#*`. A system keeps at most 1,000 label sets apart; the ones after are
//! counted together under the path `(other)`, so a program that names dynamic children after
//! request data cannot make the scrape grow without bound.
//!
//! Counting costs an atomic add per event; the handling time is sampled (one message in 16 of each
//! actor: its 1st, 17th, ...), since a sample costs two clock reads and a push into the recorder's
//! buffer (see `benches/metrics.rs`). With the feature off none of it is compiled.
//!
//! ```no_run
//! # #[tokio::main] async fn main() {
//! let system = crashonly::System::new();
//! let app = axum::Router::new().merge(crashonly::metrics::router(&system));
//! # let _ = app;
//! # }
//! ```

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;

use crate::system::System;

/// The longest request target the endpoints accept, in bytes (longer: `414 URI Too Long`).
pub const MAX_URI: usize = 2048;

/// Why a system is not ready (`/readyz` answers `503` with it).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotReady {
    /// The root supervisor gave up: the process should exit and be restarted.
    RootFailed(String),
    /// This many supervisors are giving up past their restart intensity; their parents have not
    /// decided yet.
    Escalating(u64),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::RootFailed(why) => write!(f, "root supervisor gave up: {why}"),
            NotReady::Escalating(n) => write!(f, "{n} supervisor(s) escalating"),
        }
    }
}

impl std::error::Error for NotReady {}

/// Readiness: the root supervisor runs and no escalation is in progress.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let system = crashonly::System::new();
/// assert_eq!(crashonly::metrics::ready(&system), Ok(()));
/// # }
/// ```
pub fn ready(system: &System) -> Result<(), NotReady> {
    if let Some(e) = system.failure() {
        return Err(NotReady::RootFailed(e.to_string()));
    }
    match system.shared().meters().escalating() {
        0 => Ok(()),
        n => Err(NotReady::Escalating(n)),
    }
}

/// The system's meters in the Prometheus text format (what `/metrics` answers). The gauges
/// (mailbox depths, live slots) are read from the registry now, one pass over the live slots.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let system = crashonly::System::new();
/// assert!(crashonly::metrics::render(&system).contains("crashonly_ready 1"));
/// # }
/// ```
pub fn render(system: &System) -> String {
    let shared = system.shared();
    let meters = shared.meters();
    let mut sums: std::collections::HashMap<*const crate::meters::SlotMeters, (usize, usize, usize)> =
        Default::default();
    for (m, depth) in shared.registry().meters() {
        let e = sums.entry(crate::sync::Arc::as_ptr(&m)).or_default();
        *e = (e.0 + depth, e.1.max(depth), e.2 + 1);
    }
    for m in meters.sets() {
        let (sum, max, live) = sums.get(&crate::sync::Arc::as_ptr(&m)).copied().unwrap_or_default();
        m.depth.set(sum as f64);
        m.depth_max.set(max as f64);
        m.live.set(live as f64);
        m.publish();
    }
    meters.gauge("crashonly_abandoned_tasks", system.abandoned() as f64);
    meters.gauge("crashonly_escalating", meters.escalating() as f64);
    meters.gauge("crashonly_ready", if ready(system).is_ok() { 1.0 } else { 0.0 });
    meters.render()
}

/// `/metrics` (Prometheus text format), `/healthz` (`200` while the process serves HTTP at all)
/// and `/readyz` (`200` when [`ready`], else `503` with the reason).
///
/// `GET` and `HEAD` only (other methods: `405` with `Allow`); a request with a body gets `413`, a
/// request target over [`MAX_URI`] bytes `414`. Query parameters are ignored. The router sets no
/// fallback, so that it merges into an application's router (whose fallback answers other paths;
/// axum's default answers `404`).
pub fn router(system: &System) -> Router {
    let metrics = {
        let system = system.clone();
        move || {
            let body = render(&system);
            async move {
                let ct = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
                ([(header::CONTENT_TYPE, ct)], body).into_response()
            }
        }
    };
    let readyz = {
        let system = system.clone();
        move || {
            let answer = match ready(&system) {
                Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
            };
            async move { answer.into_response() }
        }
    };
    Router::new()
        .route("/metrics", only_get(get(metrics)))
        .route("/healthz", only_get(get(|| async { "ok\n" })))
        .route("/readyz", only_get(get(readyz)))
        .route_layer(middleware::from_fn(refuse_oversized))
}

/// `405` with a body that says what is allowed (axum adds the `Allow` header).
fn only_get(route: MethodRouter) -> MethodRouter {
    route.fallback(|| async {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "method not allowed: GET or HEAD only\n",
        )
    })
}

/// Refuses a request with a body (`413`) or too long a target (`414`) before any handler runs.
async fn refuse_oversized(req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI {
        let msg = format!("request target is {uri_len} bytes, at most {MAX_URI}\n");
        return (StatusCode::URI_TOO_LONG, msg).into_response();
    }
    let headers = req.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()));
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    match declared {
        Some(None) => (StatusCode::BAD_REQUEST, "bad Content-Length\n").into_response(),
        Some(Some(n)) if n > 0 => too_large(),
        _ if chunked => too_large(),
        _ => next.run(req).await,
    }
}

fn too_large() -> Response {
    let mut r = Response::new(Body::from("these endpoints take no request body\n"));
    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    r
}
