//! Tools of reminders, notifications and the activity log.

use rmcp::{
    RoleServer,
    handler::server::wrapper::{Json, Parameters},
    service::RequestContext,
    tool, tool_router,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use taskmesh_proto::{
    audit::v1::{ListActivityRequest, ListTaskHistoryRequest},
    reminder::v1::{
        DismissReminderRequest, ListNotificationsRequest, ListRemindersRequest,
        SnoozeReminderRequest,
    },
};

use super::{Tools, cursor, page_size, quoted, task_error};
use crate::mcp::{
    inputs::ReminderInput,
    status,
    views::{ActivityView, NotificationView, ReminderView, ScheduledReminderView, TaskView},
};

/// Input of `create_reminder`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateReminderInput {
    /// The task's id, `tasks/{uuid}`.
    task_id: String,
    /// Fire at this instant, RFC 3339 with an offset. Give either `at` or
    /// `minutes_before_due`.
    #[schemars(extend("format" = "date-time"))]
    at: Option<String>,
    /// Fire this many minutes before the task's due time (0 at the due time, negative
    /// after it); the task needs a due date. Give either `at` or `minutes_before_due`.
    #[schemars(range(min = -527_040, max = 527_040))]
    minutes_before_due: Option<i64>,
}

/// A task and its new reminder.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct CreateReminderOutput {
    /// The task after the change.
    task: TaskView,
    /// The new reminder; its own id is `{task id}/reminders/{id}`.
    reminder: ReminderView,
}

/// Input of `list_reminders`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListRemindersInput {
    /// Only this task's reminders, `tasks/{uuid}`.
    task_id: Option<String>,
    /// Only reminders in this state. Absent: `scheduled` and `snoozed` ones (the upcoming
    /// ones), or with `task_id` all of that task's. `fired` finds one to snooze.
    state: Option<ReminderState>,
    /// How many at most, 1 to 100; default 20.
    #[schemars(range(min = 1, max = 100))]
    page_size: Option<i32>,
    /// `next_cursor` of the previous call with the same `task_id`.
    cursor: Option<String>,
}

/// A reminder's state, to list by.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReminderState {
    /// Waiting to fire.
    Scheduled,
    /// Fired (a notification was made); can be snoozed or dismissed.
    Fired,
    /// Fired, then snoozed: fires again.
    Snoozed,
    /// Dismissed: will not fire again.
    Dismissed,
    /// Its task was completed or deleted.
    Cancelled,
}

impl ReminderState {
    /// The AIP-160 literal of ListReminders' `state`.
    fn literal(self) -> &'static str {
        match self {
            Self::Scheduled => "SCHEDULED",
            Self::Fired => "FIRED",
            Self::Snoozed => "SNOOZED",
            Self::Dismissed => "DISMISSED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

/// Reminders, soonest first.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct RemindersOutput {
    /// The reminders of this page.
    reminders: Vec<ScheduledReminderView>,
    /// Pass as `cursor` for more; null when there are no more.
    next_cursor: Option<String>,
}

/// Input of `snooze_reminder`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnoozeInput {
    /// The reminder's id, `tasks/{uuid}/reminders/{id}`; it must have fired.
    id: String,
    /// Fire again in this many minutes, 1 to 43,200 (30 days).
    #[schemars(range(min = 1, max = 43_200))]
    minutes: i64,
}

/// Input of `dismiss_reminder`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReminderId {
    /// The reminder's id, `tasks/{uuid}/reminders/{id}`.
    id: String,
}

/// A reminder after a change.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ReminderOutput {
    /// The reminder.
    reminder: ScheduledReminderView,
}

/// Input of `list_notifications`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListNotificationsInput {
    /// Only unread ones.
    unread_only: Option<bool>,
    /// How many at most, 1 to 100; default 20.
    #[schemars(range(min = 1, max = 100))]
    page_size: Option<i32>,
    /// `next_cursor` of the previous call with the same `unread_only`.
    cursor: Option<String>,
}

/// Notifications, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct NotificationsOutput {
    /// The notifications of this page.
    notifications: Vec<NotificationView>,
    /// Pass as `cursor` for more; null when there are no more.
    next_cursor: Option<String>,
}

/// Input of `get_activity`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActivityInput {
    /// One task's history (oldest first, also after it was deleted), `tasks/{uuid}`; absent:
    /// the user's activity across tasks (newest first).
    task_id: Option<String>,
    /// How many at most, 1 to 100; default 20.
    #[schemars(range(min = 1, max = 100))]
    page_size: Option<i32>,
    /// `next_cursor` of the previous call with the same `task_id`.
    cursor: Option<String>,
}

/// Audit trail entries.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ActivityOutput {
    /// The entries of this page.
    entries: Vec<ActivityView>,
    /// Pass as `cursor` for more; null when there are no more.
    next_cursor: Option<String>,
}

