//! The registry: a slab of slots with generation counters, and names.
//!
//! Invariant: an [`ActorId`] names one slot forever. When a slot dies its index may be reused, but
//! with a new generation, so a stale id never reaches a newer actor.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;

use slab::Slab;

use crate::error::SpawnError;
use crate::stats::Stats;
use crate::sync::{Arc, Mutex, Weak};

/// The id of a slot in its system's registry: an index and a generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActorId {
    index: u32,
    generation: u64,
}

impl ActorId {
    /// The slab index (reused after the slot dies).
    pub fn index(self) -> u32 {
        self.index
    }

    /// The generation (never reused within a system).
    pub fn generation(self) -> u64 {
        self.generation
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: Slab<Entry>,
    generation: u64,
    names: HashMap<Arc<str>, ActorId>,
}

/// One slot's entry: the slot itself is reached through `inspect` (upcast to `Any` to be
/// downcast by its ref), one pointer for both; a name is in `names` only (its slot knows its
/// path, and gives it back when it is removed).
struct Entry {
    generation: u64,
    inspect: Weak<dyn Inspect>,
}

/// What the watchdog and `System::snapshot` need from a slot or supervisor.
pub(crate) trait Inspect: Any + Send + Sync {
    fn snapshot(&self) -> Snapshot;
    /// Whether it has been handling one message for longer than its handling lease, at `now`
    /// (clock nanos).
    fn is_hung(&self, _now: u64) -> bool {
        false
    }
    /// Crash-restarts it from outside (the watchdog's power-off switch).
    fn hang(&self, _now: u64) {}
    /// Whether its task was aborted more than `limit` ago and still runs, at `now`.
    fn is_overdue(&self, _now: u64, _limit: std::time::Duration) -> bool {
        false
    }
    /// Its label set's meters and its mailbox's depth (an actor's slot; not a supervisor).
    #[cfg(feature = "metrics")]
    fn meters(&self) -> Option<(Arc<crate::meters::SlotMeters>, usize)> {
        None
    }
    /// Whether it is an actor running in a task, idle since before `now - after` (clock nanos).
    fn is_idle_for(&self, _now: u64, _after: u64) -> bool {
        false
    }
    /// Asks it to hibernate (see `Config::hibernate_after`).
    fn hibernate(&self) {}
    /// Abandons its aborted task (counted once, whoever calls first).
    #[cfg_attr(crashonly_loom, allow(dead_code))]
    fn abandon(&self) {}
    /// What the observer page shows beyond the snapshot.
    #[cfg(feature = "observer")]
    fn observe(&self) -> crate::stats::Observed;
    /// The observer's crash-reboot control: an actor crashes from outside; false for a supervisor
    /// or a family (the observer crashes the actors below them).
    #[cfg(feature = "observer")]
    fn crash_reboot(&self) -> bool {
        false
    }
    /// The observer's rejuvenate control (a supervisor or family: its whole subtree).
    #[cfg(feature = "observer")]
    fn rejuvenate_now(&self);
}

/// Progress of one slot (or supervisor) of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Its id.
    pub id: ActorId,
    /// Its path.
    pub path: String,
    /// Counters of an actor; `None` for a supervisor.
    pub stats: Option<Stats>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Registers a new slot made by `make(id, base, named)`. A named slot's path is `parent/name`
    /// (the base) and must be free; an unnamed one's is `parent/#generation` (see `path`), and its
    /// base is its parent's path, shared.
    pub(crate) fn insert<T, F>(&self, parent: &Arc<str>, name: Option<&str>, make: F) -> Result<Arc<T>, SpawnError>
    where
        T: Any + Inspect + Send + Sync,
        F: FnOnce(ActorId, Arc<str>, bool) -> Arc<T>,
    {
        let sep = if parent.ends_with('/') { "" } else { "/" };
        let mut inner = self.inner.lock();
        inner.generation += 1;
        let generation = inner.generation;
        let named = match name {
            Some(n) if n.is_empty() || n.contains('/') => return Err(SpawnError::BadName(n.to_owned())),
            Some(n) => {
                let path: Arc<str> = format!("{parent}{sep}{n}").into();
                if inner.names.contains_key(&path) {
                    return Err(SpawnError::NameTaken(path.to_string()));
                }
                Some(path)
            }
            None => None,
        };
        let entry = inner.slots.vacant_entry();
        let id = ActorId {
            index: entry.key() as u32,
            generation,
        };
        let slot = match &named {
            Some(path) => make(id, path.clone(), true),
            None => make(id, parent.clone(), false),
        };
        let inspect: Weak<dyn Inspect> = {
            let i: Arc<dyn Inspect> = slot.clone();
            Arc::downgrade(&i)
        };
        entry.insert(Entry { generation, inspect });
        if let Some(path) = named {
            inner.names.insert(path, id);
        }
        Ok(slot)
    }

    /// Registers a slot at `path` without claiming it as a name (an entity's activation: its
    /// family keeps one per key, and it cannot be looked up by path).
    pub(crate) fn insert_at<T, F>(&self, path: Arc<str>, make: F) -> Arc<T>
    where
        T: Any + Inspect + Send + Sync,
        F: FnOnce(ActorId, Arc<str>, bool) -> Arc<T>,
    {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        let generation = inner.generation;
        let entry = inner.slots.vacant_entry();
        let id = ActorId {
            index: entry.key() as u32,
            generation,
        };
        let slot = make(id, path, true);
        let inspect: Arc<dyn Inspect> = slot.clone();
        entry.insert(Entry {
            generation,
            inspect: Arc::downgrade(&inspect),
        });
        slot
    }

