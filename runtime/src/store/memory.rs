//! `MemoryStore`: volatile, for tests and soft state, on the runtime's sync switch.

use std::collections::BTreeMap;
use std::time::Duration;

use super::engine::{self, Table, Tables};
use super::{
    Committed, Durability, DurableLease, Limits, Store, StoreError, StoreFuture, TimeSource, Txn, Versioned, WallClock,
};
use crate::sync::{Arc, Mutex};

/// A store in memory: same semantics as the durable backends, nothing survives the process.
#[derive(Debug)]
pub struct MemoryStore {
    tables: Mutex<MemTables>,
    limits: Limits,
    time: Arc<dyn TimeSource>,
}

#[derive(Debug, Default)]
struct MemTables {
    t: [BTreeMap<Vec<u8>, Vec<u8>>; 5],
}

impl Tables for MemTables {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.t[table as usize].get(key).cloned())
    }
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.t[table as usize].insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<(), StoreError> {
        self.t[table as usize].remove(key);
        Ok(())
    }
    fn expiry_until(&self, end: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self.t[Table::Expiry as usize]
            .range(..end.to_vec())
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect())
    }
}

/// Epoch of a memory store: it never restarts.
const EPOCH: u64 = 1;

impl MemoryStore {
    /// An empty store with default limits on the system clock.
    pub fn new() -> Self {
        Self::with(Limits::default(), Arc::new(WallClock))
    }

    /// An empty store with these limits and this time source.
    pub fn with(limits: Limits, time: Arc<dyn TimeSource>) -> Self {
        MemoryStore {
            tables: Mutex::new(MemTables::default()),
            limits,
            time,
        }
    }

    fn write<R>(&self, f: impl FnOnce(&mut MemTables, u64) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let now = self.time.now_ms();
        let mut t = self.tables.lock();
        engine::reclaim(&mut *t, now, 64)?;
        f(&mut t, now)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>> {
        let now = self.time.now_ms();
        let raw = self.tables.lock().get(Table::Data, key);
        Box::pin(async move { engine::read_live(key, raw?.as_deref(), now) })
    }

    fn scan<'a>(&'a self, prefix: &'a [u8], limit: usize) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>> {
        let now = self.time.now_ms();
        let out = (|| {
            let t = self.tables.lock();
            let mut out = Vec::new();
            for (k, v) in t.t[Table::Data as usize].range(prefix.to_vec()..) {
                if !k.starts_with(prefix) || out.len() >= limit {
                    break;
                }
                if let Some(v) = engine::read_live(k, Some(v), now)? {
                    out.push((k.clone(), v));
                }
            }
            Ok(out)
        })();
        Box::pin(async move { out })
    }

    fn commit(&self, txn: Txn) -> StoreFuture<'_, Committed> {
        let out = txn.validate(&self.limits).and_then(|()| {
            // A refused transaction writes nothing (the engine checks before it writes).
            self.write(|t, now| engine::apply(t, &txn, now, EPOCH, &self.limits))
        });
        Box::pin(async move { out })
    }

    fn acquire_lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        let out = self.write(|t, now| engine::acquire(t, name, holder, ttl, now, EPOCH, &self.limits));
        Box::pin(async move { out })
    }

    fn renew_lease<'a>(&'a self, lease: &'a DurableLease, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        let out = self.write(|t, now| engine::renew(t, lease, ttl, now, EPOCH, &self.limits));
        Box::pin(async move { out })
    }

    fn release_lease<'a>(&'a self, lease: &'a DurableLease) -> StoreFuture<'a, ()> {
        let out = self.write(|t, now| engine::release(t, lease, now, EPOCH));
        Box::pin(async move { out })
    }

    fn durability(&self) -> Durability {
        // Nothing is on disk at all; the type name says so.
        Durability::LoseUpTo(Duration::MAX)
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }
}
