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

use crate::envelope::{Header, Inherited, TraceContext};
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
    /// It crashed on another node of a cluster, which reported it in these words.
    Remote(String),
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
            CrashReason::Remote(report) => write!(f, "crashed on another node: {report}"),
        }
    }
}

impl CrashReport {
    /// A report made outside the runtime (a crash a remote node reported), with no envelope.
    pub fn new(path: impl Into<String>, reason: CrashReason) -> Self {
        CrashReport {
            path: path.into(),
            reason,
            envelope: None,
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

/// What this thread is polling: actor code or not, and the envelope being handled, whose
/// deadline and trace every send made meanwhile inherits. Both in one thread-local, set and
/// restored once per poll.
///
/// `current` points into the `CatchCrash` being polled (pinned, so it stays put for the poll, and
/// reset before the poll returns); null when no envelope is handled.
#[derive(Clone, Copy)]
struct Polling {
    in_actor: bool,
    current: *const Inherited,
}

thread_local! {
    static POLLING: Cell<Polling> = const {
        Cell::new(Polling {
            in_actor: false,
            current: std::ptr::null(),
        })
    };
    static LAST_PANIC: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
}

/// The envelope being handled by the code this thread is polling, if any.
pub(crate) fn current_envelope() -> Option<Inherited> {
    let current = POLLING.with(|p| p.get().current);
    // SAFETY: non-null only while the `CatchCrash` it points into is being polled on this thread
    // (set before its inner poll, restored after it), and that future is pinned: the pointee is
    // alive and unmoved for as long as the pointer can be read here.
    unsafe { current.as_ref().copied() }
}

// Here rather than in `envelope`, which sits below the thread-local that knows the current one.
impl TraceContext {
    /// The trace a message sent now inherits: inside a handler (polled by the runtime), the
    /// handled envelope's trace with that envelope as the parent; `None` elsewhere. For code
    /// that carries a trace where the runtime does not (a request to another process).
    pub fn current() -> Option<TraceContext> {
        current_envelope().map(|i| i.trace)
    }

    /// Runs `fut` in this trace: every message sent while it is polled (outside an actor's
    /// handler, which has its own) carries this context, its trace id, parent span and flags.
    /// For a request entering from outside, such as an HTTP request with a `traceparent`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use crashonly::prelude::*;
    /// use crashonly::TraceContext;
    ///
    /// struct Echo;
    /// impl Actor for Echo {
    ///     type Args = ();
    ///     type Msg = ();
    ///     type Reply = crashonly::Header;
    ///     type Error = std::convert::Infallible;
    ///     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> { Ok(Echo) }
    ///     async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<Self::Reply, Self::Error> {
    ///         Ok(ctx.header().unwrap().clone())
    ///     }
    /// }
    /// let system = System::new();
    /// let echo = system.spawn(ActorSpec::<Echo>::new(())).unwrap();
    /// let trace = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// let header = trace.scope(async { echo.ask(()).await.unwrap() }).await;
    /// assert_eq!(header.trace, trace);
    /// # }
    /// ```
    pub fn scope<F: Future>(self, fut: F) -> Traced<F> {
        Traced {
            inner: fut,
            trace: self,
        }
    }
}

pin_project_lite::pin_project! {
    /// A future run in a trace: see [`TraceContext::scope`].
    #[derive(Debug)]
    pub struct Traced<F> {
        #[pin]
        inner: F,
        trace: TraceContext,
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // A deadline of an enclosing handler still caps what is sent.
        let mine = Inherited {
            deadline: current_envelope().and_then(|i| i.deadline),
            trace: *this.trace,
        };
        let was = POLLING.with(|p| {
            p.replace(Polling {
                current: &mine,
                ..p.get()
            })
        });
        /// Puts the previous state back, also when unwinding (`mine` dies with this frame).
        struct Restore(Polling);
        impl Drop for Restore {
            fn drop(&mut self) {
                POLLING.with(|p| p.set(self.0));
            }
        }
        let _restore = Restore(was);
        this.inner.poll(cx)
    }
}

/// Runs `f` with no current envelope (notices the runtime sends on its own behalf).
pub(crate) fn without_current<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the previous state back, also when unwinding.
    struct Restore(Polling);
    impl Drop for Restore {
        fn drop(&mut self) {
            POLLING.with(|p| p.set(self.0));
        }
    }
    let before = POLLING.with(|p| p.get());
    let _restore = Restore(before);
    POLLING.with(|p| {
        p.set(Polling {
            current: std::ptr::null(),
            ..before
        })
    });
    f()
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
            if POLLING.with(|p| p.get().in_actor) {
                let message = payload_message(info.payload());
                let location = info.location().map(|l| location_text(l.file(), l.line(), l.column()));
                LAST_PANIC.with(|p| *p.borrow_mut() = Some((message, location)));
            } else {
                previous(info);
            }
        }));
    });
}

