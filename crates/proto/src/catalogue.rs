//! The catalogue of CloudEvent types, as code. Each message of `taskmesh.events.v1` declares
//! its CloudEvent `type`, its topic and whether it enters a change log in the
//! `(taskmesh.events.v1.event)` option (`proto/taskmesh/events/v1/options.proto`); this
//! crate's build generates from those options:
//! - [`Topic`], the mesh's topics;
//! - an [`Event`] impl per payload message, so a producer passes a typed payload and never
//!   spells a type, a message name or a topic;
//! - one enum per topic ([`TaskEvents`], [`Reminders`], [`TaskCommands`],
//!   [`SeriesEvents`]) with
//!   [`TopicEvents::decode`], so a consumer matches on typed variants: a consumer's `match` has
//!   no `_` arm, and adding an event type is a compile error wherever a decision is owed;
//! - [`EVENTS`], every kind as data (for AuditService's validation).
//!
//! "Who consumes `task.completed`?" is then "find the references of
//! [`TaskEvents::TaskCompleted`]".

use crate::events::v1::ChangeContext;

/// The payload of one CloudEvent type (a message of `taskmesh.events.v1`). Implemented for
/// every message with the `(event)` option, by generated code.
pub trait Event: prost::Message + Default + Clone + Send + Sync + 'static {
    /// The CloudEvent `type` (`ce_type`), `dev.taskmesh.<resource>.<verb>.v1`.
    const TYPE: &'static str;
    /// The payload's protobuf message full name, e.g. `taskmesh.events.v1.TaskCreated` (what
    /// `ce_dataschema` names).
    const MESSAGE: &'static str;
    /// The topic it travels on.
    const TOPIC: Topic;
    /// Whether its producer writes it to its per-user change log (so `context.sequence` is
    /// its position there); false for commands and events that are only published
    /// (`context.sequence` = 0).
    const CHANGE_LOG: bool;

    /// Field 1 of every event: owner, actor, sequence and request id.
    fn context(&self) -> Option<&ChangeContext>;

    /// Sets field 1 (the producer fills it in when the sequence is known).
    fn set_context(&mut self, context: ChangeContext);
}

/// The events of one topic, as an enum with a variant per type (generated: [`TaskEvents`],
/// [`Reminders`], [`TaskCommands`], [`SeriesEvents`]).
pub trait TopicEvents: Sized {
    /// The topic.
    const TOPIC: Topic;
    /// The CloudEvent types of the topic.
    const TYPES: &'static [&'static str];

    /// Decodes a record's payload by its CloudEvent `type`: `Ok(None)` when the type is not
    /// one of this topic's (a newer producer's, or a stray record).
    ///
    /// # Errors
    /// The payload is not the type's message.
    fn decode(event_type: &str, data: &[u8]) -> Result<Option<Self>, prost::DecodeError>;

    /// The variant's CloudEvent `type`.
    fn event_type(&self) -> &'static str;

    /// The event's context (field 1), if it has one.
    fn context(&self) -> Option<&ChangeContext>;
}

/// One event type, as data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventKind {
    /// The CloudEvent `type`, `dev.taskmesh.<resource>.<verb>.v1`.
    pub event_type: &'static str,
    /// The payload's protobuf message, fully qualified.
    pub message: &'static str,
    /// The topic it travels on.
    pub topic: Topic,
    /// Whether it enters its producer's change log ([`Event::CHANGE_LOG`]).
    pub change_log: bool,
}

include!(concat!(env!("OUT_DIR"), "/catalogue.rs"));

/// The kind of `event_type`, if it is one of the mesh's.
pub fn find(event_type: &str) -> Option<&'static EventKind> {
    EVENTS.iter().find(|kind| kind.event_type == event_type)
}

