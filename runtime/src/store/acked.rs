//! The commit record: which commit of a redb store was last acknowledged, kept outside its file.
//!
//! Why: redb picks the commit it opens from one unchecksummed header byte (the "god byte"). With
//! two-phase commit (which quick repair needs) it trusts that byte, so one flipped bit opens the
//! previous commit, whole and valid, and the latest acknowledged one is silently gone. In the
//! file, that state is the same as a power cut between redb's two syncs, when the newer commit was
//! not yet acknowledged: only something outside the file can tell them apart. (Found by the
//! power-loss soak, `runtime/tests/store_powerloss.rs`.)
//!
//! Invariants:
//! - Every commit counts itself in the store (meta `commits`). A durable commit is acknowledged
//!   only after its number is written here and synced, so the record never runs ahead of an
//!   intact store file: a file behind its record was rolled back, and is refused as
//!   [`StoreError::Corrupt`]. A file ahead of its record had a crash between a commit and its
//!   record, or a damaged header byte chose a commit still being written (redb trusts it without
//!   reading its pages): such a file has every page's checksum read before it is used.
//! - Two slots 512 bytes apart, durable commit `n` in slot `n % 2`, each `[n][crc32c(n)]`: a write
//!   torn by a power cut damages only its own slot, and the other still holds the commit before.
//!   A third slot, never synced, holds the last commit made that may be lost
//!   (`Durability::LoseUpTo`): it matches the file after `kill -9` (which keeps the page cache),
//!   so a reopen need not verify the file.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use redb::StorageBackend;

use super::StoreError;
use crate::sync::Mutex;

const SLOT: u64 = 512;
const SEALED: usize = 12;

/// `n` and its checksum (CRC32C over `n`; not 0 for `n` = 0, so a slot of zeros is not a commit).
fn seal(n: u64) -> [u8; SEALED] {
    let mut out = [0u8; SEALED];
    out[..8].copy_from_slice(&n.to_le_bytes());
    out[8..].copy_from_slice(&crc32c::crc32c(&n.to_le_bytes()).to_le_bytes());
    out
}

fn unseal(bytes: &[u8]) -> Option<u64> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    (bytes.get(..SEALED)? == seal(n)).then_some(n)
}

/// The record over any storage layer (a file beside the store, or a test disk).
pub(crate) struct CommitRecord {
    backend: Box<dyn StorageBackend>,
    name: String,
}

impl fmt::Debug for CommitRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitRecord").field("name", &self.name).finish()
    }
}

impl CommitRecord {
    pub(crate) fn new(name: String, backend: Box<dyn StorageBackend>) -> Self {
        CommitRecord { backend, name }
    }

    /// Opens (or creates, empty) the record file at `path`.
    pub(crate) fn open_file(path: &Path) -> Result<Self, StoreError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::unavailable(format!("cannot open {}: {e}", path.display())))?;
        Ok(Self::new(
            path.display().to_string(),
            Box::new(RecordFile {
                file,
                at: Mutex::new(()),
            }),
        ))
    }

    /// What the record holds; `None` for a record never written (empty, or all zeros).
    pub(crate) fn read(&self) -> Result<Option<Recorded>, StoreError> {
        let io = |e: std::io::Error| StoreError::unavailable(format!("cannot read {}: {e}", self.name));
        let len = self.backend.len().map_err(io)?;
        let mut slots = [None; 3];
        let mut written = false;
        for (slot, found) in slots.iter_mut().enumerate() {
            let at = slot as u64 * SLOT;
            if len < at + SEALED as u64 {
                continue;
            }
            let mut bytes = [0u8; SEALED];
            self.backend.read(at, &mut bytes).map_err(io)?;
            written |= slot < 2 && bytes != [0u8; SEALED];
            *found = unseal(&bytes);
        }
        match slots[0].max(slots[1]) {
            None if written => Err(StoreError::Corrupt(format!(
                "{}: neither slot of the commit record is intact",
                self.name
            ))),
            None => Ok(None),
            Some(acked) => Ok(Some(Recorded {
                acked,
                written: slots[2].map_or(acked, |w| w.max(acked)),
            })),
        }
    }

    /// Records durable commit `n` in slot `n % 2` and syncs it: only then may `n` be acknowledged.
    pub(crate) fn acked(&self, n: u64) -> Result<(), StoreError> {
        self.backend
            .write((n % 2) * SLOT, &seal(n))
            .map_err(|e| self.io_error(e))?;
        self.backend.sync_data().map_err(|e| self.io_error(e))
    }

    /// Records that commit `n` was made, in slot 2, unsynced: for a commit that may be lost
    /// (`Durability::LoseUpTo`), right after it, so that after `kill -9` (which keeps the page
    /// cache) the record matches the file. It claims nothing a power cut cannot take.
    pub(crate) fn made(&self, n: u64) -> Result<(), StoreError> {
        self.backend.write(2 * SLOT, &seal(n)).map_err(|e| self.io_error(e))
    }

    /// Records commit `n` as both made and acknowledged, synced (at open, before any other).
    /// A shorter record is first given the room of its three slots (zeros: never written), for
    /// storage layers that write only within their length, as redb's own do.
    pub(crate) fn reset(&self, n: u64) -> Result<(), StoreError> {
        let room = 2 * SLOT + SEALED as u64;
        if self.backend.len().map_err(|e| self.io_error(e))? < room {
            self.backend.set_len(room).map_err(|e| self.io_error(e))?;
        }
        self.made(n)?;
        self.acked(n)
    }

    fn io_error(&self, e: std::io::Error) -> StoreError {
        StoreError::unavailable(format!("cannot write {}: {e}", self.name))
    }
}

