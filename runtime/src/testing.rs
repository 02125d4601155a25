//! A plain testkit for fast everyday tests: drive one actor's `start` and `handle` by hand, on
//! paused (virtual) time, without sleeps (as Akka's BehaviorTestKit does).
//!
//! ```
//! use crashonly::prelude::*;
//! use crashonly::testing::Driver;
//!
//! #[derive(Actor, Clone, Default)]
//! struct Counter { n: u64 }
//!
//! #[messages]
//! impl Counter {
//!     #[message]
//!     fn add(&mut self, k: u64) -> u64 { self.n += k; self.n }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mut d = Driver::<Counter>::start(Counter::default()).await.unwrap();
//! assert!(matches!(d.handle(CounterMessage::Add(2)).await, Ok(CounterReply::Add(2))));
//! assert_eq!(d.actor().n, 2);
//! d.restart().await.unwrap(); // what a crash does: the state is rebuilt by `start`
//! assert_eq!(d.actor().n, 0);
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::context::Context;
use crate::crash::{self, CrashReason};
use crate::envelope::{Header, TraceContext};
use crate::supervisor::ActorSpec;
use crate::system::System;

/// Reports a test that cannot run here (a server it needs is not configured) as skipped: a line
/// `skipped: <reason>` written to the process's stderr itself, not through `eprintln!`, whose
/// output libtest captures and hides for a passing test, so it shows in the plain test output.
/// The test then returns and libtest counts it as passed: CI looks for the line (`.ci/run` fails
/// where it finds one).
///
/// ```
/// if std::env::var("MY_DB_URL").is_err() {
///     crashonly::testing::skipped("MY_DB_URL is not set (the database tests)");
/// }
/// ```
pub fn skipped(reason: &str) {
    use std::io::Write;
    // One write, so that libtest's own lines (on stdout) cannot land inside it.
    let _ = std::io::stderr().write_all(format!("skipped: {reason}\n").as_bytes());
}

/// Runs one actor's code directly, message by message, in the calling task.
pub struct Driver<A: Actor> {
    system: System,
    args: A::Args,
    ctx: Context<A>,
    actor: A,
    ttl: Duration,
}

impl<A: Actor> fmt::Debug for Driver<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("actor", &self.ctx.myself().path())
            .finish_non_exhaustive()
    }
}

/// Why a driven step failed: `start` or `handle` returned an error or panicked.
#[derive(Debug)]
pub enum Failure<E> {
    /// It returned this error (a crash, in a running system).
    Error(E),
    /// It panicked.
    Panic(CrashReason),
}

impl<A: Actor> Driver<A>
where
    A::Args: Clone,
{
    /// Runs `start` (the recovery path) with `args`. Needs a tokio runtime; use paused time.
    pub async fn start(args: A::Args) -> Result<Self, Failure<A::Error>> {
        let system = System::new();
        let myself: ActorRef<A> = system
            .root_node()
            .adopt_unlaunched(ActorSpec::named("driven", args.clone()))
            .expect("a fresh system has no child named driven");
        let mut ctx = Context::new(myself, 1);
        let actor = Self::run_start(&args, &mut ctx).await?;
        let ttl = system.config().policy.default_ttl();
        Ok(Driver {
            system,
            args,
            ctx,
            actor,
            ttl,
        })
    }

    async fn run_start(args: &A::Args, ctx: &mut Context<A>) -> Result<A, Failure<A::Error>> {
        match crash::catch(A::start(args, ctx)).await {
            Ok(Ok(actor)) => Ok(actor),
            Ok(Err(e)) => Err(Failure::Error(e)),
            Err(panic) => Err(Failure::Panic(panic)),
        }
    }

    /// Handles one message, with a fresh envelope header (default TTL, attempt 1).
    pub async fn handle(&mut self, msg: A::Msg) -> Result<A::Reply, Failure<A::Error>> {
        let now = self.system.clock().now();
        let shared = self.ctx.myself().slot().shared();
        let id = shared.next_envelope_id();
        let header = Header {
            id,
            deadline: now + self.ttl,
            idempotent: false,
            attempt: 1,
            trace: TraceContext::root(shared.trace_id_of(id)),
            key: None,
        };
        self.ctx.set_header(Some(header));
        let out = crash::catch(self.actor.handle(msg, &mut self.ctx)).await;
        self.ctx.set_header(None);
        match out {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(Failure::Error(e)),
            Err(panic) => Err(Failure::Panic(panic)),
        }
    }

    /// Drops the instance and runs `start` again, as a restart after a crash does.
    pub async fn restart(&mut self) -> Result<(), Failure<A::Error>> {
        let myself = self.ctx.myself().clone();
        self.ctx = Context::new(myself, self.ctx.incarnation() + 1);
        self.actor = Self::run_start(&self.args, &mut self.ctx).await?;
        Ok(())
    }

    /// The instance's state, for assertions.
    pub fn actor(&self) -> &A {
        &self.actor
    }

    /// Whether the last message asked the actor to stop.
    pub fn stopped(&self) -> bool {
        self.ctx.stop_requested()
    }

    /// The system the driven actor belongs to (its clock, leases, other actors).
    pub fn system(&self) -> &System {
        &self.system
    }
}

#[cfg(crashonly_loom)]
pub mod model;
