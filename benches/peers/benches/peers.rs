//! crashonly beside actix, ractor, kameo and the floor (a bare tokio task on an mpsc channel), on
//! the same workloads in one run. `cargo run --release -- table` (in benches/peers) runs this and
//! prints the table; `cargo bench` alone leaves the figures in target/criterion.
//!
//! Rows: spawn 100k actors until each has started; tell 1M messages from one sender and from 4;
//! ask round trip; restart latency (panic, then the next message handled by the new instance);
//! restart of a 1,000-child subtree (one-for-all) until every child has started again.

use std::future::Future;
use std::time::{Duration, Instant};

use crashonly::prelude::Strategy;
use crashonly_peers::{ax, co, floor, ka, ra, runtime, Starts, PATIENCE};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use futures::future::join_all;
use kameo::actor::Spawn;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const SPAWN_N: usize = 100_000;
const TELL_N: u64 = 1_000_000;
const SENDERS: u64 = 4;
const GROUP_N: usize = 1_000;

async fn patiently<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in {PATIENCE:?}"))
}

/// Runs `once` `iters` times on `rt`, summing only what `once` reports as measured.
fn custom<F, Fut>(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, id: &str, rt: &Runtime, once: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Duration>,
{
    g.bench_function(id, |b| {
        b.iter_custom(|iters| rt.block_on(async { sum(iters, &once).await }))
    });
}

async fn sum<F, Fut>(iters: u64, once: &F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = Duration>,
{
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += once().await;
    }
    total
}

/// The same for actix, whose actors live on an actix System (one thread).
fn custom_actix<F, Fut>(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, id: &str, once: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Duration>,
{
    let sys = actix_rt::System::new();
    g.bench_function(id, |b| {
        b.iter_custom(|iters| sys.block_on(async { sum(iters, &once).await }))
    });
}

/// A current-thread tokio runtime: crashonly on one thread, as actix always is.
fn one_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// kameo refuses messages (`ActorStopped`) between a supervised actor's death and its restart;
/// a kameo caller retries, as this does.
async fn kameo_ask_until_up(k: &kameo::actor::ActorRef<ka::Bench>) -> u64 {
    loop {
        match k.ask(ka::Get).await {
            Ok(n) => return n,
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

fn spawn_100k(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("spawn_100k");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    custom(&mut g, "crashonly", &rt, || async {
        let sys = co::system(Strategy::OneForOne);
        let starts = Starts::new();
        starts.arm(SPAWN_N);
        let t = Instant::now();
        for _ in 0..SPAWN_N {
            co::spawn(&sys, Some(starts.clone()));
        }
        patiently("crashonly spawn", starts.reached()).await;
        t.elapsed()
    });
    custom_actix(&mut g, "actix", || async {
        use actix::Actor;
        let starts = Starts::new();
        starts.arm(SPAWN_N);
        let t = Instant::now();
        let addrs: Vec<_> = (0..SPAWN_N)
            .map(|_| ax::Bench::new(Some(starts.clone())).start())
            .collect();
        patiently("actix spawn", starts.reached()).await;
        let d = t.elapsed();
        drop(addrs);
        d
    });
    custom(&mut g, "ractor", &rt, || async {
        let starts = Starts::new();
        starts.arm(SPAWN_N);
        let t = Instant::now();
        let mut refs = Vec::with_capacity(SPAWN_N);
        for _ in 0..SPAWN_N {
            let (r, _) = ractor::Actor::spawn(None, ra::Bench, Some(starts.clone()))
                .await
                .unwrap();
            refs.push(r);
        }
        patiently("ractor spawn", starts.reached()).await;
        let d = t.elapsed();
        refs.iter().for_each(|r| r.kill());
        d
    });
    custom(&mut g, "kameo", &rt, || async {
        let starts = Starts::new();
        starts.arm(SPAWN_N);
        let t = Instant::now();
        let refs: Vec<_> = (0..SPAWN_N).map(|_| ka::Bench::spawn(Some(starts.clone()))).collect();
        patiently("kameo spawn", starts.reached()).await;
        let d = t.elapsed();
        drop(refs);
        d
    });
    custom(&mut g, "floor", &rt, || async {
        let starts = Starts::new();
        starts.arm(SPAWN_N);
        let t = Instant::now();
        let txs: Vec<_> = (0..SPAWN_N).map(|_| floor::spawn(Some(starts.clone()))).collect();
        patiently("floor spawn", starts.reached()).await;
        let d = t.elapsed();
        drop(txs);
        d
    });
    g.finish();
}

/// Tell `TELL_N` messages split over `senders` tasks, then one ask (so that all were handled).
fn tell(c: &mut Criterion, name: &str, senders: u64) {
    let rt = runtime();
    let per = TELL_N / senders;
    let mut g = c.benchmark_group(name);
    g.sample_size(10).measurement_time(Duration::from_secs(8));

    let sys = rt.block_on(async { co::system(Strategy::OneForOne) });
    let a = rt.block_on(async { co::spawn(&sys, None) });
    custom(&mut g, "crashonly", &rt, || async {
        let t = Instant::now();
        join_all((0..senders).map(|_| {
            let a = a.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    a.tell(co::Msg::Add(1)).await.unwrap();
                }
            })
        }))
        .await;
        a.ask(co::Msg::Get).await.unwrap();
        t.elapsed()
    });

    // The same on one thread, beside actix, whose actors always live on one thread.
    let rt1 = one_thread();
    let sys1 = rt1.block_on(async { co::system(Strategy::OneForOne) });
    let a1 = rt1.block_on(async { co::spawn(&sys1, None) });
    custom(&mut g, "crashonly-1t", &rt1, || async {
        let t = Instant::now();
        join_all((0..senders).map(|_| {
            let a = a1.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    a.tell(co::Msg::Add(1)).await.unwrap();
                }
            })
        }))
        .await;
        a1.ask(co::Msg::Get).await.unwrap();
        t.elapsed()
    });

    custom_actix(&mut g, "actix", || async {
        use actix::Actor;
        let a = ax::Bench::new(None).start();
        let t = Instant::now();
        join_all((0..senders).map(|_| {
            let a = a.clone();
            actix_rt::spawn(async move {
                for _ in 0..per {
                    a.do_send(ax::Add(1));
                }
            })
        }))
        .await;
        a.send(ax::Get).await.unwrap();
        t.elapsed()
    });

    let r = rt.block_on(async { ractor::Actor::spawn(None, ra::Bench, None).await.unwrap().0 });
    custom(&mut g, "ractor", &rt, || async {
        let t = Instant::now();
        join_all((0..senders).map(|_| {
            let r = r.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    r.cast(ra::Msg::Add(1)).unwrap();
                }
            })
        }))
        .await;
        r.call(ra::Msg::Get, None).await.unwrap();
        t.elapsed()
    });

    let k = rt.block_on(async { ka::Bench::spawn(None) });
    custom(&mut g, "kameo", &rt, || async {
        let t = Instant::now();
        join_all((0..senders).map(|_| {
            let k = k.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    k.tell(ka::Add(1)).await.unwrap();
                }
            })
        }))
        .await;
        k.ask(ka::Get).await.unwrap();
        t.elapsed()
    });

    let f = rt.block_on(async { floor::spawn(None) });
    custom(&mut g, "floor", &rt, || async {
        let t = Instant::now();
        join_all((0..senders).map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                for _ in 0..per {
                    f.send(floor::Msg::Add(1)).await.ok().unwrap();
                }
            })
        }))
        .await;
        floor::ask(&f).await;
        t.elapsed()
    });
    g.finish();
}

