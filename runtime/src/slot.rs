//! A supervised slot: the mailbox, start arguments and counters that outlive actor instances, and
//! the loop that runs one instance after another.
//!
//! States: `Starting` (running `start`) -> `Running` -> (`Restarting` -> `Starting` ...) -> `Dead`.
//! Invariants:
//! - At most one instance of a slot runs at a time: an in-place restart happens in the same task
//!   after the old instance is dropped, and an external restart aborts and joins the old task before
//!   launching the next (see `supervisor`).
//! - The envelope being handled is held by an `InFlight` guard. However the instance ends (return,
//!   error, panic, or abort from outside), the guard either hands an idempotent envelope back to the
//!   head of the mailbox (at-least-once) or answers its asker with `Crashed` (at-most-once).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::poll_fn;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::actor::{Actor, Context};
use crate::actor_ref::ActorRef;
use crate::clock::Instant;
use crate::crash::{self, CrashReason, CrashReport};
use crate::envelope::{Envelope, Header};
use crate::error::DeliveryError;
use crate::mailbox::Mailbox;
use crate::monitor::{Down, DownReason, Monitors};
use crate::registry::{ActorId, Inspect, Snapshot};
use crate::reply::{answer, ReplyTo};
use crate::rt::{AbortHandle, Task};
use crate::shared::Shared;
use crate::stats::{SlotState, Stats};
use crate::supervisor::{ChildHandle, Decision, Exit, Parent, Scope};
use crate::sync::{Arc, AtomicU64, AtomicU8, Mutex, Ordering, Stat, Weak};

#[derive(Debug, Default)]
struct Life {
    task: Option<Task>,
    abort: Option<AbortHandle>,
    timers: Vec<AbortHandle>,
    launched: bool,
}

pub(crate) struct Slot<A: Actor> {
    pub(crate) id: ActorId,
    pub(crate) path: Arc<str>,
    shared: Arc<Shared>,
    pub(crate) mailbox: Mailbox<Envelope<A::Msg, ReplyTo<A::Reply>>>,
    pub(crate) monitors: Monitors,
    args: A::Args,
    parent: Weak<dyn Parent>,
    me: Weak<Slot<A>>,
    life: Mutex<Life>,
    opts: SlotOptions,
    dedup: Option<Dedup<A::Reply>>,
    // Relaxed: counters are statistics; nothing is ordered by them.
    handled: Stat,
    crashes: Stat,
    expired: Stat,
    restarts: Stat,
    state: AtomicU8,
    /// Clock nanos when the current message started (0: idle). Read by the watchdog.
    busy_since: AtomicU64,
    /// Clock nanos when the slot is expected to serve again (0: serving). For `RetryAfter`.
    ready_at: Stat,
    /// Moving average of `start` durations, in nanos.
    start_ewma: Stat,
    /// Set to ask the instance to end after its current message (rejuvenation).
    rejuvenate: AtomicU8,
}

/// Per-slot settings, already tightened by the policy.
#[derive(Clone, Debug, Default)]
pub(crate) struct SlotOptions {
    pub(crate) handling: Duration,
    pub(crate) rejuvenate_messages: Option<u64>,
    pub(crate) rejuvenate_age: Option<Duration>,
    pub(crate) dedicated: bool,
}

/// A bounded window of recent idempotency keys and their replies.
pub(crate) struct Dedup<R> {
    cap: usize,
    clone: fn(&R) -> R,
    seen: Mutex<(HashMap<u64, R>, VecDeque<u64>)>,
}

