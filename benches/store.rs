//! Store benchmarks: durable writes from 1, 16 and 256 concurrent writers (group commit), get
//! latency, writes and reads of 1 MiB values (what a record's checksum costs), reopen time after
//! `kill -9` (every page verified, the default) and without verification, at 100k and 1M keys;
//! PostgreSQL on loopback when `CRASHONLY_PG_URL` is set.
//!
//! `cargo bench --bench store`

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crashonly::store::{RedbOptions, RedbStore, Store, StoreExt, Txn};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn data_dir() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `writers` tasks each make `per_writer` durable puts; returns the elapsed time.
async fn durable_puts(store: Arc<dyn Store>, writers: usize, per_writer: usize) -> Duration {
    let t = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    store
                        .put(format!("bench/{w}/{i}").as_bytes(), vec![7u8; 100])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    t.elapsed()
}

fn writes(c: &mut Criterion, name: &str, rt: &Runtime, store: Arc<dyn Store>) {
    let mut g = c.benchmark_group(format!("{name}_durable_writes"));
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for writers in [1usize, 16, 256] {
        let per_writer = (512 / writers).max(4);
        g.throughput(Throughput::Elements((writers * per_writer) as u64));
        g.bench_with_input(BenchmarkId::from_parameter(writers), &writers, |b, &writers| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += durable_puts(store.clone(), writers, per_writer).await;
                    }
                    total
                })
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group(format!("{name}_get"));
    rt.block_on(store.put(b"bench/get", vec![1u8; 100])).unwrap();
    g.bench_function("hit", |b| {
        b.to_async(rt)
            .iter(|| async { store.get(b"bench/get").await.unwrap().unwrap() })
    });
    g.finish();
    let mut g = c.benchmark_group(format!("{name}_1mib_values"));
    g.sample_size(10).throughput(Throughput::Bytes(1 << 20));
    let big = vec![5u8; 1 << 20];
    g.bench_function("durable_put", |b| {
        b.to_async(rt)
            .iter(|| async { store.put(b"bench/big", big.clone()).await.unwrap() })
    });
    g.bench_function("get", |b| {
        b.to_async(rt)
            .iter(|| async { store.get(b"bench/big").await.unwrap().unwrap() })
    });
    g.finish();
}

fn redb(c: &mut Criterion) {
    let rt = runtime();
    let path = data_dir().join("writes.redb");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(data_dir().join("writes.redb.acked"));
    let store: Arc<dyn Store> = rt.block_on(async { Arc::new(RedbStore::open(&path).unwrap()) });
    writes(c, "redb", &rt, store);
}

/// A store file with `keys` keys, made once and kept in target/bench-data.
fn prepared(rt: &Runtime, keys: usize) -> std::path::PathBuf {
    // Named by the store's format: a file of another format is refused, not misread.
    let path = data_dir().join(format!("reopen-f2-{keys}.redb"));
    if path.exists() {
        return path;
    }
    rt.block_on(async {
        let store = RedbStore::open(&path).unwrap();
        for chunk in 0..keys / 10_000 {
            let mut txn = Txn::new();
            for i in 0..10_000 {
                txn = txn.put(format!("key/{:08}", chunk * 10_000 + i).as_bytes(), vec![3u8; 100]);
            }
            store.commit(txn).await.unwrap();
        }
    });
    path
}

/// A group timing `open` of a store with 100k and with 1M keys, each time after `before`
/// (untimed).
fn reopens(c: &mut Criterion, group: &str, before: impl Fn(&Path), open: impl Fn(&Path) -> RedbStore) {
    let rt = runtime();
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    for keys in [100_000usize, 1_000_000] {
        let path = prepared(&rt, keys);
        g.bench_with_input(BenchmarkId::from_parameter(keys), &keys, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    before(&path);
                    let t = Instant::now();
                    let store = open(&path);
                    total += t.elapsed();
                    drop(store);
                }
                total
            })
        });
    }
    g.finish();
}

/// A writer process is killed mid-stream (after 20 acknowledged writes).
fn kill_a_writer(path: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crashonly-store-child"))
        .args(["redb", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..20 {
        line.clear();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The default reopen after `kill -9`: every page's checksum read.
fn reopen_after_kill(c: &mut Criterion) {
    reopens(c, "redb_reopen_after_kill9", kill_a_writer, |path| {
        RedbStore::open(path).unwrap()
    });
}

/// The same without verification (`verify_on_open(false)`): the difference is what refusing
/// damage at open costs.
fn reopen_unverified(c: &mut Criterion) {
    let opts = RedbOptions::default().with_verify_on_open(false);
    reopens(c, "redb_reopen_unverified_after_kill9", kill_a_writer, |path| {
        RedbStore::open_with(path, opts.clone()).unwrap()
    });
}

fn postgres(c: &mut Criterion) {
    let Ok(url) = std::env::var("CRASHONLY_PG_URL") else {
        eprintln!("skipped: CRASHONLY_PG_URL is not set (PostgreSQL benches)");
        return;
    };
    let rt = runtime();
    let opts = crashonly::store::PgOptions::default()
        .with_schema("bench".to_string())
        .with_pool_size(16);
    let store: Arc<dyn Store> =
        rt.block_on(async { Arc::new(crashonly::store::PgStore::connect(&url, opts).await.unwrap()) });
    writes(c, "postgres", &rt, store);
}

criterion_group!(benches, redb, reopen_after_kill, reopen_unverified, postgres);
criterion_main!(benches);