/// `file:line:column`, written without the formatting machinery: this runs on every panic in an
/// actor, on the restart path (`format!` cost 1,300 instructions of a restart here).
fn location_text(file: &str, line: u32, column: u32) -> String {
    let mut text = String::with_capacity(file.len() + 22);
    text.push_str(file);
    for n in [line, column] {
        text.push(':');
        push_decimal(&mut text, n.into());
    }
    text
}

/// Appends `n` in decimal, without the formatting machinery: for the strings a crash makes on
/// the restart path (a panic's location here, an unnamed actor's path in its report).
pub(crate) fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: always UTF-8 (one copy, where pushing them as chars checked each).
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
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
    /// Polls a future of actor code, turning a panic into `Err(CrashReason::Panic)`; while a
    /// handler is polled, its envelope is the thread's current one (never across an await: it is
    /// restored after every poll, so no other task sees it).
    pub(crate) struct CatchCrash<F> {
        #[pin]
        inner: F,
        current: Option<Inherited>,
    }
}

/// Actor code with no envelope (`start`).
pub(crate) fn catch<F: Future>(inner: F) -> CatchCrash<F> {
    CatchCrash { inner, current: None }
}

/// A handler, with the envelope it handles as the current one.
pub(crate) fn catch_handling<F: Future>(current: Inherited, inner: F) -> CatchCrash<F> {
    CatchCrash {
        inner,
        current: Some(current),
    }
}

impl<F: Future> Future for CatchCrash<F> {
    type Output = Result<F::Output, CrashReason>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let current = this
            .current
            .as_ref()
            .map_or(std::ptr::null(), |c| c as *const Inherited);
        let inner = this.inner;
        let was = POLLING.with(|p| {
            p.replace(Polling {
                in_actor: true,
                current,
            })
        });
        // A panic is caught here, so the state is always put back.
        let polled = panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx)));
        POLLING.with(|p| p.set(was));
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::envelope::TraceId;

    #[test]
    fn a_panic_location_reads_as_format_would_write_it() {
        for (line, column) in [(0, 0), (1, 9), (10, 100), (4_294_967_295, 12_345)] {
            assert_eq!(
                location_text("src/a.rs", line, column),
                format!("src/a.rs:{line}:{column}")
            );
        }
    }

    #[test]
    fn the_current_envelope_is_set_only_while_its_handler_is_polled() {
        let inherited = Inherited {
            deadline: Some(crate::clock::Clock::default().now()),
            trace: TraceContext::root(TraceId::MIN),
        };
        let mut fut = Box::pin(catch_handling(
            inherited,
            std::future::poll_fn(|_| Poll::Ready(current_envelope())),
        ));
        let seen = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert_eq!(seen, Poll::Ready(Ok(Some(inherited))));
        assert_eq!(current_envelope(), None, "restored after the poll");
        let inside = catch_handling(inherited, async { without_current(current_envelope) });
        let mut inside = Box::pin(inside);
        let seen = inside.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert_eq!(seen, Poll::Ready(Ok(None)), "notices are sent with no current envelope");
    }
}
