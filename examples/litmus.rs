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
//! `--cluster [--nodes 3] [--lease 2s]`: the cart service clustered (`cart --cluster`, on
//! `CRASHONLY_PG_URL` and `CRASHONLY_NATS_URL`, the cluster's default 2 s membership lease unless
//! `--lease` says otherwise), each client writing through a random node, a random node killed
//! every 1 to 2 s (at random; `--kill-every` sets it, `A..B` for a range) and restarted at once as
//! a new incarnation; the same history check, and the failover times (`support/failover.rs`):
//! per kill, until the first of the killed node's carts is acknowledged again by another node and
//! until all of them are, min / median / p99 / max, with the lease the killed node had left.
//! `--membership-cost`: PostgreSQL statements per second of idle nodes (`support/membership_cost.rs`).

#[path = "support/cart_service.rs"]
mod cart_service;
#[path = "support/failover.rs"]
mod failover;
#[path = "support/history.rs"]
mod history;
#[path = "support/http.rs"]
mod http;
#[path = "support/latency.rs"]
mod latency;
#[path = "support/litmus_args.rs"]
mod litmus_args;
#[path = "support/litmus_client.rs"]
mod litmus_client;
#[path = "support/litmus_cluster.rs"]
mod litmus_cluster;
#[path = "support/membership_cost.rs"]
mod membership_cost;
#[path = "support/overload.rs"]
mod overload;
#[path = "support/service.rs"]
mod service;
#[path = "support/tables.rs"]
mod tables;
#[path = "support/throwaway_pg.rs"]
mod throwaway_pg;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use litmus_args::Opts;
use litmus_client::Stats;
use service::{Figures, Service};

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
    if args.iter().any(|a| a == "--membership-cost") {
        return membership_cost::run(&args).await;
    }
    let opts = Opts::from_env();
    if opts.faultload_table {
        return tables::faultload_table(&opts).await;
    }
    if opts.table1 {
        return tables::table1().await;
    }

    // Removed when the guard drops, at the end of main or on an early return.
    let data_dir = match tempfile::Builder::new().prefix("crashonly-litmus-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let data = data_dir.path().to_path_buf();
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
    let (cluster, mut svcs) = match opts.nodes {
        None => (None, vec![Service::new(data.clone(), extra, faults)]),
        Some(n) => match litmus_cluster::Cluster::nodes(n, opts.lease, &extra).await {
            Ok((c, s)) => (Some(c), s),
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
    let mut pick = fastrand::Rng::new();
    let started = Instant::now();
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..opts.clients)
        .map(|i| {
            tokio::spawn(litmus_client::client(
                i,
                litmus_client::carts_of(i, opts.clients, opts.carts_per_client, opts.carts),
                opts.carts.is_some(),
                addrs.clone(),
                stats.clone(),
                stop.clone(),
                started,
            ))
        })
        .collect();

    let mut recoveries = Vec::new();
    let mut kills: Vec<failover::Kill> = Vec::new();
    let mut process_restarts: Vec<Duration> = Vec::new();
    let mut figures: Vec<Figures> = svcs.iter().map(|_| Figures::default()).collect();
    let mut last_sample = Instant::now();
    let mut last_progress = Instant::now();
    let next = |pick: &mut fastrand::Rng| {
        let (lo, hi) = opts.kill_every;
        lo + Duration::from_millis(pick.u64(..(hi - lo).as_millis().max(1) as u64))
    };
    let mut next_kill = started + next(&mut pick);
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
            let svc = &mut svcs[pick.usize(..addrs.len())];
            // On a cluster: which incarnation dies, and how long its lease still runs.
            if let (Some(c), Some(victim)) = (&cluster, svc.incarnation) {
                let asked = Instant::now();
                let left = c.lease_left(victim).await;
                let lease_left = left.map(|l| l.saturating_sub(asked.elapsed()));
                kills.push(failover::Kill {
                    at: started.elapsed(),
                    victim,
                    lease_left,
                });
            }
            svc.kill().await;
            if let Err(e) = svc.start().await {
                eprintln!("error: restart failed: {e}");
                return ExitCode::FAILURE;
            }
            while !svc.serving().await {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            recoveries.push(t.elapsed());
            next_kill = Instant::now() + next(&mut pick);
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
    let load_ended = started.elapsed();
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
    drop(data_dir);
    let acks = std::mem::take(&mut *stats.acks.lock().unwrap());
    let (each, failover) = litmus_cluster::figures(&kills, &acks);
    if let Some(c) = &cluster {
        c.drop_schemas().await;
        if std::env::var_os("LITMUS_FAILOVERS").is_some() {
            for f in &each {
                let k = &kills[f.kill];
                eprintln!(
                    "failover at {:.3}s of {}: lease left {:?}, first {:?} (asked for {:?}{}), all {:?} (sent at {:?}), {}/{} carts",
                    k.at.as_secs_f64(),
                    k.victim,
                    k.lease_left,
                    f.first,
                    f.first_asked,
                    if f.overlapped { ", another kill meanwhile" } else { "" },
                    f.all,
                    f.last_sent,
                    f.back,
                    f.held
                );
            }
        }
    }
    let per_s = acked_total as f64 / load_ended.as_secs_f64();
    // The service's figures, over its nodes.
    let sum = |f: fn(&Figures) -> u64| figures.iter().map(f).sum::<u64>();
    let most = |f: fn(&Figures) -> u64| figures.iter().map(f).max().unwrap_or(0);

    let per_second = stats.per_second.lock().unwrap().clone();
    let whole_seconds = (opts.duration.as_secs() as usize).min(per_second.len());
    let stalled = per_second
        .get(1..whole_seconds)
        .map_or(0, |s| s.windows(5).filter(|w| w.iter().all(|&n| n == 0)).count());
    let restart = failover::Spread::of(recoveries.iter().copied());
    let errors = stats.errors.lock().unwrap().clone();
    let p99_ms = stats.latencies.quantile_ms(0.99);
    // Writes carry idempotency keys (no duplicates allowed) and each client waits for one write
    // before the next (order per client and cart is promised).
    let ok = verdict.valid(true, true) && stalled == 0 && acked_total > 0;
    if opts.json {
        let report = serde_json::json!({
            "duration_s": opts.duration.as_secs_f64(),
            "kills": recoveries.len(),
            "recovery_ms": restart.json(),
            "requests": stats.requests.load(Ordering::Relaxed),
            "acked": acked_total,
            "acked_per_s": per_s,
            "lease_ms": cluster.as_ref().map(|c| c.lease.as_millis() as u64),
            "failover": cluster.as_ref().map(|_| failover.json()),
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
        let (lo, hi) = opts.kill_every;
        println!(
            "litmus: cart service{}, kill -9 every {lo:?}{} for {:?}",
            cluster
                .as_ref()
                .map_or(String::new(), |_| format!(" on {} nodes", addrs.len())),
            if hi > lo { format!(" to {hi:?}") } else { String::new() },
            opts.duration
        );
        println!("  kills                     {}", recoveries.len());
        println!("  serving again after kill  {}", restart.line());
        if let Some(c) = &cluster {
            litmus_cluster::print(c.lease, kills.len(), &failover);
        }
        println!("  requests                  {}", stats.requests.load(Ordering::Relaxed));
        println!("  acknowledged writes       {acked_total} ({per_s:.0}/s)");
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
