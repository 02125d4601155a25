//! The `Actor` trait: the recovery path and the message handler.

use std::fmt;
use std::future::Future;

use crate::context::Context;

/// An actor: volatile state rebuilt by [`start`](Actor::start), changed by [`handle`](Actor::handle).
///
/// `start` is the recovery path and the only way an instance comes to life: the first start and
/// every restart run the same code, with the same [`Args`](Actor::Args), which the runtime keeps.
/// There is no stop hook: an instance is stopped by aborting it from outside, at any await point, so
/// everything that must survive belongs in a store, not in the actor.
///
/// A panic in `start` or `handle`, or an `Err` returned by them, is a crash: the supervisor decides
/// what happens next.
///
/// ```
/// use crashonly::prelude::*;
///
/// struct Counter { n: u64 }
///
/// impl Actor for Counter {
///     type Args = u64;          // where the count starts; kept for every restart
///     type Msg = u64;           // add this much
///     type Reply = u64;         // the new count
///     type Error = std::convert::Infallible;
///
///     async fn start(args: &u64, _ctx: &mut Context<Self>) -> Result<Self, Self::Error> {
///         Ok(Counter { n: *args })
///     }
///
///     async fn handle(&mut self, add: u64, _ctx: &mut Context<Self>) -> Result<u64, Self::Error> {
///         self.n += add;
///         Ok(self.n)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let system = System::new();
/// let counter = system.spawn(ActorSpec::<Counter>::named("counter", 40)).unwrap();
/// assert_eq!(counter.ask(2).await, Ok(42));
/// # }
/// ```
pub trait Actor: Sized + Send + 'static {
    /// Start arguments, kept by the runtime so that every restart can run `start` again.
    type Args: Send + Sync + 'static;
    /// The message type. It need not be `Clone`: only a message sent idempotent
    /// (`.idempotent()`, `.key(..)`, which require `Clone`) is copied, so that it can be handed to
    /// the next instance after a crash. Reply ports, file handles and streams can travel.
    type Msg: Send + 'static;
    /// What `handle` answers to an `ask`.
    type Reply: Send + 'static;
    /// What `start` and `handle` may fail with; an `Err` is a crash.
    type Error: fmt::Display + Send + 'static;

    /// The recovery path: build the volatile state (typically by reading it from a store).
    fn start(args: &Self::Args, ctx: &mut Context<Self>) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// Handle one message.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<Self::Reply, Self::Error>> + Send;
}
