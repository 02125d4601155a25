//! Self-describing envelopes: every message carries its id, deadline, idempotency, attempt and trace.
//!
//! While a handler runs, its envelope is the *current* one of the thread polling it (see
//! `crash::catch_handling`): every `tell` or `ask` made then, through `ctx` or not, inherits the
//! remaining time and the trace, so a sub-request can never outlive its parent's deadline.

use std::fmt;
use std::time::Duration;

use crate::clock::Instant;

/// A message id, unique within one [`System`](crate::System).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvelopeId(pub(crate) std::num::NonZeroU64);

impl EnvelopeId {
    /// The numeric value of the id.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "env-{}", self.0)
    }
}

/// Trace context: the request tree a message belongs to.
///
/// A request entering the system starts a trace (its `trace_id` is its own envelope id); every
/// sub-request made while handling it keeps the `trace_id` and names its parent envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TraceContext {
    /// Id of the request tree (the id of the envelope that started it).
    pub trace_id: u64,
    /// The envelope whose handling sent this one, if any.
    pub parent: Option<EnvelopeId>,
}

/// Everything an envelope says about itself, apart from the payload and the reply channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Unique id.
    pub id: EnvelopeId,
    /// After this instant the message is not handled; its asker gets
    /// [`DeliveryError::Expired`](crate::DeliveryError::Expired).
    pub deadline: Instant,
    /// Whether handling it twice is harmless; decides at-least-once (true) vs at-most-once (false).
    pub idempotent: bool,
    /// 1 for the first delivery; incremented each time the message is handed to a new instance.
    pub attempt: u32,
    /// Trace context.
    pub trace: TraceContext,
    /// Idempotency key: an actor that keeps a window of keys answers a repeated key from the window
    /// instead of handling the message again.
    pub key: Option<std::num::NonZeroU64>,
}

impl Header {
    /// Time left until the deadline at `now` (zero when expired).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// Whether the deadline has passed at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

impl Header {
    /// What a message sent while this envelope is handled inherits: its deadline, and a trace that
    /// names this envelope as the parent.
    pub(crate) fn inherited(&self) -> Inherited {
        Inherited {
            deadline: self.deadline,
            trace: TraceContext {
                trace_id: self.trace.trace_id,
                parent: Some(self.id),
            },
        }
    }
}

/// A message in transit: header, payload and, for an `ask`, the reply port `P` (the runtime's is
/// `reply::ReplyTo`; generic here so that the envelope needs nothing above it).
pub(crate) struct Envelope<M, P> {
    pub(crate) header: Header,
    pub(crate) payload: M,
    pub(crate) reply: Option<P>,
}

/// How to copy a message for a redelivery (known only for message types sent idempotent, which
/// must be `Clone`).
pub(crate) type CopyFn<M> = fn(&M) -> M;

/// The deadline and trace a sub-request inherits from the envelope being handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Inherited {
    pub(crate) deadline: Instant,
    pub(crate) trace: TraceContext,
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_envelope_of_a_small_message_fits_in_80_bytes() {
        // Message passing moves envelopes between cores: their size is cache traffic.
        assert_eq!(std::mem::size_of::<super::Header>(), 56);
        assert!(std::mem::size_of::<super::Envelope<u64, crate::reply::ReplyTo<u64>>>() <= 80);
    }
}
