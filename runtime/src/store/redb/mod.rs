//! `RedbStore`: the embedded default, on redb (pure Rust, copy-on-write B-trees).
//!
//! Invariants:
//! - One writer thread owns every write. It takes whatever requests are queued (up to
//!   `max_batch`), applies them in one redb transaction, commits once (one sync for all: group
//!   commit), and only then answers them. A refused transaction (conflict, bad input) writes nothing
//!   and does not disturb the others; any storage error fails the whole batch, answers every
//!   request with that error (`NoSpace`, `Corrupt`, `Unavailable`), and stops the writer: the store
//!   is then failed ([`Store::failed`]) and its owner is expected to crash and reopen it
//!   (crash-only; [`SupervisedStore`](crate::SupervisedStore) does), rather than retry a failed
//!   sync. A read that finds damage fails the store the same way.
//! - One process owns a store file: it holds `<path>.lock` (see `open.rs`).
//! - Every page's checksum is verified at open (by default): redb itself reads only the pages a
//!   request needs and trusts them, so a flipped bit in a tree page could make a key vanish.
//! - Every commit sets quick-repair, so reopening after `kill -9` loads the saved allocator state
//!   instead of walking the trees.
//! - Each open bumps the durable `epoch`; leases granted before are void at once (their holders died
//!   with the process that owned the file).
//! - Every commit counts itself in the file, and a durable one is acknowledged only once its number
//!   is in the commit record beside the file (`<path>.acked`, synced): a file found behind its
//!   record was rolled back (redb's unchecksummed header byte chose an older commit) and is refused
//!   as corrupt instead of opening without acknowledged commits.
//! - Reads use redb read transactions on the caller's thread (snapshots; never blocked by the
//!   writer).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as StdInstant};

use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

use self::open::{committed, corrupt_panic, guarded, lock_owner, open_error, storage_error, sync_dir, verify};
use self::writer::{open_tables, writer_loop, CommitLog, Failure};
use super::acked::{self, CommitRecord, Recorded};
use super::engine::{self, Table};
use super::{
    Committed, Durability, DurableLease, Limits, Store, StoreError, StoreFuture, TimeSource, Txn, Versioned, WallClock,
};
use crate::rt::ThreadHandle;
use crate::sync::{mpsc, Arc, Mutex};

mod open;
mod writer;

const DEFS: [TableDefinition<'static, &'static [u8], &'static [u8]>; 5] = [
    TableDefinition::new("data"),
    TableDefinition::new("expiry"),
    TableDefinition::new("lease"),
    TableDefinition::new("idem"),
    TableDefinition::new("meta"),
];

/// Options of [`RedbStore::open`]: start from `RedbOptions::default()` and change what you need
/// (`RedbOptions::default().with_durability(..)`); more options may come in later versions.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedbOptions {
    /// When acknowledged writes are durable (durable by default).
    pub durability: Durability,
    /// What the store accepts.
    pub limits: Limits,
    /// Wall-clock time for TTLs and leases.
    pub time: Arc<dyn TimeSource>,
    /// Most requests folded into one commit.
    pub max_batch: usize,
    /// Verify every page's checksum when opening (on by default). redb trusts the pages it does
    /// not verify: a flipped bit in a tree page can make an acknowledged key read as absent, and
    /// on some damaged pages redb panics twice and aborts the process. With this on, a damaged
    /// file is refused with [`StoreError::Corrupt`] before anything reads or writes it. It reads
    /// the whole file: about 12 ms at 100k keys and 100 ms at 1M (README, "Store"); turn it off
    /// only for a store whose damage you can afford to serve.
    pub verify_on_open: bool,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            durability: Durability::Durable,
            limits: Limits::default(),
            time: Arc::new(WallClock),
            max_batch: 1024,
            verify_on_open: true,
        }
    }
}

