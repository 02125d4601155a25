//! What a live, idle actor holds once it has handled a message and hibernated: its slot and its
//! parked instance, not the task it ran in (whose memory lives as long as any handle on it) nor
//! its mailbox's buffer. Measured as glibc's heap in use (`mallinfo2`), which, unlike RSS, drops
//! when memory is freed: 20,000 actors and 20,000 entities, each asked once. Before the
//! hibernating task's handles were let go, an actor held 1,546 B; the README gives the figures of
//! `entity-figures idle-memory counter-actor|counter-entity` at 100,000.
//!
//! One test in this binary: the heap is the whole process's.

#[path = "../examples/support/entity_carts.rs"]
mod entity_carts;

use std::convert::Infallible;
use std::time::Duration;

use crashonly::prelude::*;

const N: usize = 20_000;

/// One number; no store.
struct Counter(u64);

impl Actor for Counter {
    type Args = ();
    type Msg = u64;
    type Reply = u64;
    type Error = Infallible;

    async fn start((): &(), _: &mut Context<Self>) -> Result<Self, Infallible> {
        Ok(Counter(0))
    }

    async fn handle(&mut self, add: u64, _: &mut Context<Self>) -> Result<u64, Infallible> {
        self.0 += add;
        Ok(self.0)
    }
}

impl Entity for Counter {
    type Key = u64;
}

/// glibc's heap in use, in bytes.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> u64 {
    entity_carts::heap_in_use().expect("glibc's heap counters (another allocator serves this process)")
}

/// Waits until `f` holds, for at most `limit`.
async fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = std::time::Instant::now();
    while !f() {
        if t.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hibernating_actor_or_entity_holds_no_task_and_no_queue() {
    let system = System::builder()
        .config(Config::default().with_hibernate_after(Some(Duration::from_millis(100))))
        .start()
        .unwrap();
    let family = system
        .spawn_entities(
            EntitySpec::<Counter>::new("counters", |_: &u64| ())
                .max_active(2 * N)
                .idle(Duration::from_secs(3600)),
        )
        .unwrap();
    let mut actors = Vec::with_capacity(N);
    let mut entities = Vec::with_capacity(N);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let before = heap_in_use();
    for _ in 0..N {
        actors.push(system.spawn(ActorSpec::<Counter>::new(())).unwrap());
    }
    for a in &actors {
        assert_eq!(a.ask(7).await.unwrap(), 7);
    }
    assert!(
        until(Duration::from_secs(20), || actors.iter().all(|a| a.stats().hibernating)).await,
        "every idle actor hibernates"
    );
    let per_actor = heap_in_use().saturating_sub(before) / N as u64;

    let before = heap_in_use();
    for k in 0..N as u64 {
        let e = family.get(k);
        assert_eq!(e.ask(7).await.unwrap(), 7);
        entities.push(e.activate().unwrap());
    }
    assert_eq!(family.stats().active, N);
    assert!(
        until(Duration::from_secs(20), || entities
            .iter()
            .all(|a| a.stats().hibernating))
        .await,
        "every idle entity hibernates"
    );
    let per_entity = heap_in_use().saturating_sub(before) / N as u64;
    eprintln!("heap in use per hibernating actor {per_actor} B, per entity {per_entity} B");

    // The slot (a 496-byte chunk), its registry entry and the parked instance; a task cell left
    // behind is about 900 B more, a queue buffer about 600 B.
    assert!(per_actor <= 800, "a hibernating actor holds {per_actor} B");
    assert!(per_entity <= 1_100, "a hibernating entity holds {per_entity} B");
    for a in &actors {
        assert_eq!(a.ask(1).await.unwrap(), 8, "a hibernating actor resumes with its state");
    }
}
