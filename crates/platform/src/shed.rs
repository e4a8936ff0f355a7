//! Load shedding: at most [`MAX_IN_FLIGHT`] gRPC calls in progress per server (until each
//! answers its headers; a live stream counts only while it opens). One more is answered
//! `UNAVAILABLE` at once, which clients retry with backoff, rather than queued behind the
//! others until every caller's deadline passes: a burst degrades into some fast refusals
//! instead of everyone's timeouts.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::sync::Semaphore;

/// Calls a server runs at once before it sheds more.
pub const MAX_IN_FLIGHT: usize = 2_000;

/// The layer; clones share their limit.
#[derive(Clone, Debug)]
pub struct ShedLayer {
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    /// At most `max_in_flight` calls at once.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
        }
    }
}

impl Default for ShedLayer {
    /// [`MAX_IN_FLIGHT`].
    fn default() -> Self {
        Self::new(MAX_IN_FLIGHT)
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// The service of [`ShedLayer`].
#[derive(Clone, Debug)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Shed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Only calls (a `/package.Service/Method` path, whatever the content type claims)
        // are counted: the web app's files and `/metrics` are served as before.
        let call = request
            .uri()
            .path()
            .trim_start_matches('/')
            .split_once('/')
            .is_some_and(|(service, _)| service.contains('.'));
        if !call {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!("saturated: a call was shed");
            let status = crate::grpc::error(
                tonic::Code::Unavailable,
                "SERVER_SATURATED",
                "the server is saturated; retry with backoff",
            );
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(permit);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    fn grpc_request() -> http::Request<()> {
        let mut request = http::Request::new(());
        *request.uri_mut() = "/taskmesh.task.v1.TaskService/GetTask".parse().unwrap();
        request
    }

    #[tokio::test]
    async fn calls_past_the_limit_are_unavailable_and_places_free_when_calls_finish() {
        let (release, released) = tokio::sync::watch::channel(false);
        let inner = tower::service_fn(move |_: http::Request<()>| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, Infallible>(http::Response::new(String::new()))
            }
        });
        let mut service = ShedLayer::new(2).layer(inner);
        let first = service.ready().await.unwrap().call(grpc_request());
        let second = service.ready().await.unwrap().call(grpc_request());
        let shed = service
            .ready()
            .await
            .unwrap()
            .call(grpc_request())
            .await
            .unwrap();
        assert_eq!(shed.headers()["grpc-status"], "14");
        release.send(true).unwrap();
        let (first, second) = tokio::join!(first, second);
        assert!(first.unwrap().headers().get("grpc-status").is_none());
        assert!(second.unwrap().headers().get("grpc-status").is_none());
        let after = service
            .ready()
            .await
            .unwrap()
            .call(grpc_request())
            .await
            .unwrap();
        assert!(after.headers().get("grpc-status").is_none());
    }
}
