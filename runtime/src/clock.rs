//! The clock seam: every deadline, TTL, backoff and restart-intensity window reads time here.
//!
//! It is tokio's clock, so tests run on paused, virtual time (`#[tokio::test(start_paused = true)]`)
//! and never sleep for real.

use std::future::Future;
use std::time::Duration;

/// A point in time on the runtime's clock (tokio's `Instant`, which pauses in tests).
pub type Instant = tokio::time::Instant;

/// The runtime's clock. One belongs to each [`System`](crate::System).
#[derive(Clone, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock { epoch: Instant::now() }
    }
}

impl Clock {
    /// `t` as nanoseconds since this clock was made, plus one (0 is kept for "none").
    pub(crate) fn nanos_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u64::MAX as u128 - 1) as u64
            + 1
    }

    /// Now, as [`nanos_of`](Self::nanos_of).
    pub(crate) fn nanos(&self) -> u64 {
        self.nanos_of(self.now())
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Completes at `deadline`.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> tokio::time::Sleep {
        tokio::time::sleep_until(deadline)
    }

    /// Completes after `delay`.
    pub(crate) fn sleep(&self, delay: Duration) -> tokio::time::Sleep {
        tokio::time::sleep(delay)
    }

    /// Runs `fut` until `deadline`; `None` when the deadline came first.
    pub(crate) async fn timeout_at<F: Future>(&self, deadline: Instant, fut: F) -> Option<F::Output> {
        tokio::time::timeout_at(deadline, fut).await.ok()
    }
}
