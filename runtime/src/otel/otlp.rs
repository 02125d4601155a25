//! OTLP/HTTP export (protobuf over HTTP/1.1 to a collector, `POST <endpoint>/v1/traces`), with a
//! small blocking client: the batch span processor exports from its own thread, so a blocking
//! socket there costs no runtime worker. Plain `http://` only; for TLS, build the exporter with
//! `opentelemetry_otlp` and an HTTP client of your choice, and keep [`EnvelopeIds`].

use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use super::EnvelopeIds;

/// Why the OTLP exporter could not be built.
#[derive(Debug)]
pub struct OtelError(String);

impl fmt::Display for OtelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot build the otlp exporter: {}", self.0)
    }
}

impl std::error::Error for OtelError {}

/// A tracer provider exporting to the OTLP/HTTP collector at `endpoint` (such as
/// `http://127.0.0.1:4318`; the standard `OTEL_EXPORTER_OTLP_*` variables are not read), in
/// batches, as service `service`, with the runtime's ids ([`EnvelopeIds`]). Call
/// [`SdkTracerProvider::shutdown`] before exiting to send what is buffered (a crash loses it:
/// traces are best effort).
///
/// Install it with `tracing_opentelemetry::layer().with_tracer(provider.tracer(..))` on a
/// `tracing_subscriber` registry; `examples/otel.rs` does it all.
///
/// ```no_run
/// let provider = crashonly::otel::otlp("http://127.0.0.1:4318", "cart").unwrap();
/// // ... run the system ...
/// provider.shutdown().unwrap();
/// ```
pub fn otlp(endpoint: &str, service: &str) -> Result<SdkTracerProvider, OtelError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingHttp)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| OtelError(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_id_generator(EnvelopeIds::default())
        .with_resource(Resource::builder().with_service_name(service.to_owned()).build())
        .with_batch_exporter(exporter)
        .build())
}

/// One request per connection, HTTP/1.1, `Connection: close`.
#[derive(Debug)]
struct BlockingHttp;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BlockingHttp {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        post(&request).map_err(Into::into)
    }
}

fn post(request: &http::Request<Bytes>) -> std::io::Result<http::Response<Bytes>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
    let uri = request.uri();
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// endpoints (no TLS) are supported"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut stream = TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("{} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n", request.method());
    for (name, value) in request.headers() {
        if let Ok(v) = value.to_str() {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let body = request.body();
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    // Only the status matters to the exporter (it does not read OTLP's partial-success body).
    let status = std::str::from_utf8(&raw[..raw.len().min(12)])
        .ok()
        .and_then(|l| l.strip_prefix("HTTP/1.1 ").or_else(|| l.strip_prefix("HTTP/1.0 ")))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("not an HTTP response"))?;
    http::Response::builder()
        .status(status)
        .body(Bytes::new())
        .map_err(|e| bad(&e.to_string()))
}
