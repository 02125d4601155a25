//! Support for `#[derive(Actor)]` and `#[messages]` (the `macros` feature).
//!
//! ```
//! use crashonly::prelude::*;
//!
//! /// A shopping cart.
//! #[derive(Actor, Clone, Default)]
//! #[actor(mailbox = 64)]
//! struct Cart {
//!     items: Vec<String>,
//! }
//!
//! #[messages]
//! impl Cart {
//!     /// The items, in order.
//!     #[message(idempotent, ttl = "700ms")]
//!     pub fn view(&self) -> Vec<String> {
//!         self.items.clone()
//!     }
//!
//!     /// Adds an item; refuses empty names.
//!     #[message]
//!     pub async fn add(&mut self, item: String) -> Result<usize, String> {
//!         if item.is_empty() {
//!             return Err("empty item".into());
//!         }
//!         self.items.push(item);
//!         Ok(self.items.len())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), crashonly::Error> {
//! let system = System::new();
//! let cart = system.spawn(Cart::spec(Cart::default()).name("cart-1")).unwrap();
//! assert_eq!(cart.add("book".into()).await?, Ok(1));
//! assert_eq!(cart.add(String::new()).await?, Err("empty item".into()));
//! assert_eq!(cart.view().await?, vec!["book".to_string()]);
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use crate::actor::Actor;
use crate::actor_ref::Ask;
use crate::envelope::{Header, TraceContext};
use crate::error::Error;
use crate::supervisor::{ActorSpec, Restart};
use crate::Instant;

/// What `#[derive(Actor)]` records from `#[actor(..)]`; `#[messages]` builds the [`Actor`] impl on it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an actor",
    label = "`#[messages]` needs an actor type",
    note = "add `#[derive(Actor)]` to the definition of `{Self}`"
)]
pub trait ActorDefaults: Sized + Send + 'static {
    /// The start arguments (`Self` unless `#[actor(args = T)]`).
    type Args: Send + Sync + 'static;
    /// `#[actor(mailbox = n)]`.
    const MAILBOX: Option<usize> = None;
    /// `#[actor(restart = "transient")]`.
    const RESTART: Restart = Restart::Permanent;
    /// `#[actor(ttl = "2s")]`: the default TTL of the actor's messages.
    const TTL: Option<Duration> = None;
    /// `#[actor(store_key = "...")]`: the store key the actor recovers its state from.
    const STORE_KEY: Option<&'static str> = None;
}

/// An actor spec with the defaults of `#[actor(..)]` applied.
pub fn spec<A: Actor + ActorDefaults>(args: <A as Actor>::Args) -> ActorSpec<A> {
    let spec = ActorSpec::new(args).restart(A::RESTART);
    match A::MAILBOX {
        Some(n) => spec.mailbox_capacity(n),
        None => spec,
    }
}

/// A typed request made by a method that `#[messages]` generated: an [`Ask`] whose reply is
/// unpacked to the method's return type. Has the same builders (`ttl`, `idempotent`, `key`, ...).
#[must_use = "a call does nothing until it is awaited"]
pub struct Call<'a, A: Actor, T> {
    ask: Ask<'a, A>,
    extract: fn(A::Reply) -> Option<T>,
}

impl<A: Actor, T> fmt::Debug for Call<'_, A, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").field("ask", &self.ask).finish()
    }
}

impl<'a, A: Actor, T> Call<'a, A, T> {
    #[doc(hidden)]
    pub fn new(ask: Ask<'a, A>, extract: fn(A::Reply) -> Option<T>) -> Self {
        Call { ask, extract }
    }

    fn map(self, f: impl FnOnce(Ask<'a, A>) -> Ask<'a, A>) -> Self {
        Call {
            ask: f(self.ask),
            extract: self.extract,
        }
    }

    /// See [`Ask::ttl`].
    pub fn ttl(self, ttl: Duration) -> Self {
        self.map(|a| a.ttl(ttl))
    }
    /// See [`Ask::deadline`].
    pub fn deadline(self, deadline: Instant) -> Self {
        self.map(|a| a.deadline(deadline))
    }
    /// See [`Ask::idempotent`].
    pub fn idempotent(self) -> Self {
        self.map(|a| a.idempotent())
    }
    /// See [`Ask::set_idempotent`].
    pub fn set_idempotent(self, idempotent: bool) -> Self {
        self.map(|a| a.set_idempotent(idempotent))
    }
    /// See [`Ask::key`].
    pub fn key(self, key: impl std::hash::Hash) -> Self {
        self.map(|a| a.key(key))
    }
    /// See [`Ask::retrying`].
    pub fn retrying(self) -> Self {
        self.map(|a| a.retrying())
    }
    /// See [`Ask::attempt_timeout`].
    pub fn attempt_timeout(self, timeout: Duration) -> Self {
        self.map(|a| a.attempt_timeout(timeout))
    }
    /// See [`Ask::trace`].
    pub fn trace(self, trace: TraceContext) -> Self {
        self.map(|a| a.trace(trace))
    }
    /// See [`Ask::within`]: a sub-request of the envelope being handled.
    pub fn within(self, parent: &Header) -> Self {
        self.map(|a| a.within(parent))
    }
}

impl<'a, A: Actor, T: Send + 'a> IntoFuture for Call<'a, A, T> {
    type Output = Result<T, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        let Call { ask, extract } = self;
        Box::pin(async move {
            let reply = ask.await?;
            // `#[messages]` pairs every request with its own reply variant.
            Ok(extract(reply).expect("a reply of another message: the generated code is inconsistent"))
        })
    }
}
