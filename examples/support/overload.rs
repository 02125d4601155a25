//! `litmus --overload`: does the cart service's front end protect itself under 10x its load?
//!
//! 1. Starts the cart service as a child (as litmus does).
//! 2. Closed loop: `--clients` kept-alive connections send adds back to back for `--peak-duration`
//!    (the first second is warm-up); the 2xx rate is the peak, the largest RSS seen is the steady
//!    state. After the open loop, the closed loop runs again: the goodput is judged against the
//!    mean of the two peaks, since other work on the machine may change in between.
//! 3. Open loop: adds at `--overload-factor` x peak per second, each on schedule whatever the
//!    answers to the earlier ones, each with its own timeout, for `--duration` (at most
//!    [`MAX_REQUESTS`] in all), from `--connections` kept-alive connections.
//!
//! Reports the offered rate, the goodput (2xx per second), the 503s (and whether they carried
//! `Retry-After`), other errors, latency of the served requests, and the service's RSS.
//! Goal (issue 16): goodput at least 80% of the peak, peak RSS under 2x the steady state, every
//! 503 with `Retry-After`; exit 1 when missed. The load runs on one thread of its own, on
//! kept-alive connections.
//!
//! With `--pin` (the default on a machine of 2 cores or more; `--no-pin` turns it off) the load
//! thread runs on CPU 0 and every thread of the service on the other CPUs, for the closed and the
//! open loop alike: the load generator then takes nothing from the service, as on a separate
//! machine, and the peak and the overload are measured on the same CPUs. Unpinned, the client's
//! half core of loopback TCP is taken from the service under test.
//!
//! `cargo run --release --bin litmus -- --overload [--duration 30s] [--overload-factor 10]
//! [--clients 64] [--connections 512] [--peak-duration 10s] [--max-inflight N --max-queue N] [--json]`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cart_service::{cli, frontend::LimitArgs};
use super::{cart_service, http, latency::Latencies, Service};
use clap::Parser;

/// The most requests the open loop sends, whatever the rate and duration.
pub const MAX_REQUESTS: u64 = 2_000_000;
/// Carts the load spreads over: an add rewrites its cart, so small carts keep the cost flat
/// through the run (at 4,096 carts they grew by ~40 items and the peak after the open loop was
/// 20-40% below the one before). The first closed loop touches every one of them, so the steady
/// RSS holds them all.
const CARTS: u64 = 16_384;
/// The TTL every request carries, and how long the client waits beyond it for an answer.
const TTL_MS: u64 = 2000;
const GRACE: Duration = Duration::from_millis(1000);

struct Opts {
    duration: Duration,
    factor: f64,
    clients: usize,
    /// Connections of the open loop.
    connections: usize,
    peak_for: Duration,
    json: bool,
    /// Load on CPU 0, the service on the others.
    pin: bool,
    /// Front-end flags passed on to the service.
    serve: Vec<String>,
}

/// litmus --overload: the cart service's front end under many times the load it can serve; judged
/// on goodput against its peak, memory against its steady state, and 503s carrying Retry-After.
#[derive(Parser, Debug)]
#[command(name = "litmus --overload")]
struct Args {
    /// Selects this mode
    #[arg(long, required = true)]
    overload: bool,
    /// How long the overload is scheduled for (at most 2,000,000 requests: at 10x a peak over
    /// 13,000 req/s the schedule ends sooner); 10 s runs vary by +-15% on a 2-core VM
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = cli::positive_duration)]
    duration: Duration,
    /// How long each measurement of the peak runs, at least 2s
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = peak_duration)]
    peak_duration: Duration,
    /// The offered load, as a multiple of the measured peak, in (0, 1000]
    #[arg(long, value_name = "X", default_value_t = 10.0, value_parser = factor)]
    overload_factor: f64,
    /// Clients of the closed loop that measures the peak (1 to 1024); as many as the service
    /// admits at once by default (32 per core on 2 cores): fewer would understate its peak
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    clients: u64,
    /// Connections of the open loop
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = cli::positive)]
    connections: u64,
    /// Print one JSON report instead of the text
    #[arg(long)]
    json: bool,
    /// The load on CPU 0, the service on the others [default: when there are 2 CPUs or more]
    #[arg(long, overrides_with = "no_pin")]
    pin: bool,
    /// Do not pin the load and the service to CPUs
    #[arg(long, overrides_with = "pin")]
    no_pin: bool,
    /// The service's front-end flags.
    #[command(flatten)]
    limits: LimitArgs,
}

