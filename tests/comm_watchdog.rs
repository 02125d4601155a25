//! Watchdog, handling leases, abandoned blocking tasks, dedicated threads, progress snapshot.

mod common;

use std::time::Duration;

use common::{get, Cmd, Probe, Probes};
use crashonly::prelude::*;
use crashonly::CrashReason;

#[tokio::test(start_paused = true)]
async fn a_hung_handler_is_restarted_within_its_lease_plus_a_small_margin() {
    let config = Config::default().with_watchdog_every(Duration::from_millis(50));
    let system = System::builder().config(config).start().unwrap();
    let spec = ActorSpec::<Probe>::named("stuck", Probes::default()).handling_lease(Duration::from_millis(200));
    let a = system.spawn(spec).unwrap();
    get(&a).await;
    let mut downs = system.monitor(&a);
    let t0 = system.clock().now();
    a.tell(Cmd::Sleep(Duration::from_secs(3600))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let snap = system.snapshot().into_iter().find(|s| s.path == "/stuck").unwrap();
    let busy = snap.stats.unwrap().busy_for.expect("busy with the long message");
    assert!(busy >= Duration::from_millis(99), "{busy:?}");
    let down = downs.recv().await.unwrap();
    let took = system.clock().now() - t0;
    assert!(
        took > Duration::from_millis(200) && took <= Duration::from_millis(260),
        "{took:?}"
    );
    let DownReason::Crashed(report) = &down.reason else {
        panic!("expected a crash")
    };
    assert!(
        matches!(report.reason, CrashReason::Hung { lease_ms: 200, .. }),
        "{report}"
    );
    assert!(down.restarting);
    let seen = get(&a).await;
    assert_eq!(seen.instance, 2);
    assert_eq!(system.abandoned(), 0, "an async handler is aborted, not abandoned");
    assert_eq!(
        system
            .snapshot()
            .into_iter()
            .find(|s| s.path == "/stuck")
            .unwrap()
            .stats
            .unwrap()
            .busy_for,
        None
    );
}

/// Blocks its thread for an hour when told to: tokio cannot abort it.
struct Blocker;

#[derive(Clone, Debug)]
enum BlockMsg {
    Block,
    Ping,
}

impl Actor for Blocker {
    type Args = ();
    type Msg = BlockMsg;
    type Reply = &'static str;
    type Error = String;
    async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Blocker)
    }
    async fn handle(&mut self, msg: BlockMsg, _: &mut Context<Self>) -> Result<&'static str, String> {
        if let BlockMsg::Block = msg {
            std::thread::sleep(Duration::from_secs(3600));
        }
        Ok("pong")
    }
}

/// Real threads that block forever: the runtime is built by hand and shut down in the
/// background, since its blocked workers never return.
fn blocked_forever(dedicated: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let policy = Policy::builder()
            .max_handling(Duration::from_millis(100))
            .abandon_after(Duration::from_millis(100))
            .max_abandoned(1)
            .build()
            .unwrap();
        let config = Config::default()
            .with_policy(policy)
            .with_watchdog_every(Duration::from_millis(20))
            .with_exit_on_failure(None);
        let system = System::builder().config(config).start().unwrap();
        let spec = ActorSpec::<Blocker>::named("blocker", ());
        let b = system.spawn(if dedicated { spec.blocking() } else { spec }).unwrap();
        assert_eq!(b.ask(BlockMsg::Ping).await, Ok("pong"));
        b.tell(BlockMsg::Block).await.unwrap();
        // Abandoned, replaced by a new instance on a fresh task (or thread), counted.
        let pong = b.ask(BlockMsg::Ping).ttl(Duration::from_secs(5)).await;
        assert_eq!(pong, Ok("pong"));
        assert_eq!(system.abandoned(), 1);
        assert!(system.failure().is_none());
        // Past the threshold, the system gives up so that the process is restarted from outside.
        b.tell(BlockMsg::Block).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), system.wait())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err.report.reason, CrashReason::TooManyAbandoned { abandoned: 2 }),
            "{err}"
        );
    });
    rt.shutdown_background();
}

#[test]
fn an_actor_blocking_its_worker_forever_is_abandoned_and_the_threshold_crashes_the_system() {
    blocked_forever(false);
}

#[test]
fn a_blocking_actor_on_its_own_thread_is_supervised_the_same_way() {
    blocked_forever(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_actors_do_not_starve_the_others() {
    let system = System::new();
    let b = system.spawn(ActorSpec::<Blocker>::named("b", ()).blocking()).unwrap();
    let p = system.spawn(ActorSpec::<Probe>::named("p", Probes::default())).unwrap();
    // Two blocked calls would take both tokio workers if they ran there.
    b.tell(BlockMsg::Block).await.unwrap();
    assert_eq!(p.ask(Cmd::Add(1)).ttl(Duration::from_secs(2)).await.unwrap().n, 1);
    let names: Vec<String> = system.snapshot().into_iter().map(|s| s.path).collect();
    assert!(
        names.contains(&"/b".to_string()) && names.contains(&"/".to_string()),
        "{names:?}"
    );
}
