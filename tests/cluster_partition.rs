//! The cart service clustered, under a network partition: three `cart --cluster` processes, each
//! in a network namespace of its own joined to the host by a veth link, with a private NATS server
//! and a throwaway PostgreSQL listening on the host side (a 1 s membership lease). Clients in the
//! test process write keyed, idempotent adds to many carts through every node. Then one node's
//! link is cut for 3 s (past its lease) while writes go on, and healed.
//!
//! Just before the cut, the test sends that node a burst of adds for carts it holds, over
//! connections opened beforehand, and cuts the node's outgoing direction first: each add reaches
//! the node, which sends its transaction to PostgreSQL into the cut. Those are writes in flight
//! when the link went down; TCP sends them again once it heals, after another node took the carts,
//! and the fences must refuse them (the history check sees a lost or duplicated add otherwise).
//!
//! Asserted: while cut, the other nodes serve every cart the cut node held (a transaction the cut
//! node left open would hold its rows' locks until the heal, were it not ended by the server's
//! `idle_in_transaction_session_timeout`, which the clustered cart sets to half its lease); the cut
//! caught transactions of the cut node midway; the cut node fences itself (it exits with status 3,
//! and is started again after the heal, or it rejoins by itself as a new incarnation); after the
//! heal every node serves; every cart read back, nothing acknowledged lost, no keyed add applied
//! twice, nothing nobody wrote. Printed: the failover times, when the node fenced itself, what its
//! old connections still sent PostgreSQL after the heal, the sessions the server ended, lock
//! waits, and the history's figures.
//!
//! Needs root (`ip netns`, `tc`), `nats-server` and PostgreSQL's binaries; follows the server
//! tests' convention and says it was skipped unless `CRASHONLY_PG_URL` and `CRASHONLY_NATS_URL`
//! are set (it uses neither server itself).

#[path = "support/cluster.rs"]
mod cluster;
#[path = "../examples/support/failover.rs"]
mod failover;
#[path = "../examples/support/history.rs"]
mod history;
#[path = "../examples/support/http.rs"]
mod http;
#[path = "support/netns.rs"]
mod netns;
#[path = "../examples/support/private_nats.rs"]
mod private_nats;
#[path = "../examples/support/throwaway_pg.rs"]
mod throwaway_pg;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{free_port, read_back, stats_node, NodeProc, Seen, Writer};
use private_nats::PrivateNats;
use throwaway_pg::{Setup, ThrowawayPg};

const NODES: usize = 3;
const CLIENTS: u32 = 12;
/// The node whose link is cut.
const CUT: usize = 1;
const WARMUP: Duration = Duration::from_secs(3);
const CUT_FOR: Duration = Duration::from_secs(3);
/// How long the load goes on after the heal (past TCP's next retransmission of what was cut).
const AFTER: Duration = Duration::from_secs(6);
/// Most adds sent to the node as its link goes down.
const BURST: usize = 16;
const HTTP_TIMEOUT: Duration = Duration::from_millis(3500);
/// Keyed adds to 48 carts through random nodes, each resent (same key) until it is
/// acknowledged, honouring `Retry-After`; a node that did not answer is left alone for a second
/// (as a load balancer would).
const LOAD: cluster::Load = cluster::Load {
    prefix: "p",
    carts: 48,
    ttl_ms: "3000",
    timeout: HTTP_TIMEOUT,
    give_up: Duration::from_secs(30),
    retry_cap: Duration::from_secs(2),
    other_wait: Duration::from_millis(20),
    error_wait: Duration::from_millis(10),
    avoid: Some(Duration::from_secs(1)),
};

fn add_headers(key: &str) -> [(&str, &str); 2] {
    [("Idempotency-Key", key), ("X-Request-Ttl-Ms", LOAD.ttl_ms)]
}

/// `GET /carts/{cart}` through `addr`: the cart's items and the incarnation of its node.
async fn view(addr: SocketAddr, cart: &str) -> Option<(Vec<String>, u64)> {
    let path = format!("/carts/{cart}");
    let r = http::request(
        addr,
        "GET",
        &path,
        &[("X-Request-Ttl-Ms", LOAD.ttl_ms)],
        b"",
        HTTP_TIMEOUT,
    )
    .await;
    let r = r.ok().filter(|r| r.status == 200)?;
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let items = v["items"]
        .as_array()?
        .iter()
        .filter_map(|i| i.as_str().map(String::from));
    Some((items.collect(), v["node"].as_u64()?))
}

