//! The catalogue of CloudEvent types: each `ce_type` with its payload message (in
//! `taskmesh.events.v1`) and the topic it travels on, as the messages' comments in
//! `proto/taskmesh/events/v1` state them. Consumers that must tell a valid event from
//! anything else (AuditService) check a record against it.

/// One event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventKind {
    /// The CloudEvent `type`, `dev.taskmesh.<resource>.<verb>.v1`.
    pub event_type: &'static str,
    /// The payload's protobuf message, fully qualified.
    pub message: &'static str,
    /// The topic it travels on (base name, without the installation's prefix).
    pub topic: &'static str,
}

const fn kind(event_type: &'static str, message: &'static str, topic: &'static str) -> EventKind {
    EventKind {
        event_type,
        message,
        topic,
    }
}

/// Every event type of the mesh.
pub const EVENTS: &[EventKind] = &[
    kind(
        "dev.taskmesh.task.created.v1",
        "taskmesh.events.v1.TaskCreated",
        "task-events",
    ),
    kind(
        "dev.taskmesh.task.updated.v1",
        "taskmesh.events.v1.TaskUpdated",
        "task-events",
    ),
    kind(
        "dev.taskmesh.task.completed.v1",
        "taskmesh.events.v1.TaskCompleted",
        "task-events",
    ),
    kind(
        "dev.taskmesh.task.uncompleted.v1",
        "taskmesh.events.v1.TaskUncompleted",
        "task-events",
    ),
    kind(
        "dev.taskmesh.task.deleted.v1",
        "taskmesh.events.v1.TaskDeleted",
        "task-events",
    ),
    kind(
        "dev.taskmesh.tag.created.v1",
        "taskmesh.events.v1.TagCreated",
        "task-events",
    ),
    kind(
        "dev.taskmesh.tag.updated.v1",
        "taskmesh.events.v1.TagUpdated",
        "task-events",
    ),
    kind(
        "dev.taskmesh.tag.deleted.v1",
        "taskmesh.events.v1.TagDeleted",
        "task-events",
    ),
    kind(
        "dev.taskmesh.reminder.fired.v1",
        "taskmesh.events.v1.ReminderFired",
        "reminders",
    ),
    kind(
        "dev.taskmesh.task.overdue.v1",
        "taskmesh.events.v1.TaskOverdue",
        "reminders",
    ),
    kind(
        "dev.taskmesh.notification.read.v1",
        "taskmesh.events.v1.NotificationRead",
        "reminders",
    ),
    kind(
        "dev.taskmesh.reminder.snoozed.v1",
        "taskmesh.events.v1.ReminderSnoozed",
        "reminders",
    ),
    kind(
        "dev.taskmesh.reminder.dismissed.v1",
        "taskmesh.events.v1.ReminderDismissed",
        "reminders",
    ),
    kind(
        "dev.taskmesh.task.create.v1",
        "taskmesh.events.v1.CreateTaskCommand",
        "task-commands",
    ),
    kind(
        "dev.taskmesh.task.add_exdate.v1",
        "taskmesh.events.v1.AddExdateCommand",
        "task-commands",
    ),
    kind(
        "dev.taskmesh.task.end_series.v1",
        "taskmesh.events.v1.EndSeriesCommand",
        "task-commands",
    ),
    kind(
        "dev.taskmesh.task.delete.v1",
        "taskmesh.events.v1.DeleteTaskCommand",
        "task-commands",
    ),
    kind(
        "dev.taskmesh.series.ended.v1",
        "taskmesh.events.v1.SeriesEnded",
        "task-commands",
    ),
];

/// The kind of `event_type`, if it is one of the mesh's.
pub fn find(event_type: &str) -> Option<&'static EventKind> {
    EVENTS.iter().find(|kind| kind.event_type == event_type)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::EVENTS;

    #[test]
    fn every_kind_names_a_message_with_a_context_and_comments_agree() {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let events = set
            .file
            .iter()
            .filter(|f| f.package() == "taskmesh.events.v1")
            .collect::<Vec<_>>();
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
            // The message's leading comment says which type and topic it is.
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
            if kind.topic != "task-commands" {
                assert!(
                    comment.contains(kind.topic),
                    "{}'s comment does not name {}",
                    kind.message,
                    kind.topic
                );
            }
        }
    }
}
