//! Serving the entity families of a node to other nodes: a request decoded, delivered to the
//! local entity, its reply encoded straight into the frame that goes back.
//!
//! The hot path (an ask for an entity this node holds) is synchronous on the node's server task:
//! the message is delivered with its reply handed to a function that the entity's task calls
//! (`crashonly::__private::ask_with`), which encodes the reply and publishes it, so the reply
//! does not travel back through the server task (one hand-over between threads fewer per
//! request, and nothing allocated for a future that waits). Everything else (a tell, a claim
//! to make, a mailbox that is full) is a future the server task polls.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Weak;
use std::time::Duration;

use async_nats::Subject;
use crashonly::__private::{ask_with, OnReply};
use crashonly::{DeliveryError, Entities, Entity, Remote};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::rebalance::Idle;
use crate::wire::{self, Rejected, Reply, Request};

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What serving a request gives: a reply, or the frame of an `Ok` reply written at once (for a
/// request from another node: the reply's value is encoded straight into the frame it goes out
/// in).
pub(crate) enum Answer {
    Reply(Reply),
    OkFrame(Vec<u8>),
}

impl Answer {
    /// The frame to send back.
    pub(crate) fn into_frame(self) -> Vec<u8> {
        match self {
            Answer::Reply(reply) => wire::encode(&reply),
            Answer::OkFrame(frame) => frame,
        }
    }

    /// The reply (for a request served on the node that sent it).
    pub(crate) fn into_reply(self) -> Reply {
        match self {
            Answer::Reply(reply) => reply,
            Answer::OkFrame(frame) => wire::decode(&frame).unwrap_or_else(Reply::Rejected),
        }
    }
}

/// A served family, type-erased: decodes a request, asks the local entity, encodes the reply.
pub(crate) trait Serve: Send + Sync {
    fn msg_type(&self) -> &'static str;
    /// Serves `req`; `framed`: an `Ok` reply as the whole frame ([`Answer::OkFrame`]).
    fn serve(&self, req: &Request<'_>, framed: bool) -> BoxFuture<Answer>;
    /// Delivers the ask `req` from another node, its reply published to `reply` by the entity's
    /// task: `None` once delivered (or answered: a delivery that failed), a future while it
    /// waits for room in the entity's mailbox; `Err` if the request cannot be taken.
    fn ask_remote(&self, req: &Request<'_>, reply: Replier) -> Result<Option<BoxFuture<()>>, Rejected>;
    /// Passivates the entity `key` for a hand-off, if it is live and idle.
    fn passivate(&self, key: &str) -> Idle;
}

pub(crate) struct Served<A: Entity> {
    pub(crate) entities: Entities<A>,
}

impl<A> Serve for Served<A>
where
    A: Entity,
    A::Msg: Remote + Serialize + DeserializeOwned,
    A::Reply: Serialize + DeserializeOwned,
    A::Key: FromStr,
{
    fn msg_type(&self) -> &'static str {
        <A::Msg as Remote>::TYPE_ID
    }

    fn passivate(&self, key: &str) -> Idle {
        // A key that does not parse was never activated here.
        let Ok(key) = key.parse::<A::Key>() else {
            return Idle::NotLive;
        };
        let entity = self.entities.get(key);
        if entity.activation().is_none() {
            Idle::NotLive
        } else if entity.passivate() {
            Idle::Passivated
        } else {
            Idle::Busy
        }
    }

    fn serve(&self, req: &Request<'_>, framed: bool) -> BoxFuture<Answer> {
        // Everything the future needs is taken out of the request now.
        let prepared = prepare::<A>(req);
        let entities = self.entities.clone();
        let opts = Delivery::of(req);
        let is_tell = req.tell;
        Box::pin(async move {
            let (key, msg) = match prepared {
                Ok(p) => p,
                Err(rejected) => return Answer::Reply(Reply::Rejected(rejected)),
            };
            let entity = entities.get(key);
            if is_tell {
                return Answer::Reply(tell(&entity, msg, opts).await);
            }
            match opts.ask(&entity, msg).await {
                Ok(reply) if framed => Answer::OkFrame(wire::encode_ok(&reply)),
                Ok(reply) => Answer::Reply(Reply::Ok(wire::encode(&reply))),
                Err(e) => Answer::Reply(reply_of(e)),
            }
        })
    }

    fn ask_remote(&self, req: &Request<'_>, reply: Replier) -> Result<Option<BoxFuture<()>>, Rejected> {
        let (key, msg) = prepare::<A>(req)?;
        let entity = self.entities.get(key);
        let ask = Delivery::of(req).ask(&entity, msg);
        // Called by the entity's task with the outcome (or here, if the delivery failed).
        let on_reply = OnReply::new(move |outcome: Result<A::Reply, DeliveryError>| {
            reply.send(match outcome {
                Ok(value) => wire::encode_ok(&value),
                Err(e) => wire::encode(&reply_of(e)),
            })
        });
        Ok(ask_with(ask, on_reply))
    }
}

/// Where the reply to a remote ask goes: the requester's reply subject, through this node's
/// NATS connection (held weakly: a node dropped meanwhile sends nothing).
pub(crate) struct Replier {
    pub(crate) nats: Weak<async_nats::Client>,
    pub(crate) to: Subject,
}

impl Replier {
    /// Publishes `frame` without waiting: at once when the connection's queue has room (the
    /// usual case), else from a task of its own. It may run where no runtime is (an envelope
    /// dropped on the watchdog's thread answers `Dead`): then a reply that cannot go at once is
    /// dropped, and the requester's own timeout answers it.
    pub(crate) fn send(self, frame: Vec<u8>) {
        let Some(nats) = self.nats.upgrade() else { return };
        let payload = bytes::Bytes::from(frame);
        // Outside tokio's cooperative budget: a queue with room takes it on the first poll.
        let sent = tokio::task::unconstrained(nats.publish(self.to.clone(), payload.clone())).now_or_never();
        if sent.is_none() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = nats.publish(self.to, payload).await;
                });
            }
        }
    }
}

