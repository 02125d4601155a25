//! redb-specific behaviour: one owner per file, corrupt files, epochs void old leases, the
//! opt-in loss window.

use std::sync::Arc;
use std::time::Duration;

use crashonly::store::{Conflict, Durability, RedbOptions, RedbStore, Store, StoreError, StoreExt, Txn};

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("crashonly-redb-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("s.redb")
}

#[tokio::test]
async fn a_second_opener_gets_a_clear_error() {
    let path = temp("second");
    let first = RedbStore::open(&path).unwrap();
    match RedbStore::open(&path) {
        Err(StoreError::Unavailable { reason, .. }) => assert!(reason.contains("already open"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // A second process gets the same answer (the lock is the file's, not the process's).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crashonly-store-child"))
        .args(["redb", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already open"));
    drop(first);
    RedbStore::open(&path).unwrap();
}

#[tokio::test]
async fn garbage_in_the_header_is_reported_as_corrupt_not_a_panic() {
    let path = temp("garbage");
    {
        let s = RedbStore::open(&path).unwrap();
        s.put(b"k", b"v".to_vec()).await.unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    for b in bytes.iter_mut().take(512) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    match RedbStore::open(&path) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains(path.to_str().unwrap()), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Not a store file at all.
    let junk = temp("junk");
    std::fs::write(&junk, b"this is not a database, just some text that is long enough").unwrap();
    assert!(matches!(RedbStore::open(&junk), Err(StoreError::Corrupt(_))));
}

#[tokio::test]
async fn a_file_older_than_its_commit_record_is_refused_as_rolled_back() {
    let path = temp("rolled");
    let record = std::path::PathBuf::from(format!("{}.acked", path.display()));
    let s = RedbStore::open(&path).unwrap();
    s.put(b"k", b"1".to_vec()).await.unwrap();
    let older = std::fs::read(&path).unwrap();
    s.put(b"k", b"2".to_vec()).await.unwrap(); // acknowledged
    drop(s);
    assert!(record.exists(), "the commit record lives beside the file");
    // The file goes back one commit (what a flipped header bit does; here, an older copy).
    std::fs::write(&path, &older).unwrap();
    match RedbStore::open(&path) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("rolled back"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Restoring an older copy on purpose: remove the record with it, and the file opens as it is.
    std::fs::remove_file(&record).unwrap();
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.get(b"k").await.unwrap().unwrap().value, b"1");
    drop(s);
    // A damaged record is refused too, never read as "nothing recorded".
    std::fs::write(&record, [0xA5u8; 600]).unwrap();
    match RedbStore::open(&path) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("commit record"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Deleting the store starts a new one: the record left beside it is not held against it.
    std::fs::remove_file(&path).unwrap();
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.get(b"k").await.unwrap(), None);
}

#[tokio::test]
async fn reopening_bumps_the_epoch_and_voids_every_older_lease() {
    let path = temp("epoch");
    let (lease, epoch) = {
        let s = RedbStore::open(&path).unwrap();
        let lease = s
            .acquire_lease("job", "worker-1", Duration::from_secs(600))
            .await
            .unwrap();
        s.commit(Txn::new().put(b"out", b"1".to_vec()).fenced(&lease))
            .await
            .unwrap();
        (lease, s.epoch())
    };
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.epoch(), epoch + 1);
    let e = s
        .commit(Txn::new().put(b"out", b"2".to_vec()).fenced(&lease))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict(Conflict::Fenced { .. })));
    // Free for anyone at once, with a larger token.
    let other = s
        .acquire_lease("job", "worker-2", Duration::from_secs(600))
        .await
        .unwrap();
    assert!(other.token > lease.token);
    assert_eq!(s.get(b"out").await.unwrap().unwrap().value, b"1");
}

#[tokio::test]
async fn loss_window_mode_is_opt_in_and_named() {
    let path = temp("window");
    let window = Duration::from_millis(50);
    let opts = RedbOptions::default().with_durability(Durability::LoseUpTo(window));
    let s = RedbStore::open_with(&path, opts).unwrap();
    assert_eq!(s.durability(), Durability::LoseUpTo(window));
    for i in 0..100u32 {
        s.put(format!("k{i}").as_bytes(), i.to_le_bytes().to_vec())
            .await
            .unwrap();
    }
    drop(s); // the writer syncs what is pending on its way out
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.durability(), Durability::Durable);
    assert_eq!(s.scan(b"k", 1000).await.unwrap().len(), 100);
}

#[tokio::test]
async fn group_commit_serves_many_concurrent_writers() {
    let path = temp("group");
    let s = Arc::new(RedbStore::open(&path).unwrap());
    let mut tasks = Vec::new();
    for w in 0..64u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10u32 {
                s.put(format!("w{w}/{i}").as_bytes(), vec![1]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.scan(b"w", 10_000).await.unwrap().len(), 640);
}
