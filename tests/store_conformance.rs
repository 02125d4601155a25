//! One conformance suite for every store backend: memory, redb and (with `CRASHONLY_PG_URL`)
//! PostgreSQL. Time is a `ManualTime`: TTLs and leases are checked without sleeping.

use std::sync::Arc;
use std::time::Duration;

use crashonly::store::{Conflict, DurableState, Limits, ManualTime, Store, StoreError, StoreExt, Txn};

type S = Arc<dyn Store>;

const T0: u64 = 1_700_000_000_000;

fn conflict(e: StoreError) -> Conflict {
    match e {
        StoreError::Conflict(c) => c,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

fn bad_input<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
    match r {
        Err(StoreError::BadInput(m)) => m,
        other => panic!("expected bad input, got {other:?}"),
    }
}

pub async fn versions_grow_and_never_repeat(s: S, _t: ManualTime) {
    let v1 = s.put(b"k", b"a".to_vec()).await.unwrap();
    let v2 = s.put(b"k", b"b".to_vec()).await.unwrap();
    assert!(v2 > v1 && v1 > 0);
    let got = s.get(b"k").await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.version), (&b"b"[..], v2));
    assert!(s.delete(b"k").await.unwrap());
    assert!(!s.delete(b"k").await.unwrap());
    assert_eq!(s.get(b"k").await.unwrap(), None);
    let v3 = s.put(b"k", b"a".to_vec()).await.unwrap();
    assert!(
        v3 > v2,
        "a key written again after a delete never gets an old version back"
    );
}

pub async fn compare_and_set(s: S, _t: ManualTime) {
    let v1 = s.compare_and_set(b"c", 0, b"first".to_vec()).await.unwrap();
    let c = conflict(s.compare_and_set(b"c", 0, b"again".to_vec()).await.unwrap_err());
    assert_eq!(
        c,
        Conflict::Version {
            key: b"c".to_vec(),
            expected: 0,
            actual: v1
        }
    );
    let v2 = s.compare_and_set(b"c", v1, b"second".to_vec()).await.unwrap();
    let c = conflict(s.compare_and_set(b"c", v1, b"stale".to_vec()).await.unwrap_err());
    assert_eq!(
        c,
        Conflict::Version {
            key: b"c".to_vec(),
            expected: v1,
            actual: v2
        }
    );
    assert_eq!(s.get(b"c").await.unwrap().unwrap().value, b"second");
}

pub async fn prefix_scan(s: S, t: ManualTime) {
    for k in ["a/1", "a/3", "a/2", "b/1", "a"] {
        s.put(k.as_bytes(), k.as_bytes().to_vec()).await.unwrap();
    }
    s.put_with_ttl(b"a/4", b"x".to_vec(), Duration::from_secs(1))
        .await
        .unwrap();
    let keys = |v: Vec<(Vec<u8>, crashonly::store::Versioned)>| {
        v.into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(s.scan(b"a/", 100).await.unwrap()), ["a/1", "a/2", "a/3", "a/4"]);
    assert_eq!(keys(s.scan(b"a/", 2).await.unwrap()), ["a/1", "a/2"]);
    t.advance(Duration::from_secs(2));
    assert_eq!(keys(s.scan(b"a/", 100).await.unwrap()), ["a/1", "a/2", "a/3"]);
    assert!(s.scan(b"zzz", 10).await.unwrap().is_empty());
}

pub async fn transactions_are_all_or_nothing(s: S, _t: ManualTime) {
    let v = s.put(b"x", b"0".to_vec()).await.unwrap();
    let bad = Txn::new()
        .put(b"y", b"1".to_vec())
        .check(b"x", v + 1000)
        .put(b"z", b"1".to_vec());
    assert!(matches!(
        conflict(s.commit(bad).await.unwrap_err()),
        Conflict::Version { .. }
    ));
    assert_eq!(s.get(b"y").await.unwrap(), None);
    assert_eq!(s.get(b"z").await.unwrap(), None);
    let good = Txn::new()
        .check(b"x", v)
        .delete(b"x")
        .put(b"y", b"1".to_vec())
        .put(b"z", b"2".to_vec());
    let c = s.commit(good).await.unwrap();
    assert_eq!(c.existed, [true, false, false]);
    assert_eq!(c.versions[0], 0);
    assert_eq!(c.versions[1], c.versions[2]);
    assert_eq!(s.get(b"x").await.unwrap(), None);
    assert_eq!(s.get(b"z").await.unwrap().unwrap().value, b"2");
}