fn tell_1m(c: &mut Criterion) {
    tell(c, "tell_1m_1_sender", 1);
    tell(c, "tell_1m_4_senders", SENDERS);
}

fn ask_round_trip(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("ask_round_trip");
    let sys = rt.block_on(async { co::system(Strategy::OneForOne) });
    let a = rt.block_on(async { co::spawn(&sys, None) });
    g.bench_function("crashonly", |b| {
        b.to_async(&rt).iter(|| async { a.ask(co::Msg::Get).await.unwrap() })
    });
    let rt1 = one_thread();
    let sys1 = rt1.block_on(async { co::system(Strategy::OneForOne) });
    let a1 = rt1.block_on(async { co::spawn(&sys1, None) });
    g.bench_function("crashonly-1t", |b| {
        b.to_async(&rt1).iter(|| async { a1.ask(co::Msg::Get).await.unwrap() })
    });
    {
        use actix::Actor;
        let sys = actix_rt::System::new();
        let a = sys.block_on(async { ax::Bench::new(None).start() });
        g.bench_function("actix", |b| {
            b.iter_custom(|iters| {
                sys.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        a.send(ax::Get).await.unwrap();
                    }
                    t.elapsed()
                })
            })
        });
    }
    let r = rt.block_on(async { ractor::Actor::spawn(None, ra::Bench, None).await.unwrap().0 });
    g.bench_function("ractor", |b| {
        b.to_async(&rt)
            .iter(|| async { r.call(ra::Msg::Get, None).await.unwrap() })
    });
    let k = rt.block_on(async { ka::Bench::spawn(None) });
    g.bench_function("kameo", |b| {
        b.to_async(&rt).iter(|| async { k.ask(ka::Get).await.unwrap() })
    });
    let f = rt.block_on(async { floor::spawn(None) });
    g.bench_function("floor", |b| b.to_async(&rt).iter(|| async { floor::ask(&f).await }));
    g.finish();
}

