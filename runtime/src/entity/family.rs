//! The family engine: which activation takes a key's messages, when it is passivated, and what a
//! crash of one leads to.
//!
//! Invariants:
//! - One live instance per key: a key has one entry; a new activation of a key whose slot is
//!   closed (passivating, or given up) waits as the entry's `next` and is launched only once the
//!   old instance is gone (its own task reported a normal end, after dropping it; or its task was
//!   joined after a crash).
//! - Passivation closes an idle slot's mailbox only if it is empty (`Slot::try_passivate`):
//!   a message pushed before finds it open and is handled; one pushed after finds it closed and
//!   looks the key up again, which makes the next activation.
//! - Locks: `Inner` is taken before a slot's mailbox locks and the registry's (activations are
//!   registered under it); no slot, supervisor or waker is called while it is held, except
//!   mailbox closes and `is_closed`.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::Duration;

use super::{Entity, EntityKey, EntityStats};
use crate::clock::Instant;
use crate::crash::{CrashReason, CrashReport};
use crate::dedup::Dedup;
use crate::error::DeliveryError;
use crate::path::ActorPath;
use crate::policy::{Backoff, Intensity};
use crate::registry::ActorId;
use crate::reply::answer;
use crate::rt::AbortHandle;
use crate::shared::Shared;
use crate::slot::{Slot, SlotOptions};
use crate::stats::SlotState;
use crate::supervisor::{ChildHandle, Decision, Exit, Parent, Scope};
use crate::sync::{Arc, AtomicU8, Mutex, Ordering, Stat, Weak};

/// How a family makes the start arguments of one key's entity.
pub(crate) type MakeArgs<A> = Arc<dyn Fn(&<A as Entity>::Key) -> <A as crate::Actor>::Args + Send + Sync>;

/// A dedup window for each activation: its size, and how to copy a reply.
pub(crate) type DedupWindow<A> = (usize, fn(&<A as crate::Actor>::Reply) -> <A as crate::Actor>::Reply);

/// An activation with its last sign of life.
type Aged<A> = (u64, Arc<Slot<A>>);

/// An activation and its parent.
type Activation<A> = (Arc<Slot<A>>, Arc<Link<A>>);

/// A family's settings, already bounded by the policy.
pub(crate) struct Settings<A: Entity> {
    pub(crate) slot: SlotOptions,
    pub(crate) idle: Duration,
    pub(crate) max_active: usize,
    pub(crate) entity: Intensity,
    pub(crate) family: Intensity,
    pub(crate) backoff: Backoff,
    pub(crate) quarantine: Duration,
    pub(crate) dedup: Option<DedupWindow<A>>,
    pub(crate) max_key_len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// Activations are launched.
    Running,
    /// Between an abort by its supervisor (or its own escalation) and its next launch: messages
    /// wait in the activations' mailboxes.
    Down,
    /// Terminated by hand, or gone: sends get `Dead`.
    Stopped,
}

struct Entry<A: Entity> {
    slot: Arc<Slot<A>>,
    /// The slot's parent, which knows the key (held here: the slot holds it weakly).
    link: Arc<Link<A>>,
    /// This key's restarts within the entity intensity period (boxed on the first: most keys
    /// never crash, and every live key's entry stays 24 bytes smaller).
    #[expect(clippy::box_collection, reason = "8 bytes per live key instead of a VecDeque's 32")]
    recent: Option<Box<VecDeque<Instant>>>,
    /// The next activation, waiting for `slot`'s instance to be gone.
    next: Option<Activation<A>>,
}

struct Inner<A: Entity> {
    live: HashMap<A::Key, Entry<A>>,
    /// Distinct keys (by hash) that crashed within the family period.
    crashed: VecDeque<(Instant, u64)>,
    /// Keys that crashed past the entity intensity, refused until then.
    quarantine: HashMap<A::Key, Instant>,
    run: Run,
}

#[derive(Default)]
struct Counters {
    activations: Stat,
    passivated_idle: Stat,
    passivated_cap: Stat,
    crashes: Stat,
    given_up: Stat,
    /// Requests refused `RetryAfter` because their key was in quarantine.
    refused: Stat,
}

