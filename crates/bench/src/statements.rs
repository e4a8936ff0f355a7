//! Counts the SQL statements the in-process mesh sends, as the driver sees them: sqlx reports
//! every statement it executes (`BEGIN` and `COMMIT` included) as a tracing event with target
//! `sqlx::query`, and with sqlx each statement is one round trip to PostgreSQL. Statements
//! are attributed to where they ran: inside a consumer's `consume` or `consume.batch` span (by consumer name),
//! inside an RPC's `grpc` span (by method), or elsewhere (outbox relays, partition leases, lag
//! probes, listeners).
//!
//! Counting is off unless a [`Counting`] guard is alive: while off, the layer disables the
//! spans and events it watches, so the timed runs pay one atomic load per callsite hit.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tracing::{
    Event, Metadata, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id},
    subscriber::Interest,
};
use tracing_subscriber::{Layer, layer::Context, prelude::*, registry::LookupSpan};

/// Whether statements are being counted.
static ON: AtomicBool = AtomicBool::new(false);
/// Statements counted per place, since the last [`Counting::start`].
static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

/// Installs the counting layer as the process's tracing subscriber (nothing else is logged).
pub(crate) fn install() {
    let _ = tracing_subscriber::registry()
        .with(StatementLayer)
        .try_init();
}

/// Statements are counted while this lives; [`Counting::stop`] returns them per place.
pub(crate) struct Counting(());

impl Counting {
    /// Clears the counts and starts counting.
    pub(crate) fn start() -> Self {
        COUNTS.lock().expect("statement counts").clear();
        ON.store(true, Ordering::SeqCst);
        Self(())
    }

    /// The counts so far, counting on.
    pub(crate) fn peek() -> BTreeMap<String, u64> {
        COUNTS.lock().expect("statement counts").clone()
    }

    /// Stops counting; the statements per place (`consumer <name>`, `rpc <Service/Method>`,
    /// `other`).
    pub(crate) fn stop(self) -> BTreeMap<String, u64> {
        ON.store(false, Ordering::SeqCst);
        std::mem::take(&mut *COUNTS.lock().expect("statement counts"))
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        ON.store(false, Ordering::SeqCst);
    }
}

/// Where a span's statements count: its place name, kept in the span's extensions.
struct Place(String);

/// The layer: watches `consume` and `grpc` spans and `sqlx::query` events.
struct StatementLayer;

fn watched(metadata: &Metadata<'_>) -> bool {
    if metadata.is_span() {
        matches!(metadata.name(), "consume" | "consume.batch" | "grpc")
    } else {
        metadata.target() == "sqlx::query"
    }
}

impl<S> Layer<S> for StatementLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if watched(metadata) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        watched(metadata) && ON.load(Ordering::Relaxed)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut visitor = PlaceVisitor::default();
        attrs.record(&mut visitor);
        let place = match attrs.metadata().name() {
            "consume" | "consume.batch" => visitor.consumer.map(|c| format!("consumer {c}")),
            _ => visitor.otel_name.map(|m| format!("rpc {m}")),
        };
        if let (Some(place), Some(span)) = (place, ctx.span(id)) {
            span.extensions_mut().insert(Place(place));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let place = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .into_iter()
                    .find_map(|span| span.extensions().get::<Place>().map(|p| p.0.clone()))
            })
            .unwrap_or_else(|| "other".to_owned());
        *COUNTS
            .lock()
            .expect("statement counts")
            .entry(place)
            .or_default() += 1;
    }
}

/// Reads the `consumer` and `otel.name` fields of a span.
#[derive(Default)]
struct PlaceVisitor {
    consumer: Option<String>,
    otel_name: Option<String>,
}

impl Visit for PlaceVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "consumer" => self.consumer = Some(format!("{value:?}")),
            "otel.name" => self.otel_name = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "consumer" => self.consumer = Some(value.to_owned()),
            "otel.name" => self.otel_name = Some(value.to_owned()),
            _ => {}
        }
    }
}
