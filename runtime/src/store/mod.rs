//! Crash-only state stores.
//!
//! Actors hold only volatile state; what must survive goes through a [`Store`]: key/value with
//! versions, per-key TTL, leases with fencing tokens and durable idempotency keys. No SQL: the
//! weakest abstraction that serves actors (section 3.1 of the paper).
//!
//! Every write is a [`Txn`] committed atomically: version checks, puts and deletes, an optional
//! fence (a lease token that must still be current) and an optional idempotency key
//! ([`StoreExt::apply_once`]). An acknowledged commit is durable unless the store was opened with
//! [`Durability::LoseUpTo`], whose name says what it may lose.
//!
//! Backends: [`MemoryStore`] (volatile), [`RedbStore`] (embedded, the default) and, with the
//! `postgres` feature, a PostgreSQL store for many processes on many machines.
//!
//! ```
//! use crashonly::store::{MemoryStore, Store, StoreExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), crashonly::store::StoreError> {
//! let store = MemoryStore::new();
//! let v1 = store.put(b"cart/42", b"[book]".to_vec()).await?;
//! let v2 = store.compare_and_set(b"cart/42", v1, b"[book, pen]".to_vec()).await?;
//! assert!(store.compare_and_set(b"cart/42", v1, b"stale".to_vec()).await.is_err());
//! assert_eq!(store.get(b"cart/42").await?.unwrap().version, v2);
//! # Ok(()) }
//! ```

mod acked;
pub(crate) mod engine;
mod error;
mod memory;
mod redb;
mod state;
mod time;
mod txn;

#[cfg(feature = "postgres")]
mod postgres;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use self::memory::MemoryStore;
pub use self::redb::{RedbOptions, RedbStore};
/// The storage layer under [`RedbStore::open_backend`] (redb's trait), deliberately public: a
/// custom disk (an encrypted file, a test disk that records every write to cut power at any point)
/// implements it.
pub use ::redb::StorageBackend;
pub use error::{Conflict, StoreError};
pub use state::DurableState;
pub use time::{ManualTime, TimeSource, WallClock};
pub use txn::{Committed, Txn, Write};

#[cfg(feature = "postgres")]
pub use self::postgres::{PgConnector, PgDriver, PgOptions, PgStore};

/// A boxed future returned by [`Store`] methods (the trait is object safe: `Arc<dyn Store>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A value with its version.
///
/// Versions come from one counter per store that only grows, so a key deleted and written again
/// never gets an old version back (no ABA for compare-and-set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value.
    pub value: Vec<u8>,
    /// Its version (never 0; 0 means "absent" in a compare-and-set).
    pub version: u64,
}

/// A lease on a named resource: held by `holder` until `expires_at_ms` (wall clock, ms since the
/// Unix epoch), proven by `token`. Tokens only grow, so a write fenced with an old token is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableLease {
    /// The resource.
    pub name: String,
    /// Who holds it.
    pub holder: String,
    /// The fencing token.
    pub token: u64,
    /// When it lapses unless renewed.
    pub expires_at_ms: u64,
}

/// When an acknowledged write is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Acknowledged means durable: nothing acknowledged is lost by `kill -9` or a power cut.
    /// Concurrent writers share one sync (group commit), so this stays fast under load.
    #[default]
    Durable,
    /// Acknowledged before it is synced; a sync follows within the duration, so a crash may lose
    /// the writes acknowledged during the last such window. Opt-in, for soft state.
    LoseUpTo(Duration),
}

/// Bounds on what a store accepts; past them, [`StoreError::BadInput`].
///
/// Start from `Limits::default()` and change what you need (`Limits::default().with_max_value(1 << 20)`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest key, in bytes.
    pub max_key: usize,
    /// Largest value, in bytes.
    pub max_value: usize,
    /// Longest per-key TTL.
    pub max_ttl: Duration,
    /// Longest lease.
    pub max_lease: Duration,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
}

