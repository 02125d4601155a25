//! What is done to a slot from outside: launched, aborted, joined, stopped or killed by its
//! supervisor; crash-rebooted by the watchdog or a user; abandoned when its task does not end;
//! waited on until its first start.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use super::{LastCrash, Slot, SlotState};
use crate::actor::Actor;
use crate::crash::{CrashReason, CrashReport};
use crate::error::DeliveryError;
use crate::monitor::{Down, DownReason};
use crate::path::ActorPath;
use crate::registry::{Inspect, Snapshot};
use crate::reply::answer;
use crate::supervisor::{ChildHandle, Decision, Scope};
use crate::sync::{Arc, Ordering};

/// Clears the slot's `aborted_at` when its task's future ends or is dropped: the task has
/// stopped. Only for its own launch: an abandoned task that ends late clears nothing of a newer one.
pub(super) struct TaskEnded<A: Actor>(pub(super) Arc<Slot<A>>, pub(super) u64);

impl<A: Actor> Drop for TaskEnded<A> {
    fn drop(&mut self) {
        if self.0.task_gen.load(Ordering::Relaxed) == self.1 {
            self.0.aborted_at.store(0, Ordering::Relaxed);
        }
    }
}

impl<A: Actor> Slot<A> {
    /// The external power-off switch: aborts the task and its timers without waiting, noting why
    /// for the asker of the message in flight. Whether an instance was running (not a task that
    /// only waited out its restart backoff).
    fn power_off(&self, reason: Option<CrashReason>) -> Option<u64> {
        if let Some(reason) = reason {
            self.set_abort_reason(reason);
        }
        let state = self.state();
        let now = self.shared.nanos();
        let mut life = self.cold().life.lock();
        // A hibernating instance has no task: it is dropped here (after the lock), which is its
        // power-off.
        let parked = life.parked.take();
        let mut was_running = parked.is_some();
        if life.inline == super::hibernate::INLINE_POLLING {
            // A `start` polled in its launcher's thread: its instance is dropped when it returns.
            life.inline = super::hibernate::INLINE_ABORTED;
            was_running = true;
        }
        if parked.is_some() {
            self.hibernation.store(super::hibernate::LIVE, Ordering::Relaxed);
        }
        if let Some(a) = life.abort.take() {
            if !a.is_finished() {
                // Before the abort: a task that ends at once clears it again (`TaskEnded`).
                // Relaxed: read by the watchdog, which only needs to see it eventually.
                self.aborted_at.store(now, Ordering::Relaxed);
                was_running = true;
            }
            a.abort();
        }
        life.timers.take().iter().flat_map(|t| t.iter()).for_each(|t| t.abort());
        drop(life);
        drop(parked);
        self.busy_since.store(0, Ordering::Relaxed);
        if !matches!(state, SlotState::Dead | SlotState::Stopped) {
            self.set_state(SlotState::Restarting);
            self.expect_ready_at(now, Duration::ZERO);
        }
        (was_running && matches!(state, SlotState::Starting | SlotState::Running)).then_some(now)
    }

    /// A recovery agent's crash-reboot: abort the instance from outside (it is not asked), then
    /// the supervisor decides as for any crash. The asker of the message in flight learns `reason`.
    /// `Err(Dead)` when the slot is gone or terminated; a slot between instances is left alone.
    pub(crate) fn crash_from_outside(&self, reason: CrashReason) -> Result<(), DeliveryError> {
        let Some(me) = self.myself() else {
            return Err(DeliveryError::Dead);
        };
        if !self.claim_exit() {
            return match self.state() {
                SlotState::Dead | SlotState::Stopped => Err(DeliveryError::Dead),
                // Between instances, or claimed by a crash from inside: nothing more to crash.
                _ => Ok(()),
            };
        }
        self.power_off(Some(reason.clone()));
        let exit = self.crash(reason, None);
        let Some(parent) = self.cold().parent.upgrade() else {
            return Ok(());
        };
        let decision = parent.decide(self.identity(), &exit);
        if let Some(delay) = me.after_exit(&parent, &exit, decision) {
            // The task is aborted (or stuck): the supervisor joins it, within bounds, and relaunches.
            parent.submit(
                me,
                Decision::Restart {
                    scope: Scope::One,
                    delay,
                },
            );
        }
        Ok(())
    }

    /// Notes why the running instance is being aborted from outside.
    fn set_abort_reason(&self, reason: CrashReason) {
        let n = self.incarnations.load(Ordering::Relaxed);
        self.rare(|r| r.abort_reason = Some((n, reason)));
    }

    /// Why instance `incarnation` was aborted from outside, for its in-flight asker (taken once;
    /// a reason noted for another instance is left alone).
    pub(crate) fn take_abort_reason(&self, incarnation: u64) -> Option<CrashReason> {
        let mut rare = self.cold().rare.lock();
        let r = rare.as_mut()?;
        match &r.abort_reason {
            Some((n, _)) if *n == incarnation => r.abort_reason.take().map(|(_, reason)| reason),
            _ => None,
        }
    }

