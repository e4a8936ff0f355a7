//! `taskmesh.gateway.v1.LiveService`: replay from the change logs (TaskService's tasks,
//! ReminderService's notifications), then live events from the [`Hub`], with no gap and no
//! duplicate (ARCHITECTURE.md invariant 5).
//!
//! Every change carries its owner's gapless sequence number in its log, so the stream keeps
//! one position `pos` per log (the cursor) and:
//! 1. subscribes to the hub first (buffering live events),
//! 2. replays each log after its `pos` page by page (`TaskService.ListChanges`,
//!    `ReminderService.ListNotificationChanges`),
//! 3. then takes live events: `seq <= pos` is a duplicate and dropped, `seq == pos + 1` is
//!    sent, `seq > pos + 1` (a gap: the relay published out of the stream's view, or this
//!    stream lagged) re-reads the change logs;
//! 4. ends with `UNAUTHENTICATED` when the caller's token expires (its `exp` plus the
//!    verifier's leeway): a client renews its token and resumes from its last cursor;
//! 5. ends with `RESOURCE_EXHAUSTED` when its user opened more streams than allowed (the
//!    oldest makes room, see `slots`);
//! 6. after 15 s of silence sends a heartbeat. While the hub's Kafka consumer is failing it
//!    re-reads the change logs first (a safety net for anything Kafka did not bring), and
//!    once the consumer recovers every stream re-reads them once, at a random moment within
//!    a heartbeat period (so tens of thousands of streams do not all ask at once). An idle stream on a healthy
//!    hub makes no upstream call, so one gateway can hold tens of thousands of them.
//!
//! This module holds the service and the stream's loop; the rest is in:
//! - `replay`: the change logs read page by page with the caller's token.
//! - `messages`: events as stream messages, and the cursor's position per log.
//! - `lifetime`: the stream's own task, its endings (token expiry, eviction) and the
//!   open-streams gauge.

mod lifetime;
mod messages;
mod replay;

use std::{pin::Pin, time::Duration};

use futures::Stream;
use taskmesh_platform::{
    auth::{Caller, bearer},
    cursor::Cursor,
    grpc::invalid_argument,
};
use taskmesh_proto::{
    gateway::v1::{
        CaughtUp, Heartbeat, Resync, StreamChangesRequest, StreamChangesResponse,
        live_service_server::LiveService, stream_changes_response::Event,
    },
    reminder::v1::reminder_service_client::ReminderServiceClient,
    task::v1::task_service_client::TaskServiceClient,
};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, metadata::MetadataValue, transport::Channel};

use crate::{
    hub::{Hub, LiveEvent, Log},
    slots::Slots,
};
use lifetime::{OpenStream, run_apart, token_end};
use messages::{advance, control, event_of, message, position};
use replay::{Logs, Replay};

/// How often an idle stream gets a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// The live stream service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LiveServiceImpl {
    hub: Hub,
    tasks: TaskServiceClient<Channel>,
    reminders: ReminderServiceClient<Channel>,
    shutdown: CancellationToken,
    leeway: Duration,
    slots: Slots,
}

impl LiveServiceImpl {
    pub(crate) fn new(
        hub: Hub,
        tasks: Channel,
        reminders: Channel,
        shutdown: CancellationToken,
        leeway: Duration,
        max_streams_per_user: usize,
    ) -> Self {
        Self {
            hub,
            tasks: TaskServiceClient::new(tasks),
            reminders: ReminderServiceClient::new(reminders),
            shutdown,
            leeway,
            slots: Slots::new(max_streams_per_user),
        }
    }
}

/// What woke a live stream up.
enum Wake {
    /// The hub's next event for this user (or why there is none).
    Event(Result<std::sync::Arc<LiveEvent>, RecvError>),
    /// 15 s without a message.
    Silence,
    /// The hub's consumer health changed.
    Health,
    /// The time to re-read the change logs after a recovery came.
    Recheck,
    /// The gateway is shutting down.
    Shutdown,
}

/// Resolves at `at`, or never.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A random duration below `limit`.
fn jitter(limit: Duration) -> Duration {
    let millis = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
    // A v4 UUID is 122 random bits: plenty for a delay.
    Duration::from_millis(
        u64::try_from(uuid::Uuid::new_v4().as_u128() % u128::from(millis)).unwrap_or(0),
    )
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<StreamChangesResponse, Status>> + Send>>;

fn parse_cursor(text: &str, field: &str) -> Result<Option<Cursor>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    Cursor::decode(text)
        .map(Some)
        .map_err(|_| invalid_argument(field, "is not a cursor this service returned"))
}

#[tonic::async_trait]
impl LiveService for LiveServiceImpl {
    type StreamChangesStream = ChangeStream;

