//! Accepting connections within limits, for every gRPC listener: at most
//! [`ConnectionLimits::max_connections`] open at once per listener (past it a new connection
//! is closed at once, with a warning at most every 10 s), and a connection that neither
//! sends nor receives a byte for [`ConnectionLimits::idle_timeout`] is closed. Without them,
//! 1,000 TCP connections that sent nothing, and 250 that sent an HTTP/2 preface and then
//! nothing, stayed open for ever.
//!
//! Idleness counts both directions, so a live stream that receives only heartbeats (every
//! 15 s) is not idle; an HTTP/2 client whose pooled connection went quiet reconnects on its
//! next call.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

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
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a connection may go without a byte either way.
    pub idle_timeout: Duration,
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
/// Accept errors (e.g. out of file descriptors) are logged and retried after 100 ms.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    label: &'static str,
) -> impl Stream<Item = io::Result<LimitedConnection>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let state = (listener, permits, None::<Instant>, 0_u64);
    futures::stream::unfold(
        state,
        move |(listener, permits, mut warned, mut refused)| async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
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
                let connection = LimitedConnection {
                    stream,
                    timeout: limits.idle_timeout,
                    last_activity: Instant::now(),
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
    last_activity: Instant,
    idle: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl LimitedConnection {
    /// `Err(TimedOut)` once the connection has been idle for its timeout; otherwise keeps
    /// the timer armed (at the last activity plus the timeout) and says nothing.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            let deadline = self.last_activity + self.timeout;
            if deadline <= Instant::now() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"));
            }
            // There was activity since the timer was set: wait from it.
            self.idle.as_mut().reset(deadline);
        }
    }
}

impl Connected for LimitedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(result)
            }
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
        let written = ready!(Pin::new(&mut self.stream).poll_write(cx, data))?;
        self.last_activity = Instant::now();
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs))?;
        self.last_activity = Instant::now();
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn listener(
        limits: ConnectionLimits,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut incoming = Box::pin(incoming(listener, limits, "test"));
            while let Some(Ok(mut connection)) = futures::StreamExt::next(&mut incoming).await {
                // An echo server: what a peer sends is activity both ways.
                tokio::spawn(async move {
                    let mut buf = [0; 64];
                    while let Ok(n @ 1..) = connection.read(&mut buf).await {
                        if connection.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, server)
    }

    #[tokio::test]
    async fn idle_connections_are_closed_and_active_ones_kept() {
        let limits = ConnectionLimits {
            max_connections: 10,
            idle_timeout: Duration::from_millis(300),
        };
        let (addr, _server) = listener(limits).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut chatty = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0; 8];
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            chatty.write_all(b"hi").await.unwrap();
            assert_eq!(chatty.read(&mut buf).await.unwrap(), 2);
        }
        // 600 ms without a byte: the server has closed the silent one.
        let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
    }

    #[tokio::test]
    async fn connections_past_the_limit_are_closed_at_once() {
        let limits = ConnectionLimits {
            max_connections: 2,
            idle_timeout: Duration::from_secs(60),
        };
        let (addr, _server) = listener(limits).await;
        let mut kept = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(b"x").await.unwrap();
            let mut buf = [0; 1];
            assert_eq!(stream.read(&mut buf).await.unwrap(), 1);
            kept.push(stream);
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0) | Err(_))), "{closed:?}");
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
}
