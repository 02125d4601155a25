//! The observer's model: the registry's flat list of slots, supervisors and families, made into a
//! tree of views that stays small whatever the number of actors.
//!
//! Aggregation (what keeps the page responsive with 100,000 actors): a node shows at most `limit`
//! children, the most interesting first (restarts, then mailbox depth, then how long the current
//! message has run), and a summary of all of them (counts by state, restarts, crashes, messages
//! queued). The others are reached a page at a time (`api/children`). Building a frame is one
//! pass over the registry; what is sent is bounded by `limit` per level shown.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::clock::Instant;
use crate::registry::{Inspect, Snapshot};
use crate::stats::{Observed, SlotState};
use crate::sync::Arc;

/// One slot, supervisor or family as read from the registry.
pub(crate) struct Entry {
    pub(crate) snap: Snapshot,
    pub(crate) obs: Observed,
    pub(crate) inspect: Arc<dyn Inspect>,
}

/// Reads every live slot, supervisor and family.
pub(crate) fn collect(live: Vec<Arc<dyn Inspect>>) -> Vec<Entry> {
    live.into_iter()
        .map(|i| Entry {
            snap: i.snapshot(),
            obs: i.observe(),
            inspect: i,
        })
        .collect()
}

/// What the page shows of one node.
#[derive(Serialize, Debug, Default)]
pub(crate) struct NodeView {
    pub(crate) path: String,
    name: String,
    /// `supervisor`, `family` or `actor`.
    kind: &'static str,
    /// `running`, `hibernating`, `starting`, `backing off`, `restarting`, `stopped` or `dead`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    restarts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crashes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handled: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expired: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mailbox: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    busy_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_crash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_crash_ago_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intensity_used: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intensity_max: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_active: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    activations: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quarantined: Option<usize>,
    children: Vec<NodeView>,
    /// All children, the shown and the hidden.
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
}

/// The children of a node, counted.
#[derive(Serialize, Debug, Default)]
pub(crate) struct Summary {
    pub(crate) total: usize,
    pub(crate) shown: usize,
    pub(crate) offset: usize,
    running: usize,
    recovering: usize,
    stopped: usize,
    restarts: u64,
    crashes: u64,
    mailbox: usize,
}

/// Messages handled per path at the previous frame, for messages per second.
pub(crate) type Handled = HashMap<String, u64>;

/// How to build a frame's tree.
pub(crate) struct Shape<'a> {
    pub(crate) now: Instant,
    pub(crate) limit: usize,
    /// The previous frame's counts and the time since it (for rates).
    pub(crate) prev: Option<(&'a Handled, Duration)>,
    /// `(path, offset)`: this node's children are shown in path order from `offset` (paging).
    pub(crate) page: Option<(&'a str, usize)>,
}

fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(at) => Some(&path[..at]),
        None => Some("/"),
    }
}

/// The tree under `top` (`/` for the whole system); `None` when nothing lives there.
pub(crate) fn tree(entries: &[Entry], top: &str, shape: &Shape<'_>) -> Option<NodeView> {
    let by_path: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.snap.path.as_str(), i))
        .collect();
    let mut kids: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        // A key with a `/` in it: attach to the nearest ancestor that exists.
        let mut up = parent_of(&e.snap.path);
        while let Some(p) = up {
            if let Some(&pi) = by_path.get(p) {
                kids.entry(pi).or_default().push(i);
                break;
            }
            up = parent_of(p);
        }
    }
    let &at = by_path.get(top)?;
    Some(build(entries, &kids, at, shape))
}

fn interest(e: &Entry) -> (u64, usize, u64) {
    match &e.snap.stats {
        Some(s) => (
            s.restarts,
            s.mailbox_len,
            s.busy_for.map_or(0, |d| d.as_millis() as u64),
        ),
        None => (u64::MAX, 0, 0), // supervisors and families first
    }
}

