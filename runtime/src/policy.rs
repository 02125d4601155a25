//! The application-global `Policy`: every timeout, lease and retry is bounded by it.
//!
//! "Infinite timeouts or leases are not acceptable; the maximum-allowed timeout and lease are
//! specified in an application-global policy" (the paper, section 3.2). Per-actor and per-message
//! settings may tighten the policy, never exceed it: a TTL above `max_ttl` is cut to `max_ttl`.

use std::fmt;
use std::time::Duration;

/// Bounds for every interaction of a [`System`](crate::System).
///
/// ```
/// use crashonly::Policy;
/// use std::time::Duration;
///
/// let policy = Policy::builder().default_ttl(Duration::from_millis(700)).max_retries(3).build().unwrap();
/// assert_eq!(policy.default_ttl(), Duration::from_millis(700));
/// assert!(Policy::builder().max_lease(Duration::ZERO).build().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    default_ttl: Duration,
    max_ttl: Duration,
    max_lease: Duration,
    max_retries: u32,
    retry_backoff: Backoff,
    intensity: Intensity,
    max_handling: Duration,
    abandon_after: Duration,
    max_abandoned: Option<u32>,
    max_idle: Duration,
    max_key_len: usize,
}

/// A policy that cannot be built: a bound that is zero or infinite, or bounds that contradict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError(String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid policy: {}", self.0)
    }
}

impl std::error::Error for PolicyError {}

/// Builds a [`Policy`]; unset fields keep the defaults of [`Policy::default`].
#[derive(Clone, Debug, Default)]
pub struct PolicyBuilder {
    p: Option<Policy>,
}

impl Default for Policy {
    /// TTL 5 s by default and at most 60 s; leases at most 60 s; 5 retries with backoff from 10 ms
    /// to 1 s; 10 restarts in 10 s; a message may run 30 s; a hung task is abandoned after 1 s; and
    /// the system gives up once as many tasks are abandoned as the runtime has worker threads (see
    /// [`PolicyBuilder::max_abandoned`]); an entity stays live at most 1 hour without a message, and
    /// an entity key is at most 1 KiB.
    fn default() -> Self {
        Policy {
            default_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(60),
            max_lease: Duration::from_secs(60),
            max_retries: 5,
            retry_backoff: Backoff {
                base: Duration::from_millis(10),
                cap: Duration::from_secs(1),
            },
            intensity: Intensity::default(),
            max_handling: Duration::from_secs(30),
            abandon_after: Duration::from_secs(1),
            max_abandoned: None,
            max_idle: Duration::from_secs(3600),
            max_key_len: 1024,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, v: $ty) -> Self {
            self.p.get_or_insert_with(Policy::default).$name = v;
            self
        }
    };
}

