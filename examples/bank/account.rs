//! A bank account whose balance lives in the store and whose deposits are keyed: a deposit is
//! idempotent (redelivered after a crash, retried by callers) and its key makes the store apply
//! it once, however often it arrives. Model-checked in runtime/tests/loom_bank.rs.

use std::sync::Arc;

use crashonly::prelude::*;
use crashonly::store::{Store, StoreExt, Txn};

/// Where an account lives.
#[derive(Clone)]
pub struct Bank {
    pub store: Arc<dyn Store>,
    pub account: String,
}

/// One account; its only volatile state is a copy of the stored balance.
#[derive(Actor)]
#[actor(args = Bank)]
pub struct Account {
    bank: Bank,
    balance: u64,
    /// Version of the stored balance this copy was read at (0: none yet).
    version: u64,
}

impl Account {
    fn key(&self) -> Vec<u8> {
        format!("account/{}", self.bank.account).into_bytes()
    }

    /// The stored balance and its version (0: no deposit yet).
    async fn load(bank: &Bank) -> Result<(u64, u64), String> {
        let key = format!("account/{}", bank.account).into_bytes();
        match bank.store.get(&key).await.map_err(|e| e.to_string())? {
            Some(v) => {
                let bytes: [u8; 8] = v
                    .value
                    .as_slice()
                    .try_into()
                    .map_err(|_| "corrupt balance".to_string())?;
                Ok((u64::from_le_bytes(bytes), v.version))
            }
            None => Ok((0, 0)),
        }
    }
}

#[messages]
impl Account {
    /// The recovery path, and the only start path: read the balance back from the store.
    #[start]
    async fn recover(bank: &Bank, _: &mut Context<Self>) -> Result<Self, String> {
        let (balance, version) = Account::load(bank).await?;
        Ok(Account {
            bank: bank.clone(),
            balance,
            version,
        })
    }

    /// Adds `amount` once per `deposit_id`; returns the balance. Idempotent: a crash between the
    /// commit and the reply redelivers it, and the store's idempotency key turns the second
    /// delivery into a no-op.
    #[message(idempotent)]
    pub async fn deposit(&mut self, deposit_id: u64, amount: u64) -> Result<u64, String> {
        let key = self.key();
        // Written only over the version this copy was read at: a concurrent or late write makes
        // this fail, the actor crashes, and its recovery reads the truth.
        let txn = Txn::new()
            .check(&key, self.version)
            .put(&key, (self.balance + amount).to_le_bytes().to_vec());
        let once = format!("deposit/{}/{deposit_id}", self.bank.account).into_bytes();
        let done = self
            .bank
            .store
            .apply_once(&once, txn)
            .await
            .map_err(|e| e.to_string())?;
        if done.replayed {
            // Applied by an earlier delivery: nothing was written now; read what is stored.
            (self.balance, self.version) = Account::load(&self.bank).await?;
        } else {
            self.balance += amount;
            self.version = done.versions[0];
        }
        Ok(self.balance)
    }

    /// The balance.
    #[message(idempotent)]
    pub fn balance(&self) -> u64 {
        self.balance
    }
}
