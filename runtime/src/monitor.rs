//! Monitors: be told when an actor crashes or ends.

use std::fmt;

use tokio::sync::mpsc;

use crate::crash::CrashReport;
use crate::registry::ActorId;
use crate::sync::{Arc, Mutex};

/// Why a monitored actor went down.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// It crashed (the report says how).
    Crashed(Arc<CrashReport>),
    /// It ended normally (`Context::stop`) or its mailbox was closed.
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

type Notify = Box<dyn Fn(&Down) -> bool + Send + Sync>;

/// The watchers of one slot. A watcher returns `false` when it is gone and is then forgotten.
#[derive(Default)]
pub(crate) struct Monitors {
    list: Mutex<Vec<(Option<ActorId>, Notify)>>,
}

impl fmt::Debug for Monitors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitors").finish_non_exhaustive()
    }
}

impl Monitors {
    /// Adds a watcher; a keyed watcher replaces an earlier one with the same key.
    pub(crate) fn add(&self, key: Option<ActorId>, notify: impl Fn(&Down) -> bool + Send + Sync + 'static) {
        let mut list = self.list.lock();
        if key.is_some() {
            list.retain(|(k, _)| *k != key);
        }
        list.push((key, Box::new(notify)));
    }

    /// Lock order: `Monitors` before a watcher's mailbox (rule 2 of the list in `sync.rs`).
    pub(crate) fn fire(&self, down: &Down) {
        self.list.lock().retain(|(_, notify)| notify(down));
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
        monitors.add(None, move |down| tx.send(down.clone()).is_ok());
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
