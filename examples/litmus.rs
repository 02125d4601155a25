//! **litmus**: "kill -9 every few seconds: is progress still happening, is all important data kept,
//! is the system consistent?" Runs the cart service as a child process on the embedded store,
//! drives load at it over HTTP (clients that honour `Retry-After` and resend their idempotent,
//! keyed requests), `SIGKILL`s it every `--kill-every` and restarts it at once, for `--duration`.
//! Every acknowledged write is recorded; at the end the state is read back and checked.
//!
//! `cargo run --release --bin litmus -- --duration 30s --kill-every 2s [--clients 16] [--carts N]
//! [--idle 2s] [--max-active N] [--json]`
//! Exit status: 0 when nothing acknowledged was lost, nothing unexpected or duplicated appeared, and
//! progress never stopped; 1 otherwise; 2 for bad arguments.
//!
//! Carts are entities of the service, passivated after `--idle` or past `--max-active`: a
//! passivated cart is recovered from the store by its next request, and the final check judges
//! that too. The idle time is 1s here (the service's default is 60s), shorter than the time between
//! kills, or no process would live long enough to passivate anything. By default each client
//! writes its own 4 carts in turn; `--carts N` spreads the clients over N distinct carts (each
//! written by one client when N is at least `--clients`), each client picking one of its carts at
//! random for every write, so that some carts go quiet long enough to be passivated under load.
//! The service's `/stats` is sampled during the run: the report gives its live activations and
//! resident memory at the end of the load and at their peak.
//! `--overload`: the front end under 10x its load instead (see `support/overload.rs`).
//! `--cluster [--nodes 3]`: the cart service clustered (`cart --cluster`, on `CRASHONLY_PG_URL` and
//! `CRASHONLY_NATS_URL`, a 1 s lease), each client writing through a random node, a random node
//! killed every `--kill-every`; the same history check.

#[path = "support/cart_service.rs"]
mod cart_service;
#[path = "support/history.rs"]
mod history;
#[path = "support/http.rs"]
mod http;
#[path = "support/overload.rs"]
mod overload;
#[path = "support/service.rs"]
mod service;
#[path = "support/tables.rs"]
mod tables;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cart_service::duration;
use service::{Figures, Service};

struct Opts {
    duration: Duration,
    kill_every: Duration,
    clients: usize,
    carts_per_client: usize,
    /// `--carts N`: the clients spread over N distinct carts instead.
    carts: Option<usize>,
    /// The service's `--idle` and `--max-active`.
    idle: Duration,
    max_active: Option<usize>,
    json: bool,
    unsafe_store: bool,
    /// `--kill-every off`: no kills (for the faultload experiment).
    kill: bool,
    fault_every_ms: Option<u64>,
    fault_process: bool,
    faultload_table: bool,
    table1: bool,
    /// `--cluster`: this many nodes (`--nodes`, 3).
    nodes: Option<usize>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        duration: Duration::from_secs(30),
        kill_every: Duration::from_secs(2),
        clients: 16,
        carts_per_client: 4,
        carts: None,
        idle: Duration::from_secs(1),
        max_active: None,
        json: false,
        unsafe_store: false,
        kill: true,
        fault_every_ms: None,
        fault_process: false,
        faultload_table: false,
        table1: false,
        nodes: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--duration" => o.duration = duration(&val()?)?,
            "--kill-every" => match val()?.as_str() {
                "off" => o.kill = false,
                v => o.kill_every = duration(v)?,
            },
            "--fault-every-ms" => {
                o.fault_every_ms = Some(val()?.parse().map_err(|_| "--fault-every-ms needs a number")?)
            }
            "--fault-mode" => o.fault_process = val()? == "process",
            "--faultload-table" => o.faultload_table = true,
            "--table1" => o.table1 = true,
            "--clients" => o.clients = val()?.parse().map_err(|_| "--clients needs a whole number")?,
            "--carts" => {
                o.carts = Some(
                    val()?
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or("--carts needs a positive whole number")?,
                )
            }
            "--idle" => o.idle = duration(&val()?)?,
            "--max-active" => {
                o.max_active = Some(
                    val()?
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or("--max-active needs a positive whole number")?,
                )
            }
            "--json" => o.json = true,
            "--cluster" => o.nodes = Some(o.nodes.unwrap_or(3)),
            "--nodes" => {
                o.nodes = Some(
                    val()?
                        .parse()
                        .ok()
                        .filter(|n| (1..=16).contains(n))
                        .ok_or("--nodes needs 1 to 16")?,
                )
            }
            // Runs the service with acknowledgements before sync: the harness must catch the loss.
            "--unsafe-store" => o.unsafe_store = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?} (try --duration 30s --kill-every 2s --clients 16 --carts 2000 --json)"
                ))
            }
        }
    }
    if o.kill_every < Duration::from_millis(100) {
        return Err("--kill-every must be at least 100ms".into());
    }
    if o.duration.is_zero() || o.clients == 0 || o.clients > 1024 {
        return Err("--duration must be positive and --clients between 1 and 1024".into());
    }
    if o.idle.is_zero() {
        return Err("--idle must be positive".into());
    }
    if o.nodes.is_some() && (o.unsafe_store || o.fault_every_ms.is_some() || o.faultload_table || o.table1) {
        return Err("--cluster runs kill -9 only (no --unsafe-store, faults or tables)".into());
    }
    Ok(o)
}

