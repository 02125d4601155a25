//! Power-loss images and I/O faults of the embedded store (redb), on a test disk that records
//! what was written and what was synced (tests/support/simdisk.rs): the store file and its commit
//! record (`<path>.acked` beside a file store), cut by the same power cut.
//!
//! `kill -9` keeps the page cache; a power cut does not. Here the 200-commit workload is cut
//! before every I/O operation it did, and each cut is turned into disk images in several ways
//! (drop everything unsynced, keep a random subset of it, tear the last write at 512 B and 4 KiB,
//! damage a header bit). Every image must open, or be refused with a typed error (header damage
//! only), and hold every acknowledged commit, each all-or-nothing. The one header bit redb does not
//! checksum (the primary commit slot) is flipped at every cut on its own. Then every I/O operation
//! of the same workload is failed once, and from then on: no commit whose sync failed is
//! acknowledged, the store never syncs a file again after its sync failed (it stops, crash-only),
//! and what survives a power cut after the failure is exactly the acknowledged set (plus, when the
//! commit record failed, the one unacknowledged commit in flight, whose outcome is unknown).
//!
//! Bit rot, not only torn writes: at every other cut point (and 8 times as often for the final,
//! fully synced image), images with 1 to 3 random bits flipped anywhere in the body of the store
//! file (past redb's header page: a B-tree branch or leaf, a value, the allocator's state, free
//! space), and at every fourth, the same in the commit record. Each is judged by
//! tests/support/bitflip.rs: refused at open with `StoreError::Corrupt`, or opened with every
//! read of every key (`get` of each, one `scan` of all) exact or `Corrupt`; never an acknowledged
//! commit missing, a wrong value, a half-applied commit, a panic out of the store, an abort or a
//! hang. The counts of refused and intact images are printed, and every failing image with its
//! seed and flipped bits. (Before `verify_on_open` was on by default, redb trusted the pages it
//! did not verify: a flipped bit in a branch page made acknowledged keys vanish, silently.)
//!
//! `POWERLOSS_SEEDS=n` multiplies the random-subset, header and bit-flip images (the soak tier uses
//! 100). CI runs this in release (over 10,000 power-cut images and over 3,000 body-flip images);
//! an unoptimised `cargo test` samples 1 in 32 (about 120 body-flip images).

// The runtime's seams rule (runtime/clippy.toml) is for the library: this test drives the store
// from plain threads and keeps its test disk behind a std mutex.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

#[path = "support/bitflip.rs"]
mod bitflip;
#[path = "support/simdisk.rs"]
mod simdisk;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bitflip::{flip_in_body, judge, Expected, Verdict};
use crashonly::store::{RedbOptions, RedbStore, Store, StoreError, Txn};
use futures::executor::block_on;
use simdisk::{image_at, Event, Loss, SimDisk};

const COMMITS: u64 = 200;

fn key(side: &str, i: u64) -> Vec<u8> {
    format!("{side}/{i:04}").into_bytes()
}

/// The store on file 0 of `disk`, its commit record on file 1 (as `RedbStore::open` keeps
/// `<path>.acked` beside the file).
fn open(disk: &SimDisk, name: &str) -> Result<RedbStore, StoreError> {
    RedbStore::open_backend_with_record(name, disk.clone(), disk.file(1), RedbOptions::default())
}

/// Commits 0..COMMITS, each writing `a/i` and `b/i` in one transaction; marks each acknowledged
/// commit on the disk's log. Stops at the first failure (the store has stopped by then).
fn workload(disk: &SimDisk) -> Result<RedbStore, StoreError> {
    let store = open(disk, "simdisk")?;
    disk.created();
    for i in 0..COMMITS {
        let v = i.to_le_bytes().to_vec();
        let txn = Txn::new().put(&key("a", i), v.clone()).put(&key("b", i), v);
        match block_on(store.commit(txn)) {
            Ok(_) => disk.acked(i),
            Err(_) => break,
        }
    }
    Ok(store)
}