    /// A new task starts: what was noted for the old ones no longer holds.
    fn forget_last_instance(&self) {
        self.down.store(0, Ordering::Relaxed);
        if let Some(r) = self.cold().rare.lock().as_mut() {
            r.abort_reason = None;
            r.gave_up = false;
        }
    }

    /// Counts the aborted task as abandoned, once, whoever finds it first (the supervisor's join
    /// or the watchdog's thread).
    fn abandon_task(&self) {
        if self.aborted_at.swap_zero() != 0 {
            crate::watchdog::abandoned(&self.shared, self.path());
        }
    }

    /// An instance has completed `start`: wake whoever waits for it.
    pub(super) fn mark_started(&self) {
        if self.started.load(Ordering::Acquire) == 0 {
            // SeqCst with the waiter's store of `waiting` and load of `started` (a store-load
            // pair on each side): either the waiter sees `started`, or this sees `waiting` and
            // wakes it.
            self.started.store(1, Ordering::SeqCst);
            if self.waiting.load(Ordering::SeqCst) != 0 {
                self.wake_waiters();
            }
        }
    }

    pub(super) fn wake_waiters(&self) {
        let waiters = self
            .cold()
            .rare
            .lock()
            .as_mut()
            .map(|r| std::mem::take(&mut r.waiters))
            .unwrap_or_default();
        waiters.into_iter().for_each(|w| w.wake());
    }

    /// Ready once an instance has completed `start` (`Ok`), or the slot is gone or was given up
    /// before one did (the last crash, or `Dead`).
    pub(crate) fn poll_started(&self, cx: &mut TaskContext<'_>) -> Poll<Result<(), DeliveryError>> {
        if self.started.load(Ordering::Acquire) != 0 {
            return Poll::Ready(Ok(()));
        }
        // SeqCst: pairs with `mark_started` (see there).
        self.waiting.store(1, Ordering::SeqCst);
        // Cloned before the lock and, when not kept, dropped after it: nothing of the waker's
        // runs while `rare` is held.
        let mut waker = Some(cx.waker().clone());
        let poll = self.rare(|r| {
            // Checked again under the lock that `wake_waiters` takes: no wake-up is lost.
            if self.started.load(Ordering::SeqCst) != 0 {
                return Poll::Ready(Ok(()));
            }
            // `down` is set before `wake_waiters` takes this lock: seen here, or woken there.
            if self.down.load(Ordering::Relaxed) != 0 || r.gave_up {
                return Poll::Ready(Err(match &r.last_crash {
                    Some(LastCrash::Report(report, _)) => DeliveryError::Crashed(report.clone()),
                    Some(LastCrash::Aborted(_)) => DeliveryError::Crashed(Arc::new(CrashReport {
                        path: self.path().owned(),
                        reason: CrashReason::Aborted,
                        envelope: None,
                    })),
                    None => DeliveryError::Dead,
                }));
            }
            if let Some(w) = waker.take_if(|w| !r.waiters.iter().any(|known| known.will_wake(w))) {
                r.waiters.push(w);
            }
            Poll::Pending
        });
        drop(waker);
        poll
    }

    /// Closes the mailbox: whoever waits is told `Dead`, and so is every later sender.
    fn close_mailbox(&self) {
        self.cancel_timers();
        for env in self.mailbox.close() {
            answer(env.reply, Err(DeliveryError::Dead));
        }
    }

    /// The slot dies for good: nothing more is accepted, and whoever waits is told `Dead`.
    pub(super) fn kill(&self) {
        self.set_state(SlotState::Dead);
        self.close_mailbox();
        self.shared
            .registry()
            .remove(self.id, self.named.then_some(&*self.base));
        // Links hold the linked actor: forgetting the watchers also breaks those cycles.
        self.monitors.clear();
        self.down.store(1, Ordering::Relaxed);
        self.wake_waiters();
    }
}

