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
    ///
    /// ```
    /// use crashonly::prelude::*;
    /// use crashonly::store::{MemoryStore, StoreError};
    /// use std::sync::Arc;
    ///
    /// struct Visits { store: Arc<MemoryStore>, n: u64 }
    ///
    /// impl Actor for Visits {
    ///     type Args = Arc<MemoryStore>;
    ///     type Msg = ();
    ///     type Reply = u64;
    ///     type Error = StoreError;
    ///
    ///     async fn start(store: &Arc<MemoryStore>, _ctx: &mut Context<Self>) -> Result<Self, StoreError> {
    ///         let n = match store.get(b"visits").await? {
    ///             Some(v) => u64::from_be_bytes(v.value.try_into().unwrap_or_default()),
    ///             None => 0,
    ///         };
    ///         Ok(Visits { store: store.clone(), n })
    ///     }
    ///
    ///     async fn handle(&mut self, _: (), _ctx: &mut Context<Self>) -> Result<u64, StoreError> {
    ///         self.n += 1;
    ///         self.store.put(b"visits", self.n.to_be_bytes().to_vec()).await?;
    ///         Ok(self.n)
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let visits = system.spawn(ActorSpec::<Visits>::new(Arc::new(MemoryStore::new()))).unwrap();
    /// assert_eq!(visits.ask(()).await, Ok(1));
    /// visits.kill().unwrap(); // the instance and its volatile state are gone...
    /// assert_eq!(visits.ask(()).await, Ok(2)); // ...and `start` recovered the count
    /// # }
    /// ```
    fn start(args: &Self::Args, ctx: &mut Context<Self>) -> impl Future<Output = Result<Self, Self::Error>> + Send;

    /// Handle one message. An `Err` is a crash: the asker gets
    /// [`DeliveryError::Crashed`](crate::DeliveryError::Crashed) and the supervisor decides.
    ///
    /// ```
    /// use crashonly::prelude::*;
    /// use std::num::ParseIntError;
    ///
    /// struct Parser;
    ///
    /// impl Actor for Parser {
    ///     type Args = ();
    ///     type Msg = String;
    ///     type Reply = i64;
    ///     type Error = ParseIntError;
    ///
    ///     async fn start(_: &(), _ctx: &mut Context<Self>) -> Result<Self, ParseIntError> {
    ///         Ok(Parser)
    ///     }
    ///
    ///     async fn handle(&mut self, text: String, _ctx: &mut Context<Self>) -> Result<i64, ParseIntError> {
    ///         text.parse() // what does not parse crashes this instance
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let system = System::new();
    /// let parser = system.spawn(ActorSpec::<Parser>::new(())).unwrap();
    /// assert_eq!(parser.ask("42".into()).await, Ok(42));
    /// let Err(DeliveryError::Crashed(report)) = parser.ask("forty-two".into()).await else { panic!() };
    /// assert!(matches!(report.reason, CrashReason::HandleFailed(_)));
    /// assert_eq!(parser.ask("7".into()).await, Ok(7)); // a new instance
    /// # }
    /// ```
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context<Self>,
    ) -> impl Future<Output = Result<Self::Reply, Self::Error>> + Send;
}