impl<R> Dedup<R> {
    pub(crate) fn new(cap: usize, clone: fn(&R) -> R) -> Self {
        Dedup {
            cap: cap.max(1),
            clone,
            seen: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    fn get(&self, key: u64) -> Option<R> {
        self.seen.lock().0.get(&key).map(self.clone)
    }

    fn insert(&self, key: u64, reply: R) {
        let mut seen = self.seen.lock();
        let (map, order) = &mut *seen;
        if map.insert(key, reply).is_none() {
            order.push_back(key);
            while order.len() > self.cap {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }
}

enum Next<E> {
    Envelope(Option<E>),
    Rejuvenate,
}

impl<A: Actor> fmt::Debug for Slot<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<A: Actor> Slot<A> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ActorId,
        path: Arc<str>,
        shared: Arc<Shared>,
        args: A::Args,
        capacity: usize,
        parent: Weak<dyn Parent>,
        opts: SlotOptions,
        dedup: Option<Dedup<A::Reply>>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Slot {
            id,
            path,
            shared,
            mailbox: Mailbox::new(capacity),
            monitors: Monitors::default(),
            args,
            parent,
            me: me.clone(),
            life: Mutex::new(Life::default()),
            handled: Stat::new(0),
            crashes: Stat::new(0),
            expired: Stat::new(0),
            restarts: Stat::new(0),
            state: AtomicU8::new(SlotState::Starting as u8),
            opts,
            dedup,
            busy_since: AtomicU64::new(0),
            ready_at: Stat::new(0),
            start_ewma: Stat::new(0),
            rejuvenate: AtomicU8::new(0),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn stats(&self) -> Stats {
        let busy = self.busy_since.load(Ordering::Relaxed);
        let now = self.shared.clock().nanos();
        Stats {
            busy_for: (busy != 0).then(|| Duration::from_nanos(now.saturating_sub(busy))),
            handled: self.handled.load(Ordering::Relaxed),
            crashes: self.crashes.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            mailbox_len: self.mailbox.len(),
            state: self.state(),
        }
    }

    pub(crate) fn state(&self) -> SlotState {
        // Relaxed: an observation for callers, not a synchronisation point.
        SlotState::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn set_state(&self, s: SlotState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub(crate) fn add_timer(&self, timer: AbortHandle) {
        let mut life = self.life.lock();
        life.timers.retain(|t| !t.is_finished());
        life.timers.push(timer);
    }

    fn cancel_timers(&self) {
        let timers = std::mem::take(&mut self.life.lock().timers);
        timers.iter().for_each(AbortHandle::abort);
    }

    fn myself(&self) -> Option<Arc<Self>> {
        self.me.upgrade()
    }

    /// Runs instances until the supervisor takes over or the slot dies.
    async fn run(self: Arc<Self>) {
        loop {
            let exit = self.clone().incarnation().await;
            self.cancel_timers();
            if let Exit::Rejuvenated = exit {
                // A planned restart through the same path: not a failure, not counted against
                // the restart intensity.
                self.fire_monitors(&exit, true);
                self.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(actor = %self.path, "rejuvenating actor");
                continue;
            }
            let Some(parent) = self.parent.upgrade() else {
                return;
            };
            let decision = parent.decide(self.identity(), &exit);
            match self.after_exit(&parent, &exit, decision) {
                Some(delay) => {
                    self.expect_ready_in(delay);
                    if !delay.is_zero() {
                        Box::pin(self.shared.clock().sleep(delay)).await;
                    }
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(actor = %self.path, delay_ms = delay.as_millis() as u64, "restarting actor");
                }
                None => return,
            }
        }
    }

    /// Reports an exit and carries out the decision, except a one-for-one restart, which it
    /// returns (with its delay) for the caller to do.
    fn after_exit(self: &Arc<Self>, parent: &Arc<dyn Parent>, exit: &Exit, decision: Decision) -> Option<Duration> {
        let restarting = matches!(decision, Decision::Restart { .. });
        if let Exit::Crash(report) = exit {
            self.crashes.fetch_add(1, Ordering::Relaxed);
            tracing::error!(actor = %self.path, crash = %report, restarting, "actor crashed");
        }
        if restarting {
            self.set_state(SlotState::Restarting);
        }
        self.fire_monitors(exit, restarting);
        match decision {
            Decision::Restart {
                scope: Scope::One,
                delay,
            } => Some(delay),
            Decision::Remove => {
                self.kill();
                None
            }
            Decision::Ignore => None,
            other => {
                if let Decision::Restart { scope, .. } = other {
                    parent.abort_group(self.identity(), scope);
                }
                let me: Arc<dyn ChildHandle> = self.clone();
                parent.submit(me, other);
                None
            }
        }
    }

    /// Records when the slot should serve again: after `delay` and a typical `start`.
    fn expect_ready_in(&self, delay: Duration) {
        let at = self.shared.clock().nanos() + delay.as_nanos() as u64 + self.start_ewma.load(Ordering::Relaxed);
        self.ready_at.store(at, Ordering::Relaxed);
    }

    /// `Some(estimate)` when the slot is recovering and will not serve before `deadline`: the
    /// caller gets `RetryAfter` at once instead of waiting to time out. The estimate is spread
    /// over [n, 1.5 n] so that callers do not all come back at the same instant.
    pub(crate) fn retry_after(&self, deadline: Instant) -> Option<Duration> {
        // Relaxed: a hint; a stale value only makes the caller wait in the mailbox or retry.
        let ready = self.ready_at.load(Ordering::Relaxed);
        if ready == 0 || ready <= self.shared.clock().nanos_of(deadline) {
            return None;
        }
        let wait = ready.saturating_sub(self.shared.clock().nanos()).max(1_000_000);
        Some(Duration::from_nanos(wait + self.shared.random() % (wait / 2 + 1)))
    }

    /// Asks the running instance to end after its current message and start again.
    pub(crate) fn request_rejuvenation(&self) {
        self.rejuvenate.store(1, Ordering::Relaxed);
        self.mailbox.wake_consumer();
    }

    fn fire_monitors(&self, exit: &Exit, restarting: bool) {
        let reason = match exit {
            Exit::Crash(r) => DownReason::Crashed(r.clone()),
            Exit::Normal => DownReason::Ended,
            Exit::Rejuvenated => DownReason::Rejuvenated,
        };
        self.monitors.fire(&Down {
            id: self.id,
            path: self.path.to_string(),
            reason,
            restarting,
        });
    }

    /// One instance: recover in `start`, then handle messages until it crashes or stops.
    async fn incarnation(self: Arc<Self>) -> Exit {
        self.set_state(SlotState::Starting);
        self.rejuvenate.store(0, Ordering::Relaxed);
        let clock = self.shared.clock().clone();
        let began = clock.nanos();
        if self.ready_at.load(Ordering::Relaxed) == 0 {
            self.expect_ready_in(Duration::ZERO);
        }
        let mut ctx = Context::new(ActorRef::from_slot(self.clone()));
        // Boxed: `start` runs once per instance, and an inline start future would make every
        // idle actor's task as large as the largest `start`.
        let mut actor = match Box::pin(crash::catch(A::start(&self.args, &mut ctx))).await {
            Ok(Ok(actor)) => actor,
            Ok(Err(e)) => return self.crash(CrashReason::StartFailed(e.to_string()), None),
            Err(panic) => return self.crash(panic, None),
        };
        let took = clock.nanos().saturating_sub(began);
        let ewma = self.start_ewma.load(Ordering::Relaxed);
        self.start_ewma.store(
            if ewma == 0 { took.max(1) } else { (3 * ewma + took) / 4 },
            Ordering::Relaxed,
        );
        self.ready_at.store(0, Ordering::Relaxed);
        self.set_state(SlotState::Running);
        let mut age = self.opts.rejuvenate_age.map(|a| Box::pin(clock.sleep(a)));
        let mut handled_here = 0u64;
        loop {
            let next = poll_fn(|cx| {
                if self.rejuvenate.load(Ordering::Relaxed) != 0 {
                    return Poll::Ready(Next::Rejuvenate);
                }
                if let Some(age) = age.as_mut() {
                    if age.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Next::Rejuvenate);
                    }
                }
                self.mailbox.poll_pop(cx).map(Next::Envelope)
            })
            .await;
            let env = match next {
                Next::Envelope(Some(env)) => env,
                Next::Envelope(None) => return Exit::Normal,
                Next::Rejuvenate => return Exit::Rejuvenated,
            };
            let now = clock.now();
            if env.header.is_expired(now) {
                self.expired.fetch_add(1, Ordering::Relaxed);
                expire(&self.path, env);
                continue;
            }
            let (msg, guard) = InFlight::take(env, &self);
            let key = guard.header.key.map(|k| k.get());
            if let (Some(dedup), Some(k)) = (&self.dedup, key) {
                if let Some(reply) = dedup.get(k) {
                    // Seen before: answered from the window, not executed again.
                    guard.reply(reply);
                    continue;
                }
            }
            ctx.set_header(Some(guard.header));
            let span = tracing::debug_span!("envelope", actor = %self.path, id = guard.header.id.get(), attempt = guard.header.attempt);
            // Relaxed: the watchdog only needs to see it eventually.
            self.busy_since.store(clock.nanos_of(now), Ordering::Relaxed);
            let outcome = {
                let _enter = span.enter();
                crash::catch(actor.handle(msg, &mut ctx)).await
            };
            self.busy_since.store(0, Ordering::Relaxed);
            self.handled.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok(Ok(reply)) => match (&self.dedup, key) {
                    (Some(dedup), Some(k)) => {
                        dedup.insert(k, (dedup.clone)(&reply));
                        guard.reply(reply);
                    }
                    _ => guard.reply(reply),
                },
                Ok(Err(e)) => {
                    let header = guard.header;
                    let exit = self.crash(CrashReason::HandleFailed(e.to_string()), Some(header));
                    guard.crashed(&exit);
                    return exit;
                }
                Err(panic) => {
                    let header = guard.header;
                    let exit = self.crash(panic, Some(header));
                    guard.crashed(&exit);
                    return exit;
                }
            }
            ctx.set_header(None);
            if ctx.stop_requested() {
                return Exit::Normal;
            }
            handled_here += 1;
            if self.opts.rejuvenate_messages.is_some_and(|n| handled_here >= n) {
                return Exit::Rejuvenated;
            }
        }
    }

    fn crash(&self, reason: CrashReason, envelope: Option<Header>) -> Exit {
        Exit::Crash(Arc::new(CrashReport {
            path: self.path.to_string(),
            reason,
            envelope,
        }))
    }

    /// The slot dies for good: nothing more is accepted, and whoever waits is told `Dead`.
    fn kill(&self) {
        self.set_state(SlotState::Dead);
        self.cancel_timers();
        for env in self.mailbox.close() {
            answer(env.reply, Err(DeliveryError::Dead));
        }
        self.shared.registry().remove(self.id);
    }

    fn identity(&self) -> *const () {
        self as *const Self as *const ()
    }
}

/// Answers an expired envelope: the asker gets `Expired`; a tell is reported, never dropped silently.
fn expire<M, R>(path: &str, env: Envelope<M, ReplyTo<R>>) {
    tracing::warn!(actor = %path, id = env.header.id.get(), "dropped expired envelope");
    answer(env.reply, Err(DeliveryError::Expired));
}

/// Holds the envelope being handled until its outcome is known.
struct InFlight<'a, A: Actor> {
    slot: &'a Slot<A>,
    header: Header,
    /// The original payload, kept only for idempotent envelopes (they may be redelivered).
    keep: Option<A::Msg>,
    reply: Option<ReplyTo<A::Reply>>,
    armed: bool,
}

impl<'a, A: Actor> InFlight<'a, A> {
    fn take(env: Envelope<A::Msg, ReplyTo<A::Reply>>, slot: &'a Slot<A>) -> (A::Msg, Self) {
        let Envelope { header, payload, reply } = env;
        let keep = header.idempotent.then(|| payload.clone());
        (
            payload,
            InFlight {
                slot,
                header,
                keep,
                reply,
                armed: true,
            },
        )
    }

    fn reply(mut self, reply: A::Reply) {
        self.armed = false;
        answer(self.reply.take(), Ok(reply));
    }

    fn crashed(mut self, exit: &Exit) {
        self.armed = false;
        let report = match exit {
            Exit::Crash(r) => r.clone(),
            Exit::Normal | Exit::Rejuvenated => unreachable!("crashed() is only called with a crash"),
        };
        self.settle(report);
    }

    /// At-least-once for idempotent envelopes whose deadline allows; at-most-once otherwise.
    fn settle(&mut self, report: Arc<CrashReport>) {
        let now = self.slot.shared.now();
        if let Some(payload) = self.keep.take() {
            if !self.header.is_expired(now) {
                let header = Header {
                    attempt: self.header.attempt + 1,
                    ..self.header
                };
                let env = Envelope {
                    header,
                    payload,
                    reply: self.reply.take(),
                };
                match self.slot.mailbox.push_front(env) {
                    Ok(()) => return,
                    Err(env) => {
                        answer(env.reply, Err(DeliveryError::Dead));
                        return;
                    }
                }
            }
        }
        answer(self.reply.take(), Err(DeliveryError::Crashed(report)));
    }
}

impl<A: Actor> Drop for InFlight<'_, A> {
    /// Runs when the instance is aborted from outside while handling (or its handler unwound past us).
    fn drop(&mut self) {
        if self.armed {
            let report = Arc::new(CrashReport {
                path: self.slot.path.to_string(),
                reason: CrashReason::Aborted,
                envelope: Some(self.header),
            });
            self.settle(report);
        }
    }
}

impl<A: Actor> ChildHandle for Slot<A> {
    fn path(&self) -> &str {
        &self.path
    }

