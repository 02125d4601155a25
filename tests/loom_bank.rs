//! A user's model test: the bank account of examples/bank (written with the derive macros, run
//! unchanged) must apply a keyed deposit exactly once, whatever point loom picks for a crash.
//!
//! `RUSTFLAGS="--cfg crashonly_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target-loom \
//!  cargo test --release --test loom_bank`
//!
//! It lives in the suite (not in the runtime's tests) because it runs the example's own file: the
//! published `crashonly` package must not reach outside itself.
#![cfg(crashonly_loom)]

#[path = "../examples/bank/account.rs"]
mod account;

use account::{Account, AccountApi, AccountMessage, Bank};
use crashonly::prelude::*;
use crashonly::testing::model::{self, ModelSystem};

#[test]
fn loom_keyed_deposit_applies_once_across_a_crash() {
    model::check(|| {
        let sys = ModelSystem::new();
        let bank = Bank {
            store: sys.store(),
            account: "alice".into(),
        };
        let alice = sys.spawn(ActorSpec::<Account>::new(bank));
        let crasher = {
            let (sys, alice) = (sys.clone(), alice.clone());
            model::thread(move || sys.crash(&alice))
        };
        // Idempotent, so a crash while it is in flight (even after the store committed it)
        // redelivers it to the next instance, which must not apply it a second time.
        model::block_on(alice.tell(AccountMessage::Deposit(1, 10)).idempotent()).unwrap();
        crasher.join().unwrap();
        assert_eq!(model::block_on(alice.balance()), Ok(10));
    });
}
