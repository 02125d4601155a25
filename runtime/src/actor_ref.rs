//! `ActorRef`: the stable address of a supervised slot (its `tell`/`ask` builders are in `request`).

use std::fmt;
use std::future::Future;

use crate::actor::Actor;
use crate::crash::CrashReason;
use crate::error::{DeliveryError, SendError};
use crate::monitor::Monitors;
use crate::path::ActorPath;
use crate::registry::ActorId;
use crate::request::{Ask, Target, Tell};
use crate::slot::Slot;
use crate::stats::Stats;
use crate::sync::Arc;

/// The address of an actor, stable across its restarts.
///
/// The mailbox belongs to the supervised slot, not to an actor instance: messages sent while the
/// actor restarts wait and are handled by the new instance, within their deadline. Once the slot is
/// gone for good (a temporary child that crashed, a transient one that ended), every send gets
/// [`DeliveryError::Dead`].
pub struct ActorRef<A: Actor> {
    slot: Arc<Slot<A>>,
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        ActorRef {
            slot: self.slot.clone(),
        }
    }
}

impl<A: Actor> fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorRef")
            .field("id", &self.slot.id)
            .field("path", &self.slot.path())
            .finish()
    }
}

impl<A: Actor> PartialEq for ActorRef<A> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.slot, &other.slot)
    }
}

impl<A: Actor> Eq for ActorRef<A> {}

impl<A: Actor> ActorRef<A> {
    pub(crate) fn from_slot(slot: Arc<Slot<A>>) -> Self {
        ActorRef { slot }
    }

    pub(crate) fn slot(&self) -> &Arc<Slot<A>> {
        &self.slot
    }

    /// The actor behind a registry entry, if it is one of type `A`.
    pub(crate) fn from_any(any: Arc<dyn std::any::Any + Send + Sync>) -> Option<Self> {
        any.downcast::<Slot<A>>().ok().map(ActorRef::from_slot)
    }

    pub(crate) fn monitors(&self) -> &Monitors {
        &self.slot.monitors
    }

    /// The id in the system's registry.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(40)).unwrap();
    /// let found = system.get::<Counter>(counter.id()).unwrap();
    /// assert_eq!(found.ask(2).await, Ok(42));
    /// # }
    /// ```
    pub fn id(&self) -> ActorId {
        self.slot.id
    }

