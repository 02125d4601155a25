//! The restart engine: a supervisor's children, its decisions on their exits (strategy, restart
//! type, intensity, backoff), and the task that carries the decisions out.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::child::{ChildHandle, Decision, Exit, Parent, Scope};
use super::spec::{ActorSpec, ChildSpec, Kind, Restart, Strategy, SupervisorSpec};
use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::crash::{CrashReason, CrashReport};
use crate::error::{ChildError, SpawnError};
use crate::mailbox::Mailbox;
use crate::path::ActorPath;
use crate::policy::{Backoff, Intensity};
use crate::registry::{ActorId, Inspect, Snapshot};
use crate::rt::{AbortHandle, Task};
use crate::shared::Shared;
use crate::sync::{Arc, Mutex, Weak};

struct Entry {
    restart: Restart,
    handle: Arc<dyn ChildHandle>,
    /// Terminated by hand (`terminate_child`): not restarted until `restart_child`.
    stopped: bool,
    /// `terminate_child` has not finished with it yet: `restart_child` must wait.
    terminating: bool,
    /// This child's own restarts within the intensity period: its backoff grows with them, so
    /// one crash-looping child does not slow down the restarts of its healthy siblings. Boxed on
    /// a child's first restart: most children never restart (8 bytes per child, not 32).
    #[expect(clippy::box_collection, reason = "8 bytes per child instead of a VecDeque's 32")]
    recent: Option<Box<VecDeque<u64>>>,
}

#[derive(Default)]
struct SupState {
    children: Vec<Entry>,
    /// When the restarts within the intensity period happened (clock nanos).
    restarts: VecDeque<u64>,
    failed: bool,
}

struct Event {
    child: Arc<dyn ChildHandle>,
    decision: Decision,
}

#[derive(Default)]
struct Life {
    task: Option<Task>,
    abort: Option<AbortHandle>,
}

pub(crate) struct SupNode {
    id: ActorId,
    path: Arc<str>,
    shared: Arc<Shared>,
    strategy: Strategy,
    intensity: Intensity,
    backoff: Backoff,
    parent: Weak<SupNode>,
    me: Weak<SupNode>,
    state: Mutex<SupState>,
    events: Mailbox<Event>,
    life: Mutex<Life>,
}

