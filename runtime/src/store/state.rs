//! `DurableState`: the recovery path of an actor whose state lives in a store.

use std::fmt;
use std::time::Duration;

use super::{DurableLease, Store, StoreError, Txn};
use crate::sync::Arc;

/// One actor's durable state: loaded in `start`, written back fenced by the actor's lease, so that
/// an older incarnation (one that has not noticed it was replaced) can never overwrite a newer one.
///
/// ```
/// use crashonly::store::{DurableState, MemoryStore, Store};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), crashonly::store::StoreError> {
/// let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
/// let ttl = Duration::from_secs(30);
/// let mut old = DurableState::recover(store.clone(), "cart/42", "/carts/42", ttl).await?;
/// old.save(b"[book]".to_vec()).await?;
/// // The actor restarts: the new incarnation takes the lease over with a newer token.
/// let mut new = DurableState::recover(store.clone(), "cart/42", "/carts/42", ttl).await?;
/// assert_eq!(new.value(), Some(&b"[book]"[..]));
/// assert!(old.save(b"stale".to_vec()).await.is_err()); // fenced out
/// new.save(b"[book, pen]".to_vec()).await?;
/// # Ok(()) }
/// ```
pub struct DurableState {
    store: Arc<dyn Store>,
    key: Vec<u8>,
    lease: DurableLease,
    version: u64,
    value: Option<Vec<u8>>,
}

impl fmt::Debug for DurableState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableState")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("token", &self.lease.token)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl DurableState {
    /// Takes the lease `lease:<key>` for `holder` (typically the actor's path) and loads the value.
    pub async fn recover(
        store: Arc<dyn Store>,
        key: &str,
        holder: &str,
        lease_ttl: Duration,
    ) -> Result<DurableState, StoreError> {
        let lease = store.acquire_lease(&format!("lease:{key}"), holder, lease_ttl).await?;
        let current = store.get(key.as_bytes()).await?;
        let (version, value) = match current {
            Some(v) => (v.version, Some(v.value)),
            None => (0, None),
        };
        Ok(DurableState {
            store,
            key: key.as_bytes().to_vec(),
            lease,
            version,
            value,
        })
    }

    /// The value loaded or last saved.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The version loaded or last saved (0: none yet).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The lease this incarnation holds.
    pub fn lease(&self) -> &DurableLease {
        &self.lease
    }

    /// Writes `value` durably, if this incarnation still holds the lease and nobody else wrote since.
    pub async fn save(&mut self, value: Vec<u8>) -> Result<u64, StoreError> {
        let txn = Txn::new()
            .check(&self.key, self.version)
            .put(&self.key, value.clone())
            .fenced(&self.lease);
        let committed = self.store.commit(txn).await?;
        self.version = committed.versions[0];
        self.value = Some(value);
        Ok(self.version)
    }

    /// Extends the lease (call it well before it lapses, for example from a timer).
    pub async fn renew(&mut self, ttl: Duration) -> Result<(), StoreError> {
        self.lease = self.store.renew_lease(&self.lease, ttl).await?;
        Ok(())
    }
}
