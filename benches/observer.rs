//! What watching costs: tell and ask throughput of one actor in a system of 100,000 idle actors,
//! with no observer page and with the page connected (a client reading its server-sent frames at
//! the default interval, 500 ms), in the same run. The goal is under 3%.
//!
//! Each frame is one pass over the registry (100,001 slots) that aggregates it into a tree of at
//! most 50 children per level (see `runtime/src/observer/model.rs`); the page paces itself to at
//! least twice a frame's build time. The client is connected only while the "page" rows are
//! measured, so the "off" rows pay nothing for it. Frames are built on a thread of tokio's
//! blocking pool, not on the runtime's thread. Three rounds alternate off and page.
//!
//! `cargo bench --bench observer` (a short run: `-- --measurement-time 3 --warm-up-time 1`)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crashonly::observer::{self, ObserverOptions};
use crashonly::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

const TELL_N: u64 = 100_000;
const IDLE: usize = 100_000;

#[path = "support/counter.rs"]
mod counter;
#[path = "support/page.rs"]
mod page;
use counter::{Counter as Bench, Msg};
use page::page;

/// A system of `IDLE` idle actors and the measured one, its observer on a loopback port.
fn setup(rt: &Runtime) -> (System, ActorRef<Bench>, SocketAddr) {
    rt.block_on(async {
        let sys = System::builder().start().unwrap();
        for _ in 0..IDLE {
            sys.spawn(ActorSpec::<Bench>::new(())).unwrap();
        }
        let a = sys.spawn(ActorSpec::<Bench>::named("bench", ())).unwrap();
        a.ask(Msg::Get).await.unwrap();
        let opts = ObserverOptions::default().with_listen(SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = observer::bind(&sys, opts).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(listener.serve());
        (sys, a, addr)
    })
}

fn group(c: &mut Criterion, name: &str, rt: &Runtime) {
    let (sys, a, addr) = setup(rt);
    let mut g = c.benchmark_group(name);
    g.sample_size(20);
    let read = Arc::new(AtomicU64::new(0));
    // Three rounds, off and page alternating: this machine's drift between two runs of the same
    // row (10-15%) is larger than the cost looked for; compare each page row with the off row
    // beside it.
    for (round, page_on) in [(1, false), (1, true), (2, false), (2, true), (3, false), (3, true)] {
        let reader = page_on.then(|| rt.spawn(page(addr, read.clone())));
        let label = format!("{}_{round}", if page_on { "page" } else { "off" });
        g.bench_function(format!("tell_100k_{label}"), |b| {
            b.to_async(rt).iter(|| async {
                for _ in 0..TELL_N {
                    a.tell(Msg::Add(1)).await.unwrap();
                }
                a.ask(Msg::Get).await.unwrap()
            })
        });
        g.bench_function(format!("ask_{label}"), |b| {
            b.to_async(rt).iter(|| async { a.ask(Msg::Get).await.unwrap() })
        });
        if let Some(r) = reader {
            r.abort();
        }
    }
    g.finish();
    // The page really was fed (a bench of nothing would show no cost either): frames of a tree
    // of 100,001 actors arrived while it was connected.
    let got = read.load(Ordering::Relaxed);
    assert!(got > 10_000, "the page read only {got} bytes");
    println!("the page read {got} bytes of frames");
    // What one frame of this tree costs to build (the frame says), for the README.
    let tree = rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/tree HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    });
    let at = tree.find("\"build_us\":").expect("a frame");
    let us: String = tree[at + 11..].chars().take_while(char::is_ascii_digit).collect();
    println!(
        "one frame of {} actors: built in {us} us, {} bytes",
        IDLE + 1,
        tree.len()
    );
    drop(sys);
}

fn all(c: &mut Criterion) {
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One thread: the frames are built on the thread that runs the actors, so their whole cost
    // shows in the figure (on more workers it would hide on an idle core).
    group(c, "observer_cost_local", &local);
}

criterion_group!(benches, all);
criterion_main!(benches);
