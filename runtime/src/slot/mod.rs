//! A supervised slot: the mailbox, start arguments and counters that outlive actor instances, and
//! the loop that runs one instance after another.
//!
//! States: `Starting` (running `start`) -> `Running` -> (`Restarting` -> `Starting` ...) -> `Dead`;
//! `Stopped` while terminated by hand. Invariants:
//! - At most one instance of a slot runs at a time: an in-place restart happens in the same task
//!   after the old instance is dropped, and an external restart aborts and joins the old task before
//!   launching the next (see `supervisor`).
//! - The envelope being handled is held by the instance's `Context` (see `inflight`): however the
//!   instance ends (return, error, panic, or abort from outside), it is settled exactly once.
//! - A crash is counted once, where its exit is known: by the loop for a crash inside, by
//!   `crash_from_outside` for the watchdog's or a user's crash, by `abort` for a supervisor's.
//!
//! `life.rs` holds what the supervisor and the watchdog do to a slot from outside.

mod hibernate;
mod life;
mod options;
mod ready;
mod record;

pub(crate) use options::SlotOptions;
use options::Tuned;

use std::fmt;
use std::future::poll_fn;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use futures::future::Either;
use tracing::Instrument;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::context::Context;
use crate::crash::{self, CrashReason, CrashReport};
use crate::dedup::Dedup;
use crate::envelope::{CopyFn, Envelope, Header};
use crate::error::DeliveryError;
use crate::mailbox::Mailbox;
use crate::monitor::{Down, DownReason, Monitors};
use crate::path::ActorPath;
use crate::registry::ActorId;
use crate::reply::{answer, ReplyTo};
use crate::rt::{AbortHandle, Task};
use crate::shared::Shared;
use crate::stats::{SlotState, Stats};
use crate::supervisor::{Decision, Exit, Parent, Scope};
use crate::sync::{Arc, AtomicU64, AtomicU8, Flag, Mutex, Ordering, PlainMutex, SetOnce, Stat, Weak};
use hibernate::{Begin, Opening, Parked, INLINE_NONE};
use record::{LastCrash, Rare};

struct Life<A> {
    task: Option<Task>,
    abort: Option<AbortHandle>,
    /// Boxed on the first timer: most actors arm none (8 bytes in every slot, not 24).
    #[expect(clippy::box_collection, reason = "8 bytes in every slot instead of a Vec's 24")]
    timers: Option<Box<Vec<AbortHandle>>>,
    launched: bool,
    /// The hibernating instance (see `hibernate`).
    parked: Option<Box<Parked<A>>>,
    /// A `start` is being polled in its launcher's thread (`INLINE_*`, see `hibernate`).
    inline: u8,
}

impl<A> Default for Life<A> {
    fn default() -> Self {
        Life {
            task: None,
            abort: None,
            timers: None,
            launched: false,
            parked: None,
            inline: INLINE_NONE,
        }
    }
}

impl<A> fmt::Debug for Life<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Life")
            .field("task", &self.task)
            .field("launched", &self.launched)
            .field("hibernating", &self.parked.is_some())
            .finish_non_exhaustive()
    }
}

/// A new instance and its context, or the exit of a `start` that failed.
type Recovered<A> = Result<(Box<Parked<A>>, Context<A>), Exit>;

/// The fields of a slot that neither a sender nor the actor's loop writes per message: they keep
/// the mailbox's two halves apart (at least 128 bytes, checked when the mailbox is made), which
/// an empty gap did at a cost of 128 bytes per actor.
pub(crate) struct Cold<A: Actor> {
    args: A::Args,
    parent: Weak<dyn Parent>,
    me: Weak<Slot<A>>,
    /// Locked to launch, abort, join, hibernate and wake: not per message while the actor runs.
    life: Mutex<Life<A>>,
    rare: PlainMutex<Option<Box<Rare>>>,
    opts: Tuned,
    /// Boxed: opt-in (`ActorSpec::dedup`), and 104 bytes inline in every slot otherwise.
    dedup: Option<Box<Dedup<A::Reply>>>,
    /// How to copy a message for redelivery: known once an idempotent message was sent (its
    /// sender proved `A::Msg: Clone`); messages need not be `Clone` otherwise. Set once.
    copy: SetOnce<CopyFn<A::Msg>>,
}

