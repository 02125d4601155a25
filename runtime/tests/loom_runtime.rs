//! Loom models of the runtime's races, run on the real actor loop, mailbox, supervisor and
//! registry through `crashonly::testing::model` (one loom thread per task, manual clock).
//!
//! `RUSTFLAGS="--cfg crashonly_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target-loom \
//!  cargo test --release -p crashonly --test loom_runtime`
#![cfg(crashonly_loom)]

use std::convert::Infallible;
use std::time::Duration;

use crashonly::prelude::*;
use crashonly::testing::model::loom::sync::{Arc, Mutex};
use crashonly::testing::model::{self, ModelSystem};

type Seen = Arc<Mutex<Vec<u32>>>;

/// Records every note it handles in a log that outlives its crashes (like a store would).
struct Log {
    seen: Seen,
}

#[derive(Clone, Debug)]
enum Msg {
    Note(u32),
    Get,
}

impl Actor for Log {
    type Args = Seen;
    type Msg = Msg;
    type Reply = Vec<u32>;
    type Error = Infallible;

    async fn start(seen: &Seen, _: &mut Context<Self>) -> Result<Self, Infallible> {
        Ok(Log { seen: seen.clone() })
    }

    async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) -> Result<Vec<u32>, Infallible> {
        match msg {
            Msg::Note(n) => {
                self.seen.lock().unwrap().push(n);
                // An await after the effect: a crash can land between the effect and the reply,
                // which is where at-least-once repeats and at-most-once must not.
                model::yield_now().await;
                Ok(Vec::new())
            }
            Msg::Get => Ok(self.seen.lock().unwrap().clone()),
        }
    }
}

fn count(seen: &[u32], n: u32) -> usize {
    seen.iter().filter(|&&x| x == n).count()
}

/// Two senders, one of which then crashes the actor from outside, at every point loom can
/// choose; what the actor handled, read after the restart.
fn senders_vs_crash(idempotent: bool) -> Vec<u32> {
    let sys = ModelSystem::new();
    let a = sys.spawn(ActorSpec::<Log>::new(Seen::default()));
    let tell = move |a: &ActorRef<Log>, n| model::block_on(a.tell(Msg::Note(n)).set_idempotent(idempotent)).unwrap();
    let other = {
        let (sys, a) = (sys.clone(), a.clone());
        model::thread(move || {
            tell(&a, 2);
            sys.crash(&a);
        })
    };
    tell(&a, 1);
    other.join().unwrap();
    model::block_on(a.ask(Msg::Get)).unwrap()
}

/// Idempotent tells are at-least-once: none is lost, and only the one in flight at the crash may
/// be handled twice.
#[test]
fn loom_idempotent_senders_vs_crash_and_restart() {
    model::check(|| {
        let got = senders_vs_crash(true);
        for n in [1, 2] {
            let c = count(&got, n);
            assert!((1..=2).contains(&c), "note {n} handled {c} times: {got:?}");
        }
        assert!(
            got.len() <= 3,
            "one crash repeats at most the one message in flight: {got:?}"
        );
    });
}

/// Plain tells are at-most-once: nothing is handled twice, and only the one message in flight at
/// the crash may be lost; a queued one never is.
#[test]
fn loom_plain_senders_vs_crash_and_restart() {
    model::check(|| {
        let got = senders_vs_crash(false);
        for n in [1, 2] {
            assert!(count(&got, n) <= 1, "note {n} handled twice: {got:?}");
        }
        assert!(!got.is_empty(), "a queued message was lost: {got:?}");
    });
}

/// Sends one note with `send` while another thread moves time 10 ms on; returns what `send`
/// returned, the notes the actor handled, and how many envelopes it dropped as expired.
fn while_time_moves<R>(send: impl FnOnce(&ActorRef<Log>) -> R) -> (R, Vec<u32>, u64) {
    let sys = ModelSystem::new();
    let a = sys.spawn(ActorSpec::<Log>::new(Seen::default()));
    let clock = sys.clock().clone();
    let tick = model::thread(move || clock.advance(Duration::from_millis(10)));
    let r = send(&a);
    tick.join().unwrap();
    let got = model::block_on(a.ask(Msg::Get)).unwrap();
    (r, got, a.stats().expired)
}

