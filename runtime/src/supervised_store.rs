//! The supervised store: a store whose failure is a crash of a child of the tree (see
//! [`SupervisedStore`]).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::context::Context;
use crate::stats::SlotState;
use crate::store::{
    Committed, Durability, DurableLease, Limits, RedbOptions, RedbStore, Store, StoreError, StoreFuture, Txn, Versioned,
};
use crate::supervisor::{ActorSpec, Restart};
use crate::sync::{Arc, Mutex, Weak};

type Opener = Box<dyn Fn() -> Result<Arc<dyn Store>, StoreError> + Send + Sync>;

/// A store whose failures are crashes of a supervised child.
///
/// Crash-only applies to the store too. An embedded store whose writer failed (a full disk, an I/O
/// error, a damaged page) stops for good ([`Store::failed`]); it is not repaired in place. A
/// [`SupervisedStore`] is the handle every actor uses, and a small actor, its keeper, is the
/// store's place in the tree:
/// - The keeper's start is the store's recovery path: it lets go of the failed store (waiting,
///   bounded, for requests still holding it) and reopens the file, with the verification a crash
///   calls for. A reopen that fails is a start that fails: the supervisor retries it with its
///   backoff, and past its restart intensity gives up and escalates, up to a non-zero exit.
/// - A request that finds the store failed marks it down and tells the keeper, which crashes
///   with the store's error (a crash report that names it). Until the reopen succeeds, every
///   request is answered at once with that error (`NoSpace`, `Corrupt`, ...), its `retry_after`
///   set to the keeper's next start.
///
/// ```
/// use std::time::Duration;
/// use crashonly::prelude::*;
/// use crashonly::store::{RedbOptions, StoreExt};
/// use crashonly::SupervisedStore;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("crashonly-sup-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// // Opened once before the tree starts, so that a store another process owns, or a damaged one,
/// // stops the program at once with a clear error.
/// let store = SupervisedStore::redb(dir.join("state.redb"), RedbOptions::default())?;
/// let root = SupervisorSpec::new("root", Strategy::OneForOne)
///     .intensity(5, Duration::from_secs(60)) // the store's reopen attempts, before the process gives up
///     .child(store.spec());
/// let system = System::builder().root(root).start()?;
/// store.put(b"k", b"v".to_vec()).await?;
/// assert!(store.status().is_ok());
/// # drop(system); drop(store); std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
/// Cheap to clone; every clone is the same store. Implements [`Store`].
#[derive(Clone)]
pub struct SupervisedStore {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    open: Opener,
    limits: Limits,
    durability: Durability,
    state: Mutex<State>,
    keeper: Mutex<Option<ActorRef<StoreKeeper>>>,
}

struct State {
    /// The store serving now, if any.
    up: Option<Arc<dyn Store>>,
    /// Why it is down (when `up` is `None`).
    down: StoreError,
    /// Counts reopenings; a failure report names the one it is about.
    generation: u64,
    /// The store that failed, until the reopen has waited for it to be let go of.
    failed: Option<Weak<dyn Store>>,
}

impl fmt::Debug for SupervisedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisedStore")
            .field("name", &self.inner.name)
            .field("up", &self.status().is_ok())
            .finish_non_exhaustive()
    }
}

/// How long a reopen waits for requests still holding the failed store to let go of it.
const LET_GO: Duration = Duration::from_secs(2);

impl SupervisedStore {
    /// A supervised [`RedbStore`] at `path`, opened now with `opts` (the first start of its
    /// keeper adopts it): an error here (another process owns the store, the file is damaged) is
    /// for the program to report before it starts serving. Every reopen after a failure verifies
    /// every page, whatever `opts.verify_on_open` says: a crash calls for it.
    pub fn redb(path: impl Into<PathBuf>, opts: RedbOptions) -> Result<SupervisedStore, StoreError> {
        let path = path.into();
        let (limits, durability) = (opts.limits.clone(), opts.durability);
        let name = path.display().to_string();
        let first = Arc::new(RedbStore::open_with(&path, opts.clone())?) as Arc<dyn Store>;
        let reopen = opts.with_verify_on_open(true);
        let open: Opener =
            Box::new(move || Ok(Arc::new(RedbStore::open_with(&path, reopen.clone())?) as Arc<dyn Store>));
        Ok(Self::with_first(name, limits, durability, first, open))
    }