pub(crate) struct Family<A: Entity> {
    pub(crate) id: ActorId,
    pub(crate) path: Arc<str>,
    shared: Arc<Shared>,
    me: Weak<Family<A>>,
    parent: Weak<dyn Parent>,
    make: MakeArgs<A>,
    cfg: Settings<A>,
    inner: Mutex<Inner<A>>,
    counters: Counters,
    /// Set while one caller passivates the least recently used (the others need not scan too).
    evicting: AtomicU8,
    sweeper: Mutex<Option<AbortHandle>>,
}

/// An activation's parent: its family, and the key it is for.
struct Link<A: Entity> {
    family: Weak<Family<A>>,
    key: A::Key,
}

impl<A: Entity> Parent for Link<A> {
    fn decide(&self, who: *const (), exit: &Exit) -> Decision {
        match self.family.upgrade() {
            Some(f) => f.decide(&self.key, who, exit),
            None => Decision::Ignore,
        }
    }

    /// Entities restart one at a time: there is no group.
    fn abort_group(&self, _who: *const (), _scope: Scope) {}

    /// An activation crashed from outside (watchdog, `kill`) and restarts: its aborted task is
    /// joined first, then it is launched again, as a supervisor does.
    fn submit(&self, child: Arc<dyn ChildHandle>, decision: Decision) {
        let (Some(f), Decision::Restart { delay, .. }) = (self.family.upgrade(), decision) else {
            return;
        };
        let family = self.family.clone();
        f.shared.spawn(async move {
            child.join().await;
            if family.upgrade().is_some_and(|f| f.inner.lock().run == Run::Running) {
                child.launch_after(delay);
            }
        });
    }
}

