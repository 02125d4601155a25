#![allow(dead_code)] // shared by the litmus harness and the cluster tests; each uses a part
//! Failover figures of a clustered run under `kill -9`: from what the clients saw (each
//! acknowledgement: when, which cart, which node incarnation held it) and the kills (when, which
//! incarnation), how long each kill's carts took to be acknowledged again by another node.
//!
//! A kill's carts are those whose last acknowledgement before the kill named the killed
//! incarnation. For each of them, the first acknowledgement after the kill by another holder
//! (a surviving node, or the restarted process, which is a new incarnation) ends its failover.
//! Per kill: the first of its carts back (the cluster serves the dead node's carts again) and the
//! last (all of them back, as far as the clients wrote them again: a cart no client wrote after
//! the kill does not count). Neither says anything when the killed node held no cart.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// One acknowledged write, as a client saw it.
#[derive(Clone, Debug)]
pub struct Ack {
    /// Since the start of the run.
    pub at: Duration,
    /// When the acknowledged write was first sent (before the kill: it waited through it).
    pub sent: Duration,
    /// The cart written.
    pub cart: String,
    /// The incarnation of the node that held the cart (the cart's JSON names it).
    pub holder: u64,
}

/// One `kill -9` of a node.
#[derive(Clone, Debug)]
pub struct Kill {
    /// Since the start of the run.
    pub at: Duration,
    /// The incarnation killed.
    pub victim: u64,
    /// How long its membership lease still ran by the database's clock when it was killed, if
    /// the harness looked: failover cannot finish before the lease runs out.
    pub lease_left: Option<Duration>,
}

/// The failover of one kill whose node held carts that were written again.
#[derive(Clone, Debug)]
pub struct Failover {
    /// Which kill (index into the kills).
    pub kill: usize,
    /// The carts the killed node held.
    pub held: usize,
    /// How many of them were acknowledged again by another node.
    pub back: usize,
    /// From the kill until the first of them was acknowledged again.
    pub first: Duration,
    /// From the kill until the last of them was.
    pub all: Duration,
    /// From the kill until that last cart's acknowledged write was first sent (zero if before):
    /// how much of `all` the clients spent not asking for it.
    pub last_sent: Duration,
    /// From the kill until the first of them was acknowledged again among those a client was
    /// already asking for when the killed node's lease ran out (the lease left known): the
    /// cluster's own failover, without the time no client asked. `None` when no such cart.
    pub first_asked: Option<Duration>,
    /// Another node was killed before the first cart came back: the carts may have been sent to
    /// it, and wait for its lease in turn (a double fault).
    pub overlapped: bool,
}

/// The failover of each kill, in the kills' order; kills whose node held no cart written again
/// are left out. `acks` need not be sorted.
pub fn failovers(kills: &[Kill], acks: &[Ack]) -> Vec<Failover> {
    let mut acks: Vec<&Ack> = acks.iter().collect();
    acks.sort_by_key(|a| a.at);
    let mut out = Vec::new();
    for (i, k) in kills.iter().enumerate() {
        let split = acks.partition_point(|a| a.at < k.at);
        let mut last: HashMap<&str, u64> = HashMap::new();
        for a in &acks[..split] {
            last.insert(&a.cart, a.holder);
        }
        let held: HashSet<&str> = last.iter().filter(|(_, &h)| h == k.victim).map(|(c, _)| *c).collect();
        let mut back: HashMap<&str, &Ack> = HashMap::new();
        for a in &acks[split..] {
            if back.len() == held.len() {
                break;
            }
            if a.holder != k.victim && held.contains(a.cart.as_str()) {
                back.entry(&a.cart).or_insert(a);
            }
        }
        let first = back.values().map(|a| a.at).min();
        let first_asked = k.lease_left.and_then(|left| {
            back.values()
                .filter(|a| a.sent <= k.at + left)
                .map(|a| a.at - k.at)
                .min()
        });
        if let (Some(first), Some(last)) = (first, back.values().max_by_key(|a| a.at)) {
            out.push(Failover {
                kill: i,
                held: held.len(),
                back: back.len(),
                first: first - k.at,
                all: last.at - k.at,
                last_sent: last.sent.saturating_sub(k.at),
                first_asked,
                overlapped: kills.iter().any(|o| o.at > k.at && o.at < first),
            });
        }
    }
    out
}

