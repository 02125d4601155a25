//! `/metrics`, `/healthz` and `/readyz` (feature `metrics`): scraped over HTTP, parsed with a
//! Prometheus text-format parser, and checked against `Stats` and `EntityStats`; labels never carry
//! a key; bad requests get a clear 4xx; a running `cart` process serves them too.

#[path = "../examples/support/http.rs"]
mod http;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crashonly::prelude::*;
use crashonly::{Entity, EntitySpec, Strategy};
use prometheus_parse::{Sample, Scrape, Value};
use proptest::prelude::{prop, proptest, ProptestConfig};
use proptest::strategy::Strategy as _;
use tokio::sync::Notify;

#[derive(Clone, Debug)]
enum Cmd {
    Ok,
    Crash,
    Block(Arc<Notify>),
}

struct Worker;

impl Actor for Worker {
    type Args = ();
    type Msg = Cmd;
    type Reply = ();
    type Error = String;

    async fn start(_: &(), _ctx: &mut Context<Self>) -> Result<Self, String> {
        Ok(Worker)
    }

    async fn handle(&mut self, cmd: Cmd, _ctx: &mut Context<Self>) -> Result<(), String> {
        match cmd {
            Cmd::Ok => Ok(()),
            Cmd::Crash => Err("asked to crash".into()),
            Cmd::Block(n) => {
                n.notified().await;
                Ok(())
            }
        }
    }
}

impl Entity for Worker {
    type Key = String;
}

/// Serves `router` on an ephemeral loopback port (the task ends with the test's runtime).
async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn req(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> http::Response {
    http::request(addr, method, path, &[], body, Duration::from_secs(5))
        .await
        .unwrap()
}

/// Scrapes `/metrics` and parses it.
async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let r = req(addr, "GET", "/metrics", b"").await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    Scrape::parse(lines).expect("valid Prometheus text format").samples
}

/// The value of `name` whose labels include `labels` (exactly one sample must match).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let hits: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(hits.len(), 1, "{name} {labels:?}: {hits:?}");
    match &hits[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        Value::Summary(_) => panic!("{name} is a summary"),
    }
}

async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never held");
}

fn quiet() -> Config {
    Config::default().with_exit_on_failure(None)
}

#[tokio::test]
async fn counters_match_stats_and_gauges_read_the_mailboxes() {
    let system = System::builder().config(quiet()).start().unwrap();
    let worker = system.spawn(ActorSpec::<Worker>::named("worker", ())).unwrap();
    let unnamed: Vec<_> = (0..3)
        .map(|_| system.spawn(ActorSpec::<Worker>::new(())).unwrap())
        .collect();
    let addr = serve(crashonly::metrics::router(&system)).await;

    for _ in 0..10 {
        worker.ask(Cmd::Ok).await.unwrap();
    }
    for _ in 0..2 {
        assert!(matches!(worker.ask(Cmd::Crash).await, Err(DeliveryError::Crashed(_))));
    }
    for _ in 0..3 {
        worker.ask(Cmd::Ok).await.unwrap();
    }
    for u in &unnamed {
        u.ask(Cmd::Ok).await.unwrap();
    }
    // Five messages wait behind one that blocks: the depth gauge reads them.
    let gate = Arc::new(Notify::new());
    worker.tell(Cmd::Block(gate.clone())).await.unwrap();
    for _ in 0..5 {
        worker.tell(Cmd::Ok).await.unwrap();
    }
    until(|| worker.stats().mailbox_len == 5 && worker.stats().busy_for.is_some()).await;

    let s = scrape(addr).await;
    let stats = worker.stats();
    let me = [("path", "/worker")];
    assert_eq!(value(&s, "crashonly_handled_total", &me), stats.handled as f64);
    assert_eq!(stats.handled, 15, "10 + 2 crashed + 3");
    assert_eq!(value(&s, "crashonly_crashes_total", &me), stats.crashes as f64);
    assert_eq!(value(&s, "crashonly_restarts_total", &me), stats.restarts as f64);
    assert_eq!(stats.crashes, 2);
    assert_eq!(value(&s, "crashonly_mailbox_depth", &me), 5.0);
    assert_eq!(value(&s, "crashonly_mailbox_depth_max", &me), 5.0);
    assert_eq!(value(&s, "crashonly_live", &me), 1.0);
    // Sampled: the 1st, 17th, ... message of each actor.
    let sampled = stats.handled.div_ceil(16);
    assert_eq!(value(&s, "crashonly_handling_seconds_count", &me), sampled as f64);
    let actor = s.iter().find(|x| x.metric == "crashonly_handled_total").unwrap();
    assert!(
        actor.labels.get("actor").unwrap().ends_with("Worker"),
        "{:?}",
        actor.labels
    );
    // The unnamed children share one label set.
    let unnamed_handled: u64 = unnamed.iter().map(|u| u.stats().handled).sum();
    assert_eq!(
        value(&s, "crashonly_handled_total", &[("path", "/#*")]),
        unnamed_handled as f64
    );
    assert_eq!(value(&s, "crashonly_live", &[("path", "/#*")]), 3.0);
    assert_eq!(value(&s, "crashonly_ready", &[]), 1.0);

    gate.notify_one();
    until(|| worker.stats().handled == 21).await;
    let s = scrape(addr).await;
    assert_eq!(value(&s, "crashonly_handled_total", &me), 21.0);
    assert_eq!(value(&s, "crashonly_mailbox_depth", &me), 0.0);
}

