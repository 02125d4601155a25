//! A fenced node comes back by itself, as a new incarnation of the same process, against real
//! PostgreSQL and NATS (`CRASHONLY_PG_URL`, `CRASHONLY_NATS_URL`; without them it says it was
//! skipped): `Node::rejoin` gives a new incarnation and subject, the old subject gets no
//! responders, the entities are claimed again with greater tokens, and the old activations'
//! fences refuse their late writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crashonly::prelude::*;
use crashonly::store::{MemoryStore, Store, StoreError, Txn};
use crashonly_cluster::{choose, is_fenced_out, Fence, Fenced, MembershipOptions, Node, NodeOptions, Remote};
use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;

const FAMILY: &str = "accts";

/// What the test sees of the activations: every fence any activation took, with its key.
#[derive(Clone, Default)]
struct World {
    store: Arc<MemoryStore>,
    fences: Arc<Mutex<Vec<(String, Fence)>>>,
}

/// A clustered entity as the cart is one: its start takes the node's token for it and records
/// it as its fence; every write carries that fence.
struct Acct {
    key: String,
    fence: Fence,
    incarnation: u64,
    store: Arc<MemoryStore>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Add(u64);

impl Remote for Add {
    const TYPE_ID: &'static str = "test.rejoin.add";
}

impl Actor for Acct {
    type Args = (String, Node, World);
    type Msg = Add;
    /// (stored value, incarnation of the serving node, its token)
    type Reply = (u64, u64, u64);
    type Error = StoreError;

    async fn start((key, node, world): &Self::Args, _: &mut Context<Self>) -> Result<Self, StoreError> {
        let token = node
            .token(FAMILY, key)
            .ok_or_else(|| StoreError::BadInput(format!("{key}: delivered without a claim")))?;
        let fence = Fence::acquire(&*world.store, FAMILY, key, token).await?;
        world.fences.lock().unwrap().push((key.clone(), fence.clone()));
        Ok(Acct {
            key: key.clone(),
            fence,
            incarnation: node.incarnation(),
            store: world.store.clone(),
        })
    }

