//! The cart service (the paper's Figure 1), shared by the `cart` binary and `litmus serve-cart`.
#![allow(clippy::result_large_err)] // handlers return ready HTTP responses as errors
//! See `examples/cart.rs` for the routes.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crashonly::prelude::*;
use crashonly::store::{Conflict, Durability, RedbOptions, StoreError, WallClock};
use crashonly::SupervisedStore;
use serde::Deserialize;

#[path = "frontend.rs"]
pub mod frontend;

#[path = "cli.rs"]
pub mod cli;

#[path = "cart_args.rs"]
mod args;

#[path = "http_trace.rs"]
pub mod http_trace;

#[path = "cart_entity.rs"]
mod entity;

/// `--cluster`: the same service on many nodes, its store of record PostgreSQL.
#[path = "cart_cluster.rs"]
mod cluster;

#[allow(unused_imports)] // shared by the binaries, the tests and the fuzz targets: each uses a part
pub use entity::{
    decode_cart, family, family_on, Cart, CartApi, CartError, CartMessage, CartReply, Residency, FAMILY, MAX_ID,
    SESSION_TTL,
};

/// Longest item name.
const MAX_ITEM: usize = 200;

#[derive(Clone)]
pub struct App {
    carts: Entities<Cart>,
    system: System,
    store: SupervisedStore,
}

pub(crate) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

pub(crate) fn with_retry_after(mut r: Response, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    r.headers_mut().insert("retry-after", HeaderValue::from(secs));
    r.headers_mut()
        .insert("x-retry-after-ms", HeaderValue::from(wait.as_millis() as u64));
    r
}

/// The store's errors as HTTP, each saying what happened: a full disk is `507` and a damaged
/// store `500` (both named), a store restarting `503`, all with `Retry-After` when it is known; a
/// reused idempotency key `422`; a conflict `409`.
pub(crate) fn store_error(e: &StoreError) -> Response {
    let (status, msg) = match e {
        StoreError::NoSpace { .. } => (StatusCode::INSUFFICIENT_STORAGE, e.reason()),
        StoreError::Corrupt(_) | StoreError::Unsupported(_) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        StoreError::Conflict(Conflict::KeyReused { .. }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Idempotency-Key was already used for another request (another cart or item): use a new key".into(),
        ),
        StoreError::Conflict(c) => (StatusCode::CONFLICT, c.to_string()),
        StoreError::BadInput(m) => (StatusCode::BAD_REQUEST, m.clone()),
        _ => (StatusCode::SERVICE_UNAVAILABLE, e.reason()),
    };
    let r = error(status, msg);
    match e.retry_after() {
        Some(wait) => with_retry_after(r, wait),
        None => r,
    }
}

