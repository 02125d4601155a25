//! The message path counted in instructions (callgrind), for changes whose effect is smaller than
//! this machine's run-to-run noise in time (10-47% between two runs of the same row): an
//! instruction count does not drift with the machine's load or clock.
//!
//! Each row runs in its own child process under `valgrind --tool=callgrind`, on a one-thread
//! runtime, and counts only the instructions of that thread inside the measured function
//! (`--toggle-collect`): the sender's side, the actor's handling and the scheduler's work
//! between them. The watchdog's timed pass is set to once an hour (valgrind runs the program
//! some 50 times slower, so a timed pass would come far more often per message than in a real
//! run).
//!
//! - `ask`: one ask round trip (`a.ask(Get).await`), over 20,000.
//! - `tell`: one tell (`a.tell(Add(1)).await`), over 100,000 and an ask at the end.
//! - `floor_ask`, `floor_tell`: the same on the floor of `benches/peers` (a bare tokio task
//!   reading a tokio mpsc channel of 1,024, a oneshot for the answer: no envelope, no deadline,
//!   no panic boundary, no supervision).
//! - `restart_panic`: a handler's panic until the next message is handled (`tell(Panic)` then
//!   `ask(Get)`: the unwind, the crash report, the supervisor's decision, the new instance's
//!   `start`, the ask), over 2,000; `restart_err`: the same with the handler returning `Err` (a
//!   crash with no unwind); `panic_floor`: a bare `catch_unwind` of the same panic, so that
//!   `restart_panic - panic_floor` is the runtime's part. These rows install a `tracing`
//!   subscriber that keeps every event off (as a service that filters its logs; with none at all
//!   the runtime prints each crash to stderr), and a root that never gives up.
//! - `idle`: not under callgrind: the CPU time (user + system, from `/proc/self/stat`) that a
//!   system of 100,000 idle actors on two workers spends in 5 s of doing nothing, as a share of
//!   one core: what the watchdog's passes over the registry cost.
//!
//! `cargo bench --bench instructions` (about a minute; needs `valgrind` on the PATH).

use std::process::Command;
use std::time::Duration;

use crashonly::prelude::*;
use tokio::runtime::Runtime;

#[path = "support/callgrind.rs"]
mod callgrind;
#[path = "support/counter.rs"]
mod counter;
use counter::{Counter, Msg};

const ASKS: u64 = 20_000;
const TELLS: u64 = 100_000;
const RESTARTS: u64 = 2_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // cargo's bench discovery: nothing to list
    }
    let me = std::env::current_exe().unwrap();
    let idle = Command::new(&me).args(["--child", "idle"]).output().unwrap();
    assert!(idle.status.success(), "the idle child failed");
    print!("{}", String::from_utf8_lossy(&idle.stdout));
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        ("ask", ASKS),
        ("floor_ask", ASKS),
        ("tell", TELLS),
        ("floor_tell", TELLS),
        ("restart_panic", RESTARTS),
        ("restart_err", RESTARTS),
        ("panic_floor", RESTARTS),
    ];
    for (row, n) in rows {
        let total = callgrind::instructions(dir.path(), "*measured_*", &[row]);
        println!(
            "instructions/{row}: {:.0} instructions per {row} ({total} over {n})",
            total as f64 / n as f64
        );
    }
}

/// One measured process: a system with one counter (or the floor's task), then the row.
fn child(row: &str) {
    if row == "idle" {
        return idle();
    }
    if row == "panic_floor" {
        std::panic::set_hook(Box::new(|_| {}));
        return assert_eq!(measured_bare_panics(), RESTARTS);
    }
    if let Some(how) = row.strip_prefix("restart_") {
        return restarts(how == "panic");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(row) = row.strip_prefix("floor_") {
        let tx = rt.block_on(async {
            let tx = floor::spawn();
            floor::ask(&tx).await;
            tx
        });
        match row {
            "ask" => assert_eq!(measured_floor_asks(&rt, &tx), 0),
            _ => assert_eq!(measured_floor_tells(&rt, &tx), TELLS),
        }
        return;
    }
    let a = rt.block_on(async {
        let config = Config::default().with_watchdog_every(Duration::from_secs(3600));
        let sys = System::builder().config(config).start().unwrap();
        let a = sys.spawn(ActorSpec::<Counter>::named("bench", ())).unwrap();
        a.ask(Msg::Get).await.unwrap();
        std::mem::forget(sys); // lives until the process exits
        a
    });
    match row {
        "ask" => assert_eq!(callgrind::measured_asks(&rt, &a, ASKS), 0, "the counter was only asked"),
        "tell" => assert_eq!(measured_tells(&rt, &a), TELLS, "every tell was handled"),
        other => panic!("no row {other}"),
    }
}

/// `TELLS` tells, then an ask for the total.
#[inline(never)]
fn measured_tells(rt: &Runtime, a: &ActorRef<Counter>) -> u64 {
    rt.block_on(async {
        for _ in 0..TELLS {
            a.tell(Msg::Add(1)).await.unwrap();
        }
        a.ask(Msg::Get).await.unwrap()
    })
}

/// `ASKS` asks to the floor.
#[inline(never)]
fn measured_floor_asks(rt: &Runtime, tx: &floor::Tx) -> u64 {
    rt.block_on(async {
        let mut last = 0;
        for _ in 0..ASKS {
            last = floor::ask(tx).await;
        }
        last
    })
}

/// `TELLS` tells to the floor, then an ask for the total.
#[inline(never)]
fn measured_floor_tells(rt: &Runtime, tx: &floor::Tx) -> u64 {
    rt.block_on(async {
        for _ in 0..TELLS {
            tx.send(floor::Msg::Add(1)).await.expect("floor send");
        }
        floor::ask(tx).await
    })
}

mod floor {
    //! The floor of `benches/peers`: a bare tokio task on a tokio mpsc channel.
    use tokio::sync::{mpsc, oneshot};

    #[derive(Debug)]
    pub enum Msg {
        Add(u64),
        Ask(oneshot::Sender<u64>),
    }

    pub type Tx = mpsc::Sender<Msg>;

    pub fn spawn() -> Tx {
        let (tx, mut rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(m) = rx.recv().await {
                match m {
                    Msg::Add(k) => n += k,
                    Msg::Ask(tx) => {
                        let _ = tx.send(n);
                    }
                }
            }
        });
        tx
    }

    pub async fn ask(tx: &Tx) -> u64 {
        let (rtx, rrx) = oneshot::channel();
        tx.send(Msg::Ask(rtx)).await.expect("floor send");
        rrx.await.expect("floor reply")
    }
}

