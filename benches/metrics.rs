//! What counting costs: tell and ask throughput of one actor with the Prometheus meters on and off
//! (`Config::with_metrics`), in the same run, with `/metrics` rendered once a second while on (a
//! scraper far more eager than Prometheus's usual 15 s). The goal is under 3%.
//!
//! `cargo bench --bench metrics` (a short run: `-- --measurement-time 3 --warm-up-time 1`)

use std::time::Duration;

use crashonly::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;

const TELL_N: u64 = 100_000;

#[path = "support/counter.rs"]
mod counter;
use counter::{Counter as Bench, Msg};

/// A system with one actor, counting into its meters or not; while on, a task renders the scrape
/// once a second.
fn setup(rt: &Runtime, on: bool) -> (System, ActorRef<Bench>) {
    rt.block_on(async {
        let config = Config::default().with_metrics(on);
        let sys = System::builder().config(config).start().unwrap();
        let a = sys.spawn(ActorSpec::<Bench>::named("bench", ())).unwrap();
        if on {
            let s = sys.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    std::hint::black_box(crashonly::metrics::render(&s));
                }
            });
        }
        (sys, a)
    })
}

fn group(c: &mut Criterion, name: &str, rt: &Runtime) {
    let off = setup(rt, false);
    let on = setup(rt, true);
    let mut g = c.benchmark_group(name);
    g.sample_size(20);
    for (label, (_, a)) in [("tell_100k_off", &off), ("tell_100k_on", &on)] {
        g.bench_function(label, |b| {
            b.to_async(rt).iter(|| async {
                for _ in 0..TELL_N {
                    a.tell(Msg::Add(1)).await.unwrap();
                }
                a.ask(Msg::Get).await.unwrap()
            })
        });
    }
    for (label, (_, a)) in [("ask_off", &off), ("ask_on", &on)] {
        g.bench_function(label, |b| {
            b.to_async(rt).iter(|| async { a.ask(Msg::Get).await.unwrap() })
        });
    }
    g.finish();
    // The "on" system really counted (a bench of nothing would show no cost either).
    let text = crashonly::metrics::render(&on.0);
    assert!(text.contains("crashonly_handled_total{actor="), "{text}");
    assert!(!crashonly::metrics::render(&off.0).contains("crashonly_handled_total{"));
}

fn all(c: &mut Criterion) {
    std::panic::set_hook(Box::new(|_| {}));
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One thread: the figure is the CPU cost of the path, without cross-thread wake-ups (which on
    // a shared 2-core machine are noise larger than the cost measured).
    group(c, "metrics_cost_local", &local);
}

criterion_group!(benches, all);
criterion_main!(benches);
