//! The child contract: what a supervisor needs from a child (actor slot or supervisor alike), how
//! a child's instance ended, and what its supervisor decided.
//!
//! Slots see their supervisor only through [`Parent`], so the slot sits below the restart engine:
//! the engine knows children as `dyn ChildHandle`, and a child knows its parent as `dyn Parent`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::crash::CrashReport;
use crate::path::ActorPath;
use crate::sync::Arc;

/// How an actor instance ended.
#[derive(Clone, Debug)]
pub(crate) enum Exit {
    Normal,
    Crash(Arc<CrashReport>),
    /// Ended on purpose after its current message, to be started again (rejuvenation).
    Rejuvenated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    One,
    All,
    Rest,
}

#[derive(Clone, Debug)]
pub(crate) enum Decision {
    Restart { scope: Scope, delay: Duration },
    Escalate(Arc<CrashReport>),
    Remove,
    Ignore,
}

/// What a supervisor needs from a child, actor or supervisor alike.
pub(crate) trait ChildHandle: Send + Sync + 'static {
    fn path(&self) -> ActorPath<'_>;
    /// Pointer identity, to find the child in its supervisor's list.
    fn identity(&self) -> *const ();
    /// Starts a fresh instance (or subtree). The previous one must have been aborted and joined.
    fn launch(&self);
    /// Starts a fresh instance after `delay` (the backoff), without making the caller wait.
    fn launch_after(&self, delay: Duration);
    /// The external power-off switch: aborts the instance (or subtree) without waiting; a running
    /// instance counts a crash (aborted by its supervisor).
    fn abort(&self);
    /// The same for a child that has already reported its exit (it crashed, and its group is
    /// restarting): nothing more is counted.
    fn halt(&self);
    /// Makes a child stopped by `stop` launchable again (`restart_child`).
    fn resume(&self);
    /// Waits until every aborted task has ended.
    fn join(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// After an abort and join: closes its mailbox(es) (senders get `Dead`) and keeps it, stopped,
    /// until it is launched again (`terminate_child`, then `restart_child`).
    fn stop(&self);
    /// Aborts and removes it for good.
    fn kill(&self);
    /// Planned restart through the crash path, after the current message (a subtree: every actor).
    fn rejuvenate(&self);
}

/// What a child needs from its supervisor: a decision on its exit, the abort of its group, and a
/// hand-off of the work the supervisor's own task does (joins, relaunches).
pub(crate) trait Parent: Send + Sync + 'static {
    /// Decides what a child's exit leads to, recording the restart against the intensity.
    fn decide(&self, who: *const (), exit: &Exit) -> Decision;
    /// Aborts, at once, the siblings that a group restart will restart.
    fn abort_group(&self, who: *const (), scope: Scope);
    /// Hands a decision to the supervisor's task.
    fn submit(&self, child: Arc<dyn ChildHandle>, decision: Decision);
}
