//! The per-message span is attached to the handler's future: entered while it is polled, never
//! across an await, and it names the actor, the envelope, the attempt and the trace.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crashonly::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

/// Records the fields of every `envelope` span.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: LayerContext<'_, S>) {
        if attrs.metadata().name() == "envelope" {
            let mut fields = BTreeMap::new();
            attrs.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }
}

fn current_span() -> Option<&'static str> {
    tracing::Span::current().metadata().map(|m| m.name())
}

struct Sleeper {
    seen: Arc<Mutex<Vec<Option<&'static str>>>>,
}

impl Actor for Sleeper {
    type Args = Arc<Mutex<Vec<Option<&'static str>>>>;
    type Msg = Duration;
    type Reply = ();
    type Error = String;

    async fn start(seen: &Self::Args, _: &mut Context<Self>) -> Result<Self, String> {
        Ok(Sleeper { seen: seen.clone() })
    }

    async fn handle(&mut self, nap: Duration, _: &mut Context<Self>) -> Result<(), String> {
        self.seen.lock().unwrap().push(current_span());
        tokio::time::sleep(nap).await;
        self.seen.lock().unwrap().push(current_span());
        Ok(())
    }
}

#[test]
fn the_envelope_span_is_current_only_while_its_handler_is_polled() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let system = System::new();
        let a = system
            .spawn(ActorSpec::<Sleeper>::named("sleeper", seen.clone()))
            .unwrap();
        let asked = {
            let a = a.clone();
            tokio::spawn(async move { a.ask(Duration::from_millis(100)).idempotent().await })
        };
        // While the handler sleeps, this task runs on the same thread: it must not see the span.
        let mut outside = Vec::new();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            outside.push(current_span());
        }
        asked.await.unwrap().unwrap();
        assert!(outside.iter().all(Option::is_none), "another task saw {outside:?}");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Some("envelope"), Some("envelope")],
            "the handler sees it"
        );
        let fields = spans.0.lock().unwrap()[0].clone();
        assert_eq!(fields.get("actor").map(String::as_str), Some("/sleeper"), "{fields:?}");
        assert_eq!(fields.get("attempt").map(String::as_str), Some("1"), "{fields:?}");
        assert!(
            fields.contains_key("id") && fields.contains_key("trace_id"),
            "{fields:?}"
        );
        let id: u64 = fields["id"].parse().unwrap();
        assert_eq!(fields["span_id"], format!("{id:016x}"), "the envelope is the span");
        assert_eq!(fields["trace_id"].len(), 32, "a W3C trace id: {fields:?}");
        assert!(
            fields["trace_id"].ends_with(&fields["span_id"]),
            "a request from outside starts its own trace: {fields:?}"
        );
    });
}
