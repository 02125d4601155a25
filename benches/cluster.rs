//! Cluster benchmarks on loopback (`CRASHONLY_PG_URL` and `CRASHONLY_NATS_URL`; without them it
//! says so and measures nothing): a remote ask between two nodes beside its floor, raw
//! async-nats request-reply of the same payload, one at a time (latency) and 64 in flight
//! (throughput); then p50/p99 of each over 5,000 sequential requests, and the cold activation of
//! a clustered entity (placement claim + start), printed.
//!
//! `cargo bench --bench cluster`

use std::sync::Arc;
use std::time::{Duration, Instant};

use crashonly::prelude::*;
use crashonly_cluster::{MembershipOptions, Node, NodeOptions, Remote};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::runtime::Runtime;

struct Echo;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Ping(Vec<u8>);

impl Remote for Ping {
    const TYPE_ID: &'static str = "bench.ping";
}

impl Actor for Echo {
    type Args = ();
    type Msg = Ping;
    type Reply = Vec<u8>;
    type Error = std::convert::Infallible;

    async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> {
        Ok(Echo)
    }

    async fn handle(&mut self, Ping(bytes): Ping, _: &mut Context<Self>) -> Result<Vec<u8>, Self::Error> {
        Ok(bytes)
    }
}

impl Entity for Echo {
    type Key = String;
}

const PAYLOAD: usize = 64;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::env::var("BENCH_WORKERS")
                .ok()
                .and_then(|w| w.parse().ok())
                .unwrap_or(2),
        )
        .enable_all()
        .build()
        .unwrap()
}

struct Setup {
    a: Node,
    b: Node,
    _systems: (System, System),
    key: String,
    nats: async_nats::Client,
    /// A second client, as a second node has: the requests of `raw_two` cross two connections.
    nats2: async_nats::Client,
    subject: String,
    _responder: tokio::task::JoinHandle<()>,
}

async fn setup(pg: &str, nats_url: &str) -> Setup {
    let schema = format!("bench_{}", std::process::id());
    let mut nodes = Vec::new();
    let mut systems = Vec::new();
    for name in ["a", "b"] {
        let m = MembershipOptions::default().with_schema(schema.clone()).with_name(name);
        let node = Node::start(pg, NodeOptions::new(m, nats_url)).await.unwrap();
        let system = System::new();
        let family = system
            .spawn_entities(EntitySpec::<Echo>::new("echo", |_: &String| ()))
            .unwrap();
        node.serve("echo", family).unwrap();
        nodes.push(node);
        systems.push(system);
    }
    let (b, a) = (nodes.pop().unwrap(), nodes.pop().unwrap());
    // A key that b holds: every ask from a crosses NATS.
    let mut key = None;
    for i in 0..1000 {
        let k = format!("e{i}");
        a.entity::<Echo>("echo", k.clone())
            .ask(Ping(vec![]))
            .send()
            .await
            .unwrap();
        if b.token("echo", &k).is_some() {
            key = Some(k);
            break;
        }
    }
    let nats = async_nats::connect(nats_url).await.unwrap();
    let subject = format!("bench.raw.{}", std::process::id());
    let mut sub = nats.subscribe(subject.clone()).await.unwrap();
    let responder_client = nats.clone();
    let responder = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder_client.publish(reply, msg.payload).await;
            }
        }
    });
    let nats2 = async_nats::connect(nats_url).await.unwrap();
    let s1 = systems.pop().unwrap();
    let s0 = systems.pop().unwrap();
    Setup {
        a,
        b,
        _systems: (s0, s1),
        key: key.expect("b holds a key"),
        nats,
        nats2,
        subject,
        _responder: responder,
    }
}

async fn remote(s: &Setup) {
    let r = s.a.entity::<Echo>("echo", s.key.clone());
    r.ask(Ping(vec![7; PAYLOAD])).send().await.unwrap();
}

async fn raw(s: &Setup) {
    s.nats
        .request(s.subject.clone(), vec![7u8; PAYLOAD].into())
        .await
        .unwrap();
}

/// The floor between two nodes: requester and responder on connections of their own.
async fn raw_two(s: &Setup) {
    s.nats2
        .request(s.subject.clone(), vec![7u8; PAYLOAD].into())
        .await
        .unwrap();
}

fn percentiles(mut d: Vec<Duration>) -> (Duration, Duration) {
    d.sort();
    (d[d.len() / 2], d[d.len() * 99 / 100])
}

fn bench(c: &mut Criterion) {
    let (Ok(pg), Ok(nats)) = (std::env::var("CRASHONLY_PG_URL"), std::env::var("CRASHONLY_NATS_URL")) else {
        eprintln!("cluster bench: CRASHONLY_PG_URL and CRASHONLY_NATS_URL are not set; nothing measured");
        return;
    };
    let rt = runtime();
    let s = Arc::new(rt.block_on(setup(&pg, &nats)));
    let mut g = c.benchmark_group("remote_ask");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("crashonly_one_at_a_time", |b| b.to_async(&rt).iter(|| remote(&s)));
    g.bench_function("raw_nats_one_at_a_time", |b| b.to_async(&rt).iter(|| raw(&s)));
    g.throughput(Throughput::Elements(64));
    g.bench_function("crashonly_64_in_flight", |b| {
        b.to_async(&rt).iter(|| {
            let s = s.clone();
            async move { futures::future::join_all((0..64).map(|_| remote(&s))).await }
        })
    });
    g.bench_function("raw_nats_64_in_flight", |b| {
        b.to_async(&rt).iter(|| {
            let s = s.clone();
            async move { futures::future::join_all((0..64).map(|_| raw(&s))).await }
        })
    });
    g.bench_function("raw_nats_two_clients_64_in_flight", |b| {
        b.to_async(&rt).iter(|| {
            let s = s.clone();
            async move { futures::future::join_all((0..64).map(|_| raw_two(&s))).await }
        })
    });
    g.finish();
    rt.block_on(async {
        let mut ours = Vec::new();
        let mut floor = Vec::new();
        for _ in 0..5000 {
            let t = Instant::now();
            remote(&s).await;
            ours.push(t.elapsed());
            let t = Instant::now();
            raw(&s).await;
            floor.push(t.elapsed());
        }
        let (o50, o99) = percentiles(ours);
        let (f50, f99) = percentiles(floor);
        println!("remote ask p50 {o50:?} p99 {o99:?}; raw NATS request-reply p50 {f50:?} p99 {f99:?}");
        // Cold activation: a new key, claimed by b and started there.
        let mut cold = Vec::new();
        for i in 0..500 {
            let r = s.a.entity::<Echo>("echo", format!("cold-{i}"));
            let t = Instant::now();
            r.ask(Ping(vec![])).send().await.unwrap();
            cold.push(t.elapsed());
        }
        let (c50, c99) = percentiles(cold);
        println!("cold activation (route, claim, start, reply) p50 {c50:?} p99 {c99:?}");
        let _ = &s.b;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
