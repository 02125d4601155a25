//! The wire format of envelopes between nodes: versioned, compact (postcard), self-describing.
//!
//! A request carries what the in-process envelope carries, with the **remaining** TTL instead of
//! an absolute deadline (clocks differ between machines), the W3C `traceparent`, and the message's
//! stable type id and version. Every frame starts with the format version; anything that cannot be
//! decoded (malformed, truncated, trailing bytes, oversized, another format, an unknown message
//! type or version) is [`Rejected`] with the reason, never a panic, so that a rolling upgrade meets
//! a clear answer.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The format of every frame this build writes (its first byte).
pub const FORMAT: u8 = 2;

/// Largest frame accepted (NATS' default max payload is 1 MiB).
pub const MAX_FRAME: usize = 1024 * 1024;

/// A request to an entity on another node.
///
/// Its text and payload are borrowed from the frame it was decoded from (and, when sent, from
/// the ref and the message it was built from), so that neither side copies them per request;
/// `Cow` lets a caller build one from owned values as well.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request<'a> {
    /// The envelope id (unique per sender).
    pub id: u64,
    /// Time left before the deadline when it was sent, in milliseconds.
    pub ttl_ms: u32,
    /// Whether it may be redelivered after a crash (at-least-once).
    pub idempotent: bool,
    /// A tell: answered (an empty `Ok`) once the entity's node has queued it, not handled it.
    pub tell: bool,
    /// The idempotency key, if any.
    pub key: Option<u64>,
    /// Which attempt this is (1 for the first).
    pub attempt: u32,
    /// W3C trace context (`traceparent`), if the request is part of a trace.
    pub traceparent: Option<Cow<'a, str>>,
    /// The entity family.
    #[serde(borrow)]
    pub family: Cow<'a, str>,
    /// The entity's key, as text.
    #[serde(borrow)]
    pub entity: Cow<'a, str>,
    /// The message type's stable id.
    #[serde(borrow)]
    pub msg_type: Cow<'a, str>,
    /// The message type's version.
    pub msg_version: u16,
    /// The message, encoded by its type (as bytes: the same frame as a sequence of `u8`, read and
    /// written in one piece).
    #[serde(borrow, with = "serde_bytes")]
    pub payload: Cow<'a, [u8]>,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The reply, encoded by the message type.
    Ok(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The entity is recovering (or its node restarting): try again after this many ms.
    RetryAfter(u32),
    /// Another node holds the entity: its incarnation.
    Redirect(u64),
    /// The deadline passed before the message was handled.
    Expired,
    /// The entity crashed while handling it; the report.
    Crashed(String),
    /// The request could not be taken.
    Rejected(Rejected),
}

/// Why a frame was not taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejected {
    /// Not decodable (truncated, trailing bytes, bad fields).
    Malformed(String),
    /// Written by another format version.
    Format(u8),
    /// Over [`MAX_FRAME`] bytes.
    Oversized(usize),
    /// No such message type here.
    UnknownType(String),
    /// The message type is known in another version only.
    UnknownVersion {
        /// The type.
        msg_type: String,
        /// The version asked for.
        version: u16,
    },
    /// No such entity family on this node.
    UnknownFamily(String),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Malformed(why) => write!(f, "malformed frame: {why}"),
            Rejected::Format(v) => write!(f, "frame format {v}, this node reads {FORMAT}"),
            Rejected::Oversized(n) => write!(f, "frame of {n} bytes, over {MAX_FRAME}"),
            Rejected::UnknownType(t) => write!(f, "unknown message type {t:?}"),
            Rejected::UnknownVersion { msg_type, version } => {
                write!(f, "message type {msg_type:?} in version {version} is not known here")
            }
            Rejected::UnknownFamily(name) => write!(f, "no entity family {name:?} on this node"),
        }
    }
}

impl std::error::Error for Rejected {}

/// A frame: the format byte, then the value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    exact(&[FORMAT], value)
}

