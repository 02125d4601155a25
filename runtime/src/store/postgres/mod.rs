//! `PgStore`: PostgreSQL for many runtime processes on many machines (feature `postgres`).
//!
//! The database is the coordination point: compare-and-set is `UPDATE .. WHERE version = $n` inside
//! a serializable transaction, leases are `INSERT .. ON CONFLICT .. WHERE expired RETURNING token`,
//! and versions and tokens come from sequences, so they only grow across every process.
//!
//! Invariants:
//! - A small pool of connections, each with the same fixed prepared statements. A connection that
//!   fails is dropped and replaced on next use: reconnecting needs nothing from the caller, who sees
//!   [`StoreError::Unavailable`] (with a retry-after hint) for the operation that failed, and never
//!   an acknowledgement for a commit that did not happen.
//! - Transactions run `SERIALIZABLE`; a serialization failure is retried a few times, then reported
//!   as `Unavailable`.
//! - Times are the caller's [`TimeSource`] in ms: the processes sharing a database are expected to
//!   have synchronised clocks (leases are seconds long, clock skew milliseconds).

use std::fmt;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, IsolationLevel, Statement};

use super::error::Conflict;
use super::txn::check_ttl;
use super::{
    Committed, Durability, DurableLease, Limits, Store, StoreError, StoreFuture, TimeSource, Txn, Versioned, WallClock,
    Write,
};
use crate::rt::Executor;
use crate::sync::{Arc, Mutex};

mod connect;

use connect::{pg_error, Fail};
pub use connect::{PgConnector, PgDriver};

/// Options of [`PgStore::connect`]: start from `PgOptions::default()` and change what you need
/// (`PgOptions::default().with_schema("app")`); more options may come in later versions.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PgOptions {
    /// Schema holding the store's tables (created if missing).
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Longest wait for a connection (including connecting).
    pub connect_timeout: Duration,
    /// Longest time a connection may sit idle inside a transaction before the server ends its
    /// session (`idle_in_transaction_session_timeout`, set on every connection). The store's
    /// statements follow each other at once, so only a process that stopped or lost its network
    /// mid-transaction reaches it; without it, such a transaction keeps its row locks until the
    /// server notices the connection is dead (hours, with default TCP keepalives), and every other
    /// process writing those rows waits that long.
    pub idle_in_transaction_timeout: Duration,
    /// What the store accepts.
    pub limits: Limits,
    /// Wall-clock time for TTLs and leases.
    pub time: Arc<dyn TimeSource>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            schema: "crashonly".into(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(2),
            idle_in_transaction_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            time: Arc::new(WallClock),
        }
    }
}

with_setters!(PgOptions {
    /// Sets the schema holding the store's tables.
    with_schema => schema: String,
    /// Sets the number of connections in the pool.
    with_pool_size => pool_size: usize,
    /// Sets the longest wait for a connection (including connecting).
    with_connect_timeout => connect_timeout: Duration,
    /// Sets how long a connection may sit idle inside a transaction before the server ends it
    /// (at least 1 ms).
    with_idle_in_transaction_timeout => idle_in_transaction_timeout: Duration,
    /// Sets what the store accepts.
    with_limits => limits: Limits,
    /// Sets the wall-clock time source for TTLs and leases.
    with_time => time: Arc<dyn TimeSource>,
});

/// The PostgreSQL store.
pub struct PgStore {
    connector: PgConnector,
    opts: PgOptions,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    exec: Executor,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.opts.schema)
            .finish_non_exhaustive()
    }
}

struct Conn {
    client: Client,
    st: Statements,
}

struct Statements {
    get: Statement,
    scan: Statement,
    lock_version: Statement,
    upsert: Statement,
    delete: Statement,
    next_version: Statement,
    idem_get: Statement,
    idem_put: Statement,
    fence: Statement,
    acquire: Statement,
    holder: Statement,
    renew: Statement,
    release: Statement,
    reclaim: Statement,
}

