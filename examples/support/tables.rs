//! litmus's experiment tables: the paper's faultload experiment (microreboots vs whole-process
//! restarts) and its Table 1 (time from SIGKILL to serving again vs a polite stop and start).

use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use tokio::process::Command;

use super::{http, Opts, Service};

/// Runs this harness again as a child with `args` and `--json`; returns its report.
async fn run_json(args: &[String]) -> Result<serde_json::Value, String> {
    let out = Command::new(std::env::current_exe().expect("own path"))
        .args(args)
        .arg("--json")
        .stderr(Stdio::null())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("no report: {e}"))
}

/// The paper's faultload experiment: the same fault rate, once as microreboots of one actor, once
/// crashing the whole process (restarted from outside at once). Requests completed, client-visible
/// failures and p99 time to acknowledge, for three rates.
pub async fn faultload_table(opts: &Opts) -> ExitCode {
    println!("faultload: a random cart actor panics (microreboot) vs the whole process aborts (restart), every T ms");
    println!(
        "{} s per run, {} clients; time to acknowledge includes the clients' retries",
        opts.duration.as_secs(),
        opts.clients
    );
    println!();
    println!("| fault every | mode | requests completed | client-visible failures | p99 (ms) | ratio |");
    println!("|---|---|---|---|---|---|");
    let mut ok = true;
    for every in [100u64, 20, 5] {
        let mut completed = Vec::new();
        for mode in ["actor", "process"] {
            let args: Vec<String> = [
                "--duration",
                &format!("{}s", opts.duration.as_secs()),
                "--kill-every",
                "off",
                "--clients",
                &opts.clients.to_string(),
                "--fault-every-ms",
                &every.to_string(),
                "--fault-mode",
                mode,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            match run_json(&args).await {
                Ok(r) => {
                    ok &= r["acked_lost"] == 0;
                    let done = r["acked"].as_u64().unwrap_or(0);
                    completed.push(done);
                    let ratio = if mode == "process" && done > 0 {
                        format!("{:.2}x", completed[0] as f64 / done as f64)
                    } else {
                        String::new()
                    };
                    let label = if mode == "actor" {
                        "microreboot"
                    } else {
                        "process restart"
                    };
                    println!(
                        "| {every} ms | {label} | {done} | {} | {:.1} | {ratio} |",
                        r["client_error_total"],
                        r["p99_ms"].as_f64().unwrap_or(0.0)
                    );
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The paper's Table 1 on the cart service holding 100k carts: time from SIGKILL to serving again,
/// against a polite stop (SIGTERM, wait for exit) and a start.
pub async fn table1() -> ExitCode {
    use crashonly::store::{RedbStore, Txn};
    // Removed when the guard drops, at the end.
    let data_dir = tempfile::Builder::new()
        .prefix("crashonly-table1-")
        .tempdir()
        .expect("a temporary directory");
    let data = data_dir.path().to_path_buf();
    {
        let store = RedbStore::open(data.join("carts.redb")).expect("store");
        for chunk in 0..100 {
            let mut txn = Txn::new();
            for i in 0..1000 {
                let id = chunk * 1000 + i;
                let cart = format!("{{\"items\":[\"item-{id}\"]}}");
                txn = txn.put_ttl(
                    format!("cart/t{id}").as_bytes(),
                    cart.into_bytes(),
                    Duration::from_secs(3600),
                );
            }
            crashonly::store::Store::commit(&store, txn).await.expect("prefill");
        }
    }
    let mut svc = Service::new(data.clone(), Vec::new(), Vec::new());
    let (mut crash, mut polite) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        svc.start().await.expect("start");
        while !svc.serving().await {}
        // Crash reboot: SIGKILL, start, first request served (a cart read from the store).
        let t = Instant::now();
        svc.kill().await;
        svc.start().await.expect("start");
        while !matches!(http::request(svc.addr, "GET", "/carts/t777", &[], b"", Duration::from_secs(1)).await, Ok(r) if r.status == 200)
        {
        }
        crash.push(t.elapsed());
        // Clean reboot: SIGTERM, wait for the exit, start, first request served.
        let t = Instant::now();
        if let Some(mut c) = svc.child.take() {
            let pid = c.id().expect("running") as i32;
            // SAFETY: sending a signal to our own child process, which we still own (not reaped).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = c.wait().await;
        }
        svc.start().await.expect("start");
        while !matches!(http::request(svc.addr, "GET", "/carts/t778", &[], b"", Duration::from_secs(1)).await, Ok(r) if r.status == 200)
        {
        }
        polite.push(t.elapsed());
        svc.kill().await;
    }
    crash.sort();
    polite.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("cart service holding 100,000 carts (redb), median of 10, until the first cart is served:");
    println!("| reboot | median | min | max |");
    println!("|---|---|---|---|");
    println!(
        "| crash: SIGKILL + start | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms(crash[5]),
        ms(crash[0]),
        ms(crash[9])
    );
    println!(
        "| clean: SIGTERM, wait for exit + start | {:.1} ms | {:.1} ms | {:.1} ms |",
        ms(polite[5]),
        ms(polite[0]),
        ms(polite[9])
    );
    drop(data_dir);
    ExitCode::SUCCESS
}
