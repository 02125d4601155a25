//! The `System`: the root of the supervision tree and everything shared by its actors.
//!
//! No process-wide globals: the registry, id counter, clock and random source belong to a `System`,
//! so several systems can live in one process (and one test).

use std::time::Duration;

use tokio::sync::watch;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::clock::Clock;
use crate::crash::CrashReport;
use crate::envelope::EnvelopeId;
use crate::error::{Error, SpawnError, SystemError};
use crate::monitor::MonitorStream;
use crate::policy::Policy;
use crate::registry::{ActorId, Registry};
use crate::rt::Executor;
use crate::slot::Slot;
use crate::supervisor::{ActorSpec, ChildHandle, Strategy, SupNode, SupervisorRef, SupervisorSpec};
use crate::sync::{Arc, Ordering, Stat};

/// System-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The bounds on every timeout, lease and retry (there is no infinite ask).
    pub policy: Policy,
    /// Mailbox capacity of an actor whose spec sets none.
    pub mailbox_capacity: usize,
    /// How often the watchdog looks for actors past their handling lease.
    pub watchdog_every: Duration,
}

impl Default for Config {
    /// The default policy, mailboxes of 1024, a watchdog pass every 50 ms.
    fn default() -> Self {
        Config {
            policy: Policy::default(),
            mailbox_capacity: 1024,
            watchdog_every: Duration::from_millis(50),
        }
    }
}

/// What every slot of a system shares. It holds no slot strongly (the registry keeps weak
/// references), so there is no cycle between slots and the system.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) clock: Clock,
    pub(crate) exec: Executor,
    pub(crate) registry: Registry,
    // Relaxed: only uniqueness matters.
    ids: Stat,
    rng: Stat,
    failure: watch::Sender<Option<Arc<CrashReport>>>,
    // Relaxed: a count compared with a threshold.
    abandoned: Stat,
    pub(crate) leases: crate::lease::Leases,
}

impl Shared {
    pub(crate) fn next_envelope_id(&self) -> EnvelopeId {
        let id = self.ids.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        EnvelopeId(std::num::NonZeroU64::new(id).unwrap_or(std::num::NonZeroU64::MIN))
    }

    /// A random value (SplitMix64 over a shared counter): for jitter, not for secrets.
    pub(crate) fn random(&self) -> u64 {
        let mut z = self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A task did not end after its abort (stuck in blocking code): it is left behind. Past the
    /// policy's threshold the system gives up, so the process is restarted from outside.
    pub(crate) fn abandoned(&self, path: &str) {
        let n = self.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(actor = %path, abandoned = n, "task did not stop after its abort; abandoned");
        if n > u64::from(self.config.policy.max_abandoned()) {
            let report = CrashReport {
                path: "/".into(),
                reason: crate::crash::CrashReason::TooManyAbandoned { abandoned: n as u32 },
                envelope: None,
            };
            self.fail(Arc::new(report));
        }
    }

    /// One watchdog pass: crash-restart every actor past its handling lease.
    fn watch(&self) {
        let now = self.clock.nanos();
        for hung in self.registry.hung(now) {
            hung.hang(now);
        }
    }

    pub(crate) fn fail(&self, report: Arc<CrashReport>) {
        tracing::error!(crash = %report, "root supervisor gave up; the process should exit non-zero");
        self.failure.send_replace(Some(report));
    }

    pub(crate) fn lookup_actor<A: Actor>(&self, path: &str) -> Option<ActorRef<A>> {
        let id = self.registry.lookup(path)?;
        self.get_actor(id).ok()
    }

    pub(crate) fn get_actor<A: Actor>(&self, id: ActorId) -> Result<ActorRef<A>, Error> {
        let any = self.registry.get(id).ok_or(Error::Dead)?;
        any.downcast::<Slot<A>>()
            .map(ActorRef::from_slot)
            .map_err(|_| Error::Dead)
    }

    pub(crate) fn lookup_supervisor(&self, path: &str) -> Option<SupervisorRef> {
        let id = self.registry.lookup(path)?;
        self.registry
            .get(id)?
            .downcast::<SupNode>()
            .ok()
            .map(SupervisorRef::new)
    }
}

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
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The power-off switch: abort every task of the tree. Nothing inside is asked to cooperate.
        ChildHandle::abort(&*self.root);
        if let Some(w) = &self.watchdog {
            w.abort();
        }
        // A model ends only when every thread has: stop timers and renewals too.
        #[cfg(crashonly_loom)]
        self.shared.exec.shutdown();
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
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the root supervisor (its name is not part of paths: the root's path is `/`).
    pub fn root(mut self, root: SupervisorSpec) -> Self {
        self.root = Some(root);
        self
    }

    /// Builds the tree and starts it. Fails only on invalid or duplicate child names.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(self) -> Result<System, SpawnError> {
        crate::crash::install_panic_hook();
        let (failure, _) = watch::channel(None);
        let seed = {
            let here = &failure as *const _ as u64;
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64);
            here ^ t.unwrap_or(0)
        };
        let shared = Arc::new(Shared {
            config: self.config,
            clock: Clock::default(),
            exec: Executor::current(),
            registry: Registry::default(),
            ids: Stat::new(0),
            rng: Stat::new(seed),
            failure,
            abandoned: Stat::new(0),
            leases: Default::default(),
        });
        let spec = self
            .root
            .unwrap_or_else(|| SupervisorSpec::new("root", Strategy::OneForOne));
        let root = SupNode::build(spec, shared.clone(), None)?;
        root.launch();
        let watchdog = (!cfg!(crashonly_loom)).then(|| {
            let shared = shared.clone();
            let every = shared.config.watchdog_every.max(Duration::from_millis(1));
            shared
                .exec
                .clone()
                .spawn(async move {
                    loop {
                        shared.clock.sleep(every).await;
                        shared.watch();
                    }
                })
                .abort_handle()
        });
        Ok(System {
            inner: Arc::new(Inner { shared, root, watchdog }),
        })
    }
}

