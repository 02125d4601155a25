//! `crashonly-peers table`: measures memory per idle actor (each framework in a fresh process) and
//! prints one table with the criterion figures of `cargo bench` and each peer's ratio to crashonly.
//!
//! `crashonly-peers mem <framework>` is the probe that `table` runs once per framework.
//!
//! `crashonly-peers rounds <k>`: runs every cell `k` times, interleaved, each in a fresh process
//! of the peers bench (built first with `cargo bench --bench peers --no-run`), and prints the
//! table of the medians with each cell's range: single runs of the tell and ask cells move by
//! 20-40% on a 2-core virtual machine.
//!
//! `crashonly-peers scale <crashonly|floor> [n]`: the scaling row, in a process of its own: `n`
//! actors (1,000,000 by default) spawned until each has confirmed its start, then one ask to each
//! (10,000 in flight), then idle for 2.5 s; times, RSS growth and heap in use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crashonly::prelude::Strategy;
use crashonly_peers::{ax, co, floor, heap_in_use, ka, ra, rss_bytes, runtime, Starts, PATIENCE};
use kameo::actor::Spawn;

const FRAMEWORKS: [&str; 6] = ["crashonly", "crashonly-1t", "actix", "ractor", "kameo", "floor"];
const IDLE_N: usize = 100_000;

/// (criterion group, label, unit divisor, unit)
const ROWS: [(&str, &str); 8] = [
    ("spawn_100k", "spawn 100k actors until started"),
    ("tell_1m_1_sender", "tell 1M messages, 1 sender"),
    ("tell_1m_4_senders", "tell 1M messages, 4 senders"),
    ("ask_round_trip", "ask round trip"),
    ("restart_latency", "restart latency (panic -> next message handled)"),
    (
        "restart_err",
        "restart latency (handler returns Err -> next message handled)",
    ),
    ("one_for_all_1000", "restart a 1,000-child subtree (one-for-all)"),
    ("memory", "memory per idle actor"),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["mem", fw] => println!("{}", idle_bytes(fw)),
        ["table"] => table(),
        ["rounds", k] => rounds(k.parse().expect("a count")),
        ["scale", fw] => scale(fw, 1_000_000),
        ["scale", fw, n] => scale(fw, n.parse().expect("a count")),
        ["asks", fw, n] => asks(fw, n.parse().expect("a count"), None),
        ["restarts", fw, n] => asks(fw, n.parse().expect("a count"), Some(co::Msg::Fail)),
        ["panics", fw, n] => {
            std::panic::set_hook(Box::new(|_| {}));
            asks(fw, n.parse().expect("a count"), Some(co::Msg::Panic))
        }
        ["bare-panics", n] => bare_panics(n.parse().expect("a count")),
        _ => {
            eprintln!(
                "usage: crashonly-peers table | crashonly-peers rounds <k> | crashonly-peers mem <crashonly|actix|ractor|kameo|floor> \
                 | crashonly-peers scale <crashonly|floor> [n] | crashonly-peers asks|restarts <crashonly-1t|actix> <n> | crashonly-peers panics crashonly-1t <n> \
                 | crashonly-peers bare-panics <n>"
            );
            std::process::exit(2);
        }
    }
}

