//! OTP's supervision rules as users of Erlang, Akka and kameo rely on them: temporary children in
//! group restarts, a crash counted once, the real reason for the asker of the message in flight,
//! and mailboxes that close when the system goes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{get, Cmd, Probe, Probes};
use crashonly::prelude::*;
use crashonly::{CrashReason, SlotState};
use tokio::sync::Semaphore;

fn group_tree(strategy: Strategy) -> SupervisorSpec {
    SupervisorSpec::new("g", strategy)
        .intensity(100, Duration::from_secs(1))
        .backoff(Backoff::none())
        .child(ActorSpec::<Probe>::named("temp", Probes::default()).restart(Restart::Temporary))
        .child(ActorSpec::<Probe>::named("crasher", Probes::default()))
        .child(ActorSpec::<Probe>::named("trans", Probes::default()).restart(Restart::Transient))
        .child(ActorSpec::<Probe>::named("perm", Probes::default()))
        .child(ActorSpec::<Probe>::named("temp2", Probes::default()).restart(Restart::Temporary))
}

async fn group_restart(strategy: Strategy) -> (System, [ActorRef<Probe>; 5]) {
    let system = System::builder()
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(group_tree(strategy)))
        .start()
        .unwrap();
    let names = ["temp", "crasher", "trans", "perm", "temp2"];
    let refs = names.map(|n| system.lookup::<Probe>(&format!("/g/{n}")).unwrap());
    for r in &refs {
        assert_eq!(get(r).await.instance, 1);
    }
    refs[1].tell(Cmd::Panic("boom")).await.unwrap();
    // Once the crashed child answers again, its group restart is done.
    assert_eq!(get(&refs[1]).await.instance, 2);
    (system, refs)
}

