//! The journal: a bounded log of a system's crashes, restarts, escalations and watchdog firings,
//! read by the observer page (feature `observer`; nothing of it exists without the feature).
//!
//! Invariants: it holds at most `CAPACITY` events; older ones are dropped first, and the count of
//! dropped events only grows, so a reader that saw sequence number `n` knows exactly how many it
//! missed. Its lock is a leaf (no other lock is taken while it is held), so a slot or supervisor
//! may record while holding its own.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::crash::CrashReport;
use crate::sync::{Arc, PlainMutex};

/// Events kept; older ones are dropped (and counted).
const CAPACITY: usize = 1024;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An instance crashed (from inside, or aborted from outside).
    Crash,
    /// A supervisor decided to restart a child.
    Restart,
    /// A supervisor exceeded its restart intensity and gave up.
    Escalation,
    /// The watchdog crash-restarted a slot past its handling lease.
    Watchdog,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Crash => "crash",
            Kind::Restart => "restart",
            Kind::Escalation => "escalation",
            Kind::Watchdog => "watchdog",
        }
    }
}

/// What an event says: kept as it was given and formatted only when the page reads it, so that
/// recording a crash or a restart (on the restart path, feature `observer`) formats nothing.
#[derive(Clone, Debug)]
pub(crate) enum Detail {
    /// A crash: its reason.
    Crash(Arc<CrashReport>),
    /// A restart decided: `"{what} after {delay:?}"`.
    Restart { what: &'static str, delay: Duration },
    /// Anything else, formatted already.
    Text(String),
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Crash(report) => report.reason.fmt(f),
            Detail::Restart { what, delay } => write!(f, "{what} after {delay:?}"),
            Detail::Text(text) => f.write_str(text),
        }
    }
}

/// One recorded event.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    /// Sequence number, from 1, never reused.
    pub(crate) seq: u64,
    pub(crate) kind: Kind,
    pub(crate) path: String,
    pub(crate) detail: Detail,
    /// Milliseconds since the Unix epoch (the operator's wall clock, not the system's clock).
    pub(crate) unix_ms: u64,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Event>,
    next: u64,
    dropped: u64,
}

/// The bounded log.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    ring: PlainMutex<Ring>,
}

impl Journal {
    /// Records an event, dropping the oldest past the capacity.
    pub(crate) fn record(&self, kind: Kind, path: impl std::fmt::Display, detail: Detail) {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut ring = self.ring.lock();
        ring.next += 1;
        let seq = ring.next;
        if ring.events.len() == CAPACITY {
            ring.events.pop_front();
            ring.dropped += 1;
        }
        ring.events.push_back(Event {
            seq,
            kind,
            path: path.to_string(),
            detail,
            unix_ms,
        });
    }

    /// The events after sequence number `after` still held, and the number dropped so far.
    pub(crate) fn since(&self, after: u64) -> (Vec<Event>, u64) {
        let ring = self.ring.lock();
        let events = ring.events.iter().filter(|e| e.seq > after).cloned().collect();
        (events, ring.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_keeps_the_newest_and_counts_what_it_dropped() {
        let j = Journal::default();
        for i in 0..CAPACITY + 10 {
            j.record(Kind::Crash, "/a", Detail::Text(i.to_string()));
        }
        let (all, dropped) = j.since(0);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(dropped, 10);
        assert_eq!(all[0].seq, 11);
        let (tail, _) = j.since(all[CAPACITY - 2].seq);
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].detail.to_string(), (CAPACITY + 9).to_string());
    }

    #[test]
    fn details_read_as_they_were_formatted_before() {
        let report = Arc::new(CrashReport::new(
            "/a",
            crate::crash::CrashReason::Panic {
                message: "boom".into(),
                location: Some("src/a.rs:1:2".into()),
            },
        ));
        assert_eq!(Detail::Crash(report.clone()).to_string(), report.reason.to_string());
        let delay = Duration::from_micros(1500);
        let restart = Detail::Restart {
            what: "OneForOne",
            delay,
        };
        assert_eq!(restart.to_string(), "OneForOne after 1.5ms");
        assert_eq!(Detail::Text("x".into()).to_string(), "x");
    }
}
