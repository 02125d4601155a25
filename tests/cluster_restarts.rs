//! The clustered cart while its servers restart: three `cart --cluster` processes (a 1 s
//! membership lease) on a throwaway PostgreSQL and a private `nats-server`, both on private
//! ports, with clients writing keyed adds to many carts through every node. (a) PostgreSQL is
//! stopped (`pg_ctl -m immediate`, a crash) for 3 s, past the lease, and started again: every node
//! fences itself and rejoins by itself as a new incarnation of the same process, and after
//! PostgreSQL is back each node serves writes again within a bound. (b) NATS is killed (SIGKILL)
//! and started again on the same port 3 s later: the same. Throughout, a node answers a request
//! it cannot serve with `503` and `Retry-After`, never an error without a hint, and no process
//! exits; `/health` says a node is out while it is. At the end every cart is read back and the
//! history judged: nothing acknowledged lost, no keyed add applied twice. (c) Bounded: with
//! PostgreSQL down again, a node started with `--rejoin-within 1s` and one with
//! `--fence-intensity 0/60` give up with status 3, while the others keep trying.
//!
//! Needs `CRASHONLY_PG_URL` and `CRASHONLY_NATS_URL` to be set (the switch CI uses for the
//! server suites; without them it says it was skipped), PostgreSQL's binaries (`pg_config
//! --bindir`), `nats-server`, and root (to run PostgreSQL as the `postgres` user). It uses neither
//! shared server: it kills and restarts its own.

