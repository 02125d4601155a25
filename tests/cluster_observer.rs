//! The clustered cart serves what the single-process one serves for operators: the observer page
//! with the cluster's nodes view and recent failovers, and `/metrics`, `/healthz`, `/readyz`.
//!
//! Two `cart --cluster` processes (1 s lease): each page lists both live nodes, marks itself, and
//! counts the carts each holds; after one is killed with SIGKILL, the survivor's page lists it
//! under recent failovers (its lease ran out) and no more as live. The metrics endpoint is
//! scraped and parsed with a Prometheus text-format parser.
//!
//! Needs `CRASHONLY_PG_URL` and `CRASHONLY_NATS_URL` (without them it says it was skipped).

#[path = "support/cluster.rs"]
mod cluster;
#[path = "../examples/support/failover.rs"]
mod failover;
#[path = "../examples/support/history.rs"]
mod history;
#[path = "../examples/support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cluster::{free_port, NodeProc};
use serde_json::Value;

async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let r = http::request(addr, "GET", path, &[], b"", Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (r.status, r.body)
}

/// The page's panel called `title` in `addr`'s current frame.
async fn panel(addr: SocketAddr, title: &str) -> Value {
    let (status, body) = get(addr, "/observer/api/tree").await;
    assert_eq!(status, 200);
    let frame: Value = serde_json::from_slice(&body).unwrap();
    frame["panels"]
        .as_array()
        .expect("panels in the frame")
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title} in {}", frame["panels"]))
        .clone()
}

fn rows(p: &Value) -> Vec<Vec<String>> {
    p["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// Waits (up to `limit`) until `ok` holds of the panel, and returns it.
async fn until(
    addr: SocketAddr,
    title: &str,
    limit: Duration,
    ok: impl Fn(&[Vec<String>]) -> bool,
) -> Vec<Vec<String>> {
    let began = Instant::now();
    loop {
        let p = panel(addr, title).await;
        let r = rows(&p);
        if ok(&r) {
            return r;
        }
        assert!(began.elapsed() < limit, "{title} never as expected: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clustered_cart_shows_its_nodes_and_failovers_and_serves_metrics() {
    let Some((pg, nats)) = cluster::urls("cluster observer") else {
        return;
    };
    let schema = format!("ob_{}", std::process::id());
    let logs = std::env::temp_dir().join(format!("crashonly-{schema}"));
    std::fs::create_dir_all(&logs).unwrap();
    let mut nodes: Vec<NodeProc> = (0..2)
        .map(|i| {
            let name = format!("n{i}");
            let args = [
                "--cluster",
                "--pg",
                &pg,
                "--nats",
                &nats,
                "--schema",
                &schema,
                "--node-name",
                &name,
                "--lease",
                "1s",
            ]
            .map(String::from)
            .to_vec();
            NodeProc::new(
                args,
                SocketAddr::from(([127, 0, 0, 1], free_port())),
                logs.join(format!("{name}.log")),
            )
        })
        .collect();
    for n in &mut nodes {
        n.start().await;
    }
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let (ia, ib) = (nodes[0].incarnation.to_string(), nodes[1].incarnation.to_string());

    // Some carts, placed on both nodes by rendezvous hashing.
    for i in 0..20 {
        let r = http::request(
            a,
            "POST",
            &format!("/carts/c{i}/items"),
            &[],
            br#"{"item":"x"}"#,
            Duration::from_secs(3),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "add to c{i}: {}", String::from_utf8_lossy(&r.body));
    }

    // Each node lists both, marks itself, and the carts held add up to 20.
    for (addr, me) in [(a, &ia), (b, &ib)] {
        let r = until(addr, "Nodes", Duration::from_secs(5), |r| {
            r.len() == 2 && r.iter().map(|r| r[4].parse::<u64>().unwrap()).sum::<u64>() == 20
        })
        .await;
        let mine: Vec<_> = r.iter().filter(|r| r[5] == "this node").collect();
        assert_eq!(mine.len(), 1, "{r:?}");
        assert_eq!(&mine[0][0], me, "{r:?}");
        let names: Vec<_> = r.iter().map(|r| r[1].as_str()).collect();
        assert_eq!(names, ["n0", "n1"]);
        assert!(
            r.iter().all(|r| r[4].parse::<u64>().unwrap() > 0),
            "both hold carts: {r:?}"
        );
    }

    // The page itself, and the operators' endpoints.
    let (status, page) = get(a, "/observer").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("renderPanel"));
    let (status, _) = get(a, "/healthz").await;
    assert_eq!(status, 200);
    let (status, body) = get(a, "/readyz").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, body) = get(a, "/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let handled: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "crashonly_handled_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(handled >= 1.0, "node a handled messages: {text}");

    // Kill node b: a's page lists it under recent failovers, with the carts still placed on it,
    // and no more as live.
    nodes[1].kill().await;
    let gone = until(a, "Recent failovers", Duration::from_secs(10), |r| {
        r.iter().any(|r| r[0] == ib)
    })
    .await;
    let row = gone.iter().find(|r| r[0] == ib).unwrap();
    assert_eq!(row[1], "n1");
    assert!(row[2].ends_with(" ago"), "{row:?}");
    let live = until(a, "Nodes", Duration::from_secs(5), |r| r.len() == 1).await;
    assert_eq!(live[0][0], ia);
    // A cart that lived on b moves to a on its next request; the failover row's count falls.
    let before: u64 = row[4].parse().unwrap();
    assert!(before > 0, "{row:?}");
    for i in 0..20 {
        let r = http::request(a, "GET", &format!("/carts/c{i}"), &[], b"", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            r.status,
            200,
            "c{i} after the failover: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    until(a, "Recent failovers", Duration::from_secs(5), |r| {
        r.iter().any(|r| r[0] == ib && r[4] == "0")
    })
    .await;
    until(a, "Nodes", Duration::from_secs(5), |r| r.len() == 1 && r[0][4] == "20").await;
    std::fs::remove_dir_all(&logs).ok();
}