#[tokio::test]
async fn entity_counters_match_entity_stats_and_no_key_is_a_label() {
    let system = System::builder().config(quiet()).start().unwrap();
    let family = system
        .spawn_entities(EntitySpec::<Worker>::new("jobs", |_key: &String| ()))
        .unwrap();
    let addr = serve(crashonly::metrics::router(&system)).await;
    let keys: Vec<String> = (0..20).map(|i| format!("secret-key-{i}")).collect();
    for k in &keys {
        family.get(k.clone()).ask(Cmd::Ok).await.unwrap();
    }
    assert!(matches!(
        family.get(keys[0].clone()).ask(Cmd::Crash).await,
        Err(DeliveryError::Crashed(_))
    ));
    for k in &keys[..5] {
        assert!(family.get(k.clone()).passivate());
    }
    until(|| family.stats().active == 15).await;
    let s = scrape(addr).await;
    let stats = family.stats();
    let jobs = [("path", "/jobs/*")];
    assert_eq!(
        value(&s, "crashonly_activations_total", &jobs),
        stats.activations as f64
    );
    assert_eq!(
        value(
            &s,
            "crashonly_passivations_total",
            &[("path", "/jobs/*"), ("reason", "idle")]
        ),
        stats.passivated_idle as f64
    );
    assert_eq!(stats.passivated_idle, 5);
    assert_eq!(value(&s, "crashonly_live", &jobs), stats.active as f64);
    assert_eq!(value(&s, "crashonly_handled_total", &jobs), 21.0);
    assert_eq!(value(&s, "crashonly_crashes_total", &jobs), stats.crashes as f64);
    for sample in &s {
        for (k, v) in sample.labels.iter() {
            assert!(!v.contains("secret-key"), "{} has {k}={v}", sample.metric);
        }
    }
}

#[tokio::test]
async fn readyz_answers_503_once_the_root_gave_up() {
    let root = SupervisorSpec::new("root", Strategy::OneForOne).intensity(0, Duration::from_secs(10));
    let system = System::builder().config(quiet()).root(root).start().unwrap();
    let worker = system.spawn(ActorSpec::<Worker>::named("worker", ())).unwrap();
    let addr = serve(crashonly::metrics::router(&system)).await;
    assert_eq!(req(addr, "GET", "/readyz", b"").await.status, 200);
    let _ = worker.ask(Cmd::Crash).await;
    until(|| system.failure().is_some()).await;
    let r = req(addr, "GET", "/readyz", b"").await;
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("root supervisor gave up"));
    assert_eq!(req(addr, "GET", "/healthz", b"").await.status, 200, "the process is up");
    assert_eq!(value(&scrape(addr).await, "crashonly_ready", &[]), 0.0);
    assert!(matches!(
        crashonly::metrics::ready(&system),
        Err(crashonly::metrics::NotReady::RootFailed(_))
    ));
}

