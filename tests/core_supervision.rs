//! Supervision: strategies, restart types, intensity and escalation, subtrees, monitors, timers.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{get, Cmd, Probe, Probes};
use crashonly::prelude::*;
use crashonly::{CrashReason, SupervisorRef};

fn group(strategy: Strategy) -> (System, Vec<ActorRef<Probe>>) {
    let mut spec = SupervisorSpec::new("g", strategy).intensity(100, Duration::from_secs(60));
    for name in ["a", "b", "c"] {
        spec = spec.child(ActorSpec::<Probe>::named(name, Probes::default()));
    }
    let system = System::builder()
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(spec))
        .start()
        .unwrap();
    let refs = ["a", "b", "c"]
        .iter()
        .map(|n| system.lookup::<Probe>(&format!("/g/{n}")).unwrap())
        .collect();
    (system, refs)
}

/// Adds 1 to each and waits until each has handled it (so every instance is running).
async fn fill(refs: &[ActorRef<Probe>]) {
    for r in refs {
        r.tell(Cmd::Add(1)).await.unwrap();
    }
    for r in refs {
        assert_eq!(get(r).await.n, 1);
    }
}

async fn counts(refs: &[ActorRef<Probe>]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for r in refs {
        let s = get(r).await;
        out.push((s.instance, s.n));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_crashed_child() {
    let (_system, refs) = group(Strategy::OneForOne);
    fill(&refs).await;
    refs[1].tell(Cmd::Panic("b")).await.unwrap();
    get(&refs[1]).await; // the restart has happened
    assert_eq!(counts(&refs).await, vec![(1, 1), (2, 0), (1, 1)]);
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_every_child() {
    let (_system, refs) = group(Strategy::OneForAll);
    fill(&refs).await;
    refs[1].tell(Cmd::Panic("b")).await.unwrap();
    get(&refs[1]).await; // the restart has happened
    assert_eq!(counts(&refs).await, vec![(2, 0), (2, 0), (2, 0)]);
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_child_and_those_after_it() {
    let (_system, refs) = group(Strategy::RestForOne);
    fill(&refs).await;
    refs[1].tell(Cmd::Panic("b")).await.unwrap();
    get(&refs[1]).await; // the restart has happened
    assert_eq!(counts(&refs).await, vec![(1, 1), (2, 0), (2, 0)]);
}

#[tokio::test(start_paused = true)]
async fn permanent_restarts_after_crash_and_after_normal_end() {
    let system = System::new();
    let a = system.spawn(ActorSpec::<Probe>::named("p", Probes::default())).unwrap();
    a.tell(Cmd::Panic("x")).await.unwrap();
    assert_eq!(get(&a).await.instance, 2);
    a.tell(Cmd::Stop).await.unwrap();
    assert_eq!(get(&a).await.instance, 3);
}

#[tokio::test(start_paused = true)]
async fn transient_restarts_after_crash_but_not_after_normal_end() {
    let system = System::new();
    let a = system
        .spawn(ActorSpec::<Probe>::named("t", Probes::default()).restart(Restart::Transient))
        .unwrap();
    a.tell(Cmd::Panic("x")).await.unwrap();
    assert_eq!(get(&a).await.instance, 2);
    a.ask(Cmd::Stop).await.unwrap();
    assert_eq!(a.ask(Cmd::Get).await.unwrap_err(), DeliveryError::Dead);
    assert!(!a.is_alive());
    assert!(system.lookup::<Probe>("/t").is_none());
}

#[tokio::test(start_paused = true)]
async fn temporary_is_removed_after_a_crash_and_stale_refs_and_ids_get_dead() {
    let system = System::new();
    let p = Probes::default();
    let a = system
        .spawn(ActorSpec::<Probe>::named("tmp", p.clone()).restart(Restart::Temporary))
        .unwrap();
    let id = a.id();
    a.tell(Cmd::Add(1)).await.unwrap();
    a.tell(Cmd::Panic("gone")).await.unwrap();
    a.tell(Cmd::Add(1)).await.ok(); // queued behind the crash, or refused: either way never handled
    let err = a.ask(Cmd::Get).await.unwrap_err();
    assert_eq!(err, DeliveryError::Dead);
    assert_eq!(a.try_tell(Cmd::Get).unwrap_err().error(), &DeliveryError::Dead);
    assert_eq!(system.get::<Probe>(id).unwrap_err(), DeliveryError::Dead);
    assert_eq!(p.starts.load(Ordering::SeqCst), 1);
    // The slab index is reused with a new generation: the stale id never reaches the new actor.
    let b = system
        .spawn(ActorSpec::<Probe>::named("tmp", Probes::default()))
        .unwrap();
    assert_eq!(b.id().index(), id.index());
    assert_ne!(b.id(), id);
    assert_eq!(system.get::<Probe>(id).unwrap_err(), DeliveryError::Dead);
    assert_eq!(system.get::<Probe>(b.id()).unwrap(), b);
    assert_eq!(a.ask(Cmd::Get).await.unwrap_err(), DeliveryError::Dead);
}

#[tokio::test(start_paused = true)]
async fn names_are_unique_per_parent_and_validated() {
    let system = System::new();
    system.spawn(ActorSpec::<Probe>::named("x", Probes::default())).unwrap();
    let err = system
        .spawn(ActorSpec::<Probe>::named("x", Probes::default()))
        .unwrap_err();
    assert_eq!(err, crashonly::SpawnError::NameTaken("/x".into()));
    let err = system
        .spawn(ActorSpec::<Probe>::named("a/b", Probes::default()))
        .unwrap_err();
    assert!(matches!(err, crashonly::SpawnError::BadName(_)));
    let anon = system.spawn(ActorSpec::<Probe>::new(Probes::default())).unwrap();
    assert!(anon.path().to_string().starts_with("/#"));
}

/// root(1 in 60 s) -> mid(max 1 in 60 s) -> leaf
fn escalation_tree(root_max: u32) -> (System, ActorRef<Probe>, Probes) {
    let p = Probes::default();
    let mid = SupervisorSpec::new("mid", Strategy::OneForOne)
        .intensity(1, Duration::from_secs(60))
        .child(ActorSpec::<Probe>::named("leaf", p.clone()))
        .child(ActorSpec::<Probe>::named("sibling", Probes::default()));
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(root_max, Duration::from_secs(60))
        .child(mid);
    // The root fails on purpose here: the test, not the watchdog, decides what happens next.
    let config = Config::default().with_exit_on_failure(None);
    let system = System::builder().config(config).root(root).start().unwrap();
    let leaf = system.lookup::<Probe>("/mid/leaf").unwrap();
    (system, leaf, p)
}

#[tokio::test(start_paused = true)]
async fn intensity_exceeded_escalates_one_level() {
    let (system, leaf, p) = escalation_tree(5);
    let sibling = system.lookup::<Probe>("/mid/sibling").unwrap();
    sibling.tell(Cmd::Add(3)).await.unwrap();
    leaf.tell(Cmd::Panic("1")).await.unwrap(); // mid restarts the leaf (1 of 1)
    assert_eq!(get(&leaf).await.instance, 2);
    assert_eq!(get(&sibling).await.n, 3);
    leaf.tell(Cmd::Panic("2")).await.unwrap(); // mid gives up; root restarts mid's subtree
    assert_eq!(get(&leaf).await.instance, 3);
    let s = get(&sibling).await;
    assert_eq!((s.instance, s.n), (2, 0), "the sibling was restarted with its subtree");
    assert!(system.failure().is_none());
    // mid's restart history is fresh after its own restart: one more leaf crash is absorbed.
    leaf.tell(Cmd::Panic("3")).await.unwrap();
    assert_eq!(get(&leaf).await.instance, 4);
    assert_eq!(get(&sibling).await.instance, 2);
    assert_eq!(p.starts.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn escalation_reaches_the_root_and_the_system_fails() {
    let (system, leaf, _) = escalation_tree(1);
    leaf.tell(Cmd::Panic("1")).await.unwrap();
    get(&leaf).await;
    leaf.tell(Cmd::Panic("2")).await.unwrap(); // mid gives up -> root restarts mid (1 of 1)
    get(&leaf).await;
    leaf.tell(Cmd::Panic("3")).await.unwrap(); // absorbed by mid
    get(&leaf).await;
    leaf.tell(Cmd::Panic("4")).await.unwrap(); // mid gives up -> root gives up
    let err = tokio::time::timeout(Duration::from_secs(5), system.wait())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.report.path, "/");
    assert!(matches!(
        err.report.reason,
        CrashReason::IntensityExceeded { max_restarts: 1, .. }
    ));
    assert!(err.to_string().starts_with("root supervisor gave up"));
    // The whole tree was aborted and every mailbox closed: nothing answers any more, at once.
    assert!(!leaf.is_alive());
    let e = leaf.ask(Cmd::Get).ttl(Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(e, DeliveryError::Dead);
}

#[tokio::test(start_paused = true)]
async fn three_level_tree_restarts_the_right_subtree_only() {
    // root -> a(one-for-one) -> { b(one-for-all) -> {b1, b2}, c } ; root -> d
    let b = SupervisorSpec::new("b", Strategy::OneForAll)
        .child(ActorSpec::<Probe>::named("b1", Probes::default()))
        .child(ActorSpec::<Probe>::named("b2", Probes::default()));
    let a = SupervisorSpec::new("a", Strategy::OneForOne)
        .child(b)
        .child(ActorSpec::<Probe>::named("c", Probes::default()));
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .child(a)
        .child(ActorSpec::<Probe>::named("d", Probes::default()));
    let system = System::builder().root(root).start().unwrap();
    let names = ["/a/b/b1", "/a/b/b2", "/a/c", "/d"];
    let refs: Vec<_> = names.iter().map(|n| system.lookup::<Probe>(n).unwrap()).collect();
    fill(&refs).await;
    refs[0].tell(Cmd::Panic("b1")).await.unwrap();
    get(&refs[0]).await;
    assert_eq!(counts(&refs).await, vec![(2, 0), (2, 0), (1, 1), (1, 1)]);

    let sup_b: SupervisorRef = system.lookup_supervisor("/a/b").unwrap();
    assert_eq!(sup_b.children(), vec!["/a/b/b1", "/a/b/b2"]);
    assert_eq!(system.root().supervisor("a").unwrap().path(), "/a");
    assert_eq!(
        system.root().supervisor("a").unwrap().child::<Probe>("c"),
        Some(refs[2].clone())
    );
}

#[tokio::test(start_paused = true)]
async fn dynamic_children_and_subtrees() {
    let system = System::new();
    let sup = system
        .root()
        .spawn_supervisor(SupervisorSpec::new("workers", Strategy::OneForAll))
        .unwrap();
    let w1 = sup.spawn(ActorSpec::<Probe>::named("w1", Probes::default())).unwrap();
    let w2 = sup.spawn(ActorSpec::<Probe>::named("w2", Probes::default())).unwrap();
    assert_eq!(w2.path(), "/workers/w2");
    w2.tell(Cmd::Add(2)).await.unwrap();
    assert_eq!(get(&w2).await.n, 2);
    get(&w1).await;
    w1.tell(Cmd::Panic("w1")).await.unwrap();
    get(&w1).await;
    let s = get(&w2).await;
    assert_eq!((s.instance, s.n), (2, 0));
    assert_eq!(system.len(), 4); // root, workers, w1, w2
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_repeated_restarts() {
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(100, Duration::from_secs(600))
        .backoff(Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
        });
    let system = System::builder().root(root).start().unwrap();
    let a = system.spawn(ActorSpec::<Probe>::named("a", Probes::default())).unwrap();
    let clock = system.clock().clone();
    let mut waits = Vec::new();
    for _ in 0..5 {
        let t0 = clock.now();
        a.tell(Cmd::Panic("again")).await.unwrap();
        get(&a).await;
        waits.push(clock.now() - t0);
    }
    assert_eq!(waits[0], Duration::ZERO, "the first restart is immediate");
    // Then 100, 200, 400, 400 ms, each jittered over its upper half.
    for (w, full) in waits[1..].iter().zip([100u64, 200, 400, 400]) {
        let full = Duration::from_millis(full);
        assert!(*w >= full / 2 && *w <= full, "{w:?} not in [{:?}, {full:?}]", full / 2);
    }
}

#[tokio::test(start_paused = true)]
async fn monitors_fire_on_crash_and_end() {
    let system = System::new();
    let a = system
        .spawn(ActorSpec::<Probe>::named("watched", Probes::default()).restart(Restart::Transient))
        .unwrap();
    let mut downs = system.monitor(&a);
    a.tell(Cmd::Panic("seen")).await.unwrap();
    let d = downs.recv().await.unwrap();
    assert_eq!(d.path, "/watched");
    assert!(d.restarting);
    let DownReason::Crashed(report) = &d.reason else {
        panic!("expected Crashed")
    };
    assert!(matches!(&report.reason, CrashReason::Panic { message, .. } if message == "seen"));
    a.tell(Cmd::Stop).await.unwrap();
    let d = downs.recv().await.unwrap();
    assert_eq!(d.reason, DownReason::Ended);
    assert!(!d.restarting);
}

/// An actor that watches another one and counts its downs.
struct Watcher {
    downs: Vec<Down>,
}

impl Actor for Watcher {
    type Args = ActorRef<Probe>;
    type Msg = Option<Down>;
    type Reply = usize;
    type Error = String;
    async fn start(target: &ActorRef<Probe>, ctx: &mut Context<Self>) -> Result<Self, String> {
        ctx.monitor(target, Some);
        Ok(Watcher { downs: Vec::new() })
    }
    async fn handle(&mut self, msg: Option<Down>, _: &mut Context<Self>) -> Result<usize, String> {
        if let Some(d) = msg {
            self.downs.push(d);
        }
        Ok(self.downs.len())
    }
}

#[tokio::test(start_paused = true)]
async fn actors_monitor_actors() {
    let system = System::new();
    let target = system
        .spawn(ActorSpec::<Probe>::named("target", Probes::default()))
        .unwrap();
    let watcher = system
        .spawn(ActorSpec::<Watcher>::named("watcher", target.clone()))
        .unwrap();
    assert_eq!(watcher.ask(None).await.unwrap(), 0);
    target.tell(Cmd::Panic("one")).await.unwrap();
    get(&target).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(watcher.ask(None).await.unwrap(), 1);
    // The watcher restarts and registers again: replaced, not doubled.
    watcher
        .tell(Some(Down {
            id: target.id(),
            path: "x".into(),
            reason: DownReason::Ended,
            restarting: false,
        }))
        .await
        .unwrap();
    target.tell(Cmd::Panic("two")).await.unwrap();
    get(&target).await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(watcher.ask(None).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn timers_fire_and_die_with_their_instance() {
    let system = System::new();
    let a = system.spawn(ActorSpec::<Probe>::named("t", Probes::default())).unwrap();
    a.tell(Cmd::After(Duration::from_millis(500))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(499)).await;
    assert_eq!(get(&a).await.n, 0);
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(get(&a).await.n, 1);

    a.tell(Cmd::Every(Duration::from_millis(100))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(get(&a).await.n, 6);
    // A crash cancels the instance's timers: the new instance's count stays 0.
    a.tell(Cmd::Panic("stop timers")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let s = get(&a).await;
    assert_eq!((s.instance, s.n), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn backoff_is_per_child_so_a_crash_loop_does_not_slow_its_siblings() {
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(100, Duration::from_secs(600))
        .backoff(Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(400),
        });
    let system = System::builder().root(root).start().unwrap();
    let looping = system
        .spawn(ActorSpec::<Probe>::named("looping", Probes::default()))
        .unwrap();
    let healthy = system
        .spawn(ActorSpec::<Probe>::named("healthy", Probes::default()))
        .unwrap();
    for _ in 0..4 {
        looping.tell(Cmd::Panic("again")).await.unwrap();
        get(&looping).await;
    }
    let t0 = system.clock().now();
    healthy.tell(Cmd::Panic("first time")).await.unwrap();
    assert_eq!(get(&healthy).await.instance, 2);
    assert_eq!(system.clock().now(), t0, "the sibling's first restart is immediate");
}
