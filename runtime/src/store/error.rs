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
    /// The disk (or the file-size limit, or a quota) has no room for the write; try again after
    /// `retry_after`, by when the store may have been reopened. Nothing of the failed operation
    /// was acknowledged.
    NoSpace {
        /// When to try again.
        retry_after: Duration,
        /// What happened.
        reason: String,
    },
    /// The stored data is damaged; the message says where. Never a panic, never served as data.
    Corrupt(String),
    /// The stored data was written in a format this build does not read (it is refused, not
    /// misread).
    Unsupported(String),
    /// The store is owned by another process (one process owns a store file); `pid` names it when
    /// it could be read. Not temporary: the owner is alive.
    AlreadyOpen {
        /// The store.
        path: String,
        /// The owner's process id, when known.
        pid: Option<u32>,
    },
    /// The request itself is invalid (too large, empty key, TTL of zero or past the limits).
    BadInput(String),
    /// TLS to the server is impossible as the connection settings demand it (a PostgreSQL URL's
    /// `sslmode=require` and a server without TLS, an untrusted certificate). Not temporary: the
    /// settings or the server must change.
    Tls(String),
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
    /// An idempotency key was used before for another request (another resource, another
    /// change): refused, since answering with the first outcome would acknowledge a request that
    /// was never applied.
    KeyReused {
        /// The idempotency key.
        key: Vec<u8>,
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
            StoreError::Unavailable { retry_after, .. } | StoreError::NoSpace { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The same error, with `retry_after` set (when the error is temporary).
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        if let StoreError::Unavailable { retry_after, .. } | StoreError::NoSpace { retry_after, .. } = &mut self {
            *retry_after = wait;
        }
        self
    }

    /// What happened, without the retry-after hint (for a process that exits on it).
    pub fn reason(&self) -> String {
        match self {
            StoreError::Unavailable { reason, .. } => format!("store unavailable: {reason}"),
            StoreError::NoSpace { reason, .. } => format!("no space left for the store: {reason}"),
            other => other.to_string(),
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
            StoreError::NoSpace { retry_after, reason } => write!(
                f,
                "no space left for the store ({reason}), retry after {} ms",
                retry_after.as_millis()
            ),
            StoreError::Conflict(c) => write!(f, "conflict: {c}"),
            StoreError::Corrupt(m) => write!(f, "store corrupt: {m}"),
            StoreError::Unsupported(m) => write!(f, "store format not supported: {m}"),
            StoreError::AlreadyOpen { path, pid: Some(pid) } => write!(
                f,
                "{path} is already open in process {pid} (one process owns a store file)"
            ),
            StoreError::AlreadyOpen { path, pid: None } => write!(
                f,
                "{path} is already open in another process (one process owns a store file)"
            ),
            StoreError::BadInput(m) => write!(f, "bad input: {m}"),
            StoreError::Tls(m) => write!(f, "tls: {m}"),
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
            Conflict::KeyReused { key } => write!(
                f,
                "idempotency key {:?} was already used for another request",
                String::from_utf8_lossy(key)
            ),
            Conflict::LeaseLost { lease, token } => {
                write!(f, "lease {lease:?} with token {token} was lost")
            }
        }
    }
}

impl std::error::Error for StoreError {}
