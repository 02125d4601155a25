//! Transactions: what one atomic commit does.

use std::time::Duration;

use super::error::StoreError;
use super::{DurableLease, Limits};

/// One write of a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`, optionally expiring after `ttl`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Time to live (`None`: until deleted).
        ttl: Option<Duration>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// An atomic transaction: checks, writes, an optional fence and an optional idempotency key.
///
/// ```
/// use crashonly::store::Txn;
/// use std::time::Duration;
/// let txn = Txn::new()
///     .check(b"job/7", 12)                   // only if job/7 is still at version 12
///     .delete(b"job/7")
///     .put_ttl(b"done/7", b"ok".to_vec(), Duration::from_secs(3600));
/// assert_eq!(txn.writes().len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub(crate) checks: Vec<(Vec<u8>, u64)>,
    pub(crate) writes: Vec<Write>,
    pub(crate) fence: Option<(String, u64)>,
    pub(crate) once: Option<Once>,
}

/// An idempotency key and the request it stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Once {
    pub(crate) key: Vec<u8>,
    pub(crate) request: Vec<u8>,
}

/// What a commit did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// For each write: the new version of a put, 0 for a delete.
    pub versions: Vec<u64>,
    /// For each write: whether the key was present (and live) before.
    pub existed: Vec<bool>,
    /// True when an idempotency key had already been applied: nothing was written this time, and
    /// `versions`/`existed` are those of the first application.
    pub replayed: bool,
}

