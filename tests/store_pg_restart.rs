//! PostgreSQL restarted mid-run (`pg_ctl -m immediate`, a crash of the server): callers see
//! `Unavailable` with a retry-after hint, the store reconnects by itself, nothing acknowledged is
//! lost. Runs on a throwaway cluster it creates itself, when `CRASHONLY_PG_THROWAWAY=1` (as root,
//! with PostgreSQL's binaries installed; `.ci/run` sets it).
#![cfg(feature = "postgres")]

#[path = "../examples/support/throwaway_pg.rs"]
mod throwaway_pg;

use std::sync::Arc;
use std::time::Duration;

use crashonly::store::{PgOptions, PgStore, Store, StoreError, StoreExt};
use throwaway_pg::{Setup, ThrowawayPg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crash_gives_unavailable_then_reconnects_without_loss() {
    if std::env::var("CRASHONLY_PG_THROWAWAY").as_deref() != Ok("1") {
        crashonly::testing::skipped("CRASHONLY_PG_THROWAWAY is not 1 (PostgreSQL restart test on a throwaway cluster)");
        return;
    }
    let cluster = ThrowawayPg::create(Setup {
        port: Some(55433),
        ..Setup::default()
    })
    .unwrap_or_else(|e| panic!("a throwaway PostgreSQL: {e}"));
    let url = cluster.url("postgres");
    let opts = PgOptions::default().with_connect_timeout(Duration::from_millis(500));
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&url, opts).await.unwrap());
    let mut acked = Vec::new();
    for i in 0..50u32 {
        store
            .put(format!("k{i}").as_bytes(), i.to_le_bytes().to_vec())
            .await
            .unwrap();
        acked.push(i);
    }
    cluster.crash().unwrap_or_else(|e| panic!("{e}"));
    let err = store.put(b"during", vec![1]).await.unwrap_err();
    match &err {
        StoreError::Unavailable { retry_after, reason } => {
            assert!(*retry_after > Duration::ZERO);
            assert!(reason.starts_with("postgres"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(store.get(b"k0").await.unwrap_err().retry_after().is_some());
    cluster.start().unwrap_or_else(|e| panic!("{e}"));
    // Reconnects by itself: the first calls may still find dead pooled connections.
    let mut ok = false;
    for _ in 0..20 {
        if store.put(b"after", vec![2]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the store reconnected");
    for i in acked {
        let v = store
            .get(format!("k{i}").as_bytes())
            .await
            .unwrap()
            .expect("acknowledged write kept");
        assert_eq!(v.value, i.to_le_bytes());
    }
}
