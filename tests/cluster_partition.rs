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

#[path = "../examples/support/history.rs"]
mod history;
#[path = "../examples/support/http.rs"]
mod http;
#[path = "support/netns.rs"]
mod netns;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

const NODES: usize = 3;
const CLIENTS: usize = 12;
const CARTS: usize = 48;
/// The node whose link is cut.
const CUT: usize = 1;
const WARMUP: Duration = Duration::from_secs(3);
const CUT_FOR: Duration = Duration::from_secs(3);
/// How long the load goes on after the heal (past TCP's next retransmission of what was cut).
const AFTER: Duration = Duration::from_secs(6);
/// Most adds sent to the node as its link goes down.
const BURST: usize = 16;
const HTTP_TIMEOUT: Duration = Duration::from_millis(3500);

/// One node: a `cart --cluster` process in its namespace, started again as a new incarnation.
struct NodeProc {
    ns: String,
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
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.ns, env!("CARGO_BIN_EXE_cart")])
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

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
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

fn add_headers(key: &str) -> [(&str, &str); 2] {
    [("Idempotency-Key", key), ("X-Request-Ttl-Ms", "3000")]
}

/// Sends the keyed add `item` to `cart` through random nodes until it is acknowledged, honouring
/// `Retry-After`; a node that did not answer is left alone for a second (as a load balancer
/// would). Records the write and its outcome.
#[allow(clippy::too_many_arguments)]
async fn write(
    client: u32,
    cart: String,
    item: String,
    addrs: &[SocketAddr],
    avoid: &mut [Instant],
    x: &mut u64,
    seen: &Seen,
    started: Instant,
) {
    let body = format!("{{\"item\":\"{item}\"}}");
    let path = format!("/carts/{cart}/items");
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut outcome = history::Outcome::Unknown;
    while Instant::now() < give_up {
        let mut i = rand(x) % addrs.len();
        if avoid[i] > Instant::now() {
            i = (i + 1 + rand(x) % (addrs.len() - 1)) % addrs.len();
        }
        let r = http::request(
            addrs[i],
            "POST",
            &path,
            &add_headers(&item),
            body.as_bytes(),
            HTTP_TIMEOUT,
        )
        .await;
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
                avoid[i] = Instant::now() + Duration::from_secs(1);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    seen.writes.lock().unwrap().push(history::Write {
        client,
        key: cart,
        value: item,
        outcome,
    });
}

/// A client: keyed adds to random carts, one after another, until told to stop.
async fn client(id: u32, addrs: Vec<SocketAddr>, seen: Arc<Seen>, stop: Arc<AtomicBool>, started: Instant) {
    let mut x = (u64::from(id) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut avoid = vec![Instant::now(); addrs.len()];
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let cart = format!("p{}", rand(&mut x) % CARTS);
        let item = format!("{cart}:{id}:{seq}");
        seq += 1;
        write(id, cart, item, &addrs, &mut avoid, &mut x, &seen, started).await;
    }
}

/// `GET /carts/{cart}` through `addr`: the cart's items and the incarnation of its node.
async fn view(addr: SocketAddr, cart: &str) -> Option<(Vec<String>, u64)> {
    let path = format!("/carts/{cart}");
    let r = http::request(addr, "GET", &path, &[("X-Request-Ttl-Ms", "3000")], b"", HTTP_TIMEOUT).await;
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

/// The cut node's incarnation, as its `/stats` says, once it answers.
async fn stats_node(addr: SocketAddr) -> Option<u64> {
    let r = http::request(addr, "GET", "/stats", &[], b"", Duration::from_secs(1)).await;
    let r = r.ok().filter(|r| r.status == 200)?;
    serde_json::from_slice::<serde_json::Value>(&r.body).ok()?["node"].as_u64()
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
    if std::env::var("CRASHONLY_PG_URL").is_err() || std::env::var("CRASHONLY_NATS_URL").is_err() {
        eprintln!("skipped: CRASHONLY_PG_URL and CRASHONLY_NATS_URL are not both set (cart cluster under a partition)");
        return;
    }
    let pid = std::process::id();
    let tag = format!("cp{pid}");
    if let Err(e) = netns::netns_permitted(&tag) {
        panic!("this test needs network namespaces (run it as root): {e}");
    }
    let logs = std::env::temp_dir().join(format!("crashonly-{tag}"));
    std::fs::create_dir_all(&logs).unwrap();
    // Guards: dropped in reverse order, nodes first (below), then the servers, then the links.
    let net = 200 + (pid % 50) as u8;
    let links: Vec<netns::Link> = (0..NODES as u8)
        .map(|i| netns::Link::create(&tag, net, i).unwrap_or_else(|e| panic!("cannot set up the links: {e}")))
        .collect();
    let host_ips: Vec<_> = links.iter().map(|l| l.host_ip).collect();
    let nats = netns::Nats::start(&logs.join("nats.log")).expect("a private nats-server");
    let pg = netns::Pg::start(logs.join("pgdata"), logs.join("pg.log"), &host_ips).expect("a throwaway PostgreSQL");
    let schema = format!("cp_{pid}");
    let mut nodes: Vec<NodeProc> = links
        .iter()
        .enumerate()
        .map(|(i, l)| NodeProc {
            ns: l.ns.clone(),
            args: [
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
            .to_vec(),
            addr: SocketAddr::new(l.ns_ip.into(), 8080),
            log: logs.join(format!("n{i}.log")),
            child: None,
            incarnation: 0,
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
    let clients: Vec<_> = (0..CLIENTS as u32)
        .map(|i| tokio::spawn(client(i, addrs.clone(), seen.clone(), stop.clone(), started)))
        .collect();
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
    pg.mark("partition-cut").await.expect("a marker in PostgreSQL's log");
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
                let mut x = u64::from(pid) + j as u64 + 1;
                let mut avoid = vec![Instant::now(); others.len()];
                write(1000 + j as u32, cart, item, &others, &mut avoid, &mut x, &seen, started).await;
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
    let exited = match tokio::time::timeout_at(heal_at.into(), nodes[CUT].child.as_mut().unwrap().wait()).await {
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
    pg.mark("partition-healed").await.expect("a marker in PostgreSQL's log");

    // The cut node again: started afresh if it exited, else it must come back by itself.
    let rejoined = if exited.is_some() {
        nodes[CUT].child = None;
        nodes[CUT].start().await;
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
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut i = 0;
        let items = loop {
            assert!(Instant::now() < deadline, "cart {cart} could not be read back in 30 s");
            i += 1;
            if let Some((items, _)) = view(addrs[i % NODES], &cart).await {
                break items;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        state.insert(cart, items);
    }
    let verdict = history::check(&writes, &state);
    for n in &mut nodes {
        n.kill().await;
    }
    let late = late_activity(
        &pg.log(),
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
