//! What the clustered cart's tests share: the server switch, `cart --cluster` processes (started,
//! killed, paused, started again as new incarnations), and clients that write keyed adds through
//! the nodes and record what was acknowledged, for the history check. Needs the test crate's
//! `http`, `history` and `failover` modules (`examples/support`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::failover::Ack;
use crate::{history, http};

/// The two servers' URLs; `None` after printing a `skipped:` line naming `what` unless both
/// `CRASHONLY_PG_URL` and `CRASHONLY_NATS_URL` are set.
pub fn urls(what: &str) -> Option<(String, String)> {
    match (std::env::var("CRASHONLY_PG_URL"), std::env::var("CRASHONLY_NATS_URL")) {
        (Ok(pg), Ok(nats)) => Some((pg, nats)),
        _ => {
            crashonly::testing::skipped(&format!(
                "CRASHONLY_PG_URL and CRASHONLY_NATS_URL are not both set ({what})"
            ));
            None
        }
    }
}

/// A TCP port free on every address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One node of the cluster: a `cart --cluster` process at a fixed address (in a network
/// namespace, if given), started again as a new incarnation after each kill. Killed on drop.
pub struct NodeProc {
    args: Vec<String>,
    ns: Option<String>,
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr (appended to by each start).
    pub log: PathBuf,
    /// Its incarnation, as its "listening" line or `/stats` last said.
    pub incarnation: u64,
}

impl NodeProc {
    /// A node run as `cart <args> --listen <addr>`, not started yet.
    pub fn new(args: Vec<String>, addr: SocketAddr, log: PathBuf) -> NodeProc {
        NodeProc {
            args,
            ns: None,
            child: None,
            addr,
            log,
            incarnation: 0,
        }
    }

    /// Runs it in network namespace `ns` (`ip netns exec`).
    pub fn in_namespace(mut self, ns: &str) -> NodeProc {
        self.ns = Some(ns.to_owned());
        self
    }

    /// Starts it and reads its "listening <addr> node <incarnation>" line (within 20 s).
    pub async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_cart")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_cart")),
        };
        let mut child = cmd
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
        let words: Vec<&str> = line.split(' ').collect();
        assert!(
            words.len() == 4 && words[0] == "listening" && words[2] == "node",
            "the node said {line:?} (log: {})",
            self.log.display()
        );
        self.incarnation = words[3].parse().unwrap();
        self.child = Some(child);
    }

    /// Whether its process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until its process exits.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.as_mut().expect("a started node").wait().await
    }

    /// SIGKILL, and wait until the process is gone.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Kills it (if it runs) and starts it again: a new incarnation.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.start().await;
    }

    /// SIGSTOP for `pause` (longer than the lease), then SIGCONT: the node finds itself fenced and
    /// must rejoin by itself, the same process serving as a new incarnation within `back_within`.
    /// How long after SIGCONT its `/stats` named the new incarnation, if it did; a node that did
    /// not come back (or exited) is killed and started again, so that the run goes on.
    pub async fn pause(&mut self, pause: Duration, back_within: Duration) -> Option<Duration> {
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
        self.restart().await;
        None
    }
}

/// The incarnation a node's `/stats` names, if it answers.
pub async fn stats_node(addr: SocketAddr) -> Option<u64> {
    let r = http::request(addr, "GET", "/stats", &[], b"", Duration::from_secs(1)).await;
    let r = r.ok().filter(|r| r.status == 200)?;
    serde_json::from_slice::<serde_json::Value>(&r.body).ok()?["node"].as_u64()
}

/// A fresh directory for a test's logs (tempfile's, `crashonly-<tag>-*`), open to the servers'
/// own users (a throwaway PostgreSQL's data may live in it). Not removed on drop: a failing test
/// leaves it for the post-mortem and names it; a passing one removes it.
pub fn kept_dir(tag: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(&format!("crashonly-{tag}-"))
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir()
        .expect("a temporary directory");
    dir.keep()
}

