//! The HTTP client of the harness and the tests, on hyper: [`request`] goes through one
//! process-wide pooled client (hyper-util's, connections kept alive and reused per address), and
//! [`Conn`] is one kept-alive connection of the caller's own (for load generators that count their
//! connections, and for tests that cut a given one).
//!
//! Errors are `io::Error`s whose kind says what happened, which is what the callers classify:
//! `ConnectionRefused` (nothing listening: a service restarting), `TimedOut`, `NotConnected` (a
//! kept-alive connection the server had closed before the request went out: safe to send again),
//! `UnexpectedEof` or `ConnectionReset` (the connection broke after the request went out: its
//! outcome is unknown), `InvalidInput` (a method, path or header hyper would not send).
#![allow(dead_code)]

use std::collections::HashMap;
use std::error::Error as _;
use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A response: status, lower-cased headers (the last value of a repeated one), body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    /// The whole body (de-chunked).
    pub body: Vec<u8>,
}

/// The process-wide pooled client. Its connections are driven by tasks of the runtime that opened
/// them; a connection whose runtime is gone is closed, and the pool does not hand it out again.
fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: OnceLock<Client<HttpConnector, Full<Bytes>>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

/// Sends one request to `addr` and reads the whole response, within `timeout`, on a kept-alive
/// connection of the process-wide pool (a new one if none is idle).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    let req = build(method, &format!("http://{addr}{path}"), headers, body)?;
    tokio::time::timeout(timeout, async {
        let resp = client().request(req).await.map_err(|e| {
            let kind = if e.is_connect() {
                io_kind(&e).unwrap_or(io::ErrorKind::ConnectionRefused)
            } else {
                broken_kind(&e)
            };
            io::Error::new(kind, e.source().map_or_else(|| e.to_string(), |s| format!("{e}: {s}")))
        })?;
        read(resp).await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))?
}

/// A request with `headers` and `body`: a non-empty body is JSON unless a header says otherwise.
fn build(method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<Request<Full<Bytes>>> {
    let invalid = |e: hyper::http::Error| io::Error::new(io::ErrorKind::InvalidInput, e);
    let mut b = Request::builder().method(method).uri(uri);
    let typed = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    if !body.is_empty() && !typed {
        b = b.header("content-type", "application/json");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::copy_from_slice(body))).map_err(invalid)
}

/// Status, headers and the whole body of `resp`.
async fn read(resp: hyper::Response<Incoming>) -> io::Result<Response> {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| io::Error::new(broken_kind(&e), e))?;
    Ok(Response {
        status,
        headers,
        body: body.to_bytes().to_vec(),
    })
}

/// The kind of the first `io::Error` among `e`'s sources.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// The kind of an error past the connect: the connection broke (or was closed) under a request.
fn broken_kind(e: &(dyn std::error::Error + 'static)) -> io::ErrorKind {
    io_kind(e).unwrap_or(io::ErrorKind::UnexpectedEof)
}

/// A kept-alive HTTP/1.1 connection of the caller's own: one request at a time. Callers bound
/// each call with a timeout.
pub struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
    /// The connection broke or the server closed it: not to be reused.
    pub closed: bool,
}

impl Conn {
    /// Opens a connection to `addr`; a task of the current runtime drives it.
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, e))?;
        // The driver ends when the connection does; its error reaches the pending request.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            addr,
            sender,
            closed: false,
        })
    }

    /// Sends one request and reads its response. `ErrorKind::NotConnected` means the server had
    /// closed the kept-alive connection before the request went out: it may be sent again on a
    /// new one.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let r = self.exchange(method, path, headers, body).await;
        if r.is_err() || self.sender.is_closed() {
            self.closed = true;
        }
        r
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let stale = || io::Error::new(io::ErrorKind::NotConnected, "the server had closed the connection");
        if self.sender.ready().await.is_err() {
            return Err(stale());
        }
        let mut req = build(method, path, headers, body)?;
        let host = hyper::header::HeaderValue::from_str(&self.addr.to_string()).expect("an address is a valid header");
        req.headers_mut().insert(hyper::header::HOST, host);
        let resp = self.sender.send_request(req).await.map_err(|e| {
            if e.is_canceled() || e.is_closed() {
                stale()
            } else {
                io::Error::new(broken_kind(&e), e)
            }
        })?;
        let close = resp
            .headers()
            .get("connection")
            .is_some_and(|c| c.as_bytes().eq_ignore_ascii_case(b"close"));
        let r = read(resp).await?;
        if close {
            self.closed = true;
        }
        Ok(r)
    }
}
