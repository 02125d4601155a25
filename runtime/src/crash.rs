//! Crash reports, and capturing a panic's message and location.
//!
//! A panic in `start` or `handle`, or an `Err` they return, is a crash. The report names the actor's
//! path in the tree, what happened (with the panic's message and source location) and the envelope
//! being handled, if any.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::envelope::Header;
use crate::sync::Once;

/// Why an actor instance stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CrashReason {
    /// `start` or `handle` panicked.
    Panic {
        /// The panic message.
        message: String,
        /// `file:line:column` of the panic, when known.
        location: Option<String>,
    },
    /// `start` returned an error.
    StartFailed(String),
    /// `handle` returned an error.
    HandleFailed(String),
    /// The supervisor aborted the instance from outside (a sibling's crash, or its subtree restarted).
    Aborted,
    /// Crash-rebooted from outside on request ([`ActorRef::crash_reboot`](crate::actor_ref::ActorRef::crash_reboot)).
    Killed,
    /// The watchdog found it handling one message past its handling lease.
    Hung {
        /// How long it had been handling, in milliseconds.
        busy_ms: u128,
        /// Its handling lease, in milliseconds.
        lease_ms: u128,
    },
    /// A linked actor crashed ([`ActorRef::link`](crate::actor_ref::ActorRef::link)), so this one
    /// crashed with it.
    Linked {
        /// The linked actor's path.
        peer: String,
        /// Why it crashed.
        reason: String,
    },
    /// More tasks were abandoned (stuck in blocking code, deaf to abort) than the policy allows.
    TooManyAbandoned {
        /// Tasks abandoned so far.
        abandoned: u32,
    },
    /// A supervisor exceeded its restart intensity and gave up.
    IntensityExceeded {
        /// Restarts allowed within the period.
        max_restarts: u32,
        /// The period, in milliseconds.
        period_ms: u128,
    },
}

/// A crash, as reported to supervisors, monitors, askers and `tracing`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CrashReport {
    /// The actor's path in the supervision tree, such as `/app/cart`.
    pub path: String,
    /// What happened.
    pub reason: CrashReason,
    /// The envelope being handled when it happened.
    pub envelope: Option<Header>,
}

impl fmt::Display for CrashReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashReason::Panic {
                message,
                location: Some(at),
            } => write!(f, "panicked at {at}: {message}"),
            CrashReason::Panic {
                message,
                location: None,
            } => write!(f, "panicked: {message}"),
            CrashReason::StartFailed(e) => write!(f, "start failed: {e}"),
            CrashReason::HandleFailed(e) => write!(f, "handle failed: {e}"),
            CrashReason::Aborted => write!(f, "aborted by its supervisor"),
            CrashReason::Killed => write!(f, "crash-rebooted from outside"),
            CrashReason::Hung { busy_ms, lease_ms } => {
                write!(
                    f,
                    "hung: handling one message for {busy_ms} ms, past its {lease_ms} ms lease"
                )
            }
            CrashReason::Linked { peer, reason } => write!(f, "linked actor {peer} crashed: {reason}"),
            CrashReason::TooManyAbandoned { abandoned } => {
                write!(
                    f,
                    "{abandoned} tasks abandoned in blocking code, more than the policy allows"
                )
            }
            CrashReason::IntensityExceeded {
                max_restarts,
                period_ms,
            } => {
                write!(
                    f,
                    "restart intensity exceeded ({max_restarts} restarts in {period_ms} ms)"
                )
            }
        }
    }
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path, self.reason)?;
        if let Some(h) = &self.envelope {
            write!(f, " while handling {} (attempt {})", h.id, h.attempt)?;
        }
        Ok(())
    }
}

thread_local! {
    static IN_ACTOR: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that records the message and location of panics
/// raised inside actors, and leaves every other panic to the previous hook.
///
/// The hook is the one process-wide thing crashonly touches: Rust only reports a panic's location
/// to a hook.
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_ACTOR.with(Cell::get) {
                let message = payload_message(info.payload());
                let location = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
                LAST_PANIC.with(|p| *p.borrow_mut() = Some((message, location)));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

pin_project_lite::pin_project! {
    /// Polls a future of actor code, turning a panic into `Err(CrashReason::Panic)`.
    pub(crate) struct CatchCrash<F> {
        #[pin]
        inner: F,
    }
}

pub(crate) fn catch<F: Future>(inner: F) -> CatchCrash<F> {
    CatchCrash { inner }
}

impl<F: Future> Future for CatchCrash<F> {
    type Output = Result<F::Output, CrashReason>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        let was = IN_ACTOR.with(|f| f.replace(true));
        let polled = panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx)));
        IN_ACTOR.with(|f| f.set(was));
        match polled {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                let (message, location) = LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_else(|| (payload_message(payload.as_ref()), None));
                Poll::Ready(Err(CrashReason::Panic { message, location }))
            }
        }
    }
}