    /// The path in the supervision tree, such as `/app/cart`.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let app = system.root().spawn_supervisor(SupervisorSpec::new("app", Strategy::OneForOne)).unwrap();
    /// let counter = app.spawn(ActorSpec::<Counter>::named("counter", 0)).unwrap();
    /// assert_eq!(counter.path(), "/app/counter");
    /// # }
    /// ```
    pub fn path(&self) -> ActorPath<'_> {
        self.slot.path()
    }

    /// Whether the slot still accepts messages (false once it is dead for good).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::named("counter", 0)).unwrap();
    /// assert!(counter.is_alive());
    /// system.root().remove_child("counter").await.unwrap();
    /// assert!(!counter.is_alive());
    /// # }
    /// ```
    pub fn is_alive(&self) -> bool {
        !self.slot.mailbox.is_closed()
    }

    /// Restarts the actor preemptively through the crash path (software rejuvenation): the running
    /// instance ends after its current message and a new one starts; messages wait meanwhile. Not
    /// counted against the restart intensity.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(40)).unwrap();
    /// assert_eq!(counter.ask(2).await, Ok(42));
    /// counter.rejuvenate();
    /// assert_eq!(counter.ask(0).await, Ok(40)); // a new instance, started from its arguments
    /// assert_eq!((counter.stats().incarnation, counter.stats().crashes), (2, 0));
    /// # }
    /// ```
    pub fn rejuvenate(&self) {
        self.slot.request_rejuvenation();
    }

    /// Crash-reboots the actor from outside, as a recovery agent (or the watchdog) does: the
    /// running instance is aborted wherever it is, without its cooperation, and its supervisor
    /// decides as for any crash (restart, with backoff, counted against the intensity). The message
    /// in flight is redelivered if idempotent, answered `Crashed` otherwise; queued ones wait.
    ///
    /// The same as [`kill`](ActorRef::kill), for callers that need no answer.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(40)).unwrap();
    /// assert_eq!(counter.ask(2).await, Ok(42));
    /// counter.crash_reboot();
    /// assert_eq!(counter.ask(0).await, Ok(40)); // a new instance, started from its arguments
    /// assert_eq!(counter.stats().crashes, 1);
    /// # }
    /// ```
    pub fn crash_reboot(&self) {
        let _ = self.kill();
    }

    /// Crashes the actor from outside (reason [`CrashReason::Killed`]): its running instance is
    /// aborted wherever it is, and its supervisor applies its strategy as for any crash. The asker
    /// of the message in flight learns that it was killed (an idempotent message is redelivered
    /// instead). `Err(Dead)` for an actor that is gone or terminated.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::named("counter", 40)).unwrap();
    /// assert_eq!(counter.kill(), Ok(()));
    /// assert_eq!(counter.ask(2).await, Ok(42)); // its restart answers
    /// assert_eq!(counter.stats().last_crash.unwrap().reason, CrashReason::Killed);
    /// system.root().remove_child("counter").await.unwrap();
    /// assert_eq!(counter.kill(), Err(DeliveryError::Dead));
    /// # }
    /// ```
    pub fn kill(&self) -> Result<(), DeliveryError> {
        self.slot.crash_from_outside(CrashReason::Killed)
    }

    /// Resolves once an instance has completed `start` (at once if one has), like OTP's
    /// `start_child` returning: `spawn` itself returns at once. `Err(Crashed(report))` if `start`
    /// failed and the supervisor did not restart it (a temporary child, or intensity exceeded),
    /// `Err(Dead)` if the actor is gone, and `Err(Expired)` past the policy's default TTL.
    ///
    /// ```
    /// use crashonly::prelude::*;
    ///
    /// struct Slow;
    ///
    /// impl Actor for Slow {
    ///     type Args = ();
    ///     type Msg = ();
    ///     type Reply = ();
    ///     type Error = String;
    ///
    ///     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, String> {
    ///         Ok(Slow) // the recovery path: load state from the store here
    ///     }
    ///
    ///     async fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), String> {
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let a = system.spawn(ActorSpec::<Slow>::new(())).unwrap();
    /// assert_eq!(a.started().await, Ok(()));
    /// assert_eq!(a.stats().incarnation, 1);
    /// # }
    /// ```
    pub fn started(&self) -> impl Future<Output = Result<(), DeliveryError>> + Send + '_ {
        let shared = self.slot.shared();
        let deadline = shared.now() + shared.policy().default_ttl();
        let clock = shared.clock();
        async move {
            let waiting = std::future::poll_fn(|cx| self.slot.poll_started(cx));
            clock
                .timeout_at(deadline, waiting)
                .await
                .unwrap_or(Err(DeliveryError::Expired))
        }
    }

    /// Links this actor with `other`, as in OTP, ractor and kameo: when either crashes, the other
    /// is crashed from outside too (reason [`CrashReason::Linked`]) and each is handled by its own
    /// supervisor. A normal end or a rejuvenation does not propagate. A link fires once: it is
    /// gone after the crash it carried (link again in `start` to keep one across restarts).
    /// `Err(Dead)` if either actor is gone.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let a = system.spawn(ActorSpec::<Counter>::named("a", 1)).unwrap();
    /// let b = system.spawn(ActorSpec::<Counter>::named("b", 0)).unwrap();
    /// a.link(&b).unwrap();
    /// let mut b_downs = system.monitor(&b);
    /// assert!(a.ask(u64::MAX).await.is_err()); // an overflow: `a` crashes, and `b` with it
    /// let DownReason::Crashed(report) = b_downs.recv().await.unwrap().reason else { panic!() };
    /// assert!(matches!(&report.reason, CrashReason::Linked { peer, .. } if peer == "/a"));
    /// # }
    /// ```
    pub fn link<B: Actor>(&self, other: &ActorRef<B>) -> Result<(), DeliveryError> {
        crate::link::link(self, other)
    }

    /// Removes a link made with [`link`](ActorRef::link) (a no-op if there is none).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let a = system.spawn(ActorSpec::<Counter>::named("a", 1)).unwrap();
    /// let b = system.spawn(ActorSpec::<Counter>::named("b", 0)).unwrap();
    /// a.link(&b).unwrap();
    /// a.unlink(&b);
    /// assert_eq!(b.ask(5).await, Ok(5));
    /// assert!(a.ask(u64::MAX).await.is_err()); // `a` crashes alone
    /// assert_eq!(a.ask(0).await, Ok(1)); // restarted
    /// assert_eq!(b.ask(0).await, Ok(5)); // still the same instance
    /// # }
    /// ```
    pub fn unlink<B: Actor>(&self, other: &ActorRef<B>) {
        crate::link::unlink(self, other)
    }

    /// Progress counters of this slot.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(1)).unwrap();
    /// counter.ask(1).await.unwrap();
    /// assert!(counter.ask(u64::MAX).await.is_err()); // an overflow: a crash
    /// counter.ask(0).await.unwrap();
    /// let stats = counter.stats();
    /// assert_eq!((stats.handled, stats.crashes, stats.restarts, stats.incarnation), (3, 1, 1, 2));
    /// assert_eq!(stats.state, crashonly::SlotState::Running);
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.slot.stats()
    }

    /// Sends `msg` without waiting for a reply; `.await` waits for room in the mailbox until the
    /// deadline (the default TTL unless set with [`Tell::ttl`] or [`Tell::deadline`]).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(40)).unwrap();
    /// counter.tell(2).await.unwrap(); // queued: nobody waits for its reply
    /// assert_eq!(counter.ask(0).await, Ok(42)); // handled after the tell
    /// # }
    /// ```
    pub fn tell(&self, msg: A::Msg) -> Tell<'_, A> {
        Tell::new(Target::Actor(self), msg)
    }

    /// Sends `msg` at once or fails: [`DeliveryError::MailboxFull`] or [`DeliveryError::Dead`], with the message back.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(0).mailbox_capacity(1)).unwrap();
    /// counter.try_tell(1).unwrap();
    /// let full = counter.try_tell(2).unwrap_err();
    /// assert_eq!(full.error(), &DeliveryError::MailboxFull);
    /// assert_eq!(full.into_inner(), 2); // the message back, to send later
    /// assert_eq!(counter.ask(0).await, Ok(1));
    /// # }
    /// ```
    pub fn try_tell(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        crate::request::try_tell(Target::Actor(self), msg)
    }

    /// Sends `msg` and waits for the reply, never past the deadline (the default TTL unless set).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use std::time::Duration;
    /// # struct Echo;
    /// # impl Actor for Echo {
    /// #     type Args = (); type Msg = String; type Reply = String; type Error = std::convert::Infallible;
    /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Echo) }
    /// #     async fn handle(&mut self, m: String, _: &mut Context<Self>) -> Result<String, Self::Error> { Ok(m) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let echo = system.spawn(ActorSpec::<Echo>::new(())).unwrap();
    /// let reply = echo.ask("hi".to_string()).ttl(Duration::from_millis(700)).idempotent().await;
    /// assert_eq!(reply.as_deref(), Ok("hi"));
    /// # }
    /// ```
    pub fn ask(&self, msg: A::Msg) -> Ask<'_, A> {
        Ask::new(Target::Actor(self), msg)
    }
}
