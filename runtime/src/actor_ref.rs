//! `ActorRef`: the stable address of a supervised slot, and the `tell`/`ask` builders.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::actor::Actor;
use crate::clock::Instant;
use crate::crash::CrashReason;
use crate::envelope::{CopyFn, Envelope, Header, Inherited, TraceContext};
use crate::error::{DeliveryError, SendError};
use crate::mailbox::PushError;
use crate::monitor::Monitors;
use crate::registry::ActorId;
use crate::reply::ReplyTo;
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
            .field("path", &self.slot.path)
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
    pub fn id(&self) -> ActorId {
        self.slot.id
    }

    /// The path in the supervision tree, such as `/app/cart`.
    pub fn path(&self) -> &str {
        &self.slot.path
    }

    /// Whether the slot still accepts messages (false once it is dead for good).
    pub fn is_alive(&self) -> bool {
        !self.slot.mailbox.is_closed()
    }

    /// Restarts the actor preemptively through the crash path (software rejuvenation): the running
    /// instance ends after its current message and a new one starts; messages wait meanwhile. Not
    /// counted against the restart intensity.
    pub fn rejuvenate(&self) {
        self.slot.request_rejuvenation();
    }

    /// Crash-reboots the actor from outside, as a recovery agent (or the watchdog) does: the
    /// running instance is aborted wherever it is, without its cooperation, and its supervisor
    /// decides as for any crash (restart, with backoff, counted against the intensity). The message
    /// in flight is redelivered if idempotent, answered `Crashed` otherwise; queued ones wait.
    ///
    /// The same as [`kill`](ActorRef::kill), for callers that need no answer.
    pub fn crash_reboot(&self) {
        let _ = self.kill();
    }

    /// Crashes the actor from outside (reason [`CrashReason::Killed`]): its running instance is
    /// aborted wherever it is, and its supervisor applies its strategy as for any crash. The asker
    /// of the message in flight learns that it was killed (an idempotent message is redelivered
    /// instead). `Err(Dead)` for an actor that is gone or terminated.
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
    pub fn link<B: Actor>(&self, other: &ActorRef<B>) -> Result<(), DeliveryError> {
        crate::link::link(self, other)
    }

    /// Removes a link made with [`link`](ActorRef::link) (a no-op if there is none).
    pub fn unlink<B: Actor>(&self, other: &ActorRef<B>) {
        crate::link::unlink(self, other)
    }

    /// Progress counters of this slot.
    pub fn stats(&self) -> Stats {
        self.slot.stats()
    }

    /// Sends `msg` without waiting for a reply; `.await` waits for room in the mailbox until the
    /// deadline (the default TTL unless set with [`Tell::ttl`] or [`Tell::deadline`]).
    pub fn tell(&self, msg: A::Msg) -> Tell<'_, A> {
        Tell {
            opts: Opts::new(self),
            msg,
        }
    }

    /// Sends `msg` at once or fails: [`DeliveryError::MailboxFull`] or [`DeliveryError::Dead`], with the message back.
    pub fn try_tell(&self, msg: A::Msg) -> Result<(), SendError<A::Msg>> {
        let env = Opts::new(self).envelope(msg, None);
        if let Some(wait) = self.slot.retry_after(env.header.deadline) {
            return Err(SendError::new(DeliveryError::RetryAfter(wait), env.payload));
        }
        self.slot.mailbox.try_push(env).map_err(push_error)
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
        Ask {
            opts: Opts::new(self),
            msg,
        }
    }
}

fn push_error<M, P>(e: PushError<Envelope<M, P>>) -> SendError<M> {
    match e {
        PushError::Full(env) => SendError::new(DeliveryError::MailboxFull, env.payload),
        PushError::Closed(env) => SendError::new(DeliveryError::Dead, env.payload),
    }
}

/// Envelope settings shared by `tell` and `ask`.
struct Opts<'a, A: Actor> {
    target: &'a ActorRef<A>,
    ttl: Option<Duration>,
    deadline: Option<Instant>,
    idempotent: bool,
    trace: Option<TraceContext>,
    key: Option<std::num::NonZeroU64>,
    attempt: u32,
    retrying: bool,
    attempt_timeout: Option<Duration>,
    /// Set for idempotent messages (their type is `Clone`): how to copy one for a redelivery.
    copy: Option<CopyFn<A::Msg>>,
    /// The envelope being handled where this message is sent, if any: its deadline caps this one.
    inherited: Option<Inherited>,
}

impl<'a, A: Actor> Opts<'a, A> {
    fn new(target: &'a ActorRef<A>) -> Self {
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
        let own = self.target.slot.shared().deadline_for(now, self.ttl, self.deadline);
        match inherited {
            Some(parent) => own.min(parent.deadline),
            None => own,
        }
    }

    fn envelope(&self, payload: A::Msg, reply: Option<ReplyTo<A::Reply>>) -> Envelope<A::Msg, ReplyTo<A::Reply>> {
        let slot = &self.target.slot;
        if let Some(copy) = self.copy {
            slot.set_copy(copy);
        }
        let shared = slot.shared();
        let inherited = self.inherited();
        let deadline = self.deadline(shared.now(), inherited);
        let id = shared.next_envelope_id();
        let trace = self.trace.or(inherited.map(|i| i.trace)).unwrap_or(TraceContext {
            trace_id: id.get(),
            parent: None,
        });
        Envelope {
            header: Header {
                id,
                deadline,
                idempotent: self.idempotent,
                attempt: self.attempt,
                trace,
                key: self.key,
            },
            payload,
            reply,
        }
    }
}

