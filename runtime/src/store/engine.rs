//! The transaction logic every embedded backend shares, written once against [`Tables`].
//!
//! Record layouts (integers little-endian unless noted). Every value of `Data`, `Lease`, `Idem` and
//! `Meta` is sealed: `crc32c(key ‖ body)` (u32) ‖ body, so a damaged record, or a record whose key
//! was damaged (it would move to another key), reads as [`StoreError::Corrupt`], never as data.
//! - `Data`:   key -> version u64 | expires_ms u64 (0: never) | value
//! - `Expiry`: expires_ms u64 big-endian | kind u8 (0 data, 1 idempotency) | key -> empty
//! - `Lease`:  name -> token u64 | expires_ms u64 | epoch u64 | holder (UTF-8)
//! - `Idem`:   key -> expires_ms u64 | request length u32 | request | count u32 |
//!   (version u64, existed u8) * count
//! - `Meta`:   name -> u64 (`format`: [`FORMAT`], `seq`: last version, `token`: last lease token,
//!   `epoch`: opens, `commits`: commits made)
//!
//! A commit reads and checks everything before it writes anything, so a refused transaction leaves
//! no trace even when it shares a backend transaction with others (redb's group commit).

use std::time::Duration;

use super::error::{Conflict, StoreError};
use super::txn::{check_ttl, Committed, Txn, Write};
use super::{DurableLease, Limits, Versioned};

/// The tables of an embedded backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    Data = 0,
    Expiry = 1,
    Lease = 2,
    Idem = 3,
    Meta = 4,
}

