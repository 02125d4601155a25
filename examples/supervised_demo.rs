//! A small supervised service that crashes on purpose and recovers.
//!
//! A `Ledger` actor is the state store (durable state, here kept in the ledger's own process
//! memory until the store issue brings real stores). `Counter` workers hold only volatile state:
//! each `start` (first or restart) recovers its count from the ledger. Clients increment counters
//! through the workers while a chaos task panics a random worker every `--chaos-ms`. At the end the
//! demo checks, for every counter, that the ledger holds at least every acknowledged increment and
//! at most those plus the ones whose outcome the client could not know (at-most-once).
//!
//! `cargo run --release --bin supervised-demo -- --seconds 5`
//! `--give-up` makes the workers crash faster than the root's intensity allows: the process exits
//! with status 1 so that an OS-level manager would restart it.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crashonly::prelude::*;

/// The state store: a map from counter to value, never restarted with a loss in this demo.
struct Ledger {
    values: HashMap<u32, u64>,
}

#[derive(Clone, Debug)]
enum LedgerMsg {
    Add(u32),
    Get(u32),
}

impl Actor for Ledger {
    type Args = ();
    type Msg = LedgerMsg;
    type Reply = u64;
    type Error = std::convert::Infallible;

    async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> {
        Ok(Ledger { values: HashMap::new() })
    }

    async fn handle(&mut self, msg: LedgerMsg, _: &mut Context<Self>) -> Result<u64, Self::Error> {
        Ok(match msg {
            LedgerMsg::Add(k) => {
                let v = self.values.entry(k).or_default();
                *v += 1;
                *v
            }
            LedgerMsg::Get(k) => self.values.get(&k).copied().unwrap_or(0),
        })
    }
}

/// A worker: volatile cache of one counter, recovered from the ledger in `start`.
struct Counter {
    key: u32,
    cached: u64,
    ledger: ActorRef<Ledger>,
}

#[derive(Clone, Debug)]
enum CounterMsg {
    Incr,
    Crash,
}

impl Actor for Counter {
    type Args = (u32, ActorRef<Ledger>);
    type Msg = CounterMsg;
    type Reply = u64;
    type Error = Error;

    async fn start((key, ledger): &Self::Args, ctx: &mut Context<Self>) -> Result<Self, Error> {
        let cached = ctx.ask(ledger, LedgerMsg::Get(*key)).idempotent().await?;
        tracing::info!(key, cached, "counter recovered");
        Ok(Counter {
            key: *key,
            cached,
            ledger: ledger.clone(),
        })
    }

    async fn handle(&mut self, msg: CounterMsg, ctx: &mut Context<Self>) -> Result<u64, Error> {
        match msg {
            CounterMsg::Incr => {
                self.cached = ctx.ask(&self.ledger, LedgerMsg::Add(self.key)).await?;
                Ok(self.cached)
            }
            CounterMsg::Crash => panic!("chaos crashed counter {}", self.key),
        }
    }
}

struct Opts {
    seconds: u64,
    chaos_ms: u64,
    give_up: bool,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        seconds: 5,
        chaos_ms: 100,
        give_up: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or(format!("{name} needs a whole number"))
        };
        match a.as_str() {
            "--seconds" => o.seconds = num("--seconds")?,
            "--chaos-ms" => o.chaos_ms = num("--chaos-ms")?.max(1),
            "--give-up" => o.give_up = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?} (try --seconds N, --chaos-ms N, --give-up)"
                ))
            }
        }
    }
    Ok(o)
}

const WORKERS: u32 = 8;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (max, period) = if opts.give_up {
        (3, Duration::from_secs(60))
    } else {
        (1_000, Duration::from_secs(10))
    };
    let workers = SupervisorSpec::new("workers", Strategy::OneForOne).intensity(max, period);
    let root = SupervisorSpec::new("root", Strategy::RestForOne)
        .intensity(if opts.give_up { 1 } else { 100 }, Duration::from_secs(60))
        .child(ActorSpec::<Ledger>::named("ledger", ()))
        .child(workers);
    let system = System::builder().root(root).start().expect("static names are valid");
    let ledger = system.lookup::<Ledger>("/ledger").expect("declared above");
    let sup = system.lookup_supervisor("/workers").expect("declared above");
    let counters: Vec<ActorRef<Counter>> = (0..WORKERS)
        .map(|k| {
            sup.spawn(ActorSpec::named(format!("c{k}"), (k, ledger.clone())))
                .expect("unique")
        })
        .collect();

    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WORKERS).map(|_| AtomicU64::new(0)).collect());
    let unknown: Arc<Vec<AtomicU64>> = Arc::new((0..WORKERS).map(|_| AtomicU64::new(0)).collect());
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(opts.seconds);

    let mut clients = Vec::new();
    for c in 0..4u32 {
        let (counters, acked, unknown, errors) = (counters.clone(), acked.clone(), unknown.clone(), errors.clone());
        clients.push(tokio::spawn(async move {
            let mut i = c;
            while tokio::time::Instant::now() < deadline {
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let k = (i >> 8) % WORKERS;
                match counters[k as usize]
                    .ask(CounterMsg::Incr)
                    .ttl(Duration::from_millis(500))
                    .await
                {
                    Ok(_) => acked[k as usize].fetch_add(1, Ordering::Relaxed),
                    // Not idempotent: the increment may or may not have reached the ledger.
                    Err(Error::Crashed(_)) | Err(Error::Expired) => unknown[k as usize].fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let chaos = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut i = 7u32;
            loop {
                tokio::time::sleep(Duration::from_millis(opts.chaos_ms)).await;
                i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let _ = counters[((i >> 8) % WORKERS) as usize].try_tell(CounterMsg::Crash);
            }
        })
    };

    let outcome = tokio::select! {
        failed = system.wait() => Some(failed),
        _ = async { for c in clients { let _ = c.await; } } => None,
    };
    chaos.abort();
    if let Some(Err(e)) = outcome {
        eprintln!("{e}");
        eprintln!("exiting with status 1 so that the process manager restarts the service");
        return ExitCode::FAILURE;
    }

    let mut consistent = true;
    let (mut total_acked, mut total_unknown, mut crashes, mut restarts) = (0, 0, 0, 0);
    for (k, c) in counters.iter().enumerate() {
        let stored = ledger.ask(LedgerMsg::Get(k as u32)).await.expect("ledger answers");
        let (a, u) = (acked[k].load(Ordering::Relaxed), unknown[k].load(Ordering::Relaxed));
        let ok = stored >= a && stored <= a + u;
        consistent &= ok;
        let s = c.stats();
        crashes += s.crashes;
        restarts += s.restarts;
        total_acked += a;
        total_unknown += u;
        println!(
            "counter {k}: stored {stored:>6}  acknowledged {a:>6}  unknown {u:>3}  restarts {:>3}  {}",
            s.restarts,
            if ok { "ok" } else { "LOST" }
        );
    }
    println!(
        "{} s: {total_acked} acknowledged increments, {total_unknown} unknown (crashed in flight), {crashes} crashes, {restarts} restarts, {} other errors",
        opts.seconds,
        errors.load(Ordering::Relaxed)
    );
    if consistent {
        println!("consistent: every acknowledged increment is in the ledger");
        ExitCode::SUCCESS
    } else {
        println!("INCONSISTENT: acknowledged increments were lost");
        ExitCode::FAILURE
    }
}