/// The envelopes of a slot's mailbox.
pub(crate) type Env<A> = Envelope<<A as Actor>::Msg, ReplyTo<<A as Actor>::Reply>>;

/// `repr(C)`, in this order, so that what the actor's loop writes for every message (the last
/// group, next to the mailbox's consumer half) is kept away from what senders read for every
/// message (the first group) and from the mailbox's producer half (its last part, with the
/// slot's read-mostly fields before it): left to the compiler, a layout put the loop's counters
/// next to the producers' lock, and tell on two workers took 1.5x as long.
#[repr(C)]
pub(crate) struct Slot<A: Actor> {
    // Read by senders, rarely written.
    pub(crate) id: ActorId,
    /// The path of a named slot; its parent's, shared, for an unnamed one (see `path`).
    base: Arc<str>,
    shared: Arc<Shared>,
    /// Clock nanos when the slot is expected to serve again (0: serving). For `RetryAfter`.
    ready_at: Stat,
    pub(crate) monitors: Monitors,
    state: AtomicU8,
    /// An instance has completed `start` (for `started()`); see `mark_started` for its ordering.
    /// Std even under loom: a hint for code outside the models, not part of any interleaving they
    /// check.
    started: Flag,
    /// Someone waits in `started()`: keeps the first start from locking `rare` when nobody does.
    /// Only ever goes 0 -> 1 (std even under loom, like the statistics).
    waiting: Flag,
    /// Spawned with a name: `base` is its path.
    named: bool,
    /// Killed or stopped (for `started()` waiters, read under `rare`); cleared by a relaunch.
    down: Flag,
    // Written on rare events: a start, a crash, an abort, a hibernation.
    // Relaxed: counters are statistics; nothing is ordered by them.
    incarnations: Stat,
    /// Counts launches, so that an old abandoned task that ends late clears nothing of a newer one.
    task_gen: Stat,
    /// Clock nanos when a running task was aborted (0: none, or it has ended). Read by the
    /// watchdog's thread, which models do not run: std even under loom.
    aborted_at: Stat,
    /// Clock nanos when the next start is due, while backing off (0: not backing off).
    next_start: Stat,
    /// Moving average of `start` durations, in nanos.
    start_ewma: Stat,
    /// Times an instance of this slot hibernated.
    hibernations: Stat,
    /// Senders answered `RetryAfter` at once (the observer page).
    #[cfg(feature = "observer")]
    pub(crate) retried_after: Stat,
    // Written by the actor's loop for every message.
    handled: Stat,
    expired: Stat,
    /// Clock nanos when the current message started (0: idle). Read by the watchdog.
    busy_since: AtomicU64,
    /// Clock nanos when the last message started, or the current instance completed `start`:
    /// how long an entity has been idle.
    last_active: Stat,
    /// Set to ask the instance to end after its current message (rejuvenation).
    rejuvenate: AtomicU8,
    /// Whether the instance runs, was asked to hibernate, or hibernates (`hibernate::LIVE`,
    /// `ASKED`, `PARKED`). Std even under loom: models never hibernate.
    hibernation: Flag,
    /// The consumer's half first (next to the loop's counters), the slot's read-mostly fields
    /// between the halves (see `Cold`), the producers' half last.
    pub(crate) mailbox: Mailbox<Env<A>, Cold<A>>,
}

enum Next<E> {
    Envelope(Option<E>),
    Rejuvenate,
    Hibernate,
}

