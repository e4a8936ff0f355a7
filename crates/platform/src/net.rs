//! Accepting connections within limits, for every gRPC listener: at most
//! [`ConnectionLimits::max_connections`] open at once per listener (past it a new connection
//! is closed at once, with a warning at most every 10 s), and a connection with no call in
//! progress for [`ConnectionLimits::idle_timeout`] is closed. Without them, 1,000 TCP
//! connections that sent nothing, and 250 that sent an HTTP/2 preface and then nothing,
//! stayed open for ever.
//!
//! A connection is idle when none of its calls waits on the server and none made progress
//! for the timeout: [`CallTrackerLayer`] follows each call from its request until its
//! response body ends. A live stream waiting for its next event keeps its connection however
//! quiet it is; HTTP/2 keepalive pings, bytes without calls, and a call whose client stopped
//! taking its frames do not. A client whose pooled connection was closed reconnects on its
//! next call.
//!
//! The cap is per listener, not per client address: behind an ingress every client shares
//! its address, so per-client connection limits belong to the ingress.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Connection limits of one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once (at least 1 is used).
    pub max_connections: usize,
    /// How long a connection may have no call in progress (1 s to a day is used).
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// These limits within their sane ranges.
    fn clamped(self) -> Self {
        Self {
            max_connections: self.max_connections.clamp(1, Semaphore::MAX_PERMITS),
            idle_timeout: self
                .idle_timeout
                .clamp(Duration::from_secs(1), Duration::from_secs(24 * 3600)),
        }
    }
}

/// What a connection's calls are doing: how many wait on the server (a handler running, a
/// stream waiting for its next message), and when a call last made progress (started,
/// handed hyper a frame, ended).
#[derive(Debug)]
struct Activity {
    waiting_calls: AtomicUsize,
    last_progress: Mutex<Instant>,
}

impl Activity {
    fn last_progress(&self) -> Instant {
        *self
            .last_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn progressed(&self) {
        *self
            .last_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }
}

/// The connect info of a [`LimitedConnection`] (in every request's extensions): the TCP
/// addresses, and the connection's call activity for [`CallTrackerLayer`].
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// Local and remote address.
    pub tcp: TcpConnectInfo,
    activity: Arc<Activity>,
}

impl Default for ConnectionLimits {
    /// 10,000 connections, 5 minutes idle.
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// The connections `listener` accepts, within `limits`; `label` names the listener in logs.
/// Accept errors of one connection are skipped; others (out of file descriptors) are logged
/// and retried after 100 ms.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    label: &'static str,
) -> impl Stream<Item = io::Result<LimitedConnection>> + Send + 'static {
    let limits = limits.clamped();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let state = (listener, permits, None::<Instant>, 0_u64);
    futures::stream::unfold(
        state,
        move |(listener, permits, mut warned, mut refused)| async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    // A connection that failed before it was accepted: the next one.
                    Err(error)
                        if matches!(
                            error.kind(),
                            io::ErrorKind::ConnectionAborted
                                | io::ErrorKind::ConnectionReset
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue;
                    }
                    // Out of file descriptors or memory: wait a little rather than spin.
                    Err(error) => {
                        tracing::warn!(%error, listener = label, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    drop(stream);
                    refused += 1;
                    if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(
                            listener = label,
                            max_connections = limits.max_connections,
                            refused,
                            "connection limit reached: closing new connections"
                        );
                        warned = Some(Instant::now());
                        refused = 0;
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let activity = Arc::new(Activity {
                    waiting_calls: AtomicUsize::new(0),
                    last_progress: Mutex::new(Instant::now()),
                });
                let connection = LimitedConnection {
                    stream,
                    timeout: limits.idle_timeout,
                    activity,
                    idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
                    _permit: permit,
                };
                return Some((Ok(connection), (listener, permits, warned, refused)));
            }
        },
    )
}

/// An accepted connection that ends when idle too long and frees its place when dropped.
#[derive(Debug)]
pub struct LimitedConnection {
    stream: TcpStream,
    timeout: Duration,
    activity: Arc<Activity>,
    idle: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl LimitedConnection {
    /// `Err(TimedOut)` once the connection has had no call for its timeout; otherwise keeps
    /// the timer armed (at the last call's end plus the timeout, or a timeout from now while
    /// calls are open) and says nothing.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            let now = Instant::now();
            let deadline = if self.activity.waiting_calls.load(Ordering::Acquire) > 0 {
                now + self.timeout
            } else {
                self.activity.last_progress() + self.timeout
            };
            if deadline <= now {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
            }
            self.idle.as_mut().reset(deadline);
        }
    }
}

