//! Runtime leases (renewed while the owner runs, expiring when it crashes) and rejuvenation.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{get, Cmd, Probe, Probes};
use crashonly::prelude::*;
use crashonly::{Lease, LeaseError};

#[tokio::test(start_paused = true)]
async fn leases_are_bounded_exclusive_and_fenced() {
    let policy = Policy::builder().max_lease(Duration::from_secs(10)).build().unwrap();
    let system = System::builder()
        .config(Config::default().with_policy(policy))
        .start()
        .unwrap();
    let leases = system.leases();
    let a = leases.acquire("printer", "a", Duration::from_secs(3600)).unwrap();
    assert_eq!(
        a.expires_at - system.clock().now(),
        Duration::from_secs(10),
        "cut to the policy's max_lease"
    );
    match leases.acquire("printer", "b", Duration::from_secs(1)) {
        Err(LeaseError::Held { holder, .. }) => assert_eq!(holder, "a"),
        other => panic!("{other:?}"),
    }
    let a = leases.renew(&a, Duration::from_secs(5)).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!leases.is_current(&a), "never held forever");
    assert_eq!(leases.renew(&a, Duration::from_secs(5)), Err(LeaseError::Lost));
    let b = leases.acquire("printer", "b", Duration::from_secs(5)).unwrap();
    assert!(b.token > a.token);
    leases.release(&a); // stale: no effect
    assert!(leases.is_current(&b));
    leases.release(&b);
    assert!(leases.acquire("printer", "c", Duration::from_secs(1)).is_ok());
    assert!(matches!(
        leases.acquire("", "c", Duration::from_secs(1)),
        Err(LeaseError::BadInput(_))
    ));
}

/// Holds a lease on "lock" for 300 ms, renewed by the runtime while it runs.
struct Holder {
    lease: Lease,
}

#[derive(Clone, Debug)]
enum HolderMsg {
    Get,
    Crash,
}

impl Actor for Holder {
    type Args = ();
    type Msg = HolderMsg;
    type Reply = Lease;
    type Error = LeaseError;
    async fn start(_: &(), ctx: &mut Context<Self>) -> Result<Self, LeaseError> {
        Ok(Holder {
            lease: ctx.lease("lock", Duration::from_millis(300))?,
        })
    }
    async fn handle(&mut self, msg: HolderMsg, _: &mut Context<Self>) -> Result<Lease, LeaseError> {
        match msg {
            HolderMsg::Get => Ok(self.lease.clone()),
            HolderMsg::Crash => panic!("crash while holding the lease"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_actors_lease_is_renewed_while_it_runs_and_expires_when_it_crashes() {
    let system = System::new();
    let h = system
        .spawn(ActorSpec::<Holder>::named("holder", ()).restart(Restart::Temporary))
        .unwrap();
    let lease = h.ask(HolderMsg::Get).await.unwrap();
    assert_eq!(lease.holder, "/holder");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(system.leases().is_current(&lease), "renewed by the runtime for 2 s");
    assert!(system
        .leases()
        .acquire("lock", "other", Duration::from_secs(1))
        .is_err());
    h.tell(HolderMsg::Crash).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        !system.leases().is_current(&lease),
        "no renewal after the crash: it expired"
    );
    assert!(system.leases().acquire("lock", "other", Duration::from_secs(1)).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_restarted_owner_takes_its_lease_over_with_a_newer_token() {
    let system = System::new();
    let h = system.spawn(ActorSpec::<Holder>::named("holder", ())).unwrap();
    let first = h.ask(HolderMsg::Get).await.unwrap();
    h.tell(HolderMsg::Crash).await.unwrap();
    let second = h.ask(HolderMsg::Get).await.unwrap();
    assert!(second.token > first.token);
    assert!(
        !system.leases().is_current(&first),
        "the old incarnation's token is fenced out"
    );
}

#[tokio::test(start_paused = true)]
async fn rejuvenation_on_demand_finishes_the_current_message_and_keeps_the_queue() {
    let system = System::new();
    let p = Probes::default();
    let a = system.spawn(ActorSpec::<Probe>::named("old", p.clone())).unwrap();
    a.tell(Cmd::Add(1)).await.unwrap();
    let slow = {
        let a = a.clone();
        tokio::spawn(async move { a.ask(Cmd::Sleep(Duration::from_millis(200))).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.rejuvenate();
    a.tell(Cmd::Add(1)).await.unwrap();
    let finished = slow.await.unwrap().unwrap();
    assert_eq!(finished.instance, 1, "the message in flight completed, it did not fail");
    let seen = get(&a).await;
    assert_eq!(
        (seen.instance, seen.n),
        (2, 1),
        "fresh state; the queued message waited for it"
    );
    assert_eq!(a.stats().crashes, 0);
    assert_eq!(a.stats().restarts, 1);
}

#[tokio::test(start_paused = true)]
async fn rejuvenation_after_n_messages_and_after_an_age() {
    let system = System::new();
    let p = Probes::default();
    let a = system
        .spawn(ActorSpec::<Probe>::named("n", p.clone()).rejuvenate_after_messages(3))
        .unwrap();
    for _ in 0..7 {
        a.ask(Cmd::Add(1)).await.unwrap();
    }
    assert_eq!(p.starts.load(Ordering::SeqCst), 3, "restarted after messages 3 and 6");
    let q = Probes::default();
    let b = system
        .spawn(ActorSpec::<Probe>::named("aged", q.clone()).rejuvenate_after(Duration::from_secs(60)))
        .unwrap();
    get(&b).await;
    tokio::time::sleep(Duration::from_secs(150)).await;
    assert_eq!(
        q.starts.load(Ordering::SeqCst),
        3,
        "restarted at 60 s and 120 s, even while idle"
    );
}

#[tokio::test(start_paused = true)]
async fn rejuvenating_a_subtree_quiesces_it_so_requests_wait_rather_than_fail() {
    let mut spec = SupervisorSpec::new("pool", Strategy::OneForAll);
    for i in 0..3 {
        spec = spec.child(ActorSpec::<Probe>::named(format!("w{i}"), Probes::default()));
    }
    let system = System::builder()
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(spec))
        .start()
        .unwrap();
    let sup = system.lookup_supervisor("/pool").unwrap();
    let workers: Vec<ActorRef<Probe>> = (0..3).map(|i| sup.child(&format!("w{i}")).unwrap()).collect();
    for w in &workers {
        get(w).await;
    }
    let in_flight = {
        let w = workers[0].clone();
        tokio::spawn(async move { w.ask(Cmd::Sleep(Duration::from_millis(100))).await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    sup.rejuvenate();
    let queued: Vec<_> = workers.iter().map(|w| w.ask(Cmd::Get)).collect();
    for q in queued {
        assert_eq!(q.await.unwrap().instance, 2, "served by the new instance");
    }
    assert!(in_flight.await.unwrap().is_ok(), "the in-flight request completed");
}
