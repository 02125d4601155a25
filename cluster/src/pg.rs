//! Connections to the authority, and its schema.

use std::time::Duration;

use crashonly::store::{PgConnector, StoreError};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use crate::error::ClusterError;

/// One connection, its driver task spawned; bounded by `timeout`. TLS as the URL's `sslmode`
/// says, as for the runtime's PostgreSQL store; a TLS failure where the URL demands TLS is a
/// `BadInput` (the settings must change), anything else `Unavailable`.
pub(crate) async fn connect(url: &str, timeout: Duration) -> Result<Client, ClusterError> {
    let refused = |e: StoreError| match e {
        StoreError::Tls(_) | StoreError::BadInput(_) => ClusterError::BadInput(e.to_string()),
        StoreError::Unavailable { reason, .. } => ClusterError::unavailable(reason),
        other => ClusterError::unavailable(other.to_string()),
    };
    let (client, connection) = PgConnector::new(url)
        .map_err(refused)?
        .connect(timeout)
        .await
        .map_err(refused)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "cluster connection ended");
        }
    });
    Ok(client)
}

/// A schema name that can be spliced into SQL: letters, digits and `_`, not starting with a digit.
pub(crate) fn check_schema(schema: &str) -> Result<(), ClusterError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::BadInput(format!(
            "schema {schema:?}: 1 to 63 letters, digits or '_', not starting with a digit"
        )))
    }
}

/// Creates the cluster's tables if missing, under a transaction-scoped advisory lock so that
/// nodes starting at the same moment do not race on `CREATE .. IF NOT EXISTS`.
pub(crate) async fn ensure_schema(client: &mut Client, schema: &str) -> Result<(), ClusterError> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('crashonly-cluster:' || $1))",
        &[&schema],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE SEQUENCE IF NOT EXISTS {schema}.incarnations;
         CREATE TABLE IF NOT EXISTS {schema}.members (
             incarnation BIGINT PRIMARY KEY,
             name TEXT NOT NULL,
             lease_until TIMESTAMPTZ NOT NULL,
             joined_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
         );
         CREATE SEQUENCE IF NOT EXISTS {schema}.tokens;
         CREATE TABLE IF NOT EXISTS {schema}.placement (
             family TEXT NOT NULL,
             key TEXT NOT NULL,
             holder BIGINT NOT NULL,
             token BIGINT NOT NULL,
             PRIMARY KEY (family, key)
         );"
    ))
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A connection made on first use and made again after a failure; every query bounded in time.
#[derive(Debug)]
pub(crate) struct Conn {
    url: String,
    timeout: Duration,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Conn {
    pub(crate) fn new(url: &str, timeout: Duration) -> Self {
        Conn {
            url: url.to_owned(),
            timeout,
            client: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs `sql`; a connection that failed or timed out is dropped and made again next time.
    pub(crate) async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, ClusterError> {
        let mut conn = self.client.lock().await;
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            *conn = Some(connect(&self.url, self.timeout).await?);
        }
        let client = conn.as_ref().expect("connected above");
        match tokio::time::timeout(self.timeout * 2, client.query(sql, params)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => {
                if client.is_closed() {
                    *conn = None;
                }
                Err(e.into())
            }
            Err(_) => {
                *conn = None;
                Err(ClusterError::unavailable("postgres: query timed out"))
            }
        }
    }
}