fn i64_of(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// The smallest byte string greater than every string starting with `prefix` (None: no bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl PgStore {
    /// Connects (one connection at first, the rest on demand) and creates the schema if missing.
    pub async fn connect(url: &str, opts: PgOptions) -> Result<PgStore, StoreError> {
        if opts.schema.is_empty() || !opts.schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::BadInput(format!(
                "schema name {:?} must be [A-Za-z0-9_]+",
                opts.schema
            )));
        }
        let store = PgStore {
            connector: PgConnector::new(url)?,
            permits: Semaphore::new(opts.pool_size.max(1)),
            opts,
            idle: Mutex::new(Vec::new()),
            exec: Executor::current(),
        };
        let conn = store.open_conn(true).await?;
        store.idle.lock().push(conn);
        Ok(store)
    }

    async fn open_conn(&self, create: bool) -> Result<Conn, StoreError> {
        let (mut client, connection) = self.connector.connect(self.opts.connect_timeout).await?;
        self.exec.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres connection ended");
            }
        });
        // A session stuck inside a transaction is ended by the server, which frees its locks.
        let idle_ms = self
            .opts
            .idle_in_transaction_timeout
            .as_millis()
            .clamp(1, i32::MAX as u128);
        client
            .batch_execute(&format!("SET idle_in_transaction_session_timeout = {idle_ms}"))
            .await
            .map_err(pg_error)?;
        let s = &self.opts.schema;
        // The schema statements take locks even when there is nothing to create (`CREATE INDEX IF
        // NOT EXISTS` a share lock on kv, `ALTER TABLE .. IF NOT EXISTS` an exclusive one on
        // idem), which deadlock with other processes' writes: look first, and create only what is
        // missing.
        let complete = if create {
            let row = client
                .query_one(
                    &format!(
                        "SELECT to_regclass('{s}.kv') IS NOT NULL AND to_regclass('{s}.kv_expiry') IS NOT NULL
                            AND to_regclass('{s}.leases') IS NOT NULL AND to_regclass('{s}.idem') IS NOT NULL
                            AND to_regclass('{s}.versions') IS NOT NULL AND to_regclass('{s}.tokens') IS NOT NULL
                            AND EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1
                                        AND table_name = 'idem' AND column_name = 'request')"
                    ),
                    &[&s],
                )
                .await
                .map_err(pg_error)?;
            row.get::<_, bool>(0)
        } else {
            true
        };
        if !complete {
            let tx = client.transaction().await.map_err(pg_error)?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&s])
                .await
                .map_err(pg_error)?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.kv (key bytea PRIMARY KEY, value bytea NOT NULL,
                     version bigint NOT NULL, expires_ms bigint NOT NULL DEFAULT 0);
                 CREATE INDEX IF NOT EXISTS kv_expiry ON {s}.kv (expires_ms) WHERE expires_ms <> 0;
                 CREATE TABLE IF NOT EXISTS {s}.leases (name text PRIMARY KEY, holder text NOT NULL,
                     token bigint NOT NULL, expires_ms bigint NOT NULL);
                 CREATE TABLE IF NOT EXISTS {s}.idem (key bytea PRIMARY KEY, expires_ms bigint NOT NULL,
                     versions bigint[] NOT NULL, existed bool[] NOT NULL);
                 ALTER TABLE {s}.idem ADD COLUMN IF NOT EXISTS request bytea NOT NULL DEFAULT '';
                 CREATE SEQUENCE IF NOT EXISTS {s}.versions;
                 CREATE SEQUENCE IF NOT EXISTS {s}.tokens;"
            ))
            .await
            .map_err(pg_error)?;
            tx.commit().await.map_err(pg_error)?;
        }
        let live = "(expires_ms = 0 OR expires_ms > $2)";
        let p = |sql: String| {
            let client = &client;
            async move { client.prepare(&sql).await.map_err(pg_error) }
        };
        let st = Statements {
            get: p(format!("SELECT value, version FROM {s}.kv WHERE key = $1 AND {live}")).await?,
            scan: p(format!(
                "SELECT key, value, version FROM {s}.kv WHERE key >= $1 AND {live}
                 AND ($3::bytea IS NULL OR key < $3) ORDER BY key LIMIT $4"
            ))
            .await?,
            lock_version: p(format!("SELECT version, {live} FROM {s}.kv WHERE key = $1 FOR UPDATE")).await?,
            upsert: p(format!(
                "INSERT INTO {s}.kv (key, value, version, expires_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version,
                 expires_ms = EXCLUDED.expires_ms"
            ))
            .await?,
            delete: p(format!("DELETE FROM {s}.kv WHERE key = $1")).await?,
            next_version: p(format!("SELECT nextval('{s}.versions')")).await?,
            idem_get: p(format!("SELECT versions, existed, request FROM {s}.idem WHERE key = $1 AND expires_ms > $2")).await?,
            idem_put: p(format!(
                "INSERT INTO {s}.idem (key, expires_ms, versions, existed, request) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (key) DO UPDATE SET expires_ms = EXCLUDED.expires_ms,
                 versions = EXCLUDED.versions, existed = EXCLUDED.existed, request = EXCLUDED.request"
            ))
            .await?,
            fence: p(format!("SELECT token FROM {s}.leases WHERE name = $1 AND expires_ms > $2 FOR SHARE")).await?,
            acquire: p(format!(
                "INSERT INTO {s}.leases (name, holder, token, expires_ms)
                 VALUES ($1, $2, nextval('{s}.tokens'), $3)
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, token = EXCLUDED.token,
                 expires_ms = EXCLUDED.expires_ms
                 WHERE {s}.leases.expires_ms <= $4 OR {s}.leases.holder = EXCLUDED.holder
                 RETURNING token"
            ))
            .await?,
            holder: p(format!("SELECT holder, expires_ms FROM {s}.leases WHERE name = $1")).await?,
            renew: p(format!(
                "UPDATE {s}.leases SET expires_ms = $3 WHERE name = $1 AND token = $2 AND expires_ms > $4 RETURNING token"
            ))
            .await?,
            release: p(format!("DELETE FROM {s}.leases WHERE name = $1 AND token = $2 AND expires_ms > $3")).await?,
            reclaim: p(format!(
                "WITH gone AS (DELETE FROM {s}.kv WHERE key IN (SELECT key FROM {s}.kv
                   WHERE expires_ms <> 0 AND expires_ms <= $1 LIMIT 256) RETURNING 1)
                 SELECT count(*) FROM gone"
            ))
            .await?,
        };
        Ok(Conn { client, st })
    }

    /// A pooled connection: an idle one that still works, or a new one.
    async fn conn(&self) -> Result<Pooled<'_>, StoreError> {
        let permit = crate::clock::timeout(self.opts.connect_timeout, self.permits.acquire())
            .await
            .ok_or_else(|| StoreError::unavailable("postgres: no connection free in time"))?
            .map_err(|_| StoreError::unavailable("postgres: pool closed"))?;
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(c) if !c.client.is_closed() => c,
            _ => self.open_conn(false).await?,
        };
        Ok(Pooled {
            store: self,
            conn: Some(conn),
            _permit: permit,
        })
    }

    /// Runs one operation in a serializable transaction, retrying serialization failures.
    async fn run(&self, op: Op<'_>) -> Result<Done, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut pooled = self.conn().await?;
            let now = self.opts.time.now_ms();
            let conn = pooled.conn.as_mut().expect("present until drop");
            let out = async {
                let tx = conn
                    .client
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .start()
                    .await?;
                let res = match &op {
                    Op::Commit(txn) => apply(&tx, &conn.st, txn, now, &self.opts.limits)
                        .await
                        .map(Done::Committed),
                    Op::Acquire { name, holder, ttl } => {
                        acquire(&tx, &conn.st, name, holder, *ttl, now).await.map(Done::Lease)
                    }
                    Op::Renew { lease, ttl } => renew(&tx, &conn.st, lease, *ttl, now).await.map(Done::Lease),
                    Op::Release { lease } => {
                        let args: [&(dyn ToSql + Sync); 3] = [&lease.name, &i64_of(lease.token), &i64_of(now)];
                        tx.execute(&conn.st.release, &args)
                            .await
                            .map_err(Fail::from)
                            .map(|_| Done::Released)
                    }
                };
                match res {
                    Ok(r) => {
                        tx.commit().await?;
                        Ok(r)
                    }
                    Err(e) => {
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }
            .await;
            match out {
                Err(e) if e.is_retryable() && attempt < 20 => {
                    // Spread the retries of transactions that collided.
                    let jitter = (now ^ (attempt as u64).wrapping_mul(0x9E37_79B9)) % 4;
                    crate::clock::sleep(Duration::from_millis(jitter + attempt as u64)).await;
                }
                other => return other.map_err(Fail::into_store),
            }
        }
    }
}

