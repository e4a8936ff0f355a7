//! A live stream's messages: a change-log event as the response's oneof, the control
//! messages, and the cursor's position in each log.

use taskmesh_platform::cursor::Cursor;
use taskmesh_proto::{
    catalogue::{Reminders, TaskEvents, TopicEvents as _},
    gateway::v1::{StreamChangesResponse, stream_changes_response::Event},
};

use crate::hub::Log;

/// The oneof variant for a change of `log`, or `None` for a type this gateway does not
/// stream (not a change-log event, or a newer producer's) or a payload that does not decode.
pub(super) fn event_of(log: Log, event_type: &str, data: &[u8]) -> Option<Event> {
    let event = match log {
        Log::Tasks => match TaskEvents::decode(event_type, data).ok()?? {
            TaskEvents::TaskCreated(e) => Event::TaskCreated(e),
            TaskEvents::TaskUpdated(e) => Event::TaskUpdated(e),
            TaskEvents::TaskCompleted(e) => Event::TaskCompleted(e),
            TaskEvents::TaskUncompleted(e) => Event::TaskUncompleted(e),
            TaskEvents::TaskDeleted(e) => Event::TaskDeleted(e),
            TaskEvents::TagCreated(e) => Event::TagCreated(e),
            TaskEvents::TagUpdated(e) => Event::TagUpdated(e),
            TaskEvents::TagDeleted(e) => Event::TagDeleted(e),
        },
        Log::Notifications => match Reminders::decode(event_type, data).ok()?? {
            Reminders::ReminderFired(e) => Event::ReminderFired(e),
            Reminders::TaskOverdue(e) => Event::TaskOverdue(e),
            Reminders::NotificationRead(e) => Event::NotificationRead(e),
            // Published outside the notification log: no stream position to show them at.
            Reminders::ReminderSnoozed(_) | Reminders::ReminderDismissed(_) => return None,
        },
    };
    Some(event)
}

pub(super) fn message(
    cursor: &Cursor,
    event: Event,
    event_id: String,
    event_type: String,
) -> StreamChangesResponse {
    StreamChangesResponse {
        cursor: cursor.encode(),
        event: Some(event),
        event_id,
        event_type,
    }
}

/// A message without a change (caught up, heartbeat, resync).
pub(super) fn control(cursor: &Cursor, event: Event) -> StreamChangesResponse {
    message(cursor, event, String::new(), String::new())
}

/// The stream's position in `log`.
pub(super) fn position(cursor: &Cursor, log: Log) -> i64 {
    match log {
        Log::Tasks => cursor.task,
        Log::Notifications => cursor.notification,
    }
    .unwrap_or(0)
}

pub(super) fn advance(cursor: &mut Cursor, log: Log, sequence: i64) {
    match log {
        Log::Tasks => cursor.task = Some(sequence),
        Log::Notifications => cursor.notification = Some(sequence),
    }
}
