//! Entities: addressed by key, activated on demand (start = recover), passivated when idle or
//! over the cap, supervised per key with a family-wide bound; and everything that works for
//! actors (TTL, idempotency, retries, keys, watchdog, rejuvenation, monitors) works for them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crashonly::prelude::*;
use crashonly::{CrashReason, Entities, Entity, EntitySpec};

/// What outlives activations: the "store" (a count per key), and the instruments.
#[derive(Clone, Default)]
struct World {
    store: Arc<Mutex<HashMap<String, u64>>>,
    /// Live instances per key, and the most ever seen at once.
    live: Arc<Mutex<HashMap<String, i64>>>,
    most: Arc<Mutex<i64>>,
    starts: Arc<AtomicU64>,
    poisoned: Arc<Mutex<HashSet<String>>>,
    /// How long `start` takes (recovery from a slow store).
    slow_start: Arc<Mutex<Duration>>,
}

struct Acct {
    key: String,
    n: u64,
    world: World,
}

impl Drop for Acct {
    fn drop(&mut self) {
        *self.world.live.lock().unwrap().get_mut(&self.key).unwrap() -= 1;
    }
}

#[derive(Clone, Debug)]
enum Msg {
    Add(u64),
    Get,
    Sleep(Duration),
    Panic,
    Stop,
}

impl Actor for Acct {
    type Args = (String, World);
    type Msg = Msg;
    type Reply = (u64, u64);
    type Error = String;

    async fn start((key, world): &(String, World), ctx: &mut Context<Self>) -> Result<Self, String> {
        world.starts.fetch_add(1, Ordering::SeqCst);
        let slow = *world.slow_start.lock().unwrap();
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        if world.poisoned.lock().unwrap().contains(key) {
            return Err(format!("{key} is poisoned"));
        }
        {
            let mut live = world.live.lock().unwrap();
            let n = live.entry(key.clone()).or_default();
            *n += 1;
            let mut most = world.most.lock().unwrap();
            *most = (*most).max(*n);
        }
        let n = world.store.lock().unwrap().get(key).copied().unwrap_or(0);
        let _ = ctx;
        Ok(Acct {
            key: key.clone(),
            n,
            world: world.clone(),
        })
    }

    /// Answers (count, incarnation).
    async fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) -> Result<(u64, u64), String> {
        match msg {
            Msg::Add(x) => {
                self.n += x;
                self.world.store.lock().unwrap().insert(self.key.clone(), self.n);
            }
            Msg::Get => {}
            Msg::Sleep(d) => tokio::time::sleep(d).await,
            Msg::Panic => panic!("asked to crash"),
            Msg::Stop => ctx.stop(),
        }
        Ok((self.n, ctx.incarnation()))
    }
}

impl Entity for Acct {
    type Key = String;
}

fn spec(world: &World) -> EntitySpec<Acct> {
    let world = world.clone();
    EntitySpec::new("accts", move |key: &String| (key.clone(), world.clone()))
}

fn quiet() -> Config {
    Config::default().with_exit_on_failure(None)
}

fn start(spec: EntitySpec<Acct>) -> (System, Entities<Acct>) {
    let system = System::builder().config(quiet()).start().unwrap();
    let family = system.spawn_entities(spec).unwrap();
    (system, family)
}

/// Waits (on the paused clock) until `cond` holds.
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition never held");
}

#[tokio::test(start_paused = true)]
async fn a_ref_starts_nothing_and_the_first_message_activates_by_recovering() {
    let world = World::default();
    world.store.lock().unwrap().insert("a".into(), 40);
    let (_system, accts) = start(spec(&world));
    let a = accts.get("a".into());
    assert_eq!(accts.stats().active, 0);
    assert_eq!(world.starts.load(Ordering::SeqCst), 0, "get starts nothing");
    assert!(a.activation().is_none());
    assert_eq!(
        a.ask(Msg::Add(2)).await,
        Ok((42, 1)),
        "start recovered 40 from the store"
    );
    assert_eq!(accts.stats().active, 1);
    assert_eq!(accts.stats().activations, 1);
    assert_eq!(a.activation().unwrap().path(), "/accts/a");
    assert_eq!(accts.active_keys(10), vec!["a".to_string()]);
    assert!(accts.active_keys(0).is_empty());
}

