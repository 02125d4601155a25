//! litmus `--cluster`: the clustered cart's nodes (`cart --cluster`, this harness's own
//! `serve-cart --cluster`) on `CRASHONLY_PG_URL` and `CRASHONLY_NATS_URL`, in a cluster and store
//! of the run's own (schemas `litmus_<pid>` and `litmus_<pid>_store`, dropped at the end), and
//! what the harness asks the database: how long a node's membership lease still runs when it is
//! killed, the floor of its failover.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::failover::{self, Figures, Kill};
use super::Service;

/// The run's cluster: its schema and a connection to its database.
pub struct Cluster {
    /// The cluster's schema (the store's is `<schema>_store`).
    pub schema: String,
    /// The membership lease of its nodes.
    pub lease: Duration,
    db: Option<Client>,
}

impl Cluster {
    /// `n` nodes with membership lease `lease` (not started), each also given `extra`.
    pub async fn nodes(n: usize, lease: Duration, extra: &[String]) -> Result<(Cluster, Vec<Service>), String> {
        let (Ok(pg), Ok(nats)) = (std::env::var("CRASHONLY_PG_URL"), std::env::var("CRASHONLY_NATS_URL")) else {
            return Err("--cluster needs CRASHONLY_PG_URL and CRASHONLY_NATS_URL".into());
        };
        let schema = format!("litmus_{}", std::process::id());
        let lease_arg = format!("{}ms", lease.as_millis());
        let nodes = (0..n)
            .map(|i| {
                let mut args: Vec<String> = ["--cluster", "--pg", &pg, "--nats", &nats, "--schema", &schema]
                    .map(String::from)
                    .to_vec();
                args.extend([
                    "--node-name".into(),
                    format!("n{i}"),
                    "--lease".into(),
                    lease_arg.clone(),
                ]);
                args.extend(extra.iter().cloned());
                // No data directory: the store of record is PostgreSQL.
                Service::new(std::path::PathBuf::new(), args, Vec::new())
            })
            .collect();
        // The harness's own connection, for the leases; without it the run goes on, less told.
        let db = match tokio_postgres::connect(&pg, NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                Some(client)
            }
            Err(e) => {
                eprintln!("warning: no connection to {pg} for the leases: {e}");
                None
            }
        };
        Ok((Cluster { schema, lease, db }, nodes))
    }

    /// How long the lease of `incarnation` still runs by the database's clock (zero if expired),
    /// or `None` if the database did not say.
    pub async fn lease_left(&self, incarnation: u64) -> Option<Duration> {
        let sql = format!(
            "SELECT (EXTRACT(EPOCH FROM (lease_until - clock_timestamp())) * 1000)::float8
             FROM {}.members WHERE incarnation = $1",
            self.schema
        );
        let row = self
            .db
            .as_ref()?
            .query_opt(&sql, &[&(incarnation as i64)])
            .await
            .ok()??;
        Some(Duration::from_secs_f64(row.get::<_, f64>(0).max(0.0) / 1000.0))
    }

    /// Drops the run's schemas (the cluster's and the store's).
    pub async fn drop_schemas(&self) {
        if let Some(db) = &self.db {
            let s = &self.schema;
            if let Err(e) = db
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {s} CASCADE; DROP SCHEMA IF EXISTS {s}_store CASCADE"
                ))
                .await
            {
                eprintln!("warning: the schemas {s} and {s}_store were not dropped: {e}");
            }
        }
    }
}

/// The failover figures of a run: each kill's, and their spreads.
pub fn figures(kills: &[Kill], acks: &[failover::Ack]) -> (Vec<failover::Failover>, Figures) {
    let each = failover::failovers(kills, acks);
    let figures = Figures::of(kills, &each);
    (each, figures)
}

/// The failover lines of the text report.
pub fn print(lease: Duration, kills: usize, f: &Figures) {
    println!(
        "  failover (lease {:?}, {} of {kills} kills held carts written again; {} of {} carts back)",
        lease, f.first.n, f.back, f.held
    );
    println!("    first cart back         {}", f.first.line());
    println!("    first asked-for back    {}", f.first_asked.line());
    println!("    first back, single fault {}", f.first_single.line());
    println!("    all carts back          {}", f.all.line());
    println!("    last one first sent     {}", f.last_sent.line());
    println!("    lease left at the kill  {}", f.lease_left.line());
    println!("    first back after lease  {}", f.after_lease.line());
}