pub async fn ttl_hides_and_reclaims(s: S, t: ManualTime) {
    let v = s
        .put_with_ttl(b"session/1", b"s".to_vec(), Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(s.get(b"session/1").await.unwrap().unwrap().version, v);
    t.advance(Duration::from_millis(499));
    assert!(s.get(b"session/1").await.unwrap().is_some());
    t.advance(Duration::from_millis(1));
    assert_eq!(s.get(b"session/1").await.unwrap(), None);
    // Expired counts as absent everywhere: compare-and-set against 0 succeeds, delete finds nothing.
    assert!(!s.delete(b"session/1").await.unwrap());
    s.compare_and_set(b"session/1", 0, b"new".to_vec()).await.unwrap();
    // A write without a TTL makes the key permanent again.
    s.put_with_ttl(b"session/2", b"s".to_vec(), Duration::from_millis(10))
        .await
        .unwrap();
    s.put(b"session/2", b"kept".to_vec()).await.unwrap();
    t.advance(Duration::from_secs(60));
    assert_eq!(s.get(b"session/2").await.unwrap().unwrap().value, b"kept");
}

pub async fn leases_and_fencing(s: S, t: ManualTime) {
    let ttl = Duration::from_secs(10);
    let a = s.acquire_lease("job/1", "worker-a", ttl).await.unwrap();
    assert_eq!(a.expires_at_ms, T0 + 10_000);
    match conflict(s.acquire_lease("job/1", "worker-b", ttl).await.unwrap_err()) {
        Conflict::LeaseHeld { holder, remaining, .. } => {
            assert_eq!(holder, "worker-a");
            assert_eq!(remaining, ttl);
        }
        other => panic!("{other:?}"),
    }
    s.commit(Txn::new().put(b"job/1/out", b"a".to_vec()).fenced(&a))
        .await
        .unwrap();
    // The same holder takes over (a restart): a newer token fences the old one out.
    let a2 = s.acquire_lease("job/1", "worker-a", ttl).await.unwrap();
    assert!(a2.token > a.token);
    let e = s
        .commit(Txn::new().put(b"job/1/out", b"stale".to_vec()).fenced(&a))
        .await
        .unwrap_err();
    assert_eq!(
        conflict(e),
        Conflict::Fenced {
            lease: "job/1".into(),
            token: a.token
        }
    );
    assert_eq!(s.get(b"job/1/out").await.unwrap().unwrap().value, b"a");
    // Renewal keeps it; expiry frees it for others; the lost holder can neither renew nor write.
    t.advance(Duration::from_secs(8));
    let a3 = s.renew_lease(&a2, ttl).await.unwrap();
    assert_eq!(a3.expires_at_ms, T0 + 18_000);
    t.advance(Duration::from_secs(9));
    assert!(s.acquire_lease("job/1", "worker-b", ttl).await.is_err());
    t.advance(Duration::from_secs(2));
    let b = s.acquire_lease("job/1", "worker-b", ttl).await.unwrap();
    assert!(b.token > a3.token);
    assert!(matches!(
        conflict(s.renew_lease(&a3, ttl).await.unwrap_err()),
        Conflict::LeaseLost { .. }
    ));
    assert!(s
        .commit(Txn::new().put(b"job/1/out", b"late".to_vec()).fenced(&a3))
        .await
        .is_err());
    // Release frees it at once; releasing a lost lease does nothing.
    s.release_lease(&a3).await.unwrap();
    assert!(s.acquire_lease("job/1", "worker-c", ttl).await.is_err());
    s.release_lease(&b).await.unwrap();
    s.acquire_lease("job/1", "worker-c", ttl).await.unwrap();
}

pub async fn apply_once_executes_once(s: S, _t: ManualTime) {
    let first = s
        .apply_once(b"req-1", Txn::new().put(b"acct", b"100".to_vec()))
        .await
        .unwrap();
    assert!(!first.replayed);
    s.put(b"acct", b"150".to_vec()).await.unwrap();
    let again = s
        .apply_once(b"req-1", Txn::new().put(b"acct", b"100".to_vec()))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.versions, first.versions);
    assert_eq!(
        s.get(b"acct").await.unwrap().unwrap().value,
        b"150",
        "the retry wrote nothing"
    );
    let other = s
        .apply_once(b"req-2", Txn::new().put(b"acct", b"200".to_vec()))
        .await
        .unwrap();
    assert!(!other.replayed);
}

