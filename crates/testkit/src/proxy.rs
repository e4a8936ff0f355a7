//! A TCP proxy in front of a server (the broker) that a test can take down and bring back:
//! down, it closes every connection it carries and refuses new ones, as a server that went
//! away would look to its clients.

use std::net::SocketAddr;

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// See the module docs; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    up: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Binds a free loopback port (bind first, so the server behind can advertise it).
    pub async fn bind() -> anyhow::Result<(TcpListener, SocketAddr)> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        Ok((listener, addr))
    }

    /// Forwards connections on `listener` to `upstream`, up from the start.
    pub fn start(listener: TcpListener, upstream: SocketAddr) -> Self {
        let (up, watcher) = watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                if !*watcher.borrow() {
                    drop(socket);
                    continue;
                }
                let mut down = watcher.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut socket, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { up, task }
    }

    /// Closes every connection and refuses new ones until [`Proxy::up`].
    pub fn down(&self) {
        self.up.send_replace(false);
    }

    /// Accepts connections again.
    pub fn up(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.up.send_replace(false);
        self.task.abort();
    }
}
