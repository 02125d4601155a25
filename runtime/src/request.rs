//! Requests: the `tell` and `ask` builders, to an actor ([`ActorRef`]) or to an entity
//! ([`EntityRef`](crate::EntityRef)), and how an envelope reaches the slot that handles it.
//!
//! An actor's slot is fixed. An entity's is found (and activated) at each send; a slot found
//! closed (its entity is passivating, or gave up) is looked up again, so that a message sent
//! while its entity passivates re-activates it instead of being lost.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::clock::Instant;
use crate::envelope::{CopyFn, Envelope, Header, IdempotencyKey, Inherited, TraceContext};
use crate::error::{DeliveryError, SendError};
use crate::mailbox::PushError;
use crate::reply::{answer, OnReply, ReplyTo};
use crate::shared::Shared;
use crate::slot::Slot;
use crate::sync::Arc;

/// Where a request goes: an actor's slot, or an entity's current activation.
pub(crate) enum Target<'a, A: Actor> {
    Actor(&'a ActorRef<A>),
    Entity(&'a dyn Resolve<A>),
}

impl<A: Actor> Clone for Target<'_, A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A: Actor> Copy for Target<'_, A> {}

impl<A: Actor> fmt::Debug for Target<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Actor(a) => write!(f, "{}", a.path()),
            Target::Entity(e) => f.write_str(&e.describe()),
        }
    }
}

/// How an entity ref finds the slot of its entity.
pub(crate) trait Resolve<A: Actor>: Send + Sync {
    /// The slot that takes the entity's messages now, activating the entity if it is not live.
    fn resolve(&self) -> Result<Arc<Slot<A>>, DeliveryError>;
    /// The system the entity lives in.
    fn shared(&self) -> &Arc<Shared>;
    /// Its family's path and its key, for logs.
    fn describe(&self) -> String;
}

/// A slot found for one send: borrowed from an actor ref, or found for an entity.
pub(crate) enum SlotOf<'a, A: Actor> {
    Borrowed(&'a Arc<Slot<A>>),
    Owned(Arc<Slot<A>>),
}

impl<A: Actor> SlotOf<'_, A> {
    /// The slot, owned (to wait on it beyond the send's borrow).
    fn into_owned(self) -> Arc<Slot<A>> {
        match self {
            SlotOf::Borrowed(slot) => slot.clone(),
            SlotOf::Owned(slot) => slot,
        }
    }
}

impl<A: Actor> Deref for SlotOf<'_, A> {
    type Target = Slot<A>;
    fn deref(&self) -> &Slot<A> {
        match self {
            SlotOf::Borrowed(s) => s,
            SlotOf::Owned(s) => s,
        }
    }
}

/// How many times a send looks an entity up again after finding its slot closed (each lookup
/// after the first finds a successor, so more than two means the family is going down).
const MAX_LOOKUPS: usize = 8;

impl<'a, A: Actor> Target<'a, A> {
    fn shared(&self) -> &'a Arc<Shared> {
        match *self {
            Target::Actor(a) => a.slot().shared(),
            Target::Entity(e) => e.shared(),
        }
    }

    fn slot(&self) -> Result<SlotOf<'a, A>, DeliveryError> {
        match *self {
            Target::Actor(a) => Ok(SlotOf::Borrowed(a.slot())),
            Target::Entity(e) => e.resolve().map(SlotOf::Owned),
        }
    }

    /// The slot to try after one was found closed: none for an actor (it is dead), the entity's
    /// next activation for an entity.
    fn again(&self) -> Result<SlotOf<'a, A>, DeliveryError> {
        match *self {
            Target::Actor(_) => Err(DeliveryError::Dead),
            Target::Entity(e) => e.resolve().map(SlotOf::Owned),
        }
    }
}

type Env<A> = Envelope<<A as Actor>::Msg, ReplyTo<<A as Actor>::Reply>>;

/// What one attempt to push without waiting came to.
enum Step<'a, A: Actor> {
    Done,
    /// The mailbox is full: wait for room in this slot.
    Full(SlotOf<'a, A>, Env<A>),
    Failed(DeliveryError, Env<A>),
}

