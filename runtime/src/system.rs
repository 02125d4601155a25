//! The `System`: the root of the supervision tree and everything shared by its actors.
//!
//! No process-wide globals: the registry, id counter, clock and random source belong to a `System`,
//! so several systems can live in one process (and one test).

use std::time::Duration;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::clock::Clock;
use crate::config::Config;
use crate::entity::{Entities, Entity, EntitySpec};
use crate::error::{DeliveryError, SpawnError, SystemError};
use crate::lease::LeaseTable;
use crate::monitor::MonitorStream;
use crate::registry::{ActorId, Snapshot};
use crate::shared::Shared;
use crate::supervisor::{ActorSpec, ChildHandle, Strategy, SupNode, SupervisorRef, SupervisorSpec};
use crate::sync::Arc;

/// An actor system: a supervision tree under one root supervisor.
///
/// Dropping the last handle aborts the whole tree (from outside, as always).
///
/// ```
/// use crashonly::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let system = System::builder().root(SupervisorSpec::new("root", Strategy::OneForOne)).start().unwrap();
/// assert_eq!(system.root().path(), "/");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct System {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    root: Arc<SupNode>,
    /// None in a loom model, where a periodic task would only use up one of loom's few threads.
    watchdog: Option<crate::rt::AbortHandle>,
    /// The watchdog's own OS thread (see `watchdog`); none in a loom model.
    guardian: Option<crate::rt::ThreadHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The power-off switch: abort every task of the tree. Nothing inside is asked to cooperate.
        // Every mailbox closes: whoever waits is told `Dead` now, not at its deadline.
        #[cfg(not(crashonly_loom))]
        ChildHandle::kill(&*self.root);
        // In a model the executor stops every task below; closing every mailbox as well would
        // only add interleavings after the property under test was checked.
        #[cfg(crashonly_loom)]
        ChildHandle::abort(&*self.root);
        if let Some(w) = &self.watchdog {
            w.abort();
        }
        self.shared.set_dropped();
        if let Some(g) = &self.guardian {
            g.thread().unpark();
        }
        // A model ends only when every thread has: stop timers and renewals too.
        #[cfg(crashonly_loom)]
        self.shared.executor().shutdown();
    }
}

/// Builds a [`System`].
#[derive(Debug, Default)]
pub struct SystemBuilder {
    config: Config,
    root: Option<SupervisorSpec>,
}

impl SystemBuilder {
    /// Sets the configuration.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::builder().config(Config::default().with_mailbox_capacity(8)).start().unwrap();
    /// assert_eq!(system.config().mailbox_capacity, 8);
    /// # }
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the root supervisor (its name is not part of paths: the root's path is `/`).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let root = SupervisorSpec::new("root", Strategy::OneForAll).child(ActorSpec::<Counter>::named("counter", 40));
    /// let system = System::builder().root(root).start().unwrap();
    /// let counter = system.lookup::<Counter>("/counter").unwrap();
    /// assert_eq!(counter.ask(2).await, Ok(42));
    /// # }
    /// ```
    pub fn root(mut self, root: SupervisorSpec) -> Self {
        self.root = Some(root);
        self
    }

    /// Builds the tree and starts it. Fails only on invalid or duplicate child names.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let twins = SupervisorSpec::new("root", Strategy::OneForOne)
    ///     .child(ActorSpec::<Counter>::named("counter", 0))
    ///     .child(ActorSpec::<Counter>::named("counter", 1));
    /// let refused = System::builder().root(twins).start().unwrap_err();
    /// assert!(matches!(refused, crashonly::SpawnError::NameTaken(_)));
    /// # }
    /// ```
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(self) -> Result<System, SpawnError> {
        crate::crash::install_panic_hook();
        let shared = Shared::new(self.config);
        let spec = self
            .root
            .unwrap_or_else(|| SupervisorSpec::new("root", Strategy::OneForOne));
        let root = SupNode::build(spec, shared.clone(), None)?;
        root.launch();
        let watchdog = (!cfg!(crashonly_loom)).then(|| {
            let shared = shared.clone();
            let every = shared.config().watchdog_every.max(Duration::from_millis(1));
            let task = shared.clone().spawn(async move {
                #[cfg(feature = "metrics")]
                let mut scans = 0u32;
                let mut wait = every;
                loop {
                    shared.clock().sleep(wait).await;
                    let hibernate_after = shared.config().hibernate_after;
                    wait = crate::watchdog::scan(shared.registry(), shared.nanos(), (None, hibernate_after), every);
                    // About once a second: histogram samples are drained even if nobody scrapes.
                    #[cfg(feature = "metrics")]
                    {
                        scans = scans.wrapping_add(1);
                        if scans.is_multiple_of(20) {
                            shared.meters().upkeep();
                        }
                    }
                }
            });
            task.abort_handle()
        });
        // No watchdog thread in a loom model: models run no blocking code.
        #[cfg(not(crashonly_loom))]
        let guardian = crate::watchdog::start_thread(&shared);
        #[cfg(crashonly_loom)]
        let guardian = None;
        Ok(System {
            inner: Arc::new(Inner {
                shared,
                root,
                watchdog,
                guardian,
            }),
        })
    }
}

impl System {
    /// A builder.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::builder().root(SupervisorSpec::new("root", Strategy::RestForOne)).start().unwrap();
    /// assert!(system.is_empty());
    /// # }
    /// ```
    pub fn builder() -> SystemBuilder {
        SystemBuilder::default()
    }