impl Txn {
    /// An empty transaction.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// assert!(Txn::new().writes().is_empty());
    /// assert!(matches!(store.commit(Txn::new()).await, Err(StoreError::BadInput(_))));
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Txn::default()
    }

    /// Requires `key` to be at `version` (0: absent) when the transaction applies.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let create = Txn::new().check(b"user/1", 0).put(b"user/1", b"ada".to_vec());
    /// store.commit(create.clone()).await?;
    /// assert!(matches!(store.commit(create).await, Err(StoreError::Conflict(Conflict::Version { .. }))));
    /// # Ok(()) }
    /// ```
    pub fn check(mut self, key: &[u8], version: u64) -> Self {
        self.checks.push((key.to_vec(), version));
        self
    }

    /// Puts `value` at `key`.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let done = store.commit(Txn::new().put(b"a", b"1".to_vec()).put(b"b", b"2".to_vec())).await?;
    /// assert_eq!(done.existed, [false, false]);
    /// assert_eq!(store.get(b"b").await?.unwrap().value, b"2");
    /// # Ok(()) }
    /// ```
    pub fn put(mut self, key: &[u8], value: Vec<u8>) -> Self {
        self.writes.push(Write::Put {
            key: key.to_vec(),
            value,
            ttl: None,
        });
        self
    }

    /// Puts `value` at `key`, expiring after `ttl`.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// let time = ManualTime::new(1_000);
    /// let store = MemoryStore::with(Limits::default(), std::sync::Arc::new(time.clone()));
    /// store.commit(Txn::new().put_ttl(b"otp/ada", b"123456".to_vec(), Duration::from_secs(300))).await?;
    /// time.advance(Duration::from_secs(301));
    /// assert_eq!(store.get(b"otp/ada").await?, None);
    /// # Ok(()) }
    /// ```
    pub fn put_ttl(mut self, key: &[u8], value: Vec<u8>, ttl: Duration) -> Self {
        self.writes.push(Write::Put {
            key: key.to_vec(),
            value,
            ttl: Some(ttl),
        });
        self
    }

    /// Deletes `key`.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// store.put(b"job/7", b"queued".to_vec()).await?;
    /// let done = store.commit(Txn::new().delete(b"job/7").put(b"done/7", b"ok".to_vec())).await?;
    /// assert_eq!(done.existed, [true, false]);
    /// assert_eq!(store.get(b"job/7").await?, None);
    /// # Ok(()) }
    /// ```
    pub fn delete(mut self, key: &[u8]) -> Self {
        self.writes.push(Write::Delete { key: key.to_vec() });
        self
    }

    /// Applies only while `lease` is current: a stale incarnation's write is refused.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let old = store.acquire_lease("shard/7", "node-a", Duration::from_secs(10)).await?;
    /// let new = store.acquire_lease("shard/7", "node-a", Duration::from_secs(10)).await?; // a restart
    /// store.commit(Txn::new().put(b"shard/7/x", b"1".to_vec()).fenced(&new)).await?;
    /// let stale = store.commit(Txn::new().put(b"shard/7/x", b"0".to_vec()).fenced(&old)).await;
    /// assert!(matches!(stale, Err(StoreError::Conflict(Conflict::Fenced { .. }))));
    /// # Ok(()) }
    /// ```
    pub fn fenced(mut self, lease: &DurableLease) -> Self {
        self.fence = Some((lease.name.clone(), lease.token));
        self
    }

    /// Applies at most once per `key` (see [`StoreExt::apply_once`](super::StoreExt::apply_once)).
    /// The same as [`once_for`](Self::once_for) with an empty request.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let store = MemoryStore::new();
    /// let first = store.commit(Txn::new().put(b"k", b"v".to_vec()).once(b"request-1")).await?;
    /// let retry = store.commit(Txn::new().put(b"k", b"v".to_vec()).once(b"request-1")).await?;
    /// assert!(retry.replayed && retry.versions == first.versions);
    /// # Ok(()) }
    /// ```
    pub fn once(self, key: &[u8]) -> Self {
        self.once_for(key, &[])
    }

    /// Applies at most once per `key`, for the request `request` stands for (a few bytes naming
    /// the resource and what is asked of it, such as `cart/42 add book`; up to
    /// [`Limits::max_key`] bytes). A retry of the same request gets the first outcome back
    /// (`replayed: true`) and writes nothing; the key reused for another request is refused with
    /// [`Conflict::KeyReused`](super::Conflict::KeyReused), never acknowledged without being
    /// applied.
    ///
    /// ```
    /// use crashonly::store::{Conflict, MemoryStore, Store, StoreError, Txn};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let store = MemoryStore::new();
    /// let add = |cart: &str| Txn::new().put(cart.as_bytes(), b"book".to_vec());
    /// let first = store.commit(add("cart/1").once_for(b"K", b"cart/1 add book")).await.unwrap();
    /// let retry = store.commit(add("cart/1").once_for(b"K", b"cart/1 add book")).await.unwrap();
    /// assert!(retry.replayed && retry.versions == first.versions);
    /// let reused = store.commit(add("cart/2").once_for(b"K", b"cart/2 add book")).await;
    /// assert!(matches!(reused, Err(StoreError::Conflict(Conflict::KeyReused { .. }))));
    /// # }
    /// ```
    pub fn once_for(mut self, key: &[u8], request: &[u8]) -> Self {
        self.once = Some(Once {
            key: key.to_vec(),
            request: request.to_vec(),
        });
        self
    }

    /// The writes.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// let txn = Txn::new().check(b"a", 1).delete(b"a");
    /// assert_eq!(txn.writes(), [Write::Delete { key: b"a".to_vec() }]); // checks are not writes
    /// ```
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// Checks sizes and TTLs against `limits`.
    pub(crate) fn validate(&self, limits: &Limits) -> Result<(), StoreError> {
        let key_ok = |k: &[u8]| -> Result<(), StoreError> {
            if k.is_empty() {
                return Err(StoreError::BadInput("empty key".into()));
            }
            if k.len() > limits.max_key {
                return Err(StoreError::BadInput(format!(
                    "key of {} bytes exceeds the limit of {} bytes",
                    k.len(),
                    limits.max_key
                )));
            }
            Ok(())
        };
        if self.writes.is_empty() && self.checks.is_empty() {
            return Err(StoreError::BadInput("empty transaction".into()));
        }
        for (k, _) in &self.checks {
            key_ok(k)?;
        }
        if let Some(once) = &self.once {
            key_ok(&once.key)?;
            if once.request.len() > limits.max_key {
                return Err(StoreError::BadInput(format!(
                    "idempotency request of {} bytes exceeds the limit of {} bytes",
                    once.request.len(),
                    limits.max_key
                )));
            }
        }
        for w in &self.writes {
            match w {
                Write::Put { key, value, ttl } => {
                    key_ok(key)?;
                    if value.len() > limits.max_value {
                        return Err(StoreError::BadInput(format!(
                            "value of {} bytes exceeds the limit of {} bytes",
                            value.len(),
                            limits.max_value
                        )));
                    }
                    if let Some(ttl) = ttl {
                        check_ttl("ttl", *ttl, limits.max_ttl)?;
                    }
                }
                Write::Delete { key } => key_ok(key)?,
            }
        }
        Ok(())
    }
}

/// A TTL must be at least 1 ms and at most `max`.
pub(crate) fn check_ttl(what: &str, ttl: Duration, max: Duration) -> Result<(), StoreError> {
    if ttl.as_millis() == 0 {
        return Err(StoreError::BadInput(format!("{what} must be at least 1 ms")));
    }
    if ttl > max {
        return Err(StoreError::BadInput(format!(
            "{what} of {} ms exceeds the limit of {} ms",
            ttl.as_millis(),
            max.as_millis()
        )));
    }
    Ok(())
}