/// A tell whose TTL runs out while time moves on a concurrent thread: it is either handled or
/// dropped as expired (and counted), never both and never neither.
#[test]
fn loom_ttl_expiry_racing_delivery() {
    model::check(|| {
        let ((), got, expired) = while_time_moves(|a| {
            model::block_on(a.tell(Msg::Note(1)).ttl(Duration::from_millis(10))).unwrap();
        });
        let handled = count(&got, 1) as u64;
        assert_eq!(handled + expired, 1, "handled {handled}, expired {expired}");
    });
}

/// An ask whose deadline passes while it is being delivered: the asker always gets an answer
/// (no hang), `Ok` only if the message was handled, and a message that was not handled is
/// answered `Expired`.
#[test]
fn loom_ask_reply_racing_deadline() {
    model::check(|| {
        let (r, got, expired) =
            while_time_moves(|a| model::block_on(a.ask(Msg::Note(1)).ttl(Duration::from_millis(10))));
        match &r {
            Ok(_) => assert_eq!(count(&got, 1), 1, "Ok for a message not handled once: {got:?}"),
            Err(DeliveryError::Expired) => assert!(count(&got, 1) <= 1),
            Err(e) => panic!("unexpected ask error {e:?}"),
        }
        if count(&got, 1) == 0 {
            assert!(matches!(r, Err(DeliveryError::Expired)));
            assert_eq!(expired, 1);
        }
    });
}

/// A one-for-all group restart (through the supervisor's task, not in place) racing new
/// messages to the group: each is handled at most once, in order, and not both are lost (only
/// the one in flight may be). Loom allows five threads, so the group has one child; races
/// between several children are stressed in tests/core_restart_races.rs.
#[test]
fn loom_one_for_all_restart_racing_new_message() {
    model::check(|| {
        let root = SupervisorSpec::new("root", Strategy::OneForAll)
            .intensity(1_000, Duration::from_secs(1))
            .backoff(Backoff::none());
        let sys = ModelSystem::with_root(root);
        let b = sys.spawn(ActorSpec::<Log>::new(Seen::default()));
        let crasher = {
            let (sys, b) = (sys.clone(), b.clone());
            model::thread(move || sys.crash(&b))
        };
        model::block_on(b.tell(Msg::Note(1))).unwrap();
        model::block_on(b.tell(Msg::Note(2))).unwrap();
        crasher.join().unwrap();
        let got = model::block_on(b.ask(Msg::Get)).unwrap();
        for n in [1, 2] {
            assert!(count(&got, n) <= 1, "note {n} handled twice: {got:?}");
        }
        assert!(!got.is_empty(), "both messages lost: {got:?}");
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "order of one sender broken: {got:?}"
        );
    });
}

/// Says so on a channel each time it starts.
struct Born;

type Births = Arc<Mutex<model::loom::sync::mpsc::Sender<()>>>;

impl Actor for Born {
    type Args = Births;
    type Msg = ();
    type Reply = ();
    type Error = Infallible;

    async fn start(births: &Births, _: &mut Context<Self>) -> Result<Self, Infallible> {
        births.lock().unwrap().send(()).unwrap();
        Ok(Born)
    }

    async fn handle(&mut self, (): (), _: &mut Context<Self>) -> Result<(), Infallible> {
        Ok(())
    }
}

/// A rejuvenation requested while the actor goes idle after a message, at every point loom
/// chooses: the actor starts again without another message to wake it (the request's wake may
/// come before the loop has registered its waker; the loop must then see the request itself,
/// or every thread waits and loom reports the deadlock).
#[test]
fn loom_rejuvenation_request_racing_the_loop_going_idle() {
    model::check(|| {
        let sys = ModelSystem::new();
        let (births, born) = model::loom::sync::mpsc::channel();
        let a = sys.spawn(ActorSpec::<Born>::new(Arc::new(Mutex::new(births))));
        born.recv().unwrap();
        model::block_on(a.tell(())).unwrap();
        a.rejuvenate();
        born.recv().unwrap();
        assert_eq!(a.stats().incarnation, 2);
    });
}