/// How a test's clients write.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Cart names are this and a number.
    pub prefix: &'static str,
    /// How many carts.
    pub carts: usize,
    /// The `X-Request-Ttl-Ms` header.
    pub ttl_ms: &'static str,
    /// How long a request may take.
    pub timeout: Duration,
    /// How long a write is resent before it is recorded as unknown (and how long a read back
    /// may take).
    pub give_up: Duration,
    /// The most a `Retry-After` is honoured for.
    pub retry_cap: Duration,
    /// The wait after another answer.
    pub other_wait: Duration,
    /// The wait after no answer.
    pub error_wait: Duration,
    /// How long a node that did not answer is left alone, if at all (as a load balancer would).
    pub avoid: Option<Duration>,
}

/// What the clients saw.
#[derive(Default)]
pub struct Seen {
    /// Requests sent.
    pub requests: AtomicU64,
    /// `503` answers with `Retry-After`.
    pub retry_after: AtomicU64,
    /// Every acknowledgement.
    pub acks: Mutex<Vec<Ack>>,
    /// Every write and its outcome, for the history check.
    pub writes: Mutex<Vec<history::Write<String, String>>>,
    /// Answers that were not a 200, by kind (prefixed with the phase, if one is set, except for
    /// `503 (Retry-After)`).
    pub errors: Mutex<HashMap<String, u64>>,
    /// What is happening now, for the errors' names.
    pub phase: Mutex<&'static str>,
}

/// The errors' key for a `503` with `Retry-After`.
pub const RETRY_AFTER: &str = "503 (Retry-After)";

impl Seen {
    fn error(&self, kind: String) {
        let phase = *self.phase.lock().unwrap();
        let kind = if phase.is_empty() {
            kind
        } else {
            format!("{phase}: {kind}")
        };
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
    }

    /// The answers neither a 200 nor a 503 with `Retry-After`.
    pub fn other(&self) -> HashMap<String, u64> {
        let mut e = self.errors.lock().unwrap().clone();
        e.remove(RETRY_AFTER);
        e
    }

    /// How many writes were acknowledged.
    pub fn acked(&self) -> usize {
        self.acks.lock().unwrap().len()
    }
}

/// One try of a write.
pub struct Try {
    /// Acknowledged.
    pub acked: bool,
    /// How long to wait before the next try.
    pub wait: Duration,
    /// The node answered (anything).
    pub answered: bool,
}

/// One keyed add of `item` to `cart` through `addr`, counted (`sent`: when it was first sent).
pub async fn attempt(
    seen: &Seen,
    load: &Load,
    addr: SocketAddr,
    cart: &str,
    item: &str,
    started: Instant,
    sent: Duration,
) -> Try {
    let body = format!("{{\"item\":\"{item}\"}}");
    let headers = [("Idempotency-Key", item), ("X-Request-Ttl-Ms", load.ttl_ms)];
    let path = format!("/carts/{cart}/items");
    let r = http::request(addr, "POST", &path, &headers, body.as_bytes(), load.timeout).await;
    seen.requests.fetch_add(1, Ordering::Relaxed);
    let (acked, answered) = (false, true);
    match r {
        Ok(r) if r.status == 200 => {
            let v: serde_json::Value = serde_json::from_slice(&r.body).expect("cart JSON");
            seen.acks.lock().unwrap().push(Ack {
                at: started.elapsed(),
                sent,
                cart: cart.to_owned(),
                holder: v["node"].as_u64().expect("a clustered cart names its node"),
            });
            let wait = Duration::ZERO;
            Try {
                acked: true,
                wait,
                answered,
            }
        }
        Ok(r) if r.status == 503 && r.headers.contains_key("retry-after") => {
            seen.retry_after.fetch_add(1, Ordering::Relaxed);
            *seen.errors.lock().unwrap().entry(RETRY_AFTER.into()).or_default() += 1;
            let ms = r.headers.get("x-retry-after-ms").and_then(|v| v.parse().ok());
            let wait = Duration::from_millis(ms.unwrap_or(50)).min(load.retry_cap);
            Try { acked, wait, answered }
        }
        Ok(r) => {
            seen.error(format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)));
            let wait = load.other_wait;
            Try { acked, wait, answered }
        }
        Err(e) => {
            seen.error(format!("{:?}", e.kind()));
            let wait = load.error_wait;
            Try {
                acked,
                wait,
                answered: false,
            }
        }
    }
}

