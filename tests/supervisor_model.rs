//! Model-based tests of supervision: a reference model (strategies x restart types x intensity and
//! period x escalation) and proptest state-machine runs that drive the real runtime with random
//! sequences of crashes, normal exits, messages and time, on virtual time, comparing it with the
//! model after every step. A failure shrinks to a short sequence of steps.
//!
//! `SUPERVISOR_CASES=n` sets the number of sequences (10,000 by default; the soak tier uses 100,000).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crashonly::prelude::*;
use crashonly::Strategy;
use proptest::prelude::*;
use proptest::strategy::Strategy as _;

// ---- the reference model ----

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Child `i` panics in a handler.
    Crash(usize),
    /// Child `i` ends normally (`ctx.stop()`).
    Exit(usize),
    /// A message to child `i`.
    Ping(usize),
    /// Virtual time moves on.
    Advance(u64),
}

#[derive(Clone, Debug)]
struct Setup {
    strategy: Strategy,
    restarts: Vec<Restart>,
    max_restarts: u32,
    period_ms: u64,
}

#[derive(Debug)]
struct Model {
    setup: Setup,
    /// Instances started per child; `None` once the child is gone.
    starts: Vec<Option<u32>>,
    restart_times: VecDeque<u64>,
    now_ms: u64,
    failed: bool,
}

impl Model {
    fn new(setup: Setup) -> Self {
        let starts = vec![Some(1); setup.restarts.len()];
        Model {
            setup,
            starts,
            restart_times: VecDeque::new(),
            now_ms: 0,
            failed: false,
        }
    }

    /// What the supervisor does when child `i` ends (crashed or not).
    fn ended(&mut self, i: usize, crashed: bool) {
        let restart = match self.setup.restarts[i] {
            Restart::Permanent => true,
            Restart::Transient => crashed,
            Restart::Temporary => false,
        };
        if !restart {
            self.starts[i] = None;
            return;
        }
        let period = self.setup.period_ms;
        while self.restart_times.front().is_some_and(|t| self.now_ms - t >= period) {
            self.restart_times.pop_front();
        }
        self.restart_times.push_back(self.now_ms);
        if self.restart_times.len() > self.setup.max_restarts as usize {
            self.failed = true; // the root escalates: the system fails
            return;
        }
        let alive = |j: usize| self.starts[j].is_some();
        let group: Vec<usize> = match self.setup.strategy {
            Strategy::OneForOne => vec![i],
            Strategy::OneForAll => (0..self.starts.len()).filter(|&j| alive(j)).collect(),
            Strategy::RestForOne => (i..self.starts.len()).filter(|&j| alive(j)).collect(),
        };
        for j in group {
            // OTP: a temporary sibling is terminated with the group and never restarted.
            if j != i && self.setup.restarts[j] == Restart::Temporary {
                self.starts[j] = None;
            } else {
                *self.starts[j].as_mut().unwrap() += 1;
            }
        }
    }

    fn step(&mut self, s: Step) {
        match s {
            Step::Crash(i) if self.starts[i].is_some() => self.ended(i, true),
            Step::Exit(i) if self.starts[i].is_some() => self.ended(i, false),
            Step::Advance(ms) => self.now_ms += ms,
            _ => {}
        }
    }
}

// ---- the real runtime ----

struct Child {
    #[allow(dead_code)]
    starts: Arc<AtomicU32>,
}

#[derive(Clone, Debug)]
enum Msg {
    Crash,
    Exit,
    Ping,
}

impl Actor for Child {
    type Args = Arc<AtomicU32>;
    type Msg = Msg;
    type Reply = ();
    type Error = Infallible;

    async fn start(starts: &Arc<AtomicU32>, _: &mut Context<Self>) -> Result<Self, Infallible> {
        starts.fetch_add(1, Ordering::SeqCst);
        Ok(Child { starts: starts.clone() })
    }

    async fn handle(&mut self, msg: Msg, ctx: &mut Context<Self>) -> Result<(), Infallible> {
        match msg {
            Msg::Crash => panic!("planned crash"),
            Msg::Exit => ctx.stop(),
            Msg::Ping => {}
        }
        Ok(())
    }
}

