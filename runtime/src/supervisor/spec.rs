//! Specs: how to start a child (actor or supervisor), its restart type, and a supervisor's strategy.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::child::{ChildHandle, Parent};
use super::engine::SupNode;
use crate::actor::Actor;
use crate::dedup::Dedup;
use crate::error::SpawnError;
use crate::policy::{Backoff, Intensity};
use crate::slot::{Slot, SlotOptions};
use crate::sync::{Arc, Weak};

/// Which children restart when one of them crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that crashed.
    #[default]
    OneForOne,
    /// Every child (for children that only make sense together).
    OneForAll,
    /// The child that crashed and every child started after it (for chains of dependencies).
    RestForOne,
}

/// When a child is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always, whether it crashed or ended.
    #[default]
    Permanent,
    /// Only when it crashed; a normal end removes it.
    Transient,
    /// Never; it is removed when it crashes or ends, and also when a sibling's crash makes a
    /// one-for-all or rest-for-one supervisor restart the group (as in OTP).
    Temporary,
}

/// A declared child of a supervisor: an actor ([`ActorSpec`]) or a supervisor ([`SupervisorSpec`]).
pub struct ChildSpec {
    pub(super) kind: Kind,
}

pub(super) enum Kind {
    Actor(Box<ActorMaker>),
    Supervisor(SupervisorSpec),
}

pub(crate) type ActorMaker = dyn FnOnce(&Arc<SupNode>) -> Result<Arc<dyn ChildHandle>, SpawnError> + Send;

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Actor(_) => f.write_str("ChildSpec::Actor"),
            Kind::Supervisor(s) => f.debug_tuple("ChildSpec::Supervisor").field(s).finish(),
        }
    }
}

