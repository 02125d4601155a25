//! Nodes against real PostgreSQL and NATS (`CRASHONLY_PG_URL`, `CRASHONLY_NATS_URL`; without
//! them each test says it was skipped): remote asks, one holder per entity, failover when a node
//! dies, and frames that cannot be taken answered `Rejected`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crashonly::prelude::*;
use crashonly_cluster::wire::{self, Rejected, Reply, Request};
use crashonly_cluster::{ClusterError, MembershipOptions, Node, NodeOptions, Remote, RemoteCallExt};
use serde::{Deserialize, Serialize};

/// The store of record both nodes share (in this process): counts per key, and who served.
#[derive(Clone, Default)]
struct Db(Arc<Mutex<HashMap<String, (u64, u64)>>>);

struct Counter {
    key: String,
    node: u64,
    db: Db,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Op {
    Add(u64),
    Get,
    /// Answers the trace id of the envelope it came in (high half, low half).
    Trace,
    /// Answers the parent span id of the envelope it came in (and the node).
    Parent,
    /// Handles nothing for this many milliseconds (keeps the entity busy).
    Sleep(u64),
}

impl Remote for Op {
    const TYPE_ID: &'static str = "test.counter.op";
}

impl Actor for Counter {
    type Args = (String, u64, Db);
    type Msg = Op;
    /// (count, node that served)
    type Reply = (u64, u64);
    type Error = String;

    async fn start((key, node, db): &Self::Args, _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Counter {
            key: key.clone(),
            node: *node,
            db: db.clone(),
        })
    }

    async fn handle(&mut self, op: Op, ctx: &mut Context<Self>) -> Result<(u64, u64), String> {
        let trace = ctx.header().unwrap().trace;
        match op {
            Op::Trace => return Ok(((trace.trace_id.get() >> 64) as u64, trace.trace_id.get() as u64)),
            Op::Parent => return Ok((trace.parent.map_or(0, |p| p.get()), self.node)),
            Op::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            _ => {}
        }
        let mut db = self.db.0.lock().unwrap();
        let e = db.entry(self.key.clone()).or_default();
        if let Op::Add(n) = op {
            e.0 += n;
        }
        e.1 = self.node;
        Ok((e.0, self.node))
    }
}

impl Entity for Counter {
    type Key = String;
}

fn urls() -> Option<(String, String)> {
    match (std::env::var("CRASHONLY_PG_URL"), std::env::var("CRASHONLY_NATS_URL")) {
        (Ok(pg), Ok(nats)) => Some((pg, nats)),
        _ => {
            crashonly::testing::skipped("CRASHONLY_PG_URL and CRASHONLY_NATS_URL are not both set (cluster nodes)");
            None
        }
    }
}