/// An idempotency key stands for one request: a retry of it is replayed, the key reused for another
/// request (another resource, another change) is refused and writes nothing.
pub async fn an_idempotency_key_means_one_request(s: S, _t: ManualTime) {
    let add = |cart: &str, item: &str| Txn::new().put(cart.as_bytes(), item.as_bytes().to_vec());
    let first = s
        .commit(add("cart/1", "book").once_for(b"K", b"cart/1 add book"))
        .await
        .unwrap();
    let retry = s
        .commit(add("cart/1", "book").once_for(b"K", b"cart/1 add book"))
        .await
        .unwrap();
    assert!(retry.replayed && retry.versions == first.versions);
    for (txn, what) in [
        (add("cart/2", "book").once_for(b"K", b"cart/2 add book"), "another cart"),
        (add("cart/1", "pen").once_for(b"K", b"cart/1 add pen"), "another item"),
        (add("cart/1", "book").once(b"K"), "no request named"),
    ] {
        match s.commit(txn).await {
            Err(StoreError::Conflict(Conflict::KeyReused { key })) => assert_eq!(key, b"K", "{what}"),
            other => panic!("{what}: expected KeyReused, got {other:?}"),
        }
    }
    assert_eq!(s.get(b"cart/2").await.unwrap(), None, "a refused reuse writes nothing");
    assert_eq!(s.get(b"cart/1").await.unwrap().unwrap().value, b"book");
    let long = vec![b'r'; s.limits().max_key + 1];
    assert!(bad_input(s.commit(add("cart/1", "x").once_for(b"L", &long)).await).contains("idempotency request"));
}

pub async fn bad_input_is_refused_clearly(s: S, _t: ManualTime) {
    let limits = s.limits().clone();
    let big_key = vec![b'k'; limits.max_key + 1];
    assert!(bad_input(s.put(&big_key, b"v".to_vec()).await).contains("exceeds the limit"));
    assert!(bad_input(s.put(b"", b"v".to_vec()).await).contains("empty key"));
    let big = vec![0u8; limits.max_value + 1];
    assert!(bad_input(s.put(b"k", big).await).contains("value of"));
    assert!(bad_input(s.put_with_ttl(b"k", b"v".to_vec(), Duration::ZERO).await).contains("at least 1 ms"));
    let too_long = limits.max_ttl + Duration::from_secs(1);
    assert!(bad_input(s.put_with_ttl(b"k", b"v".to_vec(), too_long).await).contains("exceeds the limit"));
    assert!(bad_input(s.acquire_lease("l", "h", Duration::ZERO).await).contains("lease"));
    assert!(bad_input(s.acquire_lease("l", "h", limits.max_lease * 2).await).contains("lease"));
    assert!(bad_input(s.acquire_lease("", "h", Duration::from_secs(1)).await).contains("lease name"));
    assert!(bad_input(s.commit(Txn::new()).await).contains("empty transaction"));
    assert_eq!(s.get(b"k").await.unwrap(), None, "nothing was written");
}

pub async fn durable_state_fences_old_incarnations(s: S, _t: ManualTime) {
    let ttl = Duration::from_secs(30);
    let mut old = DurableState::recover(s.clone(), "acct/9", "/bank/9", ttl)
        .await
        .unwrap();
    assert_eq!(old.value(), None);
    old.save(b"10".to_vec()).await.unwrap();
    let mut new = DurableState::recover(s.clone(), "acct/9", "/bank/9", ttl)
        .await
        .unwrap();
    assert_eq!(new.value(), Some(&b"10"[..]));
    assert!(matches!(
        conflict(old.save(b"stale".to_vec()).await.unwrap_err()),
        Conflict::Fenced { .. }
    ));
    new.save(b"20".to_vec()).await.unwrap();
    new.renew(ttl).await.unwrap();
    assert_eq!(s.get(b"acct/9").await.unwrap().unwrap().value, b"20");
    // Another holder cannot take it while it is held.
    assert!(DurableState::recover(s.clone(), "acct/9", "/other", ttl).await.is_err());
}

