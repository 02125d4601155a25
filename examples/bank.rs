//! **bank**: an account actor with keyed idempotent deposits on the embedded store. It deposits,
//! crash-reboots the actor in the middle of a stream of deposits, sends every deposit a second
//! time (as a client that never saw its reply would), and prints the balance, which counts each
//! deposit once. Its loom model test is runtime/tests/loom_bank.rs.
//!
//! `cargo run --release --bin bank -- [--data DIR]`

#[path = "bank/account.rs"]
mod account;

use std::sync::Arc;
use std::time::Duration;

use account::{Account, AccountApi, Bank};
use clap::Parser;
use crashonly::prelude::*;
use crashonly::store::RedbStore;

/// bank: an account actor with keyed idempotent deposits; it is crash-rebooted mid-stream and
/// every deposit is sent twice, and the balance counts each once.
#[derive(Parser, Debug)]
#[command(name = "bank")]
struct Args {
    /// The store's directory, kept (a second run recovers the balance) [default: a temporary
    /// directory, removed at the end]
    #[arg(long, value_name = "DIR")]
    data: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Held to the end of main: the temporary directory is removed when it drops.
    let temp;
    let dir = match args.data {
        Some(dir) => dir,
        None => match tempfile::Builder::new().prefix("crashonly-bank-").tempdir() {
            Ok(t) => {
                temp = t;
                temp.path().to_path_buf()
            }
            Err(e) => {
                eprintln!("bank: cannot create a temporary directory: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
    };
    let _ = std::fs::create_dir_all(&dir);
    let store = match RedbStore::open(dir.join("bank.redb")) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("bank: cannot open the store: {}", e.reason());
            return std::process::ExitCode::FAILURE;
        }
    };
    let sys = System::new();
    let bank = Bank {
        store,
        account: "alice".into(),
    };
    let alice = sys.spawn(ActorSpec::<Account>::new(bank)).expect("spawn");
    let before = alice.balance().await.unwrap_or(0);
    for id in 1..=20u64 {
        if id == 10 {
            alice.crash_reboot();
        }
        match alice.deposit(id, 5).ttl(Duration::from_secs(2)).retrying().await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("deposit {id}: {e}"),
            Err(e) => eprintln!("deposit {id}: {e}"),
        }
    }
    // A client that lost its replies sends everything again: nothing changes.
    for id in 1..=20u64 {
        let _ = alice.deposit(id, 5).retrying().await;
    }
    let after = alice.balance().await.unwrap_or(0);
    println!("balance {before} -> {after} (20 deposits of 5, each sent twice, one crash)");
    if after - before == 100 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