/// An entity that counts its live instances (up in `start`, down when dropped), in a log that
/// outlives them (like a store).
struct Visit {
    seen: Seen,
    live: Arc<Mutex<(i32, i32)>>,
}

impl Drop for Visit {
    fn drop(&mut self) {
        self.live.lock().unwrap().0 -= 1;
    }
}

#[derive(Clone, Debug)]
enum VisitMsg {
    Note(u32),
    Panic,
}

impl Actor for Visit {
    type Args = (Seen, Arc<Mutex<(i32, i32)>>);
    type Msg = VisitMsg;
    type Reply = ();
    type Error = String;

    async fn start((seen, live): &Self::Args, _: &mut Context<Self>) -> Result<Self, String> {
        {
            let mut l = live.lock().unwrap();
            l.0 += 1;
            l.1 = l.1.max(l.0);
        }
        Ok(Visit {
            seen: seen.clone(),
            live: live.clone(),
        })
    }

    async fn handle(&mut self, msg: VisitMsg, _: &mut Context<Self>) -> Result<(), String> {
        match msg {
            VisitMsg::Note(n) => {
                self.seen.lock().unwrap().push(n);
                Ok(())
            }
            VisitMsg::Panic => Err("asked to crash".into()),
        }
    }
}

impl Entity for Visit {
    type Key = u32;
}

/// A family of `Visit` entities in a model system, with its log and live-instance counter.
fn visits(sys: &ModelSystem) -> (Entities<Visit>, Seen, Arc<Mutex<(i32, i32)>>) {
    let seen = Seen::default();
    let live = Arc::new(Mutex::new((0, 0)));
    let args = (seen.clone(), live.clone());
    let family = sys
        .system()
        .spawn_entities(EntitySpec::new("visits", move |_: &u32| args.clone()))
        .unwrap();
    (family, seen, live)
}

/// A message racing the entity's passivation at every point loom chooses: it is handled, once,
/// by the old activation or by the next; there are never two live instances of the key.
#[test]
fn loom_entity_activation_racing_passivation() {
    model::check(|| {
        let sys = ModelSystem::new();
        let (family, seen, live) = visits(&sys);
        let e = family.get(7);
        model::block_on(e.ask(VisitMsg::Note(1))).unwrap();
        let passivator = {
            let e = e.clone();
            model::thread(move || e.passivate())
        };
        model::block_on(e.ask(VisitMsg::Note(2))).unwrap();
        passivator.join().unwrap();
        let got = seen.lock().unwrap().clone();
        assert_eq!(got, vec![1, 2], "each message handled once, in order");
        assert_eq!(live.lock().unwrap().1, 1, "two live instances of one key");
    });
}

/// A crash (from a concurrent sender) racing a passivation and a new message: the message is
/// handled once, and there are never two live instances of the key.
#[test]
fn loom_entity_crash_racing_passivation_and_activation() {
    model::check(|| {
        let sys = ModelSystem::new();
        let (family, seen, live) = visits(&sys);
        let e = family.get(7);
        model::block_on(e.ask(VisitMsg::Note(1))).unwrap();
        let crasher = {
            let e = e.clone();
            model::thread(move || model::block_on(e.tell(VisitMsg::Panic)).unwrap())
        };
        e.passivate();
        model::block_on(e.ask(VisitMsg::Note(2))).unwrap();
        crasher.join().unwrap();
        let got = seen.lock().unwrap().clone();
        assert_eq!(got, vec![1, 2], "each message handled once, in order");
        assert_eq!(live.lock().unwrap().1, 1, "two live instances of one key");
    });
}
