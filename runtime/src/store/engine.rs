//! The transaction logic every embedded backend shares, written once against [`Tables`].
//!
//! Record layouts (integers little-endian unless noted):
//! - `Data`:   key -> version u64 | expires_ms u64 (0: never) | value
//! - `Expiry`: expires_ms u64 big-endian | kind u8 (0 data, 1 idempotency) | key -> empty
//! - `Lease`:  name -> token u64 | expires_ms u64 | epoch u64 | holder (UTF-8)
//! - `Idem`:   key -> expires_ms u64 | count u32 | (version u64, existed u8) * count
//! - `Meta`:   name -> u64 (`seq`: last version, `token`: last lease token, `epoch`: opens)
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

/// FNV-1a (64-bit) over a data record's fields: stable across builds and platforms, as an
/// on-disk checksum must be.
fn checksum(version: u64, expires_ms: u64, value: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = version
        .to_le_bytes()
        .into_iter()
        .chain(expires_ms.to_le_bytes())
        .chain(value.iter().copied());
    for byte in bytes {
        h ^= byte as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A decoded data record.
pub(crate) struct DataRecord {
    pub(crate) version: u64,
    pub(crate) expires_ms: u64,
    pub(crate) value: Vec<u8>,
}

impl DataRecord {
    /// Layout: version (8 bytes), expiry (8), checksum (8), value. The checksum covers the rest,
    /// so a damaged record is reported `Corrupt` instead of read as wrong data (the file's own
    /// page checksums are only verified on repair; the fuzz replay found a flipped value bit
    /// read back silently before this).
    pub(crate) fn decode(key: &[u8], b: &[u8]) -> Result<Self, StoreError> {
        let (Some(version), Some(expires_ms), Some(sum)) = (u64_at(b, 0), u64_at(b, 8), u64_at(b, 16)) else {
            return Err(corrupt("data", key));
        };
        let value = &b[24..];
        if version == 0 || sum != checksum(version, expires_ms, value) {
            return Err(corrupt("data", key));
        }
        Ok(DataRecord {
            version,
            expires_ms,
            value: value.to_vec(),
        })
    }

    fn encode(version: u64, expires_ms: u64, value: &[u8]) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + value.len());
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&expires_ms.to_le_bytes());
        b.extend_from_slice(&checksum(version, expires_ms, value).to_le_bytes());
        b.extend_from_slice(value);
        b
    }

    pub(crate) fn live(&self, now_ms: u64) -> bool {
        self.expires_ms == 0 || self.expires_ms > now_ms
    }

    pub(crate) fn into_versioned(self) -> Versioned {
        Versioned {
            value: self.value,
            version: self.version,
        }
    }
}

