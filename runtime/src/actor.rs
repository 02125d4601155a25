//! The `Actor` trait and the `Context` an instance works in.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::actor_ref::{ActorRef, Ask, Tell};
use crate::clock::Instant;
use crate::envelope::{Header, TraceContext};
use crate::error::DeliveryError;
use crate::lease::{Lease, LeaseError};
use crate::monitor::Down;
use crate::timer::Timer;

/// An actor: volatile state rebuilt by [`start`](Actor::start), changed by [`handle`](Actor::handle).
///
/// `start` is the recovery path and the only way an instance comes to life: the first start and
/// every restart run the same code, with the same [`Args`](Actor::Args), which the runtime keeps.
/// There is no stop hook: an instance is stopped by aborting it from outside, at any await point, so
/// everything that must survive belongs in a store, not in the actor.
///
/// A panic in `start` or `handle`, or an `Err` returned by them, is a crash: the supervisor decides
/// what happens next.
///
/// ```
/// use crashonly::prelude::*;
///
/// struct Counter { n: u64 }
///
/// impl Actor for Counter {
///     type Args = u64;          // where the count starts; kept for every restart
///     type Msg = u64;           // add this much
///     type Reply = u64;         // the new count
///     type Error = std::convert::Infallible;
///
///     async fn start(args: &u64, _ctx: &mut Context<Self>) -> Result<Self, Self::Error> {
///         Ok(Counter { n: *args })
///     }
///
///     async fn handle(&mut self, add: u64, _ctx: &mut Context<Self>) -> Result<u64, Self::Error> {
///         self.n += add;
///         Ok(self.n)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let system = System::new();
/// let counter = system.spawn(ActorSpec::<Counter>::named("counter", 40)).unwrap();
/// assert_eq!(counter.ask(2).await, Ok(42));
/// # }
/// ```
pub trait Actor: Sized + Send + 'static {
    /// Start arguments, kept by the runtime so that every restart can run `start` again.
    type Args: Send + Sync + 'static;
    /// The message type. `Clone` lets the runtime hand an idempotent in-flight message to the next
    /// instance after a crash (only idempotent messages are ever cloned).
    type Msg: Clone + Send + 'static;
    /// What `handle` answers to an `ask`.
    type Reply: Send + 'static;
    /// What `start` and `handle` may fail with; an `Err` is a crash.
    type Error: fmt::Display + Send + 'static;

    /// The recovery path: build the volatile state (typically by reading it from a store).
    fn start(args: &Self::Args, ctx: &mut Context<Self>) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// Handle one message.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<Self::Reply, Self::Error>> + Send;
}

/// What an actor instance knows about itself and the envelope it is handling.
pub struct Context<A: Actor> {
    myself: ActorRef<A>,
    header: Option<Header>,
    stop: bool,
}

impl<A: Actor> fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("path", &self.myself.path())
            .field("header", &self.header)
            .finish()
    }
}

impl<A: Actor> Context<A> {
    pub(crate) fn new(myself: ActorRef<A>) -> Self {
        Context {
            myself,
            header: None,
            stop: false,
        }
    }

    pub(crate) fn set_header(&mut self, header: Option<Header>) {
        self.header = header;
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop
    }

    /// A reference to this actor (stable across restarts).
    pub fn myself(&self) -> &ActorRef<A> {
        &self.myself
    }

    /// The header of the envelope being handled (`None` in `start`).
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Time left before the current envelope's deadline (`None` in `start`).
    pub fn remaining(&self) -> Option<Duration> {
        let now = self.myself.slot().shared().now();
        self.header.map(|h| h.remaining(now))
    }

    /// Ends this actor normally once the current message is handled.
    ///
    /// A `Permanent` child is started again; `Transient` and `Temporary` children are gone.
    /// This is not a shutdown hook: nothing runs on the way out.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// The trace context and deadline a sub-request inherits from the current envelope.
    fn inherited(&self) -> Option<(Instant, TraceContext)> {
        self.header.map(|h| {
            (
                h.deadline,
                TraceContext {
                    trace_id: h.trace.trace_id,
                    parent: Some(h.id),
                },
            )
        })
    }

    /// Asks another actor, inheriting the remaining time and the trace of the current envelope.
    pub fn ask<'a, B: Actor>(&self, to: &'a ActorRef<B>, msg: B::Msg) -> Ask<'a, B> {
        let ask = to.ask(msg);
        match self.inherited() {
            Some((deadline, trace)) => ask.deadline(deadline).trace(trace),
            None => ask,
        }
    }

    /// Tells another actor, inheriting the remaining time and the trace of the current envelope.
    pub fn tell<'a, B: Actor>(&self, to: &'a ActorRef<B>, msg: B::Msg) -> Tell<'a, B> {
        let tell = to.tell(msg);
        match self.inherited() {
            Some((deadline, trace)) => tell.deadline(deadline).trace(trace),
            None => tell,
        }
    }

    /// Sends `msg` to this actor after `delay`; its envelope lives for the configured default TTL
    /// from then. The timer belongs to this instance: a crash or restart cancels it.
    pub fn send_after(&self, delay: Duration, msg: A::Msg) -> Timer {
        crate::timer::send_after(&self.myself, delay, msg)
    }

    /// Sends `make()` to this actor every `period`; each envelope's TTL is one period, so a tick that
    /// could not be handled before the next one is dropped as expired. Cancelled by a crash or restart.
    pub fn send_interval<F>(&self, period: Duration, make: F) -> Timer
    where
        F: Fn() -> A::Msg + Send + Sync + 'static,
    {
        crate::timer::send_interval(&self.myself, period, make)
    }

    /// Takes a lease on `resource` for this actor (holder: its path), for `ttl` (cut to the
    /// policy's `max_lease`). The runtime renews it every third of `ttl` while this instance runs;
    /// when the instance crashes the renewals stop and the lease simply expires. A restarted
    /// instance takes it over with a newer token.
    pub fn lease(&self, resource: &str, ttl: Duration) -> Result<Lease, LeaseError> {
        let slot = self.myself.slot();
        let shared = slot.shared();
        let ttl = shared.policy().lease(ttl);
        let (lease, renewals) = crate::lease::hold(
            shared.leases(),
            shared.clock(),
            shared.executor(),
            resource,
            self.myself.path(),
            ttl,
        )?;
        slot.add_timer(renewals);
        Ok(lease)
    }

    /// Watches `target`: every time it crashes or ends, `to_msg(down)` is sent to this actor.
    ///
    /// Registering the same target again (say, from `start` after a restart) replaces the earlier
    /// registration instead of adding a second one.
    pub fn monitor<B, F>(&self, target: &ActorRef<B>, to_msg: F)
    where
        B: Actor,
        F: Fn(Down) -> A::Msg + Send + Sync + 'static,
    {
        let me = self.myself.clone();
        target.slot().monitors.add(Some(me.id()), move |down: &Down| {
            match me.try_tell(to_msg(down.clone())) {
                Ok(()) => true,
                Err(e) => !matches!(e.error(), DeliveryError::Dead),
            }
        });
    }
}
