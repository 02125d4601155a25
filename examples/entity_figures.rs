//! **entity-figures**: the measurements of the README's "Entities" section, each a subcommand that
//! prints its figures (release build; each in a fresh process, since RSS never shrinks back).
//!
//! ```text
//! cargo run --release --bin entity-figures -- memory [--keys 1000000] [--max-active 10000] [--cold | --direct]
//! cargo run --release --bin entity-figures -- latency [--n 20000] [--local] [--quiet-watchdog]
//! cargo run --release --bin entity-figures -- idle-memory entity|actor|counter-entity|counter-actor [--n 100000]
//! cargo run --release --bin entity-figures -- all
//! ```
//!
//! - `memory`: carts written once to a redb store in a temp dir (by a child process, so that this
//!   one opens a store it did not write, as a restarted service does), then one message to each
//!   of `--keys` distinct carts through a family with `--max-active`; VmRSS (and glibc's heap in
//!   use) after the first 10,000 and at the end, with the family's counters. The store's page cache
//!   is warmed first (every cart read once): redb caches what it reads, up to 1 GiB, so a cold
//!   cache grows with the carts read up to the file's size whatever the entities do; `--cold`
//!   skips the warming, `--direct` reads the carts straight from the store instead of through
//!   entities (what the store alone adds).
//! - `latency`: a message to a passivated cart (its activation reads it from redb) until its reply,
//!   against a message to a live one: median, p90, p99, p99.9 and max over `--n` of each, asked one
//!   at a time, two rounds (2-worker runtime, the caller on a worker and then outside the runtime;
//!   `--local`: current-thread).
//! - `idle-memory`: RSS growth per idle cart over `--n` carts, activated as entities or spawned as
//!   plain actors (the same actor type recovering the same state, from a memory store);
//!   `counter-entity` and `counter-actor` do the same with an actor whose whole state is one
//!   `u64` and that reads no store, which leaves what the runtime itself holds per live idle
//!   entity or actor after one message.
//! - `all`: each of the above in a child process, one after the other.

#[path = "support/entity_carts.rs"]
mod entity_carts;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use crashonly::prelude::*;
use crashonly::store::{MemoryStore, Store};
use entity_carts::{
    cart_id, carts, expected_count, heap_in_use, open, rss_bytes, seed, touch, trim_heap, Cart, CartMsg, TempDir,
};

const MIB: f64 = 1024.0 * 1024.0;

/// entity-figures: the figures of the entities section (memory per cart, message latency, idle
/// memory per cart); each measurement is a subcommand.
#[derive(Parser, Debug)]
#[command(name = "entity-figures")]
struct Args {
    #[command(subcommand)]
    what: What,
}

/// One measurement.
#[derive(Subcommand, Debug)]
enum What {
    /// Fills a store with N carts (what `memory` runs in a child process first)
    #[command(hide = true)]
    Seed {
        /// The store's file
        path: std::path::PathBuf,
        /// How many carts
        #[arg(value_parser = count)]
        n: usize,
    },
    /// Resident memory while the keys are touched through a family with a cap on live carts
    Memory {
        /// Distinct carts touched
        #[arg(long, value_name = "N", default_value = "1000000", value_parser = count)]
        keys: usize,
        /// The family's --max-active
        #[arg(long, value_name = "N", default_value = "10000", value_parser = count)]
        max_active: usize,
        /// Tasks touching carts at once
        #[arg(long, value_name = "N", default_value = "16", value_parser = count)]
        workers: usize,
        /// Skip warming the store's cache first
        #[arg(long)]
        cold: bool,
        /// Read the carts straight from the store instead of through entities
        #[arg(long, conflicts_with = "cold")]
        direct: bool,
    },
    /// A message to a passivated cart against one to a live cart: median, p90, p99, p99.9, max
    Latency {
        /// Messages of each kind
        #[arg(long, value_name = "N", default_value = "20000", value_parser = count)]
        n: usize,
        /// On a current-thread runtime
        #[arg(long)]
        local: bool,
        /// The watchdog scans every hour instead of every 50 ms
        #[arg(long)]
        quiet_watchdog: bool,
    },
    /// Resident memory per idle cart, activated as entities or spawned as actors
    IdleMemory {
        /// Entities or plain actors
        #[arg(value_enum)]
        kind: Kind,
        /// How many
        #[arg(long, value_name = "N", default_value = "100000", value_parser = count)]
        n: usize,
    },
    /// Every measurement above, in turn
    All,
}

