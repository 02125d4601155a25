//! The clock seam: every deadline, TTL, backoff and restart-intensity window reads time here.
//!
//! It is tokio's clock, so tests run on paused, virtual time (`#[tokio::test(start_paused = true)]`)
//! and never sleep for real. Nothing else in the crate names `tokio::time` (`clippy.toml`).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::future::Future;
use std::time::Duration;

/// A point in time on the runtime's clock (tokio's `Instant`, which pauses in tests).
pub type Instant = tokio::time::Instant;

/// The runtime's clock. One belongs to each [`System`](crate::System).
///
/// Under `--cfg crashonly_loom` it is a manual clock: time stands still until a test calls
/// `Clock::advance`, so TTLs, ask deadlines, backoff and intensity windows are
/// model-checked without real time.
#[derive(Clone, Debug)]
pub struct Clock {
    epoch: Instant,
    #[cfg(crashonly_loom)]
    manual: crate::sync::Arc<manual::Manual>,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            epoch: Instant::now(),
            #[cfg(crashonly_loom)]
            manual: Default::default(),
        }
    }
}

/// What [`Clock::sleep`] returns.
#[cfg(not(crashonly_loom))]
pub(crate) type Sleep = tokio::time::Sleep;

/// What [`Clock::sleep`] returns.
#[cfg(crashonly_loom)]
pub(crate) type Sleep = manual::Sleep;

impl Clock {
    /// `t` as nanoseconds since this clock was made, plus one (0 is kept for "none").
    pub(crate) fn nanos_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u64::MAX as u128 - 1) as u64
            + 1
    }

    /// The instant of a value of [`nanos_of`](Self::nanos_of).
    pub(crate) fn instant_of(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos.saturating_sub(1))
    }

    /// Now, as [`nanos_of`](Self::nanos_of).
    pub(crate) fn nanos(&self) -> u64 {
        self.nanos_of(self.now())
    }

    /// The current time.
    #[cfg(not(crashonly_loom))]
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// The current time: the epoch plus every [`advance`](Clock::advance) so far.
    #[cfg(crashonly_loom)]
    pub fn now(&self) -> Instant {
        self.epoch + self.manual.elapsed()
    }

    /// Moves time forward by `by` and wakes every sleep that is now due (manual clock only).
    #[cfg(crashonly_loom)]
    pub fn advance(&self, by: Duration) {
        self.manual.advance(by);
    }

    /// Completes at `deadline`.
    #[cfg(not(crashonly_loom))]
    pub(crate) fn sleep_until(&self, deadline: Instant) -> Sleep {
        tokio::time::sleep_until(deadline)
    }

    /// Completes at `deadline`.
    #[cfg(crashonly_loom)]
    pub(crate) fn sleep_until(&self, deadline: Instant) -> Sleep {
        manual::Sleep::new(self.manual.clone(), deadline.saturating_duration_since(self.epoch))
    }

    /// Completes after `delay`.
    pub(crate) fn sleep(&self, delay: Duration) -> Sleep {
        self.sleep_until(self.now() + delay)
    }

    /// Runs `fut` until `deadline`; `None` when the deadline came first.
    pub(crate) async fn timeout_at<F: Future>(&self, deadline: Instant, fut: F) -> Option<F::Output> {
        let mut fut = std::pin::pin!(fut);
        let mut sleep = std::pin::pin!(self.sleep_until(deadline));
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(cx) {
                return std::task::Poll::Ready(Some(v));
            }
            sleep.as_mut().poll(cx).map(|()| None)
        })
        .await
    }
}

/// Runs `fut` for at most `limit` of real time; `None` when the time ran out first. For components
/// that live outside any system's clock (a store shared by several systems, the executor's joins).
#[cfg_attr(crashonly_loom, allow(dead_code))]
pub(crate) async fn timeout<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    tokio::time::timeout(limit, fut).await.ok()
}

/// Completes after `delay` of real time (see [`timeout`]).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) async fn sleep(delay: Duration) {
    tokio::time::sleep(delay).await
}

#[cfg(crashonly_loom)]
mod manual {
    //! The manual time behind a model's clock.

    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use crate::sync::{Arc, AtomicU64, Mutex, Ordering};

    #[derive(Debug, Default)]
    pub(crate) struct Manual {
        /// Nanoseconds since the epoch.
        now: AtomicU64,
        sleepers: Mutex<Vec<Waker>>,
    }

    impl Manual {
        pub(crate) fn elapsed(&self) -> Duration {
            Duration::from_nanos(self.now.load(Ordering::Acquire))
        }

        pub(crate) fn advance(&self, by: Duration) {
            self.now.fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
            let due = std::mem::take(&mut *self.sleepers.lock());
            due.into_iter().for_each(Waker::wake);
        }
    }

    /// Completes once the manual time reaches `at`.
    #[derive(Debug)]
    pub(crate) struct Sleep {
        manual: Arc<Manual>,
        at: Duration,
    }

    impl Sleep {
        pub(crate) fn new(manual: Arc<Manual>, at: Duration) -> Self {
            Sleep { manual, at }
        }
    }

    impl Future for Sleep {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let mut sleepers = self.manual.sleepers.lock();
            // Checked under the lock that `advance` takes after moving time: no wake-up is lost.
            if self.manual.elapsed() >= self.at {
                return Poll::Ready(());
            }
            sleepers.push(cx.waker().clone());
            Poll::Pending
        }
    }
}