/// The frame of `Reply::Ok` carrying `value`'s own frame: the same bytes as
/// `encode(&Reply::Ok(encode(value)))`, written once, without the value's own buffer.
pub fn encode_ok<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let size = encoded_size(value);
    // The format, `Ok`'s variant index (0), the inner frame's length (postcard's varint, as it
    // writes every length), then the inner frame: its format byte and the value.
    let mut head = [0u8; 2 + 10 + 1];
    head[0] = FORMAT;
    let len = postcard::to_slice(&(size + 1), &mut head[2..12])
        .expect("a usize's varint fits in 10 bytes")
        .len();
    head[2 + len] = FORMAT;
    write_exact(&head[..3 + len], value, size)
}

/// A message's own encoding (a request's payload).
pub fn payload<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    exact(&[], value)
}

/// `prefix` then `value`, in a buffer of exactly their size: no growth while writing, and a
/// `Bytes` made of it takes the buffer as it is (a buffer with room to spare costs `Bytes` an
/// allocation of its own).
fn exact<T: Serialize + ?Sized>(prefix: &[u8], value: &T) -> Vec<u8> {
    write_exact(prefix, value, encoded_size(value))
}

/// How many bytes postcard writes for `value`.
fn encoded_size<T: Serialize + ?Sized>(value: &T) -> usize {
    // Sizing our own types (and any `Serialize` message) cannot fail.
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .expect("postcard sizes every value it encodes")
}

/// `prefix` then `value`, whose encoding is `size` bytes, in a buffer of exactly that length.
fn write_exact<T: Serialize + ?Sized>(prefix: &[u8], value: &T, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(prefix.len() + size);
    out.extend_from_slice(prefix);
    postcard::to_extend(value, out).expect("postcard encodes every value it sizes")
}