/// The [`ChangeContext`] of any event's payload, without knowing its type: every event
/// message has it as field 1 (the build checks this), so decoding only that field is enough.
/// `Ok(None)` when the payload has no context.
///
/// # Errors
/// The payload is not a protobuf message with a `ChangeContext` as field 1.
pub fn context_of(data: &[u8]) -> Result<Option<ChangeContext>, prost::DecodeError> {
    /// Field 1 of any event; the other fields are skipped by the decoder.
    #[derive(Clone, PartialEq, prost::Message)]
    struct ContextOnly {
        #[prost(message, optional, tag = "1")]
        context: Option<ChangeContext>,
    }
    <ContextOnly as prost::Message>::decode(data).map(|c| c.context)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::{EVENTS, Event, TaskEvents, Topic, TopicEvents};
    use crate::events::v1 as ev;

    #[test]
    fn every_kind_names_a_message_with_a_context_and_its_comment_agrees() {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let events = set
            .file
            .iter()
            .filter(|f| f.package() == "taskmesh.events.v1")
            .collect::<Vec<_>>();
        let messages = events
            .iter()
            .flat_map(|f| f.message_type.iter().map(|m| m.name().to_owned()))
            .filter(|name| name != "ChangeContext" && name != "EventOptions")
            .count();
        assert_eq!(
            messages,
            EVENTS.len(),
            "every event message is in the catalogue"
        );
        for kind in EVENTS {
            let name = kind.message.rsplit('.').next().expect("a name");
            let (file, index, message) = events
                .iter()
                .flat_map(|f| {
                    f.message_type
                        .iter()
                        .enumerate()
                        .map(move |(i, m)| (*f, i, m))
                })
                .find(|(_, _, m)| m.name() == name)
                .unwrap_or_else(|| panic!("{} is not a message", kind.message));
            let context = message.field.iter().find(|f| f.number() == 1);
            assert_eq!(
                context.map(|f| f.type_name()),
                Some(".taskmesh.events.v1.ChangeContext"),
                "{}: field 1 is the context",
                kind.message
            );
            // The message's leading comment says which type it is, for readers of the proto.
            let comment = file
                .source_code_info
                .as_ref()
                .and_then(|info| {
                    info.location
                        .iter()
                        .find(|l| l.path == [4, i32::try_from(index).unwrap_or(-1)])
                })
                .and_then(|l| l.leading_comments.clone())
                .unwrap_or_default();
            assert!(
                comment.contains(kind.event_type),
                "{}'s comment does not name {}",
                kind.message,
                kind.event_type
            );
        }
    }

    #[test]
    fn the_generated_catalogue_matches_the_wire_names() {
        // The wire format of events does not change with the generated catalogue: these are
        // the names records already in topics carry.
        assert_eq!(ev::TaskCreated::TYPE, "dev.taskmesh.task.created.v1");
        assert_eq!(ev::TaskCreated::MESSAGE, "taskmesh.events.v1.TaskCreated");
        assert_eq!(ev::TaskCreated::TOPIC.base_name(), "task-events");
        assert_eq!(
            ev::ReminderFired::TOPIC.base_name(),
            "reminders",
            "reminder.fired travels on reminders"
        );
        assert_eq!(ev::CreateTaskCommand::TYPE, "dev.taskmesh.task.create.v1");
        assert_eq!(ev::CreateTaskCommand::TOPIC, Topic::TaskCommands);
        let names: Vec<&str> = Topic::ALL.iter().map(|t| t.base_name()).collect();
        assert_eq!(
            names,
            ["reminders", "series-events", "task-commands", "task-events"]
        );
    }

    #[test]
    fn a_topic_decodes_its_types_and_declines_others() {
        let created = ev::TaskCreated {
            context: Some(ev::ChangeContext {
                user: "alice".into(),
                sequence: 7,
                ..Default::default()
            }),
            task: None,
        };
        let data = created.encode_to_vec();
        let decoded = TaskEvents::decode("dev.taskmesh.task.created.v1", &data)
            .expect("decodes")
            .expect("a task-events type");
        assert_eq!(decoded, TaskEvents::TaskCreated(created));
        assert_eq!(decoded.event_type(), "dev.taskmesh.task.created.v1");
        assert_eq!(decoded.context().map(|c| c.sequence), Some(7));
        assert_eq!(
            TaskEvents::decode("dev.taskmesh.reminder.fired.v1", &data).expect("no error"),
            None
        );
        assert!(TaskEvents::decode("dev.taskmesh.task.created.v1", &[0xff, 0xff]).is_err());
        assert_eq!(
            super::context_of(&data).expect("decodes").map(|c| c.user),
            Some("alice".to_owned())
        );
    }
}