/// One client's state: who it is, where it writes, its random choices.
pub struct Writer {
    id: u32,
    addrs: Vec<SocketAddr>,
    avoid: Vec<Instant>,
    rng: fastrand::Rng,
    load: Load,
    started: Instant,
}

impl Writer {
    /// Client `id` writing through `addrs`, its choices seeded by `seed`.
    pub fn new(id: u32, addrs: Vec<SocketAddr>, seed: u64, load: Load, started: Instant) -> Writer {
        let avoid = vec![Instant::now(); addrs.len()];
        Writer {
            id,
            addrs,
            avoid,
            rng: fastrand::Rng::with_seed(seed),
            load,
            started,
        }
    }

    /// Sends the keyed add `item` to `cart` through random nodes until it is acknowledged,
    /// honouring `Retry-After`, or [`Load::give_up`] has passed. Records the write and its
    /// outcome.
    pub async fn write(&mut self, seen: &Seen, cart: String, item: String) {
        let sent = self.started.elapsed();
        let give_up = Instant::now() + self.load.give_up;
        let mut outcome = history::Outcome::Unknown;
        let n = self.addrs.len();
        while Instant::now() < give_up {
            let mut i = self.rng.usize(..n);
            if n > 1 && self.avoid[i] > Instant::now() {
                i = (i + 1 + self.rng.usize(..n - 1)) % n;
            }
            let t = attempt(seen, &self.load, self.addrs[i], &cart, &item, self.started, sent).await;
            if t.acked {
                outcome = history::Outcome::Ok;
                break;
            }
            if let (false, Some(avoid)) = (t.answered, self.load.avoid) {
                self.avoid[i] = Instant::now() + avoid;
            }
            tokio::time::sleep(t.wait).await;
        }
        seen.writes.lock().unwrap().push(history::Write {
            client: self.id,
            key: cart,
            value: item,
            outcome,
        });
    }
}

/// A client: keyed adds to random carts through random nodes, one after another, until told to
/// stop.
pub async fn client(
    id: u32,
    addrs: Vec<SocketAddr>,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    started: Instant,
    load: Load,
) {
    let mut w = Writer::new(id, addrs, u64::from(id) + 1, load, started);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let cart = format!("{}{}", load.prefix, w.rng.usize(..load.carts));
        let item = format!("{cart}:{id}:{seq}");
        seq += 1;
        w.write(&seen, cart, item).await;
    }
}

/// `n` clients (ids `0..n`) spawned, writing through `addrs` until `stop`.
pub fn clients(
    n: u32,
    addrs: &[SocketAddr],
    seen: &Arc<Seen>,
    stop: &Arc<AtomicBool>,
    started: Instant,
    load: Load,
) -> Vec<tokio::task::JoinHandle<()>> {
    let spawn = |i| tokio::spawn(client(i, addrs.to_vec(), seen.clone(), stop.clone(), started, load));
    (0..n).map(spawn).collect()
}

/// Reads cart `cart` back through the nodes, in turn, within [`Load::give_up`].
pub async fn read_back(addrs: &[SocketAddr], cart: &str, load: &Load) -> Vec<String> {
    let deadline = Instant::now() + load.give_up;
    let path = format!("/carts/{cart}");
    let headers = [("X-Request-Ttl-Ms", load.ttl_ms)];
    for i in 1.. {
        assert!(
            Instant::now() < deadline,
            "cart {cart} could not be read back in {:?}",
            load.give_up
        );
        let r = http::request(addrs[i % addrs.len()], "GET", &path, &headers, b"", load.timeout).await;
        if let Some(r) = r.ok().filter(|r| r.status == 200) {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let items = v["items"].as_array().expect("a cart's items");
            return items.iter().map(|i| i.as_str().unwrap().to_owned()).collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}
