//! RetryAfter, retrying asks, idempotency keys.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{get, Cmd, Probe, Probes};
use crashonly::prelude::*;

fn system(max_retries: u32) -> System {
    let policy = Policy::builder()
        .max_retries(max_retries)
        .retry_backoff(Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(20),
        })
        .build()
        .unwrap();
    System::builder()
        .config(Config::default().with_policy(policy))
        .start()
        .unwrap()
}

/// A probe whose `start` takes 400 ms, crashed once it has started: it is recovering.
async fn recovering(system: &System) -> ActorRef<Probe> {
    let p = Probes {
        start_delay: Some(Duration::from_millis(400)),
        ..Default::default()
    };
    let a = system.spawn(ActorSpec::<Probe>::named("slow", p)).unwrap();
    get(&a).await;
    a.tell(Cmd::Panic("down")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    a
}

#[tokio::test(start_paused = true)]
async fn a_caller_gets_retry_after_with_a_plausible_estimate_at_once() {
    let system = system(5);
    let a = recovering(&system).await;
    let t0 = system.clock().now();
    let err = a.ask(Cmd::Get).ttl(Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(system.clock().now(), t0, "answered at once, not at the deadline");
    let DeliveryError::RetryAfter(hint) = err else {
        panic!("expected RetryAfter, got {err:?}")
    };
    // About 400 ms of start left, spread over [n, 1.5 n].
    assert!(
        hint >= Duration::from_millis(350) && hint <= Duration::from_millis(650),
        "{hint:?}"
    );
    assert!(err.is_retryable());
    // Callers get different hints (jitter), so they do not all come back at once.
    let mut hints = std::collections::HashSet::new();
    for _ in 0..8 {
        match a.ask(Cmd::Get).ttl(Duration::from_millis(100)).await {
            Err(DeliveryError::RetryAfter(h)) => hints.insert(h),
            other => panic!("expected RetryAfter, got {other:?}"),
        };
    }
    assert!(hints.len() > 1, "{hints:?}");
    // A deadline the recovery fits in: the request waits in the mailbox and is served.
    let seen = a.ask(Cmd::Get).ttl(Duration::from_secs(2)).await.unwrap();
    assert_eq!(seen.instance, 2);
}

#[tokio::test(start_paused = true)]
async fn a_retrying_idempotent_ask_comes_back_after_the_hint() {
    let system = system(5);
    let a = recovering(&system).await;
    let t0 = system.clock().now();
    let seen = a
        .ask(Cmd::Get)
        .ttl(Duration::from_secs(3))
        .attempt_timeout(Duration::from_millis(100))
        .idempotent()
        .retrying()
        .await
        .unwrap();
    assert_eq!(seen.instance, 2);
    assert!(seen.header.unwrap().attempt >= 2, "each attempt carries its number");
    assert!(system.clock().now() - t0 >= Duration::from_millis(350));
}

/// A probe busy with a one-hour message: every attempt times out in its mailbox.
async fn busy(system: &System) -> ActorRef<Probe> {
    let a = system
        .spawn(ActorSpec::<Probe>::named("busy", Probes::default()))
        .unwrap();
    get(&a).await;
    a.tell(Cmd::Sleep(Duration::from_secs(3600))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    a
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_policy_maximum() {
    let system = system(3);
    let a = busy(&system).await;
    let err = a
        .ask(Cmd::Get)
        .ttl(Duration::from_secs(30))
        .attempt_timeout(Duration::from_millis(100))
        .idempotent()
        .retrying()
        .await;
    assert_eq!(err.unwrap_err(), DeliveryError::Expired);
    assert_eq!(a.stats().mailbox_len, 4, "one attempt and three retries");
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_deadline() {
    let system = system(1000);
    let a = busy(&system).await;
    let t0 = system.clock().now();
    let err = a
        .ask(Cmd::Get)
        .ttl(Duration::from_secs(1))
        .attempt_timeout(Duration::from_millis(100))
        .idempotent()
        .retrying()
        .await;
    assert_eq!(err.unwrap_err(), DeliveryError::Expired);
    let took = system.clock().now() - t0;
    assert!(took <= Duration::from_millis(1001), "{took:?}");
    let attempts = a.stats().mailbox_len;
    assert!((5..=10).contains(&attempts), "{attempts} attempts in 1 s");
}

#[tokio::test(start_paused = true)]
async fn a_non_idempotent_request_is_never_resent() {
    let system = system(1000);
    let a = busy(&system).await;
    let err = a
        .ask(Cmd::Get)
        .ttl(Duration::from_millis(500))
        .attempt_timeout(Duration::from_millis(100))
        .retrying()
        .await;
    assert_eq!(err.unwrap_err(), DeliveryError::Expired);
    assert_eq!(a.stats().mailbox_len, 1);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_request_retried_three_times_executes_once() {
    let system = system(5);
    let p = Probes::default();
    let a = system
        .spawn(ActorSpec::<Probe>::named("bank", p.clone()).dedup(16))
        .unwrap();
    let first = a.ask(Cmd::Add(5)).key("deposit-1").await.unwrap();
    for _ in 0..3 {
        let again = a.ask(Cmd::Add(5)).key("deposit-1").await.unwrap();
        assert_eq!(again.n, first.n);
    }
    assert_eq!(p.total.load(Ordering::SeqCst), 5);
    // The window belongs to the slot: it survives a restart of the actor.
    a.tell(Cmd::Panic("restart")).await.unwrap();
    let after = a.ask(Cmd::Add(5)).key("deposit-1").await.unwrap();
    assert_eq!(after.n, first.n);
    assert_eq!(p.total.load(Ordering::SeqCst), 5);
    // Another key executes.
    a.ask(Cmd::Add(1)).key("deposit-2").await.unwrap();
    assert_eq!(p.total.load(Ordering::SeqCst), 6);
}