/// Which commits an image holds; panics on a half-applied one or a wrong value.
fn recovered(store: &RedbStore) -> BTreeSet<u64> {
    let mut have = BTreeSet::new();
    for i in 0..COMMITS {
        let a = block_on(store.get(&key("a", i))).expect("read a");
        let b = block_on(store.get(&key("b", i))).expect("read b");
        assert_eq!(a.is_some(), b.is_some(), "commit {i} is half applied");
        if let (Some(a), Some(b)) = (a, b) {
            assert_eq!(a.value, i.to_le_bytes(), "commit {i}: wrong value");
            assert_eq!(b.value, i.to_le_bytes(), "commit {i}: wrong value");
            have.insert(i);
        }
    }
    have
}

/// redb panics on some damaged pages; the store catches each panic and answers `Corrupt`. Keeps
/// those panics' messages out of the output (a panic in this test or in crashonly still prints;
/// `POWERLOSS_LOUD=1` prints them all). A second panic while one unwinds aborts the process, and
/// no test can report it: the image being judged is then written to stderr before the abort.
fn quiet_redb_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // redb's own code, or the standard library's slice indexing called from it.
            let in_redb = info
                .location()
                .is_some_and(|l| l.file().contains("/redb-") || l.file().starts_with("/rustc/"));
            if !in_redb || std::env::var_os("POWERLOSS_LOUD").is_some() {
                default(info);
            }
            if info.payload_as_str().is_some_and(|m| m.contains("during cleanup")) {
                // Straight to stderr: the test harness's capture is lost with the process.
                let image = JUDGING.with(|j| j.borrow().clone());
                let _ = writeln!(
                    std::io::stderr(),
                    "the process aborts (a panic while unwinding) judging {image}"
                );
            }
        }));
    });
}