/// Storage the engine runs on: a write transaction of a backend.
pub(crate) trait Tables {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    fn remove(&mut self, table: Table, key: &[u8]) -> Result<(), StoreError>;
    /// Keys of `Expiry` up to (excluding) `end`, at most `limit`.
    fn expiry_until(&self, end: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;
}

fn corrupt(what: &str, key: &[u8]) -> StoreError {
    StoreError::Corrupt(format!(
        "{what} record for {:?} is malformed",
        String::from_utf8_lossy(key)
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")))
}

/// The version of the record layouts above, kept in `Meta` as `format`. A store written in
/// another format is refused with [`StoreError::Unsupported`] instead of misread (1 was the
/// layout before sealed records).
pub(crate) const FORMAT: u64 = 2;

/// Bytes a seal adds before a record's body.
const SEAL: usize = 4;

/// A record buffer with room for its seal; fill the body, then [`seal`] it.
fn sealable(body_len: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(SEAL + body_len);
    b.extend_from_slice(&[0; SEAL]);
    b
}

/// Writes the checksum of `key ‖ body` in front of the body (CRC32C: hardware accelerated, and
/// stable across builds and platforms, as an on-disk checksum must be).
fn seal(key: &[u8], mut record: Vec<u8>) -> Vec<u8> {
    let sum = crc32c::crc32c_append(crc32c::crc32c(key), &record[SEAL..]);
    record[..SEAL].copy_from_slice(&sum.to_le_bytes());
    record
}

/// The body of a sealed record, or `Corrupt` when the record or its key was damaged.
fn unseal<'b>(what: &str, key: &[u8], b: &'b [u8]) -> Result<&'b [u8], StoreError> {
    let (Some(sum), Some(body)) = (b.get(..SEAL), b.get(SEAL..)) else {
        return Err(corrupt(what, key));
    };
    let want = crc32c::crc32c_append(crc32c::crc32c(key), body);
    if sum != want.to_le_bytes() {
        return Err(StoreError::Corrupt(format!(
            "{what} record for {:?} failed its checksum",
            String::from_utf8_lossy(key)
        )));
    }
    Ok(body)
}

/// Decodes a raw data record into a live value, or `None` when it has expired.
pub(crate) fn read_live(key: &[u8], raw: Option<&[u8]>, now_ms: u64) -> Result<Option<Versioned>, StoreError> {
    match raw {
        None => Ok(None),
        Some(b) => {
            let (head, value) = DataHead::split(key, b)?;
            Ok(head.live(now_ms).then(|| Versioned {
                value: value.to_vec(),
                version: head.version,
            }))
        }
    }
}

fn expiry_key(expires_ms: u64, kind: u8, key: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(9 + key.len());
    b.extend_from_slice(&expires_ms.to_be_bytes());
    b.push(kind);
    b.extend_from_slice(key);
    b
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// A meta value as stored (`None`: never written, 0).
pub(crate) fn meta_decode(name: &str, raw: Option<&[u8]>) -> Result<u64, StoreError> {
    match raw {
        None => Ok(0),
        Some(b) => {
            let body = unseal("meta", name.as_bytes(), b)?;
            u64_at(body, 0).ok_or_else(|| corrupt("meta", name.as_bytes()))
        }
    }
}

pub(crate) fn meta_get<T: Tables>(t: &T, name: &str) -> Result<u64, StoreError> {
    meta_decode(name, t.get(Table::Meta, name.as_bytes())?.as_deref())
}

pub(crate) fn meta_put<T: Tables>(t: &mut T, name: &str, v: u64) -> Result<(), StoreError> {
    let mut b = sealable(8);
    b.extend_from_slice(&v.to_le_bytes());
    t.put(Table::Meta, name.as_bytes(), &seal(name.as_bytes(), b))
}

/// Checks the store's format at open, and writes it into a new store (one that has made no
/// commit yet).
pub(crate) fn check_format<T: Tables>(t: &mut T) -> Result<(), StoreError> {
    if t.get(Table::Meta, b"format")?.is_none() {
        if t.get(Table::Meta, b"commits")?.is_some() {
            return Err(StoreError::Unsupported(format!(
                "the store was written in format 1; this build reads format {FORMAT}"
            )));
        }
        return meta_put(t, "format", FORMAT);
    }
    match meta_get(t, "format")? {
        FORMAT => Ok(()),
        other => Err(StoreError::Unsupported(format!(
            "the store was written in format {other}; this build reads format {FORMAT}"
        ))),
    }
}

/// A data record's version and expiry, checked against its seal; its value is borrowed, so that a
/// commit reads the records it replaces without copying their values.
struct DataHead {
    version: u64,
    expires_ms: u64,
}

impl DataHead {
    /// The head and the value of a data record. Layout: seal, version (8 bytes), expiry (8),
    /// value. The seal covers the key and the rest, so a damaged record is reported `Corrupt`
    /// instead of read as wrong data (redb verifies its pages' checksums only when asked; the
    /// fuzz replay found a flipped value bit read back silently before records were sealed).
    fn split<'b>(key: &[u8], b: &'b [u8]) -> Result<(DataHead, &'b [u8]), StoreError> {
        let b = unseal("data", key, b)?;
        let (Some(version), Some(expires_ms)) = (u64_at(b, 0), u64_at(b, 8)) else {
            return Err(corrupt("data", key));
        };
        if version == 0 {
            return Err(corrupt("data", key));
        }
        Ok((DataHead { version, expires_ms }, &b[16..]))
    }

    fn of<T: Tables>(t: &T, key: &[u8]) -> Result<Option<DataHead>, StoreError> {
        match t.get(Table::Data, key)? {
            None => Ok(None),
            Some(b) => Ok(Some(DataHead::split(key, &b)?.0)),
        }
    }

    fn live(&self, now_ms: u64) -> bool {
        self.expires_ms == 0 || self.expires_ms > now_ms
    }

    fn encode(key: &[u8], version: u64, expires_ms: u64, value: &[u8]) -> Vec<u8> {
        let mut b = sealable(16 + value.len());
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&expires_ms.to_le_bytes());
        b.extend_from_slice(value);
        seal(key, b)
    }
}

struct LeaseRecord {
    token: u64,
    expires_ms: u64,
    epoch: u64,
    holder: String,
}

