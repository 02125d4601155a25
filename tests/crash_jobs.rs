//! The leased job queue converges while its workers crash at random: every job done once, with
//! the right result, although some were attempted more than once (at-least-once).

use std::process::Command;

#[test]
fn the_job_queue_converges_while_workers_crash() {
    let out = Command::new(env!("CARGO_BIN_EXE_jobs"))
        .args(["--jobs", "60", "--workers", "6", "--crash-percent", "25"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("60 of 60 jobs done, 0 wrong results"), "{stdout}");
    let crashes: u64 = stdout
        .split(", ")
        .last()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(crashes > 0, "the workers did crash: {stdout}");
}
