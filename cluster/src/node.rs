//! A node: membership and placement on PostgreSQL, envelopes over core NATS request-reply.
//!
//! Each node incarnation listens on a subject of its own (`<prefix>.node.<incarnation>`), so a
//! request to a dead node gets NATS' immediate "no responders", which becomes `RetryAfter`; the
//! retrying ask then finds the placement again and lands on the new holder. A node serves an
//! entity only while it holds its placement claim; a request for an entity held elsewhere is
//! answered `Redirect(holder)`. A fenced node serves nothing (`RetryAfter`) and drops its claims.
//!
//! A fenced node comes back without a new process through [`Node::rejoin`]: a new incarnation
//! (the membership's), a new subject, no claims or routes carried over; the same handle keeps
//! working, so whatever holds it (an entity family reading [`Node::token`]) sees the new
//! incarnation and its tokens.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::Subject;
use crashonly::{Entities, Entity, Remote};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ClusterError;
use crate::membership::{Member, Membership, MembershipOptions};
use crate::placement::{choose, Claim, Placement};
use crate::rebalance::{Idle, MOVES_PER_PASS};
use crate::remote_ref::RemoteRef;
use crate::serve::{Answer, BoxFuture, Replier, Serve, Served};
use crate::slots::Slots;
use crate::wire::{self, Rejected, Reply, Request};

/// Options of [`Node::start`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeOptions {
    /// The membership (schema, lease, name).
    pub membership: MembershipOptions,
    /// The NATS server.
    pub nats_url: String,
    /// How often the node hands off the idle entities rendezvous hashing now gives to another
    /// node (see [`Node::rebalance`]); `None`: never. Default: every five leases.
    pub rebalance_every: Option<Duration>,
}

impl NodeOptions {
    /// A node of the cluster whose tables are in `membership.schema`, talking over `nats_url`.
    pub fn new(membership: MembershipOptions, nats_url: impl Into<String>) -> Self {
        NodeOptions {
            rebalance_every: Some(membership.lease * 5),
            membership,
            nats_url: nats_url.into(),
        }
    }

    /// Sets how often the node rebalances (`None`: never).
    pub fn with_rebalance_every(mut self, every: Option<Duration>) -> Self {
        self.rebalance_every = every;
        self
    }
}