impl LeaseRecord {
    fn decode(name: &[u8], b: &[u8]) -> Result<Self, StoreError> {
        let b = unseal("lease", name, b)?;
        let (Some(token), Some(expires_ms), Some(epoch)) = (u64_at(b, 0), u64_at(b, 8), u64_at(b, 16)) else {
            return Err(corrupt("lease", name));
        };
        let holder = String::from_utf8(b[24..].to_vec()).map_err(|_| corrupt("lease", name))?;
        Ok(LeaseRecord {
            token,
            expires_ms,
            epoch,
            holder,
        })
    }

    fn encode(&self, name: &[u8]) -> Vec<u8> {
        let mut b = sealable(24 + self.holder.len());
        b.extend_from_slice(&self.token.to_le_bytes());
        b.extend_from_slice(&self.expires_ms.to_le_bytes());
        b.extend_from_slice(&self.epoch.to_le_bytes());
        b.extend_from_slice(self.holder.as_bytes());
        seal(name, b)
    }

    /// Current: granted in this epoch (every lease from before a restart of an embedded store is
    /// void at once) and not expired.
    fn current(&self, now_ms: u64, epoch: u64) -> bool {
        self.epoch == epoch && self.expires_ms > now_ms
    }
}

fn current_lease<T: Tables>(t: &T, name: &str, now_ms: u64, epoch: u64) -> Result<Option<LeaseRecord>, StoreError> {
    match t.get(Table::Lease, name.as_bytes())? {
        None => Ok(None),
        Some(b) => {
            let rec = LeaseRecord::decode(name.as_bytes(), &b)?;
            Ok(rec.current(now_ms, epoch).then_some(rec))
        }
    }
}

/// Applies `txn` (already validated) at `now_ms`.
pub(crate) fn apply<T: Tables>(
    t: &mut T,
    txn: &Txn,
    now_ms: u64,
    epoch: u64,
    limits: &Limits,
) -> Result<Committed, StoreError> {
    if let Some(once) = &txn.once
        && let Some(b) = t.get(Table::Idem, &once.key)?
    {
        let rec = IdemRecord::decode(&once.key, &b)?;
        if rec.expires_ms > now_ms {
            return rec.replay(&once.key, &once.request);
        }
    }
    if let Some((name, token)) = &txn.fence {
        match current_lease(t, name, now_ms, epoch)? {
            Some(rec) if rec.token == *token => {}
            _ => {
                return Err(StoreError::Conflict(Conflict::Fenced {
                    lease: name.clone(),
                    token: *token,
                }))
            }
        }
    }
    for (key, expected) in &txn.checks {
        let actual = DataHead::of(t, key)?
            .filter(|h| h.live(now_ms))
            .map_or(0, |h| h.version);
        if actual != *expected {
            return Err(StoreError::Conflict(Conflict::Version {
                key: key.clone(),
                expected: *expected,
                actual,
            }));
        }
    }
    let version = meta_get(t, "seq")? + 1;
    let mut versions = Vec::with_capacity(txn.writes.len());
    let mut existed = Vec::with_capacity(txn.writes.len());
    for w in &txn.writes {
        let key = match w {
            Write::Put { key, .. } | Write::Delete { key } => key,
        };
        // Any earlier record's expiry entry goes, live or not.
        let old = DataHead::of(t, key)?;
        existed.push(old.as_ref().is_some_and(|r| r.live(now_ms)));
        if let Some(old) = &old
            && old.expires_ms != 0
        {
            t.remove(Table::Expiry, &expiry_key(old.expires_ms, 0, key))?;
        }
        match w {
            Write::Put { value, ttl, .. } => {
                let expires = ttl.map_or(0, |ttl| now_ms + ms(ttl));
                t.put(Table::Data, key, &DataHead::encode(key, version, expires, value))?;
                if expires != 0 {
                    t.put(Table::Expiry, &expiry_key(expires, 0, key), &[])?;
                }
                versions.push(version);
            }
            Write::Delete { .. } => {
                if old.is_some() {
                    t.remove(Table::Data, key)?;
                }
                versions.push(0);
            }
        }
    }
    meta_put(t, "seq", version)?;
    let committed = Committed {
        versions,
        existed,
        replayed: false,
    };
    if let Some(once) = &txn.once {
        let expires = now_ms + ms(limits.idempotency_ttl);
        let rec = IdemRecord::encode(&once.key, expires, &once.request, &committed);
        t.put(Table::Idem, &once.key, &rec)?;
        t.put(Table::Expiry, &expiry_key(expires, 1, &once.key), &[])?;
    }
    Ok(committed)
}

