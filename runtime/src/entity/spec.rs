//! `EntitySpec`: how to declare a family of entities in the supervision tree.

use std::fmt;
use std::time::Duration;

use super::family::{DedupWindow, Family, MakeArgs, Settings};
use super::{Entities, Entity};
use crate::error::SpawnError;
use crate::policy::{Backoff, Intensity};
use crate::slot::SlotOptions;
use crate::supervisor::{ChildHandle, ChildSpec, Parent, Restart, SupNode};
use crate::sync::{Arc, Weak};

/// How to start a family of entities: its name, how an entity's start arguments are made from
/// its key, when entities are passivated, and how their crashes are supervised.
///
/// Defaults (say what you need instead): `idle` 60 s (never above the policy's `max_idle`),
/// `max_active` 100,000, per entity at most 3 restarts within 5 s (then the key is quarantined
/// for 1 s: its senders get `RetryAfter`, the other keys go on), and for the whole family at most
/// 100 distinct keys crashing within the policy's intensity period (then the family crashes and
/// its supervisor decides).
///
/// ```
/// use crashonly::prelude::*;
/// use crashonly::EntitySpec;
/// use std::time::Duration;
/// # #[derive(Actor, Clone)]
/// # #[actor(entity)]
/// # struct Session { id: String }
/// # #[messages]
/// # impl Session {
/// #     #[message]
/// #     pub fn name(&self) -> String { self.id.clone() }
/// # }
///
/// let spec = EntitySpec::<Session>::new("sessions", |id: &String| Session { id: id.clone() })
///     .idle(Duration::from_secs(30))
///     .max_active(10_000)
///     .entity_intensity(3, Duration::from_secs(5))
///     .intensity(50, Duration::from_secs(10));
/// let root = SupervisorSpec::new("app", Strategy::OneForOne).child(spec);
/// # let _ = root;
/// ```
pub struct EntitySpec<A: Entity> {
    name: String,
    make: MakeArgs<A>,
    restart: Restart,
    idle: Option<Duration>,
    max_active: usize,
    entity: Intensity,
    family: Option<Intensity>,
    backoff: Backoff,
    quarantine: Duration,
    capacity: Option<usize>,
    handling: Option<Duration>,
    rejuvenate_messages: Option<u64>,
    rejuvenate_age: Option<Duration>,
    dedup: Option<DedupWindow<A>>,
}

impl<A: Entity> fmt::Debug for EntitySpec<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntitySpec")
            .field("name", &self.name)
            .field("idle", &self.idle)
            .field("max_active", &self.max_active)
            .finish_non_exhaustive()
    }
}

impl<A: Entity> EntitySpec<A> {
    /// A family named `name` whose entity `key` starts with the arguments `make(key)`.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = EntitySpec::<Counter>::new("counters", |key: &String| key.len() as u64 * 100);
    /// let counters = system.spawn_entities(spec).unwrap();
    /// assert_eq!(counters.get("ab".to_string()).ask(1).await, Ok(201));
    /// # }
    /// ```
    pub fn new(name: impl Into<String>, make: impl Fn(&A::Key) -> A::Args + Send + Sync + 'static) -> Self {
        EntitySpec {
            name: name.into(),
            make: Arc::new(make),
            restart: Restart::Permanent,
            idle: None,
            max_active: 100_000,
            entity: Intensity {
                max_restarts: 3,
                period: Duration::from_secs(5),
            },
            family: None,
            backoff: Backoff::default(),
            quarantine: Duration::from_secs(1),
            capacity: None,
            handling: None,
            rejuvenate_messages: None,
            rejuvenate_age: None,
            dedup: None,
        }
    }

    /// Its name.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// let spec = EntitySpec::<Counter>::new("counters", |_key: &String| 0);
    /// assert_eq!(spec.name(), "counters");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An entity with no message for `idle` is passivated (cut to the policy's `max_idle`).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = EntitySpec::<Counter>::new("counters", |_key: &String| 0).idle(Duration::from_secs(30));
    /// let counters = system.spawn_entities(spec).unwrap();
    /// let a = counters.get("a".to_string());
    /// assert_eq!(a.ask(5).await, Ok(5));
    /// tokio::time::sleep(Duration::from_secs(31)).await; // paused time: no real wait
    /// assert_eq!(counters.stats().active, 0);
    /// assert_eq!(a.ask(1).await, Ok(1)); // activated again
    /// # }
    /// ```
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// At most `n` live activations: past it, the least recently active idle ones are passivated.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = EntitySpec::<Counter>::new("counters", |_key: &String| 0).max_active(2);
    /// let counters = system.spawn_entities(spec).unwrap();
    /// for key in ["a", "b", "c"] {
    ///     counters.get(key.to_string()).ask(1).await.unwrap();
    /// }
    /// let stats = counters.stats();
    /// assert!(stats.active <= 2);
    /// assert!(stats.passivated_cap >= 1);
    /// # }
    /// ```
    pub fn max_active(mut self, n: usize) -> Self {
        self.max_active = n.max(1);
        self
    }

