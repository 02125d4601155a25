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

#[path = "support/cluster.rs"]
mod cluster;
#[path = "../examples/support/failover.rs"]
mod failover;
#[path = "../examples/support/history.rs"]
mod history;
#[path = "../examples/support/http.rs"]
mod http;
#[path = "../examples/support/private_nats.rs"]
mod private_nats;
#[path = "../examples/support/throwaway_pg.rs"]
mod throwaway_pg;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{attempt, free_port, read_back, stats_node, NodeProc, Seen};
use private_nats::PrivateNats;
use throwaway_pg::{Setup, ThrowawayPg};

const NODES: usize = 3;
const CLIENTS: u32 = 6;
const OUTAGE: Duration = Duration::from_secs(3);
/// After a server is back, every node must serve writes again within this long.
const BACK_WITHIN: Duration = Duration::from_secs(10);
/// Keyed adds to 48 carts through random nodes, each resent (same key) until it is
/// acknowledged, honouring `Retry-After`.
const LOAD: cluster::Load = cluster::Load {
    prefix: "r",
    carts: 48,
    ttl_ms: "2000",
    timeout: Duration::from_secs(3),
    give_up: Duration::from_secs(20),
    retry_cap: Duration::from_secs(1),
    other_wait: Duration::from_millis(50),
    error_wait: Duration::from_millis(50),
    avoid: None,
};

/// How long after `since` each node acknowledged a write through itself again (a probe per node,
/// recorded in the history as client `100 + node`). Panics past [`BACK_WITHIN`].
async fn every_node_serves_writes(
    seen: &Seen,
    nodes: &[NodeProc],
    since: Instant,
    phase: &str,
    started: Instant,
) -> Vec<Duration> {
    let probes = nodes.iter().enumerate().map(|(i, n)| async move {
        let (cart, item) = (format!("r{i}"), format!("probe-{phase}-{i}"));
        let mut outcome = history::Outcome::Unknown;
        while since.elapsed() < BACK_WITHIN {
            let t = attempt(seen, &LOAD, n.addr, &cart, &item, started, since - started).await;
            if t.acked {
                outcome = history::Outcome::Ok;
                break;
            }
            tokio::time::sleep(t.wait.min(Duration::from_millis(100))).await;
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

/// A node on a free loopback port, started.
async fn node(args: Vec<String>, log: std::path::PathBuf) -> NodeProc {
    let mut n = NodeProc::new(args, SocketAddr::from(([127, 0, 0, 1], free_port())), log);
    n.start().await;
    n
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clustered_cart_rides_out_postgres_and_nats_restarts() {
    if cluster::urls("cart cluster under server restarts").is_none() {
        return;
    }
    let started = Instant::now();
    let pg = ThrowawayPg::create(Setup::default()).unwrap_or_else(|e| panic!("a throwaway PostgreSQL: {e}"));
    let mut nats = PrivateNats::start("127.0.0.1", free_port(), None).unwrap_or_else(|e| panic!("{e}"));
    let logs = cluster::kept_dir("restarts");
    let mut nodes = Vec::new();
    let (pg_url, nats_url) = (pg.url("postgres"), nats.url());
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
        nodes.push(node(args(&name), logs.join(format!("{name}.log"))).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let first: Vec<u64> = nodes.iter().map(|n| n.incarnation).collect();
    let set_up = started.elapsed();

    let seen = Arc::new(Seen::default());
    *seen.phase.lock().unwrap() = "before";
    let stop = Arc::new(AtomicBool::new(false));
    let clients = cluster::clients(CLIENTS, &addrs, &seen, &stop, started, LOAD);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked_before = seen.acked();
    assert!(
        acked_before > 10,
        "the cluster serves before any outage: {acked_before} acknowledged"
    );

    // (a) PostgreSQL crashes and stays down past the lease.
    let t = Instant::now();
    *seen.phase.lock().unwrap() = "pg down";
    tokio::task::block_in_place(|| pg.crash()).unwrap_or_else(|e| panic!("{e}"));
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
    tokio::task::block_in_place(|| pg.start()).unwrap_or_else(|e| panic!("{e}"));
    *seen.phase.lock().unwrap() = "pg back";
    let pg_outage = t.elapsed();
    let back = Instant::now();
    let pg_back = every_node_serves_writes(&seen, &nodes, back, "pg", started).await;
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
    let acked_after_pg = seen.acked();

    // (b) NATS is killed and comes back on the same port.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = Instant::now();
    *seen.phase.lock().unwrap() = "nats down";
    tokio::task::block_in_place(|| nats.kill());
    tokio::time::sleep(OUTAGE).await;
    tokio::task::block_in_place(|| nats.restart()).unwrap_or_else(|e| panic!("{e}"));
    *seen.phase.lock().unwrap() = "nats back";
    let nats_outage = t.elapsed();
    let back = Instant::now();
    let nats_back = every_node_serves_writes(&seen, &nodes, back, "nats", started).await;
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
        state.insert(cart.clone(), read_back(&addrs, &cart, &LOAD).await);
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
        "other_answers": seen.other(),
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
        seen.other().is_empty(),
        "every answer is a 200 or a 503 with Retry-After: {report}"
    );
    assert!(seen.acked() > acked_after_pg, "progress after the outages: {report}");

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
        bounded.push(node(a, logs.join(format!("{name}.log"))).await);
    }
    let t = Instant::now();
    tokio::task::block_in_place(|| pg.crash()).unwrap_or_else(|e| panic!("{e}"));
    let mut gave_up = Vec::new();
    for b in &mut bounded {
        let status = tokio::time::timeout(Duration::from_secs(8), b.wait())
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