#[tokio::test(start_paused = true)]
async fn refs_are_stable_across_passivation_and_two_refs_reach_one_instance() {
    let world = World::default();
    let (_system, accts) = start(spec(&world));
    let (a1, a2) = (accts.get("a".into()), accts.get("a".into()));
    assert_eq!(a1, a2);
    a1.ask(Msg::Add(1)).await.unwrap();
    assert_eq!(a2.ask(Msg::Add(1)).await, Ok((2, 1)), "the same instance");
    assert_eq!(a1.activation(), a2.activation());
    assert!(a1.passivate(), "idle: passivated");
    until(|| accts.stats().active == 0).await;
    assert_eq!(
        *world.live.lock().unwrap().get("a").unwrap(),
        0,
        "the instance was dropped"
    );
    // The old ref reaches a new activation, which recovered the state.
    assert_eq!(a1.ask(Msg::Get).await, Ok((2, 1)));
    assert_eq!(accts.stats().activations, 2);
    assert_eq!(*world.most.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn idle_entities_are_passivated_by_their_timer_and_counted() {
    let world = World::default();
    let (_system, accts) = start(spec(&world).idle(Duration::from_millis(200)));
    for k in ["a", "b", "c"] {
        accts.get(k.into()).ask(Msg::Add(1)).await.unwrap();
    }
    assert_eq!(accts.stats().active, 3);
    // A busy one is kept: it is handling a message longer than `idle`.
    let busy = accts.get("busy".into());
    let slow = tokio::spawn({
        let busy = busy.clone();
        async move {
            busy.ask(Msg::Sleep(Duration::from_secs(2)))
                .ttl(Duration::from_secs(5))
                .await
        }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = accts.stats();
    assert_eq!(stats.active, 1, "{stats:?}");
    assert_eq!(stats.passivated_idle, 3);
    assert!(busy.activation().is_some(), "a busy entity is never passivated");
    assert_eq!(slow.await.unwrap(), Ok((0, 1)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(accts.stats().active, 0);
    assert_eq!(accts.get("a".into()).ask(Msg::Get).await, Ok((1, 1)));
}

#[tokio::test(start_paused = true)]
async fn over_max_active_the_least_recently_used_are_passivated() {
    let world = World::default();
    let (_system, accts) = start(spec(&world).max_active(10));
    let hot = accts.get("hot".into());
    for i in 0..100 {
        hot.ask(Msg::Add(1)).await.unwrap();
        accts.get(format!("k{i}")).ask(Msg::Add(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(accts.stats().active <= 12, "{:?}", accts.stats());
    }
    let stats = accts.stats();
    assert!(stats.passivated_cap >= 85, "{stats:?}");
    // The hot key was always among the most recent: never passivated.
    assert_eq!(hot.ask(Msg::Get).await, Ok((100, 1)));
    // Nothing was lost by the passivated ones.
    for i in 0..100 {
        assert_eq!(accts.get(format!("k{i}")).ask(Msg::Get).await.unwrap().0, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_racing_passivation_are_never_lost_and_one_instance_lives() {
    let world = World::default();
    let (_system, accts) = start(spec(&world));
    let a = accts.get("a".into());
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    a.ask(Msg::Add(1)).await.unwrap();
                }
            })
        })
        .collect();
    let passivator = tokio::spawn({
        let a = a.clone();
        async move {
            let mut n = 0;
            for _ in 0..5000 {
                n += a.passivate() as u32;
                tokio::task::yield_now().await;
            }
            n
        }
    });
    for s in senders {
        s.await.unwrap();
    }
    let passivations = passivator.await.unwrap();
    assert_eq!(a.ask(Msg::Get).await.unwrap().0, 2000, "every add was handled once");
    assert!(passivations > 0, "the race happened");
    assert_eq!(*world.most.lock().unwrap(), 1, "never two live instances of one key");
}

#[tokio::test(start_paused = true)]
async fn a_crash_restarts_that_entity_only() {
    let world = World::default();
    let (system, accts) = start(spec(&world));
    let (a, b) = (accts.get("a".into()), accts.get("b".into()));
    a.ask(Msg::Add(5)).await.unwrap();
    b.ask(Msg::Add(7)).await.unwrap();
    assert!(matches!(a.ask(Msg::Panic).await, Err(DeliveryError::Crashed(_))));
    assert_eq!(a.ask(Msg::Get).await, Ok((5, 2)), "restarted in place, recovered");
    assert_eq!(b.ask(Msg::Get).await, Ok((7, 1)), "the other key was untouched");
    assert_eq!(accts.stats().crashes, 1);
    assert!(system.failure().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_key_that_always_fails_to_start_is_quarantined_and_the_others_serve() {
    let world = World::default();
    world.poisoned.lock().unwrap().insert("bad".into());
    let (system, accts) = start(
        spec(&world)
            .entity_intensity(2, Duration::from_secs(5))
            .quarantine(Duration::from_secs(1)),
    );
    let bad = accts.get("bad".into());
    let good = accts.get("good".into());
    for round in 0..5 {
        let r = bad.ask(Msg::Get).ttl(Duration::from_secs(2)).await;
        assert!(
            matches!(r, Err(DeliveryError::Crashed(_) | DeliveryError::RetryAfter(_))),
            "round {round}: {r:?}"
        );
        if let Err(DeliveryError::Crashed(report)) = &r {
            assert!(matches!(report.reason, CrashReason::StartFailed(_)), "{report}");
        }
        assert_eq!(good.ask(Msg::Add(1)).await.unwrap().0, round + 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stats = accts.stats();
    assert!(stats.given_up >= 1, "{stats:?}");
    // While quarantined, an ask is answered RetryAfter at once, without a start.
    let starts = world.starts.load(Ordering::SeqCst);
    let refused = accts.stats().retry_after;
    if let Err(DeliveryError::RetryAfter(wait)) = bad.ask(Msg::Get).await {
        assert!(wait <= Duration::from_secs(1));
        assert_eq!(world.starts.load(Ordering::SeqCst), starts);
        // Counted (the observer page shows it on the family).
        assert_eq!(accts.stats().retry_after, refused + 1);
    }
    // Healed: after the quarantine the key activates again.
    world.poisoned.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bad.ask(Msg::Get).await.unwrap().0, 0);
    assert!(system.failure().is_none(), "one key does not take the family down");
}

#[tokio::test(start_paused = true)]
async fn a_bug_that_crashes_every_key_escalates() {
    let world = World::default();
    let family = spec(&world).intensity(3, Duration::from_secs(10));
    let system = System::builder()
        .config(quiet())
        .root(
            SupervisorSpec::new("root", Strategy::OneForOne)
                .intensity(0, Duration::from_secs(10))
                .child(family),
        )
        .start()
        .unwrap();
    let accts = system.entities::<Acct>("/accts").unwrap();
    // Three keys crash (each restarts): within the family's bound.
    for i in 0..3 {
        let _ = accts.get(format!("k{i}")).ask(Msg::Panic).await;
        let _ = accts.get(format!("k{i}")).ask(Msg::Panic).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(system.failure().is_none(), "3 keys are within the bound");
    assert!(accts.get("k0".into()).ask(Msg::Get).await.is_ok());
    // A fourth distinct key: the family crashes, and its supervisor (intensity 0) gives up.
    let _ = accts.get("k3".into()).ask(Msg::Panic).await;
    let err = tokio::time::timeout(Duration::from_secs(5), system.wait())
        .await
        .expect("the system gave up")
        .unwrap_err();
    assert!(err.to_string().contains("restart intensity exceeded"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_family_restarted_by_its_supervisor_keeps_its_queued_messages() {
    let world = World::default();
    let family = spec(&world).intensity(1, Duration::from_secs(10));
    let system = System::builder()
        .config(quiet())
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(family))
        .start()
        .unwrap();
    let accts = system.entities::<Acct>("/accts").unwrap();
    accts.get("x".into()).ask(Msg::Add(3)).await.unwrap();
    let _ = accts.get("a".into()).ask(Msg::Panic).await;
    let _ = accts.get("b".into()).ask(Msg::Panic).await; // the second key: the family crashes
                                                         // It is restarted by the root: the keys serve again, from the store.
    let x = accts.get("x".into());
    let mut got = None;
    for _ in 0..50 {
        if let Ok(r) = x.ask(Msg::Get).await {
            got = Some(r.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got, Some(3));
    assert!(system.failure().is_none());
    assert_eq!(*world.most.lock().unwrap(), 1);
    // The family's giving up is counted among the escalations, and is over: ready again.
    let text = crashonly::metrics::render(&system);
    assert!(text.contains("\ncrashonly_escalations_total 1\n"), "{text}");
    assert_eq!(crashonly::metrics::ready(&system), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn keys_are_bounded_by_the_policy() {
    let world = World::default();
    let policy = Policy::builder().max_key_len(16).build().unwrap();
    let system = System::builder().config(quiet().with_policy(policy)).start().unwrap();
    let accts = system.spawn_entities(spec(&world)).unwrap();
    let long = "k".repeat(17);
    assert_eq!(
        accts.get(long.clone()).ask(Msg::Get).await,
        Err(DeliveryError::KeyTooLong { len: 17, max: 16 })
    );
    assert!(accts.get(long).tell(Msg::Get).await.is_err());
    assert_eq!(accts.stats().activations, 0, "nothing was activated");
    assert_eq!(accts.get("k".repeat(16)).ask(Msg::Get).await, Ok((0, 1)));
    // Of any length up to the bound, even empty.
    assert_eq!(accts.get(String::new()).ask(Msg::Get).await, Ok((0, 1)));
}

#[tokio::test(start_paused = true)]
async fn an_entity_recovering_answers_retry_after_from_its_recovery_time() {
    let world = World::default();
    *world.slow_start.lock().unwrap() = Duration::from_millis(500);
    let (_system, accts) = start(spec(&world));
    let a = accts.get("a".into());
    assert_eq!(a.ask(Msg::Add(1)).ttl(Duration::from_secs(2)).await, Ok((1, 1)));
    a.tell(Msg::Panic).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Restarting, with a start that takes about 500 ms: a 100 ms request is told at once.
    match a.ask(Msg::Get).ttl(Duration::from_millis(100)).await {
        Err(DeliveryError::RetryAfter(wait)) => {
            assert!(
                wait >= Duration::from_millis(300) && wait <= Duration::from_secs(1),
                "{wait:?}"
            )
        }
        other => panic!("expected RetryAfter, got {other:?}"),
    }
    // A retrying ask honours it and gets through once the entity has recovered.
    assert_eq!(
        a.ask(Msg::Get)
            .idempotent()
            .retrying()
            .ttl(Duration::from_secs(3))
            .await,
        Ok((1, 2))
    );
}

#[tokio::test(start_paused = true)]
async fn ttl_idempotency_retries_and_keys_work_for_entities() {
    let world = World::default();
    let (_system, accts) = start(spec(&world).dedup(16));
    let a = accts.get("a".into());
    // An expired request gets a clear error.
    assert_eq!(
        a.ask(Msg::Sleep(Duration::from_millis(500)))
            .ttl(Duration::from_millis(100))
            .await,
        Err(DeliveryError::Expired)
    );
    // Keyed requests execute once.
    assert_eq!(a.ask(Msg::Add(1)).key("req-1").await, Ok((1, 1)));
    assert_eq!(a.ask(Msg::Add(1)).key("req-1").await, Ok((1, 1)));
    assert_eq!(a.ask(Msg::Get).await.unwrap().0, 1);
    // An idempotent request whose handler crashes is redelivered to the next instance.
    let tell = a.tell(Msg::Panic).await;
    assert!(tell.is_ok());
    assert_eq!(
        a.ask(Msg::Add(1))
            .idempotent()
            .retrying()
            .ttl(Duration::from_secs(2))
            .await,
        Ok((2, 2))
    );
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_rejuvenation_and_monitors_work_for_entities() {
    let world = World::default();
    let system = System::builder()
        .config(quiet().with_watchdog_every(Duration::from_millis(10)))
        .start()
        .unwrap();
    let accts = system
        .spawn_entities(
            spec(&world)
                .handling_lease(Duration::from_millis(100))
                .rejuvenate_after_messages(3),
        )
        .unwrap();
    let a = accts.get("a".into());
    let activation = a.activate().unwrap();
    let mut downs = system.monitor(&activation);
    // Hung past its lease: the watchdog crash-restarts it.
    let r = a
        .ask(Msg::Sleep(Duration::from_secs(10)))
        .ttl(Duration::from_secs(20))
        .await;
    match r {
        Err(DeliveryError::Crashed(report)) => assert!(matches!(report.reason, CrashReason::Hung { .. }), "{report}"),
        other => panic!("expected a hung crash, got {other:?}"),
    }
    let down = downs.recv().await.unwrap();
    assert!(matches!(down.reason, DownReason::Crashed(_)) && down.restarting);
    assert_eq!(a.ask(Msg::Get).await.unwrap().1, 2);
    // Rejuvenation after 3 messages: a new incarnation, through the crash path.
    for _ in 0..3 {
        a.ask(Msg::Get).await.unwrap();
    }
    assert_eq!(a.ask(Msg::Get).await.unwrap().1, 3);
    assert_eq!(a.activation(), Some(activation), "rejuvenation keeps the activation");
}

#[tokio::test(start_paused = true)]
async fn an_entity_that_stops_itself_is_passivated_and_its_queued_messages_reactivate_it() {
    let world = World::default();
    let (_system, accts) = start(spec(&world));
    let a = accts.get("a".into());
    a.ask(Msg::Add(1)).await.unwrap();
    let stop = a.tell(Msg::Stop);
    stop.await.unwrap();
    // Queued right behind the stop: handled by the next activation.
    assert_eq!(a.ask(Msg::Add(1)).await, Ok((2, 1)));
    assert_eq!(accts.stats().activations, 2);
    assert_eq!(*world.most.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_terminated_family_answers_dead_until_restarted() {
    let world = World::default();
    let system = System::builder()
        .config(quiet())
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(spec(&world)))
        .start()
        .unwrap();
    let accts = system.root().entities::<Acct>("accts").unwrap();
    let a = accts.get("a".into());
    a.ask(Msg::Add(1)).await.unwrap();
    system.root().terminate_child("accts").await.unwrap();
    assert_eq!(a.ask(Msg::Get).await, Err(DeliveryError::Dead));
    system.root().restart_child("accts").unwrap();
    assert_eq!(a.ask(Msg::Get).await, Ok((1, 1)));
}

/// A session entity written with the macros: `#[actor(entity)]` makes it an entity keyed by
/// `String` (and adds `Session::entities`); the typed methods work on its `EntityRef`.
#[derive(Actor)]
#[actor(args = (String, World), entity, mailbox = 8)]
struct Session {
    id: String,
    world: World,
    hits: u64,
}

#[messages]
impl Session {
    #[start]
    fn recover((id, world): &(String, World), _ctx: &mut Context<Self>) -> Session {
        let hits = world.store.lock().unwrap().get(id).copied().unwrap_or(0);
        Session {
            id: id.clone(),
            world: world.clone(),
            hits,
        }
    }

    /// Counts a hit; answers the count.
    #[message(idempotent, ttl = "1s")]
    fn hit(&mut self) -> u64 {
        self.hits += 1;
        self.world.store.lock().unwrap().insert(self.id.clone(), self.hits);
        self.hits
    }

    #[message]
    fn whoami(&self) -> String {
        self.id.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn the_macros_derive_entities_with_typed_requests() {
    let world = World::default();
    let w = world.clone();
    let system = System::builder()
        .config(quiet())
        .root(
            SupervisorSpec::new("root", Strategy::OneForOne)
                .child(Session::entities("sessions", move |id: &String| (id.clone(), w.clone())).max_active(2)),
        )
        .start()
        .unwrap();
    let sessions = system.entities::<Session>("/sessions").unwrap();
    let s = sessions.get("s-1".into());
    assert_eq!(s.hit().await, Ok(1));
    assert_eq!(s.hit().retrying().await, Ok(2));
    assert_eq!(s.whoami().await.as_deref(), Ok("s-1"));
    assert!(s.passivate());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.hit().await, Ok(3), "recovered from the store after passivation");
    assert_eq!(sessions.stats().activations, 2);
    assert_eq!(sessions.stats().max_active, 2);
}

/// A cheap entity with a short store read in `start` and a short write per message.
struct Slowish;

impl Actor for Slowish {
    type Args = ();
    type Msg = ();
    type Reply = ();
    type Error = std::convert::Infallible;

    async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(Slowish)
    }

    async fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<(), Self::Error> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(())
    }
}

impl Entity for Slowish {
    type Key = String;
}

/// Bursts of concurrent activations (each still starting when the next arrives) leave the family
/// at its cap once they are idle: an entity starting is the most recent, not the least, and the
/// timer evicts what a burst left over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_activations_are_brought_back_under_the_cap() {
    let system = System::new();
    let family = system
        .spawn_entities(
            EntitySpec::<Slowish>::new("burst", |_: &String| ())
                .max_active(50)
                .idle(Duration::from_secs(60)),
        )
        .unwrap();
    for round in 0..15 {
        let asks: Vec<_> = (0..20)
            .map(|i| {
                let e = family.get(format!("k{}", round * 20 + i));
                tokio::spawn(async move { e.ask(()).await })
            })
            .collect();
        for a in asks {
            a.await.unwrap().unwrap();
        }
    }
    // The timer runs once a second with this `idle`: within two, the family is under its cap.
    let mut active = usize::MAX;
    for _ in 0..40 {
        active = family.stats().active;
        if active <= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        active <= 50,
        "left over max_active 50 with every activation idle: {active}"
    );
}