impl<A: Actor> ChildHandle for Slot<A> {
    fn path(&self) -> ActorPath<'_> {
        Slot::path(self)
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
        if matches!(self.state(), SlotState::Dead | SlotState::Stopped) {
            // Gone, or terminated by hand: only `resume` (restart_child) brings it back.
            return;
        }
        self.forget_last_instance();
        let mut life = self.cold().life.lock();
        if life.abort.as_ref().is_some_and(|a| !a.is_finished()) || life.inline != super::hibernate::INLINE_NONE {
            // Never two instances: the running task (or a `start` polled in its launcher's
            // thread) must be aborted (and joined) first.
            return;
        }
        if life.launched {
            self.count_restart();
        }
        life.launched = true;
        let generation = self.task_gen.fetch_add(1, Ordering::Relaxed) + 1;
        if delay.is_zero() {
            let Some(back) = self.launch_inline(life, generation) else {
                return;
            };
            life = back;
        }
        // The backoff is the new task's first step: aborting the slot cancels a pending restart,
        // and the supervisor is free to restart other children meanwhile.
        let run = async move {
            let ended = TaskEnded(me, generation);
            let me = &ended.0;
            if !delay.is_zero() {
                me.expect_ready_in(delay);
                // Boxed: a rare path, kept out of every idle actor's task.
                Box::pin(me.shared.clock().sleep(delay)).await;
            }
            me.clone().run(super::hibernate::Begin::Recover).await;
        };
        let task = if self.cold().opts.dedicated {
            self.shared.executor().spawn_thread(&self.path().to_string(), run)
        } else {
            self.shared.spawn(run)
        };
        life.abort = Some(task.abort_handle());
        life.task = Some(task);
    }

    fn resume(&self) {
        if self.state() == SlotState::Stopped {
            self.mailbox.reopen();
            self.set_state(SlotState::Restarting);
        }
    }

    fn halt(&self) {
        self.power_off(None);
    }

    fn abort(&self) {
        if let Some(now) = self.power_off(None) {
            // Aborted by its supervisor (a sibling's group restart, its subtree restarting):
            // counted, and remembered without a report or a second clock read.
            meter!(self.cold().opts.meters, crashed());
            #[cfg(not(crashonly_loom))]
            let at = Some(self.shared.clock().instant_of(now));
            #[cfg(crashonly_loom)]
            let at = {
                let _ = now;
                None
            };
            self.rare(|r| {
                r.crashes += 1;
                r.last_crash = Some(LastCrash::Aborted(at));
            });
        }
    }

    fn join(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let task = self.cold().life.lock().task.take();
        Box::pin(async move {
            // A `start` polled in its launcher's thread (another thread: this one is here) ends
            // by itself, within its one poll.
            while self.cold().life.lock().inline != super::hibernate::INLINE_NONE {
                crate::rt::yield_now().await;
            }
            if let Some(task) = task {
                // A task stuck in blocking code never sees its abort: it is abandoned and counted.
                if task.join_within(self.shared.policy().abandon_after()).await {
                    self.aborted_at.store(0, Ordering::Relaxed);
                } else {
                    self.abandon_task();
                }
            }
        })
    }

    fn stop(&self) {
        if self.state() == SlotState::Dead {
            return;
        }
        self.set_state(SlotState::Stopped);
        self.close_mailbox();
        self.down.store(1, Ordering::Relaxed);
        self.monitors.fire(|| Down {
            id: self.id,
            path: self.path().owned(),
            reason: DownReason::Ended,
            restarting: false,
        });
        self.wake_waiters();
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
            path: self.path().owned(),
            stats: Some(self.stats()),
        }
    }

    #[cfg(feature = "metrics")]
    fn meters(&self) -> Option<(Arc<crate::meters::SlotMeters>, usize)> {
        Some((self.cold().opts.meters.clone()?, self.mailbox.len()))
    }

    fn is_hung(&self, now: u64) -> bool {
        crate::watchdog::is_hung(
            self.busy_since.load(Ordering::Relaxed),
            self.cold().opts.handling(),
            now,
        )
    }

    /// The watchdog's crash-restart: power off from outside first, then the usual decision.
    fn hang(&self, now: u64) {
        let busy = self.busy_since.swap_zero();
        if busy == 0 {
            return; // finished meanwhile, or the other scan got it
        }
        let reason = CrashReason::Hung {
            busy_ms: Duration::from_nanos(now.saturating_sub(busy)).as_millis(),
            lease_ms: self.cold().opts.handling().as_millis(),
        };
        #[cfg(feature = "observer")]
        self.shared.journal().record(
            crate::journal::Kind::Watchdog,
            self.path(),
            crate::journal::Detail::Text(reason.to_string()),
        );
        let _ = self.crash_from_outside(reason);
    }

    #[cfg(feature = "observer")]
    fn observe(&self) -> crate::stats::Observed {
        crate::stats::Observed::Actor {
            capacity: self.mailbox.capacity(),
            retry_after: self.retried_after.load(Ordering::Relaxed),
        }
    }

    #[cfg(feature = "observer")]
    fn crash_reboot(&self) -> bool {
        self.crash_from_outside(CrashReason::Killed).is_ok()
    }

    #[cfg(feature = "observer")]
    fn rejuvenate_now(&self) {
        self.request_rejuvenation();
    }

    fn is_idle_for(&self, now: u64, after: u64) -> bool {
        Slot::is_idle_for(self, now, after)
    }

    fn hibernate(&self) {
        self.ask_to_hibernate();
    }

    fn is_overdue(&self, now: u64, limit: Duration) -> bool {
        crate::watchdog::is_overdue(self.aborted_at.load(Ordering::Relaxed), limit, now)
    }

    fn abandon(&self) {
        let finished = {
            let life = self.cold().life.lock();
            match &life.task {
                Some(t) => t.abort_handle().is_finished(),
                // Taken by a supervisor's join in progress: the join decides.
                None => return,
            }
        };
        if finished {
            // It did end: `aborted_at` was only stale.
            self.aborted_at.store(0, Ordering::Relaxed);
        } else {
            self.abandon_task();
        }
    }
}
