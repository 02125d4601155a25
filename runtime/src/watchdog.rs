//! The watchdog: the high-confidence crasher of the paper's section 3.2 ("if a computation is
//! unable to renew its execution lease, it is terminated by a high confidence watchdog").
//!
//! Rules that live here:
//! - the scan: every `Config::watchdog_every`, each live slot of the registry is checked, in one
//!   pass (hangs and overdue aborts together); a pass that took long stretches the wait to 50
//!   times its own time (`pace`), so that a registry of millions of slots (entities) costs the
//!   watchdog at most about 2% of a core and the registry's lock a 2% duty;
//! - the hang check: a slot that has handled one message for longer than its handling lease is
//!   hung, and is crash-restarted from outside (its supervisor decides as for any crash);
//! - the abandonment rule: a task that does not end within `abandon_after` of its abort (stuck in
//!   blocking code, which tokio cannot interrupt) is abandoned and counted once; past the
//!   policy's `max_abandoned` the system gives up, so that the process is restarted by its own
//!   supervisor (the OS);
//! - the exit: once the system has failed, the process exits with status 1 after
//!   `Config::exit_on_failure`, unless the `System` was dropped first.
//!
//! The scan runs twice: as a task on the system's runtime (it follows tokio's clock, paused in
//! tests) and on an OS thread of its own, which keeps scanning, abandoning and exiting when every
//! tokio worker is blocked in user code. Both may find the same slot; each step is taken once
//! (`busy_since` and `aborted_at` are swapped to zero by whoever acts).

use std::time::Duration;

use crate::crash::{CrashReason, CrashReport};
use crate::registry::Registry;
#[cfg(not(crashonly_loom))]
use crate::rt::{self, ThreadHandle};
use crate::shared::Shared;
use crate::sync::Arc;
#[cfg(not(crashonly_loom))]
use crate::sync::Weak;

/// Whether a slot busy since `busy_since` (clock nanos, 0 = idle) is past its handling `lease`
/// at `now`.
pub(crate) fn is_hung(busy_since: u64, lease: Duration, now: u64) -> bool {
    busy_since != 0 && now.saturating_sub(busy_since) > lease.as_nanos() as u64
}

/// Whether a task aborted at `aborted_at` (clock nanos, 0 = none) is overdue at `now`.
pub(crate) fn is_overdue(aborted_at: u64, limit: Duration, now: u64) -> bool {
    aborted_at != 0 && now.saturating_sub(aborted_at) > limit.as_nanos() as u64
}

/// The wait before the next pass: the configured period, or 50 times what the last pass took
/// when that is longer (a pass over a million slots takes milliseconds).
pub(crate) fn pace(every: Duration, pass: Duration) -> Duration {
    every.max(pass.saturating_mul(50))
}

/// One pass at `now`: crash-restart every slot past its handling lease, (given the
/// abandonment `limit`) abandon every aborted task that outlived it, and (given `hibernate_after`)
/// ask every actor idle for longer to hibernate. Returns the wait before the next pass ([`pace`]
/// of `every` and this pass's own time).
pub(crate) fn scan(
    registry: &Registry,
    now: u64,
    (limit, hibernate_after): (Option<Duration>, Option<Duration>),
    every: Duration,
) -> Duration {
    let began = std::time::Instant::now();
    let found = registry.watch(now, limit, hibernate_after.map(|d| d.as_nanos() as u64));
    for hung in found.hung {
        hung.hang(now);
    }
    for idle in found.idle {
        idle.hibernate();
    }
    for stuck in found.overdue {
        stuck.abandon();
    }
    pace(every, began.elapsed())
}

/// The abandonment rule: counts a task abandoned in blocking code; past the policy's
/// `max_abandoned` the system gives up, so that the process is restarted from outside.
pub(crate) fn abandoned(shared: &Shared, path: impl std::fmt::Display) {
    let n = shared.count_abandoned();
    tracing::error!(actor = %path, abandoned = n, "task did not stop after its abort; abandoned");
    if n > u64::from(shared.max_abandoned()) {
        shared.fail(Arc::new(CrashReport {
            path: "/".into(),
            reason: CrashReason::TooManyAbandoned { abandoned: n as u32 },
            envelope: None,
        }));
    }
}

#[cfg(not(crashonly_loom))]
/// Starts the watchdog's own OS thread for `shared`'s system. It holds the system weakly and
/// stops when the `System` is dropped (unpark it then, so that it notices at once).
pub(crate) fn start_thread(shared: &Arc<Shared>) -> Option<ThreadHandle> {
    let weak = Arc::downgrade(shared);
    let every = shared.config().watchdog_every.max(Duration::from_millis(1));
    match rt::os_thread("crashonly-watchdog".into(), move || guard(weak, every)) {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the watchdog thread; hangs are found by the watchdog task only");
            None
        }
    }
}

#[cfg(not(crashonly_loom))]
fn guard(weak: Weak<Shared>, every: Duration) {
    let mut failed_for = Duration::ZERO;
    let mut wait = every;
    loop {
        rt::park_timeout(wait);
        let Some(shared) = weak.upgrade() else { return };
        if shared.is_dropped() {
            return;
        }
        let waited = wait;
        wait = {
            let _runtime = shared.executor().enter();
            let limit = Some(shared.policy().abandon_after());
            scan(shared.registry(), shared.nanos(), (limit, None), every)
        };
        let Some(report) = shared.failure() else { continue };
        wait = every;
        let Some(grace) = shared.config().exit_on_failure else {
            continue;
        };
        // Real time, counted here: the system's clock may be paused or its workers blocked.
        failed_for += waited;
        if failed_for >= grace {
            eprintln!("crashonly: the system failed ({report}); exiting with status 1 so that it is restarted");
            std::process::exit(1);
        }
    }
}

#[cfg(all(test, not(crashonly_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_long_pass_stretches_the_wait_to_fifty_times_its_length() {
        let every = Duration::from_millis(50);
        assert_eq!(pace(every, Duration::from_micros(200)), every);
        assert_eq!(pace(every, Duration::from_millis(1)), every);
        assert_eq!(pace(every, Duration::from_millis(10)), Duration::from_millis(500));
        assert_eq!(pace(every, Duration::MAX), Duration::MAX);
    }
}
