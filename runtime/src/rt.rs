//! The executor seam: the only place the runtime spawns, aborts and joins tasks.
//!
//! Production uses tokio; the loom issue swaps this module for a model executor under
//! `crashonly_loom`. Nothing else in the crate names `tokio::spawn` or `JoinHandle`.

use std::future::Future;

/// A running task: aborting it is the external power-off switch of whatever runs inside.
#[derive(Debug)]
pub(crate) struct Task {
    handle: tokio::task::JoinHandle<()>,
}

/// A handle that can only abort.
pub(crate) type AbortHandle = tokio::task::AbortHandle;

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
        Task {
            handle: self.handle.spawn(fut),
        }
    }
}

impl Task {
    pub(crate) fn abort_handle(&self) -> AbortHandle {
        self.handle.abort_handle()
    }

    /// Waits until the task has ended, whether it finished, panicked or was aborted.
    pub(crate) async fn join(self) {
        let _ = self.handle.await;
    }
}