fn build(entries: &[Entry], kids: &HashMap<usize, Vec<usize>>, at: usize, shape: &Shape<'_>) -> NodeView {
    let e = &entries[at];
    let mut view = view_of(e, shape);
    let Some(mine) = kids.get(&at) else { return view };
    let mut order = mine.clone();
    let paged = shape.page.filter(|(p, _)| *p == e.snap.path).map(|(_, o)| o);
    let offset = paged.unwrap_or(0);
    if paged.is_some() || order.len() <= shape.limit {
        order.sort_by(|a, b| entries[*a].snap.path.cmp(&entries[*b].snap.path));
    } else {
        order.sort_by(|a, b| {
            interest(&entries[*b])
                .cmp(&interest(&entries[*a]))
                .then_with(|| entries[*a].snap.path.cmp(&entries[*b].snap.path))
        });
    }
    let mut summary = Summary {
        total: order.len(),
        offset,
        ..Summary::default()
    };
    for &c in &order {
        if let Some(s) = &entries[c].snap.stats {
            match s.state {
                SlotState::Running => summary.running += 1,
                SlotState::Starting | SlotState::Restarting => summary.recovering += 1,
                _ => summary.stopped += 1,
            }
            summary.restarts += s.restarts;
            summary.crashes += s.crashes;
            summary.mailbox += s.mailbox_len;
        } else {
            summary.running += 1;
        }
    }
    view.children = order
        .iter()
        .skip(offset)
        .take(shape.limit)
        .map(|&c| build(entries, kids, c, shape))
        .collect();
    summary.shown = view.children.len();
    view.summary = Some(summary);
    view
}

fn view_of(e: &Entry, shape: &Shape<'_>) -> NodeView {
    let path = e.snap.path.clone();
    let name = match path.rfind('/') {
        Some(at) if path.len() > 1 => path[at + 1..].to_owned(),
        _ => path.clone(),
    };
    let mut v = NodeView {
        name,
        state: "running",
        ..NodeView::default()
    };
    match &e.obs {
        Observed::Supervisor {
            strategy,
            used,
            max_restarts,
            period,
        } => {
            v.kind = "supervisor";
            v.strategy = Some(strategy.clone());
            v.intensity_used = Some(*used);
            v.intensity_max = Some(*max_restarts);
            v.period_ms = Some(period.as_millis());
        }
        Observed::Family {
            active,
            max_active,
            activations,
            crashes,
            quarantined,
            retry_after,
        } => {
            v.kind = "family";
            v.active = Some(*active);
            v.max_active = Some(*max_active);
            v.activations = Some(*activations);
            v.crashes = Some(*crashes);
            v.quarantined = Some(*quarantined);
            v.retry_after = Some(*retry_after);
        }
        Observed::Actor { capacity, retry_after } => {
            v.kind = "actor";
            v.capacity = Some(*capacity);
            v.retry_after = Some(*retry_after);
        }
    }
    if let Some(s) = &e.snap.stats {
        v.state = match s.state {
            SlotState::Starting => "starting",
            SlotState::Running if s.hibernating => "hibernating",
            SlotState::Running => "running",
            SlotState::Restarting if s.next_start_at.is_some() => "backing off",
            SlotState::Restarting => "restarting",
            SlotState::Stopped => "stopped",
            _ => "dead",
        };
        v.restarts = Some(s.restarts);
        v.crashes = Some(s.crashes);
        v.handled = Some(s.handled);
        v.expired = Some(s.expired);
        v.mailbox = Some(s.mailbox_len);
        v.busy_ms = s.busy_for.map(|d| d.as_millis() as u64);
        v.last_crash = s.last_crash.as_ref().map(|r| r.reason.to_string());
        v.last_crash_ago_ms = s
            .last_crash_at
            .map(|at| shape.now.saturating_duration_since(at).as_millis() as u64);
        if let Some((prev, dt)) = shape.prev {
            let before = prev.get(&path).copied().unwrap_or(s.handled);
            let secs = dt.as_secs_f64().max(1e-3);
            v.rate = Some((s.handled.saturating_sub(before) as f64 / secs * 10.0).round() / 10.0);
        }
    }
    v.path = path;
    v
}

/// The handled counts of every actor, for the next frame's rates.
pub(crate) fn handled(entries: &[Entry]) -> Handled {
    entries
        .iter()
        .filter_map(|e| e.snap.stats.as_ref().map(|s| (e.snap.path.clone(), s.handled)))
        .collect()
}
