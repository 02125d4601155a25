//! The same small counter actor written once per framework, in each one's idiomatic API, for the
//! side-by-side benchmarks (`benches/peers.rs`) and the memory probe (`src/main.rs`).
//!
//! Every actor counts `Add(k)` into a `u64`, answers `Get` with the count, and fails on `Panic`.
//! On start it bumps a shared [`Starts`] counter, so a bench can wait until N instances (first
//! starts or restarts) are running.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Counts actor starts and wakes a waiter when the armed goal is reached.
#[derive(Default)]
pub struct Starts {
    count: AtomicUsize,
    goal: AtomicUsize,
    done: Notify,
}

impl Starts {
    /// A counter shared by the actors of one bench.
    pub fn new() -> Arc<Self> {
        Arc::new(Starts::default())
    }
    /// Resets the count and waits for `goal` starts from now on.
    pub fn arm(&self, goal: usize) {
        self.count.store(0, Ordering::SeqCst);
        self.goal.store(goal, Ordering::SeqCst);
    }
    /// Called by an actor when it has started.
    pub fn started(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.goal.load(Ordering::Acquire) {
            self.done.notify_one();
        }
    }
    /// Waits until the armed goal has been reached.
    pub async fn reached(&self) {
        while self.count.load(Ordering::Acquire) < self.goal.load(Ordering::Acquire) {
            self.done.notified().await;
        }
    }
}

/// The mailbox capacity for every framework that takes one.
pub const CAPACITY: usize = 1024;

/// How long a bench waits for anything before it calls the run broken.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A multi-threaded tokio runtime with two workers, for every tokio-based framework.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// glibc's heap in use (`mallinfo2`), in bytes: unlike RSS, it drops when memory is freed (a
/// freed chunk in the middle of the heap stays resident).
pub fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm field");
    pages * 4096
}

pub mod co {
    //! crashonly: an `Actor` under a root supervisor; the `ActorRef` survives restarts.
    use super::*;
    use crashonly::prelude::*;

    pub struct Bench {
        n: u64,
    }

    #[derive(Clone, Debug)]
    pub enum Msg {
        Add(u64),
        Get,
        Panic,
        /// The handler returns `Err`: a crash without unwinding.
        Fail,
    }

    /// What `Msg::Fail` returns.
    #[derive(Debug)]
    pub struct Failed;

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bench failure")
        }
    }

    impl Actor for Bench {
        type Args = Option<Arc<Starts>>;
        type Msg = Msg;
        type Reply = u64;
        type Error = Failed;

        async fn start(starts: &Option<Arc<Starts>>, _: &mut Context<Self>) -> Result<Self, Self::Error> {
            if let Some(s) = starts {
                s.started();
            }
            Ok(Bench { n: 0 })
        }

        async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) -> Result<u64, Self::Error> {
            match msg {
                Msg::Add(k) => self.n += k,
                Msg::Get => {}
                Msg::Panic => panic!("bench crash"),
                Msg::Fail => return Err(Failed),
            }
            Ok(self.n)
        }
    }

    /// A system whose root supervisor uses `strategy`, never gives up, and restarts at once.
    pub fn system(strategy: Strategy) -> System {
        let root = SupervisorSpec::new("root", strategy)
            .intensity(u32::MAX, Duration::from_secs(1))
            .backoff(Backoff::none());
        System::builder()
            .config(Config::default().with_mailbox_capacity(CAPACITY))
            .root(root)
            .start()
            .expect("crashonly system")
    }

    pub fn spawn(sys: &System, starts: Option<Arc<Starts>>) -> ActorRef<Bench> {
        sys.spawn(ActorSpec::<Bench>::new(starts)).expect("spawn")
    }
}

pub mod ax {
    //! actix: a `Supervised` actor under `actix::Supervisor` (same `Addr` after a restart). actix
    //! does not catch panics, so its idiomatic failure is `ctx.stop()` in the handler, which the
    //! supervisor turns into a restart.
    use super::*;
    use actix::prelude::*;

    pub struct Bench {
        n: u64,
        starts: Option<Arc<Starts>>,
    }

    impl Bench {
        pub fn new(starts: Option<Arc<Starts>>) -> Self {
            Bench { n: 0, starts }
        }
    }

    impl Actor for Bench {
        type Context = Context<Self>;
        fn started(&mut self, ctx: &mut Context<Self>) {
            ctx.set_mailbox_capacity(CAPACITY);
            if let Some(s) = &self.starts {
                s.started();
            }
        }
    }

