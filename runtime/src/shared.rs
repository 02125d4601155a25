//! `Shared`: what every slot and supervisor of one system shares (settings, clock, executor,
//! registry, id and random sequences, the failure signal, in-memory leases, the count of
//! abandoned tasks).
//!
//! Reached only through narrow methods, so that a module asks for what it needs (`deadline_for`,
//! `spawn`, `now`) rather than walking field chains. It holds no slot strongly (the registry keeps
//! weak references), so there is no cycle between slots and the system.

use std::time::Duration;

use tokio::sync::watch;

use crate::clock::{Clock, Instant};
use crate::config::Config;
use crate::crash::CrashReport;
use crate::envelope::{EnvelopeId, TraceId};
use crate::lease::Leases;
use crate::policy::Policy;
use crate::registry::Registry;
use crate::rt::{Executor, Task};
use crate::sync::{Arc, AtomicU8, Ordering, Stat};

/// Spans from this long up are measured on the coarse clock (see [`Shared::now_within`]).
pub(crate) const COARSE_TTL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Shared {
    config: Config,
    clock: Clock,
    exec: Executor,
    registry: Registry,
    // Relaxed: only uniqueness matters.
    ids: Stat,
    rng: Stat,
    /// Scrambles the id sequence so that envelope ids (span ids) and trace ids of different
    /// processes do not collide.
    salt: u64,
    failure: watch::Sender<Option<Arc<CrashReport>>>,
    // Relaxed: a count compared with a threshold.
    abandoned: Stat,
    /// The policy's `max_abandoned`, or one fewer than the runtime's workers.
    max_abandoned: u32,
    leases: Arc<Leases>,
    /// Set when the `System` is dropped: its watchdog thread stops.
    dropped: AtomicU8,
    #[cfg(feature = "metrics")]
    meters: Arc<crate::meters::Meters>,
    /// Crashes, restarts, escalations and watchdog firings, for the observer page.
    #[cfg(feature = "observer")]
    journal: crate::journal::Journal,
}

