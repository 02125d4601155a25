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
use crashonly::store::{Conflict, Durability, RedbOptions, Store, StoreError, TimeSource, Txn, WallClock};
use crashonly::{SupervisedStore, SupervisorRef};
use serde::{Deserialize, Serialize};

#[path = "frontend.rs"]
pub mod frontend;

/// How long an untouched cart lives (session state).
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);
/// Longest item name and most items in a cart.
const MAX_ITEM: usize = 200;
const MAX_ITEMS: usize = 10_000;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct CartState {
    items: Vec<String>,
}

/// One shopping cart. Volatile copy of the session state; `#[start]` reloads it from the store.
/// The session expires in the store `SESSION_TTL` after its last write; the live copy follows it
/// (a crash-free transition to an empty cart), on the store's clock.
#[derive(Actor)]
#[actor(args = CartArgs, restart = "transient")]
struct Cart {
    key: Vec<u8>,
    store: Arc<dyn Store>,
    time: Arc<dyn TimeSource>,
    state: CartState,
    version: u64,
    /// When the stored session expires (store clock, ms), if it is stored.
    expires_at_ms: u64,
}

/// The cart's id, the store, and the store's clock.
type CartArgs = (String, Arc<dyn Store>, Arc<dyn TimeSource>);

/// What the cart answers.
#[derive(Clone, Debug, Serialize)]
struct CartView {
    id: String,
    items: Vec<String>,
    version: u64,
}

/// Why a cart request failed (a reply, not a crash).
#[derive(Clone, Debug)]
enum CartError {
    Full,
    Store(StoreError),
}

impl Cart {
    /// The cart as the store has it (empty when new or expired); a damaged record is an error,
    /// never an empty cart.
    async fn load(store: &dyn Store, key: &[u8], now_ms: u64) -> Result<(CartState, u64, u64), StoreError> {
        Ok(match store.get(key).await? {
            // Written at most SESSION_TTL ago: expires no later than that from now.
            Some(v) => (
                decode_cart(&v.value)?,
                v.version,
                now_ms + SESSION_TTL.as_millis() as u64,
            ),
            None => (CartState::default(), 0, 0),
        })
    }

    /// A session that expired while this instance was live becomes an empty cart, as the store
    /// already has it.
    fn expire(&mut self) {
        if self.version != 0 && self.time.now_ms() >= self.expires_at_ms {
            self.state = CartState::default();
            self.version = 0;
        }
    }

    fn view_of(&self) -> CartView {
        CartView {
            id: String::from_utf8_lossy(&self.key[5..]).into_owned(),
            items: self.state.items.clone(),
            version: self.version,
        }
    }
}

#[messages]
impl Cart {
    /// The recovery path: the cart as the store has it (empty when new or expired).
    #[start]
    async fn recover((id, store, time): &CartArgs, _ctx: &mut Context<Self>) -> Result<Self, StoreError> {
        let key = format!("cart/{id}").into_bytes();
        let (state, version, expires_at_ms) = Cart::load(&**store, &key, time.now_ms()).await?;
        Ok(Cart {
            key,
            store: store.clone(),
            time: time.clone(),
            state,
            version,
            expires_at_ms,
        })
    }

    /// The cart's contents.
    #[message(idempotent)]
    fn view(&mut self) -> CartView {
        self.expire();
        self.view_of()
    }