/// Pushes `env` to the target without waiting. `waits`: the sender then waits for the reply
/// (see `Mailbox::try_push_waiting`).
fn try_deliver<'a, A: Actor>(
    target: Target<'a, A>,
    copy: Option<CopyFn<A::Msg>>,
    env: Env<A>,
    waits: bool,
) -> Step<'a, A> {
    let mut slot = match target.slot() {
        Ok(s) => s,
        Err(e) => return Step::Failed(e, env),
    };
    let mut env = env;
    for _ in 0..MAX_LOOKUPS {
        if let Some(copy) = copy {
            slot.set_copy(copy);
        }
        if let Some(wait) = slot.retry_after(env.header.deadline) {
            return Step::Failed(DeliveryError::RetryAfter(wait), env);
        }
        let pushed = if waits {
            slot.mailbox.try_push_waiting(env)
        } else {
            slot.mailbox.try_push(env)
        };
        match pushed {
            Ok(()) => return Step::Done,
            Err(PushError::Full(e)) => return Step::Full(slot, e),
            Err(PushError::Closed(e)) => {
                env = e;
                slot = match target.again() {
                    Ok(s) => s,
                    Err(err) => return Step::Failed(err, env),
                };
            }
        }
    }
    Step::Failed(DeliveryError::Dead, env)
}

/// Pushes `env` to the target, waiting for room until its deadline.
async fn deliver<A: Actor>(
    target: Target<'_, A>,
    copy: Option<CopyFn<A::Msg>>,
    env: Env<A>,
    waits: bool,
) -> Result<(), (DeliveryError, Env<A>)> {
    deliver_from(target, copy, try_deliver(target, copy, env, waits), waits).await
}

/// [`deliver`] from where a first [`try_deliver`] left it.
async fn deliver_from<A: Actor>(
    target: Target<'_, A>,
    copy: Option<CopyFn<A::Msg>>,
    mut step: Step<'_, A>,
    waits: bool,
) -> Result<(), (DeliveryError, Env<A>)> {
    for _ in 0..MAX_LOOKUPS {
        let (slot, env) = match step {
            Step::Done => return Ok(()),
            Step::Failed(e, env) => return Err((e, env)),
            Step::Full(slot, env) => (slot, env),
        };
        let deadline = env.header.deadline;
        step = match slot.mailbox.push_until(env, deadline, slot.shared().clock()).await {
            Ok(()) => return Ok(()),
            Err(PushError::Full(env)) => return Err((DeliveryError::MailboxFull, env)),
            // Closed while waiting: an entity's next activation takes it.
            Err(PushError::Closed(env)) => try_deliver(target, copy, env, waits),
        };
    }
    match step {
        Step::Done => Ok(()),
        Step::Failed(e, env) => Err((e, env)),
        Step::Full(_, env) => Err((DeliveryError::MailboxFull, env)),
    }
}

/// `try_tell`: at once or not at all.
pub(crate) fn try_tell<A: Actor>(target: Target<'_, A>, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
    let env = Opts::new(target).envelope(msg, None);
    match try_deliver(target, None, env, false) {
        Step::Done => Ok(()),
        Step::Full(_, env) => Err(SendError::new(DeliveryError::MailboxFull, env.payload)),
        Step::Failed(e, env) => Err(SendError::new(e, env.payload)),
    }
}

/// Envelope settings shared by `tell` and `ask`.
struct Opts<'a, A: Actor> {
    target: Target<'a, A>,
    ttl: Option<Duration>,
    deadline: Option<Instant>,
    idempotent: bool,
    trace: Option<TraceContext>,
    key: Option<IdempotencyKey>,
    attempt: u32,
    retrying: bool,
    attempt_timeout: Option<Duration>,
    /// Set for idempotent messages (their type is `Clone`): how to copy one for a redelivery.
    copy: Option<CopyFn<A::Msg>>,
    /// The envelope being handled where this message is sent, if any: its deadline caps this one.
    inherited: Option<Inherited>,
}