impl PolicyBuilder {
    setter!(/// TTL of a message sent without one.
        ///
        /// ```
        /// # use crashonly::Policy;
        /// # use std::time::Duration;
        /// let policy = Policy::builder().default_ttl(Duration::from_secs(1)).build().unwrap();
        /// assert_eq!(policy.default_ttl(), Duration::from_secs(1));
        /// ```
        default_ttl: Duration);
    setter!(/// Longest TTL any message may have.
        ///
        /// ```
        /// # use crashonly::Policy;
        /// # use std::time::Duration;
        /// let policy = Policy::builder().max_ttl(Duration::from_secs(10)).build().unwrap();
        /// assert_eq!(policy.max_ttl(), Duration::from_secs(10));
        /// let short = Policy::builder().max_ttl(Duration::from_secs(1)).build(); // below the default TTL
        /// assert!(short.is_err());
        /// ```
        max_ttl: Duration);
    setter!(/// Longest lease.
        ///
        /// ```
        /// # use crashonly::Policy;
        /// # use std::time::Duration;
        /// let policy = Policy::builder().max_lease(Duration::from_secs(30)).build().unwrap();
        /// assert_eq!(policy.max_lease(), Duration::from_secs(30));
        /// ```
        max_lease: Duration);
    setter!(/// Most resends of one idempotent request.
        ///
        /// ```
        /// # use crashonly::Policy;
        /// let policy = Policy::builder().max_retries(2).build().unwrap();
        /// assert_eq!(policy.max_retries(), 2);
        /// ```
        max_retries: u32);
    setter!(/// Backoff between retries (randomized, exponential, capped).
        ///
        /// ```
        /// # use crashonly::Policy;
        /// # use std::time::Duration;
        /// # use crashonly::Backoff;
        /// let backoff = Backoff { base: Duration::from_millis(5), cap: Duration::from_millis(200) };
        /// let policy = Policy::builder().retry_backoff(backoff).build().unwrap();
        /// assert_eq!(policy.retry_backoff(), backoff);
        /// ```
        retry_backoff: Backoff);
    setter!(/// Restart intensity of supervisors that set none.
        ///
        /// ```
        /// # use crashonly::Policy;
        /// # use std::time::Duration;
        /// # use crashonly::Intensity;
        /// let intensity = Intensity { max_restarts: 3, period: Duration::from_secs(5) };
        /// let policy = Policy::builder().intensity(intensity).build().unwrap();
        /// assert_eq!(policy.intensity(), intensity);
        /// ```
        intensity: Intensity);
    setter!(/// Longest time one message may be handled before the watchdog restarts the actor.
        ///
        /// ```
        /// # use crashonly::Policy;
        /// # use std::time::Duration;
        /// let policy = Policy::builder().max_handling(Duration::from_secs(5)).build().unwrap();
        /// assert_eq!(policy.max_handling(), Duration::from_secs(5));
        /// ```
        max_handling: Duration);
    setter!(/// How long a restart waits for an aborted task before abandoning it (stuck in blocking code).
        ///
        /// ```
        /// # use crashonly::Policy;
        /// # use std::time::Duration;
        /// let policy = Policy::builder().abandon_after(Duration::from_millis(200)).build().unwrap();
        /// assert_eq!(policy.abandon_after(), Duration::from_millis(200));
        /// ```
        abandon_after: Duration);
    setter!(/// Longest time an entity stays live without a message before it is passivated (an
        /// entity family's `idle` is cut to it).
        ///
        /// ```
        /// # use crashonly::Policy;
        /// # use std::time::Duration;
        /// let policy = Policy::builder().max_idle(Duration::from_secs(600)).build().unwrap();
        /// assert_eq!(policy.max_idle(), Duration::from_secs(600));
        /// ```
        max_idle: Duration);
    setter!(/// Longest entity key, in bytes ([`EntityKey::key_len`](crate::EntityKey::key_len)); a
        /// longer one is refused with [`DeliveryError::KeyTooLong`](crate::DeliveryError::KeyTooLong).
        ///
        /// ```
        /// # use crashonly::Policy;
        /// let policy = Policy::builder().max_key_len(64).build().unwrap();
        /// assert_eq!(policy.max_key_len(), 64);
        /// ```
        max_key_len: usize);
    /// Abandoned tasks tolerated before the system gives up (so the process is restarted).
    ///
    /// By default, one fewer than the tokio runtime's worker threads (0 on a current-thread
    /// runtime): a task abandoned in blocking code keeps its worker, and the system gives up
    /// before the last worker is lost, while something can still run.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// let policy = Policy::builder().max_abandoned(2).build().unwrap();
    /// assert_eq!(policy.max_abandoned(), Some(2));
    /// ```
    pub fn max_abandoned(mut self, n: u32) -> Self {
        self.p.get_or_insert_with(Policy::default).max_abandoned = Some(n);
        self
    }

    /// Checks the bounds: every one positive and finite, the default TTL within the longest.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// # use std::time::Duration;
    /// assert!(Policy::builder().build().is_ok());
    /// let err = Policy::builder().max_lease(Duration::MAX).build().unwrap_err();
    /// assert_eq!(err.to_string(), "invalid policy: max_lease is infinite; every bound must be finite");
    /// ```
    pub fn build(self) -> Result<Policy, PolicyError> {
        let p = self.p.unwrap_or_default();
        let bounded = [
            ("default_ttl", p.default_ttl),
            ("max_ttl", p.max_ttl),
            ("max_lease", p.max_lease),
            ("max_handling", p.max_handling),
            ("abandon_after", p.abandon_after),
            ("intensity period", p.intensity.period),
            ("max_idle", p.max_idle),
        ];
        for (name, d) in bounded {
            if d.is_zero() {
                return Err(PolicyError(format!("{name} is zero; it must be a positive bound")));
            }
            if d == Duration::MAX {
                return Err(PolicyError(format!("{name} is infinite; every bound must be finite")));
            }
        }
        if p.retry_backoff.cap == Duration::MAX {
            return Err(PolicyError("retry backoff cap is infinite".into()));
        }
        if p.max_key_len == 0 || p.max_key_len == usize::MAX {
            return Err(PolicyError("max_key_len must be a positive, finite bound".into()));
        }
        if p.max_retries == u32::MAX {
            return Err(PolicyError("max_retries is infinite".into()));
        }
        if p.default_ttl > p.max_ttl {
            return Err(PolicyError(format!(
                "default_ttl ({} ms) exceeds max_ttl ({} ms)",
                p.default_ttl.as_millis(),
                p.max_ttl.as_millis()
            )));
        }
        Ok(p)
    }
}

impl Policy {
    /// A builder starting from the defaults.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// let policy = Policy::builder().max_retries(3).build().unwrap();
    /// assert_eq!(policy.max_retries(), 3);
    /// assert_eq!(policy.default_ttl(), Policy::default().default_ttl()); // unset: the default
    /// ```
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// The TTL a message gets: the requested one (or the default), never above `max_ttl`.
    pub(crate) fn ttl(&self, requested: Option<Duration>) -> Duration {
        requested.unwrap_or(self.default_ttl).min(self.max_ttl)
    }