    impl Supervised for Bench {
        fn restarting(&mut self, _: &mut Context<Self>) {
            self.n = 0;
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    pub struct Add(pub u64);

    #[derive(Message)]
    #[rtype(result = "u64")]
    pub struct Get;

    #[derive(Message)]
    #[rtype(result = "()")]
    pub struct Fail;

    impl Handler<Add> for Bench {
        type Result = ();
        fn handle(&mut self, Add(k): Add, _: &mut Context<Self>) {
            self.n += k;
        }
    }

    impl Handler<Get> for Bench {
        type Result = u64;
        fn handle(&mut self, _: Get, _: &mut Context<Self>) -> u64 {
            self.n
        }
    }

    impl Handler<Fail> for Bench {
        type Result = ();
        fn handle(&mut self, _: Fail, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }
}

pub mod ra {
    //! ractor: actors spawned linked to a supervisor actor, which respawns failed children in
    //! `handle_supervisor_evt` (ractor catches the panic). A respawned child has a new `ActorRef`,
    //! which the supervisor publishes on a channel.
    use super::*;
    use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
    use tokio::sync::mpsc;

    pub struct Bench;

    pub enum Msg {
        Add(u64),
        Get(RpcReplyPort<u64>),
        Panic,
    }

    impl Actor for Bench {
        type Msg = Msg;
        type State = u64;
        type Arguments = Option<Arc<Starts>>;

        async fn pre_start(&self, _: ActorRef<Msg>, starts: Self::Arguments) -> Result<u64, ActorProcessingErr> {
            if let Some(s) = starts {
                s.started();
            }
            Ok(0)
        }

        async fn handle(&self, _: ActorRef<Msg>, msg: Msg, n: &mut u64) -> Result<(), ActorProcessingErr> {
            match msg {
                Msg::Add(k) => *n += k,
                Msg::Get(reply) => {
                    let _ = reply.send(*n);
                }
                Msg::Panic => panic!("bench crash"),
            }
            Ok(())
        }
    }

    /// Supervises `n` children; one-for-one restarts only the failed child, one-for-all kills the
    /// others and respawns them all. After each restart it publishes the current children.
    pub struct Sup {
        pub all_for_one: bool,
    }

    pub struct SupArgs {
        pub n: usize,
        pub starts: Option<Arc<Starts>>,
        pub publish: mpsc::UnboundedSender<Vec<ActorRef<Msg>>>,
    }

    pub struct SupState {
        children: Vec<ActorRef<Msg>>,
        starts: Option<Arc<Starts>>,
        publish: mpsc::UnboundedSender<Vec<ActorRef<Msg>>>,
    }

    async fn spawn_child(sup: ActorCell, starts: &Option<Arc<Starts>>) -> Result<ActorRef<Msg>, ActorProcessingErr> {
        let (r, _) = Actor::spawn_linked(None, Bench, starts.clone(), sup).await?;
        Ok(r)
    }

    impl Actor for Sup {
        type Msg = ();
        type State = SupState;
        type Arguments = SupArgs;

        async fn pre_start(&self, me: ActorRef<()>, args: SupArgs) -> Result<SupState, ActorProcessingErr> {
            let mut children = Vec::with_capacity(args.n);
            for _ in 0..args.n {
                children.push(spawn_child(me.get_cell(), &args.starts).await?);
            }
            let _ = args.publish.send(children.clone());
            Ok(SupState {
                children,
                starts: args.starts,
                publish: args.publish,
            })
        }

        async fn handle_supervisor_evt(
            &self,
            me: ActorRef<()>,
            evt: SupervisionEvent,
            st: &mut SupState,
        ) -> Result<(), ActorProcessingErr> {
            let SupervisionEvent::ActorFailed(cell, _) = evt else {
                return Ok(());
            };
            let Some(i) = st.children.iter().position(|c| c.get_id() == cell.get_id()) else {
                return Ok(());
            };
            if self.all_for_one {
                for c in &st.children {
                    c.unlink(me.get_cell());
                    c.kill();
                }
                for c in st.children.iter_mut() {
                    *c = spawn_child(me.get_cell(), &st.starts).await?;
                }
            } else {
                st.children[i] = spawn_child(me.get_cell(), &st.starts).await?;
            }
            let _ = st.publish.send(st.children.clone());
            Ok(())
        }
    }
}

pub mod ka {
    //! kameo: children spawned with `supervise` under a supervisor actor whose strategy is
    //! one-for-one or one-for-all; the `ActorRef` survives restarts.
    use super::*;
    use kameo::actor::{Actor, ActorRef};
    use kameo::error::Infallible;
    use kameo::message::{Context, Message};
    use kameo::supervision::SupervisionStrategy;

    pub struct Bench {
        n: u64,
    }

    impl Actor for Bench {
        type Args = Option<Arc<Starts>>;
        type Error = Infallible;
        async fn on_start(starts: Self::Args, _: ActorRef<Self>) -> Result<Self, Self::Error> {
            if let Some(s) = starts {
                s.started();
            }
            Ok(Bench { n: 0 })
        }
    }

    pub struct Add(pub u64);
    pub struct Get;
    pub struct Panic;

    impl Message<Add> for Bench {
        type Reply = ();
        async fn handle(&mut self, Add(k): Add, _: &mut Context<Self, ()>) {
            self.n += k;
        }
    }

    impl Message<Get> for Bench {
        type Reply = u64;
        async fn handle(&mut self, _: Get, _: &mut Context<Self, u64>) -> u64 {
            self.n
        }
    }

    impl Message<Panic> for Bench {
        type Reply = ();
        async fn handle(&mut self, _: Panic, _: &mut Context<Self, ()>) {
            panic!("bench crash")
        }
    }

    pub struct OneForOne;
    pub struct OneForAll;

    impl Actor for OneForOne {
        type Args = ();
        type Error = Infallible;
        fn supervision_strategy() -> SupervisionStrategy {
            SupervisionStrategy::OneForOne
        }
        async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Self::Error> {
            Ok(OneForOne)
        }
    }

    impl Actor for OneForAll {
        type Args = ();
        type Error = Infallible;
        fn supervision_strategy() -> SupervisionStrategy {
            SupervisionStrategy::OneForAll
        }
        async fn on_start(_: (), _: ActorRef<Self>) -> Result<Self, Self::Error> {
            Ok(OneForAll)
        }
    }
}

pub mod floor {
    //! The floor: a bare tokio task reading a tokio mpsc channel, respawned on panic by a plain
    //! task (one-for-one), or all respawned together (one-for-all).
    use super::*;
    use futures::future::{join_all, select_all};
    use tokio::sync::{mpsc, oneshot, Mutex};

    pub enum Msg {
        Add(u64),
        Ask(oneshot::Sender<u64>),
        Panic,
    }

    type SharedRx = Arc<Mutex<mpsc::Receiver<Msg>>>;

    async fn run(rx: SharedRx, starts: Option<Arc<Starts>>) {
        let mut rx = rx.lock().await;
        if let Some(s) = starts {
            s.started();
        }
        let mut n = 0;
        while let Some(m) = rx.recv().await {
            match m {
                Msg::Add(k) => n += k,
                Msg::Ask(tx) => {
                    let _ = tx.send(n);
                }
                Msg::Panic => panic!("floor crash"),
            }
        }
    }

    /// One actor, respawned when it panics.
    pub fn spawn(starts: Option<Arc<Starts>>) -> mpsc::Sender<Msg> {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let rx = Arc::new(Mutex::new(rx));
        tokio::spawn(async move {
            while let Err(e) = tokio::spawn(run(rx.clone(), starts.clone())).await {
                if !e.is_panic() {
                    break;
                }
            }
        });
        tx
    }

    /// `n` actors, all respawned when one panics.
    pub fn group(n: usize, starts: Option<Arc<Starts>>) -> Vec<mpsc::Sender<Msg>> {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::channel(CAPACITY);
                (tx, Arc::new(Mutex::new(rx)))
            })
            .unzip();
        tokio::spawn(async move {
            loop {
                let tasks: Vec<_> = rxs
                    .iter()
                    .map(|rx| tokio::spawn(run(rx.clone(), starts.clone())))
                    .collect();
                let (_, _, rest) = select_all(tasks).await;
                rest.iter().for_each(|t| t.abort());
                join_all(rest).await;
            }
        });
        txs
    }

    pub async fn ask(tx: &mpsc::Sender<Msg>) -> u64 {
        let (rtx, rrx) = oneshot::channel();
        assert!(tx.send(Msg::Ask(rtx)).await.is_ok(), "floor send");
        rrx.await.expect("floor reply")
    }
}
