//! The user's view of an entity anywhere in the cluster: [`RemoteRef`], with `ask` and `tell`
//! built like a local `EntityRef`'s (TTL, idempotency, key, retrying, a parent message's deadline
//! and trace), sent as one envelope and retried across a node's death until the deadline.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crashonly::__private::{map_call, CallAsk, ReplyFuture, Requests};
use crashonly::{Call, DeliveryError, Entity, Remote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::node::Node;
use crate::wire::{self, Reply, Request};

/// A ref to an entity somewhere in the cluster: `ask` and `tell` as with a local `EntityRef`.
///
/// Made by [`Node::entity`]; it resolves nothing until a request is sent, and each request
/// finds the entity's node again when the one it used has died.
pub struct RemoteRef<A: Entity> {
    node: Node,
    family: String,
    key: String,
    _a: std::marker::PhantomData<fn() -> A>,
}

impl<A: Entity> fmt::Debug for RemoteRef<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteRef")
            .field("family", &self.family)
            .field("key", &self.key)
            .finish()
    }
}

impl<A: Entity> RemoteRef<A> {
    pub(crate) fn new(node: Node, family: &str, key: String) -> Self {
        RemoteRef {
            node,
            family: family.to_owned(),
            key,
            _a: std::marker::PhantomData,
        }
    }
}

impl<A: Entity> Clone for RemoteRef<A> {
    fn clone(&self) -> Self {
        RemoteRef::new(self.node.clone(), &self.family, self.key.clone())
    }
}

impl<A> RemoteRef<A>
where
    A: Entity,
    A::Msg: Remote + Serialize + DeserializeOwned,
    A::Reply: Serialize + DeserializeOwned,
{
    /// The entity's key, as text.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// An ask of `msg`; set its TTL, idempotency and key, then `.send().await` for the reply.
    pub fn ask(&self, msg: A::Msg) -> RemoteAsk<'_, A> {
        RemoteAsk {
            target: self,
            msg,
            ttl: Duration::from_secs(5),
            idempotent: false,
            key: None,
            retrying: false,
            trace: None,
        }
    }

    /// A tell of `msg`: `.send().await` returns once the entity's node has queued it (not
    /// handled it), as a local tell returns once the mailbox has it. Its TTL bounds the handling
    /// too: the entity drops it, expired, if it is not handled in time.
    pub fn tell(&self, msg: A::Msg) -> RemoteTell<'_, A> {
        RemoteTell(self.ask(msg))
    }
}

/// A remote ask being built.
#[must_use = "a remote ask does nothing until it is sent"]
pub struct RemoteAsk<'a, A: Entity> {
    target: &'a RemoteRef<A>,
    msg: A::Msg,
    ttl: Duration,
    idempotent: bool,
    key: Option<u64>,
    retrying: bool,
    /// Set by `within`; otherwise the trace of the envelope being handled where it is sent.
    trace: Option<crashonly::TraceContext>,
}

impl<A: Entity> fmt::Debug for RemoteAsk<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteAsk")
            .field("to", &self.target)
            .finish_non_exhaustive()
    }
}