/// What an idempotency key remembers: until when, the request it was used for, and the outcome.
struct IdemRecord<'b> {
    expires_ms: u64,
    request: &'b [u8],
    outcome: &'b [u8],
}

impl<'b> IdemRecord<'b> {
    fn decode(key: &[u8], b: &'b [u8]) -> Result<Self, StoreError> {
        let b = unseal("idempotency", key, b)?;
        let bad = || corrupt("idempotency", key);
        let expires_ms = u64_at(b, 0).ok_or_else(bad)?;
        let len = b
            .get(8..12)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize)
            .ok_or_else(bad)?;
        let request = b.get(12..12 + len).ok_or_else(bad)?;
        Ok(IdemRecord {
            expires_ms,
            request,
            outcome: &b[12 + len..],
        })
    }

    fn encode(key: &[u8], expires_ms: u64, request: &[u8], c: &Committed) -> Vec<u8> {
        let mut b = sealable(16 + request.len() + 9 * c.versions.len());
        b.extend_from_slice(&expires_ms.to_le_bytes());
        b.extend_from_slice(&(request.len() as u32).to_le_bytes());
        b.extend_from_slice(request);
        b.extend_from_slice(&(c.versions.len() as u32).to_le_bytes());
        for (v, e) in c.versions.iter().zip(&c.existed) {
            b.extend_from_slice(&v.to_le_bytes());
            b.push(*e as u8);
        }
        seal(key, b)
    }

    /// The first outcome, for a retry of the same request; a key used for another request is
    /// refused (it would otherwise be acknowledged without being applied).
    fn replay(&self, key: &[u8], request: &[u8]) -> Result<Committed, StoreError> {
        if self.request != request {
            return Err(StoreError::Conflict(Conflict::KeyReused { key: key.to_vec() }));
        }
        let bad = || corrupt("idempotency", key);
        let b = self.outcome;
        let n = b
            .get(..4)
            .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize)
            .ok_or_else(bad)?;
        // The count comes from the file: check it against the record's length before allocating
        // (found by the fuzz replay: a damaged count asked for 27 GB and aborted the process).
        if b.len().saturating_sub(4) / 9 < n {
            return Err(bad());
        }
        let mut versions = Vec::with_capacity(n);
        let mut existed = Vec::with_capacity(n);
        for i in 0..n {
            let at = 4 + i * 9;
            versions.push(u64_at(b, at).ok_or_else(bad)?);
            existed.push(*b.get(at + 8).ok_or_else(bad)? != 0);
        }
        Ok(Committed {
            versions,
            existed,
            replayed: true,
        })
    }
}

fn check_lease_args(name: &str, ttl: Duration, limits: &Limits) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > limits.max_key {
        return Err(StoreError::BadInput(format!(
            "lease name must be 1 to {} bytes",
            limits.max_key
        )));
    }
    check_ttl("lease", ttl, limits.max_lease)
}

