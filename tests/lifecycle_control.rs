//! The person at the power switch: kill, terminate, restart and remove children, wait for a
//! start, link actors, read incarnations and the last crash. Bad input gets typed errors.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{get, Cmd, Probe, Probes};
use crashonly::prelude::*;
use crashonly::{ChildError, CrashReason, SlotState};
use tokio::sync::Semaphore;

#[tokio::test(start_paused = true)]
async fn kill_is_a_crash_its_supervisor_handles_with_its_strategy() {
    let system = System::new();
    let (_sup, a, b) = common::pair(&system, "g", Strategy::OneForAll).await;
    a.kill().unwrap();
    assert_eq!(get(&a).await.instance, 2);
    assert_eq!(get(&b).await.instance, 2, "one-for-all restarted the sibling too");
    let s = a.stats();
    assert!(
        matches!(s.last_crash.as_deref().map(|r| &r.reason), Some(CrashReason::Killed)),
        "{s:?}"
    );
    assert!(s.last_crash_at.is_some());
}

#[tokio::test(start_paused = true)]
async fn terminate_restart_and_remove_an_actor_child() {
    let system = System::new();
    let root = system.root();
    let a = system.spawn(ActorSpec::<Probe>::named("a", Probes::default())).unwrap();
    get(&a).await;
    let gate = Arc::new(Semaphore::new(0));
    let in_flight = {
        let (a, gate) = (a.clone(), gate.clone());
        tokio::spawn(async move { a.ask(Cmd::Wait(gate)).ttl(Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let queued = {
        let a = a.clone();
        tokio::spawn(async move { a.ask(Cmd::Get).ttl(Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    root.terminate_child("a").await.unwrap();
    assert!(matches!(in_flight.await.unwrap(), Err(DeliveryError::Crashed(_))));
    assert_eq!(queued.await.unwrap().unwrap_err(), DeliveryError::Dead);
    assert_eq!(a.stats().state, SlotState::Stopped);
    assert_eq!(a.ask(Cmd::Get).await.unwrap_err(), DeliveryError::Dead);
    assert_eq!(a.kill(), Err(DeliveryError::Dead), "nothing runs to kill");
    // Kept: the same ref works again after restart_child, with a new instance.
    assert_eq!(root.children(), vec!["/a"]);
    assert!(matches!(root.restart_child("nope"), Err(ChildError::NotFound(_))));
    root.restart_child("a").unwrap();
    assert!(matches!(root.restart_child("a"), Err(ChildError::Running(_))));
    assert_eq!(get(&a).await.instance, 2);
    assert_eq!(a.stats().incarnation, 2);
    // Removed: gone for good, and the name is free again.
    root.remove_child("a").await.unwrap();
    assert!(!a.is_alive());
    assert_eq!(a.ask(Cmd::Get).await.unwrap_err(), DeliveryError::Dead);
    assert!(root.children().is_empty());
    assert!(matches!(root.remove_child("a").await, Err(ChildError::NotFound(p)) if p == "/a"));
    assert!(matches!(root.terminate_child("a").await, Err(ChildError::NotFound(_))));
    let again = system.spawn(ActorSpec::<Probe>::named("a", Probes::default())).unwrap();
    assert_eq!(get(&again).await.instance, 1);
}

#[tokio::test(start_paused = true)]
async fn a_terminated_child_is_not_restarted_by_a_group_restart() {
    let system = System::new();
    let (sup, a, b) = common::pair(&system, "g", Strategy::OneForAll).await;
    sup.terminate_child("a").await.unwrap();
    b.tell(Cmd::Panic("group restart")).await.unwrap();
    assert_eq!(get(&b).await.instance, 2);
    assert_eq!(a.stats().state, SlotState::Stopped);
    assert_eq!(a.ask(Cmd::Get).await.unwrap_err(), DeliveryError::Dead);
}

#[tokio::test(start_paused = true)]
async fn terminate_restart_and_remove_a_supervisor_subtree() {
    let system = System::new();
    let root = system.root();
    let sub = root
        .spawn_supervisor(
            SupervisorSpec::new("sub", Strategy::OneForOne)
                .child(ActorSpec::<Probe>::named("x", Probes::default()))
                .child(ActorSpec::<Probe>::named("y", Probes::default())),
        )
        .unwrap();
    let (x, y) = (sub.child::<Probe>("x").unwrap(), sub.child::<Probe>("y").unwrap());
    get(&x).await;
    get(&y).await;
    root.terminate_child("sub").await.unwrap();
    for r in [&x, &y] {
        assert_eq!(r.stats().state, SlotState::Stopped);
        assert_eq!(r.ask(Cmd::Get).await.unwrap_err(), DeliveryError::Dead);
    }
    root.restart_child("sub").unwrap();
    assert_eq!(get(&x).await.instance, 2);
    assert_eq!(get(&y).await.instance, 2);
    root.remove_child("sub").await.unwrap();
    assert!(!x.is_alive() && !y.is_alive());
    assert!(system.lookup_supervisor("/sub").is_none());
    assert!(system.lookup::<Probe>("/sub/x").is_none());
}

#[tokio::test(start_paused = true)]
async fn started_resolves_after_start_or_with_the_crash() {
    let system = System::new();
    let slow = Probes {
        start_delay: Some(Duration::from_millis(300)),
        ..Probes::default()
    };
    let starts = slow.starts.clone();
    let a = system.spawn(ActorSpec::<Probe>::named("slow", slow)).unwrap();
    let t0 = tokio::time::Instant::now();
    a.started().await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300), "waited for start");
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    assert_eq!(a.started().await, Ok(()), "at once once started");
    // A temporary child whose start fails is not restarted: the crash comes back.
    let failing = Probes::default();
    failing.fail_start.store(true, Ordering::SeqCst);
    let t = system
        .spawn(ActorSpec::<Probe>::named("failing", failing).restart(Restart::Temporary))
        .unwrap();
    let err = t.started().await.unwrap_err();
    let DeliveryError::Crashed(report) = err else {
        panic!("{err:?}")
    };
    assert!(matches!(&report.reason, CrashReason::StartFailed(m) if m == "refusing to start"));
    assert_eq!(t.started().await.unwrap_err(), DeliveryError::Crashed(report));
}

#[tokio::test(start_paused = true)]
async fn started_gives_up_with_the_supervisor_and_is_bounded_by_the_ttl() {
    let root = SupervisorSpec::new("root", Strategy::OneForOne);
    let system = System::builder()
        .config(Config::default().with_exit_on_failure(None))
        .root(root)
        .start()
        .unwrap();
    let sup = system
        .root()
        .spawn_supervisor(
            SupervisorSpec::new("g", Strategy::OneForOne)
                .intensity(2, Duration::from_secs(60))
                .restart(Restart::Temporary),
        )
        .unwrap();
    let failing = Probes::default();
    failing.fail_start.store(true, Ordering::SeqCst);
    let a = sup.spawn(ActorSpec::<Probe>::named("a", failing)).unwrap();
    assert!(
        matches!(a.started().await, Err(DeliveryError::Crashed(_))),
        "past the intensity"
    );
    // A start that takes longer than the default TTL: `started` stops waiting.
    let forever = Probes {
        start_delay: Some(Duration::from_secs(3600)),
        ..Probes::default()
    };
    let b = system.spawn(ActorSpec::<Probe>::named("b", forever)).unwrap();
    assert_eq!(b.started().await, Err(DeliveryError::Expired));
}

#[tokio::test(start_paused = true)]
async fn linked_actors_crash_together_each_under_its_own_supervisor() {
    let system = System::new();
    let left = system
        .root()
        .spawn_supervisor(
            SupervisorSpec::new("left", Strategy::OneForOne).child(ActorSpec::<Probe>::named("a", Probes::default())),
        )
        .unwrap();
    let right = system
        .root()
        .spawn_supervisor(
            SupervisorSpec::new("right", Strategy::OneForOne).child(ActorSpec::<Probe>::named("b", Probes::default())),
        )
        .unwrap();
    let (a, b) = (left.child::<Probe>("a").unwrap(), right.child::<Probe>("b").unwrap());
    get(&a).await;
    get(&b).await;
    a.link(&b).unwrap();
    a.tell(Cmd::Panic("a goes")).await.unwrap();
    assert_eq!(get(&a).await.instance, 2);
    assert_eq!(get(&b).await.instance, 2, "b crashed with a");
    let reason = b.stats().last_crash.unwrap().reason.clone();
    assert!(
        matches!(&reason, CrashReason::Linked { peer, .. } if peer == "/left/a"),
        "{reason:?}"
    );
    // The link fired once: no ping-pong, exactly one crash each.
    assert_eq!((a.stats().crashes, b.stats().crashes), (1, 1));
    // It is spent: a second crash of a does not reach b.
    a.tell(Cmd::Panic("again")).await.unwrap();
    assert_eq!(get(&a).await.instance, 3);
    assert_eq!(get(&b).await.instance, 2);
    // Linked again, the other way: b's crash reaches a. A normal end does not.
    b.link(&a).unwrap();
    b.tell(Cmd::Panic("b goes")).await.unwrap();
    assert_eq!(get(&b).await.instance, 3);
    assert_eq!(get(&a).await.instance, 4);
    a.link(&b).unwrap();
    a.tell(Cmd::Stop).await.unwrap();
    assert_eq!(
        get(&a).await.instance,
        5,
        "a permanent child is started again after a normal end"
    );
    assert_eq!(get(&b).await.instance, 3, "a normal end does not propagate");
    // Unlinked: nothing propagates.
    a.link(&b).unwrap();
    a.unlink(&b);
    a.tell(Cmd::Panic("alone")).await.unwrap();
    assert_eq!(get(&a).await.instance, 6);
    assert_eq!(get(&b).await.instance, 3);
}

#[tokio::test(start_paused = true)]
async fn bad_input_gets_typed_errors() {
    let system = System::new();
    let a = system
        .spawn(ActorSpec::<Probe>::named("a", Probes::default()).restart(Restart::Temporary))
        .unwrap();
    let b = system.spawn(ActorSpec::<Probe>::named("b", Probes::default())).unwrap();
    get(&a).await;
    a.tell(Cmd::Stop).await.unwrap(); // a temporary child that ends is gone
    while a.is_alive() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(a.kill(), Err(DeliveryError::Dead));
    assert_eq!(a.link(&b), Err(DeliveryError::Dead));
    assert_eq!(b.link(&a), Err(DeliveryError::Dead));
    assert_eq!(a.started().await, Ok(()), "it did start once");
    a.crash_reboot(); // a no-op, never a panic
    let root = system.root();
    assert!(matches!(root.terminate_child("a").await, Err(ChildError::NotFound(_))));
    assert!(matches!(root.remove_child("zzz").await, Err(ChildError::NotFound(_))));
    assert!(matches!(root.restart_child("zzz"), Err(ChildError::NotFound(_))));
    assert!(b.is_alive());
}

#[tokio::test(start_paused = true)]
async fn incarnation_and_the_next_start_while_backing_off() {
    struct Counter;
    impl Actor for Counter {
        type Args = ();
        type Msg = bool;
        type Reply = u64;
        type Error = String;
        async fn start(_: &(), ctx: &mut Context<Self>) -> Result<Self, String> {
            assert!(ctx.incarnation() >= 1);
            Ok(Counter)
        }
        async fn handle(&mut self, crash: bool, ctx: &mut Context<Self>) -> Result<u64, String> {
            if crash {
                return Err("asked to".into());
            }
            Ok(ctx.incarnation())
        }
    }
    let system = System::new();
    let sup = system
        .root()
        .spawn_supervisor(SupervisorSpec::new("g", Strategy::OneForOne).backoff(Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(10),
        }))
        .unwrap();
    let c = sup.spawn(ActorSpec::<Counter>::named("c", ())).unwrap();
    assert_eq!(c.ask(false).await, Ok(1));
    let _ = c.ask(true).await; // first restart: immediate
    assert_eq!(c.ask(false).await, Ok(2));
    assert_eq!(c.stats().next_start_at, None);
    let _ = c.ask(true).await; // second restart within the window: backed off
    let s = c.stats();
    let due = s.next_start_at.expect("backing off: the next start is due later");
    assert!(due > tokio::time::Instant::now(), "{s:?}");
    assert!(
        matches!(s.last_crash.as_deref().map(|r| &r.reason), Some(CrashReason::HandleFailed(m)) if m == "asked to")
    );
    assert_eq!(c.ask(false).ttl(Duration::from_secs(30)).await, Ok(3));
    assert_eq!(c.stats().next_start_at, None);
    assert_eq!(c.stats().incarnation, 3);
}