impl<A: Entity> Family<A> {
    pub(crate) fn new(
        (id, path): (ActorId, Arc<str>),
        shared: Arc<Shared>,
        parent: Weak<dyn Parent>,
        make: MakeArgs<A>,
        cfg: Settings<A>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Family {
            id,
            path,
            shared,
            me: me.clone(),
            parent,
            make,
            cfg,
            inner: Mutex::new(Inner {
                live: HashMap::new(),
                crashed: VecDeque::new(),
                quarantine: HashMap::new(),
                run: Run::Down,
            }),
            counters: Counters::default(),
            evicting: AtomicU8::new(0),
            sweeper: Mutex::new(None),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A new activation of `key`, registered, not launched.
    fn activation(&self, key: &A::Key) -> Activation<A> {
        let link = Arc::new(Link {
            family: self.me.clone(),
            key: key.clone(),
        });
        let parent: Arc<dyn Parent> = link.clone();
        let weak: Weak<dyn Parent> = Arc::downgrade(&parent);
        let path: Arc<str> = format!("{}/{}", self.path, key).into();
        let args = (self.make)(key);
        let dedup = self.cfg.dedup.map(|(window, clone)| Dedup::new(window, clone));
        let opts = self.cfg.slot.clone();
        let shared = self.shared.clone();
        let slot = self.shared.registry().insert_at(path, |id, path, named| {
            Slot::new((id, path, named), shared, args, weak, opts, dedup)
        });
        self.counters.activations.fetch_add(1, Ordering::Relaxed);
        meter!(self.cfg.slot.meters, activated());
        (slot, link)
    }

    /// The slot that takes `key`'s messages now, activating the entity if it is not live.
    pub(crate) fn resolve(&self, key: &A::Key) -> Result<Arc<Slot<A>>, DeliveryError> {
        let len = key.key_len();
        if len > self.cfg.max_key_len {
            return Err(DeliveryError::KeyTooLong {
                len,
                max: self.cfg.max_key_len,
            });
        }
        let mut inner = self.inner.lock();
        if inner.run == Run::Stopped {
            return Err(DeliveryError::Dead);
        }
        if let Some(until) = inner.quarantine.get(key).copied() {
            let now = self.shared.now();
            if now < until {
                meter!(self.cfg.slot.meters, retry_after());
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                return Err(DeliveryError::RetryAfter(until.saturating_duration_since(now)));
            }
            inner.quarantine.remove(key);
        }
        if let Some(e) = inner.live.get_mut(key) {
            if let Some((next, _)) = &e.next {
                return Ok(next.clone());
            }
            if !e.slot.mailbox.is_closed() {
                return Ok(e.slot.clone());
            }
            // Passivating: the next activation waits for this one to be gone.
            let (slot, link) = self.activation(key);
            e.next = Some((slot.clone(), link));
            return Ok(slot);
        }
        let (slot, link) = self.activation(key);
        inner.live.insert(
            key.clone(),
            Entry {
                slot: slot.clone(),
                link,
                recent: None,
                next: None,
            },
        );
        let over = inner.live.len() > self.cfg.max_active;
        let running = inner.run == Run::Running;
        drop(inner);
        if running {
            ChildHandle::launch(&*slot);
        }
        if over {
            self.evict();
        }
        Ok(slot)
    }

    /// The live activation of `key`, if there is one (nothing is activated).
    pub(crate) fn current(&self, key: &A::Key) -> Option<Arc<Slot<A>>> {
        let inner = self.inner.lock();
        let e = inner.live.get(key)?;
        match &e.next {
            Some((next, _)) => Some(next.clone()),
            None => (!e.slot.mailbox.is_closed()).then(|| e.slot.clone()),
        }
    }

    /// Passivates `key` now if it is live and idle (nothing queued, nothing being handled).
    pub(crate) fn passivate(&self, key: &A::Key) -> bool {
        let slot = {
            let inner = self.inner.lock();
            match inner.live.get(key) {
                Some(e) if e.next.is_none() => e.slot.clone(),
                _ => return false,
            }
        };
        let done = slot.try_passivate();
        if done {
            self.counters.passivated_idle.fetch_add(1, Ordering::Relaxed);
            meter!(self.cfg.slot.meters, passivated(1, 0));
        }
        done
    }

    /// Passivates every activation idle for the family's `idle`; how many.
    pub(crate) fn sweep(&self) -> usize {
        let now = self.shared.nanos();
        let idle = self.cfg.idle.as_nanos() as u64;
        let idle_ones: Vec<Arc<Slot<A>>> = {
            let mut inner = self.inner.lock();
            let at = self.shared.now();
            inner.quarantine.retain(|_, until| *until > at);
            inner
                .live
                .values()
                .filter(|e| e.next.is_none() && now.saturating_sub(e.slot.last_active()) >= idle)
                .map(|e| e.slot.clone())
                .collect()
        };
        let n = idle_ones.iter().filter(|s| s.try_passivate()).count();
        self.counters.passivated_idle.fetch_add(n as u64, Ordering::Relaxed);
        meter!(self.cfg.slot.meters, passivated(n as u64, 0));
        // Over the cap after a burst (activations that were starting could not be passivated
        // then): the timer brings the family back under it without waiting for the next one.
        if self.inner.lock().live.len() > self.cfg.max_active {
            self.evict();
        }
        n
    }

    /// Over `max_active`: passivates the least recently active idle activations, down to 90% of
    /// the cap (so that the scan is paid once per tenth of the cap, not once per activation).
    fn evict(&self) {
        if !self.evicting.replace_if(0, 1) {
            return;
        }
        let (live, mut by_age): (usize, Vec<Aged<A>>) = {
            let inner = self.inner.lock();
            // Only running activations can be passivated; one still starting (or not yet
            // launched) is not a candidate, and does not use up a place among them.
            let idle = inner
                .live
                .values()
                .filter(|e| e.next.is_none() && e.slot.state() == SlotState::Running)
                .map(|e| (e.slot.last_active(), e.slot.clone()))
                .collect();
            (inner.live.len(), idle)
        };
        let keep = self.cfg.max_active - self.cfg.max_active / 10;
        let excess = live.saturating_sub(keep).min(by_age.len());
        if excess > 0 && excess < by_age.len() {
            by_age.select_nth_unstable_by_key(excess, |(at, _)| *at);
        }
        let n = by_age.iter().take(excess).filter(|(_, s)| s.try_passivate()).count();
        self.counters.passivated_cap.fetch_add(n as u64, Ordering::Relaxed);
        meter!(self.cfg.slot.meters, passivated(0, n as u64));
        self.evicting.store(0, Ordering::Relaxed);
    }

    /// Decides what the exit of `key`'s activation `who` leads to.
    fn decide(&self, key: &A::Key, who: *const (), exit: &Exit) -> Decision {
        let mut inner = self.inner.lock();
        if inner.run != Run::Running {
            // Restarting or gone: the family deals with its activations itself.
            return Decision::Ignore;
        }
        let Some(e) = inner.live.get_mut(key) else {
            return Decision::Ignore;
        };
        if e.slot.identity() != who {
            return Decision::Ignore;
        }
        let report = match exit {
            Exit::Crash(report) => report.clone(),
            // Passivated, or it stopped itself: its instance is gone (dropped before this call).
            Exit::Normal | Exit::Rejuvenated => {
                let left = e.slot.mailbox.close();
                if !left.is_empty() && e.next.is_none() {
                    // It stopped itself with messages queued: they go to the next activation.
                    e.next = Some(self.activation(key));
                }
                let launch = self.promote(&mut inner, key, left);
                drop(inner);
                if let Some(slot) = launch {
                    ChildHandle::launch(&*slot);
                }
                return Decision::Remove;
            }
        };
        self.counters.crashes.fetch_add(1, Ordering::Relaxed);
        let now = self.shared.now();
        let hash = inner.live.hasher().hash_one(key);
        let period = self.cfg.family.period;
        while inner
            .crashed
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= period)
        {
            inner.crashed.pop_front();
        }
        if !inner.crashed.iter().any(|(_, h)| *h == hash) {
            inner.crashed.push_back((now, hash));
        }
        if inner.crashed.len() > self.cfg.family.max_restarts as usize {
            // A bug that crashes every key: the family itself crashes.
            inner.run = Run::Down;
            drop(inner);
            self.escalate(&report);
            return Decision::Ignore;
        }
        let e = inner.live.get_mut(key).expect("looked up above, under the same lock");
        let passivating = e.slot.mailbox.is_closed();
        let period = self.cfg.entity.period;
        let recent = e.recent.get_or_insert_default();
        while recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= period)
        {
            recent.pop_front();
        }
        recent.push_back(now);
        let restarts = recent.len();
        if !passivating && restarts <= self.cfg.entity.max_restarts as usize {
            let delay = self.cfg.backoff.delay(restarts, self.shared.random());
            #[cfg(feature = "observer")]
            self.shared.journal().record(
                crate::journal::Kind::Restart,
                ChildHandle::path(&*e.slot),
                crate::journal::Detail::Restart { what: "entity", delay },
            );
            return Decision::Restart {
                scope: Scope::One,
                delay,
            };
        }
        let mut queued = Vec::new();
        if !passivating {
            // Past its own intensity: this key gives up for a while; the others go on.
            self.counters.given_up.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(family = %self.path, key = %key, crash = %report, "entity gave up: quarantined");
            #[cfg(feature = "observer")]
            let detail = crate::journal::Detail::Text(format!("entity quarantined: {}", report.reason));
            #[cfg(feature = "observer")]
            self.shared
                .journal()
                .record(crate::journal::Kind::Escalation, ChildHandle::path(&*e.slot), detail);
            queued = e.slot.mailbox.close();
        }
        let old = e.slot.clone();
        if !passivating {
            inner.quarantine.insert(key.clone(), now + self.cfg.quarantine);
        }
        // Crashed inside, its instance is gone already (dropped before this call): the next
        // activation may start now. Aborted from outside, its task is joined first.
        let aborted = old.being_aborted();
        let launch = if aborted {
            None
        } else {
            self.promote(&mut inner, key, Vec::new())
        };
        drop(inner);
        // Queued behind the crash, they never ran; their askers learn why the key gave up (a
        // report whose reason is `StartFailed` says the entity could not even recover).
        for env in queued {
            answer(env.reply, Err(DeliveryError::Crashed(report.clone())));
        }
        match launch {
            Some(slot) => ChildHandle::launch(&*slot),
            None if aborted => self.end_after_join(old, key.clone()),
            None => {}
        }
        Decision::Remove
    }

