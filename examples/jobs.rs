//! **jobs**: the leased job queue of the talk's image-converter story. Jobs live in the store;
//! worker actors take a job's lease, refresh it while they work, and delete the job (and write its
//! result) in one fenced transaction when done. A worker that dies loses its lease; the lease
//! expires and another worker picks the job up again: at-least-once, and the work is idempotent.
//! Workers crash at random (`--crash-percent`); the queue still converges.
//!
//! `cargo run --release --bin jobs -- --jobs 200 --workers 8 --crash-percent 10`

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use crashonly::prelude::*;
use crashonly::store::{RedbStore, Store, StoreError, Txn};

const LEASE: Duration = Duration::from_millis(400);

/// Shared by all workers: the store, and counters the report reads.
#[derive(Clone)]
struct Shop {
    store: Arc<dyn Store>,
    crash_percent: u64,
    attempts: Arc<AtomicU64>,
}

impl Shop {
    /// A number from 0 to 99, at random: good enough for chaos.
    fn roll(&self) -> u64 {
        fastrand::u64(0..100)
    }
}

/// A worker holds nothing durable: every tick it looks for a job whose lease it can take.
#[derive(Actor)]
#[actor(args = Shop)]
struct Worker {
    shop: Shop,
}

#[messages]
impl Worker {
    #[start]
    fn start(shop: &Shop, ctx: &mut Context<Self>) -> Worker {
        // The tick belongs to this instance: a crash stops it, the restart starts a new one.
        drop(ctx.send_interval(Duration::from_millis(5), WorkerMessage::Tick));
        Worker { shop: shop.clone() }
    }

    /// Takes one job if one is free, converts it, completes it.
    #[message]
    async fn tick(&mut self, ctx: &mut Context<Self>) -> Result<bool, StoreError> {
        let store = &self.shop.store;
        let jobs = store.scan(b"job/", 64).await?;
        if jobs.is_empty() {
            return Ok(false);
        }
        let pick = (self.shop.roll() as usize) % jobs.len();
        let (key, job) = &jobs[pick];
        let name = String::from_utf8_lossy(key).into_owned();
        let lease = match store
            .acquire_lease(&format!("lease:{name}"), &ctx.myself().path().to_string(), LEASE)
            .await
        {
            Ok(l) => l,
            Err(StoreError::Conflict(_)) => return Ok(false), // someone else is on it
            Err(e) => return Err(e),
        };
        self.shop.attempts.fetch_add(1, Ordering::Relaxed);
        // "Convert the image": deterministic, so doing it twice gives the same result.
        let result: u64 = job
            .value
            .iter()
            .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)));
        tokio::time::sleep(Duration::from_millis(2 + self.shop.roll() % 8)).await;
        let lease = store.renew_lease(&lease, LEASE).await?;
        if self.shop.roll() < self.shop.crash_percent {
            panic!("worker crashed while converting {name}");
        }
        let done = format!("done/{}", &name[4..]);
        // Result and removal in one step, only while this worker still holds the lease.
        let txn = Txn::new()
            .check(key, job.version)
            .delete(key)
            .put(done.as_bytes(), result.to_le_bytes().to_vec());
        match store.commit(txn.fenced(&lease)).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => return Ok(false), // lost the lease, or done by another
            Err(e) => return Err(e),
        }
        if self.shop.roll() < self.shop.crash_percent {
            panic!("worker crashed after completing {name}, before releasing its lease");
        }
        store.release_lease(&lease).await?;
        Ok(true)
    }
}

/// jobs: a leased job queue whose workers crash at random; it still converges, every job done
/// once with the right result. Exit status 0 when it converged, 1 otherwise, 2 for bad arguments.
#[derive(Parser, Debug)]
#[command(name = "jobs")]
struct Opts {
    /// Jobs to enqueue
    #[arg(long, value_name = "N", default_value_t = 200)]
    jobs: u64,
    /// Worker actors (1 to 256)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    workers: u64,
    /// Chance, in percent (0 to 90), that a worker crashes at each of its two crash points
    #[arg(long, value_name = "P", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=90))]
    crash_percent: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let opts = Opts::parse();
    // Removed when it is dropped, at the end of main, whatever the outcome.
    let dir = match tempfile::Builder::new().prefix("crashonly-jobs-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let store: Arc<dyn Store> = match RedbStore::open(dir.path().join("jobs.redb")) {
        Ok(store) => Arc::new(store),
        Err(e) => {
            eprintln!("error: cannot open the store: {}", e.reason());
            return ExitCode::FAILURE;
        }
    };
    let mut enqueue = Txn::new();
    for i in 0..opts.jobs {
        enqueue = enqueue.put(format!("job/{i:06}").as_bytes(), format!("image {i}").into_bytes());
    }
    store.commit(enqueue).await.expect("enqueue");

    let shop = Shop {
        store: store.clone(),
        crash_percent: opts.crash_percent,
        attempts: Arc::new(AtomicU64::new(0)),
    };
    let pool = SupervisorSpec::new("workers", Strategy::OneForOne).intensity(1_000_000, Duration::from_secs(1));
    let system = System::builder()
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(pool))
        .start()
        .unwrap();
    let sup = system.lookup_supervisor("/workers").unwrap();
    let workers: Vec<_> = (0..opts.workers)
        .map(|w| sup.spawn(Worker::spec(shop.clone()).name(format!("w{w}"))).unwrap())
        .collect();

    let started = Instant::now();
    let mut last = Instant::now();
    loop {
        let left = store.scan(b"job/", usize::MAX).await.expect("scan").len();
        if left == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            eprintln!("did not converge in 120 s: {left} jobs left");
            return ExitCode::FAILURE;
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            eprintln!("[{:4.1}s] {left} jobs left", started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = store.scan(b"done/", usize::MAX).await.expect("scan");
    let crashes: u64 = workers.iter().map(|w| w.stats().crashes).sum();
    let mut wrong = 0;
    for (k, v) in &done {
        let i: u64 = String::from_utf8_lossy(&k[5..]).parse().unwrap_or(u64::MAX);
        let expect = format!("image {i}")
            .bytes()
            .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        if v.value != expect.to_le_bytes() {
            wrong += 1;
        }
    }
    let attempts = shop.attempts.load(Ordering::Relaxed);
    println!(
        "converged in {:.1} s: {} of {} jobs done, {wrong} wrong results, {attempts} attempts, {crashes} worker crashes",
        started.elapsed().as_secs_f64(),
        done.len(),
        opts.jobs
    );
    drop(system);
    drop(store);
    if done.len() as u64 == opts.jobs && wrong == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
