//! Opening a redb store file: who owns it, creating it, verifying it, and what redb's errors mean.
//!
//! Invariants:
//! - One process owns a store: it holds an exclusive lock on `<path>.lock` (which holds its
//!   process id, for the error another process gets) from before it looks at the files until the
//!   store is dropped or the process dies (the kernel lets go of the lock). Creating a new store
//!   happens under that lock, so two processes starting in the same empty directory at the same
//!   moment cannot both create it: one serves, the other gets [`StoreError::AlreadyOpen`].
//! - A store file that is missing while its commit record says commits were made is refused as
//!   [`StoreError::Corrupt`]: starting an empty store in its place would serve every acknowledged
//!   key as absent.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{Database, ReadableDatabase};

use super::super::acked::{self, CommitRecord};
use super::super::engine::{self, Table};
use super::super::StoreError;
use super::DEFS;

/// What a storage error from redb means for the caller. A full disk, a quota or the file-size
/// limit is [`StoreError::NoSpace`]; damage is [`StoreError::Corrupt`]; the rest is temporary.
pub(super) fn storage_error(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(io) => io_error("redb", &io),
        redb::Error::Corrupted(m) => StoreError::Corrupt(format!("redb: {m}")),
        other => StoreError::unavailable(format!("redb: {other}")),
    }
}

/// An I/O error of `what`, typed as [`storage_error`] does.
pub(super) fn io_error(what: &str, io: &std::io::Error) -> StoreError {
    match io.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge => StoreError::NoSpace {
            retry_after: Duration::from_secs(1),
            reason: format!("{what}: {io}"),
        },
        // A read past the end of the file: a damaged length or page number (found by the
        // power-loss suite's body flips, inside redb's open).
        ErrorKind::InvalidData | ErrorKind::UnexpectedEof => StoreError::Corrupt(format!("{what}: {io}")),
        _ => StoreError::unavailable(format!("{what}: {io}")),
    }
}

/// `path` with `suffix` appended to its file name.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Takes ownership of the store at `path`: the exclusive lock on `<path>.lock`, with this
/// process's id written in it. Kept until the store is dropped.
pub(super) fn lock_owner(path: &Path) -> Result<File, StoreError> {
    let lock_path = beside(path, ".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io_error(&format!("cannot open {}", lock_path.display()), &e))?;
    // A lock can outlive its owner's `close` for a moment: a thread of the owner's process that
    // forks a child (to exec it) lends the child every open descriptor until the exec. So a busy
    // lock is tried again for a little while before it counts as another owner's.
    let mut busy_since = None;
    let attempt = loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => {
                let since = *busy_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= Duration::from_millis(250) {
                    break Err(std::fs::TryLockError::WouldBlock);
                }
                crate::rt::park_timeout(Duration::from_millis(5));
            }
            other => break other,
        }
    };
    match attempt {
        Ok(()) => {
            let pid = std::process::id().to_string();
            // Only for the error message of another process: nothing depends on it being synced.
            let written = file
                .set_len(0)
                .and_then(|()| file.seek(SeekFrom::Start(0)))
                .and_then(|_| file.write_all(pid.as_bytes()));
            written.map_err(|e| io_error(&format!("cannot write {}", lock_path.display()), &e))?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::AlreadyOpen {
            path: path.display().to_string(),
            pid: owner_pid(&mut file),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(io_error(&format!("cannot lock {}", lock_path.display()), &e)),
    }
}

/// The owner's process id from its lock file. The owner writes it right after taking the lock:
/// a process that lost a race by microseconds may find it empty, so it looks a few times.
fn owner_pid(file: &mut File) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut text));
        if let Some(pid) = read.ok().and_then(|_| text.trim().parse().ok()) {
            return Some(pid);
        }
        crate::rt::park_timeout(Duration::from_millis(5));
    }
    None
}

/// Makes sure a store file exists at `path`, creating an empty one when there is none and
/// nothing says there was one. Called by the owner (under its lock).
pub(super) fn create_if_new(path: &Path) -> Result<(), StoreError> {
    if path.exists() {
        return Ok(());
    }
    let record_path = acked::record_path(path);
    if record_path.exists() {
        if let Some(rec) = CommitRecord::open_file(&record_path)?.read()? {
            return Err(StoreError::Corrupt(format!(
                "{} is missing, but its commit record {} says commit {} was made: restore the file \
                 (or remove the record to start an empty store on purpose)",
                path.display(),
                record_path.display(),
                rec.acked
            )));
        }
        // A record that never held a commit: left from a creation that did not finish.
        let _ = std::fs::remove_file(&record_path);
    }
    create_atomically(path)
}

/// Creates an empty store file under a temporary name, syncs it and renames it into place, so
/// that a power cut during creation leaves either no store or a whole empty one, never a
/// half-written file that would not open. (Found by the power-loss suite: a cut before the first
/// header sync left a file that redb refuses with "magic number mismatch".)
fn create_atomically(path: &Path) -> Result<(), StoreError> {
    let io = |what: &str, e: std::io::Error| io_error(&format!("{what} {}", path.display()), &e);
    let tmp = beside(path, ".creating");
    // A leftover from a cut during an earlier creation: it never became the store.
    let _ = std::fs::remove_file(&tmp);
    drop(Database::create(&tmp).map_err(|e| open_error(&tmp, e))?);
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("cannot sync new store", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("cannot create store", e))?;
    sync_dir(path)
}

/// Syncs the directory holding `path`, so that a file just created there survives a power cut.
pub(super) fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(&format!("cannot sync the directory of {}", path.display()), &e))
}

/// Reads every page's checksum; a damaged file is [`StoreError::Corrupt`].
pub(super) fn verify(db: &mut Database, path: &Path) -> Result<(), StoreError> {
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
pub(super) fn committed(db: &Database) -> Result<u64, StoreError> {
    let rtx = db.begin_read().map_err(storage_error)?;
    let table = match rtx.open_table(DEFS[Table::Meta as usize]) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(storage_error(e)),
    };
    let raw = table.get(b"commits".as_slice()).map_err(storage_error)?;
    engine::meta_decode("commits", raw.as_ref().map(|v| v.value()))
}

/// Runs `f`, turning a panic inside redb into [`StoreError::Corrupt`].
pub(super) fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| Err(corrupt_panic(path, p)))
}

/// A panic inside redb while reading the file: the file is damaged.
pub(super) fn corrupt_panic(path: &Path, panic: Box<dyn std::any::Any + Send>) -> StoreError {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("panic");
    StoreError::Corrupt(format!("{}: damaged page ({what})", path.display()))
}

pub(super) fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen {
            path: path.display().to_string(),
            pid: None,
        },
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(m)) => {
            StoreError::Corrupt(format!("{}: {m}", path.display()))
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            io_error(&format!("cannot open {}", path.display()), &io)
        }
        redb::DatabaseError::UpgradeRequired(v) => StoreError::Unsupported(format!(
            "{}: not a store file of this version (redb format {v})",
            path.display()
        )),
        other => StoreError::unavailable(format!("cannot open {}: {other}", path.display())),
    }
}
