//! W3C trace context at the HTTP edge: a request with a valid `traceparent` header continues the
//! caller's trace, one without (or with a malformed one, as W3C says) starts a new trace. The
//! request is one span (`http`); every message sent while it is handled, to a local actor or over
//! the cluster, carries its trace with that span as the parent. The response names both in a
//! `traceresponse` header (`00-<trace id>-<span id>-<flags>`, W3C Trace Context Level 2).

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use crashonly::{System, TraceContext};
use tracing::Instrument;

/// The middleware (`axum::middleware::from_fn_with_state(system, continue_trace)`).
pub async fn continue_trace(State(system): State<System>, req: Request, next: Next) -> Response {
    let incoming = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| TraceContext::parse_traceparent(v).ok());
    let span_id = system.new_span_id();
    let (trace_id, flags) = match incoming {
        Some(t) => (t.trace_id, t.flags),
        None => (system.new_trace_id(), TraceContext::SAMPLED),
    };
    let trace = TraceContext {
        trace_id,
        parent: Some(span_id),
        flags,
    };
    let span = tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        trace_id = %trace_id,
        span_id = %span_id,
        parent_id = incoming.and_then(|t| t.parent).map(tracing::field::display),
    );
    let mut response = trace.scope(next.run(req)).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&format!("00-{trace_id}-{span_id}-{flags:02x}")) {
        response.headers_mut().insert("traceresponse", v);
    }
    response
}