/// What the clients saw.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    acked: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Every write, in each client's order: (cart, item), acknowledged or of unknown outcome.
    writes: Mutex<Vec<history::Write<String, String>>>,
    /// Acknowledgements per second since the start.
    per_second: Mutex<Vec<u64>>,
    /// Time from first attempt to acknowledgement, per write, in microseconds.
    latencies: Mutex<Vec<u64>>,
}

impl Stats {
    fn error(&self, kind: impl Into<String>) {
        *self.errors.lock().unwrap().entry(kind.into()).or_default() += 1;
    }
}

/// The carts client `id` writes: its own few by default; with `--carts N`, every `clients`-th of
/// the N (so each cart has one writer), or one shared with other clients when N is smaller.
fn carts_of(id: usize, opts: &Opts) -> Vec<String> {
    match opts.carts {
        None => (0..opts.carts_per_client).map(|k| format!("c{id}-{k}")).collect(),
        Some(n) if n < opts.clients => vec![format!("c{}", id % n)],
        Some(n) => (id..n).step_by(opts.clients).map(|k| format!("c{k}")).collect(),
    }
}

/// Client `id`: adds to `carts` in turn, or at random, until `stop`.
async fn client(
    id: usize,
    carts: Vec<String>,
    random: bool,
    addrs: Vec<SocketAddr>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    started: Instant,
) {
    let mut seq = 0u64;
    let mut x = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while !stop.load(Ordering::Relaxed) {
        let turn = if random {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as usize
        } else {
            seq as usize
        };
        let cart = carts[turn % carts.len()].clone();
        // Unique across clients (a cart may have several writers).
        let item = format!("{cart}:{id}:{seq}");
        seq += 1;
        let body = format!("{{\"item\":\"{item}\"}}");
        let path = format!("/carts/{cart}/items");
        // The same request, with the same idempotency key, until it is acknowledged.
        let first_attempt = Instant::now();
        let give_up = first_attempt + Duration::from_secs(30);
        loop {
            if Instant::now() > give_up {
                stats.error("gave up after 30 s");
                stats.writes.lock().unwrap().push(history::Write {
                    client: id as u32,
                    key: cart.clone(),
                    value: item.clone(),
                    outcome: history::Outcome::Unknown,
                });
                break;
            }
            let headers = [("Idempotency-Key", item.as_str()), ("X-Request-Ttl-Ms", "2000")];
            // Each attempt through any node (one, on a single process).
            let addr = addrs[(seq as usize + x as usize) % addrs.len()];
            x = x.rotate_left(7) ^ 0x9E37;
            let r = http::request(addr, "POST", &path, &headers, body.as_bytes(), Duration::from_secs(3)).await;
            stats.requests.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(r) if r.status == 200 => {
                    stats.acked.fetch_add(1, Ordering::Relaxed);
                    stats
                        .latencies
                        .lock()
                        .unwrap()
                        .push(first_attempt.elapsed().as_micros() as u64);
                    stats.writes.lock().unwrap().push(history::Write {
                        client: id as u32,
                        key: cart.clone(),
                        value: item.clone(),
                        outcome: history::Outcome::Ok,
                    });
                    let sec = started.elapsed().as_secs() as usize;
                    let mut ps = stats.per_second.lock().unwrap();
                    if ps.len() <= sec {
                        ps.resize(sec + 1, 0);
                    }
                    ps[sec] += 1;
                    break;
                }
                Ok(r) if r.status == 503 => {
                    stats.error("503 (Retry-After)");
                    let ms = r.headers.get("x-retry-after-ms").and_then(|v| v.parse().ok());
                    let secs = r
                        .headers
                        .get("retry-after")
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| s * 1000);
                    tokio::time::sleep(Duration::from_millis(ms.or(secs).unwrap_or(50).min(2000))).await;
                }
                Ok(r) => {
                    stats.error(format!("HTTP {}", r.status));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    stats.error(match e.kind() {
                        std::io::ErrorKind::ConnectionRefused => "connection refused (restarting)".to_string(),
                        std::io::ErrorKind::TimedOut => "timed out".to_string(),
                        _ => "connection lost (killed)".to_string(),
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // The same binary is the service under test, so one `cargo run` builds everything.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-cart") {
        return cart_service::serve(args[1..].to_vec()).await;
    }
    if args.iter().any(|a| a == "--overload") {
        return overload::run(&args).await;
    }
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.faultload_table {
        return tables::faultload_table(&opts).await;
    }
    if opts.table1 {
        return tables::table1().await;
    }
    let data = std::env::temp_dir().join(format!("crashonly-litmus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut extra: Vec<String> = vec!["--idle".into(), format!("{}ms", opts.idle.as_millis())];
    if let Some(n) = opts.max_active {
        extra.extend(["--max-active".into(), n.to_string()]);
    }
    if opts.unsafe_store {
        extra.push("--ack-before-sync".into());
    }
    let mut faults: Vec<String> = Vec::new();
    if let Some(ms) = opts.fault_every_ms {
        faults.extend(["--fault-every-ms".into(), ms.to_string(), "--fault-mode".into()]);
        faults.push(if opts.fault_process { "process" } else { "actor" }.into());
    }
    let mut svcs = match opts.nodes {
        None => vec![Service::new(data.clone(), extra, faults)],
        Some(n) => match cluster_nodes(n, &extra) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    for svc in &mut svcs {
        if let Err(e) = svc.start().await {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let addrs: Vec<SocketAddr> = svcs.iter().map(|s| s.addr).collect();
    let mut pick = u64::from(std::process::id()) | 1;
    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..opts.clients)
        .map(|i| {
            tokio::spawn(client(
                i,
                carts_of(i, &opts),
                opts.carts.is_some(),
                addrs.clone(),
                stats.clone(),
                stop.clone(),
                started,
            ))
        })
        .collect();

    let mut recoveries = Vec::new();
    let mut process_restarts: Vec<Duration> = Vec::new();
    let mut figures: Vec<Figures> = svcs.iter().map(|_| Figures::default()).collect();
    let mut last_sample = Instant::now();
    let mut last_progress = Instant::now();
    let mut next_kill = started + opts.kill_every;
    while started.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A process that died on its own (the whole-process faultload) is restarted from outside.
        for svc in &mut svcs {
            let t = Instant::now();
            match svc.ensure_running().await {
                Ok(true) => process_restarts.push(t.elapsed()),
                Ok(false) => {}
                Err(e) => {
                    eprintln!("error: restart failed: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        if opts.kill && Instant::now() >= next_kill {
            let t = Instant::now();
            pick ^= pick << 13;
            pick ^= pick >> 7;
            pick ^= pick << 17;
            let svc = &mut svcs[(pick % addrs.len() as u64) as usize];
            svc.kill().await;
            if let Err(e) = svc.start().await {
                eprintln!("error: restart failed: {e}");
                return ExitCode::FAILURE;
            }
            while !svc.serving().await {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            recoveries.push(t.elapsed());
            next_kill = Instant::now() + opts.kill_every;
        }
        if last_sample.elapsed() >= Duration::from_millis(500) {
            last_sample = Instant::now();
            for (f, svc) in figures.iter_mut().zip(&svcs) {
                f.sample(svc).await;
            }
        }
        if !opts.json && last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            eprintln!(
                "[{:5.1}s] kills {:3} · requests {:7} · acknowledged {:7} · client errors {:5}",
                started.elapsed().as_secs_f64(),
                recoveries.len(),
                stats.requests.load(Ordering::Relaxed),
                stats.acked.load(Ordering::Relaxed),
                stats.errors.lock().unwrap().values().sum::<u64>()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Keep the service alive until the clients have their last requests acknowledged.
    while !clients.iter().all(|c| c.is_finished()) {
        for svc in &mut svcs {
            if let Err(e) = svc.ensure_running().await {
                eprintln!("error: restart failed: {e}");
                return ExitCode::FAILURE;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for c in clients {
        let _ = c.await;
    }
    // The service's figures at the end of the load, before the read-back activates every cart.
    for (f, svc) in figures.iter_mut().zip(&mut svcs) {
        for _ in 0..40 {
            if f.sample(svc).await {
                break;
            }
            let _ = svc.ensure_running().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Read back from the same store, on a service without injected faults (through the first node).
    let svc = &mut svcs[0];
    if !svc.faults.is_empty() {
        svc.faults.clear();
        svc.kill().await;
        if let Err(e) = svc.ensure_running().await {
            eprintln!("error: restart failed: {e}");
            return ExitCode::FAILURE;
        }
    }

    // Read everything back and check it.
    // Read every cart back and judge the history.
    let writes = std::mem::take(&mut *stats.writes.lock().unwrap());
    let carts: HashSet<String> = writes.iter().map(|w| w.key.clone()).collect();
    let carts_written = carts.len();
    let mut state = HashMap::new();
    for cart in carts {
        let stored: Vec<String> = loop {
            match http::request(
                svc.addr,
                "GET",
                &format!("/carts/{cart}"),
                &[],
                b"",
                Duration::from_secs(3),
            )
            .await
            {
                Ok(r) if r.status == 200 => {
                    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("cart JSON");
                    break v["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_str().unwrap().to_owned())
                        .collect();
                }
                _ => {
                    if let Err(e) = svc.ensure_running().await {
                        eprintln!("error: restart failed: {e}");
                        return ExitCode::FAILURE;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
            }
        };
        state.insert(cart, stored);
    }
    let verdict = history::check(&writes, &state);
    let (lost, unexpected, duplicates, acked_total) = (
        verdict.lost,
        verdict.unexpected,
        verdict.duplicates,
        verdict.acknowledged,
    );
    for svc in &mut svcs {
        svc.kill().await;
    }
    let _ = std::fs::remove_dir_all(&data);
    // The service's figures, over its nodes.
    let sum = |f: fn(&Figures) -> u64| figures.iter().map(f).sum::<u64>();
    let most = |f: fn(&Figures) -> u64| figures.iter().map(f).max().unwrap_or(0);

    let per_second = stats.per_second.lock().unwrap().clone();
    let whole_seconds = (opts.duration.as_secs() as usize).min(per_second.len());
    let stalled = per_second
        .get(1..whole_seconds)
        .map_or(0, |s| s.windows(5).filter(|w| w.iter().all(|&n| n == 0)).count());
    recoveries.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (min, med, max) = match recoveries.len() {
        0 => (0.0, 0.0, 0.0),
        n => (ms(recoveries[0]), ms(recoveries[n / 2]), ms(recoveries[n - 1])),
    };
    let errors = stats.errors.lock().unwrap().clone();
    let mut lat = stats.latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let p99_ms = lat
        .get(lat.len().saturating_sub(1).min(lat.len() * 99 / 100))
        .map_or(0.0, |us| *us as f64 / 1000.0);
    // Writes carry idempotency keys (no duplicates allowed) and each client waits for one write
    // before the next (order per client and cart is promised).
    let ok = verdict.valid(true, true) && stalled == 0 && acked_total > 0;
    if opts.json {
        let report = serde_json::json!({
            "duration_s": opts.duration.as_secs_f64(),
            "kills": recoveries.len(),
            "recovery_ms": { "min": min, "median": med, "max": max },
            "requests": stats.requests.load(Ordering::Relaxed),
            "acked": acked_total,
            "acked_lost": lost,
            "unexpected": unexpected,
            "duplicates": duplicates,
            "order_violations": verdict.order_violations,
            "stalled_windows": stalled,
            "client_errors": errors,
            "client_error_total": errors.values().sum::<u64>(),
            "p99_ms": p99_ms,
            "process_restarts": process_restarts.len(),
            "carts": carts_written,
            "nodes": addrs.len(),
            "service": {
                "idle_ms": opts.idle.as_millis() as u64,
                "max_active": most(|f| f.now("max_active")),
                "active_end": sum(|f| f.now("active")),
                "active_peak": most(|f| f.active_peak),
                "activations": sum(|f| f.total(0)),
                "passivated_idle": sum(|f| f.total(1)),
                "passivated_cap": sum(|f| f.total(2)),
                "rss_kb_end": most(|f| f.rss_kb()),
                "rss_kb_peak": most(|f| f.rss_kb_peak),
                "samples": sum(|f| f.samples),
            },
            "ok": ok,
        });
        println!("{report}");
    } else {
        println!(
            "litmus: cart service, kill -9 every {:?} for {:?}",
            opts.kill_every, opts.duration
        );
        println!("  kills                     {}", recoveries.len());
        println!("  serving again after kill  min {min:.1} ms · median {med:.1} ms · max {max:.1} ms");
        println!("  requests                  {}", stats.requests.load(Ordering::Relaxed));
        println!("  acknowledged writes       {acked_total}");
        println!("  p99 time to acknowledge   {p99_ms:.1} ms");
        println!("  client-visible errors     {}", errors.values().sum::<u64>());
        for (kind, n) in &errors {
            println!("      {n:7}  {kind}");
        }
        println!("  acknowledged writes lost  {lost}");
        println!("  unexpected values         {unexpected}");
        println!("  duplicates                {duplicates}");
        println!("  order violations          {}", verdict.order_violations);
        println!("  5 s windows without progress {stalled}");
        let mib = |kb: u64| kb as f64 / 1024.0;
        println!("  carts written             {carts_written}");
        println!(
            "  live carts (activations)  end of load {} · peak {} (max active {}, idle {:?})",
            sum(|f| f.now("active")),
            most(|f| f.active_peak),
            most(|f| f.now("max_active")),
            opts.idle
        );
        println!(
            "  activations               {} · passivated idle {} · over the cap {} (all processes, as sampled)",
            sum(|f| f.total(0)),
            sum(|f| f.total(1)),
            sum(|f| f.total(2))
        );
        println!(
            "  service RSS               end of load {:.1} MiB · peak {:.1} MiB",
            mib(most(|f| f.rss_kb())),
            mib(most(|f| f.rss_kb_peak))
        );
        println!(
            "{}",
            if ok {
                "PASS: progress continued, nothing acknowledged was lost, the state is consistent"
            } else {
                "FAIL"
            }
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--cluster`: `n` nodes of the clustered cart service, on `CRASHONLY_PG_URL` and
/// `CRASHONLY_NATS_URL`, in a cluster (and store) of this run's own.
fn cluster_nodes(n: usize, extra: &[String]) -> Result<Vec<Service>, String> {
    let (Ok(pg), Ok(nats)) = (std::env::var("CRASHONLY_PG_URL"), std::env::var("CRASHONLY_NATS_URL")) else {
        return Err("--cluster needs CRASHONLY_PG_URL and CRASHONLY_NATS_URL".into());
    };
    let schema = format!("litmus_{}", std::process::id());
    Ok((0..n)
        .map(|i| {
            let mut args: Vec<String> = ["--cluster", "--pg", &pg, "--nats", &nats, "--schema", &schema]
                .map(String::from)
                .to_vec();
            args.extend(["--node-name".into(), format!("n{i}"), "--lease".into(), "1s".into()]);
            args.extend(extra.iter().cloned());
            // No data directory: the store of record is PostgreSQL.
            Service::new(std::path::PathBuf::new(), args, Vec::new())
        })
        .collect())
}
