//! `RedbStore`: the embedded default, on redb (pure Rust, copy-on-write B-trees).
//!
//! Invariants:
//! - One writer thread owns every write. It takes whatever requests are queued (up to
//!   `max_batch`), applies them in one redb transaction, commits once (one sync for all: group
//!   commit), and only then answers them. A refused transaction (conflict, bad input) writes nothing
//!   and does not disturb the others; any storage error fails the whole batch, answers every
//!   request with `Unavailable`, and stops the writer: the store is then unusable and its owner is
//!   expected to crash and reopen it (crash-only), rather than retry a failed sync.
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

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::acked::{self, CommitRecord, Recorded};
use super::engine::{self, Table, Tables};
use super::{
    Committed, Durability, DurableLease, Limits, Store, StoreError, StoreFuture, TimeSource, Txn, Versioned, WallClock,
};
use crate::rt::ThreadHandle;
use crate::sync::{mpsc, Arc, Mutex};

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
    /// Verify every page's checksum when opening (off by default: it reads the whole file, while
    /// a plain reopen reads a few pages). redb trusts pages it does not verify, and on some
    /// damaged pages it panics twice and aborts the process; with this on, a damaged file is
    /// refused with [`StoreError::Corrupt`] before anything reads or writes it.
    pub verify_on_open: bool,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            durability: Durability::Durable,
            limits: Limits::default(),
            time: Arc::new(WallClock),
            max_batch: 1024,
            verify_on_open: false,
        }
    }
}

with_setters!(RedbOptions {
    /// Sets when acknowledged writes are durable.
    with_durability => durability: Durability,
    /// Sets what the store accepts.
    with_limits => limits: Limits,
    /// Sets the wall-clock time source for TTLs and leases.
    with_time => time: Arc<dyn TimeSource>,
    /// Sets the most requests folded into one commit.
    with_max_batch => max_batch: usize,
    /// Verifies every page's checksum when opening (see [`RedbOptions::verify_on_open`]).
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
    /// `None` only while the store is dropped.
    db: Option<Arc<Database>>,
    path: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<ThreadHandle>>,
    epoch: u64,
    opts: RedbOptions,
    opened_in: Duration,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn storage_error(e: impl fmt::Display) -> StoreError {
    StoreError::unavailable(format!("redb: {e}"))
}

/// Creates an empty store file under a temporary name, syncs it and renames it into place, so
/// that a power cut during creation leaves either no store or a whole empty one, never a
/// half-written file that would not open. (Found by the power-loss suite: a cut before the first
/// header sync left a file that redb refuses with "magic number mismatch".)
fn create_atomically(path: &Path) -> Result<(), StoreError> {
    let io = |what: &str, e: std::io::Error| StoreError::unavailable(format!("{what} {}: {e}", path.display()));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".creating");
    let tmp = PathBuf::from(tmp);
    // A leftover from a cut during an earlier creation: it never became the store.
    let _ = std::fs::remove_file(&tmp);
    drop(Database::create(&tmp).map_err(|e| open_error(&tmp, e))?);
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("cannot sync new store", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot create store", e))?;
    sync_dir(path)
}

/// Syncs the directory holding `path`, so that a file just created there survives a power cut.
fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::unavailable(format!("cannot sync the directory of {}: {e}", path.display())))
}

/// Reads every page's checksum; a damaged file is [`StoreError::Corrupt`].
fn verify(db: &mut Database, path: &Path) -> Result<(), StoreError> {
    let intact = guarded(path, || db.check_integrity().map_err(|e| open_error(path, e)))?;
    if intact {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "{}: a page failed its checksum",
            path.display()
        )))
    }
}

/// The number of the last commit in the file (0 for a new one).
fn committed(db: &Database) -> Result<u64, StoreError> {
    let rtx = db.begin_read().map_err(storage_error)?;
    let table = match rtx.open_table(DEFS[Table::Meta as usize]) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(storage_error(e)),
    };
    match table.get(b"commits".as_slice()).map_err(storage_error)? {
        None => Ok(0),
        Some(v) => v
            .value()
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| StoreError::Corrupt("the commit count is not 8 bytes".into())),
    }
}

/// Runs `f`, turning a panic inside redb into [`StoreError::Corrupt`].
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| Err(corrupt_panic(path, p)))
}

/// A panic inside redb while reading the file: the file is damaged.
fn corrupt_panic(path: &Path, panic: Box<dyn std::any::Any + Send>) -> StoreError {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("panic");
    StoreError::Corrupt(format!("{}: damaged page ({what})", path.display()))
}

fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable {
            retry_after: Duration::from_secs(1),
            reason: format!(
                "{} is already open in another process (one process owns a store file)",
                path.display()
            ),
        },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(m)) => {
            StoreError::Corrupt(format!("{}: {m}", path.display()))
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt(format!("{}: {io}", path.display()))
        }
        redb::DatabaseError::UpgradeRequired(v) => StoreError::Corrupt(format!(
            "{}: not a store file of this version (format {v})",
            path.display()
        )),
        other => StoreError::unavailable(format!("cannot open {}: {other}", path.display())),
    }
}

/// A redb write transaction's tables, for the engine.
struct RedbTables<'t> {
    t: Vec<redb::Table<'t, &'static [u8], &'static [u8]>>,
}

impl Tables for RedbTables<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let got = self.t[table as usize].get(key).map_err(storage_error)?;
        Ok(got.map(|v| v.value().to_vec()))
    }
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.t[table as usize].insert(key, value).map_err(storage_error)?;
        Ok(())
    }
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<(), StoreError> {
        self.t[table as usize].remove(key).map_err(storage_error)?;
        Ok(())
    }
    fn expiry_until(&self, end: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let range = self.t[Table::Expiry as usize]
            .range::<&[u8]>(..end)
            .map_err(storage_error)?;
        let mut out = Vec::new();
        for item in range.take(limit) {
            let (k, _) = item.map_err(storage_error)?;
            out.push(k.value().to_vec());
        }
        Ok(out)
    }
}

fn open_tables(wtx: &redb::WriteTransaction) -> Result<RedbTables<'_>, StoreError> {
    let mut t = Vec::with_capacity(DEFS.len());
    for d in DEFS {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wtx.open_table(d))) {
            Ok(Ok(table)) => t.push(table),
            Ok(Err(e)) => return Err(storage_error(e)),
            Err(panic) => {
                // redb panicked on a damaged page. Dropping the tables already open would make
                // redb panic again (in `close_table`), and a panic while unwinding aborts the
                // process (found by the fuzz replay): leak them; the store is unusable anyway.
                std::mem::forget(t);
                return Err(corrupt_panic(Path::new("store"), panic));
            }
        }
    }
    Ok(RedbTables { t })
}

impl RedbStore {
    /// Opens (or creates) the store at `path`, durable by default.
    ///
    /// Beside the file the store keeps its commit record, `<path>.acked` (under 2 KiB): the number
    /// of the last acknowledged commit. Copy, move and delete the two together. A file older than
    /// its record (rolled back by a damaged header, or an older copy put in its place) is refused
    /// with [`StoreError::Corrupt`]; to restore an older copy on purpose, remove the record with
    /// it. A missing record is created, and accepts the file as it is; creating a new store
    /// removes a record left from a deleted one.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        Self::open_with(path, RedbOptions::default())
    }

    /// Opens (or creates) the store at `path` with options.
    ///
    /// Errors: [`StoreError::Unavailable`] when another process has the file open,
    /// [`StoreError::Corrupt`] when the file is not a readable store.
    pub fn open_with(path: impl AsRef<Path>, opts: RedbOptions) -> Result<RedbStore, StoreError> {
        let started = StdInstant::now();
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            // A new store has nothing acknowledged: a record left beside a deleted file is stale.
            let _ = std::fs::remove_file(acked::record_path(&path));
            create_atomically(&path)?;
        }
        let db = guarded(&path, || Database::create(&path).map_err(|e| open_error(&path, e)))?;
        // Opened only now that this process owns the store file.
        let record_path = acked::record_path(&path);
        let new_record = !record_path.exists();
        let record = CommitRecord::open_file(&record_path)?;
        if new_record {
            sync_dir(&record_path)?;
        }
        Self::start(db, path, opts, started, Some(record))
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
        let writer = {
            let (db, opts) = (db.clone(), opts.clone());
            let log = CommitLog { record, commits };
            crate::rt::os_thread("crashonly-redb-writer".into(), move || {
                writer_loop(&db, &rx, epoch, &opts, log)
            })
            .map_err(|e| StoreError::unavailable(format!("cannot start the writer thread: {e}")))?
        };
        Ok(RedbStore {
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
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How long `open` took (the recovery time after a crash).
    pub fn opened_in(&self) -> Duration {
        self.opened_in
    }

    fn submit(&self, op: Op) -> StoreFuture<'_, Done> {
        let (reply, rx) = oneshot::channel();
        let sent = match &*self.tx.lock() {
            Some(tx) => tx.send(Request { op, reply }).is_ok(),
            None => false,
        };
        Box::pin(async move {
            if !sent {
                return Err(StoreError::unavailable(
                    "the store's writer has stopped; reopen the store",
                ));
            }
            rx.await.unwrap_or_else(|_| {
                Err(StoreError::unavailable(
                    "the store's writer has stopped; reopen the store",
                ))
            })
        })
    }

    fn read<R>(
        &self,
        f: impl FnOnce(&redb::ReadOnlyTable<&'static [u8], &'static [u8]>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        // redb can panic on a damaged page instead of returning an error (the power-loss suite
        // found one, on a header with a flipped bit): that is corruption, reported as such.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = self.db.as_ref().expect("open until dropped");
            let rtx = db.begin_read().map_err(storage_error)?;
            let table = rtx.open_table(DEFS[Table::Data as usize]).map_err(storage_error)?;
            f(&table)
        }))
        .unwrap_or_else(|panic| Err(corrupt_panic(&self.path, panic)))
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

