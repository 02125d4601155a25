//! A user's model test: the bank account of examples/bank (written with the derive macros, run
//! unchanged) must apply a keyed deposit exactly once, whatever point loom picks for a crash.
//!
//! `RUSTFLAGS="--cfg crashonly_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target-loom \
//!  cargo test --release -p crashonly --test loom_bank`
//!
//! It runs the example's own file, outside the `crashonly` package, so it is a repository-only
//! test: `runtime/Cargo.toml` excludes it from the published package (nothing packaged reaches
//! outside it). It stays with the runtime's tests so that the loom build is the runtime's alone
//! (in the suite, the loom cfg rebuilds every dependency of the services: about 20 minutes).
#![cfg(crashonly_loom)]

#[path = "../../examples/bank/account.rs"]
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
