//! A small supervised service on the embedded store that crashes on purpose and recovers.
//!
//! `Counter` workers hold only volatile state: each `start` (first or restart) is the recovery path,
//! which takes the counter's lease and loads its value from the redb store ([`DurableState`]).
//! Every increment is a durable, fenced write. Clients increment counters through the workers while
//! a chaos task panics a random worker every `--chaos-ms`. At the end the demo checks, for every
//! counter, that the store holds at least every acknowledged increment and at most those plus the
//! ones whose outcome the client could not know (at-most-once).
//!
//! `cargo run --release --bin supervised-demo -- --seconds 5 [--data DIR]`
//! `--give-up` makes the workers crash faster than the root's intensity allows: the process exits
//! with status 1 so that an OS-level manager would restart it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use crashonly::prelude::*;
use crashonly::store::{DurableState, RedbStore, Store, StoreError};

/// A worker: a volatile copy of one counter, recovered from the store in `#[start]`.
#[derive(Actor)]
#[actor(args = CounterArgs)]
struct Counter {
    state: DurableState,
    value: u64,
}

/// Which counter, and the store it lives in.
type CounterArgs = (u32, Arc<dyn Store>);

/// The counter's value as the store has it (0 when absent or unreadable).
async fn stored(store: &Arc<dyn Store>, k: u32) -> u64 {
    decode(
        store
            .get(format!("counter/{k}").as_bytes())
            .await
            .ok()
            .flatten()
            .map(|v| v.value)
            .as_deref(),
    )
}

fn decode(v: Option<&[u8]>) -> u64 {
    v.and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0)
}

#[messages]
impl Counter {
    /// The recovery path, run on every start: take the counter's lease and load its value.
    #[start]
    async fn recover((key, store): &CounterArgs, ctx: &mut Context<Self>) -> Result<Self, StoreError> {
        let holder = ctx.myself().path().to_string();
        let state = DurableState::recover(store.clone(), &format!("counter/{key}"), &holder, LEASE).await?;
        let value = decode(state.value());
        tracing::info!(key, value, "counter recovered");
        Ok(Counter { state, value })
    }

    /// Adds one, durably (fenced by this incarnation's lease); returns the new value.
    #[message]
    async fn incr(&mut self) -> Result<u64, StoreError> {
        self.state.save((self.value + 1).to_le_bytes().to_vec()).await?;
        self.value += 1;
        Ok(self.value)
    }

    /// What the chaos task sends.
    #[message]
    fn crash(&mut self) {
        panic!("chaos crashed a counter at {}", self.value);
    }
}

const LEASE: Duration = Duration::from_secs(60);

/// supervised-demo: counters under a supervisor, a chaos task panicking a random one; every
/// acknowledged increment must survive. Exit status 0 when it did, 1 otherwise, 2 for bad
/// arguments; with --give-up the root gives up and the process exits non-zero.
#[derive(Parser, Debug)]
#[command(name = "supervised-demo")]
struct Opts {
    /// How long the demo runs, in seconds
    #[arg(long, value_name = "N", default_value_t = 5)]
    seconds: u64,
    /// A random worker panics every so many milliseconds (at least 1)
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    chaos_ms: u64,
    /// Crash the workers faster than the root's intensity allows: the process gives up
    #[arg(long)]
    give_up: bool,
    /// The store's directory, kept [default: a temporary directory, removed at the end]
    #[arg(long, value_name = "DIR")]
    data: Option<std::path::PathBuf>,
}

const WORKERS: u32 = 8;
/// Concurrent clients: their durable writes share each sync (group commit).
const CLIENTS: u32 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let opts = Opts::parse();
    // Held to the end of main: the temporary directory is removed when it drops (a root that
    // gives up exits the process, and leaves it behind).
    let temp;
    let dir = match opts.data.clone() {
        Some(dir) => dir,
        None => match tempfile::Builder::new().prefix("crashonly-demo-").tempdir() {
            Ok(t) => {
                temp = t;
                temp.path().to_path_buf()
            }
            Err(e) => {
                eprintln!("error: cannot create a temporary directory: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let store: Arc<dyn Store> = match RedbStore::open(dir.join("demo.redb")) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: cannot open the store: {}", e.reason());
            return ExitCode::from(2);
        }
    };
    let (max, period) = if opts.give_up {
        (3, Duration::from_secs(60))
    } else {
        (1_000, Duration::from_secs(10))
    };
    let workers = SupervisorSpec::new("workers", Strategy::OneForOne).intensity(max, period);
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(if opts.give_up { 1 } else { 100 }, Duration::from_secs(60))
        .child(workers);
    let system = System::builder().root(root).start().expect("static names are valid");
    let sup = system.lookup_supervisor("/workers").expect("declared above");
    let counters: Vec<ActorRef<Counter>> = (0..WORKERS)
        .map(|k| {
            sup.spawn(ActorSpec::named(format!("c{k}"), (k, store.clone())))
                .expect("unique")
        })
        .collect();
    // What the store held before this run (a data directory may be reused across runs).
    let mut before = Vec::new();
    for k in 0..WORKERS {
        before.push(stored(&store, k).await);
    }

    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WORKERS).map(|_| AtomicU64::new(0)).collect());
    let unknown: Arc<Vec<AtomicU64>> = Arc::new((0..WORKERS).map(|_| AtomicU64::new(0)).collect());
    let errors = Arc::new(AtomicU64::new(0));
    let retry_after = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(opts.seconds);

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (counters, acked, unknown, errors) = (counters.clone(), acked.clone(), unknown.clone(), errors.clone());
        let retry_after = retry_after.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(u64::from(c));
            while tokio::time::Instant::now() < deadline {
                let k = rng.u32(..WORKERS);
                match counters[k as usize].incr().ttl(Duration::from_millis(500)).await {
                    Ok(Ok(_)) => acked[k as usize].fetch_add(1, Ordering::Relaxed),
                    // Not idempotent: the increment may or may not have reached the store.
                    Err(DeliveryError::Crashed(_)) | Err(DeliveryError::Expired) => {
                        unknown[k as usize].fetch_add(1, Ordering::Relaxed)
                    }
                    // The worker is recovering and would not make the deadline: told when to come back.
                    Err(DeliveryError::RetryAfter(wait)) => {
                        retry_after.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(wait).await;
                        0
                    }
                    Ok(Err(_)) | Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let chaos = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(7);
            loop {
                tokio::time::sleep(Duration::from_millis(opts.chaos_ms)).await;
                let _ = counters[rng.usize(..WORKERS as usize)].try_tell(CounterMessage::Crash());
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
        let stored = stored(&store, k as u32).await - before[k];
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
        "{} s: {total_acked} acknowledged increments, {total_unknown} unknown (crashed in flight), {crashes} crashes, {restarts} restarts, {} told to retry after, {} other errors",
        opts.seconds,
        retry_after.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed)
    );
    if consistent {
        println!("consistent: every acknowledged increment is in the store");
        ExitCode::SUCCESS
    } else {
        println!("INCONSISTENT: acknowledged increments were lost");
        ExitCode::FAILURE
    }
}