#[tokio::test(start_paused = true)]
async fn one_for_all_removes_temporary_siblings_and_restarts_the_others() {
    let (system, [temp, _crasher, trans, perm, temp2]) = group_restart(Strategy::OneForAll).await;
    for gone in [&temp, &temp2] {
        assert!(!gone.is_alive(), "{} should be removed", gone.path());
        assert_eq!(gone.ask(Cmd::Get).await.unwrap_err(), DeliveryError::Dead);
    }
    assert_eq!(get(&trans).await.instance, 2, "a transient sibling is restarted");
    assert_eq!(get(&perm).await.instance, 2, "a permanent sibling is restarted");
    let children = system.lookup_supervisor("/g").unwrap().children();
    assert_eq!(children, vec!["/g/crasher", "/g/trans", "/g/perm"]);
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_removes_only_the_temporary_children_after_the_crashed_one() {
    let (_system, [temp, _crasher, trans, perm, temp2]) = group_restart(Strategy::RestForOne).await;
    assert!(
        temp.is_alive(),
        "a temporary child started before the crashed one is left alone"
    );
    assert_eq!(get(&temp).await.instance, 1);
    assert!(!temp2.is_alive());
    assert_eq!(get(&trans).await.instance, 2);
    assert_eq!(get(&perm).await.instance, 2);
}

#[tokio::test(start_paused = true)]
async fn one_crash_reboot_counts_one_crash_and_one_restart() {
    let system = System::new();
    let a = system.spawn(ActorSpec::<Probe>::named("a", Probes::default())).unwrap();
    get(&a).await;
    a.crash_reboot();
    assert_eq!(get(&a).await.instance, 2);
    let s = a.stats();
    assert_eq!((s.crashes, s.restarts), (1, 1), "{s:?}");
    // The same through a panic, and through kill().
    a.tell(Cmd::Panic("x")).await.unwrap();
    get(&a).await;
    a.kill().unwrap();
    get(&a).await;
    let s = a.stats();
    assert_eq!((s.crashes, s.restarts, s.incarnation), (3, 3, 4), "{s:?}");
}

/// Starts `Cmd::Wait` on `a` and returns the pending ask.
fn in_flight(
    a: &ActorRef<Probe>,
    gate: &Arc<Semaphore>,
) -> tokio::task::JoinHandle<Result<common::Seen, DeliveryError>> {
    let a = a.clone();
    let gate = gate.clone();
    tokio::spawn(async move { a.ask(Cmd::Wait(gate)).ttl(Duration::from_secs(60)).await })
}

fn reason_of(r: Result<common::Seen, DeliveryError>) -> CrashReason {
    match r {
        Err(DeliveryError::Crashed(report)) => report.reason.clone(),
        other => panic!("expected a crash, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_asker_learns_killed_hung_panic_and_aborted() {
    let system = System::new();
    let gate = Arc::new(Semaphore::new(0));
    // Killed from outside.
    let a = system.spawn(ActorSpec::<Probe>::named("a", Probes::default())).unwrap();
    get(&a).await;
    let pending = in_flight(&a, &gate);
    tokio::time::sleep(Duration::from_millis(1)).await;
    a.kill().unwrap();
    assert_eq!(reason_of(pending.await.unwrap()), CrashReason::Killed);
    // Hung: the watchdog's crash.
    let h = system
        .spawn(ActorSpec::<Probe>::named("h", Probes::default()).handling_lease(Duration::from_millis(100)))
        .unwrap();
    get(&h).await;
    let pending = in_flight(&h, &gate);
    let reason = reason_of(pending.await.unwrap());
    assert!(matches!(reason, CrashReason::Hung { lease_ms: 100, .. }), "{reason:?}");
    // A panic, with its message.
    let err = a.ask(Cmd::Panic("the message")).await.unwrap_err();
    let DeliveryError::Crashed(report) = err else {
        panic!("{err:?}")
    };
    assert!(matches!(&report.reason, CrashReason::Panic { message, .. } if message == "the message"));
    // Aborted by the supervisor: a sibling's crash restarts the group.
    let sup = system
        .root()
        .spawn_supervisor(
            SupervisorSpec::new("g", Strategy::OneForAll)
                .child(ActorSpec::<Probe>::named("x", Probes::default()))
                .child(ActorSpec::<Probe>::named("y", Probes::default())),
        )
        .unwrap();
    let (x, y) = (sup.child::<Probe>("x").unwrap(), sup.child::<Probe>("y").unwrap());
    get(&x).await;
    get(&y).await;
    let pending = in_flight(&x, &gate);
    tokio::time::sleep(Duration::from_millis(1)).await;
    y.tell(Cmd::Panic("sibling")).await.unwrap();
    assert_eq!(reason_of(pending.await.unwrap()), CrashReason::Aborted);
}

async fn assert_closed(a: &ActorRef<Probe>, queued: tokio::task::JoinHandle<Result<common::Seen, DeliveryError>>) {
    let before = tokio::time::Instant::now();
    assert_eq!(queued.await.unwrap().unwrap_err(), DeliveryError::Dead);
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "answered at once, not at its deadline"
    );
    assert!(!a.is_alive());
    assert_eq!(a.ask(Cmd::Get).await.unwrap_err(), DeliveryError::Dead);
    assert_eq!(a.tell(Cmd::Get).await.unwrap_err().error(), &DeliveryError::Dead);
    let back = a.try_tell(Cmd::Add(7)).unwrap_err();
    assert_eq!(back.error(), &DeliveryError::Dead);
    assert!(
        matches!(back.into_inner(), Cmd::Add(7)),
        "try_tell hands the message back"
    );
    assert_eq!(a.stats().state, SlotState::Dead);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_system_closes_every_mailbox_at_once() {
    let system = System::new();
    let a = system.spawn(ActorSpec::<Probe>::named("a", Probes::default())).unwrap();
    get(&a).await;
    let gate = Arc::new(Semaphore::new(0));
    let _busy = in_flight(&a, &gate);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let queued = {
        let a = a.clone();
        tokio::spawn(async move { a.ask(Cmd::Get).ttl(Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(system);
    assert_closed(&a, queued).await;
}

#[tokio::test(start_paused = true)]
async fn a_root_that_gave_up_closes_every_mailbox_at_once() {
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(0, Duration::from_secs(60))
        .child(ActorSpec::<Probe>::named("crasher", Probes::default()))
        .child(ActorSpec::<Probe>::named("busy", Probes::default()));
    let config = Config::default().with_exit_on_failure(None);
    let system = System::builder().config(config).root(root).start().unwrap();
    let crasher = system.lookup::<Probe>("/crasher").unwrap();
    let busy = system.lookup::<Probe>("/busy").unwrap();
    get(&busy).await;
    let gate = Arc::new(Semaphore::new(0));
    let _in_flight = in_flight(&busy, &gate);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let queued = {
        let busy = busy.clone();
        tokio::spawn(async move { busy.ask(Cmd::Get).ttl(Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    crasher.tell(Cmd::Panic("over the intensity")).await.unwrap();
    assert!(system.wait().await.is_err());
    assert_closed(&busy, queued).await;
    assert!(!crasher.is_alive());
}

#[tokio::test(start_paused = true)]
async fn a_group_restart_counts_the_crash_once_and_a_linked_sibling_does_not_restart_it_twice() {
    let system = System::new();
    let (_sup, a, b) = common::pair(&system, "g", Strategy::OneForAll).await;
    a.link(&b).unwrap();
    a.tell(Cmd::Panic("once")).await.unwrap();
    assert_eq!(get(&a).await.instance, 2);
    assert_eq!(get(&b).await.instance, 2, "restarted once, with its group");
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!((sa.crashes, sa.restarts), (1, 1), "{sa:?}");
    assert_eq!((sb.crashes, sb.restarts), (1, 1), "{sb:?}");
    assert!(matches!(
        sa.last_crash.as_deref().map(|r| &r.reason),
        Some(CrashReason::Panic { .. })
    ));
}
