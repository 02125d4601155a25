//! **cart**: the paper's Figure 1. An HTTP front end (axum) gives every request a TTL and an
//! idempotency flag from its route, then asks the cart's entity, which keeps its state in the
//! session store (redb, per-key TTL). The TTL shrinks hop by hop; when the cart's entity is
//! recovering, the front end answers `503` with an HTTP `Retry-After` from the runtime's estimate.
//!
//! Each cart is an entity (`support/cart_entity.rs`): its first request activates it (`#[start]`
//! reads it from the store), and it is passivated (dropped, nothing lost: every acknowledged add is
//! in the store) after `--idle` without a request (60s; `500ms`, `2s`, `1m`), or when more than
//! `--max-active N` carts are live (100000), least recently used first.
//!
//! Routes:
//! - `GET /carts/{id}`: idempotent. `200 {"id", "items", "version"}`.
//! - `POST /carts/{id}/items` with `{"item": "..."}`: not idempotent, unless it carries an
//!   `Idempotency-Key` header, in which case it is applied once (even across `kill -9`).
//! - `GET /health`, `GET /ready`: `200` while the service serves; `503` (or `507`/`500`) naming
//!   what is wrong while the store is down or the tree has given up.
//! - `GET /observer`: the live observer page (supervision tree, counters, recent crashes);
//!   `--observer-token TOKEN` enables its crash-reboot and rejuvenate controls.
//! - `GET /stats`: `{"carts": {"active", "max_active", "activations", "passivated_idle",
//!   "passivated_cap", "crashes", "given_up", "quarantined"}, "rss_kb"}`: live carts and the
//!   family's counters since the process started, and its resident memory.
//! - Cart ids are 1 to 64 letters, digits, `-` or `_` (`400` otherwise). A cart that crashed more
//!   than 10 times within a second is refused for a second (`503` + `Retry-After`); the others go
//!   on.
//! - `X-Request-Ttl-Ms` sets the request's TTL (1 to 60000; 2000 by default).
//!
//! Store errors say what happened: `507` no space left, `500` store corrupt, `503` store
//! restarting (with `Retry-After`), `422` an `Idempotency-Key` reused for another cart or item.
//! The store is the root's supervised child: `--store-intensity N/SECONDS` (5/30) reopenings, then
//! the process exits non-zero; `--skip-verify` skips the page verification of the first open.
//!
//! `--cluster` runs it as one node of a cluster instead (`support/cart_cluster.rs`): `--pg URL
//! --nats URL [--schema NAME] [--node-name NAME] [--lease 2s] [--rejoin-within 60s]
//! [--fence-intensity 5/60]`, the store of record PostgreSQL, any node answering for any cart; a
//! fenced node rejoins by itself as a new incarnation, and exits with status 3 past those bounds.
//!
//! `cargo run --release --bin cart -- --listen 127.0.0.1:8080 --data ./cart-data`
//! It prints `listening <addr>` once it serves (the only line on stdout; logs go to stderr).
//!
//! The front end protects itself (`support/frontend.rs`): `--max-inflight N` requests in the
//! handlers (32 per core), `--max-queue N` waiting for them (128 per core), each only as long as
//! its TTL allows, the rest shed with `503` + `Retry-After`; `--max-connections N` (4096, and at
//! most the open-files limit, which it raises to the hard limit); `--header-timeout-ms` (5000)
//! and `--body-timeout-ms` (10000) for slow clients. `--hold-ms N` is a test knob: every
//! admitted request holds its permit N ms first.

#[path = "support/cart_service.rs"]
mod cart_service;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        // With `RUST_LOG=crashonly=debug`, each handled envelope's span (actor, trace, parent).
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .init();
    cart_service::serve(std::env::args().skip(1).collect()).await
}
