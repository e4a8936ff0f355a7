//! The change logs (TaskService's tasks, ReminderService's notifications) as a stream
//! replays them: one page at a time, with the caller's own token.

use std::time::Duration;

use taskmesh_proto::{
    reminder::v1::{
        ListNotificationChangesRequest, reminder_service_client::ReminderServiceClient,
    },
    task::v1::{ListChangesRequest, task_service_client::TaskServiceClient},
};
use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

use crate::hub::Log;

/// Longest one replay page may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);

/// One change-log entry, from either log.
pub(super) struct Entry {
    pub(super) sequence: i64,
    pub(super) event_id: String,
    pub(super) event_type: String,
    pub(super) data: Vec<u8>,
}

/// What one replay page gave.
pub(super) enum Replay {
    /// Changes after the position (empty: caught up).
    Changes(Vec<Entry>),
    /// The position is older than the change log keeps.
    Expired,
}

/// The change logs, read with the caller's own token.
#[derive(Clone)]
pub(super) struct Logs {
    pub(super) tasks: TaskServiceClient<Channel>,
    pub(super) reminders: ReminderServiceClient<Channel>,
    pub(super) token: MetadataValue<Ascii>,
}

impl Logs {
    fn authed<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        // A page that takes longer fails the stream (the client resumes from its cursor)
        // rather than holding it open on a stuck upstream.
        request.set_timeout(REPLAY_TIMEOUT);
        request
            .metadata_mut()
            .insert("authorization", self.token.clone());
        request
    }

    /// Up to 500 entries of `log` after `after`, and the latest sequence.
    pub(super) async fn page(&mut self, log: Log, after: i64) -> Result<(Replay, i64), Status> {
        let result = match log {
            Log::Tasks => {
                let request = self.authed(ListChangesRequest {
                    after_sequence: after,
                    page_size: 500,
                });
                self.tasks.list_changes(request).await.map(|r| {
                    let r = r.into_inner();
                    let entries = r.changes.into_iter().map(|c| Entry {
                        sequence: c.sequence,
                        event_id: c.event_id,
                        event_type: c.r#type,
                        data: c.data,
                    });
                    (entries.collect(), r.latest_sequence)
                })
            }
            Log::Notifications => {
                let request = self.authed(ListNotificationChangesRequest {
                    after_sequence: after,
                    page_size: 500,
                });
                self.reminders
                    .list_notification_changes(request)
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        let entries = r.changes.into_iter().map(|c| Entry {
                            sequence: c.sequence,
                            event_id: c.event_id,
                            event_type: c.r#type,
                            data: c.data,
                        });
                        (entries.collect(), r.latest_sequence)
                    })
            }
        };
        match result {
            Ok((entries, latest)) => Ok((Replay::Changes(entries), latest)),
            Err(status) if status.code() == Code::FailedPrecondition => Ok((Replay::Expired, 0)),
            Err(status) => Err(status),
        }
    }
}