with_setters!(RedbOptions {
    /// Sets when acknowledged writes are durable.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # use std::time::Duration;
    /// let opts = RedbOptions::default().with_durability(Durability::LoseUpTo(Duration::from_millis(5)));
    /// assert_eq!(opts.durability, Durability::LoseUpTo(Duration::from_millis(5)));
    /// ```
    with_durability => durability: Durability,
    /// Sets what the store accepts.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// let opts = RedbOptions::default().with_limits(Limits::default().with_max_value(1 << 10));
    /// assert_eq!(opts.limits.max_value, 1024);
    /// ```
    with_limits => limits: Limits,
    /// Sets the wall-clock time source for TTLs and leases.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// let opts = RedbOptions::default().with_time(std::sync::Arc::new(ManualTime::new(1_000)));
    /// assert_eq!(opts.time.now_ms(), 1_000);
    /// ```
    with_time => time: Arc<dyn TimeSource>,
    /// Sets the most requests folded into one commit.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// let opts = RedbOptions::default().with_max_batch(64);
    /// assert_eq!(opts.max_batch, 64);
    /// ```
    with_max_batch => max_batch: usize,
    /// Verifies every page's checksum when opening (see [`RedbOptions::verify_on_open`]).
    ///
    /// ```
    /// # use crashonly::store::*;
    /// let opts = RedbOptions::default().with_verify_on_open(false); // damage is served, not refused
    /// assert!(!opts.verify_on_open);
    /// ```
    with_verify_on_open => verify_on_open: bool,
});

enum Op {
    Commit(Txn),
    Acquire {
        name: String,
        holder: String,
        ttl: Duration,
    },
    Renew {
        lease: DurableLease,
        ttl: Duration,
    },
    Release {
        lease: DurableLease,
    },
}

enum Done {
    Committed(Committed),
    Lease(DurableLease),
    Released,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

/// The embedded, crash-only default store. One process owns a file at a time.
///
/// ```
/// use crashonly::store::{RedbStore, Store, StoreExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), crashonly::store::StoreError> {
/// let dir = std::env::temp_dir().join(format!("crashonly-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("state.redb");
/// {
///     let store = RedbStore::open(&path)?;
///     store.put(b"greeting", b"hello".to_vec()).await?; // durable once acknowledged
/// }
/// let store = RedbStore::open(&path)?; // what a restart does
/// assert_eq!(store.get(b"greeting").await?.unwrap().value, b"hello");
/// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(()) }
/// ```
pub struct RedbStore {
    /// Why the store stopped, once it has.
    failure: Failure,
    /// `None` only while the store is dropped.
    db: Option<Arc<Database>>,
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<ThreadHandle>>,
    epoch: u64,
    opts: RedbOptions,
    opened_in: Duration,
    /// The owner's lock (`<path>.lock`), for file stores; let go last.
    owner: Option<std::fs::File>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, durable by default.
    ///
    /// Beside the file the store keeps its commit record, `<path>.acked` (under 2 KiB): the number
    /// of the last acknowledged commit. Copy, move and delete the two together. A file older than
    /// its record (rolled back by a damaged header, or an older copy put in its place) is refused
    /// with [`StoreError::Corrupt`]; to restore an older copy on purpose, remove the record with
    /// it. A missing record is created, and accepts the file as it is. A missing file whose record
    /// says commits were made is refused with [`StoreError::Corrupt`] (remove the record too to
    /// start an empty store on purpose).
    ///
    /// One process owns a store: it holds `<path>.lock` (which holds its process id) until the
    /// store is dropped or the process dies. Another process gets [`StoreError::AlreadyOpen`]
    /// naming it.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let dir = std::env::temp_dir().join(format!("crashonly-doc-open-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("state.redb");
    /// let store = RedbStore::open(&path)?;
    /// let again = RedbStore::open(&path); // a second owner (here in the same process)
    /// assert!(matches!(again, Err(StoreError::AlreadyOpen { .. })));
    /// store.put(b"k", b"v".to_vec()).await?;
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens (or creates) the store at `path` with options.
    ///
    /// Errors: [`StoreError::AlreadyOpen`] when another process owns the store,
    /// [`StoreError::Corrupt`] when the file is damaged or missing,
    /// [`StoreError::Unsupported`] when it was written in another format,
    /// [`StoreError::NoSpace`] when the disk is full.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let dir = std::env::temp_dir().join(format!("crashonly-doc-open-with-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let opts = RedbOptions::default().with_durability(Durability::LoseUpTo(Duration::from_millis(10)));
    /// let store = RedbStore::open_with(dir.join("soft.redb"), opts)?;
    /// assert_eq!(store.durability(), Durability::LoseUpTo(Duration::from_millis(10)));
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn open_with(path: impl AsRef<Path>, opts: RedbOptions) -> Result<RedbStore, StoreError> {
        let started = StdInstant::now();
        let path = path.as_ref().to_path_buf();
        let owner = lock_owner(&path)?;
        open::create_if_new(&path)?;
        let db = guarded(&path, || Database::create(&path).map_err(|e| open_error(&path, e)))?;
        // Opened only now that this process owns the store file.
        let record_path = acked::record_path(&path);
        let new_record = !record_path.exists();
        let record = CommitRecord::open_file(&record_path)?;
        if new_record {
            sync_dir(&record_path)?;
        }
        let mut store = Self::start(db, path, opts, started, Some(record))?;
        store.owner = Some(owner);
        Ok(store)
    }

