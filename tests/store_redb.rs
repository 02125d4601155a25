//! redb-specific behaviour: one owner per file, corrupt files, epochs void old leases, the
//! opt-in loss window.

use std::sync::Arc;
use std::time::Duration;

use crashonly::store::{Conflict, Durability, RedbOptions, RedbStore, Store, StoreError, StoreExt, Txn};

fn temp(name: &str) -> std::path::PathBuf {
    // Kept (as before): a failing test's store is there to look at.
    let dir = tempfile::Builder::new()
        .prefix(&format!("crashonly-redb-{name}-"))
        .tempdir()
        .unwrap()
        .keep();
    dir.join("s.redb")
}

#[tokio::test]
async fn a_second_opener_gets_a_clear_error() {
    let path = temp("second");
    let first = RedbStore::open(&path).unwrap();
    let me = std::process::id();
    match RedbStore::open(&path) {
        Err(e @ StoreError::AlreadyOpen { pid, .. }) => {
            assert_eq!(pid, Some(me), "the error names the owner");
            assert_eq!(e.retry_after(), None, "the owner is alive: not a temporary error");
            assert!(e.to_string().contains(&format!("already open in process {me}")), "{e}");
        }
        other => panic!("expected AlreadyOpen, got {other:?}"),
    }
    // A second process gets the same answer, naming this one, and does not say "retry after".
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crashonly-store-child"))
        .args(["redb", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("already open in process {me}")), "{stderr}");
    assert!(!stderr.contains("retry"), "{stderr}");
    drop(first);
    RedbStore::open(&path).unwrap();
}

/// Two processes creating a new store in the same empty directory at the same moment: exactly one
/// serves, the other gets the clear "already open" error naming it. Tried many times, since the
/// race is between processes.
#[tokio::test]
async fn two_processes_creating_one_store_at_once_exactly_one_serves() {
    use tokio::io::AsyncBufReadExt;
    for round in 0..20 {
        let dir = tempfile::Builder::new()
            .prefix(&format!("crashonly-redb-race-{round}-"))
            .tempdir()
            .unwrap()
            .keep();
        let path = dir.join("s.redb");
        let spawn = || {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_crashonly-store-child"))
                .args(["redb", path.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        };
        let mut children = [spawn(), spawn()];
        let mut served = Vec::new();
        let mut refused = Vec::new();
        for (i, child) in children.iter_mut().enumerate() {
            let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let first = tokio::time::timeout(Duration::from_secs(20), out.next_line())
                .await
                .expect("each child opens or exits")
                .unwrap();
            match first {
                Some(line) if line.starts_with("opened") => served.push(i),
                _ => {
                    let status = child.wait().await.unwrap();
                    let mut err = String::new();
                    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut err)
                        .await
                        .unwrap();
                    assert!(!status.success(), "round {round}: {err}");
                    refused.push((i, err));
                }
            }
        }
        assert_eq!(
            served.len(),
            1,
            "round {round}: exactly one serves; refused: {refused:?}"
        );
        let owner = children[served[0]].id().unwrap();
        let (_, err) = &refused[0];
        assert!(
            err.contains(&format!("already open in process {owner}")),
            "round {round}: {err}"
        );
        for child in &mut children {
            let _ = child.kill().await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
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
    // A missing file whose record says commits were made is refused, never started empty (it
    // would serve every acknowledged key as absent)...
    std::fs::remove_file(&record).unwrap();
    drop(RedbStore::open(&path).unwrap()); // a new, intact record
    std::fs::remove_file(&path).unwrap();
    match RedbStore::open(&path) {
        Err(StoreError::Corrupt(m)) => assert!(m.contains("is missing") && m.contains("commit record"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(!path.exists(), "nothing was created in its place");
    // ... and so is a damaged record beside a missing file.
    std::fs::write(&record, [0xA5u8; 600]).unwrap();
    assert!(matches!(RedbStore::open(&path), Err(StoreError::Corrupt(_))));
    // Removing the record too starts a new store on purpose.
    std::fs::remove_file(&record).unwrap();
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
