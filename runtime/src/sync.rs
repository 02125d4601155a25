//! The one switch for concurrency primitives.
//!
//! Every other module takes its locks and atomics from here, never from `std::sync` directly
//! (`clippy.toml` bans it). Under `--cfg crashonly_loom` the same names come from `loom`, so the code
//! that loom checks is the code that runs in production.
//!
//! Invariant: no lock from this module is held across an `.await`.
//!
//! # Lock order (the complete list)
//!
//! A lock is taken while another is held only where this list says, in this order; every other
//! lock of the crate is a leaf (nothing is locked, and no foreign code runs, while it is held).
//!
//! 1. `Mailbox::local` before `Mailbox::inner` (mailbox.rs: the consumer refills its batch).
//! 2. `Registry::inner` before nothing but atomics: the watchdog's scan reads each slot's
//!    `busy_since` under it (registry.rs); slots are hung up after it is released.
//! 3. `Clock`'s manual sleepers (models only) before nothing: time is read under it.
//! 4. An entity family's `Inner` before a slot's mailbox locks (rule 1 inside them) and before
//!    `Registry::inner` (entity/family.rs: an activation is registered, and a passivating one's
//!    mailbox looked at, closed or moved to the next activation, under it). No slot is launched,
//!    aborted or joined under it; a reply may be sent (a oneshot send only wakes a task).
//! 5. A slot's `Life` before its mailbox's locks (rule 1 inside them): an instance hibernates
//!    (slot/hibernate.rs: its waker is registered, and the instance parked, under `Life`). A
//!    hibernation waker takes `Life` when woken, which the mailbox does only after releasing its
//!    own locks, and which an entity family may do under its `Inner` (rule 4: a mailbox closed
//!    under it): `Inner` before `Life`, never the other way (no code holds `Life` while it takes
//!    anything but the mailbox's locks; `start` runs outside it).
//!
//! `Monitors::list` is not held while its watchers run (a link's notice crashes the linked actor,
//! whose own watchers may edit this list).
//!
//! Leaf locks: a supervisor's `SupState` and `Life`, a slot's `Life` (but for rule 5) and `Rare` (last crash,
//! abort reason, waiters for the first start: a `PlainMutex`), `Monitors::list`, the dedup window, the
//! in-memory lease map, the model executor's wakers, the store's commit-record position, the redb
//! writer's channel and thread handle, the PostgreSQL idle-connection list, a
//! supervised store's `State` and keeper ref, the redb store's failure record. The supervisor never
//! calls into a child while holding `SupState` (it copies the handles out first), and a child never
//! holds its own `Life` while calling its supervisor's `decide`.

#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

pub(crate) use std::sync::{Arc, Weak};

/// Runs once per process (the panic hook is the one process-wide thing the crate installs).
pub(crate) use std::sync::Once;

/// The channel between the redb store and its writer thread (a plain OS thread, never loom's).
pub(crate) mod mpsc {
    pub(crate) use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};

    /// An unbounded channel.
    pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
        std::sync::mpsc::channel()
    }
}

pub(crate) use std::sync::atomic::Ordering;

#[cfg(not(crashonly_loom))]
use std::sync::atomic as atomic_impl;

#[cfg(crashonly_loom)]
use loom::sync::atomic as atomic_impl;

macro_rules! atomic {
    ($name:ident, $int:ty) => {
        /// A loom-switchable atomic integer with the methods the runtime uses.
        #[derive(Debug, Default)]
        pub(crate) struct $name(atomic_impl::$name);

        #[allow(dead_code)]
        impl $name {
            #[inline]
            pub(crate) fn new(v: $int) -> Self {
                $name(atomic_impl::$name::new(v))
            }
            #[inline]
            pub(crate) fn load(&self, order: Ordering) -> $int {
                self.0.load(order)
            }
            #[inline]
            pub(crate) fn store(&self, v: $int, order: Ordering) {
                self.0.store(v, order)
            }
            #[inline]
            pub(crate) fn fetch_add(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_add(v, order)
            }
            /// Takes the value, leaving 0. AcqRel: a single owner of what the value stood for.
            #[inline]
            pub(crate) fn swap_zero(&self) -> $int {
                self.0.swap(0, Ordering::AcqRel)
            }
            /// Replaces `current` with `new`; whether it was `current`. AcqRel: one winner.
            #[inline]
            pub(crate) fn replace_if(&self, current: $int, new: $int) -> bool {
                self.0
                    .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            }
        }
    };
}