impl<'a, A: Actor> Opts<'a, A> {
    fn new(target: Target<'a, A>) -> Self {
        Opts {
            target,
            ttl: None,
            deadline: None,
            idempotent: false,
            trace: None,
            key: None,
            attempt: 1,
            retrying: false,
            attempt_timeout: None,
            copy: None,
            inherited: None,
        }
    }

    /// The deadline: see [`Shared::deadline_for`](crate::shared::Shared::deadline_for).
    /// What this message inherits: the envelope given with `within`, or else the one being
    /// handled where it is sent (read when the envelope is made, that is when it is sent).
    fn inherited(&self) -> Option<Inherited> {
        self.inherited.or_else(crate::crash::current_envelope)
    }

    /// Inside a handler, never past the handled envelope's deadline.
    fn deadline(&self, now: Instant, inherited: Option<Inherited>) -> Instant {
        let own = self.target.shared().deadline_for(now, self.ttl, self.deadline);
        match inherited.and_then(|parent| parent.deadline) {
            Some(parent) => own.min(parent),
            None => own,
        }
    }

    fn envelope(&self, payload: A::Msg, reply: Option<ReplyTo<A::Reply>>) -> Envelope<A::Msg, ReplyTo<A::Reply>> {
        let shared = self.target.shared();
        let inherited = self.inherited();
        let deadline = self.deadline(shared.now_for_ttl(self.ttl), inherited);
        let id = shared.next_envelope_id();
        let trace = self
            .trace
            .or(inherited.map(|i| i.trace))
            .unwrap_or_else(|| TraceContext::root(shared.trace_id_of(id)));
        Envelope {
            header: Header {
                id,
                deadline,
                idempotent: self.idempotent,
                attempt: self.attempt,
                trace,
                key: self.key.clone(),
            },
            payload,
            reply,
        }
    }
}