/// What a commit record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// The last durable commit, acknowledged or about to be: an intact store holds at least this.
    pub(crate) acked: u64,
    /// The last commit made, durable or not (at least `acked`): a store holding more than this had
    /// a crash between a commit and its record, or opened a commit still being written.
    pub(crate) written: u64,
}

/// The record's path beside the store file at `path`: `<path>.acked`.
pub(crate) fn record_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".acked");
    PathBuf::from(p)
}

/// A plain file as a storage layer (one process owns it, as it owns the store file). The lock
/// covers a seek and its read or write; a sync needs none.
#[derive(Debug)]
struct RecordFile {
    file: File,
    at: Mutex<()>,
}

impl StorageBackend for RecordFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let _at = self.at.lock();
        (&self.file).seek(SeekFrom::Start(offset))?;
        (&self.file).read_exact(out)
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let _at = self.at.lock();
        (&self.file).seek(SeekFrom::Start(offset))?;
        (&self.file).write_all(data)
    }
}

#[cfg(all(test, not(crashonly_loom)))]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("crashonly-acked-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("r")
    }

    #[test]
    fn keeps_the_latest_commit_and_survives_a_torn_slot() {
        let path = temp("torn");
        let rec = CommitRecord::open_file(&path).unwrap();
        assert_eq!(rec.read().unwrap(), None, "a new record holds nothing");
        let at = |acked, written| Some(Recorded { acked, written });
        for n in 1..=5 {
            rec.acked(n).unwrap();
            assert_eq!(rec.read().unwrap(), at(n, n));
        }
        // A commit made is not an acknowledged one.
        rec.made(6).unwrap();
        assert_eq!(rec.read().unwrap(), at(5, 6));
        rec.acked(6).unwrap();
        rec.made(7).unwrap();
        rec.acked(7).unwrap();
        assert_eq!(rec.read().unwrap(), at(7, 7));
        // At open: a stale "made" ahead of the file is put back.
        rec.made(20).unwrap();
        rec.reset(8).unwrap();
        assert_eq!(rec.read().unwrap(), at(8, 8));
        // Commit 8's write torn (slot 0 damaged): the record still says 7 was acknowledged (and,
        // in slot 2, that 8 was made).
        rec.backend.write(0, &[0xAB; 4]).unwrap();
        assert_eq!(rec.read().unwrap(), at(7, 8));
        // Both slots damaged: refused, never read as "nothing recorded".
        rec.backend.write(SLOT, &[0xAB; 4]).unwrap();
        assert!(matches!(rec.read(), Err(StoreError::Corrupt(_))), "{:?}", rec.read());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_zeroed_slot_is_not_a_commit() {
        assert_eq!(unseal(&[0u8; SEALED]), None);
        assert_eq!(unseal(&seal(7)), Some(7));
        assert_eq!(unseal(&seal(7)[..8]), None);
    }
}
