//! The cart service's store, failing for real: a real `cart` process, a real full disk (a small
//! tmpfs mounted for the test; CI runs as root), real damage in the file, a second real process.
//!
//! A failed store is a crash: it is reopened under the root's intensity, its errors say what
//! happened (507 for a full disk, 500 naming the damage, 422 for a reused idempotency key), health
//! and readiness say so, and past the intensity the process exits non-zero. Damage is refused,
//! never served as data, and start-up errors name the owner and do not say "retry after".

#[path = "../examples/support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn temp(name: &str) -> PathBuf {
    // Kept (as before): a failing test's store is there to look at.
    tempfile::Builder::new()
        .prefix(&format!("crashonly-cartstore-{name}-"))
        .tempdir()
        .unwrap()
        .keep()
}

/// A running cart service, its output going to a file.
struct Service {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

/// Starts `cart` on `data`: the service, or (when it exits before listening) its exit status
/// and everything it printed.
async fn start(data: &Path, extra: &[&str]) -> Result<Service, (std::process::ExitStatus, String)> {
    // Logs are kept off the store's disk (which a test may fill up), and kept.
    let (file, log) = tempfile::Builder::new()
        .prefix("crashonly-cartstore-")
        .suffix(".log")
        .tempfile()
        .unwrap()
        .keep()
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cart"))
        .args(["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(addr) = line.strip_prefix("listening ") {
            let addr = addr.parse().unwrap();
            // Keep reading stdout (logs must not block the service on a full pipe).
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(Service { child, addr, log });
        }
        printed.push_str(&line);
        printed.push('\n');
    }
    let status = child.wait().await.unwrap();
    printed.push_str(&std::fs::read_to_string(&log).unwrap());
    Err((status, printed))
}

impl Service {
    async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> http::Response {
        http::request(
            self.addr,
            method,
            path,
            headers,
            body.as_bytes(),
            Duration::from_secs(10),
        )
        .await
        .unwrap()
    }

    async fn add(&self, cart: &str, item: &str) -> http::Response {
        let body = serde_json::json!({ "item": item }).to_string();
        self.req("POST", &format!("/carts/{cart}/items"), &[], &body).await
    }

    async fn items(&self, cart: &str) -> Vec<String> {
        let r = self.req("GET", &format!("/carts/{cart}"), &[], "").await;
        assert_eq!(r.status, 200, "{}", body(&r));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        serde_json::from_value(v["items"].clone()).unwrap()
    }

    /// Waits (bounded) for the process to exit; its status and everything it logged.
    async fn exits_within(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("the process exits by itself")
            .unwrap();
        (status, std::fs::read_to_string(&self.log).unwrap())
    }

