//! The kill -9 harness, short: a few SIGKILLs of the cart service under load; nothing acknowledged
//! may be lost. And the harness itself can fail: with acknowledgements before sync it must see loss.

use std::process::Command;

fn litmus(args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_litmus"))
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "litmus printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

#[test]
fn a_short_litmus_run_loses_nothing_acknowledged() {
    let (code, r) = litmus(&["--duration", "4s", "--kill-every", "500ms", "--clients", "8"]);
    assert!(r["kills"].as_u64().unwrap() >= 3, "{r}");
    assert_eq!(r["acked_lost"], 0, "{r}");
    assert_eq!(r["unexpected"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert!(r["acked"].as_u64().unwrap() > 100, "progress continued: {r}");
    // By default each client writes its own 4 carts.
    assert_eq!(r["carts"], 32, "{r}");
    assert!(r["service"]["samples"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(code, Some(0), "{r}");
}

#[test]
fn a_litmus_run_over_many_carts_passivates_them_under_load_and_loses_nothing() {
    let (code, r) = litmus(&[
        "--duration",
        "4s",
        "--kill-every",
        "1s",
        "--clients",
        "8",
        "--carts",
        "400",
        "--idle",
        "300ms",
        "--max-active",
        "100",
    ]);
    assert_eq!(r["acked_lost"], 0, "{r}");
    assert_eq!(r["unexpected"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    assert!(r["carts"].as_u64().unwrap() > 300, "spread over the carts: {r}");
    let svc = &r["service"];
    assert_eq!(svc["max_active"], 100, "{r}");
    // The cap, plus one activation still starting per client (those cannot be passivated yet),
    // plus some finishing their passivation: far below the 400 carts written.
    assert!(svc["active_peak"].as_u64().unwrap() <= 120, "the cap held: {r}");
    let passivated = svc["passivated_idle"].as_u64().unwrap() + svc["passivated_cap"].as_u64().unwrap();
    assert!(passivated > 0, "carts were passivated under load: {r}");
    assert!(
        svc["activations"].as_u64().unwrap() > svc["active_peak"].as_u64().unwrap(),
        "{r}"
    );
    assert!(svc["rss_kb_end"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(code, Some(0), "{r}");
}

#[test]
fn the_harness_catches_acknowledgements_that_were_not_durable() {
    let (code, r) = litmus(&[
        "--duration",
        "2s",
        "--kill-every",
        "300ms",
        "--clients",
        "8",
        "--unsafe-store",
    ]);
    assert!(r["acked_lost"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(code, Some(1));
}

#[test]
fn bad_arguments_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_litmus"))
        .args(["--kill-every", "10ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 100ms"));
}
