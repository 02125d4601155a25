//! Store errors.

use std::fmt;
use std::time::Duration;

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot serve now (I/O failure, connection lost, store restarting); try again
    /// after `retry_after`. Nothing of the failed operation was acknowledged.
    Unavailable {
        /// The store's estimate of when to try again.
        retry_after: Duration,
        /// What happened.
        reason: String,
    },
    /// A version check or a fence failed, or a lease is held by someone else.
    Conflict(Conflict),
    /// The stored data is damaged; the message says where. Never a panic.
    Corrupt(String),
    /// The request itself is invalid (too large, empty key, TTL of zero or past the limits).
    BadInput(String),
}

/// The kinds of [`StoreError::Conflict`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conflict {
    /// A compare-and-set found another version.
    Version {
        /// The key.
        key: Vec<u8>,
        /// The version the caller expected (0: absent).
        expected: u64,
        /// The version found (0: absent).
        actual: u64,
    },
    /// A fenced write presented a token that is no longer current.
    Fenced {
        /// The lease.
        lease: String,
        /// The stale token.
        token: u64,
    },
    /// The lease is held by another holder.
    LeaseHeld {
        /// The lease.
        lease: String,
        /// Its holder.
        holder: String,
        /// Until it lapses.
        remaining: Duration,
    },
    /// The lease to renew has expired or been taken over.
    LeaseLost {
        /// The lease.
        lease: String,
        /// The token that is no longer current.
        token: u64,
    },
}

impl StoreError {
    /// The retry-after hint, when the error is temporary.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            StoreError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub(crate) fn unavailable(reason: impl fmt::Display) -> Self {
        StoreError::Unavailable {
            retry_after: Duration::from_millis(100),
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable { retry_after, reason } => {
                write!(
                    f,
                    "store unavailable ({reason}), retry after {} ms",
                    retry_after.as_millis()
                )
            }
            StoreError::Conflict(c) => write!(f, "conflict: {c}"),
            StoreError::Corrupt(m) => write!(f, "store corrupt: {m}"),
            StoreError::BadInput(m) => write!(f, "bad input: {m}"),
        }
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::Version { key, expected, actual } => write!(
                f,
                "key {:?} is at version {actual}, not {expected}",
                String::from_utf8_lossy(key)
            ),
            Conflict::Fenced { lease, token } => {
                write!(f, "token {token} of lease {lease:?} is no longer current")
            }
            Conflict::LeaseHeld {
                lease,
                holder,
                remaining,
            } => {
                write!(
                    f,
                    "lease {lease:?} is held by {holder:?} for {} ms more",
                    remaining.as_millis()
                )
            }
            Conflict::LeaseLost { lease, token } => {
                write!(f, "lease {lease:?} with token {token} was lost")
            }
        }
    }
}

impl std::error::Error for StoreError {}
