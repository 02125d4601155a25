//! `cart --cluster`: the cart service on many nodes. The store of record is PostgreSQL, shared by
//! every node; each process joins the cluster as a [`Node`] (membership and placement on the same
//! database, requests between nodes over NATS), serves the carts family, and answers every HTTP
//! request through the cluster: any node answers for any cart, which lives on one node at a time
//! and fences its writes with that node's placement token (see `cart_entity.rs`).
//!
//! `cart --cluster --listen ADDR --pg URL --nats URL [--schema NAME] [--node-name NAME]
//! [--lease 2s] [--rejoin-within 60s] [--fence-intensity 5/60] [--idle 60s] [--max-active N]`
//! (and the front end's flags); `--pg` and `--nats` default to `CRASHONLY_PG_URL` and
//! `CRASHONLY_NATS_URL`. The cluster's tables are in the schema `NAME` (`cart` by default), the
//! carts in `NAME_store`. It prints `listening <addr> node <incarnation>` once it serves.
//!
//! When the node is fenced (it could not renew its membership lease in time: the database
//! unreachable, the process paused), it crashes its cluster subtree (the carts family: every
//! activation is aborted) and rejoins as a new incarnation of the same process
//! ([`Node::rejoin`]), with randomized backoff (50 ms doubling up to the lease); then it starts the
//! family again, so every cart recovers under the new incarnation and fences its writes with a
//! new token. While it is out, cart requests answer `503` with `Retry-After` and `/health` says
//! why. Bounded, as a supervisor is: if it cannot rejoin within `--rejoin-within` (60 s), or it
//! is fenced more than N times within SECONDS (`--fence-intensity`, 5 in 60 s), it gives up and
//! exits with status 3, for the OS-level manager to start it again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crashonly::prelude::*;
use crashonly::store::{PgOptions, PgStore, WallClock};
use crashonly_cluster::{MembershipOptions, Node, NodeOptions};

use super::{
    error, family_on, frontend, idempotency_key, parse_item, rss_kb, runtime_error, store_error, ttl, valid_id,
    with_retry_after, Cart, CartError, CartMessage, CartReply, Residency, FAMILY, MAX_ID,
};

struct Opts {
    listen: String,
    pg: Option<String>,
    nats: Option<String>,
    schema: String,
    node_name: String,
    lease: Duration,
    /// How long a fenced node may try to rejoin before it gives up (exit 3).
    rejoin_within: Duration,
    /// At most this many fences within the period; one more and the node gives up (exit 3).
    fence_intensity: (usize, Duration),
    frontend: frontend::Limits,
    residency: Residency,
}

/// The cluster options of `a` (see [`super::args::CartArgs`]); the URLs default to the
/// environment's.
fn parse(a: super::args::CartArgs) -> Opts {
    let mut residency = Residency::default();
    if let Some(idle) = a.idle {
        residency.idle = idle;
    }
    if let Some(n) = a.max_active {
        residency.max_active = n as usize;
    }
    let (fences, period) = a.fence_intensity.unwrap_or((5, Duration::from_secs(60)));
    Opts {
        listen: a.listen,
        pg: a.pg.or_else(|| std::env::var("CRASHONLY_PG_URL").ok()),
        nats: a.nats.or_else(|| std::env::var("CRASHONLY_NATS_URL").ok()),
        schema: a.schema.unwrap_or_else(|| "cart".to_owned()),
        node_name: a.node_name.unwrap_or_else(|| format!("cart-{}", std::process::id())),
        lease: a.lease.unwrap_or(Duration::from_secs(2)),
        rejoin_within: a.rejoin_within.unwrap_or(Duration::from_secs(60)),
        fence_intensity: (fences as usize, period),
        frontend: a.frontend.limits(),
        residency,
    }
}

/// The service on one node: its requests go through the cluster.
#[derive(Clone)]
struct App {
    node: Node,
    system: System,
    carts: Entities<Cart>,
    /// While the node is out: how the rejoining goes (for `/health`), and when to try again.
    out: Arc<Out>,
}

