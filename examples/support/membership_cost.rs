//! `litmus --membership-cost [--lease 2s] [--window 30s] [--nodes 1,3] [--json]`: what idle
//! cluster nodes cost PostgreSQL. A throwaway PostgreSQL of its own (`throwaway_pg.rs`, with
//! `pg_stat_statements` loaded), a fresh database per configuration, that many idle
//! `cart --cluster` nodes on it (this harness's own `serve-cart --cluster`, NATS from
//! `CRASHONLY_NATS_URL`), and over the window the statements they ran (`pg_stat_statements`
//! calls, utility statements included) and the transactions they ended (`pg_stat_database`
//! commits and rollbacks, which a backend reports at most once a second: each end of the window is
//! off by up to a second of its traffic). The baseline is the same database with no node; the
//! figure is per node and second, with the statements that make it up.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use super::cart_service::cli;
use super::throwaway_pg::ThrowawayPg;
use super::Service;
use clap::Parser;

struct Opts {
    lease: Duration,
    window: Duration,
    nodes: Vec<usize>,
    json: bool,
}

/// litmus --membership-cost: PostgreSQL statements per second of idle cluster nodes (on a
/// throwaway PostgreSQL and $CRASHONLY_NATS_URL).
#[derive(Parser, Debug)]
#[command(name = "litmus --membership-cost")]
struct Args {
    /// Selects this mode
    #[arg(long, required = true)]
    membership_cost: bool,
    /// The nodes' membership lease
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = cli::duration)]
    lease: Duration,
    /// How long each count runs, at least 1s
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = window)]
    window: Duration,
    /// The cluster sizes to measure, a list of 1 to 16 like 1,3
    #[arg(long, value_name = "N,N,...", default_value = "1,3", value_delimiter = ',',
          value_parser = clap::value_parser!(u64).range(1..=16))]
    nodes: Vec<u64>,
    /// Print one JSON report instead of the text
    #[arg(long)]
    json: bool,
}

/// A count's window: at least 1s.
fn window(s: &str) -> Result<Duration, String> {
    match cli::duration(s)? {
        d if d < Duration::from_secs(1) => Err("must be at least 1s".into()),
        d => Ok(d),
    }
}

/// The options of `args` (the whole command line without the program's name); on a bad argument
/// prints why and the usage and exits with status 2.
fn parse(args: &[String]) -> Opts {
    let a = Args::parse_from(std::iter::once("litmus").chain(args.iter().map(String::as_str)));
    Opts {
        lease: a.lease,
        window: a.window,
        nodes: a.nodes.into_iter().map(|n| n as usize).collect(),
        json: a.json,
    }
}

/// What the database says it ran in `db`: statements by their text, and transactions.
struct Snapshot {
    statements: HashMap<String, i64>,
    transactions: i64,
}

