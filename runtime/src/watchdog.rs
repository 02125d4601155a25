//! The watchdog: the high-confidence crasher of the paper's section 3.2 ("if a computation is
//! unable to renew its execution lease, it is terminated by a high confidence watchdog").
//!
//! Three rules live here:
//! - the scan: every `Config::watchdog_every`, each live slot of the registry is checked;
//! - the hang check: a slot that has handled one message for longer than its handling lease is
//!   hung, and is crash-restarted from outside (its supervisor decides as for any crash);
//! - the abandonment rule: a task that does not end after its abort (stuck in blocking code, which
//!   tokio cannot interrupt) is abandoned and counted; past the policy's `max_abandoned` the system
//!   gives up, so that the process is restarted by its own supervisor (the OS).

use std::time::Duration;

use crate::crash::{CrashReason, CrashReport};
use crate::registry::Registry;
use crate::sync::{Ordering, Stat};

/// Whether a slot busy since `busy_since` (clock nanos, 0 = idle) is past its handling `lease`
/// at `now`.
pub(crate) fn is_hung(busy_since: u64, lease: Duration, now: u64) -> bool {
    busy_since != 0 && now.saturating_sub(busy_since) > lease.as_nanos() as u64
}

/// One pass: crash-restart every slot past its handling lease at `now`.
pub(crate) fn scan(registry: &Registry, now: u64) {
    for hung in registry.hung(now) {
        hung.hang(now);
    }
}

/// The count of abandoned tasks.
#[derive(Debug, Default)]
pub(crate) struct Abandonment {
    // Relaxed: a count compared with a threshold.
    count: Stat,
}

impl Abandonment {
    /// Counts one abandoned task; past `max` it returns the report the system fails with.
    pub(crate) fn record(&self, path: &str, max: u32) -> Option<CrashReport> {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::error!(actor = %path, abandoned = n, "task did not stop after its abort; abandoned");
        (n > u64::from(max)).then(|| CrashReport {
            path: "/".into(),
            reason: CrashReason::TooManyAbandoned { abandoned: n as u32 },
            envelope: None,
        })
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}
