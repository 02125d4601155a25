//! The writer thread: it owns every write (group commit), and it stops at the first storage
//! failure, recording why, so that the store's owner crashes and reopens it (crash-only: a failed
//! sync is never retried in place).

use std::path::Path;
use std::time::Instant as StdInstant;

use redb::{Database, ReadableTable};

use super::super::acked::CommitRecord;
use super::super::engine::{self, Table, Tables};
use super::super::StoreError;
use super::open::{corrupt_panic, storage_error};
use super::{Done, Op, RedbOptions, Request, DEFS};
use crate::store::Durability;
use crate::sync::{mpsc, Arc, PlainMutex};

/// Why a store stopped: set once, by the writer or by a read that found damage; every later
/// request is answered with it.
pub(super) type Failure = Arc<PlainMutex<Option<StoreError>>>;

/// A redb write transaction's tables, for the engine.
pub(super) struct RedbTables<'t> {
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

pub(super) fn open_tables(wtx: &redb::WriteTransaction) -> Result<RedbTables<'_>, StoreError> {
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

/// The writer's count of commits, and the record that a durable one must reach before it is
/// acknowledged.
pub(super) struct CommitLog {
    pub(super) record: Option<CommitRecord>,
    /// The number of the last commit made.
    pub(super) commits: u64,
}

pub(super) fn writer_loop(
    db: &Database,
    rx: &mpsc::Receiver<Request>,
    epoch: u64,
    opts: &RedbOptions,
    mut log: CommitLog,
    failure: &Failure,
) {
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
                failure.lock().get_or_insert_with(|| e.clone());
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
                // Nothing more is accepted: queued and later requests get the same error.
                while let Ok(req) = rx.try_recv() {
                    let _ = req.reply.send(Err(e.clone()));
                }
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
        if commit_batch(db, &[], 0, &RedbOptions::default(), true, number).is_ok()
            && let Some(record) = &log.record
        {
            let _ = record.made(number);
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
