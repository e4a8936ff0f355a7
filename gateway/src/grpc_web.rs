//! grpc-web translation for grpc-web requests only. tonic-web answers `400` to every other
//! HTTP/1.1 request, but browsers fetch the web app, and Prometheus scrapes `/metrics`, over
//! HTTP/1.1 on the same port; those go to the routes untouched.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use http::{Request, Response, Version, header::CONTENT_TYPE};
use tonic::body::Body;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service};

/// Applies [`GrpcWebLayer`] to grpc-web requests (and to HTTP/2, where tonic-web passes
/// everything through), and nothing to other HTTP/1 requests.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GrpcWebOnlyLayer;

impl<S: Clone> Layer<S> for GrpcWebOnlyLayer {
    type Service = GrpcWebOnly<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcWebOnly {
            web: GrpcWebLayer::new().layer(inner.clone()),
            plain: inner,
        }
    }
}

/// The service of [`GrpcWebOnlyLayer`].
#[derive(Clone, Debug)]
pub(crate) struct GrpcWebOnly<S> {
    web: GrpcWebService<S>,
    plain: S,
}

/// Whether `request` is grpc-web (`application/grpc-web`, `-text`, and their `+proto`).
fn is_grpc_web<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc-web"))
}

impl<S> Service<Request<Body>> for GrpcWebOnly<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.plain.poll_ready(cx))?;
        <GrpcWebService<S> as Service<Request<Body>>>::poll_ready(&mut self.web, cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if request.version() < Version::HTTP_2 && !is_grpc_web(&request) {
            Box::pin(self.plain.call(request))
        } else {
            Box::pin(self.web.call(request))
        }
    }
}