macro_rules! builder_methods {
    () => {
        /// Sets the time to live from now.
        ///
        /// ```
        /// # use crashonly::prelude::*;
        /// # use crashonly::__private::doc::Counter;
        /// # use std::time::Duration;
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// # let system = System::new();
        /// # let counter = system.spawn(ActorSpec::<Counter>::new(0)).unwrap();
        /// counter.tell(1).ttl(Duration::from_secs(1)).await.unwrap(); // dropped unless handled within 1 s
        /// assert_eq!(counter.ask(1).ttl(Duration::from_secs(1)).await, Ok(2));
        /// # }
        /// ```
        pub fn ttl(mut self, ttl: Duration) -> Self {
            self.opts.ttl = Some(ttl);
            self
        }

        /// Sets an absolute deadline (the earlier of this and a TTL wins).
        ///
        /// ```
        /// # use crashonly::prelude::*;
        /// # use crashonly::__private::doc::Counter;
        /// # use std::time::Duration;
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// # let system = System::new();
        /// # let counter = system.spawn(ActorSpec::<Counter>::new(0)).unwrap();
        /// let deadline = system.clock().now() + Duration::from_secs(1);
        /// counter.tell(1).deadline(deadline).await.unwrap();
        /// assert_eq!(counter.ask(1).deadline(deadline).await, Ok(2));
        /// let past = system.clock().now();
        /// assert_eq!(counter.ask(1).deadline(past).await, Err(DeliveryError::Expired));
        /// # }
        /// ```
        pub fn deadline(mut self, deadline: Instant) -> Self {
            self.opts.deadline = Some(deadline);
            self
        }

        /// Marks the message idempotent: after a crash it may be handed to the next instance
        /// (at-least-once), so it must be `Clone`. Messages are at-most-once otherwise.
        ///
        /// ```
        /// # use crashonly::prelude::*;
        /// /// Crashes on the first delivery of every message; answers the attempt number after.
        /// struct Flaky;
        /// # impl Actor for Flaky {
        /// #     type Args = (); type Msg = &'static str; type Reply = u32; type Error = String;
        /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, String> { Ok(Flaky) }
        /// #     async fn handle(&mut self, _: &'static str, ctx: &mut Context<Self>) -> Result<u32, String> {
        /// #         match ctx.header().unwrap().attempt {
        /// #             1 => Err("first attempt".into()),
        /// #             n => Ok(n),
        /// #         }
        /// #     }
        /// # }
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// # let system = System::new();
        /// let flaky = system.spawn(ActorSpec::<Flaky>::new(())).unwrap();
        /// assert_eq!(flaky.ask("job").idempotent().await, Ok(2)); // handed to the next instance
        /// assert!(matches!(flaky.ask("job").await, Err(DeliveryError::Crashed(_)))); // at most once
        /// # }
        /// ```
        pub fn idempotent(mut self) -> Self
        where
            A::Msg: Clone,
        {
            self.opts.idempotent = true;
            self.opts.copy = Some(<A::Msg as Clone>::clone);
            self
        }

        /// Sets the idempotency flag explicitly.
        ///
        /// ```
        /// # use crashonly::prelude::*;
        /// # struct Probe;
        /// # impl Actor for Probe {
        /// #     type Args = (); type Msg = (); type Reply = Header; type Error = std::convert::Infallible;
        /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Probe) }
        /// #     async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<Header, Self::Error> {
        /// #         Ok(ctx.header().unwrap().clone()) // the header of the message being handled
        /// #     }
        /// # }
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// # let system = System::new();
        /// # let probe = system.spawn(ActorSpec::<Probe>::new(())).unwrap();
        /// let safe_to_repeat = true; // known only at run time
        /// let header = probe.ask(()).set_idempotent(safe_to_repeat).await.unwrap();
        /// assert!(header.idempotent);
        /// assert!(!probe.ask(()).set_idempotent(false).await.unwrap().idempotent);
        /// # }
        /// ```
        pub fn set_idempotent(mut self, idempotent: bool) -> Self
        where
            A::Msg: Clone,
        {
            self.opts.idempotent = idempotent;
            self.opts.copy = idempotent.then_some(<A::Msg as Clone>::clone as CopyFn<A::Msg>);
            self
        }

        /// Sets the trace context (by default a message starts a new trace).
        ///
        /// ```
        /// # use crashonly::prelude::*;
        /// # struct Probe;
        /// # impl Actor for Probe {
        /// #     type Args = (); type Msg = (); type Reply = Header; type Error = std::convert::Infallible;
        /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Probe) }
        /// #     async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<Header, Self::Error> {
        /// #         Ok(ctx.header().unwrap().clone()) // the header of the message being handled
        /// #     }
        /// # }
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// # let system = System::new();
        /// # let probe = system.spawn(ActorSpec::<Probe>::new(())).unwrap();
        /// let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; // an HTTP header
        /// let trace = crashonly::TraceContext::parse_traceparent(caller).unwrap();
        /// let header = probe.ask(()).trace(trace).await.unwrap();
        /// assert_eq!(header.trace, trace);
        /// probe.tell(()).trace(trace).await.unwrap();
        /// # }
        /// ```
        pub fn trace(mut self, trace: TraceContext) -> Self {
            self.opts.trace = Some(trace);
            self
        }

        /// Sets an idempotency key: an actor keeping a window of keys
        /// ([`ActorSpec::dedup`](crate::ActorSpec::dedup)) executes a keyed request once and answers
        /// repeats from its window. Marks the message idempotent. The key is kept whole (the bytes
        /// its `Hash` writes, see [`IdempotencyKey`](crate::IdempotencyKey)), never a digest, so
        /// two different keys are never taken for one.
        ///
        /// ```
        /// # use crashonly::prelude::*;
        /// # use crashonly::__private::doc::Counter;
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// # let system = System::new();
        /// let counter = system.spawn(ActorSpec::<Counter>::new(0).dedup(100)).unwrap();
        /// counter.tell(5).key(("order", 17)).await.unwrap();
        /// assert_eq!(counter.ask(5).key(("order", 17)).await, Ok(5)); // a repeat: answered from the window
        /// assert_eq!(counter.ask(0).await, Ok(5)); // added once
        /// # }
        /// ```
        pub fn key(mut self, key: impl std::hash::Hash) -> Self
        where
            A::Msg: Clone,
        {
            self.opts.key = Some(IdempotencyKey::of(&key));
            self.idempotent()
        }

        /// Inherits deadline and trace from an envelope being handled (a sub-request). Inside a
        /// handler this happens by itself; `within` is for code the handler does not poll (a
        /// spawned task holding the header).
        ///
        /// ```
        /// # use crashonly::prelude::*;
        /// # struct Probe;
        /// # impl Actor for Probe {
        /// #     type Args = (); type Msg = (); type Reply = Header; type Error = std::convert::Infallible;
        /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Probe) }
        /// #     async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<Header, Self::Error> {
        /// #         Ok(ctx.header().unwrap().clone()) // the header of the message being handled
        /// #     }
        /// # }
        /// # #[tokio::main(flavor = "current_thread")]
        /// # async fn main() {
        /// # let system = System::new();
        /// # let probe = system.spawn(ActorSpec::<Probe>::new(())).unwrap();
        /// # use std::time::Duration;
        /// let parent: Header = probe.ask(()).ttl(Duration::from_secs(2)).await.unwrap(); // as a handler sees it
        /// let sub = probe.ask(()).within(&parent).await.unwrap();
        /// assert_eq!(sub.deadline, parent.deadline); // never later than the parent's
        /// assert_eq!(sub.trace, parent.child_trace()); // its trace, the parent as its parent span
        /// probe.tell(()).within(&parent).await.unwrap();
        /// # }
        /// ```
        pub fn within(mut self, parent: &Header) -> Self {
            self.opts.inherited = Some(parent.inherited());
            self.opts.trace = None;
            self
        }
    };
}