    /// Forgets a dead slot (and its name, given the path of a named one); its index may be reused
    /// with a new generation.
    pub(crate) fn remove(&self, id: ActorId, named: Option<&str>) {
        let mut inner = self.inner.lock();
        if inner
            .slots
            .get(id.index as usize)
            .is_some_and(|e| e.generation == id.generation)
        {
            inner.slots.remove(id.index as usize);
            // Its name, if it had one, is free again (an unnamed path was never in `names`).
            if let Some(path) = named
                && inner.names.get(path) == Some(&id)
            {
                inner.names.remove(path);
            }
        }
    }

    /// The slot with this id, if it is still the same one and alive.
    pub(crate) fn get(&self, id: ActorId) -> Option<Arc<dyn Any + Send + Sync>> {
        let inner = self.inner.lock();
        let entry = inner.slots.get(id.index as usize)?;
        if entry.generation != id.generation {
            return None;
        }
        let slot: Arc<dyn Any + Send + Sync> = entry.inspect.upgrade()?;
        Some(slot)
    }

    /// The id registered under a path.
    pub(crate) fn lookup(&self, path: &str) -> Option<ActorId> {
        self.inner.lock().names.get(path).copied()
    }

    /// Snapshots of every live slot, in index order.
    pub(crate) fn snapshots(&self) -> Vec<Snapshot> {
        self.live().iter().map(|i| i.snapshot()).collect()
    }

    /// Every live slot's meters and mailbox depth (for a scrape).
    #[cfg(feature = "metrics")]
    pub(crate) fn meters(&self) -> Vec<(Arc<crate::meters::SlotMeters>, usize)> {
        self.live().iter().filter_map(|i| i.meters()).collect()
    }

    /// Every live slot, supervisor and family, taken under the lock and returned after it (what
    /// snapshots, scrapes and the observer read is read without the registry held).
    pub(crate) fn live(&self) -> Vec<Arc<dyn Inspect>> {
        let inner = self.inner.lock();
        inner.slots.iter().filter_map(|(_, e)| e.inspect.upgrade()).collect()
    }

    /// One watchdog pass at `now`: the slots past their handling lease, (given an abandonment
    /// `limit`) the slots whose aborted task has outlived it, and (given a hibernation delay
    /// `idle`, in nanos) the running actors idle for longer.
    pub(crate) fn watch(&self, now: u64, limit: Option<std::time::Duration>, idle: Option<u64>) -> Watch {
        let mut found = Watch::default();
        let inner = self.inner.lock();
        for (_, e) in inner.slots.iter() {
            let Some(i) = e.inspect.upgrade() else { continue };
            let overdue = limit.is_some_and(|limit| i.is_overdue(now, limit));
            if i.is_hung(now) {
                found.hung.push(i.clone());
            }
            if idle.is_some_and(|after| i.is_idle_for(now, after)) {
                found.idle.push(i.clone());
            }
            if overdue {
                found.overdue.push(i);
            }
        }
        found
    }

    /// Number of live slots (actors and supervisors).
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().slots.len()
    }
}

/// Model-checked with loom: `RUSTFLAGS="--cfg crashonly_loom" cargo test -p crashonly --lib loom`.
#[cfg(all(test, crashonly_loom))]
mod loom_tests {
    use super::*;

    struct Slot(u32);

    impl Inspect for Slot {
        fn snapshot(&self) -> Snapshot {
            Snapshot {
                id: ActorId {
                    index: 0,
                    generation: 0,
                },
                path: String::new(),
                stats: None,
            }
        }
    }

    /// A slot dies and its index is reused while another thread looks the old id up: the lookup
    /// finds the old slot or nothing, never the new one.
    #[test]
    fn loom_a_reused_index_never_reaches_a_stale_id() {
        crate::sync::model(|| {
            let reg = Arc::new(Registry::default());
            let root: Arc<str> = Arc::from("/");
            let old = reg.insert(&root, Some("a"), |_, _, _| Arc::new(Slot(1))).unwrap();
            let old_id = {
                let id = reg.lookup("/a").unwrap();
                assert_eq!(
                    reg.get(id).and_then(|s| s.downcast::<Slot>().ok()).map(|s| s.0),
                    Some(1)
                );
                id
            };
            let churn = {
                let reg = reg.clone();
                loom::thread::spawn(move || {
                    reg.remove(old_id, Some("/a"));
                    let new = reg.insert(&root, Some("a"), |_, _, _| Arc::new(Slot(2))).unwrap();
                    (reg.lookup("/a").unwrap(), new)
                })
            };
            let seen = reg.get(old_id).and_then(|s| s.downcast::<Slot>().ok()).map(|s| s.0);
            assert!(seen.is_none() || seen == Some(1), "a stale id reached {seen:?}");
            let (new_id, _new) = churn.join().unwrap();
            assert_eq!(new_id.index, old_id.index, "the index was reused");
            assert_ne!(new_id, old_id);
            assert!(reg.get(old_id).is_none());
            drop(old);
        });
    }
}

/// What one watchdog pass found (see [`Registry::watch`]).
#[derive(Default)]
pub(crate) struct Watch {
    /// Past their handling lease.
    pub(crate) hung: Vec<Arc<dyn Inspect>>,
    /// Aborted, and their task still running past the abandonment limit.
    pub(crate) overdue: Vec<Arc<dyn Inspect>>,
    /// Running in a task, and idle past the hibernation delay.
    pub(crate) idle: Vec<Arc<dyn Inspect>>,
}
