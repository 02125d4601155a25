//! The fuzz targets' bodies, shared by the cargo-fuzz crate (`fuzz/`, nightly) and the stable
//! replay (`tests/fuzz_replay.rs`). Each takes untrusted bytes and must not panic, abort or hang;
//! damaged input gives a typed error, never wrong data. `store_body` also holds the store to its
//! acknowledgements: bits flipped in the body of a file whose every commit was acknowledged, opened
//! with the default options, are refused as `Corrupt` or every key reads back exact (or `Corrupt`),
//! never missing.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use crashonly::store::{RedbOptions, RedbStore, Store, StoreExt};

#[path = "../../runtime/tests/support/bitflip.rs"]
mod bitflip;
#[path = "../../examples/support/cart_service.rs"]
#[allow(dead_code, unused_imports)]
mod cart_service;
#[path = "../../runtime/tests/support/simdisk.rs"]
mod simdisk;

/// Store records (data, lease and idempotency records) as read back from a damaged file.
pub fn store_records(data: &[u8]) {
    for outcome in crashonly::__private::fuzzing::decode_records(data) {
        if let Err(e) = outcome {
            assert!(matches!(e, crashonly::store::StoreError::Corrupt(_)), "{e:?}");
        }
    }
}

/// A valid store file with a few keys, built once per process.
fn base_file() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        // Removed when the guard drops, once the bytes are read.
        let dir = tempfile::Builder::new()
            .prefix("crashonly-fuzz-base-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("base.redb");
        {
            let store = RedbStore::open(&path).expect("base store");
            for i in 0..32u32 {
                futures::executor::block_on(store.put(format!("k{i}").as_bytes(), vec![i as u8; 100])).unwrap();
            }
        }
        std::fs::read(&path).unwrap()
    })
}

/// Opening a damaged store file: `data` says how to damage a valid one (pairs of a position and
/// a byte to xor in; a leading 0xFF truncates at the position given by the next 4 bytes). With
/// `verify_on_open`, it must open and read back the right values, or be refused with a typed
/// error. (Without it, redb trusts unverified pages: a flipped bit in a value is caught by the
/// store's record checksum, but some damaged pages make redb abort the process.)
pub fn store_file(data: &[u8]) {
    let mut file = base_file().to_vec();
    let mut ops = data;
    if let [0xFF, a, b, c, d, rest @ ..] = ops {
        let at = u32::from_le_bytes([*a, *b, *c, *d]) as usize % (file.len() + 1);
        file.truncate(at);
        ops = rest;
    }
    for pair in ops.chunks(5) {
        if let [a, b, c, d, x] = pair {
            if !file.is_empty() {
                let at = u32::from_le_bytes([*a, *b, *c, *d]) as usize % file.len();
                file[at] ^= *x;
            }
        }
    }
    let dir = scratch_dir();
    let path = dir.join("damaged.redb");
    std::fs::write(&path, &file).unwrap();
    // A fresh commit record: the one the previous input left would refuse every later input as
    // rolled back (the file is always the base file again), and nothing more would be fuzzed.
    let _ = std::fs::remove_file(dir.join("damaged.redb.acked"));
    let opts = RedbOptions::default().with_verify_on_open(true);
    match RedbStore::open_with(&path, opts) {
        Ok(store) => {
            for i in 0..32u32 {
                // Absent or a typed error are fine; a value must be the right one.
                if let Ok(Some(v)) = futures::executor::block_on(store.get(format!("k{i}").as_bytes())) {
                    assert_eq!(v.value, vec![i as u8; 100], "wrong data for k{i}");
                }
            }
        }
        Err(e) => assert!(
            matches!(
                e,
                crashonly::store::StoreError::Corrupt(_)
                    | crashonly::store::StoreError::Unsupported(_)
                    | crashonly::store::StoreError::Unavailable { .. }
            ),
            "{e:?}"
        ),
    }
    let _ = std::fs::remove_file(&path);
}

/// Commits in the base of [`store_body`]: enough for a B-tree of several leaves under a branch.
const BODY_COMMITS: u32 = 48;

