//! OpenTelemetry spans carry the runtime's W3C ids (feature `otel`): an envelope's exported span
//! has the envelope's 128-bit trace id, the envelope id as its span id and the envelope's parent
//! as its parent span, so a caller's `traceparent`, a handler and the sub-request it makes form
//! one tree; an unsampled caller's trace is not exported.

use opentelemetry::trace::{SpanId, TraceId, TracerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

use crashonly::prelude::*;
use crashonly::{Header, TraceContext};

struct Back;

impl Actor for Back {
    type Args = ();
    type Msg = ();
    type Reply = Header;
    type Error = DeliveryError;
    async fn start(_: &(), _: &mut Context<Self>) -> Result<Self, DeliveryError> {
        Ok(Back)
    }
    async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<Header, DeliveryError> {
        Ok(ctx.header().unwrap().clone())
    }
}

struct Front(ActorRef<Back>);

impl Actor for Front {
    type Args = ActorRef<Back>;
    type Msg = ();
    type Reply = (Header, Header);
    type Error = DeliveryError;
    async fn start(back: &ActorRef<Back>, _: &mut Context<Self>) -> Result<Self, DeliveryError> {
        Ok(Front(back.clone()))
    }
    async fn handle(&mut self, _: (), ctx: &mut Context<Self>) -> Result<(Header, Header), DeliveryError> {
        let back = ctx.ask(&self.0, ()).await?;
        Ok((ctx.header().unwrap().clone(), back))
    }
}

fn span_of(spans: &[SpanData], envelope: &Header) -> SpanData {
    let id = SpanId::from(envelope.id.span_id().get());
    spans
        .iter()
        .find(|s| s.span_context.span_id() == id)
        .unwrap_or_else(|| panic!("no span {id} among {spans:#?}"))
        .clone()
}

#[tokio::test(flavor = "current_thread")]
async fn exported_spans_carry_the_envelopes_w3c_ids() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_id_generator(crashonly::otel::EnvelopeIds::default())
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // One thread (current_thread runtime): every span is made under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let system = System::new();
    let back = system.spawn(ActorSpec::<Back>::new(())).unwrap();
    let front = system.spawn(ActorSpec::<Front>::new(back)).unwrap();

    let caller = TraceContext::parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let (outer, inner) = front.ask(()).trace(caller).await.unwrap();
    let (root, _) = front.ask(()).await.unwrap();
    let unsampled = TraceContext::parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap();
    let (quiet, _) = front.ask(()).trace(unsampled).await.unwrap();
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    let caller_trace = TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736u128);
    let front_span = span_of(&spans, &outer);
    assert_eq!(front_span.name, "envelope");
    assert_eq!(front_span.span_context.trace_id(), caller_trace, "the caller's trace");
    assert_eq!(
        front_span.parent_span_id,
        SpanId::from(0x00f067aa0ba902b7u64),
        "under the caller's span"
    );
    assert!(front_span.parent_span_is_remote);
    let back_span = span_of(&spans, &inner);
    assert_eq!(
        back_span.span_context.trace_id(),
        caller_trace,
        "the sub-request: the same trace"
    );
    assert_eq!(
        back_span.parent_span_id,
        front_span.span_context.span_id(),
        "the sub-request: under the handler that sent it"
    );

    // A request from outside: its own trace (the runtime's id), no parent.
    let root_span = span_of(&spans, &root);
    assert_eq!(
        root_span.span_context.trace_id(),
        TraceId::from(root.trace.trace_id.get())
    );
    assert_eq!(root_span.parent_span_id, SpanId::INVALID);

    // A caller that does not sample: nothing of its trace is exported.
    let quiet_trace = TraceId::from(quiet.trace.trace_id.get());
    assert!(
        spans.iter().all(|s| s.span_context.trace_id() != quiet_trace),
        "{spans:#?}"
    );
    // Six envelopes handled, four exported (two were in the unsampled trace).
    assert_eq!(spans.len(), 4, "{spans:#?}");
}