/// What `idle-memory` spawns.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum Kind {
    /// Entities of a family.
    Entity,
    /// Plain actors.
    Actor,
    /// Entities whose state is one number.
    CounterEntity,
    /// Plain actors whose state is one number.
    CounterActor,
}

/// A count, `_` allowed between digits (`1_000_000`).
fn count(s: &str) -> Result<usize, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

fn main() {
    match Args::parse().what {
        What::Seed { path, n } => {
            runtime(false).block_on(async { seed(&*open(&path), n).await.expect("seed the carts") });
        }
        What::Memory {
            keys,
            max_active,
            workers,
            cold,
            direct,
        } => memory(keys, max_active, workers, direct, cold),
        What::Latency {
            n,
            local,
            quiet_watchdog,
        } => latency(n, local, quiet_watchdog),
        What::IdleMemory { kind, n } => match kind {
            Kind::Entity => idle_memory("entity", n),
            Kind::Actor => idle_memory("actor", n),
            Kind::CounterEntity => idle_counters(true, n),
            Kind::CounterActor => idle_counters(false, n),
        },
        What::All => {
            for sub in [
                &["memory"][..],
                &["memory", "--cold"],
                &["memory", "--direct"],
                &["latency"],
                &["latency", "--local"],
                &["idle-memory", "actor"],
                &["idle-memory", "entity"],
                &["idle-memory", "counter-actor"],
                &["idle-memory", "counter-entity"],
            ] {
                println!("\n$ entity-figures {}", sub.join(" "));
                let status = Command::new(std::env::current_exe().expect("this binary"))
                    .args(sub)
                    .status()
                    .expect("run a measurement");
                assert!(status.success(), "{sub:?} failed: {status}");
            }
        }
    }
}