/// Bytes of resident memory per idle actor: RSS after spawning `IDLE_N` actors that have all
/// started, minus RSS before, divided by `IDLE_N`.
fn idle_bytes(fw: &str) -> u64 {
    let starts = Starts::new();
    starts.arm(IDLE_N);
    if fw == "actix" {
        use actix::Actor;
        let sys = actix_rt::System::new();
        return sys.block_on(async {
            let before = rss_bytes();
            let keep: Vec<_> = (0..IDLE_N)
                .map(|_| ax::Bench::new(Some(starts.clone())).start())
                .collect();
            wait(&starts).await;
            let after = rss_bytes();
            drop(keep);
            (after - before) / IDLE_N as u64
        });
    }
    let rt = runtime();
    rt.block_on(async {
        let sys = co::system(Strategy::OneForOne);
        let before = rss_bytes();
        let keep: Box<dyn std::any::Any> = match fw {
            "crashonly" => Box::new(
                (0..IDLE_N)
                    .map(|_| co::spawn(&sys, Some(starts.clone())))
                    .collect::<Vec<_>>(),
            ),
            "ractor" => {
                let mut v = Vec::with_capacity(IDLE_N);
                for _ in 0..IDLE_N {
                    v.push(
                        ractor::Actor::spawn(None, ra::Bench, Some(starts.clone()))
                            .await
                            .unwrap()
                            .0,
                    );
                }
                Box::new(v)
            }
            "kameo" => Box::new(
                (0..IDLE_N)
                    .map(|_| ka::Bench::spawn(Some(starts.clone())))
                    .collect::<Vec<_>>(),
            ),
            "floor" => Box::new(
                (0..IDLE_N)
                    .map(|_| floor::spawn(Some(starts.clone())))
                    .collect::<Vec<_>>(),
            ),
            other => panic!("unknown framework {other}"),
        };
        wait(&starts).await;
        let after = rss_bytes();
        drop(keep);
        (after - before) / IDLE_N as u64
    })
}

/// The scaling row: `n` actors spawned and started, one ask each, then idle; prints one line.
fn scale(fw: &str, n: usize) {
    let starts = Starts::new();
    starts.arm(n);
    let rt = runtime();
    let (spawned, asked, rss, heap) = rt.block_on(async {
        let (base, heap_base) = (rss_bytes(), heap_in_use());
        let t = Instant::now();
        let (spawned, asked, rss, heap) = match fw {
            "crashonly" => {
                let sys = co::system(Strategy::OneForOne);
                let refs: Vec<_> = (0..n).map(|_| co::spawn(&sys, Some(starts.clone()))).collect();
                scale_phases(t, &starts, &refs, async |r, round| {
                    assert_eq!(r.ask(co::Msg::Add(1)).await.unwrap(), round);
                })
                .await
            }
            "floor" => {
                let txs: Vec<_> = (0..n).map(|_| floor::spawn(Some(starts.clone()))).collect();
                // One message each, answered (the floor's ask carries no add).
                scale_phases(t, &starts, &txs, async |tx, _| {
                    assert_eq!(floor::ask(tx).await, 0);
                })
                .await
            }
            other => panic!("scale: crashonly or floor, not {other}"),
        };
        (
            spawned,
            asked,
            rss.map(|r| r.saturating_sub(base)),
            heap.saturating_sub(heap_base),
        )
    });
    println!(
        "scale {fw} {n}: spawn until started {:.2} s, one ask each {:.2} s, RSS growth {:.0} MB \
         started ({} B/actor), {:.0} MB idle after the asks ({} B/actor; heap in use {} B/actor)",
        spawned.as_secs_f64(),
        asked.as_secs_f64(),
        rss[0] as f64 / 1e6,
        rss[0] / n as u64,
        rss[1] as f64 / 1e6,
        rss[1] / n as u64,
        heap / n as u64,
    );
}

