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
///
/// The paths taken for every message (a sender stamping a deadline, an actor checking it and
/// noting when it began) read a coarse clock instead where there is one (Linux's
/// `CLOCK_MONOTONIC_COARSE`: a few ns instead of the 50 ns of a precise read in a virtual
/// machine, where two precise reads were a fifth of a tell's CPU time), never later than the
/// precise time and at most two ticks (8 ms at the usual `HZ=250`) behind it. A deadline that
/// close is checked on the precise clock, so a message expires exactly when its deadline passes;
/// a deadline is stamped on the coarse clock only for a TTL of 1 s or more. While tokio's time is
/// paused (tests), the clock always reads it precisely: that is decided when the clock is made.
#[derive(Clone, Debug)]
pub struct Clock {
    epoch: Instant,
    /// The coarse clock: where it stands at `epoch`, and its resolution. None where there is
    /// none, and when tokio's time is paused (tests: the coarse clock is real time).
    #[cfg(all(target_os = "linux", not(crashonly_loom)))]
    coarse: Option<coarse::Coarse>,
    #[cfg(crashonly_loom)]
    manual: crate::sync::Arc<manual::Manual>,
}

impl Default for Clock {
    fn default() -> Self {
        let epoch = Instant::now();
        Clock {
            #[cfg(all(target_os = "linux", not(crashonly_loom)))]
            coarse: coarse::Coarse::at(epoch),
            epoch,
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

    /// Now for the per-message paths, as an instant and as [`nanos_of`](Self::nanos_of): the
    /// coarse clock where there is one, never later than [`now`](Self::now) and at most
    /// [`slack`](Self::slack) earlier; else the precise time. A decision that a difference as
    /// small as the slack could change (is a deadline that close past?) must read
    /// [`now`](Self::now) instead.
    #[inline]
    pub(crate) fn coarse(&self) -> (Instant, u64) {
        #[cfg(all(target_os = "linux", not(crashonly_loom)))]
        if let Some(c) = &self.coarse {
            let since = c.since_epoch();
            return (self.epoch + Duration::from_nanos(since), since + 1);
        }
        let now = self.now();
        (now, self.nanos_of(now))
    }

    /// How far [`coarse`](Self::coarse) may be behind [`now`](Self::now): two ticks of the
    /// coarse clock (a tick may be late), zero where there is no coarse clock.
    #[inline]
    pub(crate) fn slack(&self) -> Duration {
        #[cfg(all(target_os = "linux", not(crashonly_loom)))]
        if let Some(c) = &self.coarse {
            return c.slack;
        }
        Duration::ZERO
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

/// Completes at `deadline` on tokio's clock: what [`Clock::sleep_until`] does outside a model,
/// for a waiter that holds no clock (an ask whose reply is late).
#[cfg(not(crashonly_loom))]
pub(crate) fn sleep_until(deadline: Instant) -> Sleep {
    tokio::time::sleep_until(deadline)
}

/// Completes after `delay` of real time (see [`timeout`]).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) async fn sleep(delay: Duration) {
    tokio::time::sleep(delay).await
}

#[cfg(all(target_os = "linux", not(crashonly_loom)))]
mod coarse {
    //! Linux's coarse monotonic clock: the time of the last timer tick, read from the vDSO
    //! without the timestamp counter.

    use std::time::Duration;

    use super::Instant;

    #[derive(Clone, Copy, Debug)]
    pub(super) struct Coarse {
        /// The monotonic clock's nanos at the epoch.
        epoch: u64,
        pub(super) slack: Duration,
    }

    /// `clock`'s time (`get`: `clock_gettime`) or resolution (`clock_getres`), in nanos.
    #[inline]
    fn read(get: bool, clock: libc::clockid_t) -> u64 {
        let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `t` is a valid, writable timespec for the call's duration, and both calls
        // only write it; they cannot fail for these clocks (zero stays zero if they did).
        unsafe {
            if get {
                libc::clock_gettime(clock, &mut t);
            } else {
                libc::clock_getres(clock, &mut t);
            }
        }
        (t.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec as u64)
    }

    impl Coarse {
        /// The coarse clock for a clock whose epoch is `epoch`, just read; none while tokio's
        /// time is paused (the coarse clock would go on in real time) or when its resolution is
        /// too coarse to be worth it (above 10 ms).
        pub(super) fn at(epoch: Instant) -> Option<Coarse> {
            // `std`'s monotonic clock is `CLOCK_MONOTONIC`, the coarse clock's base: read just
            // after the epoch, this is where the epoch stands on it (a few ns later at most,
            // which makes coarse readings earlier, never later).
            let at = read(true, libc::CLOCK_MONOTONIC);
            if paused(epoch) {
                return None;
            }
            let res = Duration::from_nanos(read(false, libc::CLOCK_MONOTONIC_COARSE));
            (!res.is_zero() && res <= Duration::from_millis(10)).then_some(Coarse {
                epoch: at,
                slack: res * 2,
            })
        }

        /// Nanos since the epoch, on the coarse clock.
        #[inline]
        pub(super) fn since_epoch(&self) -> u64 {
            read(true, libc::CLOCK_MONOTONIC_COARSE).saturating_sub(self.epoch)
        }
    }

    /// Whether tokio's clock is paused: it stands still while real time passes (a precise read
    /// moves within a microsecond otherwise). Paused time only moves when the runtime is idle,
    /// never during this spin.
    fn paused(epoch: Instant) -> bool {
        let real = std::time::Instant::now();
        while real.elapsed() < Duration::from_micros(2) {
            std::hint::spin_loop();
        }
        Instant::now() == epoch
    }
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
