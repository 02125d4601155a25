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
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// struct Me;
    /// impl Actor for Me {
    /// #     type Args = (); type Msg = (); type Reply = String; type Error = std::convert::Infallible;
    /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Me) }
    ///     async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<String, Self::Error> {
    ///         Ok(ctx.myself().path().to_string())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let me = system.spawn(ActorSpec::<Me>::named("me", ())).unwrap();
    /// assert_eq!(me.ask(()).await.as_deref(), Ok("/me"));
    /// # }
    /// ```
    pub fn myself(&self) -> &ActorRef<A> {
        &self.myself
    }

    /// The header of the envelope being handled (`None` in `start`).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// struct Attempts;
    /// impl Actor for Attempts {
    /// #     type Args = (); type Msg = (); type Reply = u32; type Error = std::convert::Infallible;
    /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Attempts) }
    ///     async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<u32, Self::Error> {
    ///         Ok(ctx.header().map_or(0, |h| h.attempt))
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let a = system.spawn(ActorSpec::<Attempts>::new(())).unwrap();
    /// assert_eq!(a.ask(()).await, Ok(1)); // a first delivery
    /// # }
    /// ```
    pub fn header(&self) -> Option<&Header> {
        self.inflight.as_ref().map(|f| &f.header)
    }

    /// Time left before the current envelope's deadline (`None` in `start`).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use std::time::Duration;
    /// struct Budget;
    /// impl Actor for Budget {
    /// #     type Args = (); type Msg = (); type Reply = Duration; type Error = std::convert::Infallible;
    /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Budget) }
    ///     async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<Duration, Self::Error> {
    ///         Ok(ctx.remaining().unwrap()) // say, to skip work that cannot finish in time
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let budget = system.spawn(ActorSpec::<Budget>::new(())).unwrap();
    /// let left = budget.ask(()).ttl(Duration::from_secs(2)).await.unwrap();
    /// assert!(left > Duration::ZERO && left <= Duration::from_secs(2));
    /// # }
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        let now = self.myself.slot().shared().now();
        self.header().map(|h| h.remaining(now))
    }

    /// Which instance this is: 1 for the first start, one more for every restart (crash,
    /// rejuvenation or restart by hand) of this slot.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// struct Which;
    /// impl Actor for Which {
    /// #     type Args = (); type Msg = (); type Reply = u64; type Error = std::convert::Infallible;
    /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Which) }
    ///     async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<u64, Self::Error> {
    ///         Ok(ctx.incarnation())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let which = system.spawn(ActorSpec::<Which>::new(())).unwrap();
    /// assert_eq!(which.ask(()).await, Ok(1));
    /// which.kill().unwrap();
    /// assert_eq!(which.ask(()).await, Ok(2));
    /// # }
    /// ```
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Takes the reply slot of the message being handled, to answer it later from elsewhere (a
    /// spawned task, another actor) while this actor goes on with its mailbox. What `handle`
    /// returns is then ignored. See [`ReplyPort`]; for a `tell`, or in `start`, the port has
    /// nobody to answer. A crash after the reply was deferred does not redeliver the message:
    /// it has been handed on.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// struct Doubler;
    /// impl Actor for Doubler {
    /// #     type Args = (); type Msg = u64; type Reply = u64; type Error = std::convert::Infallible;
    /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Doubler) }
    ///     async fn handle(&mut self, n: u64, ctx: &mut Context<Self>) -> Result<u64, Self::Error> {
    ///         let port = ctx.defer();
    ///         tokio::spawn(async move { port.send(n * 2) }); // answered from elsewhere
    ///         Ok(0) // ignored: the reply was deferred
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let doubler = system.spawn(ActorSpec::<Doubler>::new(())).unwrap();
    /// assert_eq!(doubler.ask(21).await, Ok(42));
    /// # }
    /// ```
    pub fn defer(&mut self) -> ReplyPort<A::Reply> {
        self.defer_map(|reply| reply)
    }

    /// [`defer`](Context::defer) for a part of the reply: the port takes a `T` and `map` makes
    /// the actor's reply of it (what `#[messages]` uses for a `ReplyPort<T>` argument).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// struct Shelf;
    /// impl Actor for Shelf {
    /// #     type Args = (); type Msg = &'static str; type Reply = String; type Error = std::convert::Infallible;
    /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Shelf) }
    ///     async fn handle(&mut self, item: &'static str, ctx: &mut Context<Self>) -> Result<String, Self::Error> {
    ///         let port = ctx.defer_map(|count: usize| format!("{count} left"));
    ///         tokio::spawn(async move { port.send(item.len()) });
    ///         Ok(String::new()) // ignored: the reply was deferred
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let shelf = system.spawn(ActorSpec::<Shelf>::new(())).unwrap();
    /// assert_eq!(shelf.ask("books").await.as_deref(), Ok("5 left"));
    /// # }
    /// ```
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
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// struct OneShot;
    /// impl Actor for OneShot {
    /// #     type Args = (); type Msg = (); type Reply = (); type Error = std::convert::Infallible;
    /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(OneShot) }
    ///     async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<(), Self::Error> {
    ///         ctx.stop(); // this message is still answered
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let once = system.spawn(ActorSpec::<OneShot>::new(()).restart(Restart::Transient)).unwrap();
    /// let mut downs = system.monitor(&once);
    /// assert_eq!(once.ask(()).await, Ok(()));
    /// let down = downs.recv().await.unwrap();
    /// assert_eq!((down.reason, down.restarting), (DownReason::Ended, false));
    /// assert_eq!(once.ask(()).await, Err(DeliveryError::Dead));
    /// # }
    /// ```
    pub fn stop(&mut self) {
        self.stop = true;
    }

    /// Asks another actor, inheriting the remaining time and the trace of the current envelope
    /// (as every `ask` made while a message is handled does; this one also works from code the
    /// handler does not poll itself).
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// struct Front { counter: ActorRef<Counter> }
    /// impl Actor for Front {
    /// #     type Args = ActorRef<Counter>; type Msg = u64; type Reply = u64; type Error = String;
    /// #     async fn start(c: &ActorRef<Counter>, _: &mut Context<Self>) -> Result<Self, String> { Ok(Front { counter: c.clone() }) }
    ///     async fn handle(&mut self, add: u64, ctx: &mut Context<Self>) -> Result<u64, String> {
    ///         // Bounded by what is left of this message's own deadline.
    ///         ctx.ask(&self.counter, add).await.map_err(|e| e.to_string())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(40)).unwrap();
    /// let front = system.spawn(ActorSpec::<Front>::new(counter)).unwrap();
    /// assert_eq!(front.ask(2).await, Ok(42));
    /// # }
    /// ```
    pub fn ask<'a, B: Actor>(&self, to: &'a ActorRef<B>, msg: B::Msg) -> Ask<'a, B> {
        let ask = to.ask(msg);
        match self.header() {
            Some(h) => ask.within(h),
            None => ask,
        }
    }

    /// Tells another actor, inheriting the remaining time and the trace of the current envelope.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// struct Front { counter: ActorRef<Counter> }
    /// impl Actor for Front {
    /// #     type Args = ActorRef<Counter>; type Msg = u64; type Reply = (); type Error = String;
    /// #     async fn start(c: &ActorRef<Counter>, _: &mut Context<Self>) -> Result<Self, String> { Ok(Front { counter: c.clone() }) }
    ///     async fn handle(&mut self, add: u64, ctx: &mut Context<Self>) -> Result<(), String> {
    ///         ctx.tell(&self.counter, add).await.map_err(|e| e.to_string())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(40)).unwrap();
    /// let front = system.spawn(ActorSpec::<Front>::new(counter.clone())).unwrap();
    /// assert_eq!(front.ask(2).await, Ok(()));
    /// assert_eq!(counter.ask(0).await, Ok(42));
    /// # }
    /// ```
    pub fn tell<'a, B: Actor>(&self, to: &'a ActorRef<B>, msg: B::Msg) -> Tell<'a, B> {
        let tell = to.tell(msg);
        match self.header() {
            Some(h) => tell.within(h),
            None => tell,
        }
    }

    /// Sends `msg` to this actor after `delay`; its envelope lives for the configured default TTL
    /// from then. The timer belongs to this instance: a crash or restart cancels it.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use std::time::Duration;
    /// struct Alarm { rung: bool }
    /// enum Msg { Set, Ring, HasRung }
    /// impl Actor for Alarm {
    /// #     type Args = (); type Msg = Msg; type Reply = bool; type Error = std::convert::Infallible;
    /// #     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Alarm { rung: false }) }
    ///     async fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) -> Result<bool, Self::Error> {
    ///         match msg {
    ///             Msg::Set => {
    ///                 ctx.send_after(Duration::from_secs(60), Msg::Ring); // a `Timer`, to cancel it
    ///             }
    ///             Msg::Ring => self.rung = true,
    ///             Msg::HasRung => {}
    ///         }
    ///         Ok(self.rung)
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let alarm = system.spawn(ActorSpec::<Alarm>::new(())).unwrap();
    /// assert_eq!(alarm.ask(Msg::Set).await, Ok(false));
    /// tokio::time::sleep(Duration::from_secs(61)).await; // paused time: no real wait
    /// assert_eq!(alarm.ask(Msg::HasRung).await, Ok(true));
    /// # }
    /// ```
    pub fn send_after(&self, delay: Duration, msg: A::Msg) -> Timer {
        crate::timer::send_after(&self.myself, delay, msg)
    }

    /// Sends `make()` to this actor every `period`; each envelope's TTL is one period, so a tick that
    /// could not be handled before the next one is dropped as expired. Cancelled by a crash or restart.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use std::time::Duration;
    /// struct Ticker { ticks: u32 }
    /// enum Msg { Tick, Count }
    /// impl Actor for Ticker {
    /// #     type Args = (); type Msg = Msg; type Reply = u32; type Error = std::convert::Infallible;
    ///     async fn start(_: &(), ctx: &mut Context<Self>) -> Result<Self, Self::Error> {
    ///         ctx.send_interval(Duration::from_secs(1), || Msg::Tick);
    ///         Ok(Ticker { ticks: 0 })
    ///     }
    /// #     async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) -> Result<u32, Self::Error> {
    /// #         if let Msg::Tick = msg {
    /// #             self.ticks += 1;
    /// #         }
    /// #         Ok(self.ticks)
    /// #     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let system = System::new();
    /// let ticker = system.spawn(ActorSpec::<Ticker>::new(())).unwrap();
    /// tokio::time::sleep(Duration::from_millis(3500)).await; // paused time: no real wait
    /// assert_eq!(ticker.ask(Msg::Count).await, Ok(3));
    /// # }
    /// ```
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
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::{Lease, LeaseError};
    /// # use std::time::Duration;
    /// struct Printer { lease: Lease }
    /// impl Actor for Printer {
    /// #     type Args = (); type Msg = (); type Reply = u64; type Error = LeaseError;
    ///     async fn start(_: &(), ctx: &mut Context<Self>) -> Result<Self, LeaseError> {
    ///         let lease = ctx.lease("printer", Duration::from_secs(10))?; // renewed while this instance runs
    ///         Ok(Printer { lease })
    ///     }
    /// #     async fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<u64, LeaseError> {
    /// #         Ok(self.lease.token)
    /// #     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let printer = system.spawn(ActorSpec::<Printer>::named("printer", ())).unwrap();
    /// printer.ask(()).await.unwrap();
    /// let taken = system.leases().acquire("printer", "someone else", Duration::from_secs(10));
    /// assert!(matches!(taken, Err(LeaseError::Held { holder, .. }) if holder == "/printer"));
    /// # }
    /// ```
    pub fn lease(&self, resource: &str, ttl: Duration) -> Result<Lease, LeaseError> {
        let slot = self.myself.slot();
        let shared = slot.shared();
        let ttl = shared.policy().lease(ttl);
        let (lease, renewals) = crate::lease::hold(
            shared.leases(),
            shared.clock(),
            shared.executor(),
            resource,
            &self.myself.path().to_string(),
            ttl,
        )?;
        slot.add_timer(renewals);
        Ok(lease)
    }

    /// Watches `target`: every time it crashes or ends, `to_msg(down)` is sent to this actor.
    ///
    /// Registering the same target again (say, from `start` after a restart) replaces the earlier
    /// registration instead of adding a second one.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// struct Watcher { downs: usize }
    /// impl Actor for Watcher {
    /// #     type Args = ActorRef<Counter>; type Msg = Option<Down>; type Reply = usize; type Error = std::convert::Infallible;
    ///     async fn start(counter: &ActorRef<Counter>, ctx: &mut Context<Self>) -> Result<Self, Self::Error> {
    ///         ctx.monitor(counter, Some); // each notice arrives as `Some(down)`
    ///         Ok(Watcher { downs: 0 })
    ///     }
    /// #     async fn handle(&mut self, down: Option<Down>, _: &mut Context<Self>) -> Result<usize, Self::Error> {
    /// #         self.downs += usize::from(down.is_some());
    /// #         Ok(self.downs)
    /// #     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(1)).unwrap();
    /// let watcher = system.spawn(ActorSpec::<Watcher>::new(counter.clone())).unwrap();
    /// watcher.started().await.unwrap();
    /// assert!(counter.ask(u64::MAX).await.is_err()); // an overflow: a crash
    /// assert_eq!(counter.ask(0).await, Ok(1)); // restarted
    /// assert_eq!(watcher.ask(None).await, Ok(1));
    /// # }
    /// ```
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
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use crashonly::__private::doc::Counter;
    /// struct Partner;
    /// impl Actor for Partner {
    /// #     type Args = ActorRef<Counter>; type Msg = (); type Reply = (); type Error = DeliveryError;
    ///     async fn start(counter: &ActorRef<Counter>, ctx: &mut Context<Self>) -> Result<Self, Self::Error> {
    ///         ctx.link(counter)?; // again at every start: a link fires once
    ///         Ok(Partner)
    ///     }
    /// #     async fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), Self::Error> { Ok(()) }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let system = System::new();
    /// let counter = system.spawn(ActorSpec::<Counter>::new(1)).unwrap();
    /// let partner = system.spawn(ActorSpec::<Partner>::named("partner", counter.clone())).unwrap();
    /// partner.started().await.unwrap();
    /// let mut downs = system.monitor(&partner);
    /// assert!(counter.ask(u64::MAX).await.is_err()); // an overflow: the counter crashes, the partner with it
    /// let DownReason::Crashed(report) = downs.recv().await.unwrap().reason else { panic!() };
    /// assert!(matches!(report.reason, CrashReason::Linked { .. }));
    /// # }
    /// ```
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
                path: slot.path().owned(),
                reason,
                envelope: Some(inflight.header.clone()),
            });
            inflight.settle(slot, report);
        }
    }
}