/// Reads a frame written by [`encode`]; every failure is a [`Rejected`].
pub fn decode<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, Rejected> {
    if frame.len() > MAX_FRAME {
        return Err(Rejected::Oversized(frame.len()));
    }
    let Some((&format, body)) = frame.split_first() else {
        return Err(Rejected::Malformed("empty frame".into()));
    };
    if format != FORMAT {
        return Err(Rejected::Format(format));
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| Rejected::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Rejected::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

/// The W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`) a request with this trace context
/// carries: `None` for a context without a parent span (the receiver starts its own trace).
pub fn traceparent(trace: &crashonly::TraceContext) -> Option<String> {
    trace.traceparent()
}

/// The trace context of a `traceparent`, if it is well formed (see
/// [`TraceContext::parse_traceparent`](crashonly::TraceContext::parse_traceparent)): the request
/// continues the sender's trace, with the sender's span as the parent.
pub fn parse_traceparent(value: &str) -> Option<crashonly::TraceContext> {
    crashonly::TraceContext::parse_traceparent(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request<'static> {
        Request {
            id: 7,
            ttl_ms: 1500,
            idempotent: true,
            tell: false,
            key: Some(42),
            attempt: 2,
            traceparent: Some("00-00000000000000000000000000000abc-0000000000000def-01".into()),
            family: "carts".into(),
            entity: "cart-9".into(),
            msg_type: "cart.add".into(),
            msg_version: 1,
            payload: vec![1, 2, 3].into(),
        }
    }

    #[test]
    fn a_request_and_every_reply_round_trip() {
        let r = request();
        assert_eq!(decode::<Request<'_>>(&encode(&r)), Ok(r));
        for reply in [
            Reply::Ok(vec![9]),
            Reply::RetryAfter(250),
            Reply::Redirect(3),
            Reply::Expired,
            Reply::Crashed("boom".into()),
            Reply::Rejected(Rejected::UnknownType("x".into())),
        ] {
            assert_eq!(decode::<Reply>(&encode(&reply)), Ok(reply));
        }
    }

    #[test]
    fn frames_are_written_in_buffers_of_their_exact_size() {
        let r = request();
        let frame = encode(&r);
        assert_eq!(frame.len(), frame.capacity());
        assert_eq!(frame[0], FORMAT);
        // `encode_ok` writes what `Reply::Ok` of the value's frame writes, for short and long
        // values (one-, two- and three-byte lengths).
        for value in [vec![], vec![7u8; 3], vec![1u8; 120], vec![1u8; 200], vec![2u8; 20_000]] {
            let ok = encode_ok(&value);
            assert_eq!(ok, encode(&Reply::Ok(encode(&value))));
            assert_eq!(ok.len(), ok.capacity());
            let Ok(Reply::Ok(inner)) = decode::<Reply>(&ok) else {
                panic!("an Ok reply")
            };
            assert_eq!(decode::<Vec<u8>>(&inner), Ok(value));
        }
        let p = payload(&("cart", 3u32));
        assert_eq!(p, postcard::to_allocvec(&("cart", 3u32)).unwrap());
        assert_eq!(p.len(), p.capacity());
    }

    #[test]
    fn a_decoded_request_borrows_its_text_and_payload_from_the_frame() {
        let frame = encode(&request());
        let r = decode::<Request<'_>>(&frame).unwrap();
        for borrowed in [
            matches!(r.family, Cow::Borrowed(_)),
            matches!(r.entity, Cow::Borrowed(_)),
        ] {
            assert!(borrowed);
        }
        assert!(matches!(r.msg_type, Cow::Borrowed(_)) && matches!(r.payload, Cow::Borrowed(_)));
        assert_eq!(r, request());
    }

    #[test]
    fn damaged_frames_are_rejected_never_a_panic() {
        let frame = encode(&request());
        assert!(matches!(decode::<Request<'_>>(&[]), Err(Rejected::Malformed(_))));
        assert_eq!(decode::<Request<'_>>(&[1, 0, 0]), Err(Rejected::Format(1)));
        for cut in 1..frame.len() {
            assert!(
                decode::<Request<'_>>(&frame[..cut]).is_err(),
                "truncated at {cut} decoded"
            );
        }
        let mut longer = frame.clone();
        longer.push(0);
        assert!(matches!(decode::<Request<'_>>(&longer), Err(Rejected::Malformed(m)) if m.contains("trailing")));
        let big = vec![FORMAT; MAX_FRAME + 1];
        assert_eq!(decode::<Request<'_>>(&big), Err(Rejected::Oversized(MAX_FRAME + 1)));
        // Every single-byte change decodes to something or is rejected.
        for i in 0..frame.len() {
            for bit in 0..8 {
                let mut f = frame.clone();
                f[i] ^= 1 << bit;
                let _ = decode::<Request<'_>>(&f);
            }
        }
        // Random bytes: pseudo-random, fixed seed.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode::<Request<'_>>(&bytes);
            let _ = decode::<Reply>(&bytes);
        }
    }

    #[test]
    fn traceparent_is_w3c() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let trace = parse_traceparent(tp).unwrap();
        assert_eq!(trace.trace_id.get(), 0x4bf92f3577b34da6a3ce929d0e0e4736, "all 128 bits");
        assert_eq!(trace.parent.map(|p| p.get()), Some(0x00f067aa0ba902b7));
        assert_eq!(traceparent(&trace).as_deref(), Some(tp));
        for bad in [
            "",
            "ff-00000000000000000000000000001234-0000000000005678-01",
            "00-00000000000000000000000000000000-0000000000005678-01",
            "00-0000000000000000000000000000123-0000000000005678-01",
            "00-00000000000000000000000000001234-0000000000005678-01-x",
            "00-zz000000000000000000000000001234-0000000000005678-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_fuzz_corpus_seeds_are_valid_frames() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/cluster_envelope");
        let read = |name: &str| std::fs::read(format!("{dir}/{name}")).unwrap();
        assert_eq!(decode::<Request<'_>>(&read("request_full")), Ok(request()));
        assert!(decode::<Request<'_>>(&read("request_min")).is_ok());
        assert_eq!(decode::<Reply>(&read("reply_ok")), Ok(Reply::Ok(vec![9])));
        assert_eq!(decode::<Reply>(&read("reply_retry")), Ok(Reply::RetryAfter(250)));
        assert_eq!(decode::<Reply>(&read("reply_redirect")), Ok(Reply::Redirect(3)));
        assert_eq!(
            decode::<Reply>(&read("reply_rejected")),
            Ok(Reply::Rejected(Rejected::UnknownType("x".into())))
        );
    }
}
