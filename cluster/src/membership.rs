//! Membership: who is in the cluster, judged by the database's clock.
//!
//! A node joins with a fresh incarnation (from a sequence: a restarted process is a new member,
//! never the old one come back) and a lease row, `lease_until = clock_timestamp() + lease`,
//! renewed every third of the lease on a connection of its own, only while it has not expired
//! (`WHERE lease_until > clock_timestamp()`): an expired lease is never revived.
//!
//! Self-fencing: a renewal sent at local time `t` that succeeds moves the node's local deadline
//! to `t + 0.9 lease`. The database set `lease_until` to its own clock at the update plus `lease`,
//! which is no earlier than `t + lease` in real time, whatever the clocks say. So when the node
//! cannot renew, it reaches its deadline (and fences itself: [`Membership::fenced`] resolves)
//! at least a tenth of a lease before anyone else can see its lease dead and take what it held.
//! A renewal that finds the lease expired fences the node at once.
//!
//! Rejoining ([`Membership::rejoin`]): the same handle comes back as a new member, never the old
//! one revived. One statement deletes the old row (releasing whatever lease it still had) and
//! inserts a new one with the next incarnation; the old renewal loop is aborted first, and it
//! checks the incarnation it renews, so it can never fence the new one. The incarnation is an
//! atomic written before the fence signal is cleared, so whoever sees the node live sees its new
//! incarnation.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::error::ClusterError;
use crate::pg;

/// Options of [`Membership::join`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MembershipOptions {
    /// Schema of the cluster's tables (created if missing).
    pub schema: String,
    /// The membership lease: a node that cannot renew for this long is out (100 ms to 60 s).
    pub lease: Duration,
    /// The node's name (its address for the transport), shown in the members list.
    pub name: String,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
}

impl Default for MembershipOptions {
    /// Schema `crashonly_cluster`, a 2 s lease, name `node`, 1 s to connect.
    fn default() -> Self {
        MembershipOptions {
            schema: "crashonly_cluster".into(),
            lease: Duration::from_secs(2),
            name: "node".into(),
            connect_timeout: Duration::from_secs(1),
        }
    }
}

impl MembershipOptions {
    /// Sets the schema.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }
    /// Sets the lease.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }
    /// Sets the node's name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// Why a node is out of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fenced {
    /// It could not renew its lease before its local deadline (the database unreachable or slow,
    /// the process paused).
    Deadline,
    /// A renewal found the lease already expired in the database.
    LeaseLost,
    /// It left ([`Membership::leave`]).
    Left,
}

impl fmt::Display for Fenced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fenced::Deadline => "could not renew the membership lease before the local deadline",
            Fenced::LeaseLost => "the membership lease had expired in the database",
            Fenced::Left => "left the cluster",
        })
    }
}

/// A live member, as the database sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its incarnation (unique, growing).
    pub incarnation: u64,
    /// Its name.
    pub name: String,
    /// How long its lease still runs, by the database's clock.
    pub lease_left: Duration,
}

/// This node's membership: its incarnation, its lease kept alive in the background, and the
/// signal that it is out. Dropping the last handle stops the renewals: the lease simply expires.
#[derive(Clone, Debug)]
pub struct Membership {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The current incarnation; changed only by [`Membership::rejoin`].
    incarnation: AtomicU64,
    name: String,
    schema: String,
    lease: Duration,
    url: String,
    connect_timeout: Duration,
    fenced: watch::Sender<Option<Fenced>>,
    deadline: Mutex<Instant>,
    renewals: Mutex<Option<JoinHandle<()>>>,
    /// For queries other than renewals (members, leaving).
    query: pg::Conn,
    /// One rejoin at a time.
    rejoining: tokio::sync::Mutex<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.renewals.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// The local deadline after a renewal sent at `sent`: nine tenths of a lease later.
fn deadline_after(sent: Instant, lease: Duration) -> Instant {
    sent + lease * 9 / 10
}

impl Membership {
    /// Joins the cluster whose authority is the database at `url`: a fresh incarnation and a lease.
    pub async fn join(url: &str, opts: MembershipOptions) -> Result<Membership, ClusterError> {
        pg::check_schema(&opts.schema)?;
        if opts.lease < Duration::from_millis(100) || opts.lease > Duration::from_secs(60) {
            return Err(ClusterError::BadInput(format!(
                "membership lease of {} ms: it must be 100 ms to 60 s",
                opts.lease.as_millis()
            )));
        }
        if opts.name.is_empty() || opts.name.len() > 200 {
            return Err(ClusterError::BadInput("a node name is 1 to 200 bytes".into()));
        }
        let mut client = pg::connect(url, opts.connect_timeout).await?;
        pg::ensure_schema(&mut client, &opts.schema).await?;
        let (incarnation, sent) = insert_member(&client, &opts.schema, &opts.name, opts.lease, None).await?;
        let (fenced, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            incarnation: AtomicU64::new(incarnation),
            name: opts.name.clone(),
            schema: opts.schema.clone(),
            lease: opts.lease,
            url: url.to_owned(),
            connect_timeout: opts.connect_timeout,
            fenced,
            deadline: Mutex::new(deadline_after(sent, opts.lease)),
            renewals: Mutex::new(None),
            query: pg::Conn::new(url, opts.connect_timeout),
            rejoining: tokio::sync::Mutex::new(()),
        });
        let task = tokio::spawn(renew(Arc::downgrade(&inner), client, sent, incarnation));
        *inner.renewals.lock().unwrap() = Some(task);
        tracing::info!(incarnation, name = %opts.name, "joined the cluster");
        Ok(Membership { inner })
    }

