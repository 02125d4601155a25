//! A test disk for the embedded store: it records every write, length change and sync in order,
//! so that the state a power cut would leave at any point can be rebuilt (what was synced, plus
//! any subset of what was not, torn writes, a damaged header), and it fails the k-th operation on
//! demand (once, or from then on).

use std::sync::{Arc, Mutex};

/// One operation the store did on the disk, or a mark the test added.
#[derive(Clone, Debug)]
pub enum Event {
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    SetLen(u64),
    Sync,
    /// The test's mark: commit `i` was acknowledged to its caller.
    Acked(u64),
    /// The disk failed an I/O operation (a sync, or not).
    Failed {
        sync: bool,
    },
    /// The test's mark: the store was created and opened (a file path creates atomically, so
    /// a cut before this leaves no store at all).
    Created,
}

#[derive(Debug, Default)]
struct State {
    data: Vec<u8>,
    log: Vec<Event>,
    ops: usize,
    fail_at: Option<usize>,
    persistent: bool,
    failing: bool,
}

/// The disk; clones share it.
#[derive(Clone, Debug, Default)]
pub struct SimDisk(Arc<Mutex<State>>);

impl SimDisk {
    /// A disk holding `image` (an empty one when `image` is empty).
    pub fn with_image(image: Vec<u8>) -> Self {
        SimDisk(Arc::new(Mutex::new(State {
            data: image,
            ..State::default()
        })))
    }

    /// Fails the `k`-th I/O operation (counting writes, length changes and syncs from 0); with
    /// `persistent`, every one after it too.
    pub fn fail_at(&self, k: usize, persistent: bool) {
        let mut s = self.0.lock().unwrap();
        s.fail_at = Some(k);
        s.persistent = persistent;
    }

    /// Adds the test's mark that commit `i` was acknowledged.
    pub fn acked(&self, i: u64) {
        self.0.lock().unwrap().log.push(Event::Acked(i));
    }

    /// Adds the test's mark that the store exists.
    pub fn created(&self) {
        self.0.lock().unwrap().log.push(Event::Created);
    }

    /// Everything recorded so far.
    pub fn log(&self) -> Vec<Event> {
        self.0.lock().unwrap().log.clone()
    }

    /// I/O operations done (or failed) so far.
    pub fn ops(&self) -> usize {
        self.0.lock().unwrap().ops
    }

    /// Counts an I/O operation; `Err` when it is the one to fail.
    fn op(s: &mut State, sync: bool) -> std::io::Result<()> {
        let k = s.ops;
        s.ops += 1;
        if s.failing && s.persistent || s.fail_at == Some(k) {
            s.failing = true;
            s.log.push(Event::Failed { sync });
            return Err(std::io::Error::other(format!("injected failure of I/O operation {k}")));
        }
        Ok(())
    }
}

impl crashonly::store::StorageBackend for SimDisk {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.lock().unwrap().data.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let s = self.0.lock().unwrap();
        let (start, end) = (offset as usize, offset as usize + out.len());
        if end > s.data.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        out.copy_from_slice(&s.data[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut s = self.0.lock().unwrap();
        SimDisk::op(&mut s, false)?;
        s.data.resize(len as usize, 0);
        s.log.push(Event::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let mut s = self.0.lock().unwrap();
        SimDisk::op(&mut s, true)?;
        s.log.push(Event::Sync);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut s = self.0.lock().unwrap();
        SimDisk::op(&mut s, false)?;
        let end = offset as usize + data.len();
        if end > s.data.len() {
            s.data.resize(end, 0);
        }
        s.data[offset as usize..end].copy_from_slice(data);
        s.log.push(Event::Write {
            offset,
            data: data.to_vec(),
        });
        Ok(())
    }
}

/// How a power cut treats what was written but not yet synced.
#[derive(Clone, Copy, Debug)]
pub enum Loss {
    /// Everything unsynced is gone.
    Unsynced,
    /// A random subset of the unsynced operations survives (seeded).
    Subset(u64),
    /// Every unsynced operation survives but the last write, of which only the first `n` bytes do.
    Torn(usize),
    /// Everything written survives, but a byte of the header (the first 512 bytes) is damaged.
    Header(u64),
}

fn apply(image: &mut Vec<u8>, e: &Event) {
    match e {
        Event::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if end > image.len() {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        Event::SetLen(len) => image.resize(*len as usize, 0),
        _ => {}
    }
}

/// A small deterministic generator (splitmix64).
pub fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The disk image a power cut just before event `cut` of `log` leaves, under `loss`, and the
/// commits acknowledged before it. Before the `Created` mark, that is no store at all (empty):
/// the file path creates a store under a temporary name and renames it when it is whole.
pub fn image_at(log: &[Event], cut: usize, loss: Loss) -> (Vec<u8>, Vec<u64>) {
    if !log[..cut].iter().any(|e| matches!(e, Event::Created)) {
        return (Vec::new(), Vec::new());
    }
    let mut durable = Vec::new();
    let mut pending: Vec<&Event> = Vec::new();
    let mut acked = Vec::new();
    for e in &log[..cut] {
        match e {
            Event::Sync => {
                pending.drain(..).for_each(|p| apply(&mut durable, p));
            }
            Event::Write { .. } | Event::SetLen(_) => pending.push(e),
            Event::Acked(i) => acked.push(*i),
            Event::Failed { .. } | Event::Created => {}
        }
    }
    let mut image = durable;
    match loss {
        Loss::Unsynced => {}
        Loss::Subset(mut seed) => {
            for p in pending {
                if splitmix(&mut seed).is_multiple_of(2) {
                    apply(&mut image, p);
                }
            }
        }
        Loss::Torn(n) => {
            let last_write = pending.iter().rposition(|p| matches!(p, Event::Write { .. }));
            for (i, p) in pending.iter().enumerate() {
                match (Some(i) == last_write, p) {
                    (true, Event::Write { offset, data }) => {
                        let torn = Event::Write {
                            offset: *offset,
                            data: data[..n.min(data.len())].to_vec(),
                        };
                        apply(&mut image, &torn);
                    }
                    _ => apply(&mut image, p),
                }
            }
        }
        Loss::Header(mut seed) => {
            pending.into_iter().for_each(|p| apply(&mut image, p));
            if !image.is_empty() {
                let at = (splitmix(&mut seed) as usize) % image.len().min(512);
                image[at] ^= 1 << (splitmix(&mut seed) % 8);
            }
        }
    }
    (image, acked)
}