/// Reads `cart` through `addrs` until `deadline`: how long it took, and the node that served it,
/// once one other than `not` does.
async fn served_by_other(addrs: Vec<SocketAddr>, cart: String, not: u64, deadline: Instant) -> Option<(Duration, u64)> {
    let start = Instant::now();
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        match view(addrs[i % addrs.len()], &cart).await {
            Some((_, node)) if node != not => return Some((start.elapsed(), node)),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    None
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// min / median / max, in ms.
fn spread(mut v: Vec<Duration>) -> serde_json::Value {
    v.sort();
    match v.len() {
        0 => serde_json::json!(null),
        n => serde_json::json!({ "min": ms(v[0]), "median": ms(v[n / 2]), "max": ms(v[n - 1]), "n": n }),
    }
}

/// From PostgreSQL's log (`%m|%h|%c|` prefixes), what happened after the cut.
#[derive(Default)]
struct Late {
    /// What the cut node's sessions that were open before the cut sent after the heal.
    statements: Vec<String>,
    /// Lock waits past `deadlock_timeout`, by anyone.
    lock_waits: u64,
    /// The cut node's sessions the server ended for sitting idle in a transaction.
    idle_ended: u64,
}

fn late_activity(log: &str, node_ip: &str, cut_marker: &str, healed_marker: &str) -> Late {
    let mut old_sessions = HashSet::new();
    let (mut cut, mut healed) = (false, false);
    let mut late = Late::default();
    for line in log.lines() {
        if line.contains(cut_marker) {
            cut = true;
        }
        if line.contains(healed_marker) {
            healed = true;
            continue;
        }
        let mut f = line.splitn(4, '|');
        let (Some(_), Some(host), Some(session), Some(rest)) = (f.next(), f.next(), f.next(), f.next()) else {
            continue;
        };
        if cut && rest.contains("still waiting for") {
            late.lock_waits += 1;
        }
        if host != node_ip {
            continue;
        }
        if !cut {
            old_sessions.insert(session.to_owned());
        } else if rest.contains("idle-in-transaction timeout") {
            late.idle_ended += 1;
        } else if healed
            && old_sessions.contains(session)
            && (rest.contains("statement: ") || rest.contains("execute "))
        {
            late.statements.push(rest.chars().take(120).collect());
        }
    }
    late
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_is_fenced_and_its_late_writes_land_nowhere() {
    if cluster::urls("cart cluster under a partition").is_none() {
        return;
    }
    let pid = std::process::id();
    let tag = format!("cp{pid}");
    if let Err(e) = netns::netns_permitted(&tag) {
        panic!("this test needs network namespaces (run it as root): {e}");
    }
    let logs = cluster::kept_dir(&tag);
    // Guards: dropped in reverse order, nodes first (below), then the servers, then the links.
    let net = 200 + (pid % 50) as u8;
    let links: Vec<netns::Link> = (0..NODES as u8)
        .map(|i| netns::Link::create(&tag, net, i).unwrap_or_else(|e| panic!("cannot set up the links: {e}")))
        .collect();
    let host_ips: Vec<_> = links.iter().map(|l| l.host_ip).collect();
    let nats = PrivateNats::start("0.0.0.0", free_port(), Some(logs.join("nats.log"))).expect("a private nats-server");
    // Every statement, with its time, client address and session: what a partitioned node's
    // connections still did after the partition healed is read from this log.
    let settings = [
        "log_statement=all",
        "log_lock_waits=on",
        "deadlock_timeout=200ms",
        "log_line_prefix='%m|%h|%c|'",
    ];
    let pg = ThrowawayPg::create(Setup {
        listen: host_ips.iter().map(|a| a.to_string()).collect(),
        settings: settings.map(String::from).to_vec(),
        hba: vec!["host all all 10.0.0.0/8 trust".into()],
        dir: Some(logs.join("pgdata")),
        log: Some(logs.join("pg.log")),
        ..Setup::default()
    })
    .expect("a throwaway PostgreSQL");
    let schema = format!("cp_{pid}");
    let mut nodes: Vec<NodeProc> = links
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let args = [
                "--cluster".to_owned(),
                "--pg".to_owned(),
                format!("postgres://postgres@{}:{}/postgres", l.host_ip, pg.port),
                "--nats".to_owned(),
                format!("nats://{}:{}", l.host_ip, nats.port),
                "--schema".to_owned(),
                schema.clone(),
                "--node-name".to_owned(),
                format!("n{i}"),
                "--lease".to_owned(),
                "1s".to_owned(),
            ]
            .to_vec();
            let addr = SocketAddr::new(l.ns_ip.into(), 8080);
            NodeProc::new(args, addr, logs.join(format!("n{i}.log"))).in_namespace(&l.ns)
        })
        .collect();
    for n in &mut nodes {
        n.start().await;
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let others: Vec<SocketAddr> = (0..NODES).filter(|&i| i != CUT).map(|i| addrs[i]).collect();

    let started = Instant::now();
    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = cluster::clients(CLIENTS, &addrs, &seen, &stop, started, LOAD);
    tokio::time::sleep(WARMUP).await;

    // The carts the node to be cut holds: those whose last acknowledgement named it.
    let old = nodes[CUT].incarnation;
    let held: Vec<String> = {
        let mut last: HashMap<&str, u64> = HashMap::new();
        let acks = seen.acks.lock().unwrap();
        for a in acks.iter() {
            last.insert(&a.cart, a.holder);
        }
        let mut held: Vec<String> = last
            .iter()
            .filter(|(_, &h)| h == old)
            .map(|(c, _)| c.to_string())
            .collect();
        held.sort();
        held
    };
    assert!(!held.is_empty(), "the node to be cut holds no cart after the warm-up");

    // Writes in flight at the cut: adds for its carts over connections opened before, sent once
    // its outgoing direction is cut (they reach it; what it sends PostgreSQL does not arrive).
    let mut conns = Vec::new();
    for cart in held.iter().take(BURST) {
        conns.push((
            cart.clone(),
            http::Conn::connect(addrs[CUT]).await.expect("a connection to the node"),
        ));
    }
    netns::mark(pg.port, "partition-cut")
        .await
        .expect("a marker in PostgreSQL's log");
    let cut_at = Instant::now();
    links[CUT].cut_from_node().expect("cut the node's outgoing direction");
    let burst: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(j, (cart, mut conn))| {
            let (seen, others) = (seen.clone(), others.clone());
            tokio::spawn(async move {
                let item = format!("{cart}:burst:{j}");
                let body = format!("{{\"item\":\"{item}\"}}");
                let path = format!("/carts/{cart}/items");
                let r = tokio::time::timeout(
                    Duration::from_secs(1),
                    conn.request("POST", &path, &add_headers(&item), body.as_bytes()),
                )
                .await;
                let answered = matches!(r, Ok(Ok(_)));
                // Its client does not know what happened: it sends the same key elsewhere.
                let seed = u64::from(pid) + j as u64 + 1;
                let mut w = Writer::new(1000 + j as u32, others, seed, LOAD, started);
                w.write(&seen, cart, item).await;
                answered
            })
        })
        .collect();
    // Long enough for the adds to cross the link and the node to send their transactions.
    tokio::time::sleep(Duration::from_millis(100)).await;
    links[CUT].cut_to_node().expect("cut the node's incoming direction");

    // While cut: the other nodes serve every cart it held.
    let heal_at = cut_at + CUT_FOR;
    let probes: Vec<_> = held
        .iter()
        .map(|c| tokio::spawn(served_by_other(others.clone(), c.clone(), old, heal_at)))
        .collect();
    // The cut node fences itself: it exits with status 3 (or stays up to rejoin by itself).
    let exited = match tokio::time::timeout_at(heal_at.into(), nodes[CUT].wait()).await {
        Ok(status) => Some((cut_at.elapsed(), status.unwrap().code())),
        Err(_) => None,
    };
    let mut failover = Vec::new();
    let mut unserved = Vec::new();
    for (p, cart) in probes.into_iter().zip(&held) {
        match p.await.unwrap() {
            Some((took, _)) => failover.push(took),
            None => unserved.push(cart.clone()),
        }
    }
    tokio::time::sleep_until(heal_at.into()).await;
    let healed_at = Instant::now();
    links[CUT].heal().expect("heal the link");
    netns::mark(pg.port, "partition-healed")
        .await
        .expect("a marker in PostgreSQL's log");

    // The cut node again: started afresh if it exited, else it must come back by itself.
    let rejoined = if exited.is_some() {
        nodes[CUT].restart().await;
        Some(healed_at.elapsed())
    } else {
        let deadline = healed_at + Duration::from_secs(10);
        let mut back = None;
        while back.is_none() && Instant::now() < deadline {
            match stats_node(addrs[CUT]).await {
                Some(n) if n != old => back = Some(healed_at.elapsed()),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        back
    };
    let new = stats_node(addrs[CUT]).await;
    // After the heal every node serves (a read through it of a cart the cut node held).
    let mut serving = Vec::new();
    for &addr in &addrs {
        let deadline = healed_at + Duration::from_secs(10);
        let mut ok = None;
        while ok.is_none() && Instant::now() < deadline {
            match view(addr, &held[0]).await {
                Some(_) => ok = Some(healed_at.elapsed()),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        serving.push(ok);
    }
    tokio::time::sleep_until((healed_at + AFTER).into()).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let mut burst_answered = 0;
    for b in burst {
        burst_answered += usize::from(b.await.unwrap());
    }

    // Every cart read back, the history judged.
    let writes = std::mem::take(&mut *seen.writes.lock().unwrap());
    let carts: HashSet<String> = writes.iter().map(|w| w.key.clone()).collect();
    let mut state = HashMap::new();
    for cart in carts {
        let items = read_back(&addrs, &cart, &LOAD).await;
        state.insert(cart, items);
    }
    let verdict = history::check(&writes, &state);
    for n in &mut nodes {
        n.kill().await;
    }
    let late = late_activity(
        &std::fs::read_to_string(pg.log_path()).unwrap_or_default(),
        &links[CUT].ns_ip.to_string(),
        "partition-cut",
        "partition-healed",
    );
    let cut_ms = ms(CUT_FOR);
    let acks = std::mem::take(&mut *seen.acks.lock().unwrap());
    let cut_window = (cut_at - started)..(healed_at - started);
    let acked_while_cut = acks.iter().filter(|a| cut_window.contains(&a.at)).count();
    let report = serde_json::json!({
        "nodes": NODES,
        "clients": CLIENTS,
        "carts": state.len(),
        "cut_ms": cut_ms,
        "held_by_cut_node": held.len(),
        "served_elsewhere_while_cut": failover.len(),
        "unserved_while_cut": unserved,
        "failover_ms": spread(failover.clone()),
        "cut_node_exit": exited.map(|(t, code)| serde_json::json!({ "after_ms": ms(t), "status": code })),
        "cut_node_back_after_heal_ms": rejoined.map(ms),
        "incarnation": { "before": old, "after": new },
        "serving_after_heal_ms": serving.iter().map(|s| s.map(ms)).collect::<Vec<_>>(),
        "burst_in_flight": BURST.min(held.len()),
        "burst_answered_by_cut_node": burst_answered,
        "late_statements_after_heal": late.statements.len(),
        "late_statements_sample": late.statements.iter().take(6).collect::<Vec<_>>(),
        "sessions_ended_idle_in_transaction": late.idle_ended,
        "lock_waits_logged": late.lock_waits,
        "requests": seen.requests.load(Ordering::Relaxed),
        "acked_while_cut": acked_while_cut,
        "writes": verdict.writes,
        "acked": verdict.acknowledged,
        "acked_lost": verdict.lost,
        "unexpected": verdict.unexpected,
        "duplicates": verdict.duplicates,
        "order_violations": verdict.order_violations,
        "client_errors": *seen.errors.lock().unwrap(),
    });
    println!("cluster_partition: {report}");
    let where_ = format!("(logs in {}): {report}", logs.display());
    assert!(
        unserved.is_empty(),
        "carts of the cut node not served elsewhere while cut {where_}"
    );
    match exited {
        Some((_, code)) => assert_eq!(code, Some(3), "the cut node exits fenced, status 3 {where_}"),
        None => assert!(rejoined.is_some(), "the cut node neither exited nor rejoined {where_}"),
    }
    assert!(
        new.is_some_and(|n| n != old),
        "the cut node serves as a new incarnation {where_}"
    );
    assert!(
        serving.iter().all(Option::is_some),
        "every node serves after the heal {where_}"
    );
    assert_eq!(burst_answered, 0, "the cut node answered through the cut {where_}");
    // The case that matters most was played: the cut caught transactions of the cut node midway
    // (the server ended them for their silence, or their next statements arrived after the heal,
    // sent again by TCP, once other nodes held the carts).
    assert!(
        late.idle_ended + late.statements.len() as u64 > 0,
        "the cut caught no transaction of the cut node in flight {where_}"
    );
    assert!(
        acked_while_cut > 0,
        "the other nodes acknowledged writes while cut {where_}"
    );
    assert!(verdict.acknowledged > 100, "progress {where_}");
    assert_eq!(verdict.lost, 0, "acknowledged adds lost {where_}");
    assert_eq!(verdict.unexpected, 0, "{where_}");
    assert_eq!(verdict.duplicates, 0, "{where_}");
    assert_eq!(verdict.order_violations, 0, "{where_}");
    drop(nodes);
    drop(pg);
    drop(nats);
    drop(links);
    let _ = std::fs::remove_dir_all(&logs);
}
