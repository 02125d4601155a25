//! # crashonly-cluster
//!
//! crashonly across processes and machines, on existing engines and no home-made consensus:
//! **PostgreSQL is the authority** (membership, placement, fencing; it is the store of record
//! already) and core NATS request-reply is the transport.
//!
//! Built so far:
//! - [`Membership`]: a node joins with a fresh incarnation from a sequence and holds a lease row
//!   renewed on its own connection, judged by the database's clock. A node that cannot renew
//!   before its own local deadline fences itself ([`Membership::fenced`] resolves) before anyone
//!   else may take what it held: stop = crash holds for a node too.
//! - [`Placement`]: an entity lives on at most one node; the claim is one statement that succeeds
//!   only if nobody live holds it, and returns a fencing token; [`choose`] picks the node that
//!   should claim a key by rendezvous hashing over the live members, with no coordinator.
//! - [`wire`]: the versioned frame format of envelopes between nodes (remaining TTL, idempotency,
//!   key, attempt, W3C `traceparent`, message type id and version); a frame that cannot be taken
//!   is [`wire::Rejected`], never a panic.
//! - [`Fence`]: the writes of a clustered entity carry a compare-and-set on a fence record the
//!   activation wrote with its placement token, so an old owner's late writes are refused by the
//!   store of record itself.
//! - [`Node`]: a node serves entity families to the cluster over core NATS request-reply (one
//!   subject per incarnation); [`RemoteRef`] asks an entity wherever it lives, following
//!   redirects, and a retrying idempotent ask survives the death of the entity's node. The typed
//!   methods of `#[messages(remote = "..")]` work on it as on a local ref ([`RemoteCallExt`] for
//!   its `key` and `within`). A fenced
//!   node comes back without a new process ([`Node::rejoin`]): a new incarnation, subject and
//!   claims, on the same handle.
//! - [`NodesView`] (feature `observer`): the nodes and recent failovers on the observer page.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod error;
mod fence;
mod membership;
mod node;
#[cfg(feature = "observer")]
mod observer;
mod pg;
mod placement;
mod rebalance;
mod remote_ref;
mod serve;
mod slots;
pub mod wire;

pub use crashonly::Remote;
pub use error::ClusterError;
pub use fence::{is_fenced_out, Fence};
pub use membership::{Fenced, Member, Membership, MembershipOptions};
pub use node::{Node, NodeOptions};
#[cfg(feature = "observer")]
pub use observer::NodesView;
pub use placement::{choose, Claim, Placement};
pub use rebalance::MOVES_PER_PASS;
pub use remote_ref::{RemoteAsk, RemoteCallExt, RemoteRef, RemoteTell};
