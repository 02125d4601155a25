//! # crashonly
//!
//! A crash-only actor runtime (Candea & Fox, "Crash-Only Software", HotOS 2003): **stop = crash,
//! start = recover**. An actor has one way to start, its recovery path [`Actor::start`]; it is
//! stopped only from outside, by its supervisor aborting its task. Supervisors restart failed
//! children or whole subtrees (recursive microreboots); past its restart intensity a supervisor gives
//! up and its parent decides; at the root, [`System::wait`] returns an error that `main` turns into a
//! non-zero exit.
//!
//! Every message travels in a self-describing envelope (its [`Header`]): id, deadline,
//! idempotency flag, attempt number and trace context. An [`ActorRef`] stays valid across
//! restarts: the mailbox belongs to the supervised slot, so messages sent during a restart wait for
//! the new instance (the paper's stall proxy).
//!
//! ```
//! use crashonly::prelude::*;
//!
//! struct Greeter { greeting: String }
//!
//! impl Actor for Greeter {
//!     type Args = String;
//!     type Msg = String;
//!     type Reply = String;
//!     type Error = String;
//!
//!     async fn start(greeting: &String, _ctx: &mut Context<Self>) -> Result<Self, String> {
//!         Ok(Greeter { greeting: greeting.clone() })
//!     }
//!
//!     async fn handle(&mut self, name: String, _ctx: &mut Context<Self>) -> Result<String, String> {
//!         if name.is_empty() {
//!             return Err("no name".into()); // a crash: the supervisor restarts the greeter
//!         }
//!         Ok(format!("{}, {name}", self.greeting))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let system = System::new();
//! let greeter = system.spawn(ActorSpec::<Greeter>::named("greeter", "hello".into())).unwrap();
//! assert!(matches!(greeter.ask(String::new()).await, Err(DeliveryError::Crashed(_))));
//! assert_eq!(greeter.ask("world".into()).await.unwrap(), "hello, world"); // a new instance
//! # }
//! ```

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]
#![doc(test(attr(deny(warnings))))]

// Layers, from the user's API down to the seams (arrows point down; `tests/architecture.rs`
// checks it): system, supervisor, call / actor, actor_ref, context / slot, timer, lease, monitor,
// watchdog / shared, registry, mailbox / reply, error, crash, envelope, config, policy / the seams:
// sync, rt (executor), clock.
/// `with_<field>(value)` setters for a settings struct built from `default()` (the structs are
/// `#[non_exhaustive]`, so callers outside the crate cannot write them as literals).
macro_rules! with_setters {
    ($ty:ty { $($(#[$doc:meta])* $name:ident => $field:ident: $t:ty),* $(,)? }) => {
        impl $ty {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

/// Calls `$call` on a slot's meters (an `Option<Arc<SlotMeters>>`) when the `metrics` feature is
/// on; compiles to nothing when it is off.
macro_rules! meter {
    ($meters:expr, $($call:tt)+) => {
        #[cfg(feature = "metrics")]
        if let Some(m) = &$meters {
            m.$($call)+;
        }
    };
}

mod actor;
mod actor_ref;
#[cfg(feature = "macros")]
mod call;
mod clock;
mod config;
mod context;
mod crash;
mod dedup;
mod entity;
mod envelope;
mod error;
mod inflight;
#[cfg(feature = "observer")]
mod journal;
mod lease;
mod link;
mod mailbox;
#[cfg(feature = "metrics")]
mod meters;
mod monitor;
mod path;
mod policy;
mod registry;
mod remote;
mod reply;
mod request;
mod rt;
mod shared;
mod slot;
mod stats;
mod supervised_store;
mod supervisor;
mod sync;
mod system;
mod timer;
mod watchdog;

#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "observer")]
pub mod observer;
#[cfg(feature = "otel")]
pub mod otel;
pub mod store;
pub mod testing;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use actor::Actor;
pub use actor_ref::ActorRef;
#[cfg(feature = "macros")]
pub use call::Call;
pub use clock::{Clock, Instant};
pub use config::Config;
pub use context::Context;
pub use crash::{CrashReason, CrashReport, Traced};
pub use entity::{Entities, Entity, EntityKey, EntityRef, EntitySpec, EntityStats};
pub use envelope::{EnvelopeId, Header, IdempotencyKey, SpanId, TraceContext, TraceId, TraceparentError};
pub use error::{ChildError, DeliveryError, SendError, SpawnError, SystemError};
pub use lease::{Lease, LeaseError, LeaseTable};
pub use monitor::{Down, DownReason, MonitorStream};
pub use path::ActorPath;
pub use policy::{Backoff, Intensity, Policy, PolicyBuilder, PolicyError};
pub use registry::{ActorId, Snapshot};
pub use remote::Remote;
pub use reply::ReplyPort;
pub use request::{Ask, AskFuture, Tell, TellFuture};
pub use stats::{SlotState, Stats};
pub use supervised_store::{StoreFailed, StoreKeeper, SupervisedStore};
pub use supervisor::{ActorSpec, ChildSpec, Restart, Strategy, SupervisorRef, SupervisorSpec};
pub use system::{System, SystemBuilder};
pub use timer::Timer;

/// The crate's README (the one crates.io shows) runs as doc tests; the repository's README runs
/// from the suite crate at the root, outside this package.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "macros")]
pub use crashonly_macros::{messages, Actor};

/// The names most code needs: `use crashonly::prelude::*;`.
pub mod prelude {
    pub use crate::store::{Store, StoreExt};
    pub use crate::{
        Actor, ActorRef, ActorSpec, Backoff, Config, Context, CrashReason, DeliveryError, Down, DownReason, Entities,
        Entity, EntityRef, EntitySpec, Header, Policy, Restart, Strategy, SupervisorRef, SupervisorSpec, System,
    };

    #[cfg(feature = "macros")]
    pub use crate::messages;
}
