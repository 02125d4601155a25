//! The reply channel of an `ask`: where the outcome of handling an envelope goes.
//!
//! It sits between the envelope (which carries it) and the error type (which it carries), so that
//! `envelope` needs nothing above it.

use tokio::sync::oneshot;

use crate::error::DeliveryError;

/// The sending half of an ask's reply.
pub(crate) type ReplyTo<R> = oneshot::Sender<Result<R, DeliveryError>>;

/// Sends the outcome to the asker, if there is one still waiting.
pub(crate) fn answer<R>(reply: Option<ReplyTo<R>>, outcome: Result<R, DeliveryError>) {
    if let Some(tx) = reply {
        // The asker may have given up at its deadline; nobody is left to tell.
        let _ = tx.send(outcome);
    }
}
