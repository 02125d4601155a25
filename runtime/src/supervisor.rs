//! Supervisors: recursive microreboots.
//!
//! A supervisor owns an ordered list of children (actor slots and supervisors). When a child exits
//! it decides, under its lock, what happens: restart the child, restart its group (one-for-all,
//! rest-for-one), forget it (temporary, or transient that ended), or give up because its restart
//! intensity is exceeded. Giving up aborts its whole subtree and hands the decision to its parent;
//! at the root, the system fails and `main` exits non-zero.
//!
//! Invariants:
//! - Restarts are external: the supervisor aborts tasks, then joins them, then launches new ones, so
//!   a new instance never starts while the old one still runs. A lone actor restarted one-for-one is
//!   restarted in place by its own task (after the old instance is dropped), which is the same
//!   guarantee without a round trip.
//! - Lock order: `SupState` before a child's `Life` (launch); a child never holds its own lock while
//!   calling `decide`.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::crash::{CrashReason, CrashReport};
use crate::error::SpawnError;
use crate::mailbox::Mailbox;
use crate::registry::ActorId;
use crate::registry::{Inspect, Snapshot};
use crate::rt::{AbortHandle, Task};
use crate::slot::{Dedup, Slot, SlotOptions};
use crate::sync::{Arc, Mutex, Weak};
use crate::system::Shared;

/// Which children restart when one of them crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that crashed.
    #[default]
    OneForOne,
    /// Every child (for children that only make sense together).
    OneForAll,
    /// The child that crashed and every child started after it (for chains of dependencies).
    RestForOne,
}

/// When a child is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Restart {
    /// Always, whether it crashed or ended.
    #[default]
    Permanent,
    /// Only when it crashed; a normal end removes it.
    Transient,
    /// Never; it is removed when it crashes or ends.
    Temporary,
}

/// Restart intensity: at most `max_restarts` within `period`, or the supervisor gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within the period.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    /// 10 restarts within 10 seconds.
    fn default() -> Self {
        Intensity {
            max_restarts: 10,
            period: Duration::from_secs(10),
        }
    }
}

/// Exponential backoff between consecutive restarts, with jitter, capped.
///
/// Counted per child: the first restart of a child within the intensity window is immediate (as in
/// OTP); its n-th waits
/// `min(cap, base * 2^(n-2))`, spread at random over its upper half so that siblings do not restart
/// in lock step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the second restart within the window.
    pub base: Duration,
    /// Upper bound of any delay.
    pub cap: Duration,
}

impl Default for Backoff {
    /// 10 ms doubling up to 1 s.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// Restart at once, every time.
    pub fn none() -> Self {
        Backoff {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        }
    }

    /// The delay before the `nth` restart within the window (1-based), for a random value `r`.
    pub fn delay(&self, nth: usize, r: u64) -> Duration {
        if nth <= 1 || self.base.is_zero() {
            return Duration::ZERO;
        }
        let shift = (nth - 2).min(31) as u32;
        let full = self.base.saturating_mul(1u32 << shift).min(self.cap);
        let half = full / 2;
        let spread = half.as_nanos() as u64;
        half + Duration::from_nanos(if spread == 0 { 0 } else { r % (spread + 1) })
    }
}

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
    fn path(&self) -> &str;
    /// Pointer identity, to find the child in its supervisor's list.
    fn identity(&self) -> *const ();
    /// Starts a fresh instance (or subtree). The previous one must have been aborted and joined.
    fn launch(&self);
    /// Starts a fresh instance after `delay` (the backoff), without making the caller wait.
    fn launch_after(&self, delay: Duration);
    /// The external power-off switch: aborts the instance (or subtree) without waiting.
    fn abort(&self);
    /// Waits until every aborted task has ended.
    fn join(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Aborts and removes it for good.
    fn kill(&self);
    /// Planned restart through the crash path, after the current message (a subtree: every actor).
    fn rejuvenate(&self);
}