    /// A system with the default configuration and an empty one-for-one root.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// assert_eq!(system.len(), 1); // the root alone
    /// assert_eq!(system.config(), &Config::default());
    /// # }
    /// ```
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new() -> System {
        System::builder().start().expect("an empty root has no names to clash")
    }

    /// The configuration.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// assert_eq!(system.config().policy.default_ttl(), Duration::from_secs(5));
    /// # }
    /// ```
    pub fn config(&self) -> &Config {
        self.inner.shared.config()
    }

    /// The clock: deadlines are instants on it.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use std::time::Duration;
    /// # let system = System::new();
    /// # let counter = system.spawn(ActorSpec::<Counter>::new(0)).unwrap();
    /// let deadline = system.clock().now() + Duration::from_secs(1);
    /// assert_eq!(counter.ask(1).deadline(deadline).await, Ok(1));
    /// let past = system.clock().now();
    /// assert_eq!(counter.ask(1).deadline(past).await, Err(DeliveryError::Expired));
    /// # }
    /// ```
    pub fn clock(&self) -> &Clock {
        self.inner.shared.clock()
    }

    #[cfg_attr(not(any(feature = "metrics", feature = "observer")), allow(dead_code))]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// A fresh W3C span id, from the sequence of envelope ids (so it names no envelope's span):
    /// for work done outside actors that sends messages, such as an HTTP request.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::TraceContext;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let request = TraceContext { parent: Some(system.new_span_id()), ..TraceContext::root(system.new_trace_id()) };
    /// assert!(request.traceparent().is_some()); // what its own calls to other services carry
    /// assert_ne!(system.new_span_id(), system.new_span_id());
    /// # }
    /// ```
    pub fn new_span_id(&self) -> crate::SpanId {
        self.inner.shared.next_envelope_id().span_id()
    }

    /// A fresh 128-bit W3C trace id, for a request entering with no trace of its own.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counter = system.spawn(ActorSpec::<Counter>::new(0)).unwrap();
    /// let trace = crashonly::TraceContext::root(system.new_trace_id());
    /// assert_eq!(counter.ask(1).trace(trace).await, Ok(1)); // handled in that trace
    /// assert_ne!(system.new_trace_id(), system.new_trace_id());
    /// # }
    /// ```
    pub fn new_trace_id(&self) -> crate::TraceId {
        let shared = &self.inner.shared;
        shared.trace_id_of(shared.next_envelope_id())
    }

    pub(crate) fn root_node(&self) -> &Arc<SupNode> {
        &self.inner.root
    }

    /// The root supervisor.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let counter = system.root().spawn(ActorSpec::<Counter>::named("counter", 0)).unwrap();
    /// assert_eq!(system.root().children(), ["/counter"]);
    /// # let _ = counter;
    /// # }
    /// ```
    pub fn root(&self) -> SupervisorRef {
        SupervisorRef::new(self.inner.root.clone())
    }