/// A fenced node's way back, as `/health` and the `503`s tell it.
#[derive(Default)]
struct Out {
    status: Mutex<String>,
    /// What a client should wait before trying again, in ms.
    retry_ms: AtomicU64,
}

impl App {
    fn router(self) -> Router {
        // `/metrics`, `/healthz`, `/readyz`, and the observer page with the cluster's nodes and
        // recent failovers (read once a second), as the single-process service serves them.
        let metrics = crashonly::metrics::router(&self.system);
        let nodes = crashonly_cluster::NodesView::start(&self.node, Duration::from_secs(1));
        let observer = crashonly::observer::ObserverOptions::default()
            .with_panel(nodes.nodes())
            .with_panel(nodes.failovers());
        let observer = crashonly::observer::router(&self.system, observer);
        Router::new()
            .route("/carts/{id}", get(view))
            .route("/carts/{id}/items", post(add))
            .route("/health", get(health))
            .route("/ready", get(health))
            .route("/stats", get(stats))
            .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
            .layer(DefaultBodyLimit::max(16 * 1024))
            .layer(axum::middleware::from_fn_with_state(
                self.system.clone(),
                super::http_trace::continue_trace,
            ))
            .with_state(self)
            .merge(metrics)
            .nest("/observer", observer)
    }

    /// What is wrong with this node, if anything: the tree gave up, or the node is fenced.
    fn failure(&self) -> Option<String> {
        if let Some(e) = self.system.failure() {
            return Some(e.to_string());
        }
        let why = self.node.membership().is_fenced()?;
        let status = self.out.status.lock().unwrap().clone();
        Some(format!("this node is out of the cluster: {why}; {status}"))
    }

    /// `503` with `Retry-After` while the node is out of the cluster (fenced, rejoining), or cut
    /// from the others (NATS disconnected: a request could wait out its TTL unanswered).
    fn unavailable(&self) -> Option<Response> {
        if let Some(why) = self.failure() {
            let wait = Duration::from_millis(self.out.retry_ms.load(Ordering::Relaxed).max(1));
            return Some(with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, why), wait));
        }
        if !self.node.transport_connected() {
            let why = "this node is cut from the cluster: NATS is disconnected (reconnecting)";
            return Some(with_retry_after(
                error(StatusCode::SERVICE_UNAVAILABLE, why),
                Duration::from_millis(500),
            ));
        }
        None
    }

    /// A failed ask as HTTP. A deadline that passed while NATS is disconnected is the outage's
    /// doing (the request or its reply was lost with the connection): `503` with `Retry-After`,
    /// outcome unknown, rather than a bare `504`.
    fn delivery_error(&self, e: DeliveryError) -> Response {
        if matches!(e, DeliveryError::Expired) && !self.node.transport_connected() {
            let why = "outcome unknown: NATS disconnected while the request was out (reconnecting)";
            return with_retry_after(error(StatusCode::SERVICE_UNAVAILABLE, why), Duration::from_millis(500));
        }
        runtime_error(e)
    }
}

fn bad_id() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        format!("cart ids are 1 to {MAX_ID} letters, digits, '-' or '_'"),
    )
}

/// A reply of another message (a bug, never a guess at what happened).
fn unexpected() -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "the cart answered another message")
}

