//! A test disk for the embedded store: it records every write, length change and sync in order,
//! so that the state a power cut would leave at any point can be rebuilt (what was synced, plus
//! any subset of what was not, torn writes, a damaged header; bitflip.rs beside it damages the
//! body), and it fails the k-th operation on demand (once, or from then on). It holds several
//! files (the store and its commit record) on one log, as one machine's power cut cuts them all
//! at the same moment.

use std::sync::{Arc, Mutex};

/// One operation the store did on the disk, or a mark the test added.
#[derive(Clone, Debug)]
pub enum Event {
    Write {
        file: usize,
        offset: u64,
        data: Vec<u8>,
    },
    SetLen {
        file: usize,
        len: u64,
    },
    /// A sync of one file: what was written to it so far is durable.
    Sync {
        file: usize,
    },
    /// The test's mark: commit `i` was acknowledged to its caller.
    Acked(u64),
    /// The disk failed an I/O operation (a sync, or not).
    Failed {
        file: usize,
        sync: bool,
    },
    /// The test's mark: the store was created and opened (a file path creates atomically, so
    /// a cut before this leaves no store at all).
    Created,
}

#[derive(Debug, Default)]
struct State {
    files: Vec<Vec<u8>>,
    log: Vec<Event>,
    ops: usize,
    fail_at: Option<usize>,
    persistent: bool,
    failing: bool,
}

/// One file of the disk (file 0 of a new disk); clones and [`file`](Self::file) share the disk.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    disk: Arc<Mutex<State>>,
    file: usize,
}

impl SimDisk {
    /// A disk holding the files `images` (a power cut's image), as file 0.
    pub fn with_images(images: Vec<Vec<u8>>) -> Self {
        SimDisk {
            disk: Arc::new(Mutex::new(State {
                files: images,
                ..State::default()
            })),
            file: 0,
        }
    }