impl<A> RemoteAsk<'_, A>
where
    A: Entity,
    A::Msg: Remote + Serialize + DeserializeOwned,
    A::Reply: Serialize + DeserializeOwned,
{
    /// The time to live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// May be redelivered (at-least-once) and retried.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// An idempotency key (marks it idempotent): the entity executes it once.
    pub fn key(mut self, key: u64) -> Self {
        self.key = Some(key);
        self.idempotent = true;
        self
    }

    /// Retries an idempotent request after `RetryAfter`, a dead node or a crash, until its
    /// deadline (with growing, randomized waits); one that is not idempotent is sent once.
    pub fn retrying(mut self) -> Self {
        self.retrying = true;
        self
    }

    /// A sub-request of the message `ctx` is handling: it inherits its remaining time (never
    /// more than this ask's TTL) and its trace, carried as a W3C `traceparent`.
    pub fn within<B: crashonly::Actor>(mut self, ctx: &crashonly::Context<B>) -> Self {
        if let (Some(left), Some(h)) = (ctx.remaining(), ctx.header()) {
            self.ttl = self.ttl.min(left);
            self.trace = Some(h.child_trace());
        }
        self
    }

    /// Sends it and waits for the reply, never past the deadline.
    pub async fn send(self) -> Result<A::Reply, DeliveryError> {
        let family = self.target.family.clone();
        let bytes = self.send_frame(false).await?;
        wire::decode(&bytes).map_err(|r| DeliveryError::Crashed(Arc::new(remote_crash(&family, &r.to_string()))))
    }

    /// Sends the envelope (`tell`: answered once queued) until a reply, a final error or the
    /// deadline; the reply's bytes.
    async fn send_frame(self, tell: bool) -> Result<Vec<u8>, DeliveryError> {
        let t = self.target;
        let deadline = tokio::time::Instant::now() + self.ttl;
        // Borrowed from the ref: nothing but the message's encoding is copied per request.
        let mut req = Request {
            id: next_id(),
            ttl_ms: 0,
            idempotent: self.idempotent,
            tell,
            key: self.key,
            attempt: 1,
            traceparent: self
                .trace
                .or_else(crashonly::TraceContext::current)
                .and_then(|trace| wire::traceparent(&trace))
                .map(Cow::Owned),
            family: Cow::Borrowed(&t.family),
            entity: Cow::Borrowed(&t.key),
            msg_type: Cow::Borrowed(<A::Msg as Remote>::TYPE_ID),
            msg_version: <A::Msg as Remote>::VERSION,
            payload: Cow::Owned(wire::payload(&self.msg)),
        };
        let retry = self.retrying && self.idempotent;
        loop {
            let err = match t.node.attempt(&mut req, deadline).await {
                Reply::Ok(bytes) => return Ok(bytes),
                Reply::RetryAfter(ms) => DeliveryError::RetryAfter(Duration::from_millis(u64::from(ms))),
                Reply::Expired => return Err(DeliveryError::Expired),
                Reply::Crashed(report) => DeliveryError::Crashed(Arc::new(remote_crash(&t.family, &report))),
                Reply::Rejected(r) => {
                    return Err(DeliveryError::Crashed(Arc::new(remote_crash(
                        &t.family,
                        &r.to_string(),
                    ))))
                }
                Reply::Redirect(_) => DeliveryError::RetryAfter(Duration::from_millis(10)),
            };
            if !retry {
                return Err(err);
            }
            let wait = match &err {
                DeliveryError::RetryAfter(d) => *d,
                _ => Duration::from_millis(10 << req.attempt.min(6)),
            };
            let wait = wait + Duration::from_millis(u64::from(next_id() as u32 % 10));
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(err);
            }
            tokio::time::sleep(wait).await;
            req.attempt += 1;
        }
    }
}

// The typed methods of `#[messages(remote = "..")]` on a `RemoteRef`: they build a `RemoteAsk`.
impl<A> Requests<A> for RemoteRef<A>
where
    A: Entity,
    A::Msg: Remote + Serialize + DeserializeOwned,
    A::Reply: Serialize + DeserializeOwned,
{
    type Ask<'a> = RemoteAsk<'a, A>;

    fn request(&self, msg: A::Msg) -> RemoteAsk<'_, A> {
        self.ask(msg)
    }
}

impl<'a, A> CallAsk<'a, A> for RemoteAsk<'a, A>
where
    A: Entity,
    A::Msg: Remote + Serialize + DeserializeOwned,
    A::Reply: Serialize + DeserializeOwned,
{
    fn ttl(self, ttl: Duration) -> Self {
        RemoteAsk::ttl(self, ttl)
    }

    fn idempotent(self) -> Self
    where
        A::Msg: Clone,
    {
        RemoteAsk::idempotent(self)
    }

    fn retrying(self) -> Self {
        RemoteAsk::retrying(self)
    }

    fn send(self) -> ReplyFuture<'a, A> {
        Box::pin(RemoteAsk::send(self))
    }
}

