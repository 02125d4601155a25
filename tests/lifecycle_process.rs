//! Escalation that cannot be blocked, and panics that never vanish: real processes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = env!("CARGO_BIN_EXE_crashonly-lifecycle-child");

fn run(mode: &str) -> (Option<i32>, String) {
    let out = Command::new(CHILD).arg(mode).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_panic_reaches_stderr_with_the_actors_path_when_no_subscriber_is_installed() {
    let (code, err) = run("panic-plain");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.matches("child-panic-message").count(), 1, "shown once:\n{err}");
    let line = err.lines().find(|l| l.contains("child-panic-message")).unwrap();
    assert!(line.contains("/panicky"), "with the actor's path: {line}");
}

#[test]
fn with_a_subscriber_the_panic_is_its_event_shown_once() {
    let (code, err) = run("panic-subscriber");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(err.matches("child-panic-message").count(), 1, "shown once:\n{err}");
    let line = err.lines().find(|l| l.contains("child-panic-message")).unwrap();
    assert!(
        line.contains("ERROR") && line.contains("actor crashed"),
        "as a tracing event: {line}"
    );
    assert!(!err.contains("crashonly: actor"), "not printed a second time:\n{err}");
}

#[test]
fn with_every_worker_blocked_the_watchdog_thread_exits_the_process_non_zero() {
    let started = Instant::now();
    let mut child = Command::new(CHILD)
        .arg("blocked")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bound: 200 ms handling lease + 200 ms abandon_after per worker + 500 ms grace, a few
    // watchdog passes; 10 s is generous, and a process that never exits fails here.
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("the process did not exit by itself within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "exits non-zero by itself:\n{err}");
    assert!(err.contains("both workers blocked"), "{err}");
    assert!(err.contains("2 tasks abandoned in blocking code"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