/// One node of the cluster.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    membership: Membership,
    placement: Placement,
    nats: Arc<async_nats::Client>,
    prefix: String,
    families: RwLock<HashMap<String, Arc<dyn Serve>>>,
    /// Claims this node holds: (family, key) -> token.
    held: Mutex<Slots<u64>>,
    /// Where requests for an entity went last: (family, key) -> holder and its subject.
    routes: Mutex<Slots<(u64, Subject)>>,
    members: tokio::sync::Mutex<(Option<tokio::time::Instant>, Vec<Member>)>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
    rebalancer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Requests answered `Rejected` (frames that could not be taken).
    rejected: std::sync::atomic::AtomicU64,
    /// Entities handed off by rebalancing, ever.
    handed_off: std::sync::atomic::AtomicU64,
    /// One [`Node::rejoin`] at a time.
    rejoining: tokio::sync::Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(s) = self.server.lock().unwrap().take() {
            s.abort();
        }
        if let Some(r) = self.rebalancer.lock().unwrap().take() {
            r.abort();
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("incarnation", &self.inner.membership.incarnation())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Joins the cluster (authority at `pg_url`) and starts serving on NATS.
    pub async fn start(pg_url: &str, opts: NodeOptions) -> Result<Node, ClusterError> {
        let prefix = format!("crashonly.{}", opts.membership.schema);
        let membership = Membership::join(pg_url, opts.membership).await?;
        let nats = async_nats::connect(&opts.nats_url)
            .await
            .map_err(|e| ClusterError::unavailable(format!("nats: {e}")))?;
        let subject = format!("{prefix}.node.{}", membership.incarnation());
        let sub = nats
            .subscribe(subject)
            .await
            .map_err(|e| ClusterError::unavailable(format!("nats: {e}")))?;
        let inner = Arc::new(Inner {
            placement: Placement::new(&membership),
            membership,
            nats: Arc::new(nats),
            prefix,
            families: RwLock::new(HashMap::new()),
            held: Mutex::new(Slots::default()),
            routes: Mutex::new(Slots::default()),
            members: tokio::sync::Mutex::new((None, Vec::new())),
            server: Mutex::new(None),
            rebalancer: Mutex::new(None),
            rejected: std::sync::atomic::AtomicU64::new(0),
            handed_off: std::sync::atomic::AtomicU64::new(0),
            rejoining: tokio::sync::Mutex::new(()),
        });
        let server = serve_subject(Arc::downgrade(&inner), sub);
        *inner.server.lock().unwrap() = Some(server);
        if let Some(every) = opts.rebalance_every {
            *inner.rebalancer.lock().unwrap() = Some(rebalance_every(Arc::downgrade(&inner), every));
        }
        Ok(Node { inner })
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.inner.membership.incarnation()
    }

    /// The placement token this node holds for `(family, key)`, if it holds it: what an entity's
    /// `start` passes to [`Fence::acquire`](crate::Fence::acquire) so that its writes are fenced.
    /// The claim is made before a request is delivered, so an activation finds it here.
    pub fn token(&self, family: &str, key: &str) -> Option<u64> {
        self.inner.held.lock().unwrap().get(family, key).copied()
    }

    /// The membership (to watch [`Membership::fenced`], or leave). A fenced node serves nothing
    /// more (`RetryAfter`), and the writes of its old activations are refused by their fences;
    /// the crash-only answer is then to crash what it served and [`rejoin`](Node::rejoin) as a
    /// new incarnation (or exit, and start again as a new process).
    pub fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    /// Serves the family `entities` to the cluster under `name`. Refused if the name or its
    /// message type id is served already.
    pub fn serve<A>(&self, name: &str, entities: Entities<A>) -> Result<(), ClusterError>
    where
        A: Entity,
        A::Msg: Remote + Serialize + DeserializeOwned,
        A::Reply: Serialize + DeserializeOwned,
        A::Key: FromStr,
    {
        let mut families = self.inner.families.write().unwrap();
        let id = <A::Msg as Remote>::TYPE_ID;
        if families.contains_key(name) {
            return Err(ClusterError::BadInput(format!(
                "entity family {name:?} is served already"
            )));
        }
        if let Some((other, _)) = families.iter().find(|(_, f)| f.msg_type() == id) {
            return Err(ClusterError::BadInput(format!(
                "message type id {id:?} is used by family {other:?} already: ids must be unique"
            )));
        }
        families.insert(name.to_owned(), Arc::new(Served { entities }));
        Ok(())
    }

    /// Comes back into the cluster as a new incarnation, without a new process: the old
    /// incarnation leaves ([`Membership::rejoin`]: its lease released, its renewals stopped), its
    /// subject is dropped (requests for it get NATS' "no responders"), the claims it held and the
    /// routes it knew are forgotten, and the node serves again on `<prefix>.node.<new
    /// incarnation>`. The same handle keeps working: [`Node::incarnation`] and [`Node::token`]
    /// answer for the new incarnation, and every entity it serves is claimed again, with a new,
    /// greater token, before it is delivered to.
    ///
    /// Crash-only: crash the served families' activations first (restart their subtree), so
    /// that every activation starts again under the new incarnation and fences its writes with
    /// the new token; an old activation left running would serve with its old fence until a
    /// newer activation anywhere takes it. On an error (the database or NATS unreachable) the
    /// node stays out, serving nothing; call it again later.
    pub async fn rejoin(&self) -> Result<u64, ClusterError> {
        let _one = self.inner.rejoining.lock().await;
        if let Some(s) = self.inner.server.lock().unwrap().take() {
            s.abort();
        }
        self.inner.held.lock().unwrap().clear();
        let incarnation = self.inner.membership.rejoin().await?;
        // Cleared again: a claim that raced the fence is refused by the placement (it checks the
        // incarnation), and nothing of the old incarnation survives here.
        self.inner.held.lock().unwrap().clear();
        self.inner.routes.lock().unwrap().clear();
        self.inner.members.lock().await.0 = None;
        let subject = format!("{}.node.{incarnation}", self.inner.prefix);
        let sub = match self.inner.nats.subscribe(subject).await {
            Ok(sub) => sub,
            Err(e) => {
                // Live without a subject would take claims nobody can reach: out again.
                let _ = self.inner.membership.leave().await;
                return Err(ClusterError::unavailable(format!("nats: {e}")));
            }
        };
        let server = serve_subject(Arc::downgrade(&self.inner), sub);
        *self.inner.server.lock().unwrap() = Some(server);
        Ok(incarnation)
    }

    /// Whether the transport (NATS) is connected now. While it is not, requests to other nodes
    /// cannot go out and this node cannot be reached; the client reconnects by itself (with
    /// growing waits, at most 4 s apart) and subscribes again.
    pub fn transport_connected(&self) -> bool {
        self.inner.nats.connection_state() == async_nats::connection::State::Connected
    }

    /// Requests this node answered `Rejected` so far (malformed, truncated, oversized, another
    /// format, an unknown family, message type or version).
    pub fn rejected(&self) -> u64 {
        self.inner.rejected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Entities this node has handed off by rebalancing, ever (see [`Node::rebalance`]).
    pub fn handed_off(&self) -> u64 {
        self.inner.handed_off.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes one request addressed to this node: at once when it is an ask for an entity this node
    /// holds (delivered with its reply published by the entity's task), else as a future that
    /// answers it.
    fn take(&self, msg: async_nats::Message) -> Option<BoxFuture<()>> {
        let taken = match (&msg.reply, wire::decode::<Request<'_>>(&msg.payload)) {
            (Some(to), Ok(req)) if !req.tell && self.inner.membership.is_fenced().is_none() => {
                let family = self.inner.families.read().unwrap().get(&*req.family).cloned();
                let held = || self.inner.held.lock().unwrap().contains(&req.family, &req.entity);
                match family {
                    Some(family) if held() => {
                        let reply = Replier {
                            nats: Arc::downgrade(&self.inner.nats),
                            to: to.clone(),
                        };
                        Some(family.ask_remote(&req, reply))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match taken {
            Some(Ok(waiting)) => waiting,
            Some(Err(rejected)) => {
                let reply = Replier {
                    nats: Arc::downgrade(&self.inner.nats),
                    to: msg.reply.expect("taken with a reply subject"),
                };
                self.count_rejected(&rejected);
                reply.send(wire::encode(&Reply::Rejected(rejected)));
                None
            }
            // Everything else: decoded again, and answered by a future.
            None => {
                let node = self.clone();
                Some(Box::pin(async move {
                    let frame = node.answer(&msg.payload).await;
                    if let Some(to) = msg.reply {
                        let _ = node.inner.nats.publish(to, frame.into()).await;
                    }
                }))
            }
        }
    }

    fn count_rejected(&self, why: &Rejected) {
        self.inner.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(rejected = %why, "rejected a request");
    }

    /// Answers one frame addressed to this node (the frame of the reply); a frame it cannot take
    /// is counted and logged.
    async fn answer(&self, frame: &[u8]) -> Vec<u8> {
        let answer = match wire::decode::<Request<'_>>(frame) {
            Ok(req) => self.serve_here(&req, true).await,
            Err(rejected) => Answer::Reply(Reply::Rejected(rejected)),
        };
        if let Answer::Reply(Reply::Rejected(why)) = &answer {
            self.count_rejected(why);
        }
        answer.into_frame()
    }

    /// Serves a request on this node if it holds (or can claim) the entity (`framed`: see
    /// [`Serve::serve`]).
    async fn serve_here(&self, req: &Request<'_>, framed: bool) -> Answer {
        if self.inner.membership.is_fenced().is_some() {
            self.inner.held.lock().unwrap().clear();
            return Answer::Reply(Reply::RetryAfter(self.inner.membership.lease().as_millis() as u32));
        }
        let Some(family) = self.inner.families.read().unwrap().get(&*req.family).cloned() else {
            return Answer::Reply(Reply::Rejected(Rejected::UnknownFamily(
                req.family.clone().into_owned(),
            )));
        };
        let held = self.inner.held.lock().unwrap().contains(&req.family, &req.entity);
        if !held {
            // Claimed only by the node rendezvous hashing picks among the live members (as this
            // node sees them): a request sent here on a stale route (the entity was handed off
            // by rebalancing, or its holder died) goes on to that node instead. Views that
            // differ for a moment bounce a request at most a few times (then `RetryAfter`).
            // Boxed, as the claim below: the cold path, and its future is large.
            if let Ok(members) = Box::pin(self.members()).await {
                if let Some(to) = self.picks_other(&req.family, &req.entity, &members) {
                    return Answer::Reply(Reply::Redirect(to));
                }
            }
            // Boxed: the claim (a PostgreSQL statement) is the cold path, and its future is large.
            match Box::pin(self.inner.placement.claim(&req.family, &req.entity)).await {
                Ok(Claim::Mine { token }) => {
                    self.inner.held.lock().unwrap().insert(&req.family, &req.entity, token);
                }
                Ok(Claim::Held { holder }) => return Answer::Reply(Reply::Redirect(holder)),
                Err(ClusterError::Fenced(_)) => {
                    return Answer::Reply(Reply::RetryAfter(self.inner.membership.lease().as_millis() as u32))
                }
                Err(_) => return Answer::Reply(Reply::RetryAfter(100)),
            }
        }
        family.serve(req, framed).await
    }

    /// One rebalancing pass (what the node does every [`NodeOptions::rebalance_every`]): hands
    /// off at most [`MOVES_PER_PASS`] of the idle entities this node holds whose rendezvous
    /// choice among the live members is now another node (see the `rebalance` module's notes).
    /// Returns how many it handed off.
    pub async fn rebalance(&self) -> Result<usize, ClusterError> {
        if self.inner.membership.is_fenced().is_some() {
            return Ok(0);
        }
        let members = self.members().await?;
        let held: Vec<(String, String, u64)> = self
            .inner
            .held
            .lock()
            .unwrap()
            .iter()
            .map(|(f, k, t)| (f.to_owned(), k.to_owned(), *t))
            .collect();
        let mut moved = 0;
        for (name, key, token) in held {
            if moved == MOVES_PER_PASS {
                break;
            }
            if self.picks_other(&name, &key, &members).is_none() {
                continue;
            }
            let Some(family) = self.inner.families.read().unwrap().get(&name).cloned() else {
                continue;
            };
            // Out of this node's claims first: from now on requests for it arriving here go on
            // to its rendezvous choice.
            {
                let mut held = self.inner.held.lock().unwrap();
                if held.get(&name, &key) != Some(&token) {
                    continue;
                }
                held.remove(&name, &key);
            }
            if family.passivate(&key) == Idle::Busy {
                self.inner.held.lock().unwrap().insert(&name, &key, token);
                continue;
            }
            match self.inner.placement.release(&name, &key, token).await {
                Ok(_) => moved += 1,
                // Still ours in the database: held again here (its next request activates it
                // under the same token), handed off on a later pass.
                Err(e) => {
                    tracing::warn!(family = %name, key = %key, "rebalance: release failed: {e}");
                    self.inner.held.lock().unwrap().insert(&name, &key, token);
                    return Err(e);
                }
            }
        }
        if moved > 0 {
            self.inner
                .handed_off
                .fetch_add(moved as u64, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(moved, "rebalanced: handed off entities to their rendezvous nodes");
        }
        Ok(moved)
    }

    /// The member rendezvous hashing picks for `(family, key)` among `members`, if not this node.
    fn picks_other(&self, family: &str, key: &str, members: &[Member]) -> Option<u64> {
        choose(family, key, members).filter(|to| *to != self.incarnation())
    }

    /// A ref to the entity `key` of the family served under `family` somewhere in the cluster.
    pub fn entity<A>(&self, family: &str, key: A::Key) -> RemoteRef<A>
    where
        A: Entity,
        A::Msg: Remote + Serialize + DeserializeOwned,
        A::Reply: Serialize + DeserializeOwned,
    {
        RemoteRef::new(self.clone(), family, key.to_string())
    }

    /// The live members, cached for a third of a lease.
    async fn members(&self) -> Result<Vec<Member>, ClusterError> {
        let mut cache = self.inner.members.lock().await;
        let fresh = cache
            .0
            .is_some_and(|at| at.elapsed() < self.inner.membership.lease() / 3);
        if !fresh {
            cache.1 = self.inner.membership.members().await?;
            cache.0 = Some(tokio::time::Instant::now());
        }
        // Those whose lease, as read, outlasts the time since it was read.
        let read = cache.0.map_or(Duration::ZERO, |at| at.elapsed());
        Ok(cache.1.iter().filter(|m| m.lease_left > read).cloned().collect())
    }

    /// How long the member `incarnation`'s lease has left (zero once it is out), by the database's
    /// clock, from the members read at most a third of a lease ago; a lease when it cannot be read.
    async fn lease_left(&self, incarnation: u64) -> Duration {
        let lease = self.inner.membership.lease();
        let Ok(members) = self.members().await else {
            return lease / 4;
        };
        let read = self
            .inner
            .members
            .lock()
            .await
            .0
            .map_or(Duration::ZERO, |at| at.elapsed());
        members
            .iter()
            .find(|m| m.incarnation == incarnation)
            .map_or(Duration::ZERO, |m| m.lease_left.saturating_sub(read).min(lease))
    }

    /// Where a request for `(family, key)` goes: the last holder that answered, else the live
    /// holder in the database, else the node rendezvous hashing picks; and its subject.
    async fn route(&self, family: &str, key: &str) -> Result<(u64, Subject), ClusterError> {
        if let Some(route) = self.inner.routes.lock().unwrap().get(family, key) {
            return Ok(route.clone());
        }
        // Boxed: looking up the placement is the cold path, and its future is large.
        let holder = Box::pin(self.find_holder(family, key)).await?;
        Ok(self.set_route(family, key, holder))
    }

    /// Requests for `(family, key)` go to `holder` from now on.
    fn set_route(&self, family: &str, key: &str, holder: u64) -> (u64, Subject) {
        let route = (holder, Subject::from(format!("{}.node.{holder}", self.inner.prefix)));
        self.inner.routes.lock().unwrap().insert(family, key, route.clone());
        route
    }

    /// The live holder in the database, else the node rendezvous hashing picks.
    async fn find_holder(&self, family: &str, key: &str) -> Result<u64, ClusterError> {
        Ok(match self.inner.placement.lookup(family, key).await? {
            Some((holder, _)) => holder,
            None => choose(family, key, &self.members().await?).unwrap_or(self.incarnation()),
        })
    }

    fn forget_route(&self, family: &str, key: &str) {
        self.inner.routes.lock().unwrap().remove(family, key);
        // A holder that did not answer may have left: read the members again.
        if let Ok(mut cache) = self.inner.members.try_lock() {
            cache.0 = None;
        }
    }

    /// One attempt: route, send (or serve here), follow at most a few redirects.
    pub(crate) async fn attempt(&self, req: &mut Request<'_>, deadline: tokio::time::Instant) -> Reply {
        for _ in 0..4 {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Reply::Expired;
            }
            req.ttl_ms = left.as_millis().min(u128::from(u32::MAX)) as u32;
            let (holder, subject) = match self.route(&req.family, &req.entity).await {
                Ok(h) => h,
                Err(_) => return Reply::RetryAfter(100),
            };
            let reply = if holder == self.incarnation() {
                Box::pin(self.serve_here(req, false)).await.into_reply()
            } else {
                // A request that may be sent again waits for one node at most a lease: a node
                // paused or cut off is out by then, and the next attempt finds the new holder.
                let wait = if req.idempotent {
                    left.min(self.inner.membership.lease())
                } else {
                    left
                };
                let request = async_nats::Request::new()
                    .payload(wire::encode(&*req).into())
                    .timeout(Some(wait));
                match self.inner.nats.send_request(subject, request).await {
                    Ok(msg) => wire::decode(&msg.payload).unwrap_or_else(Reply::Rejected),
                    Err(e) => match e.kind() {
                        async_nats::client::RequestErrorKind::NoResponders => {
                            // The holder is gone: come back when its lease has run out (by the
                            // database's clock), when another node may claim what it held.
                            self.forget_route(&req.family, &req.entity);
                            let left = Box::pin(self.lease_left(holder)).await;
                            return Reply::RetryAfter(left.as_millis().min(u128::from(u32::MAX)) as u32);
                        }
                        async_nats::client::RequestErrorKind::TimedOut if wait < left => {
                            self.forget_route(&req.family, &req.entity);
                            return Reply::RetryAfter(0);
                        }
                        async_nats::client::RequestErrorKind::TimedOut => return Reply::Expired,
                        _ => return Reply::RetryAfter(100),
                    },
                }
            };
            match reply {
                Reply::Redirect(to) => {
                    self.set_route(&req.family, &req.entity, to);
                }
                other => return other,
            }
        }
        Reply::RetryAfter(10)
    }
}

/// Rebalances every `every` while the node lives (holding it only during a pass).
fn rebalance_every(weak: std::sync::Weak<Inner>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(inner) = weak.upgrade() else { return };
            let _ = Node { inner }.rebalance().await;
        }
    })
}

/// The server loop of an incarnation's subject: one task takes every request of this node (see
/// `serve`'s notes); the requests that need a future are polled together with the subscription
/// (no task spawned per request; the entities' own work runs in their tasks).
fn serve_subject(weak: std::sync::Weak<Inner>, mut sub: async_nats::Subscriber) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut in_flight = futures::stream::FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                msg = sub.next() => {
                    let Some(msg) = msg else { return };
                    let Some(inner) = weak.upgrade() else { return };
                    if let Some(waiting) = (Node { inner }).take(msg) {
                        in_flight.push(waiting);
                    }
                }
            }
        }
    })
}
