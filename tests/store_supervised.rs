//! `SupervisedStore`: a store's failure is a crash of its keeper, its recovery a reopen under the
//! supervisor's intensity and backoff; past the intensity the failure escalates to the root.
//! In-process, with a store that fails on demand like a full disk (the real full disk is in
//! `tests/cart_store.rs`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crashonly::prelude::*;
use crashonly::store::{
    Committed, Durability, DurableLease, Limits, MemoryStore, Store, StoreError, StoreExt, StoreFuture, Txn, Versioned,
};
use crashonly::SupervisedStore;

/// The disk: what survives a reopen, whether it is full, and how many opens it saw.
#[derive(Debug, Default)]
struct Disk {
    data: MemoryStore,
    full: AtomicBool,
    opens: AtomicUsize,
}

/// One opening of the disk. Like `RedbStore`, it stops for good at its first failed write.
#[derive(Debug)]
struct Opened {
    disk: Arc<Disk>,
    failed: std::sync::Mutex<Option<StoreError>>,
}

fn no_space() -> StoreError {
    StoreError::NoSpace {
        retry_after: Duration::from_secs(1),
        reason: "test disk is full".into(),
    }
}

impl Store for Opened {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>> {
        self.disk.data.get(key)
    }
    fn scan<'a>(&'a self, prefix: &'a [u8], limit: usize) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>> {
        self.disk.data.scan(prefix, limit)
    }
    fn commit(&self, txn: Txn) -> StoreFuture<'_, Committed> {
        if let Some(e) = self.failed() {
            return Box::pin(async move { Err(e) });
        }
        if self.disk.full.load(Ordering::SeqCst) {
            *self.failed.lock().unwrap() = Some(no_space());
            return Box::pin(async { Err(no_space()) });
        }
        self.disk.data.commit(txn)
    }
    fn acquire_lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        self.disk.data.acquire_lease(name, holder, ttl)
    }
    fn renew_lease<'a>(&'a self, lease: &'a DurableLease, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        self.disk.data.renew_lease(lease, ttl)
    }
    fn release_lease<'a>(&'a self, lease: &'a DurableLease) -> StoreFuture<'a, ()> {
        self.disk.data.release_lease(lease)
    }
    fn durability(&self) -> Durability {
        Durability::Durable
    }
    fn limits(&self) -> &Limits {
        self.disk.data.limits()
    }
    fn failed(&self) -> Option<StoreError> {
        self.failed.lock().unwrap().clone()
    }
}

/// A supervised store on `disk` whose opening fails while the disk is full (an open writes).
fn supervised(disk: &Arc<Disk>) -> SupervisedStore {
    let d = disk.clone();
    SupervisedStore::new("test disk", Limits::default(), Durability::Durable, move || {
        d.opens.fetch_add(1, Ordering::SeqCst);
        if d.full.load(Ordering::SeqCst) {
            return Err(no_space());
        }
        Ok(Opened {
            disk: d.clone(),
            failed: Default::default(),
        })
    })
    .unwrap()
}

fn tree(store: &SupervisedStore, max_restarts: u32) -> System {
    let root = SupervisorSpec::new("root", Strategy::OneForOne)
        .intensity(max_restarts, Duration::from_secs(60))
        .backoff(Backoff {
            base: Duration::from_millis(20),
            cap: Duration::from_millis(40),
        })
        .child(store.spec());
    System::builder()
        .config(Config::default().with_exit_on_failure(None))
        .root(root)
        .start()
        .unwrap()
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_is_rebooted_and_serves_again_once_the_disk_has_room() {
    let disk = Arc::new(Disk::default());
    let store = supervised(&disk);
    let _system = tree(&store, 1000);
    store.put(b"k", b"acknowledged".to_vec()).await.unwrap();
    assert_eq!(
        disk.opens.load(Ordering::SeqCst),
        1,
        "the keeper's first start adopts the store"
    );

    disk.full.store(true, Ordering::SeqCst);
    let e = store.put(b"k", b"refused".to_vec()).await.unwrap_err();
    assert!(matches!(e, StoreError::NoSpace { .. }), "{e:?}");
    // Down: every request is answered at once with what happened, not queued.
    assert!(matches!(store.status(), Err(StoreError::NoSpace { .. })));
    assert!(matches!(store.get(b"k").await, Err(StoreError::NoSpace { .. })));
    // The keeper crashes and retries the reopen with its backoff; each fails while the disk is full.
    eventually("reopens are tried", || disk.opens.load(Ordering::SeqCst) >= 3).await;
    let e = store.status().unwrap_err();
    assert!(
        e.retry_after().unwrap() <= Duration::from_millis(40),
        "from the backoff: {e:?}"
    );

    disk.full.store(false, Ordering::SeqCst);
    eventually("the store serves again", || store.status().is_ok()).await;
    assert_eq!(store.get(b"k").await.unwrap().unwrap().value, b"acknowledged");
    store.put(b"k", b"after".to_vec()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stays_failed_escalates_past_the_intensity() {
    let disk = Arc::new(Disk::default());
    let store = supervised(&disk);
    let system = tree(&store, 3);
    disk.full.store(true, Ordering::SeqCst);
    assert!(store.put(b"k", b"v".to_vec()).await.is_err());
    let failure = tokio::time::timeout(Duration::from_secs(10), system.wait())
        .await
        .expect("the root gives up")
        .unwrap_err();
    assert!(failure.to_string().contains("intensity"), "{failure}");
    // The first open, then one reopen per restart the intensity allows (a start that fails is
    // itself a crash); then no more.
    let opens = disk.opens.load(Ordering::SeqCst);
    assert!((4..=5).contains(&opens), "{opens} opens");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        disk.opens.load(Ordering::SeqCst),
        opens,
        "no reopen after the root gave up"
    );
    assert!(matches!(store.status(), Err(StoreError::NoSpace { .. })));
}