pub(crate) fn acquire<T: Tables>(
    t: &mut T,
    name: &str,
    holder: &str,
    ttl: Duration,
    now_ms: u64,
    epoch: u64,
    limits: &Limits,
) -> Result<DurableLease, StoreError> {
    check_lease_args(name, ttl, limits)?;
    if let Some(rec) = current_lease(t, name, now_ms, epoch)?
        && rec.holder != holder
    {
        return Err(StoreError::Conflict(Conflict::LeaseHeld {
            lease: name.to_owned(),
            holder: rec.holder,
            remaining: Duration::from_millis(rec.expires_ms - now_ms),
        }));
    }
    let token = meta_get(t, "token")? + 1;
    meta_put(t, "token", token)?;
    let rec = LeaseRecord {
        token,
        expires_ms: now_ms + ms(ttl),
        epoch,
        holder: holder.to_owned(),
    };
    t.put(Table::Lease, name.as_bytes(), &rec.encode(name.as_bytes()))?;
    Ok(DurableLease {
        name: name.to_owned(),
        holder: rec.holder,
        token,
        expires_at_ms: rec.expires_ms,
    })
}

pub(crate) fn renew<T: Tables>(
    t: &mut T,
    lease: &DurableLease,
    ttl: Duration,
    now_ms: u64,
    epoch: u64,
    limits: &Limits,
) -> Result<DurableLease, StoreError> {
    check_lease_args(&lease.name, ttl, limits)?;
    match current_lease(t, &lease.name, now_ms, epoch)? {
        Some(mut rec) if rec.token == lease.token => {
            rec.expires_ms = now_ms + ms(ttl);
            t.put(Table::Lease, lease.name.as_bytes(), &rec.encode(lease.name.as_bytes()))?;
            Ok(DurableLease {
                expires_at_ms: rec.expires_ms,
                ..lease.clone()
            })
        }
        _ => Err(StoreError::Conflict(Conflict::LeaseLost {
            lease: lease.name.clone(),
            token: lease.token,
        })),
    }
}

pub(crate) fn release<T: Tables>(t: &mut T, lease: &DurableLease, now_ms: u64, epoch: u64) -> Result<(), StoreError> {
    if let Some(rec) = current_lease(t, &lease.name, now_ms, epoch)?
        && rec.token == lease.token
    {
        t.remove(Table::Lease, lease.name.as_bytes())?;
    }
    Ok(())
}

/// Deletes up to `limit` expired data records and idempotency keys; returns how many index
/// entries it took. A record goes only when it still expires at its entry's time (a damaged entry
/// cannot delete a live key; an overwritten record's entry was removed with it).
pub(crate) fn reclaim<T: Tables>(t: &mut T, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
    let end = (now_ms + 1).to_be_bytes();
    let due = t.expiry_until(&end, limit)?;
    for ek in &due {
        let (Some(at), Some(&kind), Some(key)) = (ek.get(..8), ek.get(8), ek.get(9..)) else {
            return Err(StoreError::Corrupt("expiry index entry is malformed".into()));
        };
        let at = u64::from_be_bytes(at.try_into().expect("8 bytes"));
        let (table, expires) = match (kind, t.get(if kind == 0 { Table::Data } else { Table::Idem }, key)?) {
            (_, None) => (None, 0),
            (0, Some(b)) => (Some(Table::Data), DataHead::split(key, &b)?.0.expires_ms),
            (1, Some(b)) => (Some(Table::Idem), IdemRecord::decode(key, &b)?.expires_ms),
            _ => return Err(StoreError::Corrupt("expiry index entry has an unknown kind".into())),
        };
        if let Some(table) = table.filter(|_| expires == at) {
            t.remove(table, key)?;
        }
        t.remove(Table::Expiry, ek)?;
    }
    Ok(due.len())
}

/// Decodes `bytes` as each kind of stored record (data, lease, idempotency replay), the way a
/// read of a damaged file would: for the fuzz targets. Every outcome is a value or a typed error.
pub(crate) fn decode_any(bytes: &[u8]) -> Vec<Result<(), StoreError>> {
    vec![
        DataHead::split(b"fuzz", bytes).map(|(head, _)| {
            let _ = head.live(0);
        }),
        LeaseRecord::decode(b"fuzz", bytes).map(drop),
        IdemRecord::decode(b"fuzz", bytes).and_then(|r| r.replay(b"fuzz", r.request).map(drop)),
    ]
}
