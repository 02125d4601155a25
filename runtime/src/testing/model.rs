//! Model checking of your own actors with loom (only under `--cfg crashonly_loom`).
//!
//! Inside [`check`], a [`ModelSystem`] runs each actor task and each supervisor on a loom thread,
//! on a manual [`Clock`] (time moves only with [`Clock::advance`]) and with an in-memory store
//! built on the same loom-checked primitives. Loom then runs the test body once for every
//! interleaving of those threads that the preemption bound allows, so a property that holds in
//! the test holds in all of them, not only in the ones a sleep-based test happens to hit.
//!
//! ```ignore
//! use crashonly::testing::model::{self, ModelSystem};
//!
//! model::check(|| {
//!     let sys = ModelSystem::new();
//!     let account = sys.spawn(ActorSpec::<Account>::new(sys.store()));
//!     let crasher = {
//!         let (sys, account) = (sys.clone(), account.clone());
//!         model::thread(move || sys.crash(&account)) // at a point loom chooses
//!     };
//!     let r = model::block_on(account.ask(deposit(7, 10)).idempotent());
//!     crasher.join().unwrap();
//!     assert_eq!(model::block_on(account.ask(balance())).unwrap(), 10);
//! });
//! ```
//!
//! Budget: loom runs at most 5 threads (the test body, the root supervisor, one per actor, and
//! the threads you start); each model should send a handful of messages. `LOOM_MAX_PREEMPTIONS`
//! (2 by default here) bounds the search. A failing interleaving can be replayed: run once with
//! `LOOM_CHECKPOINT_FILE=fail.json LOOM_CHECKPOINT_INTERVAL=1`, then again with the same file and
//! `LOOM_LOG=trace` to see the schedule that failed.

pub use loom;

use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::clock::Clock;
use crate::config::Config;
use crate::policy::Backoff;
use crate::store::{Committed, Durability, DurableLease, Limits, MemoryStore, Store, StoreFuture, Txn, Versioned};
use crate::supervisor::{ActorSpec, Strategy, SupervisorSpec};
use crate::sync::Arc;
use crate::system::System;

pub use crate::sync::check;

/// Runs a future to completion on the current model thread (asks, tells, store calls).
pub fn block_on<F: IntoFuture>(f: F) -> F::Output {
    loom::future::block_on(f.into_future())
}

/// Starts a model thread (a concurrent sender, a crash at a point loom chooses).
pub fn thread<F, T>(f: F) -> loom::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    loom::thread::spawn(f)
}

/// A [`System`] for a loom model: manual clock, in-memory store, no watchdog.
#[derive(Clone)]
pub struct ModelSystem {
    sys: System,
    store: Arc<ModelStore>,
}

/// The in-memory store, with an await after every commit: a real store answers a commit
/// asynchronously, so a crash can land after the commit and before the actor's reply, and a
/// model must be able to put it there.
#[derive(Debug, Default)]
pub struct ModelStore(MemoryStore);

/// Returns `Pending` once (after waking itself): an await point, like a handler's await on I/O,
/// where loom can run other threads and a crash can land.
pub fn yield_now() -> impl std::future::Future<Output = ()> {
    let mut yielded = false;
    std::future::poll_fn(move |cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
}

impl Store for ModelStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>> {
        self.0.get(key)
    }
    fn scan<'a>(&'a self, prefix: &'a [u8], limit: usize) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>> {
        self.0.scan(prefix, limit)
    }
    fn commit(&self, txn: Txn) -> StoreFuture<'_, Committed> {
        Box::pin(async move {
            let done = self.0.commit(txn).await;
            yield_now().await;
            done
        })
    }
    fn acquire_lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        self.0.acquire_lease(name, holder, ttl)
    }
    fn renew_lease<'a>(&'a self, lease: &'a DurableLease, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        self.0.renew_lease(lease, ttl)
    }
    fn release_lease<'a>(&'a self, lease: &'a DurableLease) -> StoreFuture<'a, ()> {
        self.0.release_lease(lease)
    }
    fn durability(&self) -> Durability {
        self.0.durability()
    }
    fn limits(&self) -> &Limits {
        self.0.limits()
    }
}

impl ModelSystem {
    /// A one-for-one root that restarts at once and does not give up within a model.
    pub fn new() -> Self {
        Self::with_root(
            SupervisorSpec::new("root", Strategy::OneForOne)
                .intensity(1_000, Duration::from_secs(1))
                .backoff(Backoff::none()),
        )
    }

    /// A system with this root supervisor (its children are started with it).
    pub fn with_root(root: SupervisorSpec) -> Self {
        let sys = System::builder()
            .config(Config::default())
            .root(root)
            .start()
            .expect("a model system's root");
        ModelSystem {
            sys,
            store: Arc::new(ModelStore::default()),
        }
    }

    /// The system inside.
    pub fn system(&self) -> &System {
        &self.sys
    }

    /// The manual clock: time moves only with [`Clock::advance`].
    pub fn clock(&self) -> &Clock {
        self.sys.clock()
    }

    /// The in-memory store shared by this model's actors (it outlives their crashes).
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Adds an actor to the root.
    pub fn spawn<A: Actor>(&self, spec: ActorSpec<A>) -> ActorRef<A> {
        self.sys.spawn(spec).expect("spawn in a model")
    }

    /// Crashes the actor now, from outside, wherever it is (as the watchdog or a recovery agent
    /// does). Called from a [`thread`], the point of the crash is one loom chooses.
    pub fn crash<A: Actor>(&self, actor: &ActorRef<A>) {
        actor.crash_reboot();
    }
}

impl fmt::Debug for ModelSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelSystem")
            .field("system", &self.sys)
            .finish_non_exhaustive()
    }
}

impl Default for ModelSystem {
    fn default() -> Self {
        Self::new()
    }
}