fn runtime(local: bool) -> tokio::runtime::Runtime {
    let mut b = if local {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    b.enable_all().build().expect("tokio runtime")
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// RSS, and the heap in use where the allocator says.
fn memory_now() -> String {
    match heap_in_use() {
        Some(heap) => format!("RSS {} (heap in use {})", mib(rss_bytes()), mib(heap)),
        None => format!("RSS {}", mib(rss_bytes())),
    }
}

/// Writes carts `0..n` to a store at `path` from a child process.
fn seed_in_child(path: &std::path::Path, n: usize) {
    let t = Instant::now();
    let status = Command::new(std::env::current_exe().expect("this binary"))
        .arg("seed")
        .arg(path)
        .arg(n.to_string())
        .status()
        .expect("run the seeding child");
    assert!(status.success(), "seeding failed: {status}");
    println!("seeded {n} carts in {:.1} s", t.elapsed().as_secs_f64());
}

fn memory(keys: usize, max_active: usize, workers: usize, direct: bool, cold: bool) {
    let first = 10_000.min(keys);
    let dir = TempDir::new("entity-memory");
    seed_in_child(&dir.store_path(), keys);
    let rt = runtime(false);
    rt.block_on(async {
        println!(
            "store: {} on disk; at start {}",
            mib(std::fs::metadata(dir.store_path()).map(|m| m.len()).unwrap_or(0)),
            memory_now()
        );
        let store = open(&dir.store_path());
        println!("with the store open: {}", memory_now());
        if !cold && !direct {
            // redb caches the pages it reads (up to 1 GiB): read every cart once, so that what
            // follows measures the entities, not the store's cache filling up to the file's size.
            read_direct(&*store, 0, keys).await;
            println!("store cache warm (every cart read once): {}", memory_now());
        }
        let system = System::new();
        let family = carts(&system, store.clone(), max_active, Duration::from_secs(60));
        let t = Instant::now();
        let drive = |from: usize, to: usize| {
            let (family, store) = (family.clone(), store.clone());
            async move {
                if direct {
                    read_direct(&*store, from, to).await
                } else {
                    touch(&family, from, to, workers).await
                }
            }
        };
        drive(0, first).await;
        let after_first = rss_bytes();
        let heap_first = heap_in_use();
        println!(
            "{}after {first} carts: {}",
            if direct { "direct reads, " } else { "" },
            memory_now()
        );
        let step = 100_000;
        let mut done = first;
        while done < keys {
            let to = (done + step - done % step).min(keys);
            drive(done, to).await;
            done = to;
            if !direct {
                let s = family.stats();
                println!(
                    "  {done} carts: {}, live {}, activations {}",
                    memory_now(),
                    s.active,
                    s.activations
                );
            } else {
                println!("  {done} carts: {}", memory_now());
            }
        }
        let end = rss_bytes();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "after {keys} carts: RSS {} = {:.2}x the RSS after {first} ({:.0} carts/s)",
            mib(end),
            end as f64 / after_first as f64,
            keys as f64 / secs
        );
        if let (Some(h0), Some(h1)) = (heap_first, heap_in_use()) {
            println!(
                "heap in use: {} after {first}, {} after {keys} = {:.2}x",
                mib(h0),
                mib(h1),
                h1 as f64 / h0 as f64
            );
        }
        if trim_heap() {
            println!(
                "after malloc_trim(0) (free pages the allocator held given back): RSS {}",
                mib(rss_bytes())
            );
        }
        if !direct {
            let s = family.stats();
            println!(
                "family: live {} (max_active {}), activations {}, passivated over the cap {}, idle {}, crashes {}",
                s.active, s.max_active, s.activations, s.passivated_cap, s.passivated_idle, s.crashes
            );
        }
        drop(system);
    });
}

/// Reads carts `from..to` straight from the store, one at a time.
async fn read_direct(store: &dyn Store, from: usize, to: usize) {
    for i in from..to {
        let v = store
            .get(format!("cart/{}", cart_id(i)).as_bytes())
            .await
            .expect("read a cart");
        assert!(v.is_some(), "cart {i} is missing");
    }
}

/// Percentiles of `samples` (sorted here).
fn report(what: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let us = |d: Duration| format!("{:.1} µs", d.as_nanos() as f64 / 1000.0);
    println!(
        "{what:<22} n={} median {} p90 {} p99 {} p99.9 {} max {}",
        samples.len(),
        us(at(0.5)),
        us(at(0.9)),
        us(at(0.99)),
        us(at(0.999)),
        us(samples[samples.len() - 1])
    );
}

fn latency(n: usize, local: bool, quiet_watchdog: bool) {
    let dir = TempDir::new("entity-latency");
    let rt = runtime(local);
    rt.block_on(async {
        let store = open(&dir.store_path());
        seed(&*store, n).await.expect("seed the carts");
        // The watchdog scans every actor every 50 ms (the default); `--quiet-watchdog`: every hour.
        let every = if quiet_watchdog {
            Duration::from_secs(3600)
        } else {
            Duration::from_millis(50)
        };
        let system = System::builder()
            .config(Config::default().with_watchdog_every(every))
            .start()
            .expect("start the system");
        let family = carts(&system, store.clone(), 2 * n, Duration::from_secs(3600));
        let refs: Vec<_> = (0..n).map(|i| family.get(cart_id(i))).collect();
        // A warm-up round (every cart activated once, the store's pages cached), then every cart
        // passivated and its instance gone.
        touch(&family, 0, n, 1).await;
        let settle = |family: crashonly::Entities<Cart>| async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while family.stats().active > 0 {
                assert!(Instant::now() < deadline, "passivations did not finish");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        // The caller runs on a worker, as a request handler does; on 2 workers also from outside
        // the runtime (`block_on` on the main thread, as the criterion benches do): every message
        // then wakes a worker.
        let callers: &[(&str, bool)] = if local {
            &[("current-thread", true)]
        } else {
            &[
                ("2 workers, caller on a worker", true),
                ("2 workers, caller outside the runtime", false),
            ]
        };
        for &(caller, spawned) in callers {
            for round in 0..2 {
                assert_eq!(refs.iter().filter(|r| r.passivate()).count(), n, "every cart is idle");
                settle(family.clone()).await;
                let (mut passivated, mut live) = if spawned {
                    tokio::spawn(measure(refs.clone())).await.expect("the measuring task")
                } else {
                    measure(refs.clone()).await
                };
                println!("round {} ({caller}):", round + 1);
                report("  passivated (redb)", &mut passivated);
                report("  live", &mut live);
            }
        }
        let s = family.stats();
        println!(
            "family: activations {}, passivated {}, crashes {}",
            s.activations, s.passivated_idle, s.crashes
        );
        drop(system);
    });
}

/// Asks every cart once (each passivated: its activation reads it from the store), then every
/// cart once more (each live); one at a time. The latency of each ask, passivated and live.
async fn measure(refs: Vec<crashonly::EntityRef<Cart>>) -> (Vec<Duration>, Vec<Duration>) {
    let mut passivated = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let t = Instant::now();
        let count = r.ask(CartMsg::Count).await.expect("ask a passivated cart");
        passivated.push(t.elapsed());
        assert_eq!(count, expected_count(i));
    }
    let mut live = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let t = Instant::now();
        let count = r.ask(CartMsg::Count).await.expect("ask a live cart");
        live.push(t.elapsed());
        assert_eq!(count, expected_count(i));
    }
    (passivated, live)
}

