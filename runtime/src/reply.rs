//! Where the outcome of handling an envelope goes: the reply channel of an `ask`, and the
//! [`ReplyPort`] a handler can hand to someone else to answer later (a deferred reply).
//!
//! It sits between the envelope (which carries the channel) and the error type (which the channel
//! carries), so that `envelope` needs nothing above it.

use std::fmt;

use tokio::sync::oneshot;

use crate::clock::{Clock, Instant};
use crate::error::DeliveryError;

/// The sending half of an ask's reply: the channel its asker waits on, or a function called
/// with the outcome where it is made (see [`OnReply`]).
pub(crate) enum ReplyTo<R> {
    Chan(oneshot::Sender<Result<R, DeliveryError>>),
    Call(Box<OnReply<R>>),
}

impl<R> ReplyTo<R> {
    /// Hands over the outcome; false when nobody takes it any more (the asker gave up).
    fn send(self, outcome: Result<R, DeliveryError>) -> bool {
        match self {
            ReplyTo::Chan(tx) => tx.send(outcome).is_ok(),
            ReplyTo::Call(mut call) => {
                if let Some(f) = call.0.take() {
                    f(outcome);
                }
                true
            }
        }
    }
}

/// Sends the outcome to the asker, if there is one still waiting.
pub(crate) fn answer<R>(reply: Option<ReplyTo<R>>, outcome: Result<R, DeliveryError>) {
    if let Some(tx) = reply {
        // The asker may have given up at its deadline; nobody is left to tell.
        let _ = tx.send(outcome);
    }
}

/// The reply of an ask sent with [`ask_with`](crate::__private::ask_with): a function called
/// with the outcome where it is made, in the actor's task (or where the delivery failed), for a
/// sender that does not wait for it itself. crashonly-cluster answers a remote ask so: the
/// entity's task publishes the reply, without a hop back through the node's server task.
///
/// Called exactly once: an envelope dropped unanswered (its actor torn down) calls it with
/// [`DeliveryError::Dead`]. It runs on the actor's task: it must not block.
pub struct OnReply<R>(Option<CallReply<R>>);

type CallReply<R> = Box<dyn FnOnce(Result<R, DeliveryError>) + Send + Sync>;

impl<R> OnReply<R> {
    /// `f`, to be called with the outcome.
    pub fn new(f: impl FnOnce(Result<R, DeliveryError>) + Send + Sync + 'static) -> Self {
        OnReply(Some(Box::new(f)))
    }
}

impl<R> fmt::Debug for OnReply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnReply").field("called", &self.0.is_none()).finish()
    }
}

impl<R> Drop for OnReply<R> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(DeliveryError::Dead));
        }
    }
}

type Deliver<T> = Box<dyn FnOnce(Result<T, DeliveryError>) -> bool + Send>;

/// The reply slot of the message being handled, taken with
/// [`Context::defer`](crate::Context::defer) so that someone else (a spawned task, another actor)
/// answers it later while the actor goes on with its mailbox: ractor's `RpcReplyPort`, kameo's
/// `DelegatedReply`, OTP's `noreply` and `gen_server:reply`.
///
/// The ask's deadline still bounds it: the asker stops waiting at the deadline (with
/// [`DeliveryError::Expired`]) and a reply sent after it is refused the same way. A port dropped
/// without a reply answers its asker at once with [`DeliveryError::Unanswered`], so nobody waits
/// for an answer that cannot come.
///
/// ```
/// use crashonly::prelude::*;
/// use crashonly::ReplyPort;
///
/// struct Slow;
///
/// impl Actor for Slow {
///     type Args = ();
///     type Msg = u64;
///     type Reply = u64;
///     type Error = std::convert::Infallible;
///
///     async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> {
///         Ok(Slow)
///     }
///
///     async fn handle(&mut self, n: u64, ctx: &mut Context<Self>) -> Result<u64, Self::Error> {
///         let port: ReplyPort<u64> = ctx.defer();
///         tokio::spawn(async move {
///             let _ = port.send(n * 2); // answered later, from elsewhere
///         });
///         Ok(0) // ignored: the reply was deferred
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let system = System::new();
/// let slow = system.spawn(ActorSpec::<Slow>::new(())).unwrap();
/// assert_eq!(slow.ask(21).await, Ok(42));
/// # }
/// ```
#[must_use = "a reply port dropped unanswered answers its asker `Unanswered`"]
pub struct ReplyPort<T> {
    deliver: Option<Deliver<T>>,
    deadline: Instant,
    clock: Clock,
}

impl<T> fmt::Debug for ReplyPort<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyPort")
            .field("wanted", &self.deliver.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl<T: Send + 'static> ReplyPort<T> {
    /// A port that answers `tx`, mapping the value with `map`.
    pub(crate) fn new<R: Send + 'static>(
        tx: Option<ReplyTo<R>>,
        map: fn(T) -> R,
        deadline: Instant,
        clock: Clock,
    ) -> Self {
        let deliver = tx.map(|tx| -> Deliver<T> { Box::new(move |outcome| tx.send(outcome.map(map))) });
        ReplyPort {
            deliver,
            deadline,
            clock,
        }
    }
}

impl<T> ReplyPort<T> {
    /// Answers the asker. `Err(Expired)` past the ask's deadline (the asker has been told so),
    /// `Err(Dead)` when nobody waits any more (a `tell`, or an asker that gave up).
    pub fn send(mut self, value: T) -> Result<(), DeliveryError> {
        let Some(deliver) = self.deliver.take() else {
            return Err(DeliveryError::Dead);
        };
        if self.clock.now() >= self.deadline {
            deliver(Err(DeliveryError::Expired));
            return Err(DeliveryError::Expired);
        }
        if deliver(Ok(value)) {
            Ok(())
        } else {
            Err(DeliveryError::Dead)
        }
    }

    /// Answers the asker with an error (say, `RetryAfter` from a sub-request).
    pub fn fail(mut self, error: DeliveryError) {
        if let Some(deliver) = self.deliver.take() {
            deliver(Err(error));
        }
    }

    /// Whether an asker waits for this reply (false for a `tell`).
    pub fn is_wanted(&self) -> bool {
        self.deliver.is_some()
    }

    /// The ask's deadline: a reply after it is refused.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl<T> Drop for ReplyPort<T> {
    fn drop(&mut self) {
        if let Some(deliver) = self.deliver.take() {
            deliver(Err(DeliveryError::Unanswered));
        }
    }
}
