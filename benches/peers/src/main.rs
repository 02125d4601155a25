//! `crashonly-peers table`: measures memory per idle actor (each framework in a fresh process) and
//! prints one table with the criterion figures of `cargo bench` and each peer's ratio to crashonly.
//!
//! `crashonly-peers mem <framework>` is the probe that `table` runs once per framework.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crashonly::prelude::Strategy;
use crashonly_peers::{ax, co, floor, ka, ra, rss_bytes, runtime, Starts, PATIENCE};
use kameo::actor::Spawn;

const FRAMEWORKS: [&str; 6] = ["crashonly", "crashonly-1t", "actix", "ractor", "kameo", "floor"];
const IDLE_N: usize = 100_000;

/// (criterion group, label, unit divisor, unit)
const ROWS: [(&str, &str); 7] = [
    ("spawn_100k", "spawn 100k actors until started"),
    ("tell_1m_1_sender", "tell 1M messages, 1 sender"),
    ("tell_1m_4_senders", "tell 1M messages, 4 senders"),
    ("ask_round_trip", "ask round trip"),
    ("restart_latency", "restart latency (panic -> next message handled)"),
    ("one_for_all_1000", "restart a 1,000-child subtree (one-for-all)"),
    ("memory", "memory per idle actor"),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["mem", fw] => println!("{}", idle_bytes(fw)),
        ["table"] => table(),
        _ => {
            eprintln!("usage: crashonly-peers table | crashonly-peers mem <crashonly|actix|ractor|kameo|floor>");
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
    let path = target_dir()
        .join("criterion")
        .join(group)
        .join(fw)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
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
    let exe = std::env::current_exe().expect("own path");
    let mem: Vec<Option<f64>> = FRAMEWORKS
        .iter()
        .map(|fw| {
            if fw.ends_with("-1t") {
                return None;
            }
            let out = Command::new(&exe).args(["mem", fw]).output().ok()?;
            String::from_utf8(out.stdout).ok()?.trim().parse::<f64>().ok()
        })
        .collect();
    println!("| workload | {} |", FRAMEWORKS.join(" | "));
    println!("|---|{}", "---|".repeat(FRAMEWORKS.len()));
    for (group, label) in ROWS {
        let figures: Vec<Option<f64>> = if group == "memory" {
            mem.clone()
        } else {
            FRAMEWORKS.iter().map(|fw| estimate(group, fw)).collect()
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
    println!();
    println!("Ratios are the peer's figure divided by crashonly's (2 workers): above 1.00x, crashonly is ahead.");
    println!("crashonly-1t is crashonly on a current-thread runtime; actix (always one thread) is compared with it where it was measured.");
}
