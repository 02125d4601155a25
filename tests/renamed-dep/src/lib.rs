//! An actor defined against a renamed dependency: `co` is crashonly.

// Nothing of `co` is imported: the generated code must name everything it needs itself.

/// A counter whose macros are told where the runtime is.
#[derive(co::Actor, Clone, Default)]
#[actor(crate = co, mailbox = 8, ttl = "2s")]
pub struct Counter {
    n: u64,
}

#[co::messages(crate = co)]
impl Counter {
    /// Adds `k`; answers the new count.
    #[message]
    pub fn add(&mut self, k: u64) -> u64 {
        self.n += k;
        self.n
    }

    /// The count.
    #[message(idempotent)]
    pub fn get(&self) -> u64 {
        self.n
    }
}

/// The same, with the path given as a string (as serde's `crate` attribute takes it).
#[derive(co::Actor, Clone, Default)]
#[actor(crate = "co", restart = "transient")]
pub struct Echo;

#[co::messages(clone_replies, crate = "co")]
impl Echo {
    /// Answers its argument.
    #[message]
    pub fn echo(&self, s: String) -> String {
        s
    }
}