/// 100,000 idle actors on two workers for 5 s: the process's CPU time meanwhile.
fn idle() {
    const IDLE: usize = 100_000;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _sys = rt.block_on(async {
        let sys = System::new();
        let mut last = None;
        for _ in 0..IDLE {
            last = Some(sys.spawn(ActorSpec::<Counter>::new(())).unwrap());
        }
        last.unwrap().ask(Msg::Get).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        sys
    });
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_secs(5));
    let ticks = cpu_ticks() - before;
    // Clock ticks are 1/100 s on Linux.
    println!(
        "instructions/idle: {IDLE} idle actors cost {:.1}% of a core ({ticks} ticks in 5 s)",
        ticks as f64 / 5.0
    );
}

/// The process's user + system CPU time so far, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// An actor that crashes when told to: by a panic, or by returning `Err` (no unwind).
struct Phoenix {
    n: u64,
}

#[derive(Clone, Debug)]
enum Crash {
    Panic,
    Fail,
    Get,
}

impl Actor for Phoenix {
    type Args = ();
    type Msg = Crash;
    type Reply = u64;
    type Error = String;

    async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Phoenix { n: 0 })
    }

    async fn handle(&mut self, msg: Crash, _: &mut Context<Self>) -> Result<u64, String> {
        match msg {
            Crash::Panic => panic!("instructions bench crash"),
            Crash::Fail => Err("instructions bench failure".into()),
            Crash::Get => {
                self.n += 1;
                Ok(self.n)
            }
        }
    }
}

/// `RESTARTS` crashes (by panic or by `Err`), each until the next message is handled.
fn restarts(panic: bool) {
    let off = tracing_subscriber::layer::SubscriberExt::with(
        tracing_subscriber::registry(),
        tracing_subscriber::filter::LevelFilter::OFF,
    );
    tracing::subscriber::set_global_default(off).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a = rt.block_on(async {
        let root = SupervisorSpec::new("root", Strategy::OneForOne)
            .intensity(u32::MAX, Duration::from_secs(1))
            .backoff(Backoff::none());
        let config = Config::default().with_watchdog_every(Duration::from_secs(3600));
        let sys = System::builder().config(config).root(root).start().unwrap();
        let a = sys.spawn(ActorSpec::<Phoenix>::named("phoenix", ())).unwrap();
        a.ask(Crash::Get).await.unwrap();
        std::mem::forget(sys);
        a
    });
    let crash = if panic { Crash::Panic } else { Crash::Fail };
    // Each new instance starts from 0 and answers 1: every crash was followed by a restart.
    assert_eq!(measured_restarts(&rt, &a, crash), 1);
    assert_eq!(a.stats().crashes, RESTARTS);
}

/// `RESTARTS` times: a crash, then an ask that the next instance answers.
#[inline(never)]
fn measured_restarts(rt: &Runtime, a: &ActorRef<Phoenix>, crash: Crash) -> u64 {
    rt.block_on(async {
        let mut last = 0;
        for _ in 0..RESTARTS {
            a.tell(crash.clone()).await.unwrap();
            last = a.ask(Crash::Get).await.unwrap();
        }
        last
    })
}

/// `RESTARTS` bare panics of the same kind, each caught (the panic's own cost).
#[inline(never)]
fn measured_bare_panics() -> u64 {
    let mut caught = 0;
    for _ in 0..RESTARTS {
        let r = std::panic::catch_unwind(|| {
            if std::hint::black_box(true) {
                panic!("instructions bench crash");
            }
        });
        caught += u64::from(r.is_err());
    }
    caught
}