/// A `tell` being built; `.await` it to send.
#[must_use = "a tell does nothing until it is awaited"]
pub struct Tell<'a, A: Actor> {
    opts: Opts<'a, A>,
    msg: A::Msg,
}

impl<'a, A: Actor> fmt::Debug for Tell<'a, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tell")
            .field("to", &self.opts.target)
            .finish_non_exhaustive()
    }
}

impl<'a, A: Actor> Tell<'a, A> {
    pub(crate) fn new(target: Target<'a, A>, msg: A::Msg) -> Self {
        Tell {
            opts: Opts::new(target),
            msg,
        }
    }

    builder_methods!();
}

/// The future of an awaited [`Tell`].
#[must_use = "futures do nothing unless polled"]
pub struct TellFuture<'a, M> {
    state: TellState<'a, M>,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

enum TellState<'a, M> {
    Done(Option<Result<(), SendError<M>>>),
    Waiting(BoxFut<'a, Result<(), SendError<M>>>),
}

impl<M> fmt::Debug for TellFuture<'_, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TellFuture").finish_non_exhaustive()
    }
}

// No field is structurally pinned: the waiting future is boxed.
impl<M> Unpin for TellFuture<'_, M> {}

impl<M> Future for TellFuture<'_, M> {
    type Output = Result<(), SendError<M>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            TellState::Done(out) => Poll::Ready(out.take().expect("TellFuture polled after completion")),
            TellState::Waiting(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl<'a, A: Actor> IntoFuture for Tell<'a, A> {
    type Output = Result<(), SendError<A::Msg>>;
    type IntoFuture = TellFuture<'a, A::Msg>;

    fn into_future(self) -> Self::IntoFuture {
        let env = self.opts.envelope(self.msg, None);
        let (target, copy) = (self.opts.target, self.opts.copy);
        // Fast path: room in the mailbox; no allocation, no timer.
        let state = match try_deliver(target, copy, env, false) {
            Step::Done => TellState::Done(Some(Ok(()))),
            Step::Failed(e, env) => TellState::Done(Some(Err(SendError::new(e, env.payload)))),
            Step::Full(slot, env) => TellState::Waiting(Box::pin(async move {
                let deadline = env.header.deadline;
                match slot.mailbox.push_until(env, deadline, slot.shared().clock()).await {
                    Ok(()) => Ok(()),
                    Err(PushError::Full(env)) => Err(SendError::new(DeliveryError::MailboxFull, env.payload)),
                    Err(PushError::Closed(env)) => deliver(target, copy, env, false)
                        .await
                        .map_err(|(e, env)| SendError::new(e, env.payload)),
                }
            })),
        };
        TellFuture { state }
    }
}

/// An `ask` being built; `.await` it for the reply.
#[must_use = "an ask does nothing until it is awaited"]
pub struct Ask<'a, A: Actor> {
    opts: Opts<'a, A>,
    msg: A::Msg,
}

