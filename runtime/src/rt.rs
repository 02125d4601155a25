//! The executor seam: the only place the runtime spawns, aborts and joins tasks.
//!
//! Production uses tokio. Under `--cfg crashonly_loom` it is a model executor: one loom thread per
//! task, driven by `loom::future::block_on`, and the runtime's own abort flag, checked every time
//! the task is polled (at every await of the actor loop). Nothing else in the crate names
//! `tokio::spawn` or `JoinHandle`.
//!
//! Two kinds of task: on the system's tokio runtime, or on a dedicated OS thread (for actors that
//! must block). Both are aborted from outside and joined the same way.
//!
//! It is also the one place that starts OS threads: the dedicated actor threads above, and
//! [`os_thread`] for components that are threads by nature (the redb store's writer).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

/// The handle of a thread started by [`os_thread`].
pub(crate) type ThreadHandle = std::thread::JoinHandle<()>;

/// Sleeps the calling OS thread for at most `d`, or until [`ThreadHandle`]'s `unpark` (the
/// watchdog's thread, between passes).
#[cfg_attr(crashonly_loom, allow(dead_code))]
pub(crate) fn park_timeout(d: std::time::Duration) {
    std::thread::park_timeout(d)
}

/// Starts a named OS thread running `f` (a real thread even in a loom model: such components are
/// not part of a model).
pub(crate) fn os_thread<F>(name: String, f: F) -> std::io::Result<ThreadHandle>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(f)
}