/// A declared child of a supervisor: an actor ([`ActorSpec`]) or a supervisor ([`SupervisorSpec`]).
pub struct ChildSpec {
    kind: Kind,
}

enum Kind {
    Actor(Box<ActorMaker>),
    Supervisor(SupervisorSpec),
}

type ActorMaker = dyn FnOnce(&Arc<SupNode>) -> Result<Arc<dyn ChildHandle>, SpawnError> + Send;

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Actor(_) => f.write_str("ChildSpec::Actor"),
            Kind::Supervisor(s) => f.debug_tuple("ChildSpec::Supervisor").field(s).finish(),
        }
    }
}

/// How to start an actor child: its start arguments (kept for every restart), name, restart type
/// and mailbox capacity.
pub struct ActorSpec<A: Actor> {
    name: Option<String>,
    args: A::Args,
    restart: Restart,
    capacity: Option<usize>,
    handling: Option<Duration>,
    rejuvenate_messages: Option<u64>,
    rejuvenate_age: Option<Duration>,
    dedicated: bool,
    dedup: Option<Dedup<A::Reply>>,
    _actor: PhantomData<fn() -> A>,
}

impl<A: Actor> fmt::Debug for ActorSpec<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActorSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl<A: Actor> ActorSpec<A> {
    /// An unnamed, permanent child.
    pub fn new(args: A::Args) -> Self {
        ActorSpec {
            name: None,
            args,
            restart: Restart::Permanent,
            capacity: None,
            handling: None,
            rejuvenate_messages: None,
            rejuvenate_age: None,
            dedicated: false,
            dedup: None,
            _actor: PhantomData,
        }
    }

    /// A named, permanent child: it can be looked up at `supervisor_path/name`.
    pub fn named(name: impl Into<String>, args: A::Args) -> Self {
        ActorSpec {
            name: Some(name.into()),
            ..Self::new(args)
        }
    }

    /// Sets the name (the child can then be looked up at `supervisor_path/name`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the mailbox capacity (the system default otherwise).
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Sets the handling lease: the watchdog crash-restarts the actor when one message runs longer
    /// (never longer than the policy's `max_handling`).
    pub fn handling_lease(mut self, lease: Duration) -> Self {
        self.handling = Some(lease);
        self
    }

    /// Rejuvenation: restart the actor preemptively after it has handled `n` messages.
    pub fn rejuvenate_after_messages(mut self, n: u64) -> Self {
        self.rejuvenate_messages = Some(n.max(1));
        self
    }

    /// Rejuvenation: restart the actor preemptively once an instance is `age` old.
    pub fn rejuvenate_after(mut self, age: Duration) -> Self {
        self.rejuvenate_age = Some(age);
        self
    }

    /// Runs the actor on a dedicated OS thread, for actors that must block: blocking there starves
    /// no other actor. Supervision, mailbox and watchdog are the same; an instance stuck for good is
    /// abandoned with its thread and replaced on a new one.
    pub fn blocking(mut self) -> Self {
        self.dedicated = true;
        self
    }

    fn build(self, parent: &Arc<SupNode>) -> Result<Arc<Slot<A>>, SpawnError> {
        let shared = parent.shared.clone();
        let capacity = self.capacity.unwrap_or(shared.config.mailbox_capacity);
        let weak = Arc::downgrade(parent);
        let args = self.args;
        let opts = SlotOptions {
            handling: shared.config.policy.handling(self.handling),
            rejuvenate_messages: self.rejuvenate_messages,
            rejuvenate_age: self.rejuvenate_age,
            dedicated: self.dedicated,
        };
        let dedup = self.dedup;
        let slot = shared.registry.insert(&parent.path, self.name.as_deref(), |id, path| {
            Slot::<A>::new(id, path, shared.clone(), args, capacity, weak, opts, dedup)
        })?;
        parent.adopt(slot.clone(), self.restart)?;
        Ok(slot)
    }
}

