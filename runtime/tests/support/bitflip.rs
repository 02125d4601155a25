//! Bit flips in the body of a store file (past redb's header page) and the judgement of what a
//! damaged store does with them, shared by the power-loss suite (`runtime/tests/store_powerloss.rs`) and
//! the `store_body` fuzz target (`tests/support/fuzz_targets.rs`).
//!
//! The judgement: a damaged image is refused at open with [`StoreError::Corrupt`], or it opens
//! and then every read of every key (`get`, and one `scan` of everything) gives the exact value
//! written, or `Corrupt`. Never a wrong value, never a key that no commit wrote, never an
//! acknowledged key missing, and a commit not acknowledged is there whole or not at all.

use std::collections::BTreeMap;

use crashonly::store::{RedbStore, Store, StoreError};
use futures::executor::block_on;

/// Where the body of a redb file starts: its super-header (the header and its two commit slots,
/// 320 bytes) is rounded up to a full page, whose size is the little-endian u32 at byte 12.
/// Falls back to redb's default page (4 KiB) when the field is not a plausible page size.
pub fn body_start(image: &[u8]) -> usize {
    let page = image
        .get(12..16)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
        .unwrap_or(0);
    if page.is_power_of_two() && (512..=1 << 20).contains(&page) {
        page
    } else {
        4096
    }
}

/// Flips bit `bit % 8` of byte `offset` of the body of `image` (the offset taken modulo the body's
/// length); returns the byte flipped, `None` when the image has no body.
pub fn flip_in_body(image: &mut [u8], offset: u64, bit: u8) -> Option<usize> {
    let start = body_start(image);
    let body = image.len().checked_sub(start).filter(|&n| n > 0)?;
    let at = start + (offset % body as u64) as usize;
    image[at] ^= 1 << (bit % 8);
    Some(at)
}

/// One commit of the workload: the keys it wrote, with their values, and whether it was
/// acknowledged to its caller.
#[derive(Clone, Debug)]
pub struct Expected {
    pub writes: Vec<(Vec<u8>, Vec<u8>)>,
    pub acked: bool,
}

/// What a damaged image did; a failure of the judgement is an `Err` saying what went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Refused at open with `Corrupt`.
    Refused,
    /// Opened; every read was exact or `Corrupt`, and `corrupt_reads` of them were `Corrupt`.
    Opened { corrupt_reads: usize },
}

/// Judges `opened` (a damaged image's open) against the commits it may hold.
pub fn judge(opened: Result<RedbStore, StoreError>, commits: &[Expected]) -> Result<Verdict, String> {
    let store = match opened {
        Ok(store) => store,
        Err(StoreError::Corrupt(_)) => return Ok(Verdict::Refused),
        Err(e) => return Err(format!("refused with an error other than Corrupt: {e:?}")),
    };
    let mut corrupt_reads = 0;
    let mut typed = |e: StoreError, what: &str| match e {
        StoreError::Corrupt(_) => {
            corrupt_reads += 1;
            Ok(())
        }
        other => Err(format!("{what}: an error other than Corrupt: {other:?}")),
    };
    // Every key by itself: `Some(true)` present and exact, `Some(false)` absent, `None` Corrupt.
    for (i, commit) in commits.iter().enumerate() {
        let mut seen = Vec::new();
        for (key, value) in &commit.writes {
            let k = String::from_utf8_lossy(key);
            match block_on(store.get(key)) {
                Ok(Some(v)) if v.value == *value => seen.push(true),
                Ok(Some(v)) => return Err(format!("get {k}: wrong value {:02x?}", v.value)),
                Ok(None) if commit.acked => return Err(format!("get {k}: acknowledged commit {i} lost")),
                Ok(None) => seen.push(false),
                Err(e) => typed(e, &format!("get {k}"))?,
            }
        }
        if seen.contains(&true) && seen.contains(&false) {
            return Err(format!("commit {i} is half applied"));
        }
    }
    // Everything at once, as a scan walks the tree.
    match block_on(store.scan(b"", usize::MAX)) {
        Err(e) => typed(e, "scan")?,
        Ok(found) => {
            let found: BTreeMap<Vec<u8>, Vec<u8>> = found.into_iter().map(|(k, v)| (k, v.value)).collect();
            for (key, value) in &found {
                let k = String::from_utf8_lossy(key);
                match commits.iter().flat_map(|c| &c.writes).find(|(wk, _)| wk == key) {
                    None => return Err(format!("scan: a key no commit wrote: {k}")),
                    Some((_, written)) if written != value => {
                        return Err(format!("scan {k}: wrong value {value:02x?}"))
                    }
                    Some(_) => {}
                }
            }
            for (i, commit) in commits.iter().enumerate() {
                let there = commit.writes.iter().filter(|(k, _)| found.contains_key(k)).count();
                if commit.acked && there < commit.writes.len() {
                    return Err(format!("scan: acknowledged commit {i} lost"));
                }
                if there > 0 && there < commit.writes.len() {
                    return Err(format!("scan: commit {i} is half applied"));
                }
            }
        }
    }
    Ok(Verdict::Opened { corrupt_reads })
}
