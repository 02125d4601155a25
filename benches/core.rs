//! Core runtime benchmarks, each beside its floor: a bare tokio task reading a tokio mpsc channel,
//! respawned by a plain task on panic. Ratios to the floor are what the README reports.
//!
//! `cargo bench --bench core`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crashonly::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::future::{join_all, select_all};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};

const CAPACITY: usize = 1024;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Counts starts and wakes the bench when the target is reached.
struct Starts {
    count: AtomicUsize,
    target: usize,
    done: Notify,
}

impl Starts {
    fn new(target: usize) -> Arc<Self> {
        Arc::new(Starts {
            count: AtomicUsize::new(0),
            target,
            done: Notify::new(),
        })
    }
    fn started(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            self.done.notify_one();
        }
    }
}

// ---- crashonly ----

struct Bench {
    n: u64,
}

#[derive(Clone, Debug)]
enum Msg {
    Add(u64),
    Get,
    Panic,
}

impl Actor for Bench {
    type Args = Option<Arc<Starts>>;
    type Msg = Msg;
    type Reply = u64;
    type Error = std::convert::Infallible;

    async fn start(starts: &Option<Arc<Starts>>, _: &mut Context<Self>) -> Result<Self, Self::Error> {
        if let Some(s) = starts {
            s.started();
        }
        Ok(Bench { n: 0 })
    }

    async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) -> Result<u64, Self::Error> {
        match msg {
            Msg::Add(k) => self.n += k,
            Msg::Get => {}
            Msg::Panic => panic!("bench crash"),
        }
        Ok(self.n)
    }
}

fn system(strategy: Strategy) -> System {
    let root = SupervisorSpec::new("root", strategy)
        .intensity(u32::MAX, Duration::from_secs(1))
        .backoff(Backoff::none());
    let cap: usize = std::env::var("CAP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CAPACITY);
    System::builder()
        .config(Config::default().with_mailbox_capacity(cap))
        .root(root)
        .start()
        .unwrap()
}

// ---- the floor ----

enum FMsg {
    Add(u64),
    Ask(oneshot::Sender<u64>),
    Panic,
}

type SharedRx = Arc<Mutex<mpsc::Receiver<FMsg>>>;

async fn floor_actor(rx: SharedRx, starts: Option<Arc<Starts>>) {
    let mut rx = rx.lock().await;
    if let Some(s) = starts {
        s.started();
    }
    let mut n = 0;
    while let Some(m) = rx.recv().await {
        match m {
            FMsg::Add(k) => n += k,
            FMsg::Ask(tx) => {
                let _ = tx.send(n);
            }
            FMsg::Panic => panic!("floor crash"),
        }
    }
}

/// One floor actor under a plain respawn-on-panic task.
fn floor_spawn(starts: Option<Arc<Starts>>) -> mpsc::Sender<FMsg> {
    let (tx, rx) = mpsc::channel(CAPACITY);
    let rx = Arc::new(Mutex::new(rx));
    tokio::spawn(async move {
        loop {
            match tokio::spawn(floor_actor(rx.clone(), starts.clone())).await {
                Err(e) if e.is_panic() => continue,
                _ => break,
            }
        }
    });
    tx
}

/// N floor actors restarted all together when one panics.
fn floor_group(n: usize) -> Vec<mpsc::Sender<FMsg>> {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| {
            let (tx, rx) = mpsc::channel(CAPACITY);
            (tx, Arc::new(Mutex::new(rx)))
        })
        .unzip();
    tokio::spawn(async move {
        loop {
            let handles: Vec<_> = rxs
                .iter()
                .map(|rx| tokio::spawn(floor_actor(rx.clone(), None)))
                .collect();
            let (_, _, rest) = select_all(handles).await;
            rest.iter().for_each(|h| h.abort());
            join_all(rest).await;
        }
    });
    txs
}

async fn floor_ask(tx: &mpsc::Sender<FMsg>) -> u64 {
    let (rtx, rrx) = oneshot::channel();
    tx.send(FMsg::Ask(rtx)).await.ok().unwrap();
    rrx.await.unwrap()
}