impl<'a, A: Actor> fmt::Debug for Ask<'a, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ask")
            .field("to", &self.opts.target)
            .finish_non_exhaustive()
    }
}

impl<'a, A: Actor> Ask<'a, A> {
    pub(crate) fn new(target: Target<'a, A>, msg: A::Msg) -> Self {
        Ask {
            opts: Opts::new(target),
            msg,
        }
    }

    builder_methods!();

    /// Resends an idempotent request after `RetryAfter`, `MailboxFull` or `Crashed`, with
    /// randomized exponential backoff (the policy's), honouring `RetryAfter` hints, until it
    /// succeeds, its deadline passes or the policy's maximum retries are spent. Each attempt carries
    /// its attempt number. A request that is not idempotent is sent once (at-most-once).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counters = system
    ///     .spawn_entities(
    ///         EntitySpec::<Counter>::new("counters", |_key: &String| 1)
    ///             .entity_intensity(0, Duration::from_secs(60)) // one crash gives a key up...
    ///             .quarantine(Duration::from_millis(50)), // ...for 50 ms
    ///     )
    ///     .unwrap();
    /// let a = counters.get("a".to_string());
    /// assert!(a.ask(u64::MAX).await.is_err()); // an overflow: a crash
    /// assert!(matches!(a.ask(1).await, Err(DeliveryError::RetryAfter(_))));
    /// assert_eq!(a.ask(1).idempotent().retrying().await, Ok(2)); // sent again after the quarantine
    /// # }
    /// ```
    pub fn retrying(mut self) -> Self {
        self.opts.retrying = true;
        self
    }

    /// Bounds each attempt of a retrying ask (by default an attempt may use all the time left):
    /// an attempt that times out, or that gets `RetryAfter` because the actor will not recover
    /// within it, is retried while the overall deadline allows.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use std::time::Duration;
    /// /// Its first instance hangs on its first message (until the watchdog crashes it).
    /// struct Stuck;
    /// # impl Actor for Stuck {
    /// #     type Args = (); type Msg = (); type Reply = u64; type Error = std::convert::Infallible;
    /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Stuck) }
    /// #     async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<u64, Self::Error> {
    /// #         if ctx.incarnation() == 1 {
    /// #             std::future::pending::<()>().await;
    /// #         }
    /// #         Ok(ctx.incarnation())
    /// #     }
    /// # }
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let spec = ActorSpec::<Stuck>::new(()).handling_lease(Duration::from_millis(200));
    /// let stuck = system.spawn(spec).unwrap();
    /// let reply = stuck
    ///     .ask(())
    ///     .idempotent()
    ///     .retrying()
    ///     .attempt_timeout(Duration::from_millis(100)) // gives up on the hung attempt
    ///     .ttl(Duration::from_secs(2))
    ///     .await;
    /// assert_eq!(reply, Ok(2)); // answered by the next instance
    /// # }
    /// ```
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.opts.attempt_timeout = Some(timeout);
        self
    }
}

/// One attempt of an ask.
async fn ask_once<A: Actor>(opts: &Opts<'_, A>, msg: A::Msg) -> Result<A::Reply, DeliveryError> {
    let (tx, rx) = oneshot::channel();
    let env = opts.envelope(msg, Some(ReplyTo::Chan(tx)));
    let deadline = env.header.deadline;
    let clock = opts.target.shared().clock();
    deliver(opts.target, opts.copy, env, true).await.map_err(|(e, _)| e)?;
    match crate::rt::within_deadline(clock, deadline, rx).await {
        Some(Ok(outcome)) => outcome,
        // The envelope was dropped unanswered: its slot was torn down with it.
        Some(Err(_)) => Err(DeliveryError::Dead),
        None => Err(DeliveryError::Expired),
    }
}

