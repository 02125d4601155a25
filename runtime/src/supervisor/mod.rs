//! Supervisors: recursive microreboots.
//!
//! Three parts: `spec` (how to start a child, restart types, strategies), `child` (the
//! contract between a supervisor and its children) and `engine` (decisions and the task that
//! carries them out). [`SupervisorRef`] is the handle users hold.
//!
//! A supervisor owns an ordered list of children (actor slots and supervisors). When a child exits
//! it decides, under its lock, what happens: restart the child, restart its group (one-for-all,
//! rest-for-one), forget it (temporary, or transient that ended), or give up because its restart
//! intensity is exceeded. Giving up aborts its whole subtree and hands the decision to its parent;
//! at the root, the system fails and `main` exits non-zero.
//!
//! Invariants:
//! - Restarts are external: the supervisor aborts tasks, then joins them, then launches new ones, so
//!   a new instance never starts while the old one still runs. A lone actor restarted one-for-one is
//!   restarted in place by its own task (after the old instance is dropped), which is the same
//!   guarantee without a round trip.
//! - Locks: a supervisor's `SupState` is a leaf lock (handles are copied out before any child is
//!   called), and a child never holds its own lock while calling `decide` (see `sync.rs`).

mod child;
mod engine;
mod spec;

pub(crate) use child::{ChildHandle, Decision, Exit, Parent, Scope};
pub(crate) use engine::SupNode;
pub use spec::{ActorSpec, ChildSpec, Restart, Strategy, SupervisorSpec};

use std::any::Any;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::entity::{Entities, Entity, EntitySpec};
use crate::error::{ChildError, SpawnError};
use crate::registry::ActorId;
use crate::sync::Arc;
use crate::system::{lookup_actor, lookup_entities, lookup_supervisor};

/// A handle on a supervisor: add children at run time, find them by name.
#[derive(Clone, Debug)]
pub struct SupervisorRef {
    node: Arc<SupNode>,
}

impl SupervisorRef {
    pub(crate) fn new(node: Arc<SupNode>) -> Self {
        SupervisorRef { node }
    }

    /// The supervisor behind a registry entry, if it is one.
    pub(crate) fn from_any(any: Arc<dyn Any + Send + Sync>) -> Option<Self> {
        any.downcast::<SupNode>().ok().map(SupervisorRef::new)
    }

    /// The supervisor's path in the tree.
    pub fn path(&self) -> &str {
        self.node.path()
    }

    /// The id in the registry.
    pub fn id(&self) -> ActorId {
        self.node.id()
    }

    /// Adds a dynamic actor child and starts it; returns at once (its `start` runs in its own task,
    /// and messages sent meanwhile wait in its mailbox).
    pub fn spawn<A: Actor>(&self, spec: ActorSpec<A>) -> Result<ActorRef<A>, SpawnError> {
        self.node.spawn(spec)
    }

    /// Adds a dynamic family of entities and starts it (no entity is activated yet).
    pub fn spawn_entities<A: Entity>(&self, spec: EntitySpec<A>) -> Result<Entities<A>, SpawnError> {
        spec.spawn(&self.node)
    }

    /// A named family of entities `A` among the children.
    pub fn entities<A: Entity>(&self, name: &str) -> Option<Entities<A>> {
        lookup_entities(self.node.shared(), &join_path(self.node.path(), name))
    }

    /// Adds a dynamic supervisor child and starts its subtree.
    pub fn spawn_supervisor(&self, spec: SupervisorSpec) -> Result<SupervisorRef, SpawnError> {
        self.node.spawn_supervisor(spec).map(SupervisorRef::new)
    }

    /// The paths of the current children, in start order.
    pub fn children(&self) -> Vec<String> {
        self.node.children()
    }

    /// A named actor child.
    pub fn child<A: Actor>(&self, name: &str) -> Option<ActorRef<A>> {
        lookup_actor(self.node.shared(), &join_path(self.node.path(), name))
    }

    /// Rejuvenates the whole subtree (see [`ActorRef::rejuvenate`]).
    pub fn rejuvenate(&self) {
        self.node.rejuvenate();
    }

    /// Terminates the child `name` (an actor, or a supervisor and its subtree), as OTP's
    /// `terminate_child`: its task is aborted from outside and waited for, and its spec is kept,
    /// stopped. Messages queued for it are answered `Dead`, and so are later sends, until
    /// [`restart_child`](SupervisorRef::restart_child) starts it again (refs stay valid). A
    /// terminated child is not restarted by its siblings' group restarts.
    pub async fn terminate_child(&self, name: &str) -> Result<(), ChildError> {
        self.node.terminate_child(name).await
    }

    /// Starts again a child terminated with [`terminate_child`](SupervisorRef::terminate_child)
    /// (OTP's `restart_child`); [`ChildError::Running`] if it runs.
    pub fn restart_child(&self, name: &str) -> Result<(), ChildError> {
        self.node.restart_child(name)
    }

    /// Terminates the child `name` and forgets it (OTP's `terminate_child` then `delete_child`):
    /// its refs answer `Dead` for good and its name is free again.
    ///
    /// ```
    /// use crashonly::prelude::*;
    /// use crashonly::ChildError;
    ///
    /// #[derive(Actor, Clone, Default)]
    /// struct Worker;
    ///
    /// #[messages]
    /// impl Worker {
    ///     #[message]
    ///     fn ping(&self) -> &'static str { "pong" }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let w = system.spawn(Worker::spec(Worker).name("w")).unwrap();
    /// system.root().terminate_child("w").await.unwrap();
    /// assert_eq!(w.ping().await, Err(DeliveryError::Dead));
    /// system.root().restart_child("w").unwrap();
    /// assert_eq!(w.ping().await, Ok("pong"));
    /// system.root().remove_child("w").await.unwrap();
    /// assert!(!w.is_alive());
    /// assert!(matches!(system.root().remove_child("w").await, Err(ChildError::NotFound(_))));
    /// # }
    /// ```
    pub async fn remove_child(&self, name: &str) -> Result<(), ChildError> {
        self.node.remove_child(name).await
    }

    /// A named supervisor child.
    pub fn supervisor(&self, name: &str) -> Option<SupervisorRef> {
        lookup_supervisor(self.node.shared(), &join_path(self.node.path(), name))
    }
}

pub(crate) fn join_path(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}