/// How to start an actor child: its start arguments (kept for every restart), name, restart type
/// and mailbox capacity.
pub struct ActorSpec<A: Actor> {
    name: Option<String>,
    args: A::Args,
    restart: Restart,
    capacity: Option<usize>,
    handling: Option<Duration>,
    rejuvenate_messages: Option<u64>,
    rejuvenate_age: Option<Duration>,
    dedicated: bool,
    dedup: Option<Dedup<A::Reply>>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor> fmt::Debug for ActorSpec<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<A: Actor> ActorSpec<A> {
    /// An unnamed, permanent child.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(40)).unwrap();
    /// assert_eq!(counter.ask(2).await, Ok(42));
    /// # }
    /// ```
    pub fn new(args: A::Args) -> Self {
        ActorSpec {
            name: None,
            args,
            restart: Restart::Permanent,
            capacity: None,
            handling: None,
            rejuvenate_messages: None,
            rejuvenate_age: None,
            dedicated: false,
            dedup: None,
            _actor: PhantomData,
        }
    }

    /// A named, permanent child: it can be looked up at `supervisor_path/name`.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// system.spawn(ActorSpec::<Counter>::named("counter", 40)).unwrap();
    /// let counter = system.lookup::<Counter>("/counter").unwrap();
    /// assert_eq!(counter.ask(2).await, Ok(42));
    /// # }
    /// ```
    pub fn named(name: impl Into<String>, args: A::Args) -> Self {
        ActorSpec {
            name: Some(name.into()),
            ..Self::new(args)
        }
    }

    /// Sets the name (the child can then be looked up at `supervisor_path/name`).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = ActorSpec::<Counter>::new(0).mailbox_capacity(16).name("counter");
    /// system.spawn(spec).unwrap();
    /// assert!(system.lookup::<Counter>("/counter").is_some());
    /// # }
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the restart type.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(1).restart(Restart::Temporary)).unwrap();
    /// let mut downs = system.monitor(&counter);
    /// assert!(counter.ask(u64::MAX).await.is_err()); // an overflow: a crash
    /// assert!(!downs.recv().await.unwrap().restarting); // a temporary child is not restarted
    /// assert_eq!(counter.ask(0).await, Err(DeliveryError::Dead));
    /// # }
    /// ```
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the mailbox capacity (the system default otherwise).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(0).mailbox_capacity(2)).unwrap();
    /// counter.try_tell(1).unwrap();
    /// counter.try_tell(1).unwrap();
    /// assert_eq!(counter.try_tell(1).unwrap_err().error(), &DeliveryError::MailboxFull);
    /// # }
    /// ```
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Sets the handling lease: the watchdog crash-restarts the actor when one message runs longer
    /// (never longer than the policy's `max_handling`).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use std::time::Duration;
    /// struct Stuck;
    /// impl Actor for Stuck {
    /// #   type Args = (); type Msg = (); type Reply = (); type Error = std::convert::Infallible;
    /// #   async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Stuck) }
    ///     async fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), Self::Error> {
    ///         std::future::pending().await // a bug: it never answers
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let stuck = system.spawn(ActorSpec::<Stuck>::new(()).handling_lease(Duration::from_millis(100))).unwrap();
    /// let Err(DeliveryError::Crashed(report)) = stuck.ask(()).await else { panic!() };
    /// assert!(matches!(report.reason, CrashReason::Hung { .. })); // crashed by the watchdog
    /// # }
    /// ```
    pub fn handling_lease(mut self, lease: Duration) -> Self {
        self.handling = Some(lease);
        self
    }

    /// Rejuvenation: restart the actor preemptively after it has handled `n` messages.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(0).rejuvenate_after_messages(2)).unwrap();
    /// assert_eq!(counter.ask(1).await, Ok(1));
    /// assert_eq!(counter.ask(1).await, Ok(2));
    /// assert_eq!(counter.ask(1).await, Ok(1)); // a fresh instance
    /// # }
    /// ```
    pub fn rejuvenate_after_messages(mut self, n: u64) -> Self {
        self.rejuvenate_messages = Some(n.max(1));
        self
    }

    /// Rejuvenation: restart the actor preemptively once an instance is `age` old.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(0).rejuvenate_after(Duration::from_secs(3600))).unwrap();
    /// assert_eq!(counter.ask(1).await, Ok(1));
    /// tokio::time::sleep(Duration::from_secs(3601)).await; // paused time: no real wait
    /// assert_eq!(counter.ask(1).await, Ok(1)); // a fresh instance
    /// assert_eq!(counter.stats().incarnation, 2);
    /// # }
    /// ```
    pub fn rejuvenate_after(mut self, age: Duration) -> Self {
        self.rejuvenate_age = Some(age);
        self
    }

    /// Runs the actor on a dedicated OS thread, for actors that must block: blocking there starves
    /// no other actor. Supervision, mailbox and watchdog are the same; an instance stuck for good is
    /// abandoned with its thread and replaced on a new one.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// struct Disk;
    /// impl Actor for Disk {
    /// #   type Args = (); type Msg = String; type Reply = bool; type Error = std::convert::Infallible;
    /// #   async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Disk) }
    ///     async fn handle(&mut self, path: String, _: &mut Context<Self>) -> Result<bool, Self::Error> {
    ///         Ok(std::path::Path::new(&path).exists()) // a blocking call
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let disk = system.spawn(ActorSpec::<Disk>::new(()).blocking()).unwrap();
    /// assert_eq!(disk.ask("/".into()).await, Ok(true));
    /// # }
    /// ```
    pub fn blocking(mut self) -> Self {
        self.dedicated = true;
        self
    }

    pub(super) fn build(self, parent: &Arc<SupNode>) -> Result<Arc<Slot<A>>, SpawnError> {
        let shared = parent.shared().clone();
        let weak: Weak<dyn Parent> = Arc::downgrade(&(parent.clone() as Arc<dyn Parent>));
        let args = self.args;
        let opts = SlotOptions {
            capacity: self.capacity.unwrap_or(shared.mailbox_capacity()),
            handling: shared.policy().handling(self.handling),
            rejuvenate_messages: self.rejuvenate_messages,
            rejuvenate_age: self.rejuvenate_age,
            dedicated: self.dedicated,
            #[cfg(feature = "metrics")]
            meters: shared.slot_meters::<A>(&crate::meters::pattern(parent.path(), self.name.as_deref()), false),
        };
        let dedup = self.dedup;
        let slot = shared
            .registry()
            .insert(parent.path_arc(), self.name.as_deref(), |id, base, named| {
                Slot::<A>::new((id, base, named), shared.clone(), args, weak, opts, dedup)
            })?;
        parent.adopt(slot.clone(), self.restart)?;
        Ok(slot)
    }
}

impl<A: Actor> ActorSpec<A>
where
    A::Reply: Clone,
{
    /// Keeps a window of the last `window` idempotency keys and their replies: a keyed request
    /// (see `Ask::key`) repeated within the window is answered from it and not executed again.
    /// The window lives in the slot, so it survives restarts of the actor (not of the process: for
    /// that, use `store::StoreExt::apply_once`).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(0).dedup(1000)).unwrap();
    /// assert_eq!(counter.ask(5).key("payment 17").await, Ok(5));
    /// counter.kill().unwrap(); // the window survives restarts
    /// assert_eq!(counter.ask(5).key("payment 17").await, Ok(5)); // answered from the window
    /// assert_eq!(counter.ask(1).await, Ok(1)); // the new instance never added 5
    /// # }
    /// ```
    pub fn dedup(mut self, window: usize) -> Self {
        self.dedup = Some(Dedup::new(window, A::Reply::clone));
        self
    }
}

impl<A: Actor> From<ActorSpec<A>> for ChildSpec {
    fn from(spec: ActorSpec<A>) -> Self {
        ChildSpec {
            kind: Kind::Actor(Box::new(move |parent| {
                spec.build(parent).map(|s| s as Arc<dyn ChildHandle>)
            })),
        }
    }
}

