//! Progress counters (the paper's section 4): what each slot has done and where it is, as read by
//! `ActorRef::stats`, `System::snapshot` and the watchdog.

use std::time::Duration;

use crate::clock::Instant;
use crate::crash::CrashReport;
use crate::sync::Arc;

/// Where a slot is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotState {
    /// Running `start` (recovering).
    Starting,
    /// Handling messages.
    Running,
    /// Between instances: crashed, waiting for its restart (messages wait in the mailbox).
    Restarting,
    /// Gone for good.
    Dead,
    /// Terminated by its supervisor on request (`SupervisorRef::terminate_child`): sends get
    /// `Dead` until `restart_child` starts it again.
    Stopped,
}

impl SlotState {
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => SlotState::Starting,
            1 => SlotState::Running,
            2 => SlotState::Restarting,
            4 => SlotState::Stopped,
            _ => SlotState::Dead,
        }
    }
}

/// A snapshot of a slot's progress counters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// How long the current message has been handled (`None` when idle).
    pub busy_for: Option<Duration>,
    /// Messages handled to completion (successfully or not) by all instances.
    pub handled: u64,
    /// Instances that crashed (including ones aborted by their supervisor).
    pub crashes: u64,
    /// Envelopes dropped at dequeue because their deadline had passed (each answered `Expired`
    /// or, for a tell, logged).
    pub expired: u64,
    /// Instances started after the first one.
    pub restarts: u64,
    /// Messages waiting in the mailbox.
    pub mailbox_len: usize,
    /// Current state.
    pub state: SlotState,
    /// The number of the current (or last) instance: 1 for the first, one more for each start.
    pub incarnation: u64,
    /// The last crash, if any.
    pub last_crash: Option<Arc<CrashReport>>,
    /// When it happened (not recorded in a loom model, where reading the clock is an
    /// interleaving point of its own).
    pub last_crash_at: Option<Instant>,
    /// While backing off before a restart: when the next start is due.
    pub next_start_at: Option<Instant>,
    /// The instance is hibernating: idle, with no task (see `Config::hibernate_after`); its next
    /// message resumes it.
    pub hibernating: bool,
    /// Times its instances hibernated.
    pub hibernations: u64,
}

/// What the observer page shows of a slot, a supervisor or an entity family beyond [`Stats`]
/// (feature `observer`).
#[cfg(feature = "observer")]
#[derive(Clone, Debug)]
pub(crate) enum Observed {
    /// An actor (or an entity's activation).
    Actor {
        /// The mailbox's capacity.
        capacity: usize,
        /// Senders answered `RetryAfter` at once because it was recovering.
        retry_after: u64,
    },
    /// A supervisor.
    Supervisor {
        /// Its strategy, as written (`OneForOne`, ...).
        strategy: String,
        /// Restarts within the current intensity period.
        used: usize,
        /// Restarts allowed within the period.
        max_restarts: u32,
        /// The intensity period.
        period: Duration,
    },
    /// A family of entities.
    Family {
        /// Live activations.
        active: usize,
        /// The cap on live activations.
        max_active: usize,
        /// Activations started, ever.
        activations: u64,
        /// Crashes of its entities.
        crashes: u64,
        /// Keys in quarantine now (their senders get `RetryAfter`).
        quarantined: usize,
        /// Requests refused `RetryAfter` because their key was in quarantine.
        retry_after: u64,
    },
}
