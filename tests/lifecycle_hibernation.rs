//! Hibernation: an idle actor gives up its task and keeps its state in its slot; the next message
//! resumes the same instance; the power-off switch works on it as on a running one.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{get, Cmd, Probe, Probes};
use crashonly::prelude::*;
use crashonly::{DeliveryError, SlotState};

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

fn system(hibernate_after: Option<Duration>) -> System {
    System::builder()
        .config(Config::default().with_hibernate_after(hibernate_after))
        .start()
        .unwrap()
}

/// Waits (in virtual time when paused) until `f` holds, for at most `limit`.
async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    while !f() {
        if waited >= limit {
            return false;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
    true
}

/// A probe that has added `n` and then hibernated (idle past the system's `hibernate_after`).
async fn hibernating_probe(system: &System, n: u64) -> (ActorRef<Probe>, Probes) {
    let probes = Probes::default();
    let r = system.spawn(ActorSpec::<Probe>::new(probes.clone())).unwrap();
    r.tell(Cmd::Add(n)).await.unwrap();
    assert!(until(Duration::from_secs(3), || r.stats().hibernating).await);
    (r, probes)
}

#[tokio::test]
async fn an_actor_that_starts_to_an_empty_mailbox_hibernates_and_holds_no_task() {
    const N: usize = 500;
    let system = system(Some(Duration::from_secs(60)));
    let before = alive_tasks();
    let probes = Probes::default();
    let refs: Vec<_> = (0..N)
        .map(|_| system.spawn(ActorSpec::<Probe>::new(probes.clone())).unwrap())
        .collect();
    for r in &refs {
        r.started().await.unwrap();
    }
    assert!(
        until(Duration::from_secs(10), || refs.iter().all(|r| r.stats().hibernating)).await,
        "not every started actor hibernated"
    );
    let tasks = alive_tasks() - before;
    assert!(tasks < N / 10, "{N} hibernating actors hold {tasks} tasks");
    assert_eq!(probes.live.load(Ordering::SeqCst), N as i64, "every instance is kept");

    // A message resumes the same instance, with its state; nothing was restarted.
    for r in &refs {
        r.tell(Cmd::Add(2)).await.unwrap();
    }
    for r in &refs {
        let seen = get(r).await;
        assert_eq!((seen.instance > 0, seen.n), (true, 2));
        let s = r.stats();
        assert_eq!(
            (s.incarnation, s.restarts, s.crashes, s.state),
            (1, 0, 0, SlotState::Running)
        );
    }
    assert_eq!(probes.starts.load(Ordering::SeqCst), N as u64);
    assert_eq!(probes.live.load(Ordering::SeqCst), N as i64);
}

#[tokio::test(start_paused = true)]
async fn an_idle_actor_hibernates_after_the_configured_time_and_resumes_with_its_state() {
    let system = system(Some(Duration::from_secs(1)));
    let probes = Probes::default();
    let r = system.spawn(ActorSpec::<Probe>::new(probes.clone())).unwrap();
    assert_eq!(r.ask(Cmd::Add(5)).await.unwrap().n, 5);
    assert!(!r.stats().hibernating, "it has just handled a message");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!r.stats().hibernating, "idle for less than hibernate_after");
    assert!(until(Duration::from_secs(2), || r.stats().hibernating).await);
    let seen = r.ask(Cmd::Add(1)).await.unwrap();
    assert_eq!((seen.instance, seen.n), (1, 6));
    assert!(!r.stats().hibernating);
    // Again: hibernate, resume.
    assert!(until(Duration::from_secs(2), || r.stats().hibernating).await);
    assert_eq!(get(&r).await.n, 6);
    assert_eq!(probes.starts.load(Ordering::SeqCst), 1);
    assert_eq!(r.stats().incarnation, 1);
}

