//! The `Context` an actor instance works in: itself, the envelope it handles (held until its
//! outcome is known, see `inflight`), and what it may start: sub-requests, timers, leases,
//! monitors and links, and deferred replies.

use std::fmt;
use std::time::Duration;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::crash::{CrashReason, CrashReport};
use crate::envelope::{Envelope, Header};
use crate::error::DeliveryError;
use crate::inflight::InFlight;
use crate::lease::{Lease, LeaseError};
use crate::monitor::{Down, Watcher};
use crate::reply::{ReplyPort, ReplyTo};
use crate::request::{Ask, Tell};
use crate::sync::Arc;
use crate::timer::Timer;

/// What an actor instance knows about itself and the envelope it is handling.
pub struct Context<A: Actor> {
    myself: ActorRef<A>,
    inflight: Option<InFlight<A>>,
    incarnation: u64,
    stop: bool,
}

impl<A: Actor> fmt::Debug for Context<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("path", &self.myself.path())
            .field("header", &self.header())
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

impl<A: Actor> Context<A> {
    pub(crate) fn new(myself: ActorRef<A>, incarnation: u64) -> Self {
        Context {
            myself,
            inflight: None,
            incarnation,
            stop: false,
        }
    }

    /// Handling starts: the envelope is held here until its outcome is known.
    pub(crate) fn begin(&mut self, env: Envelope<A::Msg, ReplyTo<A::Reply>>) -> A::Msg {
        let copy = if env.header.idempotent {
            self.myself.slot().copy_fn()
        } else {
            None
        };
        let (msg, inflight) = InFlight::take(env, copy);
        self.inflight = Some(inflight);
        msg
    }

    /// A header with nobody to answer (the test driver's hand-made envelopes), or none.
    pub(crate) fn set_header(&mut self, header: Option<Header>) {
        self.inflight = header.map(|header| InFlight {
            header,
            keep: None,
            reply: None,
            deferred: false,
        });
    }

    /// The handler answered (ignored when it deferred its reply).
    pub(crate) fn reply(&mut self, reply: A::Reply) {
        if let Some(inflight) = self.inflight.take() {
            inflight.reply(reply);
        }
    }

    /// Whether the handler deferred its reply.
    pub(crate) fn deferred(&self) -> bool {
        self.inflight.as_ref().is_some_and(|f| f.deferred)
    }

    /// The handler crashed: the envelope is redelivered or its asker told.
    pub(crate) fn crashed(&mut self, report: Arc<CrashReport>) {
        if let Some(inflight) = self.inflight.take() {
            inflight.settle(self.myself.slot(), report);
        }
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
        self.inflight.as_ref().map(|f| &f.header)
    }

    /// Time left before the current envelope's deadline (`None` in `start`).
    pub fn remaining(&self) -> Option<Duration> {
        let now = self.myself.slot().shared().now();
        self.header().map(|h| h.remaining(now))
    }

    /// Which instance this is: 1 for the first start, one more for every restart (crash,
    /// rejuvenation or restart by hand) of this slot.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Takes the reply slot of the message being handled, to answer it later from elsewhere (a
    /// spawned task, another actor) while this actor goes on with its mailbox. What `handle`
    /// returns is then ignored. See [`ReplyPort`]; for a `tell`, or in `start`, the port has
    /// nobody to answer. A crash after the reply was deferred does not redeliver the message:
    /// it has been handed on.
    pub fn defer(&mut self) -> ReplyPort<A::Reply> {
        self.defer_map(|reply| reply)
    }

    /// [`defer`](Context::defer) for a part of the reply: the port takes a `T` and `map` makes
    /// the actor's reply of it (what `#[messages]` uses for a `ReplyPort<T>` argument).
    pub fn defer_map<T: Send + 'static>(&mut self, map: fn(T) -> A::Reply) -> ReplyPort<T> {
        let clock = self.myself.slot().shared().clock().clone();
        match &mut self.inflight {
            Some(f) => {
                f.keep = None;
                f.deferred = true;
                ReplyPort::new(f.reply.take(), map, f.header.deadline, clock)
            }
            None => {
                let now = clock.now();
                ReplyPort::new::<A::Reply>(None, map, now, clock)
            }
        }
    }

    /// Ends this actor normally once the current message is handled.
    ///
    /// A `Permanent` child is started again; `Transient` and `Temporary` children are gone.
    /// This is not a shutdown hook: nothing runs on the way out.
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// Asks another actor, inheriting the remaining time and the trace of the current envelope
    /// (as every `ask` made while a message is handled does; this one also works from code the
    /// handler does not poll itself).
    pub fn ask<'a, B: Actor>(&self, to: &'a ActorRef<B>, msg: B::Msg) -> Ask<'a, B> {
        let ask = to.ask(msg);
        match self.header() {
            Some(h) => ask.within(h),
            None => ask,
        }
    }

    /// Tells another actor, inheriting the remaining time and the trace of the current envelope.
    pub fn tell<'a, B: Actor>(&self, to: &'a ActorRef<B>, msg: B::Msg) -> Tell<'a, B> {
        let tell = to.tell(msg);
        match self.header() {
            Some(h) => tell.within(h),
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
        target.monitors().add(Watcher::Monitor(me.id()), move |down: &Down| {
            match me.try_tell(to_msg(down.clone())) {
                Ok(()) => true,
                Err(e) => !matches!(e.error(), DeliveryError::Dead),
            }
        });
    }

    /// Links this actor with `other`: when either crashes, the other crashes too (reason
    /// [`CrashReason::Linked`]), each handled by its own supervisor. See
    /// [`ActorRef::link`](crate::ActorRef::link).
    pub fn link<B: Actor>(&self, other: &ActorRef<B>) -> Result<(), DeliveryError> {
        self.myself.link(other)
    }
}

impl<A: Actor> Drop for Context<A> {
    /// The instance was dropped while handling (aborted from outside): the envelope is settled
    /// with the reason the recovery agent gave (hung, killed), or as aborted by the supervisor.
    fn drop(&mut self) {
        if let Some(inflight) = self.inflight.take() {
            let slot = self.myself.slot();
            let reason = slot.take_abort_reason(self.incarnation).unwrap_or(CrashReason::Aborted);
            let report = Arc::new(CrashReport {
                path: slot.path.to_string(),
                reason,
                envelope: Some(inflight.header.clone()),
            });
            inflight.settle(slot, report);
        }
    }
}
