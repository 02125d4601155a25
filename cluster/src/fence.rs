//! Fencing the durable writes of a clustered entity, in the store of record itself.
//!
//! The placement claim gives an activation a token that only grows. On activation the entity
//! records its token under `fence/<family>/<key>` in the store, refusing if a greater one is there
//! already (a newer activation elsewhere); every later write of that activation carries a
//! compare-and-set on that record's version ([`Fence::guard`]). A newer activation anywhere rewrites
//! the record, so the version an old owner holds is gone and its writes are refused with a
//! version conflict, however late they arrive (a paused process, a partitioned node): the store
//! decides, in the same transaction as the write, with any backend the nodes share.

use crashonly::store::{Conflict, Store, StoreError, Txn};

/// An activation's fence: the record's key, the version this activation wrote, its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    key: Vec<u8>,
    version: u64,
    token: u64,
}

impl Fence {
    /// Records `token` as the current owner of `(family, key)`. `Err(Conflict::Fenced)` when a
    /// greater token is recorded (this activation is stale and must not serve).
    pub async fn acquire(store: &dyn Store, family: &str, key: &str, token: u64) -> Result<Fence, StoreError> {
        let fkey = format!("fence/{family}/{key}").into_bytes();
        for _ in 0..16 {
            let current = store.get(&fkey).await?;
            let (seen, version) = match &current {
                Some(v) => (decode_token(&v.value)?, v.version),
                None => (0, 0),
            };
            if seen > token {
                return Err(StoreError::Conflict(Conflict::Fenced {
                    lease: format!("{family}/{key}"),
                    token,
                }));
            }
            let txn = Txn::new()
                .check(&fkey, version)
                .put(&fkey, token.to_be_bytes().to_vec());
            match store.commit(txn).await {
                Ok(done) => {
                    return Ok(Fence {
                        key: fkey,
                        version: done.versions[0],
                        token,
                    })
                }
                // Another activation wrote meanwhile: look again.
                Err(StoreError::Conflict(Conflict::Version { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict(Conflict::Fenced {
            lease: format!("{family}/{key}"),
            token,
        }))
    }

    /// `txn`, applied only while this activation is the entity's owner.
    pub fn guard(&self, txn: Txn) -> Txn {
        txn.check(&self.key, self.version)
    }

    /// The token.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The fence record's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

/// Whether a commit failed because its fence is gone (a newer owner).
pub fn is_fenced_out(e: &StoreError, fence: &Fence) -> bool {
    matches!(e, StoreError::Conflict(Conflict::Version { key, .. }) if *key == fence.key)
        || matches!(e, StoreError::Conflict(Conflict::Fenced { .. }))
}

fn decode_token(bytes: &[u8]) -> Result<u64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("fence record of {} bytes, not 8", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}
