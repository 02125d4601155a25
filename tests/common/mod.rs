//! A configurable test actor shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crashonly::prelude::*;
use crashonly::Header;
use tokio::sync::Semaphore;

/// What the probe is told to do.
#[derive(Clone, Debug)]
pub enum Cmd {
    /// Reply with the current count.
    Get,
    /// Add to the count (and to the shared `total`).
    Add(u64),
    /// Panic with this message.
    Panic(&'static str),
    /// Return an error.
    Fail,
    /// Panic the first time only (the flag remembers across instances).
    PanicOnce(Arc<AtomicBool>),
    /// End normally.
    Stop,
    /// Wait for a permit before replying.
    Wait(Arc<Semaphore>),
    /// Sleep, then panic.
    SleepThenPanic(Duration),
    /// Sleep (virtual time in paused tests).
    Sleep(Duration),
    /// Arm a one-shot timer that adds 1.
    After(Duration),
    /// Arm an interval that adds 1 every period.
    Every(Duration),
}

/// What every probe replies: which instance handled it, the count, and the envelope header.
#[derive(Clone, Debug)]
pub struct Seen {
    pub instance: u64,
    pub n: u64,
    pub header: Option<Header>,
}

/// Shared, outside the actor (so it survives crashes).
#[derive(Clone, Default)]
pub struct Probes {
    pub starts: Arc<AtomicU64>,
    pub total: Arc<AtomicU64>,
    pub live: Arc<AtomicI64>,
    pub overlap: Arc<AtomicBool>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub start_delay: Option<Duration>,
    pub fail_start: Arc<AtomicBool>,
}

pub struct Probe {
    instance: u64,
    n: u64,
    live: Arc<AtomicI64>,
    total: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Actor for Probe {
    type Args = Probes;
    type Msg = Cmd;
    type Reply = Seen;
    type Error = String;

    async fn start(p: &Probes, _ctx: &mut Context<Self>) -> Result<Self, String> {
        if p.live.fetch_add(1, Ordering::SeqCst) != 0 {
            p.overlap.store(true, Ordering::SeqCst);
        }
        let probe = Probe {
            instance: p.starts.fetch_add(1, Ordering::SeqCst) + 1,
            n: 0,
            live: p.live.clone(),
            total: p.total.clone(),
            log: p.log.clone(),
        };
        if let Some(d) = p.start_delay {
            tokio::time::sleep(d).await;
        }
        if p.fail_start.load(Ordering::SeqCst) {
            return Err("refusing to start".into());
        }
        Ok(probe)
    }

    async fn handle(&mut self, cmd: Cmd, ctx: &mut Context<Self>) -> Result<Seen, String> {
        self.log.lock().unwrap().push(format!("{}:{cmd:?}", self.instance));
        let stop = matches!(cmd, Cmd::Stop);
        match cmd {
            Cmd::Get | Cmd::Stop => {}
            Cmd::Add(k) => {
                self.n += k;
                self.total.fetch_add(k, Ordering::SeqCst);
            }
            Cmd::Panic(msg) => panic!("{msg}"),
            Cmd::Fail => return Err("told to fail".into()),
            Cmd::PanicOnce(flag) => {
                if !flag.swap(true, Ordering::SeqCst) {
                    panic!("first attempt fails");
                }
            }
            Cmd::Wait(gate) => drop(gate.acquire().await.unwrap()),
            Cmd::Sleep(d) => tokio::time::sleep(d).await,
            Cmd::SleepThenPanic(d) => {
                tokio::time::sleep(d).await;
                panic!("slow crash");
            }
            Cmd::After(d) => drop(ctx.send_after(d, Cmd::Add(1))),
            Cmd::Every(d) => drop(ctx.send_interval(d, || Cmd::Add(1))),
        }
        if stop {
            ctx.stop();
        }
        Ok(Seen {
            instance: self.instance,
            n: self.n,
            header: ctx.header().cloned(),
        })
    }
}

/// Asks for the current count with a generous TTL (waits through restarts).
pub async fn get(r: &ActorRef<Probe>) -> Seen {
    r.ask(Cmd::Get)
        .ttl(Duration::from_secs(30))
        .await
        .expect("probe answers")
}

/// A one-for-all (or other) supervisor `name` under the root with two probes, `a` and `b`, both
/// started.
pub async fn pair(
    system: &System,
    name: &str,
    strategy: Strategy,
) -> (SupervisorRef, ActorRef<Probe>, ActorRef<Probe>) {
    let sup = system
        .root()
        .spawn_supervisor(
            SupervisorSpec::new(name, strategy)
                .backoff(Backoff::none())
                .child(ActorSpec::<Probe>::named("a", Probes::default()))
                .child(ActorSpec::<Probe>::named("b", Probes::default())),
        )
        .unwrap();
    let (a, b) = (sup.child::<Probe>("a").unwrap(), sup.child::<Probe>("b").unwrap());
    get(&a).await;
    get(&b).await;
    (sup, a, b)
}