#[tokio::test]
async fn label_sets_are_bounded_past_a_thousand_names() {
    let system = System::builder().config(quiet()).start().unwrap();
    let workers: Vec<_> = (0..1100)
        .map(|i| system.spawn(ActorSpec::<Worker>::named(format!("w{i}"), ())).unwrap())
        .collect();
    for w in &workers {
        w.ask(Cmd::Ok).await.unwrap();
    }
    let addr = serve(crashonly::metrics::router(&system)).await;
    let s = scrape(addr).await;
    let series = s.iter().filter(|x| x.metric == "crashonly_handled_total").count();
    assert_eq!(series, 1001, "1,000 label sets kept apart, and the overflow one");
    let kept = 1000.0;
    let other = value(&s, "crashonly_handled_total", &[("path", "(other)")]);
    // Every handled message is counted once, in its own set or in the overflow one.
    let total: f64 = s
        .iter()
        .filter(|x| x.metric == "crashonly_handled_total")
        .map(|x| match x.value {
            Value::Counter(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(total, 1100.0);
    assert_eq!(other, 1100.0 - kept);
    assert_eq!(value(&s, "crashonly_live", &[("path", "(other)")]), 1100.0 - kept);
}

/// Blocks its (dedicated) thread for a while on every message: a supervisor giving up waits for it.
struct Stuck;

impl Actor for Stuck {
    type Args = ();
    type Msg = ();
    type Reply = ();
    type Error = String;

    async fn start(_: &(), _ctx: &mut Context<Self>) -> Result<Self, String> {
        Ok(Stuck)
    }

    async fn handle(&mut self, _: (), _ctx: &mut Context<Self>) -> Result<(), String> {
        std::thread::sleep(Duration::from_millis(600));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_answers_503_while_a_supervisor_escalates_and_200_after() {
    let sub = SupervisorSpec::new("sub", Strategy::OneForOne)
        .intensity(0, Duration::from_secs(10))
        .child(ActorSpec::<Stuck>::named("stuck", ()).blocking())
        .child(ActorSpec::<Worker>::named("worker", ()));
    let root = SupervisorSpec::new("root", Strategy::OneForOne).child(sub);
    let system = System::builder().config(quiet()).root(root).start().unwrap();
    let addr = serve(crashonly::metrics::router(&system)).await;
    assert_eq!(req(addr, "GET", "/readyz", b"").await.status, 200);
    let stuck = system.lookup::<Stuck>("/sub/stuck").unwrap();
    let worker = system.lookup::<Worker>("/sub/worker").unwrap();
    stuck.tell(()).await.unwrap();
    until(|| stuck.stats().busy_for.is_some()).await;
    // Past its intensity, `sub` gives up: it waits for `stuck`'s thread before its parent decides.
    // (The asker hears of the crash before `sub` has decided: the escalation begins just after.)
    let _ = worker.ask(Cmd::Crash).await;
    let r = status_within(addr, 503).await;
    assert!(String::from_utf8_lossy(&r.body).contains("escalating"));
    let s = scrape(addr).await;
    assert_eq!(value(&s, "crashonly_escalating", &[]), 1.0);
    assert_eq!(value(&s, "crashonly_escalations_total", &[]), 1.0);
    // The root restarts `sub`: ready again, and the counter stays.
    status_within(addr, 200).await;
    assert_eq!(crashonly::metrics::ready(&system), Ok(()));
    assert_eq!(value(&scrape(addr).await, "crashonly_escalations_total", &[]), 1.0);
}

/// Polls `/readyz` until it answers `status` (within 3 s), and returns that answer.
async fn status_within(addr: SocketAddr, status: u16) -> http::Response {
    for _ in 0..300 {
        let r = req(addr, "GET", "/readyz", b"").await;
        if r.status == status {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("/readyz never answered {status}");
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx() {
    let system = System::new();
    let addr = serve(crashonly::metrics::router(&system)).await;
    let r = req(addr, "POST", "/metrics", b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, HEAD");
    assert_eq!(req(addr, "DELETE", "/readyz", b"").await.status, 405);
    assert_eq!(req(addr, "GET", "/nope", b"").await.status, 404);
    assert_eq!(req(addr, "GET", "/metrics/x", b"").await.status, 404);
    let r = req(addr, "GET", "/metrics", &[b'x'; 100_000]).await;
    assert_eq!(r.status, 413);
    assert!(String::from_utf8_lossy(&r.body).contains("no request body"));
    let long = format!("/healthz?q={}", "a".repeat(crashonly::metrics::MAX_URI));
    assert_eq!(req(addr, "GET", &long, b"").await.status, 414);
    assert_eq!(req(addr, "HEAD", "/healthz", b"").await.status, 200);
}

fn query() -> impl proptest::strategy::Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(b"azAZ09=&%?;+-_.~/[]#".to_vec()), 0..80)
        .prop_map(|b| String::from_utf8(b).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Query strings are ignored: any one gets the same status as none, never a 5xx.
    #[test]
    fn any_query_string_is_ignored(q in query(), which in 0usize..3) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let system = System::new();
            let addr = serve(crashonly::metrics::router(&system)).await;
            let path = ["/metrics", "/healthz", "/readyz"][which];
            // `#` starts a fragment, which a client never sends: escape it.
            let target = format!("{path}?{}", q.replace('#', "%23"));
            let r = req(addr, "GET", &target, b"").await;
            assert_eq!(r.status, 200, "{target}");
        });
    }
}

#[tokio::test]
async fn a_running_cart_serves_metrics_that_match_its_stats() {
    // Removed at the end when the test passes, kept when it fails.
    let dir = tempfile::Builder::new()
        .prefix("crashonly-metrics-cart-")
        .tempdir()
        .unwrap()
        .keep();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cart"))
        .args(["--listen", "127.0.0.1:0", "--data", dir.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stdout.take().unwrap()));
    let line = lines.next_line().await.unwrap().unwrap();
    let addr: SocketAddr = line.strip_prefix("listening ").unwrap().parse().unwrap();
    until_ready(addr).await;
    let mut adds = 0;
    for cart in 0..7 {
        for item in 0..3 {
            let body = format!(r#"{{"item":"i{item}"}}"#);
            let r = http::request(
                addr,
                "POST",
                &format!("/carts/c{cart}/items"),
                &[],
                body.as_bytes(),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            assert_eq!(r.status, 200);
            adds += 1;
        }
    }
    let s = scrape(addr).await;
    let stats: serde_json::Value = serde_json::from_slice(&req(addr, "GET", "/stats", b"").await.body).unwrap();
    let carts = [("path", "/carts/*")];
    let field = |k: &str| stats["carts"][k].as_u64().unwrap() as f64;
    assert_eq!(value(&s, "crashonly_activations_total", &carts), field("activations"));
    assert_eq!(field("activations"), 7.0);
    assert_eq!(value(&s, "crashonly_live", &carts), field("active"));
    assert_eq!(value(&s, "crashonly_crashes_total", &carts), field("crashes"));
    assert!(value(&s, "crashonly_handled_total", &carts) >= adds as f64);
    assert_eq!(value(&s, "crashonly_ready", &[]), 1.0);
    let store = [("path", "/store")];
    assert!(s
        .iter()
        .all(|x| !(x.metric == "crashonly_activations_total" && x.labels.get("path") == Some("/store"))));
    assert_eq!(value(&s, "crashonly_live", &store), 1.0);
    assert!(s.iter().all(|x| x.labels.values().all(|v| !v.contains("c0"))));
    let kinds: HashMap<&str, usize> = s.iter().fold(HashMap::new(), |mut m, x| {
        *m.entry(x.metric.as_str()).or_default() += 1;
        m
    });
    assert!(kinds.contains_key("crashonly_handling_seconds"), "{kinds:?}");
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn until_ready(addr: SocketAddr) {
    for _ in 0..500 {
        if req(addr, "GET", "/readyz", b"").await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("cart never ready");
}
