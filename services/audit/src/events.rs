//! The consumers of every topic (`task-events`, `reminders`, `task-commands`; ARCHITECTURE.md
//! invariant 2): each event becomes one audit entry in its owner's chain, in the transaction
//! that records the event as processed. An event is recorded once, by its `ce_id`, whichever
//! topic or delivery brings it.

use prost::Message;
use sqlx::PgConnection;
use taskmesh_platform::{
    cloudevents::CloudEvent,
    consumer::{HandleError, Handler, database},
};
use taskmesh_proto::events::v1::ChangeContext;
use uuid::Uuid;

use crate::{chain::Content, changes, entries};

/// Records the events of one topic for the consumer `taskmesh-audit-<topic>`.
#[derive(Clone, Debug)]
pub struct AuditHandler {
    /// The topic's name (with its prefix), recorded on each entry.
    topic: String,
}

impl AuditHandler {
    /// A handler for the events of `topic`.
    pub fn new(topic: String) -> Self {
        Self { topic }
    }
}

/// Every taskmesh payload carries its `ChangeContext` as field 1.
#[derive(Clone, PartialEq, Message)]
struct ContextOnly {
    #[prost(message, optional, tag = "1")]
    context: Option<ChangeContext>,
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`); empty when absent
/// or malformed.
pub(crate) fn trace_id(traceparent: Option<&str>) -> String {
    let Some(parts) = traceparent.map(|t| t.split('-').collect::<Vec<_>>()) else {
        return String::new();
    };
    match parts.as_slice() {
        [_, trace, _, _]
            if trace.len() == 32
                && trace.chars().all(|c| c.is_ascii_hexdigit())
                && trace.chars().any(|c| c != '0') =>
        {
            trace.to_ascii_lowercase()
        }
        _ => String::new(),
    }
}

impl Handler for AuditHandler {
    async fn handle(&self, tx: &mut PgConnection, event: &CloudEvent) -> Result<(), HandleError> {
        // A payload without a context (or one that does not decode) is still audited, under
        // the record key's user.
        let context = ContextOnly::decode(event.data.as_slice())
            .ok()
            .and_then(|c| c.context)
            .unwrap_or_default();
        let user = if context.user.is_empty() {
            event.key.clone()
        } else {
            context.user
        };
        let content = Content {
            id: Uuid::nil(),
            event_id: event.id,
            event_type: event.event_type.clone(),
            source: event.source.clone(),
            topic: self.topic.clone(),
            actor: context.actor,
            user,
            resource: event.subject.clone(),
            event_time: event.time,
            trace_id: trace_id(event.traceparent.as_deref()),
            request_id: context.request_id,
            changes: changes::of(&event.data_schema, &event.data),
            chain_position: 0,
        };
        entries::append(tx, content).await.map_err(database)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::trace_id;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id(Some(&format!("00-{id}-00f067aa0ba902b7-01"))), id);
        assert_eq!(trace_id(None), "");
        assert_eq!(trace_id(Some("garbage")), "");
        assert_eq!(
            trace_id(Some(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            )),
            ""
        );
    }
}
