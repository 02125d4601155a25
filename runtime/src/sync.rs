//! The one switch for concurrency primitives.
//!
//! Every other module takes its locks and atomics from here, never from `std::sync` directly
//! (`clippy.toml` bans it). Under `--cfg crashonly_loom` the same names come from `loom`, so the code
//! that loom checks is the code that runs in production.
//!
//! Invariant: no lock from this module is held across an `.await`, and no lock is taken while another
//! one is held, except `SupState` -> `Life` in the supervisor (the documented lock order).

#![allow(clippy::disallowed_types)]

pub(crate) use std::sync::{Arc, Weak};

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
            pub(crate) fn new(v: $int) -> Self {
                $name(atomic_impl::$name::new(v))
            }
            pub(crate) fn load(&self, order: Ordering) -> $int {
                self.0.load(order)
            }
            pub(crate) fn store(&self, v: $int, order: Ordering) {
                self.0.store(v, order)
            }
            pub(crate) fn fetch_add(&self, v: $int, order: Ordering) -> $int {
                self.0.fetch_add(v, order)
            }
            /// Takes the value, leaving 0. AcqRel: a single owner of what the value stood for.
            pub(crate) fn swap_zero(&self) -> $int {
                self.0.swap(0, Ordering::AcqRel)
            }
        }
    };
}

atomic!(AtomicU64, u64);
atomic!(AtomicU8, u8);

/// A counter or hint that orders nothing (statistics, id and random sequences, recovery-time
/// estimates): std atomics even under loom, so that models spend their budget on the
/// interleavings that matter instead of on statistics.
#[derive(Debug, Default)]
pub(crate) struct Stat(std::sync::atomic::AtomicU64);

impl Stat {
    pub(crate) fn new(v: u64) -> Self {
        Stat(std::sync::atomic::AtomicU64::new(v))
    }
    pub(crate) fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    pub(crate) fn store(&self, v: u64, order: Ordering) {
        self.0.store(v, order)
    }
    pub(crate) fn fetch_add(&self, v: u64, order: Ordering) -> u64 {
        self.0.fetch_add(v, order)
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

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(Inner::new(value))
    }

    #[cfg(not(crashonly_loom))]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(crashonly_loom)]
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs a loom model with the preemption bound from `LOOM_MAX_PREEMPTIONS` (2 by default).
#[cfg(all(test, crashonly_loom))]
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    crate::testing::model::check(f)
}
