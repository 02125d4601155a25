//! Links: two actors that crash together (OTP's `link`), each restarted by its own supervisor.
//!
//! A link is a pair of watchers, one on each actor's monitors. When one actor crashes, its
//! watcher first removes the other direction (so the crash it causes does not come back), then
//! crashes the other actor from outside. A normal end removes both directions; a rejuvenation
//! (a planned restart) keeps them.

use crate::actor::Actor;
use crate::actor_ref::ActorRef;
use crate::crash::CrashReason;
use crate::error::DeliveryError;
use crate::monitor::{DownReason, Watcher};

pub(crate) fn link<A: Actor, B: Actor>(a: &ActorRef<A>, b: &ActorRef<B>) -> Result<(), DeliveryError> {
    if !a.is_alive() || !b.is_alive() {
        return Err(DeliveryError::Dead);
    }
    if a.id() == b.id() {
        return Ok(());
    }
    one_way(a, b);
    one_way(b, a);
    Ok(())
}

pub(crate) fn unlink<A: Actor, B: Actor>(a: &ActorRef<A>, b: &ActorRef<B>) {
    a.monitors().remove(Watcher::Link(b.id()));
    b.monitors().remove(Watcher::Link(a.id()));
}

/// When `from` crashes, `to` crashes.
fn one_way<A: Actor, B: Actor>(from: &ActorRef<A>, to: &ActorRef<B>) {
    let target = to.clone();
    let from_id = from.id();
    from.monitors()
        .add(Watcher::Link(to.id()), move |down| match &down.reason {
            DownReason::Crashed(report) => {
                target.monitors().remove(Watcher::Link(from_id));
                let _ = target.slot().crash_from_outside(CrashReason::Linked {
                    peer: down.path.clone(),
                    reason: report.reason.to_string(),
                });
                false
            }
            DownReason::Ended => {
                target.monitors().remove(Watcher::Link(from_id));
                false
            }
            _ => true,
        });
}