/// The runtime's errors as HTTP: RetryAfter (a cart recovering, or quarantined after crashing
/// over and over) becomes 503 with a Retry-After header; a cart id over the runtime's bound on
/// entity keys 400.
pub fn runtime_error(e: DeliveryError) -> Response {
    match e {
        DeliveryError::KeyTooLong { len, max } => error(
            StatusCode::BAD_REQUEST,
            format!("cart ids are 1 to {max} letters, digits, '-' or '_' (this one is {len} bytes)"),
        ),
        DeliveryError::RetryAfter(wait) => with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("recovering, retry after {} ms", wait.as_millis()),
            ),
            wait,
        ),
        DeliveryError::Expired => error(StatusCode::GATEWAY_TIMEOUT, "deadline passed"),
        // A cart that could not recover never ran the request: not applied, say why.
        DeliveryError::Crashed(report) if matches!(report.reason, CrashReason::StartFailed(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not applied: the cart could not recover: {}", report.reason),
        ),
        DeliveryError::Crashed(report) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("outcome unknown: {}", report.reason),
        ),
        other => error(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

/// The request's TTL from `X-Request-Ttl-Ms`.
pub(crate) fn ttl(headers: &HeaderMap) -> Result<Duration, Response> {
    let Some(v) = headers.get("x-request-ttl-ms") else {
        return Ok(Duration::from_millis(2000));
    };
    let ms: i64 = v.to_str().ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "X-Request-Ttl-Ms must be a whole number of milliseconds",
        )
    })?;
    if !(1..=60_000).contains(&ms) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "X-Request-Ttl-Ms must be between 1 and 60000",
        ));
    }
    Ok(Duration::from_millis(ms as u64))
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl App {
    /// The service over `store`, its carts the entities `carts` (see [`family`]).
    pub fn new(system: System, carts: Entities<Cart>, store: SupervisedStore) -> Self {
        App { carts, system, store }
    }

    /// The routes (see `examples/cart.rs`).
    pub fn router(self) -> Router {
        let metrics = crashonly::metrics::router(&self.system); // `/metrics`, `/healthz`, `/readyz`
        Router::new()
            .route("/carts/{id}", get(view))
            .route("/carts/{id}/items", post(add))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .route("/stats", get(stats))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
            .layer(DefaultBodyLimit::max(16 * 1024))
            .layer(axum::middleware::from_fn_with_state(
                self.system.clone(),
                http_trace::continue_trace,
            ))
            .with_state(self)
            .merge(metrics)
    }

    /// A runtime error, unless the store is down: then what happened to the store (a cart that
    /// cannot recover because its store is damaged says so, not "deadline passed"). A bad key is
    /// the client's error whatever the store does.
    fn failed(&self, e: DeliveryError) -> Response {
        match self.store.status() {
            Err(store) if !matches!(e, DeliveryError::KeyTooLong { .. }) => store_error(&store),
            _ => runtime_error(e),
        }
    }

    /// The cart's entity: nothing is started until a request reaches it (which activates it,
    /// recovering it from the store). While the store is down, the store's error at once.
    fn cart(&self, id: &str) -> Result<EntityRef<Cart>, Response> {
        if !valid_id(id) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("cart ids are 1 to {MAX_ID} letters, digits, '-' or '_'"),
            ));
        }
        self.store.status().map_err(|e| store_error(&e))?;
        Ok(self.carts.get(id.to_owned()))
    }
}

async fn view(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let ttl = match ttl(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let cart = match app.cart(&id) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match cart.view().ttl(ttl).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => app.failed(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddItem {
    item: String,
}

/// The item of an add request's body (untrusted bytes), or why the body is refused.
pub fn parse_item(body: &[u8]) -> Result<String, String> {
    let req: AddItem = serde_json::from_slice(body).map_err(|e| format!("body must be {{\"item\": \"...\"}}: {e}"))?;
    if req.item.is_empty() || req.item.len() > MAX_ITEM {
        return Err(format!("item must be 1 to {MAX_ITEM} bytes"));
    }
    Ok(req.item)
}

/// The request's `Idempotency-Key`, if it has one.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Response> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(k)) if !k.is_empty() && k.len() <= 128 => Ok(Some(k.to_owned())),
        Some(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be 1 to 128 visible characters",
        )),
    }
}

async fn add(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let ttl = match ttl(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let req = match parse_item(&body) {
        Ok(item) => AddItem { item },
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let cart = match app.cart(&id) {
        Ok(c) => c,
        Err(r) => return r,
    };
    // The route decides idempotency: a keyed POST may be resent, a plain one may not.
    let call = cart.add(req.item, key.clone()).ttl(ttl).set_idempotent(key.is_some());
    match call.await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(CartError::Full)) => error(StatusCode::CONFLICT, "cart is full"),
        Ok(Err(CartError::Store(e))) => store_error(&e),
        Err(e) => app.failed(e),
    }
}

