//! PostgreSQL restarted mid-run (`pg_ctl -m immediate`, a crash of the server): callers see
//! `Unavailable` with a retry-after hint, the store reconnects by itself, nothing acknowledged is
//! lost. Runs on a throwaway cluster it creates itself, when `CRASHONLY_PG_THROWAWAY=1` (as root,
//! with PostgreSQL's binaries installed; `.ci/run` sets it).
#![cfg(feature = "postgres")]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crashonly::store::{PgOptions, PgStore, Store, StoreError, StoreExt};

struct Cluster {
    dir: std::path::PathBuf,
    bin: String,
    port: u16,
}

fn su(cmd: &str) -> std::process::Output {
    Command::new("su")
        .args(["postgres", "-s", "/bin/sh", "-c", cmd])
        .output()
        .unwrap()
}

impl Cluster {
    fn start(&self) {
        let (d, b, p) = (self.dir.display(), &self.bin, self.port);
        let out = su(&format!(
            "{b}/pg_ctl -D {d}/data -l {d}/pg.log -w -t 30 -o \"-c listen_addresses=127.0.0.1 -p {p} -k {d}\" start"
        ));
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn crash(&self) {
        let out = su(&format!(
            "{}/pg_ctl -D {}/data -m immediate -w stop",
            self.bin,
            self.dir.display()
        ));
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn create(port: u16) -> Cluster {
        let bin = String::from_utf8(Command::new("pg_config").arg("--bindir").output().unwrap().stdout).unwrap();
        let dir = std::env::temp_dir().join(format!("crashonly-pg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap()
            .success());
        let c = Cluster {
            dir,
            bin: bin.trim().to_owned(),
            port,
        };
        let out = su(&format!(
            "{}/initdb -D {}/data -U postgres -A trust --no-sync",
            c.bin,
            c.dir.display()
        ));
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        c.start();
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        su(&format!(
            "{}/pg_ctl -D {}/data -m fast -w stop",
            self.bin,
            self.dir.display()
        ));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_crash_gives_unavailable_then_reconnects_without_loss() {
    if std::env::var("CRASHONLY_PG_THROWAWAY").as_deref() != Ok("1") {
        eprintln!("skipped: CRASHONLY_PG_THROWAWAY is not 1 (PostgreSQL restart test on a throwaway cluster)");
        return;
    }
    let cluster = Cluster::create(55433);
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
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
    cluster.crash();
    let err = store.put(b"during", vec![1]).await.unwrap_err();
    match &err {
        StoreError::Unavailable { retry_after, reason } => {
            assert!(*retry_after > Duration::ZERO);
            assert!(reason.starts_with("postgres"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(store.get(b"k0").await.unwrap_err().retry_after().is_some());
    cluster.start();
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