/// The measured phases of [`scale`] once its `handles` are spawned (at `t`): until every start is
/// confirmed, one `ask` to each (10,000 in flight; more rounds with `SCALE_ROUNDS`, to see what
/// an actor keeps after several), then idle for 2.5 s (an idle crashonly actor hibernates after
/// 1 s). Returns the spawn time, the first round's
/// time, RSS when started and when idle, and the heap in use when idle (the handles still held).
async fn scale_phases<H>(
    t: Instant,
    starts: &Starts,
    handles: &[H],
    ask: impl AsyncFn(&H, u64),
) -> (Duration, Duration, [u64; 2], u64) {
    use futures::StreamExt;
    tokio::time::timeout(PATIENCE * 10, starts.reached())
        .await
        .expect("actors did not start");
    let (spawned, started_rss) = (t.elapsed(), rss_bytes());
    let rounds: u64 = std::env::var("SCALE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut asked = Duration::ZERO;
    for round in 1..=rounds {
        let t = Instant::now();
        futures::stream::iter(handles)
            .for_each_concurrent(10_000, |h| ask(h, round))
            .await;
        if round == 1 {
            asked = t.elapsed();
        }
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    (spawned, asked, [started_rss, rss_bytes()], heap_in_use())
}

async fn wait(starts: &Starts) {
    tokio::time::timeout(PATIENCE, starts.reached())
        .await
        .expect("actors did not start");
    // Let every task settle into its idle wait.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Criterion's mean estimate for one bench, in nanoseconds.
fn estimate(group: &str, fw: &str) -> Option<f64> {
    let text = std::fs::read_to_string(estimate_file(group, fw)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// Where criterion keeps its estimate of one bench.
fn estimate_file(group: &str, fw: &str) -> PathBuf {
    target_dir()
        .join("criterion")
        .join(group)
        .join(fw)
        .join("new/estimates.json")
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn table() {
    let mem: Vec<Option<f64>> = FRAMEWORKS.iter().map(|fw| memory(fw)).collect();
    print_table(estimate, &mem);
}

/// Memory per idle actor of `fw`, measured in a fresh process (`None` for the one-thread cells).
fn memory(fw: &str) -> Option<f64> {
    if fw.ends_with("-1t") {
        return None;
    }
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(&exe).args(["mem", fw]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse::<f64>().ok()
}

/// The table of `figure(row, framework)` (nanoseconds) and `mem` (bytes, per framework).
fn print_table(figure: impl Fn(&str, &str) -> Option<f64>, mem: &[Option<f64>]) {
    println!("| workload | {} |", FRAMEWORKS.join(" | "));
    println!("|---|{}", "---|".repeat(FRAMEWORKS.len()));
    for (group, label) in ROWS {
        let figures: Vec<Option<f64>> = if group == "memory" {
            mem.to_vec()
        } else {
            FRAMEWORKS.iter().map(|fw| figure(group, fw)).collect()
        };
        let cells: Vec<String> = figures
            .iter()
            .enumerate()
            .map(|(i, f)| {
                // actix runs on one thread: where crashonly was measured on one thread too, that
                // is its comparison.
                let ours = if FRAMEWORKS[i] == "actix" && figures[1].is_some() {
                    figures[1]
                } else {
                    figures[0]
                };
                (f, ours, i)
            })
            .map(|(f, ours, i)| match (f, ours) {
                (None, _) => "n/a".to_string(),
                (Some(v), _) if group == "memory" && i == 0 => format!("{v:.0} B"),
                (Some(v), Some(o)) if group == "memory" => format!("{v:.0} B ({:.2}x)", v / o),
                (Some(v), _) if i <= 1 => human_ns(*v),
                (Some(v), Some(o)) => format!("{} ({:.2}x)", human_ns(*v), v / o),
                (Some(v), None) => human_ns(*v),
            })
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    }
    if let (Some(bare), Some(one)) = (
        figure("restart_latency", "bare-panic"),
        figure("restart_latency", "crashonly-1t"),
    ) {
        println!();
        println!(
            "The panic itself (the same panic caught by a bare `catch_unwind`): {}; crashonly-1t's restart without it: {}.",
            human_ns(bare),
            human_ns(one - bare)
        );
    }
    println!();
    println!("Ratios are the peer's figure divided by crashonly's (2 workers): above 1.00x, crashonly is ahead.");
    println!("crashonly-1t is crashonly on a current-thread runtime; actix (always one thread) is compared with it where it was measured.");
}

/// `k` rounds of every cell, interleaved (round 1 runs every cell once, in the table's order,
/// then round 2...), each cell in a fresh process of the peers bench; then the table of the
/// medians, and each cell's range. A cell's figure counts only if criterion wrote it during that
/// run (a cell a framework does not have leaves nothing, and an old file is not read as new).
fn rounds(k: usize) {
    let bench = peers_bench().expect("no peers bench executable: run `cargo bench --bench peers --no-run` first");
    let mut runs: std::collections::HashMap<(&str, &str), Vec<f64>> = Default::default();
    let mut mem: Vec<Vec<f64>> = vec![Vec::new(); FRAMEWORKS.len()];
    for round in 1..=k {
        for (group, _) in ROWS.iter().filter(|(g, _)| *g != "memory") {
            let extra: &[&str] = if *group == "restart_latency" {
                &["bare-panic"]
            } else {
                &[]
            };
            for fw in FRAMEWORKS.iter().chain(extra) {
                let began = std::time::SystemTime::now();
                let status = Command::new(&bench)
                    .args(["--bench", &format!("^{group}/{fw}$")])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
                let fresh = estimate_file(group, fw)
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| at >= began);
                if let (true, Ok(_), Some(v)) = (fresh, status, estimate(group, fw)) {
                    runs.entry((group, fw)).or_default().push(v);
                }
            }
        }
        for (i, fw) in FRAMEWORKS.iter().enumerate() {
            mem[i].extend(memory(fw));
        }
        eprintln!("round {round} of {k} done");
    }
    let median = |v: &[f64]| -> Option<f64> {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[v.len() / 2])
    };
    let mem: Vec<Option<f64>> = mem.iter().map(|v| median(v)).collect();
    println!("Medians of {k} interleaved rounds:");
    println!();
    print_table(|g, fw| runs.get(&(g, fw)).and_then(|v| median(v)), &mem);
    println!();
    println!("Each cell's range over the rounds (min-max):");
    println!();
    for (group, _) in ROWS.iter().filter(|(g, _)| *g != "memory") {
        let cells: Vec<String> = FRAMEWORKS
            .iter()
            .filter_map(|fw| {
                let v = runs.get(&(*group, *fw))?;
                let (lo, hi) = v.iter().fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
                Some(format!("{fw} {}-{}", human_ns(lo), human_ns(hi)))
            })
            .collect();
        println!("- {group}: {}", cells.join(", "));
    }
}

/// The newest build of the peers bench (`cargo bench --bench peers --no-run`).
fn peers_bench() -> Option<PathBuf> {
    std::fs::read_dir(target_dir().join("release/deps"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("peers-") && !n.contains('.'))
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

/// `n` ask round trips on one thread, one at a time (the one-thread cells of the ask row), each
/// after a crash (`restarts`: a handler's `Err`, actix's `ctx.stop()` under its supervisor, the
/// `restart_err` row; `panics`: a panic in the handler, crashonly only, the `restart_latency` row)
/// or not (`asks`), for instruction and system-call counts outside criterion:
/// `valgrind --tool=callgrind` at two `n` (the difference over the difference of `n`),
/// `strace -c`, `perf stat`. A warm-up of 1,000 first.
fn asks(fw: &str, n: u64, crash: Option<co::Msg>) {
    match fw {
        "crashonly-1t" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async {
                let sys = co::system(Strategy::OneForOne);
                let a = co::spawn(&sys, None);
                measured_asks_crashonly(&a, 1_000, crash.clone()).await;
                measured_asks_crashonly(&a, n, crash).await;
            });
        }
        "actix" => {
            let sys = actix_rt::System::new();
            sys.block_on(async {
                let a = actix::Supervisor::start(|_| ax::Bench::new(None));
                let crash = crash.is_some();
                measured_asks_actix(&a, 1_000, crash).await;
                measured_asks_actix(&a, n, crash).await;
            });
        }
        other => panic!("asks: crashonly-1t or actix, not {other}"),
    }
}

#[inline(never)]
async fn measured_asks_crashonly(a: &crashonly::ActorRef<co::Bench>, n: u64, crash: Option<co::Msg>) {
    for _ in 0..n {
        if let Some(crash) = &crash {
            a.tell(crash.clone()).await.unwrap();
        }
        std::hint::black_box(a.ask(co::Msg::Get).await.unwrap());
    }
}

/// `n` panics caught by a bare `catch_unwind` under a silent hook, after a warm-up of 1,000 (the
/// `bare-panic` cell of the restart row, for callgrind beside `panics`).
fn bare_panics(n: u64) {
    std::panic::set_hook(Box::new(|_| {}));
    for _ in 0..1_000 + n {
        std::hint::black_box(std::panic::catch_unwind(|| -> u64 { panic!("bench crash") }).is_err());
    }
}

#[inline(never)]
async fn measured_asks_actix(a: &actix::Addr<ax::Bench>, n: u64, crash: bool) {
    for _ in 0..n {
        if crash {
            a.do_send(ax::Fail);
        }
        std::hint::black_box(a.send(ax::Get).await.unwrap());
    }
}
