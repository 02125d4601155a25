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

    /// Now, as [`nanos_of`](Self::nanos_of). In real time (where there is a coarse clock),
    /// read from `CLOCK_MONOTONIC` itself, which is what `Instant::now` reads, without the
    /// `Instant` arithmetic (300 of the 450 instructions a read cost, twice per restart).
    pub(crate) fn nanos(&self) -> u64 {
        #[cfg(all(target_os = "linux", not(crashonly_loom)))]
        if let Some(c) = &self.coarse {
            return c.precise_since_epoch() + 1;
        }
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

    /// [`coarse`](Self::coarse) in clock nanos only (no `Instant` is formed: adding to one is
    /// checked for overflow, which the compiler cannot drop when the instant goes unused).
    #[inline]
    pub(crate) fn coarse_nanos(&self) -> u64 {
        #[cfg(all(target_os = "linux", not(crashonly_loom)))]
        if let Some(c) = &self.coarse {
            return c.since_epoch() + 1;
        }
        self.nanos()
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
            if paused(epoch) {
                return None;
            }
            // `std`'s monotonic clock is `CLOCK_MONOTONIC`, the coarse clock's base. A read just
            // after an `Instant`, less that instant's distance from the epoch, is where the
            // epoch stands on it, or a little later (the time between the two reads), which
            // makes readings earlier, never later. The closest of a few pairs.
            let at = (0..4)
                .map(|_| {
                    let instant = Instant::now();
                    let raw = read(true, libc::CLOCK_MONOTONIC);
                    raw.saturating_sub(instant.saturating_duration_since(epoch).as_nanos() as u64)
                })
                .min()
                .unwrap_or(0);
            let res = Duration::from_nanos(read(false, libc::CLOCK_MONOTONIC_COARSE));
            (!res.is_zero() && res <= Duration::from_millis(10)).then_some(Coarse {
                epoch: at,
                slack: res * 2,
            })
        }

        /// Nanos since the epoch, on the precise clock (`CLOCK_MONOTONIC`, std's `Instant`): at
        /// most the time of one clock read earlier than the `Instant` arithmetic gives.
        #[inline]
        pub(super) fn precise_since_epoch(&self) -> u64 {
            read(true, libc::CLOCK_MONOTONIC).saturating_sub(self.epoch)
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

#[cfg(all(test, not(crashonly_loom)))]
mod tests {
    use super::*;

    /// In real time, the direct read of `CLOCK_MONOTONIC` agrees with the `Instant` arithmetic
    /// (to the time of one clock read: the error of the epoch's calibration, which only ever
    /// makes the direct read earlier), and the coarse clock is never ahead.
    #[test]
    fn the_direct_reads_agree_with_instant_arithmetic() {
        let clock = Clock::default();
        #[cfg(target_os = "linux")]
        assert!(clock.coarse.is_some(), "real time has a coarse clock here");
        for _ in 0..1_000 {
            let before = clock.nanos_of(clock.now());
            let (_, coarse) = clock.coarse();
            assert!(clock.coarse_nanos() >= coarse, "the coarse clock went back");
            let direct = clock.nanos();
            let after = clock.nanos_of(clock.now());
            assert!(
                before.saturating_sub(1_000) <= direct && direct <= after,
                "{before} <= {direct} <= {after}"
            );
            assert!(coarse <= direct + 1_000, "coarse {coarse} ahead of precise {direct}");
            assert!(direct - coarse.min(direct) <= clock.slack().as_nanos() as u64 + 1_000);
        }
    }
}