    fn rejuvenate(&self) {
        self.request_rejuvenation();
    }

    fn identity(&self) -> *const () {
        Slot::identity(self)
    }

    fn launch(&self) {
        self.launch_after(Duration::ZERO);
    }

    fn launch_after(&self, delay: Duration) {
        let Some(me) = self.myself() else { return };
        let mut life = self.life.lock();
        if life.launched {
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
        life.launched = true;
        // The backoff is the new task's first step: aborting the slot cancels a pending restart,
        // and the supervisor is free to restart other children meanwhile.
        let run = async move {
            if !delay.is_zero() {
                me.expect_ready_in(delay);
                // Boxed: a rare path, kept out of every idle actor's task.
                Box::pin(me.shared.clock().sleep(delay)).await;
            }
            me.run().await;
        };
        let task = if self.opts.dedicated {
            self.shared.executor().spawn_thread(&self.path, run)
        } else {
            self.shared.spawn(run)
        };
        life.abort = Some(task.abort_handle());
        life.task = Some(task);
    }

    fn abort(&self) {
        let mut life = self.life.lock();
        if let Some(a) = life.abort.take() {
            if !a.is_finished() {
                self.crashes.fetch_add(1, Ordering::Relaxed);
            }
            a.abort();
        }
        life.timers.drain(..).for_each(|t| t.abort());
        drop(life);
        self.busy_since.store(0, Ordering::Relaxed);
        if self.state() != SlotState::Dead {
            self.set_state(SlotState::Restarting);
            self.expect_ready_in(Duration::ZERO);
        }
    }

    fn join(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let task = self.life.lock().task.take();
        Box::pin(async move {
            if let Some(task) = task {
                // A task stuck in blocking code never sees its abort: it is abandoned and counted.
                if !task.join_within(self.shared.policy().abandon_after()).await {
                    self.shared.abandoned(&self.path);
                }
            }
        })
    }

    fn kill(&self) {
        ChildHandle::abort(self);
        Slot::kill(self);
    }
}

impl<A: Actor> Inspect for Slot<A> {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.id,
            path: self.path.to_string(),
            stats: Some(self.stats()),
        }
    }