thread_local! {
    /// The damaged image this thread judges, for the report of an abort.
    static JUDGING: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Every `POWERLOSS_STRIDE`-th cut point and I/O operation is used: 1 for the images and 2 for
/// the I/O faults in CI (release), 1 in the soak tier; unoptimised builds (the everyday `cargo
/// test`) sample every 32nd.
fn stride() -> usize {
    std::env::var("POWERLOSS_STRIDE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 32 } else { 2 })
        .max(1)
}

fn cut_stride() -> usize {
    if std::env::var_os("POWERLOSS_STRIDE").is_some() || cfg!(debug_assertions) {
        stride()
    } else {
        1
    }
}

fn seeds() -> u64 {
    std::env::var("POWERLOSS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// The log of the workload on a healthy disk.
fn workload_log() -> Vec<Event> {
    quiet_redb_panics();
    let disk = SimDisk::default();
    drop(workload(&disk).expect("workload on a healthy disk"));
    disk.log()
}

/// Opens an image: `Ok` when it holds every commit in `acked` (each whole; panics on a lost one),
/// or why it was refused.
fn open_image(image: Vec<Vec<u8>>, acked: &[u64], what: &str) -> Result<(), StoreError> {
    let store = open(&SimDisk::with_images(image), "image")?;
    let have = recovered(&store);
    for i in acked {
        assert!(have.contains(i), "{what}: acknowledged commit {i} lost");
    }
    Ok(())
}

#[test]
fn power_loss_images_keep_every_acknowledged_commit() {
    let log = workload_log();
    let acked_total = log.iter().filter(|e| matches!(e, Event::Acked(_))).count();
    assert_eq!(acked_total as u64, COMMITS);
    let cuts: Vec<usize> = (0..log.len())
        .filter(|&i| matches!(log[i], Event::Write { .. } | Event::SetLen { .. } | Event::Sync { .. }))
        .step_by(cut_stride())
        .chain([log.len()])
        .collect();
    let mut losses = vec![Loss::Unsynced, Loss::Torn(512), Loss::Torn(4096)];
    for s in 0..seeds() {
        losses.push(Loss::Subset(s));
        losses.push(Loss::Header(s));
    }
    let started = Instant::now();
    let (mut images, mut refused) = (0u64, 0u64);
    for &cut in &cuts {
        for &loss in &losses {
            // A seed per (cut, seed) pair.
            let mix = |s: u64| (cut as u64).wrapping_mul(0x1000_0000_01B3) ^ s;
            let seeded = match loss {
                Loss::Subset(s) => Loss::Subset(mix(s)),
                Loss::Header(s) => Loss::Header(mix(s)),
                other => other,
            };
            let (image, acked) = image_at(&log, cut, seeded);
            images += 1;
            match open_image(image, &acked, &format!("cut {cut} {seeded:?}")) {
                Ok(()) => {}
                Err(e) => {
                    assert!(
                        matches!(seeded, Loss::Header(_)),
                        "cut {cut} {seeded:?}: an image a power cut leaves was refused: {e}"
                    );
                    // A damaged version byte reads as another format: refused, typed, not misread.
                    assert!(
                        matches!(e, StoreError::Corrupt(_) | StoreError::Unsupported(_)),
                        "{e:?}"
                    );
                    refused += 1;
                }
            }
        }
    }
    println!(
        "power-loss images: {images} from {} cut points x {} ways, {refused} refused with a typed error \
         (header damage), 0 lost acknowledged commits, 0 half-applied; {:.1} s",
        cuts.len(),
        losses.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        images >= 10_000 || seeds() < 2 || cut_stride() > 1,
        "only {images} images"
    );
}

/// redb opens the commit that one unchecksummed header bit (bit 0 of byte 9, the primary slot)
/// selects; flipped, it selects the commit before, whole and valid. The commit record catches it:
/// at every cut, an image with that bit flipped opens with every acknowledged commit or is refused
/// as rolled back; never opened without one. (Without the record, the soak found such an image.)
#[test]
fn a_flipped_primary_slot_bit_is_refused_never_rolled_back() {
    let log = workload_log();
    let (mut images, mut rolled_back, mut other) = (0u64, 0u64, 0u64);
    for cut in (0..=log.len()).step_by(cut_stride()) {
        let (image, acked) = image_at(&log, cut, Loss::Flip { byte: 9, bit: 0 });
        if image.is_empty() {
            continue;
        }
        images += 1;
        match open_image(image, &acked, &format!("cut {cut}")) {
            Ok(()) => {}
            Err(StoreError::Corrupt(m)) if m.contains("rolled back") => rolled_back += 1,
            Err(e) => {
                assert!(matches!(e, StoreError::Corrupt(_)), "cut {cut}: {e:?}");
                other += 1;
            }
        }
    }
    println!(
        "primary-slot bit flipped: {images} images, {rolled_back} refused as rolled back, {other} refused \
         as damaged, the rest opened with every acknowledged commit"
    );
    assert!(
        rolled_back > 0,
        "no image was rolled back: the test no longer exercises the record"
    );
}

#[test]
fn failed_io_is_never_acknowledged_and_recovery_is_exact() {
    let clean = SimDisk::default();
    drop(workload(&clean).expect("workload on a healthy disk"));
    let total_ops = clean.ops();
    let started = Instant::now();
    let (mut runs, mut unknown) = (0, 0);
    for persistent in [false, true] {
        for k in (0..total_ops).step_by(stride()) {
            let disk = SimDisk::default();
            disk.fail_at(k, persistent);
            runs += 1;
            match workload(&disk) {
                Ok(store) => drop(store),
                Err(e) => assert!(
                    matches!(e, StoreError::Unavailable { .. } | StoreError::Corrupt(_)),
                    "{e:?}"
                ),
            }
            let log = disk.log();
            let failed = log
                .iter()
                .position(|e| matches!(e, Event::Failed { .. }))
                .unwrap_or_else(|| panic!("operation {k} was never reached"));
            // Crash-only: after a failed operation the store stops; nothing more is acknowledged
            // and a failed sync is never retried. (When the commit record's sync failed, redb may
            // still close the healthy store file with a sync of its own, on drop.)
            assert!(
                !log[failed..].iter().any(|e| matches!(e, Event::Acked(_))),
                "op {k} (persistent: {persistent}): a commit was acknowledged after a failed I/O"
            );
            if let Event::Failed { file, sync: true } = log[failed] {
                assert!(
                    !log[failed..]
                        .iter()
                        .any(|e| matches!(e, Event::Sync { file: f } if *f == file)),
                    "op {k}: the fsync of file {file} was retried after it failed"
                );
            }
            // What a power cut after the failure leaves holds exactly the acknowledged commits,
            // when the store file failed. When the commit record failed, the commit in flight was
            // already whole in the store file, and was not acknowledged: its outcome is unknown
            // to its caller (as after a power cut just before the reply), and it may be there.
            let (image, acked) = image_at(&log, log.len(), Loss::Unsynced);
            let store = open(&SimDisk::with_images(image), "after-failure")
                .unwrap_or_else(|e| panic!("op {k}: the image after a failed I/O does not open: {e}"));
            let mut have = recovered(&store);
            let acked: BTreeSet<u64> = acked.into_iter().collect();
            if let Event::Failed { file: 1, .. } = log[failed] {
                let in_flight = acked.len() as u64;
                if have.remove(&in_flight) {
                    unknown += 1;
                }
            }
            assert_eq!(
                have, acked,
                "op {k} (persistent: {persistent}): recovered != acknowledged"
            );
        }
    }
    println!(
        "I/O faults: {runs} runs (1 in {} of {total_ops} operations failed once, then persistently): \
         0 acknowledged after a failure, 0 retried fsyncs, recovery exact ({unknown} failed record writes \
         left their unacknowledged commit in the store); {:.1} s",
        stride(),
        started.elapsed().as_secs_f64()
    );
}

/// An image that gives no answer in this long hangs (a hang detector, not a speed claim: an image
/// takes milliseconds).
const HANG: Duration = Duration::from_secs(60);

/// Which file of an image the bit flips damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The body of the store file (past redb's header page).
    Body,
    /// The commit record (file 1).
    Record,
}

/// The workload's commits, each `a/i` and `b/i` holding `i`, those in `acked` acknowledged.
fn expected(acked: &[u64]) -> Vec<Expected> {
    let acked: BTreeSet<u64> = acked.iter().copied().collect();
    (0..COMMITS)
        .map(|i| Expected {
            writes: vec![
                (key("a", i), i.to_le_bytes().to_vec()),
                (key("b", i), i.to_le_bytes().to_vec()),
            ],
            acked: acked.contains(&i),
        })
        .collect()
}

/// The image a cut at `cut` leaves (everything written kept, or only what was synced: the seed
/// says), with 1 to 3 random bits of `target` flipped. `None` when the cut left no such file.
/// Returns the image, the acknowledged commits, and the flips (byte, bit) for the failure report.
fn flipped_image(log: &[Event], cut: usize, target: Target, seed: u64) -> Option<(Vec<Vec<u8>>, Vec<u64>, String)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let loss = if rng.bool() { Loss::Kept } else { Loss::Unsynced };
    let (mut image, acked) = image_at(log, cut, loss);
    let mut flips = Vec::new();
    for _ in 0..rng.usize(1..=3) {
        let (offset, bit) = (rng.u64(..), rng.u8(..8));
        match target {
            Target::Body => {
                let at = flip_in_body(image.first_mut()?, offset, bit)?;
                flips.push((at, bit));
            }
            Target::Record => {
                let record = image.get_mut(1).filter(|r| !r.is_empty())?;
                // Half in the sealed bytes of a slot (16 bytes at 0, 512, 1024), half anywhere.
                let at = if offset.is_multiple_of(2) {
                    ((offset >> 1) % 3 * 512 + (offset >> 8) % 16) as usize
                } else {
                    (offset >> 1) as usize
                } % record.len();
                record[at] ^= 1 << bit;
                flips.push((at, bit));
            }
        }
    }
    Some((image, acked, format!("{loss:?}, flipped (byte, bit) {flips:?}")))
}

/// Judges one damaged image on a thread of its own, so that a panic that escapes the store or an
/// open or read that never returns is a failure reported with its seed, like a wrong answer.
fn judged(image: Vec<Vec<u8>>, acked: &[u64], label: String) -> Result<Verdict, String> {
    let commits = expected(acked);
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        JUDGING.with(|j| *j.borrow_mut() = label);
        let _ = tx.send(judge(open(&SimDisk::with_images(image), "image"), &commits));
    });
    match rx.recv_timeout(HANG) {
        Ok(verdict) => {
            let _ = worker.join();
            verdict
        }
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("no answer in {HANG:?}: it hangs")),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let panic = worker.join().err().unwrap_or_else(|| Box::new("no panic"));
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {msg}"))
        }
    }
}

