//! A system's Prometheus meters (feature `metrics`): one recorder per `System` (no process-wide
//! recorder, like every other part of a system), and one set of handles per label set.
//!
//! Invariants:
//! - Labels are the actor's type and its path pattern, never a value that grows with traffic: an
//!   entity's path is its family's followed by `/*`, an unnamed child's last segment is `#*`, and
//!   past [`MAX_SETS`] label sets every new one is counted under the path [`OVERFLOW`].
//! - A slot's handles are looked up once, when its spec is built (an entity family's once for all
//!   its activations), so that counting a message is an atomic add on a shared handle.
//! - Counters live in the recorder, not in the slots: an activation passivated or an actor removed
//!   takes nothing away from a counter (Prometheus counters only go up).

use std::collections::HashMap;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::sync::{Arc, Mutex, Ordering, Stat};

/// How many (type, path pattern) label sets a system keeps apart.
pub(crate) const MAX_SETS: usize = 1000;
/// The path of every label set past [`MAX_SETS`].
pub(crate) const OVERFLOW: &str = "(other)";

/// The handling-time histogram samples one message in this many of each slot (its 1st, 17th, ...):
/// a sample costs two clock reads and a push into the recorder's buffer, several times what the
/// rest of the metering of a message costs (see `benches/metrics.rs`).
pub(crate) const SAMPLE_EVERY: u64 = 16;

/// Upper bounds of the handling-time histogram buckets, in seconds (10 µs to 10 s).
const BUCKETS: &[f64] = &[
    0.000_01, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
];

/// The names of the meters, with their help texts.
const HELP: &[(&str, &str)] = &[
    (
        "crashonly_handled_total",
        "Messages handled to completion (successfully or not).",
    ),
    (
        "crashonly_crashes_total",
        "Actor instances that crashed (aborts by a supervisor included).",
    ),
    (
        "crashonly_restarts_total",
        "Actor instances started after the first one (rejuvenations included).",
    ),
    (
        "crashonly_expired_total",
        "Envelopes dropped at dequeue because their deadline had passed.",
    ),
    (
        "crashonly_retry_after_total",
        "Sends refused at once with RetryAfter (recovering or quarantined).",
    ),
    (
        "crashonly_handling_seconds",
        "Time spent handling one message (one in 16 of each actor sampled).",
    ),
    (
        "crashonly_mailbox_depth",
        "Messages waiting, summed over the live slots of the label set.",
    ),
    ("crashonly_mailbox_depth_max", "The deepest mailbox of the label set."),
    (
        "crashonly_live",
        "Live slots of the label set (for a family: its live activations).",
    ),
    (
        "crashonly_activations_total",
        "Entity activations (each key's instance brought into memory).",
    ),
    (
        "crashonly_passivations_total",
        "Entity activations passivated, by reason (idle or cap).",
    ),
    (
        "crashonly_escalations_total",
        "Supervisors that gave up past their restart intensity.",
    ),
    (
        "crashonly_escalating",
        "Supervisors giving up right now (their parent has not decided yet).",
    ),
    ("crashonly_abandoned_tasks", "Tasks abandoned, stuck after their abort."),
    (
        "crashonly_ready",
        "1 while the root supervisor runs and no escalation is in progress.",
    ),
];

/// A label set: the actor's type name and its path pattern.
type SetKey = (&'static str, Arc<str>);

/// The system's recorder and its label sets.
pub(crate) struct Meters {
    recorder: PrometheusRecorder,
    sets: Mutex<HashMap<SetKey, Arc<SlotMeters>>>,
    escalations: Counter,
    /// Supervisors inside `give_up` now. Relaxed: a figure for `/readyz`, ordering nothing.
    escalating: Stat,
}

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters").finish_non_exhaustive()
    }
}

/// The handles of one label set, shared by every slot of it.
pub(crate) struct SlotMeters {
    pub(crate) actor: &'static str,
    pub(crate) path: Arc<str>,
    /// Published to `handled` at each scrape ([`SlotMeters::publish`]): the recorder's counters
    /// cost two atomic adds (value and generation), this one one. Relaxed: a statistic.
    handled_n: Stat,
    handled: Counter,
    crashes: Counter,
    restarts: Counter,
    expired: Counter,
    retry_after: Counter,
    handling: Histogram,
    pub(crate) depth: Gauge,
    pub(crate) depth_max: Gauge,
    pub(crate) live: Gauge,
    /// An entity family's: activations, passivations when idle and over the cap.
    family: Option<[Counter; 3]>,
}

impl std::fmt::Debug for SlotMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotMeters")
            .field("actor", &self.actor)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()))
}