    /// Opens (or creates) the store on a storage layer of your own instead of a file: an
    /// in-memory disk, an encrypted one, or a test disk that records writes and syncs and fails on
    /// demand (the power-loss and I/O-error suites use one). `name` appears in errors.
    ///
    /// Creating a store on a backend is not atomic (a file path is: see [`open`](Self::open)):
    /// give it an empty backend or a complete store.
    ///
    /// This store keeps no commit record (see
    /// [`open_backend_with_record`](Self::open_backend_with_record)): a damaged header byte can
    /// make it open at the commit before the last acknowledged one.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// use redb::backends::InMemoryBackend;
    ///
    /// let store = RedbStore::open_backend("scratch", InMemoryBackend::new(), RedbOptions::default())?;
    /// store.put(b"k", b"v".to_vec()).await?;
    /// assert_eq!(store.get(b"k").await?.unwrap().value, b"v");
    /// # Ok(()) }
    /// ```
    pub fn open_backend(
        name: &str,
        backend: impl redb::StorageBackend,
        opts: RedbOptions,
    ) -> Result<RedbStore, StoreError> {
        Self::open_backends(name, backend, None, opts)
    }

    /// [`open_backend`](Self::open_backend), with the commit record on a second storage layer
    /// (what `<path>.acked` is to a file store): a durable commit is acknowledged only once its
    /// number is synced there, and a store found behind its record (rolled back by a damaged
    /// header) is refused with [`StoreError::Corrupt`]. An empty record accepts the store as it
    /// is.
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// use redb::backends::InMemoryBackend;
    ///
    /// let (disk, record) = (InMemoryBackend::new(), InMemoryBackend::new());
    /// let store = RedbStore::open_backend_with_record("scratch", disk, record, RedbOptions::default())?;
    /// store.put(b"k", b"v".to_vec()).await?; // acknowledged once its number is in the record
    /// assert_eq!(store.get(b"k").await?.unwrap().value, b"v");
    /// # Ok(()) }
    /// ```
    pub fn open_backend_with_record(
        name: &str,
        backend: impl redb::StorageBackend,
        record: impl redb::StorageBackend,
        opts: RedbOptions,
    ) -> Result<RedbStore, StoreError> {
        let record = CommitRecord::new(format!("{name} (commit record)"), Box::new(record));
        Self::open_backends(name, backend, Some(record), opts)
    }

    fn open_backends(
        name: &str,
        backend: impl redb::StorageBackend,
        record: Option<CommitRecord>,
        opts: RedbOptions,
    ) -> Result<RedbStore, StoreError> {
        let started = StdInstant::now();
        let path = PathBuf::from(name);
        let db = guarded(&path, || {
            redb::Builder::new()
                .create_with_backend(backend)
                .map_err(|e| open_error(&path, e))
        })?;
        Self::start(db, path, opts, started, record)
    }