/// Images of the 200-commit workload's cuts (1 in `every` of the cut points the other tests use,
/// and the final, fully synced image 8 times as often), each with 1 to 3 random bits of `target`
/// flipped, `POWERLOSS_SEEDS` per cut; every one judged. Prints the counts; panics with the seeds
/// of every image that failed.
fn flip_images(target: Target, every: usize) -> u64 {
    let log = workload_log();
    let cuts: Vec<usize> = (0..log.len())
        .filter(|&i| matches!(log[i], Event::Write { .. } | Event::SetLen { .. } | Event::Sync { .. }))
        .step_by(cut_stride() * every)
        .collect();
    let started = Instant::now();
    let (mut images, mut refused, mut intact, mut corrupt_reads) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = Vec::new();
    let runs = cuts.iter().flat_map(|&cut| (0..seeds()).map(move |s| (cut, s)));
    let last = (0..8 * seeds()).map(|s| (log.len(), s));
    for (cut, s) in runs.chain(last) {
        let seed = (cut as u64).wrapping_mul(0x1000_0000_01B3) ^ s ^ ((target as u64 + 1) << 56);
        let Some((image, acked, flips)) = flipped_image(&log, cut, target, seed) else {
            continue;
        };
        images += 1;
        let label = format!("cut {cut} seed {seed:#x} ({flips})");
        match judged(image, &acked, label.clone()) {
            Ok(Verdict::Refused) => refused += 1,
            Ok(Verdict::Opened { corrupt_reads: 0 }) => intact += 1,
            Ok(Verdict::Opened { corrupt_reads: n }) => corrupt_reads += n as u64,
            Err(why) => failed.push(format!("{label}: {why}")),
        }
    }
    println!(
        "{target:?} bit flips: {images} images from {} cut points and the final image, {refused} refused as \
         Corrupt, {intact} opened with every read exact, {} opened with some reads Corrupt ({corrupt_reads} \
         reads), {} failed; {:.1} s",
        cuts.len(),
        images - refused - intact - failed.len() as u64,
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{target:?} bit flips: {} of {images} images failed the judgement, e.g.:\n{}",
        failed.len(),
        failed.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    images
}

/// A bit flipped in the body of the store file (a B-tree page, a value, the allocator's state, or
/// free space) is refused at open as `Corrupt`, or the image opens and every read is exact or
/// `Corrupt`: never a silent loss of an acknowledged commit, a wrong value, a panic or a hang.
#[test]
fn body_bit_flips_are_refused_or_read_back_exact() {
    let images = flip_images(Target::Body, 2);
    assert!(images >= 500 || seeds() < 2 || cut_stride() > 1, "only {images} images");
}

/// Bits flipped in the commit record (file 1): the same judgement. A damaged slot falls back to
/// the commit before (the file is then ahead of its record, and verified); both damaged is
/// refused.
#[test]
fn record_bit_flips_are_refused_or_read_back_exact() {
    flip_images(Target::Record, 4);
}