/// An ask sent once, its outcome handed to `on_reply` (see [`OnReply`]): `None` once it is in the
/// mailbox or has failed (`on_reply` has the error), else a future that waits for room in the
/// mailbox until the deadline. The options of a retrying ask are ignored: it is sent once.
pub(crate) fn ask_with<A: Actor>(ask: Ask<'_, A>, on_reply: OnReply<A::Reply>) -> Option<BoxFut<'static, ()>> {
    let Ask { opts, msg } = ask;
    let env = opts.envelope(msg, Some(ReplyTo::Call(Box::new(on_reply))));
    match try_deliver(opts.target, opts.copy, env, true) {
        Step::Done => None,
        Step::Failed(e, env) => {
            answer(env.reply, Err(e));
            None
        }
        Step::Full(slot, env) => {
            let slot = slot.into_owned();
            Some(Box::pin(async move {
                let deadline = env.header.deadline;
                let clock = slot.shared().clock().clone();
                match slot.mailbox.push_until(env, deadline, &clock).await {
                    Ok(()) => {}
                    Err(PushError::Full(env)) => answer(env.reply, Err(DeliveryError::MailboxFull)),
                    // Torn down while the message waited (a crash): the next activation is
                    // not waited for here; the sender may send it again.
                    Err(PushError::Closed(env)) => answer(env.reply, Err(DeliveryError::RetryAfter(Duration::ZERO))),
                }
            }))
        }
    }
}

/// The future of an [`Ask`]: its reply, or why there is none.
///
/// A plain ask is pushed when the future is made (as a [`Tell`] is) and then waits for its
/// reply with no allocation of its own: it lets the other tasks of its worker run once (an actor
/// on the same thread answers then), looks, and only then arms a timer for its deadline. A
/// retrying ask, or one that must wait for room in the mailbox, runs boxed.
#[must_use = "futures do nothing unless polled"]
pub struct AskFuture<'a, A: Actor> {
    state: AskState<'a, A>,
}

enum AskState<'a, A: Actor> {
    /// In the mailbox: the reply, until `deadline`.
    #[cfg_attr(crashonly_loom, allow(dead_code))]
    Waiting {
        rx: oneshot::Receiver<Result<A::Reply, DeliveryError>>,
        deadline: Instant,
        yielded: bool,
        timer: Option<Pin<Box<crate::clock::Sleep>>>,
    },
    Done(Option<Result<A::Reply, DeliveryError>>),
    Boxed(BoxFut<'a, Result<A::Reply, DeliveryError>>),
}

impl<A: Actor> fmt::Debug for AskFuture<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AskFuture").finish_non_exhaustive()
    }
}

// No field is structurally pinned: the timer and the slow paths are boxed, the receiver is Unpin.
impl<A: Actor> Unpin for AskFuture<'_, A> {}

impl<A: Actor> Future for AskFuture<'_, A> {
    type Output = Result<A::Reply, DeliveryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            AskState::Waiting {
                rx,
                deadline,
                yielded,
                timer,
            } => {
                // A yield first, before looking: the message was pushed a moment ago, and the
                // actor (woken by the push) answers while the other tasks run, most often on
                // this same worker. Not looking yet leaves the receiver without a waker, so the
                // answer wakes no one (this task woke itself): a look, a waker's clone and a wake
                // fewer per ask.
                if !*yielded {
                    *yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if let Poll::Ready(r) = Pin::new(rx).poll(cx) {
                    // An envelope dropped unanswered: its slot was torn down with it.
                    return Poll::Ready(r.unwrap_or(Err(DeliveryError::Dead)));
                }
                // Then the timer, as in `rt::within_deadline`.
                #[cfg(not(crashonly_loom))]
                let timer = timer.get_or_insert_with(|| Box::pin(crate::clock::sleep_until(*deadline)));
                #[cfg(crashonly_loom)]
                let (timer, _) = (timer.as_mut().expect("models ask boxed"), deadline);
                timer.as_mut().poll(cx).map(|()| Err(DeliveryError::Expired))
            }
            AskState::Done(out) => Poll::Ready(out.take().expect("AskFuture polled after completion")),
            AskState::Boxed(fut) => fut.as_mut().poll(cx),
        }
    }
}

