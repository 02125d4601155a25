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
    pub fn named(name: impl Into<String>, args: A::Args) -> Self {
        ActorSpec {
            name: Some(name.into()),
            ..Self::new(args)
        }
    }

    /// Sets the name (the child can then be looked up at `supervisor_path/name`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the mailbox capacity (the system default otherwise).
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Sets the handling lease: the watchdog crash-restarts the actor when one message runs longer
    /// (never longer than the policy's `max_handling`).
    pub fn handling_lease(mut self, lease: Duration) -> Self {
        self.handling = Some(lease);
        self
    }

    /// Rejuvenation: restart the actor preemptively after it has handled `n` messages.
    pub fn rejuvenate_after_messages(mut self, n: u64) -> Self {
        self.rejuvenate_messages = Some(n.max(1));
        self
    }

    /// Rejuvenation: restart the actor preemptively once an instance is `age` old.
    pub fn rejuvenate_after(mut self, age: Duration) -> Self {
        self.rejuvenate_age = Some(age);
        self
    }

    /// Runs the actor on a dedicated OS thread, for actors that must block: blocking there starves
    /// no other actor. Supervision, mailbox and watchdog are the same; an instance stuck for good is
    /// abandoned with its thread and replaced on a new one.
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
            .insert(parent.path(), self.name.as_deref(), |id, path| {
                Slot::<A>::new((id, path), shared.clone(), args, weak, opts, dedup)
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
    pub fn name(&self) -> &str {
        &self.name
    }

    /// At most `max_restarts` within `period`.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Some(Intensity { max_restarts, period });
        self
    }

    /// Backoff between consecutive restarts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Its restart type as a child of its own supervisor.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Declares a child; children start in declaration order.
    pub fn child(mut self, child: impl Into<ChildSpec>) -> Self {
        self.children.push(child.into());
        self
    }
}
