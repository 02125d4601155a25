//! The demo service as a real process: when the root supervisor gives up, the process exits
//! non-zero (so an OS-level manager restarts it); under chaos it stays consistent and exits 0.

use std::process::Command;

const DEMO: &str = env!("CARGO_BIN_EXE_supervised-demo");

#[test]
fn root_giving_up_exits_the_process_non_zero() {
    let out = Command::new(DEMO)
        .args(["--give-up", "--chaos-ms", "5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("root supervisor gave up: / restart intensity exceeded"),
        "{stderr}"
    );
}

#[test]
fn survives_chaos_without_losing_acknowledged_increments() {
    let out = Command::new(DEMO)
        .args(["--seconds", "2", "--chaos-ms", "20"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("consistent: every acknowledged increment is in the store"),
        "{stdout}"
    );
    assert!(!stdout.contains("LOST"), "{stdout}");
}

#[test]
fn bad_arguments_get_a_clear_error() {
    let out = Command::new(DEMO).args(["--seconds", "soon"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid value 'soon' for '--seconds <N>'"), "{stderr}");
    assert!(stderr.contains("try '--help'"), "{stderr}");
}