impl ChildSpec {
    /// A child made by `make` (a kind of child defined outside this module: an entity family).
    pub(crate) fn from_maker(make: Box<ActorMaker>) -> Self {
        ChildSpec {
            kind: Kind::Actor(make),
        }
    }
}

impl From<SupervisorSpec> for ChildSpec {
    fn from(spec: SupervisorSpec) -> Self {
        ChildSpec {
            kind: Kind::Supervisor(spec),
        }
    }
}

/// How to start a supervisor: name, strategy, intensity, backoff and its declared children.
///
/// ```
/// use crashonly::prelude::*;
/// use std::time::Duration;
///
/// let spec = SupervisorSpec::new("app", Strategy::RestForOne)
///     .intensity(5, Duration::from_secs(30))
///     .backoff(Backoff { base: Duration::from_millis(50), cap: Duration::from_secs(2) });
/// assert_eq!(spec.name(), "app");
/// ```
#[derive(Debug)]
pub struct SupervisorSpec {
    pub(super) name: String,
    pub(super) strategy: Strategy,
    pub(super) intensity: Option<Intensity>,
    pub(super) backoff: Backoff,
    pub(super) restart: Restart,
    pub(super) children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A permanent supervisor with the policy's intensity, default backoff and no children yet.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let app = system.root().spawn_supervisor(SupervisorSpec::new("app", Strategy::OneForOne)).unwrap();
    /// assert_eq!(app.path(), "/app");
    /// # }
    /// ```
    pub fn new(name: impl Into<String>, strategy: Strategy) -> Self {
        SupervisorSpec {
            name: name.into(),
            strategy,
            intensity: None,
            backoff: Backoff::default(),
            restart: Restart::Permanent,
            children: Vec::new(),
        }
    }

    /// Its name.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// assert_eq!(SupervisorSpec::new("app", Strategy::OneForOne).name(), "app");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// At most `max_restarts` within `period`; one more crash and it gives up (its parent decides).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let app = SupervisorSpec::new("app", Strategy::OneForOne)
    ///     .intensity(1, Duration::from_secs(60))
    ///     .restart(Restart::Temporary) // once it gives up, the root lets it go
    ///     .child(ActorSpec::<Counter>::named("counter", 1));
    /// system.root().spawn_supervisor(app).unwrap();
    /// let counter = system.lookup::<Counter>("/app/counter").unwrap();
    /// let mut downs = system.monitor(&counter);
    /// assert!(counter.ask(u64::MAX).await.is_err()); // crash 1: restarted
    /// assert!(downs.recv().await.unwrap().restarting);
    /// assert!(counter.ask(u64::MAX).await.is_err()); // crash 2 within the minute: `app` gives up
    /// assert!(!downs.recv().await.unwrap().restarting);
    /// # }
    /// ```
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Some(Intensity { max_restarts, period });
        self
    }

    /// Backoff between consecutive restarts.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let app = SupervisorSpec::new("app", Strategy::OneForOne)
    ///     .backoff(Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(1) })
    ///     .child(ActorSpec::<Counter>::named("counter", 1));
    /// system.root().spawn_supervisor(app).unwrap();
    /// let counter = system.lookup::<Counter>("/app/counter").unwrap();
    /// let _ = counter.ask(u64::MAX).await; // crash 1: restarted at once
    /// let _ = counter.ask(u64::MAX).await; // crash 2: restarted after 0.5 to 1 s
    /// let crashed = system.clock().now();
    /// assert_eq!(counter.ask(0).await, Ok(1));
    /// assert!(system.clock().now() - crashed >= Duration::from_millis(500));
    /// # }
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Its restart type as a child of its own supervisor.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let jobs = SupervisorSpec::new("jobs", Strategy::OneForOne)
    ///     .intensity(0, Duration::from_secs(60))
    ///     .restart(Restart::Temporary) // when it gives up, it is removed rather than restarted
    ///     .child(ActorSpec::<Counter>::named("counter", 1));
    /// system.root().spawn_supervisor(jobs).unwrap();
    /// let counter = system.lookup::<Counter>("/jobs/counter").unwrap();
    /// assert!(counter.ask(u64::MAX).await.is_err()); // a crash: `jobs` gives up
    /// assert_eq!(counter.ask(0).await, Err(DeliveryError::Dead));
    /// assert!(system.lookup_supervisor("/jobs").is_none());
    /// # }
    /// ```
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Declares a child; children start in declaration order.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let app = SupervisorSpec::new("app", Strategy::RestForOne)
    ///     .child(ActorSpec::<Counter>::named("db", 0))
    ///     .child(SupervisorSpec::new("web", Strategy::OneForOne))
    ///     .child(EntitySpec::<Counter>::new("carts", |_key: &String| 0));
    /// let app = system.root().spawn_supervisor(app).unwrap();
    /// assert_eq!(app.children(), ["/app/db", "/app/web", "/app/carts"]);
    /// # }
    /// ```
    pub fn child(mut self, child: impl Into<ChildSpec>) -> Self {
        self.children.push(child.into());
        self
    }
}