    /// Adds a dynamic actor child to the root supervisor.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::named("counter", 40)).unwrap();
    /// assert_eq!(counter.path(), "/counter");
    /// assert_eq!(counter.ask(2).await, Ok(42));
    /// # }
    /// ```
    pub fn spawn<A: Actor>(&self, spec: ActorSpec<A>) -> Result<ActorRef<A>, SpawnError> {
        self.inner.root.spawn(spec)
    }

    /// The named actor at `path` (such as `/app/cart`), if it is alive and of type `A`.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let app = system.root().spawn_supervisor(SupervisorSpec::new("app", Strategy::OneForOne)).unwrap();
    /// let counter = app.spawn(ActorSpec::<Counter>::named("counter", 0)).unwrap();
    /// assert_eq!(system.lookup::<Counter>("/app/counter"), Some(counter));
    /// assert_eq!(system.lookup::<Counter>("/app/nobody"), None);
    /// # }
    /// ```
    pub fn lookup<A: Actor>(&self, path: &str) -> Option<ActorRef<A>> {
        lookup_actor(&self.inner.shared, path)
    }

    /// Adds a dynamic family of entities to the root supervisor (see [`EntitySpec`]).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// assert_eq!(counters.path(), "/counters");
    /// assert_eq!(counters.get("a".to_string()).ask(5).await, Ok(5));
    /// # }
    /// ```
    pub fn spawn_entities<A: Entity>(&self, spec: EntitySpec<A>) -> Result<Entities<A>, SpawnError> {
        spec.spawn(&self.inner.root)
    }

    /// The family of entities `A` at `path` (such as `/app/carts`).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let root = system.root();
    /// root.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// let counters: Entities<Counter> = system.entities("/counters").unwrap();
    /// assert_eq!(counters.get("a".to_string()).ask(5).await, Ok(5));
    /// assert!(system.entities::<Counter>("/carts").is_none());
    /// # }
    /// ```
    pub fn entities<A: Entity>(&self, path: &str) -> Option<Entities<A>> {
        lookup_entities(&self.inner.shared, path)
    }

    /// The named supervisor at `path`.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// system.root().spawn_supervisor(SupervisorSpec::new("app", Strategy::OneForOne)).unwrap();
    /// assert_eq!(system.lookup_supervisor("/app").unwrap().path(), "/app");
    /// assert!(system.lookup_supervisor("/web").is_none());
    /// # }
    /// ```
    pub fn lookup_supervisor(&self, path: &str) -> Option<SupervisorRef> {
        lookup_supervisor(&self.inner.shared, path)
    }

    /// The actor with this id; [`DeliveryError::Dead`] for a stale id (its slot died, even if the
    /// index has been reused since) or an id of another type.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::named("counter", 0)).unwrap();
    /// let id = counter.id();
    /// assert_eq!(system.get::<Counter>(id), Ok(counter));
    /// system.root().remove_child("counter").await.unwrap();
    /// assert_eq!(system.get::<Counter>(id), Err(DeliveryError::Dead)); // a stale id
    /// # }
    /// ```
    pub fn get<A: Actor>(&self, id: ActorId) -> Result<ActorRef<A>, DeliveryError> {
        let any = self.inner.shared.registry().get(id).ok_or(DeliveryError::Dead)?;
        ActorRef::from_any(any).ok_or(DeliveryError::Dead)
    }

    /// Progress counters of every actor and supervisor of the tree.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::named("counter", 0)).unwrap();
    /// counter.ask(1).await.unwrap();
    /// let snapshot = system.snapshot();
    /// let root = snapshot.iter().find(|s| s.path == "/").unwrap();
    /// assert!(root.stats.is_none()); // a supervisor
    /// let counter = snapshot.iter().find(|s| s.path == "/counter").unwrap();
    /// assert_eq!(counter.stats.as_ref().unwrap().handled, 1);
    /// # }
    /// ```
    pub fn snapshot(&self) -> Vec<Snapshot> {
        self.inner.shared.registry().snapshots()
    }

    /// The system's in-memory leases.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let leases = system.leases();
    /// let printer = leases.acquire("printer", "job-1", Duration::from_secs(10)).unwrap();
    /// assert!(leases.acquire("printer", "job-2", Duration::from_secs(10)).is_err());
    /// assert!(leases.is_current(&printer));
    /// # }
    /// ```
    pub fn leases(&self) -> LeaseTable {
        let shared = &self.inner.shared;
        LeaseTable::new(
            shared.leases().clone(),
            shared.clock().clone(),
            shared.policy().max_lease(),
        )
    }

