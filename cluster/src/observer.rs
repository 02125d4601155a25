//! The cluster on the observer page (feature `observer`): see [`NodesView`].

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crashonly::observer::{Panel, Table};

use crate::error::ClusterError;
use crate::node::Node;

/// How long after a page last looked the tables are still read.
const WATCHED: Duration = Duration::from_secs(10);

/// How long after losing its lease a member is still listed under recent failovers.
const RECENT: &str = "10 minutes";

/// The cluster's tables as last read, shared by the two panels and the refresh task.
#[derive(Default)]
struct Seen {
    nodes: Vec<NodeRow>,
    gone: Vec<NodeRow>,
    /// Unix ms of the last good read.
    read_at: Option<u64>,
    /// Why the last read failed, if it did.
    error: Option<String>,
    me: u64,
    /// When a page last read a panel: the tables are read from the database only while a page
    /// is open (an idle node with no page costs the database its renewals and nothing more).
    asked: Option<std::time::Instant>,
}

struct NodeRow {
    incarnation: u64,
    name: String,
    /// Lease left in ms: negative once it ran out (how long ago).
    lease_ms: i64,
    up_ms: i64,
    held: i64,
}

/// The cluster on the observer page (feature `observer`): a nodes view and recent failovers.
///
/// [`NodesView::start`] reads the cluster's tables in the background, one statement every
/// refresh interval on the node's query connection, while a page has looked at the panels in the
/// last ten seconds (a node nobody watches costs the database nothing for it), and keeps the last
/// answer; the page's panels
/// ([`NodesView::nodes`], [`NodesView::failovers`]) show that copy, so building a frame never
/// waits on the database. When a read fails, the panels keep the previous rows and say how
/// stale they are and why.
///
/// - **Nodes**: every live member (lease not expired by the database's clock): incarnation, name,
///   lease left, time since it joined, entities it holds, and which row is this node.
/// - **Recent failovers**: members whose lease ran out in the last ten minutes (killed, paused,
///   cut off, or rejoined as a new incarnation), when, and how many of their entities are still
///   placed on them (each moves to a live node on its next request).
///
/// The entity counts come from one `GROUP BY` over the placement table (a scan; with millions of
/// placed entities, choose a longer refresh).
///
/// ```no_run
/// # async fn demo(node: crashonly_cluster::Node, system: crashonly::System) -> std::io::Result<()> {
/// use crashonly::observer::{self, ObserverOptions};
/// use crashonly_cluster::NodesView;
/// use std::time::Duration;
///
/// let view = NodesView::start(&node, Duration::from_secs(1));
/// let opts = ObserverOptions::default().with_panel(view.nodes()).with_panel(view.failovers());
/// observer::bind(&system, opts).await?.serve().await
/// # }
/// ```
///
/// The reading stops when the view and both panels are dropped.
#[derive(Clone)]
pub struct NodesView {
    seen: Arc<Mutex<Seen>>,
}

impl fmt::Debug for NodesView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodesView").finish_non_exhaustive()
    }
}

impl NodesView {
    /// Starts reading the cluster's tables every `every` (at least 100 ms), on `node`'s query
    /// connection, each read bounded by `every`. Needs a tokio runtime.
    pub fn start(node: &Node, every: Duration) -> NodesView {
        let every = every.max(Duration::from_millis(100));
        let seen = Arc::new(Mutex::new(Seen::default()));
        tokio::spawn(refresh(node.clone(), Arc::downgrade(&seen), every));
        NodesView { seen }
    }

    /// The panel of live members.
    pub fn nodes(&self) -> impl Panel {
        Nodes(self.seen.clone())
    }

    /// The panel of members that lost their lease recently.
    pub fn failovers(&self) -> impl Panel {
        Failovers(self.seen.clone())
    }
}

async fn refresh(node: Node, seen: Weak<Mutex<Seen>>, every: Duration) {
    loop {
        let Some(shared) = seen.upgrade() else { return };
        let watched = shared
            .lock()
            .unwrap()
            .asked
            .is_some_and(|at| at.elapsed() < WATCHED.max(every * 3));
        drop(shared);
        if !watched {
            tokio::time::sleep(every.min(Duration::from_millis(250))).await;
            continue;
        }
        let read = tokio::time::timeout(every, read(&node)).await;
        let Some(seen) = seen.upgrade() else { return };
        {
            let mut s = seen.lock().unwrap();
            s.me = node.incarnation();
            match read {
                Ok(Ok((nodes, gone))) => {
                    s.nodes = nodes;
                    s.gone = gone;
                    s.read_at = Some(unix_ms());
                    s.error = None;
                }
                Ok(Err(e)) => s.error = Some(e.to_string()),
                Err(_) => s.error = Some(format!("the read took longer than {every:?}")),
            }
        }
        drop(seen);
        tokio::time::sleep(every).await;
    }
}

