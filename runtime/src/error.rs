//! Typed errors for sending and asking (`DeliveryError`, `SendError`), for adding children
//! (`SpawnError`), and for a system whose root gave up (`SystemError`).
//!
//! The actor's own failure is not among them: that is its `Actor::Error`, which becomes a crash.

use std::fmt;
use std::time::Duration;

use crate::crash::CrashReport;
use crate::sync::Arc;

/// Why a message was not handled, or an ask got no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The deadline passed before the message was handled (found expired at dequeue, or the asker's
    /// own deadline ran out first).
    Expired,
    /// The mailbox was full: at once for `try_tell`, or until the deadline for `tell` and `ask`.
    MailboxFull,
    /// The actor crashed while handling this message and the message was not redelivered (it was not
    /// idempotent, or its deadline did not allow another attempt).
    Crashed(Arc<CrashReport>),
    /// The actor is gone for good (a temporary or ended child, or a stale id).
    Dead,
    /// The actor is recovering; try again after this long (the runtime's estimate).
    RetryAfter(Duration),
    /// The handler deferred its reply ([`ReplyPort`](crate::ReplyPort)) and the port was dropped
    /// without an answer.
    Unanswered,
    /// An entity key longer than the policy allows ([`Policy::max_key_len`](crate::Policy::max_key_len)):
    /// refused before anything is activated.
    KeyTooLong {
        /// Its length in bytes.
        len: usize,
        /// The policy's bound.
        max: usize,
    },
}

impl DeliveryError {
    /// Whether sending the same message again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DeliveryError::MailboxFull | DeliveryError::RetryAfter(_) | DeliveryError::Crashed(_)
        )
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Expired => write!(f, "message expired before it was handled"),
            DeliveryError::MailboxFull => write!(f, "mailbox full"),
            DeliveryError::Crashed(report) => {
                write!(f, "actor crashed while handling the message: {report}")
            }
            DeliveryError::Dead => write!(f, "actor is dead"),
            DeliveryError::RetryAfter(d) => {
                write!(f, "actor is recovering, retry after {} ms", d.as_millis())
            }
            DeliveryError::Unanswered => write!(f, "the deferred reply was dropped without an answer"),
            DeliveryError::KeyTooLong { len, max } => {
                write!(f, "entity key of {len} bytes is longer than the policy's {max}")
            }
        }
    }
}

impl std::error::Error for DeliveryError {}

/// A failed `tell`/`try_tell`; gives the message back so that the caller can retry it.
pub struct SendError<M> {
    error: DeliveryError,
    msg: M,
}

impl<M> SendError<M> {
    pub(crate) fn new(error: DeliveryError, msg: M) -> Self {
        SendError { error, msg }
    }

    /// Why it failed.
    pub fn error(&self) -> &DeliveryError {
        &self.error
    }

    /// The message that was not sent.
    pub fn into_inner(self) -> M {
        self.msg
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<M> std::error::Error for SendError<M> {}

impl<M> From<SendError<M>> for DeliveryError {
    fn from(e: SendError<M>) -> Self {
        e.error
    }
}

/// Why a child could not be added to a supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpawnError {
    /// A sibling already has this name.
    NameTaken(String),
    /// The name is empty or contains `/`.
    BadName(String),
    /// The supervisor has given up (it is crashing or gone).
    SupervisorDown(String),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::NameTaken(n) => write!(f, "a child named {n:?} already exists"),
            SpawnError::BadName(n) => write!(f, "invalid child name {n:?}: it must be non-empty and contain no '/'"),
            SpawnError::SupervisorDown(p) => write!(f, "supervisor {p} is down"),
        }
    }
}

impl std::error::Error for SpawnError {}

/// Why a supervisor could not terminate, restart or remove a child.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildError {
    /// The supervisor has no child of this name.
    NotFound(String),
    /// `restart_child` on a child that runs (terminate it first).
    Running(String),
    /// The supervisor has given up (it is crashing or gone).
    SupervisorDown(String),
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildError::NotFound(p) => write!(f, "no child at {p}"),
            ChildError::Running(p) => write!(f, "child {p} is running; terminate it first"),
            ChildError::SupervisorDown(p) => write!(f, "supervisor {p} is down"),
        }
    }
}

impl std::error::Error for ChildError {}

/// The system's root supervisor gave up: turn this into a non-zero exit so that the OS-level manager
/// restarts the process (stop = crash, start = recover).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SystemError {
    /// The crash that made the root give up.
    pub report: Arc<CrashReport>,
}

impl fmt::Display for SystemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root supervisor gave up: {}", self.report)
    }
}

impl std::error::Error for SystemError {}