async fn snapshot(admin: &Client, db: &str) -> Result<Snapshot, String> {
    // A fresh statistics snapshot (the session caches one per transaction).
    admin
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .map_err(|e| e.to_string())?;
    let rows = admin
        .query(
            "SELECT regexp_replace(s.query, '\\s+', ' ', 'g'), s.calls
             FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
            &[&db],
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut statements = HashMap::new();
    for r in rows {
        *statements.entry(r.get::<_, String>(0)).or_insert(0) += r.get::<_, i64>(1);
    }
    let transactions = admin
        .query_one(
            "SELECT coalesce(sum(xact_commit + xact_rollback), 0)::int8 FROM pg_stat_database WHERE datname = $1",
            &[&db],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    Ok(Snapshot {
        statements,
        transactions,
    })
}

/// One configuration's traffic over the window: statements and transactions per second, and the
/// statements by text (calls over the window), most frequent first.
struct Traffic {
    statements: f64,
    transactions: f64,
    top: Vec<(String, i64)>,
}

async fn measure(pg: &ThrowawayPg, admin: &Client, n: usize, o: &Opts, nats: &str) -> Result<Traffic, String> {
    let db = format!("mc_{n}");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .map_err(|e| e.to_string())?;
    let lease = format!("{}ms", o.lease.as_millis());
    let mut nodes: Vec<Service> = (0..n)
        .map(|i| {
            let args = ["--cluster", "--pg", &pg.url(&db), "--nats", nats, "--schema", &db]
                .into_iter()
                .chain(["--node-name", &format!("n{i}"), "--lease", &lease])
                .map(String::from)
                .collect();
            Service::new(std::path::PathBuf::new(), args, Vec::new())
        })
        .collect();
    for node in &mut nodes {
        node.start().await?;
    }
    // Past the joins and the store's opening: only what an idle node does from now on. A backend
    // that went idle within a second of its last report reports its transactions 10 s later
    // (PostgreSQL's PGSTAT_IDLE_INTERVAL): the start-up's must be in before the window opens.
    tokio::time::sleep(o.lease.max(Duration::from_secs(11))).await;
    let before = snapshot(admin, &db).await?;
    let t = Instant::now();
    tokio::time::sleep(o.window).await;
    let after = snapshot(admin, &db).await?;
    let secs = t.elapsed().as_secs_f64();
    for node in &mut nodes {
        node.kill().await;
    }
    let mut top: Vec<(String, i64)> = after
        .statements
        .iter()
        .map(|(q, c)| (q.clone(), c - before.statements.get(q).copied().unwrap_or(0)))
        .filter(|(_, c)| *c > 0)
        .collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    Ok(Traffic {
        statements: top.iter().map(|(_, c)| *c).sum::<i64>() as f64 / secs,
        transactions: (after.transactions - before.transactions) as f64 / secs,
        top,
    })
}

/// Runs the measurement and prints it; fails if PostgreSQL or the nodes could not be started.
pub async fn run(args: &[String]) -> ExitCode {
    let o = parse(args);
    let Ok(nats) = std::env::var("CRASHONLY_NATS_URL") else {
        eprintln!("error: --membership-cost needs CRASHONLY_NATS_URL (the nodes' transport)");
        return ExitCode::from(2);
    };
    match measure_all(&o, &nats).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn measure_all(o: &Opts, nats: &str) -> Result<(), String> {
    let pg = ThrowawayPg::with_settings(&["shared_preload_libraries=pg_stat_statements"])?;
    let (admin, conn) = tokio_postgres::connect(&pg.url("postgres"), NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    admin
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .await
        .map_err(|e| e.to_string())?;
    let base = measure(&pg, &admin, 0, o, nats).await?;
    let mut rows = Vec::new();
    for &n in &o.nodes {
        let t = measure(&pg, &admin, n, o, nats).await?;
        let per_node = (
            (t.statements - base.statements) / n as f64,
            (t.transactions - base.transactions) / n as f64,
        );
        rows.push((n, t, per_node));
    }
    if o.json {
        let configs: Vec<serde_json::Value> = rows
            .iter()
            .map(|(n, t, (s, x))| {
                serde_json::json!({
                    "nodes": n,
                    "statements_per_s": t.statements,
                    "transactions_per_s": t.transactions,
                    "statements_per_s_per_node": s,
                    "transactions_per_s_per_node": x,
                    "statements": t.top.iter().map(|(q, c)| serde_json::json!({"calls": c, "query": q})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let report = serde_json::json!({
            "lease_ms": o.lease.as_millis() as u64,
            "window_s": o.window.as_secs_f64(),
            "baseline": { "statements_per_s": base.statements, "transactions_per_s": base.transactions },
            "configs": configs,
        });
        println!("{report}");
        return Ok(());
    }
    println!(
        "membership cost: idle `cart --cluster` nodes, lease {:?}, {:?} window, throwaway PostgreSQL with pg_stat_statements",
        o.lease, o.window
    );
    println!("| nodes | statements/s | transactions/s | statements/s per node | transactions/s per node |");
    println!("|---|---|---|---|---|");
    println!(
        "| 0 (baseline) | {:.2} | {:.2} | | |",
        base.statements, base.transactions
    );
    for (n, t, (s, x)) in &rows {
        println!(
            "| {n} | {:.2} | {:.2} | {s:.2} | {x:.2} |",
            t.statements, t.transactions
        );
    }
    if let Some((n, t, _)) = rows.last() {
        println!("statements of {n} idle nodes over the window (calls, text):");
        for (q, c) in t.top.iter().take(8) {
            let q: String = q.chars().take(110).collect();
            println!("  {c:6}  {q}");
        }
    }
    Ok(())
}
