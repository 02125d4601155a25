//! Traces of a crashonly system exported to an OpenTelemetry collector over OTLP/HTTP.
//!
//! ```sh
//! # a collector (or Jaeger: `docker run -p 16686:16686 -p 4318:4318 jaegertracing/all-in-one`)
//! cargo run --features otel --bin otel -- http://127.0.0.1:4318 \
//!     00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//! ```
//!
//! A `front` actor asks a `back` actor while handling each request; three requests are sent,
//! the first continuing the `traceparent` given as the second argument (if any), the others
//! starting traces of their own. Each handled envelope is one span whose ids are the runtime's
//! W3C ids: the collector shows, per trace, the front envelope under the caller's span and the
//! back envelope under the front one. It prints `trace <trace id> <front span> <back span>` per
//! request, then flushes the exporter before exiting.

use std::process::ExitCode;

use clap::Parser;
use crashonly::prelude::*;
use crashonly::{Header, TraceContext};
use opentelemetry::trace::TracerProvider;
use tracing_subscriber::layer::SubscriberExt;

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
        ctx.header().cloned().ok_or(DeliveryError::Expired)
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
        // Inside a handler the sub-request inherits the trace by itself.
        let back = ctx.ask(&self.0, ()).await?;
        Ok((ctx.header().cloned().ok_or(DeliveryError::Expired)?, back))
    }
}

/// otel: three requests through two actors, their envelopes exported as spans over OTLP/HTTP.
#[derive(Parser, Debug)]
#[command(name = "otel")]
struct Args {
    /// The collector's OTLP/HTTP endpoint
    #[arg(default_value = "http://127.0.0.1:4318")]
    endpoint: String,
    /// A W3C traceparent the first request continues, like
    /// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
    #[arg(value_parser = traceparent)]
    traceparent: Option<TraceContext>,
}

/// A W3C `traceparent` header's value.
fn traceparent(s: &str) -> Result<TraceContext, String> {
    TraceContext::parse_traceparent(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let Args {
        endpoint,
        traceparent: caller,
    } = Args::parse();
    let provider = match crashonly::otel::otlp(&endpoint, "crashonly-otel-example") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("otel: {e}");
            return ExitCode::FAILURE;
        }
    };
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("crashonly"));
    if let Err(e) = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)) {
        eprintln!("otel: {e}");
        return ExitCode::FAILURE;
    }

    let system = System::new();
    let spawned = system
        .spawn(ActorSpec::<Back>::new(()).name("back"))
        .and_then(|back| system.spawn(ActorSpec::<Front>::new(back).name("front")));
    let front = match spawned {
        Ok(f) => f,
        Err(e) => {
            eprintln!("otel: {e}");
            return ExitCode::FAILURE;
        }
    };
    for i in 0..3 {
        let ask = front.ask(());
        let ask = match (i, caller) {
            (0, Some(trace)) => ask.trace(trace),
            _ => ask,
        };
        match ask.await {
            Ok((f, b)) => println!("trace {} {} {}", f.trace.trace_id, f.id.span_id(), b.id.span_id()),
            Err(e) => {
                eprintln!("otel: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    // Sends what is batched; a process killed before this loses it (traces are best effort).
    match provider.shutdown() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otel: export failed: {e}");
            ExitCode::FAILURE
        }
    }
}