    fn start(
        mut db: Database,
        path: PathBuf,
        opts: RedbOptions,
        started: StdInstant,
        record: Option<CommitRecord>,
    ) -> Result<RedbStore, StoreError> {
        if let Err(e) = Self::check(&mut db, &path, &opts, record.as_ref()) {
            // redb closes a database with a last commit, which panics on some damaged files.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
            return Err(e);
        }
        let (db, epoch, commits) = guarded(&path, || Self::bump_epoch(db))?;
        if let Some(record) = &record {
            record.reset(commits)?;
        }
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let failure = Failure::default();
        let writer = {
            let (db, opts, failure) = (db.clone(), opts.clone(), failure.clone());
            let log = CommitLog { record, commits };
            crate::rt::os_thread("crashonly-redb-writer".into(), move || {
                writer_loop(&db, &rx, epoch, &opts, log, &failure)
            })
            .map_err(|e| StoreError::unavailable(format!("cannot start the writer thread: {e}")))?
        };
        Ok(RedbStore {
            failure,
            owner: None,
            db: Some(db),
            path,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            epoch,
            opts,
            opened_in: started.elapsed(),
        })
    }

    /// Refuses a file that is damaged, or behind its commit record (rolled back).
    fn check(
        db: &mut Database,
        path: &Path,
        opts: &RedbOptions,
        record: Option<&CommitRecord>,
    ) -> Result<(), StoreError> {
        if opts.verify_on_open {
            verify(db, path)?;
        }
        if let Some(Recorded { acked, written }) = record.map(CommitRecord::read).transpose()?.flatten() {
            let found = guarded(path, || committed(db))?;
            if found < acked {
                return Err(StoreError::Corrupt(format!(
                    "{}: rolled back: the file holds commit {found}, but commit {acked} was acknowledged \
                     (the commit record says so); its header is damaged",
                    path.display()
                )));
            }
            // Ahead of the record: a crash between a commit and its record (never acknowledged),
            // or a damaged header byte that chose a commit still being written. redb trusts the
            // commit it chose without reading its pages' checksums: read them all, this once.
            if found > written && !opts.verify_on_open {
                verify(db, path)?;
            }
        }
        Ok(())
    }

    /// Counts this opening in the file (a new epoch voids the leases of earlier ones). Returns the
    /// epoch and the number of this commit.
    fn bump_epoch(db: Database) -> Result<(Database, u64, u64), StoreError> {
        let mut wtx = db.begin_write().map_err(storage_error)?;
        wtx.set_quick_repair(true);
        let (epoch, commits) = {
            let mut tables = open_tables(&wtx)?;
            engine::check_format(&mut tables)?;
            let commits = engine::meta_get(&tables, "commits")?;
            let epoch = engine::meta_get(&tables, "epoch")? + 1;
            engine::meta_put(&mut tables, "epoch", epoch)?;
            engine::meta_put(&mut tables, "commits", commits + 1)?;
            (epoch, commits + 1)
        };
        wtx.commit().map_err(storage_error)?;
        Ok((db, epoch, commits))
    }

    /// How many times the file has been opened (leases from earlier epochs are void).
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let dir = std::env::temp_dir().join(format!("crashonly-doc-epoch-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("state.redb");
    /// let first = RedbStore::open(&path)?.epoch(); // dropped at once
    /// let store = RedbStore::open(&path)?;
    /// assert_eq!(store.epoch(), first + 1);
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How long `open` took (the recovery time after a crash).
    ///
    /// ```
    /// # use crashonly::store::*;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), StoreError> {
    /// # let dir = std::env::temp_dir().join(format!("crashonly-doc-opened-in-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let store = RedbStore::open(dir.join("state.redb"))?;
    /// assert!(store.opened_in() < Duration::from_secs(60));
    /// println!("recovered in {:?}", store.opened_in());
    /// # drop(store); std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok(()) }
    /// ```
    pub fn opened_in(&self) -> Duration {
        self.opened_in
    }

    fn submit(&self, op: Op) -> StoreFuture<'_, Done> {
        let (reply, rx) = oneshot::channel();
        // A stopped writer has dropped its end (after answering what it had queued): the send
        // fails, or the reply never comes, and either way the answer is why it stopped.
        let sent = match &*self.tx.lock() {
            Some(tx) => tx.send(Request { op, reply }).is_ok(),
            None => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(self.stopped());
            }
            rx.await.unwrap_or_else(|_| Err(self.stopped()))
        })
    }