    /// Adds an item; with an idempotency key, a retry is applied once even across a crash.
    ///
    /// The key is global (one client's key for one request) and bound to this cart and item: used
    /// again for another cart or item, it is refused (`Conflict::KeyReused`), never acknowledged
    /// without being applied.
    #[message]
    async fn add(&mut self, item: String, key: Option<String>) -> Result<CartView, CartError> {
        self.expire();
        let request = format!("{} add {item}", String::from_utf8_lossy(&self.key));
        let mut reloaded = false;
        loop {
            if self.state.items.len() >= MAX_ITEMS {
                return Err(CartError::Full);
            }
            let mut next = self.state.clone();
            next.items.push(item.clone());
            let bytes = serde_json::to_vec(&next).expect("a cart serializes");
            let mut txn = Txn::new()
                .check(&self.key, self.version)
                .put_ttl(&self.key, bytes, SESSION_TTL);
            if let Some(k) = &key {
                txn = txn.once_for(format!("idem/{k}").as_bytes(), request.as_bytes());
            }
            let now = self.time.now_ms();
            match self.store.commit(txn).await {
                Ok(c) if c.replayed => {
                    // Applied before (maybe by an earlier incarnation): reload what the store has.
                    self.reload(now).await?;
                }
                Ok(c) => {
                    self.state = next;
                    self.version = c.versions[0];
                    self.expires_at_ms = now + SESSION_TTL.as_millis() as u64;
                }
                // The stored session moved on without this instance (it expired, or another
                // incarnation wrote it): reload it and apply the item to what is stored, once.
                Err(StoreError::Conflict(Conflict::Version { .. })) if !reloaded => {
                    self.reload(now).await?;
                    reloaded = true;
                    continue;
                }
                Err(e) => return Err(CartError::Store(e)),
            }
            return Ok(self.view_of());
        }
    }
}

impl Cart {
    async fn reload(&mut self, now_ms: u64) -> Result<(), CartError> {
        let (state, version, expires_at_ms) = Cart::load(&*self.store, &self.key, now_ms)
            .await
            .map_err(CartError::Store)?;
        (self.state, self.version, self.expires_at_ms) = (state, version, expires_at_ms);
        Ok(())
    }
}

#[derive(Clone)]
pub struct App {
    carts: SupervisorRef,
    system: System,
    store: SupervisedStore,
    time: Arc<dyn TimeSource>,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

fn with_retry_after(mut r: Response, wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    r.headers_mut().insert("retry-after", HeaderValue::from(secs));
    r.headers_mut()
        .insert("x-retry-after-ms", HeaderValue::from(wait.as_millis() as u64));
    r
}

/// The store's errors as HTTP, each saying what happened: a full disk is `507` and a damaged
/// store `500` (both named), a store restarting `503`, all with `Retry-After` when it is known; a
/// reused idempotency key `422`; a conflict `409`.
fn store_error(e: &StoreError) -> Response {
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

/// The runtime's errors as HTTP: RetryAfter becomes 503 with a Retry-After header.
fn runtime_error(e: DeliveryError) -> Response {
    match e {
        DeliveryError::RetryAfter(wait) => with_retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("recovering, retry after {} ms", wait.as_millis()),
            ),
            wait,
        ),
        DeliveryError::Expired => error(StatusCode::GATEWAY_TIMEOUT, "deadline passed"),
        DeliveryError::Crashed(report) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("outcome unknown: {}", report.reason),
        ),
        other => error(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    }
}

/// The request's TTL from `X-Request-Ttl-Ms`.
fn ttl(headers: &HeaderMap) -> Result<Duration, Response> {
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

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl App {
    /// The service over `store` (whose clock, `time`, sessions expire on), its carts under
    /// `carts`.
    pub fn new(system: System, carts: SupervisorRef, store: SupervisedStore, time: Arc<dyn TimeSource>) -> Self {
        App {
            carts,
            system,
            store,
            time,
        }
    }

    /// The routes (see `examples/cart.rs`).
    pub fn router(self) -> Router {
        Router::new()
            .route("/carts/{id}", get(view))
            .route("/carts/{id}/items", post(add))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
            .layer(DefaultBodyLimit::max(16 * 1024))
            .with_state(self)
    }

    /// A runtime error, unless the store is down: then what happened to the store (a cart that
    /// cannot recover because its store is damaged says so, not "deadline passed").
    fn failed(&self, e: DeliveryError) -> Response {
        match self.store.status() {
            Err(store) => store_error(&store),
            Ok(()) => runtime_error(e),
        }
    }

    /// The cart's actor, started on first use; its ref stays valid across its restarts. While
    /// the store is down, the store's error at once.
    fn cart(&self, id: &str) -> Result<ActorRef<Cart>, Response> {
        if !valid_id(id) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "cart ids are 1 to 64 letters, digits, '-' or '_'",
            ));
        }
        self.store.status().map_err(|e| store_error(&e))?;
        if let Some(c) = self.carts.child::<Cart>(id) {
            return Ok(c);
        }
        match self
            .carts
            .spawn(Cart::spec((id.to_owned(), Arc::new(self.store.clone()), self.time.clone())).name(id))
        {
            Ok(c) => Ok(c),
            // Another request started it meanwhile.
            Err(crashonly::SpawnError::NameTaken(_)) => self
                .carts
                .child::<Cart>(id)
                .ok_or_else(|| error(StatusCode::SERVICE_UNAVAILABLE, "cart restarting")),
            Err(e) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        }
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