fn restart_latency(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("restart_latency");

    crash_then_ask(&mut g, &rt, co::Msg::Panic);

    let (tx, rx) = mpsc::unbounded_channel();
    let rx = tokio::sync::Mutex::new(rx);
    let child = rt.block_on(async {
        let args = ra::SupArgs {
            n: 1,
            starts: None,
            publish: tx,
        };
        ractor::Actor::spawn(None, ra::Sup { all_for_one: false }, args)
            .await
            .unwrap();
        rx.lock().await.recv().await.unwrap().remove(0)
    });
    let child = std::sync::Mutex::new(child);
    g.bench_function("ractor", |b| {
        b.to_async(&rt).iter(|| async {
            let old = child.lock().unwrap().clone();
            old.cast(ra::Msg::Panic).unwrap();
            let new = patiently("ractor restart", async { rx.lock().await.recv().await.unwrap() })
                .await
                .remove(0);
            let n = new.call(ra::Msg::Get, None).await.unwrap();
            *child.lock().unwrap() = new;
            n
        })
    });

    // The supervisor's ref is kept: a kameo actor stops when its last ref is dropped.
    let (_ksup, k) = rt.block_on(async {
        let sup = ka::OneForOne::spawn(());
        let k = ka::Bench::supervise(&sup, None)
            .restart_limit(u32::MAX, Duration::from_secs(1))
            .spawn()
            .await;
        (sup, k)
    });
    g.bench_function("kameo", |b| {
        b.to_async(&rt).iter(|| async {
            k.tell(ka::Panic).await.unwrap();
            patiently("kameo restart", kameo_ask_until_up(&k)).await
        })
    });

    let f = rt.block_on(async { floor::spawn(None) });
    g.bench_function("floor", |b| {
        b.to_async(&rt).iter(|| async {
            f.send(floor::Msg::Panic).await.ok().unwrap();
            floor::ask(&f).await
        })
    });
    // The panic itself: the same panic caught by a bare `catch_unwind` (the same silent hook), so
    // that a restart row splits into the unwinding and the runtime's part.
    g.bench_function("bare-panic", |b| {
        b.iter(|| std::panic::catch_unwind(|| -> u64 { panic!("bench crash") }).is_err())
    });
    g.finish();
}

/// Restart latency after a crash without unwinding: the handler returns `Err` (crashonly); actix's
/// `ctx.stop()` (its restart row's workload, which never unwinds either).
fn restart_err(c: &mut Criterion) {
    let mut g = c.benchmark_group("restart_err");
    let rt = runtime();
    crash_then_ask(&mut g, &rt, co::Msg::Fail);
    g.finish();
}

/// The restart rows' cells for crashonly (2 workers on `rt`, and one thread) and actix: `crash`
/// told, then an ask answered by the next instance. actix's failure is always its `ctx.stop()`.
fn crash_then_ask(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>, rt: &Runtime, crash: co::Msg) {
    let sys = rt.block_on(async { co::system(Strategy::OneForOne) });
    let a = rt.block_on(async { co::spawn(&sys, None) });
    g.bench_function("crashonly", |b| {
        b.to_async(rt).iter(|| async {
            a.tell(crash.clone()).await.unwrap();
            a.ask(co::Msg::Get).await.unwrap()
        })
    });
    let rt1 = one_thread();
    let sys1 = rt1.block_on(async { co::system(Strategy::OneForOne) });
    let a1 = rt1.block_on(async { co::spawn(&sys1, None) });
    g.bench_function("crashonly-1t", |b| {
        b.to_async(&rt1).iter(|| async {
            a1.tell(crash.clone()).await.unwrap();
            a1.ask(co::Msg::Get).await.unwrap()
        })
    });
    let sys = actix_rt::System::new();
    let a = sys.block_on(async { actix::Supervisor::start(|_| ax::Bench::new(None)) });
    g.bench_function("actix", |b| {
        b.iter_custom(|iters| {
            sys.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    a.do_send(ax::Fail);
                    a.send(ax::Get).await.unwrap();
                }
                t.elapsed()
            })
        })
    });
}