impl System {
    /// A builder.
    pub fn builder() -> SystemBuilder {
        SystemBuilder::default()
    }

    /// A system with the default configuration and an empty one-for-one root.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new() -> System {
        System::builder().start().expect("an empty root has no names to clash")
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.shared.config
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.shared.clock
    }

    pub(crate) fn root_node(&self) -> &Arc<SupNode> {
        &self.inner.root
    }

    /// The root supervisor.
    pub fn root(&self) -> SupervisorRef {
        SupervisorRef::new(self.inner.root.clone())
    }

    /// Adds a dynamic actor child to the root supervisor.
    pub fn spawn<A: Actor>(&self, spec: ActorSpec<A>) -> Result<ActorRef<A>, SpawnError> {
        self.inner.root.spawn(spec)
    }

    /// The named actor at `path` (such as `/app/cart`), if it is alive and of type `A`.
    pub fn lookup<A: Actor>(&self, path: &str) -> Option<ActorRef<A>> {
        self.inner.shared.lookup_actor(path)
    }

    /// The named supervisor at `path`.
    pub fn lookup_supervisor(&self, path: &str) -> Option<SupervisorRef> {
        self.inner.shared.lookup_supervisor(path)
    }

    /// The actor with this id; [`Error::Dead`] for a stale id (its slot died, even if the index has
    /// been reused since) or an id of another type.
    pub fn get<A: Actor>(&self, id: ActorId) -> Result<ActorRef<A>, Error> {
        self.inner.shared.get_actor(id)
    }

    /// Progress counters of every actor and supervisor of the tree.
    pub fn snapshot(&self) -> Vec<crate::registry::Snapshot> {
        self.inner.shared.registry.snapshots()
    }

    /// The system's in-memory leases.
    pub fn leases(&self) -> crate::lease::LeaseTable {
        crate::lease::LeaseTable {
            shared: self.inner.shared.clone(),
        }
    }

    /// Tasks abandoned so far (stuck in blocking code after their abort).
    pub fn abandoned(&self) -> u64 {
        self.inner.shared.abandoned.load(Ordering::Relaxed)
    }

    /// Number of live slots (actors and supervisors, the root included).
    pub fn len(&self) -> usize {
        self.inner.shared.registry.len()
    }

    /// Whether only the root is alive.
    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// A stream of [`Down`](crate::Down) notices of `target`, for code outside the system.
    pub fn monitor<A: Actor>(&self, target: &ActorRef<A>) -> MonitorStream {
        MonitorStream::new(&target.slot().monitors)
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
        let mut rx = self.inner.shared.failure.subscribe();
        let report = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives in self")
            .clone();
        Err(SystemError {
            report: report.expect("waited for Some"),
        })
    }

    /// The crash that made the root give up, if it has.
    pub fn failure(&self) -> Option<SystemError> {
        self.inner
            .shared
            .failure
            .borrow()
            .clone()
            .map(|report| SystemError { report })
    }
}

impl Default for System {
    fn default() -> Self {
        System::new()
    }
}