impl fmt::Debug for SupNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupNode")
            .field("path", &self.path)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl SupNode {
    pub(crate) fn id(&self) -> ActorId {
        self.id
    }

    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The path, shared (the base of its unnamed children's paths).
    pub(crate) fn path_arc(&self) -> &Arc<str> {
        &self.path
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Builds a supervisor and its declared subtree (nothing runs until `launch`).
    pub(crate) fn build(
        spec: SupervisorSpec,
        shared: Arc<Shared>,
        parent: Option<&Arc<SupNode>>,
    ) -> Result<Arc<SupNode>, SpawnError> {
        let (parent_path, name) = match parent {
            Some(p) => (p.path.clone(), Some(spec.name.as_str())),
            None => (Arc::from(""), None),
        };
        let weak_parent = parent.map(Arc::downgrade).unwrap_or_default();
        let node = shared.registry().insert(&parent_path, name, |id, path, _| {
            // A supervisor is named, but for the root.
            let path: Arc<str> = if parent.is_none() { "/".into() } else { path };
            Arc::new_cyclic(|me| SupNode {
                id,
                path,
                shared: shared.clone(),
                strategy: spec.strategy,
                intensity: spec.intensity.unwrap_or(shared.policy().intensity()),
                backoff: spec.backoff,
                parent: weak_parent,
                me: me.clone(),
                state: Mutex::new(SupState::default()),
                events: Mailbox::new(usize::MAX),
                life: Mutex::new(Life::default()),
            })
        })?;
        for child in spec.children {
            node.add(child)?;
        }
        if let Some(p) = parent {
            p.adopt(node.clone(), spec.restart)?;
        }
        Ok(node)
    }

    fn add(self: &Arc<Self>, child: ChildSpec) -> Result<Arc<dyn ChildHandle>, SpawnError> {
        match child.kind {
            Kind::Actor(make) => make(self),
            Kind::Supervisor(spec) => SupNode::build(spec, self.shared.clone(), Some(self)).map(|n| n as _),
        }
    }

    /// Appends a built child; refuses when this supervisor has given up.
    pub(crate) fn adopt(&self, handle: Arc<dyn ChildHandle>, restart: Restart) -> Result<(), SpawnError> {
        let mut st = self.state.lock();
        if st.failed {
            drop(st);
            handle.kill();
            return Err(SpawnError::SupervisorDown(self.path.to_string()));
        }
        st.children.push(Entry {
            restart,
            handle,
            stopped: false,
            terminating: false,
            recent: None,
        });
        Ok(())
    }

    /// Adds and starts a dynamic actor child.
    pub(crate) fn spawn<A: Actor>(self: &Arc<Self>, spec: ActorSpec<A>) -> Result<ActorRef<A>, SpawnError> {
        let slot = spec.build(self)?;
        ChildHandle::launch(&*slot);
        Ok(ActorRef::from_slot(slot))
    }

    /// Adds an actor child without starting it (the test driver runs its code by hand).
    pub(crate) fn adopt_unlaunched<A: Actor>(self: &Arc<Self>, spec: ActorSpec<A>) -> Result<ActorRef<A>, SpawnError> {
        Ok(ActorRef::from_slot(spec.build(self)?))
    }

    /// Adds and starts a dynamic supervisor child.
    pub(crate) fn spawn_supervisor(self: &Arc<Self>, spec: SupervisorSpec) -> Result<Arc<SupNode>, SpawnError> {
        let node = SupNode::build(spec, self.shared.clone(), Some(self))?;
        node.launch();
        Ok(node)
    }

    pub(crate) fn children(&self) -> Vec<String> {
        self.state
            .lock()
            .children
            .iter()
            .map(|e| e.handle.path().to_string())
            .collect()
    }

    async fn run(self: Arc<Self>) {
        while let Some(Event { child, decision }) = self.events.pop().await {
            match decision {
                Decision::Restart { scope, delay } => self.restart(child, scope, delay).await,
                Decision::Remove => child.kill(),
                Decision::Escalate(report) => {
                    self.give_up(child, report).await;
                    return;
                }
                Decision::Ignore => {}
            }
        }
    }

    /// Restarts `child`'s group. As in OTP, a temporary sibling in the group is terminated and
    /// removed, not restarted; a child terminated by hand stays stopped.
    async fn restart(&self, child: Arc<dyn ChildHandle>, scope: Scope, delay: Duration) {
        let (group, temporaries) = {
            let mut st = self.state.lock();
            let Some(idx) = st.children.iter().position(|e| e.handle.identity() == child.identity()) else {
                return;
            };
            let range = match scope {
                Scope::One => idx..idx + 1,
                Scope::All => 0..st.children.len(),
                Scope::Rest => idx..st.children.len(),
            };
            let (start, end) = (range.start, range.end);
            let mut group = Vec::new();
            let mut temporaries = Vec::new();
            let mut i = start;
            let mut end = end;
            while i < end {
                let e = &st.children[i];
                if e.stopped {
                    i += 1;
                } else if e.restart == Restart::Temporary && e.handle.identity() != child.identity() {
                    temporaries.push(st.children.remove(i).handle);
                    end -= 1;
                } else {
                    group.push(e.handle.clone());
                    i += 1;
                }
            }
            (group, temporaries)
        };
        for c in group.iter().chain(&temporaries).rev() {
            if c.identity() == child.identity() {
                // It reported its own exit; its crash is counted already.
                c.halt();
            } else {
                c.abort();
            }
        }
        for c in group.iter().chain(&temporaries) {
            c.join().await;
        }
        for t in &temporaries {
            t.stop();
            t.kill();
        }
        // One look under the lock: give up if this supervisor failed meanwhile, and leave out
        // children terminated by hand meanwhile.
        let group: Vec<Arc<dyn ChildHandle>> = {
            let st = self.state.lock();
            if st.failed {
                return;
            }
            // Usually none is: then the group stands as it is (no quadratic search).
            let stopped: Vec<*const ()> = st
                .children
                .iter()
                .filter(|e| e.stopped)
                .map(|e| e.handle.identity())
                .collect();
            if stopped.is_empty() {
                group
            } else {
                group.into_iter().filter(|c| !stopped.contains(&c.identity())).collect()
            }
        };
        tracing::info!(supervisor = %self.path, scope = ?scope, children = group.len(), "restarting");
        if let [only] = group.as_slice() {
            // One child: its backoff runs in its own new task; other restarts need not wait.
            only.launch_after(delay);
            return;
        }
        if !delay.is_zero() {
            self.shared.clock().sleep(delay).await;
        }
        for c in &group {
            c.launch();
        }
    }

    /// The child named `name`, marked with `f` under the lock.
    fn with_child<R>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Vec<Entry>, usize) -> Result<R, ChildError>,
    ) -> Result<R, ChildError> {
        let path = super::join_path(&self.path, name);
        let mut st = self.state.lock();
        if st.failed {
            return Err(ChildError::SupervisorDown(self.path.to_string()));
        }
        let Some(idx) = st.children.iter().position(|e| e.handle.path() == path) else {
            return Err(ChildError::NotFound(path));
        };
        f(&mut st.children, idx)
    }

    /// OTP's `terminate_child`: aborts the child (a subtree, for a supervisor), waits for it, and
    /// keeps its spec, stopped: sends get `Dead` until `restart_child`.
    pub(crate) async fn terminate_child(&self, name: &str) -> Result<(), ChildError> {
        let handle = self.with_child(name, |children, i| {
            children[i].stopped = true;
            children[i].terminating = true;
            Ok(children[i].handle.clone())
        })?;
        handle.abort();
        handle.join().await;
        handle.stop();
        let _ = self.with_child(name, |children, i| {
            children[i].terminating = false;
            Ok(())
        });
        Ok(())
    }

    /// OTP's `restart_child`: starts a child that was terminated by hand.
    pub(crate) fn restart_child(&self, name: &str) -> Result<(), ChildError> {
        let handle = self.with_child(name, |children, i| {
            let e = &mut children[i];
            if !e.stopped || e.terminating {
                return Err(ChildError::Running(e.handle.path().to_string()));
            }
            e.stopped = false;
            e.recent = None;
            Ok(e.handle.clone())
        })?;
        handle.resume();
        handle.launch();
        Ok(())
    }

    /// OTP's `terminate_child` then `delete_child`: aborts the child, waits for it, and forgets
    /// it; its refs answer `Dead` for good.
    pub(crate) async fn remove_child(&self, name: &str) -> Result<(), ChildError> {
        let handle = self.with_child(name, |children, i| Ok(children.remove(i).handle))?;
        handle.abort();
        handle.join().await;
        handle.kill();
        Ok(())
    }

    /// Past its intensity: abort the whole subtree, then let the parent decide (or fail the system).
    async fn give_up(&self, last: Arc<dyn ChildHandle>, report: Arc<CrashReport>) {
        tracing::error!(supervisor = %self.path, crash = %report, "supervisor gave up, escalating");
        // Until the parent has decided (or this task is aborted): `/readyz` answers 503 meanwhile.
        #[cfg(feature = "metrics")]
        let _escalating = self.shared.meters().escalation();
        let children = self.snapshot();
        for c in children.iter().rev() {
            if c.identity() == last.identity() {
                // The child whose crash exceeded the intensity has reported it already.
                c.halt();
            } else {
                c.abort();
            }
        }
        for c in &children {
            c.join().await;
        }
        match (self.parent.upgrade(), self.me.upgrade()) {
            (Some(parent), Some(me)) => {
                let decision = parent.decide(self.identity(), &Exit::Crash(report));
                match decision {
                    Decision::Ignore => {}
                    d => parent.submit(me, d),
                }
            }
            _ => {
                // The root gave up: every mailbox closes, so that nobody waits out a deadline.
                for c in children.iter().rev() {
                    c.kill();
                }
                self.shared.fail(report)
            }
        }
    }

    fn identity(&self) -> *const () {
        self as *const Self as *const ()
    }

    /// The children not terminated by hand.
    fn running_children(&self) -> Vec<Arc<dyn ChildHandle>> {
        let st = self.state.lock();
        st.children
            .iter()
            .filter(|e| !e.stopped)
            .map(|e| e.handle.clone())
            .collect()
    }

    fn snapshot(&self) -> Vec<Arc<dyn ChildHandle>> {
        self.state.lock().children.iter().map(|e| e.handle.clone()).collect()
    }
}

