//! Hibernation: an idle actor gives up its task and keeps only its state.
//!
//! An instance that has nothing to do (it started to an empty mailbox, or the watchdog found it
//! idle for `Config::hibernate_after`) moves its actor into the slot's `Life` and lets its task
//! end. The mailbox's consumer waker is then the slot's own hibernation waker: the next push (or
//! close, or rejuvenation request) spawns a task that resumes the same instance where it stopped.
//! Nothing is lost or restarted: the actor's state, its incarnation and its mailbox are the ones
//! it had. Like OTP's `hibernate_after`, but what goes is the whole task (768 bytes per idle
//! actor), not only a stack.
//!
//! Invariants:
//! - A hibernating instance is held in `Life::parked` and nowhere else; it is taken out under the
//!   `Life` lock, by the task that resumes it or by `power_off` (which drops it: the external
//!   power-off switch works on a hibernating actor as on a running one). So at most one instance
//!   exists, and an aborted one never comes back.
//! - The instance hibernates under the `Life` lock and only if `Life::abort` still names its own
//!   task (`power_off` takes it): an instance aborted while about to hibernate ends instead.
//! - The waker registered under that same lock (with the mailbox's locks taken inside it, lock
//!   order rule 5 of `sync.rs`) is registered only if the mailbox is empty and open: a message
//!   pushed before is taken by the instance, one pushed after wakes the waker, which waits for the
//!   `Life` lock and then finds the instance parked. No wake-up is lost.
//! - The waker holds the slot weakly: a hibernating actor keeps nothing alive.
//! - Dedicated-thread actors, actors with an age limit (their timer lives in the task), and every
//!   actor in a loom model never hibernate.

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, RawWaker, RawWakerVTable, Waker};

use super::life::TaskEnded;
use super::{Life, Recovered, Slot};
use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::context::Context;
use crate::rt::AbortHandle;
use crate::stats::SlotState;
use crate::supervisor::Exit;
use crate::sync::{Arc, MutexGuard, Ordering, Weak};

/// Where a slot's task begins (16 bytes: it is part of every actor task's state).
pub(super) enum Begin<A: Actor> {
    /// A new instance: recover in `start`.
    Recover,
    /// A hibernating instance.
    Resume(Box<Parked<A>>),
    /// Where a `start` polled in the launcher's thread left off.
    Inline(Box<Inline<A>>),
}

/// Where a `start` polled in the launcher's thread left off, for the task that takes over.
pub(super) enum Inline<A: Actor> {
    /// It had to wait.
    Recovering(Recovering<A>),
    /// An instance started in the launcher's thread that has messages already (and whether its
    /// `start` asked to stop).
    Recovered(Box<Parked<A>>, bool),
    /// A `start` in the launcher's thread failed: the exit is handled as any.
    Exited(Exit),
}

/// A `start` being awaited (boxed: `start` runs once per instance, and an inline start future
/// would make every idle actor's task as large as the largest `start`).
pub(super) type Recovering<A> = Pin<Box<dyn Future<Output = Recovered<A>> + Send>>;

/// How a task's instance opens: served at once, after its `start`, or not at all.
pub(super) enum Opening<A: Actor> {
    Serve(Box<Parked<A>>, Context<A>),
    Recover(Recovering<A>),
    Exit(Exit),
}

/// `Life::inline`: no `start` is being polled outside a task.
pub(super) const INLINE_NONE: u8 = 0;
/// `Life::inline`: a `start` is being polled in its launcher's thread.
pub(super) const INLINE_POLLING: u8 = 1;
/// `Life::inline`: and the slot was powered off meanwhile: the instance is dropped when the poll
/// returns.
pub(super) const INLINE_ABORTED: u8 = 2;

/// The instance of a slot, between messages: what a hibernating actor keeps.
pub(super) struct Parked<A> {
    pub(super) actor: A,
    /// Its number (the `Context`'s incarnation), for the context rebuilt when it resumes.
    pub(super) incarnation: u64,
    /// Messages handled by this instance (for `rejuvenate_messages`).
    pub(super) handled: u64,
}

/// `Slot::hibernation`: the instance runs in a task.
pub(super) const LIVE: u8 = 0;
/// `Slot::hibernation`: the watchdog asked the running instance to hibernate when idle.
pub(super) const ASKED: u8 = 1;
/// `Slot::hibernation`: the instance is parked; its task has ended.
pub(super) const PARKED: u8 = 2;

impl<A: Actor> Slot<A> {
    /// Whether this slot's instances may hibernate at all.
    pub(super) fn may_hibernate(&self) -> bool {
        !cfg!(crashonly_loom)
            && !self.cold().opts.dedicated
            && self.cold().opts.rejuvenate_age().is_none()
            && self.shared.config().hibernate_after.is_some()
    }

