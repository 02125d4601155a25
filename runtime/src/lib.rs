//! # crashonly
//!
//! A crash-only actor runtime (Candea & Fox, "Crash-Only Software", HotOS 2003): **stop = crash,
//! start = recover**. An actor has one way to start, its recovery path [`Actor::start`]; it is
//! stopped only from outside, by its supervisor aborting its task. Supervisors restart failed
//! children or whole subtrees (recursive microreboots); past its restart intensity a supervisor gives
//! up and its parent decides; at the root, [`System::wait`] returns an error that `main` turns into a
//! non-zero exit.
//!
//! Every message travels in a self-describing [`Envelope`]: id, deadline, idempotency flag, attempt
//! number and trace context. An [`ActorRef`] stays valid across restarts: the mailbox belongs to the
//! supervised slot, so messages sent during a restart wait for the new instance (the paper's stall
//! proxy).
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
//! assert!(matches!(greeter.ask(String::new()).await, Err(Error::Crashed(_))));
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

mod actor;
mod actor_ref;
mod clock;
mod crash;
#[cfg(feature = "macros")]
pub mod derive;
mod envelope;
mod error;
mod lease;
mod mailbox;
mod monitor;
mod policy;
mod registry;
mod rt;
mod slot;
mod supervisor;
mod sync;
mod system;
pub mod testing;
mod timer;

pub mod store;

pub use actor::{Actor, Context};
pub use actor_ref::{ActorRef, Ask, Tell, TellFuture};
pub use clock::{Clock, Instant};
pub use crash::{CrashReason, CrashReport};
pub use envelope::{Envelope, EnvelopeId, Header, TraceContext};
pub use error::{Error, SendError, SpawnError, SystemError};
pub use lease::{Lease, LeaseError, LeaseTable};
pub use monitor::{Down, DownReason, MonitorStream};
pub use policy::{Policy, PolicyBuilder, PolicyError};
pub use registry::{ActorId, Snapshot};
pub use slot::{SlotState, Stats};
pub use supervisor::{ActorSpec, Backoff, ChildSpec, Intensity, Restart, Strategy, SupervisorRef, SupervisorSpec};
pub use system::{Config, System, SystemBuilder};
pub use timer::Timer;

/// The README's code blocks compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "macros")]
pub use crashonly_macros::{messages, Actor};

/// The names most code needs: `use crashonly::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Actor, ActorRef, ActorSpec, Backoff, Config, Context, Down, DownReason, Error, Policy, Restart, Strategy,
        SupervisorSpec, System,
    };

    #[cfg(feature = "macros")]
    pub use crate::messages;
}
