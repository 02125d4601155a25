//! What a slot remembers of its crashes and restarts: counted and kept in a box allocated on
//! the first crash (most actors never crash), under its own lock, never per message.

use std::task::Waker;

use super::Slot;
use crate::actor::Actor;
use crate::clock::Instant;
use crate::crash::{CrashReason, CrashReport};
use crate::sync::Arc;

/// The last crash of a slot. An abort by the supervisor (a sibling's group restart) is kept
/// without a report, made only if someone asks: a 1,000-child group restart records 999 of them.
#[derive(Debug, Clone)]
pub(super) enum LastCrash {
    Report(Arc<CrashReport>, Option<Instant>),
    Aborted(Option<Instant>),
}

/// What a slot rarely needs, allocated on first use: most actors never crash.
#[derive(Debug, Default)]
pub(super) struct Rare {
    pub(super) last_crash: Option<LastCrash>,
    /// Why an instance (by its number) is being aborted from outside (hung, killed), for its
    /// in-flight asker.
    pub(super) abort_reason: Option<(u64, CrashReason)>,
    /// `started()` futures waiting for the first start.
    pub(super) waiters: Vec<Waker>,
    /// The supervisor did not restart the slot after a crash before its first start.
    pub(super) gave_up: bool,
    /// Crashes counted (see the module's invariants), and restarts: kept here, with the last
    /// crash, rather than as 16 bytes in every slot (a crash allocates this anyway).
    pub(super) crashes: u64,
    pub(super) restarts: u64,
}

impl<A: Actor> Slot<A> {
    pub(super) fn rare<R>(&self, f: impl FnOnce(&mut Rare) -> R) -> R {
        let mut rare = self.cold().rare.lock();
        f(rare.get_or_insert_with(Box::default))
    }

    /// Counts a restart (in place, or a relaunch by the supervisor).
    pub(super) fn count_restart(&self) {
        self.rare(|r| r.restarts += 1);
        meter!(self.cold().opts.meters, restarted());
    }

    /// The last crash, with its report made if it was an abort.
    pub(super) fn last_crash(&self) -> Option<(Arc<CrashReport>, Option<Instant>)> {
        let last = self.cold().rare.lock().as_ref().and_then(|r| r.last_crash.clone())?;
        Some(match last {
            LastCrash::Report(report, at) => (report, at),
            LastCrash::Aborted(at) => {
                let report = CrashReport {
                    path: self.path().owned(),
                    reason: CrashReason::Aborted,
                    envelope: None,
                };
                (Arc::new(report), at)
            }
        })
    }

    /// Counts a crash and remembers it (for `Stats` and `started()`).
    pub(super) fn record_crash(&self, report: &Arc<CrashReport>) {
        meter!(self.cold().opts.meters, crashed());
        // In a loom model reading the clock is an interleaving point of its own; a statistic is
        // not worth multiplying the search for, so a model records no crash time.
        #[cfg(not(crashonly_loom))]
        let at = Some(self.shared.clock().coarse().0);
        #[cfg(crashonly_loom)]
        let at = None;
        self.rare(|r| {
            r.crashes += 1;
            r.last_crash = Some(LastCrash::Report(report.clone(), at));
        });
    }
}