atomic!(AtomicU64, u64);
atomic!(AtomicU8, u8);

/// A value set once and read many times (std even under loom: it is only ever set to the same
/// value, such as a message type's copy function, so no interleaving can tell readers apart).
#[derive(Debug)]
pub(crate) struct SetOnce<T>(std::sync::OnceLock<T>);

impl<T> Default for SetOnce<T> {
    fn default() -> Self {
        SetOnce(std::sync::OnceLock::new())
    }
}

impl<T: Copy> SetOnce<T> {
    pub(crate) fn get(&self) -> Option<T> {
        self.0.get().copied()
    }

    pub(crate) fn set(&self, v: T) {
        let _ = self.0.set(v);
    }
}

/// A mutex for data that no model checks (the statistics-like parts of a slot: its last crash,
/// `started()` waiters): std even under loom, so that models spend their budget elsewhere.
/// Never held across a loom operation (no loom atomic, lock or waker is touched inside it), so
/// loom's one-thread-at-a-time scheduler can never block on it.
#[derive(Debug, Default)]
pub(crate) struct PlainMutex<T>(std::sync::Mutex<T>);

impl<T> PlainMutex<T> {
    pub(crate) fn new(value: T) -> Self {
        PlainMutex(std::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A counter or hint that orders nothing (statistics, id and random sequences, recovery-time
/// estimates): std atomics even under loom, so that models spend their budget on the
/// interleavings that matter instead of on statistics.
#[derive(Debug, Default)]
pub(crate) struct Stat(std::sync::atomic::AtomicU64);

impl Stat {
    #[inline]
    pub(crate) fn new(v: u64) -> Self {
        Stat(std::sync::atomic::AtomicU64::new(v))
    }
    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    #[inline]
    pub(crate) fn store(&self, v: u64, order: Ordering) {
        self.0.store(v, order)
    }
    #[inline]
    pub(crate) fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
        self.0.fetch_add(v, order)
    }
    /// Adds one where this thread is the only writer (an actor's loop counting what it handled):
    /// a load and a store, without the locked instruction of `fetch_add`. Returns the old value.
    #[inline]
    pub(crate) fn bump(&self) -> u64 {
        let n = self.0.load(Ordering::Relaxed);
        self.0.store(n + 1, Ordering::Relaxed);
        n
    }
    /// Takes the value, leaving 0. AcqRel: a single owner of what the value stood for.
    #[inline]
    pub(crate) fn swap_zero(&self) -> u64 {
        self.0.swap(0, Ordering::AcqRel)
    }
}

/// A flag or small state that, like [`Stat`], no model checks (std atomics even under loom): one
/// byte where a `Stat` takes eight (every slot has several).
#[derive(Debug, Default)]
pub(crate) struct Flag(std::sync::atomic::AtomicU8);

impl Flag {
    #[inline]
    pub(crate) fn new(v: u8) -> Self {
        Flag(std::sync::atomic::AtomicU8::new(v))
    }
    #[inline]
    pub(crate) fn load(&self, order: Ordering) -> u8 {
        self.0.load(order)
    }
    #[inline]
    pub(crate) fn store(&self, v: u8, order: Ordering) {
        self.0.store(v, order)
    }
    /// Replaces `current` with `new`; whether it was `current`. AcqRel: one winner.
    #[inline]
    pub(crate) fn replace_if(&self, current: u8, new: u8) -> bool {
        self.0
            .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(not(crashonly_loom))]
use std::sync::Mutex as Inner;

#[cfg(crashonly_loom)]
use loom::sync::Mutex as Inner;

/// A mutex that ignores poisoning.
///
/// A panicking actor is a crash the runtime already handles; the data behind our locks is only ever
/// mutated in short sections that cannot panic half-way, so a poisoned lock carries no broken state.
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(Inner<T>);

#[cfg(not(crashonly_loom))]
pub(crate) type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

#[cfg(crashonly_loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(Inner::new(value))
    }

    #[cfg(not(crashonly_loom))]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(crashonly_loom)]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs `f` under loom for every interleaving within the preemption bound, which comes from
/// `LOOM_MAX_PREEMPTIONS` (2 when unset: most concurrency bugs need at most two preemptions,
/// and each one more multiplies the run time). Re-exported as `testing::model::check`.
#[cfg(crashonly_loom)]
pub fn check<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(
        std::env::var("LOOM_MAX_PREEMPTIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2),
    );
    b.check(f);
}

/// The model runner for the crate's own loom tests.
#[cfg(all(test, crashonly_loom))]
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    check(f)
}