impl Default for Limits {
    /// Keys up to 1 KiB, values up to 4 MiB, TTLs up to 30 days, leases up to 10 minutes,
    /// idempotency keys kept 24 hours.
    fn default() -> Self {
        Limits {
            max_key: 1024,
            max_value: 4 << 20,
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            max_lease: Duration::from_secs(600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

with_setters!(Limits {
    /// Sets the longest key, in bytes.
    with_max_key => max_key: usize,
    /// Sets the largest value, in bytes.
    with_max_value => max_value: usize,
    /// Sets the longest per-key TTL.
    with_max_ttl => max_ttl: Duration,
    /// Sets the longest lease.
    with_max_lease => max_lease: Duration,
    /// Sets how long an idempotency key is remembered.
    with_idempotency_ttl => idempotency_ttl: Duration,
});

/// A crash-only state store.
///
/// Implementations must be crash-only themselves: nothing acknowledged under
/// [`Durability::Durable`] is lost by `kill -9`, and reopening is fast.
pub trait Store: Send + Sync + fmt::Debug {
    /// The current value of `key`, if present and not expired.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let version = store.put(b"user/1", b"ada".to_vec()).await?;
    /// let found = store.get(b"user/1").await?.unwrap();
    /// assert_eq!((found.value, found.version), (b"ada".to_vec(), version));
    /// assert_eq!(store.get(b"user/2").await?, None);
    /// # Ok(()) }
    /// ```
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>>;

    /// Up to `limit` live entries whose key starts with `prefix`, in key order.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// for key in [&b"cart/2"[..], b"cart/1", b"user/1"] {
    ///     store.put(key, b"x".to_vec()).await?;
    /// }
    /// let carts = store.scan(b"cart/", 10).await?;
    /// let keys: Vec<&[u8]> = carts.iter().map(|(k, _)| k.as_slice()).collect();
    /// assert_eq!(keys, [&b"cart/1"[..], b"cart/2"]);
    /// assert_eq!(store.scan(b"cart/", 1).await?.len(), 1);
    /// # Ok(()) }
    /// ```
    fn scan<'a>(&'a self, prefix: &'a [u8], limit: usize) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>>;

    /// Applies a transaction atomically: all of it or none of it.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let v = store.put(b"stock/pen", b"3".to_vec()).await?;
    /// let sell = Txn::new().check(b"stock/pen", v).put(b"stock/pen", b"2".to_vec()).put(b"order/1", b"pen".to_vec());
    /// let done = store.commit(sell.clone()).await?;
    /// assert_eq!(done.versions.len(), 2);
    /// // The same transaction again: its check fails, so neither write is made.
    /// assert!(matches!(store.commit(sell).await, Err(StoreError::Conflict(Conflict::Version { .. }))));
    /// assert_eq!(store.get(b"stock/pen").await?.unwrap().value, b"2");
    /// # Ok(()) }
    /// ```
    fn commit(&self, txn: Txn) -> StoreFuture<'_, Committed>;

    /// Takes the lease `name` for `holder` for `ttl`. Granted when it is free, expired, or already
    /// held by the same holder (a restarted owner takes over, with a new token that fences out its
    /// previous incarnation); otherwise [`Conflict::LeaseHeld`].
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let lease = store.acquire_lease("shard/7", "node-a", Duration::from_secs(10)).await?;
    /// let taken = store.acquire_lease("shard/7", "node-b", Duration::from_secs(10)).await;
    /// assert!(matches!(taken, Err(StoreError::Conflict(Conflict::LeaseHeld { .. }))));
    /// let again = store.acquire_lease("shard/7", "node-a", Duration::from_secs(10)).await?; // a restarted owner
    /// assert!(again.token > lease.token); // fences out its earlier incarnation
    /// # Ok(()) }
    /// ```
    fn acquire_lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> StoreFuture<'a, DurableLease>;

    /// Extends a lease that is still current; [`Conflict::LeaseLost`] otherwise.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let lease = store.acquire_lease("shard/7", "node-a", Duration::from_secs(10)).await?;
    /// let renewed = store.renew_lease(&lease, Duration::from_secs(20)).await?;
    /// assert!(renewed.expires_at_ms > lease.expires_at_ms);
    /// store.release_lease(&renewed).await?;
    /// let lost = store.renew_lease(&renewed, Duration::from_secs(20)).await;
    /// assert!(matches!(lost, Err(StoreError::Conflict(Conflict::LeaseLost { .. }))));
    /// # Ok(()) }
    /// ```
    fn renew_lease<'a>(&'a self, lease: &'a DurableLease, ttl: Duration) -> StoreFuture<'a, DurableLease>;

    /// Gives a lease up (a no-op when it is no longer current).
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let lease = store.acquire_lease("shard/7", "node-a", Duration::from_secs(10)).await?;
    /// store.release_lease(&lease).await?;
    /// store.acquire_lease("shard/7", "node-b", Duration::from_secs(10)).await?; // free at once
    /// # Ok(()) }
    /// ```
    fn release_lease<'a>(&'a self, lease: &'a DurableLease) -> StoreFuture<'a, ()>;

    /// When acknowledged writes are durable.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let dir = std::env::temp_dir().join(format!("crashonly-doc-durability-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let store = RedbStore::open(dir.join("state.redb"))?;
    /// assert_eq!(store.durability(), Durability::Durable);
    /// assert_eq!(MemoryStore::new().durability(), Durability::LoseUpTo(Duration::MAX)); // nothing is on disk
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    fn durability(&self) -> Durability;

    /// Why this store has stopped, once it has: a failed commit or a damaged read stops an
    /// embedded store for good (crash-only: it is reopened, never repaired in place), and every
    /// later request gets this error. `None` while it serves, and always for stores that recover
    /// by themselves (the PostgreSQL store reconnects). [`SupervisedStore`](crate::SupervisedStore)
    /// watches it to reboot the store.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
    /// # use redb::backends::InMemoryBackend;
    /// # /// A disk whose syncs fail once `broken` is set.
    /// # #[derive(Debug)]
    /// # struct Disk { inner: InMemoryBackend, broken: Arc<AtomicBool> }
    /// # impl StorageBackend for Disk {
    /// #     fn len(&self) -> std::io::Result<u64> { self.inner.len() }
    /// #     fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> { self.inner.read(offset, out) }
    /// #     fn set_len(&self, len: u64) -> std::io::Result<()> { self.inner.set_len(len) }
    /// #     fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> { self.inner.write(offset, data) }
    /// #     fn sync_data(&self) -> std::io::Result<()> {
    /// #         match self.broken.load(Ordering::Relaxed) {
    /// #             true => Err(std::io::Error::other("the disk is gone")),
    /// #             false => self.inner.sync_data(),
    /// #         }
    /// #     }
    /// # }
    /// # let broken = Arc::new(AtomicBool::new(false));
    /// # let disk = Disk { inner: InMemoryBackend::new(), broken: broken.clone() };
    /// // `disk`: a storage layer whose syncs fail once `broken` is set
    /// let store = RedbStore::open_backend("disk", disk, RedbOptions::default())?;
    /// store.put(b"k", b"v".to_vec()).await?;
    /// assert_eq!(store.failed(), None);
    /// broken.store(true, Ordering::Relaxed); // the disk fails
    /// assert!(store.put(b"k", b"w".to_vec()).await.is_err());
    /// assert!(store.failed().is_some()); // for good: the store must be reopened
    /// assert_eq!(store.put(b"k", b"x".to_vec()).await, Err(store.failed().unwrap())); // every write after
    /// # Ok(()) }
    /// ```
    fn failed(&self) -> Option<StoreError> {
        None
    }

    /// What the store accepts.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// let store = MemoryStore::with(Limits::default().with_max_value(4), std::sync::Arc::new(WallClock));
    /// assert_eq!(store.limits().max_value, 4);
    /// assert!(matches!(store.put(b"k", b"too long".to_vec()).await, Err(StoreError::BadInput(_))));
    /// # Ok(()) }
    /// ```
    fn limits(&self) -> &Limits;
}

/// Convenience methods on every [`Store`], built on [`Store::commit`].
pub trait StoreExt: Store {
    /// Writes `value`; returns the new version.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let v1 = store.put(b"k", b"a".to_vec()).await?;
    /// let v2 = store.put(b"k", b"b".to_vec()).await?;
    /// assert!(v2 > v1);
    /// # Ok(()) }
    /// ```
    fn put<'a>(&'a self, key: &'a [u8], value: Vec<u8>) -> StoreFuture<'a, u64> {
        let txn = Txn::new().put(key, value);
        Box::pin(async move { Ok(self.commit(txn).await?.versions[0]) })
    }

    /// Writes `value` that expires after `ttl` (session state).
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// let time = ManualTime::new(1_000);
    /// let store = MemoryStore::with(Limits::default(), std::sync::Arc::new(time.clone()));
    /// store.put_with_ttl(b"session/1", b"ada".to_vec(), Duration::from_secs(60)).await?;
    /// assert!(store.get(b"session/1").await?.is_some());
    /// time.advance(Duration::from_secs(61));
    /// assert_eq!(store.get(b"session/1").await?, None);
    /// # Ok(()) }
    /// ```
    fn put_with_ttl<'a>(&'a self, key: &'a [u8], value: Vec<u8>, ttl: Duration) -> StoreFuture<'a, u64> {
        let txn = Txn::new().put_ttl(key, value, ttl);
        Box::pin(async move { Ok(self.commit(txn).await?.versions[0]) })
    }

    /// Writes `value` only if the current version is `expected` (0: only if absent).
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let v1 = store.compare_and_set(b"k", 0, b"first".to_vec()).await?; // only if absent
    /// assert!(store.compare_and_set(b"k", 0, b"second".to_vec()).await.is_err());
    /// store.compare_and_set(b"k", v1, b"second".to_vec()).await?;
    /// assert_eq!(store.get(b"k").await?.unwrap().value, b"second");
    /// # Ok(()) }
    /// ```
    fn compare_and_set<'a>(&'a self, key: &'a [u8], expected: u64, value: Vec<u8>) -> StoreFuture<'a, u64> {
        let txn = Txn::new().check(key, expected).put(key, value);
        Box::pin(async move { Ok(self.commit(txn).await?.versions[0]) })
    }

    /// Deletes `key`; true if it was present.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// store.put(b"k", b"v".to_vec()).await?;
    /// assert!(store.delete(b"k").await?);
    /// assert!(!store.delete(b"k").await?);
    /// # Ok(()) }
    /// ```
    fn delete<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, bool> {
        let txn = Txn::new().delete(key);
        Box::pin(async move { Ok(self.commit(txn).await?.existed[0]) })
    }

    /// Applies `txn` once per `idempotency_key`: a retry, even after a crash, gets the first
    /// outcome back (with `replayed: true`) and writes nothing.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let pay = || Txn::new().put(b"payment/17", b"paid".to_vec());
    /// let first = store.apply_once(b"request-17", pay()).await?;
    /// let retry = store.apply_once(b"request-17", pay()).await?; // say, after a crash
    /// assert!(!first.replayed && retry.replayed);
    /// assert_eq!(retry.versions, first.versions);
    /// # Ok(()) }
    /// ```
    fn apply_once<'a>(&'a self, idempotency_key: &'a [u8], txn: Txn) -> StoreFuture<'a, Committed> {
        self.commit(txn.once(idempotency_key))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
