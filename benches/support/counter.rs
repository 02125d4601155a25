//! The benches' measured actor: a counter that adds what it is told and answers its total.
//! Shared (through `#[path]`) by the metrics and observer benches, whose figures compare the
//! same message path with and without what they measure.

use crashonly::prelude::*;

/// A counter (its total is volatile: nothing here is recovered).
pub struct Counter {
    n: u64,
}

/// What a counter is told or asked.
#[derive(Clone, Debug)]
#[allow(dead_code)] // not every bench tells
pub enum Msg {
    /// Adds to the total (answers the new total).
    Add(u64),
    /// Answers the total.
    Get,
}

impl Actor for Counter {
    type Args = ();
    type Msg = Msg;
    type Reply = u64;
    type Error = std::convert::Infallible;

    async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, Self::Error> {
        Ok(Counter { n: 0 })
    }

    async fn handle(&mut self, msg: Msg, _: &mut Context<Self>) -> Result<u64, Self::Error> {
        if let Msg::Add(k) = msg {
            self.n += k;
        }
        Ok(self.n)
    }
}