enum Op<'a> {
    Commit(&'a Txn),
    Acquire {
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    },
    Renew {
        lease: &'a DurableLease,
        ttl: Duration,
    },
    Release {
        lease: &'a DurableLease,
    },
}

enum Done {
    Committed(Committed),
    Lease(DurableLease),
    Released,
}

struct Pooled<'a> {
    store: &'a PgStore,
    conn: Option<Conn>,
    _permit: SemaphorePermit<'a>,
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take()
            && !c.client.is_closed()
        {
            self.store.idle.lock().push(c);
        }
    }
}

impl Store for PgStore {
    fn get<'a>(&'a self, key: &'a [u8]) -> StoreFuture<'a, Option<Versioned>> {
        Box::pin(async move {
            let pooled = self.conn().await?;
            let c = pooled.conn.as_ref().expect("present until drop");
            let now = i64_of(self.opts.time.now_ms());
            let row = c.client.query_opt(&c.st.get, &[&key, &now]).await.map_err(pg_error)?;
            Ok(row.map(|r| Versioned {
                value: r.get(0),
                version: r.get::<_, i64>(1) as u64,
            }))
        })
    }

    fn scan<'a>(&'a self, prefix: &'a [u8], limit: usize) -> StoreFuture<'a, Vec<(Vec<u8>, Versioned)>> {
        Box::pin(async move {
            let pooled = self.conn().await?;
            let c = pooled.conn.as_ref().expect("present until drop");
            let now = i64_of(self.opts.time.now_ms());
            let end = prefix_end(prefix);
            let limit = i64_of(limit as u64);
            let rows = c
                .client
                .query(&c.st.scan, &[&prefix, &now, &end, &limit])
                .await
                .map_err(pg_error)?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    (
                        r.get(0),
                        Versioned {
                            value: r.get(1),
                            version: r.get::<_, i64>(2) as u64,
                        },
                    )
                })
                .collect())
        })
    }

    fn commit(&self, txn: Txn) -> StoreFuture<'_, Committed> {
        Box::pin(async move {
            txn.validate(&self.opts.limits)?;
            match self.run(Op::Commit(&txn)).await? {
                Done::Committed(c) => Ok(c),
                _ => unreachable!("a commit answers Committed"),
            }
        })
    }

    fn acquire_lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        Box::pin(async move {
            check_lease(name, ttl, &self.opts.limits)?;
            lease_of(self.run(Op::Acquire { name, holder, ttl }).await?)
        })
    }

    fn renew_lease<'a>(&'a self, lease: &'a DurableLease, ttl: Duration) -> StoreFuture<'a, DurableLease> {
        Box::pin(async move {
            check_lease(&lease.name, ttl, &self.opts.limits)?;
            lease_of(self.run(Op::Renew { lease, ttl }).await?)
        })
    }

    fn release_lease<'a>(&'a self, lease: &'a DurableLease) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.run(Op::Release { lease }).await.map(|_| ()) })
    }

    fn durability(&self) -> Durability {
        // PostgreSQL acknowledges a commit after its WAL is flushed (synchronous_commit = on).
        Durability::Durable
    }

    fn limits(&self) -> &Limits {
        &self.opts.limits
    }
}

