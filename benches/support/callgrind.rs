//! Runs one of a bench's own child processes under callgrind and reads back its instruction
//! count (shared through `#[path]` by the instruction-counting benches).

use std::path::Path;
use std::process::Command;

/// The instructions that this bench run as `--child <child...>` executes inside the functions
/// matching `toggle` (callgrind's `--toggle-collect`, counted per thread: only the thread that
/// calls them). The child must exit successfully.
pub fn instructions(dir: &Path, toggle: &str, child: &[&str]) -> u64 {
    let out = dir.join(format!("callgrind.{}", child.join("_")));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--toggle-collect={toggle}"))
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(std::env::current_exe().unwrap())
        .arg("--child")
        .args(child)
        .status()
        .expect("valgrind on the PATH (Debian: apt install valgrind)");
    assert!(status.success(), "the child {child:?} failed under callgrind");
    std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("totals: ").or_else(|| l.strip_prefix("summary: ")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a callgrind total")
}

/// `n` asks to `a`, one after the other, on `rt`'s thread: the counted part of the ask rows
/// (its name matches their `--toggle-collect=*measured_*`).
#[inline(never)]
pub fn measured_asks(rt: &tokio::runtime::Runtime, a: &crashonly::ActorRef<super::counter::Counter>, n: u64) -> u64 {
    rt.block_on(async {
        let mut last = 0;
        for _ in 0..n {
            last = a.ask(super::counter::Msg::Get).await.unwrap();
        }
        last
    })
}
