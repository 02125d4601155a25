//! The cart front end: TTL and idempotency from the route, bad input gets a clear 4xx and never
//! crashes or corrupts a cart, carts survive kill -9.

#[path = "../examples/support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

async fn start(data: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cart"))
        .args(["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap();
    (child, line.strip_prefix("listening ").unwrap().parse().unwrap())
}

async fn req(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let r = http::request(addr, method, path, headers, body, Duration::from_secs(5))
        .await
        .unwrap();
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_never_corrupts_a_cart() {
    // Removed at the end when the test passes, kept when it fails.
    let dir = tempfile::Builder::new()
        .prefix("crashonly-cart-")
        .tempdir()
        .unwrap()
        .keep();
    let (mut child, addr) = start(&dir).await;
    let (s, _) = req(addr, "POST", "/carts/a/items", &[], br#"{"item":"book"}"#).await;
    assert_eq!(s, 200);

    /// method, path, headers, body, expected status, expected words in the answer
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);
    let bad: Vec<Case<'_>> = vec![
        (
            "POST",
            "/carts/a/items",
            vec![],
            b"{not json".to_vec(),
            400,
            "body must be",
        ),
        (
            "POST",
            "/carts/a/items",
            vec![],
            br#"{"item": 5}"#.to_vec(),
            400,
            "body must be",
        ),
        (
            "POST",
            "/carts/a/items",
            vec![],
            br#"{"item":"x","admin":true}"#.to_vec(),
            400,
            "unknown field",
        ),
        (
            "POST",
            "/carts/a/items",
            vec![],
            br#"{"item":""}"#.to_vec(),
            400,
            "item must be",
        ),
        ("POST", "/carts/a/items", vec![], vec![b'a'; 100_000], 413, ""),
        ("GET", "/nowhere", vec![], vec![], 404, "no such route"),
        (
            "GET",
            "/carts/a",
            vec![("X-Request-Ttl-Ms", "-5")],
            vec![],
            400,
            "between 1 and 60000",
        ),
        (
            "GET",
            "/carts/a",
            vec![("X-Request-Ttl-Ms", "99999999999")],
            vec![],
            400,
            "between 1 and 60000",
        ),
        (
            "GET",
            "/carts/a",
            vec![("X-Request-Ttl-Ms", "soon")],
            vec![],
            400,
            "whole number",
        ),
        ("GET", "/carts/bad%20id", vec![], vec![], 400, "cart ids"),
        (
            "POST",
            "/carts/a/items",
            vec![("Idempotency-Key", "")],
            br#"{"item":"x"}"#.to_vec(),
            400,
            "Idempotency-Key",
        ),
    ];
    for (method, path, headers, body, status, says) in bad {
        let (s, text) = req(addr, method, path, &headers, &body).await;
        assert_eq!(s, status, "{method} {path}: {text}");
        assert!(text.contains(says), "{method} {path}: {text}");
    }
    // Still serving, and the cart is intact.
    let (s, text) = req(addr, "GET", "/carts/a", &[], b"").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["items"], serde_json::json!(["book"]));

    // A keyed POST applies once; the cart survives kill -9.
    for _ in 0..3 {
        let (s, _) = req(
            addr,
            "POST",
            "/carts/a/items",
            &[("Idempotency-Key", "k-1")],
            br#"{"item":"pen"}"#,
        )
        .await;
        assert_eq!(s, 200);
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let (_child, addr) = start(&dir).await;
    let (s, _) = req(
        addr,
        "POST",
        "/carts/a/items",
        &[("Idempotency-Key", "k-1")],
        br#"{"item":"pen"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let (_, text) = req(addr, "GET", "/carts/a", &[("X-Request-Ttl-Ms", "700")], b"").await;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["items"], serde_json::json!(["book", "pen"]));
    let _ = std::fs::remove_dir_all(&dir);
}
