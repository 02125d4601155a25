//! W3C trace context from HTTP to the actors: a request to the cart process with a `traceparent`
//! header continues that trace (the cart's envelope carries its 128-bit trace id, under the HTTP
//! request's span), one without or with a malformed header starts a new trace. Read from the
//! process's own span log (`RUST_LOG=crashonly=debug,cart=info`, spans logged when they close).

#[path = "../examples/support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The cart process and every line it has written to stderr so far.
struct Cart {
    _child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    /// The data directory, removed on drop (after the child, which the field order kills first).
    _dir: tempfile::TempDir,
}

async fn start(name: &str) -> Cart {
    let dir = tempfile::Builder::new()
        .prefix(&format!("crashonly-cart-trace-{name}-"))
        .tempdir()
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cart"))
        .args(["--listen", "127.0.0.1:0", "--data", dir.path().to_str().unwrap()])
        .env("RUST_LOG", "crashonly=debug,cart=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let sink = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = err.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    let addr = line.strip_prefix("listening ").unwrap().parse().unwrap();
    Cart {
        _child: child,
        addr,
        log,
        _dir: dir,
    }
}

impl Cart {
    /// Adds an item with these headers; the `traceresponse` header: (trace id, span id).
    async fn add(&self, cart: &str, headers: &[(&str, &str)]) -> (String, String) {
        let r = http::request(
            self.addr,
            "POST",
            &format!("/carts/{cart}/items"),
            headers,
            br#"{"item":"book"}"#,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let tr = r.headers.get("traceresponse").expect("a traceresponse header");
        let parts: Vec<&str> = tr.split('-').collect();
        assert_eq!(parts.len(), 4, "{tr}");
        assert_eq!((parts[0], parts[1].len(), parts[2].len()), ("00", 32, 16), "{tr}");
        (parts[1].to_owned(), parts[2].to_owned())
    }

    /// The first log line (a closed span) that has all of `words`, waiting up to 10 s for the
    /// process to write it.
    async fn line_with(&self, words: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| words.iter().all(|w| l.contains(w)))
            {
                return l.clone();
            }
            if tokio::time::Instant::now() > deadline {
                let log = self.log.lock().unwrap();
                panic!("no line with {words:?} in {} lines:\n{}", log.len(), log.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn an_http_request_with_a_traceparent_continues_that_trace_through_the_actors() {
    let cart = start("continued").await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let tp = format!("00-{caller_trace}-{caller_span}-01");
    let (trace, span) = cart.add("traced", &[("traceparent", &tp)]).await;
    assert_eq!(trace, caller_trace, "the response names the caller's trace");
    assert_ne!(span, caller_span, "the request is a span of its own");
    // The HTTP span: the caller's trace, the caller's span as parent.
    cart.line_with(&[
        "http{",
        &format!("trace_id={caller_trace}"),
        &format!("span_id={span}"),
        &format!("parent_id={caller_span}"),
        "close",
    ])
    .await;
    // The cart's envelope: the same 128-bit trace, the HTTP request's span as its parent.
    let envelope = cart
        .line_with(&[
            "envelope{",
            &format!("trace_id={caller_trace}"),
            &format!("parent_id={span}"),
        ])
        .await;
    assert!(envelope.contains("actor=/carts/traced"), "{envelope}");
}

#[tokio::test]
async fn an_http_request_without_a_valid_traceparent_starts_a_new_trace() {
    let cart = start("new").await;
    let (a, span_a) = cart.add("fresh", &[]).await;
    let (b, _) = cart.add("fresh", &[]).await;
    assert_ne!(a, b, "each request its own trace");
    assert!(u128::from_str_radix(&a, 16).unwrap() >> 64 != 0, "128 bits: {a}");
    // W3C: an invalid traceparent is ignored, not continued (an all-zero trace id, upper case).
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "garbage",
    ] {
        let (t, _) = cart.add("fresh", &[("traceparent", bad)]).await;
        assert_ne!(t.to_lowercase(), "4bf92f3577b34da6a3ce929d0e0e4736", "{bad}");
        assert_ne!(t, "0".repeat(32), "{bad}");
    }
    let envelope = cart
        .line_with(&["envelope{", &format!("trace_id={a}"), &format!("parent_id={span_a}")])
        .await;
    assert!(envelope.contains("actor=/carts/fresh"), "{envelope}");
}