/// One statement: live members and those gone in the last ten minutes, with their entity counts.
async fn read(node: &Node) -> Result<(Vec<NodeRow>, Vec<NodeRow>), ClusterError> {
    let m = node.membership();
    let s = m.schema();
    let sql = format!(
        "WITH held AS (SELECT holder, count(*) AS n FROM {s}.placement GROUP BY holder)
         SELECT m.incarnation, m.name, m.lease_until > clock_timestamp(),
                (EXTRACT(EPOCH FROM (m.lease_until - clock_timestamp())) * 1000)::float8,
                (EXTRACT(EPOCH FROM (clock_timestamp() - m.joined_at)) * 1000)::float8,
                COALESCE(h.n, 0)
         FROM {s}.members m LEFT JOIN held h ON h.holder = m.incarnation
         WHERE m.lease_until > clock_timestamp() - interval '{RECENT}'
         ORDER BY m.incarnation"
    );
    let rows = m.query(&sql, &[]).await?;
    let (mut nodes, mut gone) = (Vec::new(), Vec::new());
    for r in rows {
        let live: bool = r.get(2);
        let lease: f64 = r.get(3);
        let row = NodeRow {
            incarnation: r.get::<_, i64>(0) as u64,
            name: r.get(1),
            lease_ms: lease as i64,
            up_ms: r.get::<_, f64>(4) as i64,
            held: r.get(5),
        };
        if live {
            nodes.push(row)
        } else {
            gone.push(row)
        }
    }
    gone.sort_by_key(|g| std::cmp::Reverse(g.lease_ms));
    Ok((nodes, gone))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `1.2 s`, `3 m 4 s`: short durations for the page.
fn human(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..=9_999 => format!("{:.1} s", ms as f64 / 1000.0),
        10_000..=599_999 => format!("{} m {} s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{} h {} m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// The note under a table: when it was read, or why it is stale.
fn note(s: &Seen, what: String) -> String {
    match (&s.error, s.read_at) {
        (None, Some(_)) => what,
        (Some(e), Some(at)) => format!("{what}; stale: not read for {} ({e})", human((unix_ms() - at) as i64)),
        (Some(e), None) => format!("not read yet: {e}"),
        (None, None) => "not read yet".to_owned(),
    }
}

struct Nodes(Arc<Mutex<Seen>>);

impl Panel for Nodes {
    fn table(&self) -> Table {
        let mut s = self.0.lock().unwrap();
        s.asked = Some(std::time::Instant::now());
        let mut t = Table::new(
            "Nodes",
            ["incarnation", "name", "lease left", "up", "entities held", ""],
        );
        for n in &s.nodes {
            let me = if n.incarnation == s.me { "this node" } else { "" };
            t = t.with_row([
                n.incarnation.to_string(),
                n.name.clone(),
                human(n.lease_ms),
                human(n.up_ms),
                n.held.to_string(),
                me.to_owned(),
            ]);
        }
        let held: i64 = s.nodes.iter().map(|n| n.held).sum();
        t.with_note(note(
            &s,
            format!("{} live, {held} entities placed on live nodes", s.nodes.len()),
        ))
    }
}

struct Failovers(Arc<Mutex<Seen>>);

impl Panel for Failovers {
    fn table(&self) -> Table {
        let mut s = self.0.lock().unwrap();
        s.asked = Some(std::time::Instant::now());
        let mut t = Table::new(
            "Recent failovers",
            ["incarnation", "name", "lease lost", "was up", "entities not yet moved"],
        );
        for g in &s.gone {
            t = t.with_row([
                g.incarnation.to_string(),
                g.name.clone(),
                format!("{} ago", human(-g.lease_ms)),
                human(g.up_ms + g.lease_ms),
                g.held.to_string(),
            ]);
        }
        t.with_note(note(&s, format!("members whose lease ran out in the last {RECENT}")))
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn durations_read_short() {
        assert_eq!(human(1234), "1.2 s");
        assert_eq!(human(-5), "0.0 s");
        assert_eq!(human(184_000), "3 m 4 s");
        assert_eq!(human(7_380_000), "2 h 3 m");
    }
}