/// The options of a [`RemoteAsk`] that a typed call to a remote entity (a method generated by
/// `#[messages(remote = "..")]`, awaited for its unpacked reply) has besides the `ttl`,
/// `idempotent` and `retrying` of every [`Call`]: bring it into scope to use them.
///
/// ```no_run
/// use crashonly::prelude::*;
/// use crashonly_cluster::{Node, RemoteCallExt};
///
/// /// A counter of visits, one per key, anywhere in the cluster.
/// #[derive(Actor, Clone)]
/// #[actor(args = String, entity)]
/// struct Visits {
///     n: u64,
/// }
///
/// #[messages(remote = "example.visits")]
/// impl Visits {
///     #[start]
///     fn recover(_key: &String, _ctx: &mut Context<Self>) -> Visits {
///         Visits { n: 0 }
///     }
///
///     /// Counts a visit; the count so far.
///     #[message(idempotent)]
///     fn visit(&mut self, by: String) -> u64 {
///         self.n += 1;
///         self.n
///     }
/// }
///
/// # async fn example(node: Node) -> Result<(), DeliveryError> {
/// let home = node.entity::<Visits>("visits", "home".to_string());
/// // As on a local `EntityRef`: the reply unpacked, the message's own TTL and idempotency.
/// let n: u64 = home.visit("ada".into()).await?;
/// // Executed once however often it is retried, across the death of the entity's node.
/// let again = home.visit("ada".into()).key(7).retrying().await?;
/// assert!(again > n);
/// # Ok(()) }
/// ```
pub trait RemoteCallExt: Sized {
    /// An idempotency key (marks it idempotent): the entity executes it once (see
    /// [`RemoteAsk::key`]).
    fn key(self, key: u64) -> Self;

    /// A sub-request of the message `ctx` is handling (see [`RemoteAsk::within`]).
    fn within<B: crashonly::Actor>(self, ctx: &crashonly::Context<B>) -> Self;
}

impl<'a, A, T> RemoteCallExt for Call<'a, A, T, RemoteAsk<'a, A>>
where
    A: Entity,
    A::Msg: Remote + Serialize + DeserializeOwned,
    A::Reply: Serialize + DeserializeOwned,
{
    fn key(self, key: u64) -> Self {
        map_call(self, |a| a.key(key))
    }

    fn within<B: crashonly::Actor>(self, ctx: &crashonly::Context<B>) -> Self {
        map_call(self, |a| a.within(ctx))
    }
}

/// A remote tell being built: the options of [`RemoteAsk`]; `.send().await` returns once the
/// entity's node has queued the message.
#[must_use = "a remote tell does nothing until it is sent"]
pub struct RemoteTell<'a, A: Entity>(RemoteAsk<'a, A>);

impl<A: Entity> fmt::Debug for RemoteTell<'_, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteTell")
            .field("to", &self.0.target)
            .finish_non_exhaustive()
    }
}

impl<A> RemoteTell<'_, A>
where
    A: Entity,
    A::Msg: Remote + Serialize + DeserializeOwned,
    A::Reply: Serialize + DeserializeOwned,
{
    /// The time to live (of the delivery and of the handling).
    pub fn ttl(self, ttl: Duration) -> Self {
        RemoteTell(self.0.ttl(ttl))
    }

    /// May be redelivered (at-least-once) and retried.
    pub fn idempotent(self) -> Self {
        RemoteTell(self.0.idempotent())
    }

    /// An idempotency key (marks it idempotent): the entity executes it once.
    pub fn key(self, key: u64) -> Self {
        RemoteTell(self.0.key(key))
    }

    /// Retries an idempotent tell until a node has queued it or its deadline passes.
    pub fn retrying(self) -> Self {
        RemoteTell(self.0.retrying())
    }

    /// Sent while handling the message of `ctx`: its remaining time and trace.
    pub fn within<B: crashonly::Actor>(self, ctx: &crashonly::Context<B>) -> Self {
        RemoteTell(self.0.within(ctx))
    }

    /// Sends it; `Ok` once the entity's node has queued it.
    pub async fn send(self) -> Result<(), DeliveryError> {
        self.0.send_frame(true).await.map(drop)
    }
}

fn remote_crash(family: &str, what: &str) -> crashonly::CrashReport {
    crashonly::CrashReport::new(family, crashonly::CrashReason::Remote(what.to_owned()))
}

/// Ids for remote envelopes: unique within the process.
fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