    async fn kill9(mut self) {
        self.child.kill().await.unwrap();
    }
}

fn body(r: &http::Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A small tmpfs, unmounted when dropped: a disk that really fills up.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(name: &str, size: &str) -> SmallDisk {
        let dir = temp(name);
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.to_str().unwrap(),
            ])
            .output()
            .expect("mount(8) runs");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir)
    }

    /// Fills the disk: writes a filler file until the disk says no.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let chunk = vec![0xEEu8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn make_room(&self) {
        std::fs::remove_file(self.0.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Adds 190-byte items to `cart` until an add is refused; the refusal.
async fn add_until_refused(svc: &Service, cart: &str, acked: &mut Vec<String>) -> http::Response {
    for i in 0..2000 {
        let item = format!("{i:04}-{}", "x".repeat(180));
        let r = svc.add(cart, &item).await;
        if r.status != 200 {
            return r;
        }
        acked.push(item);
    }
    panic!("the disk never filled up");
}

#[tokio::test]
async fn a_full_disk_is_a_crash_that_recovers_when_there_is_room_again() {
    let disk = SmallDisk::mount("full", "4m");
    let data = disk.0.join("data");
    let svc = start(&data, &["--store-intensity", "1000/60"]).await.unwrap();
    let mut acked = Vec::new();
    assert_eq!(svc.add("kept", "before").await.status, 200);
    disk.fill();
    let refused = add_until_refused(&svc, "big", &mut acked).await;
    // It says what happened, and when to come back.
    assert_eq!(refused.status, 507, "{}", body(&refused));
    assert!(body(&refused).contains("no space left"), "{}", body(&refused));
    assert!(refused.headers.contains_key("retry-after"), "{:?}", refused.headers);
    // Every later write is refused the same way while the disk is full (none acknowledged).
    for _ in 0..3 {
        let r = svc.add("big", "while-full").await;
        assert_ne!(r.status, 200, "nothing is acknowledged while the disk is full");
    }
    // The disk has room again: writes succeed again, without a restart of the process.
    disk.make_room();
    let since = Instant::now();
    loop {
        let r = svc.add("big", "after").await;
        if r.status == 200 {
            acked.push("after".into());
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(30), "still refused: {}", body(&r));
        let wait = r
            .headers
            .get("x-retry-after-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        tokio::time::sleep(Duration::from_millis(wait.min(1000))).await;
    }
    // Nothing acknowledged was lost, nothing refused was applied.
    assert_eq!(svc.items("big").await, acked);
    assert_eq!(svc.items("kept").await, ["before"]);
    assert_eq!(svc.req("GET", "/health", &[], "").await.status, 200);
    let log = std::fs::read_to_string(&svc.log).unwrap();
    assert!(log.contains("No space left on device"), "the log says what happened");
    svc.kill9().await;
}

#[tokio::test]
async fn a_disk_that_stays_full_exits_non_zero_past_the_store_intensity() {
    let disk = SmallDisk::mount("stays-full", "4m");
    let data = disk.0.join("data");
    let svc = start(&data, &["--store-intensity", "2/60"]).await.unwrap();
    disk.fill();
    let mut acked = Vec::new();
    let refused = add_until_refused(&svc, "big", &mut acked).await;
    assert_eq!(refused.status, 507, "{}", body(&refused));
    // Health and readiness say the store is down while it is.
    let (health, ready) = (
        svc.req("GET", "/health", &[], "").await,
        svc.req("GET", "/ready", &[], "").await,
    );
    assert!(
        health.status != 200 || ready.status != 200,
        "{} {}",
        body(&health),
        body(&ready)
    );
    // Keep offering writes: each fails, each failure is a crash of the store, and past the
    // root's intensity the process gives up and exits non-zero, saying why.
    let addr = svc.addr;
    let offer = tokio::spawn(async move {
        for _ in 0..600 {
            let body = br#"{"item":"more"}"#;
            let _ = http::request(addr, "POST", "/carts/big/items", &[], body, Duration::from_secs(2)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let (status, log) = svc.exits_within(Duration::from_secs(60)).await;
    offer.abort();
    assert!(!status.success(), "{status:?}");
    assert!(log.contains("no space left"), "{log}");
    assert!(log.contains("error: the store failed: no space left"), "{log}");
}

/// Flips one bit in every copy of `marker` in the store file (values are stored inline in redb's
/// leaf pages); returns how many it found.
fn damage(store: &Path, marker: &[u8]) -> usize {
    let mut bytes = std::fs::read(store).unwrap();
    let mut found = 0;
    let mut at = 0;
    while let Some(pos) = bytes[at..].windows(marker.len()).position(|w| w == marker) {
        bytes[at + pos + marker.len() / 2] ^= 0x04;
        found += 1;
        at += pos + marker.len();
    }
    std::fs::write(store, bytes).unwrap();
    found
}

/// A store with two carts, killed with SIGKILL, then the cart `hurt` damaged on disk.
async fn damaged_store(name: &str) -> PathBuf {
    let data = temp(name).join("data");
    let svc = start(&data, &[]).await.unwrap();
    assert_eq!(svc.add("hurt", "MARKER-0123456789").await.status, 200);
    assert_eq!(svc.add("whole", "fine").await.status, 200);
    svc.kill9().await;
    assert!(damage(&data.join("carts.redb"), b"MARKER-0123456789") > 0);
    data
}

#[tokio::test]
async fn a_damaged_store_is_refused_at_start_never_served_as_data() {
    let data = damaged_store("refused").await;
    let (status, printed) = match start(&data, &[]).await {
        Ok(svc) => panic!("a damaged store was served: {:?}", svc.items("hurt").await),
        Err(exit) => exit,
    };
    assert!(!status.success());
    assert!(printed.contains("store corrupt"), "{printed}");
    assert!(
        !printed.contains("retry after"),
        "a process that exits does not say retry after: {printed}"
    );
}

#[tokio::test]
async fn damage_found_while_serving_is_a_clear_5xx_then_a_non_zero_exit() {
    let data = damaged_store("found-late").await;
    // Skipping the first verification, the damage is found by the first read of that cart.
    let svc = start(&data, &["--skip-verify", "--store-intensity", "6/60"])
        .await
        .unwrap();
    let r = svc.req("GET", "/carts/hurt", &[("X-Request-Ttl-Ms", "1000")], "").await;
    assert_eq!(r.status, 500, "{}", body(&r));
    assert!(body(&r).contains("corrupt"), "{}", body(&r));
    // The cart never starts from empty state as if new, and the store is down for everyone.
    let r = svc.add("hurt", "overwrite").await;
    assert!(r.status >= 500, "{}", body(&r));
    let health = svc.req("GET", "/health", &[], "").await;
    assert!(
        health.status >= 500 && body(&health).contains("corrupt"),
        "{}",
        body(&health)
    );
    // Every reopen verifies every page and refuses the file: past the intensity, a non-zero exit.
    let (status, log) = svc.exits_within(Duration::from_secs(60)).await;
    assert!(!status.success(), "{status:?}");
    assert!(log.contains("corrupt"), "{log}");
}

#[tokio::test]
async fn a_second_service_on_the_same_store_is_refused_naming_the_owner() {
    let data = temp("owned").join("data");
    let svc = start(&data, &[]).await.unwrap();
    let owner = svc.child.id().unwrap();
    let (status, printed) = match start(&data, &[]).await {
        Ok(_) => panic!("two processes serve one store"),
        Err(exit) => exit,
    };
    assert!(!status.success());
    assert!(
        printed.contains(&format!("already open in process {owner}")),
        "{printed}"
    );
    assert!(!printed.to_lowercase().contains("retry"), "{printed}");
    assert_eq!(svc.add("a", "still-mine").await.status, 200);
    svc.kill9().await;
}

#[tokio::test]
async fn a_missing_store_file_is_refused_not_started_empty() {
    let data = temp("missing").join("data");
    let svc = start(&data, &[]).await.unwrap();
    assert_eq!(svc.add("a", "acknowledged").await.status, 200);
    svc.kill9().await;
    std::fs::remove_file(data.join("carts.redb")).unwrap();
    let (status, printed) = match start(&data, &[]).await {
        Ok(svc) => panic!("started empty: {:?}", svc.items("a").await),
        Err(exit) => exit,
    };
    assert!(!status.success());
    assert!(printed.contains("is missing"), "{printed}");
}

#[tokio::test]
async fn an_idempotency_key_is_one_request() {
    let data = temp("idem").join("data");
    let svc = start(&data, &[]).await.unwrap();
    let post = |cart: &'static str, item: &'static str| {
        let body = serde_json::json!({ "item": item }).to_string();
        let svc = &svc;
        async move {
            svc.req(
                "POST",
                &format!("/carts/{cart}/items"),
                &[("Idempotency-Key", "K-1")],
                &body,
            )
            .await
        }
    };
    let first = post("a", "book").await;
    assert_eq!(first.status, 200, "{}", body(&first));
    let retry = post("a", "book").await;
    assert_eq!(retry.status, 200);
    assert_eq!(retry.body, first.body, "a retry gets the first answer");
    for (cart, item) in [("b", "book"), ("a", "pen")] {
        let r = post(cart, item).await;
        assert_eq!(r.status, 422, "{cart}/{item}: {}", body(&r));
        assert!(body(&r).contains("already used for another request"), "{}", body(&r));
    }
    assert_eq!(svc.items("a").await, ["book"]);
    assert!(
        svc.items("b").await.is_empty(),
        "never acknowledged without being applied"
    );
    svc.kill9().await;
}
