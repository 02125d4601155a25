//! Entities: actors addressed by key, activated on demand, passivated when idle (Orleans'
//! virtual actors, Akka's sharded entities with passivation).
//!
//! In crash-only terms: activation is `start` (the entity recovers its state from the store) and
//! passivation is a crash nobody notices (the instance is dropped, no stop hook runs). A family of
//! entities of one type is a child of a supervisor like any other; [`Entities::get`] hands out a
//! ref for a key at once, and the first message to it activates the entity.
//!
//! ```
//! use crashonly::prelude::*;
//! use crashonly::{Entities, Entity, EntitySpec};
//!
//! struct Counter { key: String, n: u64 }
//!
//! impl Actor for Counter {
//!     type Args = String; // the key: a real entity reads its state from a store here
//!     type Msg = u64;
//!     type Reply = (String, u64);
//!     type Error = std::convert::Infallible;
//!
//!     async fn start(key: &String, _ctx: &mut Context<Self>) -> Result<Self, Self::Error> {
//!         Ok(Counter { key: key.clone(), n: 0 })
//!     }
//!
//!     async fn handle(&mut self, add: u64, _ctx: &mut Context<Self>) -> Result<(String, u64), Self::Error> {
//!         self.n += add;
//!         Ok((self.key.clone(), self.n))
//!     }
//! }
//!
//! impl Entity for Counter {
//!     type Key = String;
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let system = System::new();
//! let counters: Entities<Counter> = system
//!     .spawn_entities(EntitySpec::new("counters", |key: &String| key.clone()))
//!     .unwrap();
//! let a = counters.get("a".to_string()); // nothing starts yet
//! assert_eq!(counters.stats().active, 0);
//! assert_eq!(a.ask(2).await, Ok(("a".to_string(), 2)));
//! assert_eq!(counters.stats().active, 1);
//! assert!(a.passivate()); // what the idle timer does: an unnoticed crash
//! assert_eq!(a.ask(1).await, Ok(("a".to_string(), 1))); // a new activation
//! # }
//! ```

mod family;
mod spec;

pub(crate) use family::Family;
pub use spec::EntitySpec;

impl<A: Entity> crate::registry::Inspect for Family<A> {
    fn snapshot(&self) -> crate::registry::Snapshot {
        crate::registry::Snapshot {
            id: self.id,
            path: self.path.to_string(),
            stats: None,
        }
    }

    #[cfg(feature = "observer")]
    fn observe(&self) -> crate::stats::Observed {
        let s = self.stats();
        crate::stats::Observed::Family {
            active: s.active,
            max_active: s.max_active,
            activations: s.activations,
            crashes: s.crashes,
            quarantined: s.quarantined,
            retry_after: s.retry_after,
        }
    }

    #[cfg(feature = "observer")]
    fn rejuvenate_now(&self) {
        crate::supervisor::ChildHandle::rejuvenate(self);
    }
}

use std::fmt;
use std::hash::Hash;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::error::{DeliveryError, SendError};
use crate::request::{Ask, Resolve, Target, Tell};
use crate::shared::Shared;
use crate::slot::Slot;
use crate::sync::Arc;

/// What can address an entity: compared, hashed, shown in paths and logs, and measured against
/// the policy's [`max_key_len`](crate::Policy::max_key_len).
pub trait EntityKey: Clone + Eq + Hash + fmt::Display + Send + Sync + 'static {
    /// Its size in bytes.
    fn key_len(&self) -> usize;
}

impl EntityKey for String {
    fn key_len(&self) -> usize {
        self.len()
    }
}

impl EntityKey for Arc<str> {
    fn key_len(&self) -> usize {
        self.len()
    }
}

impl EntityKey for Box<str> {
    fn key_len(&self) -> usize {
        self.len()
    }
}

macro_rules! int_keys {
    ($($t:ty),*) => {
        $(impl EntityKey for $t {
            fn key_len(&self) -> usize {
                std::mem::size_of::<$t>()
            }
        })*
    };
}

int_keys!(u32, u64, u128, i32, i64, i128, usize);

/// An actor addressed by key: its start arguments are made from its key by its family
/// ([`EntitySpec::new`]). `#[derive(Actor)]` with `#[actor(entity)]` (a `String` key) or
/// `#[actor(entity = u64)]` implements it.
pub trait Entity: Actor {
    /// The key that addresses one entity.
    type Key: EntityKey;
}

/// A handle on a family of entities: refs by key, counters, passivation by hand.
pub struct Entities<A: Entity> {
    family: Arc<Family<A>>,
}