    /// Replaces the entry's gone activation by its next one (returned, to be launched if the
    /// family runs) or removes the entry; `left`, messages of the gone one, go to the next.
    fn promote(&self, inner: &mut Inner<A>, key: &A::Key, left: Vec<crate::slot::Env<A>>) -> Option<Arc<Slot<A>>> {
        let e = inner.live.get_mut(key)?;
        match e.next.take() {
            Some((slot, link)) => {
                for env in left.into_iter().rev() {
                    if let Err(env) = slot.mailbox.push_front(env) {
                        answer(env.reply, Err(DeliveryError::Dead));
                    }
                }
                e.slot = slot.clone();
                e.link = link;
                (inner.run == Run::Running).then_some(slot)
            }
            None => {
                inner.live.remove(key);
                None
            }
        }
    }

    /// Once the task of `old` (a crashed activation that does not restart) has ended, its entry
    /// goes to its next activation, or away.
    fn end_after_join(&self, old: Arc<Slot<A>>, key: A::Key) {
        let family = self.me.clone();
        self.shared.spawn(async move {
            ChildHandle::join(&*old).await;
            let Some(f) = family.upgrade() else { return };
            let launch = {
                let mut inner = f.inner.lock();
                match inner.live.get(&key) {
                    Some(e) if Arc::ptr_eq(&e.slot, &old) => f.promote(&mut inner, &key, Vec::new()),
                    _ => None,
                }
            };
            if let Some(slot) = launch {
                ChildHandle::launch(&*slot);
            }
        });
    }