    /// Per entity: at most `max_restarts` within `period`; past it the key gives up (its queued
    /// messages, which never ran, are answered `Crashed` with the last crash's report) and is
    /// quarantined.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counters = system
    ///     .spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 1).entity_intensity(0, Duration::from_secs(5)))
    ///     .unwrap();
    /// let a = counters.get("a".to_string());
    /// assert!(a.ask(u64::MAX).await.is_err()); // an overflow: one crash is one too many
    /// assert!(matches!(a.ask(1).await, Err(DeliveryError::RetryAfter(_))));
    /// assert_eq!(counters.get("b".to_string()).ask(1).await, Ok(2)); // other keys go on
    /// # }
    /// ```
    pub fn entity_intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.entity = Intensity { max_restarts, period };
        self
    }

    /// For the whole family: at most `max_keys` distinct keys crashing within `period`; past it
    /// the family crashes (every activation with it) and its supervisor decides.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counters = system
    ///     .spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 1).intensity(1, Duration::from_secs(60)))
    ///     .unwrap();
    /// let c = counters.get("c".to_string());
    /// assert_eq!(c.ask(4).await, Ok(5));
    /// assert!(counters.get("a".to_string()).ask(u64::MAX).await.is_err()); // one key crashing
    /// assert!(counters.get("b".to_string()).ask(u64::MAX).await.is_err()); // two: the family crashes
    /// assert_eq!(c.ask(0).await, Ok(1)); // `c` crashed with it, and starts afresh
    /// # }
    /// ```
    pub fn intensity(mut self, max_keys: u32, period: Duration) -> Self {
        self.family = Some(Intensity {
            max_restarts: max_keys,
            period,
        });
        self
    }

    /// Backoff between consecutive restarts of one entity.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(1) };
    /// let counters = system
    ///     .spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 1).backoff(backoff))
    ///     .unwrap();
    /// let a = counters.get("a".to_string());
    /// let _ = a.ask(u64::MAX).await; // crash 1: restarted at once
    /// let _ = a.ask(u64::MAX).await; // crash 2: restarted after 0.5 to 1 s
    /// let crashed = system.clock().now();
    /// assert_eq!(a.ask(0).await, Ok(1));
    /// assert!(system.clock().now() - crashed >= Duration::from_millis(500));
    /// # }
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long a key that gave up is refused (`RetryAfter`) before it may be activated again.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = EntitySpec::<Counter>::new("counters", |_key: &String| 1)
    ///     .entity_intensity(0, Duration::from_secs(5))
    ///     .quarantine(Duration::from_secs(10));
    /// let a = system.spawn_entities(spec).unwrap().get("a".to_string());
    /// assert!(a.ask(u64::MAX).await.is_err()); // an overflow: the key gives up
    /// assert!(matches!(a.ask(1).await, Err(DeliveryError::RetryAfter(_))));
    /// tokio::time::sleep(Duration::from_secs(11)).await; // paused time: no real wait
    /// assert_eq!(a.ask(1).await, Ok(2));
    /// # }
    /// ```
    pub fn quarantine(mut self, quarantine: Duration) -> Self {
        self.quarantine = quarantine;
        self
    }

    /// The family's restart type as a child of its supervisor.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = EntitySpec::<Counter>::new("counters", |_key: &String| 0).restart(Restart::Transient);
    /// let app = SupervisorSpec::new("app", Strategy::OneForOne).child(spec);
    /// system.root().spawn_supervisor(app).unwrap();
    /// let counters = system.entities::<Counter>("/app/counters").unwrap();
    /// assert_eq!(counters.get("a".to_string()).ask(1).await, Ok(1));
    /// # }
    /// ```
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Mailbox capacity of each entity (the system default otherwise).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = EntitySpec::<Counter>::new("counters", |_key: &String| 0).mailbox_capacity(1);
    /// let counters = system.spawn_entities(spec).unwrap();
    /// let a = counters.get("a".to_string());
    /// a.try_tell(1).unwrap();
    /// assert_eq!(a.try_tell(1).unwrap_err().error(), &DeliveryError::MailboxFull);
    /// # }
    /// ```
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Handling lease of each entity (see [`ActorSpec::handling_lease`](crate::ActorSpec::handling_lease)).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use std::time::Duration;
    /// struct Session;
    /// impl Actor for Session {
    /// #   type Args = (); type Msg = bool; type Reply = (); type Error = std::convert::Infallible;
    /// #   async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Session) }
    ///     async fn handle(&mut self, hang: bool, _: &mut Context<Self>) -> Result<(), Self::Error> {
    ///         if hang {
    ///             std::future::pending::<()>().await; // a bug
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// # impl Entity for Session { type Key = String; }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = EntitySpec::<Session>::new("sessions", |_key: &String| ()).handling_lease(Duration::from_millis(100));
    /// let s = system.spawn_entities(spec).unwrap().get("s".to_string());
    /// let Err(DeliveryError::Crashed(report)) = s.ask(true).await else { panic!() };
    /// assert!(matches!(report.reason, CrashReason::Hung { .. })); // crashed by the watchdog
    /// assert_eq!(s.ask(false).await, Ok(()));
    /// # }
    /// ```
    pub fn handling_lease(mut self, lease: Duration) -> Self {
        self.handling = Some(lease);
        self
    }

    /// Rejuvenation: an activation restarts after handling `n` messages.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = EntitySpec::<Counter>::new("counters", |_key: &String| 0).rejuvenate_after_messages(2);
    /// let counters = system.spawn_entities(spec).unwrap();
    /// let a = counters.get("a".to_string());
    /// assert_eq!(a.ask(1).await, Ok(1));
    /// assert_eq!(a.ask(1).await, Ok(2));
    /// assert_eq!(a.ask(1).await, Ok(1)); // a fresh instance
    /// # }
    /// ```
    pub fn rejuvenate_after_messages(mut self, n: u64) -> Self {
        self.rejuvenate_messages = Some(n.max(1));
        self
    }

    /// Rejuvenation: an activation restarts once it is `age` old.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = EntitySpec::<Counter>::new("counters", |_key: &String| 0)
    ///     .idle(Duration::from_secs(3600)) // not passivated meanwhile
    ///     .rejuvenate_after(Duration::from_secs(600));
    /// let counters = system.spawn_entities(spec).unwrap();
    /// let a = counters.get("a".to_string());
    /// assert_eq!(a.ask(1).await, Ok(1));
    /// tokio::time::sleep(Duration::from_secs(601)).await; // paused time: no real wait
    /// assert_eq!(a.ask(1).await, Ok(1)); // a fresh instance
    /// # }
    /// ```
    pub fn rejuvenate_after(mut self, age: Duration) -> Self {
        self.rejuvenate_age = Some(age);
        self
    }

    pub(crate) fn build(self, parent: &Arc<SupNode>) -> Result<Arc<Family<A>>, SpawnError> {
        let shared = parent.shared().clone();
        let policy = shared.policy();
        let family = self.family.unwrap_or(Intensity {
            max_restarts: policy.intensity().max_restarts.saturating_mul(10),
            period: policy.intensity().period,
        });
        let cfg = Settings {
            slot: SlotOptions {
                capacity: self.capacity.unwrap_or(shared.mailbox_capacity()),
                handling: policy.handling(self.handling),
                rejuvenate_messages: self.rejuvenate_messages,
                rejuvenate_age: self.rejuvenate_age,
                dedicated: false,
                #[cfg(feature = "metrics")]
                meters: shared
                    .slot_meters::<A>(&(crate::meters::pattern(parent.path(), Some(&self.name)) + "/*"), true),
            },
            idle: self.idle.unwrap_or(Duration::from_secs(60)).min(policy.max_idle()),
            max_active: self.max_active,
            entity: self.entity,
            family,
            backoff: self.backoff,
            quarantine: self.quarantine.min(policy.max_ttl()),
            dedup: self.dedup,
            max_key_len: policy.max_key_len(),
        };
        let weak: Weak<dyn Parent> = Arc::downgrade(&(parent.clone() as Arc<dyn Parent>));
        let make = self.make;
        let family = shared
            .registry()
            .insert(parent.path_arc(), Some(&self.name), |id, path, _| {
                Family::new((id, path), shared.clone(), weak, make, cfg)
            })?;
        parent.adopt(family.clone(), self.restart)?;
        Ok(family)
    }

    /// Adds the family to `parent` and starts it.
    pub(crate) fn spawn(self, parent: &Arc<SupNode>) -> Result<Entities<A>, SpawnError> {
        let family = self.build(parent)?;
        ChildHandle::launch(&*family);
        Ok(Entities::new(family))
    }
}

