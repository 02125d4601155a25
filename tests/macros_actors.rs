//! `#[derive(Actor)]` and `#[messages]`: receivers, return shapes, async or not, start functions,
//! attributes, and the typed methods on `ActorRef`.

use std::time::Duration;

use crashonly::prelude::*;
use crashonly::store::{DurableState, MemoryStore, Store};
use crashonly::Header;

/// A counter that keeps its count in a store.
#[derive(Actor)]
#[actor(args = Setup, mailbox = 8, restart = "transient", ttl = "2s", store_key = "counter/main")]
struct Counter {
    state: DurableState,
    n: u64,
}

#[derive(Clone)]
struct Setup {
    store: std::sync::Arc<dyn Store>,
}

#[messages]
impl Counter {
    /// The recovery path: load the count from the store.
    #[start]
    async fn recover(setup: &Setup, ctx: &mut Context<Self>) -> Result<Self, String> {
        let key = Self::STORE_KEY.expect("set by #[actor(store_key)]");
        let state = DurableState::recover(
            setup.store.clone(),
            key,
            &ctx.myself().path().to_string(),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| e.to_string())?;
        let n = state
            .value()
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .unwrap_or(0);
        Ok(Counter { state, n })
    }

    /// Adds `k` durably; returns the new count.
    #[message]
    pub async fn add(&mut self, k: u64) -> Result<u64, String> {
        self.state
            .save((self.n + k).to_le_bytes().to_vec())
            .await
            .map_err(|e| e.to_string())?;
        self.n += k;
        Ok(self.n)
    }

    /// The count (not async, `&self`).
    #[message(idempotent)]
    pub fn get(&self) -> u64 {
        self.n
    }

    /// The header of this request, seen through the context.
    #[message(ttl = "700ms")]
    pub fn header(&self, ctx: &mut Context<Self>) -> Header {
        ctx.header().unwrap().clone()
    }

    /// Crashes (returns nothing).
    #[message]
    pub fn crash(&mut self) {
        panic!("told to crash at {}", self.n);
    }

    /// Ends the actor normally: a transient actor is then gone.
    #[message]
    pub fn stop(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[tokio::test(start_paused = true)]
async fn generated_methods_cover_every_shape() {
    let system = System::new();
    let store: std::sync::Arc<dyn Store> = std::sync::Arc::new(MemoryStore::new());
    let c = system
        .spawn(Counter::spec(Setup { store: store.clone() }).name("counter"))
        .unwrap();
    assert_eq!(c.add(2).await.unwrap(), Ok(2));
    assert_eq!(c.add(3).await.unwrap(), Ok(5));
    assert_eq!(c.get().await.unwrap(), 5);
    // Envelope defaults from the attributes: #[message(idempotent)], #[message(ttl)], #[actor(ttl)].
    let now = system.clock().now();
    let h = c.header().await.unwrap();
    assert_eq!(h.deadline, now + Duration::from_millis(700));
    assert!(!h.idempotent);
    let h = c.header().ttl(Duration::from_millis(100)).idempotent().await.unwrap();
    assert_eq!(h.deadline, now + Duration::from_millis(100));
    assert!(h.idempotent);
    // A crash through a generated method: the restarted instance recovers the count from the store.
    assert!(matches!(c.crash().await, Err(DeliveryError::Crashed(_))));
    assert_eq!(c.get().await.unwrap(), 5);
    assert_eq!(c.stats().restarts, 1);
    // Transient (from #[actor(restart)]): a normal end removes it.
    c.stop().await.unwrap();
    assert_eq!(c.get().await.unwrap_err(), DeliveryError::Dead);
}

/// Naps on request: for checking the mailbox capacity set by `#[actor(mailbox)]`.
#[derive(Actor, Clone)]
#[actor(mailbox = 2, ttl = "2s")]
struct Sleeper;

#[messages]
impl Sleeper {
    #[message]
    async fn nap(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[message]
    fn header(&self, ctx: &mut Context<Self>) -> Header {
        ctx.header().unwrap().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn actor_attributes_set_the_spec() {
    assert_eq!(Counter::STORE_KEY, Some("counter/main"));
    assert_eq!(Sleeper::STORE_KEY, None);
    let system = System::new();
    let s = system.spawn(Sleeper::spec(Sleeper)).unwrap();
    let now = system.clock().now();
    assert_eq!(
        s.header().await.unwrap().deadline,
        now + Duration::from_secs(2),
        "#[actor(ttl)] is the default"
    );
    s.tell(SleeperMessage::Nap(Duration::from_secs(3600))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    s.try_tell(SleeperMessage::Nap(Duration::ZERO)).unwrap();
    s.try_tell(SleeperMessage::Nap(Duration::ZERO)).unwrap();
    assert_eq!(
        s.try_tell(SleeperMessage::Nap(Duration::ZERO)).unwrap_err().error(),
        &DeliveryError::MailboxFull
    );
}

/// A plain actor: no #[start], it starts as a copy of its arguments (`Args = Self`).
#[derive(Actor, Clone, Default)]
struct Notes {
    lines: Vec<String>,
}

#[messages(clone_replies)]
impl Notes {
    #[message]
    fn push(&mut self, line: String) -> usize {
        self.lines.push(line);
        self.lines.len()
    }

    #[message(idempotent)]
    async fn all(&self) -> Vec<String> {
        self.lines.clone()
    }

    #[message]
    fn fail(&mut self) -> Result<(), String> {
        Err("a domain error is a reply, not a crash".into())
    }
}

#[tokio::test(start_paused = true)]
async fn plain_actors_and_keys() {
    let system = System::new();
    let notes = system
        .spawn(
            Notes::spec(Notes {
                lines: vec!["first".into()],
            })
            .dedup(8),
        )
        .unwrap();
    assert_eq!(notes.push("second".into()).key("req-1").await.unwrap(), 2);
    assert_eq!(
        notes.push("second".into()).key("req-1").await.unwrap(),
        2,
        "answered from the window"
    );
    assert_eq!(
        notes.all().await.unwrap(),
        vec!["first".to_string(), "second".to_string()]
    );
    assert_eq!(
        notes.fail().await.unwrap(),
        Err("a domain error is a reply, not a crash".to_string())
    );
    assert_eq!(notes.stats().crashes, 0);
}
