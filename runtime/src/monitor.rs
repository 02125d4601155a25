//! Monitors: be told when an actor crashes or ends.

use std::fmt;

use tokio::sync::mpsc;

use crate::crash;
use crate::crash::CrashReport;
use crate::registry::ActorId;
use crate::sync::{Arc, Mutex};

/// Why a monitored actor went down.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// It crashed (the report says how).
    Crashed(Arc<CrashReport>),
    /// It ended normally (`Context::stop`), or it was terminated or removed by its supervisor.
    Ended,
    /// It was restarted preemptively (rejuvenation), after finishing its current message.
    Rejuvenated,
}

/// The notice a monitor receives each time the watched actor crashes or ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    /// The watched actor.
    pub id: ActorId,
    /// Its path.
    pub path: String,
    /// What happened.
    pub reason: DownReason,
    /// Whether its supervisor is restarting it (false: it is gone for good, or its supervisor
    /// restarts a whole group and will say so through the group's own notices).
    pub restarting: bool,
}

type Notify = Arc<dyn Fn(&Down) -> bool + Send + Sync>;

/// Who watches: a stream, an actor's monitor, or a link (one of each per watcher and target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Watcher {
    Stream,
    Monitor(ActorId),
    Link(ActorId),
}

/// The watchers of one slot. A watcher returns `false` when it is done (gone, or a link that has
/// fired) and is then forgotten.
#[derive(Default)]
pub(crate) struct Monitors {
    /// Boxed on the first watcher: most actors have none (16 bytes in every slot, not 32).
    list: Mutex<Option<Box<Watchers>>>,
}

/// The watchers of one actor.
type Watchers = Vec<(Watcher, Notify)>;

impl fmt::Debug for Monitors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitors").finish_non_exhaustive()
    }
}

impl Monitors {
    /// Adds a watcher; a monitor or link replaces an earlier one of the same watcher.
    pub(crate) fn add(&self, key: Watcher, notify: impl Fn(&Down) -> bool + Send + Sync + 'static) {
        let mut list = self.list.lock();
        let list = list.get_or_insert_with(Box::default);
        if key != Watcher::Stream {
            list.retain(|(k, _)| *k != key);
        }
        list.push((key, Arc::new(notify)));
    }

    /// Removes a watcher; whether it was there.
    pub(crate) fn remove(&self, key: Watcher) -> bool {
        let mut list = self.list.lock();
        let Some(list) = list.as_mut() else { return false };
        let before = list.len();
        list.retain(|(k, _)| *k != key);
        list.len() != before
    }

    /// Forgets every watcher (the slot is gone; links hold the other actor, so this also breaks
    /// their reference cycles).
    pub(crate) fn clear(&self) {
        let gone = self.list.lock().take();
        drop(gone);
    }

    /// Tells every watcher. The list is not locked while they run (a link's notice crashes the
    /// linked actor, which fires, and may edit, that actor's own watchers, possibly this list); a
    /// watcher that returns `false` is then removed, and only that one. They run with no current
    /// envelope: a notice sent from inside a handler does not take on its deadline. The notice
    /// is made only if someone watches (most actors have no watcher: every restart and stop
    /// would otherwise copy the path and the report for nobody).
    pub(crate) fn fire(&self, make: impl FnOnce() -> Down) {
        let watchers: Vec<(Watcher, Notify)> = match self.list.lock().as_deref() {
            Some(list) if !list.is_empty() => list.clone(),
            _ => return,
        };
        let down = &make();
        let done: Vec<Notify> = crash::without_current(|| {
            watchers
                .into_iter()
                .filter(|(_, notify)| !notify(down))
                .map(|(_, notify)| notify)
                .collect()
        });
        if !done.is_empty()
            && let Some(list) = self.list.lock().as_mut()
        {
            list.retain(|(_, n)| !done.iter().any(|d| Arc::ptr_eq(d, n)));
        }
    }
}

/// A stream of [`Down`] notices for code outside the actor system (tests, `main`).
#[derive(Debug)]
pub struct MonitorStream {
    rx: mpsc::UnboundedReceiver<Down>,
}

impl MonitorStream {
    pub(crate) fn new(monitors: &Monitors) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        monitors.add(Watcher::Stream, move |down| tx.send(down.clone()).is_ok());
        MonitorStream { rx }
    }

    /// The next notice.
    pub async fn recv(&mut self) -> Option<Down> {
        self.rx.recv().await
    }

    /// The next notice if one is already there.
    pub fn try_recv(&mut self) -> Option<Down> {
        self.rx.try_recv().ok()
    }
}