#[tool_router(router = reminders_router, vis = "pub(super)")]
impl Tools {
    /// Add a reminder to a task: at an instant, or some minutes before its due time.
    #[tool(annotations(
        title = "Add a reminder",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn create_reminder(
        &self,
        Parameters(input): Parameters<CreateReminderInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<CreateReminderOutput>, String> {
        let call = self.call(&context)?;
        // The reminder's id is chosen here (`[a-z0-9-]`, as the service requires), so the
        // one added is found by it, whatever else changes the task meanwhile.
        let id = uuid::Uuid::new_v4().to_string();
        let new = ReminderInput {
            id: Some(id.clone()),
            at: input.at,
            minutes_before_due: input.minutes_before_due,
        }
        .proto("reminder")
        .map_err(|p| p.0)?;
        let task = call
            .read_modify_write(&input.task_id, &["reminders"], |task| {
                task.reminders.push(new.clone());
                Ok(())
            })
            .await?;
        let view = TaskView::from(task);
        let reminder = view
            .reminders
            .iter()
            .find(|r| r.id == id)
            .map(|r| ReminderView {
                id: r.id.clone(),
                at: r.at.clone(),
                minutes_before_due: r.minutes_before_due,
            })
            .ok_or_else(|| "the service did not keep the reminder".to_owned())?;
        Ok(Json(CreateReminderOutput {
            task: view,
            reminder,
        }))
    }

    /// List reminders, soonest first: the upcoming ones (scheduled or snoozed), one task's,
    /// or those in a state (e.g. `fired`, to snooze one).
    #[tool(annotations(
        title = "List reminders",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn list_reminders(
        &self,
        Parameters(input): Parameters<ListRemindersInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<RemindersOutput>, String> {
        let call = self.call(&context)?;
        let mut filter = Vec::new();
        if let Some(task) = input.task_id.as_deref() {
            filter.push(format!("task = {}", quoted(task)));
        }
        if let Some(state) = input.state {
            filter.push(format!("state = {}", state.literal()));
        }
        let filter = filter.join(" AND ");
        let request = call.request(ListRemindersRequest {
            page_size: page_size(input.page_size),
            page_token: input.cursor.unwrap_or_default(),
            filter,
        });
        let response = call.reminders().list_reminders(request).await;
        let page = response
            .map_err(|s| status::message(&s, "reminder"))?
            .into_inner();
        Ok(Json(RemindersOutput {
            reminders: page
                .reminders
                .into_iter()
                .map(ScheduledReminderView::from)
                .collect(),
            next_cursor: cursor(page.next_page_token),
        }))
    }

    /// Snooze a reminder that fired: it fires again after the given minutes.
    #[tool(annotations(
        title = "Snooze a reminder",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = false
    ))]
    async fn snooze_reminder(
        &self,
        Parameters(input): Parameters<SnoozeInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ReminderOutput>, String> {
        let call = self.call(&context)?;
        let request = call.request(SnoozeReminderRequest {
            name: input.id,
            duration: Some(prost_types::Duration {
                seconds: input.minutes.saturating_mul(60),
                nanos: 0,
            }),
            request_id: String::new(),
        });
        let response = call.reminders().snooze_reminder(request).await;
        let reminder = response
            .map_err(|s| status::message(&s, "reminder"))?
            .into_inner()
            .reminder;
        let reminder = reminder.ok_or_else(|| "the service sent no reminder".to_owned())?;
        Ok(Json(ReminderOutput {
            reminder: reminder.into(),
        }))
    }

    /// Dismiss a reminder: it will not fire (again).
    #[tool(annotations(
        title = "Dismiss a reminder",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn dismiss_reminder(
        &self,
        Parameters(input): Parameters<ReminderId>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ReminderOutput>, String> {
        let call = self.call(&context)?;
        let request = call.request(DismissReminderRequest { name: input.id });
        let response = call.reminders().dismiss_reminder(request).await;
        let reminder = response
            .map_err(|s| status::message(&s, "reminder"))?
            .into_inner()
            .reminder;
        let reminder = reminder.ok_or_else(|| "the service sent no reminder".to_owned())?;
        Ok(Json(ReminderOutput {
            reminder: reminder.into(),
        }))
    }

    /// List the user's notifications (fired reminders, overdue tasks), newest first.
    #[tool(annotations(
        title = "List notifications",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn list_notifications(
        &self,
        Parameters(input): Parameters<ListNotificationsInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<NotificationsOutput>, String> {
        let call = self.call(&context)?;
        let filter = if input.unread_only.unwrap_or(false) {
            "unread = true"
        } else {
            ""
        };
        let request = call.request(ListNotificationsRequest {
            page_size: page_size(input.page_size),
            page_token: input.cursor.unwrap_or_default(),
            filter: filter.to_owned(),
        });
        let response = call.reminders().list_notifications(request).await;
        let page = response
            .map_err(|s| status::message(&s, "notification"))?
            .into_inner();
        Ok(Json(NotificationsOutput {
            notifications: page
                .notifications
                .into_iter()
                .map(NotificationView::from)
                .collect(),
            next_cursor: cursor(page.next_page_token),
        }))
    }

    /// Read the activity log: what changed, when and by whom (`mcp:<user>` marks changes
    /// made through this server), across the user's tasks or for one task with the values
    /// before and after each change.
    #[tool(annotations(
        title = "Read the activity log",
        read_only_hint = true,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = false
    ))]
    async fn get_activity(
        &self,
        Parameters(input): Parameters<ActivityInput>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ActivityOutput>, String> {
        let call = self.call(&context)?;
        let (page_size, page_token) =
            (page_size(input.page_size), input.cursor.unwrap_or_default());
        let (entries, next) = match input.task_id {
            Some(task) => {
                let request = call.request(ListTaskHistoryRequest {
                    task,
                    page_size,
                    page_token,
                });
                let page = call.audit().list_task_history(request).await;
                let page = page.map_err(task_error)?.into_inner();
                (page.entries, page.next_page_token)
            }
            None => {
                let request = call.request(ListActivityRequest {
                    page_size,
                    page_token,
                });
                let page = call.audit().list_activity(request).await;
                let page = page
                    .map_err(|s| status::message(&s, "activity"))?
                    .into_inner();
                (page.entries, page.next_page_token)
            }
        };
        Ok(Json(ActivityOutput {
            entries: entries.into_iter().map(ActivityView::from).collect(),
            next_cursor: cursor(next),
        }))
    }
}