    /// Parks the instance and lets the caller's task end, if the mailbox is empty and open and the
    /// task has not been aborted; otherwise hands the instance back to be served on.
    pub(super) fn try_hibernate(&self, parked: Box<Parked<A>>) -> Result<(), Box<Parked<A>>> {
        let mut life = self.cold().life.lock();
        // `power_off` takes `abort`, and a relaunch puts its own task's there: an aborted
        // instance (even one whose task was abandoned and ran on) must end, not hibernate.
        if !life.abort.as_ref().is_some_and(AbortHandle::is_current) {
            self.hibernation.store(LIVE, Ordering::Relaxed);
            return Err(parked);
        }
        self.hibernate_locked(&mut life, parked)
    }

    /// `try_hibernate` under the `Life` lock, once the instance is known not to be powered off.
    fn hibernate_locked(&self, life: &mut Life<A>, parked: Box<Parked<A>>) -> Result<(), Box<Parked<A>>> {
        if self.state() != SlotState::Running || !self.mailbox.park_consumer(&self.hibernation_waker()) {
            self.hibernation.store(LIVE, Ordering::Relaxed);
            return Err(parked);
        }
        life.parked = Some(parked);
        // The ending task's handles go: a finished task's memory (its future's room, about
        // 800 B) is freed only when the last of them is, and a hibernating actor has no task to
        // abort or join (the next wake-up makes new ones).
        life.task = None;
        life.abort = None;
        self.hibernation.store(PARKED, Ordering::Relaxed);
        self.hibernations.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The mailbox woke a hibernating instance: a task resumes it (nothing when it was taken
    /// meanwhile, by `power_off` or an earlier wake-up).
    fn wake_hibernated(self: Arc<Self>) {
        let mut life = self.cold().life.lock();
        let Some(parked) = life.parked.take() else { return };
        self.hibernation.store(LIVE, Ordering::Relaxed);
        let generation = self.task_gen.fetch_add(1, Ordering::Relaxed) + 1;
        self.take_over(&mut life, self.clone(), generation, Begin::Resume(parked));
    }

    /// Spawns the task (launch number `generation`) that runs this slot from `begin`, and makes
    /// it the one `life` aborts and joins.
    fn take_over(&self, life: &mut Life<A>, me: Arc<Self>, generation: u64, begin: Begin<A>) {
        let task = self.shared.spawn(async move {
            let ended = TaskEnded(me, generation);
            ended.0.clone().run(begin).await;
        });
        life.abort = Some(task.abort_handle());
        life.task = Some(task);
    }

    /// How the task that begins with `begin` opens.
    pub(super) fn opening(self: &Arc<Self>, begin: Begin<A>) -> Opening<A> {
        let context = |parked: &Parked<A>| Context::new(ActorRef::from_slot(self.clone()), parked.incarnation);
        match begin {
            Begin::Recover => Opening::Recover(Box::pin(self.clone().recover())),
            Begin::Resume(parked) => {
                let ctx = context(&parked);
                Opening::Serve(parked, ctx)
            }
            Begin::Inline(inline) => match *inline {
                Inline::Recovering(recovering) => Opening::Recover(recovering),
                Inline::Exited(exit) => Opening::Exit(exit),
                Inline::Recovered(parked, stop) => {
                    let mut ctx = context(&parked);
                    if stop {
                        ctx.stop();
                    }
                    Opening::Serve(parked, ctx)
                }
            },
        }
    }

    /// Launches a new instance without a task of its own, if it can: `start` is polled once here,
    /// in the launcher's thread (as OTP's `init` runs before `start_link` returns). Started to an
    /// empty mailbox, the instance hibernates at once and no task is ever made for it; otherwise
    /// (messages are waiting, `start` has to wait, or it failed) a task takes over from where it
    /// is. Called with the `Life` lock held and `generation` counted; releases the lock while
    /// `start` runs. `None` once launched; the lock back when the slot cannot hibernate (the
    /// caller spawns the usual task).
    pub(super) fn launch_inline<'a>(
        &'a self,
        mut life: MutexGuard<'a, Life<A>>,
        generation: u64,
    ) -> Option<MutexGuard<'a, Life<A>>> {
        let me = match self.myself() {
            Some(me) if self.may_hibernate() => me,
            _ => return Some(life),
        };
        life.inline = INLINE_POLLING;
        drop(life);
        let mut recovering: Recovering<A> = Box::pin(me.clone().recover());
        let polled = {
            let _runtime = self.shared.executor().enter();
            recovering.as_mut().poll(&mut TaskContext::from_waker(Waker::noop()))
        };
        let mut life = self.cold().life.lock();
        let aborted = life.inline == INLINE_ABORTED;
        life.inline = INLINE_NONE;
        if aborted {
            // Powered off while it started: the instance (or its `start`) ends here, unheard of
            // (the power-off's caller decides what comes next).
            drop(life);
            drop(polled);
            drop(recovering);
            return None;
        }
        let inline = match polled {
            Poll::Ready(Ok((parked, ctx))) => {
                let stop = ctx.stop_requested();
                drop(ctx);
                if stop {
                    Inline::Recovered(parked, true)
                } else {
                    match self.hibernate_locked(&mut life, parked) {
                        Ok(()) => return None,
                        Err(parked) => Inline::Recovered(parked, false),
                    }
                }
            }
            Poll::Ready(Err(exit)) => Inline::Exited(exit),
            // The next poll, in the task, registers the task's waker (the no-op one goes).
            Poll::Pending => Inline::Recovering(recovering),
        };
        self.take_over(&mut life, me, generation, Begin::Inline(Box::new(inline)));
        None
    }

