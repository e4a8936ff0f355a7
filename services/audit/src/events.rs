//! The consumers of every topic (`task-events`, `reminders`, `task-commands`; ARCHITECTURE.md
//! invariant 2): each event becomes one audit entry in its owner's chain, in the transaction
//! that records the event as processed. An event is recorded once, by its `ce_id`, whichever
//! topic or delivery brings it.
//!
//! Only valid events enter the history: a known type (the catalogue,
//! [`taskmesh_proto::catalogue`]) on its own topic, whose `ce_dataschema` names the type's
//! message, whose payload decodes as it, names its owner (the record key) and actor (and
//! request id, for a command), and carries what it is about (field 2). Anything else is
//! rejected, so the consumer dead-letters it and counts it. (A well-formed command that
//! TaskService then refuses is recorded as the request it was; TaskService's own dead letter
//! records the refusal.) A replay of a change already
//! recorded under another `ce_id` (the same task version, or the same command request id) is
//! skipped and counted (`taskmesh_audit_replays_total`).

use sqlx::PgConnection;
use taskmesh_platform::{
    cloudevents::CloudEvent,
    consumer::{HandleError, Handler, database, reject},
};
use taskmesh_proto::{catalogue, events::v1::ChangeContext};
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
        let valid = validate(&self.topic, event)?;
        if let Some(key) = &valid.change_key {
            let first = sqlx::query(
                "INSERT INTO recorded_changes (user_id, change_key, event_id) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&valid.context.user)
            .bind(key)
            .bind(event.id)
            .execute(&mut *tx)
            .await
            .map_err(database)?
            .rows_affected();
            if first == 0 {
                tracing::info!(event_id = %event.id, change = %key, "replayed change not recorded again");
                metrics::counter!("taskmesh_audit_replays_total").increment(1);
                return Ok(());
            }
        }
        let context = valid.context;
        let content = Content {
            id: Uuid::nil(),
            event_id: event.id,
            event_type: event.event_type.clone(),
            source: event.source.clone(),
            topic: self.topic.clone(),
            actor: context.actor,
            user: context.user,
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

/// What a valid event tells beyond its attributes.
struct Valid {
    context: ChangeContext,
    /// What identifies the change apart from its `ce_id`, if anything does.
    change_key: Option<String>,
}

/// Checks `event` against the catalogue (see the module docs).
///
/// # Errors
/// [`HandleError::Reject`] saying what is wrong.
fn validate(topic: &str, event: &CloudEvent) -> Result<Valid, HandleError> {
    let kind = catalogue::find(&event.event_type).ok_or_else(|| {
        reject(format!(
            "unknown event type {:?}",
            bounded(&event.event_type)
        ))
    })?;
    if !topic.ends_with(kind.topic) {
        return Err(reject(format!(
            "{} belongs on {}, not {topic}",
            kind.event_type, kind.topic
        )));
    }
    if event.data_schema != taskmesh_platform::cloudevents::data_schema(kind.message) {
        return Err(reject(format!(
            "{} must carry {}, not {:?}",
            kind.event_type,
            kind.message,
            bounded(&event.data_schema)
        )));
    }
    let message = changes::decode(kind.message, &event.data)
        .ok_or_else(|| reject(format!("the payload is not a {}", kind.message)))?;
    let context = changes::context(&message).ok_or_else(|| reject("the payload has no context"))?;
    if context.user.is_empty() || context.user != event.key {
        return Err(reject(
            "the payload's owner is missing or is not the record key",
        ));
    }
    if context.actor.is_empty() {
        return Err(reject("the payload names no actor"));
    }
    if kind.message.ends_with("Command") && context.request_id.is_empty() {
        return Err(reject("a command needs a request id"));
    }
    // Field 2 of every payload is what it is about (the task, tag, reminder, series, ...).
    if !message.has_field_by_number(2) {
        return Err(reject(format!("the {} is empty", kind.message)));
    }
    // A versioned resource's change is its version; a command's is its request id (each
    // command carries its own, deterministic one). Other events (a tag created by a request
    // that may create several) have no identity beyond their `ce_id`.
    let change_key = match changes::resource_version(&message) {
        Some(version) => Some(format!("{} {}@{version}", kind.event_type, event.subject)),
        None if kind.message.ends_with("Command") => Some(format!(
            "{} {} {}",
            kind.event_type, event.subject, context.request_id
        )),
        None => None,
    };
    Ok(Valid {
        context,
        change_key,
    })
}

/// At most 64 characters of `text`, for a reason that quotes what a client sent.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
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
