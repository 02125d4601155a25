//! The observer's HTTP side, in process over real TCP: what a frame holds (supervisor intensity,
//! per-actor counters, the journal of crashes, restarts and escalations, messages per second over
//! server-sent events), bad input answered with a clear 4xx (fuzzed query parameters included),
//! controls refused without the token, and a tree of 100,000 actors aggregated to a small frame.

#[path = "../examples/support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crashonly::observer::{self, ObserverOptions};
use crashonly::prelude::*;
use crashonly::Strategy;
use proptest::prelude::ProptestConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Actor, Clone, Default)]
struct Worker;

#[messages]
impl Worker {
    #[message]
    fn ping(&self) -> &'static str {
        "pong"
    }

    #[message]
    fn crash(&self) {
        panic!("told to crash");
    }
}

const TOKEN: &str = "t0ken";

async fn serve(system: &System, opts: ObserverOptions) -> SocketAddr {
    let listener = observer::bind(system, opts.with_listen(SocketAddr::from(([127, 0, 0, 1], 0))))
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(listener.serve());
    addr
}

async fn req(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let r = http::request(addr, method, path, headers, body, Duration::from_secs(10))
        .await
        .expect("answers");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

async fn json(addr: SocketAddr, path: &str) -> Value {
    let (s, body) = req(addr, "GET", path, &[], b"").await;
    assert_eq!(s, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

fn node<'a>(tree: &'a Value, path: &str) -> &'a Value {
    if tree["path"] == path {
        return tree;
    }
    tree["children"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| node(c, path))
        .find(|n| !n.is_null())
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_shows_intensity_counters_and_the_journal() {
    let system = System::new();
    let sup = system
        .root()
        .spawn_supervisor(SupervisorSpec::new("app", Strategy::OneForAll).intensity(2, Duration::from_secs(60)))
        .unwrap();
    let w = sup.spawn(Worker::spec(Worker).name("w")).unwrap();
    let addr = serve(&system, ObserverOptions::default()).await;
    assert_eq!(w.ping().await.unwrap(), "pong");
    assert!(w.crash().await.is_err());
    assert_eq!(w.ping().await.unwrap(), "pong"); // restarted

    let f = json(addr, "/api/tree").await;
    let app = node(&f["tree"], "/app");
    assert_eq!(app["kind"], "supervisor");
    assert_eq!(app["strategy"], "OneForAll");
    assert_eq!(
        (app["intensity_used"].as_u64(), app["intensity_max"].as_u64()),
        (Some(1), Some(2))
    );
    let wv = node(&f["tree"], "/app/w");
    assert_eq!(wv["kind"], "actor");
    assert_eq!(wv["state"], "running");
    assert_eq!((wv["restarts"].as_u64(), wv["handled"].as_u64()), (Some(1), Some(3)));
    assert_eq!(wv["capacity"].as_u64(), Some(1024));
    assert!(wv["last_crash"].as_str().unwrap().contains("told to crash"), "{wv}");
    let kinds: Vec<&str> = f["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["crash", "restart"], "{}", f["events"]);
    assert_eq!(f["dropped"].as_u64(), Some(0));

    // Past its intensity the supervisor gives up: an escalation in the journal.
    for _ in 0..2 {
        let _ = w.crash().await;
        let _ = w.ping().await;
    }
    let f = json(addr, "/api/tree").await;
    let kinds: Vec<&str> = f["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"escalation"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernating_actor_shows_as_hibernating_until_a_message_wakes_it() {
    let system = System::new();
    let idle = system.spawn(Worker::spec(Worker).name("idle")).unwrap();
    let addr = serve(&system, ObserverOptions::default()).await;
    // It started to an empty mailbox: it hibernates (no task) at once.
    idle.started().await.unwrap();
    assert!(idle.stats().hibernating);
    let f = json(addr, "/api/tree").await;
    assert_eq!(node(&f["tree"], "/idle")["state"], "hibernating", "{}", f["tree"]);
    assert_eq!(idle.ping().await.unwrap(), "pong");
    let f = json(addr, "/api/tree").await;
    assert_eq!(node(&f["tree"], "/idle")["state"], "running", "woken by its message");
}

/// Reads server-sent events until `n` frames have come, and returns them.
async fn frames(addr: SocketAddr, n: usize) -> Vec<Value> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let got: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        if got.len() >= n {
            assert!(text.starts_with("HTTP/1.1 200") && text.contains("text/event-stream"));
            return got;
        }
        assert!(Instant::now() < deadline, "{n} frames did not come within 10 s");
        let left = deadline.saturating_duration_since(Instant::now());
        let k = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .expect("frames within 10 s")
            .unwrap();
        assert!(k > 0, "the stream ended");
        raw.extend_from_slice(&buf[..k]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_carries_rates_and_each_event_once() {
    let system = System::new();
    let w = system.spawn(Worker::spec(Worker).name("w")).unwrap();
    let opts = ObserverOptions::default().with_interval(Duration::from_millis(300));
    let addr = serve(&system, opts).await;
    let busy = {
        let w = w.clone();
        tokio::spawn(async move {
            loop {
                let _ = w.ping().await;
                // Paced, so that this load leaves the two workers time for the stream.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let _ = w.crash().await;
    let got = frames(addr, 3).await;
    busy.abort();
    // The first frame has no rate (nothing to compare with), the later ones have.
    assert!(node(&got[0]["tree"], "/w")["rate"].is_null());
    let rate = node(&got[2]["tree"], "/w")["rate"].as_f64().unwrap();
    assert!(rate > 10.0, "msgs/s {rate}");
    // Each event is sent once over the stream.
    let crashes: usize = got
        .iter()
        .map(|f| {
            f["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == "crash")
                .count()
        })
        .sum();
    assert_eq!(crashes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_controls_need_the_token() {
    let system = System::new();
    let w = system.spawn(Worker::spec(Worker).name("w")).unwrap();
    let closed = serve(&system, ObserverOptions::default()).await;
    let open = serve(&system, ObserverOptions::default().with_token(Some(TOKEN.into()))).await;
    let tok = [("x-observer-token", TOKEN)];
    let long = format!("/api/children?path=/{}", "a".repeat(2000));
    let big = vec![b'x'; 4096];
    /// server, method, path, headers, body, expected status, expected words in the answer
    type Case<'a> = (
        SocketAddr,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [u8],
        u16,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (open, "GET", "/nope", &[], b"", 404, "no such route"),
        (open, "DELETE", "/api/tree", &[], b"", 405, ""),
        (open, "GET", "/api/crash?path=/w", &tok, b"", 405, ""),
        (open, "GET", "/api/children", &[], b"", 400, ""),
        (open, "GET", "/api/children?path=w", &[], b"", 400, "must start with /"),
        (open, "GET", &long, &[], b"", 400, "at most 1024"),
        (
            open,
            "GET",
            "/api/children?path=/nobody",
            &[],
            b"",
            404,
            "nothing lives",
        ),
        (open, "GET", "/api/children?path=/w&offset=-1", &[], b"", 400, ""),
        (open, "POST", "/api/crash?path=/w", &tok, &big, 413, ""),
        (closed, "POST", "/api/crash?path=/w", &tok, b"", 403, "disabled"),
        (open, "POST", "/api/crash?path=/w", &[], b"", 401, "x-observer-token"),
        (
            open,
            "POST",
            "/api/crash?path=/w",
            &[("x-observer-token", "t0keN")],
            b"",
            401,
            "",
        ),
        (open, "POST", "/api/crash?path=/nobody", &tok, b"", 404, "nothing lives"),
        (open, "POST", "/api/rejuvenate", &tok, b"", 400, ""),
    ];
    for (addr, method, path, headers, body, want, words) in cases {
        let (s, text) = req(addr, method, path, headers, body).await;
        assert_eq!(s, want, "{method} {path}: {text}");
        assert!(text.contains(words), "{method} {path}: {text}");
    }
    assert_eq!(w.stats().crashes, 0, "no refused control touched the actor");
    let (s, text) = req(open, "POST", "/api/crash?path=/w", &tok, b"").await;
    assert_eq!((s, text.as_str()), (200, r#"{"crashed":1}"#));
    assert_eq!(w.ping().await.unwrap(), "pong");
    assert_eq!(w.stats().restarts, 1);
    let (s, _) = req(open, "POST", "/api/rejuvenate?path=/", &tok, b"").await;
    assert_eq!(s, 200);

    // Fuzzed query strings: every answer is a 2xx or a clear 4xx, and the server stays up.
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    let strategy = (
        proptest::sample::select(vec!["/api/children", "/api/crash", "/api/rejuvenate", "/api/tree"]),
        "[ -~]{0,80}",
    );
    let cases = std::sync::Mutex::new(Vec::new());
    runner
        .run(&strategy, |(route, q)| {
            cases.lock().unwrap().push((route, q));
            Ok(())
        })
        .unwrap();
    let cases = cases.into_inner().unwrap();
    for (route, q) in &cases {
        // A character no HTTP client library sends raw in a URI (hyper refuses it) goes
        // percent-encoded: the server decodes the same parameter value.
        let q: String = q
            .chars()
            .map(|c| match c {
                ' ' | '#' => "+".to_owned(),
                c if hyper::http::Uri::try_from(format!("/?{c}")).is_ok() => c.to_string(),
                c => format!("%{:02X}", c as u32),
            })
            .collect();
        let method = if *route == "/api/children" || *route == "/api/tree" {
            "GET"
        } else {
            "POST"
        };
        // No token: controls must refuse before they read the query.
        let (s, text) = req(open, method, &format!("{route}?{q}"), &[], b"").await;
        assert!((200..500).contains(&s) && s != 0, "{method} {route}?{q}: {s} {text}");
        if method == "POST" {
            assert!(s == 400 || s == 401, "{method} {route}?{q}: {s} {text}");
        }
    }
    assert_eq!(w.stats().crashes, 1, "no fuzzed request crashed the actor");
    println!("{} fuzzed queries answered", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_of_100000_actors_is_summarized_and_paged() {
    const N: usize = 100_000;
    let system = System::new();
    let big = system
        .root()
        .spawn_supervisor(SupervisorSpec::new("big", Strategy::OneForOne))
        .unwrap();
    let began = Instant::now();
    let mut refs = Vec::with_capacity(N);
    for i in 0..N {
        refs.push(big.spawn(Worker::spec(Worker).name(format!("w{i:06}"))).unwrap());
    }
    let spawned = began.elapsed();
    let _ = refs[77].crash().await;
    assert_eq!(refs[77].ping().await.unwrap(), "pong");
    let addr = serve(&system, ObserverOptions::default()).await;

    let t = Instant::now();
    let (s, body) = req(addr, "GET", "/api/tree", &[], b"").await;
    let took = t.elapsed();
    assert_eq!(s, 200);
    let f: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(f["slots"].as_u64(), Some(N as u64 + 2));
    let b = node(&f["tree"], "/big");
    let sum = &b["summary"];
    assert_eq!(
        (sum["total"].as_u64(), sum["shown"].as_u64()),
        (Some(N as u64), Some(50))
    );
    assert_eq!(sum["restarts"].as_u64(), Some(1));
    // The most interesting first: the one that restarted.
    assert_eq!(b["children"][0]["path"], "/big/w000077");
    assert!(body.len() < 64 * 1024, "a frame of {} bytes", body.len());

    // The others a page at a time, in path order.
    let page = json(addr, "/api/children?path=/big&offset=99990").await;
    let paths: Vec<&str> = page["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 10);
    assert_eq!(paths[0], "/big/w099990");
    println!(
        "100,000 actors: spawned in {spawned:?}; a frame of {} bytes, built in {} us, answered in {took:?}",
        body.len(),
        f["build_us"]
    );
}