/// A cart as stored (bytes read back from the store, which may be damaged).
pub fn decode_cart(bytes: &[u8]) -> Result<CartState, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
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
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 128 => Some(k.to_owned()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key must be 1 to 128 visible characters",
            )
        }
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
}

fn parse(args: Vec<String>) -> Result<Opts, String> {
    let mut o = Opts {
        listen: "127.0.0.1:8080".to_owned(),
        data: "cart-data".into(),
        ack_before_sync: false,
        fault_every: None,
        fault_process: false,
        store_restarts: 5,
        store_period: Duration::from_secs(30),
        skip_verify: false,
        frontend: frontend::Limits::default(),
    };
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => o.listen = args.next().ok_or("--listen needs an address")?,
            "--data" => o.data = args.next().ok_or("--data needs a directory")?.into(),
            "--ack-before-sync" => o.ack_before_sync = true,
            "--fault-every-ms" => {
                let ms: u64 = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--fault-every-ms needs a number")?;
                o.fault_every = Some(Duration::from_millis(ms.max(1)));
            }
            "--store-intensity" => {
                let v = args.next().ok_or("--store-intensity needs N/SECONDS, e.g. 5/30")?;
                let (n, secs) = v
                    .split_once('/')
                    .and_then(|(n, s)| Some((n.parse().ok()?, s.parse::<u64>().ok()?)))
                    .filter(|&(_, secs)| secs > 0)
                    .ok_or("--store-intensity needs N/SECONDS, e.g. 5/30")?;
                (o.store_restarts, o.store_period) = (n, Duration::from_secs(secs));
            }
            "--skip-verify" => o.skip_verify = true,
            "--fault-mode" => match args.next().as_deref() {
                Some("actor") => o.fault_process = false,
                Some("process") => o.fault_process = true,
                _ => return Err("--fault-mode is actor or process".into()),
            },
            f if frontend::Limits::FLAGS.contains(&f) => o.frontend.set(f, args.next())?,
            other => return Err(format!("unknown argument {other:?} (try --listen ADDR, --data DIR)")),
        }
    }
    Ok(o)
}

/// The faultload: every `every`, a random cart actor panics (a microreboot follows), or, without
/// microreboots, the whole process aborts and waits for an external restart.
async fn inject_faults(carts: SupervisorRef, every: Duration, whole_process: bool) {
    let mut x = u64::from(std::process::id()) | 1;
    loop {
        tokio::time::sleep(every).await;
        if whole_process {
            std::process::abort();
        }
        let live = carts.children();
        if live.is_empty() {
            continue;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let path = &live[(x % live.len() as u64) as usize];
        if let Some(cart) = carts.child::<Cart>(path.rsplit('/').next().unwrap_or_default()) {
            // The injected fault: the cart's actor crashes wherever it is; a microreboot follows.
            cart.crash_reboot();
        }
    }
}

/// Runs the cart service with these command-line arguments until it is killed.
pub async fn serve(args: Vec<String>) -> std::process::ExitCode {
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
    } = match parse(args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
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
        .child(
            SupervisorSpec::new("carts", Strategy::OneForOne)
                .intensity(100_000, Duration::from_secs(10))
                // A cart recovers in well under a millisecond: retry soon, back off little.
                .backoff(Backoff {
                    base: Duration::from_millis(1),
                    cap: Duration::from_millis(20),
                }),
        );
    let system = System::builder().root(root).start().expect("static names");
    let carts = system.lookup_supervisor("/carts").expect("declared above");
    if let Some(every) = fault_every {
        tokio::spawn(inject_faults(carts.clone(), every, fault_process));
    }
    let app = App::new(system.clone(), carts, store.clone(), Arc::new(WallClock));
    let router = app.router();
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
