//! `taskmesh.gateway.v1.LiveService`: replay from TaskService's change log, then live events
//! from the [`Hub`], with no gap and no duplicate (ARCHITECTURE.md invariant 5).
//!
//! Every change carries its owner's gapless sequence number, so the stream keeps one position
//! `pos` and:
//! 1. subscribes to the hub first (buffering live events),
//! 2. replays `ListChanges(after = pos)` page by page,
//! 3. then takes live events: `seq <= pos` is a duplicate and dropped, `seq == pos + 1` is
//!    sent, `seq > pos + 1` (a gap: the relay published out of the stream's view, or this
//!    stream lagged) re-reads the change log from `pos`;
//! 4. after 15 s of silence, re-reads the change log too (a safety net for anything Kafka did
//!    not bring), then sends a heartbeat.

use std::{pin::Pin, time::Duration};

use futures::Stream;
use prost::Message;
use taskmesh_platform::{
    auth::{Caller, bearer},
    cursor::Cursor,
    grpc::invalid_argument,
};
use taskmesh_proto::{
    events::v1 as ev,
    gateway::v1::{
        CaughtUp, Heartbeat, Resync, StreamChangesRequest, StreamChangesResponse,
        live_service_server::LiveService, stream_changes_response::Event,
    },
    task::v1::{ListChangesRequest, task_service_client::TaskServiceClient},
};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, metadata::MetadataValue, transport::Channel};

use crate::hub::Hub;

/// How often an idle stream gets a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// The live stream service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LiveServiceImpl {
    hub: Hub,
    tasks: TaskServiceClient<Channel>,
    shutdown: CancellationToken,
}

impl LiveServiceImpl {
    pub(crate) fn new(hub: Hub, tasks: Channel, shutdown: CancellationToken) -> Self {
        Self {
            hub,
            tasks: TaskServiceClient::new(tasks),
            shutdown,
        }
    }
}

/// The oneof variant for a change, or `None` for a type this gateway does not stream.
fn event_of(event_type: &str, data: &[u8]) -> Option<Event> {
    let event = match event_type {
        "dev.taskmesh.task.created.v1" => Event::TaskCreated(ev::TaskCreated::decode(data).ok()?),
        "dev.taskmesh.task.updated.v1" => Event::TaskUpdated(ev::TaskUpdated::decode(data).ok()?),
        "dev.taskmesh.task.completed.v1" => {
            Event::TaskCompleted(ev::TaskCompleted::decode(data).ok()?)
        }
        "dev.taskmesh.task.uncompleted.v1" => {
            Event::TaskUncompleted(ev::TaskUncompleted::decode(data).ok()?)
        }
        "dev.taskmesh.task.deleted.v1" => Event::TaskDeleted(ev::TaskDeleted::decode(data).ok()?),
        "dev.taskmesh.tag.created.v1" => Event::TagCreated(ev::TagCreated::decode(data).ok()?),
        "dev.taskmesh.tag.updated.v1" => Event::TagUpdated(ev::TagUpdated::decode(data).ok()?),
        "dev.taskmesh.tag.deleted.v1" => Event::TagDeleted(ev::TagDeleted::decode(data).ok()?),
        _ => return None,
    };
    Some(event)
}

fn message(
    cursor: Cursor,
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

/// What one replay page gave.
enum Replay {
    /// Changes after the position (empty: caught up).
    Changes(Vec<taskmesh_proto::task::v1::Change>),
    /// The position is older than the change log keeps.
    Expired,
}

async fn replay_page(
    client: &mut TaskServiceClient<Channel>,
    token: &MetadataValue<tonic::metadata::Ascii>,
    after: i64,
) -> Result<(Replay, i64), Status> {
    let mut request = Request::new(ListChangesRequest {
        after_sequence: after,
        page_size: 500,
    });
    request
        .metadata_mut()
        .insert("authorization", token.clone());
    match client.list_changes(request).await {
        Ok(response) => {
            let response = response.into_inner();
            Ok((Replay::Changes(response.changes), response.latest_sequence))
        }
        Err(status) if status.code() == Code::FailedPrecondition => Ok((Replay::Expired, 0)),
        Err(status) => Err(status),
    }
}

type ChangeStream = Pin<Box<dyn Stream<Item = Result<StreamChangesResponse, Status>> + Send>>;

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
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let requested = &request.get_ref().cursor;
        let start =
            if requested.is_empty() {
                None
            } else {
                Some(Cursor::decode(requested).map_err(|_| {
                    invalid_argument("cursor", "is not a cursor this service returned")
                })?)
            };
        // Subscribe before reading the change log, so nothing committed meanwhile is missed.
        let mut live = self.hub.subscribe(&caller.user);
        let mut client = self.tasks.clone();
        let shutdown = self.shutdown.clone();
        let mut cursor = match start {
            Some(cursor) => cursor,
            None => {
                let (_, latest) = replay_page(&mut client, &token, i64::MAX).await?;
                Cursor {
                    task: latest,
                    notification: None,
                }
            }
        };
        tracing::debug!(user = %caller.user, position = cursor.task, "live stream opened");
        let stream = async_stream::try_stream! {
            // Replay, then keep going live; a gap or lag sends us back here.
            let mut caught_up_sent = false;
            let mut heartbeat_due = false;
            loop {
                loop {
                    let (page, _) = replay_page(&mut client, &token, cursor.task).await?;
                    let changes = match page {
                        Replay::Expired => {
                            yield StreamChangesResponse {
                                cursor: cursor.encode(),
                                event: Some(Event::Resync(Resync {
                                    reason: "cursor older than the change log's retention window".into(),
                                })),
                                event_id: String::new(),
                                event_type: String::new(),
                            };
                            return;
                        }
                        Replay::Changes(changes) => changes,
                    };
                    if changes.is_empty() {
                        break;
                    }
                    for change in changes {
                        cursor.task = change.sequence;
                        if let Some(event) = event_of(&change.r#type, &change.data) {
                            yield message(cursor, event, change.event_id, change.r#type);
                        }
                    }
                }
                if heartbeat_due {
                    heartbeat_due = false;
                    yield StreamChangesResponse {
                        cursor: cursor.encode(),
                        event: Some(Event::Heartbeat(Heartbeat {})),
                        event_id: String::new(),
                        event_type: String::new(),
                    };
                }
                if !caught_up_sent {
                    caught_up_sent = true;
                    yield StreamChangesResponse {
                        cursor: cursor.encode(),
                        event: Some(Event::CaughtUp(CaughtUp {})),
                        event_id: String::new(),
                        event_type: String::new(),
                    };
                }
                // Live.
                let resync_needed = loop {
                    let received = tokio::select! {
                        () = shutdown.cancelled() => return,
                        received = live.recv() => received,
                        // A quiet stream re-checks the change log before its heartbeat: a safety
                        // net for anything Kafka did not bring (e.g. a consumer error).
                        () = tokio::time::sleep(HEARTBEAT) => {
                            heartbeat_due = true;
                            break true;
                        }
                    };
                    match received {
                        Ok(event) if event.sequence <= cursor.task => {}
                        Ok(event) if event.sequence == cursor.task + 1 => {
                            cursor.task = event.sequence;
                            if let Some(payload) = event_of(&event.event_type, &event.data) {
                                yield message(cursor, payload, event.event_id.clone(), event.event_type.clone());
                            }
                        }
                        // A gap, or this stream fell behind: read the change log again.
                        Ok(_) | Err(RecvError::Lagged(_)) => break true,
                        Err(RecvError::Closed) => break false,
                    }
                };
                if !resync_needed {
                    return;
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