    /// The family's own crash (too many keys crashed): its supervisor decides.
    fn escalate(&self, cause: &CrashReport) {
        let report = Arc::new(CrashReport {
            path: self.path.to_string(),
            reason: CrashReason::IntensityExceeded {
                max_restarts: self.cfg.family.max_restarts,
                period_ms: self.cfg.family.period.as_millis(),
            },
            envelope: cause.envelope.clone(),
        });
        tracing::error!(family = %self.path, crash = %cause, "entity family gave up: too many keys crashed");
        // Counted among the escalations (`crashonly_escalations_total`); the parent's decision is
        // made here and now, so there is no "escalating" interval for `/readyz` to see.
        #[cfg(feature = "metrics")]
        drop(self.shared.meters().escalation());
        let (Some(parent), Some(me)) = (self.parent.upgrade(), self.me.upgrade()) else {
            return;
        };
        let id = ChildHandle::identity(&*me);
        let decision = parent.decide(id, &Exit::Crash(report));
        match &decision {
            Decision::Restart { scope, .. } if *scope != Scope::One => parent.abort_group(id, *scope),
            _ => {}
        }
        if !matches!(decision, Decision::Ignore) {
            parent.submit(me, decision);
        }
    }

    pub(crate) fn stats(&self) -> EntityStats {
        let inner = self.inner.lock();
        let c = &self.counters;
        EntityStats {
            active: inner.live.len(),
            max_active: self.cfg.max_active,
            activations: c.activations.load(Ordering::Relaxed),
            passivated_idle: c.passivated_idle.load(Ordering::Relaxed),
            passivated_cap: c.passivated_cap.load(Ordering::Relaxed),
            crashes: c.crashes.load(Ordering::Relaxed),
            given_up: c.given_up.load(Ordering::Relaxed),
            retry_after: c.refused.load(Ordering::Relaxed),
            quarantined: inner.quarantine.len(),
        }
    }

    /// Up to `limit` keys with a live activation (in no particular order).
    pub(crate) fn active_keys(&self, limit: usize) -> Vec<A::Key> {
        self.inner.lock().live.keys().take(limit).cloned().collect()
    }

    /// Every activation, current and waiting.
    fn slots(&self) -> Vec<Arc<Slot<A>>> {
        let inner = self.inner.lock();
        let both = |e: &Entry<A>| [Some(e.slot.clone()), e.next.as_ref().map(|(n, _)| n.clone())];
        inner.live.values().flat_map(both).flatten().collect()
    }