/// `GET /carts/{id}`: idempotent, so retried across a node's death within its TTL.
async fn view(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let ttl = match ttl(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !valid_id(&id) {
        return bad_id();
    }
    if let Some(r) = app.unavailable() {
        return r;
    }
    let cart = app.node.entity::<Cart>(FAMILY, id);
    match cart
        .ask(CartMessage::View())
        .ttl(ttl)
        .idempotent()
        .retrying()
        .send()
        .await
    {
        Ok(CartReply::View(v)) => Json(v).into_response(),
        Ok(_) => unexpected(),
        Err(e) => app.delivery_error(e),
    }
}

/// `POST /carts/{id}/items`: with an `Idempotency-Key` it may be resent (the cart applies it
/// once, the key kept in the store with the cart), so it is retried across a node's death; without
/// one it is sent once.
async fn add(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let ttl = match ttl(&headers) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let item = match parse_item(&body) {
        Ok(item) => item,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    if !valid_id(&id) {
        return bad_id();
    }
    if let Some(r) = app.unavailable() {
        return r;
    }
    let cart = app.node.entity::<Cart>(FAMILY, id);
    let keyed = key.is_some();
    let mut ask = cart.ask(CartMessage::Add(item, key)).ttl(ttl);
    if keyed {
        ask = ask.idempotent().retrying();
    }
    match ask.send().await {
        Ok(CartReply::Add(Ok(v))) => Json(v).into_response(),
        Ok(CartReply::Add(Err(CartError::Full))) => error(StatusCode::CONFLICT, "cart is full"),
        Ok(CartReply::Add(Err(CartError::Store(e)))) => store_error(&e),
        Ok(_) => unexpected(),
        Err(e) => app.delivery_error(e),
    }
}

/// Liveness and readiness: `503` once the tree has given up, or while the node is out of the
/// cluster (saying why, and how rejoining goes).
async fn health(State(app): State<App>) -> Response {
    match app.failure() {
        None => (StatusCode::OK, "ok").into_response(),
        Some(why) => error(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// The carts live on this node, the family's counters, the node's incarnation and memory.
async fn stats(State(app): State<App>) -> Response {
    Json(serde_json::json!({
        "carts": super::carts_json(&app.carts.stats()),
        "node": app.node.incarnation(),
        "handed_off": app.node.handed_off(),
        "rss_kb": rss_kb(),
    }))
    .into_response()
}

/// Runs one node of the clustered cart service until it is killed, or gives up (see the module
/// docs).
pub async fn serve(args: super::args::CartArgs) -> std::process::ExitCode {
    let o = parse(args);
    let (Some(pg), Some(nats)) = (o.pg.clone(), o.nats.clone()) else {
        super::cli::refuse::<super::args::CartArgs>(
            "--cluster needs --pg URL and --nats URL (or CRASHONLY_PG_URL and CRASHONLY_NATS_URL)",
        );
    };
    // Start = recover: the store of record and the cluster are joined afresh, as a new
    // incarnation, however the last process of this node ended.
    // Opening the store runs its schema statements, which can deadlock with the other nodes'
    // writes (PostgreSQL aborts one side): a temporary failure is tried again, a few times.
    // A transaction this node left open when it stopped or lost its network holds its rows'
    // locks: the server ends it after half a lease of silence, before the node's lease can have
    // expired in the database (renewed every third of a lease, it runs at least two thirds of one
    // past the last statement), so whoever takes the carts over never waits for those locks.
    let store_opts = PgOptions::default()
        .with_schema(format!("{}_store", o.schema))
        .with_idle_in_transaction_timeout(o.lease / 2);
    let mut tries = 0u64;
    let store = loop {
        match PgStore::connect(&pg, store_opts.clone()).await {
            Ok(s) => break s,
            Err(e) if e.retry_after().is_some() && tries < 100 => {
                tries += 1;
                eprintln!("cannot open the store yet ({}), trying again", e.reason());
                // Soon (the other nodes' writes are short), at a time of its own.
                let jitter = (std::process::id() as u64 * 31 + tries * 17) % 80;
                tokio::time::sleep(Duration::from_millis(20 + jitter)).await;
            }
            Err(e) => {
                eprintln!("error: cannot open the store: {}", e.reason());
                return std::process::ExitCode::FAILURE;
            }
        }
    };
    let membership = MembershipOptions::default()
        .with_schema(o.schema.clone())
        .with_lease(o.lease)
        .with_name(o.node_name.clone());
    let node = match Node::start(&pg, NodeOptions::new(membership, nats)).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: cannot join the cluster: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let root = SupervisorSpec::new("root", Strategy::OneForOne).child(family_on(
        Arc::new(store),
        Arc::new(WallClock),
        o.residency,
        Some(node.clone()),
    ));
    let policy = Policy::builder().max_key_len(MAX_ID).build().expect("a valid policy");
    let system = System::builder()
        .config(Config::default().with_policy(policy))
        .root(root)
        .start()
        .expect("static names");
    let carts = system.entities::<Cart>("/carts").expect("declared above");
    if let Err(e) = node.serve(FAMILY, carts.clone()) {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let server = match frontend::Frontend::bind(&o.listen, o.frontend).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("listening {} node {}", server.local_addr(), node.incarnation());
    let app = App {
        node: node.clone(),
        system: system.clone(),
        carts,
        out: Arc::new(Out::default()),
    };
    tokio::select! {
        e = server.run(app.clone().router()) => {
            eprintln!("server stopped: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(e) = system.wait() => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
        code = stay_in(&app, o.lease, o.rejoin_within, o.fence_intensity) => code,
    }
}

/// Keeps the node in the cluster: each time it is fenced, crashes the carts family (every
/// activation aborted: what it held is taken over elsewhere, and its late writes are refused by
/// their fences), rejoins as a new incarnation with randomized, bounded backoff, and starts the
/// family again. Returns only to give up (exit status 3): when it cannot rejoin within
/// `within`, or when it is fenced more often than `intensity` allows.
async fn stay_in(app: &App, lease: Duration, within: Duration, intensity: (usize, Duration)) -> std::process::ExitCode {
    let (node, root) = (&app.node, app.system.root());
    let mut fences: VecDeque<Instant> = VecDeque::new();
    let mut rng = fastrand::Rng::new();
    let cap = lease.clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let why = node.membership().fenced().await;
        let (old, at) = (node.incarnation(), Instant::now());
        *app.out.status.lock().unwrap() = "crashing its carts, then rejoining".into();
        app.out.retry_ms.store(lease.as_millis() as u64, Ordering::Relaxed);
        fences.push_back(at);
        while fences.front().is_some_and(|t| at.duration_since(*t) > intensity.1) {
            fences.pop_front();
        }
        eprintln!("node {old} fenced: {why}; crashing its carts and rejoining");
        if let Err(e) = root.terminate_child(FAMILY).await {
            eprintln!("error: cannot crash the carts of node {old}: {e}");
            return std::process::ExitCode::FAILURE;
        }
        if fences.len() > intensity.0 {
            eprintln!(
                "error: node {old} fenced {} times within {} s: giving up",
                fences.len(),
                intensity.1.as_secs()
            );
            std::process::exit(3)
        }
        let mut wait = Duration::from_millis(50);
        let mut attempt = 0u32;
        let new = loop {
            attempt += 1;
            match node.rejoin().await {
                Ok(new) => break new,
                Err(e) => {
                    // Full jitter in [wait/2, wait]: the nodes fenced by one outage come back apart.
                    let half = wait.as_millis() as u64 / 2;
                    let sleep = Duration::from_millis(rng.u64(half..=2 * half));
                    if at.elapsed() + sleep > within {
                        eprintln!(
                            "error: node {old} fenced ({why}) and could not rejoin within {} s: {e}",
                            within.as_secs()
                        );
                        std::process::exit(3)
                    }
                    *app.out.status.lock().unwrap() = format!(
                        "rejoining for {} ms (attempt {attempt} failed: {e})",
                        at.elapsed().as_millis()
                    );
                    app.out.retry_ms.store(sleep.as_millis() as u64, Ordering::Relaxed);
                    tokio::time::sleep(sleep).await;
                    wait = (wait * 2).min(cap);
                }
            }
        };
        // Start = recover: every cart starts again under the new incarnation, with new tokens.
        if let Err(e) = root.restart_child(FAMILY) {
            eprintln!("error: cannot start the carts of node {new} again: {e}");
            return std::process::ExitCode::FAILURE;
        }
        eprintln!(
            "node {old} rejoined as node {new} after {} ms ({attempt} attempts)",
            at.elapsed().as_millis()
        );
    }
}
