//! OpenTelemetry export with the runtime's own W3C ids (feature `otel`).
//!
//! Each handled envelope is a `tracing` span named `envelope`. With
//! [`tracing-opentelemetry`](https://docs.rs/tracing-opentelemetry)'s layer installed, that span is
//! exported as an OpenTelemetry span whose trace id is the envelope's 128-bit trace id, whose span
//! id is the envelope's id ([`EnvelopeId::span_id`](crate::EnvelopeId::span_id)) and whose parent
//! is the envelope's parent span, possibly in another process: the exported tree is the tree of
//! requests, across actors, nodes and HTTP callers.
//!
//! Two pieces make it so: the tracer provider takes its ids from [`EnvelopeIds`] (which hands
//! out the id the runtime asks for while it starts a span, and random ids otherwise), and
//! [`attach`] gives a span its W3C context before it starts. The runtime calls [`attach`] for its
//! envelope spans; an application calls it for spans of its own that stand for a hop of a trace
//! (an HTTP request it received, for instance). `examples/otel.rs` exports to an OTLP collector.
//!
//! Invariant: the id handed to [`EnvelopeIds`] lives in a thread-local set only for the duration
//! of [`attach`]'s first entry of the span, which is when `tracing-opentelemetry` starts it.

mod otlp;

use std::cell::Cell;

use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::envelope::{SpanId, TraceContext};

pub use otlp::{otlp, OtelError};

thread_local! {
    /// The (trace id, span id) of the span being started by `attach` on this thread.
    static STARTING: Cell<Option<(u128, u64)>> = const { Cell::new(None) };
}

/// The tracer provider's id generator: a span started by [`attach`] gets the W3C ids it was
/// given; every other span random ones.
///
/// ```
/// use opentelemetry_sdk::trace::SdkTracerProvider;
///
/// let provider = SdkTracerProvider::builder()
///     .with_id_generator(crashonly::otel::EnvelopeIds::default())
///     .build();
/// # drop(provider);
/// ```
#[derive(Clone, Debug, Default)]
pub struct EnvelopeIds {
    random: RandomIdGenerator,
}

impl IdGenerator for EnvelopeIds {
    fn new_trace_id(&self) -> opentelemetry::trace::TraceId {
        match STARTING.with(Cell::get) {
            Some((trace, _)) => opentelemetry::trace::TraceId::from(trace),
            None => self.random.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> opentelemetry::trace::SpanId {
        match STARTING.with(Cell::get) {
            Some((_, span)) => opentelemetry::trace::SpanId::from(span),
            None => self.random.new_span_id(),
        }
    }
}

/// Gives `span` the W3C identity of one hop of `trace`: its trace id, `id` as its own span id
/// and `trace.parent` as its parent span (remote: it may be in another process). Call it right
/// after creating the span, before it is entered; without an OpenTelemetry layer it does
/// nothing.
///
/// ```
/// use crashonly::{SpanId, TraceContext};
///
/// let trace = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// let span = tracing::info_span!("http");
/// crashonly::otel::attach(&span, &trace, SpanId::new(7).unwrap());
/// ```
pub fn attach(span: &tracing::Span, trace: &TraceContext, id: SpanId) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = trace.parent {
        let remote = SpanContext::new(
            opentelemetry::trace::TraceId::from(trace.trace_id.get()),
            opentelemetry::trace::SpanId::from(parent.get()),
            TraceFlags::new(trace.flags),
            true,
            TraceState::default(),
        );
        // Err only without the layer or once started: then there is nothing to give ids to.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    /// Clears the thread-local also when the subscriber panics.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            STARTING.with(|s| s.set(None));
        }
    }
    let _clear = Clear;
    STARTING.with(|s| s.set(Some((trace.trace_id.get(), id.get()))));
    // The first entry starts the OpenTelemetry span: its ids come from `EnvelopeIds` now.
    span.in_scope(|| ());
}
