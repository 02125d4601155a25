//! Self-describing envelopes: every message carries its id, deadline, idempotency, attempt and trace.
//!
//! While a handler runs, its envelope is the *current* one of the thread polling it (see
//! `crash::catch_handling`): every `tell` or `ask` made then, through `ctx` or not, inherits the
//! remaining time and the trace, so a sub-request can never outlive its parent's deadline.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::clock::Instant;
use crate::sync::Arc;

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

/// A W3C trace id: 128 bits, never zero (the `trace-id` field of a `traceparent`).
///
/// Stored as two halves so that a header stays 8-byte aligned (a `u128` would align it to 16).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId {
    hi: u64,
    lo: u64,
}

impl TraceId {
    /// The smallest trace id (1).
    pub(crate) const MIN: TraceId = TraceId { hi: 0, lo: 1 };

    /// The trace id of a 128-bit value, `None` for zero (W3C: an all-zero trace id is invalid).
    pub fn new(value: u128) -> Option<TraceId> {
        (value != 0).then_some(TraceId {
            hi: (value >> 64) as u64,
            lo: value as u64,
        })
    }

    /// The 128-bit value.
    pub fn get(self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }

    /// The 16 bytes, big-endian (as OpenTelemetry and the OTLP wire format hold them).
    pub fn to_bytes(self) -> [u8; 16] {
        self.get().to_be_bytes()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.hi, self.lo)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// A W3C span id: 64 bits, never zero (the `parent-id` field of a `traceparent`).
///
/// Each envelope is one span; its span id is its [`EnvelopeId`] ([`EnvelopeId::span_id`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub(crate) std::num::NonZeroU64);

impl SpanId {
    /// The span id of a 64-bit value, `None` for zero (W3C: an all-zero parent id is invalid).
    pub fn new(value: u64) -> Option<SpanId> {
        std::num::NonZeroU64::new(value).map(SpanId)
    }

    /// The 64-bit value.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

impl EnvelopeId {
    /// The W3C span id of this envelope: handling an envelope is one span.
    ///
    /// Envelope ids are drawn from a per-system scrambled sequence, so they are unique within a
    /// system and unlikely to collide with another process's: fit for a span id.
    pub fn span_id(self) -> SpanId {
        SpanId(self.0)
    }
}

/// Trace context, as in a W3C `traceparent`: the trace a message belongs to, the span that sent
/// it and the trace flags.
///
/// A request entering the system starts a trace (a fresh 128-bit id, no parent) unless it is
/// given one ([`Ask::trace`](crate::Ask::trace), for instance from an HTTP `traceparent` header
/// read with [`TraceContext::parse_traceparent`]); every sub-request made while handling it keeps
/// the trace id and names the handled envelope's span as its parent.
///
/// ```
/// use crashonly::TraceContext;
///
/// let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let trace = TraceContext::parse_traceparent(tp).unwrap();
/// assert_eq!(trace.trace_id.get(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
/// assert_eq!(trace.parent.map(|p| p.get()), Some(0x00f067aa0ba902b7));
/// assert!(trace.sampled());
/// assert_eq!(trace.traceparent().as_deref(), Some(tp));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// Id of the trace (the request tree).
    pub trace_id: TraceId,
    /// The span (envelope, or a caller outside the system) that sent this message, if any.
    pub parent: Option<SpanId>,
    /// W3C trace flags (bit 0: sampled); propagated unchanged to sub-requests.
    pub flags: u8,
}

impl TraceContext {
    /// The `sampled` trace flag.
    pub const SAMPLED: u8 = 0x01;

    /// A new trace with no parent, sampled.
    pub fn root(trace_id: TraceId) -> TraceContext {
        TraceContext {
            trace_id,
            parent: None,
            flags: Self::SAMPLED,
        }
    }

    /// Whether the caller asked for this trace to be recorded.
    pub fn sampled(&self) -> bool {
        self.flags & Self::SAMPLED != 0
    }

    /// The W3C `traceparent` value (`00-<trace id>-<parent id>-<flags>`) a message with this
    /// context carries to another process; `None` when it has no parent span (it starts a trace).
    pub fn traceparent(&self) -> Option<String> {
        let parent = self.parent?;
        Some(format!("00-{}-{}-{:02x}", self.trace_id, parent, self.flags))
    }

    /// Reads a W3C `traceparent` header value: the context of a request that continues the
    /// caller's trace, with the caller's span as the parent.
    ///
    /// Follows the W3C rules: lowercase hex only, version `ff` and all-zero ids are invalid, a
    /// version above `00` may carry more fields after the four it knows.
    pub fn parse_traceparent(value: &str) -> Result<TraceContext, TraceparentError> {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let b = value.as_bytes();
        let version = hex_field(b, 0, 2)?;
        if version == 0xff {
            return Err(TraceparentError::Version);
        }
        // Version 00 is exactly 55 characters; later versions may append `-...`.
        if b.len() < 55 || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return Err(TraceparentError::Malformed);
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(TraceparentError::Malformed);
        }
        let trace_id = TraceId::new(hex_field(b, 3, 32)?).ok_or(TraceparentError::ZeroId)?;
        let parent = SpanId::new(hex_field(b, 36, 16)? as u64).ok_or(TraceparentError::ZeroId)?;
        let flags = hex_field(b, 53, 2)? as u8;
        Ok(TraceContext {
            trace_id,
            parent: Some(parent),
            flags,
        })
    }
}