    fn start_sweeper(&self) {
        // No periodic task in a loom model: a model passivates by hand.
        if cfg!(crashonly_loom) {
            return;
        }
        let every = (self.cfg.idle / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let family = self.me.clone();
        let clock = self.shared.clock().clone();
        let task = self.shared.spawn(async move {
            loop {
                clock.sleep(every).await;
                match family.upgrade() {
                    Some(f) => f.sweep(),
                    None => return,
                };
            }
        });
        if let Some(old) = self.sweeper.lock().replace(task.abort_handle()) {
            old.abort();
        }
    }

    fn stop_sweeper(&self) {
        if let Some(s) = self.sweeper.lock().take() {
            s.abort();
        }
    }
}

impl<A: Entity> ChildHandle for Family<A> {
    fn path(&self) -> ActorPath<'_> {
        ActorPath::named(&self.path)
    }

    fn identity(&self) -> *const () {
        self as *const Self as *const ()
    }

    /// Starts serving: activations that kept messages through a restart of the family run
    /// again; the others are passivated by it (their next message activates them).
    fn launch(&self) {
        let mut launch = Vec::new();
        let mut gone = Vec::new();
        {
            let mut inner = self.inner.lock();
            if inner.run == Run::Stopped {
                return;
            }
            inner.run = Run::Running;
            inner.crashed.clear();
            let keys: Vec<A::Key> = inner.live.keys().cloned().collect();
            for key in keys {
                let e = inner.live.get_mut(&key).expect("a key just listed");
                if e.next.is_some() {
                    // The old instance was aborted and joined with the family: the next takes over.
                    gone.push(e.slot.clone());
                    let left = e.slot.mailbox.close();
                    launch.extend(self.promote(&mut inner, &key, left));
                } else if e.slot.mailbox.is_closed() || e.slot.mailbox.close_if_empty() {
                    gone.push(e.slot.clone());
                    inner.live.remove(&key);
                } else {
                    launch.push(e.slot.clone());
                }
            }
        }
        for slot in gone {
            ChildHandle::kill(&*slot);
        }
        for slot in launch {
            ChildHandle::launch(&*slot);
        }
        self.start_sweeper();
    }

    fn launch_after(&self, delay: Duration) {
        match self.me.upgrade() {
            Some(me) if !delay.is_zero() => {
                let clock = self.shared.clock().clone();
                self.shared.spawn(async move {
                    clock.sleep(delay).await;
                    ChildHandle::launch(&*me);
                });
            }
            _ => ChildHandle::launch(self),
        }
    }

    fn abort(&self) {
        {
            let mut inner = self.inner.lock();
            if inner.run == Run::Running {
                inner.run = Run::Down;
            }
        }
        self.stop_sweeper();
        for slot in self.slots() {
            ChildHandle::abort(&*slot);
        }
    }

    fn halt(&self) {
        {
            let mut inner = self.inner.lock();
            if inner.run == Run::Running {
                inner.run = Run::Down;
            }
        }
        self.stop_sweeper();
        for slot in self.slots() {
            ChildHandle::halt(&*slot);
        }
    }

    fn resume(&self) {
        let mut inner = self.inner.lock();
        if inner.run == Run::Stopped {
            inner.run = Run::Down;
        }
    }

    fn join(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let slots = self.slots();
        Box::pin(async move {
            for slot in &slots {
                ChildHandle::join(&**slot).await;
            }
        })
    }

    /// Terminated by hand: every activation is stopped and forgotten (their queued messages are
    /// answered `Dead`), and sends get `Dead` until it is restarted.
    fn stop(&self) {
        let live = {
            let mut inner = self.inner.lock();
            inner.run = Run::Stopped;
            std::mem::take(&mut inner.live)
        };
        self.stop_sweeper();
        for e in live.into_values() {
            ChildHandle::kill(&*e.slot);
            if let Some((next, _)) = e.next {
                ChildHandle::kill(&*next);
            }
        }
    }

    fn kill(&self) {
        ChildHandle::abort(self);
        ChildHandle::stop(self);
        self.shared.registry().remove(self.id, Some(&self.path));
    }

    fn rejuvenate(&self) {
        for slot in self.slots() {
            slot.request_rejuvenation();
        }
    }
}
