//! The consumers of every topic ([`Topic::ALL`]; ARCHITECTURE.md invariant 2): each event becomes one audit entry in its owner's chain, in the transaction
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

use std::collections::HashSet;

use sqlx::PgConnection;
use taskmesh_platform::{
    cloudevents::CloudEvent,
    consumer::{HandleError, Handler, database, reject},
};
use taskmesh_proto::{
    catalogue::{self, Event as _, Topic},
    events::v1::{ChangeContext, SeriesEnded},
};
use uuid::Uuid;

use crate::{chain::Content, changes, entries};

/// Records the events of one topic for the consumer `taskmesh-audit-<topic>`.
#[derive(Clone, Debug)]
pub struct AuditHandler {
    /// The topic.
    topic: Topic,
    /// The topic's name (with the installation's prefix), recorded on each entry.
    topic_name: String,
}

impl AuditHandler {
    /// A handler for the events of `topic`, named `topic_name` in this installation.
    pub fn new(topic: Topic, topic_name: String) -> Self {
        Self { topic, topic_name }
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
        self.handle_batch(tx, &[event]).await.map_err(|(_, e)| e)
    }

    /// Validates every event, skips replays (one statement), and appends the rest to their
    /// users' chains ([`entries::append_all`]): seven statements whatever the batch's size.
    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[&CloudEvent],
    ) -> Result<(), (usize, HandleError)> {
        let valids = events
            .iter()
            .enumerate()
            .map(|(i, event)| validate(self.topic, event).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        // The first event of each change: later ones with the same key, in this batch or
        // before it, are replays.
        let keyed: Vec<(&str, &str, Uuid)> = valids
            .iter()
            .zip(events)
            .filter_map(|(valid, event)| {
                let key = valid.change_key.as_deref()?;
                Some((valid.context.user.as_str(), key, event.id))
            })
            .collect();
        let first: HashSet<Uuid> = if keyed.is_empty() {
            HashSet::new()
        } else {
            sqlx::query_scalar!(
                "INSERT INTO recorded_changes (user_id, change_key, event_id) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[]) \
                 ON CONFLICT DO NOTHING RETURNING event_id",
                &keyed.iter().map(|k| k.0).collect::<Vec<_>>() as &[&str],
                &keyed.iter().map(|k| k.1).collect::<Vec<_>>() as &[&str],
                &keyed.iter().map(|k| k.2).collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| (0, database(e)))?
            .into_iter()
            .collect()
        };
        let mut contents = Vec::with_capacity(events.len());
        for (valid, event) in valids.into_iter().zip(events) {
            if let Some(key) = &valid.change_key
                && !first.contains(&event.id)
            {
                tracing::info!(event_id = %event.id, change = %key, "replayed change not recorded again");
                metrics::counter!("taskmesh_audit_replays_total").increment(1);
                continue;
            }
            let context = valid.context;
            contents.push(Content {
                id: Uuid::nil(),
                event_id: event.id,
                event_type: event.event_type.clone(),
                source: event.source.clone(),
                topic: self.topic_name.clone(),
                actor: context.actor,
                user: context.user,
                resource: event.subject.clone(),
                event_time: event.time,
                trace_id: trace_id(event.traceparent.as_deref()),
                request_id: context.request_id,
                changes: changes::of(&event.data_schema, &event.data),
                chain_position: 0,
            });
        }
        entries::append_all(tx, contents)
            .await
            .map_err(|e| (0, database(e)))?;
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
fn validate(topic: Topic, event: &CloudEvent) -> Result<Valid, HandleError> {
    let kind = catalogue::find(&event.event_type).ok_or_else(|| {
        reject(format!(
            "unknown event type {:?}",
            bounded(&event.event_type)
        ))
    })?;
    // `series.ended` travelled on `task-commands` until it got a topic of its own; records
    // still there are history like any other (read for one release: remove in 0.3).
    let legacy = kind.event_type == SeriesEnded::TYPE && topic == Topic::TaskCommands;
    if kind.topic != topic && !legacy {
        return Err(reject(format!(
            "{} belongs on {}, not {}",
            kind.event_type,
            kind.topic.base_name(),
            topic.base_name()
        )));
    }
    let command = kind.topic == Topic::TaskCommands;
    if taskmesh_platform::cloudevents::data_schema_message(&event.data_schema) != Some(kind.message)
    {
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
    if command && context.request_id.is_empty() {
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
        None if command => Some(format!(
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
    taskmesh_platform::grpc::truncate(text, 64).into_owned()
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
