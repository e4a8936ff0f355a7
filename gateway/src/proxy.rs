//! Forwarding of service RPCs: the gateway checks the bearer token (so bad tokens stop at the
//! edge) and passes the call, body and trailers untouched, to the service's HTTP/2 channel.
//! The service verifies the token again: no service trusts the network.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use axum::body::Body;
use futures::future::BoxFuture;
use taskmesh_platform::auth::Verifier;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

/// A tower service forwarding gRPC requests to one upstream service.
#[derive(Clone, Debug)]
pub(crate) struct GrpcProxy {
    channel: Channel,
    verifier: Verifier,
}

impl GrpcProxy {
    pub(crate) fn new(channel: Channel, verifier: Verifier) -> Self {
        Self { channel, verifier }
    }
}

impl Service<http::Request<Body>> for GrpcProxy {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let channel = self.channel.clone();
        let verifier = self.verifier.clone();
        Box::pin(async move {
            if let Err(status) = verifier.authenticate(request.headers()).await {
                return Ok(status.into_http::<Body>());
            }
            // The body goes on without its size hint: tonic-web's grpc-web-text decoding passes
            // on the base64 text's length, which the HTTP/2 client would send as a
            // `content-length` longer than the decoded body (the upstream then resets the
            // stream). gRPC needs no length; the end of the body is still signalled.
            let mut request = request.map(|body| tonic::body::Body::new(UnknownLength(body)));
            // The service's span continues the gateway's (this call's) trace.
            taskmesh_platform::trace::inject(request.headers_mut());
            match channel.oneshot(request).await {
                Ok(response) => Ok(response.map(Body::new)),
                Err(error) => {
                    tracing::warn!(%error, "upstream service unreachable");
                    let status = taskmesh_platform::grpc::error(
                        tonic::Code::Unavailable,
                        "UPSTREAM_UNAVAILABLE",
                        "service unavailable",
                    );
                    Ok(status.into_http::<Body>())
                }
            }
        })
    }
}

/// A request body passed on as it is, except that its length is not announced (see
/// [`GrpcProxy`]'s call).
struct UnknownLength(Body);

impl http_body::Body for UnknownLength {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::default()
    }
}