    async fn handle(&mut self, Add(n): Add, _: &mut Context<Self>) -> Result<(u64, u64, u64), StoreError> {
        let k = format!("acct/{}", self.key).into_bytes();
        let now = match self.store.get(&k).await? {
            Some(v) => u64::from_be_bytes(v.value.as_slice().try_into().unwrap()),
            None => 0,
        } + n;
        let txn = self.fence.guard(Txn::new().put(&k, now.to_be_bytes().to_vec()));
        self.store.commit(txn).await?;
        Ok((now, self.incarnation, self.fence.token()))
    }
}

impl Entity for Acct {
    type Key = String;
}

fn urls() -> Option<(String, String)> {
    match (std::env::var("CRASHONLY_PG_URL"), std::env::var("CRASHONLY_NATS_URL")) {
        (Ok(pg), Ok(nats)) => Some((pg, nats)),
        _ => {
            crashonly::testing::skipped("CRASHONLY_PG_URL and CRASHONLY_NATS_URL are not both set (node rejoin)");
            None
        }
    }
}

/// A node serving the accounts family from its own system, whose root has the family as child
/// `accts` (so that it can be crashed and started again).
async fn node(pg: &str, nats: &str, schema: &str, world: &World) -> (Node, System) {
    let m = MembershipOptions::default()
        .with_schema(schema)
        .with_lease(Duration::from_millis(1000));
    let node = Node::start(pg, NodeOptions::new(m, nats)).await.unwrap();
    let (n, w) = (node.clone(), world.clone());
    let family = EntitySpec::<Acct>::new(FAMILY, move |k: &String| (k.clone(), n.clone(), w.clone()));
    let system = System::builder()
        .config(Config::default().with_exit_on_failure(None))
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(family))
        .start()
        .unwrap();
    node.serve(FAMILY, system.entities::<Acct>("/accts").unwrap()).unwrap();
    (node, system)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_node_rejoins_as_a_new_incarnation_and_its_old_tokens_are_fenced_out() {
    let Some((pg, nats)) = urls() else { return };
    let schema = format!("rj_{}", std::process::id());
    let world = World::default();
    let (a, system_a) = node(&pg, &nats, &schema, &world).await;
    let (b, _system_b) = node(&pg, &nats, &schema, &world).await;
    let old = a.incarnation();

    // Accounts rendezvous hashing puts on `a`, activated there.
    let members = a.membership().members().await.unwrap();
    let keys: Vec<String> = (0..)
        .map(|i| format!("acct{i}"))
        .filter(|k| choose(FAMILY, k, &members) == Some(old))
        .take(16)
        .collect();
    let mut old_tokens = Vec::new();
    for k in &keys {
        let (v, served_by, token) = a.entity::<Acct>(FAMILY, k.clone()).ask(Add(1)).send().await.unwrap();
        assert_eq!((v, served_by), (1, old), "{k}");
        assert_eq!(a.token(FAMILY, k), Some(token));
        old_tokens.push(token);
    }

    // Fenced: the database has its lease expired (as after a pause); a renewal finds it so.
    let (admin, conn) = tokio_postgres::connect(&pg, NoTls).await.unwrap();
    tokio::spawn(conn);
    admin
        .execute(
            &format!("UPDATE {schema}.members SET lease_until = clock_timestamp() - interval '1 second' WHERE incarnation = $1"),
            &[&(old as i64)],
        )
        .await
        .unwrap();
    let why = tokio::time::timeout(Duration::from_secs(2), a.membership().fenced())
        .await
        .expect("fenced within a lease");
    assert_eq!(why, Fenced::LeaseLost);
    let r = a
        .entity::<Acct>(FAMILY, keys[0].clone())
        .ask(Add(1))
        .ttl(Duration::from_millis(500))
        .send()
        .await;
    assert!(
        matches!(r, Err(DeliveryError::RetryAfter(_))),
        "a fenced node serves nothing: {r:?}"
    );

    // Crash-only: crash the family (every activation), rejoin, start the family again.
    system_a.root().terminate_child(FAMILY).await.unwrap();
    let new = a.rejoin().await.unwrap();
    system_a.root().restart_child(FAMILY).unwrap();
    assert!(new > old, "a new incarnation: {new} after {old}");
    assert_eq!(a.incarnation(), new);
    assert!(a.membership().is_fenced().is_none());
    assert!(a.membership().time_left() > Duration::ZERO);
    let incs: Vec<u64> = b
        .membership()
        .members()
        .await
        .unwrap()
        .iter()
        .map(|m| m.incarnation)
        .collect();
    assert_eq!(
        incs,
        [b.incarnation(), new],
        "the old incarnation left, the new one is live"
    );
    assert!(
        keys.iter().all(|k| a.token(FAMILY, k).is_none()),
        "no claim carried over"
    );

    // The old subject is gone: requests to it get no responders at once.
    let client = async_nats::connect(&nats).await.unwrap();
    let e = client
        .request(format!("crashonly.{schema}.node.{old}"), "x".into())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), async_nats::client::RequestErrorKind::NoResponders, "{e}");

    // It serves again, on its new subject: asked through `b`, an account rendezvous hashing now
    // puts on `a` is claimed again there with a greater token, by a new activation.
    let members = b.membership().members().await.unwrap();
    let (i, key) = keys
        .iter()
        .enumerate()
        .find(|(_, k)| choose(FAMILY, k, &members) == Some(new))
        .expect("one of 16 accounts hashes to the new incarnation");
    let (v, served_by, token) = b
        .entity::<Acct>(FAMILY, key.clone())
        .ask(Add(10))
        .idempotent()
        .retrying()
        .send()
        .await
        .unwrap();
    assert_eq!((v, served_by), (11, new), "served by the new incarnation, nothing lost");
    assert!(token > old_tokens[i], "token {token} after {}", old_tokens[i]);
    assert_eq!(a.token(FAMILY, key), Some(token));

    // The old activation's late write, and a new activation with the old token, are refused by
    // the fence in the store.
    let fences = world.fences.lock().unwrap().clone();
    let (_, stale) = fences
        .iter()
        .find(|(k, f)| k == key && f.token() == old_tokens[i])
        .expect("the old activation's fence");
    let k = format!("acct/{key}").into_bytes();
    let late = world
        .store
        .commit(stale.guard(Txn::new().put(&k, 999u64.to_be_bytes().to_vec())))
        .await
        .unwrap_err();
    assert!(is_fenced_out(&late, stale), "{late}");
    let again = Fence::acquire(&*world.store, FAMILY, key, old_tokens[i])
        .await
        .unwrap_err();
    assert!(is_fenced_out(&again, stale), "{again}");
    let stored = world.store.get(&k).await.unwrap().unwrap().value;
    assert_eq!(stored, 11u64.to_be_bytes(), "nothing of the late write applied");
}