/// min / median / p99 / max of a sample, in milliseconds (p99 by nearest rank).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spread {
    /// How many values.
    pub n: usize,
    /// The least.
    pub min: f64,
    /// The middle value (the upper one of an even sample).
    pub median: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The greatest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values` (all zero when empty).
    pub fn of(values: impl IntoIterator<Item = Duration>) -> Spread {
        let mut v: Vec<Duration> = values.into_iter().collect();
        v.sort();
        let n = v.len();
        if n == 0 {
            return Spread::default();
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        // Nearest rank: the smallest value with at least 99% of the sample at or below it.
        let p99 = (n * 99).div_ceil(100).max(1) - 1;
        Spread {
            n,
            min: ms(v[0]),
            median: ms(v[n / 2]),
            p99: ms(v[p99]),
            max: ms(v[n - 1]),
        }
    }

    /// As JSON: `{"n", "min", "median", "p99", "max"}` (ms).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "n": self.n, "min": self.min, "median": self.median, "p99": self.p99, "max": self.max })
    }

    /// As one line: `min 1.0 · median 2.0 · p99 3.0 · max 4.0 ms (n 5)`.
    pub fn line(&self) -> String {
        format!(
            "min {:.0} · median {:.0} · p99 {:.0} · max {:.0} ms (n {})",
            self.min, self.median, self.p99, self.max, self.n
        )
    }
}

/// The figures of a run's failovers: their spreads, and the phase after the lease ran out.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Kill to the first of its carts back.
    pub first: Spread,
    /// Kill to the first of its carts back that a client asked for before the lease ran out.
    pub first_asked: Spread,
    /// Kill to the first of its carts back, for kills with no other kill before it (single faults).
    pub first_single: Spread,
    /// Kill to all of its carts back.
    pub all: Spread,
    /// Kill to the first sending of the last cart's acknowledged write.
    pub last_sent: Spread,
    /// The killed node's lease left at the kill (the floor of a failover), where known.
    pub lease_left: Spread,
    /// From the lease running out to the first cart back (retry waits, routing, claim), where
    /// the lease left is known; zero when a cart came back before it (cannot happen if the
    /// placement holds).
    pub after_lease: Spread,
    /// Carts the killed nodes held (summed over the kills).
    pub held: usize,
    /// How many of them came back.
    pub back: usize,
}

impl Figures {
    /// The figures of `failovers` of `kills`.
    pub fn of(kills: &[Kill], failovers: &[Failover]) -> Figures {
        let after = failovers
            .iter()
            .filter_map(|f| kills[f.kill].lease_left.map(|left| f.first.saturating_sub(left)));
        Figures {
            first: Spread::of(failovers.iter().map(|f| f.first)),
            first_asked: Spread::of(failovers.iter().filter_map(|f| f.first_asked)),
            first_single: Spread::of(failovers.iter().filter(|f| !f.overlapped).map(|f| f.first)),
            all: Spread::of(failovers.iter().map(|f| f.all)),
            last_sent: Spread::of(failovers.iter().map(|f| f.last_sent)),
            lease_left: Spread::of(kills.iter().filter_map(|k| k.lease_left)),
            after_lease: Spread::of(after),
            held: failovers.iter().map(|f| f.held).sum(),
            back: failovers.iter().map(|f| f.back).sum(),
        }
    }

    /// As JSON, each spread in ms.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "first_ms": self.first.json(),
            "first_asked_ms": self.first_asked.json(),
            "first_single_ms": self.first_single.json(),
            "all_ms": self.all.json(),
            "last_sent_ms": self.last_sent.json(),
            "lease_left_ms": self.lease_left.json(),
            "first_after_lease_ms": self.after_lease.json(),
            "carts_held": self.held,
            "carts_back": self.back,
        })
    }
}
