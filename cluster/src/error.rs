//! The cluster's errors.

use std::fmt;
use std::time::Duration;

/// Why a cluster operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterError {
    /// The database did not answer in time or the connection failed; try again after this long.
    Unavailable {
        /// What failed.
        reason: String,
        /// When trying again makes sense.
        retry_after: Duration,
    },
    /// This node's membership lease is gone (it fenced itself): it must rejoin with a new
    /// incarnation.
    Fenced(String),
    /// Bad input (a name, an option).
    BadInput(String),
}

impl ClusterError {
    pub(crate) fn unavailable(reason: impl Into<String>) -> Self {
        ClusterError::Unavailable {
            reason: reason.into(),
            retry_after: Duration::from_millis(100),
        }
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Unavailable { reason, retry_after } => write!(
                f,
                "cluster authority unavailable: {reason} (retry after {} ms)",
                retry_after.as_millis()
            ),
            ClusterError::Fenced(why) => write!(f, "this node is fenced: {why}"),
            ClusterError::BadInput(what) => write!(f, "bad input: {what}"),
        }
    }
}

impl std::error::Error for ClusterError {}

impl From<tokio_postgres::Error> for ClusterError {
    fn from(e: tokio_postgres::Error) -> Self {
        ClusterError::unavailable(format!("postgres: {e}"))
    }
}