    /// Comes back as a new member, with the same handle: the old incarnation leaves (its renewals
    /// stop and its row is deleted, releasing its lease at once) and a new one joins, with a new
    /// incarnation from the sequence and a fresh lease, in one statement. Whoever holds a clone
    /// (a [`Placement`](crate::Placement), a [`Node`](crate::Node)) sees the new incarnation.
    /// While it runs the node counts as out ([`Membership::is_fenced`]); if it fails (the
    /// database unreachable) the node stays out and the caller tries again later.
    ///
    /// Crash-only: the caller must have crashed whatever served under the old incarnation first;
    /// its late writes are refused by their fences anyway.
    pub async fn rejoin(&self) -> Result<u64, ClusterError> {
        let _one = self.inner.rejoining.lock().await;
        let old = self.incarnation();
        if let Some(task) = self.inner.renewals.lock().unwrap().take() {
            task.abort();
        }
        self.inner.fenced.send_if_modified(|f| {
            let live = f.is_none();
            if live {
                *f = Some(Fenced::Left);
            }
            live
        });
        let me = &self.inner;
        let client = pg::connect(&me.url, me.connect_timeout).await?;
        let bound = me.connect_timeout * 2;
        let (incarnation, sent) =
            tokio::time::timeout(bound, insert_member(&client, &me.schema, &me.name, me.lease, Some(old)))
                .await
                .map_err(|_| ClusterError::unavailable("postgres: rejoin timed out"))??;
        // Release: the renewal loop and every reader check this before trusting the lease.
        me.incarnation.store(incarnation, Ordering::Release);
        *me.deadline.lock().unwrap() = deadline_after(sent, me.lease);
        let task = tokio::spawn(renew(Arc::downgrade(&self.inner), client, sent, incarnation));
        *me.renewals.lock().unwrap() = Some(task);
        me.fenced.send_replace(None);
        tracing::info!(incarnation, old, name = %me.name, "rejoined the cluster as a new incarnation");
        Ok(incarnation)
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        // Acquire: pairs with the Release in `rejoin`.
        self.inner.incarnation.load(Ordering::Acquire)
    }

    /// The membership lease.
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// Why the node is out, if it is.
    pub fn is_fenced(&self) -> Option<Fenced> {
        self.inner.fenced.borrow().clone()
    }

    /// Resolves once the node (its current incarnation) is out: stop serving what it held (crash
    /// the cluster subtree) and [`rejoin`](Membership::rejoin) as a new incarnation.
    pub async fn fenced(&self) -> Fenced {
        let mut rx = self.inner.fenced.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return Fenced::Left;
            }
        }
    }

    /// How long the node may still act as a member by its own clock (zero once fenced).
    pub fn time_left(&self) -> Duration {
        if self.is_fenced().is_some() {
            return Duration::ZERO;
        }
        self.inner
            .deadline
            .lock()
            .unwrap()
            .saturating_duration_since(Instant::now())
    }

    /// The live members (lease not expired by the database's clock), by incarnation.
    pub async fn members(&self) -> Result<Vec<Member>, ClusterError> {
        let schema = &self.inner.schema;
        let rows = self
            .query(
                &format!(
                    "SELECT incarnation, name,
                        (EXTRACT(EPOCH FROM (lease_until - clock_timestamp())) * 1000)::float8
                 FROM {schema}.members WHERE lease_until > clock_timestamp() ORDER BY incarnation"
                ),
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Member {
                incarnation: r.get::<_, i64>(0) as u64,
                name: r.get(1),
                lease_left: Duration::from_secs_f64(r.get::<_, f64>(2).max(0.0) / 1000.0),
            })
            .collect())
    }

    /// Leaves: stops renewing and releases the lease at once (a crash would let it expire).
    pub async fn leave(&self) -> Result<(), ClusterError> {
        if let Some(task) = self.inner.renewals.lock().unwrap().take() {
            task.abort();
        }
        self.inner.fenced.send_replace(Some(Fenced::Left));
        let schema = &self.inner.schema;
        let sql = format!(
            "DELETE FROM {schema}.members WHERE incarnation = {}",
            self.incarnation()
        );
        self.query(&sql, &[]).await.map(|_| ())
    }

    /// Runs `sql` on the membership's query connection.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, ClusterError> {
        self.inner.query.query(sql, params).await
    }

    /// The schema of the cluster's tables.
    pub(crate) fn schema(&self) -> &str {
        &self.inner.schema
    }
}

