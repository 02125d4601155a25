//! Restarts under concurrency (multi-threaded runtime): one instance per slot at a time, and no
//! queued message is lost across restarts.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{get, Cmd, Probe, Probes};
use crashonly::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_restarts_never_overlap_instances_and_never_drop_queued_messages() {
    let probes: Vec<Probes> = (0..4).map(|_| Probes::default()).collect();
    let mut spec = SupervisorSpec::new("g", Strategy::OneForAll)
        .intensity(1_000_000, Duration::from_secs(60))
        .backoff(Backoff::none());
    for (i, p) in probes.iter().enumerate() {
        spec = spec.child(ActorSpec::<Probe>::named(format!("p{i}"), p.clone()));
    }
    let system = System::builder()
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(spec))
        .start()
        .unwrap();
    let refs: Vec<ActorRef<Probe>> = (0..4).map(|i| system.lookup(&format!("/g/p{i}")).unwrap()).collect();

    const PER_SENDER: u64 = 2_000;
    let mut senders = Vec::new();
    for r in refs.clone() {
        senders.push(tokio::spawn(async move {
            let mut adds = 0;
            for i in 0..PER_SENDER {
                let cmd = if i % 100 == 99 {
                    Cmd::Panic("chaos")
                } else {
                    Cmd::Add(1)
                };
                let idempotent = matches!(cmd, Cmd::Add(_));
                adds += idempotent as u64;
                r.tell(cmd)
                    .set_idempotent(idempotent)
                    .ttl(Duration::from_secs(60))
                    .await
                    .unwrap();
            }
            adds
        }));
    }
    let mut sent = Vec::new();
    for s in senders {
        sent.push(s.await.unwrap());
    }
    for (r, (p, adds)) in refs.iter().zip(probes.iter().zip(sent)) {
        get(r).await;
        // Every Add was handled exactly once (its handler has no await point, so an abort cannot
        // land between the effect and the reply), whatever the restarts in between.
        assert_eq!(p.total.load(Ordering::SeqCst), adds, "{}", r.path());
        assert!(
            !p.overlap.load(Ordering::SeqCst),
            "two instances of {} ran at once",
            r.path()
        );
        assert!(
            p.starts.load(Ordering::SeqCst) > 20,
            "{} restarted only {:?}",
            r.path(),
            p.starts
        );
    }
}
