//! The executor seam: the only place the runtime spawns, aborts and joins tasks.
//!
//! Production uses tokio; the loom issue swaps this module for a model executor under
//! `crashonly_loom`. Nothing else in the crate names `tokio::spawn` or `JoinHandle`.
//!
//! Two kinds of task: on the system's tokio runtime, or on a dedicated OS thread (for actors that
//! must block). Both are aborted from outside and joined the same way.

use std::future::Future;
use std::time::Duration;

use futures::future::{AbortHandle as FutAbort, Abortable};
use tokio::sync::oneshot;

use crate::sync::{Arc, AtomicU8, Ordering};

/// A running task: aborting it is the external power-off switch of whatever runs inside.
#[derive(Debug)]
pub(crate) enum Task {
    Tokio(tokio::task::JoinHandle<()>),
    Thread {
        abort: AbortHandle,
        done: oneshot::Receiver<()>,
    },
}

/// A handle that can only abort.
#[derive(Clone, Debug)]
pub(crate) enum AbortHandle {
    Tokio(tokio::task::AbortHandle),
    Thread { abort: FutAbort, finished: Arc<AtomicU8> },
}

impl AbortHandle {
    pub(crate) fn abort(&self) {
        match self {
            AbortHandle::Tokio(h) => h.abort(),
            AbortHandle::Thread { abort, .. } => abort.abort(),
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        match self {
            AbortHandle::Tokio(h) => h.is_finished(),
            // Relaxed: an observation; `join` is the synchronising wait.
            AbortHandle::Thread { finished, .. } => finished.load(Ordering::Relaxed) != 0,
        }
    }
}

/// The executor a [`System`](crate::System) spawns on.
#[derive(Clone, Debug)]
pub(crate) struct Executor {
    handle: tokio::runtime::Handle,
}

impl Executor {
    /// The executor of the tokio runtime we are called from.
    ///
    /// # Panics
    /// Outside a tokio runtime (the [`System`](crate::System) constructors document this).
    pub(crate) fn current() -> Self {
        Executor {
            handle: tokio::runtime::Handle::current(),
        }
    }

    pub(crate) fn spawn<F>(&self, fut: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Task::Tokio(self.handle.spawn(fut))
    }

    /// Runs `fut` on a new OS thread with its own single-threaded runtime: blocking there starves
    /// nobody else. If the future blocks forever, the thread is abandoned, not joined.
    pub(crate) fn spawn_thread<F>(&self, name: &str, fut: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (abort, reg) = FutAbort::new_pair();
        let finished = Arc::new(AtomicU8::new(0));
        let (tx, done) = oneshot::channel();
        let fin = finished.clone();
        let started = std::thread::Builder::new()
            .name(format!("crashonly {name}"))
            .spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    let _ = rt.block_on(Abortable::new(fut, reg));
                }
                fin.store(1, Ordering::Relaxed);
                let _ = tx.send(());
            });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start a dedicated actor thread");
        }
        Task::Thread {
            abort: AbortHandle::Thread { abort, finished },
            done,
        }
    }
}

impl Task {
    pub(crate) fn abort_handle(&self) -> AbortHandle {
        match self {
            Task::Tokio(h) => AbortHandle::Tokio(h.abort_handle()),
            Task::Thread { abort, .. } => abort.clone(),
        }
    }

    /// Waits until the task has ended, whether it finished, panicked or was aborted.
    pub(crate) async fn join(self) {
        match self {
            Task::Tokio(h) => {
                let _ = h.await;
            }
            Task::Thread { done, .. } => {
                let _ = done.await;
            }
        }
    }

    /// Waits at most `limit`; false when the task is still running (stuck in blocking code).
    pub(crate) async fn join_within(self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.join()).await.is_ok()
    }
}
