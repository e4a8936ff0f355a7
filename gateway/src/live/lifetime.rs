//! How long a live stream lives: it runs in a task of its own behind a small buffer, and ends
//! when its token expires or a newer stream of its user takes its slot; while it lives it
//! counts in the open-streams gauge.

use std::time::Duration;

use tonic::Status;

use super::ChangeStream;
use crate::slots::Slot;

/// When a stream of a token expiring at `expires_at` (seconds since the Unix epoch, UTC)
/// ends: then plus `leeway`, as the verifier would refuse it.
pub(super) fn token_end(expires_at: u64, leeway: Duration) -> tokio::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(expires_at)
        .saturating_add(leeway)
        .saturating_sub(now);
    // At most a year ahead: an Instant far in the future can overflow.
    tokio::time::Instant::now() + left.min(Duration::from_secs(366 * 24 * 3600))
}

/// Messages a stream may have ready that its client has not read yet.
const BUFFERED: usize = 4;

/// Runs `inner` in a task of its own that hands its messages over a small buffer, and ends
/// it with `UNAUTHENTICATED` at `token_ends` or `RESOURCE_EXHAUSTED` when `slot` is taken by a
/// newer stream. The task notices both even when the client stopped reading (which stops
/// hyper from polling the response body), and then drops `inner` with everything it holds
/// (its hub subscription, its place in the open-streams gauge).
pub(super) fn run_apart(
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
pub(super) struct OpenStream;

impl OpenStream {
    pub(super) fn new() -> Self {
        metrics::gauge!("taskmesh_live_streams_open").increment(1.0);
        Self
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!("taskmesh_live_streams_open").decrement(1.0);
    }
}
