//! Actors, envelopes and refs: restarts keep the ref, in-flight semantics, expiry, backpressure.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{get, Cmd, Probe, Probes};
use crashonly::prelude::*;
use crashonly::{CrashReason, SlotState};
use tokio::sync::Semaphore;

fn probe(system: &System, name: &str, p: &Probes) -> ActorRef<Probe> {
    system.spawn(ActorSpec::<Probe>::named(name, p.clone())).unwrap()
}

#[tokio::test(start_paused = true)]
async fn start_runs_on_every_start_and_ref_is_stable() {
    let system = System::new();
    let p = Probes::default();
    let a = probe(&system, "a", &p);
    a.tell(Cmd::Add(5)).await.unwrap();
    assert_eq!(get(&a).await.n, 5);
    a.tell(Cmd::Panic("boom")).await.unwrap();
    // Same ref, new instance, state rebuilt by start (volatile state reset to 0).
    let seen = get(&a).await;
    assert_eq!((seen.instance, seen.n), (2, 0));
    assert_eq!(p.starts.load(Ordering::SeqCst), 2);
    assert_eq!(a.stats().restarts, 1);
    assert_eq!(a.stats().crashes, 1);
    assert_eq!(system.lookup::<Probe>("/a"), Some(a));
}

#[tokio::test(start_paused = true)]
async fn crash_report_names_path_panic_location_and_envelope() {
    let system = System::new();
    let a = probe(&system, "reporter", &Probes::default());
    let err = a.ask(Cmd::Panic("kaboom")).await.unwrap_err();
    let DeliveryError::Crashed(report) = err else {
        panic!("expected Crashed, got {err:?}")
    };
    assert_eq!(report.path, "/reporter");
    match &report.reason {
        CrashReason::Panic { message, location } => {
            assert_eq!(message, "kaboom");
            assert!(
                location.as_deref().unwrap().contains("tests/common/mod.rs"),
                "{location:?}"
            );
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    let env = report.envelope.clone().expect("the envelope being handled");
    assert_eq!(env.attempt, 1);
    assert!(!env.idempotent);

    let err = a.ask(Cmd::Fail).await.unwrap_err();
    let DeliveryError::Crashed(report) = err else {
        panic!("expected Crashed")
    };
    assert_eq!(report.reason, CrashReason::HandleFailed("told to fail".into()));
    assert!(report.to_string().contains("/reporter handle failed: told to fail"));
}

#[tokio::test(start_paused = true)]
async fn in_flight_idempotent_is_redelivered_non_idempotent_is_not() {
    let system = System::new();
    let p = Probes::default();
    let a = probe(&system, "a", &p);

    // At-least-once: the idempotent message is handed to the next instance, attempt 2.
    let once = Arc::new(AtomicBool::new(false));
    let seen = a.ask(Cmd::PanicOnce(once.clone())).idempotent().await.unwrap();
    assert_eq!(seen.instance, 2);
    assert_eq!(seen.header.unwrap().attempt, 2);

    // At-most-once: the asker gets Crashed and the message is not handled again.
    let once = Arc::new(AtomicBool::new(false));
    let err = a.ask(Cmd::PanicOnce(once)).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Crashed(_)));
    assert_eq!(get(&a).await.instance, 3);
    let log = p.log.lock().unwrap().clone();
    assert_eq!(log.iter().filter(|l| l.contains("PanicOnce")).count(), 3, "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn idempotent_redelivery_respects_the_deadline() {
    let system = System::new();
    let p = Probes::default();
    let a = probe(&system, "slow", &p);
    // Crashes at 200 ms, after its 100 ms deadline: not redelivered although idempotent.
    let err = a
        .ask(Cmd::SleepThenPanic(Duration::from_millis(200)))
        .ttl(Duration::from_millis(100))
        .idempotent()
        .await;
    assert_eq!(err.unwrap_err(), DeliveryError::Expired);
    let seen = get(&a).await;
    assert_eq!(seen.instance, 2);
    let log = p.log.lock().unwrap().clone();
    assert_eq!(
        log.iter().filter(|l| l.contains("SleepThenPanic")).count(),
        1,
        "{log:?}"
    );
    // Within its deadline, the same message is redelivered (and crashes again).
    let err = a
        .ask(Cmd::SleepThenPanic(Duration::from_millis(10)))
        .ttl(Duration::from_millis(25))
        .idempotent()
        .await;
    assert!(
        matches!(err, Err(DeliveryError::Expired) | Err(DeliveryError::Crashed(_))),
        "{err:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = p.log.lock().unwrap().clone();
    assert_eq!(
        log.iter().filter(|l| l.contains("SleepThenPanic(10ms)")).count(),
        2,
        "{log:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn messages_sent_during_restart_go_to_the_new_instance() {
    let system = System::new();
    let p = Probes {
        start_delay: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let a = probe(&system, "a", &p);
    assert_eq!(get(&a).await.instance, 1);
    a.tell(Cmd::Panic("x")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(a.stats().state, SlotState::Starting);
    for _ in 0..10 {
        a.tell(Cmd::Add(1)).await.unwrap();
    }
    let seen = get(&a).await;
    assert_eq!((seen.instance, seen.n), (2, 10));
}

#[tokio::test(start_paused = true)]
async fn expired_envelopes_are_dropped_with_an_error() {
    let system = System::new();
    let p = Probes::default();
    let a = probe(&system, "a", &p);
    get(&a).await;
    a.tell(Cmd::Sleep(Duration::from_millis(100))).await.unwrap();
    // Queued behind a 100 ms message with 10 ms to live: never handled.
    a.tell(Cmd::Add(7)).ttl(Duration::from_millis(10)).await.unwrap();
    let err = a.ask(Cmd::Add(9)).ttl(Duration::from_millis(10)).await.unwrap_err();
    assert_eq!(err, DeliveryError::Expired);
    assert_eq!(get(&a).await.n, 0);
    let log = p.log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l.contains("Add")), "{log:?}");
}

#[tokio::test(start_paused = true)]
async fn ask_has_a_default_deadline() {
    let system = System::builder()
        .config(
            Config::default().with_policy(
                Policy::builder()
                    .default_ttl(Duration::from_millis(250))
                    .build()
                    .unwrap(),
            ),
        )
        .start()
        .unwrap();
    let a = probe(&system, "a", &Probes::default());
    let started = system.clock().now();
    let err = a.ask(Cmd::Sleep(Duration::from_secs(3600))).await.unwrap_err();
    assert_eq!(err, DeliveryError::Expired);
    assert_eq!(system.clock().now() - started, Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn full_mailbox_applies_backpressure() {
    let system = System::new();
    let a = system
        .spawn(ActorSpec::<Probe>::named("small", Probes::default()).mailbox_capacity(2))
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    a.tell(Cmd::Wait(gate.clone())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await; // the actor takes it and blocks
    a.try_tell(Cmd::Add(1)).unwrap();
    a.try_tell(Cmd::Add(1)).unwrap();
    // try_tell fails fast and gives the message back.
    let err = a.try_tell(Cmd::Add(100)).unwrap_err();
    assert_eq!(err.error(), &DeliveryError::MailboxFull);
    assert!(matches!(err.into_inner(), Cmd::Add(100)));
    // tell waits for room until its deadline.
    let err = a.tell(Cmd::Add(100)).ttl(Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(err.error(), &DeliveryError::MailboxFull);
    // ... and gets in once there is room.
    let a2 = a.clone();
    let waiting = tokio::spawn(async move { a2.tell(Cmd::Add(1)).ttl(Duration::from_secs(10)).await.is_ok() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    gate.add_permits(1);
    assert!(waiting.await.unwrap());
    assert_eq!(get(&a).await.n, 3);
}

#[tokio::test(start_paused = true)]
async fn sub_requests_inherit_deadline_and_trace() {
    struct Front {
        back: ActorRef<Probe>,
    }
    impl Actor for Front {
        type Args = ActorRef<Probe>;
        type Msg = ();
        type Reply = (crashonly::Header, crashonly::Header);
        type Error = DeliveryError;
        async fn start(back: &ActorRef<Probe>, _: &mut Context<Self>) -> Result<Self, DeliveryError> {
            Ok(Front { back: back.clone() })
        }
        async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<Self::Reply, DeliveryError> {
            let seen = ctx.ask(&self.back, Cmd::Get).await?;
            Ok((ctx.header().unwrap().clone(), seen.header.unwrap()))
        }
    }
    let system = System::new();
    let back = probe(&system, "back", &Probes::default());
    let front = system.spawn(ActorSpec::<Front>::named("front", back)).unwrap();
    let (outer, inner) = front.ask(()).ttl(Duration::from_millis(700)).await.unwrap();
    assert_eq!(inner.deadline, outer.deadline);
    assert_eq!(inner.trace.trace_id, outer.trace.trace_id);
    assert_eq!(inner.trace.parent, Some(outer.id.span_id()));
    assert_ne!(inner.id, outer.id);
}

#[tokio::test(start_paused = true)]
async fn start_failure_is_a_crash_and_is_retried() {
    let system = System::builder()
        .root(SupervisorSpec::new("root", Strategy::OneForOne).intensity(100, Duration::from_secs(60)))
        .start()
        .unwrap();
    let p = Probes::default();
    p.fail_start.store(true, Ordering::SeqCst);
    let a = probe(&system, "flaky", &p);
    let mut downs = system.monitor(&a);
    let down = downs.recv().await.unwrap();
    let DownReason::Crashed(report) = down.reason else {
        panic!("expected a crash")
    };
    assert_eq!(report.reason, CrashReason::StartFailed("refusing to start".into()));
    p.fail_start.store(false, Ordering::SeqCst);
    assert!(get(&a).await.instance >= 2);
}

#[tokio::test(start_paused = true)]
async fn the_policy_caps_every_ttl() {
    let policy = Policy::builder()
        .max_ttl(Duration::from_secs(2))
        .default_ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let system = System::builder()
        .config(Config::default().with_policy(policy))
        .start()
        .unwrap();
    let a = probe(&system, "capped", &Probes::default());
    let now = system.clock().now();
    let seen = a.ask(Cmd::Get).ttl(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(seen.header.unwrap().deadline, now + Duration::from_secs(2));
    let far = now + Duration::from_secs(3600);
    let seen = a.ask(Cmd::Get).deadline(far).await.unwrap();
    assert_eq!(seen.header.unwrap().deadline, now + Duration::from_secs(2));
    let seen = a.ask(Cmd::Get).await.unwrap();
    assert_eq!(seen.header.unwrap().deadline, now + Duration::from_secs(1));
}

#[test]
fn unbounded_policies_are_refused() {
    let zero = Policy::builder().max_handling(Duration::ZERO).build().unwrap_err();
    assert!(zero.to_string().contains("max_handling is zero"), "{zero}");
    let inf = Policy::builder().max_ttl(Duration::MAX).build().unwrap_err();
    assert!(inf.to_string().contains("max_ttl is infinite"), "{inf}");
    let retries = Policy::builder().max_retries(u32::MAX).build().unwrap_err();
    assert!(retries.to_string().contains("infinite"));
    let odd = Policy::builder()
        .default_ttl(Duration::from_secs(10))
        .max_ttl(Duration::from_secs(1))
        .build();
    assert!(odd.unwrap_err().to_string().contains("exceeds max_ttl"));
}

#[tokio::test(start_paused = true)]
async fn a_recovery_agent_can_crash_reboot_an_actor_from_outside() {
    let system = System::new();
    let p = Probes::default();
    let a = probe(&system, "victim", &p);
    let mut downs = system.monitor(&a);
    a.tell(Cmd::Add(3)).await.unwrap();
    assert_eq!(get(&a).await.n, 3);
    // In the middle of a long message: aborted wherever it is, without its cooperation.
    let long = {
        let a = a.clone();
        tokio::spawn(async move { a.ask(Cmd::Sleep(Duration::from_secs(60))).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.crash_reboot();
    let DownReason::Crashed(report) = downs.recv().await.unwrap().reason else {
        panic!("expected a crash")
    };
    assert_eq!(report.reason, CrashReason::Killed);
    assert!(
        matches!(long.await.unwrap(), Err(DeliveryError::Crashed(_))),
        "not idempotent: at-most-once"
    );
    let seen = get(&a).await;
    assert_eq!((seen.instance, seen.n), (2, 0));
}

/// `__private::ask_with` (how a cluster node answers a remote ask): the outcome is handed to a
/// function in the actor's task, once, whatever becomes of the message.
#[tokio::test(start_paused = true)]
async fn an_ask_with_a_reply_function_is_answered_once_where_the_reply_is_made() {
    use crashonly::__private::{ask_with, OnReply};
    type Outcome = (Option<tokio::task::Id>, Result<u64, DeliveryError>);
    let on_reply = || {
        let (tx, rx) = tokio::sync::oneshot::channel::<Outcome>();
        let f = OnReply::new(move |r: Result<common::Seen, DeliveryError>| {
            let _ = tx.send((tokio::task::try_id(), r.map(|s| s.n)));
        });
        (f, rx)
    };
    let system = System::new();
    let a = system
        .spawn(
            ActorSpec::<Probe>::named("replies", Probes::default())
                .mailbox_capacity(1)
                .restart(Restart::Transient),
        )
        .unwrap();
    // Delivered at once (no future to poll); answered by the actor's task, not this one.
    let (f, rx) = on_reply();
    assert!(ask_with(a.ask(Cmd::Add(2)), f).is_none());
    let (task, outcome) = rx.await.unwrap();
    assert_eq!(outcome, Ok(2));
    assert!(task.is_some(), "called in the actor's task");
    // A crash while handling it.
    let (f, rx) = on_reply();
    assert!(ask_with(a.ask(Cmd::Panic("boom")), f).is_none());
    assert!(matches!(rx.await.unwrap().1, Err(DeliveryError::Crashed(_))));
    // A full mailbox: a future that waits for room until the deadline, then gives up.
    let gate = Arc::new(Semaphore::new(0));
    a.tell(Cmd::Wait(gate.clone())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await; // the actor takes it and blocks
    a.try_tell(Cmd::Add(1)).unwrap();
    let (f, mut late) = on_reply();
    let waiting = ask_with(a.ask(Cmd::Add(10)).ttl(Duration::from_millis(50)), f).expect("waits for room");
    waiting.await;
    assert_eq!(late.try_recv().unwrap().1, Err(DeliveryError::MailboxFull));
    let (f, rx) = on_reply();
    let waiting = ask_with(a.ask(Cmd::Add(10)).ttl(Duration::from_secs(10)), f).expect("waits for room");
    let waiting = tokio::spawn(waiting);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    gate.add_permits(1);
    waiting.await.unwrap();
    assert_eq!(rx.await.unwrap().1, Ok(11));
    // An expired ask is answered so, in the actor's task.
    let (f, rx) = on_reply();
    assert!(ask_with(a.ask(Cmd::Get).ttl(Duration::ZERO), f).is_none());
    assert_eq!(rx.await.unwrap().1, Err(DeliveryError::Expired));
    // A dead actor (it ended, and is not restarted): answered at once, here.
    a.ask(Cmd::Stop).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (f, mut rx) = on_reply();
    assert!(ask_with(a.ask(Cmd::Get), f).is_none());
    assert_eq!(rx.try_recv().unwrap().1, Err(DeliveryError::Dead));
    // Dropped unanswered: called with `Dead`, exactly once.
    let (f, mut rx) = on_reply();
    drop(f);
    assert_eq!(rx.try_recv().unwrap().1, Err(DeliveryError::Dead));
}
