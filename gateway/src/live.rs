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

use std::{pin::Pin, time::Duration};

use futures::Stream;
use taskmesh_platform::{
    auth::{Caller, bearer},
    cursor::Cursor,
    grpc::invalid_argument,
};
use taskmesh_proto::{
    catalogue::{Reminders, TaskEvents, TopicEvents as _},
    gateway::v1::{
        CaughtUp, Heartbeat, Resync, StreamChangesRequest, StreamChangesResponse,
        live_service_server::LiveService, stream_changes_response::Event,
    },
    reminder::v1::{
        ListNotificationChangesRequest, reminder_service_client::ReminderServiceClient,
    },
    task::v1::{ListChangesRequest, task_service_client::TaskServiceClient},
};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Request, Response, Status,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

use crate::{
    hub::{Hub, LiveEvent, Log},
    slots::{Slot, Slots},
};

/// Longest one replay page may take.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// When a stream of a token expiring at `expires_at` (seconds since the Unix epoch, UTC)
/// ends: then plus `leeway`, as the verifier would refuse it.
fn token_end(expires_at: u64, leeway: Duration) -> tokio::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(expires_at)
        .saturating_add(leeway)
        .saturating_sub(now);
    // At most a year ahead: an Instant far in the future can overflow.
    tokio::time::Instant::now() + left.min(Duration::from_secs(366 * 24 * 3600))
}

/// The oneof variant for a change of `log`, or `None` for a type this gateway does not
/// stream (not a change-log event, or a newer producer's) or a payload that does not decode.
fn event_of(log: Log, event_type: &str, data: &[u8]) -> Option<Event> {
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

fn message(
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
fn control(cursor: &Cursor, event: Event) -> StreamChangesResponse {
    message(cursor, event, String::new(), String::new())
}

/// The stream's position in `log`.
fn position(cursor: &Cursor, log: Log) -> i64 {
    match log {
        Log::Tasks => cursor.task,
        Log::Notifications => cursor.notification,
    }
    .unwrap_or(0)
}

fn advance(cursor: &mut Cursor, log: Log, sequence: i64) {
    match log {
        Log::Tasks => cursor.task = Some(sequence),
        Log::Notifications => cursor.notification = Some(sequence),
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

/// One change-log entry, from either log.
struct Entry {
    sequence: i64,
    event_id: String,
    event_type: String,
    data: Vec<u8>,
}

/// What one replay page gave.
enum Replay {
    /// Changes after the position (empty: caught up).
    Changes(Vec<Entry>),
    /// The position is older than the change log keeps.
    Expired,
}

/// The change logs, read with the caller's own token.
#[derive(Clone)]
struct Logs {
    tasks: TaskServiceClient<Channel>,
    reminders: ReminderServiceClient<Channel>,
    token: MetadataValue<Ascii>,
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
    async fn page(&mut self, log: Log, after: i64) -> Result<(Replay, i64), Status> {
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

/// Messages a stream may have ready that its client has not read yet.
const BUFFERED: usize = 4;

/// Runs `inner` in a task of its own that hands its messages over a small buffer, and ends
/// it with `UNAUTHENTICATED` at `token_ends` or `RESOURCE_EXHAUSTED` when `slot` is taken by a
/// newer stream. The task notices both even when the client stopped reading (which stops
/// hyper from polling the response body), and then drops `inner` with everything it holds
/// (its hub subscription, its place in the open-streams gauge).
fn run_apart(
    mut inner: ChangeStream,
    token_ends: tokio::time::Instant,
    slot: Slot,
) -> ChangeStream {
    use tracing::Instrument as _;
    let (sender, receiver) = tokio::sync::mpsc::channel(BUFFERED);
    // The ending is kept apart from the buffer: a client that reads again, however late,
    // gets what was buffered and then it.
    let ending = std::sync::Arc::new(std::sync::Mutex::new(None::<Status>));
    let ended = ending.clone();
    let task = async move {
        let why = loop {
            let next = tokio::select! {
                next = futures::StreamExt::next(&mut inner) => next,
                () = tokio::time::sleep_until(token_ends) => break expired(),
                () = slot.evicted.cancelled() => break evicted(),
                // The client went away.
                () = sender.closed() => return,
            };
            let Some(message) = next else { return };
            let last = message.is_err();
            tokio::select! {
                sent = sender.send(message) => {
                    if sent.is_err() || last {
                        return;
                    }
                }
                () = tokio::time::sleep_until(token_ends) => break expired(),
                () = slot.evicted.cancelled() => break evicted(),
            }
        };
        // Set before the sender goes (with this task), so the receiver finds it.
        *ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
    };
    tokio::spawn(task.instrument(tracing::Span::current()));
    let last = futures::stream::once(async move {
        ending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    });
    Box::pin(futures::StreamExt::chain(
        tokio_stream::wrappers::ReceiverStream::new(receiver),
        futures::StreamExt::filter_map(last, |ending| async move { ending.map(Err) }),
    ))
}

fn expired() -> Status {
    taskmesh_platform::grpc::error(
        tonic::Code::Unauthenticated,
        "TOKEN_EXPIRED",
        "the token expired: renew it and resume from the last cursor",
    )
}

fn evicted() -> Status {
    taskmesh_platform::grpc::error(
        tonic::Code::ResourceExhausted,
        "TOO_MANY_STREAMS",
        "too many live streams for this user: this one, the oldest, was closed",
    )
}

/// One open live stream in `taskmesh_live_streams_open`, for as long as it lives.
struct OpenStream;

impl OpenStream {
    fn new() -> Self {
        metrics::gauge!("taskmesh_live_streams_open").increment(1.0);
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("taskmesh_live_streams_open").decrement(1.0);
    }
}
