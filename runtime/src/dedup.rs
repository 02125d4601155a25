//! A bounded window of recent idempotency keys and their replies (`ActorSpec::dedup`): a keyed
//! request repeated within the window is answered from it, not executed again. It lives in the
//! slot, so it survives restarts of the actor (not of the process: for that, the store's
//! `apply_once`).

use std::collections::{HashMap, VecDeque};

use crate::sync::Mutex;

pub(crate) struct Dedup<R> {
    cap: usize,
    clone: fn(&R) -> R,
    seen: Mutex<(HashMap<u64, R>, VecDeque<u64>)>,
}

impl<R> Dedup<R> {
    pub(crate) fn new(cap: usize, clone: fn(&R) -> R) -> Self {
        Dedup {
            cap: cap.max(1),
            clone,
            seen: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    pub(crate) fn get(&self, key: u64) -> Option<R> {
        self.seen.lock().0.get(&key).map(self.clone)
    }

    /// Remembers a copy of `reply` under `key`.
    pub(crate) fn insert(&self, key: u64, reply: &R) {
        let reply = (self.clone)(reply);
        let mut seen = self.seen.lock();
        let (map, order) = &mut *seen;
        if map.insert(key, reply).is_none() {
            order.push_back(key);
            while order.len() > self.cap {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }
}
