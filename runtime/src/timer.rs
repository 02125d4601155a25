//! Timers: messages an actor sends to itself later, or at an interval.

use std::time::Duration;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::error::DeliveryError;
use crate::rt::AbortHandle;

/// A running timer. Dropping it does not cancel it; [`Timer::cancel`] or a crash of its owner does.
#[derive(Debug)]
pub struct Timer {
    abort: AbortHandle,
}

impl Timer {
    /// Stops the timer; messages already sent stay in the mailbox.
    pub fn cancel(&self) {
        self.abort.abort();
    }

    /// Whether it has fired for the last time or was cancelled.
    pub fn is_finished(&self) -> bool {
        self.abort.is_finished()
    }
}

pub(crate) fn send_after<A: Actor>(to: &ActorRef<A>, delay: Duration, msg: A::Msg) -> Timer {
    let me = to.clone();
    let slot = to.slot();
    let clock = slot.shared().clock().clone();
    let task = slot.shared().spawn(async move {
        clock.sleep(delay).await;
        if let Err(e) = me.tell(msg).await {
            tracing::warn!(actor = %me.path(), error = %e, "timer message not delivered");
        }
    });
    let abort = task.abort_handle();
    slot.add_timer(abort.clone());
    Timer { abort }
}

pub(crate) fn send_interval<A, F>(to: &ActorRef<A>, period: Duration, make: F) -> Timer
where
    A: Actor,
    F: Fn() -> A::Msg + Send + Sync + 'static,
{
    let me = to.clone();
    let slot = to.slot();
    let clock = slot.shared().clock().clone();
    let period = period.max(Duration::from_millis(1));
    let task = slot.shared().spawn(async move {
        let mut next = clock.now() + period;
        loop {
            clock.sleep_until(next).await;
            if let Err(e) = me.tell(make()).ttl(period).await {
                tracing::warn!(actor = %me.path(), error = %e, "interval message not delivered");
                if matches!(e.error(), DeliveryError::Dead) {
                    return;
                }
            }
            next += period;
        }
    });
    let abort = task.abort_handle();
    slot.add_timer(abort.clone());
    Timer { abort }
}