fn subtree_1000(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("one_for_all_1000");
    g.sample_size(20);
    let starts = Starts::new();

    let sys = rt.block_on(async { co::system(Strategy::OneForAll) });
    let refs: Vec<_> = rt.block_on(async { (0..GROUP_N).map(|_| co::spawn(&sys, Some(starts.clone()))).collect() });
    custom(&mut g, "crashonly", &rt, || async {
        starts.arm(GROUP_N);
        let t = Instant::now();
        refs[0].tell(co::Msg::Panic).await.unwrap();
        patiently("crashonly group", starts.reached()).await;
        refs[0].ask(co::Msg::Get).await.unwrap();
        t.elapsed()
    });

    let (tx, rx) = mpsc::unbounded_channel();
    let rx = tokio::sync::Mutex::new(rx);
    let children = rt.block_on(async {
        let args = ra::SupArgs {
            n: GROUP_N,
            starts: Some(starts.clone()),
            publish: tx,
        };
        ractor::Actor::spawn(None, ra::Sup { all_for_one: true }, args)
            .await
            .unwrap();
        rx.lock().await.recv().await.unwrap()
    });
    let children = std::sync::Mutex::new(children);
    custom(&mut g, "ractor", &rt, || async {
        starts.arm(GROUP_N);
        let first = children.lock().unwrap()[0].clone();
        let t = Instant::now();
        first.cast(ra::Msg::Panic).unwrap();
        let new = patiently("ractor group", async { rx.lock().await.recv().await.unwrap() }).await;
        patiently("ractor group starts", starts.reached()).await;
        new[0].call(ra::Msg::Get, None).await.unwrap();
        let d = t.elapsed();
        *children.lock().unwrap() = new;
        d
    });

    let krefs = rt.block_on(async {
        let sup = ka::OneForAll::spawn(());
        let mut v = Vec::with_capacity(GROUP_N);
        for _ in 0..GROUP_N {
            let r = ka::Bench::supervise(&sup, Some(starts.clone()))
                .restart_limit(u32::MAX, Duration::from_secs(1))
                .spawn()
                .await;
            v.push(r);
        }
        (sup, v)
    });
    custom(&mut g, "kameo", &rt, || async {
        starts.arm(GROUP_N);
        let t = Instant::now();
        krefs.1[0].tell(ka::Panic).await.unwrap();
        patiently("kameo group", starts.reached()).await;
        patiently("kameo group ask", kameo_ask_until_up(&krefs.1[0])).await;
        t.elapsed()
    });

    let ftxs = rt.block_on(async { floor::group(GROUP_N, Some(starts.clone())) });
    custom(&mut g, "floor", &rt, || async {
        starts.arm(GROUP_N);
        let t = Instant::now();
        ftxs[0].send(floor::Msg::Panic).await.ok().unwrap();
        patiently("floor group", starts.reached()).await;
        floor::ask(&ftxs[0]).await;
        t.elapsed()
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    if std::env::var_os("PEERS_LOUD").is_none() {
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
    let only = std::env::var("PEERS_ROWS").unwrap_or_default();
    let want = |row: &str| only.is_empty() || only.split(',').any(|r| r == row);
    type Row = (&'static str, fn(&mut Criterion));
    let rows: [Row; 6] = [
        ("spawn", spawn_100k),
        ("tell", tell_1m),
        ("ask", ask_round_trip),
        ("restart", restart_latency),
        ("restart_err", restart_err),
        ("subtree", subtree_1000),
    ];
    for (name, row) in rows {
        if want(name) {
            row(c);
        }
    }
}

criterion_group!(benches, all);
criterion_main!(benches);