    /// A lease duration: the requested one, never above `max_lease`.
    pub(crate) fn lease(&self, requested: Duration) -> Duration {
        requested.min(self.max_lease)
    }

    /// A handling lease: the requested one (or the maximum), never above `max_handling`.
    pub(crate) fn handling(&self, requested: Option<Duration>) -> Duration {
        requested.unwrap_or(self.max_handling).min(self.max_handling)
    }

    /// Default TTL.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// # use std::time::Duration;
    /// assert_eq!(Policy::default().default_ttl(), Duration::from_secs(5));
    /// ```
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }
    /// Longest TTL.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// # use std::time::Duration;
    /// assert_eq!(Policy::default().max_ttl(), Duration::from_secs(60));
    /// ```
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }
    /// Longest lease.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// # use std::time::Duration;
    /// assert_eq!(Policy::default().max_lease(), Duration::from_secs(60));
    /// ```
    pub fn max_lease(&self) -> Duration {
        self.max_lease
    }
    /// Most resends of one request.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// assert_eq!(Policy::default().max_retries(), 5);
    /// ```
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }
    /// Retry backoff.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// # use std::time::Duration;
    /// assert_eq!(Policy::default().retry_backoff().cap, Duration::from_secs(1));
    /// ```
    pub fn retry_backoff(&self) -> Backoff {
        self.retry_backoff
    }
    /// Default restart intensity.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// # use std::time::Duration;
    /// let intensity = Policy::default().intensity();
    /// assert_eq!((intensity.max_restarts, intensity.period), (10, Duration::from_secs(10)));
    /// ```
    pub fn intensity(&self) -> Intensity {
        self.intensity
    }
    /// Longest handling of one message.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// # use std::time::Duration;
    /// assert_eq!(Policy::default().max_handling(), Duration::from_secs(30));
    /// ```
    pub fn max_handling(&self) -> Duration {
        self.max_handling
    }
    /// How long a restart waits for an aborted task.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// # use std::time::Duration;
    /// assert_eq!(Policy::default().abandon_after(), Duration::from_secs(1));
    /// ```
    pub fn abandon_after(&self) -> Duration {
        self.abandon_after
    }
    /// Abandoned tasks tolerated, when set (otherwise it follows the worker count).
    ///
    /// ```
    /// # use crashonly::Policy;
    /// assert_eq!(Policy::default().max_abandoned(), None);
    /// ```
    pub fn max_abandoned(&self) -> Option<u32> {
        self.max_abandoned
    }
    /// Longest time an entity stays live without a message.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// # use std::time::Duration;
    /// assert_eq!(Policy::default().max_idle(), Duration::from_secs(3600));
    /// ```
    pub fn max_idle(&self) -> Duration {
        self.max_idle
    }
    /// Longest entity key, in bytes.
    ///
    /// ```
    /// # use crashonly::Policy;
    /// assert_eq!(Policy::default().max_key_len(), 1024);
    /// ```
    pub fn max_key_len(&self) -> usize {
        self.max_key_len
    }
}

/// Restart intensity: at most `max_restarts` within `period`, or the supervisor gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the period.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    /// 10 restarts within 10 seconds.
    fn default() -> Self {
        Intensity {
            max_restarts: 10,
            period: Duration::from_secs(10),
        }
    }
}

/// Exponential backoff between consecutive restarts, with jitter, capped.
///
/// Counted per child: the first restart of a child within the intensity window is immediate (as in
/// OTP); its n-th waits
/// `min(cap, base * 2^(n-2))`, spread at random over its upper half so that siblings do not restart
/// in lock step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second restart within the window.
    pub base: Duration,
    /// Upper bound of any delay.
    pub cap: Duration,
}

impl Default for Backoff {
    /// 10 ms doubling up to 1 s.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// Restart at once, every time.
    ///
    /// ```
    /// # use crashonly::prelude::*;
    /// # use std::time::Duration;
    /// let spec = SupervisorSpec::new("app", Strategy::OneForOne).backoff(Backoff::none());
    /// assert_eq!(Backoff::none().cap, Duration::ZERO);
    /// # let _ = spec;
    /// ```
    pub fn none() -> Self {
        Backoff {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        }
    }

    /// The delay before the `nth` restart within the window (1-based), for a random value `r`.
    pub(crate) fn delay(&self, nth: usize, r: u64) -> Duration {
        if nth <= 1 || self.base.is_zero() {
            return Duration::ZERO;
        }
        let shift = (nth - 2).min(31) as u32;
        let full = self.base.saturating_mul(1u32 << shift).min(self.cap);
        let half = full / 2;
        let spread = half.as_nanos() as u64;
        half + Duration::from_nanos(if spread == 0 { 0 } else { r % (spread + 1) })
    }
}
