//! `Config`: the system-wide settings a [`System`](crate::System) is built with.

use std::time::Duration;

use crate::policy::Policy;

/// System-wide settings.
///
/// Start from [`Config::default`] and change what you need; new settings may be added in later
/// versions, so the struct cannot be written as a literal outside this crate.
///
/// ```
/// use crashonly::{Config, Policy};
/// use std::time::Duration;
///
/// let config = Config::default()
///     .with_policy(Policy::builder().default_ttl(Duration::from_millis(700)).build().unwrap())
///     .with_mailbox_capacity(64);
/// assert_eq!(config.mailbox_capacity, 64);
/// assert_eq!(config.policy.default_ttl(), Duration::from_millis(700));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The bounds on every timeout, lease and retry (there is no infinite ask).
    pub policy: Policy,
    /// Mailbox capacity of an actor whose spec sets none.
    pub mailbox_capacity: usize,
    /// How often the watchdog looks for actors past their handling lease.
    pub watchdog_every: Duration,
    /// Once the system has failed (its root gave up, or too many tasks were abandoned), the
    /// watchdog's own OS thread exits the process with status 1 after this grace, unless the
    /// `System` has been dropped by then: escalation reaches the OS-level manager even when every
    /// tokio worker is blocked or `main` never reaches [`System::wait`](crate::System::wait).
    /// `None` leaves the exit to `main` (tests that make a system fail on purpose).
    pub exit_on_failure: Option<Duration>,
    /// An actor idle for this long hibernates: its task ends and only its state stays, in its
    /// slot, until the next message resumes it (OTP's `hibernate_after`; an actor that starts to
    /// an empty mailbox hibernates at once). A hibernating actor costs its slot and its state,
    /// not a task; waking one costs a task spawn. `None`: actors keep their tasks while idle.
    /// Actors on a dedicated thread and actors with an age limit never hibernate.
    pub hibernate_after: Option<Duration>,
    /// Whether the actors count into the system's Prometheus meters (feature `metrics`; on by
    /// default). Off, `crashonly::metrics::render` still answers, with the system-wide gauges only:
    /// for measuring what counting costs in one run.
    #[cfg(feature = "metrics")]
    pub metrics: bool,
}

impl Default for Config {
    /// The default policy, mailboxes of 1024, a watchdog pass every 50 ms, an exit 1 s after a
    /// failure that `main` did not act on, and hibernation after 1 s idle.
    fn default() -> Self {
        Config {
            policy: Policy::default(),
            mailbox_capacity: 1024,
            watchdog_every: Duration::from_millis(50),
            exit_on_failure: Some(Duration::from_secs(1)),
            hibernate_after: Some(Duration::from_secs(1)),
            #[cfg(feature = "metrics")]
            metrics: true,
        }
    }
}

with_setters!(Config {
    /// Sets the policy.
    with_policy => policy: Policy,
    /// Sets the mailbox capacity of actors whose spec sets none.
    with_mailbox_capacity => mailbox_capacity: usize,
    /// Sets how often the watchdog looks for actors past their handling lease.
    with_watchdog_every => watchdog_every: Duration,
    /// Sets the grace before the process exits after a failure (`None`: never by itself).
    with_exit_on_failure => exit_on_failure: Option<Duration>,
    /// Sets how long an actor stays idle before it hibernates (`None`: never).
    with_hibernate_after => hibernate_after: Option<Duration>,
});

#[cfg(feature = "metrics")]
impl Config {
    /// Sets whether the actors count into the system's Prometheus meters.
    pub fn with_metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }
}