/// Runs `fut` until `deadline` on `clock` (`None` when the deadline came first), like
/// `Clock::timeout_at`, but arms the timer only when `fut` is still pending after one yield of
/// the task (it wakes itself and returns pending once: it runs again after the tasks its worker
/// had ready). An ask's answer usually comes in that time (the actor was woken by the push), and
/// then no timer entry is made and removed (7% of an ask round trip's instructions,
/// `benches/instructions.rs`). Not `tokio::task::yield_now`: its deferred wake makes the worker
/// poll its I/O driver (an `epoll_wait` system call) and read the clock before the task runs
/// again, a fifth of a one-thread ask round trip's time. The deadline is absolute, so arming it late moves it nowhere: one
/// already past fires at the first poll after the yield. In a loom model the timer is armed at
/// once (the clock is manual, and nothing is gained).
pub(crate) async fn within_deadline<F: std::future::Future>(
    clock: &crate::clock::Clock,
    deadline: crate::clock::Instant,
    fut: F,
) -> Option<F::Output> {
    #[cfg(crashonly_loom)]
    return clock.timeout_at(deadline, fut).await;
    #[cfg(not(crashonly_loom))]
    {
        use std::task::Poll;
        let mut fut = std::pin::pin!(fut);
        let mut yielded = false;
        if let Some(v) = std::future::poll_fn(|cx| {
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            if yielded {
                return Poll::Ready(None);
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
        {
            return Some(v);
        }
        clock.timeout_at(deadline, fut).await
    }
}

/// Lets the other tasks of this worker run once.
pub(crate) async fn yield_now() {
    #[cfg(not(crashonly_loom))]
    tokio::task::yield_now().await;
    #[cfg(crashonly_loom)]
    loom::thread::yield_now();
}

/// Runs `f` on tokio's blocking pool (a thread of its own), so that long CPU work (an observer
/// frame of 100,000 actors) never stalls the workers that run the actors; a panic in `f` is
/// raised again here. Not used in loom models.
#[cfg(all(feature = "observer", not(crashonly_loom)))]
pub(crate) async fn off_workers<T, F>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(not(crashonly_loom))]
pub(crate) use tokio_exec::*;

#[cfg(crashonly_loom)]
pub(crate) use model_exec::*;

#[cfg(not(crashonly_loom))]
mod tokio_exec {
    use std::future::Future;
    use std::time::Duration;

    use futures::future::{AbortHandle as FutAbort, Abortable};
    use tokio::sync::oneshot;

    use crate::sync::{Arc, AtomicU8, Ordering};

    /// A running task: aborting it is the external power-off switch of whatever runs inside.
    /// A dedicated thread's parts are boxed: every slot holds a `Task` and an `AbortHandle`, and
    /// few of them are threads (16 bytes each instead of 40 and 24).
    #[derive(Debug)]
    pub(crate) enum Task {
        Tokio(tokio::task::JoinHandle<()>),
        Thread(Box<(AbortHandle, oneshot::Receiver<()>)>),
    }

    /// A handle that can only abort.
    #[derive(Clone, Debug)]
    pub(crate) enum AbortHandle {
        Tokio(tokio::task::AbortHandle),
        Thread(Arc<(FutAbort, AtomicU8)>),
    }

    impl AbortHandle {
        pub(crate) fn abort(&self) {
            match self {
                AbortHandle::Tokio(h) => h.abort(),
                AbortHandle::Thread(t) => t.0.abort(),
            }
        }

        /// Whether this is the handle of the task being polled on this thread.
        pub(crate) fn is_current(&self) -> bool {
            match self {
                AbortHandle::Tokio(h) => tokio::task::try_id() == Some(h.id()),
                AbortHandle::Thread(_) => false,
            }
        }

        pub(crate) fn is_finished(&self) -> bool {
            match self {
                AbortHandle::Tokio(h) => h.is_finished(),
                // Relaxed: an observation; `join` is the synchronising wait.
                AbortHandle::Thread(t) => t.1.load(Ordering::Relaxed) != 0,
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

        /// Worker threads of the runtime (1 for a current-thread runtime).
        pub(crate) fn workers(&self) -> usize {
            self.handle.metrics().num_workers()
        }

        /// Makes the runtime's context current on this thread (its clock, paused in tests), for
        /// a thread of ours that reads the system's time.
        pub(crate) fn enter(&self) -> tokio::runtime::EnterGuard<'_> {
            self.handle.enter()
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
            let handle = Arc::new((abort, AtomicU8::new(0)));
            let (tx, done) = oneshot::channel();
            let fin = handle.clone();
            let started = std::thread::Builder::new()
                .name(format!("crashonly {name}"))
                .spawn(move || {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        let _ = rt.block_on(Abortable::new(fut, reg));
                    }
                    fin.1.store(1, Ordering::Relaxed);
                    let _ = tx.send(());
                });
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a dedicated actor thread");
            }
            Task::Thread(Box::new((AbortHandle::Thread(handle), done)))
        }
    }

    impl Task {
        pub(crate) fn abort_handle(&self) -> AbortHandle {
            match self {
                Task::Tokio(h) => AbortHandle::Tokio(h.abort_handle()),
                Task::Thread(t) => t.0.clone(),
            }
        }

        /// Waits until the task has ended, whether it finished, panicked or was aborted.
        pub(crate) async fn join(self) {
            match self {
                Task::Tokio(h) => {
                    let _ = h.await;
                }
                Task::Thread(t) => {
                    let _ = t.1.await;
                }
            }
        }

        /// Waits at most `limit`; false when the task is still running (stuck in blocking code).
        pub(crate) async fn join_within(self, limit: Duration) -> bool {
            crate::clock::timeout(limit, self.join()).await.is_some()
        }
    }
}

#[cfg(crashonly_loom)]
mod model_exec {
    use std::future::{poll_fn, Future};
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use crate::sync::{Arc, AtomicU8, Mutex, Ordering};

    #[derive(Debug, Default)]
    struct TaskState {
        aborted: AtomicU8,
        finished: AtomicU8,
        /// The task's own waker (for abort) and its joiners'.
        wakers: Mutex<(Option<Waker>, Vec<Waker>)>,
    }

    impl TaskState {
        fn abort(&self) {
            self.aborted.store(1, Ordering::Release);
            let own = self.wakers.lock().0.take();
            if let Some(w) = own {
                w.wake();
            }
        }

        fn finish(&self) {
            self.finished.store(1, Ordering::Release);
            let joiners = std::mem::take(&mut self.wakers.lock().1);
            joiners.into_iter().for_each(Waker::wake);
        }
    }

    /// A running model task (a loom thread).
    #[derive(Debug)]
    pub(crate) struct Task {
        state: Arc<TaskState>,
    }

    /// A handle that can only abort.
    #[derive(Clone, Debug)]
    pub(crate) struct AbortHandle {
        state: Arc<TaskState>,
    }

    impl AbortHandle {
        pub(crate) fn abort(&self) {
            self.state.abort();
        }

        pub(crate) fn is_finished(&self) -> bool {
            self.state.finished.load(Ordering::Acquire) != 0
        }

        /// Models never hibernate, which is what asks.
        pub(crate) fn is_current(&self) -> bool {
            false
        }
    }

    /// The model executor: every task it ever spawned, so that dropping the system can stop them
    /// all (a loom execution ends only when every thread has).
    #[derive(Clone, Debug, Default)]
    pub(crate) struct Executor {
        tasks: Arc<Mutex<Vec<Arc<TaskState>>>>,
    }

    /// Runs the inner future until it ends or the abort flag is seen; either way the task is
    /// finished and its future dropped (what tokio's abort does).
    struct Guarded<F> {
        state: Arc<TaskState>,
        fut: Option<Pin<Box<F>>>,
    }

    impl<F: Future<Output = ()>> Future for Guarded<F> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            {
                let mut w = self.state.wakers.lock();
                if self.state.aborted.load(Ordering::Acquire) == 0 {
                    w.0 = Some(cx.waker().clone());
                }
            }
            let done = self.state.aborted.load(Ordering::Acquire) != 0
                || self.fut.as_mut().is_none_or(|f| f.as_mut().poll(cx).is_ready());
            if done {
                self.fut = None;
                self.state.finish();
                return Poll::Ready(());
            }
            Poll::Pending
        }
    }

    impl Executor {
        pub(crate) fn current() -> Self {
            Executor::default()
        }

        /// Models have no runtime context to enter.
        pub(crate) fn enter(&self) {}

        /// A model runs tasks on loom threads; none of them is a scarce worker.
        pub(crate) fn workers(&self) -> usize {
            1
        }

        pub(crate) fn spawn<F>(&self, fut: F) -> Task
        where
            F: Future<Output = ()> + Send + 'static,
        {
            let state = Arc::new(TaskState::default());
            self.tasks.lock().push(state.clone());
            let guarded = Guarded {
                state: state.clone(),
                fut: Some(Box::pin(fut)),
            };
            loom::thread::spawn(move || loom::future::block_on(guarded));
            Task { state }
        }

        /// In a model every task is a thread already.
        pub(crate) fn spawn_thread<F>(&self, _name: &str, fut: F) -> Task
        where
            F: Future<Output = ()> + Send + 'static,
        {
            self.spawn(fut)
        }

        /// Aborts every task this executor spawned.
        pub(crate) fn shutdown(&self) {
            let tasks = std::mem::take(&mut *self.tasks.lock());
            tasks.iter().for_each(|t| t.abort());
        }
    }

    impl Task {
        pub(crate) fn abort_handle(&self) -> AbortHandle {
            AbortHandle {
                state: self.state.clone(),
            }
        }

        /// Waits until the task has ended.
        pub(crate) async fn join(self) {
            poll_fn(|cx| {
                let mut w = self.state.wakers.lock();
                if self.state.finished.load(Ordering::Acquire) != 0 {
                    return Poll::Ready(());
                }
                w.1.push(cx.waker().clone());
                Poll::Pending
            })
            .await
        }

        /// Models run no blocking code: this is `join`.
        pub(crate) async fn join_within(self, _limit: Duration) -> bool {
            self.join().await;
            true
        }
    }
}