#[tokio::test(start_paused = true)]
async fn without_hibernate_after_idle_actors_keep_their_tasks() {
    const N: usize = 100;
    let system = system(None);
    let before = alive_tasks();
    let refs: Vec<_> = (0..N)
        .map(|_| system.spawn(ActorSpec::<Probe>::new(Probes::default())).unwrap())
        .collect();
    for r in &refs {
        r.started().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(refs.iter().all(|r| !r.stats().hibernating));
    assert!(alive_tasks() - before >= N);
}

#[tokio::test(start_paused = true)]
async fn a_group_restart_powers_off_hibernating_siblings() {
    let probes = Probes::default();
    let mut group = SupervisorSpec::new("g", Strategy::OneForAll).intensity(10, Duration::from_secs(60));
    for name in ["a", "b", "c"] {
        group = group.child(ActorSpec::<Probe>::named(name, probes.clone()));
    }
    let system = System::builder()
        .config(Config::default().with_hibernate_after(Some(Duration::from_millis(200))))
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(group))
        .start()
        .unwrap();
    let refs: Vec<ActorRef<Probe>> = ["a", "b", "c"]
        .iter()
        .map(|n| system.lookup::<Probe>(&format!("/g/{n}")).unwrap())
        .collect();
    for r in &refs {
        assert_eq!(get(r).await.n, 0);
        r.tell(Cmd::Add(1)).await.unwrap();
    }
    assert!(until(Duration::from_secs(2), || refs.iter().all(|r| r.stats().hibernating)).await);
    assert_eq!(probes.live.load(Ordering::SeqCst), 3);

    // b wakes and crashes: a and c are powered off while hibernating, and all three recover.
    refs[1].tell(Cmd::Panic("b")).await.unwrap();
    get(&refs[1]).await; // b's restart has happened, so its siblings' too
    for r in &refs {
        let seen = get(r).await;
        assert_eq!(
            (seen.instance > 3, seen.n),
            (true, 0),
            "a fresh instance: {:?}",
            r.stats()
        );
    }
    assert_eq!(probes.starts.load(Ordering::SeqCst), 6);
    assert_eq!(probes.live.load(Ordering::SeqCst), 3, "every old instance was dropped");
    for r in &refs {
        let s = r.stats();
        assert_eq!((s.incarnation, s.crashes), (2, 1), "{s:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_crash_reboot_of_a_hibernating_actor_drops_its_state_and_recovers() {
    let system = system(Some(Duration::from_secs(1)));
    let (r, probes) = hibernating_probe(&system, 4).await;
    r.kill().unwrap();
    let seen = get(&r).await;
    assert_eq!(
        (seen.instance, seen.n),
        (2, 0),
        "a new instance, recovered from nothing"
    );
    let s = r.stats();
    assert_eq!((s.incarnation, s.crashes), (2, 1));
    assert!(matches!(
        s.last_crash.map(|c| c.reason.clone()),
        Some(CrashReason::Killed)
    ));
    assert_eq!(probes.live.load(Ordering::SeqCst), 1, "the old instance was dropped");
    assert!(!probes.overlap.load(Ordering::SeqCst), "and before the new one started");
}

#[tokio::test(start_paused = true)]
async fn a_hibernating_child_terminated_by_its_supervisor_is_dropped_and_answers_dead() {
    let probes = Probes::default();
    let system = System::builder()
        .config(Config::default().with_hibernate_after(Some(Duration::from_secs(1))))
        .root(SupervisorSpec::new("root", Strategy::OneForOne).child(ActorSpec::<Probe>::named("p", probes.clone())))
        .start()
        .unwrap();
    let r = system.lookup::<Probe>("/p").unwrap();
    r.started().await.unwrap();
    assert!(until(Duration::from_secs(2), || r.stats().hibernating).await);
    system.root().terminate_child("p").await.unwrap();
    assert_eq!(probes.live.load(Ordering::SeqCst), 0, "the instance is gone");
    let answer = r.ask(Cmd::Get).await;
    assert!(matches!(answer, Err(DeliveryError::Dead)), "{answer:?}");
    system.root().restart_child("p").unwrap();
    assert_eq!(get(&r).await.instance, 2);
    assert_eq!(probes.live.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn rejuvenating_a_hibernating_actor_starts_a_new_instance() {
    let system = system(Some(Duration::from_secs(1)));
    let (r, probes) = hibernating_probe(&system, 3).await;
    r.rejuvenate();
    assert!(until(Duration::from_secs(2), || r.stats().incarnation == 2).await);
    let seen = get(&r).await;
    assert_eq!((seen.instance, seen.n), (2, 0));
    assert_eq!(probes.live.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_actor_with_an_age_limit_does_not_hibernate() {
    let system = system(Some(Duration::from_millis(100)));
    let r = system
        .spawn(ActorSpec::<Probe>::new(Probes::default()).rejuvenate_after(Duration::from_secs(60)))
        .unwrap();
    r.started().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!r.stats().hibernating);
}

/// Hibernation races the senders: with a 1 ms delay and a 1 ms watchdog, actors hibernate and
/// wake thousands of times while four tasks per actor tell and ask them on two workers. Every
/// message is handled once, by the one instance, and every ask is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_when_hibernation_races_the_senders() {
    const ACTORS: usize = 8;
    const SENDERS: usize = 4;
    const ROUNDS: u64 = 1000;
    let system = System::builder()
        .config(
            Config::default()
                .with_hibernate_after(Some(Duration::from_millis(1)))
                .with_watchdog_every(Duration::from_millis(1)),
        )
        .start()
        .unwrap();
    let probes: Vec<Probes> = (0..ACTORS).map(|_| Probes::default()).collect();
    let refs: Vec<_> = probes
        .iter()
        .map(|p| system.spawn(ActorSpec::<Probe>::new(p.clone())).unwrap())
        .collect();
    let mut senders = Vec::new();
    for r in &refs {
        for s in 0..SENDERS {
            let r = r.clone();
            senders.push(tokio::spawn(async move {
                for i in 0..ROUNDS {
                    if (i + s as u64).is_multiple_of(2) {
                        r.tell(Cmd::Add(1)).await.unwrap();
                    } else {
                        r.ask(Cmd::Add(1)).ttl(Duration::from_secs(10)).await.unwrap();
                    }
                    if i.is_multiple_of(16) {
                        // Let the actor go idle now and then.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
            }));
        }
    }
    for s in senders {
        s.await.unwrap();
    }
    let mut hibernations = 0;
    for r in &refs {
        assert_eq!(get(r).await.n, SENDERS as u64 * ROUNDS);
        let s = r.stats();
        assert_eq!((s.incarnation, s.crashes), (1, 0), "{s:?}");
        hibernations += s.hibernations;
    }
    // Each actor hibernated at its start, and again while its senders slept.
    assert!(hibernations > 2 * ACTORS as u64, "{hibernations} hibernations");
    eprintln!("{hibernations} hibernations");
    for p in &probes {
        assert_eq!(p.starts.load(Ordering::SeqCst), 1);
        assert!(!p.overlap.load(Ordering::SeqCst));
    }
    assert!(
        until(Duration::from_secs(5), || refs.iter().all(|r| r.stats().hibernating)).await,
        "idle actors hibernate again"
    );
}

// ---- the first step of `start` runs where the actor is launched ----

/// Records the thread its `start` began on and, when told to, the one it finished on after
/// awaiting a timer.
struct Where {
    began: std::thread::ThreadId,
    finished: std::thread::ThreadId,
}

impl Actor for Where {
    type Args = bool;
    type Msg = ();
    type Reply = (std::thread::ThreadId, std::thread::ThreadId);
    type Error = String;

    async fn start(wait: &bool, _: &mut Context<Self>) -> Result<Self, String> {
        let began = std::thread::current().id();
        if *wait {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Where {
            began,
            finished: std::thread::current().id(),
        })
    }

    async fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<Self::Reply, String> {
        Ok((self.began, self.finished))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_runs_where_the_actor_is_launched_until_it_first_waits() {
    let system = System::new();
    let spawner = system.clone();
    let (here, (quick, slow)) = tokio::task::spawn_blocking(move || {
        let quick = spawner.spawn(ActorSpec::<Where>::new(false)).unwrap();
        let slow = spawner.spawn(ActorSpec::<Where>::new(true)).unwrap();
        (std::thread::current().id(), (quick, slow))
    })
    .await
    .unwrap();
    // Finished without waiting: entirely on the spawning thread, then hibernated.
    assert_eq!(quick.ask(()).await.unwrap(), (here, here));
    // Waited for a timer: begun on the spawning thread, finished in a task of its own.
    let (began, finished) = slow.ask(()).await.unwrap();
    assert_eq!(began, here);
    assert_ne!(finished, here);
}

/// Blocks its first instance's `start` until released, and counts live instances.
#[derive(Clone)]
struct Held {
    entered: std::sync::mpsc::SyncSender<u64>,
    release: Arc<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
    probes: Probes,
}

struct Blocked {
    instance: u64,
    live: Arc<std::sync::atomic::AtomicI64>,
}

impl Drop for Blocked {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Actor for Blocked {
    type Args = Held;
    type Msg = ();
    type Reply = u64;
    type Error = String;

    async fn start(h: &Held, _: &mut Context<Self>) -> Result<Self, String> {
        if h.probes.live.fetch_add(1, Ordering::SeqCst) != 0 {
            h.probes.overlap.store(true, Ordering::SeqCst);
        }
        let me = Blocked {
            instance: h.probes.starts.fetch_add(1, Ordering::SeqCst) + 1,
            live: h.probes.live.clone(),
        };
        h.entered.send(me.instance).unwrap();
        if me.instance == 1 {
            // Blocking on purpose: the first start is polled in its launcher's thread.
            h.release.lock().unwrap().recv().unwrap();
        }
        Ok(me)
    }

    async fn handle(&mut self, _: (), _: &mut Context<Self>) -> Result<u64, String> {
        Ok(self.instance)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_powered_off_while_its_start_runs_in_the_launcher_is_dropped_before_the_next_starts() {
    let (entered_tx, entered) = std::sync::mpsc::sync_channel(4);
    let (release, release_rx) = std::sync::mpsc::channel();
    let probes = Probes::default();
    let held = Held {
        entered: entered_tx,
        release: Arc::new(std::sync::Mutex::new(release_rx)),
        probes: probes.clone(),
    };
    let system = System::new();
    let spawner = system.clone();
    let launcher = std::thread::spawn(move || spawner.spawn(ActorSpec::<Blocked>::named("held", held)).map(|_| ()));
    let entered = Arc::new(std::sync::Mutex::new(entered));
    let next = {
        let entered = entered.clone();
        move || {
            let entered = entered.clone();
            tokio::task::spawn_blocking(move || entered.lock().unwrap().recv_timeout(Duration::from_secs(10)))
        }
    };
    assert_eq!(next().await.unwrap(), Ok(1), "the first start runs in the launcher");
    let r = system.lookup::<Blocked>("/held").unwrap();
    r.kill().unwrap();
    // The supervisor's restart waits for the start in the launcher to return.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        probes.starts.load(Ordering::SeqCst),
        1,
        "no second start beside the first"
    );
    release.send(()).unwrap();
    launcher.join().unwrap().unwrap();
    assert_eq!(next().await.unwrap(), Ok(2));
    assert_eq!(r.ask(()).ttl(Duration::from_secs(10)).await, Ok(2));
    assert_eq!(probes.live.load(Ordering::SeqCst), 1, "the first instance was dropped");
    assert!(!probes.overlap.load(Ordering::SeqCst), "before the second started");
    let s = r.stats();
    assert_eq!((s.incarnation, s.crashes), (2, 1), "{s:?}");
}