impl<A: Entity> Clone for Entities<A> {
    fn clone(&self) -> Self {
        Entities {
            family: self.family.clone(),
        }
    }
}

impl<A: Entity> fmt::Debug for Entities<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entities").field("path", &self.family.path).finish()
    }
}

impl<A: Entity> Entities<A> {
    pub(crate) fn new(family: Arc<Family<A>>) -> Self {
        Entities { family }
    }

    /// The family behind a registry entry, if it is one of entities `A`.
    pub(crate) fn from_any(any: Arc<dyn std::any::Any + Send + Sync>) -> Option<Self> {
        any.downcast::<Family<A>>().ok().map(Entities::new)
    }

    /// The ref of the entity `key`, at once: nothing is started until a message is sent to it.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// let a = counters.get("a".to_string());
    /// assert_eq!(counters.stats().activations, 0);
    /// assert_eq!(a.ask(5).await, Ok(5)); // activates it
    /// assert_eq!(counters.get("a".to_string()).ask(1).await, Ok(6)); // one key, one entity
    /// # }
    /// ```
    pub fn get(&self, key: A::Key) -> EntityRef<A> {
        EntityRef {
            family: self.family.clone(),
            key,
        }
    }

    /// The family's path in the tree, such as `/app/carts`; an activation's is `/app/carts/KEY`.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let app = system.root().spawn_supervisor(SupervisorSpec::new("app", Strategy::OneForOne)).unwrap();
    /// let carts = app.spawn_entities(EntitySpec::<Counter>::new("carts", |_key: &String| 0)).unwrap();
    /// assert_eq!(carts.path(), "/app/carts");
    /// assert_eq!(carts.get("42".to_string()).activate().unwrap().path(), "/app/carts/42");
    /// # }
    /// ```
    pub fn path(&self) -> &str {
        &self.family.path
    }

    /// Counters of the family.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// counters.get("a".to_string()).ask(1).await.unwrap();
    /// counters.get("b".to_string()).ask(1).await.unwrap();
    /// let stats = counters.stats();
    /// assert_eq!((stats.active, stats.activations, stats.crashes), (2, 2, 0));
    /// assert!(counters.get("b".to_string()).passivate());
    /// assert_eq!(counters.stats().passivated_idle, 1);
    /// # }
    /// ```
    pub fn stats(&self) -> EntityStats {
        self.family.stats()
    }

    /// Up to `limit` keys that have a live activation now, in no particular order (for tools
    /// that pick a live entity, such as a fault injector or an observer).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// counters.get("a".to_string()).ask(1).await.unwrap();
    /// counters.get("b".to_string()).ask(1).await.unwrap();
    /// let mut keys = counters.active_keys(10);
    /// keys.sort();
    /// assert_eq!(keys, ["a", "b"]);
    /// assert_eq!(counters.active_keys(1).len(), 1);
    /// # }
    /// ```
    pub fn active_keys(&self, limit: usize) -> Vec<A::Key> {
        self.family.active_keys(limit)
    }

    /// Passivates now every entity idle for the family's `idle` (what its timer does); how many.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// counters.get("a".to_string()).ask(1).await.unwrap();
    /// assert_eq!(counters.passivate_idle(), 0); // active a moment ago: kept
    /// assert_eq!(counters.stats().active, 1);
    /// # }
    /// ```
    pub fn passivate_idle(&self) -> usize {
        self.family.sweep()
    }
}

/// The address of one entity: stable across its passivations, activations and crashes; two refs
/// of one key reach the same instance. Cheap: the family and the key.
pub struct EntityRef<A: Entity> {
    family: Arc<Family<A>>,
    key: A::Key,
}

impl<A: Entity> Clone for EntityRef<A> {
    fn clone(&self) -> Self {
        EntityRef {
            family: self.family.clone(),
            key: self.key.clone(),
        }
    }
}

impl<A: Entity> PartialEq for EntityRef<A> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.family, &other.family) && self.key == other.key
    }
}

impl<A: Entity> Eq for EntityRef<A> {}

impl<A: Entity> fmt::Debug for EntityRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityRef")
            .field("family", &self.family.path)
            .field("key", &format_args!("{}", self.key))
            .finish()
    }
}

impl<A: Entity> Resolve<A> for EntityRef<A> {
    fn resolve(&self) -> Result<Arc<Slot<A>>, DeliveryError> {
        self.family.resolve(&self.key)
    }

    fn shared(&self) -> &Arc<Shared> {
        self.family.shared()
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.family.path, self.key)
    }
}

impl<A: Entity> EntityRef<A> {
    /// Its key.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// let a = counters.get("a".to_string());
    /// assert_eq!(a.key(), "a");
    /// # }
    /// ```
    pub fn key(&self) -> &A::Key {
        &self.key
    }

