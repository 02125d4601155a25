//! The cart service under test: a child process of the harness (its own `serve-cart`), started,
//! killed with SIGKILL and restarted; and what it says about its carts and memory.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::http;

/// The cart service as a child process.
pub struct Service {
    pub extra: Vec<String>,
    /// The faultload arguments, dropped for the final read-back.
    pub faults: Vec<String>,
    pub exe: std::path::PathBuf,
    pub data: std::path::PathBuf,
    pub addr: SocketAddr,
    pub child: Option<Child>,
    /// A clustered node's incarnation, as its last start said (`listening ADDR node N`).
    pub incarnation: Option<u64>,
}

impl Service {
    /// The cart service (this harness's own `serve-cart`) on `data`, at a free port, not started.
    pub fn new(data: std::path::PathBuf, extra: Vec<String>, faults: Vec<String>) -> Service {
        Service {
            extra,
            faults,
            exe: std::env::current_exe().expect("own path"),
            data,
            addr: free_port(),
            child: None,
            incarnation: None,
        }
    }

    pub async fn start(&mut self) -> Result<(), String> {
        // A clustered node has no data directory (its store is PostgreSQL).
        let data = (!self.data.as_os_str().is_empty()).then(|| ["--data", self.data.to_str().unwrap()]);
        let mut child = Command::new(&self.exe)
            .args(["serve-cart", "--listen", &self.addr.to_string()])
            .args(data.into_iter().flatten())
            .args(&self.extra)
            .args(&self.faults)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| "the service did not start within 10 s".to_string())?
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        if !line.starts_with("listening ") {
            return Err(format!("the service said {line:?} instead of listening"));
        }
        self.incarnation = match line.split(' ').collect::<Vec<_>>()[..] {
            [_, _, "node", n] => n.parse().ok(),
            _ => None,
        };
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`, and wait until the process is gone.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// Restarts the service if it died on its own (the whole-process faultload); true if it did.
    pub async fn ensure_running(&mut self) -> Result<bool, String> {
        let mut restarted = false;
        loop {
            let exited = self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited {
                // It may die again before it serves (a fault every few ms): start it again.
                self.child = None;
                self.start().await?;
                restarted = true;
            } else if !restarted || self.serving().await {
                return Ok(restarted);
            } else {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    pub async fn serving(&self) -> bool {
        matches!(http::request(self.addr, "GET", "/health", &[], b"", Duration::from_millis(200)).await, Ok(r) if r.status == 200)
    }
}

/// The counters of the service's `/stats` summed over its processes.
const COUNTERS: [&str; 3] = ["activations", "passivated_idle", "passivated_cap"];

/// What the service said about its carts and its memory (`GET /stats`), sampled during the run.
#[derive(Default)]
pub struct Figures {
    /// The process the last sample came from, and that sample.
    last: Option<(u32, serde_json::Value)>,
    /// [`COUNTERS`] of the processes before it, each as last sampled, summed.
    earlier: [u64; 3],
    pub active_peak: u64,
    pub rss_kb_peak: u64,
    pub samples: u64,
}

impl Figures {
    /// Asks the running service for its figures; false if it did not answer.
    pub async fn sample(&mut self, svc: &Service) -> bool {
        let Some(pid) = svc.child.as_ref().and_then(|c| c.id()) else {
            return false;
        };
        let v: serde_json::Value =
            match http::request(svc.addr, "GET", "/stats", &[], b"", Duration::from_millis(200)).await {
                Ok(r) if r.status == 200 => match serde_json::from_slice(&r.body) {
                    Ok(v) => v,
                    Err(_) => return false,
                },
                _ => return false,
            };
        if let Some((old, prev)) = &self.last {
            if *old != pid {
                // A new process: the old one's counters end with its last sample.
                for (sum, name) in self.earlier.iter_mut().zip(COUNTERS) {
                    *sum += prev["carts"][name].as_u64().unwrap_or(0);
                }
            }
        }
        self.active_peak = self.active_peak.max(v["carts"]["active"].as_u64().unwrap_or(0));
        self.rss_kb_peak = self.rss_kb_peak.max(v["rss_kb"].as_u64().unwrap_or(0));
        self.samples += 1;
        self.last = Some((pid, v));
        true
    }

    /// A field of the last sample's carts.
    pub fn now(&self, name: &str) -> u64 {
        self.last
            .as_ref()
            .map_or(0, |(_, v)| v["carts"][name].as_u64().unwrap_or(0))
    }

    /// A counter summed over the processes (at least: what came after a process's last sample is
    /// not seen).
    pub fn total(&self, i: usize) -> u64 {
        self.earlier[i] + self.now(COUNTERS[i])
    }

    pub fn rss_kb(&self) -> u64 {
        self.last.as_ref().map_or(0, |(_, v)| v["rss_kb"].as_u64().unwrap_or(0))
    }
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}
