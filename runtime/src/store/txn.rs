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
    pub(crate) once: Option<Vec<u8>>,
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
    pub fn new() -> Self {
        Txn::default()
    }

    /// Requires `key` to be at `version` (0: absent) when the transaction applies.
    pub fn check(mut self, key: &[u8], version: u64) -> Self {
        self.checks.push((key.to_vec(), version));
        self
    }

    /// Puts `value` at `key`.
    pub fn put(mut self, key: &[u8], value: Vec<u8>) -> Self {
        self.writes.push(Write::Put {
            key: key.to_vec(),
            value,
            ttl: None,
        });
        self
    }

    /// Puts `value` at `key`, expiring after `ttl`.
    pub fn put_ttl(mut self, key: &[u8], value: Vec<u8>, ttl: Duration) -> Self {
        self.writes.push(Write::Put {
            key: key.to_vec(),
            value,
            ttl: Some(ttl),
        });
        self
    }

    /// Deletes `key`.
    pub fn delete(mut self, key: &[u8]) -> Self {
        self.writes.push(Write::Delete { key: key.to_vec() });
        self
    }

    /// Applies only while `lease` is current: a stale incarnation's write is refused.
    pub fn fenced(mut self, lease: &DurableLease) -> Self {
        self.fence = Some((lease.name.clone(), lease.token));
        self
    }

    /// Applies at most once per `key` (see [`StoreExt::apply_once`](super::StoreExt::apply_once)).
    pub fn once(mut self, key: &[u8]) -> Self {
        self.once = Some(key.to_vec());
        self
    }

    /// The writes.
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
        if let Some(k) = &self.once {
            key_ok(k)?;
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
