//! litmus's clients: each writes keyed, idempotent adds to its carts, one at a time, resending
//! the same request (same idempotency key) until it is acknowledged, honouring `Retry-After`; and
//! what they saw (every write and its outcome for the history check, acknowledgements per second,
//! latencies, errors, and on a cluster which node held each cart acknowledged).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{failover, history, http, latency::Latencies};

/// What the clients saw.
#[derive(Default)]
pub struct Stats {
    /// Requests sent (every attempt).
    pub requests: AtomicU64,
    /// Writes acknowledged.
    pub acked: AtomicU64,
    /// Client-visible errors by kind.
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Every write, in each client's order: (cart, item), acknowledged or of unknown outcome.
    pub writes: Mutex<Vec<history::Write<String, String>>>,
    /// Acknowledgements per second since the start.
    pub per_second: Mutex<Vec<u64>>,
    /// Time from first attempt to acknowledgement, per write, in microseconds.
    pub latencies: Latencies,
    /// On a cluster: each acknowledgement with the node that held the cart (for failover times).
    pub acks: Mutex<Vec<failover::Ack>>,
}

impl Stats {
    fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().unwrap().entry(kind.into()).or_default() += 1;
    }
}

/// The carts client `id` of `clients` writes: its own `per_client` by default; with `carts: Some(N)`,
/// every `clients`-th of the N (so each cart has one writer), or one shared with other clients
/// when N is smaller.
pub fn carts_of(id: usize, clients: usize, per_client: usize, carts: Option<usize>) -> Vec<String> {
    match carts {
        None => (0..per_client).map(|k| format!("c{id}-{k}")).collect(),
        Some(n) if n < clients => vec![format!("c{}", id % n)],
        Some(n) => (id..n).step_by(clients).map(|k| format!("c{k}")).collect(),
    }
}

/// Client `id`: adds to `carts` in turn, or at random, until `stop`, each attempt through any of
/// `addrs`.
pub async fn client(
    id: usize,
    carts: Vec<String>,
    random: bool,
    addrs: Vec<SocketAddr>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    started: Instant,
) {
    let mut seq = 0u64;
    // Seeded by the client's id: the same choices run after run.
    let mut rng = fastrand::Rng::with_seed(id as u64 + 1);
    while !stop.load(Ordering::Relaxed) {
        let turn = if random {
            rng.usize(..carts.len())
        } else {
            seq as usize % carts.len()
        };
        let cart = carts[turn].clone();
        // Unique across clients (a cart may have several writers).
        let item = format!("{cart}:{id}:{seq}");
        seq += 1;
        let body = format!("{{\"item\":\"{item}\"}}");
        let path = format!("/carts/{cart}/items");
        // The same request, with the same idempotency key, until it is acknowledged.
        let first_attempt = Instant::now();
        let give_up = first_attempt + Duration::from_secs(30);
        loop {
            if Instant::now() > give_up {
                stats.error("gave up after 30 s");
                stats.writes.lock().unwrap().push(history::Write {
                    client: id as u32,
                    key: cart.clone(),
                    value: item.clone(),
                    outcome: history::Outcome::Unknown,
                });
                break;
            }
            let headers = [("Idempotency-Key", item.as_str()), ("X-Request-Ttl-Ms", "2000")];
            // Each attempt through any node (one, on a single process).
            let addr = addrs[rng.usize(..addrs.len())];
            let r = http::request(addr, "POST", &path, &headers, body.as_bytes(), Duration::from_secs(3)).await;
            stats.requests.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(r) if r.status == 200 => {
                    let at = started.elapsed();
                    stats.acked.fetch_add(1, Ordering::Relaxed);
                    stats.latencies.record(first_attempt.elapsed().as_micros() as u64);
                    stats.writes.lock().unwrap().push(history::Write {
                        client: id as u32,
                        key: cart.clone(),
                        value: item.clone(),
                        outcome: history::Outcome::Ok,
                    });
                    // A clustered cart names the node incarnation it lives on.
                    let holder = serde_json::from_slice::<serde_json::Value>(&r.body)
                        .ok()
                        .and_then(|v| v["node"].as_u64());
                    if let Some(holder) = holder {
                        stats.acks.lock().unwrap().push(failover::Ack {
                            at,
                            sent: first_attempt.saturating_duration_since(started),
                            cart: cart.clone(),
                            holder,
                        });
                    }
                    let sec = at.as_secs() as usize;
                    let mut ps = stats.per_second.lock().unwrap();
                    if ps.len() <= sec {
                        ps.resize(sec + 1, 0);
                    }
                    ps[sec] += 1;
                    break;
                }
                Ok(r) if r.status == 503 => {
                    stats.error("503 (Retry-After)");
                    let ms = r.headers.get("x-retry-after-ms").and_then(|v| v.parse().ok());
                    let secs = r
                        .headers
                        .get("retry-after")
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| s * 1000);
                    tokio::time::sleep(Duration::from_millis(ms.or(secs).unwrap_or(50).min(2000))).await;
                }
                Ok(r) => {
                    stats.error(format!("HTTP {}", r.status));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    stats.error(match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => "connection refused (restarting)".to_string(),
                        std::io::ErrorKind::TimedOut => "timed out".to_string(),
                        _ => "connection lost (killed)".to_string(),
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}