    /// Sends `msg` without waiting for a reply (see [`ActorRef::tell`]); activates the entity.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// let a = counters.get("a".to_string());
    /// a.tell(2).await.unwrap();
    /// assert_eq!(a.ask(0).await, Ok(2));
    /// # }
    /// ```
    pub fn tell(&self, msg: A::Msg) -> Tell<'_, A> {
        Tell::new(Target::Entity(self), msg)
    }

    /// Sends `msg` at once or fails (see [`ActorRef::try_tell`]); activates the entity.
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
    /// a.try_tell(2).unwrap();
    /// assert_eq!(a.try_tell(3).unwrap_err().into_inner(), 3); // full: the message back
    /// assert_eq!(a.ask(0).await, Ok(2));
    /// # }
    /// ```
    pub fn try_tell(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        crate::request::try_tell(Target::Entity(self), msg)
    }

    /// Sends `msg` and waits for the reply (see [`ActorRef::ask`]); activates the entity. A
    /// key over the policy's bound gets [`DeliveryError::KeyTooLong`], a key that crashed past its
    /// family's per-entity intensity [`DeliveryError::RetryAfter`] until its quarantine ends.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// let a = counters.get("a".to_string());
    /// assert_eq!(a.ask(2).await, Ok(2));
    /// let long = counters.get("k".repeat(2000)); // over the policy's `max_key_len`
    /// assert!(matches!(long.ask(1).await, Err(DeliveryError::KeyTooLong { .. })));
    /// # }
    /// ```
    pub fn ask(&self, msg: A::Msg) -> Ask<'_, A> {
        Ask::new(Target::Entity(self), msg)
    }

    /// Activates the entity (if it is not live) and returns the ref of its activation, to
    /// monitor, link, kill or rejuvenate it like any actor. The activation's ref is `Dead` once
    /// it is passivated (its monitors are told [`DownReason::Ended`](crate::DownReason::Ended),
    /// not restarting); this ref is not.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// let a = counters.get("a".to_string());
    /// let activation: ActorRef<Counter> = a.activate().unwrap();
    /// assert_eq!(activation.ask(1).await, Ok(1)); // an actor ref like any other
    /// let mut downs = system.monitor(&activation);
    /// assert!(a.passivate());
    /// assert_eq!(downs.recv().await.unwrap().reason, DownReason::Ended);
    /// assert_eq!(a.ask(1).await, Ok(1)); // the entity's ref activates it again
    /// # }
    /// ```
    pub fn activate(&self) -> Result<ActorRef<A>, DeliveryError> {
        self.family.resolve(&self.key).map(ActorRef::from_slot)
    }

    /// The live activation, if there is one (nothing is activated).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// let a = counters.get("a".to_string());
    /// assert!(a.activation().is_none());
    /// a.ask(1).await.unwrap();
    /// assert_eq!(a.activation().unwrap().path(), "/counters/a");
    /// # }
    /// ```
    pub fn activation(&self) -> Option<ActorRef<A>> {
        self.family.current(&self.key).map(ActorRef::from_slot)
    }

    /// Passivates the entity now if it is live and idle (nothing queued or being handled), as its
    /// idle timer would: its instance is dropped, its next message activates it again.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// # let counters = system.spawn_entities(EntitySpec::<Counter>::new("counters", |_key: &String| 0)).unwrap();
    /// let a = counters.get("a".to_string());
    /// assert!(!a.passivate()); // not live
    /// assert_eq!(a.ask(5).await, Ok(5));
    /// assert!(a.passivate());
    /// assert_eq!(a.ask(1).await, Ok(1)); // a new activation: its state came from `make`, not memory
    /// # }
    /// ```
    pub fn passivate(&self) -> bool {
        self.family.passivate(&self.key)
    }
}

/// Counters of an entity family.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntityStats {
    /// Live activations (including ones finishing their passivation).
    pub active: usize,
    /// The cap on live activations.
    pub max_active: usize,
    /// Activations started, ever.
    pub activations: u64,
    /// Passivated after their idle time (or by hand).
    pub passivated_idle: u64,
    /// Passivated, least recently active first, because the family was over `max_active`.
    pub passivated_cap: u64,
    /// Crashes of entities.
    pub crashes: u64,
    /// Keys that crashed past the per-entity intensity and were quarantined.
    pub given_up: u64,
    /// Keys in quarantine now.
    pub quarantined: usize,
    /// Requests answered [`DeliveryError::RetryAfter`] because their key was in quarantine.
    pub retry_after: u64,
}
