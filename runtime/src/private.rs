//! The paths that `#[derive(Actor)]` and `#[messages]` emit, the fuzz targets' entry points and
//! the documentation's counter (the hidden setup of its examples).
//!
//! Generated code names only `<crate>::__private::*` (where `<crate>` is `::crashonly`, or the
//! path given with `#[actor(crate = path)]` / `#[messages(crate = path)]`), so that the public API
//! carries no macro plumbing and a renamed dependency still works. Not a public API: it may change
//! in any release. One other crate of this workspace uses it, at the same version: crashonly-cluster
//! implements [`Requests`] and [`CallAsk`] for its `RemoteRef`, so that the generated methods work on
//! a remote entity too.

use std::time::Duration;

pub use crate::actor::Actor;
pub use crate::actor_ref::ActorRef;
#[cfg(feature = "macros")]
pub use crate::call::{Call, CallAsk, ReplyFuture};
pub use crate::context::Context;
pub use crate::entity::{Entity, EntityRef, EntitySpec};
pub use crate::remote::Remote;
pub use crate::reply::{OnReply, ReplyPort};
pub use crate::request::Ask;

/// Sends `ask` once with its outcome handed to `on_reply` where it is made (in the actor's task),
/// for a sender that does not wait for the reply itself: crashonly-cluster's node answers a
/// remote ask so, its reply published by the entity's task. `None` once the message is in the
/// mailbox (or its delivery failed: `on_reply` has the error); else a future that waits for room
/// in a full mailbox until the deadline (a message whose actor is torn down meanwhile is
/// answered `RetryAfter`). A retrying ask's options are ignored: it is sent once.
pub fn ask_with<A: Actor>(
    ask: Ask<'_, A>,
    on_reply: OnReply<A::Reply>,
) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
    crate::request::ask_with(ask, on_reply)
}
pub use crate::supervisor::{ActorSpec, Restart};

#[cfg(feature = "macros")]
/// The typed request of a generated method: `ask` with its reply unpacked by `extract`.
pub fn call<'a, A: Actor, T, B: CallAsk<'a, A>>(ask: B, extract: fn(A::Reply) -> Option<T>) -> Call<'a, A, T, B> {
    Call::new(ask, extract)
}

#[cfg(feature = "macros")]
/// `call` with its request builder changed by `f`: how a crate whose builder has options of its own
/// (crashonly-cluster's `RemoteAsk`: `key`, `within`) offers them on the calls made with it.
pub fn map_call<'a, A: Actor, T, B: CallAsk<'a, A>>(
    call: Call<'a, A, T, B>,
    f: impl FnOnce(B) -> B,
) -> Call<'a, A, T, B> {
    call.map(f)
}

/// Entry points for the fuzz targets (`fuzz/`) and their stable replay (`tests/fuzz_replay.rs`).
pub mod fuzzing {
    use crate::store::StoreError;

    /// Decodes `bytes` as every kind of stored record; each outcome is a value or a typed error.
    pub fn decode_records(bytes: &[u8]) -> Vec<Result<(), StoreError>> {
        crate::store::engine::decode_any(bytes)
    }
}

/// What the documentation's examples share in their hidden setup lines.
pub mod doc {
    use crate::{Actor, Context, Entity};

    /// A counter: it starts at its `Args`, a message adds to it and the reply is the new count;
    /// an add that overflows is a crash (`Err("overflow")`). As an entity (`String` keys) it
    /// starts at what its family's `make` gives it.
    #[derive(Debug)]
    pub struct Counter(u64);

    impl Actor for Counter {
        type Args = u64;
        type Msg = u64;
        type Reply = u64;
        type Error = String;

        async fn start(from: &u64, _: &mut Context<Self>) -> Result<Self, String> {
            Ok(Counter(*from))
        }

        async fn handle(&mut self, add: u64, _: &mut Context<Self>) -> Result<u64, String> {
            self.0 = self.0.checked_add(add).ok_or("overflow")?;
            Ok(self.0)
        }
    }

    impl Entity for Counter {
        type Key = String;
    }
}

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

/// What the typed methods of `#[messages]` are implemented for: actor refs and entity refs here,
/// and the refs of other crates (crashonly-cluster's `RemoteRef`) with an ask builder of their own.
#[cfg(feature = "macros")]
pub trait Requests<A: Actor> {
    /// The ask builder of this kind of ref.
    type Ask<'a>: CallAsk<'a, A>
    where
        Self: 'a;
    /// An ask of `msg` to this actor or entity.
    fn request(&self, msg: A::Msg) -> Self::Ask<'_>;
}

#[cfg(feature = "macros")]
impl<A: Actor> Requests<A> for ActorRef<A> {
    type Ask<'a> = Ask<'a, A>;
    fn request(&self, msg: A::Msg) -> Ask<'_, A> {
        self.ask(msg)
    }
}

#[cfg(feature = "macros")]
impl<A: Entity> Requests<A> for EntityRef<A> {
    type Ask<'a> = Ask<'a, A>;
    fn request(&self, msg: A::Msg) -> Ask<'_, A> {
        self.ask(msg)
    }
}

/// An entity family spec with the defaults of `#[actor(..)]` applied.
pub fn entity_spec<A: Entity + ActorDefaults>(
    name: impl Into<String>,
    make: impl Fn(&A::Key) -> <A as Actor>::Args + Send + Sync + 'static,
) -> EntitySpec<A> {
    let spec = EntitySpec::new(name, make);
    match A::MAILBOX {
        Some(n) => spec.mailbox_capacity(n),
        None => spec,
    }
}

/// An actor spec with the defaults of `#[actor(..)]` applied.
pub fn spec<A: Actor + ActorDefaults>(args: <A as Actor>::Args) -> ActorSpec<A> {
    let spec = ActorSpec::new(args).restart(A::RESTART);
    match A::MAILBOX {
        Some(n) => spec.mailbox_capacity(n),
        None => spec,
    }
}
