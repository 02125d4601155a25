//! Rebalancing: entities move to the node rendezvous hashing picks for them, one idle entity at
//! a time, never a busy one.
//!
//! Placement is made by the first message (the node rendezvous hashing picks among the live
//! members claims the entity) and then holds: an entity stays where it is while its holder lives.
//! So a node that joins (or comes back as a new incarnation after a crash) would take new
//! entities only. Every [`NodeOptions::rebalance_every`](crate::NodeOptions) each node looks at
//! the claims it holds and hands off those that rendezvous hashing now gives to another live
//! member: the entity is taken out of this node's claims first (requests for it arriving here
//! are answered `Redirect(new node)` from then on), passivated only if it is idle (nothing
//! queued or being handled; a busy one is put back and tried on a later pass), and its claim is
//! released in PostgreSQL, fenced by its token. Its next message activates it on the new node,
//! which claims it with a greater token and recovers it from the store, as after any
//! passivation: start = recover. A message racing the hand-off that still reaches the old
//! activation is served there under the old token, whose writes the new claim fences out.
//! At most [`MOVES_PER_PASS`] entities move per pass, so a node that joins a busy cluster takes
//! its share gradually (Orleans and Akka's shard coordinator hand off gradually too).

/// The most entities one node hands off in one rebalancing pass.
pub const MOVES_PER_PASS: usize = 256;

/// What a served family did when asked to passivate an entity for a hand-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Idle {
    /// It was live and idle, and is passivated.
    Passivated,
    /// It was not live (passivated before): nothing to stop.
    NotLive,
    /// It is handling or has queued messages: left where it is for now.
    Busy,
}
