#![allow(dead_code)] // shared by the litmus harness and the tests; each uses a part
//! A history checker, the judge of every chaos run (in the manner of Jepsen's): it reads what the
//! clients did (each write invoked, then acknowledged, failed, or of unknown outcome) and what the
//! system holds at the end, and reports acknowledged writes lost, values nobody wrote, duplicates,
//! and per-sender order violations where order is promised.
//!
//! The model is an append-only collection per key (a cart's items, a log): a write appends one
//! value to one key; the final read of a key lists its values in order.

use std::collections::HashMap;
use std::hash::Hash;

/// How a write ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: it must be in the final state.
    Ok,
    /// Refused for sure (a typed error before anything ran): it must not be there.
    Failed,
    /// Unknown (timed out, connection lost): it may or may not be there, at most once if keyed.
    Unknown,
}

/// One write of one client.
#[derive(Clone, Debug)]
pub struct Write<K, V> {
    pub client: u32,
    pub key: K,
    pub value: V,
    pub outcome: Outcome,
}

/// What was checked and what was wrong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub writes: u64,
    pub acknowledged: u64,
    /// Acknowledged writes missing from the final state.
    pub lost: u64,
    /// Values in the final state that no client wrote (or that were refused for sure).
    pub unexpected: u64,
    /// Extra copies of a value in the final state.
    pub duplicates: u64,
    /// Pairs of one client's acknowledged writes to one key found in the opposite order.
    pub order_violations: u64,
}

impl Report {
    /// Valid only if nothing acknowledged was lost and nothing unexpected appeared; on an
    /// idempotency-keyed path duplicates must be 0 too; where order is promised, so must
    /// order violations.
    pub fn valid(&self, keyed: bool, ordered: bool) -> bool {
        self.lost == 0
            && self.unexpected == 0
            && (!keyed || self.duplicates == 0)
            && (!ordered || self.order_violations == 0)
    }
}

/// Checks `writes` (in the order each client invoked them) against `state`, the final read of
/// every key. Linear in the size of the history.
pub fn check<K, V>(writes: &[Write<K, V>], state: &HashMap<K, Vec<V>>) -> Report
where
    K: Hash + Eq + Clone,
    V: Hash + Eq + Clone,
{
    let mut report = Report {
        writes: writes.len() as u64,
        ..Report::default()
    };
    // Where each value sits in its key's final state (first copy), and how many copies.
    let mut position: HashMap<(&K, &V), (usize, u64)> = HashMap::new();
    for (k, values) in state {
        for (i, v) in values.iter().enumerate() {
            let e = position.entry((k, v)).or_insert((i, 0));
            e.1 += 1;
        }
    }
    let mut written: HashMap<(&K, &V), Outcome> = HashMap::with_capacity(writes.len());
    // Per (client, key): the final position of the client's last acknowledged write.
    let mut last_pos: HashMap<(u32, &K), usize> = HashMap::new();
    for w in writes {
        written.insert((&w.key, &w.value), w.outcome);
        if w.outcome != Outcome::Ok {
            continue;
        }
        report.acknowledged += 1;
        match position.get(&(&w.key, &w.value)) {
            None => report.lost += 1,
            Some(&(pos, _)) => {
                if let Some(prev) = last_pos.insert((w.client, &w.key), pos) {
                    if prev > pos {
                        report.order_violations += 1;
                    }
                }
            }
        }
    }
    for ((k, v), (_, copies)) in &position {
        match written.get(&(*k, *v)) {
            None | Some(Outcome::Failed) => report.unexpected += copies,
            Some(_) => report.duplicates += copies - 1,
        }
    }
    report
}