impl<A: Actor> fmt::Debug for Slot<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.id)
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl<A: Actor> Slot<A> {
    pub(crate) fn new(
        (id, base, named): (ActorId, Arc<str>, bool),
        shared: Arc<Shared>,
        args: A::Args,
        parent: Weak<dyn Parent>,
        opts: SlotOptions,
        dedup: Option<Dedup<A::Reply>>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Slot {
            id,
            base,
            named,
            shared,
            mailbox: Mailbox::with_middle(
                opts.capacity,
                Cold {
                    args,
                    parent,
                    me: me.clone(),
                    life: Mutex::new(Life::default()),
                    rare: PlainMutex::new(None),
                    opts: Tuned::of(opts),
                    dedup: dedup.map(Box::new),
                    copy: SetOnce::default(),
                },
            ),
            monitors: Monitors::default(),
            handled: Stat::new(0),
            expired: Stat::new(0),
            incarnations: Stat::new(0),
            state: AtomicU8::new(SlotState::Starting as u8),
            started: Flag::new(0),
            waiting: Flag::new(0),
            down: Flag::new(0),
            task_gen: Stat::new(0),
            busy_since: AtomicU64::new(0),
            last_active: Stat::new(0),
            aborted_at: Stat::new(0),
            ready_at: Stat::new(0),
            next_start: Stat::new(0),
            start_ewma: Stat::new(0),
            rejuvenate: AtomicU8::new(0),
            hibernation: Flag::new(hibernate::LIVE),
            hibernations: Stat::new(0),
            #[cfg(feature = "observer")]
            retried_after: Stat::new(0),
        })
    }

    /// The read-mostly fields, between the mailbox's halves.
    fn cold(&self) -> &Cold<A> {
        self.mailbox.middle()
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Records how to copy this slot's messages (by the sender of an idempotent message).
    pub(crate) fn set_copy(&self, copy: CopyFn<A::Msg>) {
        if self.cold().copy.get().is_none() {
            self.cold().copy.set(copy);
        }
    }

    pub(crate) fn copy_fn(&self) -> Option<CopyFn<A::Msg>> {
        self.cold().copy.get()
    }

    /// Runs `f` on the rarely used part, allocating it on first use.
    /// Its path in the tree.
    pub(crate) fn path(&self) -> ActorPath<'_> {
        if self.named {
            ActorPath::named(&self.base)
        } else {
            ActorPath::unnamed(&self.base, self.id.generation())
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let busy = self.busy_since.load(Ordering::Relaxed);
        let clock = self.shared.clock();
        let now = clock.nanos();
        let next = self.next_start.load(Ordering::Relaxed);
        let (crashes, restarts) = self
            .cold()
            .rare
            .lock()
            .as_ref()
            .map_or((0, 0), |r| (r.crashes, r.restarts));
        let last = self.last_crash();
        Stats {
            busy_for: (busy != 0).then(|| Duration::from_nanos(now.saturating_sub(busy))),
            handled: self.handled.load(Ordering::Relaxed),
            crashes,
            expired: self.expired.load(Ordering::Relaxed),
            restarts,
            mailbox_len: self.mailbox.len(),
            state: self.state(),
            incarnation: self.incarnations.load(Ordering::Relaxed),
            last_crash_at: last.as_ref().and_then(|(_, at)| *at),
            last_crash: last.map(|(report, _)| report),
            next_start_at: (next != 0).then(|| clock.instant_of(next)),
            hibernating: self.is_hibernating(),
            hibernations: self.hibernations.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn state(&self) -> SlotState {
        // Relaxed: an observation for callers, not a synchronisation point.
        SlotState::from_u8(self.state.load(Ordering::Relaxed))
    }

    fn set_state(&self, s: SlotState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    /// Claims the end of the running instance (Starting or Running -> Restarting), once: when a
    /// crash from inside and one from outside (watchdog, `kill`) race, one of them decides.
    fn claim_exit(&self) -> bool {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if s != SlotState::Starting as u8 && s != SlotState::Running as u8 {
                return false;
            }
            if self.state.replace_if(s, SlotState::Restarting as u8) {
                return true;
            }
            s = self.state.load(Ordering::Relaxed);
        }
    }

    pub(crate) fn add_timer(&self, timer: AbortHandle) {
        let mut life = self.cold().life.lock();
        let timers = life.timers.get_or_insert_with(Box::default);
        timers.retain(|t| !t.is_finished());
        timers.push(timer);
    }

    fn cancel_timers(&self) {
        let timers = self.cold().life.lock().timers.take();
        timers.iter().flat_map(|t| t.iter()).for_each(AbortHandle::abort);
    }

    fn myself(&self) -> Option<Arc<Self>> {
        self.cold().me.upgrade()
    }

    /// Runs instances (beginning where `begin` says) until the supervisor takes over, the slot
    /// dies or the instance hibernates.
    async fn run(self: Arc<Self>, mut begin: Begin<A>) {
        loop {
            let exit = self
                .clone()
                .instance(std::mem::replace(&mut begin, Begin::Recover))
                .await;
            // Hibernated: the task ends, the instance waits in the slot.
            let Some(exit) = exit else { return };
            if !self.claim_exit() {
                // Crashed from outside meanwhile (or killed): that path decides, and this task
                // is being aborted.
                return;
            }
            self.cancel_timers();
            if let Exit::Rejuvenated = exit {
                // A planned restart through the same path: not a failure, not counted against
                // the restart intensity.
                self.fire_monitors(&exit, true);
                self.count_restart();
                tracing::info!(actor = %self.path(), "rejuvenating actor");
                continue;
            }
            let Some(parent) = self.cold().parent.upgrade() else {
                return;
            };
            let decision = parent.decide(self.identity(), &exit);
            match self.after_exit(&parent, &exit, decision) {
                Some(delay) => {
                    self.expect_ready_in(delay);
                    if !delay.is_zero() {
                        Box::pin(self.shared.clock().sleep(delay)).await;
                    }
                    self.count_restart();
                    tracing::info!(actor = %self.path(), delay_ms = delay.as_millis() as u64, "restarting actor");
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
            self.record_crash(report);
            report_crash(report, restarting);
            if !restarting {
                self.rare(|r| r.gave_up = true);
                self.wake_waiters();
            }
        }
        // Siblings go down before anyone hears of this exit: a linked sibling in the same group
        // is then already restarting, not crashed a second time.
        if let Decision::Restart { scope, .. } = &decision
            && *scope != Scope::One
        {
            parent.abort_group(self.identity(), *scope);
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
                parent.submit(self.clone(), other);
                None
            }
        }
    }

    /// Asks the running instance to end after its current message and start again.
    pub(crate) fn request_rejuvenation(&self) {
        self.rejuvenate.store(1, Ordering::Relaxed);
        self.mailbox.wake_consumer();
    }

    fn fire_monitors(&self, exit: &Exit, restarting: bool) {
        self.monitors.fire(|| Down {
            id: self.id,
            path: self.path().owned(),
            reason: match exit {
                Exit::Crash(r) => DownReason::Crashed(r.clone()),
                Exit::Normal => DownReason::Ended,
                Exit::Rejuvenated => DownReason::Rejuvenated,
            },
            restarting,
        });
    }

    /// A new instance, recovered in `start`, and its context; the exit when `start` failed.
    async fn recover(self: Arc<Self>) -> Recovered<A> {
        self.set_state(SlotState::Starting);
        self.rejuvenate.store(0, Ordering::Relaxed);
        self.next_start.store(0, Ordering::Relaxed);
        // A request to hibernate was for an instance that is gone.
        self.hibernation.store(hibernate::LIVE, Ordering::Relaxed);
        let n = self.incarnations.fetch_add(1, Ordering::Relaxed) + 1;
        let clock = self.shared.clock();
        let began = clock.nanos();
        // An instance recovering counts as active from the moment it begins: an entity still
        // starting is the most recent, not the least recent, of its family.
        self.last_active.store(began.max(1), Ordering::Relaxed);
        if self.ready_at.load(Ordering::Relaxed) == 0 {
            self.expect_ready_in(Duration::ZERO);
        }
        let mut ctx = Context::new(ActorRef::from_slot(self.clone()), n);
        let actor = match crash::catch(A::start(&self.cold().args, &mut ctx)).await {
            Ok(Ok(actor)) => actor,
            Ok(Err(e)) => return Err(self.crash(CrashReason::StartFailed(e.to_string()), None)),
            Err(panic) => return Err(self.crash(panic, None)),
        };
        let ended = clock.nanos();
        let took = ended.saturating_sub(began);
        let ewma = self.start_ewma.load(Ordering::Relaxed);
        self.start_ewma.store(
            if ewma == 0 { took.max(1) } else { (3 * ewma + took) / 4 },
            Ordering::Relaxed,
        );
        self.ready_at.store(0, Ordering::Relaxed);
        self.last_active.store(ended, Ordering::Relaxed);
        self.set_state(SlotState::Running);
        self.mark_started();
        let parked = Box::new(Parked {
            actor,
            incarnation: n,
            handled: 0,
        });
        Ok((parked, ctx))
    }

    /// One instance (a new one recovered in `start`, or one resumed from hibernation or from a
    /// `start` begun in its launcher's thread): handles messages until it crashes or stops, or
    /// (`None`) hibernates.
    async fn instance(self: Arc<Self>, begin: Begin<A>) -> Option<Exit> {
        let (mut parked, mut ctx) = match self.opening(begin) {
            Opening::Serve(parked, ctx) => (parked, ctx),
            Opening::Exit(exit) => return Some(exit),
            // In a task already (restarted in place, after a backoff, or a `start` that had to
            // wait): it serves on, and hibernates when idle for `hibernate_after` (hibernating
            // at once would end this task only for the next message to spawn another: +5% on a
            // restart).
            Opening::Recover(recovering) => match recovering.await {
                Ok(recovered) => recovered,
                Err(exit) => return Some(exit),
            },
        };
        let clock = self.shared.clock();
        let mut age = self.cold().opts.rejuvenate_age().map(|a| Box::pin(clock.sleep(a)));
        loop {
            let next = poll_fn(|cx| {
                if let Some(asked) = self.asked() {
                    return Poll::Ready(asked);
                }
                if let Some(age) = age.as_mut()
                    && age.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Next::Rejuvenate);
                }
                match self.mailbox.poll_pop(cx) {
                    // Asked again now that the waker is registered: a request made after the
                    // look above woke no one if it came before the registration (`wake_consumer`
                    // found no waker), and then nothing else would ever wake this loop for it.
                    Poll::Pending => self.asked().map_or(Poll::Pending, Poll::Ready),
                    popped => popped.map(Next::Envelope),
                }
            })
            .await;
            let env = match next {
                Next::Envelope(Some(env)) => env,
                Next::Envelope(None) => return Some(Exit::Normal),
                Next::Rejuvenate => return Some(Exit::Rejuvenated),
                Next::Hibernate => match self.try_hibernate(parked) {
                    Ok(()) => return None,
                    Err(back) => {
                        parked = back;
                        continue;
                    }
                },
            };
            let Some(began) = self.unexpired(&env) else {
                // Only this loop writes the loop's counters.
                self.expired.bump();
                meter!(self.cold().opts.meters, expired());
                expire(self.path(), env);
                continue;
            };
            let msg = ctx.begin(env);
            // The header stays in `ctx` (not copied per message, nor kept in this task's state).
            let header = ctx.header().expect("the envelope being handled");
            if let (Some(dedup), Some(k)) = (&self.cold().dedup, &header.key)
                && let Some(reply) = dedup.get(k)
            {
                // Seen before: answered from the window, not executed again.
                ctx.reply(reply);
                continue;
            }
            // Attached to the handler's future: entered while it is polled, never across an await.
            // None while no subscriber was ever set (tracing's `log` feature, which axum turns on,
            // would otherwise format every envelope's fields for `log`: 10% of a tell) or when
            // the span is disabled: then nothing is attached, instrumented or dropped per message.
            let span = tracing::dispatcher::has_been_set()
                .then(|| {
                    tracing::debug_span!(
                        "envelope",
                        actor = %self.path(),
                        id = header.id.get(),
                        attempt = header.attempt,
                        trace_id = %header.trace.trace_id,
                        span_id = %header.id.span_id(),
                        parent_id = header.trace.parent.map(tracing::field::display),
                    )
                })
                .filter(|span| !span.is_disabled());
            #[cfg(feature = "otel")]
            if let Some(span) = &span {
                crate::otel::attach(span, &header.trace, header.id.span_id());
            }
            // Relaxed: the watchdog only needs to see it eventually.
            self.busy_since.store(began, Ordering::Relaxed);
            self.last_active.store(began, Ordering::Relaxed);
            // A sampled handling time is measured on the precise clock.
            #[cfg(feature = "metrics")]
            let began = match &self.cold().opts.meters {
                Some(_) if crate::meters::SlotMeters::sampled(self.handled.load(Ordering::Relaxed)) => clock.nanos(),
                _ => began,
            };
            let handling = crash::catch_handling(header.inherited(), parked.actor.handle(msg, &mut ctx));
            let outcome = match span {
                Some(span) => Either::Left(handling.instrument(span)),
                None => Either::Right(handling),
            }
            .await;
            self.busy_since.store(0, Ordering::Relaxed);
            #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
            let n = self.handled.bump();
            meter!(
                self.cold().opts.meters,
                handled(n, || clock.nanos().saturating_sub(began))
            );
            let reason = match outcome {
                Ok(Ok(reply)) => {
                    if let Some(dedup) = &self.cold().dedup
                        && !ctx.deferred()
                        && let Some(k) = ctx.header().and_then(|h| h.key.as_ref())
                    {
                        dedup.insert(k.clone(), &reply);
                    }
                    ctx.reply(reply);
                    None
                }
                Ok(Err(e)) => Some(CrashReason::HandleFailed(e.to_string())),
                Err(panic) => Some(panic),
            };
            if let Some(reason) = reason {
                let exit = self.crash(reason, ctx.header().cloned());
                if let Exit::Crash(report) = &exit {
                    ctx.crashed(report.clone());
                }
                return Some(exit);
            }
            if ctx.stop_requested() {
                return Some(Exit::Normal);
            }
            parked.handled += 1;
            if self
                .cold()
                .opts
                .rejuvenate_messages()
                .is_some_and(|n| parked.handled >= n)
            {
                return Some(Exit::Rejuvenated);
            }
        }
    }

    fn crash(&self, reason: CrashReason, envelope: Option<Header>) -> Exit {
        let report = Arc::new(CrashReport {
            path: self.path().owned(),
            reason,
            envelope,
        });
        #[cfg(feature = "observer")]
        self.shared.journal().record(
            crate::journal::Kind::Crash,
            self.path(),
            crate::journal::Detail::Crash(report.clone()),
        );
        Exit::Crash(report)
    }

    pub(crate) fn identity(&self) -> *const () {
        self as *const Self as *const ()
    }

    /// Clock nanos of the last sign of life: a message begun, or `start` completed (0: never).
    pub(crate) fn last_active(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// Whether its task was aborted from outside and may still be running (its instance not yet
    /// dropped).
    pub(crate) fn being_aborted(&self) -> bool {
        self.aborted_at.load(Ordering::Relaxed) != 0
    }

    /// Passivates an idle entity: closes its mailbox if nothing waits in it and no message is
    /// being handled, so that its instance ends after looking at the mailbox once more (a message
    /// taken just before still completes). Whether it did.
    pub(crate) fn try_passivate(&self) -> bool {
        self.state() == SlotState::Running
            && self.busy_since.load(Ordering::Relaxed) == 0
            && self.mailbox.close_if_empty()
    }
}

/// Logs a crash. When no `tracing` subscriber is installed at all, a panic is printed to stderr
/// instead, with the actor's path (the panic hook keeps actor panics off stderr): a panic never
/// vanishes, and is shown once. A subscriber that filters the event out is the user's choice.
fn report_crash(report: &CrashReport, restarting: bool) {
    let no_subscriber = tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>());
    if !no_subscriber {
        tracing::error!(actor = %report.path, crash = %report, restarting, "actor crashed");
    } else if matches!(report.reason, CrashReason::Panic { .. }) {
        eprintln!("crashonly: actor {report} (restarting: {restarting})");
    }
}

/// Answers an expired envelope: the asker gets `Expired`; a tell is reported, never dropped silently.
fn expire<M, R>(path: ActorPath<'_>, env: Envelope<M, ReplyTo<R>>) {
    tracing::warn!(actor = %path, id = env.header.id.get(), "dropped expired envelope");
    answer(env.reply, Err(DeliveryError::Expired));
}

#[cfg(all(test, not(crashonly_loom)))]
mod layout;
