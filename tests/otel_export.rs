//! `examples/otel.rs` (feature `otel`) against a tiny OTLP/HTTP receiver in the test: the example
//! process exports its spans as OTLP protobuf to `POST /v1/traces`, and the decoded spans carry
//! the W3C ids the process printed: the caller's trace and span, then front under the caller,
//! back under front.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// (path, content type, body) of each request received.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Reads one HTTP/1.1 request with a `Content-Length` body and answers `200`.
async fn serve_one(mut s: TcpStream, received: Received) -> std::io::Result<()> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while raw.len() < head_end + len {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
    received
        .lock()
        .unwrap()
        .push((path, header("content-type"), raw[head_end..].to_vec()));
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_example_exports_spans_with_the_runtimes_w3c_ids_over_otlp_http() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let sink = received.clone();
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve_one(s, sink.clone()));
        }
    });

    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_otel"))
            .args([format!("http://{addr}"), format!("00-{caller_trace}-{caller_span}-01")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the example exits within 60 s")
    .unwrap();
    server.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // trace <trace id> <front span> <back span>, one line per request
    let printed: Vec<Vec<&str>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("trace "))
        .map(|l| l.split(' ').collect())
        .collect();
    assert_eq!(printed.len(), 3, "{stdout}");

    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "nothing exported");
    let mut spans: Vec<Span> = Vec::new();
    for (path, content_type, body) in &received {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
        let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP protobuf request");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.clone());
            assert!(format!("{service:?}").contains("crashonly-otel-example"), "{service:?}");
            spans.extend(rs.scope_spans.into_iter().flat_map(|s| s.spans));
        }
    }
    let find = |span_id: &str| {
        spans
            .iter()
            .find(|s| hex(&s.span_id) == span_id)
            .unwrap_or_else(|| panic!("no span {span_id} among {spans:#?}"))
    };
    for (i, line) in printed.iter().enumerate() {
        let (trace, front_id, back_id) = (line[0], line[1], line[2]);
        if i == 0 {
            assert_eq!(trace, caller_trace, "the first request continues the caller's trace");
        } else {
            assert_ne!(trace, caller_trace);
        }
        let front = find(front_id);
        let back = find(back_id);
        assert_eq!(front.name, "envelope");
        assert_eq!(hex(&front.trace_id), trace);
        assert_eq!(hex(&back.trace_id), trace);
        assert_eq!(hex(&back.parent_span_id), front_id, "back under front");
        let expected_parent = if i == 0 { caller_span.to_owned() } else { String::new() };
        assert_eq!(hex(&front.parent_span_id), expected_parent, "request {i}");
    }
    assert_eq!(spans.len(), 6, "two envelopes per request");
}