/// A number no other store of this test process got: each case gets its own file or schema.
pub fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn limits() -> Limits {
    Limits::default().with_max_value(64 * 1024)
}

/// Runs every case against stores made by `make` (a fresh, empty store each time).
#[macro_export]
macro_rules! conformance {
    ($make:expr) => {
        conformance!(@cases $make;
            versions_grow_and_never_repeat, compare_and_set, prefix_scan, transactions_are_all_or_nothing,
            ttl_hides_and_reclaims, leases_and_fencing, apply_once_executes_once, an_idempotency_key_means_one_request,
            bad_input_is_refused_clearly,
            durable_state_fences_old_incarnations);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let t = ManualTime::new(T0);
                let Some(s) = ($make)(t.clone()).await else { return };
                super::$case(s, t).await;
            }
        )*
    };
}

mod memory {
    use super::*;
    use crashonly::store::MemoryStore;

    async fn make(t: ManualTime) -> Option<S> {
        Some(Arc::new(MemoryStore::with(limits(), Arc::new(t))))
    }
    conformance!(make);
}

mod redb {
    use super::*;
    use crashonly::store::{RedbOptions, RedbStore};

    async fn make(t: ManualTime) -> Option<S> {
        // Outlives this function in the store it returns: kept.
        let dir = tempfile::Builder::new()
            .prefix("crashonly-conf-")
            .tempdir()
            .unwrap()
            .keep();
        let opts = RedbOptions::default().with_limits(limits()).with_time(Arc::new(t));
        Some(Arc::new(RedbStore::open_with(dir.join("s.redb"), opts).unwrap()))
    }

    conformance!(make);
}

/// The supervised handle over redb: the same store, seen through the reboot wrapper.
mod supervised {
    use super::*;
    use crashonly::store::RedbOptions;
    use crashonly::SupervisedStore;

    async fn make(t: ManualTime) -> Option<S> {
        // Outlives this function in the store it returns: kept.
        let dir = tempfile::Builder::new()
            .prefix("crashonly-confsup-")
            .tempdir()
            .unwrap()
            .keep();
        let opts = RedbOptions::default().with_limits(limits()).with_time(Arc::new(t));
        Some(Arc::new(SupervisedStore::redb(dir.join("s.redb"), opts).unwrap()))
    }

    conformance!(make);
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use crashonly::store::{PgOptions, PgStore};

    async fn make(t: ManualTime) -> Option<S> {
        let Ok(url) = std::env::var("CRASHONLY_PG_URL") else {
            crashonly::testing::skipped("CRASHONLY_PG_URL is not set (PostgreSQL conformance)");
            return None;
        };
        // Each case gets its own schema so that cases can run in parallel.
        let schema = format!("conf_{}_{}", std::process::id(), rand_suffix());
        let opts = PgOptions::default()
            .with_limits(limits())
            .with_time(Arc::new(t))
            .with_schema(schema);
        Some(Arc::new(PgStore::connect(&url, opts).await.unwrap()))
    }

    conformance!(make);

    /// Opening a store whose tables exist takes no lock on them: another process holding its
    /// writes open (a transaction with kv and idem locked against schema changes) does not block
    /// the opening, which used to deadlock with other nodes' writes.
    #[tokio::test]
    async fn opening_an_existing_store_does_not_wait_for_writers() {
        let Ok(url) = std::env::var("CRASHONLY_PG_URL") else {
            crashonly::testing::skipped("CRASHONLY_PG_URL is not set (PostgreSQL opening under writes)");
            return;
        };
        let schema = format!("open_{}_{}", std::process::id(), rand_suffix());
        let opts = || PgOptions::default().with_schema(schema.clone());
        let first = PgStore::connect(&url, opts()).await.unwrap();
        first.put(b"k", b"v".to_vec()).await.unwrap();
        let (mut writer, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        let tx = writer.transaction().await.unwrap();
        tx.batch_execute(&format!(
            "LOCK TABLE {schema}.kv IN ROW EXCLUSIVE MODE; LOCK TABLE {schema}.idem IN ROW EXCLUSIVE MODE;"
        ))
        .await
        .unwrap();
        let second = tokio::time::timeout(Duration::from_secs(2), PgStore::connect(&url, opts()))
            .await
            .expect("opening waited for the writer's locks")
            .unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(second.get(b"k").await.unwrap().unwrap().value, b"v");
    }
}