impl Meters {
    pub(crate) fn new() -> Meters {
        let recorder = PrometheusBuilder::new()
            .set_buckets(BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        for (name, help) in HELP {
            let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
            if name.as_str().ends_with("_seconds") {
                recorder.describe_histogram(name, Some(Unit::Seconds), help);
            } else if name.as_str().ends_with("_total") {
                recorder.describe_counter(name, None, help);
            } else {
                recorder.describe_gauge(name, None, help);
            }
        }
        let escalations = recorder.register_counter(&Key::from_static_name("crashonly_escalations_total"), &metadata());
        Meters {
            recorder,
            sets: Mutex::new(HashMap::new()),
            escalations,
            escalating: Stat::new(0),
        }
    }

    /// The handles of `(actor, path)`, made on first use (an overflow set past [`MAX_SETS`]);
    /// with activation and passivation counters for an entity family's.
    pub(crate) fn set(&self, actor: &'static str, path: &str, family: bool) -> Arc<SlotMeters> {
        let mut sets = self.sets.lock();
        if let Some(m) = sets.get(&(actor, Arc::from(path))) {
            return m.clone();
        }
        let path: Arc<str> = if sets.len() >= MAX_SETS {
            OVERFLOW.into()
        } else {
            path.into()
        };
        let made = sets
            .entry((actor, path.clone()))
            .or_insert_with(|| Arc::new(self.make(actor, path, family)));
        made.clone()
    }

    fn make(&self, actor: &'static str, path: Arc<str>, family: bool) -> SlotMeters {
        let r = &self.recorder;
        let labels = |extra: Option<(&'static str, &'static str)>| {
            let mut l = vec![Label::new("actor", actor), Label::new("path", path.to_string())];
            l.extend(extra.map(|(k, v)| Label::new(k, v)));
            l
        };
        let key = |name: &'static str, extra| Key::from_parts(name, labels(extra));
        let counter = |name| r.register_counter(&key(name, None), &metadata());
        let gauge = |name| r.register_gauge(&key(name, None), &metadata());
        let passivated =
            |why| r.register_counter(&key("crashonly_passivations_total", Some(("reason", why))), &metadata());
        SlotMeters {
            actor,
            handled_n: Stat::new(0),
            handled: counter("crashonly_handled_total"),
            crashes: counter("crashonly_crashes_total"),
            restarts: counter("crashonly_restarts_total"),
            expired: counter("crashonly_expired_total"),
            retry_after: counter("crashonly_retry_after_total"),
            handling: r.register_histogram(&key("crashonly_handling_seconds", None), &metadata()),
            depth: gauge("crashonly_mailbox_depth"),
            depth_max: gauge("crashonly_mailbox_depth_max"),
            live: gauge("crashonly_live"),
            family: family.then(|| {
                [
                    counter("crashonly_activations_total"),
                    passivated("idle"),
                    passivated("cap"),
                ]
            }),
            path,
        }
    }

    /// Every label set made so far.
    pub(crate) fn sets(&self) -> Vec<Arc<SlotMeters>> {
        self.sets.lock().values().cloned().collect()
    }

    /// Sets a gauge without labels.
    pub(crate) fn gauge(&self, name: &'static str, value: f64) {
        self.recorder
            .register_gauge(&Key::from_static_name(name), &metadata())
            .set(value);
    }

    /// The Prometheus text exposition of every meter.
    pub(crate) fn render(&self) -> String {
        self.recorder.handle().render()
    }

    /// Drains the histograms' sample buffers into their buckets, so that they do not grow between
    /// scrapes (called by the watchdog's periodic task).
    pub(crate) fn upkeep(&self) {
        self.recorder.handle().run_upkeep();
    }

    /// A supervisor starts giving up; its escalation lasts until the guard is dropped (which
    /// happens too if the supervisor is aborted meanwhile).
    pub(crate) fn escalation(self: &Arc<Self>) -> Escalation {
        self.escalations.increment(1);
        self.escalating.fetch_add(1, Ordering::Relaxed);
        Escalation(self.clone())
    }

    /// Supervisors giving up now.
    pub(crate) fn escalating(&self) -> u64 {
        self.escalating.load(Ordering::Relaxed)
    }
}

/// An escalation in progress (see [`Meters::escalation`]).
#[derive(Debug)]
pub(crate) struct Escalation(Arc<Meters>);

impl Drop for Escalation {
    fn drop(&mut self) {
        // Never below zero: each guard adds one before it can be dropped.
        self.0.escalating.fetch_add(u64::MAX, Ordering::Relaxed);
    }
}

impl SlotMeters {
    /// A message handled, the `n`th of its slot (from 0); `took` reads how long it took, in nanos,
    /// for one message in [`SAMPLE_EVERY`] only.
    pub(crate) fn handled(&self, n: u64, took: impl FnOnce() -> u64) {
        self.handled_n.fetch_add(1, Ordering::Relaxed);
        if Self::sampled(n) {
            self.handling.record(took() as f64 * 1e-9);
        }
    }
    /// Whether the handling time of the `n`th message (from 0) is recorded.
    pub(crate) fn sampled(n: u64) -> bool {
        n.is_multiple_of(SAMPLE_EVERY)
    }
    /// Copies the counts kept outside the recorder into it (before a render).
    pub(crate) fn publish(&self) {
        self.handled.absolute(self.handled_n.load(Ordering::Relaxed));
    }
    pub(crate) fn crashed(&self) {
        self.crashes.increment(1);
    }
    pub(crate) fn restarted(&self) {
        self.restarts.increment(1);
    }
    pub(crate) fn expired(&self) {
        self.expired.increment(1);
    }
    pub(crate) fn retry_after(&self) {
        self.retry_after.increment(1);
    }
    pub(crate) fn activated(&self) {
        if let Some([activations, ..]) = &self.family {
            activations.increment(1);
        }
    }
    pub(crate) fn passivated(&self, idle: u64, cap: u64) {
        if let Some([_, when_idle, over_cap]) = &self.family {
            when_idle.increment(idle);
            over_cap.increment(cap);
        }
    }
}

/// The path pattern of a slot spawned under `parent` as `name` (`None`: unnamed, `#*`).
/// Every unnamed segment (`#12`) of the parent's path is `#*` as well.
pub(crate) fn pattern(parent: &str, name: Option<&str>) -> String {
    let mut out = String::with_capacity(parent.len() + 8);
    for seg in parent.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(if seg.starts_with('#') { "#*" } else { seg });
    }
    out.push('/');
    out.push_str(name.unwrap_or("#*"));
    out
}