#[path = "../examples/support/history.rs"]
mod history;
#[path = "../examples/support/http.rs"]
mod http;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::{Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const NODES: usize = 3;
const CLIENTS: usize = 6;
const CARTS: usize = 48;
const OUTAGE: Duration = Duration::from_secs(3);
/// After a server is back, every node must serve writes again within this long.
const BACK_WITHIN: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn su(cmd: &str) -> std::process::Output {
    StdCommand::new("su")
        .args(["postgres", "-s", "/bin/sh", "-c", cmd])
        .output()
        .expect("su runs")
}

/// A throwaway PostgreSQL cluster on a private port; stopped and removed on drop.
struct Pg {
    dir: std::path::PathBuf,
    bin: String,
    port: u16,
}

impl Pg {
    fn create() -> Pg {
        let bin = StdCommand::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("pg_config");
        let dir = std::env::temp_dir().join(format!("crashonly-restarts-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chown = StdCommand::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success(), "chown (this test runs as root)");
        // The guard exists before initdb, so that a failure below still removes the directory.
        let pg = Pg {
            dir,
            bin: String::from_utf8(bin.stdout).unwrap().trim().to_owned(),
            port: free_port(),
        };
        let out = su(&format!(
            "{}/initdb -D {}/data -U postgres -A trust --no-sync",
            pg.bin,
            pg.dir.display()
        ));
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        pg.start();
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let (d, b, p) = (self.dir.display(), &self.bin, self.port);
        let out = su(&format!(
            "{b}/pg_ctl -D {d}/data -l {d}/pg.log -w -t 30 -o \"-c listen_addresses=127.0.0.1 -p {p} -k {d}\" start"
        ));
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A crash of the server: no shutdown checkpoint, connections cut.
    fn crash(&self) {
        let out = su(&format!(
            "{}/pg_ctl -D {}/data -m immediate -w stop",
            self.bin,
            self.dir.display()
        ));
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        su(&format!(
            "{}/pg_ctl -D {}/data -m immediate -w stop",
            self.bin,
            self.dir.display()
        ));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private `nats-server` on a fixed port; killed on drop.
struct Nats {
    port: u16,
    child: Option<std::process::Child>,
}

impl Nats {
    fn start(port: u16) -> Nats {
        let mut n = Nats { port, child: None };
        n.restart();
        n
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = StdCommand::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "nats-server listens within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `cart --cluster` process (killed on drop).
struct NodeProc {
    addr: SocketAddr,
    child: Child,
    incarnation: u64,
}

impl NodeProc {
    async fn start(args: &[String], log: &std::path::Path) -> NodeProc {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log_file = std::fs::File::create(log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cart"))
            .args(args)
            .args(["--listen", &addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
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
            words.len() == 4 && words[0] == "listening",
            "the node said {line:?} (log: {})",
            log.display()
        );
        NodeProc {
            addr,
            child,
            incarnation: words[3].parse().unwrap(),
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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

#[derive(Default)]
struct Seen {
    /// What is happening now (for the answers that are neither 200 nor 503): see [`PHASES`].
    phase: std::sync::atomic::AtomicUsize,
    requests: AtomicU64,
    acks: AtomicU64,
    /// 503 answers with `Retry-After`.
    retry_after: AtomicU64,
    /// Anything else that is not a 200: (status or error, body).
    other: Mutex<HashMap<String, u64>>,
    writes: Mutex<Vec<history::Write<String, String>>>,
}

const PHASES: [&str; 5] = ["before", "pg down", "pg back", "nats down", "nats back"];

fn rand(x: &mut u64) -> usize {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x as usize
}

/// One keyed add through `addr`, counted; whether it was acknowledged, and the wait asked for.
async fn add(seen: &Seen, addr: SocketAddr, cart: &str, item: &str) -> (bool, Duration) {
    let body = format!("{{\"item\":\"{item}\"}}");
    let headers = [("Idempotency-Key", item), ("X-Request-Ttl-Ms", "2000")];
    let path = format!("/carts/{cart}/items");
    let r = http::request(addr, "POST", &path, &headers, body.as_bytes(), Duration::from_secs(3)).await;
    seen.requests.fetch_add(1, Ordering::Relaxed);
    match r {
        Ok(r) if r.status == 200 => {
            seen.acks.fetch_add(1, Ordering::Relaxed);
            (true, Duration::ZERO)
        }
        Ok(r) if r.status == 503 && r.headers.contains_key("retry-after") => {
            seen.retry_after.fetch_add(1, Ordering::Relaxed);
            let ms = r.headers.get("x-retry-after-ms").and_then(|v| v.parse().ok());
            (false, Duration::from_millis(ms.unwrap_or(50).min(1000)))
        }
        other => {
            let what = match other {
                Ok(r) => format!("HTTP {}: {}", r.status, String::from_utf8_lossy(&r.body)),
                Err(e) => format!("{:?}", e.kind()),
            };
            let phase = PHASES[seen.phase.load(Ordering::Relaxed)];
            *seen
                .other
                .lock()
                .unwrap()
                .entry(format!("{phase}: {what}"))
                .or_default() += 1;
            (false, Duration::from_millis(50))
        }
    }
}

/// A client: keyed adds to random carts through random nodes, each resent (same key) until it is
/// acknowledged, honouring `Retry-After`.
async fn client(id: usize, addrs: Vec<SocketAddr>, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let mut x = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let cart = format!("r{}", rand(&mut x) % CARTS);
        let item = format!("{cart}:{id}:{seq}");
        seq += 1;
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut outcome = history::Outcome::Unknown;
        while Instant::now() < give_up {
            let (acked, wait) = add(&seen, addrs[rand(&mut x) % addrs.len()], &cart, &item).await;
            if acked {
                outcome = history::Outcome::Ok;
                break;
            }
            tokio::time::sleep(wait).await;
        }
        seen.writes.lock().unwrap().push(history::Write {
            client: id as u32,
            key: cart,
            value: item,
            outcome,
        });
    }
}

/// How long after `since` each node acknowledged a write through itself again (a probe per node,
/// recorded in the history as client `100 + node`). Panics past [`BACK_WITHIN`].
async fn every_node_serves_writes(seen: &Seen, nodes: &[NodeProc], since: Instant, phase: &str) -> Vec<Duration> {
    let probes = nodes.iter().enumerate().map(|(i, n)| async move {
        let (cart, item) = (format!("r{i}"), format!("probe-{phase}-{i}"));
        let mut outcome = history::Outcome::Unknown;
        while since.elapsed() < BACK_WITHIN {
            let (acked, wait) = add(seen, n.addr, &cart, &item).await;
            if acked {
                outcome = history::Outcome::Ok;
                break;
            }
            tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
        }
        let back = since.elapsed();
        seen.writes.lock().unwrap().push(history::Write {
            client: 100 + i as u32,
            key: cart,
            value: item,
            outcome,
        });
        assert!(
            matches!(outcome, history::Outcome::Ok),
            "{phase}: node {i} did not serve a write within {BACK_WITHIN:?} of the server's return"
        );
        back
    });
    futures::future::join_all(probes).await
}

/// Reads cart `cart` back through the nodes.
async fn read_back(addrs: &[SocketAddr], cart: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        assert!(Instant::now() < deadline, "cart {cart} could not be read back in 20 s");
        let path = format!("/carts/{cart}");
        let headers = [("X-Request-Ttl-Ms", "2000")];
        if let Ok(r) = http::request(
            addrs[i % addrs.len()],
            "GET",
            &path,
            &headers,
            b"",
            Duration::from_secs(3),
        )
        .await
        {
            if r.status == 200 {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                let items = v["items"].as_array().expect("a cart's items");
                return items.iter().map(|i| i.as_str().unwrap().to_owned()).collect();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!()
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clustered_cart_rides_out_postgres_and_nats_restarts() {
    if std::env::var("CRASHONLY_PG_URL").is_err() || std::env::var("CRASHONLY_NATS_URL").is_err() {
        eprintln!(
            "skipped: CRASHONLY_PG_URL and CRASHONLY_NATS_URL are not both set (cart cluster under server restarts)"
        );
        return;
    }
    let started = Instant::now();
    let pg = Pg::create();
    let mut nats = Nats::start(free_port());
    let logs = std::env::temp_dir().join(format!("crashonly-restarts-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let mut nodes = Vec::new();
    let (pg_url, nats_url) = (pg.url(), nats.url());
    let args = |name: &str| -> Vec<String> {
        let args = [
            "--cluster",
            "--pg",
            &pg_url,
            "--nats",
            &nats_url,
            "--schema",
            "restarts",
        ];
        let args = args.into_iter().chain(["--node-name", name, "--lease", "1s"]);
        args.map(String::from).collect()
    };
    for i in 0..NODES {
        let name = format!("n{i}");
        nodes.push(NodeProc::start(&args(&name), &logs.join(format!("{name}.log"))).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let first: Vec<u64> = nodes.iter().map(|n| n.incarnation).collect();
    let set_up = started.elapsed();

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client(i, addrs.clone(), seen.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked_before = seen.acks.load(Ordering::Relaxed);
    assert!(
        acked_before > 10,
        "the cluster serves before any outage: {acked_before} acknowledged"
    );

    // (a) PostgreSQL crashes and stays down past the lease.
    let t = Instant::now();
    seen.phase.store(1, Ordering::Relaxed);
    tokio::task::block_in_place(|| pg.crash());
    let stopped_in = t.elapsed();
    // While out, `/health` says so, and why.
    let mut out_said = HashSet::new();
    while t.elapsed() < OUTAGE {
        for (i, n) in nodes.iter().enumerate() {
            if let Ok(r) = http::request(n.addr, "GET", "/health", &[], b"", Duration::from_secs(1)).await {
                let body = String::from_utf8_lossy(&r.body);
                if r.status == 503 && body.contains("out of the cluster") {
                    out_said.insert(i);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        out_said.len(),
        NODES,
        "every node's /health said it was out during the outage"
    );
    tokio::task::block_in_place(|| pg.start());
    seen.phase.store(2, Ordering::Relaxed);
    let pg_outage = t.elapsed();
    let back = Instant::now();
    let pg_back = every_node_serves_writes(&seen, &nodes, back, "pg").await;
    // Every node was fenced (nothing could renew for 3 leases) and came back by itself.
    let mut rejoined = Vec::new();
    for n in &mut nodes {
        assert!(
            n.running(),
            "a node exited during the PostgreSQL outage (logs in {})",
            logs.display()
        );
        let now = stats_node(n.addr).await.expect("/stats answers");
        assert!(
            now > n.incarnation,
            "node {} was fenced and rejoined as a new incarnation",
            n.incarnation
        );
        rejoined.push(now);
        n.incarnation = now;
    }
    let acked_after_pg = seen.acks.load(Ordering::Relaxed);

    // (b) NATS is killed and comes back on the same port.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    seen.phase.store(3, Ordering::Relaxed);
    tokio::task::block_in_place(|| nats.kill());
    tokio::time::sleep(OUTAGE).await;
    tokio::task::block_in_place(|| nats.restart());
    seen.phase.store(4, Ordering::Relaxed);
    let nats_outage = t.elapsed();
    let back = Instant::now();
    let nats_back = every_node_serves_writes(&seen, &nodes, back, "nats").await;
    for n in &mut nodes {
        assert!(
            n.running(),
            "a node exited during the NATS outage (logs in {})",
            logs.display()
        );
    }
    let mut after_nats = Vec::new();
    for n in &nodes {
        after_nats.push(stats_node(n.addr).await.expect("/stats answers"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }

    let writes = std::mem::take(&mut *seen.writes.lock().unwrap());
    let carts: HashSet<String> = writes.iter().map(|w| w.key.clone()).collect();
    let mut state = HashMap::new();
    for cart in carts {
        state.insert(cart.clone(), read_back(&addrs, &cart).await);
    }
    let verdict = history::check(&writes, &state);
    let report = serde_json::json!({
        "set_up_ms": ms(set_up),
        "pg_stop_ms": ms(stopped_in),
        "pg_outage_ms": ms(pg_outage),
        "pg_every_node_writes_again_ms": pg_back.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        "incarnations": { "start": first, "after_pg": rejoined, "after_nats": after_nats },
        "nats_outage_ms": ms(nats_outage),
        "nats_every_node_writes_again_ms": nats_back.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
        "requests": seen.requests.load(Ordering::Relaxed),
        "acked_before_pg": acked_before,
        "acked_after_pg": acked_after_pg,
        "acked": verdict.acknowledged,
        "writes": verdict.writes,
        "acked_lost": verdict.lost,
        "duplicates": verdict.duplicates,
        "unexpected": verdict.unexpected,
        "503_retry_after": seen.retry_after.load(Ordering::Relaxed),
        "other_answers": *seen.other.lock().unwrap(),
        "total_s": started.elapsed().as_secs_f64(),
    });
    println!("cluster_restarts: {report}");
    assert_eq!(
        verdict.lost,
        0,
        "acknowledged adds lost (logs in {}): {report}",
        logs.display()
    );
    assert_eq!(verdict.duplicates, 0, "{report}");
    assert_eq!(verdict.unexpected, 0, "{report}");
    assert!(
        seen.retry_after.load(Ordering::Relaxed) > 0,
        "the outages were seen as 503 + Retry-After: {report}"
    );
    assert!(
        seen.other.lock().unwrap().is_empty(),
        "every answer is a 200 or a 503 with Retry-After: {report}"
    );
    assert!(
        seen.acks.load(Ordering::Relaxed) > acked_after_pg,
        "progress after the outages: {report}"
    );

    // (c) Bounded, never infinite: a node that cannot rejoin within `--rejoin-within`, and one
    // fenced more often than `--fence-intensity` allows, give up with status 3; the others,
    // within their bounds (60 s, 5 in 60 s), go on trying.
    let mut bounded = Vec::new();
    for (name, flags) in [
        ("impatient", ["--rejoin-within", "1s"]),
        ("fragile", ["--fence-intensity", "0/60"]),
    ] {
        let mut a = args(name);
        a.extend(flags.map(String::from));
        bounded.push(NodeProc::start(&a, &logs.join(format!("{name}.log"))).await);
    }
    let t = Instant::now();
    tokio::task::block_in_place(|| pg.crash());
    let mut gave_up = Vec::new();
    for b in &mut bounded {
        let status = tokio::time::timeout(Duration::from_secs(8), b.child.wait())
            .await
            .expect("a node past its bound exits within 8 s of the crash")
            .unwrap();
        gave_up.push(t.elapsed());
        assert_eq!(status.code(), Some(3), "fenced and gave up: status 3 ({status})");
    }
    for n in &mut nodes {
        assert!(n.running(), "a node within its bounds keeps trying");
    }
    let log = |name: &str| std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap();
    assert!(
        log("impatient").contains("could not rejoin within 1 s"),
        "{}",
        log("impatient")
    );
    assert!(
        log("fragile").contains("fenced 1 times within 60 s: giving up"),
        "{}",
        log("fragile")
    );
    println!(
        "cluster_restarts: past their bounds, the nodes had exited with status 3 {} ms (--rejoin-within 1s) and {} ms (--fence-intensity 0/60) after the crash",
        ms(gave_up[0]),
        ms(gave_up[1])
    );
    let _ = std::fs::remove_dir_all(&logs);
}