/// Decodes a raw data record into a live value, or `None` when it has expired.
pub(crate) fn read_live(key: &[u8], raw: Option<&[u8]>, now_ms: u64) -> Result<Option<Versioned>, StoreError> {
    match raw {
        None => Ok(None),
        Some(b) => {
            let rec = DataRecord::decode(key, b)?;
            Ok(rec.live(now_ms).then(|| rec.into_versioned()))
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

pub(crate) fn meta_get<T: Tables>(t: &T, name: &str) -> Result<u64, StoreError> {
    match t.get(Table::Meta, name.as_bytes())? {
        None => Ok(0),
        Some(b) => u64_at(&b, 0).ok_or_else(|| corrupt("meta", name.as_bytes())),
    }
}

pub(crate) fn meta_put<T: Tables>(t: &mut T, name: &str, v: u64) -> Result<(), StoreError> {
    t.put(Table::Meta, name.as_bytes(), &v.to_le_bytes())
}

fn live_data<T: Tables>(t: &T, key: &[u8], now_ms: u64) -> Result<Option<DataRecord>, StoreError> {
    match t.get(Table::Data, key)? {
        None => Ok(None),
        Some(b) => {
            let rec = DataRecord::decode(key, &b)?;
            Ok(rec.live(now_ms).then_some(rec))
        }
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

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24 + self.holder.len());
        b.extend_from_slice(&self.token.to_le_bytes());
        b.extend_from_slice(&self.expires_ms.to_le_bytes());
        b.extend_from_slice(&self.epoch.to_le_bytes());
        b.extend_from_slice(self.holder.as_bytes());
        b
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
    if let Some(k) = &txn.once {
        if let Some(b) = t.get(Table::Idem, k)? {
            let expires = u64_at(&b, 0).ok_or_else(|| corrupt("idempotency", k))?;
            if expires > now_ms {
                return decode_replay(k, &b);
            }
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
        let actual = live_data(t, key, now_ms)?.map_or(0, |r| r.version);
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
        let old = match t.get(Table::Data, key)? {
            Some(b) => Some(DataRecord::decode(key, &b)?),
            None => None,
        };
        existed.push(old.as_ref().is_some_and(|r| r.live(now_ms)));
        if let Some(old) = &old {
            if old.expires_ms != 0 {
                t.remove(Table::Expiry, &expiry_key(old.expires_ms, 0, key))?;
            }
        }
        match w {
            Write::Put { value, ttl, .. } => {
                let expires = ttl.map_or(0, |ttl| now_ms + ms(ttl));
                t.put(Table::Data, key, &DataRecord::encode(version, expires, value))?;
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
    if let Some(k) = &txn.once {
        let expires = now_ms + ms(limits.idempotency_ttl);
        let mut b = Vec::with_capacity(12 + 9 * committed.versions.len());
        b.extend_from_slice(&expires.to_le_bytes());
        b.extend_from_slice(&(committed.versions.len() as u32).to_le_bytes());
        for (v, e) in committed.versions.iter().zip(&committed.existed) {
            b.extend_from_slice(&v.to_le_bytes());
            b.push(*e as u8);
        }
        t.put(Table::Idem, k, &b)?;
        t.put(Table::Expiry, &expiry_key(expires, 1, k), &[])?;
    }
    Ok(committed)
}

fn decode_replay(k: &[u8], b: &[u8]) -> Result<Committed, StoreError> {
    let n = b
        .get(8..12)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize);
    let n = n.ok_or_else(|| corrupt("idempotency", k))?;
    // The count comes from the file: check it against the record's length before allocating
    // (found by the fuzz replay: a damaged count asked for 27 GB and aborted the process).
    if b.len().saturating_sub(12) / 9 < n {
        return Err(corrupt("idempotency", k));
    }
    let mut versions = Vec::with_capacity(n);
    let mut existed = Vec::with_capacity(n);
    for i in 0..n {
        let at = 12 + i * 9;
        versions.push(u64_at(b, at).ok_or_else(|| corrupt("idempotency", k))?);
        existed.push(*b.get(at + 8).ok_or_else(|| corrupt("idempotency", k))? != 0);
    }
    Ok(Committed {
        versions,
        existed,
        replayed: true,
    })
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
    if let Some(rec) = current_lease(t, name, now_ms, epoch)? {
        if rec.holder != holder {
            return Err(StoreError::Conflict(Conflict::LeaseHeld {
                lease: name.to_owned(),
                holder: rec.holder,
                remaining: Duration::from_millis(rec.expires_ms - now_ms),
            }));
        }
    }
    let token = meta_get(t, "token")? + 1;
    meta_put(t, "token", token)?;
    let rec = LeaseRecord {
        token,
        expires_ms: now_ms + ms(ttl),
        epoch,
        holder: holder.to_owned(),
    };
    t.put(Table::Lease, name.as_bytes(), &rec.encode())?;
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
            t.put(Table::Lease, lease.name.as_bytes(), &rec.encode())?;
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
    if let Some(rec) = current_lease(t, &lease.name, now_ms, epoch)? {
        if rec.token == lease.token {
            t.remove(Table::Lease, lease.name.as_bytes())?;
        }
    }
    Ok(())
}

/// Deletes up to `limit` expired data records and idempotency keys; returns how many.
pub(crate) fn reclaim<T: Tables>(t: &mut T, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
    let end = (now_ms + 1).to_be_bytes();
    let due = t.expiry_until(&end, limit)?;
    for ek in &due {
        let (Some(&kind), Some(key)) = (ek.get(8), ek.get(9..)) else {
            return Err(StoreError::Corrupt("expiry index entry is malformed".into()));
        };
        let table = if kind == 0 { Table::Data } else { Table::Idem };
        t.remove(table, key)?;
        t.remove(Table::Expiry, ek)?;
    }
    Ok(due.len())
}

/// Decodes `bytes` as each kind of stored record (data, lease, idempotency replay), the way a
/// read of a damaged file would: for the fuzz targets. Every outcome is a value or a typed error.
pub(crate) fn decode_any(bytes: &[u8]) -> Vec<Result<(), StoreError>> {
    vec![
        DataRecord::decode(b"fuzz", bytes).map(|r| {
            let _ = r.live(0);
        }),
        LeaseRecord::decode(b"fuzz", bytes).map(drop),
        decode_replay(b"fuzz", bytes).map(drop),
    ]
}