    /// The error of a request the stopped writer can no longer take: why it stopped.
    fn stopped(&self) -> StoreError {
        self.failed()
            .unwrap_or_else(|| StoreError::unavailable("the store's writer has stopped; reopen the store"))
    }

    fn read<R>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static [u8], &'static [u8]>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // redb can panic on a damaged page instead of returning an error (the power-loss suite
        // found one, on a header with a flipped bit): that is corruption, reported as such.
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = self.db.as_ref().expect("open until dropped");
            let rtx = db.begin_read().map_err(storage_error)?;
            let table = rtx.open_table(DEFS[Table::Data as usize]).map_err(storage_error)?;
            f(&table)
        }))
        .unwrap_or_else(|panic| Err(corrupt_panic(&self.path, panic)));
        if let Err(e) = &read {
            // Only the file can fail a read (damage, an I/O error): the store has crashed, and
            // its reopening decides, verifying every page, whether it may serve again.
            tracing::error!(error = %e, "store read failed; the store must be reopened");
            self.failure.lock().get_or_insert_with(|| e.clone());
        }
        read
    }
}

impl Drop for RedbStore {
    /// Not needed for correctness (it may never run: stop = crash). It lets a process reopen the
    /// same file after dropping the store, by waiting for the writer to let go of it.
    fn drop(&mut self) {
        self.tx.lock().take();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
        // redb closes a database with a last commit, which can panic on a damaged file (found by
        // the fuzz replay). Nothing depends on that commit (stop = crash): keep its panic in.
        let db = self.db.take();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
    }
}

impl Store for RedbStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>> {
        let now = self.opts.time.now_ms();
        let out = self.read(|t| {
            let raw = t.get(key).map_err(storage_error)?;
            engine::read_live(key, raw.as_ref().map(|g| g.value()), now)
        });
        Box::pin(async move { out })
    }

    fn scan<'a>(&'a self, prefix: &'a [u8], limit: usize) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>> {
        let now = self.opts.time.now_ms();
        let out = self.read(|t| {
            let mut out = Vec::new();
            for item in t.range::<&[u8]>(prefix..).map_err(storage_error)? {
                let (k, v) = item.map_err(storage_error)?;
                if !k.value().starts_with(prefix) || out.len() >= limit {
                    break;
                }
                if let Some(v) = engine::read_live(k.value(), Some(v.value()), now)? {
                    out.push((k.value().to_vec(), v));
                }
            }
            Ok(out)
        });
        Box::pin(async move { out })
    }

    fn commit(&self, txn: Txn) -> StoreFuture<'_, Committed> {
        if let Err(e) = txn.validate(&self.opts.limits) {
            return Box::pin(async move { Err(e) });
        }
        let fut = self.submit(Op::Commit(txn));
        Box::pin(async move {
            match fut.await? {
                Done::Committed(c) => Ok(c),
                _ => Err(StoreError::Corrupt(
                    "writer answered a commit with something else".into(),
                )),
            }
        })
    }

    fn acquire_lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        let fut = self.submit(Op::Acquire {
            name: name.to_owned(),
            holder: holder.to_owned(),
            ttl,
        });
        Box::pin(async move { lease_of(fut.await?) })
    }

    fn renew_lease<'a>(&'a self, lease: &'a DurableLease, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        let fut = self.submit(Op::Renew {
            lease: lease.clone(),
            ttl,
        });
        Box::pin(async move { lease_of(fut.await?) })
    }

    fn release_lease<'a>(&'a self, lease: &'a DurableLease) -> StoreFuture<'a, ()> {
        let fut = self.submit(Op::Release { lease: lease.clone() });
        Box::pin(async move { fut.await.map(|_| ()) })
    }

    fn durability(&self) -> Durability {
        self.opts.durability
    }

    fn failed(&self) -> Option<StoreError> {
        self.failure.lock().clone()
    }

    fn limits(&self) -> &Limits {
        &self.opts.limits
    }
}

fn lease_of(done: Done) -> Result<DurableLease, StoreError> {
    match done {
        Done::Lease(l) => Ok(l),
        _ => Err(StoreError::Corrupt(
            "writer answered a lease request with something else".into(),
        )),
    }
}