/// A peak measurement's length: at least 2s.
fn peak_duration(s: &str) -> Result<Duration, String> {
    match cli::duration(s)? {
        d if d < Duration::from_secs(2) => Err("must be at least 2s".into()),
        d => Ok(d),
    }
}

/// An overload factor: more than 0, at most 1000.
fn factor(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1000.0 => Ok(f),
        _ => Err(format!("{s:?} is not a number in (0, 1000]")),
    }
}

/// The options of `args` (the whole command line without the program's name); on a bad argument
/// prints why and the usage and exits with status 2.
fn parse(args: &[String]) -> Opts {
    let a = Args::parse_from(std::iter::once("litmus").chain(args.iter().map(String::as_str)));
    Opts {
        duration: a.duration,
        factor: a.overload_factor,
        clients: a.clients as usize,
        connections: a.connections as usize,
        peak_for: a.peak_duration,
        json: a.json,
        pin: if a.no_pin { false } else { a.pin || cpus() >= 2 },
        serve: a.limits.to_args(),
    }
}

/// CPUs this process may run on.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins the thread `tid` (0: the calling thread) to the CPUs in `cpus`.
fn pin(tid: libc::pid_t, cpus: std::ops::Range<usize>) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it for the CPUs below
    // CPU_SETSIZE; sched_setaffinity reads the set it is given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pins every thread of process `pid` to `cpus` (threads it starts later inherit it).
fn pin_process(pid: u32, cpus: std::ops::Range<usize>) -> std::io::Result<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid: libc::pid_t = task?.file_name().to_string_lossy().parse().unwrap_or(0);
        if tid > 0 {
            pin(tid, cpus.clone())?;
        }
    }
    Ok(())
}

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time (user + system) of a process so far, in seconds.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After "(comm)": state is the 1st field, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, f)| f)
        .split_whitespace()
        .collect();
    let ticks: u64 = fields
        .get(11..13)
        .map_or(0, |f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum());
    // SAFETY: sysconf only reads a constant of the system.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / per_sec as f64
}

/// One add with a TTL of `ttl_ms`, on a kept-alive connection from `pool` (or a new one); a
/// connection the server had closed meanwhile is replaced once.
async fn add(addr: SocketAddr, pool: &Mutex<Vec<http::Conn>>, n: u64, ttl_ms: u64) -> std::io::Result<http::Response> {
    let path = format!("/carts/o{}/items", n % CARTS);
    let body = format!("{{\"item\":\"o{n}\"}}");
    let ttl = ttl_ms.to_string();
    let headers = [("X-Request-Ttl-Ms", ttl.as_str())];
    let mut retried = false;
    loop {
        let pooled = pool.lock().unwrap().pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => http::Conn::connect(addr).await?,
        };
        match conn.request("POST", &path, &headers, body.as_bytes()).await {
            Ok(r) => {
                if !conn.closed {
                    pool.lock().unwrap().push(conn);
                }
                return Ok(r);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected && !retried => retried = true,
            Err(e) => return Err(e),
        }
    }
}

