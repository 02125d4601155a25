//! The PostgreSQL store honours the URL's `sslmode`: `require` refuses a server without TLS with
//! a typed error (never plain TCP), `verify-full` refuses a certificate the system does not
//! trust, and every mode that connects uses TLS exactly when it should, as the server itself
//! reports (`pg_stat_ssl`). The tests against a server need `CRASHONLY_PG_URL` (without it they
//! say they were skipped); the CI server offers TLS with a self-signed certificate (Debian's
//! default) or none at all, and either way `verify-full` must fail.
#![cfg(feature = "postgres")]

use std::time::Duration;

use crashonly::store::{PgOptions, PgStore, Store, StoreError, StoreExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn with_mode(url: &str, mode: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode={mode}")
}

fn server_url() -> Option<String> {
    let url = std::env::var("CRASHONLY_PG_URL").ok();
    if url.is_none() {
        crashonly::testing::skipped("CRASHONLY_PG_URL is not set (PostgreSQL sslmode)");
    }
    url
}

fn opts(schema: &str) -> PgOptions {
    PgOptions::default()
        .with_schema(schema.to_owned())
        .with_connect_timeout(Duration::from_secs(5))
}

/// A server without TLS, as far as the client can tell: it answers the TLS request with `N`.
async fn server_without_tls() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut request = [0u8; 8]; // length 8, then the SSLRequest code 80877103
            if conn.read_exact(&mut request).await.is_ok() && request[4..] == 80_877_103u32.to_be_bytes() {
                let _ = conn.write_all(b"N").await;
            }
        }
    });
    format!("postgres://postgres@127.0.0.1:{port}/test")
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_is_a_tls_error() {
    let url = with_mode(&server_without_tls().await, "require");
    let err = PgStore::connect(&url, opts("tls_none")).await.unwrap_err();
    assert!(matches!(&err, StoreError::Tls(why) if why.contains("TLS")), "{err:?}");
    assert_eq!(err.retry_after(), None, "a TLS failure is not temporary");
}

#[tokio::test]
async fn an_unknown_sslmode_is_bad_input() {
    let url = with_mode("postgres://postgres@127.0.0.1:1/test", "always");
    let err = PgStore::connect(&url, opts("tls_bad")).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::BadInput(m) if m.contains("sslmode")),
        "{err:?}"
    );
}

#[tokio::test]
async fn sslmode_verify_full_refuses_a_certificate_nobody_trusts() {
    let Some(url) = server_url() else { return };
    let err = PgStore::connect(&with_mode(&url, "verify-full"), opts("tls_verify"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Tls(_)), "{err:?}");
}

/// Each mode that connects uses TLS exactly when it should: the server's own view of the store's
/// connection (found by the schema its last statement named).
#[tokio::test]
async fn each_mode_uses_tls_when_it_should() {
    let Some(url) = server_url() else { return };
    let (admin, conn) = tokio_postgres::connect(&with_mode(&url, "disable"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let server_has_tls = admin.query_one("SHOW ssl", &[]).await.unwrap().get::<_, String>(0) == "on";
    for (mode, expect_tls) in [("disable", false), ("prefer", server_has_tls), ("require", true)] {
        let schema = format!("tls_{mode}_{}", std::process::id());
        let store = match PgStore::connect(&with_mode(&url, mode), opts(&schema)).await {
            Ok(store) => store,
            Err(StoreError::Tls(_)) if mode == "require" && !server_has_tls => continue,
            Err(e) => panic!("{mode}: {e}"),
        };
        store.put(b"probe", mode.as_bytes().to_vec()).await.unwrap();
        assert_eq!(store.get(b"probe").await.unwrap().unwrap().value, mode.as_bytes());
        let rows = admin
            .query(
                "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.query LIKE '%' || $1 || '.%' AND a.pid <> pg_backend_pid()",
                &[&schema],
            )
            .await
            .unwrap();
        assert!(
            !rows.is_empty(),
            "{mode}: the store's connection is not in pg_stat_activity"
        );
        for row in rows {
            assert_eq!(row.get::<_, bool>(0), expect_tls, "{mode}: TLS in use");
        }
        drop(store);
        admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
            .unwrap();
    }
}
