//! Real processes, real SIGKILL: a child writes durably and prints each acknowledgement; the parent
//! kills it at a random moment, reopens the store and checks that every acknowledged write is there.
//! 200 kills against redb; against PostgreSQL (when `CRASHONLY_PG_URL` is set) by killing the client.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crashonly::store::{RedbStore, Store, StoreExt};

const CHILD: &str = env!("CARGO_BIN_EXE_crashonly-store-child");
const WRITERS: usize = 16;

/// Runs the child until it has printed `acks_before_kill` acks, SIGKILLs it, and returns the highest
/// acknowledged value per writer (including acks still in the pipe) and the child's open time.
fn run_and_kill(args: &[&str], acks_before_kill: u64) -> (Vec<u64>, Duration) {
    let mut child = Command::new(CHILD)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let opened = lines.next().expect("child prints opened").unwrap();
    let open_time = Duration::from_micros(opened.strip_prefix("opened ").unwrap().parse().unwrap());
    let mut acked = vec![0u64; WRITERS];
    let mut seen = 0;
    let record = |line: &str, acked: &mut Vec<u64>| {
        let mut parts = line.split_whitespace().skip(1);
        let (w, n): (usize, u64) = (
            parts.next().unwrap().parse().unwrap(),
            parts.next().unwrap().parse().unwrap(),
        );
        acked[w] = acked[w].max(n);
    };
    for line in lines.by_ref() {
        record(&line.unwrap(), &mut acked);
        seen += 1;
        if seen >= acks_before_kill {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements printed before the kill but not read yet count too.
    for line in lines.map_while(Result::ok) {
        if line.starts_with("ack ") {
            record(&line, &mut acked);
        }
    }
    (acked, open_time)
}

async fn check(store: &dyn Store, acked: &[u64], max_acked: &mut [u64], round: usize) {
    for (w, &a) in acked.iter().enumerate() {
        max_acked[w] = max_acked[w].max(a);
        let stored = match store.get(format!("w/{w}").as_bytes()).await.unwrap() {
            Some(v) => u64::from_le_bytes(v.value.try_into().unwrap()),
            None => 0,
        };
        // Everything acknowledged is there; at most the one write in flight beyond it.
        assert!(
            stored >= max_acked[w] && stored <= max_acked[w] + 1,
            "round {round}: writer {w} acknowledged {} but the store holds {stored}",
            max_acked[w]
        );
        max_acked[w] = stored;
    }
}

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    eprintln!(
        "{name}: {} kills, reopen min {:?} median {:?} max {:?}",
        times.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_keeps_every_acknowledged_write_across_200_kills() {
    // Kept when the test fails (a panic skips the removal at the end), for the post-mortem.
    let dir = tempfile::Builder::new()
        .prefix("crashonly-kill9-")
        .tempdir()
        .unwrap()
        .keep();
    eprintln!("store in {}", dir.display());
    let path = dir.join("kill9.redb");
    let path_s = path.to_str().unwrap().to_owned();
    // `KILL9_SEED` replays a run; otherwise a fresh seed, printed.
    let seed = std::env::var("KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (KILL9_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut max_acked = vec![0u64; WRITERS];
    let (mut child_opens, mut parent_opens) = (Vec::new(), Vec::new());
    let started = Instant::now();
    // `KILL9_ROUNDS` (200 by default; the soak tier uses 10,000).
    let rounds: usize = std::env::var("KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for round in 0..rounds {
        let (acked, open) = run_and_kill(&["redb", &path_s], rng.u64(1..=64));
        child_opens.push(open);
        let t = Instant::now();
        let store = RedbStore::open(&path).unwrap();
        parent_opens.push(t.elapsed());
        check(&store, &acked, &mut max_acked, round).await;
        drop(store);
    }
    summary("redb child reopen", child_opens);
    summary("redb parent reopen", parent_opens);
    eprintln!("total {:?}, final counters {max_acked:?}", started.elapsed());
    assert!(max_acked.iter().sum::<u64>() >= 200, "progress continued across kills");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_acknowledged_write_when_the_client_is_killed() {
    use crashonly::store::{PgOptions, PgStore};
    let Ok(url) = std::env::var("CRASHONLY_PG_URL") else {
        crashonly::testing::skipped("CRASHONLY_PG_URL is not set (PostgreSQL kill -9 test)");
        return;
    };
    let schema = format!("kill9_{}", std::process::id());
    let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    let mut max_acked = vec![0u64; WRITERS];
    let mut opens = Vec::new();
    for round in 0..40 {
        let (acked, open) = run_and_kill(&["pg", &url, &schema], rng.u64(1..=64));
        opens.push(open);
        let store = PgStore::connect(&url, PgOptions::default().with_schema(schema.clone()))
            .await
            .unwrap();
        check(&store, &acked, &mut max_acked, round).await;
    }
    summary("postgres client reconnect", opens);
    let store = PgStore::connect(&url, PgOptions::default().with_schema(schema.clone()))
        .await
        .unwrap();
    assert!(store.put(b"done", vec![1]).await.is_ok());
}