/// The closed loop: `clients` connections, each sending its next add when the last is answered.
/// Returns 2xx per second after the first second.
async fn closed_loop(addr: SocketAddr, clients: usize, run_for: Duration) -> f64 {
    let start = Instant::now();
    let (warm, end) = (start + Duration::from_secs(1), start + run_for);
    let ok = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients as u64)
        .map(|c| {
            let ok = ok.clone();
            tokio::spawn(async move {
                let pool = Mutex::new(Vec::new());
                let mut n = c;
                while Instant::now() < end {
                    let r =
                        tokio::time::timeout(Duration::from_millis(TTL_MS) + GRACE, add(addr, &pool, n, TTL_MS)).await;
                    n += clients as u64;
                    if matches!(r, Ok(Ok(ref r)) if (200..300).contains(&r.status)) && Instant::now() > warm {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    ok.load(Ordering::Relaxed) as f64 / (run_for - Duration::from_secs(1)).as_secs_f64()
}

/// What the open loop saw.
#[derive(Default)]
struct Tally {
    /// 2xx answered within the run, all 2xx, and their latencies from the send (µs).
    ok_in_time: AtomicU64,
    ok: AtomicU64,
    latencies: Latencies,
    /// Latencies of the 503s from the send (µs): what shedding costs a client.
    shed_latencies: Latencies,
    /// How late the client sent each request after it was due (µs): the client's own lag.
    lag: Latencies,
    /// Requests the client could not send before their deadline (it fell behind).
    unsent: AtomicU64,
    shed: AtomicU64,
    shed_with_retry_after: AtomicU64,
    other: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn other(&self, kind: impl Into<String>) {
        *self.other.lock().unwrap().entry(kind.into()).or_default() += 1;
    }
}

/// The open loop: request `i` is due at `start + i / rate`, for `run_for`. `connections` workers,
/// each on its own kept-alive connection, take the next due request whatever became of the earlier
/// ones. When all are busy the client falls behind its schedule: what it sends late carries a
/// full TTL (the service sees on-time requests, at the rate achieved, which the report shows);
/// what it could not send within a TTL of its due time is dropped and counted as unsent. Returns the tally, the count sent and the time the
/// sending took (longer than `run_for` when the client fell behind).
async fn open_loop(addr: SocketAddr, rate: f64, run_for: Duration, connections: usize) -> (Arc<Tally>, u64, Duration) {
    let tally = Arc::new(Tally::default());
    let total = ((rate * run_for.as_secs_f64()) as u64).min(MAX_REQUESTS);
    // The schedule's span: shorter than `run_for` when MAX_REQUESTS cut it.
    let run_for = Duration::from_secs_f64(total as f64 / rate).min(run_for);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + run_for;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (tally, next) = (tally.clone(), next.clone());
            tokio::spawn(async move {
                let pool = Mutex::new(Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                    let sent = Instant::now();
                    // A request the client could not send within a TTL of its due time is dropped
                    // (counted): the client fell behind, the service never saw it.
                    if sent >= due + Duration::from_millis(TTL_MS) {
                        tally.unsent.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    tally.lag.record((sent - due).as_micros() as u64);
                    // The service sees what an on-time client would send: a full TTL from now.
                    let add = add(addr, &pool, 1_000_000_000 + i, TTL_MS);
                    let r = tokio::time::timeout(Duration::from_millis(TTL_MS) + GRACE, add).await;
                    match r {
                        Ok(Ok(r)) if (200..300).contains(&r.status) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                            if Instant::now() <= end {
                                tally.ok_in_time.fetch_add(1, Ordering::Relaxed);
                            }
                            tally.latencies.record(sent.elapsed().as_micros() as u64);
                        }
                        Ok(Ok(r)) if r.status == 503 => {
                            tally.shed.fetch_add(1, Ordering::Relaxed);
                            tally.shed_latencies.record(sent.elapsed().as_micros() as u64);
                            let secs = r.headers.get("retry-after").and_then(|v| v.parse::<u64>().ok());
                            if secs.is_some_and(|s| s >= 1) && r.headers.contains_key("x-retry-after-ms") {
                                tally.shed_with_retry_after.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(Ok(r)) => tally.other(format!("HTTP {}", r.status)),
                        Ok(Err(e)) => tally.other(e.to_string()),
                        Err(_) => tally.other("no answer by TTL + 1 s"),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let sent = next.load(Ordering::Relaxed).min(total);
    (tally, sent, start.elapsed())
}

/// Runs `litmus --overload` with these arguments.
pub async fn run(args: &[String]) -> ExitCode {
    let opts = parse(args);
    // The open loop may hold many connections at once.
    cart_service::frontend::raise_fd_limit();
    // Removed when the guard drops, after the service is killed or on an early return.
    let data_dir = match tempfile::Builder::new().prefix("crashonly-overload-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let data = data_dir.path().to_path_buf();
    let mut svc = Service::new(data.clone(), opts.serve.clone(), Vec::new());
    if let Err(e) = svc.start().await {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    while !svc.serving().await {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = svc.child.as_ref().and_then(|c| c.id()).expect("running");
    let pinned = opts.pin && cpus() >= 2;
    if pinned {
        if let Err(e) = pin_process(pid, 1..cpus()) {
            eprintln!("error: cannot pin the service to CPUs 1..{}: {e}", cpus());
            return ExitCode::FAILURE;
        }
    }

    // RSS, sampled every 20 ms, by phase: 0 = closed loop, 1 = open loop, 2 = closed loop again.
    let phase = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (phase, stop) = (phase.clone(), stop.clone());
        tokio::spawn(async move {
            let mut max = [0u64; 3];
            while !stop.load(Ordering::Relaxed) {
                if let Some(kb) = status_kb(pid, "VmRSS") {
                    let p = phase.load(Ordering::Relaxed) as usize;
                    max[p] = max[p].max(kb);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            max
        })
    };

    // The load on a thread of its own.
    let (addr, clients, peak_for, run_for, factor) =
        (svc.addr, opts.clients, opts.peak_for, opts.duration, opts.factor);
    let connections = opts.connections;
    let load_phase = phase.clone();
    let load = tokio::task::spawn_blocking(move || {
        if pinned {
            pin(0, 0..1).expect("pin the load thread to CPU 0");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let pid = pid.to_string();
            let cpu = || (cpu_secs(&pid), cpu_secs("self"), Instant::now());
            let (svc0, me0, t0) = cpu();
            let peak = closed_loop(addr, clients, peak_for).await;
            let (svc1, me1, t1) = cpu();
            load_phase.store(1, Ordering::Relaxed);
            let offered = (peak * factor).max(1.0);
            let (tally, sent, sending) = open_loop(addr, offered, run_for, connections).await;
            let (svc2, me2, t2) = cpu();
            // The peak once more: the machine's load (other work on it) may have changed meanwhile.
            load_phase.store(2, Ordering::Relaxed);
            let peak_after = closed_loop(addr, clients, peak_for).await;
            // Cores used by the service and by this client, in the closed and the open loop.
            let (closed, open) = ((t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64());
            let cores = [
                (svc1 - svc0) / closed,
                (me1 - me0) / closed,
                (svc2 - svc1) / open,
                (me2 - me1) / open,
            ];
            (peak, peak_after, offered, tally, sent, sending, cores)
        })
    });
    let (peak, peak_after, offered, tally, sent, sending, cores) = load.await.expect("the load thread");
    stop.store(true, Ordering::Relaxed);
    let [steady_kb, sampled_peak_kb, _] = sampler.await.expect("the sampler");
    let hwm_kb = status_kb(pid, "VmHWM").unwrap_or(0);
    svc.kill().await;
    drop(data_dir);

    let peak_kb = hwm_kb.max(sampled_peak_kb);
    let ok = tally.ok.load(Ordering::Relaxed);
    // Over the schedule's span (MAX_REQUESTS may end it before `run_for`).
    let span = (MAX_REQUESTS as f64 / offered).min(run_for.as_secs_f64());
    let goodput = tally.ok_in_time.load(Ordering::Relaxed) as f64 / span;
    let shed = tally.shed.load(Ordering::Relaxed);
    let shed_ra = tally.shed_with_retry_after.load(Ordering::Relaxed);
    let other = tally.other.lock().unwrap().clone();
    let (lat, shed_lat, lag) = (&tally.latencies, &tally.shed_latencies, &tally.lag);
    let (p50, p99, max) = (lat.quantile_ms(0.5), lat.quantile_ms(0.99), lat.max_ms());
    let unsent = tally.unsent.load(Ordering::Relaxed);
    let achieved = (sent - unsent) as f64 / sending.as_secs_f64();
    // Judged against the mean of the peaks before and after: the machine is shared, and the
    // carts grow through the run (an add rewrites its cart: the peak after, on carts tens of
    // items longer, is 10-30% below the one before), so the mean is the peak at about the carts'
    // size during the open loop.
    let reference = (peak + peak_after) / 2.0;
    let goodput_ratio = if reference > 0.0 { goodput / reference } else { 0.0 };
    let rss_ratio = if steady_kb > 0 {
        peak_kb as f64 / steady_kb as f64
    } else {
        f64::INFINITY
    };
    let pass = peak > 0.0 && goodput_ratio >= 0.8 && rss_ratio < 2.0 && shed_ra == shed;
    if opts.json {
        let report = serde_json::json!({
            "peak_rps": peak,
            "peak_after_rps": peak_after,
            "cores_used": { "service_closed": cores[0], "client_closed": cores[1], "service_open": cores[2], "client_open": cores[3] },
            "offered_rps": offered,
            "offered_achieved_rps": achieved,
            "duration_s": span,
            "sent": sent,
            "ok": ok,
            "goodput_rps": goodput,
            "goodput_vs_peak": goodput_ratio,
            "shed_503": shed,
            "shed_503_with_retry_after": shed_ra,
            "shed_latency_ms": { "p50": shed_lat.quantile_ms(0.5), "p99": shed_lat.quantile_ms(0.99) },
            "other_errors": other,
            "unsent_client_behind": unsent,
            "client_lag_ms": { "p50": lag.quantile_ms(0.5), "p99": lag.quantile_ms(0.99) },
            "latency_ms": { "p50": p50, "p99": p99, "max": max },
            "rss_kb": { "steady": steady_kb, "peak": peak_kb, "peak_sampled": sampled_peak_kb },
            "rss_peak_vs_steady": rss_ratio,
            "ok_goal": pass,
            "pinned": pinned,
        });
        println!("{report}");
    } else {
        println!("litmus --overload: cart service, adds at {factor}x its peak for {span:.1} s");
        if pinned {
            println!(
                "(load on CPU 0, the service on CPUs 1..{}: --no-pin to share them)",
                cpus()
            );
        }
        println!("| measure | value |");
        println!("|---|---|");
        println!("| peak (closed loop, {clients} connections) before / after | {peak:.0} / {peak_after:.0} req/s |");
        println!("| offered (open loop, {connections} connections) | {offered:.0} req/s (achieved {achieved:.0}; {sent} sent) |");
        println!(
            "| goodput (2xx/s) | {goodput:.0} req/s = {:.0}% of the mean peak |",
            goodput_ratio * 100.0
        );
        println!(
            "| 503 shed | {shed} ({shed_ra} with Retry-After), answered in p50 {:.1} / p99 {:.1} ms |",
            shed_lat.quantile_ms(0.5),
            shed_lat.quantile_ms(0.99)
        );
        let other_total: u64 = other.values().sum();
        let kinds: Vec<String> = other.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!("| other errors | {other_total} {} |", kinds.join(", "));
        println!("| latency of 2xx p50 / p99 / max | {p50:.1} / {p99:.1} / {max:.1} ms (from the send) |");
        println!(
            "| client: not sent by the deadline / late sends p50, p99 | {unsent} / {:.1}, {:.1} ms |",
            lag.quantile_ms(0.5),
            lag.quantile_ms(0.99)
        );
        println!(
            "| cores used, closed loop: service / client | {:.2} / {:.2} |",
            cores[0], cores[1]
        );
        println!(
            "| cores used, open loop: service / client | {:.2} / {:.2} |",
            cores[2], cores[3]
        );
        println!(
            "| RSS steady / peak | {:.1} / {:.1} MB = {rss_ratio:.2}x |",
            steady_kb as f64 / 1024.0,
            peak_kb as f64 / 1024.0
        );
        println!(
            "{}",
            if pass {
                "PASS: goodput >= 80% of peak, peak RSS < 2x steady, every 503 with Retry-After"
            } else {
                "FAIL: goal is goodput >= 80% of peak, peak RSS < 2x steady, every 503 with Retry-After"
            }
        );
    }
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
