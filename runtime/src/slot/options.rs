//! A slot's settings: as a spec gives them (`SlotOptions`, already tightened by the policy) and
//! as a slot keeps them (`Tuned`, compact: every actor has one).

use std::time::Duration;

#[cfg(feature = "metrics")]
use crate::sync::Arc;

/// Per-slot settings, already tightened by the policy.
#[derive(Clone, Debug, Default)]
pub(crate) struct SlotOptions {
    pub(crate) capacity: usize,
    pub(crate) handling: Duration,
    pub(crate) rejuvenate_messages: Option<u64>,
    pub(crate) rejuvenate_age: Option<Duration>,
    pub(crate) dedicated: bool,
    /// Its label set's meters (none for a slot built without them, such as in a unit test).
    #[cfg(feature = "metrics")]
    pub(crate) meters: Option<Arc<crate::meters::SlotMeters>>,
}

/// `SlotOptions` as a slot keeps them: durations in nanoseconds and 0 for none, the capacity
/// left to the mailbox (40 bytes instead of 72 in every slot).
pub(super) struct Tuned {
    handling_ns: u64,
    rejuvenate_messages: u64,
    rejuvenate_age_ns: u64,
    pub(super) dedicated: bool,
    #[cfg(feature = "metrics")]
    pub(super) meters: Option<Arc<crate::meters::SlotMeters>>,
}

impl Tuned {
    pub(super) fn of(opts: SlotOptions) -> Self {
        Tuned {
            handling_ns: opts.handling.as_nanos().try_into().unwrap_or(u64::MAX),
            // Both builders (actors and entities) make it at least 1: 0 here means none.
            rejuvenate_messages: opts.rejuvenate_messages.unwrap_or(0),
            rejuvenate_age_ns: opts
                .rejuvenate_age
                .map_or(0, |a| a.as_nanos().try_into().unwrap_or(u64::MAX).max(1)),
            dedicated: opts.dedicated,
            #[cfg(feature = "metrics")]
            meters: opts.meters,
        }
    }

    /// The handling lease of one message.
    pub(super) fn handling(&self) -> Duration {
        Duration::from_nanos(self.handling_ns)
    }

    pub(super) fn rejuvenate_age(&self) -> Option<Duration> {
        (self.rejuvenate_age_ns != 0).then(|| Duration::from_nanos(self.rejuvenate_age_ns))
    }

    pub(super) fn rejuvenate_messages(&self) -> Option<u64> {
        (self.rejuvenate_messages != 0).then_some(self.rejuvenate_messages)
    }
}