macro_rules! builder_methods {
    () => {
        /// Sets the time to live from now.
        pub fn ttl(mut self, ttl: Duration) -> Self {
            self.opts.ttl = Some(ttl);
            self
        }

        /// Sets an absolute deadline (the earlier of this and a TTL wins).
        pub fn deadline(mut self, deadline: Instant) -> Self {
            self.opts.deadline = Some(deadline);
            self
        }

        /// Marks the message idempotent: after a crash it may be handed to the next instance
        /// (at-least-once), so it must be `Clone`. Messages are at-most-once otherwise.
        pub fn idempotent(mut self) -> Self
        where
            A::Msg: Clone,
        {
            self.opts.idempotent = true;
            self.opts.copy = Some(<A::Msg as Clone>::clone);
            self
        }

        /// Sets the idempotency flag explicitly.
        pub fn set_idempotent(mut self, idempotent: bool) -> Self
        where
            A::Msg: Clone,
        {
            self.opts.idempotent = idempotent;
            self.opts.copy = idempotent.then_some(<A::Msg as Clone>::clone as CopyFn<A::Msg>);
            self
        }

        /// Sets the trace context (by default a message starts a new trace).
        pub fn trace(mut self, trace: TraceContext) -> Self {
            self.opts.trace = Some(trace);
            self
        }

        /// Sets an idempotency key: an actor keeping a window of keys
        /// ([`ActorSpec::dedup`](crate::ActorSpec::dedup)) executes a keyed request once and answers
        /// repeats from its window. Marks the message idempotent.
        pub fn key(mut self, key: impl std::hash::Hash) -> Self
        where
            A::Msg: Clone,
        {
            use std::hash::Hasher;
            // Deterministic: the same key hashes the same in every process of one build.
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new();
            key.hash(&mut h);
            self.opts.key = std::num::NonZeroU64::new(h.finish()).or(std::num::NonZeroU64::new(1));
            self.idempotent()
        }

        /// Inherits deadline and trace from an envelope being handled (a sub-request). Inside a
        /// handler this happens by itself; `within` is for code the handler does not poll (a
        /// spawned task holding the header).
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
            .field("to", &self.opts.target.path())
            .finish_non_exhaustive()
    }
}

impl<'a, A: Actor> Tell<'a, A> {
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
        let slot = &self.opts.target.slot;
        if let Some(wait) = slot.retry_after(env.header.deadline) {
            let err = SendError::new(DeliveryError::RetryAfter(wait), env.payload);
            return TellFuture {
                state: TellState::Done(Some(Err(err))),
            };
        }
        // Fast path: room in the mailbox; no allocation, no timer.
        let state = match slot.mailbox.try_push(env) {
            Ok(()) => TellState::Done(Some(Ok(()))),
            Err(PushError::Closed(env)) => TellState::Done(Some(Err(SendError::new(DeliveryError::Dead, env.payload)))),
            Err(PushError::Full(env)) => TellState::Waiting(Box::pin(async move {
                let deadline = env.header.deadline;
                slot.mailbox
                    .push_until(env, deadline, slot.shared().clock())
                    .await
                    .map_err(push_error)
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
            .field("to", &self.opts.target.path())
            .finish_non_exhaustive()
    }
}

impl<'a, A: Actor> Ask<'a, A> {
    builder_methods!();

    /// Resends an idempotent request after `RetryAfter`, `MailboxFull` or `Crashed`, with
    /// randomized exponential backoff (the policy's), honouring `RetryAfter` hints, until it
    /// succeeds, its deadline passes or the policy's maximum retries are spent. Each attempt carries
    /// its attempt number. A request that is not idempotent is sent once (at-most-once).
    pub fn retrying(mut self) -> Self {
        self.opts.retrying = true;
        self
    }

    /// Bounds each attempt of a retrying ask (by default an attempt may use all the time left):
    /// an attempt that times out, or that gets `RetryAfter` because the actor will not recover
    /// within it, is retried while the overall deadline allows.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.opts.attempt_timeout = Some(timeout);
        self
    }
}

/// One attempt of an ask.
async fn ask_once<A: Actor>(opts: &Opts<'_, A>, msg: A::Msg) -> Result<A::Reply, DeliveryError> {
    let (tx, rx) = oneshot::channel();
    let env = opts.envelope(msg, Some(tx));
    let slot = &opts.target.slot;
    let deadline = env.header.deadline;
    if let Some(wait) = slot.retry_after(deadline) {
        return Err(DeliveryError::RetryAfter(wait));
    }
    let clock = slot.shared().clock();
    match slot.mailbox.try_push_waiting(env) {
        Ok(()) => {}
        Err(PushError::Closed(_)) => return Err(DeliveryError::Dead),
        Err(PushError::Full(env)) => slot
            .mailbox
            .push_until(env, deadline, clock)
            .await
            .map_err(|e| push_error(e).error().clone())?,
    }
    match clock.timeout_at(deadline, rx).await {
        Some(Ok(outcome)) => outcome,
        // The envelope was dropped unanswered: its slot was torn down with it.
        Some(Err(_)) => Err(DeliveryError::Dead),
        None => Err(DeliveryError::Expired),
    }
}

impl<'a, A: Actor> IntoFuture for Ask<'a, A> {
    type Output = Result<A::Reply, DeliveryError>;
    type IntoFuture = BoxFut<'a, Result<A::Reply, DeliveryError>>;

    fn into_future(self) -> Self::IntoFuture {
        let Ask { mut opts, msg } = self;
        Box::pin(async move {
            let copy = match (opts.retrying, opts.copy) {
                (true, Some(copy)) => copy,
                _ => return ask_once(&opts, msg).await,
            };
            let shared = opts.target.slot.shared().clone();
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
