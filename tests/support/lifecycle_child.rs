//! Child process of the lifecycle tests (`tests/lifecycle_process.rs`): behaviours that only a
//! real process shows.
//!
//! - `panic-plain`: an actor panics with no `tracing` subscriber installed; the panic must reach
//!   stderr, with the actor's path, once.
//! - `panic-subscriber`: the same with a subscriber writing to stderr: shown once, as its event.
//! - `blocked`: a 2-worker runtime whose two workers are both blocked forever in actors' handlers,
//!   and a `main` that never reaches `System::wait`: the watchdog's own thread must still abandon
//!   them and exit the process non-zero.

use std::time::Duration;

use crashonly::prelude::*;

struct Blocker;

impl Actor for Blocker {
    type Args = ();
    type Msg = &'static str;
    type Reply = ();
    type Error = String;

    async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Blocker)
    }

    async fn handle(&mut self, msg: &'static str, _: &mut Context<Self>) -> Result<(), String> {
        match msg {
            "panic" => panic!("child-panic-message"),
            "block" => loop {
                // Blocking code: tokio cannot interrupt it, and it holds its worker.
                std::thread::sleep(Duration::from_secs(3600));
            },
            _ => Ok(()),
        }
    }
}

fn panics(with_subscriber: bool) {
    if with_subscriber {
        tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let system = System::new();
        let a = system.spawn(ActorSpec::<Blocker>::named("panicky", ())).unwrap();
        let _ = a.ask("panic").await;
        a.ask("ok").await.unwrap();
    });
}

fn blocked() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let policy = Policy::builder()
            .max_handling(Duration::from_millis(200))
            .abandon_after(Duration::from_millis(200))
            .build()
            .unwrap();
        let config = Config::default()
            .with_policy(policy)
            .with_watchdog_every(Duration::from_millis(20))
            .with_exit_on_failure(Some(Duration::from_millis(500)));
        let system = System::builder().config(config).start().unwrap();
        let a = system.spawn(ActorSpec::<Blocker>::named("a", ())).unwrap();
        let b = system.spawn(ActorSpec::<Blocker>::named("b", ())).unwrap();
        a.started().await.unwrap();
        b.started().await.unwrap();
        a.tell("block").await.unwrap();
        b.tell("block").await.unwrap();
        eprintln!("both workers blocked");
        // `main` never reaches `system.wait()`.
        std::mem::forget(system);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("panic-plain") => panics(false),
        Some("panic-subscriber") => panics(true),
        Some("blocked") => blocked(),
        other => {
            eprintln!("usage: crashonly-lifecycle-child panic-plain|panic-subscriber|blocked (got {other:?})");
            std::process::exit(2);
        }
    }
}