    async fn stream_changes(
        &self,
        request: Request<StreamChangesRequest>,
    ) -> Result<Response<Self::StreamChangesStream>, Status> {
        let caller = Caller::of(&request)?.clone();
        let token: MetadataValue<_> = bearer(request.metadata())
            .and_then(|t| format!("Bearer {t}").parse().ok())
            .ok_or_else(taskmesh_platform::auth::token_missing)?;
        let requested = request.get_ref();
        let start = match (
            parse_cursor(&requested.cursor, "cursor")?,
            parse_cursor(&requested.also_cursor, "also_cursor")?,
        ) {
            (Some(a), Some(b)) => a.merge(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => Cursor::default(),
        };
        // Subscribe before reading the change logs, so nothing committed meanwhile is missed.
        let mut live = self.hub.subscribe(&caller.user);
        let mut hub_health = self.hub.health();
        let mut recoveries_seen = hub_health.borrow_and_update().recoveries;
        let mut logs = Logs {
            tasks: self.tasks.clone(),
            reminders: self.reminders.clone(),
            token,
        };
        let shutdown = self.shutdown.clone();
        let token_ends = token_end(caller.expires_at, self.leeway);
        // A log without a position starts from its latest change ("from now").
        let mut cursor = start;
        for log in Log::ALL {
            let unset = match log {
                Log::Tasks => cursor.task.is_none(),
                Log::Notifications => cursor.notification.is_none(),
            };
            if unset {
                let (_, latest) = logs.page(log, i64::MAX).await?;
                advance(&mut cursor, log, latest);
            }
        }
        // Taken once nothing can fail any more: a stream that does not open evicts nobody.
        let slot = self.slots.take(&caller.user);
        tracing::debug!(user = %caller.user, ?cursor, "live stream opened");
        let open = OpenStream::new();
        let stream = async_stream::try_stream! {
            // Counted as open for as long as the stream lives.
            let _open = open;
            // Replay, then keep going live; a gap or lag sends us back here.
            let mut caught_up_sent = false;
            let mut heartbeat_due = false;
            loop {
                // When to re-read the change logs after the hub's consumer recovered; this
                // reading covers any recovery before it.
                let mut recheck_at = None;
                for log in Log::ALL {
                    loop {
                        let (page, _) = logs.page(log, position(&cursor, log)).await?;
                        let entries = match page {
                            Replay::Expired => {
                                yield control(&cursor, Event::Resync(Resync {
                                    reason: "cursor older than the change log's retention window".into(),
                                }));
                                return;
                            }
                            Replay::Changes(entries) => entries,
                        };
                        if entries.is_empty() {
                            break;
                        }
                        for entry in entries {
                            advance(&mut cursor, log, entry.sequence);
                            if let Some(event) = event_of(log, &entry.event_type, &entry.data) {
                                yield message(&cursor, event, entry.event_id, entry.event_type);
                            }
                        }
                    }
                }
                if heartbeat_due {
                    heartbeat_due = false;
                    yield control(&cursor, Event::Heartbeat(Heartbeat {}));
                }
                if !caught_up_sent {
                    caught_up_sent = true;
                    yield control(&cursor, Event::CaughtUp(CaughtUp {}));
                }
                // Live.
                let resync_needed = loop {
                    let wake = tokio::select! {
                        () = shutdown.cancelled() => Wake::Shutdown,
                        received = live.recv() => Wake::Event(received),
                        changed = hub_health.changed() => match changed {
                            Ok(()) => Wake::Health,
                            // The hub is gone: the gateway is shutting down.
                            Err(_) => Wake::Shutdown,
                        },
                        () = tokio::time::sleep(HEARTBEAT) => Wake::Silence,
                        () = until(recheck_at) => Wake::Recheck,
                    };
                    match wake {
                        Wake::Shutdown => return,
                        Wake::Silence => {
                            if hub_health.borrow().degraded {
                                // Kafka may be losing events: look in the change logs first.
                                heartbeat_due = true;
                                break true;
                            }
                            yield control(&cursor, Event::Heartbeat(Heartbeat {}));
                        }
                        Wake::Health => {
                            let recoveries = hub_health.borrow_and_update().recoveries;
                            if recoveries != recoveries_seen {
                                // Receiving works again: read what may have been missed, at
                                // a moment of this stream's own within a heartbeat period,
                                // so the gateway's streams do not all ask at once.
                                recoveries_seen = recoveries;
                                recheck_at.get_or_insert_with(|| tokio::time::Instant::now() + jitter(HEARTBEAT));
                            }
                        }
                        Wake::Recheck => break true,
                        Wake::Event(Ok(event)) if event.sequence <= position(&cursor, event.log) => {}
                        Wake::Event(Ok(event)) if event.sequence == position(&cursor, event.log) + 1 => {
                            advance(&mut cursor, event.log, event.sequence);
                            if let Some(payload) = event_of(event.log, &event.event_type, &event.data) {
                                yield message(&cursor, payload, event.event_id.clone(), event.event_type.clone());
                            }
                        }
                        // A gap, or this stream fell behind: read the change logs again.
                        Wake::Event(Ok(_) | Err(RecvError::Lagged(_))) => break true,
                        Wake::Event(Err(RecvError::Closed)) => break false,
                    }
                };
                if !resync_needed {
                    return;
                }
            }
        };
        Ok(Response::new(run_apart(Box::pin(stream), token_ends, slot)))
    }
}