    fn is_hung(&self, now: u64) -> bool {
        crate::watchdog::is_hung(self.busy_since.load(Ordering::Relaxed), self.opts.handling, now)
    }

    /// The watchdog's crash-restart: power off from outside first, then the usual decision.
    fn hang(&self, now: u64) {
        let busy = self.busy_since.swap_zero();
        if busy == 0 {
            return; // finished meanwhile
        }
        let reason = CrashReason::Hung {
            busy_ms: Duration::from_nanos(now.saturating_sub(busy)).as_millis(),
            lease_ms: self.opts.handling.as_millis(),
        };
        self.crash_from_outside(reason);
    }
}

impl<A: Actor> Slot<A> {
    /// A recovery agent's crash-reboot: abort the instance from outside (it is not asked), then
    /// the supervisor decides as for any crash.
    pub(crate) fn crash_from_outside(&self, reason: CrashReason) {
        let Some(me) = self.myself() else { return };
        // Already down (dead, or between instances): nothing runs to crash.
        if matches!(self.state(), SlotState::Dead | SlotState::Restarting) {
            return;
        }
        ChildHandle::abort(self);
        let exit = self.crash(reason, None);
        let Some(parent) = self.parent.upgrade() else { return };
        let decision = parent.decide(self.identity(), &exit);
        if let Some(delay) = me.after_exit(&parent, &exit, decision) {
            // The task is aborted (or stuck): the supervisor joins it, within bounds, and relaunches.
            let me: Arc<dyn ChildHandle> = me.clone();
            parent.submit(
                me,
                Decision::Restart {
                    scope: Scope::One,
                    delay,
                },
            );
        }
    }
}