impl Parent for SupNode {
    /// Decides what a child's exit leads to, recording the restart against the intensity.
    fn decide(&self, who: *const (), exit: &Exit) -> Decision {
        let mut st = self.state.lock();
        if st.failed {
            return Decision::Ignore;
        }
        let Some(idx) = st.children.iter().position(|e| e.handle.identity() == who) else {
            return Decision::Ignore;
        };
        if st.children[idx].stopped {
            return Decision::Ignore;
        }
        let crashed = matches!(exit, Exit::Crash(_));
        let restart = match st.children[idx].restart {
            Restart::Permanent => true,
            Restart::Transient => crashed,
            Restart::Temporary => false,
        };
        if !restart {
            st.children.remove(idx);
            return Decision::Remove;
        }
        let period = self.intensity.period;
        // Clock nanos: the windows compare integers, not `Instant`s (two subtractions with
        // checks per restart).
        let (now, span) = (self.shared.nanos_within(period), period.as_nanos() as u64);
        while st.restarts.front().is_some_and(|t| now.saturating_sub(*t) >= span) {
            st.restarts.pop_front();
        }
        st.restarts.push_back(now);
        if st.restarts.len() > self.intensity.max_restarts as usize {
            st.failed = true;
            let report = Arc::new(CrashReport {
                path: self.path.to_string(),
                reason: CrashReason::IntensityExceeded {
                    max_restarts: self.intensity.max_restarts,
                    period_ms: period.as_millis(),
                },
                envelope: None,
            });
            #[cfg(feature = "observer")]
            self.shared.journal().record(
                crate::journal::Kind::Escalation,
                &self.path,
                crate::journal::Detail::Crash(report.clone()),
            );
            return Decision::Escalate(report);
        }
        let recent = st.children[idx].recent.get_or_insert_with(Box::default);
        while recent.front().is_some_and(|t| now.saturating_sub(*t) >= span) {
            recent.pop_front();
        }
        recent.push_back(now);
        let delay = self.backoff.delay(recent.len(), self.shared.random());
        #[cfg(feature = "observer")]
        self.shared.journal().record(
            crate::journal::Kind::Restart,
            st.children[idx].handle.path(),
            crate::journal::Detail::Restart {
                what: match self.strategy {
                    Strategy::OneForOne => "OneForOne",
                    Strategy::OneForAll => "OneForAll",
                    Strategy::RestForOne => "RestForOne",
                },
                delay,
            },
        );
        let scope = match self.strategy {
            Strategy::OneForOne => Scope::One,
            Strategy::OneForAll => Scope::All,
            Strategy::RestForOne => Scope::Rest,
        };
        Decision::Restart { scope, delay }
    }

