//! Entity benchmarks: a message to a passivated cart (its activation reads its state from redb)
//! until the reply, against a message to a live cart and to the same actor spawned as a plain
//! actor; on a 2-worker runtime and on a current-thread one (the CPU cost of the path).
//!
//! `cargo bench --bench entities`; the percentiles (p99) are the `entity-figures latency` binary's.

#[path = "../examples/support/entity_carts.rs"]
mod entity_carts;

use std::time::{Duration, Instant};

use crashonly::prelude::*;
use crashonly::{Entities, EntityRef};
use criterion::{criterion_group, criterion_main, Criterion};
use entity_carts::{cart_id, carts, open, seed, Cart, CartMsg, TempDir};
use tokio::runtime::Runtime;

/// Carts in the store; the passivated bench goes round them.
const CARTS: usize = 10_000;

fn runtime(local: bool) -> Runtime {
    let mut b = if local {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    b.enable_all().build().unwrap()
}

/// Passivates `cart` and waits until its instance is gone (it is the family's only live one).
async fn passivated(family: &Entities<Cart>, cart: &EntityRef<Cart>) {
    let done = cart.passivate();
    let deadline = Instant::now() + Duration::from_secs(5);
    while family.stats().active > 0 {
        assert!(
            Instant::now() < deadline,
            "passivation of {cart:?} (passivate() = {done}) did not end: {:?}, activation {:?}",
            family.stats(),
            cart.activation().map(|a| a.stats())
        );
        tokio::task::yield_now().await;
    }
}

fn ask(c: &mut Criterion, local: bool) {
    let rt = runtime(local);
    let dir = TempDir::new("entity-bench");
    let (system, family, store) = rt.block_on(async {
        let store = open(&dir.store_path());
        seed(&*store, CARTS).await.unwrap();
        let system = System::new();
        let family = carts(&system, store.clone(), CARTS, Duration::from_secs(3600));
        (system, family, store)
    });
    let name = if local { "entity_ask_local" } else { "entity_ask" };
    let mut g = c.benchmark_group(name);
    g.bench_function("plain_actor", |b| {
        let a = rt.block_on(async {
            system
                .spawn(ActorSpec::<Cart>::new((cart_id(0), store.clone())))
                .unwrap()
        });
        b.to_async(&rt).iter(|| async { a.ask(CartMsg::Count).await.unwrap() })
    });
    g.bench_function("live", |b| {
        let cart = family.get(cart_id(1));
        b.to_async(&rt)
            .iter(|| async { cart.ask(CartMsg::Count).await.unwrap() })
    });
    g.bench_function("passivated", |b| {
        let refs: Vec<_> = (0..CARTS).map(|i| family.get(cart_id(i))).collect();
        // The live bench's cart goes too: each activation below is then the family's only one.
        rt.block_on(passivated(&family, &refs[1]));
        let mut next = 0;
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let cart = &refs[next % CARTS];
                    next += 1;
                    let t = Instant::now();
                    cart.ask(CartMsg::Count).await.unwrap();
                    total += t.elapsed();
                    // Untimed: the next cart asked is then the family's only activation.
                    passivated(&family, cart).await;
                }
                total
            })
        })
    });
    g.finish();
    drop(system);
}

fn entity_ask(c: &mut Criterion) {
    ask(c, false);
}

fn entity_ask_local(c: &mut Criterion) {
    ask(c, true);
}

criterion_group!(benches, entity_ask, entity_ask_local);
criterion_main!(benches);
