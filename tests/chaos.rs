//! Chaos inside the process: for `CHAOS_SECS` seconds (10 by default, 60 in CI), a fault
//! injector crash-reboots a random actor every 10 ms, while the load delays
//! handlers, fills mailboxes and the store fails one write in ten. Afterwards: the system is up,
//! every live actor is reachable from the root (no orphan, none missing, none twice), the task
//! count is back to its baseline, and every actor serves. Then escalation through a nested
//! supervisor fires exactly where the configured intensities say.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crashonly::prelude::*;
use crashonly::store::{
    Committed, Durability, DurableLease, Limits, MemoryStore, Store, StoreError, StoreExt, StoreFuture, Txn, Versioned,
};

/// A store that refuses one commit in ten.
#[derive(Debug, Default)]
struct FlakyStore {
    inner: MemoryStore,
    n: AtomicU64,
    failed: AtomicU64,
}

impl Store for FlakyStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>> {
        self.inner.get(key)
    }
    fn scan<'a>(&'a self, prefix: &'a [u8], limit: usize) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>> {
        self.inner.scan(prefix, limit)
    }
    fn commit(&self, txn: Txn) -> StoreFuture<'_, Committed> {
        if self.n.fetch_add(1, Ordering::Relaxed) % 10 == 9 {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Box::pin(async {
                Err(StoreError::Unavailable {
                    retry_after: Duration::from_millis(10),
                    reason: "injected store failure".into(),
                })
            });
        }
        self.inner.commit(txn)
    }
    fn acquire_lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        self.inner.acquire_lease(name, holder, ttl)
    }
    fn renew_lease<'a>(&'a self, lease: &'a DurableLease, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        self.inner.renew_lease(lease, ttl)
    }
    fn release_lease<'a>(&'a self, lease: &'a DurableLease) -> StoreFuture<'a, ()> {
        self.inner.release_lease(lease)
    }
    fn durability(&self) -> Durability {
        self.inner.durability()
    }
    fn limits(&self) -> &Limits {
        self.inner.limits()
    }
}

struct Worker {
    store: Arc<FlakyStore>,
    key: Vec<u8>,
    n: u64,
}

#[derive(Clone, Debug)]
enum Msg {
    /// Waits `delay_us`, then writes to the store (a store failure crashes the worker).
    Work {
        delay_us: u64,
    },
    Ping,
}

impl Actor for Worker {
    type Args = Arc<FlakyStore>;
    type Msg = Msg;
    type Reply = u64;
    type Error = StoreError;

    async fn start(store: &Arc<FlakyStore>, ctx: &mut Context<Self>) -> Result<Self, StoreError> {
        let key = ctx.myself().path().to_string().into_bytes();
        let n = match store.get(&key).await? {
            Some(v) => u64::from_le_bytes(v.value.try_into().unwrap_or([0; 8])),
            None => 0,
        };
        Ok(Worker {
            store: store.clone(),
            key,
            n,
        })
    }

    async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) -> Result<u64, StoreError> {
        match msg {
            Msg::Work { delay_us } => {
                tokio::time::sleep(Duration::from_micros(delay_us)).await;
                self.store.put(&self.key, (self.n + 1).to_le_bytes().to_vec()).await?;
                self.n += 1;
            }
            Msg::Ping => {}
        }
        Ok(self.n)
    }
}

