//! Fenced writes on a shared store: the store of record refuses an old owner's writes once a
//! newer activation (a greater placement token) has taken the entity, however late they come.
//! Run on the in-memory store always, and on PostgreSQL with `CRASHONLY_PG_URL`.

use std::sync::Arc;

use crashonly::store::{MemoryStore, PgOptions, PgStore, Store, Txn};
use crashonly_cluster::{is_fenced_out, Fence};

async fn old_owner_is_fenced_out(store: Arc<dyn Store>) {
    let old = Fence::acquire(&*store, "carts", "c1", 10).await.unwrap();
    store
        .commit(old.guard(Txn::new().put(b"cart/c1", b"a".to_vec())))
        .await
        .unwrap();
    // A newer activation on another node (token 11) takes over.
    let new = Fence::acquire(&*store, "carts", "c1", 11).await.unwrap();
    store
        .commit(new.guard(Txn::new().put(b"cart/c1", b"ab".to_vec())))
        .await
        .unwrap();
    // The old owner, back from a pause, writes late: refused, and nothing of it applied.
    let late = store
        .commit(old.guard(Txn::new().put(b"cart/c1", b"a-late".to_vec())))
        .await
        .unwrap_err();
    assert!(is_fenced_out(&late, &old), "{late}");
    assert_eq!(store.get(b"cart/c1").await.unwrap().unwrap().value, b"ab");
    // A stale activation cannot even start.
    let stale = Fence::acquire(&*store, "carts", "c1", 10).await.unwrap_err();
    assert!(is_fenced_out(&stale, &old), "{stale}");
    // The same token again (the owner's own re-activation) is fine.
    let again = Fence::acquire(&*store, "carts", "c1", 11).await.unwrap();
    store
        .commit(again.guard(Txn::new().put(b"cart/c1", b"abc".to_vec())))
        .await
        .unwrap();
    // And the earlier fence of that same owner is now out too: one live activation.
    assert!(store
        .commit(new.guard(Txn::new().put(b"cart/c1", b"x".to_vec())))
        .await
        .is_err());
}

#[tokio::test]
async fn on_the_memory_store() {
    old_owner_is_fenced_out(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn on_postgres() {
    let Ok(url) = std::env::var("CRASHONLY_PG_URL") else {
        crashonly::testing::skipped("CRASHONLY_PG_URL is not set (fenced writes on PostgreSQL)");
        return;
    };
    let opts = PgOptions::default().with_schema(format!("fence_{}", std::process::id()));
    old_owner_is_fenced_out(Arc::new(PgStore::connect(&url, opts).await.unwrap())).await;
}
