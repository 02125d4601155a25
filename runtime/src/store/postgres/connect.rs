//! Connecting to PostgreSQL, and what its errors mean to the store.
//!
//! TLS follows the URL's `sslmode`, with libpq's meanings, through rustls:
//! - `disable`: plain TCP.
//! - `prefer` (the default when the URL says nothing): TLS if the server offers it, plain TCP if
//!   it does not; the certificate is not verified (encryption without authentication, as libpq).
//! - `require`: TLS or no connection; the certificate is not verified (as libpq without a root
//!   certificate file).
//! - `verify-full` (and `verify-ca`, checked as strictly): TLS, the certificate chain verified
//!   against the system's trusted roots and the host name against the certificate.
//!
//! tokio-postgres itself parses only `disable`, `prefer` and `require`: a `verify-*` mode is read
//! here and handed on as `require`, with a verifying rustls configuration.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::StoreError;
use crate::sync::Arc;

/// How a connection uses TLS (the URL's `sslmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

impl SslMode {
    fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyFull)
    }
}

/// The URL as tokio-postgres takes it (a `verify-*` mode rewritten to `require`) and its mode.
pub(super) fn ssl_mode(url: &str) -> Result<(String, SslMode), StoreError> {
    // `sslmode=` as a parameter: after `?` or `&` in a URL, or as a word of `key=value` settings.
    let found = url
        .match_indices("sslmode=")
        .find(|(at, _)| *at == 0 || matches!(url.as_bytes()[at - 1], b'?' | b'&' | b' ' | b'\t' | b'\n'));
    let Some((at, _)) = found else {
        return Ok((url.to_owned(), SslMode::Prefer));
    };
    let start = at + "sslmode=".len();
    let end = url[start..]
        .find(['&', ' ', '\t', '\n', '#'])
        .map_or(url.len(), |n| start + n);
    let mode = match &url[start..end] {
        "disable" => SslMode::Disable,
        "prefer" | "allow" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" | "verify-full" => SslMode::VerifyFull,
        other => {
            return Err(StoreError::BadInput(format!(
                "postgres: sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            )))
        }
    };
    let given = if mode == SslMode::VerifyFull {
        "require"
    } else {
        &url[start..end]
    };
    Ok((format!("{}{given}{}", &url[..start], &url[end..]), mode))
}

/// A connection's driver ([`PgConnector::connect`]), to be spawned: it does the connection's I/O
/// and ends with it.
pub type PgDriver = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send>>;

/// Opens connections to one PostgreSQL server with the TLS its URL's `sslmode` asks for (see the
/// module's notes: `disable`, `prefer`, `require`, `verify-full`), as [`PgStore`](super::PgStore)
/// does; for code beside the store that talks to the same database (the cluster crate). Build it
/// once: the system's trusted roots are read when it is built.
///
/// ```no_run
/// use std::time::Duration;
/// use crashonly::store::PgConnector;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), crashonly::store::StoreError> {
/// let pg = PgConnector::new("postgres://app@db.internal/app?sslmode=verify-full")?;
/// let (client, driver) = pg.connect(Duration::from_secs(2)).await?;
/// tokio::spawn(driver);
/// client.batch_execute("SELECT 1").await.expect("a query");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgConnector {
    url: String,
    mode: SslMode,
    tls: MakeRustlsConnect,
}

impl PgConnector {
    /// Reads the URL's `sslmode` and prepares TLS for it: `BadInput` for a mode it does not know,
    /// `Tls` for `verify-full` on a system without trusted roots.
    pub fn new(url: &str) -> Result<PgConnector, StoreError> {
        let (url, mode) = ssl_mode(url)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Tls(format!("postgres: {e}")))?;
        let config = if mode == SslMode::VerifyFull {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err(StoreError::Tls(
                    "postgres: sslmode verify-full, but no trusted root certificate was found on this system".into(),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth()
        };
        Ok(PgConnector {
            url,
            mode,
            tls: MakeRustlsConnect::new(config),
        })
    }

    /// Connects within `timeout`: the client and its driver, which the caller spawns. A TLS
    /// failure where the mode demands TLS is [`StoreError::Tls`]; anything else `Unavailable`.
    pub async fn connect(&self, timeout: Duration) -> Result<(Client, PgDriver), StoreError> {
        let (client, connection) = crate::clock::timeout(timeout, tokio_postgres::connect(&self.url, self.tls.clone()))
            .await
            .ok_or_else(|| StoreError::unavailable("postgres: connect timed out"))?
            .map_err(|e| self.connect_error(e))?;
        Ok((client, Box::pin(connection)))
    }

    /// A failed connect: a TLS failure where the mode demands TLS is a configuration error
    /// (`StoreError::Tls`, not temporary); anything else is the server being unavailable.
    fn connect_error(&self, e: tokio_postgres::Error) -> StoreError {
        if self.mode.requires_tls() && e.as_db_error().is_none() && is_tls_failure(&e) {
            return StoreError::Tls(format!("postgres: {e} (the URL says sslmode=require or verify-*)"));
        }
        pg_error(e)
    }
}

/// Whether a connect failed in TLS: a rustls error in its causes, or tokio-postgres' own TLS
/// error (a server answering that it has no TLS), which it exposes only through its text.
fn is_tls_failure(e: &tokio_postgres::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        cause = c.source();
    }
    e.to_string().starts_with("error performing TLS handshake")
}

impl std::fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConnector")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// libpq's `prefer` and `require`: the server's signatures are checked (the handshake is sound),
/// its certificate is not (encryption without authentication).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A failure inside a transaction: the driver's error, kept typed so that `run` can tell a
/// serialization failure (retried) from the rest, or the store's own verdict (a conflict).
#[derive(Debug)]
pub(super) enum Fail {
    Db(tokio_postgres::Error),
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

impl Fail {
    pub(super) fn conflict(c: super::super::error::Conflict) -> Fail {
        Fail::Store(StoreError::Conflict(c))
    }

    /// Whether running the transaction again may succeed: a serialization failure or a deadlock,
    /// told by its SQLSTATE.
    pub(super) fn is_retryable(&self) -> bool {
        matches!(self, Fail::Db(e) if e.code().is_some_and(retryable))
    }

    pub(super) fn into_store(self) -> StoreError {
        match self {
            Fail::Db(e) => pg_error(e),
            Fail::Store(e) => e,
        }
    }
}

/// The SQLSTATEs after which the same transaction is run again.
fn retryable(code: &SqlState) -> bool {
    *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
}

/// The driver's error as the store's: a full disk is `NoSpace`, the rest `Unavailable`.
pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let reason = match e.as_db_error() {
        Some(db) if db.code() == &SqlState::DISK_FULL => {
            return StoreError::NoSpace {
                retry_after: Duration::from_secs(1),
                reason: format!("postgres: {}", db.message()),
            }
        }
        Some(db) => format!("postgres: {} ({})", db.message(), db.code().code()),
        None => format!("postgres: {e}"),
    };
    StoreError::Unavailable {
        retry_after: Duration::from_millis(500),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_sslmode_is_read_and_verify_modes_are_handed_on_as_require() {
        let url = "postgres://u@db.example:5432/app";
        assert_eq!(ssl_mode(url).unwrap(), (url.to_owned(), SslMode::Prefer));
        let cases = [
            (
                "postgres://u@h/app?sslmode=disable",
                "postgres://u@h/app?sslmode=disable",
                SslMode::Disable,
            ),
            (
                "postgres://u@h/app?x=1&sslmode=require",
                "postgres://u@h/app?x=1&sslmode=require",
                SslMode::Require,
            ),
            (
                "postgres://u@h/app?sslmode=verify-full&x=1",
                "postgres://u@h/app?sslmode=require&x=1",
                SslMode::VerifyFull,
            ),
            (
                "host=h sslmode=verify-ca user=u",
                "host=h sslmode=require user=u",
                SslMode::VerifyFull,
            ),
            (
                "host=h notsslmode=require",
                "host=h notsslmode=require",
                SslMode::Prefer,
            ),
        ];
        for (given, handed_on, mode) in cases {
            assert_eq!(ssl_mode(given).unwrap(), (handed_on.to_owned(), mode), "{given}");
        }
        assert!(
            matches!(ssl_mode("postgres://h/app?sslmode=always"), Err(StoreError::BadInput(m)) if m.contains("always"))
        );
    }

    #[test]
    fn only_serialization_failures_and_deadlocks_are_retried() {
        assert!(retryable(&SqlState::T_R_SERIALIZATION_FAILURE));
        assert!(retryable(&SqlState::T_R_DEADLOCK_DETECTED));
        assert!(!retryable(&SqlState::UNIQUE_VIOLATION));
        assert!(!retryable(&SqlState::DISK_FULL));
        // The store's own errors are never retried, whatever their text says (the check used to
        // be a suffix of the message).
        let marked = StoreError::Unavailable {
            retry_after: Duration::from_millis(1),
            reason: "postgres: could not serialize access [retryable]".into(),
        };
        assert!(!Fail::Store(marked).is_retryable());
    }
}