fn chaos_secs() -> u64 {
    std::env::var("CHAOS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Every actor answers a ping (waiting out restarts).
async fn all_serve(workers: &[ActorRef<Worker>]) {
    for w in workers {
        let r = w
            .ask(Msg::Ping)
            .ttl(Duration::from_secs(10))
            .idempotent()
            .retrying()
            .await;
        assert!(r.is_ok(), "{} does not serve after the chaos: {r:?}", w.path());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_chaos_leaves_a_whole_tree() {
    std::panic::set_hook(Box::new(|_| {}));
    let store = Arc::new(FlakyStore::default());
    let worker = |name: &str| ActorSpec::<Worker>::named(name, store.clone()).mailbox_capacity(16);
    let many = (1_000_000, Duration::from_secs(1));
    let a = SupervisorSpec::new("a", Strategy::OneForAll)
        .intensity(many.0, many.1)
        .child(worker("a1"))
        .child(worker("a2"))
        .child(worker("a3"));
    let b = SupervisorSpec::new("b", Strategy::RestForOne)
        .intensity(many.0, many.1)
        .child(worker("b1"))
        .child(worker("b2"))
        .child(worker("b3"));
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(many.0, many.1)
        .child(a)
        .child(b)
        .child(worker("w1"))
        .child(worker("w2"));
    // Idle actors hibernate (after 1 s, the default) and then hold no task: the task-count check
    // below counts a hibernating actor as the task it would hold.
    let sys = System::builder().root(root).start().unwrap();
    let paths = ["/a/a1", "/a/a2", "/a/a3", "/b/b1", "/b/b2", "/b/b3", "/w1", "/w2"];
    let workers: Vec<ActorRef<Worker>> = paths.iter().map(|p| sys.lookup::<Worker>(p).unwrap()).collect();
    all_serve(&workers).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    // Live tasks, plus one for each hibernating worker (read before and after the task count,
    // until both agree, so that a worker hibernating meanwhile is not counted twice or missed).
    let tasks = || loop {
        let hibernating = || workers.iter().filter(|w| w.stats().hibernating).count();
        let before = hibernating();
        let alive = metrics.num_alive_tasks();
        if hibernating() == before {
            return alive + before;
        }
    };
    // Steady (a worker between parking its instance and ending its task counts twice).
    let baseline = loop {
        let first = tasks();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if tasks() == first {
            break first;
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let crashes = Arc::new(AtomicU64::new(0));
    let injector = {
        let (workers, stop, crashes) = (workers.clone(), stop.clone(), crashes.clone());
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(0x2545_F491_4F6C_DD1D);
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                workers[rng.usize(..workers.len())].crash_reboot();
                crashes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let load: Vec<_> = (0..2u64)
        .map(|i| {
            let (workers, stop) = (workers.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15 ^ i);
                while !stop.load(Ordering::Relaxed) {
                    let w = &workers[rng.usize(..workers.len())];
                    if rng.u8(..20) == 0 {
                        // Fill the mailbox until it refuses.
                        while w.try_tell(Msg::Work { delay_us: 0 }).is_ok() {}
                    } else {
                        let delay_us = rng.u64(..3_000);
                        let _ = w.ask(Msg::Work { delay_us }).ttl(Duration::from_millis(200)).await;
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(chaos_secs())).await;
    stop.store(true, Ordering::Relaxed);
    injector.await.unwrap();
    for l in load {
        l.await.unwrap();
    }

    assert!(sys.failure().is_none(), "the system failed: {:?}", sys.failure());
    all_serve(&workers).await;
    // No orphan, none missing, none twice: the live tree is the configured one.
    let snap = sys.snapshot();
    let mut actors: Vec<&str> = snap
        .iter()
        .filter(|s| s.stats.is_some())
        .map(|s| s.path.as_str())
        .collect();
    actors.sort_unstable();
    let mut expected = paths.to_vec();
    expected.sort_unstable();
    assert_eq!(actors, expected, "live actors after the chaos");
    for s in &snap {
        let parent = &s.path[..s.path.rfind('/').unwrap()];
        assert!(
            parent.is_empty() || snap.iter().any(|p| p.path == parent && p.stats.is_none()),
            "{} has no live supervisor",
            s.path
        );
    }
    // Task count back to its baseline (aborted instances, timers and requests all gone).
    let settle = Instant::now();
    while tasks() != baseline && settle.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(tasks(), baseline, "tasks left behind");
    let stats: Vec<_> = workers.iter().map(|w| w.stats()).collect();
    let restarts: u64 = stats.iter().map(|s| s.restarts).sum();
    let handled: u64 = stats.iter().map(|s| s.handled).sum();
    println!(
        "chaos: {:.0} s, {} injected crashes, {} store failures, {restarts} restarts, {handled} messages handled; \
         tree whole, tasks back to {baseline}",
        started.elapsed().as_secs_f64(),
        crashes.load(Ordering::Relaxed),
        store.failed.load(Ordering::Relaxed),
    );
    assert!(
        restarts >= crashes.load(Ordering::Relaxed) / 2,
        "the injector did not bite"
    );
}

/// Root (at most 1 restart an hour) over `mid` (at most 2) over `leaf`: crashes 1 and 2 of the
/// leaf restart it; crash 3 makes `mid` give up, and the root restarts `mid` with a fresh
/// history; crashes 4 and 5 restart the leaf; crash 6 makes `mid` give up again, which is the
/// root's second restart: the system fails then, and not one crash earlier.
#[tokio::test(start_paused = true)]
async fn escalation_fires_exactly_where_the_intensities_say() {
    let store = Arc::new(FlakyStore::default());
    let hour = Duration::from_secs(3600);
    let mid = SupervisorSpec::new("mid", Strategy::OneForOne)
        .intensity(2, hour)
        .backoff(Backoff::none())
        .child(ActorSpec::<Worker>::named("leaf", store.clone()));
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(1, hour)
        .backoff(Backoff::none())
        .child(mid);
    // The root fails on purpose here: the test, not the watchdog, decides what happens next.
    let config = Config::default().with_exit_on_failure(None);
    let sys = System::builder().config(config).root(root).start().unwrap();
    let leaf = sys.lookup::<Worker>("/mid/leaf").unwrap();
    for crash in 1..=6 {
        leaf.ask(Msg::Ping).await.unwrap();
        leaf.crash_reboot();
        if crash < 6 {
            leaf.ask(Msg::Ping).ttl(Duration::from_secs(5)).await.unwrap();
            assert!(sys.failure().is_none(), "the system failed at crash {crash}");
        }
    }
    let failed = tokio::time::timeout(Duration::from_secs(5), sys.wait()).await;
    assert!(
        matches!(failed, Ok(Err(_))),
        "the system should fail at crash 6: {failed:?}"
    );
}