// ---- benches ----

const SPAWN_N: usize = 100_000;
const TELL_N: u64 = 1_000_000;
const GROUP_N: usize = 1_000;

fn spawn_100k(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("spawn_100k");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("crashonly", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let sys = system(Strategy::OneForOne);
                    let starts = Starts::new(SPAWN_N);
                    let t = Instant::now();
                    for _ in 0..SPAWN_N {
                        sys.spawn(ActorSpec::<Bench>::new(Some(starts.clone()))).unwrap();
                    }
                    starts.done.notified().await;
                    total += t.elapsed();
                    drop(sys);
                }
                total
            })
        })
    });
    g.bench_function("floor", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let starts = Starts::new(SPAWN_N);
                    let t = Instant::now();
                    let txs: Vec<_> = (0..SPAWN_N).map(|_| floor_spawn(Some(starts.clone()))).collect();
                    starts.done.notified().await;
                    total += t.elapsed();
                    drop(txs);
                }
                total
            })
        })
    });
    g.finish();
}

fn tell_1m(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("tell_1m");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("crashonly", |b| {
        let sys = rt.block_on(async { system(Strategy::OneForOne) });
        let a = rt.block_on(async { sys.spawn(ActorSpec::<Bench>::new(None)).unwrap() });
        b.to_async(&rt).iter(|| async {
            for _ in 0..TELL_N {
                a.tell(Msg::Add(1)).await.unwrap();
            }
            a.ask(Msg::Get).await.unwrap()
        })
    });
    g.bench_function("floor", |b| {
        let tx = rt.block_on(async { floor_spawn(None) });
        b.to_async(&rt).iter(|| async {
            for _ in 0..TELL_N {
                tx.send(FMsg::Add(1)).await.ok().unwrap();
            }
            floor_ask(&tx).await
        })
    });
    g.finish();
}

fn ask_round_trip(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("ask_round_trip");
    g.bench_function("crashonly", |b| {
        let sys = rt.block_on(async { system(Strategy::OneForOne) });
        let a = rt.block_on(async { sys.spawn(ActorSpec::<Bench>::new(None)).unwrap() });
        b.to_async(&rt).iter(|| async { a.ask(Msg::Get).await.unwrap() })
    });
    g.bench_function("floor", |b| {
        let tx = rt.block_on(async { floor_spawn(None) });
        b.to_async(&rt).iter(|| async { floor_ask(&tx).await })
    });
    g.finish();
}

fn restart_latency(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("restart_latency");
    g.bench_function("crashonly", |b| {
        let sys = rt.block_on(async { system(Strategy::OneForOne) });
        let a = rt.block_on(async { sys.spawn(ActorSpec::<Bench>::new(None)).unwrap() });
        b.to_async(&rt).iter(|| async {
            a.tell(Msg::Panic).await.unwrap();
            a.ask(Msg::Get).await.unwrap()
        })
    });
    g.bench_function("floor", |b| {
        let tx = rt.block_on(async { floor_spawn(None) });
        b.to_async(&rt).iter(|| async {
            tx.send(FMsg::Panic).await.ok().unwrap();
            floor_ask(&tx).await
        })
    });
    g.finish();
}

fn one_for_all_1000(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("one_for_all_1000");
    g.sample_size(20);
    g.bench_function("crashonly", |b| {
        let sys = rt.block_on(async { system(Strategy::OneForAll) });
        let refs: Vec<_> = rt.block_on(async {
            (0..GROUP_N)
                .map(|_| sys.spawn(ActorSpec::<Bench>::new(None)).unwrap())
                .collect()
        });
        b.to_async(&rt).iter(|| async {
            refs[0].tell(Msg::Panic).await.unwrap();
            refs[0].ask(Msg::Get).await.unwrap();
            join_all(refs[1..].iter().map(|r| async move { r.ask(Msg::Get).await.unwrap() })).await
        })
    });
    g.bench_function("floor", |b| {
        let txs = rt.block_on(async { floor_group(GROUP_N) });
        b.to_async(&rt).iter(|| async {
            txs[0].send(FMsg::Panic).await.ok().unwrap();
            floor_ask(&txs[0]).await;
            join_all(txs[1..].iter().map(floor_ask)).await
        })
    });
    g.finish();
}

