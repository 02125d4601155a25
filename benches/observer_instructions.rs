//! What watching costs the message path, counted in instructions rather than time: this
//! machine's wall-clock noise between two runs of the same ask row (10-47%) is larger than the 3%
//! looked for, and an instruction count does not drift with the machine's load or clock.
//!
//! The bench runs itself twice under callgrind (valgrind), in a system of 100,000 idle actors
//! with the observer serving on a loopback port: once with no page, once with a page connected and
//! reading its server-sent frames. Each child counts only the instructions of the thread that
//! runs the actors while it makes `ASKS` asks to one actor (`--toggle-collect` on
//! `measured_asks`): the asks themselves, the actor's handling, and whatever else that thread
//! runs meanwhile (the page's frames are written from it). A frame is built on a thread of
//! tokio's blocking pool, paced to at least 50 times its own build time (at most about 2% of a
//! core, see `runtime/src/observer/http.rs`); that part is reported by `benches/observer.rs`.
//! The watchdog is set to pass once an hour in both children (see `child`).
//!
//! `cargo bench --bench observer_instructions` (about a minute; needs `valgrind` on the PATH).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crashonly::observer::{self, ObserverOptions};
use crashonly::prelude::*;

#[path = "support/callgrind.rs"]
mod callgrind;
#[path = "support/counter.rs"]
mod counter;
#[path = "support/page.rs"]
mod page;
use counter::{Counter, Msg};
use page::page;

const ASKS: u64 = 20_000;
const IDLE: usize = 100_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(args[2] == "page");
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // cargo's bench discovery: nothing to list
    }
    let dir = tempfile::tempdir().unwrap();
    let mut per_ask = Vec::new();
    for mode in ["off", "page"] {
        let total = callgrind::instructions(dir.path(), "*measured_asks*", &[mode]);
        let each = total as f64 / ASKS as f64;
        println!("observer_instructions/ask_{mode}: {each:.0} instructions per ask ({total} over {ASKS} asks)");
        per_ask.push(each);
    }
    println!(
        "observer_instructions/ask: the page costs the actors' thread {:+.2}% instructions per ask",
        (per_ask[1] / per_ask[0] - 1.0) * 100.0
    );
}

/// One measured process: the system, the observer, the page (or none), then the asks.
fn child(page_on: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let read = Arc::new(AtomicU64::new(0));
    let a = rt.block_on(async {
        // The watchdog's pass over the registry (every 50 ms by default, on the actors' thread) is
        // timed: under callgrind, which runs the program some 50 times slower, it would pass far
        // more often per ask than in a real run, and its count would swamp the page's. Off in both
        // children, so the difference is the page alone.
        let config = Config::default().with_watchdog_every(Duration::from_secs(3600));
        let sys = System::builder().config(config).start().unwrap();
        for _ in 0..IDLE {
            sys.spawn(ActorSpec::<Counter>::new(())).unwrap();
        }
        let a = sys.spawn(ActorSpec::<Counter>::named("bench", ())).unwrap();
        a.ask(Msg::Get).await.unwrap();
        let opts = ObserverOptions::default().with_listen(SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = observer::bind(&sys, opts).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(listener.serve());
        if page_on {
            tokio::spawn(page(addr, read.clone()));
            // The first frame has arrived: the page is live while the asks are counted.
            while read.load(Ordering::Relaxed) < 10_000 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        std::mem::forget(sys); // lives until the process exits
        a
    });
    let got = callgrind::measured_asks(&rt, &a, ASKS);
    assert_eq!(got, 0, "the counter was only asked");
    if page_on {
        let bytes = read.load(Ordering::Relaxed);
        eprintln!("the page read {bytes} bytes of frames");
        assert!(bytes >= 10_000, "the page was not fed");
    }
}