/// The renewal loop: every third of a lease, until renewing fails past the local deadline or
/// finds the lease expired.
async fn renew(inner: std::sync::Weak<Inner>, client: Client, mut last: Instant, incarnation: u64) {
    let mut client = Some((client, None));
    loop {
        let Some(me) = inner.upgrade() else { return };
        if me.incarnation.load(Ordering::Acquire) != incarnation {
            return; // rejoined: a newer loop renews the new incarnation
        }
        let every = me.lease / 3;
        let deadline = *me.deadline.lock().unwrap();
        drop(me);
        tokio::time::sleep_until((last + every).min(deadline)).await;
        let Some(me) = inner.upgrade() else { return };
        if Instant::now() >= deadline {
            return fence(&me, incarnation, Fenced::Deadline);
        }
        let sent = Instant::now();
        match tokio::time::timeout_at(deadline, renew_once(&me, incarnation, &mut client)).await {
            Ok(Ok(true)) => {
                *me.deadline.lock().unwrap() = deadline_after(sent, me.lease);
                last = sent;
            }
            Ok(Ok(false)) => return fence(&me, incarnation, Fenced::LeaseLost),
            Ok(Err(e)) => {
                tracing::warn!(incarnation, error = %e, "membership renewal failed; retrying");
                client = None;
                // Try again soon, never past the deadline (checked at the top).
                last = Instant::now().checked_sub(every).unwrap_or(last) + Duration::from_millis(50);
            }
            Err(_) => return fence(&me, incarnation, Fenced::Deadline),
        }
    }
}

/// The renewal connection and its statement, prepared once per connection (a statement prepared
/// on each call costs a round trip of its own, which PostgreSQL counts as a transaction).
type Renewer = Option<(Client, Option<tokio_postgres::Statement>)>;

/// One renewal: `Ok(false)` when the lease had expired.
async fn renew_once(me: &Inner, incarnation: u64, client: &mut Renewer) -> Result<bool, ClusterError> {
    if client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
        *client = Some((pg::connect(&me.url, me.connect_timeout).await?, None));
    }
    let (c, statement) = client.as_mut().expect("connected above");
    if statement.is_none() {
        let schema = &me.schema;
        *statement = Some(
            c.prepare(&format!(
                "UPDATE {schema}.members
                 SET lease_until = clock_timestamp() + $2::float8 * interval '1 millisecond'
                 WHERE incarnation = $1 AND lease_until > clock_timestamp() RETURNING 1"
            ))
            .await?,
        );
    }
    let lease_ms = me.lease.as_millis() as f64;
    let statement = statement.as_ref().expect("prepared above");
    let rows = c.query(statement, &[&(incarnation as i64), &lease_ms]).await?;
    Ok(rows.len() == 1)
}

/// Fences `incarnation`, unless the node has rejoined as another one meanwhile.
fn fence(me: &Inner, incarnation: u64, why: Fenced) {
    if me.incarnation.load(Ordering::Acquire) != incarnation {
        return;
    }
    tracing::error!(incarnation, reason = %why, "fenced: this node is out of the cluster");
    me.fenced.send_replace(Some(why));
}

/// Inserts a member row with the next incarnation and a lease, deleting `leaving`'s row in the
/// same statement; the incarnation and the local time the statement was sent.
async fn insert_member(
    client: &Client,
    schema: &str,
    name: &str,
    lease: Duration,
    leaving: Option<u64>,
) -> Result<(u64, Instant), ClusterError> {
    let lease_ms = lease.as_millis() as f64;
    let leaving = leaving.map(|i| i as i64);
    let sent = Instant::now();
    // A data-modifying CTE runs whether or not it is referenced; `= NULL` deletes nothing.
    let row = client
        .query_one(
            &format!(
                "WITH gone AS (DELETE FROM {schema}.members WHERE incarnation = $3::bigint)
                 INSERT INTO {schema}.members (incarnation, name, lease_until)
                 VALUES (nextval('{schema}.incarnations'), $1,
                         clock_timestamp() + $2::float8 * interval '1 millisecond')
                 RETURNING incarnation"
            ),
            &[&name, &lease_ms, &leaving],
        )
        .await?;
    Ok((row.get::<_, i64>(0) as u64, sent))
}