impl Shared {
    /// A fresh system's shared part, on the executor of the calling tokio runtime.
    pub(crate) fn new(config: Config) -> Arc<Shared> {
        let (failure, _) = watch::channel(None);
        let seed = {
            let here = &failure as *const _ as u64;
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64);
            here ^ t.unwrap_or(0)
        };
        let exec = Executor::current();
        let max_abandoned = config
            .policy
            .max_abandoned()
            .unwrap_or_else(|| exec.workers().saturating_sub(1) as u32);
        Arc::new(Shared {
            config,
            clock: Clock::default(),
            exec,
            max_abandoned,
            dropped: AtomicU8::new(0),
            registry: Registry::default(),
            ids: Stat::new(0),
            rng: Stat::new(seed),
            salt: mix(seed ^ 0x5851_F42D_4C95_7F2D),
            failure,
            abandoned: Stat::new(0),
            leases: Default::default(),
            #[cfg(feature = "metrics")]
            meters: Arc::new(crate::meters::Meters::new()),
            #[cfg(feature = "observer")]
            journal: Default::default(),
        })
    }

    /// The system's Prometheus meters.
    #[cfg(feature = "metrics")]
    pub(crate) fn meters(&self) -> &Arc<crate::meters::Meters> {
        &self.meters
    }

    /// The meters of the label set `(A, pattern)` (an entity family's if `family`), unless the
    /// configuration turned them off.
    #[cfg(feature = "metrics")]
    pub(crate) fn slot_meters<A>(&self, pattern: &str, family: bool) -> Option<Arc<crate::meters::SlotMeters>> {
        let actor = std::any::type_name::<A>();
        self.config.metrics.then(|| self.meters.set(actor, pattern, family))
    }

    /// The observer's log of recent events.
    #[cfg(feature = "observer")]
    pub(crate) fn journal(&self) -> &crate::journal::Journal {
        &self.journal
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn policy(&self) -> &Policy {
        &self.config.policy
    }

    pub(crate) fn mailbox_capacity(&self) -> usize {
        self.config.mailbox_capacity
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Now, for stamping a deadline `ttl` from now (the policy's default when `None`).
    #[inline]
    pub(crate) fn now_for_ttl(&self, ttl: Option<Duration>) -> Instant {
        self.now_within(self.config.policy.ttl(ttl))
    }

    /// Now, for a time span as long as `span` (a TTL, an intensity period): the coarse clock
    /// when the span is at least [`COARSE_TTL`] long (it is then at most two coarse ticks, 8 ms,
    /// early: under 1% of the span), the precise one for shorter spans.
    #[inline]
    pub(crate) fn now_within(&self, span: Duration) -> Instant {
        if span >= COARSE_TTL {
            self.clock.coarse().0
        } else {
            self.clock.now()
        }
    }

    /// [`now_within`](Self::now_within) in clock nanos (no `Instant` arithmetic: a restart's
    /// intensity windows compare these).
    #[inline]
    pub(crate) fn nanos_within(&self, span: Duration) -> u64 {
        if span >= COARSE_TTL {
            self.clock.coarse_nanos()
        } else {
            self.clock.nanos()
        }
    }

    /// Now, in clock nanos (see [`Clock::nanos_of`]).
    pub(crate) fn nanos(&self) -> u64 {
        self.clock.nanos()
    }

    pub(crate) fn executor(&self) -> &Executor {
        &self.exec
    }

    pub(crate) fn spawn<F>(&self, fut: F) -> Task
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.exec.spawn(fut)
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    /// The deadline of a message sent at `now`: the earlier of an explicit deadline and now + TTL
    /// (the default TTL when neither is given), never past now + the policy's `max_ttl`.
    pub(crate) fn deadline_for(&self, now: Instant, ttl: Option<Duration>, deadline: Option<Instant>) -> Instant {
        let policy = &self.config.policy;
        let by_ttl = now + policy.ttl(ttl);
        match deadline {
            Some(d) if ttl.is_none() => d.min(now + policy.max_ttl()),
            Some(d) => d.min(by_ttl),
            None => by_ttl,
        }
    }

    /// The next envelope id: a counter, scrambled by a bijection (unique within the system, and
    /// as good as random across processes, so that it can serve as a W3C span id).
    pub(crate) fn next_envelope_id(&self) -> EnvelopeId {
        let n = self.ids.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let id = mix(n.wrapping_add(self.salt));
        EnvelopeId(std::num::NonZeroU64::new(id).unwrap_or(std::num::NonZeroU64::MIN))
    }

    /// The id of a trace started by envelope `id`: unique within the system (the low half is the
    /// envelope id), random-looking across processes; costs no shared counter.
    pub(crate) fn trace_id_of(&self, id: EnvelopeId) -> TraceId {
        let hi = mix(id.get() ^ self.salt.rotate_left(32)) | 1;
        TraceId::new((u128::from(hi) << 64) | u128::from(id.get())).unwrap_or(TraceId::MIN)
    }

    /// A random value (SplitMix64 over a shared counter): for jitter, not for secrets.
    pub(crate) fn random(&self) -> u64 {
        mix(self.rng.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed))
    }

    /// Counts one more task abandoned in blocking code; the count so far (the rule that acts on
    /// it is the watchdog's).
    pub(crate) fn count_abandoned(&self) -> u64 {
        self.abandoned.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Tasks abandoned so far.
    pub(crate) fn abandoned_count(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Abandoned tasks tolerated: the policy's, or one fewer than the runtime's workers.
    pub(crate) fn max_abandoned(&self) -> u32 {
        self.max_abandoned
    }

    /// The root gave up: whoever waits on the system learns why.
    pub(crate) fn fail(&self, report: Arc<CrashReport>) {
        tracing::error!(crash = %report, "root supervisor gave up; the process should exit non-zero");
        self.failure.send_replace(Some(report));
    }

    /// The `System` is gone: its watchdog thread stops.
    pub(crate) fn set_dropped(&self) {
        // Relaxed: the watchdog thread polls it; being late by a pass is harmless.
        self.dropped.store(1, Ordering::Relaxed);
    }

    #[cfg_attr(crashonly_loom, allow(dead_code))]
    pub(crate) fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn failure(&self) -> Option<Arc<CrashReport>> {
        self.failure.borrow().clone()
    }

    /// Waits until the root gives up.
    pub(crate) async fn failed(&self) -> Arc<CrashReport> {
        let mut rx = self.failure.subscribe();
        let report = rx
            .wait_for(Option::is_some)
            .await
            .expect("the sender lives in self")
            .clone();
        report.expect("waited for Some")
    }
}

/// SplitMix64's finalizer: a bijection on `u64` that scatters neighbouring inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
