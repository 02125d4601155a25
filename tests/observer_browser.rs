//! The observer page in a real browser: headless Chromium driven through chromedriver (WebDriver)
//! loads the page of a running `cart` process, finds the carts family and its activations in the
//! tree, sees a cart's restart count change without a reload after the test crashes it through
//! the page's control endpoint, and takes a screenshot that must be a non-trivial PNG.
//!
//! Needs `chromium` and `chromium-driver` (Debian packages); runs when `CRASHONLY_BROWSER=1`
//! (`.ci/run` sets it, so there it fails rather than skips), and prints `skipped:` otherwise.

#[path = "../examples/support/http.rs"]
mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TOKEN: &str = "observer-test-token";

/// Kills the processes it holds and removes the cart's data, also when the test fails (the
/// screenshot stays, for a look).
struct Guard {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

async fn start_cart(guard: &mut Guard) -> SocketAddr {
    let data = guard.dir.join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cart"))
        .args(["--listen", "127.0.0.1:0", "--observer-token", TOKEN, "--data"])
        .arg(&data)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the cart binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    guard.children.push(child);
    let line = lines.next_line().await.expect("reads").expect("a first line");
    line.strip_prefix("listening ")
        .expect("listening ADDR")
        .parse()
        .expect("an address")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .chain([Path::new("/usr/lib/chromium").join(n)])
            .find(|p| p.is_file())
    })
}

async fn start_chromedriver(guard: &mut Guard) -> u16 {
    let driver = find(&["chromedriver"]).expect("chromedriver (apt-get install chromium-driver)");
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    guard.children.push(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Listening is enough: the session request below waits for it to be ready.
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return port;
        }
        assert!(Instant::now() < deadline, "chromedriver did not answer within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let r = http::request(addr, "POST", path, headers, body, Duration::from_secs(5))
        .await
        .expect("the cart answers");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Reads the text of the first element matching `css` until `want` holds, for at most `limit`.
async fn wait_text(c: &fantoccini::Client, css: &str, limit: Duration, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < deadline {
        // The page re-renders the tree on every frame: an element found may be gone when read.
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if want(&t) {
                    return t;
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{css}: still {last:?} after {limit:?}");
}

#[tokio::test]
async fn the_observer_page_shows_the_tree_and_a_restart_live_in_chromium() {
    if std::env::var("CRASHONLY_BROWSER").as_deref() != Ok("1") {
        crashonly::testing::skipped("set CRASHONLY_BROWSER=1 (needs chromium and chromium-driver)");
        return;
    }
    let began = Instant::now();
    // The guard removes the cart's data; the screenshot stays.
    let dir = tempfile::Builder::new()
        .prefix("crashonly-observer-browser-")
        .tempdir()
        .expect("a temp dir")
        .keep();
    let mut guard = Guard {
        children: Vec::new(),
        dir: dir.clone(),
    };
    let cart = start_cart(&mut guard).await;
    for id in ["alice", "bob", "carol"] {
        let (s, body) = post(cart, &format!("/carts/{id}/items"), &[], br#"{"item":"book"}"#).await;
        assert_eq!(s, 200, "{body}");
    }
    // The controls refuse without the token, before any browser is involved.
    let (s, _) = post(cart, "/observer/api/crash?path=/carts/alice", &[], b"").await;
    assert_eq!(s, 401);

    let port = start_chromedriver(&mut guard).await;
    let chromium = find(&["chromium", "chromium-browser"]).expect("chromium (apt-get install chromium)");
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,900"],
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session");
    let result = async {
        client
            .goto(&format!("http://{cart}/observer"))
            .await
            .expect("the page loads");
        // The tree: the root supervisor, the carts family and its activations.
        let carts = wait_text(
            &client,
            r#"li[data-path="/carts"] > .row"#,
            Duration::from_secs(10),
            |t| t.contains("family"),
        )
        .await;
        assert!(carts.contains("live activations 3/"), "{carts}");
        let root = wait_text(&client, r#"li[data-path="/"] > .row"#, Duration::from_secs(5), |t| {
            t.contains("supervisor")
        })
        .await;
        assert!(root.contains("OneForOne") && root.contains("intensity 0/5"), "{root}");
        // The application's own section (a `Panel`): the store serving, three carts live.
        let service = wait_text(&client, "section.panel", Duration::from_secs(5), |t| {
            t.contains("carts live")
        })
        .await;
        assert!(service.starts_with("Service (6)"), "{service}");
        assert!(
            service.contains("store serving") && service.contains("carts live 3 of"),
            "{service}"
        );
        for id in ["alice", "bob", "carol"] {
            let css = format!(r#"li[data-path="/carts/{id}"] > .row b.restarts"#);
            wait_text(&client, &css, Duration::from_secs(5), |t| t == "0").await;
        }
        let url_before = client.current_url().await.expect("a url");

        // Crash a cart from the test; the page shows its new restart count without a reload.
        let (s, body) = post(
            cart,
            "/observer/api/crash?path=/carts/alice",
            &[("x-observer-token", TOKEN)],
            b"",
        )
        .await;
        assert_eq!((s, body.as_str()), (200, r#"{"crashed":1}"#));
        let seen = Instant::now();
        wait_text(
            &client,
            r#"li[data-path="/carts/alice"] > .row b.restarts"#,
            Duration::from_secs(10),
            |t| t == "1",
        )
        .await;
        println!("restart shown on the page {:?} after the crash", seen.elapsed());
        let crash = wait_text(
            &client,
            r#"li[data-path="/carts/alice"] > .row .last-crash"#,
            Duration::from_secs(5),
            |t| t.contains("crash-rebooted from outside"),
        )
        .await;
        assert!(crash.contains("ago"), "{crash}");
        wait_text(&client, "tr.ev-crash", Duration::from_secs(5), |t| {
            t.contains("/carts/alice")
        })
        .await;
        // Its siblings did not restart; the page was not reloaded (the same document, live).
        let bob = client
            .find(Locator::Css(r#"li[data-path="/carts/bob"] > .row b.restarts"#))
            .await
            .expect("bob is shown");
        assert_eq!(bob.text().await.expect("text"), "0");
        assert_eq!(client.current_url().await.expect("a url"), url_before);
        let status = client
            .find(Locator::Id("status"))
            .await
            .expect("status")
            .text()
            .await
            .expect("text");
        assert_eq!(status, "live");

        // Something rendered: a screenshot of real size with more than a handful of colours.
        let shot = client.screenshot().await.expect("a screenshot");
        let file = dir.join("observer.png");
        std::fs::write(&file, &shot).expect("written");
        let decoder = png::Decoder::new(std::fs::File::open(&file).expect("opens"));
        let mut reader = decoder.read_info().expect("a PNG");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("a frame");
        assert!(
            info.width >= 800 && info.height >= 600,
            "{}x{}",
            info.width,
            info.height
        );
        let px = info.color_type.samples();
        let colours: std::collections::HashSet<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
        assert!(colours.len() > 20, "only {} colours: nothing rendered", colours.len());
        println!(
            "screenshot {} bytes, {}x{}, {} colours, at {}",
            shot.len(),
            info.width,
            info.height,
            colours.len(),
            file.display()
        );
    }
    .await;
    let _ = client.close().await;
    println!("browser test took {:?}", began.elapsed());
    result
}
