//! A bounded window of recent idempotency keys and their replies (`ActorSpec::dedup`): a keyed
//! request repeated within the window is answered from it, not executed again. It lives in the
//! slot, so it survives restarts of the actor (not of the process: for that, the store's
//! `apply_once`).
//!
//! Keys are whole ([`IdempotencyKey`] holds the key's bytes): the map's hash only picks a bucket,
//! and two keys are one entry only if their bytes are equal.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use crate::envelope::IdempotencyKey;
use crate::sync::Mutex;

type Window<R, S> = (HashMap<IdempotencyKey, R, S>, VecDeque<IdempotencyKey>);

pub(crate) struct Dedup<R, S = RandomState> {
    cap: usize,
    clone: fn(&R) -> R,
    seen: Mutex<Window<R, S>>,
}

impl<R> Dedup<R> {
    pub(crate) fn new(cap: usize, clone: fn(&R) -> R) -> Self {
        Dedup::with_hasher(cap, clone, RandomState::new())
    }
}

impl<R, S: BuildHasher> Dedup<R, S> {
    fn with_hasher(cap: usize, clone: fn(&R) -> R, hasher: S) -> Self {
        Dedup {
            cap: cap.max(1),
            clone,
            seen: Mutex::new((HashMap::with_hasher(hasher), VecDeque::new())),
        }
    }

    pub(crate) fn get(&self, key: &IdempotencyKey) -> Option<R> {
        self.seen.lock().0.get(key).map(self.clone)
    }

    /// Remembers a copy of `reply` under `key`.
    pub(crate) fn insert(&self, key: IdempotencyKey, reply: &R) {
        let reply = (self.clone)(reply);
        let mut seen = self.seen.lock();
        let (map, order) = &mut *seen;
        if map.insert(key.clone(), reply).is_none() {
            order.push_back(key);
            while order.len() > self.cap {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }
}

#[cfg(all(test, not(crashonly_loom)))]
mod tests {
    use std::hash::{BuildHasherDefault, Hasher};

    use super::{Dedup, IdempotencyKey};

    /// Every key hashes to 0: every lookup is a collision, decided by the keys' bytes alone.
    #[derive(Default)]
    struct Colliding;

    impl Hasher for Colliding {
        fn write(&mut self, _: &[u8]) {}
        fn finish(&self) -> u64 {
            0
        }
    }

    #[test]
    fn keys_whose_hashes_collide_stay_two_requests() {
        let window = Dedup::with_hasher(8, u32::clone, BuildHasherDefault::<Colliding>::default());
        let (a, b) = (IdempotencyKey::of("deposit-1"), IdempotencyKey::of("deposit-2"));
        window.insert(a.clone(), &1);
        assert_eq!(
            window.get(&b),
            None,
            "a different key with the same hash is not a repeat"
        );
        window.insert(b.clone(), &2);
        assert_eq!(window.get(&a), Some(1));
        assert_eq!(window.get(&b), Some(2));
        assert_eq!(
            window.get(&IdempotencyKey::of("deposit-1")),
            Some(1),
            "the same bytes are"
        );
    }

    #[test]
    fn the_window_forgets_the_oldest_key_past_its_size() {
        let window = Dedup::new(2, u32::clone);
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            window.insert(IdempotencyKey::of(k), &(i as u32));
        }
        assert_eq!(window.get(&IdempotencyKey::of("a")), None);
        assert_eq!(window.get(&IdempotencyKey::of("c")), Some(2));
    }
}