/// Liveness: `503` once the supervision tree has given up, or while the store is down (named).
async fn health(State(app): State<App>) -> Response {
    if let Some(e) = app.system.failure() {
        return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    match app.store.status() {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(e) => store_error(&e),
    }
}

/// The family's counters as `/stats` shows them (also in the clustered service's `/stats`).
pub(crate) fn carts_json(s: &crashonly::EntityStats) -> serde_json::Value {
    serde_json::json!({
        "active": s.active,
        "max_active": s.max_active,
        "activations": s.activations,
        "passivated_idle": s.passivated_idle,
        "passivated_cap": s.passivated_cap,
        "crashes": s.crashes,
        "given_up": s.given_up,
        "quarantined": s.quarantined,
    })
}

/// The carts in memory and the process's resident memory: `{"carts": {"active", "max_active",
/// "activations", "passivated_idle", "passivated_cap", "crashes", "given_up", "quarantined"},
/// "rss_kb"}` (counters since this process started; `rss_kb` is null where `/proc` is not).
async fn stats(State(app): State<App>) -> Response {
    Json(serde_json::json!({
        "carts": carts_json(&app.carts.stats()),
        "rss_kb": rss_kb(),
    }))
    .into_response()
}

/// The observer page's "Service" section: the store's state and the carts family's counters.
struct ServicePanel(App);

impl crashonly::observer::Panel for ServicePanel {
    fn table(&self) -> crashonly::observer::Table {
        let c = self.0.carts.stats();
        let store = match self.0.store.status() {
            Ok(()) => "serving".to_owned(),
            Err(e) => e.to_string(),
        };
        let rss = rss_kb().map_or("-".to_owned(), |kb| format!("{} MiB", kb / 1024));
        crashonly::observer::Table::new("Service", ["what", "now"])
            .with_row(["store", store.as_str()])
            .with_row(["carts live".to_owned(), format!("{} of {}", c.active, c.max_active)])
            .with_row(["carts activated".to_owned(), c.activations.to_string()])
            .with_row([
                "carts passivated (idle, cap)".to_owned(),
                format!("{}, {}", c.passivated_idle, c.passivated_cap),
            ])
            .with_row(["carts quarantined".to_owned(), c.quarantined.to_string()])
            .with_row(["resident memory", rss.as_str()])
    }
}

/// This process's resident set (`VmRSS`), in kB.
pub(crate) fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Readiness: `200` only while requests can be served: the tree is up and the store serves.
async fn ready(State(app): State<App>) -> Response {
    match (app.system.failure(), app.store.status()) {
        (None, Ok(())) => (StatusCode::OK, "ready").into_response(),
        (Some(e), _) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        (None, Err(e)) => store_error(&e),
    }
}

struct Opts {
    listen: String,
    data: std::path::PathBuf,
    /// Acknowledge writes before they are synced (for showing what the litmus harness catches).
    ack_before_sync: bool,
    /// Inject a fault every so often: a random cart actor panics (`actor`), or the whole process
    /// aborts (`process`, the world without microreboots).
    fault_every: Option<Duration>,
    fault_process: bool,
    /// The store's restart intensity: this many reopenings within the period, then the process
    /// exits non-zero.
    store_restarts: u32,
    store_period: Duration,
    /// Skip the page verification of the first open (a reopen after a failure always verifies).
    skip_verify: bool,
    /// The front end's admission control and timeouts.
    frontend: frontend::Limits,
    /// How long carts stay in memory (`--idle`, `--max-active`).
    residency: Residency,
    /// The observer page's control token (`--observer-token`); without it the page's controls
    /// are refused.
    observer_token: Option<String>,
}

#[allow(unused_imports)] // the binaries read durations with it; the tests need not
pub use cli::duration;

/// The single-node options of `args` (see [`args::CartArgs`]).
fn parse(a: args::CartArgs) -> Opts {
    let (store_restarts, store_period) = a.store_intensity.unwrap_or((5, Duration::from_secs(30)));
    let mut residency = Residency::default();
    if let Some(idle) = a.idle {
        residency.idle = idle;
    }
    if let Some(n) = a.max_active {
        residency.max_active = n as usize;
    }
    Opts {
        listen: a.listen,
        data: a.data.unwrap_or_else(|| "cart-data".into()),
        ack_before_sync: a.ack_before_sync,
        fault_every: a.fault_every_ms.map(|ms| Duration::from_millis(ms.max(1))),
        fault_process: a.fault_mode == args::FaultMode::Process,
        store_restarts,
        store_period,
        skip_verify: a.skip_verify,
        frontend: a.frontend.limits(),
        residency,
        observer_token: a.observer_token,
    }
}

/// The faultload: every `every`, a random live cart panics (a microreboot follows), or, without
/// microreboots, the whole process aborts and waits for an external restart.
async fn inject_faults(carts: Entities<Cart>, every: Duration, whole_process: bool) {
    let mut rng = fastrand::Rng::new();
    loop {
        tokio::time::sleep(every).await;
        if whole_process {
            std::process::abort();
        }
        let live = carts.active_keys(10_000);
        if live.is_empty() {
            continue;
        }
        let key = &live[rng.usize(..live.len())];
        if let Some(cart) = carts.get(key.clone()).activation() {
            // The injected fault: the cart's activation crashes wherever it is; a microreboot
            // follows (a passivated cart is left alone: it has nothing to crash).
            cart.crash_reboot();
        }
    }
}

/// Runs the cart service with these command-line arguments until it is killed.
///
/// A bad argument is refused with its reason and the usage, and the process exits with status 2.
pub async fn serve(args: Vec<String>) -> std::process::ExitCode {
    let args = args::CartArgs::from_args(args);
    if args.cluster {
        return cluster::serve(args).await;
    }
    let Opts {
        listen,
        data,
        ack_before_sync,
        fault_every,
        fault_process,
        store_restarts,
        store_period,
        skip_verify,
        frontend: limits,
        residency,
        observer_token,
    } = parse(args);
    if let Err(e) = std::fs::create_dir_all(&data) {
        eprintln!("error: cannot create {}: {e}", data.display());
        return std::process::ExitCode::from(2);
    }
    // Start = recover: opening the store after a kill -9 is the only way in.
    let durability = if ack_before_sync {
        Durability::LoseUpTo(Duration::from_secs(1))
    } else {
        Durability::Durable
    };
    let opts = RedbOptions::default()
        .with_durability(durability)
        .with_verify_on_open(!skip_verify);
    // The first open, before the tree starts: a store another process owns, or a damaged one,
    // stops the service at once with what happened (and no "retry after": this process exits).
    let store = match SupervisedStore::redb(data.join("carts.redb"), opts) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open the store: {}", e.reason());
            return std::process::ExitCode::FAILURE;
        }
    };
    // The store is the root's child: its failures are crashes, each reopen backs off, and past
    // the intensity the root gives up and the process exits non-zero.
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(store_restarts, store_period)
        .backoff(Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        })
        .child(store.spec())
        // One entity per cart, activated by its first request and passivated when idle: the
        // carts in memory are the ones in use, whatever the number of carts stored.
        .child(family(Arc::new(store.clone()), Arc::new(WallClock), residency));
    // The runtime refuses cart ids longer than the routes accept.
    let policy = Policy::builder().max_key_len(MAX_ID).build().expect("a valid policy");
    let system = System::builder()
        .config(Config::default().with_policy(policy))
        .root(root)
        .start()
        .expect("static names");
    let carts = system.entities::<Cart>("/carts").expect("declared above");
    if let Some(every) = fault_every {
        tokio::spawn(inject_faults(carts.clone(), every, fault_process));
    }
    let app = App::new(system.clone(), carts, store.clone());
    // The live observer page, at /observer on the service's own port.
    let observer = crashonly::observer::ObserverOptions::default()
        .with_token(observer_token)
        .with_panel(ServicePanel(app.clone()));
    let router = app
        .router()
        .nest("/observer", crashonly::observer::router(&system, observer));
    let server = match frontend::Frontend::bind(&listen, limits).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("listening {}", server.local_addr());
    tokio::select! {
        e = server.run(router) => {
            eprintln!("server stopped: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(e) = system.wait() => {
            eprintln!("error: {e}");
            if let Err(e) = store.status() {
                eprintln!("error: the store failed: {}", e.reason());
            }
            std::process::ExitCode::FAILURE
        }
    }
}