/// A node with its own system serving `counters`.
async fn node(pg: &str, nats: &str, test: &str, db: &Db) -> (Node, System) {
    let m = MembershipOptions::default()
        .with_schema(format!("nd_{test}_{}", std::process::id()))
        .with_lease(Duration::from_millis(1000));
    let node = Node::start(pg, NodeOptions::new(m, nats)).await.unwrap();
    let system = System::builder()
        .config(Config::default().with_exit_on_failure(None))
        .start()
        .unwrap();
    let (inc, db) = (node.incarnation(), db.clone());
    let family = system
        .spawn_entities(
            EntitySpec::<Counter>::new("counters", move |k: &String| (k.clone(), inc, db.clone())).dedup(64),
        )
        .unwrap();
    node.serve("counters", family).unwrap();
    (node, system)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_reaches_any_entity_and_one_node_holds_each() {
    let Some((pg, nats)) = urls() else { return };
    let db = Db::default();
    let (a, _sa) = node(&pg, &nats, "reach", &db).await;
    let (b, _sb) = node(&pg, &nats, "reach", &db).await;
    let mut served_by = HashMap::new();
    for i in 0..40 {
        let key = format!("k{i}");
        let via_a = a.entity::<Counter>("counters", key.clone());
        let via_b = b.entity::<Counter>("counters", key.clone());
        let (n1, h1) = via_a.ask(Op::Add(1)).send().await.unwrap();
        let (n2, h2) = via_b.ask(Op::Add(2)).send().await.unwrap();
        assert_eq!((n1, n2), (1, 3), "{key}: both nodes reach one entity");
        assert_eq!(h1, h2, "{key}: one holder");
        *served_by.entry(h1).or_insert(0) += 1;
    }
    assert_eq!(
        served_by.len(),
        2,
        "rendezvous spreads the keys over both nodes: {served_by:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_ask_survives_the_death_of_the_entitys_node() {
    let Some((pg, nats)) = urls() else { return };
    let db = Db::default();
    let (a, _sa) = node(&pg, &nats, "failover", &db).await;
    let (b, sb) = node(&pg, &nats, "failover", &db).await;
    // A key that b holds.
    let mut key = None;
    for i in 0..100 {
        let k = format!("k{i}");
        let (_, holder) = a
            .entity::<Counter>("counters", k.clone())
            .ask(Op::Add(1))
            .send()
            .await
            .unwrap();
        if holder == b.incarnation() {
            key = Some(k);
            break;
        }
    }
    let key = key.expect("b holds some key");
    // b dies: its subscription, renewals and entities go at once (as with kill -9).
    drop(b);
    drop(sb);
    let began = Instant::now();
    let r = a
        .entity::<Counter>("counters", key.clone())
        .ask(Op::Add(1))
        .key(7)
        .ttl(Duration::from_secs(5))
        .retrying()
        .send()
        .await;
    let took = began.elapsed();
    assert_eq!(r, Ok((2, a.incarnation())), "served by a, from the store of record");
    assert!(took < Duration::from_secs(3), "failover took {took:?}");
    // Without retrying, a request to a dead node is told to come back, not left to time out.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_cannot_be_taken_are_rejected_with_the_reason() {
    let Some((pg, nats)) = urls() else { return };
    let db = Db::default();
    let (a, _sa) = node(&pg, &nats, "reject", &db).await;
    let client = async_nats::connect(&nats).await.unwrap();
    let subject = format!("crashonly.nd_reject_{}.node.{}", std::process::id(), a.incarnation());
    let send = |payload: Vec<u8>| {
        let (client, subject) = (client.clone(), subject.clone());
        async move {
            let msg = client.request(subject, payload.into()).await.unwrap();
            wire::decode::<Reply>(&msg.payload).unwrap()
        }
    };
    assert!(matches!(
        send(vec![wire::FORMAT, 200, 3]).await,
        Reply::Rejected(Rejected::Malformed(_))
    ));
    assert_eq!(send(vec![9, 0]).await, Reply::Rejected(Rejected::Format(9)));
    let good = Request {
        id: 1,
        ttl_ms: 1000,
        idempotent: false,
        tell: false,
        key: None,
        attempt: 1,
        traceparent: Some("00-00000000000000000000000000000001-0000000000000002-01".into()),
        family: "counters".into(),
        entity: "k".into(),
        msg_type: "test.counter.op".into(),
        msg_version: 1,
        payload: postcard_of(&Op::Get).into(),
    };
    assert!(matches!(send(wire::encode(&good)).await, Reply::Ok(_)));
    let unknown_family = Request {
        family: "nope".into(),
        ..good.clone()
    };
    assert_eq!(
        send(wire::encode(&unknown_family)).await,
        Reply::Rejected(Rejected::UnknownFamily("nope".into()))
    );
    let new_version = Request {
        msg_version: 2,
        ..good.clone()
    };
    assert!(matches!(
        send(wire::encode(&new_version)).await,
        Reply::Rejected(Rejected::UnknownVersion { version: 2, .. })
    ));
    let other_type = Request {
        msg_type: "test.other".into(),
        ..good.clone()
    };
    assert!(matches!(
        send(wire::encode(&other_type)).await,
        Reply::Rejected(Rejected::UnknownType(_))
    ));
    let bad_payload = Request {
        payload: vec![0xff; 3].into(),
        ..good
    };
    assert!(matches!(
        send(wire::encode(&bad_payload)).await,
        Reply::Rejected(Rejected::Malformed(_))
    ));
    // Each was counted; still serving after all of that.
    assert_eq!(a.rejected(), 6);
    let (n, _) = a
        .entity::<Counter>("counters", "k".into())
        .ask(Op::Add(5))
        .send()
        .await
        .unwrap();
    assert_eq!(n, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_type_id_is_served_once() {
    let Some((pg, nats)) = urls() else { return };
    let db = Db::default();
    let (a, system) = node(&pg, &nats, "dup", &db).await;
    let (inc, db2) = (a.incarnation(), db.clone());
    let second = system
        .spawn_entities(EntitySpec::<Counter>::new("counters2", move |k: &String| {
            (k.clone(), inc, db2.clone())
        }))
        .unwrap();
    let err = a.serve("counters2", second).unwrap_err();
    assert!(
        matches!(&err, ClusterError::BadInput(m) if m.contains("test.counter.op")),
        "{err}"
    );
}

fn postcard_of<T: Serialize>(v: &T) -> Vec<u8> {
    // The message encoding inside a request is the type's own postcard bytes.
    let frame = wire::encode(v);
    frame[1..].to_vec()
}

/// A local actor that asks a remote entity while handling its own message.
struct Caller {
    node: Node,
}

impl Actor for Caller {
    type Args = Node;
    /// The key, and whether to name the handled message with `within` (or leave it implicit).
    type Msg = (String, bool);
    /// (its own header, the trace id and the parent span id the remote entity saw)
    type Reply = (crashonly::Header, u128, u64);
    type Error = String;

    async fn start(node: &Node, _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Caller { node: node.clone() })
    }

    async fn handle(&mut self, (key, within): (String, bool), ctx: &mut Context<Self>) -> Result<Self::Reply, String> {
        let mine = ctx.header().unwrap().clone();
        let entity = self.node.entity::<Counter>("counters", key);
        let ask = |op| {
            let ask = entity.ask(op);
            if within {
                ask.within(ctx)
            } else {
                ask
            }
        };
        let (hi, lo) = ask(Op::Trace).send().await.map_err(|e| e.to_string())?;
        let (parent, _) = ask(Op::Parent).send().await.map_err(|e| e.to_string())?;
        Ok((mine, (u128::from(hi) << 64) | u128::from(lo), parent))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_request_across_nodes_continues_the_trace() {
    let Some((pg, nats)) = urls() else { return };
    let db = Db::default();
    let (a, sa) = node(&pg, &nats, "trace", &db).await;
    let (b, _sb) = node(&pg, &nats, "trace", &db).await;
    let caller = sa.spawn(ActorSpec::<Caller>::new(a.clone())).unwrap();
    let mut remote = 0;
    for i in 0..20 {
        let key = format!("t{i}");
        let (mine, seen, parent) = caller.ask((key.clone(), i % 2 == 0)).await.unwrap();
        assert!(mine.trace.trace_id.get() >> 64 != 0, "a 128-bit trace id");
        assert_eq!(
            mine.trace.trace_id.get(),
            seen,
            "{key}: one trace across nodes, all 128 bits"
        );
        assert_eq!(
            parent,
            mine.id.span_id().get(),
            "{key}: the caller's envelope is the parent"
        );
        let (_, holder) = a.entity::<Counter>("counters", key).ask(Op::Get).send().await.unwrap();
        remote += (holder == b.incarnation()) as u32;
    }
    assert!(remote > 0, "some of the entities were on the other node");
    // A request from outside any handler carries no trace: the holder starts its own.
    let (parent, _) = a
        .entity::<Counter>("counters", "t0".into())
        .ask(Op::Parent)
        .send()
        .await
        .unwrap();
    assert_eq!(parent, 0);
}

/// A cluster singleton (one named actor alive in the whole cluster) is a family with one key:
/// every node reaches the same instance, and when its node dies another node takes it over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_singleton_is_a_family_with_one_key() {
    let Some((pg, nats)) = urls() else { return };
    let db = Db::default();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(node(&pg, &nats, "single", &db).await);
    }
    let leader = "the-scheduler".to_string();
    let mut holders = std::collections::HashSet::new();
    for (n, _) in &nodes {
        let (_, h) = n
            .entity::<Counter>("counters", leader.clone())
            .ask(Op::Add(1))
            .send()
            .await
            .unwrap();
        holders.insert(h);
    }
    assert_eq!(holders.len(), 1, "one instance in the cluster");
    let holder = *holders.iter().next().unwrap();
    // Its node dies: another takes it over, with its state.
    let at = nodes.iter().position(|(n, _)| n.incarnation() == holder).unwrap();
    drop(nodes.remove(at));
    let (asker, _) = &nodes[0];
    let (n, h) = asker
        .entity::<Counter>("counters", leader)
        .ask(Op::Add(1))
        .key(1)
        .ttl(Duration::from_secs(5))
        .retrying()
        .send()
        .await
        .unwrap();
    assert_eq!(n, 4);
    assert_ne!(h, holder);
    assert!(nodes.iter().any(|(n, _)| n.incarnation() == h));
}

/// An entity written with the macros, its messages made remote by `#[messages(remote = "..")]`:
/// started with its key and the incarnation of the node that holds it.
#[derive(Actor, Clone)]
#[actor(args = (String, u64), entity)]
struct Visits {
    n: u64,
    node: u64,
}

#[messages(remote = "test.visits", remote_version = 3, clone_replies)]
impl Visits {
    #[start]
    fn recover((_key, node): &(String, u64), _ctx: &mut Context<Self>) -> Visits {
        Visits { n: 0, node: *node }
    }

    /// Counts a visit: the count so far and who visited.
    #[message(idempotent)]
    fn visit(&mut self, by: String) -> (u64, String) {
        self.n += 1;
        (self.n, by)
    }

    /// The incarnation of the node holding this entity.
    #[message(idempotent, ttl = "2s")]
    fn holder(&self) -> u64 {
        self.node
    }
}

/// `n` nodes of one cluster (schema `test`), each serving `visits`.
async fn visit_nodes(pg: &str, nats: &str, test: &str, n: usize) -> Vec<(Node, System)> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let m = MembershipOptions::default()
            .with_schema(format!("nd_{test}_{}", std::process::id()))
            .with_lease(Duration::from_millis(1000));
        let node = Node::start(pg, NodeOptions::new(m, nats)).await.unwrap();
        let system = System::new();
        let inc = node.incarnation();
        let family = system
            .spawn_entities(Visits::entities("visits", move |k: &String| (k.clone(), inc)).dedup(64))
            .unwrap();
        node.serve("visits", family).unwrap();
        nodes.push((node, system));
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn macro_made_remote_messages_cross_nodes() {
    let Some((pg, nats)) = urls() else { return };
    assert_eq!(<VisitsMessage as Remote>::TYPE_ID, "test.visits");
    assert_eq!(<VisitsMessage as Remote>::VERSION, 3);
    let nodes = visit_nodes(&pg, &nats, "macro", 2).await;
    let mut holders = HashMap::new();
    for i in 0..10 {
        let key = format!("v{i}");
        for (n, (node, _)) in nodes.iter().enumerate() {
            // The typed method of `#[messages]`, as on a local ref: the reply unpacked.
            let (count, by) = node
                .entity::<Visits>("visits", key.clone())
                .visit(format!("node{n}"))
                .await
                .unwrap();
            assert_eq!((count, by), (2 * n as u64 + 1, format!("node{n}")));
            // The message enum and its reply, built by hand, reach the same entity.
            let r = node
                .entity::<Visits>("visits", key.clone())
                .ask(VisitsMessage::Visit(format!("node{n} by hand")))
                .send()
                .await
                .unwrap();
            match r {
                VisitsReply::Visit((count, by)) => {
                    assert_eq!((count, by), (2 * n as u64 + 2, format!("node{n} by hand")));
                }
                VisitsReply::Holder(_) => panic!("the reply of another message"),
            }
        }
        let holder = nodes[1].0.entity::<Visits>("visits", key).holder().await.unwrap();
        *holders.entry(holder).or_insert(0) += 1;
    }
    assert!(
        holders.keys().all(|h| nodes.iter().any(|(n, _)| n.incarnation() == *h)),
        "{holders:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_remote_call_with_a_key_survives_the_death_of_the_entitys_node() {
    let Some((pg, nats)) = urls() else { return };
    let mut nodes = visit_nodes(&pg, &nats, "typed_failover", 2).await;
    let (b, sb) = nodes.pop().unwrap();
    let (a, _sa) = nodes.pop().unwrap();
    // A key that b holds, visited once there.
    let mut key = None;
    for i in 0..100 {
        let k = format!("v{i}");
        if a.entity::<Visits>("visits", k.clone()).holder().await.unwrap() == b.incarnation() {
            key = Some(k);
            break;
        }
    }
    let key = key.expect("b holds some key");
    let on_b = a.entity::<Visits>("visits", key.clone()).visit("before".into()).await;
    assert_eq!(on_b, Ok((1, "before".to_string())));
    // b dies: its subscription, renewals and entities go at once (as with kill -9).
    drop(b);
    drop(sb);
    let visits = a.entity::<Visits>("visits", key.clone());
    let began = Instant::now();
    let r = visits
        .visit("after".into())
        .key(7)
        .ttl(Duration::from_secs(5))
        .retrying()
        .await;
    let took = began.elapsed();
    // A new activation on a (its count starts again: the entity keeps no store of record).
    assert_eq!(r, Ok((1, "after".to_string())));
    assert!(took < Duration::from_secs(3), "failover took {took:?}");
    assert_eq!(visits.holder().await, Ok(a.incarnation()));
    // The key's repeat is answered from the entity's window, not executed again.
    let again = visits.visit("after".into()).key(7).retrying().await;
    assert_eq!(again, Ok((1, "after".to_string())));
    assert_eq!(visits.visit("later".into()).await, Ok((2, "later".to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_tell_is_queued_on_the_holder_and_handled_there() {
    let Some((pg, nats)) = urls() else { return };
    let db = Db::default();
    let (a, _sa) = node(&pg, &nats, "tell", &db).await;
    let (b, _sb) = node(&pg, &nats, "tell", &db).await;
    // Keys held by b, told through a: every tell crosses NATS.
    let mut told = Vec::new();
    for i in 0..40 {
        let key = format!("t{i}");
        let r = a.entity::<Counter>("counters", key.clone());
        r.tell(Op::Add(5)).ttl(Duration::from_secs(2)).send().await.unwrap();
        // The same keyed tell twice: the entity executes it once.
        for _ in 0..2 {
            r.tell(Op::Add(100))
                .key(7)
                .retrying()
                .ttl(Duration::from_secs(2))
                .send()
                .await
                .unwrap();
        }
        if b.token("counters", &key).is_some() {
            told.push(key);
        }
    }
    assert!(!told.is_empty(), "some keys live on b");
    for key in &told {
        // An ask after the tells is handled after them (one mailbox, in order).
        let (n, holder) = b
            .entity::<Counter>("counters", key.clone())
            .ask(Op::Get)
            .send()
            .await
            .unwrap();
        assert_eq!((n, holder), (105, b.incarnation()), "{key}: tells handled once, on b");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tell_to_a_dead_node_is_retried_onto_the_new_holder_or_refused() {
    let Some((pg, nats)) = urls() else { return };
    let db = Db::default();
    let (a, _sa) = node(&pg, &nats, "telldead", &db).await;
    let (b, sb) = node(&pg, &nats, "telldead", &db).await;
    let mut key = None;
    for i in 0..200 {
        let k = format!("d{i}");
        a.entity::<Counter>("counters", k.clone())
            .ask(Op::Get)
            .send()
            .await
            .unwrap();
        if b.token("counters", &k).is_some() {
            key = Some(k);
            break;
        }
    }
    let key = key.expect("a key held by b");
    let b_subject = format!("crashonly.nd_telldead_{}.node.{}", std::process::id(), b.incarnation());
    drop((b, sb));
    // Until NATS has b's unsubscription, a request may still reach the dying node (and, not
    // idempotent, wait out its deadline): wait until its subject has no responders.
    let client = async_nats::connect(&nats).await.unwrap();
    let gone = Instant::now();
    loop {
        let probe = async_nats::Request::new().timeout(Some(Duration::from_millis(200)));
        match client.send_request(b_subject.clone(), probe).await {
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => break,
            _ => assert!(gone.elapsed() < Duration::from_secs(5), "b's subject still answered"),
        }
    }
    let r = a.entity::<Counter>("counters", key.clone());
    // Not idempotent: sent once, and the dead holder's subject has no responders: come back when
    // its lease (1 s, renewed every third of it) has run out by the database's clock.
    let once = r.tell(Op::Add(1)).ttl(Duration::from_secs(3)).send().await;
    let Err(DeliveryError::RetryAfter(wait)) = once else {
        panic!("{once:?}")
    };
    assert!(wait <= Duration::from_secs(1), "at most a lease: {wait:?}");
    // After that wait, a single attempt lands on the new holder.
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    r.tell(Op::Add(0)).ttl(Duration::from_secs(3)).send().await.unwrap();
    // Idempotent and retrying: lands on a once b's lease is out (1 s).
    let t = Instant::now();
    r.tell(Op::Add(1))
        .key(1)
        .retrying()
        .ttl(Duration::from_secs(4))
        .send()
        .await
        .unwrap();
    let (n, holder) = r.ask(Op::Get).send().await.unwrap();
    assert_eq!((n, holder), (1, a.incarnation()), "after {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_takes_its_share_as_entities_are_handed_off() {
    let Some((pg, nats)) = urls() else { return };
    let db = Db::default();
    let (a, _sa) = node(&pg, &nats, "rebalance", &db).await;
    // Alone, A claims every key.
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for k in &keys {
        let (n, h) = a
            .entity::<Counter>("counters", k.clone())
            .ask(Op::Add(1))
            .send()
            .await
            .unwrap();
        assert_eq!((n, h), (1, a.incarnation()), "{k}");
    }
    let (b, _sb) = node(&pg, &nats, "rebalance", &db).await;
    // A's view of the members is read at most a third of a lease ago: let it see B.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let members = a.membership().members().await.unwrap();
    let to_b: Vec<&String> = keys
        .iter()
        .filter(|k| crashonly_cluster::choose("counters", k, &members) == Some(b.incarnation()))
        .collect();
    assert!(
        !to_b.is_empty() && to_b.len() < keys.len(),
        "{} of {} to B",
        to_b.len(),
        keys.len()
    );
    // One of them busy: handling a long message, another queued behind it.
    let busy = a.entity::<Counter>("counters", to_b[0].clone());
    busy.tell(Op::Sleep(1500)).send().await.unwrap();
    let queued = tokio::spawn({
        let busy = busy.clone();
        async move { busy.ask(Op::Get).send().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // One pass by hand (the node's timer runs the same every five leases): every idle entity
    // that rendezvous hashing now gives to B is handed off, and only those.
    assert_eq!(a.rebalance().await.unwrap(), to_b.len() - 1, "all but the busy one");
    assert_eq!(b.rebalance().await.unwrap(), 0, "B holds nothing yet");
    assert_eq!(
        queued.await.unwrap().unwrap(),
        (1, a.incarnation()),
        "served where it was"
    );
    assert_eq!(a.rebalance().await.unwrap(), 1, "idle now, handed off");
    for (i, k) in keys.iter().enumerate() {
        let want = if to_b.contains(&k) {
            b.incarnation()
        } else {
            a.incarnation()
        };
        // Through either node: a request for a handed-off key reaching A is redirected to B.
        let via = if i % 2 == 0 { &a } else { &b };
        let (n, h) = via
            .entity::<Counter>("counters", k.clone())
            .ask(Op::Add(1))
            .idempotent()
            .retrying()
            .send()
            .await
            .unwrap();
        assert_eq!(
            (n, h),
            (2, want),
            "{k}: served by its rendezvous node, its count carried over"
        );
        assert_eq!(a.token("counters", k).is_some(), want == a.incarnation(), "{k}");
        assert_eq!(b.token("counters", k).is_some(), want == b.incarnation(), "{k}");
    }
    // Settled: nothing moves back and forth.
    assert_eq!(a.rebalance().await.unwrap(), 0);
    assert_eq!(b.rebalance().await.unwrap(), 0);
}