    /// A supervised store of any kind: `open` is its recovery path, run now and at every reboot.
    /// `limits` and `durability` are those of the stores it opens.
    pub fn new<S, F>(
        name: impl Into<String>,
        limits: Limits,
        durability: Durability,
        open: F,
    ) -> Result<Self, StoreError>
    where
        S: Store + 'static,
        F: Fn() -> Result<S, StoreError> + Send + Sync + 'static,
    {
        let open: Opener = Box::new(move || Ok(Arc::new(open()?) as Arc<dyn Store>));
        Self::with_opener(name.into(), limits, durability, open)
    }

    fn with_opener(name: String, limits: Limits, durability: Durability, open: Opener) -> Result<Self, StoreError> {
        let first = open()?;
        Ok(Self::with_first(name, limits, durability, first, open))
    }

    fn with_first(name: String, limits: Limits, durability: Durability, first: Arc<dyn Store>, open: Opener) -> Self {
        SupervisedStore {
            inner: Arc::new(Inner {
                name,
                open,
                limits,
                durability,
                state: Mutex::new(State {
                    up: Some(first),
                    down: StoreError::unavailable("the store is starting"),
                    generation: 1,
                    failed: None,
                }),
                keeper: Mutex::new(None),
            }),
        }
    }

    /// The keeper's spec, named `store`: put it in the tree where the store's failures should be
    /// counted (its supervisor's intensity and backoff are the store's). Rename it with
    /// [`ActorSpec::name`] to keep several stores.
    pub fn spec(&self) -> ActorSpec<StoreKeeper> {
        ActorSpec::named("store", self.clone())
            .restart(Restart::Permanent)
            .blocking()
    }

    /// `Ok` while the store serves; the error it is down with otherwise (for health checks).
    pub fn status(&self) -> Result<(), StoreError> {
        self.current().map(drop)
    }

    /// The store serving now, or the error it is down with (`retry_after` set to the keeper's
    /// next start, when it is known).
    fn current(&self) -> Result<Arc<dyn Store>, StoreError> {
        let state = self.inner.state.lock();
        if let Some(store) = &state.up {
            return Ok(store.clone());
        }
        let error = state.down.clone();
        drop(state);
        Err(match self.retry_after() {
            Some(wait) => error.with_retry_after(wait),
            None => error,
        })
    }

    /// When the keeper starts next, from its supervisor's backoff; while it is (re)starting
    /// already, soon. `None` once it is gone for good.
    fn retry_after(&self) -> Option<Duration> {
        let keeper = self.inner.keeper.lock().clone()?;
        let stats = keeper.stats();
        match stats.next_start_at {
            Some(next) => {
                let now = crate::Instant::now();
                Some(next.saturating_duration_since(now).max(Duration::from_millis(1)))
            }
            None if matches!(stats.state, SlotState::Dead | SlotState::Stopped) => None,
            // Reopening now, or about to crash and restart: no backoff to wait out.
            None => Some(Duration::from_millis(10)),
        }
    }

