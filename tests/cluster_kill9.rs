//! The cart service clustered, under kill -9: three `cart --cluster` processes (one PostgreSQL
//! store of record, NATS between them, a 1 s membership lease), clients writing keyed, idempotent
//! adds to many carts through random nodes, and a random node killed with SIGKILL every 1.5 s and
//! restarted at once (a new incarnation); every fourth time the node is paused (SIGSTOP) for 2 s
//! instead, past its lease: once it runs again it finds itself fenced, crashes its carts and
//! rejoins by itself as a new incarnation of the same process (its `/stats` "node" changes, the
//! harness restarts nothing), while its late writes are refused by their fences. At the end every
//! cart is read back through a live node and the history judged: every acknowledged add present
//! exactly once, nothing nobody wrote.
//!
//! `litmus --cluster` runs too, briefly, with its own history check. And in one process, the
//! fence itself: a cart whose fence a newer activation took acknowledges
//! no write and serves nothing more.
//!
//! Needs `CRASHONLY_PG_URL` and `CRASHONLY_NATS_URL` (without them it says it was skipped).
//! `CLUSTER_KILL9_SECS` sets the length of the run (15 s).

#[allow(dead_code)]
#[path = "../examples/support/cart_service.rs"]
mod cart_service;
#[path = "../examples/support/history.rs"]
mod history;
#[path = "../examples/support/http.rs"]
mod http;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const NODES: usize = 3;
const CLIENTS: usize = 12;
const CARTS: usize = 48;
const KILL_EVERY: Duration = Duration::from_millis(1500);
/// Every this many faults, the node is paused past its lease instead of killed.
const PAUSE_EVERY: usize = 4;
const PAUSE: Duration = Duration::from_millis(2000);