    /// File `n` of the same disk (file 1 is the store's commit record).
    pub fn file(&self, n: usize) -> Self {
        SimDisk {
            disk: self.disk.clone(),
            file: n,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        let mut s = self.disk.lock().unwrap();
        if s.files.len() <= self.file {
            s.files.resize(self.file + 1, Vec::new());
        }
        s
    }

    /// Fails the `k`-th I/O operation (counting writes, length changes and syncs from 0); with
    /// `persistent`, every one after it too.
    pub fn fail_at(&self, k: usize, persistent: bool) {
        let mut s = self.state();
        s.fail_at = Some(k);
        s.persistent = persistent;
    }

    /// Adds the test's mark that commit `i` was acknowledged.
    pub fn acked(&self, i: u64) {
        self.state().log.push(Event::Acked(i));
    }

    /// Adds the test's mark that the store exists.
    pub fn created(&self) {
        self.state().log.push(Event::Created);
    }

    /// Everything recorded so far.
    pub fn log(&self) -> Vec<Event> {
        self.state().log.clone()
    }

    /// I/O operations done (or failed) so far.
    pub fn ops(&self) -> usize {
        self.state().ops
    }

    /// Counts an I/O operation; `Err` when it is the one to fail.
    fn op(&self, s: &mut State, sync: bool) -> std::io::Result<()> {
        let k = s.ops;
        s.ops += 1;
        if s.failing && s.persistent || s.fail_at == Some(k) {
            s.failing = true;
            s.log.push(Event::Failed { file: self.file, sync });
            return Err(std::io::Error::other(format!("injected failure of I/O operation {k}")));
        }
        Ok(())
    }
}

impl crashonly::store::StorageBackend for SimDisk {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.state().files[self.file].len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let s = self.state();
        let data = &s.files[self.file];
        let (start, end) = (offset as usize, offset as usize + out.len());
        if end > data.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        out.copy_from_slice(&data[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut s = self.state();
        self.op(&mut s, false)?;
        s.files[self.file].resize(len as usize, 0);
        s.log.push(Event::SetLen { file: self.file, len });
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let mut s = self.state();
        self.op(&mut s, true)?;
        s.log.push(Event::Sync { file: self.file });
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut s = self.state();
        self.op(&mut s, false)?;
        let file = &mut s.files[self.file];
        let end = offset as usize + data.len();
        if end > file.len() {
            file.resize(end, 0);
        }
        file[offset as usize..end].copy_from_slice(data);
        s.log.push(Event::Write {
            file: self.file,
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
    /// Everything written survives (the disk wrote its cache back before the cut).
    Kept,
    /// A random subset of the unsynced operations survives (seeded).
    Subset(u64),
    /// Every unsynced operation survives but the last write, of which only the first `n` bytes do.
    Torn(usize),
    /// Everything written survives, but a bit of the store's header (its first 512 bytes) flips.
    Header(u64),
    /// Everything written survives, but bit `bit` of byte `byte` of the store flips.
    Flip { byte: usize, bit: u8 },
}

/// Applies a write or length change to the file images it names.
fn apply(images: &mut Vec<Vec<u8>>, e: &Event) {
    let grow = |images: &mut Vec<Vec<u8>>, file: usize| {
        if images.len() <= file {
            images.resize(file + 1, Vec::new());
        }
    };
    match e {
        Event::Write { file, offset, data } => {
            grow(images, *file);
            let image = &mut images[*file];
            let end = *offset as usize + data.len();
            if end > image.len() {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        Event::SetLen { file, len } => {
            grow(images, *file);
            images[*file].resize(*len as usize, 0);
        }
        _ => {}
    }
}

/// The files (the store is file 0) a power cut just before event `cut` of `log` leaves, under
/// `loss`, and the commits acknowledged before it. Before the `Created` mark, that is no store at
/// all (no files): the file path creates a store under a temporary name and renames it when it is
/// whole. A sync makes durable what was written to its own file only.
pub fn image_at(log: &[Event], cut: usize, loss: Loss) -> (Vec<Vec<u8>>, Vec<u64>) {
    if !log[..cut].iter().any(|e| matches!(e, Event::Created)) {
        return (Vec::new(), Vec::new());
    }
    let mut durable = Vec::new();
    let mut pending: Vec<&Event> = Vec::new();
    let mut acked = Vec::new();
    for e in &log[..cut] {
        match e {
            Event::Sync { file } => {
                let (synced, rest): (Vec<&Event>, Vec<&Event>) = pending.into_iter().partition(|p| match p {
                    Event::Write { file: f, .. } | Event::SetLen { file: f, .. } => f == file,
                    _ => false,
                });
                synced.into_iter().for_each(|p| apply(&mut durable, p));
                pending = rest;
            }
            Event::Write { .. } | Event::SetLen { .. } => pending.push(e),
            Event::Acked(i) => acked.push(*i),
            Event::Failed { .. } | Event::Created => {}
        }
    }
    let mut images = durable;
    match loss {
        Loss::Unsynced => {}
        Loss::Kept => pending.into_iter().for_each(|p| apply(&mut images, p)),
        Loss::Subset(seed) => {
            let mut rng = fastrand::Rng::with_seed(seed);
            for p in pending {
                if rng.bool() {
                    apply(&mut images, p);
                }
            }
        }
        Loss::Torn(n) => {
            let last_write = pending.iter().rposition(|p| matches!(p, Event::Write { .. }));
            for (i, p) in pending.iter().enumerate() {
                match (Some(i) == last_write, p) {
                    (true, Event::Write { file, offset, data }) => {
                        let torn = Event::Write {
                            file: *file,
                            offset: *offset,
                            data: data[..n.min(data.len())].to_vec(),
                        };
                        apply(&mut images, &torn);
                    }
                    _ => apply(&mut images, p),
                }
            }
        }
        Loss::Header(_) | Loss::Flip { .. } => {
            pending.into_iter().for_each(|p| apply(&mut images, p));
            if let Some(image) = images.first_mut() {
                let (byte, bit) = match loss {
                    Loss::Flip { byte, bit } => (byte, bit),
                    Loss::Header(seed) => {
                        let mut rng = fastrand::Rng::with_seed(seed);
                        (rng.usize(..image.len().clamp(1, 512)), rng.u8(..8))
                    }
                    _ => unreachable!("the outer match has only these two"),
                };
                if byte < image.len() {
                    image[byte] ^= 1 << bit;
                }
            }
        }
    }
    (images, acked)
}