    /// Runs `op` on the current store; a failure that stopped the store is a crash of its keeper.
    fn with<'a, T: Send + 'a>(
        &'a self,
        op: impl FnOnce(Arc<dyn Store>) -> StoreFuture<'a, T> + Send + 'a,
    ) -> StoreFuture<'a, T> {
        Box::pin(async move {
            let store = self.current()?;
            let result = op(store.clone()).await;
            if result.is_err()
                && let Some(error) = store.failed()
            {
                self.crashed(&store, error.clone());
                return Err(self.current().err().unwrap_or(error));
            }
            result
        })
    }

    /// Marks `store` down (unless it was already replaced) and tells the keeper to crash.
    fn crashed(&self, store: &Arc<dyn Store>, error: StoreError) {
        let mut state = self.inner.state.lock();
        let current = state.up.as_ref().is_some_and(|up| Arc::ptr_eq(up, store));
        if !current {
            return;
        }
        state.up = None;
        state.failed = Some(Arc::downgrade(store));
        state.down = error.clone();
        let generation = state.generation;
        drop(state);
        tracing::error!(store = %self.inner.name, %error, "the store failed; its keeper crashes and reopens it");
        let keeper = self.inner.keeper.lock().clone();
        if let Some(keeper) = keeper {
            let _ = keeper.try_tell(StoreFailed { generation, error });
        }
    }

    /// The keeper's start: adopt the store serving now, or reopen it.
    fn recover(&self) -> Result<(), StoreError> {
        let up = self.inner.state.lock().up.clone();
        // (The store's own state is read with no lock of ours held: `State` is a leaf lock.)
        let old: Option<Weak<dyn Store>> = match up.map(|up| (up.failed(), up)) {
            Some((None, _)) => return Ok(()),
            Some((Some(error), up)) => {
                let mut state = self.inner.state.lock();
                if state.up.as_ref().is_some_and(|cur| Arc::ptr_eq(cur, &up)) {
                    state.up = None;
                    state.down = error;
                }
                Some(Arc::downgrade(&up))
            }
            None => self.inner.state.lock().failed.take(),
        };
        // Requests still running on the failed store hold it (and its file lock): wait for them.
        if let Some(old) = old {
            let since = std::time::Instant::now();
            while old.strong_count() > 0 && since.elapsed() < LET_GO {
                crate::rt::park_timeout(Duration::from_millis(2));
            }
            tracing::debug!(store = %self.inner.name, waited = ?since.elapsed(), held = old.strong_count(), "the failed store was let go of");
        }
        match (self.inner.open)() {
            Ok(store) => {
                let mut state = self.inner.state.lock();
                state.generation += 1;
                state.up = Some(store);
                tracing::info!(store = %self.inner.name, generation = state.generation, "the store was reopened");
                Ok(())
            }
            Err(error) => {
                tracing::error!(store = %self.inner.name, %error, "reopening the store failed");
                self.inner.state.lock().down = error.clone();
                Err(error)
            }
        }
    }
}

/// The store's keeper, the actor that is the store's place in the supervision tree: its start
/// opens the store (see [`SupervisedStore::spec`]).
#[derive(Debug)]
pub struct StoreKeeper {
    store: SupervisedStore,
}

/// The keeper's message: the store it opened has failed (sent by the request that found it).
#[derive(Debug)]
pub struct StoreFailed {
    generation: u64,
    error: StoreError,
}

impl Actor for StoreKeeper {
    type Args = SupervisedStore;
    type Msg = StoreFailed;
    type Reply = ();
    type Error = StoreError;

    async fn start(store: &SupervisedStore, ctx: &mut Context<Self>) -> Result<Self, StoreError> {
        *store.inner.keeper.lock() = Some(ctx.myself().clone());
        store.recover()?;
        Ok(StoreKeeper { store: store.clone() })
    }

    async fn handle(&mut self, failed: StoreFailed, _ctx: &mut Context<Self>) -> Result<(), StoreError> {
        let generation = self.store.inner.state.lock().generation;
        if failed.generation == generation {
            // The store this keeper opened has failed: crash, so that the next start reopens it.
            return Err(failed.error);
        }
        Ok(())
    }
}

impl Store for SupervisedStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>> {
        self.with(move |s| Box::pin(async move { s.get(key).await }))
    }

    fn scan<'a>(&'a self, prefix: &'a [u8], limit: usize) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>> {
        self.with(move |s| Box::pin(async move { s.scan(prefix, limit).await }))
    }

    fn commit(&self, txn: Txn) -> StoreFuture<'_, Committed> {
        self.with(move |s| Box::pin(async move { s.commit(txn).await }))
    }

    fn acquire_lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        self.with(move |s| Box::pin(async move { s.acquire_lease(name, holder, ttl).await }))
    }

    fn renew_lease<'a>(&'a self, lease: &'a DurableLease, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        self.with(move |s| Box::pin(async move { s.renew_lease(lease, ttl).await }))
    }

    fn release_lease<'a>(&'a self, lease: &'a DurableLease) -> StoreFuture<'a, ()> {
        self.with(move |s| Box::pin(async move { s.release_lease(lease).await }))
    }

    fn durability(&self) -> Durability {
        self.inner.durability
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn failed(&self) -> Option<StoreError> {
        self.status().err()
    }
}