fn lease_of(done: Done) -> Result<DurableLease, StoreError> {
    match done {
        Done::Lease(l) => Ok(l),
        _ => unreachable!("a lease request answers DurableLease"),
    }
}

async fn acquire(
    tx: &tokio_postgres::Transaction<'_>,
    st: &Statements,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: u64,
) -> Result<DurableLease, Fail> {
    let expires = now + ms(ttl);
    let args: [&(dyn ToSql + Sync); 4] = [&name, &holder, &i64_of(expires), &i64_of(now)];
    if let Some(r) = tx.query_opt(&st.acquire, &args).await? {
        let token = r.get::<_, i64>(0) as u64;
        return Ok(DurableLease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            token,
            expires_at_ms: expires,
        });
    }
    let r = tx.query_one(&st.holder, &[&name]).await?;
    let until = r.get::<_, i64>(1) as u64;
    Err(Fail::conflict(Conflict::LeaseHeld {
        lease: name.to_owned(),
        holder: r.get(0),
        remaining: Duration::from_millis(until.saturating_sub(now)),
    }))
}

async fn renew(
    tx: &tokio_postgres::Transaction<'_>,
    st: &Statements,
    lease: &DurableLease,
    ttl: Duration,
    now: u64,
) -> Result<DurableLease, Fail> {
    let expires = now + ms(ttl);
    let args: [&(dyn ToSql + Sync); 4] = [&lease.name, &i64_of(lease.token), &i64_of(expires), &i64_of(now)];
    match tx.query_opt(&st.renew, &args).await? {
        Some(_) => Ok(DurableLease {
            expires_at_ms: expires,
            ..lease.clone()
        }),
        None => Err(Fail::conflict(Conflict::LeaseLost {
            lease: lease.name.clone(),
            token: lease.token,
        })),
    }
}

