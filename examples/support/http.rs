//! A minimal HTTP/1.1 client, enough for the harness and the tests, without pulling an HTTP client
//! crate into the workspace: [`request`] opens one connection per request, [`Conn`] keeps one alive
//! for many (for load generators, where a connection per request would cost more than the request).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: status, lower-cased headers, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Sends one request and reads the whole response, within `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> io::Result<Response> {
    tokio::time::timeout(timeout, async {
        let mut s = TcpStream::connect(addr).await?;
        let req = head(method, path, &addr.to_string(), true, headers, body);
        s.write_all(req.as_bytes()).await?;
        s.write_all(body).await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        parse(&raw)
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))?
}

/// A request's head: Host, `Connection: close` when asked, the body's length and type, and
/// `headers`.
fn head(method: &str, path: &str, host: &str, close: bool, headers: &[(&str, &str)], body: &[u8]) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if close {
        req.push_str("Connection: close\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req
}

fn bad() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response")
}

/// Status and lower-cased headers of a response head (without its blank line).
fn parse_head(head: &[u8]) -> io::Result<(u16, HashMap<String, String>)> {
    let head = std::str::from_utf8(head).map_err(|_| bad())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<HashMap<_, _>>();
    Ok((status, headers))
}

fn parse(raw: &[u8]) -> io::Result<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let (status, headers) = parse_head(&raw[..split])?;
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body).ok_or_else(bad)?;
    }
    Ok(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..line_end]).ok()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// A kept-alive HTTP/1.1 connection: one request at a time, responses read by their
/// `Content-Length` (or to the end of a chunked body). Callers bound each call with a timeout.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server said `Connection: close` (or the stream broke): not to be reused.
    pub closed: bool,
}

impl Conn {
    /// Opens a connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(1024),
            closed: false,
        })
    }

    /// Sends one request and reads its response. An error with nothing of the response read
    /// (`ErrorKind::NotConnected`) means the server had closed the kept-alive connection: the
    /// request may be sent again on a new one.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let r = self.exchange(method, path, headers, body).await;
        if r.is_err() {
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
        let mut out = head(method, path, "x", false, headers, body).into_bytes();
        out.extend_from_slice(body);
        let stale = |e: io::Error| match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                io::Error::new(io::ErrorKind::NotConnected, "the server had closed the connection")
            }
            _ => e,
        };
        self.stream.write_all(&out).await.map_err(stale)?;
        self.buf.clear();
        let split = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = match self.read_more().await {
                Ok(n) => n,
                Err(e) if self.buf.is_empty() => return Err(stale(e)),
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    io::Error::new(io::ErrorKind::NotConnected, "the server had closed the connection")
                } else {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-response")
                });
            }
        };
        let (status, headers) = parse_head(&self.buf[..split])?;
        let start = split + 4;
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            while !self.buf[start..].ends_with(b"0\r\n\r\n") {
                self.read_exact_more().await?;
            }
            dechunk(&self.buf[start..]).ok_or_else(bad)?
        } else {
            let len: usize = match headers.get("content-length") {
                Some(v) => v.parse().map_err(|_| bad())?,
                None => 0,
            };
            while self.buf.len() < start + len {
                self.read_exact_more().await?;
            }
            self.buf[start..start + len].to_vec()
        };
        if headers
            .get("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            self.closed = true;
        }
        Ok(Response { status, headers, body })
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    async fn read_exact_more(&mut self) -> io::Result<()> {
        match self.read_more().await? {
            0 => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-response",
            )),
            _ => Ok(()),
        }
    }
}