/// A system whose watchdog scans 1,001 actors every 50 ms, and one of its actors.
async fn busy_system() -> (System, ActorRef<Bench>) {
    let config = Config::default().with_watchdog_every(Duration::from_millis(50));
    let sys = System::builder().config(config).start().unwrap();
    for _ in 0..1_000 {
        sys.spawn(ActorSpec::<Bench>::new(None)).unwrap();
    }
    let a = sys.spawn(ActorSpec::<Bench>::new(None)).unwrap();
    (sys, a)
}

/// What the communication layer adds to a plain tell/ask: policy clamps and RetryAfter checks are
/// on every send; this compares a plain request with one that carries a TTL, is idempotent and
/// retrying, on the same actor of a system whose watchdog scans 1,001 actors every 50 ms.
fn comm_overhead(c: &mut Criterion) {
    let rt = runtime();
    let (_sys, a) = rt.block_on(busy_system());
    let mut g = c.benchmark_group("comm_overhead");
    g.bench_function("ask_plain", |b| {
        b.to_async(&rt).iter(|| async { a.ask(Msg::Get).await.unwrap() })
    });
    g.bench_function("ask_full", |b| {
        b.to_async(&rt).iter(|| async {
            a.ask(Msg::Get)
                .ttl(Duration::from_secs(1))
                .idempotent()
                .retrying()
                .await
                .unwrap()
        })
    });
    g.sample_size(20);
    g.bench_function("tell_100k_plain", |b| {
        b.to_async(&rt).iter(|| async {
            for _ in 0..100_000 {
                a.tell(Msg::Add(1)).await.unwrap();
            }
            a.ask(Msg::Get).await.unwrap()
        })
    });
    g.bench_function("tell_100k_full", |b| {
        b.to_async(&rt).iter(|| async {
            for _ in 0..100_000 {
                a.tell(Msg::Add(1))
                    .ttl(Duration::from_secs(1))
                    .idempotent()
                    .await
                    .unwrap();
            }
            a.ask(Msg::Get).await.unwrap()
        })
    });
    g.finish();
}

/// The same comparison on a single-threaded runtime: sender and actor share the thread, so the
/// figure is the CPU cost of the path, without cross-thread wake-ups and worker placement.
fn comm_overhead_local(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_sys, a) = rt.block_on(busy_system());
    let (_quiet, q) = rt.block_on(async {
        let config = Config::default().with_watchdog_every(Duration::from_secs(3600));
        let sys = System::builder().config(config).start().unwrap();
        let q = sys.spawn(ActorSpec::<Bench>::new(None)).unwrap();
        (sys, q)
    });
    let mut g = c.benchmark_group("comm_overhead_local");
    g.bench_function("ask_plain_watchdog_idle", |b| {
        b.to_async(&rt).iter(|| async { q.ask(Msg::Get).await.unwrap() })
    });
    g.bench_function("ask_plain", |b| {
        b.to_async(&rt).iter(|| async { a.ask(Msg::Get).await.unwrap() })
    });
    g.bench_function("ask_full", |b| {
        b.to_async(&rt).iter(|| async {
            a.ask(Msg::Get)
                .ttl(Duration::from_secs(1))
                .idempotent()
                .retrying()
                .await
                .unwrap()
        })
    });
    g.finish();
}

fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
    // Every event and span off, with a subscriber installed: the benches measure the runtime as a
    // service with its logging filtered runs it (with no subscriber at all, crashonly prints each
    // actor panic to stderr, as Rust's own panic hook does for every other framework here).
    let off = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        tracing_subscriber::filter::LevelFilter::OFF,
    );
    let _ = tracing::subscriber::set_global_default(off);
}

fn all(c: &mut Criterion) {
    quiet_panics();
    spawn_100k(c);
    tell_1m(c);
    ask_round_trip(c);
    restart_latency(c);
    one_for_all_1000(c);
    comm_overhead(c);
    comm_overhead_local(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