impl<'a, A: Actor> IntoFuture for Ask<'a, A> {
    type Output = Result<A::Reply, DeliveryError>;
    type IntoFuture = AskFuture<'a, A>;

    fn into_future(self) -> Self::IntoFuture {
        // In a model the clock is manual: every ask takes the boxed path, whose timer reads it.
        if cfg!(crashonly_loom) || (self.opts.retrying && self.opts.copy.is_some()) {
            return AskFuture {
                state: AskState::Boxed(self.boxed()),
            };
        }
        let Ask { opts, msg } = self;
        let (tx, rx) = oneshot::channel();
        let env = opts.envelope(msg, Some(ReplyTo::Chan(tx)));
        let deadline = env.header.deadline;
        let (target, copy) = (opts.target, opts.copy);
        match try_deliver(target, copy, env, true) {
            Step::Done => AskFuture::waiting(rx, deadline),
            Step::Failed(e, _) => AskFuture {
                state: AskState::Done(Some(Err(e))),
            },
            step @ Step::Full(..) => AskFuture {
                state: AskState::Boxed(Box::pin(async move {
                    deliver_from(target, copy, step, true).await.map_err(|(e, _)| e)?;
                    AskFuture::<A>::waiting(rx, deadline).await
                })),
            },
        }
    }
}

impl<A: Actor> AskFuture<'_, A> {
    /// The reply to a message now in the mailbox, until `deadline`.
    fn waiting(rx: oneshot::Receiver<Result<A::Reply, DeliveryError>>, deadline: Instant) -> Self {
        AskFuture {
            state: AskState::Waiting {
                rx,
                deadline,
                yielded: false,
                timer: None,
            },
        }
    }
}

impl<'a, A: Actor> Ask<'a, A> {
    /// The ask as one boxed future: retrying, or in a model.
    fn boxed(self) -> BoxFut<'a, Result<A::Reply, DeliveryError>> {
        let Ask { mut opts, msg } = self;
        Box::pin(async move {
            let copy = match (opts.retrying, opts.copy) {
                (true, Some(copy)) => copy,
                _ => return ask_once(&opts, msg).await,
            };
            let shared = opts.target.shared().clone();
            let policy = shared.policy();
            // One deadline and one parent for all attempts; each attempt may be bounded more tightly.
            opts.inherited = opts.inherited();
            let deadline = opts.deadline(shared.now(), opts.inherited);
            opts.ttl = None;
            loop {
                let now = shared.now();
                opts.deadline = Some(opts.attempt_timeout.map_or(deadline, |t| deadline.min(now + t)));
                let err = match ask_once(&opts, copy(&msg)).await {
                    Ok(reply) => return Ok(reply),
                    Err(
                        e @ (DeliveryError::RetryAfter(_) | DeliveryError::MailboxFull | DeliveryError::Crashed(_)),
                    ) => e,
                    Err(DeliveryError::Expired) if shared.now() < deadline => DeliveryError::Expired,
                    Err(e) => return Err(e),
                };
                if opts.attempt > policy.max_retries() {
                    return Err(err);
                }
                let backoff = policy.retry_backoff().delay(opts.attempt as usize + 1, shared.random());
                let wait = match &err {
                    DeliveryError::RetryAfter(hint) => backoff.max(*hint),
                    _ => backoff,
                };
                if shared.now() + wait >= deadline {
                    return Err(err);
                }
                shared.clock().sleep(wait).await;
                opts.attempt += 1;
            }
        })
    }
}