/// The base of [`store_body`]: a store and its commit record (on a test disk) holding
/// `BODY_COMMITS` acknowledged commits, each writing `k/i` and `m/i`; built once per process.
fn acked_store() -> &'static (Vec<Vec<u8>>, Vec<bitflip::Expected>) {
    static BASE: OnceLock<(Vec<Vec<u8>>, Vec<bitflip::Expected>)> = OnceLock::new();
    BASE.get_or_init(|| {
        let disk = simdisk::SimDisk::default();
        let store = RedbStore::open_backend_with_record("base", disk.clone(), disk.file(1), RedbOptions::default())
            .expect("base store");
        disk.created();
        let commits: Vec<bitflip::Expected> = (0..BODY_COMMITS)
            .map(|i| {
                let value = format!("value {i} of the base ")
                    .repeat(1 + i as usize % 4)
                    .into_bytes();
                let writes = vec![
                    (format!("k/{i:03}").into_bytes(), value.clone()),
                    (format!("m/{i:03}").into_bytes(), value),
                ];
                let txn = writes
                    .iter()
                    .fold(crashonly::store::Txn::new(), |t, (k, v)| t.put(k, v.clone()));
                futures::executor::block_on(store.commit(txn)).expect("commit to a healthy disk");
                bitflip::Expected { writes, acked: true }
            })
            .collect();
        drop(store);
        let (images, _) = simdisk::image_at(&disk.log(), disk.log().len(), simdisk::Loss::Unsynced);
        (images, commits)
    })
}

/// Bit flips in the body of a store file (past redb's header page) whose every commit was
/// acknowledged: `data` is up to 8 flips of 5 bytes each (a little-endian offset into the body,
/// taken modulo its length, and a bit number). Opened with the default options, it must be
/// refused as `Corrupt`, or open and read back every key exact or `Corrupt` (`bitflip::judge`):
/// an acknowledged key never goes missing.
pub fn store_body(data: &[u8]) {
    let (base, commits) = acked_store();
    let mut images = base.clone();
    for flip in data.chunks_exact(5).take(8) {
        let offset = u32::from_le_bytes([flip[0], flip[1], flip[2], flip[3]]);
        bitflip::flip_in_body(&mut images[0], offset.into(), flip[4]);
    }
    let disk = simdisk::SimDisk::with_images(images);
    let opened = RedbStore::open_backend_with_record("damaged", disk.clone(), disk.file(1), RedbOptions::default());
    if let Err(why) = bitflip::judge(opened, commits) {
        panic!("body flips {data:02x?}: {why}");
    }
}

/// This thread's scratch directory, made once and reused by every input; removed when the
/// thread ends.
fn scratch_dir() -> PathBuf {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::Builder::new()
            .prefix("crashonly-fuzz-")
            .tempdir()
            .expect("a scratch directory");
    }
    DIR.with(|d| d.path().to_path_buf())
}

/// The cart service's add-item body.
pub fn cart_body(data: &[u8]) {
    if let Ok(item) = cart_service::parse_item(data) {
        assert!(!item.is_empty());
    }
}

/// A cart as stored, read back from a damaged store.
pub fn cart_record(data: &[u8]) {
    let _ = cart_service::decode_cart(data);
}

/// A target: a name and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: [Target; 6] = [
    ("store_records", store_records),
    ("store_file", store_file),
    ("store_body", store_body),
    ("cart_body", cart_body),
    ("cart_record", cart_record),
    ("cluster_envelope", cluster_envelope),
];

/// A frame from another node: decoded as a request and as a reply, each a value or a
/// `Rejected`; a request that decodes encodes back to the same frame.
pub fn cluster_envelope(data: &[u8]) {
    use crashonly_cluster::wire::{self, Reply, Request};
    if let Ok(req) = wire::decode::<Request>(data) {
        let again = wire::encode(&req);
        assert_eq!(wire::decode::<Request>(&again).as_ref(), Ok(&req));
    }
    let _ = wire::decode::<Reply>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = wire::parse_traceparent(s);
    }
}