/// The writer's count of commits, and the record that a durable one must reach before it is
/// acknowledged.
struct CommitLog {
    record: Option<CommitRecord>,
    /// The number of the last commit made.
    commits: u64,
}

fn writer_loop(db: &Database, rx: &mpsc::Receiver<Request>, epoch: u64, opts: &RedbOptions, mut log: CommitLog) {
    let mut unsynced = false;
    let mut last_sync = StdInstant::now();
    loop {
        let first = match opts.durability {
            Durability::LoseUpTo(window) if unsynced => match rx.recv_timeout(window) {
                Ok(r) => Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return sync_and_stop(db, unsynced, &log),
            },
            _ => match rx.recv() {
                Ok(r) => Some(r),
                Err(_) => return sync_and_stop(db, unsynced, &log),
            },
        };
        let mut batch: Vec<Request> = first.into_iter().collect();
        while batch.len() < opts.max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let durable = match opts.durability {
            Durability::Durable => true,
            Durability::LoseUpTo(window) => batch.is_empty() || last_sync.elapsed() >= window,
        };
        let number = log.commits + 1;
        let committed = commit_batch(db, &batch, epoch, opts, durable, number).and_then(|results| match &log.record {
            Some(record) if durable => record.acked(number).map(|()| results),
            Some(record) => record.made(number).map(|()| results),
            None => Ok(results),
        });
        match committed {
            Ok(results) => {
                log.commits = number;
                if durable {
                    unsynced = false;
                    last_sync = StdInstant::now();
                } else {
                    unsynced = true;
                }
                for (req, res) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(res);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed; the writer stops and the store must be reopened");
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
                // Nothing more is accepted: queued and later requests get `Unavailable`.
                return;
            }
        }
    }
}

/// The store was dropped with commits that may be lost: syncs them (not needed, but kind), and
/// records the commit made, so that the next open need not verify the file.
fn sync_and_stop(db: &Database, unsynced: bool, log: &CommitLog) {
    if unsynced {
        let number = log.commits + 1;
        if commit_batch(db, &[], 0, &RedbOptions::default(), true, number).is_ok() {
            if let Some(record) = &log.record {
                let _ = record.made(number);
            }
        }
    }
}

/// Applies a batch in one redb transaction and commits it. `Err` fails the whole batch.
fn commit_batch(
    db: &Database,
    batch: &[Request],
    epoch: u64,
    opts: &RedbOptions,
    durable: bool,
    number: u64,
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let now = opts.time.now_ms();
    let mut wtx = db.begin_write().map_err(storage_error)?;
    wtx.set_quick_repair(true);
    wtx.set_durability(if durable {
        redb::Durability::Immediate
    } else {
        redb::Durability::None
    })
    .map_err(storage_error)?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut t = open_tables(&wtx)?;
        for req in batch {
            let res = match &req.op {
                Op::Commit(txn) => engine::apply(&mut t, txn, now, epoch, &opts.limits).map(Done::Committed),
                Op::Acquire { name, holder, ttl } => {
                    engine::acquire(&mut t, name, holder, *ttl, now, epoch, &opts.limits).map(Done::Lease)
                }
                Op::Renew { lease, ttl } => {
                    engine::renew(&mut t, lease, *ttl, now, epoch, &opts.limits).map(Done::Lease)
                }
                Op::Release { lease } => engine::release(&mut t, lease, now, epoch).map(|()| Done::Released),
            };
            match res {
                // Refusals are decided before any write: the batch goes on.
                Err(e @ (StoreError::Conflict(_) | StoreError::BadInput(_))) => results.push(Err(e)),
                Err(fatal) => return Err(fatal),
                Ok(done) => results.push(Ok(done)),
            }
        }
        engine::reclaim(&mut t, now, 256)?;
        engine::meta_put(&mut t, "commits", number)?;
    }
    wtx.commit().map_err(storage_error)?;
    Ok(results)
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