    /// Aborts, at once, the siblings a group restart will restart (the crashed child is ending on its
    /// own). The supervisor's task joins and relaunches them; this only stops them sooner.
    fn abort_group(&self, who: *const (), scope: Scope) {
        let group: Vec<Arc<dyn ChildHandle>> = {
            let st = self.state.lock();
            let Some(idx) = st.children.iter().position(|e| e.handle.identity() == who) else {
                return;
            };
            let from = if scope == Scope::Rest { idx } else { 0 };
            st.children[from..].iter().map(|e| e.handle.clone()).collect()
        };
        for c in group.iter().rev().filter(|c| c.identity() != who) {
            c.abort();
        }
    }

    /// Hands a decision to this supervisor's task.
    fn submit(&self, child: Arc<dyn ChildHandle>, decision: Decision) {
        // The queue is unbounded and only closed when the node is killed, when nothing is left to do.
        let _ = self.events.try_push(Event { child, decision });
    }
}

impl ChildHandle for SupNode {
    fn path(&self) -> ActorPath<'_> {
        ActorPath::named(&self.path)
    }

    fn rejuvenate(&self) {
        SupNode::rejuvenate(self);
    }

    fn launch_after(&self, delay: Duration) {
        // A subtree is restarted rarely; its backoff waits in a task of its own.
        match self.me.upgrade() {
            Some(me) if !delay.is_zero() => {
                let clock = self.shared.clock().clone();
                let task = self.shared.spawn(async move {
                    clock.sleep(delay).await;
                    ChildHandle::launch(&*me);
                });
                *self.life.lock() = Life {
                    abort: Some(task.abort_handle()),
                    task: Some(task),
                };
            }
            _ => ChildHandle::launch(self),
        }
    }

    fn identity(&self) -> *const () {
        SupNode::identity(self)
    }

    fn launch(&self) {
        let Some(me) = self.me.upgrade() else { return };
        {
            let mut st = self.state.lock();
            st.failed = false;
            st.restarts.clear();
        }
        // Decisions queued for the previous incarnation are void: its whole subtree restarts now.
        while self.events.try_pop().is_some() {}
        let task = self.shared.spawn(me.clone().run());
        *self.life.lock() = Life {
            abort: Some(task.abort_handle()),
            task: Some(task),
        };
        let running = self.running_children();
        for child in running {
            child.launch();
        }
    }

    fn abort(&self) {
        if let Some(a) = self.life.lock().abort.take() {
            a.abort();
        }
        for child in self.snapshot().iter().rev() {
            child.abort();
        }
    }

    fn join(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let task = self.life.lock().task.take();
            if let Some(task) = task {
                task.join().await;
            }
            for child in self.snapshot() {
                child.join().await;
            }
        })
    }

    fn stop(&self) {
        for child in self.snapshot().iter().rev() {
            child.stop();
        }
    }

    fn halt(&self) {
        ChildHandle::abort(self);
    }

    fn resume(&self) {
        let running = self.running_children();
        for child in running {
            child.resume();
        }
    }

    fn kill(&self) {
        ChildHandle::abort(self);
        let children = std::mem::take(&mut self.state.lock().children);
        self.state.lock().failed = true;
        for e in children.iter().rev() {
            e.handle.kill();
        }
        self.events.close();
        self.shared.registry().remove(self.id, Some(&self.path));
    }
}

impl Inspect for SupNode {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            id: self.id,
            path: self.path.to_string(),
            stats: None,
        }
    }

    #[cfg(feature = "observer")]
    fn observe(&self) -> crate::stats::Observed {
        let period = self.intensity.period;
        let (now, span) = (self.shared.nanos_within(period), period.as_nanos() as u64);
        let st = self.state.lock();
        let used = st.restarts.iter().filter(|t| now.saturating_sub(**t) < span).count();
        crate::stats::Observed::Supervisor {
            strategy: format!("{:?}", self.strategy),
            used,
            max_restarts: self.intensity.max_restarts,
            period,
        }
    }

    #[cfg(feature = "observer")]
    fn rejuvenate_now(&self) {
        self.rejuvenate();
    }
}

impl SupNode {
    /// Rejuvenates every actor of the subtree: each ends after its current message and starts
    /// again; requests meanwhile wait in the mailboxes (within their deadlines) instead of failing.
    pub(crate) fn rejuvenate(&self) {
        for child in self.snapshot() {
            child.rejuvenate();
        }
    }
}