impl Connected for LimitedConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            tcp: self.stream.connect_info(),
            activity: self.activity.clone(),
        }
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => {
                self.check_idle(cx)?;
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for LimitedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, data);
        if written.is_pending() {
            // A peer that stopped reading: the timer must run here too.
            self.check_idle(cx)?;
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.stream).poll_flush(cx);
        if flushed.is_pending() {
            self.check_idle(cx)?;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if written.is_pending() {
            self.check_idle(cx)?;
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts the calls open on each [`LimitedConnection`] (a call is open from its request until
/// its response body ends or is dropped), so that a connection is idle only without calls.
/// Requests not from a [`LimitedConnection`] pass untouched.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallTrackerLayer;

impl<S> tower::Layer<S> for CallTrackerLayer {
    type Service = CallTracker<S>;

    fn layer(&self, inner: S) -> CallTracker<S> {
        CallTracker { inner }
    }
}

/// The service of [`CallTrackerLayer`].
#[derive(Clone, Debug)]
pub struct CallTracker<S> {
    inner: S,
}

/// An open call: waiting on the server from its start until it hands hyper a frame, and
/// again whenever its body has nothing ready; ends when dropped. A call whose frames the
/// client does not take (hyper stops asking for more) is not waiting, so its connection
/// goes idle.
struct OpenCall {
    activity: Arc<Activity>,
    waiting: bool,
}

impl OpenCall {
    fn start(activity: Arc<Activity>) -> Self {
        activity.waiting_calls.fetch_add(1, Ordering::AcqRel);
        activity.progressed();
        Self {
            activity,
            waiting: true,
        }
    }

    /// Waits on the server (`true`: its body had nothing ready) or not (it handed a frame).
    fn set_waiting(&mut self, waiting: bool) {
        if waiting == self.waiting {
            return;
        }
        self.waiting = waiting;
        if waiting {
            self.activity.waiting_calls.fetch_add(1, Ordering::AcqRel);
        } else {
            self.activity.waiting_calls.fetch_sub(1, Ordering::AcqRel);
        }
        self.activity.progressed();
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        self.set_waiting(false);
        self.activity.progressed();
    }
}

/// A response body that keeps its call open until it ends or is dropped.
struct TrackedBody {
    inner: tonic::body::Body,
    open: Option<OpenCall>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Pending => {
                if let Some(open) = &mut self.open {
                    open.set_waiting(true);
                }
            }
            Poll::Ready(Some(_)) => {
                if let Some(open) = &mut self.open {
                    open.set_waiting(false);
                    open.activity.progressed();
                }
            }
            Poll::Ready(None) => self.open = None,
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for CallTracker<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: http_body::Body<Data = Bytes> + Send + 'static,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let open = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|info| OpenCall::start(info.activity.clone()));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                let inner = tonic::body::Body::new(body);
                match open {
                    Some(open) => tonic::body::Body::new(TrackedBody {
                        inner,
                        open: Some(open),
                    }),
                    None => inner,
                }
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A listener whose server echoes what it reads; a connection whose first byte is `c`
    /// holds a call waiting on the server (a live stream between events) for as long as it
    /// lives, one whose first byte is `s` a call whose client stopped taking its frames.
    async fn listener(limits: ConnectionLimits) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut incoming = Box::pin(incoming(listener, limits, "test"));
            while let Some(Ok(mut connection)) = futures::StreamExt::next(&mut incoming).await {
                tokio::spawn(async move {
                    let mut open = None;
                    let mut buf = [0; 64];
                    while let Ok(n @ 1..) = connection.read(&mut buf).await {
                        if matches!(buf[0], b'c' | b's') && open.is_none() {
                            let mut call = OpenCall::start(connection.connect_info().activity);
                            // A frame handed to hyper that the client never takes.
                            call.set_waiting(buf[0] == b'c');
                            open = Some(call);
                        }
                        if connection.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Whether the server closes `socket` within `wait`.
    async fn closed(socket: &mut TcpStream, wait: Duration) -> bool {
        let mut buf = [0; 64];
        tokio::time::timeout(wait, async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn connections_without_a_call_waiting_are_closed_and_those_with_one_kept() {
        let limits = ConnectionLimits {
            max_connections: 10,
            idle_timeout: Duration::from_secs(1),
        };
        let addr = listener(limits).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // Bytes without a call do not count.
        let mut chatty = TcpStream::connect(addr).await.unwrap();
        let mut calling = TcpStream::connect(addr).await.unwrap();
        calling.write_all(b"c").await.unwrap();
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(b"s").await.unwrap();
        for _ in 0..4 {
            chatty.write_all(b"hi").await.ok();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(closed(&mut silent, Duration::from_secs(10)).await);
        assert!(closed(&mut chatty, Duration::from_secs(10)).await);
        assert!(closed(&mut stalled, Duration::from_secs(10)).await);
        // Well past the timeout, the connection with its call open still answers.
        calling.write_all(b"x").await.unwrap();
        let mut buf = [0; 8];
        assert!(calling.read(&mut buf).await.unwrap() >= 1);
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_at_once() {
        let limits = ConnectionLimits {
            max_connections: 2,
            idle_timeout: Duration::from_secs(60),
        };
        let addr = listener(limits).await;
        let mut kept = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"x").await.unwrap();
            let mut buf = [0; 1];
            assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
            kept.push(stream);
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(closed(&mut third, Duration::from_secs(10)).await);
        // A place frees when a connection ends.
        drop(kept.pop());
        let mut accepted = None;
        for _ in 0..100 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"y").await.unwrap();
            let mut buf = [0; 1];
            if matches!(stream.read(&mut buf).await, Ok(1)) {
                accepted = Some(stream);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(accepted.is_some());
    }

    #[test]
    fn limits_are_kept_in_range() {
        let clamped = ConnectionLimits {
            max_connections: 0,
            idle_timeout: Duration::MAX,
        }
        .clamped();
        assert_eq!(clamped.max_connections, 1);
        assert_eq!(clamped.idle_timeout, Duration::from_secs(24 * 3600));
    }
}