/// `len` lowercase hex digits at `at`.
fn hex_field(b: &[u8], at: usize, len: usize) -> Result<u128, TraceparentError> {
    let field = b.get(at..at + len).ok_or(TraceparentError::Malformed)?;
    field.iter().try_fold(0u128, |acc, &c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return Err(TraceparentError::Malformed),
        };
        Ok(acc << 4 | u128::from(digit))
    })
}

/// Why a `traceparent` value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceparentError {
    /// Not `version-traceid-parentid-flags` in lowercase hex of the right lengths.
    Malformed,
    /// Version `ff`, which W3C forbids.
    Version,
    /// An all-zero trace id or parent id.
    ZeroId,
}

impl fmt::Display for TraceparentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TraceparentError::Malformed => "malformed traceparent",
            TraceparentError::Version => "traceparent version ff is invalid",
            TraceparentError::ZeroId => "traceparent with an all-zero id",
        })
    }
}

impl std::error::Error for TraceparentError {}

/// An idempotency key ([`Ask::key`](crate::Ask::key)): the exact bytes the key value's `Hash`
/// implementation writes, kept whole rather than digested, so two keys are one key only when
/// those bytes are equal; a 64-bit hash collision cannot make two different requests one.
///
/// For the standard types the bytes say the value unambiguously (a `str` writes its bytes and a
/// terminator, a slice its length first, an integer its bytes); a key type whose `Hash` leaves a
/// field out makes values differing only there one key.
///
/// ```
/// use crashonly::IdempotencyKey;
///
/// let a = IdempotencyKey::of("deposit-1");
/// assert_eq!(a, IdempotencyKey::of(&String::from("deposit-1")));
/// assert_ne!(a, IdempotencyKey::of("deposit-2"));
/// assert_eq!(a.as_bytes(), b"deposit-1\xff"); // what `str`'s `Hash` writes
/// ```
// An `Arc` of a `Vec` (one thin pointer) keeps the header at 72 bytes and its clones cheap.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Arc<Vec<u8>>);

impl IdempotencyKey {
    /// The key of `value`: the bytes its `Hash` implementation writes.
    pub fn of<K: Hash + ?Sized>(value: &K) -> Self {
        let mut bytes = Recorder(Vec::new());
        value.hash(&mut bytes);
        IdempotencyKey(Arc::new(bytes.0))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey(\"{}\")", self.0.escape_ascii())
    }
}

/// A `Hasher` that keeps every byte written to it: `Hash` implementations only write, so what it
/// holds afterwards is the value as its `Hash` sees it.
struct Recorder(Vec<u8>);

impl Hasher for Recorder {
    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    /// Never asked by a `Hash` implementation; FNV-1a of the bytes, to honour the trait.
    fn finish(&self) -> u64 {
        self.0.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    }
}

/// Everything an envelope says about itself, apart from the payload and the reply channel.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    pub key: Option<IdempotencyKey>,
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

    /// The trace context of a message sent on behalf of this envelope: this envelope's trace,
    /// with this envelope's span as the parent.
    pub fn child_trace(&self) -> TraceContext {
        TraceContext {
            parent: Some(self.id.span_id()),
            ..self.trace
        }
    }

    /// The W3C `traceparent` of a request sent on behalf of this envelope to another process
    /// (the one of [`child_trace`](Header::child_trace)).
    pub fn traceparent(&self) -> String {
        let trace = self.trace;
        format!("00-{}-{}-{:02x}", trace.trace_id, self.id.span_id(), trace.flags)
    }
}

impl Header {
    /// What a message sent while this envelope is handled inherits: its deadline, and a trace that
    /// names this envelope as the parent.
    pub(crate) fn inherited(&self) -> Inherited {
        Inherited {
            deadline: Some(self.deadline),
            trace: self.child_trace(),
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
    /// `None` in a [`TraceContext::scope`] outside any handler.
    pub(crate) deadline: Option<Instant>,
    pub(crate) trace: TraceContext,
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_envelope_of_a_small_message_fits_in_96_bytes() {
        // Message passing moves envelopes between cores: their size is cache traffic. The W3C
        // trace context (128-bit trace id, parent span, flags) took the header from 56 to 72 bytes (a
        // u64 message with its reply port: 80 to 96).
        assert_eq!(std::mem::size_of::<super::TraceContext>(), 32);
        assert_eq!(std::mem::size_of::<super::Header>(), 72);
        assert!(std::mem::size_of::<super::Envelope<u64, crate::reply::ReplyTo<u64>>>() <= 96);
    }

    #[test]
    fn a_key_is_the_bytes_its_hash_writes_not_a_digest() {
        use super::IdempotencyKey;
        // Length-prefixed and terminated: keys that would concatenate to the same bytes differ.
        assert_ne!(IdempotencyKey::of(&("ab", "c")), IdempotencyKey::of(&("a", "bc")));
        assert_eq!(IdempotencyKey::of(&7u64).as_bytes(), &7u64.to_ne_bytes());
        let long = "k".repeat(1000);
        assert_eq!(IdempotencyKey::of(long.as_str()).as_bytes().len(), 1001);
        assert_eq!(
            format!("{:?}", IdempotencyKey::of("a\"b")),
            r#"IdempotencyKey("a\"b\xff")"#
        );
    }
}
