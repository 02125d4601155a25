//! When a slot will serve again (for `RetryAfter`), and whether an envelope is still current
//! when its turn comes.

use std::time::Duration;

use super::{Env, Slot};
use crate::actor::Actor;
use crate::clock::Instant;
use crate::sync::Ordering;

impl<A: Actor> Slot<A> {
    /// Records when the slot should serve again: after `delay` and a typical `start`.
    pub(super) fn expect_ready_in(&self, delay: Duration) {
        // An estimate: the coarse clock is close enough.
        self.expect_ready_at(self.shared.clock().coarse_nanos(), delay);
    }

    /// [`expect_ready_in`](Self::expect_ready_in) from `now` (clock nanos).
    pub(super) fn expect_ready_at(&self, now: u64, delay: Duration) {
        let at = now + delay.as_nanos() as u64 + self.start_ewma.load(Ordering::Relaxed);
        self.ready_at.store(at, Ordering::Relaxed);
        if !delay.is_zero() {
            self.next_start.store(now + delay.as_nanos() as u64, Ordering::Relaxed);
        }
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
        meter!(self.cold().opts.meters, retry_after());
        let wait = ready.saturating_sub(self.shared.clock().nanos()).max(1_000_000);
        #[cfg(feature = "observer")]
        self.retried_after.fetch_add(1, Ordering::Relaxed);
        Some(Duration::from_nanos(wait + self.shared.random() % (wait / 2 + 1)))
    }

    /// Now (clock nanos) if `env` has not expired: the coarse clock, unless a deadline that
    /// close decides (see `Clock::coarse`).
    #[inline]
    pub(super) fn unexpired(&self, env: &Env<A>) -> Option<u64> {
        let clock = self.shared.clock();
        let (now, began) = clock.coarse();
        if env.header.deadline <= now {
            return None;
        }
        if env.header.deadline > now + clock.slack() {
            return Some(began);
        }
        let now = clock.now();
        (!env.header.is_expired(now)).then(|| clock.nanos_of(now))
    }
}