    /// Whether the instance runs in a task and has been idle since before `now - after` (clock
    /// nanos): the watchdog then asks it to hibernate. Atomics only (read under the registry's
    /// lock).
    pub(crate) fn is_idle_for(&self, now: u64, after: u64) -> bool {
        self.hibernation.load(Ordering::Relaxed) == LIVE
            && self.busy_since.load(Ordering::Relaxed) == 0
            && now.saturating_sub(self.last_active.load(Ordering::Relaxed)) >= after
            && self.state() == SlotState::Running
            && self.may_hibernate()
    }

    /// What the instance was asked to do between messages (set by another thread, which then
    /// wakes the consumer): rejuvenate, or hibernate. The loop looks before it polls its
    /// mailbox and again after it has registered its waker there (the asker's store comes before
    /// its `wake_consumer`, which takes the same lock as the registration: either the wake finds
    /// the waker or the second look sees the flag).
    pub(super) fn asked<E>(&self) -> Option<super::Next<E>> {
        if self.rejuvenate.load(Ordering::Relaxed) != 0 {
            Some(super::Next::Rejuvenate)
        } else if self.hibernation.load(Ordering::Relaxed) == ASKED {
            Some(super::Next::Hibernate)
        } else {
            None
        }
    }

    /// Asks the running instance to hibernate when it next finds its mailbox empty.
    pub(crate) fn ask_to_hibernate(&self) {
        if self.hibernation.replace_if(LIVE, ASKED) {
            self.mailbox.wake_consumer();
        }
    }

    /// Whether the instance is parked (for `Stats`).
    pub(super) fn is_hibernating(&self) -> bool {
        self.hibernation.load(Ordering::Relaxed) == PARKED
    }

    /// A waker that resumes this slot's hibernating instance; it holds the slot weakly.
    fn hibernation_waker(&self) -> Waker {
        let data = Weak::into_raw(self.cold().me.clone()).cast::<()>();
        // SAFETY: `data` comes from `Weak::<Slot<A>>::into_raw`, and every function of the
        // vtable treats it as such (see `vtable`).
        unsafe { Waker::from_raw(RawWaker::new(data, Self::vtable())) }
    }

    /// The hibernation waker's functions.
    const VTABLE: RawWakerVTable =
        RawWakerVTable::new(Self::clone_waker, Self::wake, Self::wake_by_ref, Self::drop_waker);

    fn vtable() -> &'static RawWakerVTable {
        &Self::VTABLE
    }

    /// The weak reference a waker's data stands for, not dropped when the value is.
    ///
    /// # Safety
    /// `data` is a pointer from `Weak::<Slot<A>>::into_raw` that the waker still owns.
    unsafe fn weak(data: *const ()) -> ManuallyDrop<Weak<Self>> {
        // SAFETY: as the caller promises.
        ManuallyDrop::new(unsafe { Weak::from_raw(data.cast::<Self>()) })
    }

    unsafe fn clone_waker(data: *const ()) -> RawWaker {
        // SAFETY: `data` is the waker's own (the vtable's contract).
        let weak = unsafe { Self::weak(data) };
        RawWaker::new(Weak::into_raw(Weak::clone(&weak)).cast::<()>(), Self::vtable())
    }

    unsafe fn wake(data: *const ()) {
        // SAFETY: `data` is the waker's own; waking consumes it, so it is dropped after.
        unsafe {
            Self::wake_by_ref(data);
            Self::drop_waker(data);
        }
    }

    unsafe fn wake_by_ref(data: *const ()) {
        // SAFETY: `data` is the waker's own (the vtable's contract).
        let weak = unsafe { Self::weak(data) };
        if let Some(slot) = weak.upgrade() {
            slot.wake_hibernated();
        }
    }

    unsafe fn drop_waker(data: *const ()) {
        // SAFETY: `data` is the waker's own, and dropping consumes it.
        drop(ManuallyDrop::into_inner(unsafe { Self::weak(data) }));
    }
}