    /// Tasks abandoned so far (stuck in blocking code after their abort): an operator's figure, since
    /// each one is a worker thread or task lost until the process restarts.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// assert_eq!(system.abandoned(), 0); // nothing stuck in blocking code yet
    /// # }
    /// ```
    pub fn abandoned(&self) -> u64 {
        self.inner.shared.abandoned_count()
    }

    /// Number of live slots (actors and supervisors, the root included).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// system.spawn(ActorSpec::<Counter>::new(0)).unwrap();
    /// assert_eq!(system.len(), 2); // the root and the counter
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.inner.shared.registry().len()
    }

    /// Whether only the root is alive.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// assert!(system.is_empty());
    /// system.spawn(ActorSpec::<Counter>::new(0)).unwrap();
    /// assert!(!system.is_empty());
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// A stream of [`Down`](crate::monitor::Down) notices of `target`, for code outside the system.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::named("counter", 1)).unwrap();
    /// let mut downs = system.monitor(&counter);
    /// assert!(counter.ask(u64::MAX).await.is_err()); // an overflow: the counter crashes
    /// let down = downs.recv().await.unwrap();
    /// assert_eq!(down.path, "/counter");
    /// assert!(matches!(down.reason, DownReason::Crashed(_)) && down.restarting);
    /// # }
    /// ```
    pub fn monitor<A: Actor>(&self, target: &ActorRef<A>) -> MonitorStream {
        MonitorStream::new(target.monitors())
    }

    /// Waits until the root supervisor gives up; a `main` turns the error into a non-zero exit so
    /// that the OS-level manager restarts the process.
    ///
    /// ```no_run
    /// # use crashonly::prelude::*;
    /// #[tokio::main]
    /// async fn main() -> Result<(), crashonly::SystemError> {
    ///     let system = System::new();
    ///     // ... spawn the service's actors ...
    ///     system.wait().await // returning Err exits with status 1
    /// }
    /// ```
    pub async fn wait(&self) -> Result<(), SystemError> {
        Err(SystemError {
            report: self.inner.shared.failed().await,
        })
    }

    /// The crash that made the root give up, if it has.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # use std::time::Duration;
    /// let system = System::builder()
    ///     .config(Config::default().with_exit_on_failure(None)) // this example looks at the failure itself
    ///     .root(SupervisorSpec::new("root", Strategy::OneForOne).intensity(0, Duration::from_secs(60)))
    ///     .start()
    ///     .unwrap();
    /// let counter = system.spawn(ActorSpec::<Counter>::named("counter", 1)).unwrap();
    /// assert!(system.failure().is_none());
    /// assert!(counter.ask(u64::MAX).await.is_err()); // a crash, and no restart allowed
    /// system.wait().await.unwrap_err();
    /// let failure = system.failure().unwrap();
    /// assert!(matches!(failure.report.reason, CrashReason::IntensityExceeded { .. }));
    /// # }
    /// ```
    pub fn failure(&self) -> Option<SystemError> {
        self.inner.shared.failure().map(|report| SystemError { report })
    }
}

impl Default for System {
    fn default() -> Self {
        System::new()
    }
}

/// The named actor at `path`, if it is alive and of type `A`.
pub(crate) fn lookup_actor<A: Actor>(shared: &Shared, path: &str) -> Option<ActorRef<A>> {
    let registry = shared.registry();
    ActorRef::from_any(registry.get(registry.lookup(path)?)?)
}

/// The family of entities `A` at `path`.
pub(crate) fn lookup_entities<A: Entity>(shared: &Shared, path: &str) -> Option<Entities<A>> {
    let registry = shared.registry();
    Entities::from_any(registry.get(registry.lookup(path)?)?)
}

/// The named supervisor at `path`.
pub(crate) fn lookup_supervisor(shared: &Shared, path: &str) -> Option<SupervisorRef> {
    let registry = shared.registry();
    SupervisorRef::from_any(registry.get(registry.lookup(path)?)?)
}