/// The reply to a request whose local delivery or handling failed.
fn reply_of(e: DeliveryError) -> Reply {
    match e {
        DeliveryError::RetryAfter(d) => Reply::RetryAfter(d.as_millis().min(u128::from(u32::MAX)) as u32),
        DeliveryError::Expired => Reply::Expired,
        DeliveryError::Crashed(report) => Reply::Crashed(report.to_string()),
        DeliveryError::KeyTooLong { len, max } => {
            Reply::Rejected(Rejected::Malformed(format!("key of {len} bytes, over {max}")))
        }
        other => Reply::RetryAfter(retry_ms(&other)),
    }
}

/// How a request is delivered locally: what its envelope carries besides the message.
struct Delivery {
    ttl: Duration,
    idempotent: bool,
    key: Option<u64>,
    trace: Option<crashonly::TraceContext>,
}

impl Delivery {
    /// What `req`'s local envelope carries (taken out of the request, which borrows its frame).
    fn of(req: &Request<'_>) -> Self {
        Delivery {
            ttl: Duration::from_millis(u64::from(req.ttl_ms)),
            idempotent: req.idempotent,
            key: req.key,
            // One trace across nodes: the local envelope continues the caller's trace.
            trace: req.traceparent.as_deref().and_then(wire::parse_traceparent),
        }
    }

    /// An ask of `msg` to `entity` carrying these.
    fn ask<A: Entity>(self, entity: &crashonly::EntityRef<A>, msg: A::Msg) -> crashonly::Ask<'_, A>
    where
        A::Msg: Remote,
    {
        let mut ask = entity.ask(msg).ttl(self.ttl).set_idempotent(self.idempotent);
        if let Some(k) = self.key {
            ask = ask.key(k);
        }
        if let Some(trace) = self.trace {
            ask = ask.trace(trace);
        }
        ask
    }
}

/// A tell: answered once the entity's mailbox has it (an empty `Ok`).
async fn tell<A: Entity>(entity: &crashonly::EntityRef<A>, msg: A::Msg, opts: Delivery) -> Reply
where
    A::Msg: Remote,
{
    let mut tell = entity.tell(msg).ttl(opts.ttl).set_idempotent(opts.idempotent);
    if let Some(k) = opts.key {
        tell = tell.key(k);
    }
    if let Some(trace) = opts.trace {
        tell = tell.trace(trace);
    }
    match tell.await {
        Ok(()) => Reply::Ok(Vec::new()),
        Err(e) => reply_of(e.error().clone()),
    }
}

fn retry_ms(e: &DeliveryError) -> u32 {
    match e {
        DeliveryError::MailboxFull => 10,
        _ => 100,
    }
}

/// The key and message of a request for entities `A`, or why it cannot be taken.
fn prepare<A>(req: &Request<'_>) -> Result<(A::Key, A::Msg), Rejected>
where
    A: Entity,
    A::Msg: Remote + Serialize + DeserializeOwned,
    A::Key: FromStr,
{
    let id = <A::Msg as Remote>::TYPE_ID;
    if req.msg_type != id {
        return Err(Rejected::UnknownType(req.msg_type.clone().into_owned()));
    }
    if req.msg_version != <A::Msg as Remote>::VERSION {
        return Err(Rejected::UnknownVersion {
            msg_type: req.msg_type.clone().into_owned(),
            version: req.msg_version,
        });
    }
    let key = A::Key::from_str(&req.entity).map_err(|_| Rejected::Malformed(format!("entity key {:?}", req.entity)))?;
    let msg = postcard::from_bytes(&req.payload).map_err(|e| Rejected::Malformed(format!("message: {e}")))?;
    Ok((key, msg))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use futures::StreamExt;

    /// An `OnReply` may be called where no runtime is (an envelope dropped on the watchdog's
    /// thread): the reply still goes out when the connection's queue has room, and nothing panics.
    #[test]
    fn a_reply_published_from_a_thread_with_no_runtime_arrives() {
        let Ok(url) = std::env::var("CRASHONLY_NATS_URL") else {
            crashonly::testing::skipped("CRASHONLY_NATS_URL is not set (a reply published off the runtime)");
            return;
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (nats, mut sub, to) = rt.block_on(async {
            let nats = Arc::new(async_nats::connect(&url).await.unwrap());
            let to = Subject::from(nats.new_inbox());
            let sub = nats.subscribe(to.clone()).await.unwrap();
            (nats, sub, to)
        });
        let reply = Replier {
            nats: Arc::downgrade(&nats),
            to,
        };
        std::thread::spawn(move || {
            assert!(
                tokio::runtime::Handle::try_current().is_err(),
                "no runtime on this thread"
            );
            reply.send(wire::encode(&Reply::RetryAfter(7)));
        })
        .join()
        .expect("sent without a panic");
        let got = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), sub.next()).await });
        let msg = got.expect("the reply arrived").expect("a message");
        assert_eq!(wire::decode::<Reply>(&msg.payload), Ok(Reply::RetryAfter(7)));
        // A node dropped meanwhile (its client gone): nothing is sent, nothing panics.
        let gone = Replier {
            nats: Weak::new(),
            to: Subject::from("nowhere"),
        };
        gone.send(Vec::new());
    }
}