/// Runs `steps` on a fresh system and on the model, comparing them after every step.
fn run(setup: Setup, steps: Vec<Step>) -> Result<(), TestCaseError> {
    // Planned crashes by the thousand: keep them off the terminal. A subscriber that writes
    // nowhere takes the runtime's crash events (without one, each panic is printed to stderr).
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let _ = tracing_subscriber::fmt().with_writer(std::io::sink).try_init();
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"planned crash") {
                default(info)
            }
        }))
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let root = SupervisorSpec::new("root", setup.strategy)
            .intensity(setup.max_restarts, Duration::from_millis(setup.period_ms))
            .backoff(Backoff::none());
        // Systems fail here on purpose: the test, not the watchdog, decides what happens next.
        let config = Config::default()
            .with_watchdog_every(Duration::from_secs(3600))
            .with_exit_on_failure(None);
        let sys = System::builder().config(config).root(root).start().unwrap();
        let counters: Vec<Arc<AtomicU32>> = setup.restarts.iter().map(|_| Arc::default()).collect();
        let refs: Vec<ActorRef<Child>> = setup
            .restarts
            .iter()
            .zip(&counters)
            .map(|(r, c)| sys.spawn(ActorSpec::<Child>::new(c.clone()).restart(*r)).unwrap())
            .collect();
        // Spawning returns before `start` has run; like OTP's start_child, begin once every
        // child has started.
        for r in &refs {
            r.ask(Msg::Ping).await.unwrap();
        }
        let mut model = Model::new(setup);
        for (n, &step) in steps.iter().enumerate() {
            match step {
                Step::Crash(i) => {
                    let _ = refs[i].tell(Msg::Crash).await;
                }
                Step::Exit(i) => {
                    let _ = refs[i].tell(Msg::Exit).await;
                }
                Step::Ping(i) => {
                    let _ = refs[i].tell(Msg::Ping).await;
                }
                Step::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
            }
            model.step(step);
            if model.failed {
                let failed = tokio::time::timeout(Duration::from_secs(10), sys.wait()).await;
                prop_assert!(
                    matches!(failed, Ok(Err(_))),
                    "step {n} {step:?}: the model escalates to a system failure, the runtime does not"
                );
                return Ok(());
            }
            // Settle: every child the model has alive answers (after its restart, if any). The
            // child the step touched goes first: once it answers, its group restart is done (and
            // temporary siblings removed by it are gone).
            let first = match step {
                Step::Crash(i) | Step::Exit(i) | Step::Ping(i) => i,
                Step::Advance(_) => 0,
            };
            let order = std::iter::once(first).chain((0..refs.len()).filter(|&j| j != first));
            for i in order {
                let r = &refs[i];
                let answer = r.ask(Msg::Ping).ttl(Duration::from_secs(60)).await;
                match model.starts[i] {
                    Some(_) => prop_assert!(answer.is_ok(), "step {n} {step:?}: child {i} answered {answer:?}"),
                    None => prop_assert_eq!(
                        answer,
                        Err(DeliveryError::Dead),
                        "step {} {:?}: child {} should be gone",
                        n,
                        step,
                        i
                    ),
                }
            }
            let real: Vec<Option<u32>> = counters
                .iter()
                .zip(&model.starts)
                .map(|(c, m)| m.map(|_| c.load(Ordering::SeqCst)))
                .collect();
            prop_assert_eq!(
                &real,
                &model.starts,
                "step {} {:?}: instances started per child",
                n,
                step
            );
            prop_assert!(
                sys.failure().is_none(),
                "step {n} {step:?}: the runtime failed, the model does not"
            );
        }
        Ok(())
    })
}

fn setups() -> impl proptest::strategy::Strategy<Value = Setup> {
    let strategy = prop_oneof![
        Just(Strategy::OneForOne),
        Just(Strategy::OneForAll),
        Just(Strategy::RestForOne)
    ];
    let restart = prop_oneof![
        Just(Restart::Permanent),
        Just(Restart::Transient),
        Just(Restart::Temporary)
    ];
    (
        strategy,
        proptest::collection::vec(restart, 1..=4),
        0u32..4,
        prop_oneof![Just(100u64), Just(1_000u64)],
    )
        .prop_map(|(strategy, restarts, max_restarts, period_ms)| Setup {
            strategy,
            restarts,
            max_restarts,
            period_ms,
        })
}

fn steps(children: usize) -> impl proptest::strategy::Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0..children).prop_map(Step::Crash),
        2 => (0..children).prop_map(Step::Exit),
        2 => (0..children).prop_map(Step::Ping),
        2 => (1u64..300).prop_map(Step::Advance),
    ];
    proptest::collection::vec(step, 1..20)
}

fn cases() -> u32 {
    std::env::var("SUPERVISOR_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn supervision_matches_the_model(
        (setup, steps) in setups().prop_flat_map(|s| {
            let n = s.restarts.len();
            (Just(s), steps(n))
        })
    ) {
        static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
        if n == cases() {
            println!("supervisor model: {n} sequences compared with the model");
        }
        run(setup, steps)?;
    }
}
