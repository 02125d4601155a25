//! Wall-clock time for stores: TTLs and leases must mean the same after a restart, so they are
//! kept in milliseconds since the Unix epoch. Tests use [`ManualTime`] instead of sleeping.

use std::fmt;

use crate::sync::{Arc, AtomicU64, Ordering};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// Now, in ms since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl TimeSource for WallClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to, for tests.
///
/// ```
/// use crashonly::store::{ManualTime, TimeSource};
/// let t = ManualTime::new(1_000);
/// t.advance(std::time::Duration::from_millis(500));
/// assert_eq!(t.now_ms(), 1_500);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualTime {
    // Relaxed: a single value; tests order their own steps.
    ms: Arc<AtomicU64>,
}

impl ManualTime {
    /// Starts at `ms`.
    pub fn new(ms: u64) -> Self {
        ManualTime {
            ms: Arc::new(AtomicU64::new(ms)),
        }
    }

    /// Moves forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.ms.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}

impl TimeSource for ManualTime {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::Relaxed)
    }
}