impl<A: Entity> EntitySpec<A>
where
    A::Reply: Clone,
{
    /// Each activation keeps a window of the last `window` idempotency keys and their replies
    /// (see [`ActorSpec::dedup`](crate::ActorSpec::dedup)). The window is volatile: it goes with a
    /// passivation, so a request that must run once across them keeps its key in the store
    /// (`Txn::once_for`).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = EntitySpec::<Counter>::new("counters", |_key: &String| 0).dedup(1000);
    /// let counters = system.spawn_entities(spec).unwrap();
    /// let a = counters.get("a".to_string());
    /// assert_eq!(a.ask(5).key("payment 17").await, Ok(5));
    /// assert_eq!(a.ask(5).key("payment 17").await, Ok(5)); // a repeat: answered from the window
    /// assert_eq!(a.ask(0).await, Ok(5)); // added once
    /// # }
    /// ```
    pub fn dedup(mut self, window: usize) -> Self {
        self.dedup = Some((window, A::Reply::clone));
        self
    }
}

impl<A: Entity> From<EntitySpec<A>> for ChildSpec {
    fn from(spec: EntitySpec<A>) -> Self {
        ChildSpec::from_maker(Box::new(move |parent| {
            spec.build(parent).map(|f| f as Arc<dyn ChildHandle>)
        }))
    }
}
