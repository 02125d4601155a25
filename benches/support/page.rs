//! The observer benches' page: a client of the live frames (shared through `#[path]`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Reads the observer's server-sent frames at `addr` and counts their bytes into `bytes`, until
/// the connection ends or the task is aborted.
pub async fn page(addr: SocketAddr, bytes: Arc<AtomicU64>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.fetch_add(n as u64, Ordering::Relaxed),
        };
    }
}