impl<A: Actor> ActorSpec<A>
where
    A::Reply: Clone,
{
    /// Keeps a window of the last `window` idempotency keys and their replies: a keyed request
    /// (see `Ask::key`) repeated within the window is answered from it and not executed again.
    /// The window lives in the slot, so it survives restarts of the actor (not of the process: for
    /// that, use `store::StoreExt::apply_once`).
    pub fn dedup(mut self, window: usize) -> Self {
        self.dedup = Some(Dedup::new(window, A::Reply::clone));
        self
    }
}

impl<A: Actor> From<ActorSpec<A>> for ChildSpec {
    fn from(spec: ActorSpec<A>) -> Self {
        ChildSpec {
            kind: Kind::Actor(Box::new(move |parent| {
                spec.build(parent).map(|s| s as Arc<dyn ChildHandle>)
            })),
        }
    }
}

impl From<SupervisorSpec> for ChildSpec {
    fn from(spec: SupervisorSpec) -> Self {
        ChildSpec {
            kind: Kind::Supervisor(spec),
        }
    }
}

/// How to start a supervisor: name, strategy, intensity, backoff and its declared children.
///
/// ```
/// use crashonly::prelude::*;
/// use std::time::Duration;
///
/// let spec = SupervisorSpec::new("app", Strategy::RestForOne)
///     .intensity(5, Duration::from_secs(30))
///     .backoff(Backoff { base: Duration::from_millis(50), cap: Duration::from_secs(2) });
/// assert_eq!(spec.name(), "app");
/// ```
#[derive(Debug)]
pub struct SupervisorSpec {
    name: String,
    strategy: Strategy,
    intensity: Option<Intensity>,
    backoff: Backoff,
    restart: Restart,
    children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A permanent supervisor with the policy's intensity, default backoff and no children yet.
    pub fn new(name: impl Into<String>, strategy: Strategy) -> Self {
        SupervisorSpec {
            name: name.into(),
            strategy,
            intensity: None,
            backoff: Backoff::default(),
            restart: Restart::Permanent,
            children: Vec::new(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// At most `max_restarts` within `period`.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.intensity = Some(Intensity { max_restarts, period });
        self
    }

    /// Backoff between consecutive restarts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Its restart type as a child of its own supervisor.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Declares a child; children start in declaration order.
    pub fn child(mut self, child: impl Into<ChildSpec>) -> Self {
        self.children.push(child.into());
        self
    }
}

struct Entry {
    restart: Restart,
    handle: Arc<dyn ChildHandle>,
    /// This child's own restarts within the intensity period: its backoff grows with them, so
    /// one crash-looping child does not slow down the restarts of its healthy siblings.
    recent: VecDeque<crate::clock::Instant>,
}

#[derive(Default)]
struct SupState {
    children: Vec<Entry>,
    restarts: VecDeque<crate::clock::Instant>,
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
    pub(crate) id: ActorId,
    pub(crate) path: Arc<str>,
    pub(crate) shared: Arc<Shared>,
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
    /// Builds a supervisor and its declared subtree (nothing runs until `launch`).
    pub(crate) fn build(
        spec: SupervisorSpec,
        shared: Arc<Shared>,
        parent: Option<&Arc<SupNode>>,
    ) -> Result<Arc<SupNode>, SpawnError> {
        let (parent_path, name) = match parent {
            Some(p) => (p.path.to_string(), Some(spec.name.as_str())),
            None => (String::new(), None),
        };
        let weak_parent = parent.map(Arc::downgrade).unwrap_or_default();
        let node = shared.registry.insert(&parent_path, name, |id, path| {
            let path: Arc<str> = if parent.is_none() { "/".into() } else { path };
            Arc::new_cyclic(|me| SupNode {
                id,
                path,
                shared: shared.clone(),
                strategy: spec.strategy,
                intensity: spec.intensity.unwrap_or(shared.config.policy.intensity()),
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
    fn adopt(&self, handle: Arc<dyn ChildHandle>, restart: Restart) -> Result<(), SpawnError> {
        let mut st = self.state.lock();
        if st.failed {
            drop(st);
            handle.kill();
            return Err(SpawnError::SupervisorDown(self.path.to_string()));
        }
        st.children.push(Entry {
            restart,
            handle,
            recent: VecDeque::new(),
        });
        Ok(())
    }

    /// Adds and starts a dynamic actor child.
    pub(crate) fn spawn<A: Actor>(self: &Arc<Self>, spec: ActorSpec<A>) -> Result<ActorRef<A>, SpawnError> {
        let slot = spec.build(self)?;
        slot.launch_child();
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
            .map(|e| e.handle.path().to_owned())
            .collect()
    }

    /// Decides what a child's exit leads to, recording the restart against the intensity.
    pub(crate) fn decide(&self, who: *const (), exit: &Exit) -> Decision {
        let mut st = self.state.lock();
        if st.failed {
            return Decision::Ignore;
        }
        let Some(idx) = st.children.iter().position(|e| e.handle.identity() == who) else {
            return Decision::Ignore;
        };
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
        let now = self.shared.clock.now();
        let period = self.intensity.period;
        while st
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= period)
        {
            st.restarts.pop_front();
        }
        st.restarts.push_back(now);
        if st.restarts.len() > self.intensity.max_restarts as usize {
            st.failed = true;
            let report = CrashReport {
                path: self.path.to_string(),
                reason: CrashReason::IntensityExceeded {
                    max_restarts: self.intensity.max_restarts,
                    period_ms: period.as_millis(),
                },
                envelope: None,
            };
            return Decision::Escalate(Arc::new(report));
        }
        let recent = &mut st.children[idx].recent;
        while recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= period)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        let delay = self.backoff.delay(recent.len(), self.shared.random());
        let scope = match self.strategy {
            Strategy::OneForOne => Scope::One,
            Strategy::OneForAll => Scope::All,
            Strategy::RestForOne => Scope::Rest,
        };
        Decision::Restart { scope, delay }
    }

    /// Aborts, at once, the siblings a group restart will restart (the crashed child is ending on its
    /// own). The supervisor's task joins and relaunches them; this only stops them sooner.
    pub(crate) fn abort_group(&self, who: *const (), scope: Scope) {
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
    pub(crate) fn submit(&self, child: Arc<dyn ChildHandle>, decision: Decision) {
        // The queue is unbounded and only closed when the node is killed, when nothing is left to do.
        let _ = self.events.try_push(Event { child, decision });
    }

    async fn run(self: Arc<Self>) {
        while let Some(Event { child, decision }) = self.events.pop().await {
            match decision {
                Decision::Restart { scope, delay } => self.restart(child, scope, delay).await,
                Decision::Remove => child.kill(),
                Decision::Escalate(report) => {
                    self.give_up(report).await;
                    return;
                }
                Decision::Ignore => {}
            }
        }
    }

    async fn restart(&self, child: Arc<dyn ChildHandle>, scope: Scope, delay: Duration) {
        let group: Vec<Arc<dyn ChildHandle>> = {
            let st = self.state.lock();
            let Some(idx) = st.children.iter().position(|e| e.handle.identity() == child.identity()) else {
                return;
            };
            let range = match scope {
                Scope::One => idx..idx + 1,
                Scope::All => 0..st.children.len(),
                Scope::Rest => idx..st.children.len(),
            };
            st.children[range].iter().map(|e| e.handle.clone()).collect()
        };
        for c in group.iter().rev() {
            c.abort();
        }
        for c in &group {
            c.join().await;
        }
        if self.state.lock().failed {
            return;
        }
        tracing::info!(supervisor = %self.path, scope = ?scope, children = group.len(), "restarting");
        if let [only] = group.as_slice() {
            // One child: its backoff runs in its own new task; other restarts need not wait.
            only.launch_after(delay);
            return;
        }
        if !delay.is_zero() {
            self.shared.clock.sleep(delay).await;
        }
        for c in &group {
            c.launch();
        }
    }

    /// Past its intensity: abort the whole subtree, then let the parent decide (or fail the system).
    async fn give_up(&self, report: Arc<CrashReport>) {
        tracing::error!(supervisor = %self.path, crash = %report, "supervisor gave up, escalating");
        let children = self.snapshot();
        for c in children.iter().rev() {
            c.abort();
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
            _ => self.shared.fail(report),
        }
    }

    fn identity(&self) -> *const () {
        self as *const Self as *const ()
    }

    fn snapshot(&self) -> Vec<Arc<dyn ChildHandle>> {
        self.state.lock().children.iter().map(|e| e.handle.clone()).collect()
    }
}

impl ChildHandle for SupNode {
    fn path(&self) -> &str {
        &self.path
    }

    fn rejuvenate(&self) {
        SupNode::rejuvenate(self);
    }

    fn launch_after(&self, delay: Duration) {
        // A subtree is restarted rarely; its backoff waits in a task of its own.
        match self.me.upgrade() {
            Some(me) if !delay.is_zero() => {
                let clock = self.shared.clock.clone();
                let task = self.shared.exec.spawn(async move {
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
        let task = self.shared.exec.spawn(me.clone().run());
        *self.life.lock() = Life {
            abort: Some(task.abort_handle()),
            task: Some(task),
        };
        for child in self.snapshot() {
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

    fn kill(&self) {
        ChildHandle::abort(self);
        let children = std::mem::take(&mut self.state.lock().children);
        self.state.lock().failed = true;
        for e in children.iter().rev() {
            e.handle.kill();
        }
        self.events.close();
        self.shared.registry.remove(self.id);
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

impl<A: Actor> Slot<A> {
    fn launch_child(&self) {
        ChildHandle::launch(self);
    }
}

/// A handle on a supervisor: add children at run time, find them by name.
#[derive(Clone, Debug)]
pub struct SupervisorRef {
    node: Arc<SupNode>,
}

impl SupervisorRef {
    pub(crate) fn new(node: Arc<SupNode>) -> Self {
        SupervisorRef { node }
    }

    /// The supervisor's path in the tree.
    pub fn path(&self) -> &str {
        &self.node.path
    }

    /// The id in the registry.
    pub fn id(&self) -> ActorId {
        self.node.id
    }

    /// Adds a dynamic actor child and starts it; returns at once (its `start` runs in its own task,
    /// and messages sent meanwhile wait in its mailbox).
    pub fn spawn<A: Actor>(&self, spec: ActorSpec<A>) -> Result<ActorRef<A>, SpawnError> {
        self.node.spawn(spec)
    }

    /// Adds a dynamic supervisor child and starts its subtree.
    pub fn spawn_supervisor(&self, spec: SupervisorSpec) -> Result<SupervisorRef, SpawnError> {
        self.node.spawn_supervisor(spec).map(SupervisorRef::new)
    }

    /// The paths of the current children, in start order.
    pub fn children(&self) -> Vec<String> {
        self.node.children()
    }

    /// A named actor child.
    pub fn child<A: Actor>(&self, name: &str) -> Option<ActorRef<A>> {
        let path = join_path(&self.node.path, name);
        self.node.shared.lookup_actor(&path)
    }

    /// Rejuvenates the whole subtree (see [`ActorRef::rejuvenate`]).
    pub fn rejuvenate(&self) {
        self.node.rejuvenate();
    }

    /// A named supervisor child.
    pub fn supervisor(&self, name: &str) -> Option<SupervisorRef> {
        let path = join_path(&self.node.path, name);
        self.node.shared.lookup_supervisor(&path)
    }
}

fn join_path(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}
