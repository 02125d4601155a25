//! Cart entities whose state is in a redb store, for the entity figures: `benches/entities.rs`, the
//! `entity-figures` binary and `tests/entities_memory.rs` share them.
//!
//! A cart is an entity keyed by its id; its `start` (the activation) reads `cart/<id>` from the
//! store and decodes the items, as a real entity recovers its state. Carts are written once, before
//! the run ([`seed`]); the figures only read them.
#![allow(dead_code)] // each user takes what it needs

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crashonly::prelude::*;
use crashonly::store::{RedbStore, Store, StoreError, Txn};
use crashonly::{Entities, Entity, EntitySpec};

/// One cart: the items recovered from the store.
pub struct Cart {
    items: Vec<String>,
}

/// The cart's id and the store that holds it.
pub type CartArgs = (String, Arc<dyn Store>);

/// What a cart answers: how many items it has.
pub enum CartMsg {
    Count,
}

impl Actor for Cart {
    type Args = CartArgs;
    type Msg = CartMsg;
    type Reply = usize;
    type Error = StoreError;

    async fn start((id, store): &CartArgs, _ctx: &mut Context<Self>) -> Result<Self, StoreError> {
        let items = match store.get(cart_key(id).as_bytes()).await? {
            Some(v) => decode(&v.value)?,
            None => Vec::new(),
        };
        Ok(Cart { items })
    }

    async fn handle(&mut self, msg: CartMsg, _ctx: &mut Context<Self>) -> Result<usize, StoreError> {
        match msg {
            CartMsg::Count => Ok(self.items.len()),
        }
    }
}

impl Entity for Cart {
    type Key = String;
}

/// The id of cart `i`.
pub fn cart_id(i: usize) -> String {
    format!("c{i:07}")
}

fn cart_key(id: &str) -> String {
    format!("cart/{id}")
}

/// The items cart `i` is seeded with: 1 to 3 short names.
fn items_of(i: usize) -> Vec<String> {
    (0..1 + i % 3).map(|k| format!("item-{}", (i + k) % 97)).collect()
}

fn encode(items: &[String]) -> Vec<u8> {
    items.join("\n").into_bytes()
}

fn decode(bytes: &[u8]) -> Result<Vec<String>, StoreError> {
    let text = std::str::from_utf8(bytes).map_err(|e| StoreError::Corrupt(format!("cart: {e}")))?;
    Ok(text.split('\n').map(str::to_owned).collect())
}

/// How many items cart `i` has once recovered (what `CartMsg::Count` must answer).
pub fn expected_count(i: usize) -> usize {
    items_of(i).len()
}

/// Writes carts `0..n` to `store`, each once, 10,000 to a durable commit.
pub async fn seed(store: &dyn Store, n: usize) -> Result<(), StoreError> {
    let mut i = 0;
    while i < n {
        let end = (i + 10_000).min(n);
        let mut txn = Txn::new();
        for j in i..end {
            txn = txn.put(cart_key(&cart_id(j)).as_bytes(), encode(&items_of(j)));
        }
        store.commit(txn).await?;
        i = end;
    }
    Ok(())
}

/// A family of carts on `store`: at most `max_active` live, passivated after `idle`.
pub fn spec(store: Arc<dyn Store>, max_active: usize, idle: Duration) -> EntitySpec<Cart> {
    EntitySpec::new("carts", move |id: &String| (id.clone(), store.clone()))
        .max_active(max_active)
        .idle(idle)
}

/// Spawns the cart family on `system`.
pub fn carts(system: &System, store: Arc<dyn Store>, max_active: usize, idle: Duration) -> Entities<Cart> {
    system
        .spawn_entities(spec(store, max_active, idle))
        .expect("spawn the cart family")
}

/// A fresh directory for a store (tempfile's), removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// A new directory named after `tag`.
    pub fn new(tag: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("crashonly-{tag}-"))
            .tempdir()
            .expect("create a temp dir");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The store file in it.
    pub fn store_path(&self) -> PathBuf {
        self.0.path().join("carts.redb")
    }
}

/// Opens the redb store at `path` (verified, durable: the defaults).
pub fn open(path: &Path) -> Arc<dyn Store> {
    Arc::new(RedbStore::open(path).expect("open the redb store"))
}

/// Resident set size of this process (VmRSS), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}

/// Heap bytes in use by the allocator (glibc's `mallinfo2`: small blocks in use plus mmapped
/// ones), when the allocator is glibc's: what RSS would be if freed memory went back to the system.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let m = unsafe { libc::mallinfo2() };
        // Nothing in use: another allocator (LD_PRELOAD) serves this process.
        Some((m.uordblks + m.hblkhd) as u64).filter(|&n| n > 0)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Asks glibc's allocator to give the free pages it holds back to the system (`malloc_trim`);
/// whether it could. What RSS is then tells freed-but-held memory from memory in use.
pub fn trim_heap() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Drives one message to each of the carts `from..to`, `workers` senders at once, each cart once;
/// checks each reply against what the cart was seeded with.
pub async fn touch(carts: &Entities<Cart>, from: usize, to: usize, workers: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let carts = carts.clone();
        tasks.spawn(async move {
            let mut i = from + w;
            while i < to {
                let n = carts
                    .get(cart_id(i))
                    .ask(CartMsg::Count)
                    .await
                    .unwrap_or_else(|e| panic!("cart {i}: {e}"));
                assert_eq!(n, expected_count(i), "cart {i} recovered the wrong state");
                i += workers;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a sender task");
    }
}
