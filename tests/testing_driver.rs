//! The plain testkit: drive one actor's handlers by hand, on virtual time.

mod common;

use std::time::Duration;

use common::{Cmd, Probe, Probes};
use crashonly::testing::{Driver, Failure};
use crashonly::CrashReason;

#[tokio::test(start_paused = true)]
async fn drives_handlers_and_reports_panics_errors_and_stops() {
    let mut d = Driver::<Probe>::start(Probes::default()).await.unwrap();
    assert_eq!(d.handle(Cmd::Add(4)).await.unwrap().n, 4);
    let header = d.handle(Cmd::Get).await.unwrap().header.unwrap();
    assert_eq!(header.deadline - d.system().clock().now(), Duration::from_secs(5));
    match d.handle(Cmd::Panic("in a test")).await {
        Err(Failure::Panic(CrashReason::Panic { message, .. })) => assert_eq!(message, "in a test"),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert!(matches!(d.handle(Cmd::Fail).await, Err(Failure::Error(e)) if e == "told to fail"));
    d.restart().await.unwrap();
    assert_eq!(d.handle(Cmd::Get).await.unwrap().instance, 2);
    d.handle(Cmd::Stop).await.unwrap();
    assert!(d.stopped());
    // Virtual time: an hour-long message takes no real time.
    d.handle(Cmd::Sleep(Duration::from_secs(3600))).await.unwrap();
}