fn urls() -> Option<(String, String)> {
    match (std::env::var("CRASHONLY_PG_URL"), std::env::var("CRASHONLY_NATS_URL")) {
        (Ok(pg), Ok(nats)) => Some((pg, nats)),
        _ => {
            eprintln!("skipped: CRASHONLY_PG_URL and CRASHONLY_NATS_URL are not both set (cart cluster under kill -9)");
            None
        }
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// One node of the cluster: a `cart --cluster` process at a fixed address, restarted as a new
/// incarnation after each kill.
struct NodeProc {
    args: Vec<String>,
    addr: SocketAddr,
    log: std::path::PathBuf,
    child: Option<Child>,
    incarnation: u64,
}

impl NodeProc {
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cart"))
            .args(&self.args)
            .args(["--listen", &self.addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a node starts within 20 s")
            .unwrap()
            .unwrap_or_default();
        // "listening <addr> node <incarnation>"
        let words: Vec<&str> = line.split(' ').collect();
        assert!(
            words.len() == 4 && words[0] == "listening" && words[2] == "node",
            "the node said {line:?} (log: {})",
            self.log.display()
        );
        self.incarnation = words[3].parse().unwrap();
        self.child = Some(child);
    }

    /// SIGSTOP for `pause` (longer than the lease), then SIGCONT: the node finds itself fenced and
    /// must rejoin by itself, the same process serving as a new incarnation within `back_within`.
    /// How long after SIGCONT its `/stats` named the new incarnation, if it did; a node that did
    /// not come back (or exited) is killed and started again, so that the run goes on.
    async fn pause(&mut self, pause: Duration, back_within: Duration) -> Option<Duration> {
        let child = self.child.as_mut().unwrap();
        let pid = child.id().unwrap() as libc::pid_t;
        // SAFETY: plain signals to our own child, which has not been reaped.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        tokio::time::sleep(pause).await;
        unsafe { libc::kill(pid, libc::SIGCONT) };
        let resumed = Instant::now();
        while resumed.elapsed() < back_within {
            if !matches!(child.try_wait(), Ok(None)) {
                break; // exited: it did not rejoin
            }
            match stats_node(self.addr).await {
                Some(inc) if inc > self.incarnation => {
                    self.incarnation = inc;
                    return Some(resumed.elapsed());
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        self.kill().await;
        self.start().await;
        None
    }

    /// SIGKILL, and wait until the process is gone.
    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

/// The incarnation a node's `/stats` names, if it answers.
async fn stats_node(addr: SocketAddr) -> Option<u64> {
    let r = http::request(addr, "GET", "/stats", &[], b"", Duration::from_secs(1))
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    v["node"].as_u64()
}

/// One acknowledgement: when (since the start), which cart, which node incarnation held it.
struct Ack {
    at: Duration,
    cart: String,
    holder: u64,
}

#[derive(Default)]
struct Seen {
    requests: AtomicU64,
    acks: Mutex<Vec<Ack>>,
    writes: Mutex<Vec<history::Write<String, String>>>,
    errors: Mutex<HashMap<String, u64>>,
}

impl Seen {
    fn error(&self, kind: String) {
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
    }
}

fn rand(x: &mut u64) -> usize {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x as usize
}

/// A client: keyed adds to random carts through random nodes, each resent (same key) until it is
/// acknowledged, honouring `Retry-After`, as the litmus clients do.
async fn client(id: usize, addrs: Vec<SocketAddr>, seen: Arc<Seen>, stop: Arc<AtomicBool>, started: Instant) {
    let mut x = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let cart = format!("k{}", rand(&mut x) % CARTS);
        let item = format!("{cart}:{id}:{seq}");
        seq += 1;
        let body = format!("{{\"item\":\"{item}\"}}");
        let path = format!("/carts/{cart}/items");
        let give_up = Instant::now() + Duration::from_secs(30);
        let mut outcome = history::Outcome::Unknown;
        while Instant::now() < give_up {
            let addr = addrs[rand(&mut x) % addrs.len()];
            let headers = [("Idempotency-Key", item.as_str()), ("X-Request-Ttl-Ms", "3000")];
            let r = http::request(addr, "POST", &path, &headers, body.as_bytes(), Duration::from_secs(4)).await;
            seen.requests.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(r) if r.status == 200 => {
                    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("cart JSON");
                    seen.acks.lock().unwrap().push(Ack {
                        at: started.elapsed(),
                        cart: cart.clone(),
                        holder: v["node"].as_u64().expect("a clustered cart names its node"),
                    });
                    outcome = history::Outcome::Ok;
                    break;
                }
                Ok(r) if r.status == 503 => {
                    seen.error("503 (Retry-After)".into());
                    let ms = r.headers.get("x-retry-after-ms").and_then(|v| v.parse().ok());
                    tokio::time::sleep(Duration::from_millis(ms.unwrap_or(50).min(2000))).await;
                }
                Ok(r) => {
                    seen.error(format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    seen.error(format!("{:?}", e.kind()));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        seen.writes.lock().unwrap().push(history::Write {
            client: id as u32,
            key: cart,
            value: item,
            outcome,
        });
    }
}

/// Reads cart `cart` back through the live nodes.
async fn read_back(addrs: &[SocketAddr], cart: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        assert!(Instant::now() < deadline, "cart {cart} could not be read back in 30 s");
        i += 1;
        let r = http::request(
            addrs[i % addrs.len()],
            "GET",
            &format!("/carts/{cart}"),
            &[("X-Request-Ttl-Ms", "3000")],
            b"",
            Duration::from_secs(4),
        )
        .await;
        if let Ok(r) = r {
            if r.status == 200 {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                return v["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_str().unwrap().to_owned())
                    .collect();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// min / median / max, in ms.
fn spread(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    match v.len() {
        0 => (0.0, 0.0, 0.0),
        n => (ms(v[0]), ms(v[n / 2]), ms(v[n - 1])),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clustered_cart_loses_nothing_acknowledged_when_nodes_are_killed() {
    let Some((pg, nats)) = urls() else { return };
    let secs: u64 = std::env::var("CLUSTER_KILL9_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let schema = format!("kc_{}", std::process::id());
    let logs = std::env::temp_dir().join(format!("crashonly-{schema}"));
    std::fs::create_dir_all(&logs).unwrap();
    let mut nodes: Vec<NodeProc> = (0..NODES)
        .map(|i| NodeProc {
            args: [
                "--cluster",
                "--pg",
                &pg,
                "--nats",
                &nats,
                "--schema",
                &schema,
                "--node-name",
                &format!("n{i}"),
                "--lease",
                "1s",
            ]
            .map(String::from)
            .to_vec(),
            addr: free_port(),
            log: logs.join(format!("n{i}.log")),
            child: None,
            incarnation: 0,
        })
        .collect();
    for n in &mut nodes {
        n.start().await;
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();

    let started = Instant::now();
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client(i, addrs.clone(), seen.clone(), stop.clone(), started)))
        .collect();

    // The faultload: kill -9 a random node every 1.5 s, restart it at once.
    let mut kills: Vec<(Duration, u64)> = Vec::new();
    let mut restarts: Vec<Duration> = Vec::new();
    let mut x = u64::from(std::process::id()) | 1;
    let (mut pauses, mut rejoins) = (0, Vec::new());
    let mut next_kill = started + KILL_EVERY;
    while next_kill < started + Duration::from_secs(secs) {
        tokio::time::sleep_until(next_kill.into()).await;
        let n = &mut nodes[rand(&mut x) % NODES];
        if (kills.len() + pauses + 1).is_multiple_of(PAUSE_EVERY) {
            // A paused process (a long GC, a stalled VM): its carts move on, and its late writes
            // are refused by their fences; it must notice it is out, and come back by itself.
            pauses += 1;
            rejoins.extend(n.pause(PAUSE, Duration::from_secs(3)).await);
            next_kill = Instant::now() + KILL_EVERY;
            continue;
        }
        let at = started.elapsed();
        let victim = n.incarnation;
        n.kill().await;
        kills.push((at, victim));
        n.start().await;
        restarts.push(started.elapsed() - at);
        next_kill = (started + at + KILL_EVERY).max(Instant::now());
    }
    tokio::time::sleep_until((started + Duration::from_secs(secs)).into()).await;
    let load_ended = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    // Read every cart back through the live nodes and judge the history.
    let writes = std::mem::take(&mut *seen.writes.lock().unwrap());
    let carts: HashSet<String> = writes.iter().map(|w| w.key.clone()).collect();
    let mut state = HashMap::new();
    for cart in carts {
        let items = read_back(&addrs, &cart).await;
        state.insert(cart, items);
    }
    let verdict = history::check(&writes, &state);
    for n in &mut nodes {
        n.kill().await;
    }
    // Writes the store refused because a newer activation had the cart (each a crash).
    let fenced_out_writes: usize = nodes
        .iter()
        .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
        .map(|log| log.matches("fenced out by a newer activation").count())
        .sum();

    // Failover: for each kill, the carts the killed node held (their last acknowledgement before
    // the kill named it) and when each was acknowledged again (by its new holder).
    let acks = std::mem::take(&mut *seen.acks.lock().unwrap());
    let (mut first_back, mut all_back) = (Vec::new(), Vec::new());
    for &(at, victim) in &kills {
        let mut last: HashMap<&str, u64> = HashMap::new();
        for a in acks.iter().filter(|a| a.at < at) {
            last.insert(&a.cart, a.holder);
        }
        let held: Vec<&str> = last.iter().filter(|(_, &h)| h == victim).map(|(c, _)| *c).collect();
        let back: Vec<Duration> = held
            .iter()
            .filter_map(|c| {
                acks.iter()
                    .find(|a| a.at > at && a.cart == *c && a.holder != victim)
                    .map(|a| a.at - at)
            })
            .collect();
        if let (Some(first), Some(all)) = (back.iter().min(), back.iter().max()) {
            first_back.push(*first);
            all_back.push(*all);
        }
    }
    let (f_min, f_med, f_max) = spread(first_back);
    let (a_min, a_med, a_max) = spread(all_back);
    let (r_min, r_med, r_max) = spread(restarts);
    let rejoined = rejoins.len();
    let (j_min, j_med, j_max) = spread(rejoins);
    let mut by_holder: HashMap<u64, u64> = HashMap::new();
    for a in &acks {
        *by_holder.entry(a.holder).or_default() += 1;
    }
    let acked = verdict.acknowledged;
    let report = serde_json::json!({
        "nodes": NODES,
        "clients": CLIENTS,
        "carts": state.len(),
        "duration_s": load_ended.as_secs_f64(),
        "kills": kills.len(),
        "pauses": pauses,
        "rejoined": rejoined,
        "rejoin_ms": { "min": j_min, "median": j_med, "max": j_max },
        "fenced_out_writes": fenced_out_writes,
        "requests": seen.requests.load(Ordering::Relaxed),
        "writes": verdict.writes,
        "acked": acked,
        "acked_per_s": acked as f64 / load_ended.as_secs_f64(),
        "acked_lost": verdict.lost,
        "unexpected": verdict.unexpected,
        "duplicates": verdict.duplicates,
        "order_violations": verdict.order_violations,
        "failover_first_ms": { "min": f_min, "median": f_med, "max": f_max },
        "failover_all_ms": { "min": a_min, "median": a_med, "max": a_max },
        "restart_ms": { "min": r_min, "median": r_med, "max": r_max },
        "acks_by_holder": by_holder.iter().map(|(k, v)| (k.to_string(), *v)).collect::<HashMap<_, _>>(),
        "client_errors": *seen.errors.lock().unwrap(),
    });
    println!("cluster_kill9: {report}");
    assert!(kills.len() >= 4 && pauses >= 1, "{report}");
    assert_eq!(
        rejoined, pauses,
        "a node paused past its lease rejoins by itself as a new incarnation: {report}"
    );
    assert!(acked > 100, "progress: {report}");
    assert_eq!(
        verdict.lost,
        0,
        "acknowledged adds lost (logs in {}): {report}",
        logs.display()
    );
    assert_eq!(verdict.unexpected, 0, "{report}");
    assert_eq!(verdict.duplicates, 0, "{report}");
    assert_eq!(verdict.order_violations, 0, "{report}");
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cart_fenced_out_by_a_newer_activation_acknowledges_nothing() {
    use cart_service::{family_on, Cart, CartMessage, CartReply, Residency, FAMILY};
    use crashonly::prelude::*;
    use crashonly::store::{PgOptions, PgStore, Store, WallClock};
    use crashonly_cluster::{Fence, MembershipOptions, Node, NodeOptions};

    let Some((pg, nats)) = urls() else { return };
    let schema = format!("kf_{}", std::process::id());
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(&pg, PgOptions::default().with_schema(format!("{schema}_store")))
            .await
            .unwrap(),
    );
    let membership = MembershipOptions::default()
        .with_schema(schema)
        .with_lease(Duration::from_secs(1));
    let node = Node::start(&pg, NodeOptions::new(membership, &nats)).await.unwrap();
    let carts = family_on(
        store.clone(),
        Arc::new(WallClock),
        Residency::default(),
        Some(node.clone()),
    );
    let system = System::builder()
        .config(Config::default().with_exit_on_failure(None))
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(carts))
        .start()
        .unwrap();
    node.serve(FAMILY, system.entities::<Cart>("/carts").unwrap()).unwrap();
    let cart = node.entity::<Cart>(FAMILY, "f1".into());
    let add = |item: &str| CartMessage::Add(item.into(), Some(format!("f1-{item}")));
    let r = cart.ask(add("a")).send().await;
    assert!(
        matches!(r, Ok(CartReply::Add(Ok(_)))),
        "the owner's write is acknowledged"
    );

    // A newer activation elsewhere records a greater token as the cart's fence.
    let token = node.token(FAMILY, "f1").expect("the node holds the cart");
    Fence::acquire(&*store, FAMILY, "f1", token + 1_000).await.unwrap();
    let r = cart.ask(add("b")).ttl(Duration::from_secs(2)).send().await;
    assert!(
        matches!(r, Err(DeliveryError::Crashed(_))),
        "a write refused by the fence is a crash, not an acknowledgement: {:?}",
        r.map(|_| "acknowledged")
    );
    // Nor does the old owner serve the cart any more: its next activation is refused at start.
    let r = cart.ask(CartMessage::View()).ttl(Duration::from_secs(1)).send().await;
    assert!(r.is_err(), "a stale owner served a read");
    let stored = store.get(b"cart/f1").await.unwrap().expect("the first add is stored");
    let v: serde_json::Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(
        v["items"],
        serde_json::json!(["a"]),
        "only the acknowledged add is stored"
    );
}

#[test]
fn litmus_runs_clustered_and_loses_nothing_acknowledged() {
    if urls().is_none() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_litmus"))
        .args(["--cluster", "--nodes", "3", "--duration", "6s", "--kill-every", "1s"])
        .args(["--clients", "8", "--carts", "32", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "litmus printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    println!("litmus --cluster: {r}");
    assert_eq!(r["nodes"], 3, "{r}");
    assert!(r["kills"].as_u64().unwrap() >= 3, "{r}");
    assert!(r["acked"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["acked_lost"], 0, "{r}");
    assert_eq!(r["unexpected"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert_eq!(out.status.code(), Some(0), "{r}");
}