fn check_lease(name: &str, ttl: Duration, limits: &Limits) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > limits.max_key {
        return Err(StoreError::BadInput(format!(
            "lease name must be 1 to {} bytes",
            limits.max_key
        )));
    }
    check_ttl("lease", ttl, limits.max_lease)
}

/// The body of a commit, inside a serializable transaction. Checks first, then writes.
async fn apply(
    tx: &tokio_postgres::Transaction<'_>,
    st: &Statements,
    txn: &Txn,
    now: u64,
    limits: &Limits,
) -> Result<Committed, Fail> {
    let now_i = i64_of(now);
    if let Some(once) = &txn.once
        && let Some(r) = tx.query_opt(&st.idem_get, &[&once.key, &now_i]).await?
    {
        if r.get::<_, &[u8]>(2) != once.request.as_slice() {
            return Err(Fail::conflict(Conflict::KeyReused { key: once.key.clone() }));
        }
        let versions: Vec<i64> = r.get(0);
        let existed: Vec<bool> = r.get(1);
        return Ok(Committed {
            versions: versions.into_iter().map(|v| v as u64).collect(),
            existed,
            replayed: true,
        });
    }
    if let Some((name, token)) = &txn.fence {
        let row = tx.query_opt(&st.fence, &[name, &now_i]).await?;
        if row.map(|r| r.get::<_, i64>(0) as u64) != Some(*token) {
            return Err(Fail::conflict(Conflict::Fenced {
                lease: name.clone(),
                token: *token,
            }));
        }
    }
    for (key, expected) in &txn.checks {
        let row = tx.query_opt(&st.lock_version, &[key, &now_i]).await?;
        let actual = match row {
            Some(r) if r.get::<_, bool>(1) => r.get::<_, i64>(0) as u64,
            _ => 0,
        };
        if actual != *expected {
            return Err(Fail::conflict(Conflict::Version {
                key: key.clone(),
                expected: *expected,
                actual,
            }));
        }
    }
    let version = tx.query_one(&st.next_version, &[]).await?.get::<_, i64>(0) as u64;
    let mut versions = Vec::with_capacity(txn.writes.len());
    let mut existed = Vec::with_capacity(txn.writes.len());
    for w in &txn.writes {
        let key = match w {
            Write::Put { key, .. } | Write::Delete { key } => key,
        };
        let row = tx.query_opt(&st.lock_version, &[key, &now_i]).await?;
        existed.push(row.is_some_and(|r| r.get::<_, bool>(1)));
        match w {
            Write::Put { value, ttl, .. } => {
                let expires = ttl.map_or(0, |t| now + ms(t));
                tx.execute(&st.upsert, &[key, value, &i64_of(version), &i64_of(expires)])
                    .await?;
                versions.push(version);
            }
            Write::Delete { .. } => {
                tx.execute(&st.delete, &[key]).await?;
                versions.push(0);
            }
        }
    }
    if let Some(once) = &txn.once {
        let vs: Vec<i64> = versions.iter().map(|v| *v as i64).collect();
        let expires = i64_of(now + ms(limits.idempotency_ttl));
        tx.execute(&st.idem_put, &[&once.key, &expires, &vs, &existed, &once.request])
            .await?;
    }
    // Reclaim a few expired keys now and then (every 64th version), in the same transaction.
    if version.is_multiple_of(64) {
        tx.query_one(&st.reclaim, &[&now_i]).await?;
    }
    Ok(Committed {
        versions,
        existed,
        replayed: false,
    })
}
