//! The envelope being handled, held by the instance's `Context` until its outcome is known.
//!
//! However the handling ends (a reply, an error, a panic, or an abort from outside that drops the
//! whole instance), the in-flight envelope is settled exactly once: its asker gets the reply, or
//! an idempotent envelope whose deadline allows goes back to the head of the mailbox for the next
//! instance (at-least-once), or the asker learns the crash and its real reason (at-most-once). A
//! handler that deferred its reply ([`crate::ReplyPort`]) has handed the asker to someone else.

use crate::actor::Actor;
use crate::crash::CrashReport;
use crate::envelope::{CopyFn, Envelope, Header};
use crate::error::DeliveryError;
use crate::reply::{answer, ReplyTo};
use crate::slot::Slot;
use crate::sync::Arc;

pub(crate) struct InFlight<A: Actor> {
    pub(crate) header: Header,
    /// A copy of the payload, kept only for idempotent envelopes (they may be redelivered).
    pub(crate) keep: Option<A::Msg>,
    /// `None` for a tell, or once the reply has been deferred.
    pub(crate) reply: Option<ReplyTo<A::Reply>>,
    pub(crate) deferred: bool,
}

impl<A: Actor> InFlight<A> {
    /// Takes an envelope apart: its payload for the handler, the rest held here. `copy` is how
    /// to copy a payload of this type, known once an idempotent message has been sent.
    pub(crate) fn take(env: Envelope<A::Msg, ReplyTo<A::Reply>>, copy: Option<CopyFn<A::Msg>>) -> (A::Msg, Self) {
        let Envelope { header, payload, reply } = env;
        let copy = copy.filter(|_| header.idempotent);
        let keep = copy.map(|c| c(&payload));
        let this = InFlight {
            header,
            keep,
            reply,
            deferred: false,
        };
        (payload, this)
    }

    /// The handler answered.
    pub(crate) fn reply(self, reply: A::Reply) {
        answer(self.reply, Ok(reply));
    }

    /// The instance crashed while handling: at-least-once for idempotent envelopes whose deadline
    /// allows, at-most-once otherwise.
    pub(crate) fn settle(mut self, slot: &Slot<A>, report: Arc<CrashReport>) {
        let now = slot.shared().now();
        if let Some(payload) = self.keep.take()
            && !self.header.is_expired(now)
        {
            let header = Header {
                attempt: self.header.attempt + 1,
                ..self.header
            };
            let env = Envelope {
                header,
                payload,
                reply: self.reply.take(),
            };
            if let Err(env) = slot.mailbox.push_front(env) {
                answer(env.reply, Err(DeliveryError::Dead));
            }
            return;
        }
        answer(self.reply, Err(DeliveryError::Crashed(report)));
    }
}