fn idle_memory(kind: &str, n: usize) {
    let rt = runtime(false);
    rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        seed(&*store, n).await.expect("seed the carts");
        let system = System::new();
        let family = carts(&system, store.clone(), 2 * n, Duration::from_secs(3600));
        let mut keep = Vec::with_capacity(if kind == "actor" { n } else { 0 });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = rss_bytes();
        if kind == "entity" {
            touch(&family, 0, n, 16).await;
            assert_eq!(family.stats().active, n);
        } else {
            for i in 0..n {
                keep.push(
                    system
                        .spawn(ActorSpec::<Cart>::new((cart_id(i), store.clone())))
                        .expect("spawn a cart"),
                );
            }
            for (i, a) in keep.iter().enumerate() {
                assert_eq!(a.ask(CartMsg::Count).await.expect("ask a cart"), expected_count(i));
            }
        }
        // Let every task settle into its idle wait.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = rss_bytes();
        println!(
            "{n} idle carts as {kind}: RSS +{} = {} B each",
            mib(after - before),
            (after - before) / n as u64
        );
        drop(keep);
        drop(system);
    });
}

/// The smallest useful entity: one number, no store.
struct Counter(u64);

impl Actor for Counter {
    type Args = ();
    type Msg = u64;
    type Reply = u64;
    type Error = std::convert::Infallible;

    async fn start((): &(), _: &mut Context<Self>) -> Result<Self, Self::Error> {
        Ok(Counter(0))
    }

    async fn handle(&mut self, add: u64, _: &mut Context<Self>) -> Result<u64, Self::Error> {
        self.0 += add;
        Ok(self.0)
    }
}

impl Entity for Counter {
    type Key = u64;
}

/// RSS growth per live idle [`Counter`], `n` of them, each asked once: activated as entities
/// (`entity`) or spawned as plain actors.
fn idle_counters(entity: bool, n: usize) {
    let rt = runtime(false);
    rt.block_on(async {
        let system = System::new();
        let family = system
            .spawn_entities(
                EntitySpec::<Counter>::new("counters", |_: &u64| ())
                    .max_active(2 * n)
                    .idle(Duration::from_secs(3600)),
            )
            .expect("spawn the counter family");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut keep = Vec::with_capacity(if entity { 0 } else { n });
        let (before, heap_before) = (rss_bytes(), heap_in_use());
        if entity {
            for k in 0..n as u64 {
                assert_eq!(family.get(k).ask(7).await.expect("ask a counter"), 7);
            }
            assert_eq!(family.stats().active, n);
        } else {
            keep.extend((0..n).map(|_| system.spawn(ActorSpec::<Counter>::new(())).expect("spawn a counter")));
            for a in &keep {
                assert_eq!(a.ask(7).await.expect("ask a counter"), 7);
            }
        }
        // Let every instance settle (and hibernate: the default `hibernate_after` is 1 s).
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let (after, heap_after) = (rss_bytes(), heap_in_use());
        let hibernating = if entity {
            (0..n as u64)
                .filter(|&k| family.get(k).activation().is_some_and(|a| a.stats().hibernating))
                .count()
        } else {
            keep.iter().filter(|a| a.stats().hibernating).count()
        };
        println!(
            "{n} live idle counters as {}: RSS +{} = {} B each; heap in use {} B each; {hibernating} hibernating",
            if entity { "entities" } else { "actors" },
            mib(after - before),
            (after - before) / n as u64,
            match (heap_before, heap_after) {
                (Some(b), Some(a)) => (a.saturating_sub(b) / n as u64).to_string(),
                _ => "?".into(),
            }
        );
        drop(keep);
        drop(system);
    });
}
