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

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::actor::{Actor, Context};
use crate::actor_ref::ActorRef;
use crate::crash::{self, CrashReason, CrashReport};
use crate::envelope::{answer, Envelope, Header, ReplyTo};
use crate::error::Error;
use crate::mailbox::Mailbox;
use crate::monitor::{Down, DownReason, Monitors};
use crate::registry::ActorId;
use crate::rt::{AbortHandle, Task};
use crate::supervisor::{ChildHandle, Decision, Exit, SupNode};
use crate::sync::{Arc, AtomicU64, AtomicU8, Mutex, Ordering, Weak};
use crate::system::Shared;

/// Where a slot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Running `start` (recovering).
    Starting,
    /// Handling messages.
    Running,
    /// Between instances: crashed, waiting for its restart (messages wait in the mailbox).
    Restarting,
    /// Gone for good.
    Dead,
}

impl SlotState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => SlotState::Starting,
            1 => SlotState::Running,
            2 => SlotState::Restarting,
            _ => SlotState::Dead,
        }
    }
}

/// A snapshot of a slot's progress counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Messages handled to completion (successfully or not) by all instances.
    pub handled: u64,
    /// Instances that crashed (including ones aborted by their supervisor).
    pub crashes: u64,
    /// Instances started after the first one.
    pub restarts: u64,
    /// Messages waiting in the mailbox.
    pub mailbox_len: usize,
    /// Current state.
    pub state: SlotState,
}

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
    pub(crate) shared: Arc<Shared>,
    pub(crate) mailbox: Mailbox<Envelope<A::Msg, A::Reply>>,
    pub(crate) monitors: Monitors,
    args: A::Args,
    parent: Weak<SupNode>,
    me: Weak<Slot<A>>,
    life: Mutex<Life>,
    // Relaxed: counters are statistics; nothing is ordered by them.
    handled: AtomicU64,
    crashes: AtomicU64,
    restarts: AtomicU64,
    state: AtomicU8,
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
    pub(crate) fn new(
        id: ActorId,
        path: Arc<str>,
        shared: Arc<Shared>,
        args: A::Args,
        capacity: usize,
        parent: Weak<SupNode>,
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
            handled: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            state: AtomicU8::new(SlotState::Starting as u8),
        })
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            handled: self.handled.load(Ordering::Relaxed),
            crashes: self.crashes.load(Ordering::Relaxed),
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
            let Some(parent) = self.parent.upgrade() else {
                return;
            };
            let decision = parent.decide(self.identity(), &exit);
            let restarting = matches!(decision, Decision::Restart { .. });
            if let Exit::Crash(report) = &exit {
                self.crashes.fetch_add(1, Ordering::Relaxed);
                tracing::error!(actor = %self.path, crash = %report, restarting, "actor crashed");
            }
            self.set_state(if restarting {
                SlotState::Restarting
            } else {
                self.state()
            });
            self.fire_monitors(&exit, restarting);
            match decision {
                Decision::Restart {
                    scope: crate::supervisor::Scope::One,
                    delay,
                } => {
                    if !delay.is_zero() {
                        self.shared.clock.sleep(delay).await;
                    }
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(actor = %self.path, delay_ms = delay.as_millis() as u64, "restarting actor");
                }
                Decision::Remove => {
                    self.kill();
                    return;
                }
                Decision::Ignore => return,
                other => {
                    if let Decision::Restart { scope, .. } = other {
                        parent.abort_group(self.identity(), scope);
                    }
                    let me: Arc<dyn ChildHandle> = self.clone();
                    parent.submit(me, other);
                    return;
                }
            }
        }
    }

    fn fire_monitors(&self, exit: &Exit, restarting: bool) {
        let reason = match exit {
            Exit::Crash(r) => DownReason::Crashed(r.clone()),
            Exit::Normal => DownReason::Ended,
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
        let mut ctx = Context::new(ActorRef::from_slot(self.clone()));
        let mut actor = match crash::catch(A::start(&self.args, &mut ctx)).await {
            Ok(Ok(actor)) => actor,
            Ok(Err(e)) => return self.crash(CrashReason::StartFailed(e.to_string()), None),
            Err(panic) => return self.crash(panic, None),
        };
        self.set_state(SlotState::Running);
        loop {
            let Some(env) = self.mailbox.pop().await else {
                return Exit::Normal;
            };
            let now = self.shared.clock.now();
            if env.header.is_expired(now) {
                expire(&self.path, env);
                continue;
            }
            let (msg, guard) = InFlight::take(env, &self);
            ctx.set_header(Some(guard.header));
            let span = tracing::debug_span!("envelope", actor = %self.path, id = guard.header.id.get(), attempt = guard.header.attempt);
            let outcome = {
                let _enter = span.enter();
                crash::catch(actor.handle(msg, &mut ctx)).await
            };
            self.handled.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok(Ok(reply)) => guard.reply(reply),
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
            answer(env.reply, Err(Error::Dead));
        }
        self.shared.registry.remove(self.id);
    }

    fn identity(&self) -> *const () {
        self as *const Self as *const ()
    }
}

/// Answers an expired envelope: the asker gets `Expired`; a tell is reported, never dropped silently.
fn expire<M, R>(path: &str, env: Envelope<M, R>) {
    tracing::warn!(actor = %path, id = env.header.id.get(), "dropped expired envelope");
    answer(env.reply, Err(Error::Expired));
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
    fn take(env: Envelope<A::Msg, A::Reply>, slot: &'a Slot<A>) -> (A::Msg, Self) {
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
            Exit::Normal => unreachable!("crashed() is only called with a crash"),
        };
        self.settle(report);
    }

    /// At-least-once for idempotent envelopes whose deadline allows; at-most-once otherwise.
    fn settle(&mut self, report: Arc<CrashReport>) {
        let now = self.slot.shared.clock.now();
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
                        answer(env.reply, Err(Error::Dead));
                        return;
                    }
                }
            }
        }
        answer(self.reply.take(), Err(Error::Crashed(report)));
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

    fn identity(&self) -> *const () {
        Slot::identity(self)
    }

    fn launch(&self) {
        let Some(me) = self.myself() else { return };
        let mut life = self.life.lock();
        if life.launched {
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
        life.launched = true;
        self.set_state(SlotState::Starting);
        let task = self.shared.exec.spawn(me.run());
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
        if self.state() != SlotState::Dead {
            self.set_state(SlotState::Restarting);
        }
    }

    fn join(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let task = self.life.lock().task.take();
        Box::pin(async move {
            if let Some(task) = task {
                task.join().await;
            }
        })
    }

    fn kill(&self) {
        ChildHandle::abort(self);
        Slot::kill(self);
    }
}
